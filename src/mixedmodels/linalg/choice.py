"""The one rule that chooses a model's system: dense for small models, blocked otherwise.

Sizes alone decide (never where the cross products came from), so the fits of one model
from memory, from streamed chunks and from a Dask cluster take the same path and agree to
rounding. Every caller that needs a system asks :func:`choose_system`.
"""

from __future__ import annotations

import numpy as np

from mixedmodels.covariance import CovarianceStructure
from mixedmodels.linalg.blocked import BlockedSystem
from mixedmodels.linalg.cross_products import CrossProducts
from mixedmodels.linalg.dense import (
    DenseSystem,
    cross_products_from_blocks,
    cross_products_from_rows,
)

#: Largest ``q + p + 1`` fitted in dense form (past it the blocked engine, which exploits
#: the block-diagonal first term, costs less).
DENSE_MAX = 96

#: Up to this many entries of ``[Z X y]`` (rows x m), ``A`` is one product of that dense
#: matrix with itself; beyond, it is assembled from the blocked cross products.
ROWS_PRODUCT_MAX = 1 << 21


def dense_size(structure: CovarianceStructure, p: int) -> int:
    """``q + p + 1``: the order of the dense ``Omega`` of a model."""
    return structure.nranef + p + 1


def prefers_dense(structure: CovarianceStructure, p: int) -> bool:
    """Whether a model is fitted in dense form: sizes alone decide (see ``DENSE_MAX``), so
    the fits of one model from memory and from streamed chunks take the same path."""
    return dense_size(structure, p) <= DENSE_MAX


def evaluates_dense(structure: CovarianceStructure) -> bool:
    """Whether the optimiser's deviance evaluations are dense too (all templates 1 x 1).

    With vector templates the blocked engine's closed-form 2 x 2 (and batched) level
    blocks cost less per evaluation (sleepstudy ``(Days | Subject)``: 14 against 22 us;
    ratpup ``(1 + sex | litter)``: 15 against 30 us), so the optimiser uses it and the
    dense form serves the gradient and the estimates only.
    """
    return structure.all_scalar


def dense_system(
    structure: CovarianceStructure,
    *,
    A: CrossProducts | None = None,
    X: np.ndarray | None = None,
    y: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> DenseSystem:
    """The dense system of a small model, from its rows (one product ``M'M``, cheapest when
    :func:`rows_product_fits`) or assembled from its blocks ``A``."""
    if A is not None:
        return DenseSystem(structure, cross_products_from_blocks(structure, A), int(A.nobs))
    if X is None or y is None:
        raise ValueError("a dense system needs the blocks A or the rows X and y")
    W = cross_products_from_rows(structure, X, y, weights)
    return DenseSystem(structure, W, int(X.shape[0]))


def rows_product_fits(structure: CovarianceStructure, n: int, p: int) -> bool:
    """Whether the dense ``A`` of ``n`` rows is cheapest as one product of the rows."""
    return n * dense_size(structure, p) <= ROWS_PRODUCT_MAX


def choose_system(structure: CovarianceStructure, A: CrossProducts) -> BlockedSystem | DenseSystem:
    """The system that evaluates a model's criterion fastest, given its blocks."""
    p = A.xytxy.shape[0] - 1
    if prefers_dense(structure, p) and evaluates_dense(structure):
        return DenseSystem(structure, cross_products_from_blocks(structure, A), int(A.nobs))
    return BlockedSystem(structure, A)
