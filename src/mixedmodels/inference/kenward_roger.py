"""Kenward-Roger adjusted covariance of beta-hat, denominator df and F scaling.

Kenward & Roger (1997), Biometrics 53(3), 983-997, as implemented in pbkrtest (Halekoh &
Hojsgaard 2014, JSS 59(9)): the marginal covariance is linear in the parameters
``gamma = (unique elements of each G_k, sigma^2)``,

    Sigma = sum_r gamma_r G_r,   G_r = Z_k (I_{levels} (x) E_r) Z_k'  (E_r: one symmetric
                                                                      unit pattern),
                                 G_{last} = I_n,

so the second derivatives of Sigma vanish and

    P_r = -X' Sigma^{-1} G_r Sigma^{-1} X,
    Q_rs = X' Sigma^{-1} G_r Sigma^{-1} G_s Sigma^{-1} X,
    I_rs = 1/2 [tr(Sigma^{-1} G_r Sigma^{-1} G_s) - 2 tr(Phi Q_rs) + tr(Phi P_r Phi P_s)],
    W = I^{-1},
    Phi_A = Phi + 2 Phi [sum_rs W_rs (Q_rs - P_r Phi P_s)] Phi,

with ``Phi = (X' Sigma^{-1} X)^{-1}`` (Kenward & Roger 1997, eqs. 2-5; the ``R_rs`` terms
are zero for this linear structure).

Every product with ``Sigma^{-1}`` goes through the Woodbury identity
``Sigma^{-1} = sigma^{-2} (I - Z W Z')``, ``W = Lambda (Lambda' Z'Z Lambda + I)^{-1}
Lambda'``, using only the cross products Z'Z, Z'X and X'X of
:mod:`mixedmodels.linalg.cross_products`: the largest matrix is q x q (q = number of
random effects), never n x n. Lambda may be singular (boundary fits).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from ..errors import ModelSpecificationError, refuse_generalized, refuse_repeated
from .distributions import f_sf

if TYPE_CHECKING:  # pragma: no cover
    from ..results import LinearMixedModelResult


@dataclass(frozen=True, eq=False)
class KenwardRogerCovariance:
    """The Kenward-Roger pieces of one fit (pbkrtest's ``vcovAdj`` and its attributes).

    Attributes
    ----------
    vcov_beta
        ``Phi``, the unadjusted covariance of beta-hat.
    vcov_beta_adjusted
        ``Phi_A``.
    P
        ``(m, p, p)`` the matrices ``P_r``.
    W
        ``(m, m)`` inverse expected information of the covariance parameters ``gamma``.
    gamma
        The covariance parameters (variances/covariances of each term, then sigma^2).
    gamma_names
        Their names.
    """

    vcov_beta: np.ndarray
    vcov_beta_adjusted: np.ndarray
    P: np.ndarray
    W: np.ndarray
    gamma: np.ndarray
    gamma_names: tuple[str, ...]


def _dense_cross_products(fit: LinearMixedModelResult):
    """Z'Z (q x q), Z'X (q x p) and X'X (p x p) as dense arrays, engine order of random effects."""
    A = fit.model.cross_products
    p = fit.deviance_function.p
    t1 = fit.structure.terms[0]
    q1 = t1.nranef
    p1 = t1.ncols
    qr = 0 if A.zrtzr is None else A.zrtzr.shape[0]
    q = q1 + qr
    C = np.zeros((q, q))
    for lev in range(t1.nlevels):
        s = lev * p1
        C[s : s + p1, s : s + p1] = A.z1tz1[lev]
    ZtX = np.empty((q, p))
    ZtX[:q1] = A.xytz1[:p].reshape(p, q1).T
    if qr:
        R1 = A.zrtz1.toarray()
        C[q1:, :q1] = R1
        C[:q1, q1:] = R1.T
        # Zr'Zr is sparse above linalg.cross_products.SPARSE_REST_MIN rest rows.
        C[q1:, q1:] = A.zrtzr.toarray() if sp.issparse(A.zrtzr) else A.zrtzr
        ZtX[q1:] = A.xytzr[:p].T
    XtX = A.xytxy[:p, :p]
    return C, ZtX, XtX


def _lambda_dense(fit: LinearMixedModelResult) -> np.ndarray:
    """Lambda (q x q), block diagonal with the template of each term repeated per level."""
    blocks = []
    for T, term in zip(fit.factor.templates, fit.structure.terms, strict=True):
        blocks.append(np.kron(np.eye(term.nlevels), T))
    return sla.block_diag(*blocks)


def _parameter_patterns(fit: LinearMixedModelResult):
    """For each covariance parameter of a term: (index rows a, index cols b, name).

    ``D_r = sum e_a e_b'`` over the returned pairs (both orientations for covariances).
    """
    out = []
    offset = 0
    for k, term in enumerate(fit.structure.terms):
        rows, cols = fit.structure.rows[k], fit.structure.cols[k]
        base = offset + np.arange(term.nlevels) * term.ncols
        for i, j in zip(rows, cols, strict=True):
            if i == j:
                a, b = base + i, base + i
                name = f"{term.group}.var({term.column_names[i]})"
            else:
                a = np.concatenate([base + i, base + j])
                b = np.concatenate([base + j, base + i])
                name = f"{term.group}.cov({term.column_names[j]},{term.column_names[i]})"
            out.append((a, b, name))
        offset += term.nranef
    return out


def kenward_roger_covariance(fit: LinearMixedModelResult) -> KenwardRogerCovariance:
    """Compute Kenward & Roger's adjusted covariance of beta-hat (pbkrtest's ``vcovAdj``).

    Parameters
    ----------
    fit
        A REML fit.

    Returns
    -------
    KenwardRogerCovariance

    Raises
    ------
    ModelSpecificationError
        For ML fits (the method is defined for REML), and for fits with residual variances
        by group (only one residual variance is handled; prior weights are: KR is
        invariant to the known rescaling of rows that weights are).

    Notes
    -----
    See the module docstring for the equations (Kenward & Roger 1997; Halekoh &
    Hojsgaard 2014). Cost: O(q^3 + m^2 q^2) with ``m`` covariance parameters.

    Examples
    --------
    >>> kr = kenward_roger_covariance(fit)   # doctest: +SKIP
    >>> np.sqrt(np.diag(kr.vcov_beta_adjusted))  # doctest: +SKIP
    """
    refuse_repeated(
        fit,
        "Kenward-Roger df",
        "use ddf='satterthwaite', which accounts for the residual structure's parameters",
    )
    if getattr(fit, "residual_strata", None) is not None:
        raise ModelSpecificationError(
            "Kenward-Roger df are not available for fits with residual variances by group "
            "(residual_groups=); use ddf='satterthwaite', which accounts for the SD ratios"
        )
    if not fit.reml:
        raise ModelSpecificationError(
            "the Kenward-Roger method is defined for REML fits only; refit with reml=True "
            "or use ddf='satterthwaite'"
        )
    C, ZtX, XtX = _dense_cross_products(fit)
    n = fit.deviance_function.n
    q = C.shape[0]
    Lam = _lambda_dense(fit)
    s2 = fit.sigma**2
    # W = Lambda (Lambda' C Lambda + I)^{-1} Lambda'
    M = Lam.T @ C @ Lam
    M[np.diag_indices_from(M)] += 1.0
    cf = sla.cho_factor(M, lower=True, check_finite=False)
    W = Lam @ sla.cho_solve(cf, Lam.T, check_finite=False)
    W = 0.5 * (W + W.T)
    WC = W @ C
    F = W @ ZtX  # Sigma^{-1} X = (X - Z F) / s2
    B = (ZtX - C @ F) / s2  # Z' Sigma^{-1} X
    S = (C - C @ WC) / s2  # Z' Sigma^{-1} Z
    S = 0.5 * (S + S.T)
    XtSiX = (XtX - ZtX.T @ F) / s2
    K = np.eye(q) - WC  # Sigma^{-1} Z = Z K / s2
    ZtS2X = (B - S @ F) / s2  # Z' Sigma^{-2} X
    ZtS2Z = K.T @ C @ K / s2**2  # Z' Sigma^{-2} Z
    XtS2X = (XtX - F.T @ ZtX - ZtX.T @ F + F.T @ C @ F) / s2**2
    XtS3X = (XtSiX - F.T @ B - B.T @ F + F.T @ S @ F) / s2**2
    tr_S2 = (n - 2.0 * np.trace(WC) + np.sum(WC * WC.T)) / s2**2

    Phi = fit.estimates.vcov_beta
    patterns = _parameter_patterns(fit)
    m = len(patterns) + 1
    p = Phi.shape[0]

    # D_r applied to B (rows) and to S, restricted to the rows D_r touches.
    DB = []
    DS = []
    for a, b, _ in patterns:
        Db = np.zeros((q, p))
        np.add.at(Db, a, B[b])
        DB.append(Db)
        Ds = np.zeros((q, q))
        np.add.at(Ds, a, S[b])
        DS.append(Ds)

    P = np.empty((m, p, p))
    for r in range(m - 1):
        P[r] = -(B.T @ DB[r])
    P[m - 1] = -XtS2X
    P = 0.5 * (P + np.swapaxes(P, 1, 2))

    Q = np.empty((m, m, p, p))
    Ktr = np.empty((m, m))
    for r in range(m - 1):
        for s in range(m - 1):
            Q[r, s] = DB[r].T @ S @ DB[s]
            Ktr[r, s] = np.sum(DS[r] * DS[s].T)
        Q[r, m - 1] = DB[r].T @ ZtS2X
        Q[m - 1, r] = Q[r, m - 1].T
        a, b, _ = patterns[r]
        Ktr[r, m - 1] = Ktr[m - 1, r] = float(np.sum(ZtS2Z[b, a]))
    Q[m - 1, m - 1] = XtS3X
    Ktr[m - 1, m - 1] = tr_S2

    IE2 = np.empty((m, m))
    for r in range(m):
        PhiPr = Phi @ P[r]
        for s in range(r, m):
            IE2[r, s] = IE2[s, r] = (
                Ktr[r, s] - 2.0 * np.sum(Phi * Q[r, s]) + np.sum(PhiPr * (P[s] @ Phi))
            )
    evals = np.linalg.eigvalsh(IE2)
    if np.min(np.abs(evals)) > 1e-10:
        Wm = 2.0 * np.linalg.inv(IE2)
    else:
        Wm = 2.0 * np.linalg.pinv(IE2)
    Wm = 0.5 * (Wm + Wm.T)

    U = np.zeros((p, p))
    for r in range(m):
        for s in range(m):
            U += Wm[r, s] * (Q[r, s] - P[r] @ Phi @ P[s])
    PhiA = Phi + 2.0 * Phi @ U @ Phi
    PhiA = 0.5 * (PhiA + PhiA.T)

    gvals = []
    for k, T in enumerate(fit.factor.templates):
        G = s2 * (T @ T.T)
        for i, j in zip(fit.structure.rows[k], fit.structure.cols[k], strict=True):
            gvals.append(G[i, j])
    gvals.append(s2)
    names = (*(nm for *_, nm in patterns), "residual.var")
    return KenwardRogerCovariance(Phi.copy(), PhiA, P, Wm, np.asarray(gvals), names)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def kenward_roger_covariance_of(fit: LinearMixedModelResult) -> KenwardRogerCovariance:
    """:func:`kenward_roger_covariance`, computed once per fit and cached."""
    refuse_generalized(fit, "Kenward-Roger", "GLMM tests are z tests: fit.coef_table()")
    out = _CACHE.get(fit)
    if out is None:
        out = kenward_roger_covariance(fit)
        _CACHE[fit] = out
    return out


@dataclass(frozen=True)
class KenwardRogerTest:
    """Kenward-Roger F test of ``L beta = rhs`` (pbkrtest's ``.KR_adjust``).

    Attributes
    ----------
    num_df, den_df
        ``q = rank(L)`` and the KR denominator df.
    F_unscaled
        ``(L b - rhs)' (L Phi_A L')^{-1} (L b - rhs) / q``.
    scaling
        Kenward-Roger's F scaling ``lambda``.
    F
        ``lambda F_unscaled``; ``p = P(F(q, ddf) > F)``.
    """

    num_df: int
    den_df: float
    F_unscaled: float
    scaling: float
    F: float
    p: float


def _full_row_rank(L: np.ndarray, Phi: np.ndarray, rhs: np.ndarray, eps: float):
    """Replace L by an orthonormal basis of its row space (if rank deficient)."""
    VL = L @ Phi @ L.T
    d, P = np.linalg.eigh(VL)
    d, P = d[::-1], P[:, ::-1]
    pos = d > max(eps * d[0], 0.0)
    if pos.all():
        return L, rhs
    return P[:, pos].T @ L, P[:, pos].T @ rhs


def _kr_terms(kr: KenwardRogerCovariance, L: np.ndarray):
    """pbkrtest's A1 and A2 for a full-row-rank L."""
    Phi = kr.vcov_beta
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    ThetaPhi = Theta @ Phi
    m = kr.P.shape[0]
    u = [ThetaPhi @ kr.P[r] @ Phi for r in range(m)]
    tr_u = np.array([np.trace(x) for x in u])
    A1 = float(tr_u @ kr.W @ tr_u)
    A2 = 0.0
    for r in range(m):
        for s in range(m):
            A2 += kr.W[r, s] * float(np.sum(u[r] * u[s].T))
    return A1, A2


def _kr_ddf_and_scaling(A1: float, A2: float, q: int) -> tuple[float, float]:
    """KR denominator df and F scaling from A1, A2 (Kenward & Roger 1997, sec. 4)."""
    B = (A1 + 6.0 * A2) / (2.0 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    denom = 3 * q + 2 * (1 - g)
    c1, c2, c3 = g / denom, (q - g) / denom, (q + 2 - g) / denom
    V0 = 1.0 + c1 * B
    V1 = 1.0 - c2 * B
    V2 = 1.0 - c3 * B
    if abs(V0) < 1e-10:
        V0 = 0.0
    ratio = 0.0 if abs(V1) < 1e-14 else (1.0 - A2 / q) / V1
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (ratio**2) * V0 / V2 / q
        ddf = 4.0 + (q + 2) / (q * rho - 1.0)
    scaling = 1.0 if abs(ddf - 2.0) < 1e-2 else ddf * (1.0 - A2 / q) / (ddf - 2.0)
    return float(ddf), float(scaling)


def kenward_roger_df(fit: LinearMixedModelResult, L: np.ndarray) -> np.ndarray:
    """Return the KR df of each row of ``L`` taken as a single contrast (pbkrtest ``Lb_ddf``).

    Examples
    --------
    >>> kenward_roger_df(fit, np.eye(2))  # doctest: +SKIP
    """
    kr = kenward_roger_covariance_of(fit)
    L = np.atleast_2d(np.asarray(L, dtype=np.float64))
    out = np.empty(L.shape[0])
    for i, row in enumerate(L):
        A1, A2 = _kr_terms(kr, row[None, :])
        out[i] = _kr_ddf_and_scaling(A1, A2, 1)[0]
    return out


def kenward_roger_f_test(
    fit: LinearMixedModelResult,
    L: np.ndarray,
    rhs: np.ndarray | float = 0.0,
    *,
    eps: float = float(np.sqrt(np.finfo(float).eps)),
) -> KenwardRogerTest:
    """Kenward-Roger F test of ``L beta = rhs``.

    Parameters
    ----------
    fit
        A REML fit.
    L
        ``(m, p)`` hypothesis matrix (rank-deficient rows are reduced first).
    rhs
        Right-hand side, default 0.

    Notes
    -----
    ``Theta = L'(L Phi L')^{-1} L``; ``A1 = sum W_rs tr(Theta Phi P_r Phi) tr(Theta Phi
    P_s Phi)``, ``A2 = sum W_rs tr(Theta Phi P_r Phi Theta Phi P_s Phi)``; then ``B, g,
    c1..c3, rho``, ``ddf = 4 + (q + 2)/(q rho - 1)`` and ``lambda = ddf (1 - A2/q) /
    (ddf - 2)`` (Kenward & Roger 1997, sec. 4; pbkrtest's ``.KR_adjust``).
    """
    kr = kenward_roger_covariance_of(fit)
    L = np.atleast_2d(np.asarray(L, dtype=np.float64))
    rhs_v = np.broadcast_to(np.asarray(rhs, dtype=np.float64), (L.shape[0],)).copy()
    L, rhs_v = _full_row_rank(L, kr.vcov_beta, rhs_v, eps)
    q = L.shape[0]
    A1, A2 = _kr_terms(kr, L)
    ddf, scaling = _kr_ddf_and_scaling(A1, A2, q)
    diff = L @ fit.estimates.beta - rhs_v
    wald = float(diff @ np.linalg.solve(L @ kr.vcov_beta_adjusted @ L.T, diff))
    FU = wald / q
    Fs = scaling * FU
    return KenwardRogerTest(q, ddf, FU, scaling, Fs, float(f_sf(Fs, q, ddf)))
