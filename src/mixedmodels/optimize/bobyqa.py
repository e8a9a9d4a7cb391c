"""Minimise an objective over bounded parameters with BOBYQA, and record how it went.

BOBYQA (Powell 2009; the NLopt implementation) is derivative-free and handles the bound
constraints theta_diag >= 0 natively, which is what lme4 and MixedModels.jl use. The
result is recorded in an :class:`OptSummary`; :mod:`.finish` completes the optimum and
:mod:`.check` judges it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mixedmodels.errors import ConvergenceError


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

    def __post_init__(self) -> None:
        # Own read-only copies (theta-sized, so cheap): a caller's start vector or an
        # optimiser's work array cannot change the record, nor the record them.
        for name in ("initial_theta", "final_theta", "lower", "gradient"):
            value = getattr(self, name)
            if value is not None and (value.flags.writeable or value.base is not None):
                value = np.array(value, dtype=np.float64)
                value.setflags(write=False)
                object.__setattr__(self, name, value)


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
    # An objective that is a pure function of theta (``is_pure``, e.g. the profiled
    # deviance) is not evaluated twice at one point: BOBYQA's first point is theta0, whose
    # value is known, and the optimum's value is the one NLopt reports. (A stateful
    # objective, such as PIRLS warm-started from its last modes, is evaluated as asked.)
    pure = bool(getattr(objective, "is_pure", False))
    count = 1
    first = pure
    best_f, best_x = f0, theta0.copy()
    # The start as Python floats: comparing lists (NaN equals nothing in both) skips
    # np.array_equal's wrapper layers, code a fit would touch only for this.
    start = theta0.tolist()

    # One closure, no wrappers: on a small model an evaluation is ~10 us, so each
    # Python-level call and lookup here is a visible share of it.
    def wrapped(x, grad):
        nonlocal count, first, best_f, best_x
        if first:
            first = False
            if x.tolist() == start:
                return f0
        count += 1
        val = float(objective(x))
        if val < best_f:  # kept for a round-off stop, which loses NLopt's own best point
            best_f = val
            best_x = x.copy()
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
        xopt = best_x
        code = "ROUNDOFF_LIMITED"
        messages.append(
            "optimizer stopped at its round-off limit (best point kept); if estimates look "
            "odd, rescale covariates (e.g. scale(x)) or simplify the random effects"
        )
    if pure and code != "ROUNDOFF_LIMITED" and best_f == opt.last_optimum_value():
        fopt = best_f  # NLopt's optimum is the best point evaluated: its value is known
    else:
        fopt = float(objective(xopt))
    if best_f < fopt:
        xopt, fopt = best_x, best_f
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
        evaluations=count,
        optimizer="nlopt LN_BOBYQA",
        return_code=code,
        converged=code != "MAXEVAL_REACHED",
        messages=tuple(messages),
    )
