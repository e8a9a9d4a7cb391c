"""The cross-product blocks A = [Z X y]'[Z X y], formed once per fit.

Layout (Bates et al. 2015, sec. 3; MixedModels.jl's blocked A):

* term 1 (the grouping factor with most levels) is block diagonal: ``Z1'Z1`` is stored
  as ``(levels, p1, p1)``;
* terms 2..K ("rest"): ``Zr'Z1`` is sparse; ``Zr'Zr`` (``q_r x q_r``) is dense up to
  ``SPARSE_REST_MIN`` rows and sparse (CSR) above: with one scalar rest term it is
  diagonal, and a dense copy of a large one (800 MB for 10,000 levels) would cost more
  memory than the factorisation itself;
* ``Xy = [X y]`` cross products ``Xy'Z1`` as ``(p+1, levels, p1)``, ``Xy'Zr`` and ``Xy'Xy``
  dense.

Random effects are numbered level-major: column ``level * p_k + j`` of term ``k``.
Every block is a sum over rows, so blocks from chunks of rows add up (``__add__``): the
same code serves in-memory data, streamed chunks and map-reduce on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..covariance import GroupedTerm

#: Above this many rest-block rows, ``Zr'Zr`` is stored sparse (see the module docstring).
#: The choice depends on the size alone, so that blocks of chunks of rows always add up.
SPARSE_REST_MIN = 2048


@dataclass(frozen=True, eq=False)
class CrossProducts:
    """Blocks of A; see the module docstring for the layout.

    Attributes
    ----------
    z1tz1
        (l1, p1, p1) diagonal blocks of Z1'Z1.
    zrtz1
        (q_r, q1) sparse CSR, Zr'Z1 (None if only one term).
    zrtzr
        (q_r, q_r) Zr'Zr (None if only one term): a dense array, or for large rest blocks
        (more than ``SPARSE_REST_MIN`` rows) a sparse CSR matrix with sorted indices.
    xytz1
        (p+1, l1, p1) dense, [X y]'Z1.
    xytzr
        (p+1, q_r) dense, [X y]'Zr (None if only one term).
    xytxy
        (p+1, p+1) dense, [X y]'[X y].
    nobs
        Number of rows summed.
    sum_log_weights
        ``sum_i log w_i`` of the prior weights of those rows (0 without weights): the
        likelihood's Jacobian term, which sums over chunks like the blocks.
    """

    z1tz1: np.ndarray
    zrtz1: sp.csr_matrix | None
    zrtzr: np.ndarray | sp.csr_matrix | None
    xytz1: np.ndarray
    xytzr: np.ndarray | None
    xytxy: np.ndarray
    nobs: int
    sum_log_weights: float = 0.0

    def __add__(self, other: CrossProducts) -> CrossProducts:
        def add(a, b):
            return None if a is None else a + b

        zrtz1 = None if self.zrtz1 is None else (self.zrtz1 + other.zrtz1).tocsr()
        zrtzr = add(self.zrtzr, other.zrtzr)
        if sp.issparse(zrtzr):
            zrtzr = canonical_sparse(zrtzr)
        return CrossProducts(
            z1tz1=self.z1tz1 + other.z1tz1,
            zrtz1=zrtz1,
            zrtzr=zrtzr,
            xytz1=self.xytz1 + other.xytz1,
            xytzr=add(self.xytzr, other.xytzr),
            xytxy=self.xytxy + other.xytxy,
            nobs=self.nobs + other.nobs,
            sum_log_weights=self.sum_log_weights + other.sum_log_weights,
        )

    def zrtzr_lower(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and value of every nonzero of Zr'Zr's lower triangle, row-major.

        The same for both storage kinds, so that the deviance reads ``Zr'Zr`` without a
        dense copy of a sparse one.
        """
        Z = self.zrtzr
        if Z is None:
            raise ValueError("no rest block: the model has one random-effects term")
        if sp.issparse(Z):
            coo = Z.tocoo()
            rows, cols, vals = coo.row.astype(np.intp), coo.col.astype(np.intp), coo.data
            keep = (rows >= cols) & (vals != 0.0)
            rows, cols, vals = rows[keep], cols[keep], vals[keep]
            order = np.lexsort((cols, rows))
            return rows[order], cols[order], vals[order]
        rows, cols = np.nonzero(np.tril(Z))
        return rows, cols, Z[rows, cols]

    def zrtzr_diagonal(self) -> np.ndarray:
        """The diagonal of Zr'Zr, whatever its storage."""
        if self.zrtzr is None:
            raise ValueError("no rest block: the model has one random-effects term")
        if sp.issparse(self.zrtzr):
            return np.asarray(self.zrtzr.diagonal())
        return np.diagonal(self.zrtzr).copy()


def canonical_sparse(M: sp.spmatrix) -> sp.csr_matrix:
    """CSR with duplicates summed, explicit zeros kept out and indices sorted."""
    M = M.tocsr()
    M.sum_duplicates()
    M.eliminate_zeros()
    M.sort_indices()
    return M


def rest_offsets(terms: tuple[GroupedTerm, ...]) -> np.ndarray:
    """Start of each rest term (terms[1:]) in the rest block, plus the total size."""
    sizes = [t.nranef for t in terms[1:]]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _term_columns(term: GroupedTerm, refs: np.ndarray, j: int) -> np.ndarray:
    return refs * term.ncols + j


def compute_cross_products(
    terms: tuple[GroupedTerm, ...],
    X: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None = None,
    refs: list[np.ndarray] | None = None,
    zs: list[np.ndarray] | None = None,
    sparse_rest: bool | None = None,
    nlevels1: int | None = None,
) -> CrossProducts:
    """Form the blocks of A from rows, in one vectorised pass.

    Parameters
    ----------
    terms
        Grouped random-effects terms in engine order.
    X, y
        Fixed-effects matrix (n, p) and response (n,).
    weights
        Optional non-negative row weights (n,): A = [Z X y]' W [Z X y].
    refs, zs
        Level indices and term matrices of these rows, one per term; default: the terms'
        own (for chunked data the caller passes the chunk's).
    sparse_rest
        Store ``Zr'Zr`` sparse (True) or dense (False); default: sparse when the rest
        block has more than ``SPARSE_REST_MIN`` rows.
    nlevels1
        Number of term-1 levels that ``refs[0]`` indexes (default: the term's own). A
        chunk passes the levels present in it, renumbered (:meth:`.ChunkPlan.cross_products`),
        so that its term-1 blocks are sized by its rows, not by all levels.

    Returns
    -------
    CrossProducts
    """
    if refs is None:
        refs = [t.refs for t in terms]
    if zs is None:
        zs = [t.z for t in terms]
    n = y.shape[0]
    xy = np.empty((n, X.shape[1] + 1))
    xy[:, :-1] = X
    xy[:, -1] = y
    wxy = xy if weights is None else xy * weights[:, None]

    t1 = terms[0]
    l1, p1 = (t1.nlevels if nlevels1 is None else int(nlevels1)), t1.ncols
    r1, z1 = refs[0], zs[0]
    wz1 = z1 if weights is None else z1 * weights[:, None]

    # Z1'Z1 blocks: per level, sum of z z' over its rows.
    z1tz1 = np.empty((l1, p1, p1))
    for a in range(p1):
        for b in range(a, p1):
            s = np.bincount(r1, weights=wz1[:, a] * z1[:, b], minlength=l1)
            z1tz1[:, a, b] = s
            z1tz1[:, b, a] = s

    # [X y]'Z1 as (p+1, l1, p1)
    xytz1 = np.empty((xy.shape[1], l1, p1))
    for j in range(p1):
        for c in range(xy.shape[1]):
            xytz1[c, :, j] = np.bincount(r1, weights=wxy[:, c] * z1[:, j], minlength=l1)

    xytxy = wxy.T @ xy

    log_w = 0.0
    if weights is not None:  # (no errstate context, Python code, for unweighted fits)
        with np.errstate(divide="ignore"):  # a zero weight gives -inf, refused by the model
            log_w = float(np.sum(np.log(weights)))
    if len(terms) == 1:
        return CrossProducts(z1tz1, None, None, xytz1, None, xytxy, n, log_w)

    offs = rest_offsets(terms)
    qr = int(offs[-1])
    q1 = l1 * p1
    # Columns of each rest term, as rest-block indices, one array per column j.
    rest_cols: list[tuple[np.ndarray, np.ndarray]] = []  # (index (n,), z column (n,))
    for k, term in enumerate(terms[1:], start=1):
        for j in range(term.ncols):
            rest_cols.append((offs[k - 1] + _term_columns(term, refs[k], j), zs[k][:, j]))

    # Zr'Z1 sparse: entries (rest index, term-1 index) summed over rows.
    rows_idx, cols_idx, vals = [], [], []
    for ridx, rz in rest_cols:
        for j in range(p1):
            rows_idx.append(ridx)
            cols_idx.append(_term_columns(t1, r1, j))
            vals.append(rz * wz1[:, j])
    zrtz1 = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows_idx), np.concatenate(cols_idx))),
        shape=(qr, q1),
    ).tocsr()
    zrtz1.sum_duplicates()
    zrtz1.eliminate_zeros()
    zrtz1.sort_indices()

    if sparse_rest is None:
        sparse_rest = qr > SPARSE_REST_MIN
    if sparse_rest:
        # Zr'Zr sparse: (row, col) entries of every pair of rest columns, both orders off
        # the diagonal, summed by the COO -> CSR conversion. Never a q_r x q_r array.
        rows_idx, cols_idx, vals = [], [], []
        for ia, (ra, za) in enumerate(rest_cols):
            wza = za if weights is None else za * weights
            for ib, (rb, zb) in enumerate(rest_cols):
                if ib < ia:
                    continue
                v = wza * zb
                rows_idx.append(ra)
                cols_idx.append(rb)
                vals.append(v)
                if ib != ia:
                    rows_idx.append(rb)
                    cols_idx.append(ra)
                    vals.append(v)
        zrtzr = canonical_sparse(
            sp.coo_matrix(
                (np.concatenate(vals), (np.concatenate(rows_idx), np.concatenate(cols_idx))),
                shape=(qr, qr),
            )
        )
    else:
        # Zr'Zr dense, via a flat bincount over (row, col) pairs.
        zrtzr = np.zeros(qr * qr)
        for ia, (ra, za) in enumerate(rest_cols):
            wza = za if weights is None else za * weights
            for ib, (rb, zb) in enumerate(rest_cols):
                if ib < ia:
                    continue
                flat = np.bincount(ra * qr + rb, weights=wza * zb, minlength=qr * qr)
                zrtzr += flat
                if ib != ia:
                    zrtzr += flat.reshape(qr, qr).T.ravel()
        zrtzr = zrtzr.reshape(qr, qr)

    xytzr = np.zeros((xy.shape[1], qr))
    for ridx, rz in rest_cols:
        for c in range(xy.shape[1]):
            xytzr[c] += np.bincount(ridx, weights=wxy[:, c] * rz, minlength=qr)

    return CrossProducts(z1tz1, zrtz1, zrtzr, xytz1, xytzr, xytxy, n, log_w)


@dataclass(frozen=True, eq=False)
class StratifiedCrossProducts:
    """Cross products of each stratum of rows, for residual variances that differ by stratum.

    With ``Var(e_i) = sigma^2 delta_g(i)^2``, scaling row ``i`` by ``1 / delta_g(i)`` gives a
    homoscedastic model whose cross products are ``sum_g A_g / delta_g^2``
    (:meth:`combine`). Zr'Z1 of every stratum is stored on the union sparsity pattern, so
    the combination has a fixed structure.

    Attributes
    ----------
    strata
        Per-stratum blocks (their ``zrtz1`` on the union pattern).
    counts
        Number of rows in each stratum.
    """

    strata: tuple[CrossProducts, ...]
    counts: np.ndarray

    def combine(self, weights: np.ndarray) -> CrossProducts:
        """``sum_g weights[g] * A_g``."""

        def wsum(attr):
            parts = [getattr(a, attr) for a in self.strata]
            if parts[0] is None:
                return None
            out = parts[0] * weights[0]
            for w, part in zip(weights[1:], parts[1:], strict=True):
                out = out + part * w
            return out

        zrtz1 = None
        first = self.strata[0].zrtz1
        if first is not None:
            data = sum(w * a.zrtz1.data for w, a in zip(weights, self.strata, strict=True))
            zrtz1 = sp.csr_matrix((data, first.indices, first.indptr), shape=first.shape)
        return CrossProducts(
            z1tz1=wsum("z1tz1"),
            zrtz1=zrtz1,
            zrtzr=wsum("zrtzr"),
            xytz1=wsum("xytz1"),
            xytzr=wsum("xytzr"),
            xytxy=wsum("xytxy"),
            nobs=int(self.counts.sum()),
            sum_log_weights=sum(a.sum_log_weights for a in self.strata),
        )

    def transform_xy(self, M: np.ndarray) -> StratifiedCrossProducts:
        """Every stratum's blocks with ``[X y]`` mapped by ``M`` (see :func:`transform_xy`)."""
        return StratifiedCrossProducts(
            strata=tuple(transform_xy(a, M) for a in self.strata), counts=self.counts
        )


def compute_stratified_cross_products(
    terms: tuple[GroupedTerm, ...],
    X: np.ndarray,
    y: np.ndarray,
    strata: np.ndarray,
    nstrata: int,
    weights: np.ndarray | None = None,
) -> StratifiedCrossProducts:
    """Cross products of the rows of each stratum (``strata`` holds 0..nstrata-1 per row),
    weighted by ``weights`` if given."""
    parts = []
    for g in range(nstrata):
        rows = np.flatnonzero(strata == g)
        parts.append(
            compute_cross_products(
                terms,
                X[rows],
                y[rows],
                weights=None if weights is None else weights[rows],
                refs=[t.refs[rows] for t in terms],
                zs=[t.z[rows] for t in terms],
            )
        )
    if parts[0].zrtz1 is not None:
        # Put every stratum's Zr'Z1 on the union pattern (canonical CSR order).
        ncols = parts[0].zrtz1.shape[1]

        def keys(m):
            rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
            return rows * ncols + m.indices

        union = np.unique(np.concatenate([keys(p.zrtz1) for p in parts]))
        shape = parts[0].zrtz1.shape
        indptr = np.zeros(shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(union // ncols, minlength=shape[0]), out=indptr[1:])
        indices = (union % ncols).astype(np.int32)
        aligned = []
        for part in parts:
            data = np.zeros(union.shape[0])
            data[np.searchsorted(union, keys(part.zrtz1))] = part.zrtz1.data
            aligned.append(
                CrossProducts(
                    z1tz1=part.z1tz1,
                    zrtz1=sp.csr_matrix((data, indices, indptr), shape=shape),
                    zrtzr=part.zrtzr,
                    xytz1=part.xytz1,
                    xytzr=part.xytzr,
                    xytxy=part.xytxy,
                    nobs=part.nobs,
                    sum_log_weights=part.sum_log_weights,
                )
            )
        parts = aligned
    counts = np.array([p.nobs for p in parts], dtype=np.int64)
    return StratifiedCrossProducts(strata=tuple(parts), counts=counts)


def transform_xy(A: CrossProducts, M: np.ndarray) -> CrossProducts:
    """The blocks of ``[Z X' y']`` where ``[X' y'] = [X y] M'`` (``M``: (p' + 1, p + 1)).

    A linear map of the ``[X y]`` columns maps their cross products without the rows:
    ``[X y]'Z -> M [X y]'Z`` and ``[X y]'[X y] -> M [X y]'[X y] M'``. Moving ``b x_j`` into
    the response (a fixed-effect profile) or dropping columns is such a map.
    """
    return CrossProducts(
        z1tz1=A.z1tz1,
        zrtz1=A.zrtz1,
        zrtzr=A.zrtzr,
        xytz1=np.tensordot(M, A.xytz1, axes=1),
        xytzr=None if A.xytzr is None else M @ A.xytzr,
        xytxy=M @ A.xytxy @ M.T,
        nobs=A.nobs,
        sum_log_weights=A.sum_log_weights,
    )


def response_products(
    terms: tuple[GroupedTerm, ...],
    X: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """``[Z X y]' W y``: the last row of ``A`` for the response ``y`` (length ``q + p + 1``).

    Random effects in engine order, level-major (column ``level * p_k + j`` of term ``k``),
    as the dense ``A`` of :mod:`.dense` and, split, the ``y`` rows of ``xytz1``/``xytzr``.
    A new response changes nothing else of ``A`` (a parametric bootstrap's refit).
    """
    wy = y if weights is None else weights * y
    parts = []
    for term in terms:
        if term.ncols == 1:
            parts.append(np.bincount(term.refs, weights=term.z[:, 0] * wy, minlength=term.nlevels))
            continue
        cols = np.empty((term.nlevels, term.ncols))
        for j in range(term.ncols):
            cols[:, j] = np.bincount(term.refs, weights=term.z[:, j] * wy, minlength=term.nlevels)
        parts.append(cols.ravel())
    parts.append(X.T @ wy)
    parts.append(np.array([wy @ y]))
    return np.concatenate(parts)


def with_response_products(A: CrossProducts, v: np.ndarray) -> CrossProducts:
    """The blocks ``A`` with their ``y`` row and column replaced by ``v``
    (:func:`response_products` of a new response; nothing else changes)."""
    l1, p1 = A.xytz1.shape[1], A.xytz1.shape[2]
    q1 = l1 * p1
    p = A.xytxy.shape[0] - 1
    xytz1 = A.xytz1.copy()
    xytz1[-1] = v[:q1].reshape(l1, p1)
    xytzr = None
    if A.xytzr is not None:
        xytzr = A.xytzr.copy()
        xytzr[-1] = v[q1 : v.shape[0] - p - 1]
    xytxy = A.xytxy.copy()
    xytxy[-1, :] = v[-p - 1 :]
    xytxy[:, -1] = v[-p - 1 :]
    return CrossProducts(
        z1tz1=A.z1tz1,
        zrtz1=A.zrtz1,
        zrtzr=A.zrtzr,
        xytz1=xytz1,
        xytzr=xytzr,
        xytxy=xytxy,
        nobs=A.nobs,
        sum_log_weights=A.sum_log_weights,
    )


class CrossProductPlan:
    """The blocks of ``A = [Z X y]' W [Z X y]`` for fixed rows ``Z`` and ``X``, set up once.

    Penalised iteratively reweighted least squares (PIRLS, Bates et al. 2015, sec. 5)
    forms ``A`` anew at every step with new row weights ``W`` and a new working response
    ``y``, while ``Z`` and ``X`` (hence the sparsity of every block) stay the same. The plan
    finds, once, where each row's products land in the sparse blocks; each call is then a
    few ``bincount`` passes over the rows, with no sparse-matrix assembly. The blocks are
    those of :func:`compute_cross_products` (same layout and storage, so a system built on
    the first call takes the later ones through ``with_values``), except that a sparse
    block keeps the positions of entries that happen to be zero for some weights.

    Parameters
    ----------
    terms
        Grouped random-effects terms in engine order.
    X
        (n, p) fixed-effects columns (p may be 0: a linear predictor with ``X beta``
        held fixed, as PIRLS for the random effects alone).
    sparse_rest
        As for :func:`compute_cross_products`.
    dense_rest_first
        Give ``Zr'Z1`` as a dense array (for a single-use dense system, which reads it
        dense anyway; assembling a sparse matrix costs more than the sums themselves).
    """

    def __init__(
        self,
        terms: tuple[GroupedTerm, ...],
        X: np.ndarray,
        sparse_rest: bool | None = None,
        dense_rest_first: bool = False,
    ):
        self._dense_zr1 = dense_rest_first
        self.terms = terms
        self.X = np.asarray(X, dtype=np.float64)
        n, p = self.X.shape
        self.n = n
        t1 = terms[0]
        self._l1, self._p1 = l1, p1 = t1.nlevels, t1.ncols
        # Row i's entry of column c of [X y]'Z1 lands at c * l1 + refs1[i] (one bincount).
        self._xz1_index = (np.arange(p + 1)[:, None] * l1 + t1.refs[None, :]).ravel()
        # Skipped products only for one column of ones: the products below index wz1's p1
        # columns (a term of several columns of ones, e.g. two (1 | g) merged, keeps z).
        self._z1 = _ones_or(t1.z) if p1 == 1 else t1.z
        self._has_rest = len(terms) > 1
        if not self._has_rest:
            return
        offs = rest_offsets(terms)
        self._qr = qr = int(offs[-1])
        q1 = t1.nranef
        self._rest_cols = [
            (offs[k - 1] + _term_columns(term, term.refs, j), term.z[:, j])
            for k, term in enumerate(terms[1:], start=1)
            for j in range(term.ncols)
        ]
        # Zr'Z1: every (rest column, term-1 column) pair of every row, mapped to its CSR slot.
        keys = np.concatenate(
            [
                ridx * q1 + _term_columns(t1, t1.refs, j)
                for ridx, _ in self._rest_cols
                for j in range(p1)
            ]
        )
        self._zr1_dense_slot = keys
        slots, self._zr1_slot = np.unique(keys, return_inverse=True)
        rows, cols = slots // q1, slots % q1
        self._zr1_shape = (qr, q1)
        self._zr1_indices = cols.astype(np.int32)
        self._zr1_indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=qr))])
        self._zr1_nnz = slots.shape[0]
        self._sparse_rest = qr > SPARSE_REST_MIN if sparse_rest is None else sparse_rest
        # Zr'Zr: both orders of every pair off the diagonal, as flat (row, col) keys.
        pair_keys, self._rr_pairs = [], []
        for ia, (ra, za) in enumerate(self._rest_cols):
            for ib, (rb, zb) in enumerate(self._rest_cols):
                if ib < ia:
                    continue
                self._rr_pairs.append((za, zb, ib != ia))
                pair_keys.append(ra * qr + rb)
                if ib != ia:
                    pair_keys.append(rb * qr + ra)
        self._rest_cols_z = [(ridx, _ones_or(rz)) for ridx, rz in self._rest_cols]
        self._rr_pairs_z = [(_ones_or(za), _ones_or(zb), both) for za, zb, both in self._rr_pairs]
        keys = np.concatenate(pair_keys)
        if self._sparse_rest:
            slots, self._rr_slot = np.unique(keys, return_inverse=True)
            rows, cols = slots // qr, slots % qr
            self._rr_indices = cols.astype(np.int32)
            self._rr_indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=qr))])
            self._rr_nnz = slots.shape[0]
        else:
            self._rr_slot, self._rr_nnz = keys, qr * qr
        self._xzr_index = [
            (np.arange(p + 1)[:, None] * qr + ridx[None, :]).ravel() for ridx, _ in self._rest_cols
        ]

    def __call__(
        self, weights: np.ndarray, y: np.ndarray, *, log_weights: bool = True
    ) -> CrossProducts:
        """The blocks for row weights ``weights`` (n,) and response ``y`` (n,).

        ``log_weights=False`` skips ``sum log w`` (a linear mixed model's Jacobian term;
        PIRLS' working weights need none) and records 0.
        """
        n, l1, p1 = self.n, self._l1, self._p1
        t1 = self.terms[0]
        m = self.X.shape[1] + 1
        if m == 1:
            xy = y[:, None]
        else:
            xy = np.empty((n, m))
            xy[:, :-1] = self.X
            xy[:, -1] = y
        wxy = xy * weights[:, None]
        z1 = self._z1  # None: a column of ones (random intercepts), no products needed
        wz1 = weights[:, None] if z1 is None else t1.z * weights[:, None]
        z1tz1 = np.empty((l1, p1, p1))
        for a in range(p1):
            for b in range(a, p1):
                v = wz1[:, a] if z1 is None else wz1[:, a] * z1[:, b]
                s = np.bincount(t1.refs, weights=v, minlength=l1)
                z1tz1[:, a, b] = s
                z1tz1[:, b, a] = s
        xytz1 = np.empty((m, l1, p1))
        for j in range(p1):
            v = wxy if z1 is None else wxy * z1[:, j : j + 1]
            xytz1[:, :, j] = np.bincount(
                self._xz1_index, weights=v.T.ravel(), minlength=m * l1
            ).reshape(m, l1)
        xytxy = wxy.T @ xy
        log_w = float(np.sum(np.log(weights))) if log_weights else 0.0
        if not self._has_rest:
            return CrossProducts(z1tz1, None, None, xytz1, None, xytxy, n, log_w)
        qr = self._qr
        parts = [
            wz1[:, j] if rz is None else rz * wz1[:, j]
            for _, rz in self._rest_cols_z
            for j in range(p1)
        ]
        vals = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if self._dense_zr1:
            zrtz1 = np.bincount(
                self._zr1_dense_slot, weights=vals, minlength=qr * self._zr1_shape[1]
            ).reshape(self._zr1_shape)
        else:
            data = np.bincount(self._zr1_slot, weights=vals, minlength=self._zr1_nnz)
            zrtz1 = sp.csr_matrix(
                (data, self._zr1_indices, self._zr1_indptr), shape=self._zr1_shape
            )
        parts = []
        for za, zb, both in self._rr_pairs_z:
            v = weights if za is None and zb is None else _times(_times(weights, za), zb)
            parts.append(v)
            if both:
                parts.append(v)
        rr = np.bincount(
            self._rr_slot,
            weights=parts[0] if len(parts) == 1 else np.concatenate(parts),
            minlength=self._rr_nnz,
        )
        if self._sparse_rest:
            zrtzr = sp.csr_matrix((rr, self._rr_indices, self._rr_indptr), shape=(qr, qr))
        else:
            zrtzr = rr.reshape(qr, qr)
        xytzr = np.zeros((m, qr))
        for index, (_, rz) in zip(self._xzr_index, self._rest_cols_z, strict=True):
            v = wxy if rz is None else wxy * rz[:, None]
            xytzr += np.bincount(index, weights=v.T.ravel(), minlength=m * qr).reshape(m, qr)
        return CrossProducts(z1tz1, zrtz1, zrtzr, xytz1, xytzr, xytxy, n, log_w)


def _ones_or(z: np.ndarray) -> np.ndarray | None:
    """None for a column (or matrix) of ones, else ``z``: products with it can be skipped."""
    return None if np.all(z == 1.0) else z


def _times(a: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    return a if b is None else a * b
