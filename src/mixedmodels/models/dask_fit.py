"""Fit a Dask DataFrame on its cluster: map over partitions, reduce the blocks in a tree.

The same two passes as :mod:`mixedmodels.models.streamed`, with partitions for chunks:

1. every partition is summarised on a worker (levels, counts, ``scale()`` moments, column
   types) and the summaries are merged in a tree (``split_every`` at a time); the client
   builds the design of all rows from the result;
2. every partition forms its blocks of ``A = [Z X y]'[Z X y]`` on a worker (term 1's
   over the partition's own levels), with the design shipped once; the partitions are
   split into ``split_every`` contiguous ranges, each range's blocks are summed in a tree
   on the workers, and the client fetches the ranges' sums one at a time (in a fixed
   order) and adds them into the total, which it optimises. No worker ever holds the
   whole of ``Zr'Z1`` (for 1e8 rows of 1e6 users and 1e4 items, 2e8 non-zeros: several
   GB): each holds one range's sum and its inputs, and the ranges' sums until the client
   fetches them. A worker killed again and again
   (distributed's ``KilledWorker``, usually its memory limit) stops the fit with one
   :class:`~mixedmodels.errors.DataError` naming the pass and the fixes.

A GLMM (:func:`glmer_dask`) has the same two passes, then one map-reduce per PIRLS step:
each partition's rows are prepared once and persisted on the workers (the cluster's
memory holds the data, as for any iterative Dask algorithm); each pass ships the
coefficients (beta and b: small) to every partition, which returns its deviance and
working blocks, summed in the same tree.

Dask is an optional extra (``pip install mixedmodels[dask]``), imported only here. The
computation runs on the active ``distributed`` client if there is one, else on Dask's
default scheduler.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mixedmodels.design.levels_spec import summarize_chunk, used_columns
from mixedmodels.errors import DataError, InputFileError
from mixedmodels.io.sources import Progress
from mixedmodels.linalg.cross_products import CrossProducts, canonical_sparse
from mixedmodels.models.chunked import (
    BlockSum,
    ChunkPlan,
    StreamedCrossProducts,
    add_checked,
    finish,
    plan_from_summary,
    stack_r,
)

if TYPE_CHECKING:  # pragma: no cover
    from mixedmodels.models.chunked import GlmmChunkPlan
    from mixedmodels.optimize import OptimizerOptions
    from mixedmodels.results import LinearMixedModelResult
    from mixedmodels.results.glmm import GeneralizedLinearMixedModelResult

__all__ = ["dask_cross_products", "glmer_dask", "lmer_dask", "predictions_dask"]


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
    formula: Any,
    frame: pd.DataFrame,
    index: int,
    count: int,
    weights: str | None,
    binomial_response: bool = False,
):
    return summarize_chunk(
        formula,
        frame,
        f"partition {index} of {count}",
        weights=weights,
        binomial_response=binomial_response,
    )


def _merge_summaries(*parts: Any):
    total = parts[0]
    for part in parts[1:]:
        total = total.merge(part)
    return total


def _partition_blocks(plan: ChunkPlan, frame: pd.DataFrame, index: int, count: int):
    # Term-1 blocks over the partition's own users (LocalCrossProducts): with 1e6 users
    # and slopes, blocks over all users are ~100 MB a partition, split_every of them in
    # each first-level node of the tree; BlockSum adds them at their levels (same bits).
    return plan.cross_products(frame, f"partition {index} of {count}", local=True)


def _sum_blocks(*parts: Any):
    # The same summation as a streamed pass 2 (pairwise for the sparse blocks).
    total = BlockSum()
    for part in parts:
        total.add(part)
    return total.result()


def _partition_r(plan: ChunkPlan, frame: pd.DataFrame):
    return plan.r_factor(frame)


def _stack_rs(*parts: Any):
    total = None
    for part in parts:
        total = stack_r(total, part)
    return total


def _glmm_check_partition(
    plan: GlmmChunkPlan, frame: pd.DataFrame, index: int, count: int, family: Any
):
    return plan.check(frame, f"partition {index} of {count}", family)


def _glmm_add_checked(*parts: Any):
    total = None
    for part in parts:
        total = add_checked(total, part)
    return total


def _glmm_rows_partition(plan: GlmmChunkPlan, frame: pd.DataFrame, index: int, count: int):
    return plan.rows(frame, f"partition {index} of {count}")


def _apply(function: Callable[..., Any], rows: Any, args: tuple[Any, ...]) -> Any:
    """One partition's share of a pass (None for a partition without complete rows)."""
    return None if rows is None else function(rows, *args)


def _combine_parts(combine: Callable[[Any, Any], Any], *parts: Any) -> Any:
    total = None
    for part in parts:
        if part is not None:
            total = part if total is None else combine(total, part)
    return total


def _partitions(formula: str, data: Any, weights: str | None, split_every: int):
    """The parsed formula and the delayed partitions of the columns it uses (a missing
    column or response: a one-line error before any work on the cluster)."""
    from mixedmodels.formula import parse_formula

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
    return parsed, data[columns].to_delayed()


def _tree(dask: Any, leaves: list[Any], combine: Callable[..., Any], split_every: int) -> Any:
    """Reduce delayed values ``split_every`` at a time, keeping their order."""
    level = leaves
    while len(level) > 1:
        level = [
            dask.delayed(combine, pure=True)(*level[i : i + split_every])
            for i in range(0, len(level), split_every)
        ]
    return level[0]


def _ranges(count: int, pieces: int) -> list[tuple[int, int]]:
    """``min(pieces, count)`` contiguous ranges of ``range(count)``, as equal as can be."""
    k = min(pieces, count)
    if k < 1:
        return []
    bounds = [(i * count) // k for i in range(k + 1)]
    return list(pairwise(bounds))


#: Fraction of the term-1 columns of ``Zr'Z1`` that may appear in more than one range's
#: sum and still be combined by placing the entries (then summing the few duplicates);
#: above it the ranges' sums are added as sparse matrices (memory: twice the result).
SHARED_COLUMNS_MAX = 0.25


def _piece_layout(piece: CrossProducts | None) -> tuple[np.ndarray, np.ndarray, int] | None:
    """What the client needs to place a range's ``Zr'Z1`` before fetching it: the number
    of entries per row, the term-1 columns used (bits) and the number of columns.

    Runs on the worker holding the piece, so that only these few MB travel.
    """
    if piece is None or piece.zrtz1 is None:
        return None
    m = piece.zrtz1
    used = np.zeros(m.shape[1], dtype=bool)
    used[m.indices] = True
    return np.diff(m.indptr).astype(np.int64), np.packbits(used), m.shape[1]


class _PlacedSum:
    """The sum of the ranges' blocks on the client, one range at a time, in a fixed order.

    Dense blocks (``Z1'Z1``, ``[X y]'Z1``, ``[X y]'[X y]``, ``[X y]'Zr``, ``Zr'Zr``) are
    summed in place (:class:`BlockSum`, and ``Zr'Zr`` here). ``Zr'Z1``: when the ranges'
    term-1 columns are (nearly) disjoint — partitions hold different users — the total
    has ``sum_k nnz_k`` entries (less the shared ones), so its arrays are allocated once
    from the row counts (:func:`_piece_layout`) and each range's entries are copied to
    their rows' next free places: no sparse addition, memory ``result + one range``.
    At the end each row's indices are sorted and the entries of a column shared by two
    ranges summed (scipy's ``sum_duplicates``; a sum of two is the same whichever order).
    When many columns are shared (every partition holds every user), the ranges' ``Zr'Z1``
    are added as sparse matrices, pairwise (:class:`BlockSum`).

    Parameters
    ----------
    layouts
        :func:`_piece_layout` of each range, in the order the ranges will be added.
    """

    def __init__(self, layouts: list[tuple[np.ndarray, np.ndarray, int] | None]) -> None:
        self._dense = BlockSum()
        self._zrr: Any = None
        self._data: np.ndarray | None = None
        known = [lay for lay in layouts if lay is not None]
        if not known:
            return
        ncols = known[0][2]
        used = np.zeros(ncols, dtype=bool)
        shared = 0
        for _, bits, _ in known:
            cols = np.unpackbits(bits, count=ncols).view(bool)
            shared += int(np.count_nonzero(used & cols))
            used |= cols
        if shared > SHARED_COLUMNS_MAX * max(int(np.count_nonzero(used)), 1):
            return  # mostly shared columns: sparse additions (BlockSum)
        per_row = np.sum([lay[0] for lay in known], axis=0)
        nnz = int(per_row.sum())
        # One index type for indices and indptr (scipy would otherwise copy to a common one).
        itype = np.int32 if max(nnz, ncols) < 2**31 else np.int64
        self._indptr = np.zeros(per_row.shape[0] + 1, dtype=itype)
        np.cumsum(per_row, out=self._indptr[1:])
        self._next = self._indptr[:-1].astype(np.int64)  # each row's next free place
        self._indices = np.empty(nnz, dtype=itype)
        self._data = np.empty(nnz)
        self._shape = (per_row.shape[0], ncols)

    def add(self, piece: CrossProducts | None) -> None:
        """Add one range's blocks (None: no complete rows in the range)."""
        if piece is None:
            return
        if self._data is None or piece.zrtz1 is None:
            self._dense.add(piece)
            return
        # Dense blocks through BlockSum (Zr'Z1 and Zr'Zr left out, summed here).
        self._dense.add(replace(piece, zrtz1=None, zrtzr=None))
        zrr = piece.zrtzr
        if self._zrr is None:
            self._zrr = zrr.copy()
        elif sp.issparse(zrr):
            self._zrr = self._zrr + zrr
        else:
            self._zrr += zrr
        m = piece.zrtz1
        counts = np.diff(m.indptr).astype(np.int64)
        # Entry j of row r goes to next[r] + (j - indptr[r]).
        dest = np.repeat(self._next - m.indptr[:-1], counts)
        dest += np.arange(m.nnz, dtype=np.int64)
        self._data[dest] = m.data
        self._indices[dest] = m.indices
        self._next += counts

    def result(self) -> CrossProducts | None:
        """The blocks summed over every range added."""
        total = self._dense.result()
        if total is None or self._data is None:
            return total
        zr1 = sp.csr_matrix((self._data, self._indices, self._indptr), shape=self._shape)
        self._data = self._indices = None
        zrr = canonical_sparse(self._zrr) if sp.issparse(self._zrr) else self._zrr
        return replace(total, zrtz1=canonical_sparse(zr1), zrtzr=zrr)


def _sum_ranges(dask: Any, ranges: list[Any]) -> CrossProducts | None:
    """Compute the ranges' block sums on the cluster and add them on the client.

    With a distributed client, each range's sum stays on its worker until the client
    fetches it (in the ranges' order, released at once); only the layouts of ``Zr'Z1``
    (row counts, columns used) come first. Without one (Dask's local schedulers, one
    memory), the ranges are computed together and added the same way, so the result has
    the same bits either way.
    """
    client = _client()
    if client is None:
        pieces = list(dask.compute(*ranges))
        total = _PlacedSum([_piece_layout(p) for p in pieces])
        for i in range(len(pieces)):
            total.add(pieces[i])
            pieces[i] = None  # each range freed once added
        return total.result()
    futures = client.compute(ranges)
    layouts = client.gather([client.submit(_piece_layout, f, pure=False) for f in futures])
    total = _PlacedSum(layouts)
    for i in range(len(futures)):
        piece = futures[i].result()
        futures[i].release()
        futures[i] = None
        total.add(piece)
        del piece
    return total.result()


def _client() -> Any:
    """The active distributed client, or None (Dask's local schedulers)."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _killed_worker() -> type[BaseException] | tuple[()]:
    """distributed's KilledWorker, to catch (an empty tuple catches nothing)."""
    try:
        from distributed import KilledWorker
    except ImportError:  # pragma: no cover - distributed is optional
        return ()
    return KilledWorker


def _run(description: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, with distributed's KilledWorker turned into one readable error.

    The scheduler gives up on a task after its worker died while running it more times
    than ``distributed.scheduler.allowed-failures`` (3): almost always a worker killed by
    its nanny at its memory limit. The traceback of that says neither; this error does.
    """
    try:
        return compute()
    except _killed_worker() as exc:
        key = getattr(exc, "task", None) or (exc.args[0] if exc.args else "?")
        raise DataError(
            f"{description}: a Dask worker was killed again and again while running task "
            f"{key!r} (distributed's KilledWorker), almost always because it ran out of "
            "memory (its nanny kills a worker at the memory limit); give the workers more "
            "memory (LocalCluster(memory_limit=...) or 'dask worker --memory-limit ...'), "
            "or split the data into more partitions (ddf.repartition(npartitions=...)) so "
            "that each holds fewer rows and fewer users"
        ) from None


def _compute(dask: Any, value: Any, description: str, count: int, progress: bool) -> Any:
    """Compute one delayed value, on the distributed client if any, with a progress line."""
    with Progress(description, count, progress, unit="partitions") as bar:
        result = _run(description, partial(_compute_now, dask, value))
        bar.advance(count)
    return result


def _compute_now(dask: Any, value: Any) -> Any:
    """Compute one delayed value, on the distributed client if any."""
    client = _client()
    if client is not None:
        return client.compute(value).result()
    (result,) = dask.compute(value)
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

    dask = _dask()
    parsed, parts = _partitions(formula, data, weights, split_every)
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
    # split_every contiguous ranges of partitions, each summed in a tree on the workers;
    # the client adds the ranges' sums (so no worker holds all of Zr'Z1).
    # (A range of one partition is summed too: the client adds blocks over all users.)
    ranges = [
        _tree(dask, blocks[a:b], _sum_blocks, split_every)
        if b - a > 1
        else dask.delayed(_sum_blocks, pure=True)(blocks[a])
        for a, b in _ranges(count, split_every)
    ]
    with Progress("pass 2/2: cross products", count, progress, unit="partitions") as bar:
        total = _run("pass 2/2: cross products", partial(_sum_ranges, dask, ranges))
        bar.advance(count)
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


def glmer_dask(
    formula: str,
    data: Any,
    *,
    family: Any = "binomial",
    link: str | None = None,
    nagq: int = 1,
    weights: str | None = None,
    split_every: int = 8,
    progress: bool = True,
    start: np.ndarray | None = None,
) -> GeneralizedLinearMixedModelResult:
    """Fit a generalized linear mixed model to a Dask DataFrame on its cluster.

    Pass 1 (levels) and pass 2 (``X'X`` and the family's checks) as for :func:`lmer_dask`;
    then each partition's rows are prepared once and persisted on the workers, and every
    PIRLS step is one map-reduce: the coefficients go out to the partitions, their
    deviances and working blocks come back summed in a tree (``split_every`` at a time).
    Equals the in-memory fit up to rounding. Fitted values and residuals are not kept:
    ``fit.predict(partition)`` gives them per partition.

    Parameters
    ----------
    formula, family, link, nagq, weights, start
        As for :func:`mixedmodels.api.glmer` (``weights``: a column name).
    data
        A ``dask.dataframe.DataFrame`` holding every column the formula uses.
    split_every
        Fan-in of the tree reductions.
    progress
        Show the passes on stderr.

    Examples
    --------
    >>> client = Client("tcp://scheduler:8786")  # doctest: +SKIP
    >>> ddf = dask.dataframe.read_parquet("s3://bucket/survey/")  # doctest: +SKIP
    >>> fit = mm.glmer("use ~ age + (1 | district)", ddf, family="binomial")  # doctest: +SKIP
    """
    from mixedmodels.family import make_family
    from mixedmodels.models.chunked import decide_rank, fit_on_chunks, glmm_plan

    dask = _dask()
    fam = make_family(family, link)
    parsed, parts = _partitions(formula, data, weights, split_every)
    count = len(parts)
    binomial = fam.name == "binomial"

    t0 = time.perf_counter()
    formula_d = dask.delayed(parsed, pure=True)
    summaries = [
        dask.delayed(_summarize_partition, pure=True)(
            formula_d, part, i + 1, count, weights, binomial
        )
        for i, part in enumerate(parts)
    ]
    summary = _compute(
        dask,
        _tree(dask, summaries, _merge_summaries, split_every),
        "pass 1: levels",
        count,
        progress,
    )
    plan = glmm_plan(parsed, summary, weights, binomial)
    plan_d = dask.delayed(plan, pure=True)
    family_d = dask.delayed(fam, pure=True)
    checks = [
        dask.delayed(_glmm_check_partition, pure=True)(plan_d, part, i + 1, count, family_d)
        for i, part in enumerate(parts)
    ]
    checked = _compute(
        dask,
        _tree(dask, checks, _glmm_add_checked, split_every),
        "pass 2: X'X and checks",
        count,
        progress,
    )
    lmm_plan = ChunkPlan(plan.design, plan.terms)

    def r_factor() -> np.ndarray:
        rs = [dask.delayed(_partition_r, pure=True)(lmm_plan, part) for part in parts]
        return _compute(dask, _tree(dask, rs, _stack_rs, split_every), "rank of X", count, progress)

    design, plan = decide_rank(plan, checked, r_factor)
    plan_d = dask.delayed(plan, pure=True)
    # Each partition's rows once, kept on the workers for every pass (the plans PIRLS
    # sets up on them are kept there too).
    prepared = dask.persist(
        *[
            dask.delayed(_glmm_rows_partition, pure=True)(plan_d, part, i + 1, count)
            for i, part in enumerate(parts)
        ]
    )
    seconds = {"levels_rank_and_persist": time.perf_counter() - t0}

    def reduce(function: Callable[..., Any], args: tuple[Any, ...], combine) -> Any:
        args_d = dask.delayed(args, traverse=False)
        shares = [dask.delayed(_apply, pure=False)(function, rows, args_d) for rows in prepared]
        tree = _tree(dask, shares, partial(_combine_parts, combine), split_every)
        return _run("a PIRLS pass", partial(_compute_now, dask, tree))

    return fit_on_chunks(
        design,
        fam,
        reduce,
        plan.design.nobs,
        nagq=nagq,
        formula=formula,
        data_name=f"Dask DataFrame ({count} partitions)",
        progress=progress,
        start=start,
        facts={"partitions": count, "seconds_before_fit": seconds},
    )


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
