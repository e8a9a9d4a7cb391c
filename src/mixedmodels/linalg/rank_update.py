"""The sparse rank update Zr'Z1 W Z1'Zr, as one sparse matrix-vector product per theta.

When term 1 is block diagonal, eliminating it from A leaves the Schur complement
``Zr'Zr - Zr'Z1 W Z1'Zr`` with ``W = blockdiag_l(Lambda1 M_l^{-1} Lambda1')``. The update is
linear in the entries of ``W``: entry (i, j) is ``sum_l sum_ab C[i, l a] W_l[a, b] C[j, l b]``
with ``C = Zr'Z1``. The products ``C[i, l a] C[j, l b]`` do not depend on theta, so they are
collected once in a sparse matrix ``P`` and each evaluation is ``P @ vec(W)`` (cost: the
number of pairs of rows sharing a level of term 1, independent of the number of
observations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def _pairs_within_segments(
    starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All index pairs (u, v) with v <= u inside each segment [start, start + length).

    Pairs come out segment by segment (so level by level), which lets the caller assemble
    ``P`` column-wise without sorting. Returns ``u``, ``v`` and the number of pairs of
    each segment.
    """
    lengths = lengths.astype(np.int64)
    npairs = lengths * (lengths + 1) // 2
    total = int(npairs.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), npairs
    seg_first = np.cumsum(npairs) - npairs
    # Pair number t within its segment -> (a, b) with t = a (a + 1) / 2 + b, 0 <= b <= a.
    t = np.arange(total, dtype=np.int64) - np.repeat(seg_first, npairs)
    a = ((np.sqrt(8.0 * t + 1.0) - 1.0) * 0.5).astype(np.int64)
    # Guard the float square root against rounding at perfect squares.
    a -= (a * (a + 1)) // 2 > t
    a += ((a + 1) * (a + 2)) // 2 <= t
    b = t - a * (a + 1) // 2
    base = np.repeat(starts.astype(np.int64), npairs)
    return base + a, base + b, npairs


@dataclass(frozen=True, eq=False)
class RankUpdatePattern:
    """Precomputed ``P`` with ``P @ W.ravel()`` = lower-triangle entries of ``C W C'``, C = Zr'Z1.

    Every entry of ``P`` is a product of two entries of ``C``. ``ia`` and ``ib`` record
    which (as positions in the CSR data of ``C``; the position ``nnz`` stands for zero), so
    that new values of ``C`` with the same sparsity (e.g. reweighted strata of rows) give a
    new ``P`` without recomputing its structure (:meth:`with_values`).

    Attributes
    ----------
    P
        CSC matrix (npos, l1 * p1 * p1): one column per entry of ``W``, so that the pairs,
        generated level by level, are already in storage order.
    rows, cols
        Row and column (rows >= cols) of ``C W C'`` of each output position, sorted by
        ``rows * size + cols``.
    ia, ib
        Data positions in ``C`` of the two factors of each entry of ``P.data``.
    """

    P: sp.csc_matrix
    rows: np.ndarray
    cols: np.ndarray
    ia: np.ndarray
    ib: np.ndarray

    @classmethod
    def from_cross_products(cls, zrtz1: sp.csr_matrix, p1: int) -> RankUpdatePattern:
        """Build the pattern from ``C = Zr'Z1`` (canonical CSR: sorted indices, no duplicates)."""
        qr = zrtz1.shape[0]
        nnz = zrtz1.nnz
        n_levels = int(zrtz1.shape[1] // p1)
        # A copy of C whose values are their own data positions: the position of every
        # entry survives transposition and reordering (exact in float64 below 2**53).
        carrier = sp.csr_matrix(
            (np.arange(nnz, dtype=np.float64), zrtz1.indices, zrtz1.indptr), shape=zrtz1.shape
        )
        if p1 == 1:
            # Columns are levels: the transposed CSR lists, per level, its sorted rows.
            by_level = carrier.T.tocsr()
            by_level.sort_indices()
            urow = by_level.indices.astype(np.int64)
            V_index = by_level.data.astype(np.int64)[:, None]
            lengths = np.diff(by_level.indptr).astype(np.int64)
            starts = by_level.indptr[:-1].astype(np.int64)
        else:
            coo = carrier.tocoo()
            level = coo.col // p1
            a = coo.col % p1
            # Union of rows touched by each level, sorted by (level, row).
            key = level.astype(np.int64) * qr + coo.row
            ukey, inv = np.unique(key, return_inverse=True)
            ulevel = ukey // qr
            urow = ukey % qr
            V_index = np.full((ukey.shape[0], p1), nnz, dtype=np.int64)  # nnz = "zero"
            V_index[inv, a] = coo.data.astype(np.int64)
            lengths = np.bincount(ulevel, minlength=n_levels).astype(np.int64)
            starts = np.cumsum(lengths) - lengths
        u, v, npairs = _pairs_within_segments(starts, lengths)
        i, j = urow[u], urow[v]  # i >= j because rows are sorted within a level
        # Output positions in the qr x qr lower triangle, numbered without a sort: a dense
        # marker gives the sorted distinct positions, and a dense index (int32: half the
        # size of the dense block the engine keeps anyway; only its touched entries are
        # written) numbers them by one scatter and one gather. A running count over the
        # marker costs 10x more at qr = 10,000 (a cast of every one of the qr^2 entries)
        # and a binary search 30x more.
        pos_key = i * qr + j
        del i, j
        mark = np.zeros(qr * qr, dtype=bool)
        mark[pos_key] = True
        upos = np.flatnonzero(mark)
        del mark
        index_type = np.int32 if upos.shape[0] < 2**31 else np.int64
        rank = np.empty(qr * qr, dtype=index_type)
        rank[upos] = np.arange(upos.shape[0], dtype=index_type)
        pos = rank[pos_key]
        del rank, pos_key
        if p1 == 1:
            # Columns are levels and the pairs come level by level: already CSC order.
            indptr = np.concatenate([[0], np.cumsum(npairs)])
            row_idx, ia_a, ib_a = pos, V_index[u, 0], V_index[v, 0]
        else:
            # Column (level, a, b); stack the p1^2 (a, b) copies of every pair, then one
            # stable sort by column (runs are already sorted by level, so it is cheap).
            lev = np.repeat(np.arange(n_levels, dtype=np.int64), npairs)
            ab = [(aa, bb) for aa in range(p1) for bb in range(p1)]
            col = np.concatenate([lev * p1 * p1 + aa * p1 + bb for aa, bb in ab])
            order = np.argsort(col, kind="stable")
            row_idx = np.concatenate([pos] * len(ab))[order]
            ia_a = np.concatenate([V_index[u, aa] for aa, _ in ab])[order]
            ib_a = np.concatenate([V_index[v, bb] for _, bb in ab])[order]
            per_column = np.bincount(col, minlength=n_levels * p1 * p1)
            indptr = np.concatenate([[0], np.cumsum(per_column)])
        values = np.append(zrtz1.data, 0.0)
        P = sp.csc_matrix(
            (values[ia_a] * values[ib_a], row_idx, indptr),
            shape=(upos.shape[0], n_levels * p1 * p1),
        )
        if nnz < 2**31:  # data positions, kept for with_values: half the memory as int32
            ia_a, ib_a = ia_a.astype(np.int32), ib_a.astype(np.int32)
        return cls(
            P=P,
            rows=(upos // qr).astype(np.intp),
            cols=(upos % qr).astype(np.intp),
            ia=ia_a,
            ib=ib_a,
        )

    def with_values(self, zrtz1_data: np.ndarray) -> RankUpdatePattern:
        """The same pattern for new values of ``C`` (same sparsity, same data order)."""
        values = np.append(zrtz1_data, 0.0)
        P = sp.csc_matrix(
            (values[self.ia] * values[self.ib], self.P.indices, self.P.indptr), shape=self.P.shape
        )
        return RankUpdatePattern(P=P, rows=self.rows, cols=self.cols, ia=self.ia, ib=self.ib)

    def apply(self, W: np.ndarray) -> np.ndarray:
        """Entries at (rows, cols) of C W C' for block-diagonal W of shape (l1, p1, p1)."""
        return self.P @ W.reshape(-1)
