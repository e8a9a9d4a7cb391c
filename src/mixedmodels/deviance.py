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
term 1 is eliminated level by level (a batch of tiny Cholesky factors), the remaining terms
form one dense block updated through :class:`.linalg.rank_update.RankUpdatePattern`, and
the last block is ``[X y]``. No step touches the rows of the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from .covariance import CovarianceStructure
from .linalg.cross_products import CrossProducts, rest_offsets
from .linalg.rank_update import RankUpdatePattern

_LOG_2PI = float(np.log(2.0 * np.pi))


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
        self._p1 = terms[0].ncols
        self._has_rest = len(terms) > 1
        if self._has_rest:
            self._rest_offsets = rest_offsets(terms)
            self._rest_terms = terms[1:]
            self._pattern = (
                RankUpdatePattern.from_cross_products(A.zrtz1, self._p1)
                if pattern is None
                else pattern.with_values(A.zrtz1.data)
            )
            self._qr = int(self._rest_offsets[-1])
            self._rest_scalar = all(t.ncols == 1 for t in self._rest_terms)
            # Diagonal scaling vector index: which theta scales each rest column (scalar terms).
            self._rest_theta_index = np.concatenate(
                [
                    np.full(t.nranef, structure.offsets[k + 1])
                    for k, t in enumerate(self._rest_terms)
                ]
            )
            r, c = self._pattern.rows, self._pattern.cols
            off = r != c
            self._upper_rows, self._upper_cols = c[off], r[off]
        self.evaluations = 0

    def with_cross_products(self, A: CrossProducts, offset: float = 0.0) -> ProfiledDeviance:
        """The same deviance for new cross products with the same sparsity (reweighted rows)."""
        return ProfiledDeviance(
            self.structure,
            A,
            reml=self.reml,
            offset=offset,
            pattern=self._pattern if self._has_rest else None,
        )

    # -- Lambda applied to the rest block ---------------------------------------------
    def _rest_right(self, M: np.ndarray, templates: list[np.ndarray], theta: np.ndarray):
        """Return ``M @ Lambda_r`` for a matrix whose columns index the rest block."""
        if self._rest_scalar:
            return M * theta[self._rest_theta_index][None, :]
        out = np.empty_like(M)
        for k, term in enumerate(self._rest_terms):
            s, e = self._rest_offsets[k], self._rest_offsets[k + 1]
            T = templates[k + 1]
            blk = M[:, s:e].reshape(M.shape[0], term.nlevels, term.ncols)
            out[:, s:e] = (blk @ T).reshape(M.shape[0], e - s)
        return out

    def factor(self, theta: np.ndarray) -> BlockedFactor:
        """Compute the blocked Cholesky factor at ``theta``.

        Raises
        ------
        numpy.linalg.LinAlgError
            If a block is not positive definite (only for ill-posed X).
        """
        theta = np.asarray(theta, dtype=np.float64)
        A = self.A
        templates = self.structure.templates(theta)
        T1 = templates[0]
        # Term 1: M_l = T1' A11_l T1 + I, level by level.
        if self._p1 == 1:
            t = T1[0, 0]
            M = A.z1tz1 * (t * t) + 1.0
        else:
            M = np.swapaxes(T1, 0, 1)[None] @ A.z1tz1 @ T1[None]
            M = M + np.eye(self._p1)[None]
        L11 = _batched_cholesky(M)
        logdet_z = 2.0 * float(np.sum(np.log(np.diagonal(L11, axis1=1, axis2=2))))
        Minv = _batched_inverse_spd(L11)
        W1 = T1[None] @ Minv @ T1.T[None] if self._p1 > 1 else Minv * (T1[0, 0] ** 2)

        AX1 = A.xytz1  # (p+1, l1, p1)
        if self._p1 == 1:
            AX1W = AX1 * W1[None, :, :, 0]
        else:
            AX1W = np.einsum("cla,lab->clb", AX1, W1, optimize=True)
        pp1 = AX1.shape[0]
        SXX = A.xytxy - AX1W.reshape(pp1, -1) @ AX1.reshape(pp1, -1).T

        L22 = LX2 = None
        if self._has_rest:
            upd = self._pattern.apply(W1)
            S = A.zrtzr.copy()
            pr, pc = self._pattern.rows, self._pattern.cols
            S[pr, pc] -= upd
            off = pr != pc
            S[pc[off], pr[off]] -= upd[off]
            if self._rest_scalar:
                d = theta[self._rest_theta_index]
                S *= d[:, None]
                S *= d[None, :]
            else:
                S = self._rest_right(S, templates, theta)
                S = self._rest_right(S.T.copy(), templates, theta)
            S[np.diag_indices_from(S)] += 1.0
            L22 = sla.cholesky(S, lower=True, overwrite_a=True, check_finite=False)
            logdet_z += 2.0 * float(np.sum(np.log(np.diag(L22))))
            # [X y]' Z r block after eliminating term 1, times Lambda_r.
            SXr = A.xytzr - (A.zrtz1 @ AX1W.reshape(pp1, -1).T).T
            SXr = self._rest_right(SXr, templates, theta)
            LX2 = sla.solve_triangular(L22, SXr.T, lower=True, check_finite=False).T
            SXX = SXX - LX2 @ LX2.T
        LXX = sla.cholesky(SXX, lower=True, check_finite=False)
        return BlockedFactor(theta, templates, L11, Minv, W1, L22, LX2, LXX, logdet_z)

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
            return float(self.objective(self.factor(theta)))
        except (np.linalg.LinAlgError, sla.LinAlgError, FloatingPointError):
            return float("inf")
