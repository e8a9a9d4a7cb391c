"""Estimates at the optimum: fixed effects, conditional modes and their variances.

With the blocked factor ``L`` at theta-hat (see :mod:`.blocked`):

* ``R_X beta = r_Xy`` gives beta-hat; ``Var(beta) = sigma^2 (R_X' R_X)^{-1}``;
* ``L_Z' u = c_u - L_XZ' beta`` gives the conditional modes ``u``; ``b = Lambda u``;
* ``Var(u | y) = sigma^2 (L_Z L_Z')^{-1}`` (conditional on beta, as lme4's ``condVar``),
  whose diagonal blocks are formed without the dense q x q inverse. For term 1 they are
  ``M_l^{-1} + M_l^{-1} T1' C_l' Lambda_r S^{-1} Lambda_r' C_l T1 M_l^{-1}`` (block
  inversion of ``L_Z L_Z'``; ``C = Zr'Z1``, ``S = L22 L22'``); on large models only the
  entries of ``S^{-1}`` at the positions of the rank-update pattern are read, so no
  ``q_r x q1`` matrix is formed.

(Bates et al. 2015, JSS 67(1), sec. 3.4-3.6.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.linalg.lapack import dpotri as _dpotri

from mixedmodels.linalg.blocked import BlockedFactor, BlockedSystem


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

    def __post_init__(self) -> None:
        # Results hand these out; read-only views keep the estimates as computed.
        # (Written out: a small fit builds one of these, where loops over getattr would
        # cost more than the views.)
        fields = self.__dict__
        fields["beta"] = _read_only(self.beta)
        fields["vcov_beta"] = _read_only(self.vcov_beta)
        fields["b"] = tuple([_read_only(a) for a in self.b])
        fields["u"] = tuple([_read_only(a) for a in self.u])


def _read_only(a: np.ndarray) -> np.ndarray:
    view = np.asarray(a).view()
    view.setflags(write=False)
    return view


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


def rest_lambda_sparse(dev: BlockedSystem, templates: list[np.ndarray]) -> sp.csr_matrix:
    """Lambda restricted to the rest block (terms 2..K), sparse block diagonal."""
    mats = []
    for k, term in enumerate(dev.structure.terms[1:], start=1):
        T = templates[k]
        mats.append(block_diagonal_sparse(np.broadcast_to(T, (term.nlevels, *T.shape))))
    return sp.block_diag(mats, format="csr")


def estimate(dev: BlockedSystem, f: BlockedFactor, reml: bool) -> Estimates:
    """Fixed effects, sigma and conditional modes from the factor at the optimum.

    ``sigma^2 = r^2 / (n - p)`` for REML, ``r^2 / n`` for ML (Bates et al. 2015, eq. 33).
    """
    p = dev.p
    n = dev.n
    LXX = f.LXX
    Rt = LXX[:p, :p]  # R_X' (lower)
    beta = sla.solve_triangular(Rt, LXX[p, :p], lower=True, trans="T") if p else np.zeros(0)
    sigma2 = f.pwrss / (n - p if reml else n)
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
        u2 = solve_l22_transposed(f, v2)
        offs = dev.rest_offsets
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


def solve_l22_transposed(f: BlockedFactor, v: np.ndarray) -> np.ndarray:
    """``L22^{-T} v`` (``v``: a vector or a matrix) without copying ``L22``.

    ``L22`` is a strided view into the factor of the rest + [X y] block, which LAPACK
    would copy (800 MB for 10,000 rest levels). With ``L = [[L22, 0], [LX2, LXX]]``,
    ``L' [z; 0] = [v; 0]`` gives ``z = L22^{-T} v``, and ``L.T`` is Fortran-ordered.
    """
    if f.L is None:
        return sla.solve_triangular(f.L22, v, lower=True, trans="T", check_finite=False)
    qr = f.L22.shape[0]
    rhs = np.zeros((f.L.shape[0], *v.shape[1:]))
    rhs[:qr] = v
    return sla.solve_triangular(f.L.T, rhs, lower=False, check_finite=False)[:qr]


def rest_inverse_lower(f: BlockedFactor) -> np.ndarray:
    """``S^{-1} = (L22 L22')^{-1}`` in the lower triangle of a new C-ordered array.

    One ``q_r x q_r`` array (LAPACK's potri works in place on it); the strict upper
    triangle holds zeros. Read entry ``(i, j)`` at ``[max(i, j), min(i, j)]``.
    """
    if f.L22 is None:
        raise ValueError("no rest block: the model has one random-effects term")
    out = np.empty(f.L22.shape)
    np.copyto(out, f.L22)
    # out.T is Fortran-ordered with L22' in its upper triangle: potri overwrites it with
    # the upper triangle of (L22 L22')^{-1}, i.e. the lower triangle of ``out``.
    _, info = _dpotri(out.T, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError("the rest block of the factor is singular")
    return out


def rest_inverse_in_place(dev: BlockedSystem, f: BlockedFactor) -> np.ndarray:
    """``S^{-1} = (L22 L22')^{-1}`` computed in the storage of ``f`` (which it destroys).

    For a caller that needs ``S^{-1}`` once and the factor no more (a gradient at a trial
    point): no second ``q_r x q_r`` array, where :func:`rest_inverse_lower` needs one
    (800 MB more for 10,000 rest levels). ``f`` must come from ``dev.factor`` and must not
    be used afterwards; ``dev`` is told to forget it.

    LAPACK's potri inverts the whole factored block ``Omega = L L'`` (rest and [X y]) in
    place; the inverse of its leading block follows from the blocks of ``V = Omega^{-1}``:
    ``S^{-1} = V11 - V12 V22^{-1} V21``, where ``V22^{-1}`` is the Schur complement of ``S``
    in ``Omega``, i.e. ``LXX LXX'``: a rank-(p+1) correction ``(V12 LXX)(V12 LXX)'``.

    Returns
    -------
    numpy.ndarray
        A view of ``f.L``: ``S^{-1}`` in its lower triangle (upper triangle undefined).
    """
    if f.L is None or f.L22 is None:
        raise ValueError("needs the whole factor of a model with a rest block")
    dev.release(f)
    L, qr = f.L, f.L22.shape[0]
    LXX = np.tril(f.LXX)  # a copy: the storage is overwritten next
    _, info = _dpotri(L.T, lower=0, overwrite_c=1)  # L.T: Fortran-ordered, upper = L'
    if info != 0:
        raise np.linalg.LinAlgError("the factor is singular")
    G = L[qr:, :qr].T @ LXX  # V12 LXX, (q_r, p + 1)
    for r0 in range(0, qr, 256):
        r1 = min(r0 + 256, qr)
        L[r0:r1, :r1] -= G[r0:r1] @ G[:r1].T
    return L[:qr, :qr]


def _symmetrize_lower_inplace(M: np.ndarray, block: int = 256) -> None:
    """Copy the lower triangle of square ``M`` onto its upper one, in slices."""
    n = M.shape[0]
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        M[i0:i1, i1:] = M[i1:, i0:i1].T
        d = M[i0:i1, i0:i1]
        d[...] = np.tril(d) + np.tril(d, -1).T


def _lambda_sandwich_inplace(dev: BlockedSystem, M: np.ndarray, templates) -> None:
    """``M <- Lambda_r M Lambda_r'`` in place for a symmetric ``q_r x q_r`` ``M``, in slices."""
    offs = dev.rest_offsets
    terms = dev.structure.terms[1:]

    def right(rows: np.ndarray) -> None:  # rows <- rows @ Lambda_r'
        for k, term in enumerate(terms, start=1):
            s, e = offs[k - 1], offs[k]
            blk = rows[:, s:e].reshape(rows.shape[0], term.nlevels, term.ncols)
            rows[:, s:e] = (blk @ templates[k].T).reshape(rows.shape[0], e - s)

    qr = M.shape[0]
    for r0 in range(0, qr, 256):
        right(M[r0 : r0 + 256])
    # Then M <- Lambda_r M, column slice by column slice: Lambda_r c = (c' Lambda_r')'.
    for c0 in range(0, qr, 256):
        cols = M[:, c0 : c0 + 256]
        t = np.ascontiguousarray(cols.T)
        right(t)
        cols[...] = t.T


def _conditional_variances_pattern(
    dev: BlockedSystem, f: BlockedFactor, s2: float
) -> list[np.ndarray]:
    """:func:`conditional_variances` for large models: ``S^{-1}`` read at pattern positions.

    With ``C = Zr'Z1`` and ``Sigma = Lambda_r S^{-1} Lambda_r'``, the term-1 blocks need
    ``K_l = C_l' Sigma C_l``, a sum over the pairs of rest rows sharing level ``l`` of term
    1: exactly the entries of the rank-update pattern ``P`` (pairs ``i >= j``), so
    ``K[l, a, b] = (P' sigma)[l, a, b] + (P' sigma_off)[l, b, a]`` with ``sigma`` the
    entries of ``Sigma`` at the pattern's positions and ``sigma_off`` those off the
    diagonal. Memory: one ``q_r x q_r`` array (the inverse), no ``q_r x q1`` one.
    """
    terms = dev.structure.terms
    T1 = f.templates[0]
    pat = dev.pattern
    Sinv = rest_inverse_lower(f)  # lower triangle valid
    offs = dev.rest_offsets
    # Rest terms: diagonal blocks of S^{-1} (before Sinv is transformed below).
    out_rest: list[np.ndarray] = []
    for k, term in enumerate(terms[1:], start=1):
        s, nc = int(offs[k - 1]), term.ncols
        idx = s + np.arange(term.nlevels) * nc  # first row of each level's block
        vu = np.empty((term.nlevels, nc, nc))
        for a in range(nc):
            for b in range(a + 1):
                vu[:, a, b] = vu[:, b, a] = Sinv[idx + a, idx + b]
        T = f.templates[k]
        out_rest.append(s2 * (T[None] @ vu @ T.T[None]))
    rows, cols = pat.rows, pat.cols
    if all(t.ncols == 1 for t in terms[1:]):
        d = np.concatenate(
            [np.full(t.nlevels, f.templates[k][0, 0]) for k, t in enumerate(terms[1:], 1)]
        )
        sigma = Sinv[rows, cols] * d[rows] * d[cols]
    else:
        _symmetrize_lower_inplace(Sinv)
        _lambda_sandwich_inplace(dev, Sinv, f.templates)
        sigma = Sinv[rows, cols]
    del Sinv
    K = pat.level_forms(sigma)
    TM = T1[None] @ f.M11inv  # T1 M_l^{-1}
    var_u1 = f.M11inv + np.swapaxes(TM, 1, 2) @ K @ TM
    first = s2 * (T1[None] @ var_u1 @ T1.T[None])
    return [first, *out_rest]


def conditional_variances(dev: BlockedSystem, f: BlockedFactor, sigma: float) -> list[np.ndarray]:
    """Diagonal blocks of Var(b | y), one (levels, p, p) array per grouped term.

    Top-left: ``M_l^{-1} + G_l' G_l`` with ``G = L22^{-1} Lambda_r' A_r1 blockdiag(T1 M^{-1})``;
    rest: diagonal blocks of ``L22^{-T} L22^{-1}``; each mapped by ``T_k (.) T_k'`` and
    scaled by ``sigma^2``. Large models (those whose deviance uses the sparse rank-update
    pattern) read ``(L22 L22')^{-1}`` at the pattern's positions instead of forming ``G``
    (see :func:`_conditional_variances_pattern`).
    """
    terms = dev.structure.terms
    s2 = sigma * sigma
    if f.L22 is not None and dev.pattern is not None:
        return _conditional_variances_pattern(dev, f, s2)
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
        offs = dev.rest_offsets
        for k, term in enumerate(terms[1:], start=1):
            s, e = offs[k - 1], offs[k]
            C = Linv[:, s:e].reshape(qr, term.nlevels, term.ncols)
            vu = np.einsum("rla,rlb->lab", C, C)
            T = f.templates[k]
            out_rest.append(s2 * (T[None] @ vu @ T.T[None]))
    first = s2 * (T1[None] @ var_u1 @ T1.T[None])
    return [first, *out_rest]
