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

    Attributes
    ----------
    P
        CSR matrix (npos, l1 * p1 * p1).
    rows, cols
        Row and column (rows >= cols) in the rest block of each output position.
    """

    P: sp.csr_matrix
    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    def from_cross_products(cls, zrtz1: sp.csr_matrix, p1: int) -> RankUpdatePattern:
        qr = zrtz1.shape[0]
        n_levels = int(zrtz1.shape[1] // p1)
        if p1 == 1:
            # Columns are levels: the transposed CSR lists, per level, its sorted rows.
            by_level = zrtz1.T.tocsr()
            by_level.sort_indices()
            urow = by_level.indices.astype(np.int64)
            V = by_level.data[:, None]
            lengths = np.diff(by_level.indptr).astype(np.int64)
            starts = by_level.indptr[:-1].astype(np.int64)
            ulevel = np.repeat(np.arange(n_levels, dtype=np.int64), lengths)
        else:
            coo = zrtz1.tocoo()
            level = coo.col // p1
            a = coo.col % p1
            # Union of rest rows touched by each level, sorted by (level, row).
            key = level.astype(np.int64) * qr + coo.row
            ukey, inv = np.unique(key, return_inverse=True)
            ulevel = ukey // qr
            urow = ukey % qr
            V = np.zeros((ukey.shape[0], p1))
            np.add.at(V, (inv, a), coo.data)
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
        number = np.cumsum(mark) - 1
        pos = number[pos_key]
        del mark, number
        lev = ulevel[u]
        if p1 == 1:
            P = sp.csr_matrix((V[u, 0] * V[v, 0], (pos, lev)), shape=(upos.shape[0], n_levels))
        else:
            data, prow, pcol = [], [], []
            for aa in range(p1):
                for bb in range(p1):
                    data.append(V[u, aa] * V[v, bb])
                    prow.append(pos)
                    pcol.append(lev * p1 * p1 + aa * p1 + bb)
            P = sp.csr_matrix(
                (np.concatenate(data), (np.concatenate(prow), np.concatenate(pcol))),
                shape=(upos.shape[0], n_levels * p1 * p1),
            )
            P.sum_duplicates()
        return cls(P=P, rows=(upos // qr).astype(np.intp), cols=(upos % qr).astype(np.intp))

    def apply(self, W: np.ndarray) -> np.ndarray:
        """Entries at (rows, cols) of Zr'Z1 W Z1'Zr for block-diagonal W of shape (l1, p1, p1)."""
        return self.P @ W.reshape(-1)
