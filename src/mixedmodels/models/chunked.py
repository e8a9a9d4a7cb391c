"""What each chunk contributes, and how the contributions are summed and finished.

Shared by the local two-pass fit (:mod:`.streamed`) and the Dask map-reduce
(:mod:`.dask_fit`): a :class:`ChunkPlan` forms one chunk's blocks of ``A`` with the levels
and columns fixed by pass 1; blocks add up; :func:`finish` decides the rank of X from the
summed ``X'X`` (a QR pass only when too close to call) and drops dependent columns.

A GLMM reads its chunks once per PIRLS step: a :class:`GlmmChunkPlan` turns a chunk into
its rows for the criterion (:class:`~mixedmodels.objective.pirls.MemoryRows`: X with the
kept columns, the response as the family sees it, prior weights times binomial trials,
the offset, each term's rows with the levels of all rows); :func:`decide_rank` finishes
its design from the summed ``X'X`` and :func:`fit_on_chunks` fits it, whatever sums the
passes (the local reader of :mod:`.glmm_streamed` or the Dask tree of :mod:`.dask_fit`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mixedmodels.covariance import GroupedTerm, group_terms
from mixedmodels.design.levels_spec import (
    ChunkSummary,
    StreamedDesign,
    design_from_summary,
    independent_columns_from_gram,
    independent_columns_from_r,
)
from mixedmodels.design.model_design import ModelDesign
from mixedmodels.errors import DataError
from mixedmodels.io.sources import Progress
from mixedmodels.linalg.cross_products import (
    CrossProducts,
    canonical_sparse,
    compute_cross_products,
)
from mixedmodels.objective.pirls import ChunkedRows, MemoryRows, Reduce

if TYPE_CHECKING:  # pragma: no cover
    from mixedmodels.results.glmm import GeneralizedLinearMixedModelResult

__all__ = [
    "BlockSum",
    "ChunkPlan",
    "GlmmChunkPlan",
    "LocalCrossProducts",
    "StreamedCrossProducts",
    "add_checked",
    "decide_rank",
    "finish",
    "fit_on_chunks",
    "glmm_plan",
    "plan_from_summary",
    "stack_r",
]


@dataclass(frozen=True, eq=False)
class ChunkPlan:
    """What pass 2 needs to form one chunk's blocks (small; shipped to Dask workers)."""

    design: StreamedDesign
    terms: tuple[GroupedTerm, ...]

    def cross_products(
        self, data: pd.DataFrame, where: str, local: bool = False
    ) -> CrossProducts | LocalCrossProducts | None:
        """The blocks of this chunk's complete rows (None if it has none).

        ``local``: the term-1 blocks over the levels present in the chunk only
        (:class:`LocalCrossProducts`, for :class:`BlockSum`): a chunk of 500,000 rows of
        1e6 users with slopes touches 50,000 of them, and blocks over all levels cost
        128 MB and their zeros' additions per chunk.
        """
        rows_used = self.design.complete(data)
        if len(rows_used) == 0:
            return None
        try:
            X, y, rows = self.design.chunk_arrays(rows_used)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        weights, offset = self.design.chunk_weights_offset(rows_used)
        if offset is not None:
            y = y - offset  # a known part of the linear predictor
        refs = [rows[t.members[0]][0] for t in self.terms]
        zs = [
            rows[t.members[0]][1]
            if len(t.members) == 1
            else np.hstack([rows[m][1] for m in t.members])
            for t in self.terms
        ]
        if not local:
            return compute_cross_products(self.terms, X, y, weights=weights, refs=refs, zs=zs)
        # The levels present, in ascending order, and the rows' refs renumbered over them
        # (a marker over all levels: linear, no sort of the rows).
        nlevels = self.terms[0].nlevels
        mark = np.zeros(nlevels, dtype=bool)
        mark[refs[0]] = True
        present = np.flatnonzero(mark)
        del mark
        renumber = np.zeros(nlevels, dtype=np.intp)
        renumber[present] = np.arange(present.shape[0])
        refs[0] = renumber[refs[0]]
        del renumber
        blocks = compute_cross_products(
            self.terms, X, y, weights=weights, refs=refs, zs=zs, nlevels1=present.shape[0]
        )
        return LocalCrossProducts(levels=present, nlevels=nlevels, blocks=blocks)


@dataclass(frozen=True, eq=False)
class LocalCrossProducts:
    """A chunk's blocks with term 1 over the levels present in it.

    Attributes
    ----------
    levels
        The term-1 levels of the chunk's rows (ascending): row ``i`` of ``blocks.z1tz1``,
        column ``i`` of ``blocks.xytz1`` and columns ``i p1 .. i p1 + p1 - 1`` of
        ``blocks.zrtz1`` belong to level ``levels[i]``.
    nlevels
        Number of term-1 levels of all rows.
    blocks
        The chunk's blocks on those levels.
    """

    levels: np.ndarray
    nlevels: int
    blocks: CrossProducts

    def zrtz1_global(self) -> sp.csr_matrix | None:
        """``Zr'Z1`` with columns of all levels (same values and order: the renumbering is
        increasing, so every row's indices stay sorted)."""
        zr1 = self.blocks.zrtz1
        if zr1 is None:
            return None
        p1 = self.blocks.z1tz1.shape[1]
        idx = zr1.indices
        cols = self.levels[idx // p1] * p1 + idx % p1
        itype = np.int32 if self.nlevels * p1 < 2**31 else np.int64
        return sp.csr_matrix(
            (zr1.data, cols.astype(itype), zr1.indptr.astype(itype)),
            shape=(zr1.shape[0], self.nlevels * p1),
        )

    def r_factor(self, data: pd.DataFrame) -> np.ndarray | None:
        """R of a QR decomposition of this chunk's X (for a rank decision too close to call)."""
        rows_used = self.design.complete(data)
        if len(rows_used) == 0:
            return None
        return np.linalg.qr(self.design.spec.fixed_matrix(rows_used), mode="r")


@dataclass(frozen=True, eq=False)
class GlmmChunkPlan:
    """How a GLMM's passes turn one chunk into rows (small; shipped to Dask workers).

    Attributes
    ----------
    design
        The design of all rows from pass 1.
    terms
        The grouped random-effects terms in engine order (levels of all rows, no rows).
    kept
        Fixed-effects columns kept by the rank check (None before it: all columns).
    """

    design: StreamedDesign
    terms: tuple[GroupedTerm, ...]
    kept: tuple[int, ...] | None = None

    def with_kept(self, kept: tuple[int, ...]) -> GlmmChunkPlan:
        """The plan once the rank of X is decided."""
        return replace(self, kept=tuple(kept))

    def rows(self, data: pd.DataFrame, where: str) -> MemoryRows | None:
        """The complete rows of this chunk as PIRLS reads them (None if it has none)."""
        used = self.design.complete(data)
        if len(used) == 0:
            return None
        try:
            X, y, trials, re_rows = self.design.chunk_glmm_arrays(used)
            prior, offset = self.design.chunk_weights_offset(used)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        n = y.shape[0]
        weights = np.ones(n) if prior is None else prior
        if trials is not None:
            weights = weights * trials  # R's binomial initialize: weights times trials
        if self.kept is not None and len(self.kept) < X.shape[1]:
            X = np.ascontiguousarray(X[:, list(self.kept)])
        terms = tuple(
            replace(
                t,
                refs=re_rows[t.members[0]][0],
                z=re_rows[t.members[0]][1]
                if len(t.members) == 1
                else np.hstack([re_rows[m][1] for m in t.members]),
            )
            for t in self.terms
        )
        return MemoryRows(terms, X, y, weights, trials, np.zeros(n) if offset is None else offset)

    def check(self, data: pd.DataFrame, where: str, family: Any) -> tuple[int, np.ndarray] | None:
        """The number of complete rows of this chunk and their ``X'X`` (all columns), the
        response checked by the family (None if the chunk has no complete rows)."""
        rows = self.rows(data, where)
        if rows is None:
            return None
        check = getattr(family, "check_response", None)
        if check is not None:
            try:
                check(rows.y, rows.trials)
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
        return rows.nobs, rows.X.T @ rows.X


def _add_level_free(dense: dict[str, Any], part: CrossProducts) -> None:
    """Add the blocks that do not run over term 1's levels (and the counts) into ``dense``;
    the same additions for a chunk over all levels and for one over its own levels."""
    if dense["xytzr"] is not None:
        dense["xytzr"] += part.xytzr
    dense["xytxy"] += part.xytxy
    dense["nobs"] += part.nobs
    dense["sum_log_weights"] += part.sum_log_weights


class BlockSum:
    """The running sum of many chunks' blocks (pass 2), in time ``O(nnz log chunks)``.

    Adding each chunk's sparse ``Zr'Z1`` to one running total costs the total's size every
    time: quadratic in the number of chunks (40 chunks of the 1e7-row product design spent
    most of pass 2 re-adding the 2e7 entries summed so far). Here the sparse blocks are
    summed pairwise like a binary counter (a partial sum meets one of the same number of
    chunks), and the dense blocks go into one running total in place, so memory stays at
    the dense blocks once plus sparse partial sums of disjoint chunks.

    Examples
    --------
    >>> total = BlockSum()                       # doctest: +SKIP
    >>> for part in parts:                        # doctest: +SKIP
    ...     total.add(part)
    >>> A = total.result()                        # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._dense: dict[str, Any] | None = None
        self._sparse: list[tuple[int, Any, Any]] = []  # (chunks summed, zrtz1, zrtzr)

    def add(self, part: CrossProducts | LocalCrossProducts | None) -> None:
        """Add one chunk's blocks (None: a chunk without complete rows).

        A :class:`LocalCrossProducts` adds its term-1 blocks at its levels only: each
        level's sum is the same sequence of additions as with the other chunks' zeros (a
        zero added changes no bit).
        """
        if part is None:
            return
        if isinstance(part, LocalCrossProducts):
            self._add_local(part)
            return
        if self._dense is None:
            self._dense = {
                "z1tz1": part.z1tz1.copy(),
                "xytz1": part.xytz1.copy(),
                "xytzr": None if part.xytzr is None else part.xytzr.copy(),
                "xytxy": part.xytxy.copy(),
                "nobs": part.nobs,
                "sum_log_weights": part.sum_log_weights,
            }
        else:
            d = self._dense
            d["z1tz1"] += part.z1tz1
            d["xytz1"] += part.xytz1
            _add_level_free(d, part)
        if part.zrtz1 is None:
            return
        self._push_sparse(part.zrtz1, part.zrtzr)

    def _add_local(self, part: LocalCrossProducts) -> None:
        b, lev = part.blocks, part.levels
        if self._dense is None:
            p1 = b.z1tz1.shape[1]
            z1 = np.zeros((part.nlevels, p1, p1))
            xz1 = np.zeros((b.xytz1.shape[0], part.nlevels, p1))
            self._dense = {
                "z1tz1": z1,
                "xytz1": xz1,
                "xytzr": None if b.xytzr is None else np.zeros_like(b.xytzr),
                "xytxy": np.zeros_like(b.xytxy),
                "nobs": 0,
                "sum_log_weights": 0.0,
            }
        d = self._dense
        d["z1tz1"][lev] += b.z1tz1  # levels are distinct: a plain indexed addition
        d["xytz1"][:, lev] += b.xytz1
        _add_level_free(d, b)
        if b.zrtz1 is None:
            return
        self._push_sparse(part.zrtz1_global(), b.zrtzr)

    def _push_sparse(self, zr1, zrr) -> None:
        count = 1
        while self._sparse and self._sparse[-1][0] == count:
            prev, prev_zr1, prev_zrr = self._sparse.pop()
            count, zr1, zrr = count + prev, _sum_sparse(prev_zr1, zr1), prev_zrr + zrr
        self._sparse.append((count, zr1, zrr))

    def result(self) -> CrossProducts | None:
        """The blocks summed over every chunk added (None if none had complete rows)."""
        d = self._dense
        if d is None:
            return None
        zr1 = zrr = None
        for _, a, b in self._sparse:
            zr1 = a if zr1 is None else _sum_sparse(zr1, a)
            zrr = b if zrr is None else zrr + b
        if zrr is not None and sp.issparse(zrr):
            zrr = canonical_sparse(zrr)
        return CrossProducts(
            z1tz1=d["z1tz1"],
            zrtz1=zr1,
            zrtzr=zrr,
            xytz1=d["xytz1"],
            xytzr=d["xytzr"],
            xytxy=d["xytxy"],
            nobs=d["nobs"],
            sum_log_weights=d["sum_log_weights"],
        )


def _sum_sparse(a, b):
    return (a + b).tocsr()


def stack_r(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """R of the rows of both (tall-skinny QR): R of [R_a; R_b]."""
    if a is None:
        return b
    if b is None:
        return a
    return np.linalg.qr(np.vstack([a, b]), mode="r")


def plan_from_summary(formula: Any, summary: ChunkSummary, weights: str | None = None) -> ChunkPlan:
    """Build the all-rows design from the merged pass-1 summary, and the pass-2 plan
    (``weights``: the prior-weights column, if any)."""
    design = design_from_summary(formula, summary, weights=weights)
    return ChunkPlan(design=design, terms=group_terms(design.re_terms))


def finish(
    plan: ChunkPlan, total: CrossProducts | None, r_factor: Any
) -> tuple[ModelDesign, CrossProducts]:
    """Decide the rank of X, drop dependent columns from the blocks; return design and blocks.

    ``r_factor`` is a callable giving R of all of X; it is called only when the decision
    from ``X'X`` is too close to call.
    """
    if total is None or total.nobs != plan.design.nobs:
        got = 0 if total is None else total.nobs
        raise DataError(
            f"the first pass over the data found {plan.design.nobs} complete rows but the "
            f"second {got}; the data changed between passes — fit again"
        )
    p = plan.design.nfixed
    kept, ambiguous = independent_columns_from_gram(total.xytxy[:p, :p])
    if ambiguous:
        kept = independent_columns_from_r(r_factor())
    design = plan.design.model_design(kept)
    if len(kept) < p:
        idx = [*kept, p]
        total = CrossProducts(
            z1tz1=total.z1tz1,
            zrtz1=total.zrtz1,
            zrtzr=total.zrtzr,
            xytz1=total.xytz1[idx],
            xytzr=None if total.xytzr is None else total.xytzr[idx],
            xytxy=total.xytxy[np.ix_(idx, idx)],
            nobs=total.nobs,
            sum_log_weights=total.sum_log_weights,
        )
    return design, total


@dataclass(frozen=True, eq=False)
class StreamedCrossProducts:
    """The outcome of the two passes: a row-free design and the summed blocks.

    Attributes
    ----------
    design
        Names, levels and spec of the design of all rows (no rows).
    cross_products
        The blocks of A summed over chunks.
    nrows
        Rows read (complete or not).
    nchunks
        Chunks read per pass.
    seconds
        Wall time of each pass: ``{"pass1": ..., "pass2": ...}``.
    """

    design: ModelDesign
    cross_products: CrossProducts
    nrows: int
    nchunks: int
    seconds: dict[str, float] = field(default_factory=dict)


def glmm_plan(
    parsed: Any, summary: ChunkSummary, weights: str | None, binomial: bool
) -> GlmmChunkPlan:
    """The design of all rows from the merged summary (glmer's checks), and its plan."""
    design = design_from_summary(
        parsed, summary, weights, binomial_response=binomial, observation_level_terms=True
    )
    return GlmmChunkPlan(design=design, terms=group_terms(design.re_terms))


def add_checked(
    a: tuple[int, np.ndarray] | None, b: tuple[int, np.ndarray] | None
) -> tuple[int, np.ndarray] | None:
    """Sum two chunks' ``(rows, X'X)`` (None: a chunk without complete rows)."""
    if a is None:
        return b
    if b is None:
        return a
    return a[0] + b[0], a[1] + b[1]


def decide_rank(
    plan: GlmmChunkPlan,
    checked: tuple[int, np.ndarray] | None,
    r_factor: Callable[[], np.ndarray],
) -> tuple[ModelDesign, GlmmChunkPlan]:
    """The rank of X from the summed ``X'X`` (``r_factor()`` when too close to call): the
    row-free design with the kept columns, and the plan that reads them."""
    design = plan.design
    got = 0 if checked is None else checked[0]
    if got != design.nobs:
        raise DataError(
            f"the first pass over the data found {design.nobs} complete rows but the second "
            f"{got}; the data changed between passes — fit again"
        )
    assert checked is not None
    kept, ambiguous = independent_columns_from_gram(checked[1])
    if ambiguous:
        kept = independent_columns_from_r(r_factor())
    return design.model_design(kept), plan.with_kept(kept)


def fit_on_chunks(
    design: ModelDesign,
    family: Any,
    reduce: Reduce,
    nobs: int,
    *,
    nagq: int,
    formula: str,
    data_name: str | None,
    progress: bool,
    start: np.ndarray | None,
    facts: dict[str, Any],
) -> GeneralizedLinearMixedModelResult:
    """Fit the GLMM whose rows ``reduce`` sums over, showing the passes; the result."""
    from mixedmodels.models.glmm import GeneralizedLinearMixedModel
    from mixedmodels.results.glmm import GeneralizedLinearMixedModelResult

    rows = ChunkedRows(reduce, nobs, len(design.x_names))
    model = GeneralizedLinearMixedModel(
        design, family, nagq=nagq, formula=formula, data_name=data_name, rows=rows
    )
    clock = time.perf_counter()
    with Progress("fitting", None, progress, unit="passes") as bar:

        def on_pass() -> None:
            bar.describe(f"fitting: {model.deviance.evaluations} evaluations")
            bar.advance(1)

        rows.on_pass = on_pass
        fit = model.fit(start=start)
    optimizer = {
        **fit.optimizer,
        **facts,
        "passes": rows.passes,
        "seconds_passes": time.perf_counter() - clock,
    }
    return GeneralizedLinearMixedModelResult(replace(fit, optimizer=optimizer))
