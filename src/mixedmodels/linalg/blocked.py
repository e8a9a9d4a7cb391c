"""The blocked system: ``[Z X y]'[Z X y]`` with the relative covariance applied, factored.

For given theta the blocked lower Cholesky factor ``L`` of

    [ Lambda'Z'Z Lambda + I   Lambda'Z'X   Lambda'Z'y ]
    [ X'Z Lambda              X'X          X'y        ]
    [ y'Z Lambda              y'X          y'y        ]

gives ``log|L_Z|^2``, ``R_X`` and ``r^2`` (the penalised residual sum of squares), from
which :mod:`mixedmodels.objective.profiled_deviance` forms the REML or ML criterion
(Bates, Maechler, Bolker & Walker 2015, JSS 67(1), eqs. 34 and 41).

``L`` is computed block by block from the cross products of :mod:`.cross_products`:
term 1 is eliminated level by level (a batch of tiny Cholesky factors, in closed form for
1 x 1 and 2 x 2 blocks); the remaining terms with ``[X y]`` appended form one dense block,
updated through :class:`.rank_update.RankUpdatePattern` and factored by one LAPACK
call. With y as the last column, ``r`` is the last diagonal element of ``L``, so the
optimiser's evaluations need only the diagonal (:meth:`BlockedSystem.log_terms`). No step
touches the rows of the data. The symbolic set-up (the rank-update pattern) is done once;
:meth:`BlockedSystem.with_values` binds new numbers with the same sparsity (reweighted rows,
residual variances by group).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.linalg.lapack import dpotrf as _dpotrf

from mixedmodels.covariance import CovarianceStructure
from mixedmodels.linalg.cross_products import CrossProducts, rest_offsets
from mixedmodels.linalg.memory import check_dense_block
from mixedmodels.linalg.rank_update import LevelBlockUpdate, RankUpdatePattern

# What ndarray.sum runs, without its Python wrapper (hot path: every evaluation).
_sum = np.add.reduce

# Below this many entries (m^2 x columns of W; and m <= 128, where dense products with
# Lambda cost less than the bookkeeping they save) the rank update is a dense matrix-vector
# product onto the whole m x m matrix: one call instead of a sparse product and a scatter.
_DENSE_UPDATE_LIMIT = 1 << 16
#: Largest ``m`` a single-use system (see ``BlockedSystem``) keeps dense: its update
#: ``C W C'`` is formed directly, and a dense ``m x m`` Cholesky factorisation costs less
#: than the sparse rank-update bookkeeping up to a few hundred rows.
SINGLE_USE_DENSE_MAX = 400


# Rows per slice when clearing a triangle of a large matrix in place.
_ROW_BLOCK = 256


def _zero_lower(S: np.ndarray, k: int) -> None:
    """Set the lower triangle (with the diagonal) of ``S[:k, :k]`` to zero, in place.

    Half the memory traffic of clearing the whole block: LAPACK reads only this triangle.
    """
    for i0 in range(0, k, _ROW_BLOCK):
        i1 = min(i0 + _ROW_BLOCK, k)
        S[i0:i1, :i0] = 0.0
        blk = S[i0:i1, i0:i1]
        blk[np.tril_indices(i1 - i0)] = 0.0


def _zero_strict_upper(L: np.ndarray) -> None:
    """Set the strict upper triangle of a square ``L`` to zero, in place (no m x m mask)."""
    m = L.shape[0]
    for i0 in range(0, m, _ROW_BLOCK):
        i1 = min(i0 + _ROW_BLOCK, m)
        L[i0:i1, i1:] = 0.0
        blk = L[i0:i1, i0:i1]
        blk[np.triu_indices(i1 - i0, 1)] = 0.0


def _times_level_blocks(A3: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``out[:, l, :] = A3[:, l, :] @ W[l]`` for (c, l, p) ``A3`` and (l, p, p) ``W``.

    ``p^2`` whole-array multiply-adds over the levels: 15x faster than the equivalent
    ``np.einsum`` (which does not vectorise this contraction) for 1e5 levels of 2 x 2
    blocks: 1.5 ms instead of 22 ms, most of a deviance evaluation of such a model.
    """
    p = W.shape[1]
    out = np.empty(A3.shape)
    for b in range(p):
        np.multiply(A3[:, :, 0], W[:, 0, b], out=out[:, :, b])
        for a in range(1, p):
            out[:, :, b] += A3[:, :, a] * W[:, a, b]
    return out


def _column_pairs(Z: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of nonzeros of a CSR matrix that share a column: the flat position
    ``row_a * nrows + row_b`` of their product in ``Z D Z'``, their two positions in
    ``Z.data`` and the column (for the diagonal ``D``)."""
    nrows = Z.shape[0]
    rows = np.repeat(np.arange(nrows), np.diff(Z.indptr))
    cols = Z.indices
    order = np.argsort(cols, kind="stable")
    counts = np.bincount(cols, minlength=Z.shape[1])[cols[order]]
    starts = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=Z.shape[1]))])[cols[order]]
    first = np.repeat(np.arange(order.shape[0]), counts)
    within = np.arange(first.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
    second = starts[first] + within
    a, b = order[first], order[second]
    return rows[a] * nrows + rows[b], a, b, cols[a]


def _block_diagonal(blocks: np.ndarray) -> sp.csr_matrix:
    """Sparse block-diagonal matrix from a stack ``(l, p, p)``."""
    l, p, _ = blocks.shape
    base = (np.arange(l) * p)[:, None, None]
    rows = np.broadcast_to(base + np.arange(p)[None, :, None], blocks.shape)
    cols = np.broadcast_to(base + np.arange(p)[None, None, :], blocks.shape)
    return sp.csr_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(l * p, l * p))


def _times_blocks(M: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """``M @ blockdiag(blocks)`` for ``M`` (r, l p) with level-major columns and symmetric
    ``blocks`` (l, p, p), without forming the block-diagonal matrix."""
    l, p, _ = blocks.shape
    return np.einsum("rld,ldc->rlc", M.reshape(M.shape[0], l, p), blocks).reshape(M.shape)


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


def _unpack_levels(w: np.ndarray, p1: int, tril: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(l1, p1, p1) symmetric blocks from their packed lower triangles, entry-major
    (``w[e * l1 + l] = W_l[r_e, c_e]``): one copy per entry, no sparse unpacking matrix."""
    packed = w.reshape(len(tril[0]), -1)
    W = np.empty((packed.shape[1], p1, p1))
    for e, (r, c) in enumerate(zip(*tril, strict=True)):
        W[:, r, c] = packed[e]
        W[:, c, r] = packed[e]
    return W


def _level_pieces_2x2(
    T1: np.ndarray, z1tz1: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``L_l``, ``M_l^{-1}`` and ``T1 M_l^{-1} T1'`` for 2 x 2 blocks, ``M_l = T1' A_l T1 + I``,
    in closed form over the levels.

    Notes
    -----
    With ``T1 = [[t00, 0], [t10, t11]]`` and ``A_l = [[a00, a10], [a10, a11]]``:
    ``M00 = a00 t00^2 + 2 a10 t00 t10 + a11 t10^2 + 1``, ``M10 = t11 (a10 t00 + a11 t10)``,
    ``M11 = a11 t11^2 + 1``; ``L = [[sqrt(M00), 0], [M10 / L00, sqrt(M11 - L10^2)]]``,
    ``M^{-1} = [[M11, -M10], [-M10, M00]] / det``. Each entry is one whole-array expression
    over the levels: numpy's batched products and Cholesky on 1e6 stacked 2 x 2 blocks took
    0.9 s per factor (most of the large path's gradient), these take a few dozen ms.
    """
    t00, t10, t11 = float(T1[0, 0]), float(T1[1, 0]), float(T1[1, 1])
    a00, a10, a11 = z1tz1[:, 0, 0], z1tz1[:, 1, 0], z1tz1[:, 1, 1]
    m00 = a10 * (2.0 * t00)
    m00 += a11 * t10
    m00 *= t10
    m00 += a00 * (t00 * t00)
    m00 += 1.0
    m10 = a10 * t00
    m10 += a11 * t10
    m10 *= t11
    m11 = a11 * (t11 * t11)
    m11 += 1.0
    nlev = z1tz1.shape[0]
    L = np.zeros((nlev, 2, 2))
    l00 = np.sqrt(m00)
    l10 = m10 / l00
    L[:, 0, 0] = l00
    L[:, 1, 0] = l10
    L[:, 1, 1] = np.sqrt(m11 - l10 * l10)
    det = m00 * m11
    det -= m10 * m10
    i00, i10, i11 = m11 / det, -m10 / det, m00 / det
    Minv = np.empty((nlev, 2, 2))
    Minv[:, 0, 0] = i00
    Minv[:, 1, 0] = i10
    Minv[:, 0, 1] = i10
    Minv[:, 1, 1] = i11
    W = np.empty((nlev, 2, 2))
    W[:, 0, 0] = (t00 * t00) * i00
    w10 = (t00 * t10) * i00
    w10 += (t00 * t11) * i10
    W[:, 1, 0] = w10
    W[:, 0, 1] = w10
    w11 = (t10 * t10) * i00
    w11 += (2.0 * t10 * t11) * i10
    w11 += (t11 * t11) * i11
    W[:, 1, 1] = w11
    return L, Minv, W


@dataclass(frozen=True, eq=False)
class BlockedFactor:
    """The pieces of the blocked Cholesky factor ``L`` at one theta.

    Attributes
    ----------
    theta
        Where it was computed.
    templates
        Lower-triangular templates T_k(theta).
    L22
        Dense lower Cholesky factor of the rest block (None with one term).
    LX2
        ((p+1), q_r) block of L below the rest block (None with one term).
    LXX
        (p+1, p+1) lower Cholesky factor of the [X y] block: ``R_X'`` and the ``r`` row.
    logdet_z
        ``log|L_Z|^2``.
    L
        The whole lower factor of the rest + [X y] block (C-ordered, upper triangle zero),
        of which ``L22``, ``LX2`` and ``LXX`` are views: solvers can hand ``L.T`` to LAPACK
        as a Fortran-ordered upper factor without copying the large ``L22``.
    z1tz1
        (l1, p1, p1) blocks of ``Z1'Z1``, from which the per-level pieces of term 1
        (:attr:`L11`, :attr:`M11inv`, :attr:`W1`) are formed when first read: criteria that
        need only ``L`` (e.g. Satterthwaite's numerical derivatives, a hundred factors)
        skip them (30 ms per factor for 1e5 levels of 2 x 2 blocks).
    """

    theta: np.ndarray
    templates: list[np.ndarray]
    L22: np.ndarray | None
    LX2: np.ndarray | None
    LXX: np.ndarray
    logdet_z: float
    L: np.ndarray | None = None
    z1tz1: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def _level_pieces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        T1 = self.templates[0]
        p1 = T1.shape[0]
        if p1 == 2:
            return _level_pieces_2x2(T1, self.z1tz1)
        if p1 == 1:
            t = T1[0, 0]
            M = self.z1tz1 * (t * t) + 1.0
        else:
            M = np.swapaxes(T1, 0, 1)[None] @ self.z1tz1 @ T1[None] + np.eye(p1)[None]
        L11 = _batched_cholesky(M)
        Minv = _batched_inverse_spd(L11)
        W1 = T1[None] @ Minv @ T1.T[None] if p1 > 1 else Minv * (T1[0, 0] ** 2)
        return L11, Minv, W1

    @property
    def L11(self) -> np.ndarray:
        """(l1, p1, p1) Cholesky factors of ``M_l = T1' A11_l T1 + I``."""
        return self._level_pieces[0]

    @property
    def M11inv(self) -> np.ndarray:
        """(l1, p1, p1) inverses of ``M_l``."""
        return self._level_pieces[1]

    @property
    def W1(self) -> np.ndarray:
        """(l1, p1, p1) ``T1 M_l^{-1} T1'``."""
        return self._level_pieces[2]

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


def _term_label(term) -> str:
    """``(1 + x | g)``: a grouped term as lme4 writes it."""
    cols = ["1" if c == "(Intercept)" else c for c in term.column_names]
    return f"({' + '.join(cols)} | {term.group})"


#: From this size of the dense block on, its memory is checked before it is allocated.
_MEMORY_CHECK_MIN = 2000


class BlockedSystem:
    """The blocked factor of a model's cross products as a function of theta, set up once.

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

    Large ``m`` (10,000 rest levels make ``S`` 800 MB) also shape the bookkeeping: ``Zr'Zr``
    is read from its lower-triangle nonzeros (it may be stored sparse), :meth:`factor`
    hands the workspace over to the factor it returns instead of copying it (and returns
    that factor again for the same theta until the next evaluation), and recent deviance
    values are remembered by theta (a pure function of theta; the optimiser and its
    convergence check revisit points).

    Parameters
    ----------
    structure
        The covariance parameterisation (terms in engine order).
    A
        Cross-product blocks of ``[Z X y]``.
    pattern
        A rank-update pattern built for the same sparsity of Zr'Z1 (reused, not rebuilt).

    Examples
    --------
    >>> system = BlockedSystem(structure, A)         # doctest: +SKIP
    >>> system.log_terms(structure.initial_theta())  # doctest: +SKIP
    """

    #: Large path: the last rank update ``(u, [X y]'Z1 W Z1'Zr)`` and the term-1 theta it
    #: was formed at (see :meth:`_schur`); class defaults for older pickles.
    _update_key: bytes | None = None
    _update_kept: tuple[np.ndarray, np.ndarray] | None = None
    #: Rank updates formed on the large path (evaluations at a new term-1 theta).
    rank_updates = 0

    def __init__(
        self,
        structure: CovarianceStructure,
        A: CrossProducts,
        pattern: RankUpdatePattern | LevelBlockUpdate | None = None,
        single_use: bool = False,
    ):
        self.structure = structure
        self._single_use = single_use
        self.A = A
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
        if m > _MEMORY_CHECK_MIN:
            check_dense_block(m, " + ".join(_term_label(t) for t in self._rest_terms))
        self._rest_scalar = all(t.ncols == 1 for t in self._rest_terms)

        self._rest_diag = np.arange(qr) * (m + 1)  # flat positions of the rest diagonal

        # W enters as its packed lower triangles, entry-major: w[e, l] = W_l[r_e, c_e] for
        # (r_e, c_e) in np.tril_indices(p1) order; the update's columns are packed to match
        # (off-diagonal entries count for both (a, b) and (b, a)).
        l1 = t1.nlevels
        # np.tril_indices(p1) (row-major), and the packed rows below, built without
        # NumPy's Python-level helpers (tril_indices, vstack, ones): each is code a
        # small fit would touch only here, paid cold after a collection.
        pairs = [(a, b) for a in range(p1) for b in range(a + 1)]
        self._tril = (
            np.array([a for a, _ in pairs], dtype=np.intp),
            np.array([b for _, b in pairs], dtype=np.intp),
        )
        z = A.z1tz1
        packed = z[:, self._tril[0], self._tril[1]].T
        if p1 == 2:  # a row of ones for the identity in M = T1' A T1 + I (see _term1)
            self._a_packed = np.empty((packed.shape[0] + 1, l1))
            self._a_packed[:-1] = packed
            self._a_packed[-1] = 1.0
        else:
            self._a_packed = np.ascontiguousarray(packed)
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
        # (A single-use system forms C W C' directly, m^2 l1 flops with no set-up: dense
        # whenever S is small.)
        self._dense = (single_use and m <= SINGLE_USE_DENSE_MAX) or (
            m <= 128 and m * m * l1 * len(self._tril[0]) <= _DENSE_UPDATE_LIMIT
        )
        self._pattern = None
        if self._dense:
            B = np.empty((m, m))  # the constant part of S (both triangles)
            B[qr:, qr:] = A.xytxy
            if self._has_rest:
                B[:qr, :qr] = A.zrtzr.toarray() if sp.issparse(A.zrtzr) else A.zrtzr
                B[qr:, :qr] = A.xytzr
                B[:qr, qr:] = A.xytzr.T
            C3 = np.empty((m, l1, p1))
            C3[qr:] = A.xytz1
            if self._has_rest:
                zr1 = A.zrtz1.toarray() if sp.issparse(A.zrtz1) else A.zrtz1
                C3[:qr] = zr1.reshape(qr, l1, p1)
            if single_use:
                # Factored at one theta or a few (a PIRLS step): C W C' directly costs
                # less than setting up the product below.
                self._Pd = None
                self._zr1 = A.zrtz1
                self._xy1 = A.xytz1.reshape(self.p + 1, -1)
                self._pairs = (
                    _column_pairs(A.zrtz1)
                    if self._has_rest and p1 == 1 and sp.issparse(A.zrtz1)
                    else None
                )
                if self._pairs is not None:
                    self._pairs_rows = np.repeat(np.arange(qr), np.diff(A.zrtz1.indptr))
            else:
                # Pd[(i, j), l, a, b], then packed: off-diagonal (a, b) and (b, a) summed.
                Pd = C3[:, None, :, :, None] * C3[None, :, :, None, :]
                r, c = self._tril
                packed = Pd[:, :, :, r, c] + np.where(r != c, Pd[:, :, :, c, r], 0.0)
                self._Pd = np.ascontiguousarray(np.swapaxes(packed, 2, 3)).reshape(m * m, -1)
                self._C3 = C3  # kept for with_response: a new y changes its last row only
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
                if self._rest_scalar:  # theta index of each rest column
                    self._rest_theta_index = np.repeat(
                        [structure.offsets[k] for k in range(1, len(terms))],
                        np.diff(self._rest_offsets),
                    )
        else:
            # Large models: the rest block's update Zr'Z1 W Z1'Zr through a sparse
            # rank-update pattern (lower triangle), the [X y] rows by dense products (for
            # many fixed effects they would dominate the pattern). B's blocks are read from
            # A itself: no second copy of the large Zr'Zr.
            self._xz1 = A.xytz1.reshape(self.p + 1, -1)
            # The m x m workspace, allocated by the first evaluation and reused by the next;
            # factor() hands it over to the factor it returns (no second m x m copy).
            self._S: np.ndarray | None = None
            self._S_theta: bytes | None = None  # theta whose factor the workspace holds
            # The last factor handed out, until the next evaluation needs a workspace: a
            # second factor() at the same theta (a convergence check's gradient, then the
            # results) returns it instead of factoring again.
            self._kept: BlockedFactor | None = None
            if self._has_rest:
                # Term 1 with one column: the matrix of products P, one entry per pair.
                # With more: C itself, level by level (LevelBlockUpdate), which costs the
                # same per evaluation and a fraction of P's p1 (p1 + 1) / 2 entries per pair.
                kind = RankUpdatePattern if p1 == 1 else LevelBlockUpdate
                self._pattern = pat = (
                    kind.from_cross_products(A.zrtz1, p1)
                    if pattern is None
                    else pattern.with_values(A.zrtz1.data)
                )
                self._update = pat.P.__matmul__ if p1 == 1 else pat.update
                self._lower_flat = pat.rows * m + pat.cols
                # S's rest block is zeros plus scatters of Zr'Zr's nonzeros and of the update
                # (LAPACK reads the lower triangle; Zr'Zr may be sparse: never densified).
                # When every nonzero of Zr'Zr's lower triangle is a position of the update
                # (always, when each row has a term-1 level with a nonzero z), one scatter
                # of (Zr'Zr - update) at those positions does both.
                zr, zc, zv = A.zrtzr_lower()
                nz_flat = zr * m + zc
                npos = self._lower_flat.shape[0]
                at = np.searchsorted(self._lower_flat, nz_flat)
                inside = self._lower_flat[np.minimum(at, max(npos - 1, 0))] == nz_flat
                self._rest_in_pattern = bool(npos > 0 and inside.all())
                if self._rest_in_pattern:
                    self._base = np.zeros(npos)
                    self._base[at] = zv
                else:  # Zr'Zr's own scatter: flat positions and values
                    self._zz_flat, self._zz_vals = nz_flat, zv
            if self._has_rest and self._rest_scalar:
                # Lambda_r is diagonal and constant on each term's block: S = d_a d_b B on
                # block (a, b), and the update scaled by its block pair.
                bounds = self._rest_offsets.tolist()
                nb = len(bounds) - 1
                block_of = np.repeat(np.arange(nb), np.diff(bounds))
                # With one rest term the scale is one number (no per-position pair index).
                self._pos_pair = block_of[pat.rows] * nb + block_of[pat.cols] if nb > 1 else None
                if not self._rest_in_pattern:
                    self._zz_pair = block_of[zr] * nb + block_of[zc]
                self._block_theta = np.array(
                    [structure.offsets[k] for k in range(1, len(terms))], dtype=np.intp
                )
                self._rest_theta_index = np.repeat(self._block_theta, np.diff(bounds))
            elif self._has_rest:
                # General templates act within each level's block from both sides, so
                # both triangles of S are needed.
                off = pat.rows != pat.cols
                self._upper_flat = pat.cols[off] * m + pat.rows[off]
                self._upper_src = np.flatnonzero(off)
                if not self._rest_in_pattern:
                    zoff = zr != zc
                    self._zz_upper = (zc[zoff] * m + zr[zoff], zv[zoff])
        #: Whether evaluations are worth remembering by theta (each is a large dense
        #: factorisation; the optimiser and its checks revisit points).
        self.memoize = not self._dense
        self.rest_offsets = self._rest_offsets
        #: How many of :meth:`log_diagonal`'s logs belong to ``L_Z`` (the rest block).
        self.nz_logs = self._qr
        self.pattern = self._pattern
        self.t1_index = self._t1_index

    def with_values(self, A: CrossProducts) -> BlockedSystem:
        """The same system for new cross products with the same sparsity (reweighted rows)."""
        if self._single_use and self._dense:
            return self._rebound(A)
        return BlockedSystem(self.structure, A, pattern=self._pattern, single_use=self._single_use)

    def _rebound(self, A: CrossProducts) -> BlockedSystem:
        """A single-use dense system on new values: only what depends on them is formed
        again (a PIRLS step binds new values several times per deviance evaluation)."""
        new = object.__new__(BlockedSystem)
        new.__dict__.update(self.__dict__)
        new.A = A
        qr, m, l1, p1 = self._qr, self._m, self.structure.terms[0].nlevels, self._p1
        packed = np.ascontiguousarray(A.z1tz1[:, self._tril[0], self._tril[1]].T)
        new._a_packed = np.vstack([packed, np.ones(l1)]) if p1 == 2 else packed
        B = np.empty((m, m))
        B[qr:, qr:] = A.xytxy
        if self._has_rest:
            B[:qr, :qr] = A.zrtzr.toarray() if sp.issparse(A.zrtzr) else A.zrtzr
            B[qr:, :qr] = A.xytzr
            B[:qr, qr:] = A.xytzr.T
        new._Bflat = B.ravel()
        new._zr1 = A.zrtz1
        new._xy1 = A.xytz1.reshape(A.xytz1.shape[0], -1)
        return new

    def _dense_update(self, w: np.ndarray) -> np.ndarray:
        """``C W C'`` (m x m) from the packed level blocks ``w`` of ``W`` (single-use systems),
        ``C = [Zr'Z1; Xy'Z1]``: products of the sparse ``Zr'Z1`` where it is stored sparse
        (an observation-level term 1 makes it large and very sparse)."""
        zr1, xy1 = self._zr1, self._xy1
        qr, m, p1 = self._qr, self._m, self._p1
        l1 = xy1.shape[1] // p1
        if p1 == 1:
            XW = xy1 * w
            blocks = None
        else:
            packed = w.reshape(-1, l1)
            blocks = np.empty((l1, p1, p1))
            for e, (r, c) in enumerate(zip(*self._tril, strict=True)):
                blocks[:, r, c] = packed[e]
                blocks[:, c, r] = packed[e]
            # Level by level (W is block diagonal and symmetric): no sparse matrix to
            # assemble, which costs more than the products for a few hundred levels.
            XW = _times_blocks(xy1, blocks)
        out = np.empty((m, m))
        out[qr:, qr:] = XW @ xy1.T
        if self._has_rest and self._pairs is not None:
            # Sum over each column's pairs of nonzeros (scipy's sparse products cost more
            # in bookkeeping than these few thousand multiplications).
            flat, a, b, col = self._pairs
            data, rows, cols = zr1.data, self._pairs_rows, zr1.indices
            uu = np.bincount(flat, weights=data[a] * data[b] * w[col], minlength=qr * qr)
            out[:qr, :qr] = uu.reshape(qr, qr)
            UX = np.empty((m - qr, qr))
            for c in range(m - qr):
                UX[c] = np.bincount(rows, weights=XW[c, cols] * data, minlength=qr)
            out[qr:, :qr] = UX
            out[:qr, qr:] = UX.T
        elif self._has_rest:
            if sp.issparse(zr1):
                ZW = zr1 @ sp.diags(w) if blocks is None else zr1 @ _block_diagonal(blocks)
                out[:qr, :qr] = (ZW @ zr1.T).toarray()
            else:
                ZW = zr1 * w if blocks is None else _times_blocks(zr1, blocks)
                out[:qr, :qr] = ZW @ zr1.T
            UX = np.asarray(zr1 @ XW.T).T
            out[qr:, :qr] = UX
            out[:qr, qr:] = UX.T
        return out

    @property
    def uses_dense_update(self) -> bool:
        """Whether the rank update is one dense product (small ``m``; see the class docs)."""
        return self._dense

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
            # A term without parameters (the null term of a model without random effects)
            # has Lambda = 0.
            tt = theta[0] * theta[0] if self._t1_index[2] else 0.0
            M = a[0] * tt + 1.0
            return float(_sum(np.log(M))), tt / M
        if p1 == 2:
            # Python floats for the 2 x 2 template: scalar numpy arithmetic costs more.
            th = theta.tolist()
            i00, i10, i11 = self._t1_pos
            t00, t11 = th[i00], th[i11]
            t10 = th[i10] if i10 >= 0 else 0.0
            # [m00, m10, m11] = K [a00, a10, a11, 1]: M = T1' A T1 + I in one product
            # (a has a row of ones appended for the identity).
            # Flat lists, reshaped: numpy reads a nested list ~40% slower.
            # fmt: off
            K = np.array([
                t00 * t00, 2.0 * t00 * t10, t10 * t10, 1.0,
                0.0, t11 * t00, t11 * t10, 0.0,
                0.0, 0.0, t11 * t11, 1.0,
            ]).reshape(3, 4)
            # fmt: on
            Mv = K @ a
            m10 = Mv[1]
            det = Mv[0] * Mv[2]
            det -= m10 * m10
            # W = T1 M^{-1} T1' with M^{-1} = [[m11, -m10], [-m10, m00]] / det: Mv is
            # divided by det in place (a fresh array), then one product with the template.
            Mv /= det
            # fmt: off
            G = np.array([
                0.0, 0.0, t00 * t00,
                0.0, -t00 * t11, t00 * t10,
                t11 * t11, -2.0 * t10 * t11, t10 * t10,
            ]).reshape(3, 3)
            # fmt: on
            return float(_sum(np.log(det))), (G @ Mv).ravel()
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
            if self._Pd is None:
                S = self._Bflat.reshape(self._m, self._m) - self._dense_update(w)
            else:
                S = (self._Bflat - self._Pd @ w).reshape(self._m, self._m)
            if self._has_rest:
                if self._rest_scalar:  # Lambda_e is diagonal: scale rows and columns
                    d = np.ones(self._m)
                    d[:qr] = theta[self._rest_theta_index]
                    S = S * d[:, None] * d[None, :]
                else:
                    lam = self._lam0.copy()
                    lam.ravel()[self._lam_flat] = theta[self._lam_src]
                    S = lam.T @ S @ lam
                S.ravel()[self._rest_diag] += 1.0
            return S
        S, A = self._workspace(), self.A
        # [X y] rows: Xy'Z1 W Z1'Xy and Xy'Z1 W Z1'Zr, dense.
        p1 = self._p1
        if p1 == 1:
            AW = self._xz1 * w
        elif p1 == 2:
            # From the packed entries (contiguous per entry): the same products and sums
            # as _times_level_blocks, without unpacking W (30% less on 1e6 levels).
            l1 = A.xytz1.shape[1]
            w00, w10, w11 = w[:l1], w[l1 : 2 * l1], w[2 * l1 :]
            a0, a1 = A.xytz1[:, :, 0], A.xytz1[:, :, 1]
            AW3 = np.empty(A.xytz1.shape)
            np.multiply(a0, w00, out=AW3[:, :, 0])
            AW3[:, :, 0] += a1 * w10
            np.multiply(a0, w10, out=AW3[:, :, 1])
            AW3[:, :, 1] += a1 * w11
            AW = AW3.reshape(self._xz1.shape)
        else:
            W = _unpack_levels(w, p1, self._tril)  # (level, a, b) layout
            AW = _times_level_blocks(A.xytz1, W).reshape(self._xz1.shape)
        np.subtract(A.xytxy, AW @ self._xz1.T, out=S[qr:, qr:])
        if not self._has_rest:
            return S
        # The update C W C' and [X y]'Z1 W Z1'Zr depend on theta through W alone, i.e. on
        # term 1's entries: an evaluation that changes only the rest terms' entries (the
        # item variance's Hessian values and line searches, BOBYQA's coordinate points)
        # reuses the last pair. Wide rest blocks with users of many items pay ~500 s of
        # CPU per update at 1e8 rows; the kept u has at most half the workspace's size.
        key = theta[: self._t1_index[2]].tobytes()
        if self._update_key == key:
            u, UXr = self._update_kept
        else:
            self._update_key = None
            self._update_kept = None  # freed before the new one is formed
            if p1 == 1:
                u = self._update(w)
                UXr = (A.zrtz1 @ AW.T).T
            else:  # both from C level by level, in the update's threads
                u, UXr = self._pattern.update(w, AW)
            self.rank_updates += 1
            self._update_key, self._update_kept = key, (u, UXr)
        Sf = S.reshape(-1)
        if self._rest_scalar:
            _zero_lower(S, qr)
            d = theta[self._block_theta]
            dd = np.multiply.outer(d, d).ravel()
            scale = dd[self._pos_pair] if self._pos_pair is not None else dd[0]
            if self._rest_in_pattern:
                Sf[self._lower_flat] = (self._base - u) * scale
            else:
                Sf[self._zz_flat] = self._zz_vals * dd[self._zz_pair]
                Sf[self._lower_flat] -= u * scale
            np.subtract(A.xytzr, UXr, out=S[qr:, :qr])
            S[qr:, :qr] *= theta[self._rest_theta_index]
        else:
            S[:qr, :qr] = 0.0  # both triangles: Lambda_r acts from both sides below
            if self._rest_in_pattern:
                v = self._base - u
                Sf[self._lower_flat] = v
                Sf[self._upper_flat] = v[self._upper_src]
            else:
                Sf[self._zz_flat] = self._zz_vals
                Sf[self._zz_upper[0]] = self._zz_upper[1]
                Sf[self._lower_flat] -= u
                Sf[self._upper_flat] -= u[self._upper_src]
            np.subtract(A.xytzr, UXr, out=S[qr:, :qr])
            S[:qr, qr:] = S[qr:, :qr].T
            templates = self.structure.templates(theta)
            # S <- Lambda_e' S Lambda_e in slices of rows / columns: no m x m temporaries.
            for r0 in range(0, self._m, _ROW_BLOCK):
                rows = S[r0 : r0 + _ROW_BLOCK, :qr]
                rows[...] = self._rest_right(rows, templates, theta)
            for c0 in range(0, self._m, _ROW_BLOCK):
                cols = S[:qr, c0 : c0 + _ROW_BLOCK]
                cols[...] = self._rest_right(cols.T, templates, theta).T
        Sf[self._rest_diag] += 1.0
        return S

    def _cholesky(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """``log|L_11|^2`` and ``S`` overwritten by its lower Cholesky factor."""
        theta = np.asarray(theta, dtype=np.float64)
        if not self._dense:
            self._S_theta = None  # the workspace is overwritten: valid again on success
        logdet1, w = self._term1(theta)
        S = self._schur(theta, w)
        # S is C-ordered and symmetric in its lower triangle, so S.T is Fortran-ordered
        # with the same numbers in its upper triangle: LAPACK factors it in place (no
        # copy) as U'U, and U' = L lands in the lower triangle of S.
        U, info = _dpotrf(S.T, lower=0, clean=0, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError("the blocked matrix is not positive definite")
        if not self._dense:
            self._S_theta = theta.tobytes()
        return logdet1, U.T

    def _workspace(self) -> np.ndarray:
        """The m x m workspace of the large path (allocated again after factor() took it)."""
        if self._S is None:
            # Let go of the kept factor first: if nobody else holds it, its m x m array is
            # freed before the new one is allocated (never two at once on our account).
            self._kept = None
            self._S = np.empty((self._m, self._m))
        return self._S

    def factor(self, theta: np.ndarray) -> BlockedFactor:
        """Compute the blocked Cholesky factor at ``theta``.

        Raises
        ------
        numpy.linalg.LinAlgError
            If a block is not positive definite (only for ill-posed X).
        """
        theta = np.asarray(theta, dtype=np.float64)
        if self._dense:
            logdet1, S = self._cholesky(theta)
            L = np.tril(S)  # S is a fresh array; tril clears its stale upper triangle
        else:
            kept = self._kept
            if kept is not None and kept.theta.tobytes() == theta.tobytes():
                return kept
            if self._S is not None and self._S_theta == theta.tobytes():
                # The last evaluation factored this very theta: reuse it.
                logdet1 = self._term1(theta)[0]
                L = self._S
            else:
                logdet1, L = self._cholesky(theta)  # L is the workspace itself
            # Hand the workspace over to the factor: the next evaluation allocates a new
            # one, so a fit keeps one m x m array (the factor) instead of two.
            self._S, self._S_theta = None, None
            _zero_strict_upper(L)
        qr = self._qr
        templates = self.structure.templates(theta)
        logdet_z = logdet1 + 2.0 * float(np.log(np.diagonal(L)[:qr]).sum())
        L22 = LX2 = None
        if self._has_rest:
            L22 = L[:qr, :qr]
            LX2 = L[qr:, :qr]
        LXX = L[qr:, qr:]
        # The per-level pieces of term 1 (for the solutions) are formed when first read.
        f = BlockedFactor(theta.copy(), templates, L22, LX2, LXX, logdet_z, L, self.A.z1tz1)
        if not self._dense:
            self._kept = f
        return f

    def owned_factor(self, theta: np.ndarray) -> tuple[BlockedFactor, bool]:
        """A factor at ``theta`` and whether the caller owns it (may overwrite its arrays).

        The factor :meth:`factor` last handed out is shared (it is returned again for the
        same theta, and a result may hold it): then ``False``. Otherwise a new factor is
        computed and not remembered, so the caller can, e.g., invert it in place
        (:func:`.solution.rest_inverse_in_place`) without a second ``m x m`` array.
        """
        theta = np.asarray(theta, dtype=np.float64)
        if self._dense:
            return self.factor(theta), True  # a fresh array on every call
        kept = self._kept
        if kept is not None and kept.theta.tobytes() == theta.tobytes():
            return kept, False
        f = self.factor(theta)
        self._kept = None
        return f, True

    def release(self, f: BlockedFactor) -> None:
        """Stop handing out ``f`` again (the caller is about to overwrite its arrays).

        :meth:`factor` returns the factor it last computed when asked for the same theta
        again; a caller that reuses that factor's storage (e.g.
        :func:`.solution.rest_inverse_in_place`) releases it first.
        """
        if getattr(self, "_kept", None) is f:
            self._kept = None

    def log_diagonal(self, theta: np.ndarray) -> tuple[float, np.ndarray, float] | None:
        """What the criterion reads at ``theta``: ``log|L_11|^2``, the logs of the other
        diagonal entries of ``L`` but the last (the first :attr:`nz_logs` of them belong to
        ``L_Z``, the rest to ``R_X``) and ``r^2``; None where a block is not positive
        definite. The optimiser's hot path: no more than it needs."""
        if self._dense:
            # _cholesky written out for the small dense path (no workspace to track): a
            # few microseconds per evaluation, so each call layer is a visible share.
            theta = np.asarray(theta, dtype=np.float64)
            try:
                logdet1, w = self._term1(theta)
                S = self._schur(theta, w)
                U, info = _dpotrf(S.T, lower=0, clean=0, overwrite_a=1)
            except (np.linalg.LinAlgError, sla.LinAlgError, FloatingPointError):
                return None
            if info != 0:
                return None
            diag = U.diagonal()
            return logdet1, np.log(diag[:-1]), float(diag[-1]) ** 2
        kept = self._kept
        if kept is not None and kept.theta.tobytes() == np.asarray(theta, float).tobytes():
            diag = kept.L.diagonal()  # factored by factor()
            logdet1 = kept.logdet_z - 2.0 * float(np.log(diag[: self._qr]).sum())
            return logdet1, np.log(diag[:-1]), kept.pwrss
        try:
            logdet1, L = self._cholesky(theta)
        except (np.linalg.LinAlgError, sla.LinAlgError, FloatingPointError):
            return None
        diag = L.diagonal()
        return logdet1, np.log(diag[:-1]), float(diag[-1]) ** 2

    def with_response(self, A: CrossProducts) -> BlockedSystem:
        """The same system for cross products that differ from this one's in the ``y`` row
        and column alone (a refit to a new response, e.g. a parametric bootstrap's).

        The small dense path forms again only what holds ``y``: the last row and column
        of ``B`` and the rows of ``Pd`` for the pairs ``(y, j)`` and ``(i, y)`` (equal, as
        ``Pd`` is symmetric in its pair), the same numbers :meth:`__init__` would give.
        Other systems are built anew (:meth:`with_values`).
        """
        if not self._dense or self._Pd is None:
            return self.with_values(A)
        new = object.__new__(BlockedSystem)
        new.__dict__.update(self.__dict__)
        new.A = A
        m, qr = self._m, self._qr
        B = self._Bflat.reshape(m, m).copy()
        B[-1, qr:] = A.xytxy[-1]
        B[qr:, -1] = A.xytxy[-1]
        if self._has_rest:
            B[-1, :qr] = A.xytzr[-1]
            B[:qr, -1] = A.xytzr[-1]
        new._Bflat = B.ravel()
        C3 = self._C3.copy()
        C3[-1] = A.xytz1[-1]
        new._C3 = C3
        # prod[j, l, a, b] = C_y[l, a] C_j[l, b]: the pairs (y, j), packed as in __init__.
        prod = C3[-1][None, :, :, None] * C3[:, :, None, :]
        r, c = self._tril
        packed = prod[:, :, r, c] + np.where(r != c, prod[:, :, c, r], 0.0)
        rows = np.swapaxes(packed, 1, 2).reshape(m, -1)
        Pd = self._Pd.copy()
        Pd3 = Pd.reshape(m, m, -1)
        Pd3[-1] = rows
        Pd3[:, -1] = rows
        new._Pd = Pd
        return new

    def beta_sigma(self, theta: np.ndarray, reml: bool) -> tuple[np.ndarray, float]:
        """beta-hat and sigma-hat at ``theta`` from the ``[X y]`` block of the factor alone:
        ``R_X' beta = r_Xy`` and ``sigma^2 = r^2 / (n - p)`` (REML) or ``r^2 / n`` (ML).

        What a bootstrap replicate reads at its optimum; on the small dense path one
        factorisation, without the per-level pieces :meth:`factor` adds for the
        conditional modes.
        """
        if self._dense:
            L = self._cholesky(theta)[1]  # its strict upper triangle is stale: not read
        else:
            L = self.factor(theta).L
        qr, p = self._qr, self.p
        LXX = L[qr:, qr:]
        beta = (
            sla.solve_triangular(LXX[:p, :p], LXX[p, :p], lower=True, trans="T", check_finite=False)
            if p
            else np.zeros(0)
        )
        pwrss = float(LXX[p, p]) ** 2
        return beta, float(np.sqrt(pwrss / (self.n - p if reml else self.n)))

    def log_terms(self, theta: np.ndarray) -> tuple[float, float, float] | None:
        """``log|L_Z|^2``, ``log|R_X|^2`` and ``r^2`` at ``theta`` from the diagonal of ``L``
        alone (None where a block is not positive definite)."""
        found = self.log_diagonal(theta)
        if found is None:
            return None
        logdet1, logs, pwrss = found
        qr = self._qr
        return logdet1 + 2.0 * float(logs[:qr].sum()), 2.0 * float(logs[qr:].sum()), pwrss
