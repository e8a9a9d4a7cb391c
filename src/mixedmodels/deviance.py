"""The profiled deviance of a linear mixed model as a function of theta alone.

For given theta the blocked lower Cholesky factor ``L`` of

    [ Lambda'Z'Z Lambda + I   Lambda'Z'X   Lambda'Z'y ]
    [ X'Z Lambda              X'X          X'y        ]
    [ y'Z Lambda              y'X          y'y        ]

gives ``log|L_Z|^2``, ``R_X`` and ``r^2`` (the penalised residual sum of squares), and

    ML:   d(theta)   = log|L_Z|^2 + n (1 + log(2 pi r^2 / n))
    REML: d_R(theta) = log|L_Z|^2 + log|R_X|^2 + (n - p)(1 + log(2 pi r^2 / (n - p)))

(Bates, Maechler, Bolker & Walker 2015, JSS 67(1), eqs. 34 and 41.)

``L`` is computed block by block from the cross products of :mod:`.linalg.cross_products`:
term 1 is eliminated level by level (a batch of tiny Cholesky factors, in closed form for
1 x 1 and 2 x 2 blocks); the remaining terms with ``[X y]`` appended form one dense block,
updated through :class:`.linalg.rank_update.RankUpdatePattern` and factored by one LAPACK
call. With y as the last column, ``r`` is the last diagonal element of ``L``, so the
optimiser's evaluations need only the diagonal. No step touches the rows of the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.linalg.lapack import dpotrf as _dpotrf

from .covariance import CovarianceStructure
from .linalg.cross_products import CrossProducts, rest_offsets
from .linalg.rank_update import RankUpdatePattern

_LOG_2PI = float(np.log(2.0 * np.pi))
# Below this many entries (m^2 x columns of W; and m <= 128, where dense products with
# Lambda cost less than the bookkeeping they save) the rank update is a dense matrix-vector
# product onto the whole m x m matrix: one call instead of a sparse product and a scatter.
_DENSE_UPDATE_LIMIT = 1 << 16


def _batched_cholesky(M: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of small SPD matrices (l, p, p)."""
    if M.shape[1] == 1:
        return np.sqrt(M)
    return np.linalg.cholesky(M)


def _batched_inverse_spd(L: np.ndarray) -> np.ndarray:
    """Inverses of ``L L'`` for a stack of lower-triangular factors ``L`` (l, p, p)."""
    if L.shape[1] == 1:
        return 1.0 / (L * L)
    if L.shape[1] == 2:
        # Closed form: batched LAPACK calls on 2 x 2 blocks cost more than the arithmetic.
        a, b, c = L[:, 0, 0], L[:, 1, 0], L[:, 1, 1]
        inv = np.zeros_like(L)
        inv[:, 0, 0] = 1.0 / a
        inv[:, 1, 1] = 1.0 / c
        inv[:, 1, 0] = -b / (a * c)
        return np.swapaxes(inv, 1, 2) @ inv
    eye = np.broadcast_to(np.eye(L.shape[1]), L.shape)
    Linv = np.linalg.solve(L, eye)
    return np.swapaxes(Linv, 1, 2) @ Linv


def _packing_matrix(p1: int, nlevels: int) -> sp.csc_matrix:
    """Sparse 0/1 matrix mapping packed lower triangles (entry-major) to (level, a, b)."""
    r, c = np.tril_indices(p1)
    e = np.arange(r.shape[0])
    lev = np.arange(nlevels)
    src_cols = (e[:, None] * nlevels + lev[None, :]).ravel()
    full = (lev[None, :] * p1 * p1 + (r * p1 + c)[:, None]).ravel()
    mirror = (lev[None, :] * p1 * p1 + (c * p1 + r)[:, None]).ravel()
    off = np.repeat(r != c, nlevels)
    rows = np.concatenate([full, mirror[off]])
    cols = np.concatenate([src_cols, src_cols[off]])
    return sp.csc_matrix(
        (np.ones(rows.shape[0]), (rows, cols)), shape=(nlevels * p1 * p1, e.shape[0] * nlevels)
    )


@dataclass(frozen=True, eq=False)
class BlockedFactor:
    """The pieces of the blocked Cholesky factor ``L`` at one theta.

    Attributes
    ----------
    theta
        Where it was computed.
    templates
        Lower-triangular templates T_k(theta).
    L11
        (l1, p1, p1) Cholesky factors of ``M_l = T1' A11_l T1 + I``.
    M11inv
        (l1, p1, p1) inverses of ``M_l``.
    W1
        (l1, p1, p1) ``T1 M_l^{-1} T1'``.
    L22
        Dense lower Cholesky factor of the rest block (None with one term).
    LX2
        ((p+1), q_r) block of L below the rest block (None with one term).
    LXX
        (p+1, p+1) lower Cholesky factor of the [X y] block: ``R_X'`` and the ``r`` row.
    logdet_z
        ``log|L_Z|^2``.
    """

    theta: np.ndarray
    templates: list[np.ndarray]
    L11: np.ndarray
    M11inv: np.ndarray
    W1: np.ndarray
    L22: np.ndarray | None
    LX2: np.ndarray | None
    LXX: np.ndarray
    logdet_z: float

    @property
    def p(self) -> int:
        return self.LXX.shape[0] - 1

    @property
    def pwrss(self) -> float:
        """Penalised weighted residual sum of squares ``r^2``."""
        return float(self.LXX[-1, -1] ** 2)

    @property
    def logdet_x(self) -> float:
        """``log|R_X|^2``."""
        d = np.diag(self.LXX)[:-1]
        return float(2.0 * np.sum(np.log(d)))


class ProfiledDeviance:
    """The profiled (REML or ML) deviance, built once from the cross products.

    After term 1 is eliminated level by level, everything else is one dense symmetric
    matrix of size ``m = q_r + p + 1`` (the rest block with ``[X y]`` appended, as in
    MixedModels.jl):

        S(theta) = Lambda_e' (B - C W C') Lambda_e + diag(I_qr, 0)

    with ``B = [[Zr'Zr, Zr'Xy], [Xy'Zr, Xy'Xy]]`` and ``C = [Zr'Z1; Xy'Z1]`` constant,
    ``W = blockdiag_l(T1 M_l^{-1} T1')`` and ``Lambda_e = blockdiag(Lambda_r, I)``. One
    Cholesky factorisation of ``S`` gives ``L22``, ``LX2`` and ``LXX`` at once, and the
    deviance needs only its diagonal. For small ``m`` the update ``C W C'`` is one dense
    matrix-vector product; for large ``m`` its rest block goes through the sparse
    :class:`.linalg.rank_update.RankUpdatePattern` and each evaluation reuses one
    workspace, so calls are not reentrant (use one instance per thread). No evaluation
    touches the rows of the data.

    Parameters
    ----------
    structure
        The covariance parameterisation (terms in engine order).
    A
        Cross-product blocks of ``[Z X y]``.
    reml
        REML criterion if True, ML deviance otherwise.
    offset
        Constant added to the deviance: ``2 sum_i log delta_i`` when rows were scaled by
        ``1 / delta_i`` for unequal residual variances (the Jacobian of that scaling).
    pattern
        A rank-update pattern built for the same sparsity of Zr'Z1 (reused, not rebuilt).

    Examples
    --------
    >>> dev = ProfiledDeviance(structure, A, reml=True)   # doctest: +SKIP
    >>> dev(structure.initial_theta())                      # doctest: +SKIP
    """

    def __init__(
        self,
        structure: CovarianceStructure,
        A: CrossProducts,
        reml: bool = True,
        offset: float = 0.0,
        pattern: RankUpdatePattern | None = None,
    ):
        self.structure = structure
        self.A = A
        self.reml = bool(reml)
        self.offset = float(offset)
        self.n = int(A.nobs)
        self.p = int(A.xytxy.shape[0] - 1)
        terms = structure.terms
        t1 = terms[0]
        self._p1 = p1 = t1.ncols
        self._has_rest = len(terms) > 1
        self._rest_terms = terms[1:]
        self._rest_offsets = rest_offsets(terms)
        self._qr = qr = int(self._rest_offsets[-1])
        self._m = m = qr + self.p + 1
        self._rest_scalar = all(t.ncols == 1 for t in self._rest_terms)

        self._rest_diag = np.arange(qr) * (m + 1)  # flat positions of the rest diagonal

        # W enters as its packed lower triangles, entry-major: w[e, l] = W_l[r_e, c_e] for
        # (r_e, c_e) in np.tril_indices(p1) order; the update's columns are packed to match
        # (off-diagonal entries count for both (a, b) and (b, a)).
        l1 = t1.nlevels
        self._tril = np.tril_indices(p1)
        z = A.z1tz1
        self._a_packed = np.ascontiguousarray(z[:, self._tril[0], self._tril[1]].T)
        if p1 == 2:  # a row of ones for the identity in M = T1' A T1 + I (see _term1)
            self._a_packed = np.vstack([self._a_packed, np.ones(l1)])
        self._t1_index = (structure.rows[0], structure.cols[0], structure.offsets[1])
        # Position in theta of each template entry (-1: fixed at 0, e.g. from `||`).
        free = {
            (int(r), int(c)): e for e, (r, c) in enumerate(zip(*self._t1_index[:2], strict=True))
        }
        rows1, cols1 = self._tril
        self._t1_pos = tuple(
            free.get((int(r), int(c)), -1) for r, c in zip(rows1, cols1, strict=True)
        )

        # Small models: everything dense. S = B - Pd @ w in one product onto the whole
        # m x m matrix (both triangles, so that Lambda_e, a dense matrix, can act from
        # both sides); Pd[(i, j), (l, a, b)] = C[i, l a] C[j, l b] straight from a dense C.
        self._dense = m <= 128 and m * m * l1 * len(self._tril[0]) <= _DENSE_UPDATE_LIMIT
        self._pattern = None
        if self._dense:
            B = np.empty((m, m))  # the constant part of S (both triangles)
            B[qr:, qr:] = A.xytxy
            if self._has_rest:
                B[:qr, :qr] = A.zrtzr
                B[qr:, :qr] = A.xytzr
                B[:qr, qr:] = A.xytzr.T
            C3 = np.empty((m, l1, p1))
            C3[qr:] = A.xytz1
            if self._has_rest:
                C3[:qr] = A.zrtz1.toarray().reshape(qr, l1, p1)
            # Pd[(i, j), l, a, b], then packed: off-diagonal (a, b) and (b, a) summed.
            Pd = C3[:, None, :, :, None] * C3[None, :, :, None, :]
            r, c = self._tril
            packed = Pd[:, :, :, r, c] + np.where(r != c, Pd[:, :, :, c, r], 0.0)
            self._Pd = np.ascontiguousarray(np.swapaxes(packed, 2, 3)).reshape(m * m, -1)
            self._Bflat = B.ravel()
            if self._has_rest:
                lam_flat, lam_src = [], []
                for k, term in enumerate(self._rest_terms, start=1):
                    r, c = structure.rows[k], structure.cols[k]
                    first = self._rest_offsets[k - 1] + np.arange(term.nlevels) * term.ncols
                    lam_flat.append(((first[:, None] + r) * m + (first[:, None] + c)).ravel())
                    entries = np.arange(structure.offsets[k], structure.offsets[k + 1])
                    lam_src.append(np.tile(entries, term.nlevels))
                self._lam_flat = np.concatenate(lam_flat)
                self._lam_src = np.concatenate(lam_src)
                lam0 = np.zeros((m, m))
                lam0[np.arange(qr, m), np.arange(qr, m)] = 1.0
                self._lam0 = lam0
        else:
            # Large models: the rest block's update Zr'Z1 W Z1'Zr through a sparse
            # rank-update pattern (lower triangle), the [X y] rows by dense products (for
            # many fixed effects they would dominate the pattern). B's blocks are read from
            # A itself: no second copy of the large Zr'Zr.
            Q = self._Q = _packing_matrix(p1, l1) if p1 > 1 else None
            self._xz1 = A.xytz1.reshape(self.p + 1, -1)
            self._S = np.empty((m, m))  # workspace, reused by every evaluation
            if self._has_rest:
                self._pattern = pat = (
                    RankUpdatePattern.from_cross_products(A.zrtz1, p1)
                    if pattern is None
                    else pattern.with_values(A.zrtz1.data)
                )
                self._P = pat.P if Q is None else (pat.P @ Q).tocsc()
                self._lower_flat = pat.rows * m + pat.cols
            if self._has_rest and self._rest_scalar:
                # Lambda_r is diagonal and constant on each term's block: S = d_a d_b B on
                # block (a, b), written lower blocks only (LAPACK reads the lower
                # triangle), and the update scaled by its block pair.
                bounds = self._rest_offsets.tolist()
                nb = len(bounds) - 1
                self._blocks = [(bounds[k], bounds[k + 1]) for k in range(nb)]
                block_of = np.repeat(np.arange(nb), np.diff(bounds))
                self._pos_pair = block_of[pat.rows] * nb + block_of[pat.cols]
                self._block_theta = np.array(
                    [structure.offsets[k] for k in range(1, len(terms))], dtype=np.intp
                )
                self._rest_theta_index = np.repeat(self._block_theta, np.diff(bounds))
                # When every nonzero of Zr'Zr's lower triangle is a position of the update
                # (always, when each row has a term-1 level with a nonzero z), S's rest block
                # is zeros plus one scatter: cheaper than scaling all of B into S.
                nz_r, nz_c = np.nonzero(A.zrtzr)
                lower = nz_r >= nz_c
                nz_flat = nz_r[lower] * m + nz_c[lower]
                inside = np.isin(nz_flat, self._lower_flat, assume_unique=True)
                self._rest_in_pattern = bool(inside.all())
                if self._rest_in_pattern:
                    self._base = A.zrtzr[pat.rows, pat.cols]
            elif self._has_rest:
                # General templates act within each level's block from both sides, so
                # both triangles of S are needed.
                off = pat.rows != pat.cols
                self._upper_flat = pat.cols[off] * m + pat.rows[off]
                self._upper_src = np.flatnonzero(off)
        self.evaluations = 0

    def with_cross_products(self, A: CrossProducts, offset: float = 0.0) -> ProfiledDeviance:
        """The same deviance for new cross products with the same sparsity (reweighted rows)."""
        return ProfiledDeviance(
            self.structure, A, reml=self.reml, offset=offset, pattern=self._pattern
        )

    def moment_start(self, step: float) -> tuple[np.ndarray, np.ndarray]:
        """Starting theta and initial BOBYQA steps: lme4's start, scalar terms at a moment estimate.

        For a scalar term with column ``z``, the OLS residuals summed by level,
        ``s_l = sum_(i in l) z_i r_i``, have ``E[sum_l s_l^2 / n_l] ~ L sigma^2 + N sigma_k^2``
        (``n_l = sum_(i in l) z_i^2``, ``N = sum_l n_l``, ``L`` levels: one-way random-effects
        ANOVA, ignoring the other terms and the fixed-effects projection); ``sigma^2`` is
        the OLS residual variance less the estimated components. Crude, but it needs only
        the cross products. On large models (the sparse update path) it lands near the
        optimum and the estimated entries also get half the initial ``step``: with InstEval
        that halves the evaluations (75 -> 35, 48 -> 22) and reaches the same optimum. On
        small data the estimate is rougher, so the step stays (evaluations about neutral).

        Returns
        -------
        theta0, steps
            The start and the initial step of each entry.
        """
        theta, estimated = self._moment_theta()
        shrink = 0.5 if not self._dense else 1.0
        return theta, np.where(estimated, shrink * step, step)

    def _moment_theta(self) -> tuple[np.ndarray, np.ndarray]:
        """The start of :meth:`moment_start` and which entries hold an estimate."""
        structure, A, p, n = self.structure, self.A, self.p, self.n
        theta = structure.initial_theta()
        estimated = np.zeros(theta.shape[0], dtype=bool)
        XtX, Xty, yty = A.xytxy[:p, :p], A.xytxy[:p, p], A.xytxy[p, p]
        try:
            beta = np.linalg.solve(XtX, Xty) if p else np.zeros(0)
        except np.linalg.LinAlgError:
            return theta, estimated
        s2 = float(yty - beta @ Xty) / (n - p)
        components = []
        for k, term in enumerate(structure.terms):
            if term.ncols != 1:
                continue
            if k == 0:
                XyZ, nl = A.xytz1[:, :, 0], A.z1tz1[:, 0, 0]
            else:
                s, e = self._rest_offsets[k - 1], self._rest_offsets[k]
                XyZ, nl = A.xytzr[:, s:e], np.diagonal(A.zrtzr)[s:e]
            sums = XyZ[p] - beta @ XyZ[:p]
            seen = nl > 0
            N = float(nl.sum())
            if N <= 0.0:  # a column of zeros: keep lme4's start
                continue
            between = float(np.sum(sums[seen] ** 2 / nl[seen]))
            components.append((k, max(between - seen.sum() * s2, 0.0) / N, N))
        resid = max(s2 - sum(v * N / n for _, v, N in components), 0.1 * s2)
        for k, v, _ in components:
            value = math.sqrt(v / resid) if resid > 0 else math.nan
            if math.isfinite(value):
                theta[structure.offsets[k]] = min(value, 10.0)
                estimated[structure.offsets[k]] = True
        return theta, estimated

    # -- Lambda applied to the rest block ---------------------------------------------
    def _rest_right(self, M: np.ndarray, templates: list[np.ndarray], theta: np.ndarray):
        """Return ``M @ Lambda_r`` for a matrix whose columns index the rest block."""
        out = np.empty_like(M)
        for k, term in enumerate(self._rest_terms):
            s, e = self._rest_offsets[k], self._rest_offsets[k + 1]
            T = templates[k + 1]
            blk = M[:, s:e].reshape(M.shape[0], term.nlevels, term.ncols)
            out[:, s:e] = (blk @ T).reshape(M.shape[0], e - s)
        return out

    def _template1(self, theta: np.ndarray) -> np.ndarray:
        rows, cols, stop = self._t1_index
        T1 = np.zeros((self._p1, self._p1))
        T1[rows, cols] = theta[:stop]
        return T1

    def _term1(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """``log|L_11|^2`` and packed ``W_l = T1 M_l^{-1} T1'``, ``M_l = T1' A_l T1 + I``.

        Closed forms for 1 x 1 and 2 x 2 blocks, as a few whole-array operations over the
        levels: that costs less than batched LAPACK calls on tiny matrices (and these are
        the common cases: random intercepts, one random slope).
        """
        p1 = self._p1
        a = self._a_packed  # a[e, l] = A_l[r_e, c_e], (r_e, c_e) in np.tril_indices(p1)
        if p1 == 1:
            tt = theta[0] * theta[0]
            M = a[0] * tt + 1.0
            return float(np.log(M).sum()), tt / M
        if p1 == 2:
            # Python floats for the 2 x 2 template: scalar numpy arithmetic costs more.
            th = theta.tolist()
            i00, i10, i11 = self._t1_pos
            t00, t11 = th[i00], th[i11]
            t10 = th[i10] if i10 >= 0 else 0.0
            # [m00, m10, m11] = K [a00, a10, a11, 1]: M = T1' A T1 + I in one product
            # (a has a row of ones appended for the identity).
            K = np.array(
                [
                    [t00 * t00, 2.0 * t00 * t10, t10 * t10, 1.0],
                    [0.0, t11 * t00, t11 * t10, 0.0],
                    [0.0, 0.0, t11 * t11, 1.0],
                ]
            )
            Mv = K @ a
            det = Mv[0] * Mv[2] - Mv[1] * Mv[1]
            # W = T1 M^{-1} T1' with M^{-1} = [[m11, -m10], [-m10, m00]] / det.
            G = np.array(
                [
                    [0.0, 0.0, t00 * t00],
                    [0.0, -t00 * t11, t00 * t10],
                    [t11 * t11, -2.0 * t10 * t11, t10 * t10],
                ]
            )
            W = G @ Mv
            W /= det
            return float(np.log(det).sum()), W.ravel()
        T1 = self._template1(theta)
        M = np.swapaxes(T1, 0, 1)[None] @ self.A.z1tz1 @ T1[None]
        M += np.eye(p1)[None]
        L = np.linalg.cholesky(M)
        logdet = 2.0 * float(np.log(np.diagonal(L, axis1=1, axis2=2)).sum())
        W = T1[None] @ _batched_inverse_spd(L) @ T1.T[None]
        return logdet, np.ascontiguousarray(W[:, self._tril[0], self._tril[1]].T).ravel()

    def _schur(self, theta: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``S(theta)`` (see the class docstring); only its lower triangle is reliable."""
        qr = self._qr
        if self._dense:
            S = (self._Bflat - self._Pd @ w).reshape(self._m, self._m)
            if self._has_rest:
                lam = self._lam0.copy()
                lam.ravel()[self._lam_flat] = theta[self._lam_src]
                S = lam.T @ S @ lam
                S.ravel()[self._rest_diag] += 1.0
            return S
        S, A = self._S, self.A
        # [X y] rows: Xy'Z1 W Z1'Xy and Xy'Z1 W Z1'Zr, dense.
        p1 = self._p1
        if p1 == 1:
            AW = self._xz1 * w
        else:
            W = (self._Q @ w).reshape(-1, p1, p1)  # (level, a, b) layout
            AW = np.einsum("cla,lab->clb", A.xytz1, W).reshape(self._xz1.shape)
        np.subtract(A.xytxy, AW @ self._xz1.T, out=S[qr:, qr:])
        if not self._has_rest:
            return S
        u = self._P @ w
        Sf = S.reshape(-1)
        UXr = (A.zrtz1 @ AW.T).T
        if self._rest_scalar:
            d = theta[self._block_theta]
            scale = np.multiply.outer(d, d).ravel()[self._pos_pair]
            if self._rest_in_pattern:
                S[:qr, :qr] = 0.0
                Sf[self._lower_flat] = (self._base - u) * scale
            else:
                for bi, (si, ei) in enumerate(self._blocks):
                    for bj, (sj, ej) in enumerate(self._blocks[: bi + 1]):
                        np.multiply(A.zrtzr[si:ei, sj:ej], d[bi] * d[bj], out=S[si:ei, sj:ej])
                Sf[self._lower_flat] -= u * scale
            np.subtract(A.xytzr, UXr, out=S[qr:, :qr])
            S[qr:, :qr] *= theta[self._rest_theta_index]
        else:
            np.copyto(S[:qr, :qr], A.zrtzr)
            Sf[self._lower_flat] -= u
            Sf[self._upper_flat] -= u[self._upper_src]
            np.subtract(A.xytzr, UXr, out=S[qr:, :qr])
            S[:qr, qr:] = S[qr:, :qr].T
            templates = self.structure.templates(theta)
            S[:, :qr] = self._rest_right(S[:, :qr], templates, theta)
            S[:qr, :] = self._rest_right(S[:qr, :].T, templates, theta).T
        Sf[self._rest_diag] += 1.0
        return S

    def _cholesky(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """``log|L_11|^2`` and ``S`` overwritten by its lower Cholesky factor."""
        theta = np.asarray(theta, dtype=np.float64)
        logdet1, w = self._term1(theta)
        S = self._schur(theta, w)
        # S is C-ordered and symmetric in its lower triangle, so S.T is Fortran-ordered
        # with the same numbers in its upper triangle: LAPACK factors it in place (no
        # copy) as U'U, and U' = L lands in the lower triangle of S.
        U, info = _dpotrf(S.T, lower=0, clean=0, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError("the blocked matrix is not positive definite")
        return logdet1, U.T

    def factor(self, theta: np.ndarray) -> BlockedFactor:
        """Compute the blocked Cholesky factor at ``theta``.

        Raises
        ------
        numpy.linalg.LinAlgError
            If a block is not positive definite (only for ill-posed X).
        """
        theta = np.asarray(theta, dtype=np.float64)
        logdet1, S = self._cholesky(theta)
        L = np.tril(S)  # a clean copy: S may be the shared workspace
        qr = self._qr
        templates = self.structure.templates(theta)
        T1 = templates[0]
        # Per-level pieces of term 1 for the solutions (solution.py), batched.
        if self._p1 == 1:
            t = T1[0, 0]
            M = self.A.z1tz1 * (t * t) + 1.0
        else:
            M = np.swapaxes(T1, 0, 1)[None] @ self.A.z1tz1 @ T1[None] + np.eye(self._p1)[None]
        L11 = _batched_cholesky(M)
        Minv = _batched_inverse_spd(L11)
        W1 = T1[None] @ Minv @ T1.T[None] if self._p1 > 1 else Minv * (T1[0, 0] ** 2)
        logdet_z = logdet1 + 2.0 * float(np.log(np.diagonal(L)[:qr]).sum())
        L22 = LX2 = None
        if self._has_rest:
            L22 = L[:qr, :qr]
            LX2 = L[qr:, :qr]
        LXX = L[qr:, qr:]
        return BlockedFactor(theta, templates, L11, Minv, W1, L22, LX2, LXX, logdet_z)

    def _from_diagonal(self, logdet1: float, diag: np.ndarray) -> float:
        """The deviance (eqs. 34 / 41 of Bates et al. 2015) from the diagonal of L."""
        qr, p = self._qr, self.p
        logs = np.log(diag[:-1])
        logdet_z = logdet1 + 2.0 * float(logs[:qr].sum()) if qr else logdet1
        r2 = float(diag[-1]) ** 2
        if r2 <= 0.0:  # an exact fit (refused before fitting): np.log's -inf, as objective()
            return -math.inf
        if self.reml:
            nmp = self.n - p
            logdet_x = 2.0 * float(logs[qr:].sum())
            d = logdet_z + logdet_x + nmp * (1.0 + _LOG_2PI + math.log(r2 / nmp))
        else:
            d = logdet_z + self.n * (1.0 + _LOG_2PI + math.log(r2 / self.n))
        return d + self.offset

    def objective(self, f: BlockedFactor) -> float:
        """The deviance from a computed factor (eqs. 34 / 41 of Bates et al. 2015)."""
        r2 = f.pwrss
        if self.reml:
            nmp = self.n - self.p
            d = f.logdet_z + f.logdet_x + nmp * (1.0 + _LOG_2PI + np.log(r2 / nmp))
        else:
            d = f.logdet_z + self.n * (1.0 + _LOG_2PI + np.log(r2 / self.n))
        return d + self.offset

    def __call__(self, theta: np.ndarray) -> float:
        """Deviance at ``theta``; ``inf`` where a block is not positive definite."""
        self.evaluations += 1
        try:
            logdet1, L = self._cholesky(theta)
            return self._from_diagonal(logdet1, L.diagonal())
        except (np.linalg.LinAlgError, sla.LinAlgError, FloatingPointError):
            return float("inf")
