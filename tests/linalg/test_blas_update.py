"""The ``"blas"`` layout of ``LevelBlockUpdate`` (dense products for users with many items).

When a level's ``k`` rest rows fill a good part of the ``q_r`` rest rows, ``C W C'`` is
formed as ``sum_l F_l F_l'`` (``F_l = C_l L_l``, ``W_l = L_l L_l'``) by ``dsyrk`` on dense
chunks, and the level forms ``C_l' Sigma C_l`` by ``dgemm`` (or, for the gradient's
``Sigma = diag(d) (L L')^{-1} diag(d)``, by ``dtrsm`` against ``L``): BLAS's summation order, so
the results equal the pair layouts' to rounding, judged on every entry's own scale (the
same sums of absolute values), never to the bit. Whole fits must reach the same criterion
to 1e-10.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from test_pair_free_update import _blocks, _cross, _engine_models, _force, _packed

import mixedmodels as mm
import mixedmodels.linalg.blocked as blocked
import mixedmodels.linalg.rank_update as rank_update
from mixedmodels.linalg.rank_update import LevelBlockUpdate, _lower_factors, choose_layout

#: Every entry within this much of its own scale (the sum of the absolute products).
RTOL = 1e-12


def _blas(monkeypatch) -> None:
    """Make :func:`choose_layout` pick ``"blas"`` whatever the sizes."""
    monkeypatch.setattr(rank_update, "BLAS_FLOPS_PER_PAIR", float("inf"))


def _structure(rng, qr: int, nlevels: int, p1: int, fill: float, partial: bool) -> sp.csr_matrix:
    """A random C whose levels touch about ``fill * qr`` rows each (0 for some levels)."""
    rows, cols, vals = [], [], []
    for lev in range(nlevels):
        k = int(rng.binomial(qr, fill)) if rng.random() > 0.1 else 0
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


def _close(x: np.ndarray, ref: np.ndarray, scale: np.ndarray) -> None:
    """``|x - ref| <= RTOL * scale`` entry by entry (scale: the same sum in absolute values)."""
    assert x.shape == ref.shape
    bad = np.abs(x - ref) > RTOL * scale + 1e-300
    assert not bad.any(), float(np.max(np.abs(x - ref) / np.maximum(scale, 1e-300)))


def test_lower_factors_of_semidefinite_blocks():
    rng = np.random.default_rng(3)
    for p1 in (1, 2, 3):
        W = _blocks(rng, 50, p1)
        G = rng.normal(size=(50, p1, 1))
        W[:10] = G[:10] @ np.swapaxes(G[:10], 1, 2)  # rank one (singular)
        W[10:15] = 0.0  # a template of zeros
        if p1 > 1:
            W[15:20, 0, :] = W[15:20, :, 0] = 0.0  # a first variance on its bound
        L = _lower_factors(_packed(W), p1, 50).T  # (levels, packed)
        r, c = np.tril_indices(p1)
        Lm = np.zeros((50, p1, p1))
        Lm[:, r, c] = L
        scale = np.sqrt(np.abs(np.einsum("nii->ni", W)))
        err = np.abs(Lm @ np.swapaxes(Lm, 1, 2) - W)
        assert (err <= 1e-14 * scale[:, :, None] * scale[:, None, :] + 1e-300).all()
    W = np.array([[[1.0, 2.0], [2.0, 1.0]]])  # indefinite
    with pytest.raises(ValueError, match="semidefinite"):
        _lower_factors(_packed(W), 2, 1)


def test_choose_layout_blas_by_sizes(monkeypatch):
    monkeypatch.setattr(rank_update, "BLAS_FLOPS_PER_PAIR", 100)
    # q_r^2 * columns against 100 pairs: 1e6 * 2000 = 2e9 <= 100 * 2e7.
    assert choose_layout(20_000_000, 0, 1000, None, 2000) == "blas"
    assert choose_layout(19_999_999, 0, 1000, None, 2000) != "blas"
    # The dense blocks (threads + 1 of q_r^2 doubles) within a quarter of the memory.
    assert choose_layout(20_000_000, 0, 1000, 4 * 8 * 3 * 10**6, 2000, threads=2) == "blas"
    assert choose_layout(20_000_000, 0, 1000, 4 * 8 * 3 * 10**6 - 1, 2000, 2) != "blas"
    assert choose_layout(20_000_000, 0, 1000, None, 0) != "blas"  # columns unknown


def test_choose_layout_wide_rest_block():
    """From WIDE_PAIR_ROWS rest rows on, pairs cost a cache miss each: dense products up
    to WIDE_PAIR_FACTOR times more per pair. The grid's 1e8-row cells (per user ``k``
    distinct items, ``q_r^2 p1`` dense multiply-adds against ``k (k + 1) / 2`` pairs)."""

    def cell(users: int, k: int, qr: int) -> str:
        return choose_layout(users * k * (k + 1) // 2, 0, qr, None, 2 * users)

    per = rank_update.BLAS_FLOPS_PER_PAIR
    assert rank_update.WIDE_PAIR_FACTOR * per >= 1000  # measured break-even ~3000 at 1e4
    assert cell(10**5, 951, 10**4) == "blas"  # 1e8 x 1e5 x 1e4: ratio 444 (was pairs)
    assert cell(10**6, 100, 10**4) != "blas"  # 1e8 x 1e6 x 1e4: ratio 4e4
    assert cell(10**5, 100, 10**4) != "blas"  # 1e7 x 1e5 x 1e4
    assert cell(10**5, 632, 10**3) == "blas"  # 1e8 x 1e5 x 1e3, as before
    assert cell(10**6, 95, 10**3) != "blas"  # 1e8 x 1e6 x 1e3, as before (ratio 438)
    assert cell(10**6, 63, 10**2) == "blas"  # 1e8 x 1e6 x 1e2, as before
    # The factor applies from WIDE_PAIR_ROWS on only.
    qr = rank_update.WIDE_PAIR_ROWS
    npairs = qr * qr * 100 // (2 * per)  # ratio 2 * per: dense only where wide
    assert choose_layout(npairs, 0, qr, None, 100) == "blas"
    assert choose_layout(npairs, 0, qr - 1, None, 100) != "blas"


@pytest.mark.parametrize("fill", [0.05, 0.3, 0.9])
@pytest.mark.parametrize("p1", [2, 3])
@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_blas_equals_stored_and_direct(fill, p1, partial, threads, monkeypatch):
    monkeypatch.setattr(rank_update, "_BLAS_COLUMNS", 7)  # many chunks, split unevenly
    monkeypatch.setattr(rank_update, "UPDATE_THREADS", threads)
    rng = np.random.default_rng(int(100 * fill) + 7 * p1 + 3 * partial)
    qr, nlevels = 37, 90
    C = _structure(rng, qr, nlevels, p1, fill, partial)
    _force(monkeypatch, "stored")
    ref = LevelBlockUpdate.from_cross_products(C, p1)
    _blas(monkeypatch)
    up = LevelBlockUpdate.from_cross_products(C, p1)
    assert ref.layout == "stored" and up.layout == "blas"
    np.testing.assert_array_equal(up.rows, ref.rows)
    np.testing.assert_array_equal(up.cols, ref.cols)

    W = _blocks(rng, nlevels, p1)
    W[:5] = 0.0  # levels whose template is zero
    xy = rng.normal(size=(3, nlevels * p1))
    u, xc = up.update(_packed(W), xy)
    u_ref, xc_ref = ref.update(_packed(W), xy)
    Ca = np.abs(C.toarray())
    Wd = sp.block_diag(list(W)).toarray()
    direct = C.toarray() @ Wd @ C.toarray().T
    scale = (Ca @ np.abs(Wd) @ Ca.T)[up.rows, up.cols]
    _close(u, u_ref, scale)
    _close(u, direct[up.rows, up.cols], scale)
    _close(xc, xc_ref, np.abs(xy) @ Ca.T)
    for _ in range(3):  # the same bits at every call, whatever the threads' timing
        np.testing.assert_array_equal(up.update(_packed(W)), u)

    Sigma = rng.normal(size=(qr, qr))
    Sigma = Sigma + Sigma.T
    sigma = Sigma[up.rows, up.cols]
    Sa = np.zeros((qr, qr))
    Sa[up.rows, up.cols] = np.abs(sigma)
    Sa[up.cols, up.rows] = np.abs(sigma)
    K, K_ref = up.level_forms(sigma), ref.level_forms(sigma)
    Ca3 = Ca.T.reshape(nlevels, p1, qr)
    _close(K, K_ref, Ca3 @ Sa @ np.swapaxes(Ca3, 1, 2))
    np.testing.assert_array_equal(up.level_forms(sigma), K)

    Y = rng.normal(size=(qr, 4))
    scale_y = Ca3 @ np.abs(Y)
    _close(up.transpose_times(Y), ref.transpose_times(Y), scale_y)
    into = np.ones((4, p1, nlevels))
    into_ref = into.copy()
    up.transpose_times(Y, into=into)
    ref.transpose_times(Y, into=into_ref)
    _close(into, into_ref, np.transpose(scale_y, (2, 1, 0)) + 1.0)

    # New values of C, same sparsity: still the blas layout, the same sums.
    C2 = C.copy()
    C2.data = rng.normal(size=C2.nnz)
    up2, ref2 = up.with_values(C2.data), ref.with_values(C2.data)
    assert up2.layout == "blas"
    Ca2 = np.abs(C2.toarray())
    _close(
        up2.update(_packed(W)),
        ref2.update(_packed(W)),
        (Ca2 @ np.abs(Wd) @ Ca2.T)[up.rows, up.cols],
    )


def test_blas_rejects_indefinite_blocks(monkeypatch):
    rng = np.random.default_rng(5)
    C = _cross(rng, 10, 20, 2, False)
    _blas(monkeypatch)
    up = LevelBlockUpdate.from_cross_products(C, 2)
    W = _blocks(rng, 20, 2)
    W[3] = [[1.0, 2.0], [2.0, 1.0]]
    with pytest.raises(ValueError, match="semidefinite"):
        up.update(_packed(W))


def _fits_stored_and_blas(monkeypatch, formula: str, data) -> tuple:
    """The same model fitted in the stored layout, then in the blas layout (each checked to
    be the layout its fit used)."""
    fits = []
    for layout in ("stored", "blas"):
        if layout == "blas":
            _blas(monkeypatch)
        else:
            _force(monkeypatch, "stored")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = mm.lmer(formula, data)
        pattern = fit.deviance_function.system.pattern
        assert isinstance(pattern, LevelBlockUpdate) and pattern.layout == layout
        fits.append(fit)
    return tuple(fits)


@pytest.mark.parametrize("case", range(2))
def test_engine_fits_in_the_blas_layout(case, monkeypatch):
    """Fits on the large path with the dense products: the criterion of the stored
    layout's fit to 1e-10, theta to 1e-6."""
    formula, data = _engine_models()[case]
    monkeypatch.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)  # the large path
    monkeypatch.setattr(rank_update, "_BLAS_COLUMNS", 8)
    monkeypatch.setattr(rank_update, "UPDATE_THREADS", 2)
    ref, new = _fits_stored_and_blas(monkeypatch, formula, data)
    crit = float(ref.deviance_function(np.asarray(ref.theta)))
    assert abs(float(new.deviance_function(np.asarray(new.theta))) - crit) <= 1e-10 * abs(crit)
    np.testing.assert_allclose(np.asarray(new.theta), np.asarray(ref.theta), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(new.fixef), np.asarray(ref.fixef), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("p1", [2, 3])
@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_level_forms_from_the_factor(p1, partial, threads, monkeypatch):
    """``C_l' Sigma C_l`` for ``Sigma = diag(d) (L L')^{-1} diag(d)`` by triangular solves
    with ``L`` (the leading block of a larger factor, as the blocked system's): equal to
    the stored layout's forms of ``Sigma`` to 1e-12 of each entry's scale, the same bits
    at every call."""
    monkeypatch.setattr(rank_update, "_BLAS_COLUMNS", 7)
    monkeypatch.setattr(rank_update, "UPDATE_THREADS", threads)
    rng = np.random.default_rng(11 * p1 + partial)
    qr, nlevels, extra = 41, 80, 4
    C = _structure(rng, qr, nlevels, p1, 0.3, partial)
    _force(monkeypatch, "stored")
    ref = LevelBlockUpdate.from_cross_products(C, p1)
    assert not ref.forms_from_factor
    _blas(monkeypatch)
    up = LevelBlockUpdate.from_cross_products(C, p1)
    assert up.forms_from_factor
    m = qr + extra  # [X y] rows below the rest block, as in the blocked factor
    G = rng.normal(size=(m, m))
    L = np.linalg.cholesky(np.eye(m) + G @ G.T / m)
    d = rng.uniform(0.2, 2.0, qr)
    d[3] = 0.0  # a rest term on its bound
    L11 = L[:qr, :qr]
    Sigma = d[:, None] * np.linalg.inv(L11 @ L11.T) * d[None, :]
    K_ref = ref.level_forms(Sigma[ref.rows, ref.cols])
    U = np.asfortranarray(L.T)  # the factor as BlockedFactor.L.T hands it over
    K = up.level_forms_factor(U, d)
    Ca3 = np.abs(C.toarray()).T.reshape(nlevels, p1, qr)
    _close(K, K_ref, Ca3 @ np.abs(Sigma) @ np.swapaxes(Ca3, 1, 2))
    np.testing.assert_array_equal(U, np.asfortranarray(L.T))  # the factor is only read
    for _ in range(3):
        np.testing.assert_array_equal(up.level_forms_factor(U, d), K)
    with pytest.raises(ValueError, match="blas"):
        ref.level_forms_factor(U, d)


@pytest.mark.parametrize("case", range(2))
def test_gradient_with_forms_from_the_factor(case, monkeypatch):
    """The analytic gradient in the blas layout (term 1's level forms by triangular solves
    with the factor) equals the one through ``S^{-1}`` at the positions to 1e-10 of the
    largest entry away from the optimum, at the optimum and there (NaN where a template
    is singular, in both)."""
    import mixedmodels.objective.gradient as gradient_module

    formula, data = _engine_models()[case]
    monkeypatch.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)
    monkeypatch.setattr(rank_update, "_BLAS_COLUMNS", 8)
    monkeypatch.setattr(gradient_module, "_DENSE_LIMIT", -1)  # C through the pattern
    _blas(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mm.lmer(formula, data)
    dev = fit.deviance_function
    new = gradient_module.ProfiledDevianceGradient(dev)
    assert new._forms_from_factor
    old = gradient_module.ProfiledDevianceGradient(dev)
    old._forms_from_factor = False
    theta = np.asarray(fit.theta)
    away = theta * 1.3 + 0.05
    g_away = old(away)
    assert np.isfinite(g_away).all()
    scale = np.abs(g_away).max()
    for point in (theta, away):
        g_new, g_old = new(point), old(point)
        np.testing.assert_array_equal(np.isnan(g_new), np.isnan(g_old))
        ok = ~np.isnan(g_old)
        assert np.abs(g_new - g_old)[ok].max() <= 1e-10 * scale, (g_new, g_old)


def test_blas_positions_stop_once_the_triangle_is_full(monkeypatch):
    """The set-up's indicator products stop once every entry is touched; entries touched
    by one level only, or a triangle full at the last level only, are still found: the
    positions are the stored layout's."""
    monkeypatch.setattr(rank_update, "_BLAS_COLUMNS", 4)  # two levels per chunk
    rng = np.random.default_rng(2)
    qr, nlevels = 30, 40
    dense = np.zeros((qr, 2 * nlevels))
    for lev in range(nlevels - 1):  # every level but the last: all rows but row 0
        dense[1:, 2 * lev : 2 * lev + 2] = rng.normal(size=(qr - 1, 2))
    dense[[0, 5], -2:] = rng.normal(size=(2, 2))  # the last level: rows 0 and 5
    full = sp.csr_matrix(dense)
    dense_late = dense.copy()
    dense_late[:, :2] = rng.normal(size=(qr, 2))  # ... and a level with every row, which
    # (levels go by their count of rows) comes last: the triangle is full at the end only
    every = sp.csr_matrix(rng.normal(size=(qr, 2 * nlevels)))  # full after one chunk
    for C in (full, sp.csr_matrix(dense_late), every):
        _force(monkeypatch, "stored")
        ref = LevelBlockUpdate.from_cross_products(C, 2)
        _blas(monkeypatch)
        up = LevelBlockUpdate.from_cross_products(C, 2)
        np.testing.assert_array_equal(up.rows, ref.rows)
        np.testing.assert_array_equal(up.cols, ref.cols)
    assert up.rows.shape[0] == qr * (qr + 1) // 2


@pytest.mark.parametrize("case", range(2))
def test_wide_rest_fits_in_the_blas_layout(case, monkeypatch):
    """The rest block counted as wide (the grid's 1e4-item route: Newton start, kept rank
    update, the gradient's level forms by triangular solves with the factor in the blas
    layout): the criterion of the stored layout's fit on the same route to 1e-10."""
    import mixedmodels.objective.gradient as gradient_module

    formula, data = _engine_models()[case]
    monkeypatch.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)
    monkeypatch.setattr(gradient_module, "_DENSE_LIMIT", -1)
    monkeypatch.setattr(gradient_module, "_CHEAP_REST_MAX", 1)
    monkeypatch.setattr(rank_update, "_BLAS_COLUMNS", 8)
    monkeypatch.setattr(rank_update, "UPDATE_THREADS", 2)
    fits = _fits_stored_and_blas(monkeypatch, formula, data)
    crit = {
        layout: float(fit.deviance_function(np.asarray(fit.theta)))
        for layout, fit in zip(("stored", "blas"), fits, strict=True)
    }
    assert abs(crit["blas"] - crit["stored"]) <= 1e-10 * abs(crit["stored"])
