"""Estimates at the optimum: fixed effects, conditional modes and their variances.

With the blocked factor ``L`` at theta-hat (see :mod:`.deviance`):

* ``R_X beta = r_Xy`` gives beta-hat; ``Var(beta) = sigma^2 (R_X' R_X)^{-1}``;
* ``L_Z' u = c_u - L_XZ' beta`` gives the conditional modes ``u``; ``b = Lambda u``;
* ``Var(u | y) = sigma^2 (L_Z L_Z')^{-1}`` (conditional on beta, as lme4's ``condVar``),
  whose diagonal blocks are formed without the dense q x q inverse.

(Bates et al. 2015, JSS 67(1), sec. 3.4-3.6.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .deviance import BlockedFactor, ProfiledDeviance


@dataclass(frozen=True, eq=False)
class Estimates:
    """Point estimates at theta-hat.

    Attributes
    ----------
    beta
        (p,) fixed effects.
    sigma
        Residual standard deviation.
    vcov_beta
        (p, p) covariance matrix of beta-hat.
    b
        Conditional modes per grouped term, each (levels, ncols).
    u
        Spherical conditional modes per grouped term, each (levels, ncols).
    """

    beta: np.ndarray
    sigma: float
    vcov_beta: np.ndarray
    b: tuple[np.ndarray, ...]
    u: tuple[np.ndarray, ...]


def _lambda_blocks(u: np.ndarray, T: np.ndarray, nlevels: int) -> np.ndarray:
    """``b_l = T u_l`` for every level: (levels, p)."""
    return u.reshape(nlevels, T.shape[0]) @ T.T


def block_diagonal_sparse(blocks: np.ndarray) -> sp.csr_matrix:
    """Sparse block-diagonal matrix from a stack (l, p, p)."""
    l, p, _ = blocks.shape
    base = (np.arange(l) * p)[:, None, None]
    rows = np.broadcast_to(base + np.arange(p)[None, :, None], blocks.shape)
    cols = np.broadcast_to(base + np.arange(p)[None, None, :], blocks.shape)
    return sp.csr_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(l * p, l * p))


def rest_lambda_sparse(dev: ProfiledDeviance, templates: list[np.ndarray]) -> sp.csr_matrix:
    """Lambda restricted to the rest block (terms 2..K), sparse block diagonal."""
    mats = []
    for k, term in enumerate(dev.structure.terms[1:], start=1):
        T = templates[k]
        mats.append(block_diagonal_sparse(np.broadcast_to(T, (term.nlevels, *T.shape))))
    return sp.block_diag(mats, format="csr")


def estimate(dev: ProfiledDeviance, f: BlockedFactor) -> Estimates:
    """Fixed effects, sigma and conditional modes from the factor at the optimum."""
    p = dev.p
    n = dev.n
    LXX = f.LXX
    Rt = LXX[:p, :p]  # R_X' (lower)
    beta = sla.solve_triangular(Rt, LXX[p, :p], lower=True, trans="T") if p else np.zeros(0)
    sigma2 = f.pwrss / (n - p if dev.reml else n)
    if p:
        Rinv = sla.solve_triangular(Rt, np.eye(p), lower=True)  # (R_X')^{-1}
        vcov = sigma2 * (Rinv.T @ Rinv)
    else:
        vcov = np.zeros((0, 0))

    terms = dev.structure.terms
    T1 = f.templates[0]
    t1 = terms[0]
    A = dev.A
    # L_X1 = A_X1 Lambda1 L11^{-T}, as (l1, p1, p+1).
    Q = np.einsum("cla,ab->lbc", A.xytz1, T1)
    LX1 = np.linalg.solve(f.L11, Q) if t1.ncols > 1 else Q / f.L11
    coef = np.concatenate([-beta, [1.0]])
    v1 = LX1 @ coef  # (l1, p1): y row minus X rows times beta
    us: list[np.ndarray] = []
    rest_b: list[np.ndarray] = []
    if f.L22 is not None:
        v2 = coef @ f.LX2
        u2 = sla.solve_triangular(f.L22, v2, lower=True, trans="T", check_finite=False)
        offs = dev._rest_offsets
        b2 = np.empty_like(u2)
        for k, term in enumerate(terms[1:], start=1):
            s, e = offs[k - 1], offs[k]
            b2[s:e] = _lambda_blocks(u2[s:e], f.templates[k], term.nlevels).ravel()
            us.append(u2[s:e].reshape(term.nlevels, term.ncols))
            rest_b.append(b2[s:e].reshape(term.nlevels, term.ncols))
        # Remove the rest block's contribution: v1 -= L21' u2 = L11^{-1} T1' (A_1r b2).
        w = (A.zrtz1.T @ b2).reshape(t1.nlevels, t1.ncols) @ T1  # rows: (T1' w_l)'
        if t1.ncols > 1:
            v1 = v1 - np.linalg.solve(f.L11, w[:, :, None])[:, :, 0]
        else:
            v1 = v1 - w / f.L11[:, :, 0]
    if t1.ncols > 1:
        u1 = np.linalg.solve(np.swapaxes(f.L11, 1, 2), v1[:, :, None])[:, :, 0]
    else:
        u1 = v1 / f.L11[:, :, 0]
    b1 = u1 @ T1.T
    return Estimates(
        beta=beta,
        sigma=float(np.sqrt(sigma2)),
        vcov_beta=vcov,
        b=(b1, *rest_b),
        u=(u1, *us),
    )


def conditional_variances(
    dev: ProfiledDeviance, f: BlockedFactor, sigma: float
) -> list[np.ndarray]:
    """Diagonal blocks of Var(b | y), one (levels, p, p) array per grouped term.

    Top-left: ``M_l^{-1} + G_l' G_l`` with ``G = L22^{-1} Lambda_r' A_r1 blockdiag(T1 M^{-1})``;
    rest: diagonal blocks of ``L22^{-T} L22^{-1}``; each mapped by ``T_k (.) T_k'`` and
    scaled by ``sigma^2``.
    """
    terms = dev.structure.terms
    s2 = sigma * sigma
    T1 = f.templates[0]
    var_u1 = f.M11inv.copy()
    out_rest: list[np.ndarray] = []
    if f.L22 is not None:
        qr = f.L22.shape[0]
        Linv = sla.solve_triangular(f.L22, np.eye(qr), lower=True, check_finite=False)
        BD = block_diagonal_sparse(T1[None] @ f.M11inv)
        H = rest_lambda_sparse(dev, f.templates).T @ (dev.A.zrtz1 @ BD)
        G = (H.T @ Linv.T).T  # (qr, q1) dense
        t1 = terms[0]
        G3 = G.reshape(qr, t1.nlevels, t1.ncols)
        var_u1 = var_u1 + np.einsum("rla,rlb->lab", G3, G3)
        offs = dev._rest_offsets
        for k, term in enumerate(terms[1:], start=1):
            s, e = offs[k - 1], offs[k]
            C = Linv[:, s:e].reshape(qr, term.nlevels, term.ncols)
            vu = np.einsum("rla,rlb->lab", C, C)
            T = f.templates[k]
            out_rest.append(s2 * (T[None] @ vu @ T.T[None]))
    first = s2 * (T1[None] @ var_u1 @ T1.T[None])
    return [first, *out_rest]
