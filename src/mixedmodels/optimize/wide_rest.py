"""Newton steps from the start for a model with a wide dense rest block (issue 18).

A crossed design ``(1 | a) + (1 | b)`` with 1e4 levels of ``b`` factors a dense 1e4 x 1e4
block at every evaluation (~10 s at 1e6 rows, one core). BOBYQA spends ~10 of them
(its ``2k + 1`` initial points, then trial points that rebuild its model around an
optimum it has already nearly reached) before the Newton finish (~4 more, with a
gradient each) completes the optimum. Where the gradient costs about one factorisation
more (a balanced term 1: :mod:`mixedmodels.linalg.dense_rest`), Newton steps from the
moment start get there with fewer: the gradient at the start, a Hessian from
``k (k + 1) / 2`` deviance values (:func:`.finish._hessian`, step ``1e-3``, error
``O(1e-3)``) refitted to the secant pairs of the last ``k`` steps (or refreshed by a
BFGS update until they span theta), and the last step, below ``value_step`` relative
and with a negligible estimated error, taken on the criterion's value alone (as the
finish does).

With a vector term 1 (the grid's ``(1 + x | user) + (1 | item)``: four theta) the
gradient inverts the whole rest block (potri, ~2 factorisations more), but BOBYQA's
evaluations grow with theta (~7-9 each: 32-37 factorisations and 4-5 gradients on the grid's
1e4-item cells), so the same steps still pay
(:func:`mixedmodels.objective.gradient.wide_newton_pays`). The start's Hessian is then
taken within covariance blocks only (:func:`block_hessian`: entries of different
grouping factors are coupled by a few % and start at 0) and the quasi-Newton steps
converge linearly (~0.05 a step; 6-7 gradients from the moment start). On
2e5 rows x 2e4 users x 2500 items: 15 factorisations and 7 inverses against BOBYQA's 34
and 4.

Anything that Newton steps cannot do well (a Hessian that is not positive definite, an
optimum on or near the boundary, a line search that fails, slow progress) gives None
after a few evaluations (a start too far away or towards a bound: after the start's
gradient and ``k`` values), and the fit goes through BOBYQA from the start as before (the
same fit as without the steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.linalg.lapack import dpotrs as _dpotrs

from mixedmodels.optimize.finish import (
    EDGE_TOL,
    NewtonFirst,
    _hessian,
    _newton_first_result,
    _secant_update,
    cholesky_or_none,
)

#: Newton iterations before giving the optimum to BOBYQA (with a vector term 1 the
#: quasi-Newton steps converge linearly, ~0.05 a step: 6-8 from the moment start).
WIDE_NEWTON_MAX = 12
#: Halvings of a step before the line search gives up.
_HALVINGS = 4
#: A start whose first Newton step is larger than this (relative) is left to BOBYQA:
#: the value Hessian at the start would fit the optimum poorly.
_FIRST_STEP_MAX = 0.5
#: The last step is taken on its value alone when the theta error it leaves (estimated
#: from the convergence of the steps before it) is below this, relative: a tenth of the
#: 1e-8 the fit is reproducible to.
_VALUE_STEP_ERROR = 1e-9
#: After the first step, a template diagonal that a step would bring below this fraction
#: of its distance to the bound hands the optimum to BOBYQA (see newton_from_start).
_SHRINK = 0.75
#: The last step's rule measures an off-diagonal template entry against this fraction of
#: its template's largest diagonal entry (or itself, if larger).
_OFFDIAG_FINISH = 0.1
#: Secant equations of steps in nearly the same direction do not determine ``H``.
_PAIRS_COND = 1e3


def _relative(
    step: np.ndarray,
    x: np.ndarray,
    split: tuple[np.ndarray, np.ndarray] | None = None,
    fraction: float = 1.0,
) -> float:
    """The largest step entry relative to its parameter (small ones count as 1e-3).

    With ``split`` (:func:`_split_blocks`: the covariance block of each diagonal and each
    off-diagonal entry) an off-diagonal template entry
    counts relative to the largest diagonal entry of its block: a correlation near 0
    leaves ``T[1, 0]`` near 0, where its step, however small against the template, would
    look large against the entry itself (``fraction`` of that diagonal).
    """
    return float((np.abs(step) / _scales(x, split, fraction)).max())


def _scales(
    x: np.ndarray, split: tuple[np.ndarray, np.ndarray] | None, fraction: float = 1.0
) -> np.ndarray:
    """Per entry ``max(1e-3, |x_i|)``, and for an off-diagonal entry also ``fraction``
    times the largest ``|x_j|`` of a diagonal entry ``j`` of its block (``split``:
    :func:`_split_blocks`)."""
    out = np.maximum(1e-3, np.abs(x))
    if split is None:
        return out
    diagonal, offdiag = split
    for b in np.unique(offdiag[offdiag >= 0]):
        on = diagonal == b
        if on.any():
            sel = offdiag == b
            out[sel] = np.maximum(out[sel], fraction * float(np.abs(x[on]).max()))
    return out


def _split_blocks(
    blocks: np.ndarray | None, lower: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(diagonal, offdiag)``: the block of each bounded (diagonal) entry and of each
    unbounded (off-diagonal) one, -1 elsewhere; None without blocks."""
    if blocks is None:
        return None
    blocks = np.asarray(blocks, dtype=np.int64)
    bounded = np.isfinite(lower)
    return np.where(bounded, blocks, -1), np.where(bounded, -1, blocks)


def block_hessian(
    objective: Callable[[np.ndarray], float],
    x: np.ndarray,
    f0: float,
    g: np.ndarray,
    blocks: np.ndarray | None,
    h: float = 1e-3,
    diagonal_ok: Callable[[np.ndarray], bool] | None = None,
) -> tuple[np.ndarray | None, int]:
    """The Hessian at ``x`` from deviance values, within covariance blocks only.

    With the gradient ``g`` known, ``f(x + h_i e_i)`` gives ``H_ii`` and
    ``f(x + h_i e_i + h_j e_j)`` gives ``H_ij`` (error ``O(h)``, step
    ``h_i = h max(1, |x_i|)``; as :func:`.finish._hessian`). Entries of different
    covariance blocks (different grouping factors) are coupled only through the other
    terms' levels and measured at most a few % of the diagonals (correlation 0.03-0.07
    on the grid's analogue), so they start at 0 and are left to the secant updates:
    ``k + sum_b k_b (k_b - 1) / 2`` values instead of ``k (k + 1) / 2`` (7 instead of
    10 for ``(1 + x | user) + (1 | item)``). ``blocks`` None: all pairs.
    ``diagonal_ok(diag)``, asked once the diagonal is known, may stop before the pairs
    (the Hessian is then None).

    The entries of the blocks other than the first (term 1's) are stepped first: right
    after the value (and gradient) at ``x`` their points share term 1's entries with
    ``x``, so the blocked system reuses the rank update of ``x`` for them (one update
    fewer per start on the grid's model: ~500 s of CPU at 1e8 rows x 1e5 users x 1e4
    items). The same points and the same arithmetic per entry: the same Hessian, to the
    bit.
    """
    if blocks is None:
        return _hessian(objective, x, f0, g, h, diagonal_ok=diagonal_ok)
    blocks = np.asarray(blocks)
    order = np.argsort(blocks == blocks[0], kind="stable")  # other blocks first
    back = np.empty_like(order)
    back[order] = np.arange(order.shape[0])

    def permuted(y: np.ndarray) -> float:
        return objective(y[back])

    ok = None if diagonal_ok is None else (lambda diag: diagonal_ok(diag[back]))
    H, count = _hessian(permuted, x[order], f0, g[order], h, blocks=blocks[order], diagonal_ok=ok)
    return (None if H is None else H[np.ix_(back, back)]), count


def _pairs_hessian(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """The symmetric ``H`` that fits the secant equations ``H s = y`` of the last ``k``
    steps best (least squares, each equation relative to its step), or None when the
    steps do not span the parameters well (condition above ``_PAIRS_COND``).

    Near the optimum these steps are short, so ``H`` fits the Hessian there to about
    their length (times the third derivatives); the BFGS update keeps what the start's
    Hessian got wrong in directions the steps have not explored.
    """
    k = pairs[0][0].shape[0]
    iu = np.triu_indices(k)
    rows, rhs = [], []
    for s, y in pairs:
        w = 1.0 / float(np.linalg.norm(s))
        for i in range(k):
            # Row i of H s: sum_j H_ij s_j, with H_ij = H_ji stored once (i <= j).
            row = np.zeros(iu[0].shape[0])
            for e, (a, b) in enumerate(zip(*iu, strict=True)):
                if a == i:
                    row[e] += s[b]
                elif b == i:
                    row[e] += s[a]
            rows.append(row * w)
            rhs.append(y[i] * w)
    M = np.array(rows)
    if np.linalg.cond(M) > _PAIRS_COND:
        return None
    h = np.linalg.lstsq(M, np.array(rhs), rcond=None)[0]
    H = np.empty((k, k))
    H[iu] = h
    H[iu[1], iu[0]] = h
    return H


def newton_from_start(
    objective: Callable[[np.ndarray], float],
    gradient: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    lower: np.ndarray,
    value_step: float,
    max_iter: int = WIDE_NEWTON_MAX,
    blocks: np.ndarray | None = None,
) -> NewtonFirst | None:
    """Minimise from ``x0`` by Newton steps with a value Hessian and secant updates.

    ``objective(x)`` is the criterion; ``gradient(x)`` its analytic gradient, which reads
    the factor the last ``objective(x)`` at the same point left behind (so a step costs
    one factorisation for its value and the gradient's own work only once accepted).
    The steps ``x - alpha H^{-1} g`` take ``alpha`` from 1, halved until the Armijo
    condition ``f(x1) <= f - 1e-4 alpha g'H^{-1}g`` holds (Nocedal & Wright, Numerical
    Optimization, sec. 3.1); ``H`` starts from deviance values around ``x0`` and is
    refitted after each step to the secant equations of the last ``k`` steps
    (:func:`_pairs_hessian`), or refreshed by the BFGS update
    ``H+ = H - Hs s'H / s'Hs + y y' / y's`` (ibid., eq. 6.19) while they do not span
    theta. A step below ``value_step`` (relative) whose error (its size times its ratio
    to the step before, an estimate of ``H``'s relative error along it) is below
    ``_VALUE_STEP_ERROR`` is the last, taken on its value alone.

    ``blocks`` (the covariance block of each theta entry,
    ``CovarianceStructure.theta_blocks``) limits the start's value Hessian to pairs within
    a block (:func:`block_hessian`) and measures the first step of an off-diagonal
    template entry against its block's diagonal (:func:`_relative`); None: all pairs,
    each entry against itself. A start whose step on the Hessian's diagonal alone is
    over twice ``_FIRST_STEP_MAX`` or crosses a bound stops before the pairs; after the
    first step, one that would bring a template diagonal below ``_SHRINK`` of its value
    stops (an optimum on or near the bound).

    Returns
    -------
    NewtonFirst or None
        The record (evaluations: factorisations) and the Hessian, or None where BOBYQA
        should take over (see the module docstring).
    """
    x = np.array(x0, dtype=np.float64)
    if (x < lower).any():
        return None
    f = float(objective(x))
    if not math.isfinite(f):
        return None
    g = np.asarray(gradient(x), dtype=np.float64)
    count = 1
    f0 = f
    if not np.isfinite(g).all():
        return None
    lower = np.asarray(lower, dtype=np.float64)
    split = _split_blocks(blocks, lower)
    bounded = np.isfinite(lower)

    def diagonal_ok(diag: np.ndarray) -> bool:
        """Whether the step on the Hessian's diagonal alone is one the start may take:
        a start that far from the optimum, or whose step would cross a bound, would
        fail after the pairs too (the pairs' values saved: 3 of 7 evaluations)."""
        if not (diag > 0.0).all():
            return False
        step = g / diag
        return _relative(step, x, split) <= 2.0 * _FIRST_STEP_MAX and not (x - step < lower).any()

    if split is None:
        H, used = _hessian(objective, x, f, g)
    else:
        H, used = block_hessian(
            objective, x, f, g, np.asarray(blocks, dtype=np.int64), diagonal_ok=diagonal_ok
        )
    count += used
    C = cholesky_or_none(H) if H is not None else None
    if C is None:
        return None
    noise = 1e-10 * max(1.0, abs(f))
    previous = math.inf
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for it in range(max_iter):
        step, _ = _dpotrs(C, g, lower=1)
        dec = float(g @ step)
        # An off-diagonal entry near 0 counts against a tenth of its template's diagonal
        # in the last step's rule (finished to ~1e-8 of itself, 1e-10 of the template;
        # against itself, a correlation of 0.002 took 12 steps at a linear rate of 0.3),
        # against the diagonal for the first step's bound.
        size = _relative(step, x, split, _OFFDIAG_FINISH)
        if not (math.isfinite(size) and dec > 0.0):
            return None
        if it == 0 and _relative(step, x, split) > _FIRST_STEP_MAX:
            return None
        x1 = x - step
        if (x1 < lower).any():
            return None  # towards the boundary: BOBYQA, the edge restart and the snap
        if it > 0 and (x1 - lower < _SHRINK * (x - lower))[bounded].any():
            # A template diagonal still falling by a quarter after the first step: an
            # optimum on (or near) the bound, approached linearly (the deviance is even in
            # a diagonal entry, quartic near a singular optimum: steps of ~2/3). BOBYQA,
            # before more steps (on 3,000 users with no slope variance, 8 more steps
            # ended in a NaN gradient at 3e-7).
            return None
        # The last step's error along its direction is ~ this step's size relative to
        # it (H_k s_k = g_k, g_{k+1} ~ (H_k - H) s_k): a step on its value alone leaves
        # about size * size / previous of theta, taken only when that is negligible.
        if size < value_step and size * size < _VALUE_STEP_ERROR * previous:
            f1 = float(objective(x1))
            count += 1
            if math.isfinite(f1) and f1 <= f + noise:
                x, f = x1, f1
            break
        alpha = 1.0
        for _ in range(_HALVINGS):
            x1 = x - alpha * step
            f1 = float(objective(x1))
            count += 1
            if math.isfinite(f1) and f1 <= f - 1e-4 * alpha * dec + noise:
                break
            alpha *= 0.5
        else:
            return None
        g1 = np.asarray(gradient(x1), dtype=np.float64)
        if not np.isfinite(g1).all():
            return None
        pairs.append((x1 - x, g1 - g))
        H1 = _pairs_hessian(pairs[-x.shape[0] :]) if len(pairs) >= x.shape[0] else None
        C1 = cholesky_or_none(H1) if H1 is not None else None
        if C1 is None:
            H1 = _secant_update(H, x1 - x, g1 - g)
            C1 = cholesky_or_none(H1) if H1 is not H else None
        if C1 is not None:
            H, C = H1, C1
        x, f, g, previous = x1, f1, g1, alpha * size
    else:
        return None
    if ((x - lower) < EDGE_TOL).any():
        return None
    return _newton_first_result(x0, x, lower, f0, f, count, g, H)
