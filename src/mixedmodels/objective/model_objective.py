"""A fitted model's own objective: the profiled criterion over all of its parameters.

The parameters come in named blocks: ``theta`` (the relative covariance templates, in
lme4's order) and ``residual`` (the residual structure's parameters, e.g. nlme's varIdent
log SD ratios; empty for one residual variance). For given values the residual structure
(:mod:`mixedmodels.residual.structures`) gives the cross products of the rescaled rows and
the log-Jacobian of the rescaling; the system chosen by
:func:`mixedmodels.linalg.choice.choose_system` factors them and
:class:`~.profiled_deviance.ProfiledDeviance` forms the criterion, with beta and sigma
profiled out:

    d(theta, psi) = d_profiled(theta; A(psi)) + J(psi).

Everything that asks "how does the likelihood change" (the optimiser, Satterthwaite's
Hessian, profile intervals, bootstrap refits, likelihood-ratio tests) asks this object, so
a method cannot silently drop part of the model. ``with_xy_transform`` maps the ``[X y]``
columns (a fixed effect moved into the response, for profiles) without touching rows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from mixedmodels.covariance import CovarianceStructure
from mixedmodels.linalg.blocked import BlockedSystem
from mixedmodels.linalg.choice import choose_system
from mixedmodels.linalg.cross_products import CrossProducts
from mixedmodels.objective.profiled_deviance import ProfiledDeviance

_SYSTEMS_KEPT = 4  # systems remembered by residual parameters (the optimiser revisits)


class LinearMixedObjective:
    """The profiled REML or ML criterion over ``(theta, residual parameters)``.

    Parameters
    ----------
    structure
        The random-effects covariance parameterisation.
    residual
        The residual structure (``names``, ``initial()``, ``lower()``,
        ``cross_products(psi)``, ``log_jacobian(psi)``).
    reml
        REML criterion if True, ML deviance otherwise.
    fixed
        A profiled deviance to use for the (parameter-free) residual structure, when the
        caller has already built one (a small model's dense system).
    fixed_blocked
        For the same case, a function giving the blocked profiled deviance (built on first
        use by the caller; see :meth:`factored_at`).

    Attributes
    ----------
    blocks
        Parameter block name -> slice of the parameter vector.
    names
        One name per parameter: the theta entries as
        :meth:`~mixedmodels.covariance.CovarianceStructure.theta_labels` names them, then
        the residual structure's names.
    """

    def __init__(
        self,
        structure: CovarianceStructure,
        residual: Any,
        reml: bool,
        fixed: ProfiledDeviance | None = None,
        fixed_blocked: Callable[[], ProfiledDeviance] | None = None,
    ):
        self.structure = structure
        self.residual = residual
        self.reml = bool(reml)
        k = structure.ntheta
        r = len(residual.names)
        self.blocks = {"theta": slice(0, k), "residual": slice(k, k + r)}
        self.names = (*structure.theta_labels(), *residual.names)
        self.ntheta = k
        self._fixed = fixed
        self._fixed_blocked = fixed_blocked
        self._systems: OrderedDict[bytes, ProfiledDeviance] = OrderedDict()
        self._blocked: OrderedDict[bytes, ProfiledDeviance] = OrderedDict()
        self._pattern: Any = None
        self.evaluations = 0

    @property
    def nparams(self) -> int:
        return self.ntheta + len(self.residual.names)

    @property
    def has_residual_parameters(self) -> bool:
        return len(self.residual.names) > 0

    def lower_bounds(self) -> np.ndarray:
        return np.concatenate([self.structure.lower_bounds(), self.residual.lower()])

    def initial_values(self) -> np.ndarray:
        return np.concatenate([self.structure.initial_theta(), self.residual.initial()])

    def split(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(theta, psi)`` of a full parameter vector."""
        params = np.asarray(params, dtype=np.float64)
        return params[: self.ntheta], params[self.ntheta :]

    # -- the criterion --------------------------------------------------------------------
    def deviance_at(self, psi: np.ndarray) -> ProfiledDeviance:
        """The profiled deviance in theta for fixed residual parameters ``psi``."""
        psi = np.asarray(psi, dtype=np.float64)
        if psi.shape[0] == 0 and self._fixed is not None:
            return self._fixed
        key = psi.tobytes()
        dev = self._systems.get(key)
        if dev is not None:
            self._systems.move_to_end(key)
            return dev
        A = self.residual.cross_products(psi)
        system = self._system(A)
        dev = ProfiledDeviance(system, self.reml, self.residual.log_jacobian(psi))
        self._systems[key] = dev
        if len(self._systems) > _SYSTEMS_KEPT:
            self._systems.popitem(last=False)
        return dev

    def factored_at(self, psi: np.ndarray) -> ProfiledDeviance:
        """The profiled deviance in theta at ``psi`` over a blocked system, whose
        :meth:`~ProfiledDeviance.factor` gives the blocked factor that estimates, conditional
        variances and inference read."""
        psi = np.asarray(psi, dtype=np.float64)
        if psi.shape[0] == 0 and self._fixed_blocked is not None:
            return self._fixed_blocked()
        key = psi.tobytes()
        dev = self._blocked.get(key)
        if dev is None:
            current = self.deviance_at(psi)
            if isinstance(current.system, BlockedSystem):
                dev = current
            else:
                system = BlockedSystem(self.structure, self.residual.cross_products(psi))
                dev = ProfiledDeviance(system, self.reml, current.constant)
            self._blocked[key] = dev
            if len(self._blocked) > _SYSTEMS_KEPT:
                self._blocked.popitem(last=False)
        return dev

    def _system(self, A: CrossProducts):
        if self._pattern is not None:
            # New values, same sparsity: the rank-update pattern is set up once.
            return self._pattern.with_values(A)
        system = choose_system(self.structure, A)
        if isinstance(system, BlockedSystem):
            self._pattern = system
        return system

    def __call__(self, params: np.ndarray) -> float:
        """The criterion at ``params = (theta, psi)``; ``inf`` where not positive definite."""
        self.evaluations += 1
        theta, psi = self.split(params)
        try:
            dev = self.deviance_at(psi)
        except np.linalg.LinAlgError:
            # A residual structure outside its positive definite range (a correlation
            # numerically at 1): no likelihood there.
            return float("inf")
        return dev(theta)

    # -- variants ---------------------------------------------------------------------------
    def with_reml(self, reml: bool) -> LinearMixedObjective:
        """The same model with the other criterion."""
        fixed = None if self._fixed is None else self._fixed.with_reml(reml)
        blocked = self._fixed_blocked
        fixed_blocked = None if blocked is None else (lambda: blocked().with_reml(reml))
        return LinearMixedObjective(self.structure, self.residual, reml, fixed, fixed_blocked)

    def with_xy_transform(self, M: np.ndarray) -> LinearMixedObjective:
        """The objective of the model whose ``[X y]`` columns are ``[X y] M'`` (no rows)."""
        return LinearMixedObjective(
            self.structure, self.residual.with_xy_transform(M), self.reml, None
        )
