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
            zrtzr = _canonical(zrtzr)
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


def _canonical(M: sp.spmatrix) -> sp.csr_matrix:
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
    l1, p1 = t1.nlevels, t1.ncols
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

    with np.errstate(divide="ignore"):  # a zero weight gives -inf, refused by the model
        log_w = 0.0 if weights is None else float(np.sum(np.log(weights)))
    if len(terms) == 1:
        return CrossProducts(z1tz1, None, None, xytz1, None, xytxy, n, log_w)

    offs = rest_offsets(terms)
    qr = int(offs[-1])
    q1 = t1.nranef
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
        zrtzr = _canonical(
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
