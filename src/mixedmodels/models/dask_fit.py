"""Fit a Dask DataFrame on its cluster: map over partitions, reduce the blocks in a tree.

The same two passes as :mod:`mixedmodels.models.streamed`, with partitions for chunks:

1. every partition is summarised on a worker (levels, counts, ``scale()`` moments, column
   types) and the summaries are merged in a tree (``split_every`` at a time); the client
   builds the design of all rows from the result;
2. every partition forms its blocks of ``A = [Z X y]'[Z X y]`` on a worker, with the
   design shipped once; the blocks are summed in a tree, and only the total (whose size
   does not depend on the number of rows) comes back to the client, which optimises.

Dask is an optional extra (``pip install mixedmodels[dask]``), imported only here. The
computation runs on the active ``distributed`` client if there is one, else on Dask's
default scheduler.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mixedmodels.design.levels_spec import summarize_chunk, used_columns
from mixedmodels.errors import DataError, InputFileError
from mixedmodels.io.sources import Progress
from mixedmodels.models.chunked import (
    ChunkPlan,
    StreamedCrossProducts,
    add_cross_products,
    finish,
    plan_from_summary,
    stack_r,
)

if TYPE_CHECKING:  # pragma: no cover
    from mixedmodels.optimize import OptimizerOptions
    from mixedmodels.results import LinearMixedModelResult

__all__ = ["dask_cross_products", "lmer_dask", "predictions_dask"]


def _dask():
    try:
        import dask
        import dask.dataframe
    except ImportError:
        raise InputFileError(
            "fitting a Dask DataFrame needs dask: python3 -m pip install 'mixedmodels[dask]'"
        ) from None
    return dask


# Functions run on workers: module level, so that they pickle by reference.
def _summarize_partition(
    formula: Any, frame: pd.DataFrame, index: int, count: int, weights: str | None
):
    return summarize_chunk(formula, frame, f"partition {index} of {count}", weights=weights)


def _merge_summaries(*parts: Any):
    total = parts[0]
    for part in parts[1:]:
        total = total.merge(part)
    return total


def _partition_blocks(plan: ChunkPlan, frame: pd.DataFrame, index: int, count: int):
    return plan.cross_products(frame, f"partition {index} of {count}")


def _sum_blocks(*parts: Any):
    total = None
    for part in parts:
        total = add_cross_products(total, part)
    return total


def _partition_r(plan: ChunkPlan, frame: pd.DataFrame):
    return plan.r_factor(frame)


def _stack_rs(*parts: Any):
    total = None
    for part in parts:
        total = stack_r(total, part)
    return total


def _tree(dask: Any, leaves: list[Any], combine: Callable[..., Any], split_every: int) -> Any:
    """Reduce delayed values ``split_every`` at a time, keeping their order."""
    level = leaves
    while len(level) > 1:
        level = [
            dask.delayed(combine, pure=True)(*level[i : i + split_every])
            for i in range(0, len(level), split_every)
        ]
    return level[0]


def _compute(dask: Any, value: Any, description: str, count: int, progress: bool) -> Any:
    """Compute one delayed value, on the distributed client if any, with a progress line."""
    with Progress(description, count, progress, unit="partitions") as bar:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
        if client is not None:
            result = client.compute(value).result()
        else:
            (result,) = dask.compute(value)
        bar.advance(count)
    return result


def dask_cross_products(
    formula: str,
    data: Any,
    *,
    split_every: int = 8,
    progress: bool = True,
    weights: str | None = None,
) -> StreamedCrossProducts:
    """The design and the blocks of A of a Dask DataFrame, computed on its cluster.

    Parameters
    ----------
    formula
        lme4 formula text.
    data
        A ``dask.dataframe.DataFrame`` holding every column the formula uses.
    split_every
        Fan-in of the tree reductions.
    progress
        Show progress lines on stderr.
    weights
        The prior-weights column, if any.

    Raises
    ------
    DataError
        A column is missing, partitions disagree on a column's type, unusable data.
    """
    from mixedmodels.formula import parse_formula

    dask = _dask()
    if split_every < 2:
        raise DataError(f"split_every must be at least 2, not {split_every}")
    parsed = parse_formula(formula)
    if parsed.response is None:
        raise DataError(
            "the formula has no response; write 'response ~ predictors', e.g. 'y ~ x + (1 | g)'"
        )
    columns = list(used_columns(parsed, weights))
    missing = [c for c in columns if c not in data.columns]
    if missing:
        shown = ", ".join(repr(str(c)) for c in list(data.columns)[:10])
        raise DataError(
            f"column '{missing[0]}' used in the formula is not in the Dask DataFrame; it has "
            f"the columns {shown}"
        )
    parts = data[columns].to_delayed()
    count = len(parts)

    t0 = time.perf_counter()
    formula_d = dask.delayed(parsed, pure=True)
    summaries = [
        dask.delayed(_summarize_partition, pure=True)(formula_d, part, i + 1, count, weights)
        for i, part in enumerate(parts)
    ]
    summary = _compute(
        dask,
        _tree(dask, summaries, _merge_summaries, split_every),
        "pass 1/2: levels",
        count,
        progress,
    )
    plan = plan_from_summary(parsed, summary, weights)
    t1 = time.perf_counter()

    plan_d = dask.delayed(plan, pure=True)
    blocks = [
        dask.delayed(_partition_blocks, pure=True)(plan_d, part, i + 1, count)
        for i, part in enumerate(parts)
    ]
    total = _compute(
        dask,
        _tree(dask, blocks, _sum_blocks, split_every),
        "pass 2/2: cross products",
        count,
        progress,
    )
    t2 = time.perf_counter()

    def r_factor() -> np.ndarray:
        rs = [dask.delayed(_partition_r, pure=True)(plan_d, part) for part in parts]
        return _compute(dask, _tree(dask, rs, _stack_rs, split_every), "rank of X", count, progress)

    design, cross_products = finish(plan, total, r_factor)
    return StreamedCrossProducts(
        design=design,
        cross_products=cross_products,
        nrows=summary.nrows,
        nchunks=count,
        seconds={"pass1": t1 - t0, "pass2": t2 - t1},
    )


def lmer_dask(
    formula: str,
    data: Any,
    *,
    reml: bool = True,
    split_every: int = 8,
    progress: bool = True,
    start: np.ndarray | None = None,
    control: OptimizerOptions | None = None,
    weights: str | None = None,
) -> LinearMixedModelResult:
    """Fit a linear mixed model to a Dask DataFrame; the blocks are formed on the cluster.

    Equals the in-memory fit up to rounding. Fitted values and residuals are not kept:
    use :func:`predictions_dask`.

    Examples
    --------
    >>> from distributed import Client  # doctest: +SKIP
    >>> client = Client("tcp://scheduler:8786")  # doctest: +SKIP
    >>> ddf = dask.dataframe.read_parquet("s3://bucket/events/")  # doctest: +SKIP
    >>> fit = mm.lmer("y ~ x + (1 + x | user)", ddf)  # doctest: +SKIP
    """
    from mixedmodels.models.lmm import LinearMixedModel

    result = dask_cross_products(
        formula, data, split_every=split_every, progress=progress, weights=weights
    )
    model = LinearMixedModel(
        result.design,
        reml=reml,
        formula=formula,
        data_name=f"Dask DataFrame ({result.nchunks} partitions)",
        cross_products=result.cross_products,
    )
    return model.fit(start=start, options=control)


def _partition_predictions(frame: pd.DataFrame, fit: Any) -> pd.DataFrame:
    from mixedmodels.results.streamed import chunk_predictions

    return chunk_predictions(fit, frame)


def predictions_dask(fit: LinearMixedModelResult, data: Any) -> Any:
    """A lazy Dask DataFrame of ``fitted`` and ``resid`` per row of ``data`` (NaN if unused).

    Write it with ``.to_parquet(...)`` or join it to the data; nothing is computed here.
    """
    _dask()
    meta = pd.DataFrame({"fitted": np.empty(0), "resid": np.empty(0)})
    return data.map_partitions(_partition_predictions, fit, meta=meta)
