"""Minimise the profiled deviance over theta, and check the optimum afterwards.

BOBYQA (Powell 2009; the NLopt implementation) is derivative-free and handles the bound
constraints theta_diag >= 0 natively, which is what lme4 and MixedModels.jl use. The
result is recorded in an :class:`OptSummary`; :func:`check_convergence` then looks at the
finite-difference gradient at the optimum (lme4's ``checkConv`` idea), ignoring
coordinates that sit on their bound with the gradient pointing outwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import ConvergenceError


@dataclass(frozen=True)
class OptimizerOptions:
    """Options of the theta optimisation (frozen; pass a new one to change).

    Attributes
    ----------
    ftol_rel, ftol_abs, xtol_abs
        NLopt stopping tolerances (tighter than lme4's defaults: we aim at the optimum to
        well within 1e-6 relative in the deviance).
    initial_step
        Initial trust-region radius for each theta.
    maxeval
        Evaluation budget.
    """

    ftol_rel: float = 1e-12
    ftol_abs: float = 1e-10
    xtol_abs: float = 1e-9
    initial_step: float = 0.5
    maxeval: int = 100_000


@dataclass(frozen=True)
class OptSummary:
    """A record of how the optimisation went."""

    initial_theta: np.ndarray
    final_theta: np.ndarray
    lower: np.ndarray
    initial_objective: float
    final_objective: float
    evaluations: int
    optimizer: str
    return_code: str
    gradient: np.ndarray | None = None
    converged: bool = True
    messages: tuple[str, ...] = field(default_factory=tuple)


_NLOPT_CODES = {
    1: "SUCCESS",
    2: "STOPVAL_REACHED",
    3: "FTOL_REACHED",
    4: "XTOL_REACHED",
    5: "MAXEVAL_REACHED",
    6: "MAXTIME_REACHED",
}


def minimize_bobyqa(
    objective: Callable[[np.ndarray], float],
    theta0: np.ndarray,
    lower: np.ndarray,
    options: OptimizerOptions | None = None,
    initial_steps: np.ndarray | None = None,
) -> OptSummary:
    """Minimise ``objective`` over theta >= lower with BOBYQA.

    Parameters
    ----------
    objective
        The profiled deviance, a function of theta alone.
    theta0
        Starting values (lme4: identity templates).
    lower
        Lower bounds (0 for diagonal template entries, -inf otherwise).
    options
        Tolerances and budget.
    initial_steps
        Initial trust-region radius per coordinate (default: ``options.initial_step``).

    Returns
    -------
    OptSummary
    """
    import nlopt  # imported here: keeps `import mixedmodels` light

    opts = options or OptimizerOptions()
    theta0 = np.asarray(theta0, dtype=np.float64)
    k = theta0.shape[0]
    f0 = float(objective(theta0))
    if not np.isfinite(f0):
        raise ConvergenceError(
            "the deviance is not finite at the starting values; check the fixed-effects "
            "design for collinear or constant columns"
        )
    count = [1]
    best = [f0, theta0.copy()]

    def wrapped(x, grad):
        count[0] += 1
        val = float(objective(x))
        if val < best[0]:
            best[0] = val
            best[1] = np.array(x, copy=True)
        return val if math.isfinite(val) else 1e300  # math: no numpy call per evaluation

    opt = nlopt.opt(nlopt.LN_BOBYQA, k)
    opt.set_min_objective(wrapped)
    lb = np.where(np.isfinite(lower), lower, -np.inf)
    opt.set_lower_bounds(lb)
    opt.set_ftol_rel(opts.ftol_rel)
    opt.set_ftol_abs(opts.ftol_abs)
    opt.set_xtol_abs(opts.xtol_abs)
    opt.set_maxeval(opts.maxeval)
    if initial_steps is None:
        initial_steps = np.full(k, opts.initial_step)
    opt.set_initial_step(np.asarray(initial_steps, dtype=np.float64))
    messages: list[str] = []
    try:
        xopt = opt.optimize(theta0)
        code = _NLOPT_CODES.get(opt.last_optimize_result(), str(opt.last_optimize_result()))
    except nlopt.RoundoffLimited:
        xopt = best[1]
        code = "ROUNDOFF_LIMITED"
        messages.append(
            "optimizer stopped at its round-off limit (best point kept); if estimates look "
            "odd, rescale covariates (e.g. scale(x)) or simplify the random effects"
        )
    fopt = float(objective(xopt))
    if best[0] < fopt:
        xopt, fopt = best[1], best[0]
    if code == "MAXEVAL_REACHED":
        messages.append(
            f"optimizer reached its evaluation limit ({opts.maxeval}); raise "
            "OptimizerOptions(maxeval=...), rescale covariates or simplify the random effects"
        )
    return OptSummary(
        initial_theta=theta0,
        final_theta=np.asarray(xopt, dtype=np.float64),
        lower=np.asarray(lower, dtype=np.float64),
        initial_objective=f0,
        final_objective=fopt,
        evaluations=count[0],
        optimizer="nlopt LN_BOBYQA",
        return_code=code,
        converged=code != "MAXEVAL_REACHED",
        messages=tuple(messages),
    )


def _derivatives(
    objective: Callable[[np.ndarray], float],
    x: np.ndarray,
    f0: float,
    lower: np.ndarray,
    h: float = 1e-4,
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Finite-difference gradient at ``x`` and a function giving the Hessian on demand.

    One step ``h * max(1, |x_i|)`` serves both (lme4's ``deriv12`` design), so the points
    ``x +- h e_i`` of the gradient also give the Hessian's diagonal and each off-diagonal
    entry costs one more evaluation, ``f(x + h_i e_i + h_j e_j)`` (forward differences,
    O(h) error: plenty for scaling a gradient). ``f0 = objective(x)`` is passed in (the
    optimiser already knows it). The gradient is central, one-sided (forward) where the
    point sits on its lower bound.
    """
    k = x.shape[0]
    steps = h * np.maximum(1.0, np.abs(x))
    f_plus = np.empty(k)
    f_minus = np.full(k, np.nan)
    g = np.empty(k)
    for i in range(k):
        e = np.zeros(k)
        e[i] = steps[i]
        f_plus[i] = objective(x + e)
        if x[i] - steps[i] < lower[i]:
            g[i] = (f_plus[i] - f0) / steps[i]
        else:
            f_minus[i] = objective(x - e)
            g[i] = (f_plus[i] - f_minus[i]) / (2 * steps[i])

    def hessian(idx: np.ndarray) -> np.ndarray:
        """Hessian restricted to coordinates ``idx`` (points may step slightly past a bound)."""
        H = np.empty((idx.shape[0], idx.shape[0]))
        for a, i in enumerate(idx):
            if np.isnan(f_minus[i]):
                e = np.zeros(k)
                e[i] = steps[i]
                f_minus[i] = objective(x - e)
            H[a, a] = (f_plus[i] - 2 * f0 + f_minus[i]) / steps[i] ** 2
            for b, j in enumerate(idx[:a]):
                e = np.zeros(k)
                e[i], e[j] = steps[i], steps[j]
                H[a, b] = H[b, a] = (objective(x + e) - f_plus[i] - f_plus[j] + f0) / (
                    steps[i] * steps[j]
                )
        return H

    return g, hessian


def check_convergence(
    objective: Callable[[np.ndarray], float], summary: OptSummary, tol: float = 2e-3
) -> OptSummary:
    """Return ``summary`` with the gradient and a convergence verdict added.

    A coordinate on its bound with a non-negative derivative is optimal there (KKT) and is
    ignored. For the others the finite-difference gradient must be below ``tol`` (lme4's
    default, 2e-3); if it is not, the gradient is scaled by the Hessian (the Newton step,
    lme4's ``checkConv`` criterion) and must be below ``tol`` on that scale. The Hessian is
    only computed in that second case, from the gradient's evaluations plus one per pair of
    free coordinates: on large data each evaluation costs milliseconds. ``summary`` must
    come from minimising this ``objective`` (its ``final_objective`` is reused).
    """
    x, lower = summary.final_theta, summary.lower
    g, hessian = _derivatives(objective, x, summary.final_objective, lower)
    active = np.isfinite(lower) & (x - lower < 1e-8) & (g >= 0)
    free = ~active
    messages = list(summary.messages)
    converged = summary.converged
    worst = float(np.max(np.abs(g[free]), initial=0.0))
    if worst > tol:
        scaled = None
        idx = np.flatnonzero(free)
        H = hessian(idx)
        try:
            scaled = np.linalg.solve(np.linalg.cholesky(H), g[idx])
        except np.linalg.LinAlgError:
            messages.append(
                "model failed to converge: the Hessian of the deviance is not positive "
                "definite at the optimum; the model may be over-parameterised"
            )
            converged = False
        if scaled is not None and np.max(np.abs(scaled)) > tol:
            converged = False
            messages.append(
                f"model failed to converge: scaled gradient {np.max(np.abs(scaled)):.3g} "
                f"(tol = {tol}); try rescaling covariates or a simpler random-effects structure"
            )
    return OptSummary(
        initial_theta=summary.initial_theta,
        final_theta=summary.final_theta,
        lower=summary.lower,
        initial_objective=summary.initial_objective,
        final_objective=summary.final_objective,
        evaluations=summary.evaluations,
        optimizer=summary.optimizer,
        return_code=summary.return_code,
        gradient=g,
        converged=converged,
        messages=tuple(messages),
    )
