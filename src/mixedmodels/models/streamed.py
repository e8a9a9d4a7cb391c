"""Fit data that do not fit in memory: two passes over chunks, then optimise on the blocks.

The profiled deviance needs only the blocks of ``A = [Z X y]'[Z X y]`` (Bates et al.
2015, JSS 67(1), sec. 3), and every block is a sum over rows. So a fit over any number of
rows reads the data twice, one chunk at a time (:mod:`mixedmodels.io.sources`):

1. pass 1 summarises each chunk (:func:`~mixedmodels.design.levels_spec.summarize_chunk`):
   factor and grouping-factor levels (the union over chunks), row counts, ``scale()``
   moments, column types; the merged summary fixes the design of all rows;
2. pass 2 forms each chunk's blocks with those levels and columns
   (:func:`~mixedmodels.linalg.cross_products.compute_cross_products`) and adds them up.

The optimiser then works on the summed blocks, whose size does not depend on the number of
rows: the fit equals the in-memory fit up to rounding. Memory is bounded by one chunk plus
the blocks. Results that need the rows (fitted values, residuals) are written back out
chunk by chunk (:mod:`mixedmodels.results.streamed`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from mixedmodels.design.levels_spec import ChunkSummary, summarize_chunk, used_columns
from mixedmodels.errors import DataError
from mixedmodels.formula import parse_formula
from mixedmodels.io.sources import (
    Progress,
    chunk_rows_or_default,
    is_dask_collection,
    open_source,
    prefetched,
)
from mixedmodels.models.chunked import (
    BlockSum,
    StreamedCrossProducts,
    finish,
    plan_from_summary,
    stack_r,
)
from mixedmodels.models.lmm import LinearMixedModel

if TYPE_CHECKING:  # pragma: no cover
    from mixedmodels.optimize import OptimizerOptions
    from mixedmodels.results import LinearMixedModelResult

__all__ = ["StreamedCrossProducts", "lmer_streamed", "streamed_cross_products"]


def streamed_cross_products(
    formula: str,
    source: Any,
    *,
    chunk_rows: int | None = None,
    progress: bool = True,
    weights: str | None = None,
) -> StreamedCrossProducts:
    """Read ``source`` twice, chunk by chunk, and return the design and the blocks of A.

    Parameters
    ----------
    formula
        lme4 formula text.
    source
        Parquet file(s) (path, folder, glob or list), a DuckDB query, pandas DataFrame(s)
        or any :class:`ChunkSource`.
    chunk_rows
        Rows per chunk (default :data:`DEFAULT_CHUNK_ROWS`); memory grows with it.
    progress
        Show a progress bar on stderr.
    weights
        The prior-weights column, if any (lme4's ``weights=``).

    Raises
    ------
    InputFileError
        A file cannot be opened or read (its name is in the message).
    DataError
        Columns missing or of different types in different chunks, unusable data.
    """
    rows_per_chunk = chunk_rows_or_default(chunk_rows)
    parsed = parse_formula(formula)
    if parsed.response is None:
        raise DataError(
            "the formula has no response; write 'response ~ predictors', e.g. 'y ~ x + (1 | g)'"
        )
    src = open_source(source)
    columns = list(used_columns(parsed, weights))
    src.check(columns)

    t0 = time.perf_counter()
    summary = ChunkSummary()
    nchunks = 0
    with Progress("pass 1/2: levels", src.total_rows(), progress) as bar:
        for where, frame in prefetched(src.chunks(columns, rows_per_chunk), src):
            summary = summary.merge(summarize_chunk(parsed, frame, where, weights=weights))
            nchunks += 1
            bar.advance(len(frame))
    plan = plan_from_summary(parsed, summary, weights)
    t1 = time.perf_counter()

    running = BlockSum()
    with Progress("pass 2/2: cross products", summary.nrows, progress) as bar:
        for where, frame in prefetched(src.chunks(columns, rows_per_chunk), src):
            running.add(plan.cross_products(frame, where, local=True))
            bar.advance(len(frame))
    total = running.result()
    t2 = time.perf_counter()

    def r_factor() -> np.ndarray:
        R = None
        with Progress("extra pass: rank of X", summary.nrows, progress) as bar:
            for _, frame in src.chunks(columns, rows_per_chunk):
                R = stack_r(R, plan.r_factor(frame))
                bar.advance(len(frame))
        assert R is not None
        return R

    design, blocks = finish(plan, total, r_factor)
    return StreamedCrossProducts(
        design=design,
        cross_products=blocks,
        nrows=summary.nrows,
        nchunks=nchunks,
        seconds={"pass1": t1 - t0, "pass2": t2 - t1},
    )


def lmer_streamed(
    formula: str,
    source: Any,
    *,
    reml: bool = True,
    chunk_rows: int | None = None,
    progress: bool = True,
    start: np.ndarray | None = None,
    control: OptimizerOptions | None = None,
    weights: str | None = None,
) -> LinearMixedModelResult:
    """Fit a linear mixed model to data read in chunks (or reduced on a Dask cluster).

    The fit equals ``lmer(formula, all_rows_in_memory)`` up to rounding; memory holds one
    chunk and the cross-product blocks. Fitted values and residuals are not kept: write
    them with :func:`write_predictions`, sample them with :func:`sample_residuals`.

    Parameters
    ----------
    formula
        lme4 syntax, e.g. ``"y ~ x + treatment + (1 + x | user)"``.
    source
        ``"events/*.parquet"`` (a glob), a folder or list of Parquet files, a
        :func:`~mixedmodels.io.duckdb_source.duckdb_query`, a Dask DataFrame (fitted on its
        cluster, see :func:`~mixedmodels.models.dask_fit.lmer_dask`) or pandas DataFrames.
    reml
        REML (default) or ML.
    chunk_rows
        Rows per chunk (default :data:`DEFAULT_CHUNK_ROWS`). Ignored for Dask.
    progress
        Show progress bars on stderr.
    start, control
        Starting theta and optimiser options, as for ``lmer``.
    weights
        The prior-weights column, if any (lme4's ``weights=``); offsets are written in the
        formula (``offset(col)``).

    Examples
    --------
    >>> import mixedmodels as mm  # doctest: +SKIP
    >>> fit = lmer_streamed("y ~ x + f + (1 + x | g)", "events/*.parquet")  # doctest: +SKIP
    """
    if is_dask_collection(source):
        from .dask_fit import lmer_dask

        return lmer_dask(
            formula,
            source,
            reml=reml,
            progress=progress,
            start=start,
            control=control,
            weights=weights,
        )
    result = streamed_cross_products(
        formula, source, chunk_rows=chunk_rows, progress=progress, weights=weights
    )
    name = getattr(open_source(source), "name", None) if not isinstance(source, str) else source
    model = LinearMixedModel(
        result.design,
        reml=reml,
        formula=formula,
        data_name=name,
        cross_products=result.cross_products,
    )
    return model.fit(start=start, options=control)
