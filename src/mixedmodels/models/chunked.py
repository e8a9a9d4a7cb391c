"""What each chunk contributes, and how the contributions are summed and finished.

Shared by the local two-pass fit (:mod:`.streamed`) and the Dask map-reduce
(:mod:`.dask_fit`): a :class:`ChunkPlan` forms one chunk's blocks of ``A`` with the levels
and columns fixed by pass 1; blocks add up; :func:`finish` decides the rank of X from the
summed ``X'X`` (a QR pass only when too close to call) and drops dependent columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

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
from mixedmodels.linalg.cross_products import CrossProducts, compute_cross_products

__all__ = [
    "ChunkPlan",
    "StreamedCrossProducts",
    "add_cross_products",
    "finish",
    "plan_from_summary",
    "stack_r",
]


@dataclass(frozen=True, eq=False)
class ChunkPlan:
    """What pass 2 needs to form one chunk's blocks (small; shipped to Dask workers)."""

    design: StreamedDesign
    terms: tuple[GroupedTerm, ...]

    def cross_products(self, data: pd.DataFrame, where: str) -> CrossProducts | None:
        """The blocks of this chunk's complete rows (None if it has none)."""
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
        return compute_cross_products(self.terms, X, y, weights=weights, refs=refs, zs=zs)

    def r_factor(self, data: pd.DataFrame) -> np.ndarray | None:
        """R of a QR decomposition of this chunk's X (for a rank decision too close to call)."""
        rows_used = self.design.complete(data)
        if len(rows_used) == 0:
            return None
        return np.linalg.qr(self.design.spec.fixed_matrix(rows_used), mode="r")


def add_cross_products(a: CrossProducts | None, b: CrossProducts | None) -> CrossProducts | None:
    """Sum of two chunks' blocks; None stands for a chunk without complete rows."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


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
