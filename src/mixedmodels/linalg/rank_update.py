"""The sparse rank update Zr'Z1 W Z1'Zr, as one sparse matrix-vector product per theta.

When term 1 is block diagonal, eliminating it from A leaves the Schur complement
``Zr'Zr - Zr'Z1 W Z1'Zr`` with ``W = blockdiag_l(Lambda1 M_l^{-1} Lambda1')``. The update is
linear in the entries of ``W``: entry (i, j) is ``sum_l sum_ab A[i, l a] W_l[a, b] A[j, l b]``.
The products ``A[i, l a] A[j, l b]`` do not depend on theta, so they are collected once in a
sparse matrix ``P`` and each evaluation is ``P @ vec(W)`` (cost: the number of pairs of
rows sharing a level of term 1, independent of the number of observations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def _pairs_within_segments(
    starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (u, v) with v <= u inside each segment [start, start + length)."""
    us, vs = [], []
    for k in np.unique(lengths):
        if k == 0:
            continue
        segs = starts[lengths == k]
        tu, tv = np.tril_indices(int(k))
        us.append((segs[:, None] + tu[None, :]).ravel())
        vs.append((segs[:, None] + tv[None, :]).ravel())
    if not us:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(us), np.concatenate(vs)


@dataclass(frozen=True, eq=False)
class RankUpdatePattern:
    """Precomputed ``P`` with ``P @ W.ravel()`` = lower-triangle entries of Zr'Z1 W Z1'Zr.

    Every entry of ``P`` is a product of two entries of Zr'Z1. ``ia`` and ``ib`` record which
    (as positions in the CSR data of Zr'Z1; the position ``nnz`` stands for zero), so that
    new values of Zr'Z1 with the same sparsity (e.g. reweighted strata of rows) give a new
    ``P`` without recomputing its structure (:meth:`with_values`).

    Attributes
    ----------
    P
        CSR matrix (npos, l1 * p1 * p1).
    rows, cols
        Row and column (rows >= cols) in the rest block of each output position.
    ia, ib
        Data positions in Zr'Z1 of the two factors of each entry of ``P.data``.
    """

    P: sp.csr_matrix
    rows: np.ndarray
    cols: np.ndarray
    ia: np.ndarray
    ib: np.ndarray

    @classmethod
    def from_cross_products(cls, zrtz1: sp.csr_matrix, p1: int) -> RankUpdatePattern:
        """Build the pattern from Zr'Z1 (canonical CSR: sorted indices, no duplicates)."""
        qr = zrtz1.shape[0]
        nnz = zrtz1.nnz
        n_levels = int(zrtz1.shape[1] // p1)
        # A copy of Zr'Z1 whose values are their own data positions: the position of every
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
            ulevel = np.repeat(np.arange(n_levels, dtype=np.int64), lengths)
        else:
            coo = carrier.tocoo()
            level = coo.col // p1
            a = coo.col % p1
            # Union of rest rows touched by each level, sorted by (level, row).
            key = level.astype(np.int64) * qr + coo.row
            ukey, inv = np.unique(key, return_inverse=True)
            ulevel = ukey // qr
            urow = ukey % qr
            V_index = np.full((ukey.shape[0], p1), nnz, dtype=np.int64)  # nnz = "zero"
            V_index[inv, a] = coo.data.astype(np.int64)
            bounds = np.flatnonzero(np.diff(ulevel)) + 1
            starts = np.concatenate([[0], bounds]).astype(np.int64)
            lengths = np.diff(np.concatenate([starts, [ukey.shape[0]]])).astype(np.int64)
        u, v = _pairs_within_segments(starts, lengths)
        i, j = urow[u], urow[v]  # i >= j because rows are sorted within a level
        # Output positions in the q_r x q_r lower triangle, numbered without a sort: the
        # dense marker costs q_r^2 bytes, no more than the dense block the engine keeps.
        pos_key = i * qr + j
        mark = np.zeros(qr * qr, dtype=bool)
        mark[pos_key] = True
        upos = np.flatnonzero(mark)
        pos = (np.cumsum(mark) - 1)[pos_key]
        del mark
        lev = ulevel[u]
        prow, pcol, ia, ib = [], [], [], []
        for aa in range(p1):
            for bb in range(p1):
                prow.append(pos)
                pcol.append(lev * p1 * p1 + aa * p1 + bb)
                ia.append(V_index[u, aa])
                ib.append(V_index[v, bb])
        prow_a, pcol_a = np.concatenate(prow), np.concatenate(pcol)
        ia_a, ib_a = np.concatenate(ia), np.concatenate(ib)
        # Each (position, column) occurs once: rows are unique within a level. Sort into
        # CSR order ourselves so that ia/ib stay aligned with P.data.
        order = np.lexsort((pcol_a, prow_a))
        prow_a, pcol_a, ia_a, ib_a = prow_a[order], pcol_a[order], ia_a[order], ib_a[order]
        indptr = np.zeros(upos.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(prow_a, minlength=upos.shape[0]), out=indptr[1:])
        values = np.append(zrtz1.data, 0.0)
        P = sp.csr_matrix(
            (values[ia_a] * values[ib_a], pcol_a, indptr), shape=(upos.shape[0], n_levels * p1 * p1)
        )
        return cls(
            P=P,
            rows=(upos // qr).astype(np.intp),
            cols=(upos % qr).astype(np.intp),
            ia=ia_a,
            ib=ib_a,
        )

    def with_values(self, zrtz1_data: np.ndarray) -> RankUpdatePattern:
        """The same pattern for new values of Zr'Z1 (same sparsity, same data order)."""
        values = np.append(zrtz1_data, 0.0)
        P = sp.csr_matrix(
            (values[self.ia] * values[self.ib], self.P.indices, self.P.indptr), shape=self.P.shape
        )
        return RankUpdatePattern(P=P, rows=self.rows, cols=self.cols, ia=self.ia, ib=self.ib)

    def apply(self, W: np.ndarray) -> np.ndarray:
        """Entries at (rows, cols) of Zr'Z1 W Z1'Zr for block-diagonal W of shape (l1, p1, p1)."""
        return self.P @ W.reshape(-1)
