"""Residual structures behind one interface: parameters, cross products at those, log-Jacobian.

A residual structure says how ``Var(e)`` departs from ``sigma^2 I``. Those handled here are
diagonal and known up to a few parameters ``psi``: ``Var(e_i) = sigma^2 delta_i(psi)^2 / w_i``
with prior weights ``w_i`` (lme4's ``weights=``) and SD ratios ``delta`` (nlme's
``varIdent``). Scaling row ``i`` by ``sqrt(w_i) / delta_i`` gives a homoscedastic model, so

* its cross products are a weighted sum of fixed blocks: ``A(psi) = sum_g A_g / delta_g^2``
  (``A_g`` the blocks of the rows of stratum ``g``, already weighted by ``w``);
* the likelihood of the original rows adds the log-Jacobian of the scaling to the deviance:
  ``2 sum_i log delta_i - sum_i log w_i`` (ML and REML alike).

(Pinheiro & Bates 2000, sec. 5.2; Bates et al. 2015, sec. 3 for the weighted blocks.) A
structure exposes ``names``, ``initial()``, ``lower()``, :meth:`cross_products` and
:meth:`log_jacobian`; the model objective (:mod:`mixedmodels.objective.model_objective`)
needs nothing else, so a new structure is a new class here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mixedmodels.linalg.cross_products import (
    CrossProducts,
    StratifiedCrossProducts,
    transform_xy,
)
from mixedmodels.residual.var_ident import ResidualStrata


def weights_log_jacobian(weights: np.ndarray | None) -> float:
    """``-sum_i log w_i``: the deviance's term for prior weights (0 without weights)."""
    if weights is None:
        return 0.0
    return -float(np.sum(np.log(weights)))


class Homoscedastic:
    """``Var(e_i) = sigma^2 / w_i``: one residual variance (with optional prior weights).

    Parameters
    ----------
    A
        The (weighted) cross products, or a function giving them (formed on first use: a
        small model is fitted in dense form and may never need the blocks).
    jacobian
        ``-sum log w_i`` (0 without weights).
    """

    names: tuple[str, ...] = ()

    def __init__(self, A: CrossProducts | Callable[[], CrossProducts], jacobian: float = 0.0):
        self._A = A
        self.jacobian = float(jacobian)

    @property
    def A(self) -> CrossProducts:
        if callable(self._A):
            self._A = self._A()
        return self._A

    def initial(self) -> np.ndarray:
        return np.zeros(0)

    def lower(self) -> np.ndarray:
        return np.zeros(0)

    def cross_products(self, psi: np.ndarray) -> CrossProducts:
        return self.A

    def log_jacobian(self, psi: np.ndarray) -> float:
        return self.jacobian

    def with_xy_transform(self, M: np.ndarray) -> Homoscedastic:
        """The same structure for the ``[X y]`` columns mapped by ``M``."""
        return Homoscedastic(transform_xy(self.A, M), self.jacobian)


@dataclass(frozen=True, eq=False)
class VarIdent:
    """``Var(e_i) = sigma^2 delta_g(i)^2 / w_i`` with ``delta = 1`` for the reference stratum.

    The parameters are ``rho_g = log delta_g`` of the non-reference strata (unbounded).

    Attributes
    ----------
    strata
        Which rows share a variance (labels, codes).
    blocks
        The (weighted) cross products of each stratum's rows.
    weights_jacobian
        ``-sum log w_i`` (0 without weights).
    """

    strata: ResidualStrata
    blocks: StratifiedCrossProducts
    weights_jacobian: float = 0.0

    @property
    def names(self) -> tuple[str, ...]:
        col = self.strata.column
        return tuple(f"log sd ratio {col}={label}" for label in self.strata.labels[1:])

    @property
    def counts(self) -> np.ndarray:
        return self.blocks.counts.astype(np.float64)

    def initial(self) -> np.ndarray:
        return np.zeros(self.strata.nstrata - 1)

    def lower(self) -> np.ndarray:
        return np.full(self.strata.nstrata - 1, -np.inf)

    def log_delta(self, psi: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.asarray(psi, dtype=np.float64)])

    def cross_products(self, psi: np.ndarray) -> CrossProducts:
        return self.blocks.combine(np.exp(-2.0 * self.log_delta(psi)))

    def log_jacobian(self, psi: np.ndarray) -> float:
        return 2.0 * float(self.counts @ self.log_delta(psi)) + self.weights_jacobian

    def with_xy_transform(self, M: np.ndarray) -> VarIdent:
        """The same structure for the ``[X y]`` columns mapped by ``M``."""
        return VarIdent(self.strata, self.blocks.transform_xy(M), self.weights_jacobian)
