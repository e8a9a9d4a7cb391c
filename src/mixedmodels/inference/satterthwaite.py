"""Satterthwaite's denominator degrees of freedom for contrasts of the fixed effects.

lmerTest's method (Kuznetsova, Brockhoff & Christensen 2017, JSS 82(13), sec. 3): the
variance parameters are ``varpar = (theta, sigma)``; their asymptotic covariance is
``A = 2 H^{-1}`` with ``H`` the Hessian of the *unprofiled* deviance
``-2 log L(theta, sigma)`` at the optimum,

    ML:   d(theta, sigma)   = log|L_Z|^2 + r^2(theta) / sigma^2 + n log(2 pi sigma^2)
    REML: d_R(theta, sigma) = d(theta, sigma) + log|R_X|^2 - p log(2 pi sigma^2)

(Bates et al. 2015, JSS 67(1), eqs. 32 and 40, before sigma is profiled out). For a
contrast ``l`` (one row) with ``V(varpar) = sigma^2 (R_X' R_X)^{-1}(theta)`` and gradient
``g = d(l' V l) / d varpar``,

    nu = 2 (l' V l)^2 / (g' A g).

Everything is computed from the blocked factor of
:mod:`mixedmodels.objective.profiled_deviance` at a few theta values: no n x n or q x q
matrix is formed. The sigma derivatives are analytic. The theta derivatives are, where the
model allows (theta the only parameters, every template invertible), exact first
derivatives from the factor at the optimum (``dV/dtheta``, ``dr^2/dtheta``) and a Hessian
from central differences of the exact gradient: ``2k + 1`` factorisations. Otherwise
(a residual structure's parameters, a boundary fit) they are central differences of
deviance values refined by Richardson extrapolation (as ``numDeriv``, which lmerTest
uses): ``~2k(k + 1)`` factorisations per step of the tableau.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mixedmodels.errors import refuse_generalized
from mixedmodels.linalg.blas_threads import blas_threads_for
from mixedmodels.linalg.solution import solve_l22_transposed

if TYPE_CHECKING:  # pragma: no cover
    from ..linalg.blocked import BlockedFactor
    from ..objective.profiled_deviance import ProfiledDeviance
    from ..results import LinearMixedModelResult

_LOG_2PI = float(np.log(2.0 * np.pi))

# A template diagonal at or below this (relative) is singular: the exact derivatives need
# the template's inverse (the value of mixedmodels.objective.gradient).
_SINGULAR_DIAGONAL = 1e-6
# Relative step of the differences of the exact gradient (see _analytic_covariance).
_GRADIENT_STEP = 1e-4
# Relative step of the large path's forward differences of the profiled gradient, and
# the |theta| below which it is absolute: their error is (h/2) times a third derivative
# plus the gradient's rounding over h. On the product design at 1e6 rows the df were off
# by 2.5e-5, 2.5e-6 and 3.7e-7 at 1e-5, 1e-6 and 1e-7 (against the central differences
# at 1e-4); at 1e7 rows the rounding of a 1e-8 step (theta near 0, the floor at 0.1) left
# 1.9e-6 in a df and a step of 3e-8 2e-7, so the smallest step is 3e-8 (df within 3e-7
# at 1e7 rows, 5e-7 at 1e6).
_FORWARD_STEP = 1e-7
_FORWARD_FLOOR = 0.3

#: Eigenvalues of the Hessian at or below this are treated as zero (lmerTest's ``tol``).
HESSIAN_TOL = 1e-8


@dataclass(frozen=True, eq=False)
class VarparCovariance:
    """What Satterthwaite's method needs, computed once per fit.

    Attributes
    ----------
    varpar
        ``(theta, sigma)`` at the optimum.
    hessian
        Hessian of ``-2 log L`` (REML or ML, as the fit) with respect to ``varpar``.
    vcov_varpar
        ``A = 2 H^+`` (Moore-Penrose inverse over eigenvalues above ``HESSIAN_TOL``).
    jacobian
        ``(k, p, p)``: derivative of ``vcov(beta)`` with respect to each element of varpar.
    vcov_beta
        ``(p, p)`` covariance of beta-hat.
    nonpositive_eigenvalues
        Eigenvalues of the Hessian that are not clearly positive (lmerTest warns on them).
    """

    varpar: np.ndarray
    hessian: np.ndarray
    vcov_varpar: np.ndarray
    jacobian: np.ndarray
    vcov_beta: np.ndarray
    nonpositive_eigenvalues: np.ndarray


# -- exact first derivatives from one factor ------------------------------------------------


def _analytic_ready(dev, theta: np.ndarray):
    """The blocked profiled deviance to differentiate analytically at ``theta``, or None.

    The exact derivatives need a blocked factor, theta alone as the parameters (a residual
    structure's parameters keep the numerical path) and every template invertible (at a
    boundary optimum the formulas divide by a zero diagonal; numDeriv's steps go across
    the bound there, which the numerical path reproduces).
    """
    from ..linalg.blocked import BlockedSystem

    if hasattr(dev, "deviance_at"):
        if dev.has_residual_parameters:
            return None
        dev = dev.factored_at(np.zeros(0))
    if not isinstance(getattr(dev, "system", None), BlockedSystem):
        return None
    for T in dev.structure.templates(theta):
        d = np.abs(np.diag(T))
        if np.min(d) <= _SINGULAR_DIAGONAL * max(1.0, float(np.max(np.abs(T)))):
            return None
    return dev


def _omega_solve_xy(dev: ProfiledDeviance, f: BlockedFactor) -> list[np.ndarray]:
    """``C = Omega_Z^{-1} Lambda' Z' [X y]`` per term, each ``(levels, q_k, p + 1)``.

    With ``L_Z L_XZ' = Lambda' Z' [X y]`` (the factor's definition) ``C = L_Z^{-T} L_XZ'``:
    for the rest block ``C_r = L22^{-T} LX2'`` (one triangular solve), then per level of
    term 1 ``C_1 = M_l^{-1} T_1' (Z_1'[X y] - Z_1'Z_r Lambda_r C_r)`` (the first block row
    of ``Omega C = Lambda' Z' [X y]``). No step touches the rows of the data.
    """
    A = dev.A
    structure = dev.structure
    terms = structure.terms
    templates = f.templates
    acc = np.ascontiguousarray(np.transpose(A.xytz1, (1, 2, 0)))  # (l1, p1, p+1)
    out: list[np.ndarray] = []
    if len(terms) > 1:
        Cr = solve_l22_transposed(f, np.ascontiguousarray(f.LX2.T))
        lamC = np.empty_like(Cr)
        offs = dev.system.rest_offsets
        for k, term in enumerate(terms[1:], start=1):
            s, e = int(offs[k - 1]), int(offs[k])
            blk = Cr[s:e].reshape(term.nlevels, term.ncols, -1)
            out.append(blk)
            lamC[s:e] = np.einsum("ab,lbx->lax", templates[k], blk).reshape(e - s, -1)
        pattern = getattr(dev.system, "pattern", None)
        if hasattr(pattern, "transpose_times"):  # the large path: C read level by level
            acc -= pattern.transpose_times(lamC)
        else:
            acc -= (A.zrtz1.T @ lamC).reshape(acc.shape)
    # In slices of levels: the batched products' temporaries stay small (on 1e6 users two
    # more arrays of acc's size were the large path's peak memory).
    C1 = np.empty_like(acc)
    T1t = templates[0].T[None]
    for l0 in range(0, acc.shape[0], 1 << 16):
        sl = slice(l0, l0 + (1 << 16))
        C1[sl] = f.M11inv[sl] @ (T1t @ acc[sl])
    return [C1, *out]


def _schur_derivatives(dev: ProfiledDeviance, f: BlockedFactor) -> np.ndarray:
    """``dS/dtheta_i`` of the ``[X y]`` Schur complement ``S = LXX LXX'``: ``(k, p+1, p+1)``.

    Notes
    -----
    ``S(theta) = [X y]'[X y] - B' Omega_Z^{-1} B`` with ``B = Lambda' Z' [X y]``. With
    ``E_i = dLambda/dtheta_i`` and ``C = Omega_Z^{-1} B``,

        dS/dtheta_i = -(C' E_i' Q + Q' E_i C),   Q = Z'[X y] - Z'Z Lambda C,

    and ``Lambda' Q = B - (Omega_Z - I) C = C``, so ``Q = Lambda^{-T} C`` and
    ``E_i' Q = (Lambda^{-1} E_i)' C``. ``E_i`` repeats the template entry ``(r, c)`` of one
    term on each of its levels; with ``F = T^{-1} E_rc`` (a ``q_k x q_k`` matrix)

        dS/dtheta_i = -sum_l C_l' (F + F') C_l = -sum_ab (F + F')_ab G_ab,
        G_ab = sum_l C_l[a]' C_l[b]                  (rows a, b of the level's C).

    ``R_X' R_X`` is the leading ``p x p`` block of ``S`` and ``r^2`` the Schur complement of
    that block in ``S``: their derivatives follow (:func:`_first_derivatives`).
    """
    structure = dev.structure
    m = f.LXX.shape[0]
    out = np.empty((structure.ntheta, m, m))
    for k, Ck in enumerate(_omega_solve_xy(dev, f)):
        levels, b, _ = Ck.shape
        flat = Ck.reshape(levels, b * m)
        G = (flat.T @ flat).reshape(b, m, b, m)  # G[a, x, b, y] = sum_l C_l[a, x] C_l[b, y]
        Tinv = np.linalg.inv(f.templates[k])
        s = structure.offsets[k]
        for j, (r, c) in enumerate(zip(structure.rows[k], structure.cols[k], strict=True)):
            F = np.outer(Tinv[:, r], np.eye(b)[c])  # T^{-1} E_rc
            FF = F + F.T
            out[s + j] = -np.einsum("ab,axby->xy", FF, G)
    return out


def _first_derivatives(dev: ProfiledDeviance, f: BlockedFactor) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``d(R_X'R_X)^{-1}/dtheta`` ``(k, p, p)`` and ``dr^2/dtheta`` ``(k,)`` at ``f``.

    Notes
    -----
    With ``S`` the ``[X y]`` Schur complement (:func:`_schur_derivatives`), ``S_XX = R_X'R_X``
    and ``r^2 = S_yy - S_yX S_XX^{-1} S_Xy``:

        d S_XX^{-1} = -S_XX^{-1} dS_XX S_XX^{-1},
        d r^2       = w' dS w,   w = (-beta-hat, 1),  beta-hat = S_XX^{-1} S_Xy.
    """
    dS = _schur_derivatives(dev, f)
    p = f.LXX.shape[0] - 1
    LXX = np.tril(f.LXX)
    if p:
        Rinv = np.linalg.inv(np.ascontiguousarray(LXX[:p, :p]))
        xv = Rinv.T @ Rinv
        # LXX = [[R_X', 0], [l', r]]: S_Xy = R_X' l, so beta-hat = R_X^{-1} l.
        beta = Rinv.T @ LXX[p, :p]
    else:
        xv = np.zeros((0, 0))
        beta = np.zeros(0)
    w = np.concatenate([-beta, [1.0]])
    d_r2 = np.einsum("x,kxy,y->k", w, dS, w)
    d_xv = -np.einsum("ab,kbc,cd->kad", xv, dS[:, :p, :p], xv)
    return d_xv, d_r2


def _analytic_covariance(
    dev: ProfiledDeviance, theta: np.ndarray, sigma: float, reml: bool, step: float
) -> tuple[np.ndarray, np.ndarray, _ThetaState, int]:
    """Hessian of ``-2 log L(theta, sigma)`` and ``dV/dvarpar`` from exact first derivatives.

    Returns ``(H, jacobian, state at theta, factorisations)``.

    Notes
    -----
    The Jacobian of ``V = sigma^2 (R_X'R_X)^{-1}`` and ``d r^2/dtheta`` are exact, from the
    factor at ``theta`` (:func:`_first_derivatives`). The theta block of the Hessian is a
    central difference of the exact gradient of ``g(theta) = a(theta) + r^2(theta)/sigma^2``
    at fixed sigma (``a`` = the log determinants of the criterion):

        grad g = grad d_P + (1/sigma^2 - c/r^2(theta)) grad r^2,

    with ``d_P = a + c log r^2 + const`` the profiled criterion, whose exact gradient is
    :class:`~mixedmodels.objective.gradient.ProfiledDevianceGradient`'s. A central
    difference of an exact gradient errs by ``h^2/6`` times its third derivative; with
    ``h = step * max(|theta_j|, 0.1)`` that is ~1e-9 relative, below the error of
    numDeriv's Richardson tableau of deviance values, for ``2k`` factorisations instead of
    ``2k(k + 1) * levels``. The large path (profiled gradient, below) takes forward
    differences from the gradient at ``theta`` instead, at the step ``_FORWARD_STEP``:
    error ~``h/2`` times the third derivative (~1e-7 relative), ``k`` factorisations.
    """
    from ..objective.gradient import ProfiledDevianceGradient, _large_path

    if dev.reml != reml:
        dev = dev.with_reml(reml)
    k = theta.size
    s2 = sigma * sigma
    c = dev.dof
    grad = ProfiledDevianceGradient(dev)
    lower = dev.structure.lower_bounds()

    def grad_g(t: np.ndarray) -> np.ndarray:
        # An owned factor is read here, then consumed by the gradient (its rest block is
        # inverted in place): one q_r x q_r array at a time, as the tableau needed.
        f, owned = dev.owned_factor(t)
        _, dr2 = _first_derivatives(dev, f)
        weight = 1.0 / s2 - c / f.pwrss
        return grad.of_owned_factor(t, f, owned) + weight * dr2

    f0 = dev.factor(theta)
    d_xv, d_r2 = _first_derivatives(dev, f0)
    s0 = _state(dev, f0, reml)
    # The large path differences the profiled gradient alone: at the optimum sigma^2 =
    # r^2/c, where (1/sigma^2 - c/r^2) vanishes, so
    #     Hess g = Hess d_P + (c / r^4) grad r^2 grad r^2'
    # (differentiate grad g above once more), with grad r^2 exact at theta. Each point then
    # needs the factor and the gradient, not the back-substitutions of dr^2/dtheta (on 1e6
    # users, as dear as the gradient itself).
    profiled = _large_path(dev) and abs(s2 * c / s0.pwrss - 1.0) < 1e-10
    H = np.zeros((k + 1, k + 1))
    if profiled:
        # Forward differences from the gradient at theta, which the factor already made
        # gives without a factorisation: k factorisations and k + 1 gradients where the
        # central ones took 2k of each (1e6 users: ~1.9 s per pair of them), at a step
        # small enough (``_FORWARD_STEP``) for their O(h) error to stay below 1e-6 of
        # the df. Steps go up: no bound is crossed.
        g0 = grad(theta, factor=f0)
        del f0
        for j in range(k):
            h = _FORWARD_STEP * max(abs(theta[j]), _FORWARD_FLOOR)
            e = np.zeros(k)
            e[j] = h
            H[:k, j] = (grad(theta + e) - g0) / h
    else:
        del f0
        for j in range(k):
            h = step * max(abs(theta[j]), 0.1)
            if np.isfinite(lower[j]):
                h = min(h, 0.5 * abs(theta[j]))  # stay on the feasible side of the bound
            e = np.zeros(k)
            e[j] = h
            H[:k, j] = (grad_g(theta + e) - grad_g(theta - e)) / (2.0 * h)
    # The exact Hessian is symmetric; the average halves the differences' error.
    H[:k, :k] = 0.5 * (H[:k, :k] + H[:k, :k].T)
    if profiled:
        H[:k, :k] += (c / s0.pwrss**2) * np.outer(d_r2, d_r2)
    H[:k, k] = H[k, :k] = -2.0 * d_r2 / sigma**3
    H[k, k] = 6.0 * s0.pwrss / s2**2 - 2.0 * c / s2
    p = s0.xtvinvx_inv.shape[0]
    jac = np.empty((k + 1, p, p))
    jac[:k] = s2 * d_xv
    jac[k] = 2.0 * sigma * s0.xtvinvx_inv
    return H, jac, s0, 1 + (k if profiled else 2 * k)


@dataclass(frozen=True)
class _ThetaState:
    """Quantities of the factor at one theta that the derivatives need."""

    logdet: float  # log|L_Z|^2 (+ log|R_X|^2 for REML)
    pwrss: float  # r^2(theta)
    xtvinvx_inv: np.ndarray  # (R_X' R_X)^{-1}


def _state(dev: ProfiledDeviance, f: BlockedFactor, reml: bool) -> _ThetaState:
    p = dev.p
    # The deviance's constant is the log-Jacobian of the residual structure (SD ratios by
    # group, prior weights): it depends on the residual parameters, so it belongs here.
    logdet = f.logdet_z + (f.logdet_x if reml else 0.0) + dev.constant
    if p:
        # p is small: a plain inverse of the triangle is faster than a LAPACK call here.
        Rinv = np.linalg.inv(np.ascontiguousarray(f.LXX[:p, :p]))
        xv = Rinv.T @ Rinv
    else:
        xv = np.zeros((0, 0))
    return _ThetaState(logdet, f.pwrss, xv)


def unprofiled_deviance(
    dev: ProfiledDeviance, theta: np.ndarray, sigma: float, *, reml: bool | None = None
) -> float:
    """Return ``-2 log L(theta, sigma)`` (REML or ML) with sigma not profiled out.

    Parameters
    ----------
    dev
        The profiled deviance of the fit (supplies the factor at ``theta``).
    theta, sigma
        Where to evaluate.
    reml
        REML criterion (default: the deviance function's own flag).

    Notes
    -----
    ``log|L_Z|^2 + r^2/sigma^2 + n log(2 pi sigma^2)``, plus ``log|R_X|^2 -
    p log(2 pi sigma^2)`` for REML. At ``sigma^2 = r^2 / n`` (ML) or ``r^2 / (n - p)``
    (REML) it equals the profiled deviance (Bates et al. 2015, eqs. 32-34, 40-41).

    Examples
    --------
    >>> unprofiled_deviance(fit.deviance_function, fit.theta, fit.sigma)  # doctest: +SKIP
    """
    reml = dev.reml if reml is None else bool(reml)
    state_at = _state_function(dev, reml)
    s = state_at(np.asarray(theta, dtype=np.float64))
    n, p = _sizes(dev, theta)
    c = n - p if reml else n
    s2 = float(sigma) ** 2
    return s.logdet + s.pwrss / s2 + c * (_LOG_2PI + np.log(s2))


def _sizes(objective, params: np.ndarray) -> tuple[int, int]:
    """``(n, p)`` of a profiled deviance, or of a model objective at ``params`` (the system
    there is the one the derivatives factor first: no extra one is built)."""
    if hasattr(objective, "deviance_at"):
        dev = objective.factored_at(objective.split(params)[1])
        return dev.n, dev.p
    return objective.n, objective.p


def _richardson(values: list, order: int = 2):
    """Extrapolate estimates made at steps h, h/2, h/4, ... (error a series in h^order).

    Ridders' variant of Richardson extrapolation (Press et al., Numerical Recipes, sec.
    5.7): the whole tableau is built and the entry whose two neighbours agree best is
    returned, so round-off at the smallest steps cannot spoil an accurate coarser value.
    Works elementwise-consistently for arrays (the error is the largest absolute change).
    """
    best, best_err = values[0], np.inf
    prev = [values[0]]
    for lev in range(1, len(values)):
        row = [values[lev]]
        for m in range(1, lev + 1):
            fac = 2.0 ** (order * m)
            row.append((fac * row[m - 1] - prev[m - 1]) / (fac - 1.0))
            err = max(
                float(np.max(np.abs(row[m] - row[m - 1]))),
                float(np.max(np.abs(row[m] - prev[m - 1]))),
            )
            if err <= best_err:
                best, best_err = row[m], err
        prev = row
    return best


def _base_steps(x: np.ndarray, d: float = 0.1, eps: float = 1e-4) -> np.ndarray:
    """numDeriv's steps: relative ``d |x|``, or ``eps`` where x is (nearly) zero."""
    zero_tol = np.sqrt(np.finfo(float).eps / 7e-7)
    return np.where(np.abs(x) < zero_tol, eps, d * np.abs(x))


def _state_function(objective, reml: bool):
    """``params -> _ThetaState`` for a profiled deviance (params = theta) or a model's whole
    objective (params = theta, then the residual structure's parameters)."""
    if hasattr(objective, "deviance_at"):
        objective = objective.with_reml(reml) if objective.reml != reml else objective

        def state(params: np.ndarray) -> _ThetaState:
            theta, psi = objective.split(params)
            dev = objective.factored_at(psi)
            return _state(dev, dev.factor(theta), reml)

        return state

    def state_theta(theta: np.ndarray) -> _ThetaState:
        return _state(objective, objective.factor(theta), reml)

    return state_theta


def varpar_covariance(
    dev,
    theta: np.ndarray,
    sigma: float,
    *,
    reml: bool | None = None,
    levels: int = 4,
    method: str = "auto",
) -> VarparCovariance:
    """Compute the Hessian of ``-2 log L(theta, sigma)``, ``A = 2 H^+`` and ``dV/dvarpar``.

    Parameters
    ----------
    dev
        The fit's objective: its profiled deviance in theta, or its whole objective
        (:class:`~mixedmodels.objective.model_objective.LinearMixedObjective`), whose
        parameters include the residual structure's (e.g. varIdent's SD ratios): then
        ``varpar`` is ``(theta, residual parameters, sigma)``.
    theta, sigma
        The optimum (``theta``: all of the objective's parameters).
    reml
        REML or ML likelihood (default: the deviance function's flag).
    levels
        Number of steps (each half the previous) in the Richardson tableau.
    method
        ``"analytic"``: exact first derivatives from the factor at the optimum and a
        Hessian from differences of the exact gradient (:func:`_analytic_covariance`,
        ``2k + 1`` factorisations); ``"numerical"``: numDeriv's Richardson tableau of
        deviance values (``~2k(k + 1) levels`` factorisations); ``"auto"`` (default): the
        analytic one where it applies (a blocked factor, no residual-structure parameters,
        every template invertible), else the numerical one.

    Returns
    -------
    VarparCovariance

    Notes
    -----
    With ``a(theta) = log|L_Z|^2 (+ log|R_X|^2)``, ``c = n (- p)``,
    ``d = a(theta) + r^2(theta)/sigma^2 + c log(2 pi sigma^2)``, so

        d2d/dtheta2       = a'' + (r^2)'' / sigma^2       (numerical)
        d2d/dtheta dsigma = -2 (r^2)' / sigma^3           (numerical gradient)
        d2d/dsigma2       = 6 r^2 / sigma^4 - 2 c / sigma^2,

    and ``dV/dsigma = 2 sigma (R_X'R_X)^{-1}``, ``dV/dtheta = sigma^2 d(R_X'R_X)^{-1}/dtheta``.
    The first step is ``numDeriv::hessian``'s (0.1 |theta_i|, or 1e-4 at zero); lmerTest
    (Kuznetsova et al. 2017, sec. 3.1) differentiates numerically too.
    """
    reml = dev.reml if reml is None else bool(reml)
    theta = np.asarray(theta, dtype=np.float64)
    k = theta.size
    sigma = float(sigma)
    s2 = sigma * sigma
    if method not in ("auto", "analytic", "numerical"):
        raise ValueError(f"unknown method {method!r}; use 'auto', 'analytic' or 'numerical'")
    blocked = None if method == "numerical" else _analytic_ready(dev, theta)
    if method == "analytic" and blocked is None:
        raise ValueError(
            "the analytic derivatives need a blocked system, theta as the only parameters "
            "and invertible templates; use method='numerical'"
        )
    if blocked is not None:
        H, jac, s0, _ = _analytic_covariance(blocked, theta, sigma, reml, _GRADIENT_STEP)
        return _covariance(H, jac, theta, sigma, s2 * s0.xtvinvx_inv)
    n, p = _sizes(dev, theta)
    c = n - p if reml else n
    cache: dict[bytes, _ThetaState] = {}
    state_at = _state_function(dev, reml)

    def at(t: np.ndarray) -> _ThetaState:
        key = t.tobytes()
        if key not in cache:
            cache[key] = state_at(t)
        return cache[key]

    def g(st: _ThetaState) -> float:  # the theta-dependent part of d at fixed sigma
        return st.logdet + st.pwrss / s2

    s0 = at(theta)
    h0 = _base_steps(theta)
    H = np.zeros((k + 1, k + 1))
    grad_r2 = np.zeros(k)
    p = s0.xtvinvx_inv.shape[0]
    jac = np.zeros((k + 1, p, p))
    for i in range(k):
        diag_est, grad_est, jac_est = [], [], []
        for lev in range(levels):
            h = h0[i] / 2.0**lev
            e = np.zeros(k)
            e[i] = h
            sp, sm = at(theta + e), at(theta - e)
            diag_est.append((g(sp) - 2.0 * g(s0) + g(sm)) / (h * h))
            grad_est.append((sp.pwrss - sm.pwrss) / (2.0 * h))
            jac_est.append((sp.xtvinvx_inv - sm.xtvinvx_inv) / (2.0 * h))
        H[i, i] = _richardson(diag_est)
        grad_r2[i] = _richardson(grad_est)
        jac[i] = s2 * _richardson(jac_est)
        for j in range(i):
            est = []
            for lev in range(levels):
                hi, hj = h0[i] / 2.0**lev, h0[j] / 2.0**lev
                ei = np.zeros(k)
                ej = np.zeros(k)
                ei[i], ej[j] = hi, hj
                num = (
                    g(at(theta + ei + ej))
                    - g(at(theta + ei - ej))
                    - g(at(theta - ei + ej))
                    + g(at(theta - ei - ej))
                )
                est.append(num / (4.0 * hi * hj))
            H[i, j] = H[j, i] = _richardson(est)
    H[:k, k] = H[k, :k] = -2.0 * grad_r2 / sigma**3
    H[k, k] = 6.0 * s0.pwrss / s2**2 - 2.0 * c / s2
    jac[k] = 2.0 * sigma * s0.xtvinvx_inv
    return _covariance(H, jac, theta, sigma, s2 * s0.xtvinvx_inv)


def _covariance(
    H: np.ndarray, jac: np.ndarray, theta: np.ndarray, sigma: float, vcov_beta: np.ndarray
) -> VarparCovariance:
    """``A = 2 H^+`` over the eigenvalues above ``HESSIAN_TOL`` (lmerTest), packed."""
    evals, evecs = np.linalg.eigh(H)
    pos = evals > HESSIAN_TOL
    Hinv = (evecs[:, pos] / evals[pos]) @ evecs[:, pos].T
    return VarparCovariance(
        varpar=np.concatenate([theta, [sigma]]),
        hessian=H,
        vcov_varpar=2.0 * Hinv,
        jacobian=jac,
        vcov_beta=vcov_beta,
        nonpositive_eigenvalues=evals[~pos],
    )


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def varpar_covariance_of(fit: LinearMixedModelResult) -> VarparCovariance:
    """:func:`varpar_covariance` at a fit's optimum, computed once per fit and cached."""
    out = _CACHE.get(fit)
    if out is None:
        # many small solves: one BLAS thread unless the rest block is large (the fit's rule)
        rest = sum(t.nranef for t in fit.structure.terms[1:])
        with blas_threads_for(rest):
            out = varpar_covariance(
                # the engine's sigma, to which theta is relative (a variance function's centred
                # covariate makes it differ from the reported fit.sigma)
                fit.objective_function,
                fit.opt.final_theta,
                fit.estimates.sigma,
                reml=fit.reml,
            )
        _CACHE[fit] = out
    return out


def satterthwaite_df(fit: LinearMixedModelResult, L: np.ndarray) -> np.ndarray:
    """Return Satterthwaite's df of each row of ``L`` taken as a single contrast.

    Parameters
    ----------
    fit
        A fitted linear mixed model (REML or ML).
    L
        ``(p,)`` or ``(m, p)`` contrast(s).

    Returns
    -------
    numpy.ndarray
        ``(m,)`` degrees of freedom ``2 (l'Vl)^2 / (g'Ag)``.

    Notes
    -----
    Kuznetsova et al. (2017), JSS 82(13), eq. (6); Satterthwaite (1946).

    Examples
    --------
    >>> satterthwaite_df(fit, [0, 1])  # doctest: +SKIP
    array([17.])
    """
    refuse_generalized(
        fit, "Satterthwaite degrees of freedom", "GLMM tests are z tests: fit.coef_table()"
    )
    info = varpar_covariance_of(fit)
    L = np.atleast_2d(np.asarray(L, dtype=np.float64))
    var = np.einsum("ma,ab,mb->m", L, info.vcov_beta, L)
    grad = np.einsum("ma,kab,mb->mk", L, info.jacobian, L)
    denom = np.einsum("mk,kl,ml->m", grad, info.vcov_varpar, grad)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 * var**2 / denom


def f_test_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """Denominator df of an F statistic that averages ``q`` independent squared t statistics.

    ``E = sum nu_m / (nu_m - 2)``; ``ddf = 2 E / (E - q)``; 2 if any ``nu_m <= 2``; the mean
    if all ``nu_m`` agree to ``tol`` (Fai & Cornelius 1996, J. Stat. Comput. Simul. 54;
    lmerTest's ``get_Fstat_ddf``).
    """
    nu = np.asarray(nu, dtype=np.float64)
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2.0)))
    return 2.0 * E / (E - nu.size)


@dataclass(frozen=True)
class FTest:
    """An F test of ``L beta = rhs``: lmerTest's ``contestMD`` table row."""

    sum_sq: float
    mean_sq: float
    num_df: int
    den_df: float
    F: float
    p: float


def satterthwaite_f_test(
    fit: LinearMixedModelResult,
    L: np.ndarray,
    rhs: np.ndarray | float = 0.0,
    *,
    eps: float = float(np.sqrt(np.finfo(float).eps)),
) -> FTest:
    """Multi-degree-of-freedom F test of ``L beta = rhs`` with Satterthwaite's ddf.

    Parameters
    ----------
    fit
        A fitted model.
    L
        ``(m, p)`` hypothesis matrix; may be row-rank deficient (NumDF = its rank).
    rhs
        Right-hand side (``m``,), default 0.
    eps
        Relative tolerance on the eigenvalues of ``L V L'`` that decides the rank.

    Notes
    -----
    ``L V L' = P D P'``; the ``q`` positive eigen-directions give independent t statistics
    ``t_m = p_m'(L beta - rhs) / sqrt(d_m)`` with Satterthwaite df ``nu_m``;
    ``F = sum t_m^2 / q`` and the ddf combine the ``nu_m`` as in :func:`f_test_ddf`
    (Fai & Cornelius 1996; Kuznetsova et al. 2017, sec. 3.2). ``MeanSq = F sigma^2``.
    """
    from .distributions import f_sf

    info = varpar_covariance_of(fit)
    L = np.atleast_2d(np.asarray(L, dtype=np.float64))
    beta = fit.estimates.beta
    rhs_v = np.broadcast_to(np.asarray(rhs, dtype=np.float64), (L.shape[0],))
    VL = L @ info.vcov_beta @ L.T
    d, P = np.linalg.eigh(VL)
    d, P = d[::-1], P[:, ::-1]
    tol = max(eps * d[0], 0.0) if d.size else 0.0
    pos = d > tol
    q = int(pos.sum())
    if q == 0:
        nan = float("nan")
        return FTest(nan, nan, 0, nan, nan, nan)
    PtL = P[:, pos].T @ L
    est = P[:, pos].T @ (L @ beta - rhs_v)
    t2 = est**2 / d[pos]
    Fval = float(np.sum(t2) / q)
    nu = satterthwaite_df(fit, PtL)
    ddf = f_test_ddf(nu)
    s2 = fit.sigma**2
    ms = Fval * s2
    return FTest(ms * q, ms, q, ddf, Fval, float(f_sf(Fval, q, ddf)))
