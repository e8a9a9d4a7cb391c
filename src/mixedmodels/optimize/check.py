"""Judge an optimum: lme4's ``checkConv`` gradient criterion.

A coordinate on its bound with a non-negative derivative is optimal there (KKT); the others
need a small gradient, or a small gradient scaled by the Hessian.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from mixedmodels.optimize.bobyqa import OptSummary
from mixedmodels.optimize.finish import cholesky_or_none, newton_polish


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
        C = None if H is None else cholesky_or_none(H)
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
