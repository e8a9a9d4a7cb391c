"""Minimise the profiled deviance over theta, finish the optimum, and check it.

BOBYQA (Powell 2009; the NLopt implementation) is derivative-free and handles the bound
constraints theta_diag >= 0 natively, which is what lme4 and MixedModels.jl use. The
result is recorded in an :class:`OptSummary`. :func:`check_convergence` then finishes an
interior optimum with Newton steps on the analytic gradient (:func:`newton_polish`, which
makes the optimum reproducible to ~1e-10 where BOBYQA alone stops ~1e-6 apart on a flat
deviance) and checks the gradient there (lme4's ``checkConv`` criterion); at a boundary
optimum, where the analytic gradient is not available, it checks a finite-difference
gradient, ignoring coordinates that sit on their bound with the gradient pointing
outwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.linalg.lapack import dpotrf as _dpotrf
from scipy.linalg.lapack import dpotrs as _dpotrs

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


def _hessian(
    objective: Callable[[np.ndarray], float],
    x: np.ndarray,
    f0: float,
    g: np.ndarray,
    h: float = 1e-3,
) -> tuple[np.ndarray, int]:
    """Hessian of ``objective`` at ``x`` from its values and the known gradient ``g``.

    With ``f(x + d) = f0 + g'd + d'Hd / 2 + O(|d|^3)``, one evaluation at ``x + h_i e_i``
    gives ``H_ii`` and one at ``x + h_i e_i + h_j e_j`` gives ``H_ij``: ``k (k + 1) / 2``
    evaluations in all, step ``h_i = h max(1, |x_i|)``, ``O(h)`` accuracy (plenty to
    scale a gradient or a Newton step). Points may step past a bound: the deviance is
    smooth there (Lambda is linear in theta).
    """
    k = x.shape[0]
    steps = h * np.maximum(1.0, np.abs(x))
    H = np.empty((k, k))
    count = 0
    for i in range(k):
        e = np.zeros(k)
        e[i] = steps[i]
        H[i, i] = 2.0 * (objective(x + e) - f0 - steps[i] * g[i]) / steps[i] ** 2
        count += 1
    for i in range(k):
        for j in range(i):
            e = np.zeros(k)
            e[i], e[j] = steps[i], steps[j]
            rest = f0 + e @ g + 0.5 * (steps[i] ** 2 * H[i, i] + steps[j] ** 2 * H[j, j])
            H[i, j] = H[j, i] = (objective(x + e) - rest) / (steps[i] * steps[j])
            count += 1
    return H, count


def _cholesky(H: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor of a small symmetric matrix, None if not positive definite.

    LAPACK directly: the deviance calls the same routine on every evaluation, where
    ``np.linalg.cholesky``'s wrapper would add its own code to a fit's cold start.
    """
    C, info = _dpotrf(H, lower=1, clean=1)
    return C if info == 0 else None


def newton_polish(
    objective: Callable[[np.ndarray], float],
    gradient: Callable[[np.ndarray], np.ndarray],
    summary: OptSummary,
    max_steps: int = 8,
) -> tuple[OptSummary, np.ndarray, np.ndarray | None]:
    """Finish a derivative-free optimum with Newton steps on the analytic gradient.

    BOBYQA locates the optimum only as well as deviance values can: on a flat optimum,
    rounding of ``1e-14`` in the deviance leaves theta uncertain by ``~sqrt(1e-14)``, so
    two fits of the same data (rows in another order, or summed in chunks) stop ``1e-6``
    apart. The gradient pins the optimum to its own rounding instead. Newton steps
    ``x - H^{-1} g`` (``H`` from deviance values and ``g``, :func:`_hessian`; its error
    only slows the convergence) are taken while they lower the Newton decrement
    ``g' H^{-1} g`` without raising the deviance beyond its rounding and stay inside the
    bounds; they stop once a step is below ``1e-13`` relative. A ``gradient`` object with a
    ``value_and_gradient`` method gets both from one factorisation.

    Entries where the gradient is NaN (a singular template, see
    :class:`.gradient.ProfiledDevianceGradient`) are held where they are; the others are
    finished.

    Returns
    -------
    summary, g, H
        The (possibly moved) optimum with the evaluations added, the gradient there (NaN
        where unavailable), and the Hessian over the finite entries (None if there are
        none or it is not positive definite: no step is taken then).
    """
    x = np.array(summary.final_theta, dtype=np.float64)
    f = summary.final_objective
    g = np.asarray(gradient(x), dtype=np.float64)
    idx = np.flatnonzero(np.isfinite(g))
    count = 1
    if idx.shape[0] == 0:
        return replace(summary, evaluations=summary.evaluations + count), g, None

    def full(z: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[idx] = z
        return out

    def sub_objective(z: np.ndarray) -> float:
        return objective(full(z))

    z = x[idx]
    lower = summary.lower[idx]
    gz = g[idx]
    H, used = _hessian(sub_objective, z, f, gz)
    count += used
    C = _cholesky(H)
    if C is None:
        return replace(summary, evaluations=summary.evaluations + count), g, None

    def newton(grad: np.ndarray) -> tuple[np.ndarray, float]:
        """The Newton step H^{-1} g and the decrement g' H^{-1} g."""
        step, _ = _dpotrs(C, grad, lower=1)
        return step, float(grad @ step)

    step, dec = newton(gz)
    noise = 1e-10 * max(1.0, abs(f))
    both = getattr(gradient, "value_and_gradient", None)
    for _ in range(max_steps):
        # Relative to each entry (small standard deviations count as much as large ones).
        size = float(np.max(np.abs(step) / np.maximum(1e-3, np.abs(z))))
        if not math.isfinite(size) or size < 1e-13:
            break
        z1 = z - step
        if np.any(z1 < lower):
            break
        if size < 1e-8:
            # The error left after a step this small is ~(relative error of H) x size,
            # far below the 1e-8 the fit is reproducible to: take it without paying for
            # one more gradient (g is kept for the convergence report).
            f1 = float(sub_objective(z1))
            count += 1
            if math.isfinite(f1) and f1 <= f + noise:
                z, f = z1, f1
            break
        if both is not None:  # one factorisation for the value and the gradient
            f1, g1 = both(full(z1))
        else:
            f1, g1 = float(sub_objective(z1)), gradient(full(z1))
        g1 = np.asarray(g1, dtype=np.float64)
        count += 2
        if not (math.isfinite(f1) and f1 <= f + noise):
            break
        step1, dec1 = newton(g1[idx])
        if not dec1 < dec:
            break
        size1 = float(np.max(np.abs(step1) / np.maximum(1e-3, np.abs(z1))))
        if size1 > 0.1 * size:
            # Slow progress: the start was far enough that H there no longer fits (an
            # optimiser stopped early); refresh it here.
            H1, used = _hessian(sub_objective, z1, f1, g1[idx])
            count += used
            C1 = _cholesky(H1)
            if C1 is not None:
                H, C = H1, C1
                step1, dec1 = newton(g1[idx])
        z, f, g, gz, step, dec = z1, f1, g1, g1[idx], step1, dec1
    out = replace(
        summary, final_theta=full(z), final_objective=f, evaluations=summary.evaluations + count
    )
    return out, g, H


def check_convergence(
    objective: Callable[[np.ndarray], float],
    summary: OptSummary,
    tol: float = 2e-3,
    gradient: Callable[[np.ndarray], np.ndarray] | None = None,
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
    if gradient is not None:
        polished, g, H = newton_polish(objective, gradient, summary)
        if np.all(np.isfinite(g)):
            return _verdict(polished, g, g, lambda: H, tol)
        # A singular template: its entries sit on (or at) the boundary, where only the
        # finite-difference check below can tell a KKT point; the rest was finished.
        summary = polished
    x, lower = summary.final_theta, summary.lower
    g, hessian = _derivatives(objective, x, summary.final_objective, lower)
    active = np.isfinite(lower) & (x - lower < 1e-8) & (g >= 0)
    idx = np.flatnonzero(~active)
    return _verdict(summary, g, g[idx], lambda: hessian(idx), tol)


def _verdict(
    summary: OptSummary,
    g: np.ndarray,
    checked: np.ndarray,
    hessian: Callable[[], np.ndarray | None],
    tol: float,
) -> OptSummary:
    """lme4's ``checkConv`` verdict: the ``checked`` gradient entries below ``tol``, or else
    the gradient scaled by the Hessian over them (asked for only then; None: not positive
    definite). ``g`` is what the summary records."""
    messages = list(summary.messages)
    converged = summary.converged
    if float(np.max(np.abs(checked), initial=0.0)) > tol:
        H = hessian()
        C = None if H is None else _cholesky(H)
        if C is None:
            messages.append(
                "model failed to converge: the Hessian of the deviance is not positive "
                "definite at the optimum; the model may be over-parameterised"
            )
            converged = False
        else:
            scaled = np.linalg.solve(C, checked)
            if np.max(np.abs(scaled)) > tol:
                converged = False
                messages.append(
                    f"model failed to converge: scaled gradient {np.max(np.abs(scaled)):.3g} "
                    f"(tol = {tol}); try rescaling covariates or a simpler random-effects "
                    "structure"
                )
    return replace(summary, gradient=g, converged=converged, messages=tuple(messages))
