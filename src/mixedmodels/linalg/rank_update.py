"""The sparse rank update Zr'Z1 W Z1'Zr, as one sparse matrix-vector product per theta.

When term 1 is block diagonal, eliminating it from A leaves the Schur complement
``Zr'Zr - Zr'Z1 W Z1'Zr`` with ``W = blockdiag_l(Lambda1 M_l^{-1} Lambda1')``. The update is
linear in the entries of ``W``: entry (i, j) is ``sum_l sum_ab C[i, l a] W_l[a, b] C[j, l b]``
with ``C = Zr'Z1``. The products ``C[i, l a] C[j, l b]`` do not depend on theta, so they are
collected once in a sparse matrix ``P`` and each evaluation is ``P @ vec(W)`` (cost: the
number of pairs of rows sharing a level of term 1, independent of the number of
observations).

For a term 1 with a vector template (``p1 >= 2``, e.g. a random slope per user) ``P``
would hold ``p1 (p1 + 1) / 2`` products per pair: for 1e6 users with 10 items each,
1.65e8 entries (2 GB). :class:`LevelBlockUpdate` stores ``C`` itself, level by level, and
forms the pairs' values at each evaluation instead (``C_l (W_l C_l')`` for the levels with
the same number of rows at once): a tenth of the memory and no slower per evaluation.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from mixedmodels.linalg.blas_nogil import syrk_lower, trsm_upper_transposed
from mixedmodels.linalg.blas_threads import blas_threads_for
from mixedmodels.linalg.memory import available_bytes

try:  # y += A x for CSC/CSR A, in place, without building a matrix (release the GIL)
    from scipy.sparse._sparsetools import csc_matvec as _csc_matvec
    from scipy.sparse._sparsetools import csc_matvecs as _csc_matvecs
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # pragma: no cover - a SciPy without the private kernels
    _csc_matvec = None

    def _csc_matvecs(nrow, ncol, nvec, indptr, indices, data, X, Y):
        Y += (
            sp.csc_matrix((data, indices, indptr), shape=(nrow, ncol)) @ X.reshape(ncol, nvec)
        ).ravel()

    def _csr_matvecs(nrow, ncol, nvec, indptr, indices, data, X, Y):
        Y += (
            sp.csr_matrix((data, indices, indptr), shape=(nrow, ncol)) @ X.reshape(ncol, nvec)
        ).ravel()


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
    p1: int = 1

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
            p1=p1,
        )

    def with_values(self, zrtz1_data: np.ndarray) -> RankUpdatePattern:
        """The same pattern for new values of ``C`` (same sparsity, same data order)."""
        values = np.append(zrtz1_data, 0.0)
        P = sp.csc_matrix(
            (values[self.ia] * values[self.ib], self.P.indices, self.P.indptr), shape=self.P.shape
        )
        return RankUpdatePattern(
            P=P, rows=self.rows, cols=self.cols, ia=self.ia, ib=self.ib, p1=self.p1
        )

    def apply(self, W: np.ndarray) -> np.ndarray:
        """Entries at (rows, cols) of C W C' for block-diagonal W of shape (l1, p1, p1)."""
        return self.P @ W.reshape(-1)

    def level_forms(self, sigma: np.ndarray) -> np.ndarray:
        """``C_l' Sigma C_l`` for every level ``l`` of term 1, (l1, p1, p1), from the entries
        ``sigma`` of a symmetric ``Sigma`` at the pattern's positions (``P' sigma``, with the
        entries off the diagonal counted for both orders)."""
        p1 = self.p1
        nlevels = self.P.shape[1] // (p1 * p1)
        sigma_off = np.where(self.rows != self.cols, sigma, 0.0)
        Pt = self.P.T.tocsr()
        K = (Pt @ sigma).reshape(nlevels, p1, p1)
        K += np.swapaxes((Pt @ sigma_off).reshape(nlevels, p1, p1), 1, 2)
        return K


#: Pairs per slice of levels in :class:`LevelBlockUpdate`: bounds its temporaries (a few
#: arrays of this many doubles) while keeping numpy's per-call overhead negligible.
_SLICE_PAIRS = 1 << 20
#: Pairs per piece of :meth:`LevelBlockUpdate.update`: its half-dozen temporaries of this
#: many doubles stay in cache (128k pairs: 1 MB each; 8k-pair pieces cost more in numpy
#: calls, 1M-pair ones 20% more in memory traffic at 1e5 users), where slices of
#: ``_SLICE_PAIRS`` made every step a pass over main memory.
_CACHE_PAIRS = 1 << 17
#: From this many pairs on, :meth:`LevelBlockUpdate.update` splits its pieces over
#: ``UPDATE_THREADS`` threads (numpy and the scatter release the GIL); below, a thread's
#: start costs more than it saves.
_THREAD_MIN_PAIRS = 1 << 21
#: From this many rest rows per level on, the pair layouts form each level's ``k x k``
#: block by a batched matrix product (then gather its lower triangle), below by gathers
#: per column and pair (ns per pair, numpy, one thread: k = 7: 6.8 gathers / 9.4 product;
#: 10: 6.8 / 6.0; 20: 5.9 / 3.6; 95: 5.4 / 2.7).
_MATMUL_MIN_K = 10
#: Threads of :meth:`LevelBlockUpdate.update` on large problems (1: none). Started per call
#: and joined before it returns, so no thread outlives a call (a forked child finds none).
UPDATE_THREADS = min(2, os.cpu_count() or 1)
#: Largest stored pair positions (an int32 per pair, bytes) of :class:`LevelBlockUpdate`;
#: past it (or past a quarter of the memory available at set-up) each piece computes its
#: positions from the items instead (pair-free layouts). Stored positions are faster while
#: they fit: 4.1 against 5.1 s of CPU per update at 4.6e8 pairs (1e7 rows, 1e5 users of
#: 100 events, 1e3 items; 1.8 GB of positions), 0.073 against 0.096 s at 5.5e6.
STORED_POSITIONS_MAX_BYTES = 4 << 30
#: Pair-free layouts add into a dense packed lower triangle of the rest block when at
#: least this share of its ``q_r (q_r + 1) / 2`` entries are positions of the update, and
#: go through a rank table (packed entry -> position) below.
_DENSE_TARGET_FILL = 0.25


#: Levels' columns per dense chunk of the ``"blas"`` layout: ``q_r x 512`` doubles (4 MB
#: at 1e3 rest rows) per thread, wide enough for ``dsyrk`` to run at BLAS speed.
_BLAS_COLUMNS = 512
#: The ``"blas"`` layout is chosen when its dense products, ``q_r^2`` multiply-adds per
#: column of a level (``dsyrk`` of dense chunks with every rest row), are at most this
#: many times the update's pairs ``k (k + 1) / 2``. Measured at 1e3 rest rows (one BLAS
#: thread per update thread, load 3-4): ``dsyrk`` ~0.05 ns per multiply-add, the level
#: forms' ``dgemm`` ~0.06, against 6.5-10 ns per pair in the pair layouts (stored / pair-free)
#: and 9-12 ns per pair of their level forms: break-even ~150-230. At 121 (1e4 levels of
#: ~181 of 1e3 rows, fill 0.18) the dense products already took 0.68 s per update against
#: 0.84 stored and 1.30 pair-free (level forms 1.04 / 1.20 / 1.93).
BLAS_FLOPS_PER_PAIR = 128
#: Rest rows from which the pair layouts' packed triangle (``q_r^2 / 2`` doubles: 16 MB
#: at 2048, this machine's L3) leaves the cache: each pair's addition is then a miss, and
#: the ``"blas"`` layout is chosen up to ``WIDE_PAIR_FACTOR`` times more dense products
#: per pair. Measured at ``q_r = 10^4`` (1000 users of ~582 of 1e4 items, ratio 1176,
#: 1.7e8 pairs, 5 interleaved rounds at load 7-10): pair-free 17.7 s of CPU per update
#: (~104 ns per pair), dense products 7.0 s (0.035 ns per ``q_r^2 x column``); 1000 users
#: of ~951 items (ratio 444): 22.5 against 7.6 s.
WIDE_PAIR_ROWS = 2048
#: See ``WIDE_PAIR_ROWS``: break-even measured near 3000 dense products per pair there.
WIDE_PAIR_FACTOR = 8


def choose_layout(
    npairs: int,
    npos: int,
    qr: int,
    available: int | None = None,
    columns: int = 0,
    threads: int = 1,
) -> str:
    """How :class:`LevelBlockUpdate` forms its products and finds their output positions,
    from sizes.

    ``"blas"``: the levels' columns ``C_l L_l`` (``W_l = L_l L_l'``) scattered into dense
    ``q_r x`` :data:`_BLAS_COLUMNS` chunks, each added by one ``dsyrk`` into a dense
    ``q_r x q_r`` block per thread; chosen when ``q_r^2 columns`` (its multiply-adds, with
    ``columns`` = ``p1`` times the levels with rest rows) is at most
    :data:`BLAS_FLOPS_PER_PAIR` times ``npairs`` (:data:`WIDE_PAIR_FACTOR` times that from
    :data:`WIDE_PAIR_ROWS` rest rows on) and its ``threads + 1`` dense blocks take
    at most a quarter of ``available`` (users with many items among few: each user's
    ``k`` items fill a good part of the rest rows, ``k / q_r`` large).
    Else the pair layouts, which form one product per pair: ``"stored"``: one int32 per
    pair, kept (``4 npairs`` bytes, at most ``STORED_POSITIONS_MAX_BYTES`` and a quarter
    of ``available``, the bytes of memory available when known); ``"dense"``: computed
    per piece as the packed lower-triangle entry ``i (i + 1) / 2 + j`` of the items
    ``i >= j`` and added into a dense packed triangle of ``q_r (q_r + 1) / 2`` doubles per
    thread (when at least ``_DENSE_TARGET_FILL`` of it are positions); ``"rank"``: the
    same entry mapped to its position through a table of ``q_r (q_r + 1) / 2`` integers.
    The three pair layouts add the same products in the same order into each position:
    their results agree to the bit; ``"blas"`` sums in BLAS's order (equal to rounding).
    ``npos`` is read only for the pair layouts (None: not known yet).
    """
    dense_bytes = 8 * qr * qr * (threads + 1)
    per_pair = BLAS_FLOPS_PER_PAIR * (WIDE_PAIR_FACTOR if qr >= WIDE_PAIR_ROWS else 1)
    if (
        columns > 0
        and qr * qr * columns <= per_pair * npairs
        and (available is None or 4 * dense_bytes <= available)
    ):
        return "blas"
    need = 4 * npairs
    if need <= STORED_POSITIONS_MAX_BYTES and (available is None or 4 * need <= available):
        return "stored"
    tri = qr * (qr + 1) // 2
    return "dense" if npos >= _DENSE_TARGET_FILL * tri else "rank"


def _pair_keys(items: np.ndarray, tri: np.ndarray, ta: np.ndarray, tb: np.ndarray) -> np.ndarray:
    """Packed lower-triangle entries ``i (i + 1) / 2 + j`` of the pairs ``(ta, tb)`` of each
    row of ``items`` (n, k), ascending, so ``i = items[:, ta] >= j = items[:, tb]``: one
    gather of the k starts ``tri[items]`` per level, then two gathers and an add per pair."""
    keys = np.take(tri[items], ta, axis=1)
    keys += np.take(items, tb, axis=1)
    return keys


def _unpack_lower(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column ``i >= j`` of packed lower-triangle entries ``t = i (i + 1) / 2 + j``."""
    t = t.astype(np.int64)
    i = ((np.sqrt(8.0 * t + 1.0) - 1.0) * 0.5).astype(np.int64)
    # Guard the float square root against rounding at perfect squares.
    i -= (i * (i + 1)) // 2 > t
    i += ((i + 1) * (i + 2)) // 2 <= t
    return i, t - i * (i + 1) // 2


def _in_threads(groups: list, work) -> None:
    """``work(g, group)`` for every group, the first in this thread and the others in
    threads started here and joined before returning (none outlives the call)."""
    errors: list[BaseException] = []

    def run(g: int) -> None:
        try:
            work(g, groups[g])
        except BaseException as exc:  # pragma: no cover - re-raised below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(g,), daemon=True) for g in range(1, len(groups))]
    for t in workers:
        t.start()
    run(0)
    for t in workers:
        t.join()
    if errors:
        raise errors[0]


def _lower_factors(w: np.ndarray, p1: int, nlevels: int) -> np.ndarray:
    """Lower Cholesky factors ``L_l`` of positive semidefinite ``W_l = L_l L_l'``, packed
    like ``w`` (``np.tril_indices(p1)``, entry-major, ``(p1 (p1 + 1) / 2, l1)``).

    Column by column over all levels at once. A pivot that rounding leaves slightly
    negative (a singular ``W_l``, e.g. a variance on its bound) is taken as 0, and a zero
    pivot's column below it as 0: ``L L'`` then equals ``W`` to rounding. A pivot below
    ``-1e-10`` of its diagonal means ``W_l`` is not semidefinite: ValueError.
    """
    r, c = np.tril_indices(p1)
    at = {(int(a), int(b)): e for e, (a, b) in enumerate(zip(r, c, strict=True))}
    wm = w.reshape(-1, nlevels)
    L = np.zeros(wm.shape)
    for j in range(p1):
        d = wm[at[(j, j)]] - sum(L[at[(j, m)]] ** 2 for m in range(j))
        if (d < -1e-10 * np.abs(wm[at[(j, j)]])).any():
            raise ValueError("the level blocks W_l are not positive semidefinite")
        ljj = np.sqrt(np.maximum(d, 0.0))
        L[at[(j, j)]] = ljj
        safe = np.where(ljj > 0.0, ljj, 1.0)
        for i in range(j + 1, p1):
            off = wm[at[(i, j)]] - sum(L[at[(i, m)]] * L[at[(j, m)]] for m in range(j))
            L[at[(i, j)]] = np.where(ljj > 0.0, off / safe, 0.0)
    return L


class _BlasLevels:
    """The levels with rest rows in the order of the update's slices, for the ``"blas"``
    layout: dense chunks of :data:`_BLAS_COLUMNS` columns.

    ``order`` lists the levels (ascending ``k``, as the slices), ``start`` the first entry
    of each in the flat arrays (``len(order) + 1``), ``items`` the rest row of each entry;
    the values ``(p1, entries)`` are the update's own (:meth:`LevelBlockUpdate.with_values`
    swaps them without touching this).
    """

    def __init__(self, order: np.ndarray, start: np.ndarray, items: np.ndarray):
        self.order = order
        self.start = start.astype(np.int64)
        self.items = items

    def groups(self, p1: int, threads: int) -> list[list[tuple[int, int]]]:
        """Chunks ``(g0, g1)`` of ``_BLAS_COLUMNS // p1`` consecutive levels, in ``threads``
        consecutive groups of about equal count (a fixed split: the same sums in the same
        order whatever the threads' timing)."""
        n = self.order.shape[0]
        step = max(1, _BLAS_COLUMNS // p1)
        chunks = [(g0, min(g0 + step, n)) for g0 in range(0, n, step)]
        if threads <= 1 or len(chunks) < 2:
            return [chunks]
        bounds = np.linspace(0, len(chunks), min(threads, len(chunks)) + 1).astype(int)
        return [chunks[b0:b1] for b0, b1 in itertools.pairwise(bounds.tolist())]

    def _chunk(self, g0: int, g1: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Levels of a chunk, each entry's level within it, and the entries' range."""
        e0, e1 = int(self.start[g0]), int(self.start[g1])
        local = np.repeat(np.arange(g1 - g0, dtype=np.int64), np.diff(self.start[g0 : g1 + 1]))
        return self.order[g0:g1], local, e0, e1

    def gram(
        self,
        values: np.ndarray,
        factors: np.ndarray,
        qr: int,
        threads: int,
        until_full: bool = False,
    ) -> np.ndarray:
        """``sum_l F_l F_l'`` with ``F_l = C_l L_l`` (``C_l``: the level's ``values`` at its
        rest rows, ``L_l``: the packed lower ``factors`` of the level), lower triangle of a
        Fortran-ordered ``q_r x q_r`` array (``C W C'`` for ``W_l = L_l L_l'``).

        Per chunk the columns ``F_l[:, a]`` are scattered into a dense ``(columns, q_r)``
        array (zero elsewhere) and added by one ``dsyrk``; each group of chunks into its own
        block, summed in group order.

        ``until_full`` (nonnegative products only, e.g. 0/1 indicators, one thread): stop
        once every entry of the lower triangle is nonzero, checked after 1, 2, 4, ...
        chunks. Which entries are nonzero is then known; the values are not the sums.
        """
        p1 = values.shape[0]
        r, c = np.tril_indices(p1)
        at = {(int(a), int(b)): e for e, (a, b) in enumerate(zip(r, c, strict=True))}
        groups = self.groups(p1, threads)
        blocks = [np.zeros((qr, qr), order="F") for _ in groups]

        def work(g: int, group: list[tuple[int, int]]) -> None:
            G = blocks[g]
            step = max(1, _BLAS_COLUMNS // p1)
            D = np.zeros((step * p1, qr))
            Df = D.reshape(-1)
            full = qr * (qr + 1) // 2
            for c, (g0, g1) in enumerate(group):
                if until_full and c & (c - 1) == 0 and c > 0 and np.count_nonzero(G) == full:
                    break  # dsyrk writes the lower triangle only: the upper one stays 0
                lv, local, e0, e1 = self._chunk(g0, g1)
                base = local * (p1 * qr) + self.items[e0:e1]
                fac = factors[:, lv][:, local]  # (packed, entries): each entry's L_l
                for a in range(p1):
                    fa = values[a, e0:e1] * fac[at[(a, a)]]
                    for b in range(a + 1, p1):
                        fa += values[b, e0:e1] * fac[at[(b, a)]]
                    Df[base + a * qr] = fa
                ncols = (g1 - g0) * p1
                # GIL released (blas_nogil): the other group's thread runs meanwhile
                syrk_lower(D[:ncols].T, G)
                for a in range(p1):
                    Df[base + a * qr] = 0.0

        _in_threads(groups, work)
        G = blocks[0]
        for other in blocks[1:]:
            G += other
        return G

    def forms(self, values: np.ndarray, Sigma: np.ndarray, K: np.ndarray, threads: int) -> None:
        """``K[l] = C_l' Sigma C_l`` for the levels with rest rows (``Sigma`` symmetric,
        ``q_r x q_r``, both triangles): per chunk the dense ``(columns, q_r)`` array ``D`` of
        ``C``'s columns, ``T = D Sigma`` by one ``dgemm``, then ``K[l, a, b]`` as the sums
        of ``C[row, l a] T[l b, row]`` over the level's rows."""
        p1 = values.shape[0]
        qr = Sigma.shape[0]
        groups = self.groups(p1, threads)

        def work(g: int, group: list[tuple[int, int]]) -> None:
            step = max(1, _BLAS_COLUMNS // p1)
            D = np.zeros((step * p1, qr))
            Df = D.reshape(-1)
            for g0, g1 in group:
                lv, local, e0, e1 = self._chunk(g0, g1)
                items = self.items[e0:e1]
                base = local * (p1 * qr) + items
                for a in range(p1):
                    Df[base + a * qr] = values[a, e0:e1]
                ncols = (g1 - g0) * p1
                T = (D[:ncols] @ Sigma).reshape(g1 - g0, p1, qr)
                for a in range(p1):
                    Df[base + a * qr] = 0.0
                Tg = T[local, :, items]  # (entries, p1): T[l b, row] at each entry
                firsts = self.start[g0:g1] - e0
                for a in range(p1):
                    for b in range(a + 1):
                        kab = np.add.reduceat(values[a, e0:e1] * Tg[:, b], firsts)
                        K[lv, a, b] = kab
                        K[lv, b, a] = kab

        _in_threads(groups, work)

    def forms_factor(
        self, values: np.ndarray, U: np.ndarray, d: np.ndarray, K: np.ndarray, threads: int
    ) -> None:
        """``K[l] = X_l' X_l`` with ``X_l = L^{-1} diag(d) C_l`` for the levels with rest rows:
        ``C_l' Sigma C_l`` for ``Sigma = diag(d) (L L')^{-1} diag(d)`` without forming
        ``Sigma``. ``U`` is the Fortran-ordered upper factor ``L'`` (``m x m``, ``m >= q_r``);
        ``L`` is lower triangular, so the first ``q_r`` rows of ``L^{-1} B`` for a ``B`` that
        is zero below row ``q_r`` are ``L_11^{-1} B[:q_r]`` (no copy of the leading block).

        Per chunk one ``dtrsm`` (``m^2`` multiply-adds per column: half of the ``dgemm``
        ``D Sigma``, at the same rate per flop) on a dense ``m x columns`` array of the
        scaled columns of ``C``, then per level the ``p1 x p1`` products of its columns.
        Each group of chunks writes its own levels (no sums across threads).
        """
        p1 = values.shape[0]
        m, qr = U.shape[0], d.shape[0]
        groups = self.groups(p1, threads)

        def work(g: int, group: list[tuple[int, int]]) -> None:
            step = max(1, _BLAS_COLUMNS // p1)
            B = np.zeros((m, step * p1), order="F")  # column local * p1 + a
            for g0, g1 in group:
                lv, local, e0, e1 = self._chunk(g0, g1)
                items = self.items[e0:e1]
                n = g1 - g0
                Bc = B[:, : n * p1]  # Fortran-contiguous: trsm works in place
                Bc.fill(0.0)
                scale = d[items]
                for a in range(p1):
                    Bc[items, local * p1 + a] = values[a, e0:e1] * scale
                X = trsm_upper_transposed(U, Bc)  # U' X = B, in place, GIL released
                # (n, p1, q_r), C-ordered view of the rest rows of X's columns.
                Xt = X[:qr].T.reshape(n, p1, qr)
                K[lv] = np.matmul(Xt, np.swapaxes(Xt, 1, 2))

        _in_threads(groups, work)

    def times(self, values: np.ndarray, Y: np.ndarray, into: np.ndarray, threads: int) -> None:
        """``into[:, a, l] += sum_rows C[row, l a] Y[row]`` (``C' Y``, level-last) per chunk:
        one CSR product per chunk and column ``a``, gathering the small ``Y``."""
        p1 = values.shape[0]
        nvec = Y.shape[1]
        groups = self.groups(p1, threads)

        def work(g: int, group: list[tuple[int, int]]) -> None:  # disjoint levels
            for g0, g1 in group:
                lv = self.order[g0:g1]
                e0, e1 = int(self.start[g0]), int(self.start[g1])
                indptr = (self.start[g0 : g1 + 1] - e0).astype(self.items.dtype)
                items = self.items[e0:e1]
                n = g1 - g0
                for a in range(p1):
                    res = np.zeros((n, nvec))
                    data = np.ascontiguousarray(values[a, e0:e1])
                    _csr_matvecs(n, Y.shape[0], nvec, indptr, items, data, Y.ravel(), res.ravel())
                    into[:, a, lv] += res.T

        _in_threads(groups, work)

    def rows_times(self, values: np.ndarray, xy: np.ndarray, qr: int, threads: int) -> np.ndarray:
        """``C xy'`` ``(q_r, c)`` for ``xy`` ``(c, l1 p1)``: per chunk and column ``a`` a CSC
        matrix with one column per level times the levels' entries of ``xy``; one sum per
        group, added in group order."""
        p1 = values.shape[0]
        groups = self.groups(p1, threads)
        outs = [np.zeros((qr, xy.shape[0])) for _ in groups]

        def work(g: int, group: list[tuple[int, int]]) -> None:
            Y = outs[g]
            for g0, g1 in group:
                lv = self.order[g0:g1]
                e0, e1 = int(self.start[g0]), int(self.start[g1])
                indptr = (self.start[g0 : g1 + 1] - e0).astype(self.items.dtype)
                items = self.items[e0:e1]
                n = g1 - g0
                for a in range(p1):
                    X = np.ascontiguousarray(xy[:, lv * p1 + a].T)  # (n, c)
                    data = np.ascontiguousarray(values[a, e0:e1])
                    _csc_matvecs(
                        Y.shape[0], n, Y.shape[1], indptr, items, data, X.ravel(), Y.ravel()
                    )

        _in_threads(groups, work)
        Y = outs[0]
        for other in outs[1:]:
            Y += other
        return Y


@dataclass(frozen=True, eq=False)
class _LevelSlice:
    """Levels of term 1 with the same number ``k`` of rest rows, and their pairs.

    ``values[a]`` (n, k) holds ``C[rows, l a]``; ``items`` (n, k) the (ascending) rest rows
    of each level; ``index`` the output position of each pair ``(ta, tb)`` of
    ``np.tril_indices(k)`` of each level, level-major (CSC order with one column per
    level, ``indptr``), or None in the pair-free layouts (computed per piece).
    """

    levels: np.ndarray
    items: np.ndarray
    values: np.ndarray
    index: np.ndarray | None
    indptr: np.ndarray
    k: int


class LevelBlockUpdate:
    """The lower triangle of ``C W C'`` (``C = Zr'Z1``) for a term 1 with ``p1 >= 2`` columns.

    The interface of :class:`RankUpdatePattern` (``rows``, ``cols``, :meth:`with_values`,
    :meth:`level_forms`; :meth:`update` for the packed ``W``), but no matrix of products:
    ``C`` is kept level by level, grouped by its number ``k`` of nonzero rows, and each
    evaluation forms ``V_l = C_l W_l`` and the pairs ``V_l[i] . C_l[j]`` (``i >= j``) with a
    few whole-array operations per group, then adds them at their positions by one sparse
    product (a scatter). Memory: ``C`` once (``p1`` doubles per nonzero row of a level)
    and one int32 position per pair, against ``p1 (p1 + 1) / 2`` doubles and an int32 per
    pair for ``P``. Every value is the same sum of the same products in the same order as
    ``C W C'`` formed densely, so results agree with the other paths to rounding.

    Pair-free layouts (:func:`choose_layout`, when the positions would pass
    ``STORED_POSITIONS_MAX_BYTES``: 1e8 rows of 1e6 users with 100 events each have
    ~4.6e9 pairs, 18 GB of positions): each piece computes its pairs' packed
    lower-triangle entries ``i (i + 1) / 2 + j`` from the levels' items, in cache, and adds
    into a dense packed triangle of the rest block (``"dense"``) or through a rank table
    (``"rank"``). Memory is then ``O(nnz(C))`` plus ``O(q_r^2)`` (no more than the dense
    rest block the engine factors), and the sums are those of the stored positions, in the
    same order (equal to the bit).

    The ``"blas"`` layout (:func:`choose_layout`, when each level's items fill a good part
    of the rest rows: 1e8 rows of 1e5 users with 1000 events each touch ~632 of 1e3
    items, ~2e10 pairs) forms no pair: ``C W C' = sum_l F_l F_l'`` with ``F_l = C_l L_l``
    (``L_l`` the Cholesky factor of the semidefinite ``W_l``), the columns of
    :data:`_BLAS_COLUMNS` levels' ``F_l`` scattered into a dense chunk and added by one
    ``dsyrk`` into a dense block per thread; the level forms by ``dgemm`` with a dense
    ``Sigma``, or for ``Sigma = diag(d) (L L')^{-1} diag(d)`` (the gradient's) by ``dtrsm``
    against the factor ``L`` (:meth:`level_forms_factor`, half the flops). BLAS's
    summation order: equal to the pair layouts to rounding.

    Attributes
    ----------
    rows, cols
        Row and column (rows >= cols) of ``C W C'`` of each output position, sorted by
        ``rows * size + cols``.
    """

    #: ``"stored"``, ``"dense"`` or ``"rank"`` (:func:`choose_layout`; older pickles: stored).
    layout = "stored"
    #: Pair-free layouts: packed lower-triangle start ``i (i + 1) / 2`` of each rest row.
    _tri: np.ndarray | None = None
    #: ``"dense"``: packed entry of each output position; ``"rank"``: position of each
    #: packed entry (entries that are no position: any value, never read).
    _map: np.ndarray | None = None

    def __init__(
        self, rows, cols, p1, nlevels, slices, values, slot, qr=None, layout="stored", tables=None
    ):
        # Rows of C (the rest block's size): from C's shape; older pickles lack it.
        self._qr = int(qr) if qr is not None else (int(rows.max()) + 1 if rows.shape[0] else 0)
        self.layout = layout
        if tables is not None:
            self._tri, self._map = tables
        self.rows = rows
        self.cols = cols
        self.p1 = p1
        self.nlevels = nlevels
        self._slices = slices
        self._values = values  # (p1, total): every slice's values are views into it
        self._slot = slot  # flat position in _values of each entry of C's CSR data
        self._tril = np.tril_indices(p1)
        self._packed = {
            (int(r), int(c)): e for e, (r, c) in enumerate(zip(*self._tril, strict=True))
        }

    @classmethod
    def from_cross_products(cls, zrtz1: sp.csr_matrix, p1: int) -> LevelBlockUpdate:
        """Set up from ``C = Zr'Z1`` (canonical CSR), whose columns are ``level * p1 + a``."""
        qr, q1 = zrtz1.shape
        nlevels = q1 // p1
        nnz = int(zrtz1.nnz)
        # Each entry's CSR data position rides along through the conversion (exact in
        # float64), so that new values of C map to their slots (with_values).
        carrier = sp.csr_matrix(
            (np.arange(nnz, dtype=np.float64), zrtz1.indices, zrtz1.indptr), shape=zrtz1.shape
        ).tocsc()
        carrier.sort_indices()
        # Index arrays as int32 where they fit: at 1e7 rows (2e7 entries of C) each int64
        # array of the set-up is 160 MB, and a dozen of them lived at once.
        itype = np.int32 if max(nnz, q1, p1 * nnz) < 2**31 else np.int64
        counts = np.diff(carrier.indptr).reshape(nlevels, p1)
        a_of = np.repeat(np.tile(np.arange(p1, dtype=np.int8), nlevels), counts.ravel())
        source = carrier.data.astype(itype)
        rows_all = carrier.indices
        del carrier
        first = a_of == 0
        same = bool((counts == counts[:, :1]).all()) and all(
            np.array_equal(rows_all[a_of == a], rows_all[first]) for a in range(1, p1)
        )
        if same:
            # The usual case (e.g. intercept and slope nonzero on the same rows): the
            # rows of a level are those of its first column.
            lengths = counts[:, 0].astype(np.int64)
            urow = rows_all[first]
            within = np.empty(nnz, dtype=itype)
            for a in range(p1):
                within[a_of == a] = np.arange(urow.shape[0], dtype=itype)
        else:
            level_of = np.repeat(np.arange(nlevels, dtype=np.int64), counts.sum(axis=1))
            ukey, within = np.unique(level_of * qr + rows_all, return_inverse=True)
            del level_of
            within = within.astype(itype)
            urow = (ukey % qr).astype(np.int32)
            lengths = np.bincount(ukey // qr, minlength=nlevels).astype(np.int64)
            del ukey
        del rows_all, first
        starts = np.cumsum(lengths) - lengths
        nu = urow.shape[0]
        # Regroup the levels by k (stable: ascending levels within a group): new position
        # of every (level, row) entry.
        order = np.argsort(lengths, kind="stable")
        order = order[lengths[order] > 0]
        new_start = np.empty(nlevels, dtype=np.int64)
        new_start[order] = np.cumsum(lengths[order]) - lengths[order]
        shift = (new_start - starts).astype(itype)
        newpos = np.repeat(shift, lengths)
        newpos += np.arange(nu, dtype=itype)
        del shift
        slot = newpos[within]
        del within
        slot += a_of.astype(itype) * itype(nu)
        del a_of
        data = np.zeros(p1 * nu)  # zeros: a row may be nonzero in some columns only
        data[slot] = zrtz1.data[source]
        slot_by_csr = np.empty(nnz, dtype=itype)
        slot_by_csr[source] = slot
        del slot, source
        items_all = np.empty(nu, dtype=np.int32)
        items_all[newpos] = urow
        del newpos, urow
        values = data.reshape(p1, nu)

        # Slices: levels of one k, at most _SLICE_PAIRS pairs each (but one level at least).
        plan = []
        done = 0
        sorted_k = lengths[order]
        for k in np.unique(sorted_k).tolist():
            levs = order[sorted_k == k]
            npairs = k * (k + 1) // 2
            step = max(1, _SLICE_PAIRS // npairs)
            for s0 in range(0, levs.shape[0], step):
                lv = levs[s0 : s0 + step]
                plan.append((lv, k, done, done + lv.shape[0] * k))
                done += lv.shape[0] * k

        # Packed lower-triangle entries i (i + 1) / 2 + j (i >= j) of the pairs: half the
        # entries of the square qr x qr numbering, in the same order.
        tri_size = qr * (qr + 1) // 2
        ktype = np.int32 if tri_size < 2**31 else np.int64
        tri = (np.arange(qr, dtype=np.int64) * (np.arange(qr, dtype=np.int64) + 1) // 2).astype(
            ktype
        )

        def keys_of(k, e0, e1):
            items = items_all[e0:e1].reshape(-1, k)
            return _pair_keys(items, tri, *np.tril_indices(k)).ravel()

        def built(upos: np.ndarray, slices: list, tables: tuple | None) -> LevelBlockUpdate:
            """The update over the touched packed entries ``upos`` (either layout family)."""
            rows, cols = _unpack_lower(upos)
            return cls(
                rows=rows.astype(np.intp),
                cols=cols.astype(np.intp),
                p1=p1,
                nlevels=nlevels,
                slices=slices,
                values=values,
                slot=slot_by_csr,
                qr=qr,
                layout=layout,
                tables=tables,
            )

        npairs_total = sum((e1 - e0) // k * (k * (k + 1) // 2) for _, k, e0, e1 in plan)
        available = available_bytes()
        columns = p1 * int(order.shape[0])  # levels with rest rows, times their columns
        layout = choose_layout(npairs_total, 0, qr, available, columns, UPDATE_THREADS)
        if layout == "blas":
            # Dense products: the positions are the entries some level touches, found by
            # the same dense products on the levels' 0/1 indicators (exact integer counts);
            # no pair is ever listed, nor its position kept. Where the levels' items fill
            # the rest rows the triangle is full after a few thousand levels (1e8 rows x
            # 1e5 users x 1e4 items: ~2,000 users of 1e5), and the products stop there:
            # otherwise they would cost half an update (~250 s of CPU at that size).
            flat = _BlasLevels(order, np.concatenate([[0], np.cumsum(lengths[order])]), items_all)
            ones = np.broadcast_to(1.0, (1, max(nu, nlevels)))  # no array of ones kept
            counts = flat.gram(ones[:, :nu], ones[:, :nlevels], qr, 1, until_full=True)
            # Packed entries i (i + 1) / 2 + j of the touched (i >= j), ascending, in row
            # blocks (no index array of the whole triangle: 800 MB at 1e4 rest rows).
            parts = []
            for r0 in range(0, qr, 256):
                ii, jj = np.nonzero(counts[r0 : r0 + 256] != 0)
                ii += r0
                keep = jj <= ii
                parts.append(tri[ii[keep]].astype(np.int64) + jj[keep])
            upos = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            del counts, parts
            slices = [
                _LevelSlice(
                    levels=lv,
                    items=items_all[e0:e1].reshape(lv.shape[0], k),
                    values=values[:, e0:e1].reshape(p1, lv.shape[0], k),
                    index=None,
                    indptr=np.zeros(0, dtype=ktype),
                    k=k,
                )
                for lv, k, e0, e1 in plan
            ]
            return built(upos, slices, (None, flat))

        # Distinct positions, numbered without a sort (as in RankUpdatePattern).
        mark = np.zeros(tri_size, dtype=bool)
        for _, k, e0, e1 in plan:
            mark[keys_of(k, e0, e1)] = True
        upos = np.flatnonzero(mark)
        del mark
        layout = choose_layout(npairs_total, upos.shape[0], qr, available)
        index_type = np.int32 if upos.shape[0] < 2**31 else np.int64
        rank = None
        if layout != "dense":
            rank = np.empty(tri_size, dtype=ktype if layout == "rank" else index_type)
            rank[upos] = np.arange(upos.shape[0], dtype=rank.dtype)
        slices = []
        for lv, k, e0, e1 in plan:
            n = lv.shape[0]
            npairs = k * (k + 1) // 2
            stored = layout == "stored"
            slices.append(
                _LevelSlice(
                    levels=lv,
                    items=items_all[e0:e1].reshape(n, k),
                    values=values[:, e0:e1].reshape(p1, n, k),
                    index=rank[keys_of(k, e0, e1)] if stored else None,
                    indptr=np.arange(
                        0, (n + 1) * npairs, npairs, dtype=index_type if stored else ktype
                    ),
                    k=k,
                )
            )
        if layout == "stored":
            del rank
            tables = None
        else:
            tables = (tri, rank if layout == "rank" else upos.astype(ktype))
        return built(upos, slices, tables)

    def with_values(self, zrtz1_data: np.ndarray) -> LevelBlockUpdate:
        """The same structure for new values of ``C`` (same sparsity, same data order)."""
        p1, total = self._values.shape
        flat = np.zeros(p1 * total)
        flat[self._slot] = zrtz1_data
        values = flat.reshape(p1, total)
        slices = []
        e0 = 0
        for sl in self._slices:
            n, k = sl.items.shape
            slices.append(
                _LevelSlice(
                    sl.levels,
                    sl.items,
                    values[:, e0 : e0 + n * k].reshape(p1, n, k),
                    sl.index,
                    sl.indptr,
                    k,
                )
            )
            e0 += n * k
        tables = None if self.layout == "stored" else (self._tri, self._map)
        return LevelBlockUpdate(
            self.rows,
            self.cols,
            p1,
            self.nlevels,
            slices,
            values,
            self._slot,
            self._qr,
            self.layout,
            tables,
        )

    def _level_w(self, w: np.ndarray, levels: np.ndarray) -> list[list[np.ndarray]]:
        """``W_l[a][b]`` as (n, 1) columns for the given levels, from the packed ``w``."""
        wm = w.reshape(-1, self.nlevels)
        cols = wm[:, levels]
        return [
            [cols[self._packed[(max(a, b), min(a, b))]][:, None] for b in range(self.p1)]
            for a in range(self.p1)
        ]

    def _pieces(self) -> list[tuple[int, int, int]]:
        """``(slice, first level, end level)`` of pieces of about ``_CACHE_PAIRS`` pairs."""
        out = []
        for i, sl in enumerate(self._slices):
            n = sl.levels.shape[0]
            step = max(1, _CACHE_PAIRS // (sl.k * (sl.k + 1) // 2))
            out.extend((i, lo, min(lo + step, n)) for lo in range(0, n, step))
        return out

    def _update_pieces(self, pieces: list[tuple[int, int, int]], W: list, u: np.ndarray) -> None:
        """Add the pairs of ``pieces`` into ``u`` (``W``: each slice's level blocks)."""
        p1 = self.p1
        npos = u.shape[0]  # the positions, or the packed triangle (layout "dense")
        tri, table = self._tri, (self._map if self.layout == "rank" else None)
        tril = {}
        ones = None
        for i, lo, hi in pieces:
            sl = self._slices[i]
            k = sl.k
            if k not in tril:
                ta, tb = np.tril_indices(k)
                tril[k] = (ta, tb, ta * k + tb)
            ta, tb, lower = tril[k]
            c = sl.values[:, lo:hi]
            Wi = W[i]
            n = hi - lo
            if k >= _MATMUL_MIN_K:
                # Each level's whole k x k block V_l C_l' (V_l = C_l W_l) by one batched
                # matrix product, then its lower triangle by one gather: 2.7 ns per pair
                # where a gather of V and of C per column a and pair cost 5.4 (k = 95).
                V = np.empty((n, k, p1))
                for a in range(p1):
                    v = V[:, :, a]
                    np.multiply(c[0], Wi[a][0][lo:hi], out=v)  # column a of C W
                    for b in range(1, p1):
                        v += c[b] * Wi[a][b][lo:hi]
                block = np.matmul(V, np.swapaxes(c, 0, 1)).reshape(n, k * k)
                val = np.take(block, lower, axis=1)
                del block
            else:  # few rows per level: the small products cost more than the gathers
                val = None
                for a in range(p1):
                    v = c[0] * Wi[a][0][lo:hi]  # V_l = C_l W_l, column a (W symmetric)
                    for b in range(1, p1):
                        v += c[b] * Wi[a][b][lo:hi]
                    term = np.take(v, ta, axis=1)
                    term *= np.take(c[a], tb, axis=1)
                    if val is None:
                        val = term
                    else:
                        val += term
            npairs = ta.shape[0]
            if sl.index is not None:
                index = sl.index[lo * npairs : hi * npairs]
            else:  # pair-free: the pairs' packed entries (and positions) from the items
                index = _pair_keys(sl.items[lo:hi], tri, ta, tb).ravel()
                if table is not None:
                    index = table[index]
            indptr = sl.indptr[: n + 1]
            if _csc_matvec is not None:
                if ones is None or ones.shape[0] < n:
                    ones = np.ones(max(n, _CACHE_PAIRS))
                # The pairs as a CSC matrix with one column per level, times ones: the
                # scatter-add of every pair's value at its position, in place.
                _csc_matvec(npos, n, indptr, index, val.ravel(), ones[:n], u)
            else:  # pragma: no cover
                u += sp.csc_matrix((val.ravel(), index, indptr), shape=(npos, n)) @ np.ones(n)

    def _split(self, pieces: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
        """The pieces in ``UPDATE_THREADS`` consecutive groups of about equal pairs (one group
        below ``_THREAD_MIN_PAIRS`` pairs). A fixed split, not a work queue: every sum over
        groups is taken in the same order whatever the threads' timing."""
        total = sum(sl.levels.shape[0] * (sl.k * (sl.k + 1) // 2) for sl in self._slices)
        threads = UPDATE_THREADS if total >= _THREAD_MIN_PAIRS else 1
        if threads <= 1:
            return [pieces]
        sizes = np.array(
            [
                (hi - lo) * (self._slices[i].k * (self._slices[i].k + 1) // 2)
                for i, lo, hi in pieces
            ],
            dtype=np.int64,
        )
        bounds = np.searchsorted(np.cumsum(sizes), total * np.arange(1, threads) / threads)
        return [[pieces[j] for j in g] for g in np.split(np.arange(len(pieces)), bounds)]

    @staticmethod
    def _in_threads(groups: list, work) -> None:
        """:func:`_in_threads` (kept as a method for callers of the class)."""
        _in_threads(groups, work)

    def update(self, w: np.ndarray, xy: np.ndarray | None = None):
        """Entries at (rows, cols) of ``C W C'``; ``w`` holds the levels' blocks as packed
        lower triangles, entry-major (``w[e * l1 + l] = W_l[r_e, c_e]``, ``np.tril_indices``).

        With ``xy`` (``(c, l1 p1)``, e.g. ``[X y]'Z1 W``) also return ``xy C'`` ``(c, q_r)``
        from the same pieces: ``C`` read level by level, where ``C @ xy.T`` through the CSR
        of ``C`` jumps across all of ``xy`` for every rest row (1e6 users: a cache miss per
        entry of ``C``, 0.43 s per evaluation).

        Notes
        -----
        The pairs are formed in pieces of ``_CACHE_PAIRS`` (cache-resident temporaries).
        On large problems the pieces are split in two halves of equal pairs, in a fixed
        way, each summed into its own vector by a thread; the result is the first half's
        sum plus the second's, whatever the threads' timing (reproducible to the bit).
        """
        if self.layout == "blas":
            return self._update_blas(w, xy)
        npos = self.rows.shape[0]
        dense = self.layout == "dense"
        W = [self._level_w(w, sl.levels) for sl in self._slices]
        groups = self._split(self._pieces())
        # Layout "dense": each thread adds into a packed triangle, then the positions are
        # gathered from it: the same additions in the same order as into the positions.
        size = self._qr * (self._qr + 1) // 2 if dense else npos
        outs = [np.zeros(size) for _ in groups]
        ys = None if xy is None else [np.zeros((self._qr, xy.shape[0])) for _ in groups]

        def work(g: int, group: list) -> None:
            self._update_pieces(group, W, outs[g])
            if ys is not None:
                self._rows_pieces(group, xy, ys[g])

        self._in_threads(groups, work)
        if dense:
            outs = [out[self._map] for out in outs]
        u = outs[0]
        for out in outs[1:]:
            u += out
        if ys is None:
            return u
        Y = ys[0]
        for y in ys[1:]:
            Y += y
        return u, np.ascontiguousarray(Y.T)

    def _blas_threads(self) -> tuple[int, contextlib.AbstractContextManager]:
        """Threads of the ``"blas"`` layout's work, and the BLAS context for them: one BLAS
        thread inside each of ours (two of each on two cores would compete)."""
        threads = UPDATE_THREADS if len(self._map.order) * self.p1 > _BLAS_COLUMNS else 1
        return threads, (blas_threads_for(0) if threads > 1 else contextlib.nullcontext())

    def _update_blas(self, w: np.ndarray, xy: np.ndarray | None):
        """:meth:`update` in the ``"blas"`` layout: ``C W C'`` as ``sum_l F_l F_l'`` with
        ``F_l = C_l L_l`` (``W_l = L_l L_l'``) by ``dsyrk`` on dense chunks, read at the
        positions; ``xy C'`` level by level per chunk."""
        flat = self._map
        threads, ctx = self._blas_threads()
        factors = _lower_factors(w, self.p1, self.nlevels)
        with ctx:
            G = flat.gram(self._values, factors, self._qr, threads)
        u = G[self.rows, self.cols]
        del G
        if xy is None:
            return u
        Y = flat.rows_times(self._values, xy, self._qr, threads)
        return u, np.ascontiguousarray(Y.T)

    def _rows_pieces(self, pieces: list, xy: np.ndarray, Y: np.ndarray) -> None:
        """``Y += C xy'`` over the levels of ``pieces``: per piece and column ``a`` a CSC
        matrix with one column per level (its rest rows and values) times the levels'
        entries of ``xy`` (a scatter into the small ``Y``, in cache)."""
        p1 = self.p1
        qr, nvec = Y.shape
        for i, lo, hi in pieces:
            sl = self._slices[i]
            k, n = sl.k, hi - lo
            items = sl.items[lo:hi].ravel()
            indptr = np.arange(0, (n + 1) * k, k, dtype=items.dtype)
            cols = sl.levels[lo:hi] * p1
            for a in range(p1):
                X = np.ascontiguousarray(xy[:, cols + a].T)  # (n, c)
                data = np.ascontiguousarray(sl.values[a, lo:hi]).ravel()
                _csc_matvecs(qr, n, nvec, indptr, items, data, X.ravel(), Y.ravel())

    def transpose_times(self, Y: np.ndarray, into: np.ndarray | None = None) -> np.ndarray:
        """``C' Y`` as ``(l1, p1, c)`` for ``Y`` ``(q_r, c)``: per level and column ``a``,
        the sum over its rest rows of ``C[row, l a] Y[row]`` (levels without rest rows: 0).

        The levels' rows are gathered from the small ``Y`` (a CSR product per piece),
        where ``C.T @ Y`` through the transposed CSR scatters into all ``l1 p1`` rows of its
        result for every rest row (1e6 users: 0.5 s per gradient).

        ``into``: add the result into this ``(c, p1, l1)`` array (level-last) instead, and
        return it.
        """
        p1 = self.p1
        Y = np.ascontiguousarray(Y, dtype=np.float64)
        nvec = Y.shape[1]
        if self.layout == "blas":
            acc = np.zeros((nvec, p1, self.nlevels)) if into is None else into
            self._map.times(self._values, Y, acc, self._blas_threads()[0])
            return acc if into is not None else np.ascontiguousarray(acc.transpose(2, 1, 0))
        out = np.zeros((self.nlevels, p1, nvec)) if into is None else None

        def work(g: int, group: list) -> None:  # levels are disjoint between groups
            for i, lo, hi in group:
                sl = self._slices[i]
                k, n = sl.k, hi - lo
                items = sl.items[lo:hi].ravel()
                indptr = np.arange(0, (n + 1) * k, k, dtype=items.dtype)
                lev = sl.levels[lo:hi]
                for a in range(p1):
                    data = np.ascontiguousarray(sl.values[a, lo:hi]).ravel()
                    res = np.zeros((n, nvec))
                    _csr_matvecs(n, Y.shape[0], nvec, indptr, items, data, Y.ravel(), res.ravel())
                    if out is None:
                        into[:, a, lev] += res.T
                    else:
                        out[lev, a] = res

        self._in_threads(self._split(self._pieces()), work)
        return into if out is None else out

    @property
    def forms_from_factor(self) -> bool:
        """Whether :meth:`level_forms_factor` is available (the ``"blas"`` layout)."""
        return self.layout == "blas"

    def level_forms_factor(self, U: np.ndarray, d: np.ndarray) -> np.ndarray:
        """``C_l' Sigma C_l`` (l1, p1, p1) for ``Sigma = diag(d) (L L')^{-1} diag(d)``, from the
        factor: ``U`` the Fortran-ordered ``m x m`` upper factor ``L'`` whose leading
        ``q_r x q_r`` block is that of ``L`` (``BlockedFactor.L.T``), ``d`` the ``q_r`` row
        scales (a diagonal ``Lambda_r``). ``"blas"`` layout only.

        Notes
        -----
        :meth:`level_forms` with a dense ``Sigma`` costs one ``dgemm`` ``D Sigma`` per chunk
        (``2 q_r^2`` flops per column of ``C``) after the inverse ``(L L')^{-1}``; here each
        chunk is solved by ``dtrsm`` against ``L`` (``q_r^2`` flops per column, at the same
        rate per flop): half the work, and the gradient needs no ``Sigma`` at the
        positions. Raw rates at ``q_r = 10^4`` (one thread, 512-2048 columns): ``dgemm``
        18-19, ``dtrsm`` 38-39, ``dsyrk`` 35-40 ``q_r^2 x columns`` per ns. Per call, 1000
        users of ~951 of 1e4 items (5 interleaved rounds, load 7-9): 5.35 s of CPU against
        13.3 (``dgemm``) and 10.5 (pair-free); 1e4 users of ~632 of 1e3 items: 0.85 against
        1.35 s.
        """
        if self.layout != "blas":
            raise ValueError("level_forms_factor needs the 'blas' layout")
        p1 = self.p1
        K = np.zeros((self.nlevels, p1, p1))  # levels without rest rows: 0
        threads, ctx = self._blas_threads()
        with ctx:
            self._map.forms_factor(self._values, U, np.asarray(d, dtype=np.float64), K, threads)
        return K

    def level_forms(self, sigma: np.ndarray) -> np.ndarray:
        """``C_l' Sigma C_l`` for every level ``l`` of term 1, (l1, p1, p1), from the entries
        ``sigma`` of a symmetric ``Sigma`` at the positions (rows, cols).

        Notes
        -----
        Per slice (levels with ``k`` rest rows) the ``k x k`` blocks ``Sigma_l`` are
        gathered whole (both triangles from the packed pairs, one index map), then
        ``K_l[a, b] = c_a' (Sigma_l c_b)``: one batched product per column ``a`` and a dot per
        ``b <= a``. Forming products per pair and per ``(a, b)`` instead cost four times more
        (eight passes over the pairs per ``(a, b)``; 0.38 s against 0.09 s for 1e5 users of
        ten items), and the gradient calls this once per evaluation. The work goes in the
        update's cache-sized pieces, split over its threads (each writes its own levels).
        """
        p1 = self.p1
        K = np.zeros((self.nlevels, p1, p1))  # levels without rest rows: 0
        if self.layout == "blas":  # Sigma dense, both triangles; the products by dgemm
            Sigma = np.zeros((self._qr, self._qr))
            Sigma[self.rows, self.cols] = sigma
            Sigma[self.cols, self.rows] = sigma
            threads, ctx = self._blas_threads()
            with ctx:
                self._map.forms(self._values, Sigma, K, threads)
            return K
        if self.layout == "dense":  # Sigma's packed lower triangle, read per pair below
            full = np.zeros(self._qr * (self._qr + 1) // 2)
            full[self._map] = sigma

        def work(g: int, group: list) -> None:
            maps: dict[int, np.ndarray] = {}
            for i, lo, hi in group:
                sl = self._slices[i]
                k, n = sl.k, hi - lo
                if k not in maps:
                    ta, tb = np.tril_indices(k)
                    pair = np.empty((k, k), dtype=np.intp)  # (i, j) -> packed pair
                    pair[ta, tb] = np.arange(ta.shape[0])
                    pair[tb, ta] = pair[ta, tb]
                    maps[k] = pair
                npairs = k * (k + 1) // 2
                if sl.index is not None:
                    S = sigma[sl.index[lo * npairs : hi * npairs]]
                else:
                    keys = _pair_keys(sl.items[lo:hi], self._tri, *np.tril_indices(k))
                    S = full[keys] if self.layout == "dense" else sigma[self._map[keys]]
                # (n, k, k), both triangles: np.take costs ~2/3 of fancy indexing here.
                S = np.take(S.reshape(n, -1), maps[k], axis=1)
                c = sl.values[:, lo:hi]  # (p1, n, k)
                lev = sl.levels[lo:hi]
                for a in range(p1):
                    v = np.einsum("nij,nj->ni", S, c[a])
                    for b in range(a + 1):
                        kab = np.einsum("ni,ni->n", v, c[b])
                        K[lev, a, b] = kab
                        K[lev, b, a] = kab

        self._in_threads(self._split(self._pieces()), work)
        return K
