"""Fit a GLMM to data that do not fit in memory: every PIRLS step is one pass over chunks.

A linear mixed model needs its cross products once (:mod:`.streamed`); a GLMM's working
weights change at every step of PIRLS, so the rows are read again for each step. Each
pass sums, over chunks, the deviance residuals and the blocks of ``[Z (X) z]' W [Z (X)
z]`` at the working weights (:class:`~mixedmodels.objective.pirls.ChunkedRows`); the
criterion, the optimiser and the results are those of the in-memory fit
(:class:`~mixedmodels.models.glmm.GeneralizedLinearMixedModel`), so the fit equals it up
to the order of the additions. The passes:

1. levels: each chunk summarised, the summaries merged (as for a linear mixed model,
   with the binomial response read as ``glmer`` reads it);
2. ``X'X`` and the family's checks of the response: the rank of X (a QR pass only when
   too close to call);
3. the fit: the start (a weighted least-squares pass), the saturated log-likelihood when
   needed, one pass per PIRLS iteration (a few per evaluation of the deviance, warm
   started), one more per evaluation for adaptive Gauss-Hermite quadrature, and at the
   optimum the final system and the Pearson statistic.

Memory holds one chunk and the blocks (whose size does not depend on the number of
rows); time is that of the in-memory fit plus reading the data once per pass, so keep
the chunks large (``chunk_rows``) and the data in a fast format (Parquet). Fitted values
and residuals are not kept: compute them chunk by chunk with ``fit.predict(chunk)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
)
from mixedmodels.models.chunked import (
    ChunkPlan,
    add_checked,
    decide_rank,
    fit_on_chunks,
    glmm_plan,
    stack_r,
)

if TYPE_CHECKING:  # pragma: no cover
    from mixedmodels.results.glmm import GeneralizedLinearMixedModelResult

__all__ = ["glmer_streamed"]


def glmer_streamed(
    formula: str,
    source: Any,
    *,
    family: Any = "binomial",
    link: str | None = None,
    nagq: int = 1,
    weights: str | None = None,
    chunk_rows: int | None = None,
    progress: bool = True,
    start: np.ndarray | None = None,
) -> GeneralizedLinearMixedModelResult:
    """Fit a generalized linear mixed model to data read in chunks (or on a Dask cluster).

    The fit equals ``glmer(formula, all_rows_in_memory)`` up to rounding; memory holds one
    chunk and the cross-product blocks, and the data are read once per PIRLS step.

    Parameters
    ----------
    formula
        lme4 syntax, e.g. ``"cbind(s, n - s) ~ x + (1 | g)"``; offsets in the formula.
    source
        ``"events/*.parquet"`` (a glob), a folder or list of Parquet files, a
        :func:`~mixedmodels.io.duckdb_source.duckdb_query`, pandas DataFrames, or a Dask
        DataFrame (fitted on its cluster, :func:`~mixedmodels.models.dask_fit.glmer_dask`).
    family, link, nagq
        As for :func:`mixedmodels.api.glmer`.
    weights
        The prior-weights column, if any (for a binomial proportion: its trials).
    chunk_rows
        Rows per chunk (default :data:`~mixedmodels.io.sources.DEFAULT_CHUNK_ROWS`).
        Ignored for Dask.
    progress
        Show the passes (and the evaluations of the criterion) on stderr.
    start
        Starting theta.

    Returns
    -------
    GeneralizedLinearMixedModelResult
        Without rows: ``fitted``, ``residuals`` and ``predict()`` of the fitted rows refuse
        (``predict(chunk)`` works); ``optimizer["passes"]`` counts the passes.

    Examples
    --------
    >>> fit = glmer_streamed("use ~ age + urban + (1 | district)", "survey/*.parquet",
    ...                      family="binomial")  # doctest: +SKIP
    """
    from mixedmodels.family import make_family

    fam = make_family(family, link)
    if is_dask_collection(source):
        from .dask_fit import glmer_dask

        return glmer_dask(
            formula,
            source,
            family=fam,
            nagq=nagq,
            weights=weights,
            progress=progress,
            start=start,
        )
    rows_per_chunk = chunk_rows_or_default(chunk_rows)
    parsed = parse_formula(formula)
    if parsed.response is None:
        raise DataError(
            "the formula has no response; write 'response ~ predictors', e.g. 'y ~ x + (1 | g)'"
        )
    src = open_source(source)
    columns = list(used_columns(parsed, weights))
    src.check(columns)
    binomial = fam.name == "binomial"

    t0 = time.perf_counter()
    summary = ChunkSummary()
    nchunks = 0
    with Progress("pass 1: levels", src.total_rows(), progress) as bar:
        for where, frame in src.chunks(columns, rows_per_chunk):
            summary = summary.merge(
                summarize_chunk(parsed, frame, where, weights=weights, binomial_response=binomial)
            )
            nchunks += 1
            bar.advance(len(frame))
    plan = glmm_plan(parsed, summary, weights, binomial)

    def chunks(description: str):
        with Progress(description, summary.nrows, progress) as bar:
            for where, frame in src.chunks(columns, rows_per_chunk):
                yield where, frame
                bar.advance(len(frame))

    checked = None
    for where, frame in chunks("pass 2: X'X and checks"):
        checked = add_checked(checked, plan.check(frame, where, fam))

    def r_factor() -> np.ndarray:
        R = None
        for _, frame in chunks("extra pass: rank of X"):
            R = stack_r(R, ChunkPlan(plan.design, plan.terms).r_factor(frame))
        assert R is not None
        return R

    design, plan = decide_rank(plan, checked, r_factor)
    seconds = {"levels_and_rank": time.perf_counter() - t0}

    def reduce(function: Callable[..., Any], args: tuple[Any, ...], combine) -> Any:
        total = None
        for where, frame in src.chunks(columns, rows_per_chunk):
            rows = plan.rows(frame, where)
            if rows is None:
                continue
            part = function(rows, *args)
            total = part if total is None else combine(total, part)
        return total

    name = source if isinstance(source, str) else getattr(src, "name", None)
    return fit_on_chunks(
        design,
        fam,
        reduce,
        plan.design.nobs,
        nagq=nagq,
        formula=formula,
        data_name=name,
        progress=progress,
        start=start,
        facts={"chunks": nchunks, "chunk_rows": rows_per_chunk, "seconds_before_fit": seconds},
    )
