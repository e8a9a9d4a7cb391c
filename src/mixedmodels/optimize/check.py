"""Judge an optimum without moving it: lme4's ``checkConv``.

Two criteria. The gradient: a coordinate on its bound with a non-negative derivative is
optimal there (KKT); the others need a small gradient, or a small gradient scaled by the
Hessian. The Hessian: at an interior optimum it must be positive definite; a zero
eigenvalue means the deviance is flat along its eigenvector (the parameters are not
identifiable), a negative one that the point is not a minimum. The finish that moves the
optimum is in :mod:`.finish`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from mixedmodels.optimize.bobyqa import OptSummary
from mixedmodels.optimize.finish import EDGE_TOL, cholesky_or_none


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
    *,
    hessian: np.ndarray | None = None,
    gradient: Callable[[np.ndarray], np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    blocks: np.ndarray | None = None,
    hessian_tol: float = 1e-6,
    hessian_accurate: bool = False,
    hessian_exact: bool = False,
) -> OptSummary:
    """Return ``summary`` with the gradient, a convergence verdict and messages added.

    The optimum is not moved (the finish, :func:`.finish.newton_finish`, comes before).

    Parameters
    ----------
    objective
        The function that was minimised; ``summary`` must come from minimising it (its
        ``final_objective`` is reused).
    summary
        The optimum. Its ``gradient``, when set and finite (the Newton finish records
        it), is used; otherwise the gradient is taken by finite differences.
    tol
        Gradient tolerance, lme4's ``check.conv.grad`` (2e-3).
    hessian
        The Hessian the finish computed (NaN where it has none). It screens the Hessian
        check: a clearly positive definite one ends it at no cost.
    hessian_accurate
        Whether ``hessian`` came from gradients (error ~1e-5 relative, not ~1e-3): then a
        smaller eigenvalue ratio still certifies it.
    hessian_exact
        Whether ``hessian`` is in closed form at the optimum (rounding error only): then its
        own eigenvalues are the verdict, with no finite-difference Hessian.
    gradient
        The analytic gradient, if there is one: an accurate Hessian, when one is needed,
        is taken from its central differences (2 per free parameter) rather than from
        deviance values.
    names
        Readable parameter names for the messages (default ``theta[i]``), or a function
        giving them (called only when there is a message).
    blocks
        Block of each parameter (covariance terms; see
        :meth:`.CovarianceStructure.theta_blocks`): a block with a diagonal on its bound is
        left out of the Hessian check. Default: each parameter alone.
    hessian_tol
        lme4's ``check.conv.hess`` tolerance (1e-6), here relative to the largest
        eigenvalue.

    Notes
    -----
    The gradient verdict is lme4's ``check.conv.grad``: a coordinate on its bound with a
    non-negative derivative is optimal there (KKT) and ignored; the others must be below
    ``tol``, or, if they are not, the gradient scaled by the Hessian (the Newton step)
    must be. The Hessian, only computed then, costs one evaluation per pair of free
    coordinates: on large data each evaluation costs milliseconds.

    The Hessian check follows lme4's ``checkHess``: with eigenvalues ``l`` of the Hessian
    of the deviance over the free parameters, ``l < -hessian_tol * max|l|`` counts as
    negative ("degenerate Hessian with k negative eigenvalues": not a minimum, so
    ``converged`` is set False, lme4's code -3), and otherwise ``|l| < hessian_tol *
    max|l|`` or a failed Cholesky factorisation as zero ("Hessian is numerically
    singular", lme4's code -4: a warning; the optimum is reached, the parameters are not
    unique, and ``converged`` stays True). lme4 compares with ``tol`` in absolute terms,
    which makes the verdict depend on the units of y and on n, and adds a "very large
    eigenvalue" warning on that absolute scale; a relative tolerance keeps the question
    to whether the curvature vanishes in some direction. The message names the direction:
    the largest entries of the eigenvector. Singular fits (a diagonal within ``1e-4`` of
    its bound, lme4's ``isSingular``) leave their blocks out: on the boundary the Hessian
    says nothing about the optimum.
    """
    g = summary.gradient
    x, lower = summary.final_theta, summary.lower
    if g is not None and hessian is not None and np.logical_and.reduce(np.isfinite(g)):
        checked = _verdict(summary, g, g, lambda: hessian, tol)
    else:
        g, on_demand = _derivatives(objective, x, summary.final_objective, lower)
        active = np.isfinite(lower) & (x - lower < 1e-8) & (g >= 0)
        idx = np.flatnonzero(~active)
        checked = _verdict(summary, g, g[idx], lambda: on_demand(idx), tol)
        if hessian is None:
            # The gradient's evaluations give the diagonal; one more per pair of entries.
            hessian = on_demand
    return _hessian_verdict(
        objective,
        checked,
        hessian,
        gradient,
        names,
        blocks,
        hessian_tol,
        hessian_accurate,
        hessian_exact and isinstance(hessian, np.ndarray),
    )


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
    n_before = len(messages)
    converged = summary.converged
    if float(np.maximum.reduce(np.abs(checked), initial=0.0)) > tol:
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
    if g is summary.gradient and converged == summary.converged and not messages[n_before:]:
        return summary  # the record already says it all: no new one
    return replace(summary, gradient=g, converged=converged, messages=tuple(messages))


# Above this ratio of smallest to largest eigenvalue the finish's Hessian (forward
# differences, O(1e-3) relative error) is clearly positive definite: no accurate one needed.
_SCREEN_RATIO = 1e-2
# The same for a Hessian from forward differences of the analytic gradient (error ~1e-5
# relative): 20 x its error.
_CERTIFY_RATIO = 2e-4


def _hessian_verdict(
    objective: Callable[[np.ndarray], float],
    summary: OptSummary,
    screen: np.ndarray | Callable[[np.ndarray], np.ndarray] | None,
    gradient: Callable[[np.ndarray], np.ndarray] | None,
    names: Sequence[str] | None,
    blocks: np.ndarray | None,
    tol: float,
    hessian_accurate: bool = False,
    exact: bool = False,
) -> OptSummary:
    """lme4's ``checkHess`` over the parameters of the blocks that are off their bounds.

    ``screen``: a rough Hessian over all parameters, or a function giving one over the
    entries it is passed (from deviance values: ``m (m - 1) / 2`` evaluations); ``exact``:
    ``screen`` is the Hessian in closed form, judged as it is.
    """
    x, lower = summary.final_theta, summary.lower
    k = x.shape[0]
    at_bound = x - lower < EDGE_TOL  # False where lower is -inf
    if np.logical_or.reduce(at_bound):
        if callable(blocks):
            blocks = blocks()
        blocks = np.arange(k) if blocks is None else np.asarray(blocks)
        idx = np.flatnonzero(~np.isin(blocks, blocks[at_bound]))
        if idx.shape[0] == 0:
            return summary
        if isinstance(screen, np.ndarray):
            screen = screen[np.ix_(idx, idx)]
    else:
        idx = np.arange(k)
    if callable(screen):
        m = idx.shape[0]
        screen = screen(idx)
        summary = replace(summary, evaluations=summary.evaluations + m * (m - 1) // 2)
    if exact and screen is not None:
        # In closed form: the eigenvalues are the Hessian's to rounding (~eps times its
        # condition number), far below the tolerance, whatever the deviance's magnitude.
        if _clearly_positive_definite(screen, tol):
            return summary
        H, used, rounding = screen, 0, 0.0
    else:
        if screen is not None and _clearly_positive_definite(
            screen, _CERTIFY_RATIO if hessian_accurate else None
        ):
            return summary
        g0 = summary.gradient
        if gradient is not None and g0 is not None and np.all(np.isfinite(g0[idx])):
            # Forward differences of the analytic gradient from the one known at x: half
            # the gradients of central ones, error ~1e-5 relative, enough to certify a
            # well-identified but poorly conditioned optimum (Orthodont, ratpup (1 + sex |
            # litter): eigenvalue ratios 5e-4 to 2.5e-3). Only what it cannot certify pays
            # for the accurate Hessian below.
            g0 = np.asarray(g0, dtype=np.float64)
            forward, used = _forward_hessian(gradient, x, g0, idx)
            summary = replace(summary, evaluations=summary.evaluations + used)
            if _clearly_positive_definite(forward, _CERTIFY_RATIO):
                return summary
        H, used, rounding = _accurate_hessian(objective, gradient, x, summary.final_objective, idx)
    evals, vectors = np.linalg.eigh(0.5 * (H + H.T))
    # lme4's tolerance, relative; and no eigenvalue is told from 0 below its error: a bound
    # for all (deviance values), or per eigenvalue from the Hessian's own error matrix E
    # (gradient differences): |dl_k| <= |v_k|'E|v_k| to first order, twice that allowed.
    if isinstance(rounding, np.ndarray):
        V = np.abs(vectors)
        rounding = 2.0 * np.einsum("ik,ij,jk->k", V, rounding, V)
    small = np.maximum(tol * float(np.max(np.abs(evals))), rounding)
    negative = int(np.sum(evals < -small))
    zero = int(np.sum(np.abs(evals) <= small))
    summary = replace(summary, evaluations=summary.evaluations + used)
    if negative:
        what = (
            f"model failed to converge: degenerate Hessian with {negative} negative "
            f"eigenvalue{'s' if negative > 1 else ''}"
        )
        converged = False
    elif zero or cholesky_or_none(H) is None:
        what = (
            "Hessian is numerically singular: parameters are not uniquely determined "
            "(the model is not identifiable)"
        )
        converged = summary.converged
    else:
        return summary
    if callable(names):
        names = names()
    label = list(names) if names is not None else [f"theta[{i}]" for i in range(k)]
    # The eigenvector of the smallest eigenvalue: the most negative, or the flattest.
    along = _direction(vectors[:, 0], idx, label)
    flat = negative or zero
    where = f"in {flat} directions, e.g. along" if flat > 1 else "along"
    if negative:
        message = f"{what}; the deviance decreases {where} {along}"
    else:
        message = f"{what}; the deviance is flat {where} {along}"
    return replace(summary, converged=converged, messages=(*summary.messages, message))


def _forward_hessian(
    gradient: Callable[[np.ndarray], np.ndarray], x: np.ndarray, g0: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, int]:
    """Hessian over ``idx`` by forward differences of the gradient (``g0`` known at ``x``),
    step ``1e-5 * max(|x_i|, 1e-3)``, symmetrised; and the gradients it took."""
    m = idx.shape[0]
    H = np.empty((m, m))
    steps = 1e-5 * np.maximum(np.abs(x[idx]), 1e-3)
    for a, i in enumerate(idx):
        e = np.zeros(x.shape[0])
        e[i] = steps[a]
        H[:, a] = (np.asarray(gradient(x + e), dtype=np.float64)[idx] - g0[idx]) / steps[a]
    return 0.5 * (H + H.T), m


def _clearly_positive_definite(H: np.ndarray, ratio: float | None = None) -> bool:
    """Whether the smallest eigenvalue of ``H`` exceeds ``ratio`` (default
    ``_SCREEN_RATIO``) x the largest.

    Sufficient test, one Cholesky factorisation (a fit takes ~2 ms; ``eigvalsh`` alone
    costs ~20 us): ``H - c I`` positive definite with ``c = _SCREEN_RATIO trace(H)`` means
    ``l_min > c >= _SCREEN_RATIO l_max``. NaN entries fail it.
    """
    if H.shape[0] == 1:
        return bool(H[0, 0] > 0.0)
    shift = (_SCREEN_RATIO if ratio is None else ratio) * float(H.trace())
    if not shift > 0.0:
        return False
    # H - c I without np.eye's wrapper (code touched only here): the diagonal of a copy.
    shifted = np.array(H, dtype=np.float64)
    shifted.ravel()[:: H.shape[0] + 1] -= shift
    return cholesky_or_none(shifted) is not None


def _direction(v: np.ndarray, idx: np.ndarray, names: list[str]) -> str:
    """The eigenvector's largest entries (a tenth of the largest or more, at most four)."""
    v = v / v[np.argmax(np.abs(v))]
    order = [i for i in np.argsort(-np.abs(v), kind="stable") if abs(v[i]) >= 0.1][:4]
    return "(" + ", ".join(f"{names[idx[i]]} {v[i]:+.2g}" for i in order) + ")"


def _accurate_hessian(
    objective: Callable[[np.ndarray], float],
    gradient: Callable[[np.ndarray], np.ndarray] | None,
    x: np.ndarray,
    f0: float,
    idx: np.ndarray,
) -> tuple[np.ndarray, int, float | np.ndarray]:
    """Hessian over coordinates ``idx``, its evaluations, and its error: a bound on the
    spectral norm (deviance values) or a matrix of entry-wise errors (gradients).

    With an analytic gradient: central differences of it, step ``h_a = 1e-4 max(|x_a|,
    1e-3)`` (2 gradients per coordinate; truncation error ~1e-8 relative), and one gradient
    at ``x``. Their rounding is read off the differences themselves: entry ``(b, a)``
    carries the rounding of gradient entry ``b`` over ``2 h_a``, which shows in the
    asymmetry ``H_ab - H_ba`` (truncation makes that only ~1e-8 relative) and in the
    second difference ``S_ba = (g_b(x + h_a) - 2 g_b(x) + g_b(x - h_a)) / h_a`` (rounding
    plus an ``O(h_a)`` truncation); the error matrix is the larger of the two, entry by
    entry, symmetrised. Unlike a multiple of ``|f|``, which grows with the rows while the
    curvature of a parameter such as a variance of 100 groups does not, this is the
    Hessian's own error: a well-identified parameter of a fit on 1e6 or 1e8 rows is not
    called flat.

    Without: lme4's ``deriv12`` design on deviance values, central differences (``2 k^2``
    evaluations), with the larger step ``5e-4 * max(1, |x_i|)`` that balances truncation
    against the deviance's rounding divided by the step squared; the error bound takes the
    deviance to ``1e-12`` relative (~100x the rounding seen on the reference models).
    """
    m = idx.shape[0]
    H = np.empty((m, m))
    if gradient is not None:
        steps = 1e-4 * np.maximum(np.abs(x[idx]), 1e-3)
        g_x = np.asarray(gradient(x), dtype=np.float64)[idx]
        S = np.empty((m, m))
        for a, i in enumerate(idx):
            e = np.zeros(x.shape[0])
            e[i] = steps[a]
            up = np.asarray(gradient(x + e), dtype=np.float64)[idx]
            down = np.asarray(gradient(x - e), dtype=np.float64)[idx]
            H[:, a] = (up - down) / (2.0 * steps[a])
            S[:, a] = (up - 2.0 * g_x + down) / steps[a]
        E = np.maximum(np.abs(H - H.T), np.abs(S))
        return H, 2 * m + 1, np.maximum(E, E.T)
    noise = 1e-12 * max(1.0, abs(f0))
    steps = 5e-4 * np.maximum(1.0, np.abs(x[idx]))
    used = 0

    def at(pairs: list[tuple[int, float]]) -> float:
        point = x.copy()
        for a, step in pairs:
            point[idx[a]] += step
        return float(objective(point))

    for a in range(m):
        h = steps[a]
        H[a, a] = (at([(a, h)]) - 2.0 * f0 + at([(a, -h)])) / h**2
        used += 2
        for b in range(a):
            hb = steps[b]
            value = (
                at([(a, h), (b, hb)])
                - at([(a, h), (b, -hb)])
                - at([(a, -h), (b, hb)])
                + at([(a, -h), (b, -hb)])
            )
            H[a, b] = H[b, a] = value / (4.0 * h * hb)
            used += 4
    return H, used, 4.0 * noise * float(np.sum(steps**-2.0))
