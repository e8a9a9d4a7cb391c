"""Minimise the profiled deviance over theta, and check the optimum afterwards.

BOBYQA (Powell 2009; the NLopt implementation) is derivative-free and handles the bound
constraints theta_diag >= 0 natively, which is what lme4 and MixedModels.jl use. The
result is recorded in an :class:`OptSummary`; :func:`check_convergence` then looks at the
finite-difference gradient at the optimum (lme4's ``checkConv`` idea), ignoring
coordinates that sit on their bound with the gradient pointing outwards.
"""

from __future__ import annotations

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
        return val if np.isfinite(val) else 1e300

    opt = nlopt.opt(nlopt.LN_BOBYQA, k)
    opt.set_min_objective(wrapped)
    lb = np.where(np.isfinite(lower), lower, -np.inf)
    opt.set_lower_bounds(lb)
    opt.set_ftol_rel(opts.ftol_rel)
    opt.set_ftol_abs(opts.ftol_abs)
    opt.set_xtol_abs(opts.xtol_abs)
    opt.set_maxeval(opts.maxeval)
    opt.set_initial_step(np.full(k, opts.initial_step))
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


def finite_difference_gradient(
    objective: Callable[[np.ndarray], float], x: np.ndarray, lower: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Central differences, one-sided (forward) where the point sits on its lower bound."""
    g = np.empty_like(x)
    f0 = objective(x)
    for i in range(x.shape[0]):
        e = np.zeros_like(x)
        step = h * max(1.0, abs(x[i]))
        e[i] = step
        if x[i] - step < lower[i]:
            g[i] = (objective(x + e) - f0) / step
        else:
            g[i] = (objective(x + e) - objective(x - e)) / (2 * step)
    return g


def finite_difference_hessian(
    objective: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4
) -> np.ndarray:
    """Central second differences (points may step slightly past a bound)."""
    k = x.shape[0]
    H = np.empty((k, k))
    f0 = objective(x)
    steps = h * np.maximum(1.0, np.abs(x))
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = steps[i]
        H[i, i] = (objective(x + ei) - 2 * f0 + objective(x - ei)) / steps[i] ** 2
        for j in range(i):
            ej = np.zeros(k)
            ej[j] = steps[j]
            H[i, j] = H[j, i] = (
                objective(x + ei + ej)
                - objective(x + ei - ej)
                - objective(x - ei + ej)
                + objective(x - ei - ej)
            ) / (4 * steps[i] * steps[j])
    return H


def check_convergence(
    objective: Callable[[np.ndarray], float], summary: OptSummary, tol: float = 2e-3
) -> OptSummary:
    """Return ``summary`` with the gradient and a convergence verdict added.

    A coordinate on its bound with a non-negative derivative is optimal there (KKT) and is
    ignored. For the others the finite-difference gradient must be below ``tol`` (lme4's
    default, 2e-3); if it is not, the gradient is scaled by the Hessian (the Newton step,
    lme4's ``checkConv`` criterion) and must be below ``tol`` on that scale. The Hessian is
    only computed in that second case: on large data each evaluation costs milliseconds.
    """
    x, lower = summary.final_theta, summary.lower
    g = finite_difference_gradient(objective, x, lower)
    active = np.isfinite(lower) & (x - lower < 1e-8) & (g >= 0)
    free = ~active
    messages = list(summary.messages)
    converged = summary.converged
    worst = float(np.max(np.abs(g[free]), initial=0.0))
    if worst > tol:
        scaled = None
        idx = np.flatnonzero(free)

        def restricted(v):
            full = x.copy()
            full[idx] = v
            return objective(full)

        H = finite_difference_hessian(restricted, x[idx])
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
