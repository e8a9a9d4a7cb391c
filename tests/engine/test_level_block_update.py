"""The level-by-level rank update (term 1 with several columns) against dense products.

``LevelBlockUpdate`` forms the lower triangle of ``C W C'`` (``C = Zr'Z1``) from ``C`` kept
level by level; its positions, values, rebinding to new values and the transposed forms
``C_l' Sigma C_l`` must equal the dense computation to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import mixedmodels.linalg.rank_update as rank_update
from mixedmodels.linalg.rank_update import LevelBlockUpdate, RankUpdatePattern


def _cross(rng, qr, nlevels, p1, partial):
    """A random sparse C (qr, nlevels * p1): each level touches a few rows; with
    ``partial``, some rows of a level are nonzero in some of its columns only."""
    rows, cols, vals = [], [], []
    for lev in range(nlevels):
        k = int(rng.integers(0, 6))  # 0: a level without rest rows
        for r in rng.choice(qr, size=k, replace=False):
            for a in range(p1):
                if partial and rng.random() < 0.3:
                    continue
                rows.append(r)
                cols.append(lev * p1 + a)
                vals.append(rng.normal())
    C = sp.csr_matrix((vals, (rows, cols)), shape=(qr, nlevels * p1))
    C.sum_duplicates()
    C.sort_indices()
    return C


def _blocks(rng, nlevels, p1):
    G = rng.normal(size=(nlevels, p1, p1))
    return G @ np.swapaxes(G, 1, 2)  # symmetric (level, a, b)


def _packed(W):
    r, c = np.tril_indices(W.shape[1])
    return np.ascontiguousarray(W[:, r, c].T).ravel()


@pytest.mark.parametrize("p1", [2, 3])
@pytest.mark.parametrize("partial", [False, True])
def test_update_equals_dense_product(p1, partial, monkeypatch):
    monkeypatch.setattr(rank_update, "_SLICE_PAIRS", 7)  # many slices, some of one level
    rng = np.random.default_rng(5 + p1 + 10 * partial)
    qr, nlevels = 9, 40
    C = _cross(rng, qr, nlevels, p1, partial)
    up = LevelBlockUpdate.from_cross_products(C, p1)
    W = _blocks(rng, nlevels, p1)
    Wd = sp.block_diag(list(W)).toarray()
    dense = C.toarray() @ Wd @ C.toarray().T
    u = up.update(_packed(W))
    np.testing.assert_allclose(u, dense[up.rows, up.cols], rtol=1e-12, atol=1e-12)
    assert np.all(up.rows >= up.cols)
    # The positions are those of the product pattern (RankUpdatePattern's).
    pat = RankUpdatePattern.from_cross_products(C, p1)
    np.testing.assert_array_equal(up.rows, pat.rows)
    np.testing.assert_array_equal(up.cols, pat.cols)

    # New values, same sparsity.
    C2 = C.copy()
    C2.data = rng.normal(size=C2.nnz)
    u2 = up.with_values(C2.data).update(_packed(W))
    dense2 = C2.toarray() @ Wd @ C2.toarray().T
    np.testing.assert_allclose(u2, dense2[up.rows, up.cols], rtol=1e-12, atol=1e-12)

    # C_l' Sigma C_l from Sigma's entries at the positions.
    Sigma = rng.normal(size=(qr, qr))
    Sigma = Sigma + Sigma.T
    K = up.level_forms(Sigma[up.rows, up.cols])
    Cd = C.toarray().reshape(qr, nlevels, p1)
    ref = np.einsum("ila,ij,jlb->lab", Cd, Sigma, Cd)
    np.testing.assert_allclose(K, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pat.level_forms(Sigma[pat.rows, pat.cols]), ref, atol=1e-12)
