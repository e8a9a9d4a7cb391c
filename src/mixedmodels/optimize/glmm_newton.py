"""Newton's method with bounds for a criterion whose gradient is analytic (GLMM stage 2).

The GLMM's Laplace deviance over ``(theta, beta)`` has an analytic gradient when the
random-effects terms are scalar and the link canonical
(:meth:`mixedmodels.objective.pirls.PirlsDeviance.laplace_gradient`). From the first
stage's optimum, which is close, a few Newton steps then reach the joint optimum in far
fewer evaluations than BOBYQA's quadratic models need, and the Hessian that standard
errors need (lme4's ``vcov(use.hessian = TRUE)``) is the one of the last step: central
differences of the gradient, exact to ``O(h^2)`` and to the gradient's rounding over
``2 h`` (never the value's over ``h^2``).

The iteration (Nocedal & Wright 2006, *Numerical Optimization*, ch. 3 and 6): a Newton
step on the free coordinates (those not at a lower bound with the gradient pushing
outwards), projected onto the bounds and halved until the value decreases; between fresh
Hessians the matrix is carried by BFGS updates, and convergence is only declared when the
Newton decrement ``g'H^{-1}g`` is below the tolerance with a Hessian computed at that very
point. Any failure (a Hessian not positive definite on the free coordinates, no step that
decreases the value, too many iterations) is reported, and the caller falls back on BOBYQA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import get_lapack_funcs

_POSV = get_lapack_funcs("posv", dtype=np.float64)

__all__ = ["NewtonResult", "gradient_differences", "minimize_scalar", "newton_minimize"]

#: ``x -> (value, gradient)``; the value is ``inf`` (and the gradient anything) where the
#: criterion cannot be evaluated.
ValueGradient = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass(frozen=True)
class NewtonResult:
    """Where :func:`newton_minimize` stopped.

    Attributes
    ----------
    x, value, gradient
        The last accepted point, its value and gradient.
    hessian
        The Hessian at ``x`` from central differences of the gradient (None if the last
        one was a BFGS update or could not be formed).
    evaluations
        Calls of the value-and-gradient function (each a PIRLS run and two passes).
    iterations
        Newton steps taken.
    converged
        Whether the Newton decrement with a fresh Hessian fell below the tolerance.
    message
        Why it stopped, when it did not converge.
    """

    x: np.ndarray
    value: float
    gradient: np.ndarray
    hessian: np.ndarray | None
    evaluations: int
    iterations: int
    converged: bool
    message: str = ""


def gradient_differences(
    fg: ValueGradient,
    x: np.ndarray,
    step: float,
    columns: np.ndarray | None = None,
    gradient: np.ndarray | None = None,
) -> tuple[np.ndarray | None, int]:
    """Columns of the Hessian at ``x`` by differences of the gradient, and the evaluations
    used.

    Central differences ``H[:, i] = (g(x + h_i e_i) - g(x - h_i e_i)) / (2 h_i)``, or,
    given ``gradient = g(x)``, forward differences ``(g(x + h_i e_i) - g(x)) / h_i`` (half
    the evaluations; error ``O(h)``, so with a small ``step``: the gradient is analytic and
    exact to rounding, not the value's differences over ``h^2``); ``h_i = step max(1,
    |x_i|)``, for each ``i`` in ``columns`` (all by default; the result is then the
    symmetrised ``(H + H') / 2``, else the ``(k, len(columns))`` block). None if a
    gradient is not finite.
    """
    x = np.asarray(x, dtype=np.float64)
    k = x.shape[0]
    cols = np.arange(k) if columns is None else np.asarray(columns, dtype=np.intp)
    out = np.empty((k, cols.shape[0]))
    used = 0
    for c, i in enumerate(cols.tolist()):
        h = step * max(1.0, abs(float(x[i])))
        e = np.zeros(k)
        e[i] = h
        f_plus, g_plus = fg(x + e)
        used += 1
        if gradient is None:
            f_minus, g_minus = fg(x - e)
            used += 1
            h *= 2.0
        else:
            f_minus, g_minus = 0.0, gradient
        if not (np.isfinite(f_plus) and np.isfinite(f_minus)):
            return None, used
        out[:, c] = (g_plus - g_minus) / h
    if not np.all(np.isfinite(out)):
        return None, used
    if columns is None:
        out = 0.5 * (out + out.T)
    return out, used


def _free(x: np.ndarray, g: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Coordinates a step may move: not at a finite lower bound with ``g > 0``."""
    at_bound = np.isfinite(lower) & (x - lower <= 1e-10) & (g > 0)
    return ~at_bound


def _newton_step(H: np.ndarray, g: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, bool]:
    """``-H_ff^{-1} g_f`` on the free coordinates (0 elsewhere), and whether ``H_ff`` is
    positive definite. If it is not (far from the optimum), its eigenvalues are replaced
    by their absolute values, floored at ``1e-8`` of the largest: a descent direction
    that still follows the curvature (Nocedal & Wright 2006, sec. 3.4)."""
    idx = np.flatnonzero(free)
    step = np.zeros_like(g)
    if not idx.size:
        return step, True
    Hf = H if idx.size == g.shape[0] else H[np.ix_(idx, idx)]
    # LAPACK's dposv directly: the Cholesky factor is the test of positive definiteness
    # and gives the solve (numpy's cholesky and solve each cost more in checks than in
    # arithmetic on a few parameters).
    _, solution, info = _POSV(Hf, g[idx], lower=1)
    if info == 0 and np.all(np.isfinite(solution)):
        step[idx] = -solution
        return step, True
    values, vectors = np.linalg.eigh(0.5 * (Hf + Hf.T))
    top = float(np.max(np.abs(values))) if values.size else 0.0
    if not np.isfinite(top) or top == 0.0:
        return step, False
    values = np.maximum(np.abs(values), 1e-8 * top)
    step[idx] = -(vectors @ ((vectors.T @ g[idx]) / values))
    return step, False


def newton_minimize(
    fg: ValueGradient,
    x0: np.ndarray,
    lower: np.ndarray,
    *,
    step: float,
    tolerance: float,
    initial_hessian: np.ndarray | None = None,
    start: tuple[float, np.ndarray] | None = None,
    forward: bool = False,
    max_step: float = np.inf,
    noise: float = 1e-12,
    refresh_ratio: float = 1.0,
    max_iterations: int = 40,
    max_halvings: int = 30,
    hessian: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray | None, int]] | None = None,
) -> NewtonResult:
    """Minimise ``f`` from ``x0`` subject to ``x >= lower`` by Newton steps on an analytic
    gradient.

    Parameters
    ----------
    fg
        ``x -> (f(x), grad f(x))``.
    x0, lower
        Start and lower bounds (``-inf`` for none).
    step
        Relative step of the central differences of the gradient
        (:func:`gradient_differences`).
    tolerance
        Convergence when the Newton decrement ``g_f'H_ff^{-1}g_f`` (twice the predicted
        decrease of ``f``) is below it, with a Hessian computed at that point.
    initial_hessian
        A start for the Hessian (e.g. partly known); it is replaced by differences of the
        gradient before convergence is declared. None: differences at ``x0``.
    start
        ``fg(x0)`` if the caller has it.
    refresh_ratio
        The Hessian is formed again (rather than carried by BFGS) when the decrement
        shrank by less than this factor in a step: 1 forms it only when the decrement
        grew; a smaller value is worth it when a Hessian costs few evaluations.
    noise
        The value's relative rounding, allowed for in the line search.
    max_step
        The longest step in any coordinate (the step is shortened to it).
    forward
        Form Hessians by forward differences of the gradient (``step`` should then be
        small, ~1e-5) rather than central ones.
    hessian
        ``(x, g(x)) -> (H or None, evaluations)``: forms the Hessian at ``x`` (the last
        point evaluated) in place of differences of the gradient (e.g. partly in closed
        form).

    Returns
    -------
    NewtonResult
    """
    x = np.asarray(x0, dtype=np.float64).copy()
    lower = np.asarray(lower, dtype=np.float64)
    used = 0

    def differences(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray | None, int]:
        if hessian is not None:
            return hessian(x, g)
        return gradient_differences(fg, x, step, gradient=g if forward else None)

    if start is None:
        f, g = fg(x)
        used += 1
    else:
        f, g = start
    g = np.asarray(g, dtype=np.float64)

    def result(converged: bool, H: np.ndarray | None, iterations: int, message: str = ""):
        return NewtonResult(x, float(f), g, H, used, iterations, converged, message)

    if not (np.isfinite(f) and np.all(np.isfinite(g))):
        return result(False, None, 0, "the criterion is not finite at the start")
    fresh = initial_hessian is None
    if fresh:
        H, n = differences(x, g)
        used += n
        if H is None:
            return result(False, None, 0, "the Hessian could not be formed at the start")
    else:
        H = np.array(initial_hessian, dtype=np.float64)
    refresh = False
    last_decrement = np.inf
    for iteration in range(max_iterations):
        if refresh and not fresh:
            # The carried Hessian served badly (the decrement did not shrink enough):
            # form it again here, as Newton's method proper.
            H_new, n = differences(x, g)
            used += n
            if H_new is not None:
                H, fresh = H_new, True
        free = _free(x, g, lower)
        d, positive = _newton_step(H, g, free)
        if not positive and not fresh:
            # A carried Hessian that lost its curvature: form it here.
            H_new, n = differences(x, g)
            used += n
            if H_new is not None:
                H, fresh = H_new, True
                d, positive = _newton_step(H, g, free)
        longest = float(np.max(np.abs(d))) if d.size else 0.0
        if longest > max_step:
            # Far from the optimum the quadratic model is not to be trusted that far.
            d *= max_step / longest
        decrement = float(-(g @ d))
        refresh = decrement > refresh_ratio * last_decrement
        last_decrement = decrement
        if not np.isfinite(decrement):
            return result(False, H if fresh else None, iteration, "the Newton step is not finite")
        if decrement < tolerance:
            if fresh and positive:
                return result(True, H, iteration)
            if fresh:
                return result(False, H, iteration, "the Hessian is not positive definite")
            # Converged on a carried Hessian: confirm with one formed at this point
            # (standard errors need it there anyway).
            H, n = differences(x, g)
            used += n
            fresh = True
            if H is None:
                return result(False, None, iteration, "the Hessian could not be formed")
            continue
        t = 1.0
        for _ in range(max_halvings):
            x_new = np.maximum(x + t * d, lower)
            f_new, g_new = fg(x_new)
            used += 1
            # Armijo's sufficient decrease, less the value's rounding (PIRLS' modes are
            # exact to ~1e-12 relative): near the optimum the gradient still guides the
            # step when the value can no longer tell the points apart.
            if np.isfinite(f_new) and f_new <= f - 1e-4 * t * decrement + noise * (1.0 + abs(f)):
                break
            t *= 0.5
        else:
            return result(False, H, iteration, "no step lowered the criterion")
        g_new = np.asarray(g_new, dtype=np.float64)
        s, yv = x_new - x, g_new - g
        sy = float(s @ yv)
        Hs = H @ s
        sHs = float(s @ Hs)
        if sy > 1e-12 * float(np.linalg.norm(s) * np.linalg.norm(yv)) and sHs > 0.0:
            # BFGS: keeps H positive definite and consistent with the gradients seen.
            H = H - np.outer(Hs, Hs) / sHs + np.outer(yv, yv) / sy
        fresh = False
        x, f, g = x_new, float(f_new), g_new
    return result(False, H if fresh else None, max_iterations, "too many Newton iterations")


def _cubic_minimizer(
    xa: float, fa: float, ga: float, xb: float, fb: float, gb: float
) -> float | None:
    """The minimiser of the cubic through ``(xa, fa, ga)`` and ``(xb, fb, gb)`` (values and
    slopes), or None where the cubic has none (Nocedal & Wright 2006, eq. 3.59)."""
    d1 = ga + gb - 3.0 * (fa - fb) / (xa - xb)
    disc = d1 * d1 - ga * gb
    if disc < 0.0:
        return None
    d2 = np.copysign(np.sqrt(disc), xb - xa)
    denom = gb - ga + 2.0 * d2
    if denom == 0.0:
        return None
    x = xb - (xb - xa) * (gb + d2 - d1) / denom
    return float(x) if np.isfinite(x) else None


def minimize_scalar(
    fg: ValueGradient,
    x0: float,
    lower: float,
    *,
    tolerance: float,
    start: tuple[float, np.ndarray] | None = None,
    first_step: float = 0.5,
    max_evaluations: int = 40,
) -> NewtonResult:
    """Minimise a smooth function of one variable ``x >= lower`` from values and analytic
    derivatives, by safeguarded cubic interpolation.

    Parameters
    ----------
    fg
        ``x -> (f(x), [f'(x)])`` with ``x`` a 1-vector (``inf`` where undefined).
    x0, lower
        Start and lower bound.
    tolerance
        Convergence when the Newton decrement ``f'^2 / f''`` (twice the predicted decrease;
        ``f''`` the secant of the last two slopes) is below it, or at the bound with
        ``f' >= 0``.
    start
        ``fg(x0)`` if the caller has it.
    first_step
        The first trial moves ``x0`` by this factor of ``max(|x0|, 1)`` downhill (no
        curvature is known yet): from lme4's start ``theta = 1`` the optimum of a
        relative SD is usually between 0.2 and 2.
    max_evaluations
        Calls of ``fg`` before giving up.

    Returns
    -------
    NewtonResult
        With ``hessian`` the last secant ``f''`` (1 x 1).

    Notes
    -----
    Each step takes the minimiser of the cubic Hermite interpolant through the two most
    recent points (Nocedal & Wright 2006, sec. 3.5): superlinear near the optimum, and
    one call per step with no curvature to difference (a Newton step on forward
    differences costs two). A bracket ``[a, b]`` with ``f'(a) < 0 < f'(b)`` is kept once
    found, and a step that leaves it is replaced by bisection; before a bracket, steps
    expand at most fourfold. At the bound the slope may be 0 (a relative SD: the
    criterion is even in it), so there the values decide: the bound is the optimum when
    its value is not above the last point's; otherwise it is the bracket's left end.
    """
    x = float(x0)
    used = 0
    if start is None:
        f, g = fg(np.array([x]))
        used += 1
    else:
        f, g = start
    f, gx = float(f), float(np.asarray(g)[0])

    def result(converged: bool, curvature: float | None, message: str = "") -> NewtonResult:
        H = None if curvature is None else np.array([[curvature]])
        return NewtonResult(np.array([x]), f, np.array([gx]), H, used, used, converged, message)

    if not (np.isfinite(f) and np.isfinite(gx)):
        return result(False, None, "the criterion is not finite at the start")
    lo, hi = -np.inf, np.inf  # the bracket: f' < 0 (or the bound) at lo, f' > 0 at hi
    prev: tuple[float, float, float] | None = None
    curvature: float | None = None
    while used < max_evaluations:
        if x <= lower:
            if gx > 0.0 or (prev is not None and f <= prev[1]):
                return result(True, curvature)
            lo = max(lo, x)
        elif gx < 0.0:
            lo = max(lo, x)
        elif gx > 0.0:
            hi = min(hi, x)
        else:
            return result(True, curvature)
        trial = None
        if prev is not None:
            xp, fp, gp = prev
            secant = (gx - gp) / (x - xp)
            curvature = secant if secant > 0.0 else None
            if curvature is not None and x > lower and gx * gx / curvature < tolerance:
                return result(True, curvature)
            trial = _cubic_minimizer(xp, fp, gp, x, f, gx)
        if trial is None:  # no curvature yet: a fixed step downhill (up from the bound)
            move = first_step * max(abs(x), 1.0)
            trial = x + move if gx < 0.0 or x <= lower else x - move
        if np.isfinite(lo) and np.isfinite(hi):
            if not (lo < trial < hi):
                trial = 0.5 * (lo + hi)
        elif prev is not None:
            # Not bracketed: extrapolate downhill, at most four times the last move.
            limit = 4.0 * abs(x - prev[0])
            if (trial - x) * gx > 0.0 or abs(trial - x) > limit:
                trial = x - np.copysign(limit, gx)
        trial = max(trial, lower)
        if trial == x:
            return result(curvature is not None, curvature, "no move")
        f_new, g_new = fg(np.array([trial]))
        used += 1
        while not (np.isfinite(f_new) and np.all(np.isfinite(g_new))):
            # Undefined there (PIRLS failed): halve the move.
            trial = 0.5 * (x + trial)
            if abs(trial - x) < 1e-10 * max(abs(x), 1.0) or used >= max_evaluations:
                return result(False, curvature, "the criterion is not finite")
            f_new, g_new = fg(np.array([trial]))
            used += 1
        prev = (x, f, gx)
        x, f, gx = float(trial), float(f_new), float(np.asarray(g_new)[0])
    return result(False, curvature, "too many evaluations")
