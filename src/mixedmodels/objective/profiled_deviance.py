"""The profiled REML / ML criterion, written once, over either kind of system.

For given theta a system (:class:`~mixedmodels.linalg.blocked.BlockedSystem` for any model,
:class:`~mixedmodels.linalg.dense.DenseSystem` for small ones) gives ``log|L_Z|^2``,
``log|R_X|^2`` and the penalised residual sum of squares ``r^2``; beta and sigma profiled out,

    ML:   d(theta)   = log|L_Z|^2 + n (1 + log(2 pi r^2 / n))
    REML: d_R(theta) = log|L_Z|^2 + log|R_X|^2 + (n - p)(1 + log(2 pi r^2 / (n - p)))

(Bates, Maechler, Bolker & Walker 2015, JSS 67(1), eqs. 34 and 41), plus a constant that
does not depend on theta: the log-Jacobian of a transformation of the rows (prior weights,
``-sum log w_i``; residual variances by group, ``2 sum_i log delta_i``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mixedmodels.linalg.blocked import BlockedFactor, BlockedSystem
from mixedmodels.linalg.dense import DenseSystem
from mixedmodels.linalg.solution import Estimates
from mixedmodels.objective.start import moment_start

_LOG_2PI = math.log(2.0 * math.pi)
# Deviance values remembered by theta on large systems (see ProfiledDeviance.__call__).
_MEMO_SIZE = 16


def profiled_deviance(
    logdet_z: float, logdet_x: float, pwrss: float, n: int, p: int, reml: bool
) -> float:
    """The profiled criterion (BMBW eqs. 34 / 41) from the log determinants and ``r^2``.

    ``-inf`` for ``r^2 <= 0`` (an exact fit, refused before fitting).
    """
    if pwrss <= 0.0:
        return -math.inf
    if reml:
        nmp = n - p
        return logdet_z + logdet_x + nmp * (1.0 + _LOG_2PI + math.log(pwrss / nmp))
    return logdet_z + n * (1.0 + _LOG_2PI + math.log(pwrss / n))


class ProfiledDeviance:
    """The profiled REML or ML deviance of a system as a function of theta alone.

    Parameters
    ----------
    system
        The factorable system of the model's cross products (blocked or dense).
    reml
        REML criterion if True, ML deviance otherwise.
    constant
        Added to the criterion: the log-Jacobian of a transformation of the rows.

    Examples
    --------
    >>> dev = ProfiledDeviance(BlockedSystem(structure, A), reml=True)  # doctest: +SKIP
    >>> dev(structure.initial_theta())                                 # doctest: +SKIP
    """

    def __init__(
        self, system: BlockedSystem | DenseSystem, reml: bool = True, constant: float = 0.0
    ):
        self.system = system
        self.structure = system.structure
        self.reml = bool(reml)
        self.constant = float(constant)
        self.n = int(system.n)
        self.p = int(system.p)
        #: Degrees of freedom of sigma^2 = r^2 / dof.
        self.dof = self.n - self.p if self.reml else self.n
        self.evaluations = 0
        # Large systems: the last few values by theta. The optimiser asks again for points
        # it has already seen (its final point, a convergence check's centre), and each
        # evaluation is a dense factorisation; the deviance is a pure function of theta.
        self._memo: dict[bytes, float] | None = {} if system.memoize else None

    @property
    def A(self) -> Any:
        """The cross products of a blocked system."""
        return self.system.A

    @property
    def is_dense(self) -> bool:
        return isinstance(self.system, DenseSystem)

    def with_reml(self, reml: bool) -> ProfiledDeviance:
        """The other criterion on the same system (nothing is copied)."""
        return ProfiledDeviance(self.system, reml, self.constant)

    def value(self, terms: tuple[float, float, float] | None) -> float:
        """The criterion from a system's log terms (``inf`` for None: not positive definite)."""
        if terms is None:
            return math.inf
        logdet_z, logdet_x, pwrss = terms
        d = profiled_deviance(logdet_z, logdet_x, pwrss, self.n, self.p, self.reml)
        return d + self.constant

    def __call__(self, theta: np.ndarray) -> float:
        """Deviance at ``theta``; ``inf`` where the system is not positive definite."""
        self.evaluations += 1
        memo = self._memo
        if memo is None:
            return self.value(self.system.log_terms(theta))
        key = np.asarray(theta, dtype=np.float64).tobytes()
        value = memo.get(key)
        if value is None:
            value = self.value(self.system.log_terms(theta))
            if len(memo) >= _MEMO_SIZE:
                del memo[next(iter(memo))]  # the oldest (insertion order)
            memo[key] = value
        return value

    def objective(self, f: BlockedFactor) -> float:
        """The criterion from a computed blocked factor."""
        return self.value((f.logdet_z, f.logdet_x, f.pwrss))

    # -- the blocked factor (see linalg/blocked.py) -------------------------------------
    def factor(self, theta: np.ndarray) -> BlockedFactor:
        return self.system.factor(theta)

    def owned_factor(self, theta: np.ndarray) -> tuple[BlockedFactor, bool]:
        return self.system.owned_factor(theta)

    def release(self, f: BlockedFactor) -> None:
        self.system.release(f)

    # -- start, gradient and estimates -----------------------------------------------
    def moment_start(self, step: float) -> tuple[np.ndarray, np.ndarray]:
        """Starting theta and initial steps (:func:`.start.moment_start`)."""
        return moment_start(self.system, step)

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The criterion and its analytic gradient at ``theta`` (dense systems)."""
        if self.reml:
            terms, grad = self.system.log_terms_and_gradient(theta, "zx", self.n - self.p)
        else:
            terms, grad = self.system.log_terms_and_gradient(theta, "z", self.n)
        return self.value(terms), grad

    def estimates(self, theta: np.ndarray) -> tuple[Estimates, float]:
        """beta-hat, sigma-hat, Var(beta-hat), the conditional modes and the criterion at
        theta (dense systems)."""
        est, terms = self.system.estimates(theta, self.dof)
        return est, self.value(terms)
