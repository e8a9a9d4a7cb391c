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


@pytest.mark.parametrize("p1", [2, 3])
def test_threaded_pieces_equal_one_pass(p1, monkeypatch):
    """Cache-sized pieces split over threads: the dense product to rounding, and the same
    result, to the bit, at every call (a fixed split, not a work queue)."""
    rng = np.random.default_rng(11 + p1)
    qr, nlevels = 12, 300
    C = _cross(rng, qr, nlevels, p1, partial=True)
    up = LevelBlockUpdate.from_cross_products(C, p1)
    W = _blocks(rng, nlevels, p1)
    dense = C.toarray() @ sp.block_diag(list(W)).toarray() @ C.toarray().T
    monkeypatch.setattr(rank_update, "_CACHE_PAIRS", 5)  # many pieces, some of one level
    monkeypatch.setattr(rank_update, "_THREAD_MIN_PAIRS", 0)
    monkeypatch.setattr(rank_update, "UPDATE_THREADS", 3)
    u = up.update(_packed(W))
    np.testing.assert_allclose(u, dense[up.rows, up.cols], rtol=1e-12, atol=1e-12)
    for _ in range(5):
        np.testing.assert_array_equal(up.update(_packed(W)), u)


def _product_frame(seed: int = 3):
    """A small product design: users with a random slope, each with a few items."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    users, per = 150, 6
    user = np.repeat(np.arange(users), per)
    item = rng.integers(0, 25, users * per)
    x = rng.normal(size=users * per)
    y = (
        1.0
        + 0.5 * x
        + rng.normal(0, 0.5, users)[user]
        + rng.normal(0, 0.3, users)[user] * x
        + rng.normal(0, 0.4, 25)[item]
        + rng.normal(size=users * per)
    )
    return pd.DataFrame({"y": y, "x": x, "user": user.astype(str), "item": item.astype(str)})


def test_forked_child_fits_with_threaded_update(monkeypatch):
    """The update's threads live only inside a call: a child forked after a threaded fit
    fits the same model to the same numbers (no pool left behind to deadlock on)."""
    import os
    import pickle

    import mixedmodels as mm
    import mixedmodels.linalg.blocked as blocked

    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    monkeypatch.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)  # the large path
    monkeypatch.setattr(rank_update, "_CACHE_PAIRS", 16)
    monkeypatch.setattr(rank_update, "_THREAD_MIN_PAIRS", 0)
    monkeypatch.setattr(rank_update, "UPDATE_THREADS", 2)
    data = _product_frame()
    formula = "y ~ x + (1 + x | user) + (1 | item)"
    fit = mm.lmer(formula, data)
    assert isinstance(fit.deviance_function.system.pattern, LevelBlockUpdate)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: fit, send theta, leave without running pytest's teardown
        code = 1
        try:
            child = mm.lmer(formula, data)
            os.write(write, pickle.dumps(np.asarray(child.theta)))
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    np.testing.assert_array_equal(pickle.loads(payload), np.asarray(fit.theta))


@pytest.mark.parametrize("p1", [2, 3])
@pytest.mark.parametrize("threads", [1, 2])
def test_products_with_xy_rows_and_transpose(p1, threads, monkeypatch):
    """``xy C'`` (formed with the update) and ``C' Y`` from C kept level by level equal the
    sparse products, in pieces and threads."""
    monkeypatch.setattr(rank_update, "_CACHE_PAIRS", 6)
    monkeypatch.setattr(rank_update, "_THREAD_MIN_PAIRS", 0)
    monkeypatch.setattr(rank_update, "UPDATE_THREADS", threads)
    rng = np.random.default_rng(21 + p1)
    qr, nlevels = 10, 120
    C = _cross(rng, qr, nlevels, p1, partial=True)
    up = LevelBlockUpdate.from_cross_products(C, p1)
    W = _blocks(rng, nlevels, p1)
    xy = rng.normal(size=(4, nlevels * p1))
    u, xc = up.update(_packed(W), xy)
    np.testing.assert_array_equal(u, up.update(_packed(W)))
    np.testing.assert_allclose(xc, (C @ xy.T).T, rtol=1e-12, atol=1e-12)
    Y = rng.normal(size=(qr, 5))
    got = up.transpose_times(Y)
    np.testing.assert_allclose(got, (C.T @ Y).reshape(nlevels, p1, 5), rtol=1e-12, atol=1e-12)
    # New values, same sparsity: the products follow.
    C2 = C.copy()
    C2.data = rng.normal(size=C2.nnz)
    up2 = up.with_values(C2.data)
    np.testing.assert_allclose(up2.update(_packed(W), xy)[1], (C2 @ xy.T).T, atol=1e-12)
    np.testing.assert_allclose(
        up2.transpose_times(Y), (C2.T @ Y).reshape(nlevels, p1, 5), atol=1e-12
    )
