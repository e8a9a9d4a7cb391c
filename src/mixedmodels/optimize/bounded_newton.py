"""Minimise a small model's criterion by Newton steps on its exact Hessian, bounds included.

For a small dense system the criterion, its gradient and its exact Hessian come from one
factorisation (:meth:`~mixedmodels.linalg.dense.DenseSystem.log_terms_gradient_and_hessian`,
a few evaluations' work). From the moment start a projected Newton method reaches the
optimum in a handful of such factorisations, where BOBYQA spends 13-45 criterion values
and the Newton finish then repeats the last of that work.

The bounds are the template diagonals' ``theta_i >= 0``. The method is Bertsekas's
projected Newton method (Bertsekas, "Projected Newton methods for optimization problems
with simple constraints", SIAM J. Control Optim. 20(2), 1982), for a handful of
parameters:

- the *binding* entries, on their bound with a gradient pushing outward (``g_i > 0``:
  the KKT condition of a bound), are held there;
- the others take the Newton step ``d = -H_FF^{-1} g_F`` on the Hessian over them; where
  that Hessian is not positive definite (far from the optimum) its eigenvalues are
  replaced by their absolute values (floored), which still gives a descent direction;
- the step is projected on the bounds, ``x(a) = max(x + a d, lower)``, and ``a`` halves
  until the criterion drops by the Armijo rule ``f(x(a)) <= f + 1e-4 g'(x(a) - x)``: the
  end is never worse than the start.

A template diagonal on its bound is special: the criterion depends on the template only
through ``Lambda Lambda'``, which does not change when a column of ``Lambda`` changes sign,
so the criterion is even in a diagonal entry with nothing below it (a scalar term's
theta; the last diagonal of a vector term). Its gradient at 0 is 0 and its mixed second
derivatives too: the entry is not binding, and the Newton step leaves it at 0 exactly
when its curvature is positive, which is what certifies a boundary optimum to second
order. Approaching such an optimum (``f ~ c + a t^2``) Newton steps converge
quadratically, overshoot past 0 and are projected onto it.

Converged: the relative Newton step below ``1e-8``, or below ``1e-6`` with a gradient
that :func:`~.finish.gradient_is_small` accepts (the step is then taken on a value alone),
on an unmodified (positive definite) Hessian. Anything else (no convergence in
``max_iter`` iterations, a Hessian that had to be modified at the end, a line search
that finds no decrease, non-finite numbers) gives None: the caller then runs BOBYQA,
which handles every case, having lost a few factorisations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.linalg.lapack import dpotrs as _dpotrs

from mixedmodels.optimize.finish import (
    _SMALL_GRADIENT,
    _SNAP_TOL,
    NewtonFirst,
    _newton_first_result,
    cholesky_or_none,
)

#: Newton iterations before :func:`bounded_newton` gives up (from the moment start the
#: reference models take 3-8).
BOUNDED_NEWTON_MAX = 20
#: Halvings of the step before the line search gives up.
_HALVINGS_MAX = 12
#: A relative Newton step below this is the last (taken on a value alone).
_LAST_STEP = 1e-8
#: ... or below this, where the gradient is already small (see newton_first).
#: A last step below this (relative) is not taken: the criterion changes by ~size^2, far
#: below its rounding.
_NO_STEP = 1e-10
_LAST_STEP_SMALL_GRADIENT = 1e-6
#: A first step smaller than this (relative) is followed by chord steps (Hessian kept).
_CHORD_FIRST_MAX = 0.01
#: Chord steps continue while they shrink by at least this factor each.
_CHORD_RATE_MAX = 0.1
#: A chord step whose successor is predicted below this (relative) is the last.
_CHORD_LEFT = 1e-9
#: Even entries above this are stepped in their square (see _newton_direction).
_SQUARED_MIN = 1e-3
#: Up to this many parameters the Newton direction is computed on Python floats.
_PLAIN_MAX = 4
#: Eigenvalues of a Hessian that is not positive definite are floored at this fraction of
#: the largest one (in absolute value) after taking absolute values.
_EIGEN_FLOOR = 1e-8


class _Step(NamedTuple):
    """A projected Newton step: the direction, the point a full step reaches, whether the
    Hessian had to be modified, the largest relative change of an entry, the binding
    entries (None: none) and whether the gradient over the others is small."""

    d: np.ndarray
    x1: np.ndarray
    modified: bool
    size: float
    binding: np.ndarray | None
    small: bool
    squared: np.ndarray | None
    dec: float

    def at(self, x: np.ndarray, alpha: float, lower: np.ndarray) -> np.ndarray:
        """The point a step of length ``alpha`` reaches (projected on the bounds; entries
        stepped in their square: ``sqrt(max(t^2 + alpha d, 0))``)."""
        x1 = np.maximum(x + alpha * self.d, lower)
        sq = self.squared
        if sq is not None:
            x1[sq] = np.sqrt(np.maximum(x[sq] * x[sq] + alpha * self.d[sq], 0.0))
        return x1


def _solve(
    g: np.ndarray, H: np.ndarray, binding: np.ndarray | None
) -> tuple[np.ndarray, bool, float, np.ndarray]:
    """The Newton direction over the entries not ``binding`` (zero on those), whether
    ``H`` had to be made positive definite, the decrement ``g'H^{-1}g`` and the free
    entries' gradient."""
    if binding is not None:
        free = np.flatnonzero(~binding)
        Hf, gf = H[np.ix_(free, free)], g[free]
    else:
        free, Hf, gf = None, H, g
    if gf.shape[0] == 0:
        return np.zeros_like(g), False, 0.0, gf
    modified = False
    C = cholesky_or_none(Hf)
    if C is not None:
        df, _ = _dpotrs(C, gf, lower=1)
        np.negative(df, out=df)
    else:
        # Far from the optimum: |eigenvalues|, floored, keep the Newton step's scaling
        # along each eigenvector and make it a descent direction (Nocedal & Wright,
        # Numerical Optimization, 2nd ed., sec. 3.4).
        modified = True
        w, V = np.linalg.eigh(Hf)
        w = np.abs(w)
        w = np.maximum(w, _EIGEN_FLOOR * max(float(w.max(initial=0.0)), 1e-300))
        df = -(V @ ((V.T @ gf) / w))
    if free is None:
        return df, modified, -float(gf @ df), gf
    d = np.zeros_like(g)
    d[free] = df
    return d, modified, -float(gf @ df), gf


def _newton_direction(
    x: np.ndarray,
    g: np.ndarray,
    H: np.ndarray,
    lower: np.ndarray,
    small_gradient: float,
    even: np.ndarray | None = None,
) -> _Step:
    """Bertsekas's projected Newton direction at ``x``: zero on the binding entries (on
    their bound, ``g_i > 0``), ``-H_FF^{-1} g_F`` on the others (``H_FF`` made positive
    definite where it is not). ``small_gradient``: the bound on the free entries' gradient
    that :func:`~.finish.gradient_is_small` applies.

    ``even``: entries the criterion depends on only through their square (a template's
    last diagonal); away from 0 they are stepped in ``s = t^2``, where the criterion near
    a small optimum is close to quadratic (``c + a s + b s^2``) and Newton steps converge
    fast, while steps in ``t`` (``f ~ c + a t^2 + b t^4``) shrink ``t`` by a constant
    factor only when ``b t^2 >> a`` (ratpup (1 + sex | litter): 8 steps to the optimum
    ``t = 0.044`` from 0.53). Over ``s``, with ``dt/ds = 1 / (2t)`` and
    ``d^2t/ds^2 = -1 / (4t^3)``, the chain rule gives ``g_s = g_t / (2t)`` and
    ``H_ss = H_tt / (4t^2) - g_t / (4t^3)``. A step past ``s = 0`` is taken in ``t``
    instead: in ``s`` it would put ``t`` on the bound at once, where the criterion may
    have its optimum just inside; in ``t`` the even criterion is approached from inside.
    """
    if x.shape[0] <= _PLAIN_MAX:
        found = _plain_direction(x, g, H, lower, small_gradient, even)
        if found is not None:
            return found
    binding = (x <= lower) & (g > 0.0)
    if not binding.any():
        binding = None
    if even is not None:
        sq = even & (x > _SQUARED_MIN)  # (never binding: off the bound)
        if sq.any():
            J = np.ones_like(x)
            np.divide(0.5, x, out=J, where=sq)
            Hs = H * np.multiply.outer(J, J)
            Hs.reshape(-1)[:: x.shape[0] + 1] -= np.where(sq, 2.0 * g * J**3, 0.0)
            d, modified, dec, gf = _solve(g * J, Hs, binding)
            if not modified:
                s1 = x[sq] * x[sq] + d[sq]
                if (s1 > 0.0).all():
                    x1 = np.maximum(x + d, lower)
                    x1[sq] = np.sqrt(s1)
                    size = float(_max(np.abs(x1 - x) / np.maximum(np.abs(x), 1e-3)))
                    # the gradient test reads g over t, as gradient_is_small does
                    gt = g if binding is None else g[~binding]
                    small = float(_max(np.abs(gt))) <= small_gradient
                    return _Step(d, x1, False, size, binding, small, sq, dec)
    d, modified, dec, gf = _solve(g, H, binding)
    if gf.shape[0] == 0:
        return _Step(d, x, False, 0.0, binding, True, None, 0.0)
    # The change of a full projected step, relative to each entry (small standard
    # deviations count as much as large ones).
    x1 = np.maximum(x + d, lower)
    size = float(_max(np.abs(x1 - x) / np.maximum(np.abs(x), 1e-3)))
    small = float(_max(np.abs(gf))) <= small_gradient
    return _Step(d, x1, modified, size, binding, small, None, dec)


_max = np.maximum.reduce


def _plain_solve(
    H: list[list[float]], g: list[float], free: list[int]
) -> tuple[list[float], float] | None:
    """``d = -H_FF^{-1} g_F`` (zero off ``free``) and the decrement ``g_F' H_FF^{-1} g_F``
    by a Cholesky factorisation ``H_FF = C C'`` on Python floats; None where ``H_FF`` is
    not positive definite.

    Loops with one running sum each (from 0.0, in index order: the sums ``sum()`` formed,
    so the same numbers) rather than generator expressions, whose set-up costs more than
    their three or four products."""
    nf = len(free)
    C = [[0.0] * nf for _ in range(nf)]
    for i in range(nf):
        Hi = H[free[i]]
        Ci = C[i]
        for j in range(i + 1):
            Cj = C[j]
            acc = 0.0
            for t in range(j):
                acc += Ci[t] * Cj[t]
            v = Hi[free[j]] - acc
            if i == j:
                if not v > 0.0:
                    return None  # not positive definite (or NaN)
                Ci[i] = math.sqrt(v)
            else:
                Ci[j] = v / Cj[j]
    gf = [g[i] for i in free]
    # C z = g_F, then C' s = z: s = H_FF^{-1} g_F.
    z = [0.0] * nf
    for i in range(nf):
        Ci = C[i]
        acc = 0.0
        for t in range(i):
            acc += Ci[t] * z[t]
        z[i] = (gf[i] - acc) / Ci[i]
    sol = [0.0] * nf
    for i in range(nf - 1, -1, -1):
        acc = 0.0
        for t in range(i + 1, nf):
            acc += C[t][i] * sol[t]
        sol[i] = (z[i] - acc) / C[i][i]
    d = [0.0] * len(g)
    dec = 0.0
    for i, v, gi in zip(free, sol, gf, strict=True):
        d[i] = -v
        dec += gi * v
    return d, dec


def _plain_direction(
    x: np.ndarray,
    g: np.ndarray,
    H: np.ndarray,
    lower: np.ndarray,
    small_gradient: float,
    even: np.ndarray | None,
) -> _Step | None:
    """:func:`_newton_direction` on Python floats: for a handful of parameters a numpy call
    costs more than the arithmetic (a 2 x 2 Cholesky solve is a dozen flops), and a fit
    after a garbage collection pays each call cold. The same steps (Cholesky
    ``H_FF = C C'``, ``d_F = -C'^{-1} C^{-1} g_F``; even entries in their square) to
    rounding; None where a Hessian is not positive definite (the caller's eigenvalue path
    then)."""
    xs, gs, ls = x.tolist(), g.tolist(), lower.tolist()
    k = len(xs)
    free = [i for i in range(k) if not (xs[i] <= ls[i] and gs[i] > 0.0)]
    binding = None
    if len(free) < k:
        binding = np.ones(k, dtype=bool)
        binding[free] = False
    if not free:
        return _Step(np.zeros(k), x, False, 0.0, binding, True, None, 0.0)
    Hl = H.tolist()
    small = max(abs(gs[i]) for i in free) <= small_gradient
    if even is not None:
        sq = [e and xi > _SQUARED_MIN for e, xi in zip(even.tolist(), xs, strict=True)]
        if any(sq):
            # The chain rule to s = t^2 on the squared entries (see _newton_direction).
            J = [0.5 / xi if e else 1.0 for e, xi in zip(sq, xs, strict=True)]
            Hs = [[Hl[i][j] * J[i] * J[j] for j in range(k)] for i in range(k)]
            for i in range(k):
                if sq[i]:
                    Hs[i][i] -= 2.0 * gs[i] * J[i] ** 3
            found = _plain_solve(Hs, [gi * Ji for gi, Ji in zip(gs, J, strict=True)], free)
            if found is not None:
                d, dec = found
                s1 = [xs[i] * xs[i] + d[i] for i in range(k) if sq[i]]
                if all(v > 0.0 for v in s1):
                    x1 = [max(xi + di, li) for xi, di, li in zip(xs, d, ls, strict=True)]
                    it = iter(s1)
                    x1 = [math.sqrt(next(it)) if e else v for e, v in zip(sq, x1, strict=True)]
                    size = _plain_size(x1, xs)
                    return _Step(
                        np.array(d), np.array(x1), False, size, binding, small, np.array(sq), dec
                    )
    found = _plain_solve(Hl, gs, free)
    if found is None:
        return None
    d, dec = found
    x1 = [max(xi + di, li) for xi, di, li in zip(xs, d, ls, strict=True)]
    return _Step(np.array(d), np.array(x1), False, _plain_size(x1, xs), binding, small, None, dec)


def _plain_size(x1: list[float], x: list[float]) -> float:
    """The largest change of an entry relative to it (at least 1e-3); NaN if not finite
    (the caller's test)."""
    size = max(abs(a - b) / max(abs(b), 1e-3) for a, b in zip(x1, x, strict=True))
    return size if math.isfinite(size) else math.nan


def _finite(f: float, g: np.ndarray, H: np.ndarray) -> bool:
    """Whether the criterion and its derivatives are all finite (a NaN or an infinity
    anywhere makes the sum non-finite: one check instead of three)."""
    # np.add.reduce: what ndarray.sum runs, without its Python-level wrapper
    return math.isfinite(
        f + float(np.add.reduce(g, axis=None)) + float(np.add.reduce(H, axis=None))
    )


def _escape(
    objective: Callable[[np.ndarray], float],
    x: np.ndarray,
    f: float,
    g: np.ndarray,
    H: np.ndarray,
    lower: np.ndarray,
    noise: float,
) -> tuple[np.ndarray, int] | None:
    """A point below ``f`` along the most negative curvature of the Hessian over the
    entries not held by a bound, and the values it took; None if there is no negative
    curvature or no decrease.

    The direction ``v`` (the eigenvector) is oriented downhill, or, where the gradient
    does not tell (a stationary point), away from the bounds it touches; its length
    starts at half the largest entry of theta (at least 0.5: lme4's edge restart) and
    halves until the criterion decreases beyond its rounding.
    """
    binding = (x <= lower) & (g > 0.0)
    free = np.flatnonzero(~binding)
    w, V = np.linalg.eigh(H[np.ix_(free, free)])
    if not w[0] < 0.0:
        return None  # flat, not curved down: nothing to follow
    v = np.zeros_like(x)
    v[free] = V[:, 0]
    slope = float(g @ v)
    on_bound = x <= lower
    if abs(slope) > noise:
        if slope > 0.0:
            v = -v
    elif float(v[on_bound].sum()) < 0.0:
        v = -v
    alpha = 0.5 * max(1.0, float(np.abs(x).max())) / float(np.abs(v).max())
    for used in range(1, _HALVINGS_MAX + 1):
        x1 = np.maximum(x + alpha * v, lower)
        f1 = float(objective(x1))
        if math.isfinite(f1) and f1 < f - noise:
            return x1, used
        alpha *= 0.5
    return None


def template_columns(
    rows: list[np.ndarray], cols: list[np.ndarray], offsets: np.ndarray
) -> list[np.ndarray]:
    """The theta indices of every template column with entries below its diagonal, the
    diagonal's first (``rows``, ``cols``: each template's entries' positions; ``offsets``:
    where each template's entries start in theta)."""
    found = []
    # On Python lists: a template has a handful of entries (a cold path per fit).
    starts = np.asarray(offsets).tolist()
    for k, (r, c) in enumerate(zip(rows, cols, strict=True)):
        r, c = np.asarray(r).tolist(), np.asarray(c).tolist()
        for j, (rj, cj) in enumerate(zip(r, c, strict=True)):
            if rj != cj:
                continue
            below = [i for i, (ri, ci) in enumerate(zip(r, c, strict=True)) if ci == cj and ri > rj]
            if below:
                found.append(np.array([starts[k] + i for i in [j, *below]], dtype=np.int64))
    return found


def _mirror(
    x: np.ndarray, g: np.ndarray, H: np.ndarray, lower: np.ndarray, columns: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leave a false boundary point for its mirror image.

    ``Lambda Lambda'`` does not change when a column of ``Lambda`` changes sign, so with
    ``R`` the sign flip of a column's entries ``f(R x) = f(x)``, ``g(R x) = R g(x)`` and
    ``H(R x) = R H(x) R``. A diagonal on its bound with a gradient pushing outward and
    nonzero entries below it is a minimum only on one side of that symmetry: at the mirror
    point (the entries below with the other sign) the same gradient entry pulls inward,
    and the criterion decreases there. No factorisation is needed for the move.
    """
    for col in columns:
        d = col[0]
        if x[d] <= lower[d] and g[d] > 0.0 and np.any(x[col[1:]] != 0.0):
            sign = np.ones(x.shape[0])
            sign[col] = -1.0
            x = x * sign
            x[d] = lower[d]  # -0.0 to 0.0
            g = g * sign
            H = H * np.multiply.outer(sign, sign)
    return x, g, H


def bounded_newton(
    objective: Callable[[np.ndarray], float],
    derivatives: Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]],
    x0: np.ndarray,
    lower: np.ndarray,
    singular: Callable[[np.ndarray], list[int]],
    columns: list[np.ndarray] | None = None,
    value_and_gradient: Callable[[np.ndarray], tuple[float, np.ndarray]] | None = None,
    even: np.ndarray | None = None,
    max_iter: int = BOUNDED_NEWTON_MAX,
    final: Callable[[np.ndarray], float] | None = None,
) -> NewtonFirst | None:
    """Minimise from ``x0`` within ``lower`` by projected Newton steps on the exact Hessian.

    See the module docstring for the method.

    Parameters
    ----------
    objective
        The optimiser's criterion (backtracking, the last step and the reported value).
    derivatives
        ``derivatives(x) -> (f, g, H)``: the criterion, its gradient and its exact Hessian
        from one factorisation, finite on the boundary too.
    x0, lower
        Start and lower bounds (``-inf`` where none).
    singular
        The entries whose gradient the convergence check takes from differences (those of
        a template with a zero diagonal): NaN in the recorded gradient and in their rows
        and columns of the recorded Hessian, as the Newton finish records them.
    columns
        The template columns with entries below the diagonal (:func:`template_columns`):
        a diagonal held on its bound by a positive gradient is moved to the mirror point
        (see :func:`_mirror`).
    value_and_gradient
        The criterion and its gradient alone (a cheaper factorisation's work, finite on
        the boundary too): near the optimum the Hessian is then kept for the next steps
        (a chord method, as in the Newton finish) while they converge fast.
    even
        Entries stepped in their square away from 0 (see :func:`_newton_direction`).
    max_iter
        Newton iterations before giving up.
    final
        The criterion for the values taken at the end (the last step, the snap to a
        bound), where a caller can compute what it needs at the optimum from the same
        factorisation (the estimates); ``objective`` by default.

    Returns
    -------
    NewtonFirst or None
        The optimum (every factorisation counted as an evaluation; the last gradient
        recorded) and the Hessian there; None where the method cannot certify an optimum.
    """
    lower = np.asarray(lower, dtype=np.float64)
    last = objective if final is None else final
    x = np.maximum(np.asarray(x0, dtype=np.float64), lower)
    f, g, H = derivatives(x)
    count = 1
    f0 = f
    if not _finite(f, g, H):
        return None
    noise = 1e-10 * max(1.0, abs(f))
    small_gradient = _SMALL_GRADIENT * max(1.0, abs(f))
    # Whether H was taken at x (else kept from an earlier point: a chord step), and the
    # chord steps' rate of convergence, sqrt(dec_1 / dec_0) of the Newton decrements
    # g'H^{-1}g of two successive points (inf until measured).
    fresh, rate, dec_before = True, math.inf, math.inf
    for _ in range(max_iter):
        if columns:
            x, g, H = _mirror(x, g, H, lower, columns)
        step = _newton_direction(x, g, H, lower, small_gradient, even)
        if not math.isfinite(step.size):
            return None
        if step.modified and not fresh:
            # A kept Hessian that no longer fits: take it here.
            f, g, H = derivatives(x)
            count += 1
            fresh, rate, dec_before = True, math.inf, math.inf
            if not _finite(f, g, H):
                return None
            continue
        dec = step.dec
        if not fresh and dec_before > 0.0:
            rate = math.sqrt(max(dec, 0.0) / dec_before)
        # The last step: tiny, or small with a small gradient where what it leaves is
        # small too (a fresh Hessian's step leaves O(size^2), a chord step rate x size).
        if step.size < _LAST_STEP or (
            step.small
            and step.size < _LAST_STEP_SMALL_GRADIENT
            and (fresh or rate * step.size < _CHORD_LEFT)
        ):
            if step.modified:
                # A stationary point the Hessian does not certify: a saddle, or an even
                # entry on its bound whose curvature pulls inward (its gradient there is
                # 0, so the Newton step cannot leave it). Leave it along the direction of
                # negative curvature, then go on from there.
                found = _escape(objective, x, f, g, H, lower, noise)
                if found is None:
                    return None
                x, used = found
                f, g, H = derivatives(x)
                count += used + 1
                if not _finite(f, g, H):
                    return None
                continue
            # Converged: what this step leaves is far below the 1e-8 the fit is
            # reproducible to; take it on a value alone and report the optimiser's own
            # criterion (the recorded gradient is the last one computed). A step below
            # the criterion's own rounding (a start at the optimum: the moment start of a
            # balanced design) is not worth a factorisation: the point stays.
            if step.size < _NO_STEP:
                break
            f1 = float(last(step.x1))
            count += 1
            if math.isfinite(f1) and f1 <= f + noise:
                x, f = step.x1, f1
            else:
                f = float(last(x))
                count += 1
            break
        # Projected line search (Armijo along the projection arc). The full step gets the
        # derivatives with its value (one factorisation); shorter ones the value alone.
        # Close to the optimum (a small unmodified step, converging fast) the gradient
        # alone: the Hessian is kept (about half the work of a factorisation with it).
        chord = (
            value_and_gradient is not None
            and not step.modified
            and (step.size < _CHORD_FIRST_MAX if fresh else rate < _CHORD_RATE_MAX)
        )
        x1 = step.x1
        if chord:
            f1, g1 = value_and_gradient(x1)  # type: ignore[misc]
            H1 = H
        else:
            f1, g1, H1 = derivatives(x1)
        count += 1
        full = True
        alpha = 1.0
        for _ in range(_HALVINGS_MAX):
            if math.isfinite(f1) and f1 <= f + 1e-4 * float(g @ (x1 - x)) + noise:
                break
            alpha *= 0.5
            x1 = step.at(x, alpha, lower)
            f1, full = float(objective(x1)), False
            count += 1
        else:
            return None
        if not full:
            f1, g1, H1 = derivatives(x1)
            count += 1
            chord = False
        if not _finite(f1, g1, H1):
            return None
        if chord:
            dec_before = dec
        else:
            rate, dec_before = math.inf, math.inf
        fresh = not chord
        x, f, g, H = x1, f1, g1, H1
    else:
        return None
    near = np.isfinite(lower) & (x > lower) & (x - lower < _SNAP_TOL)
    if near.any():
        # An even entry converging to its bound from inside (cubically: f ~ c + a t^2 +
        # b t^4) ends a hair above it; the bound itself is the optimum where the criterion
        # is no worse there (snap_to_bounds' rule), and makes singular fits reproducible.
        snapped = np.where(near, lower, x)
        fs = float(last(snapped))
        count += 1
        if math.isfinite(fs) and fs <= f + 1e-12 * max(1.0, abs(f)):
            x, f = snapped, fs
    return _result(x0, x, lower, f0, f, count, g, H, singular(x))


def _result(
    x0: np.ndarray,
    x: np.ndarray,
    lower: np.ndarray,
    f0: float,
    f: float,
    evaluations: int,
    g: np.ndarray,
    H: np.ndarray,
    singular: list[int],
) -> NewtonFirst:
    """The record of a converged :func:`bounded_newton` run, with the gradient and Hessian
    of singular templates' entries set to NaN (the convergence check then takes them from
    differences, as after BOBYQA and the Newton finish)."""
    g = np.array(g, dtype=np.float64)
    H = np.array(H, dtype=np.float64)
    if singular:
        g[singular] = np.nan
        H[singular, :] = np.nan
        H[:, singular] = np.nan
    return _newton_first_result(x0, x, lower, f0, f, evaluations, g, H)
