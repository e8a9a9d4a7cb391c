"""The two-stage start of a 2-column template (closed form on columns) against the
definition written with np.linalg on stacked blocks, with and without singular levels."""

import numpy as np
import pytest

from mixedmodels.objective.start import _two_stage_template


def _reference(ztz, xytz1, n, t1_index, beta, s2):
    """Laird & Ware's two-stage estimate, written plainly (see _two_stage_template)."""
    p = xytz1.shape[0] - 1
    p1 = ztz.shape[1]
    ztr = xytz1[p] - np.einsum("i,ilk->lk", beta, xytz1[:p])
    det = np.linalg.det(ztz)
    ok = det > 1e-10 * ztz[:, 0, 0] * ztz[:, 1, 1]
    nok = int(ok.sum())
    dof = n - p - nok * p1
    inv = np.linalg.inv(ztz[ok])
    b = np.einsum("lij,lj->li", inv, ztr[ok])
    sigma2 = (s2 * (n - p) - float(np.sum(b * ztr[ok]))) / dof
    cov = np.cov(b.T) - sigma2 * inv.mean(axis=0)
    rows, cols, _ = t1_index
    free = np.zeros((p1, p1), dtype=bool)
    free[rows, cols] = True
    cov = np.where(free | free.T, cov, 0.0)
    return np.minimum(np.linalg.cholesky(cov / sigma2), 10.0)


@pytest.mark.parametrize("singular_levels", [0, 3])
def test_two_column_template_matches_the_stacked_definition(singular_levels):
    rng = np.random.default_rng(11 + singular_levels)
    levels, per, p = 30, 8, 2
    x = rng.uniform(0, 9, size=(levels, per))
    if singular_levels:
        x[:singular_levels] = 4.0  # a constant slope column: Z_l'Z_l singular
    Z = np.stack([np.ones_like(x), x], axis=-1)  # (levels, per, 2)
    X = np.concatenate([np.ones((levels * per, 1)), x.reshape(-1, 1)], axis=1)
    b = rng.multivariate_normal([0, 0], [[4.0, 0.3], [0.3, 0.5]], size=levels)
    y = X @ np.array([10.0, 2.0]) + np.einsum("lij,lj->li", Z, b).ravel()
    y += rng.normal(scale=1.5, size=y.shape)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    n = y.shape[0]
    s2 = float(np.sum((y - X @ beta) ** 2)) / (n - p)
    ztz = np.einsum("lri,lrj->lij", Z, Z)
    Xy = np.concatenate([X, y[:, None]], axis=1).reshape(levels, per, p + 1)
    xytz1 = np.einsum("lrc,lrj->clj", Xy, Z)  # (p + 1, levels, 2)
    t1_index = (np.array([0, 1, 1]), np.array([0, 0, 1]), 3)
    got = _two_stage_template(ztz, xytz1, n, t1_index, beta, s2)
    want = _reference(ztz, xytz1, n, t1_index, beta, s2)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # a diagonal template (||): the covariance off the diagonal is not estimated
    diag_index = (np.array([0, 1]), np.array([0, 1]), 2)
    got = _two_stage_template(ztz, xytz1, n, diag_index, beta, s2)
    want = _reference(ztz, xytz1, n, diag_index, beta, s2)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert got[1, 0] == 0.0
