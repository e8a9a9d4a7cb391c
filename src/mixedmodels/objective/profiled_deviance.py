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
_sum = np.add.reduce
# Deviance values remembered by theta on large systems (see ProfiledDeviance.__call__).
_MEMO_SIZE = 16


def profiled_deviance(logdet: float, pwrss: float, n: int, p: int, reml: bool) -> float:
    """The profiled criterion (BMBW eqs. 34 / 41) from its log determinant and ``r^2``.

    ``logdet`` is ``log|L_Z|^2 + log|R_X|^2`` for REML and ``log|L_Z|^2`` for ML; ``-inf``
    for ``r^2 <= 0`` (an exact fit, refused before fitting).
    """
    if pwrss <= 0.0:
        return -math.inf
    dof = n - p if reml else n
    return logdet + dof * (1.0 + _LOG_2PI + math.log(pwrss / dof))


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

    #: The value depends on theta alone (no state carried between calls): the optimiser
    #: need not evaluate a point twice (see :func:`~mixedmodels.optimize.minimize_bobyqa`).
    is_pure = True

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
        # The hot path's lookups, done once: REML sums all the logs, ML those of L_Z.
        self._log_diagonal = system.log_diagonal
        self._nz_logs = None if self.reml else system.nz_logs

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
        logdet = logdet_z + logdet_x if self.reml else logdet_z
        return profiled_deviance(logdet, pwrss, self.n, self.p, self.reml) + self.constant

    def __call__(self, theta: np.ndarray) -> float:
        """Deviance at ``theta``; ``inf`` where the system is not positive definite."""
        self.evaluations += 1
        memo = self._memo
        if memo is None:
            # The optimiser's hot path: the logs of the factor's diagonal, one sum (REML
            # sums them all; ML those of L_Z), the criterion.
            # profiled_deviance() written out, the same operations in the same order: a
            # call and its attribute lookups are a tenth of a small model's evaluation.
            # np.add.reduce is what ndarray.sum runs, without its Python wrapper.
            found = self._log_diagonal(theta)
            if found is None:
                return math.inf
            logdet1, logs, pwrss = found
            nz = self._nz_logs
            if nz is None:
                logdet = logdet1 + 2.0 * float(_sum(logs))
            else:  # ML; a one-term model's L_Z is all in logdet1
                logdet = logdet1 + 2.0 * float(_sum(logs[:nz])) if nz else logdet1
            if pwrss <= 0.0:
                return -math.inf
            dof = self.dof
            return logdet + dof * (1.0 + _LOG_2PI + math.log(pwrss / dof)) + self.constant
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

    def value_and_gradient(
        self, theta: np.ndarray, singular_nan: bool = True
    ) -> tuple[float, np.ndarray]:
        """The criterion and its analytic gradient at ``theta`` (dense systems; NaN on
        singular templates unless ``singular_nan`` is False)."""
        system = self.system
        if self.reml:
            terms, grad = system.log_terms_and_gradient(theta, "zx", self.n - self.p, singular_nan)
        else:
            terms, grad = system.log_terms_and_gradient(theta, "z", self.n, singular_nan)
        return self.value(terms), grad

    def value_gradient_and_hessian(
        self, theta: np.ndarray, singular_nan: bool = True
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """The criterion, its analytic gradient and its exact Hessian at ``theta`` from one
        factorisation (dense systems; see
        :meth:`~mixedmodels.linalg.dense.DenseSystem.log_terms_gradient_and_hessian`, also
        for ``singular_nan``)."""
        system = self.system
        if self.reml:
            found = system.log_terms_gradient_and_hessian(
                theta, "zx", self.n - self.p, singular_nan
            )
        else:
            found = system.log_terms_gradient_and_hessian(theta, "z", self.n, singular_nan)
        terms, grad, hess = found
        return self.value(terms), grad, hess

    def estimates(self, theta: np.ndarray) -> tuple[Estimates, float]:
        """beta-hat, sigma-hat, Var(beta-hat), the conditional modes and the criterion at
        theta (dense systems)."""
        est, terms = self.system.estimates(theta, self.dof)
        return est, self.value(terms)
