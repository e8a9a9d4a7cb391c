"""The pair-free layouts of ``LevelBlockUpdate`` against its stored pair positions.

Past ``STORED_POSITIONS_MAX_BYTES`` of int32 positions (one per pair of a level's rest
rows), each piece of the update computes its pairs' packed lower-triangle entries from the
levels' items and adds into a dense packed triangle ("dense") or through a rank table
("rank"). Both add the same products in the same order into each position as the stored
layout, so every result must equal it to the bit (and the dense product to 1e-12).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import mixedmodels as mm
import mixedmodels.linalg.blocked as blocked
import mixedmodels.linalg.rank_update as rank_update
from mixedmodels.linalg.rank_update import LevelBlockUpdate, _unpack_lower, choose_layout

LAYOUTS = ["stored", "dense", "rank"]


def _force(monkeypatch, layout: str) -> None:
    """Make :func:`choose_layout` pick ``layout`` whatever the sizes (never ``"blas"``,
    tests/linalg/test_blas_update.py's)."""
    monkeypatch.setattr(rank_update, "BLAS_FLOPS_PER_PAIR", 0)
    if layout == "stored":
        monkeypatch.setattr(rank_update, "STORED_POSITIONS_MAX_BYTES", 1 << 62)
    else:
        monkeypatch.setattr(rank_update, "STORED_POSITIONS_MAX_BYTES", -1)
        monkeypatch.setattr(rank_update, "_DENSE_TARGET_FILL", 0.0 if layout == "dense" else 2.0)


def _cross(rng, qr: int, nlevels: int, p1: int, partial: bool, kmax: int = 6) -> sp.csr_matrix:
    """A random sparse C (qr, nlevels * p1): each level touches 0..kmax-1 rows; with
    ``partial``, some rows of a level are nonzero in some of its columns only."""
    rows, cols, vals = [], [], []
    for lev in range(nlevels):
        k = int(rng.integers(0, kmax))
        for r in rng.choice(qr, size=min(k, qr), replace=False):
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


def _blocks(rng, nlevels: int, p1: int) -> np.ndarray:
    G = rng.normal(size=(nlevels, p1, p1))
    return G @ np.swapaxes(G, 1, 2)


def _packed(W: np.ndarray) -> np.ndarray:
    r, c = np.tril_indices(W.shape[1])
    return np.ascontiguousarray(W[:, r, c].T).ravel()


def test_unpack_lower_inverts_the_packed_numbering():
    i, j = np.tril_indices(300)
    t = i * (i + 1) // 2 + j
    ri, rj = _unpack_lower(t)
    np.testing.assert_array_equal(ri, i)
    np.testing.assert_array_equal(rj, j)


def test_choose_layout_by_sizes(monkeypatch):
    monkeypatch.setattr(rank_update, "STORED_POSITIONS_MAX_BYTES", 4000)
    assert choose_layout(1000, 10, 100) == "stored"
    assert choose_layout(1001, 5050, 100) == "dense"  # every entry of the triangle
    assert choose_layout(1001, 1263, 100) == "dense"  # a quarter
    assert choose_layout(1001, 1262, 100) == "rank"
    # Stored positions take at most a quarter of the memory available.
    assert choose_layout(1000, 5050, 100, available=16000) == "stored"
    assert choose_layout(1000, 5050, 100, available=15999) == "dense"


@pytest.mark.parametrize("layout", ["dense", "rank"])
@pytest.mark.parametrize("p1", [2, 3])
@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("matmul_min_k", [1, 4, 1000])
def test_pair_free_equals_stored_to_the_bit(
    layout, p1, partial, threads, matmul_min_k, monkeypatch
):
    # Levels' blocks by batched products (k >= matmul_min_k) or by gathers per pair.
    monkeypatch.setattr(rank_update, "_MATMUL_MIN_K", matmul_min_k)
    monkeypatch.setattr(rank_update, "_SLICE_PAIRS", 7)  # many slices, some of one level
    monkeypatch.setattr(rank_update, "_CACHE_PAIRS", 5)  # many pieces
    monkeypatch.setattr(rank_update, "_THREAD_MIN_PAIRS", 0)
    monkeypatch.setattr(rank_update, "UPDATE_THREADS", threads)
    rng = np.random.default_rng(40 + p1 + 10 * partial)
    qr, nlevels = 23, 200
    C = _cross(rng, qr, nlevels, p1, partial)
    _force(monkeypatch, "stored")
    ref = LevelBlockUpdate.from_cross_products(C, p1)
    _force(monkeypatch, layout)
    up = LevelBlockUpdate.from_cross_products(C, p1)
    assert ref.layout == "stored" and up.layout == layout
    assert all(sl.index is None for sl in up._slices)
    np.testing.assert_array_equal(up.rows, ref.rows)
    np.testing.assert_array_equal(up.cols, ref.cols)

    W = _blocks(rng, nlevels, p1)
    xy = rng.normal(size=(3, nlevels * p1))
    u, xc = up.update(_packed(W), xy)
    u_ref, xc_ref = ref.update(_packed(W), xy)
    np.testing.assert_array_equal(u, u_ref)
    np.testing.assert_array_equal(xc, xc_ref)
    dense = C.toarray() @ sp.block_diag(list(W)).toarray() @ C.toarray().T
    np.testing.assert_allclose(u, dense[up.rows, up.cols], rtol=1e-12, atol=1e-12)
    for _ in range(3):  # reproducible at every call, whatever the threads' timing
        np.testing.assert_array_equal(up.update(_packed(W)), u)

    Sigma = rng.normal(size=(qr, qr))
    Sigma = Sigma + Sigma.T
    sigma = Sigma[up.rows, up.cols]
    np.testing.assert_array_equal(up.level_forms(sigma), ref.level_forms(sigma))

    # New values of C, same sparsity: the layout and its tables carry over.
    C2 = C.copy()
    C2.data = rng.normal(size=C2.nnz)
    up2, ref2 = up.with_values(C2.data), ref.with_values(C2.data)
    assert up2.layout == layout
    np.testing.assert_array_equal(up2.update(_packed(W)), ref2.update(_packed(W)))
    np.testing.assert_array_equal(up2.level_forms(sigma), ref2.level_forms(sigma))
    Y = rng.normal(size=(qr, 4))
    np.testing.assert_array_equal(up2.transpose_times(Y), ref2.transpose_times(Y))


@pytest.mark.parametrize("layout", ["dense", "rank"])
def test_pair_free_with_rows_that_touch_few_positions(layout, monkeypatch):
    """A rest block much larger than the levels' items (most of the triangle untouched,
    levels of a single row, levels without rows): positions and values as stored."""
    rng = np.random.default_rng(8)
    qr, nlevels, p1 = 400, 60, 2
    C = _cross(rng, qr, nlevels, p1, partial=True, kmax=4)
    _force(monkeypatch, "stored")
    ref = LevelBlockUpdate.from_cross_products(C, p1)
    _force(monkeypatch, layout)
    up = LevelBlockUpdate.from_cross_products(C, p1)
    np.testing.assert_array_equal(up.rows, ref.rows)
    np.testing.assert_array_equal(up.cols, ref.cols)
    W = _blocks(rng, nlevels, p1)
    np.testing.assert_array_equal(up.update(_packed(W)), ref.update(_packed(W)))


def _product_frame(seed: int = 12) -> pd.DataFrame:
    """Users with a random slope, several events each, on a few dozen items."""
    rng = np.random.default_rng(seed)
    users, per, items = 120, 7, 30
    user = np.repeat(np.arange(users), per)
    item = rng.integers(0, items, users * per)
    x = rng.normal(size=users * per)
    y = (
        1.0
        + 0.5 * x
        + rng.normal(0, 0.5, users)[user]
        + rng.normal(0, 0.3, users)[user] * x
        + rng.normal(0, 0.4, items)[item]
        + rng.normal(size=users * per)
    )
    return pd.DataFrame({"y": y, "x": x, "user": user.astype(str), "item": item.astype(str)})


def _engine_models() -> list[tuple[str, pd.DataFrame]]:
    """The engine case whose first term has several columns and a rest term (it goes
    through ``LevelBlockUpdate`` on the large path; tests/engine/engine_cases.py), and the
    product design."""
    from mixedmodels.datasets import load_dataset

    return [
        ("Reaction ~ Days + (Days|Subject) + (1|Days)", load_dataset("sleepstudy")),
        ("y ~ x + (1 + x | user) + (1 | item)", _product_frame()),
    ]


@pytest.mark.parametrize("case", range(2))
def test_engine_fits_identical_in_every_layout(case, monkeypatch):
    """Fits on the large path (the rank update through ``LevelBlockUpdate``) in the three
    layouts: the same optimiser path, so the same theta and criterion to the bit."""
    formula, data = _engine_models()[case]
    monkeypatch.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)  # the large path
    monkeypatch.setattr(rank_update, "_THREAD_MIN_PAIRS", 0)
    monkeypatch.setattr(rank_update, "_CACHE_PAIRS", 64)
    monkeypatch.setattr(rank_update, "UPDATE_THREADS", 2)
    fits = {}
    for layout in LAYOUTS:
        _force(monkeypatch, layout)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = mm.lmer(formula, data)
        pattern = fit.deviance_function.system.pattern
        assert isinstance(pattern, LevelBlockUpdate) and pattern.layout == layout
        fits[layout] = fit
    ref = fits["stored"]
    for layout in ("dense", "rank"):
        fit = fits[layout]
        np.testing.assert_array_equal(np.asarray(fit.theta), np.asarray(ref.theta))
        assert fit.opt.final_objective == ref.opt.final_objective
        np.testing.assert_array_equal(np.asarray(fit.fixef), np.asarray(ref.fixef))
