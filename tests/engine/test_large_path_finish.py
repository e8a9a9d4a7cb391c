"""The large path's finish and Satterthwaite derivatives (issue 18).

A term 1 with several columns and a rest block, factored through ``LevelBlockUpdate``
(users with slopes and items): its gradient counts as cheap, so the Newton finish takes
its Hessian from gradients and refreshes it by BFGS updates, and Satterthwaite's Hessian
differences the profiled gradient alone. Each must give the fit and the df of the other
paths.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from engine_cases import product_frame

import mixedmodels as mm
import mixedmodels.linalg.blocked as blocked
from mixedmodels.linalg.rank_update import LevelBlockUpdate
from mixedmodels.objective.gradient import ProfiledDevianceGradient
from mixedmodels.optimize.finish import _secant_update

FORMULA = "y ~ x + (1 + x | user) + (1 | item)"


@pytest.fixture(scope="module")
def fits():
    # dense update on its own: 13^2 x 100 x 3 <= 2^16
    data = product_frame(4, users=100, per=8, items=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = mm.lmer(FORMULA, data)
        mp = pytest.MonkeyPatch()
        mp.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)  # the large path
        try:
            large = mm.lmer(FORMULA, data)
        finally:
            mp.undo()
    return small, large


def test_large_path_fit_equals_the_small_path(fits):
    small, large = fits
    dev = large.deviance_function
    assert isinstance(dev.system.pattern, LevelBlockUpdate)
    grad = ProfiledDevianceGradient(dev)
    assert grad.cheap and grad.secant_updates
    assert small.deviance_function.system.uses_dense_update
    assert large.converged and not large.opt.messages
    np.testing.assert_allclose(large.theta, small.theta, rtol=1e-7)
    assert large.opt.final_objective == pytest.approx(small.opt.final_objective, rel=1e-12)
    np.testing.assert_allclose(large.fixef, small.fixef, rtol=1e-8)


def test_large_path_satterthwaite_matches_numerical(fits):
    """The profiled-gradient differences against numDeriv's tableau (tolerances of
    tests/inference/test_satterthwaite.py's comparison)."""
    from mixedmodels.inference.satterthwaite import varpar_covariance

    _, f = fits
    args = (f.objective_function, f.opt.final_theta, f.estimates.sigma)
    num = varpar_covariance(*args, reml=f.reml, method="numerical")
    exact = varpar_covariance(*args, reml=f.reml, method="analytic")
    scale = np.max(np.abs(num.hessian))
    np.testing.assert_allclose(exact.hessian, num.hessian, rtol=0, atol=1e-5 * scale)
    p = f.estimates.beta.shape[0]
    cond = np.linalg.cond(num.hessian)

    def df(info):
        var = np.diag(info.vcov_beta)
        g = np.einsum("kaa->ak", info.jacobian)
        return 2 * var**2 / np.einsum("mk,kl,ml->m", g, info.vcov_varpar, g)

    np.testing.assert_allclose(df(exact), df(num), rtol=1e-6 * max(1.0, cond / 100))
    assert p == 2


def test_secant_update_meets_the_secant_equation():
    rng = np.random.default_rng(0)
    G = rng.normal(size=(4, 4))
    H = G @ G.T + 4 * np.eye(4)
    s = rng.normal(size=4)
    A = H + 0.3 * np.eye(4)  # the "true" Hessian the step sees
    y = A @ s
    H1 = _secant_update(H, s, y)
    np.testing.assert_allclose(H1 @ s, y, rtol=1e-12)
    np.testing.assert_allclose(H1, H1.T, rtol=0, atol=0)
    assert np.all(np.linalg.eigvalsh(H1) > 0)
    # Curvature condition violated: H is kept.
    assert _secant_update(H, s, -y) is H


def test_large_path_gradient_equals_the_dense_update_path(fits, monkeypatch):
    """The 2 x 2 closed forms of the large path's gradient (in slices of levels) against
    the small path's gradient (a dense copy of Zr'Z1, batched products), away from the
    optimum."""
    import mixedmodels.objective.gradient as gradient_module

    monkeypatch.setattr(gradient_module, "_LEVEL_SLICE", 7)
    small, large = fits
    theta = np.asarray(small.theta) * 1.2 + 0.03
    g_small = ProfiledDevianceGradient(small.deviance_function)(theta)
    g_large = ProfiledDevianceGradient(large.deviance_function)(theta)
    scale = max(1.0, float(np.max(np.abs(g_small))))
    np.testing.assert_allclose(g_large, g_small, rtol=0, atol=1e-9 * scale)


def test_transpose_times_into_a_level_last_array():
    import scipy.sparse as sp

    rng = np.random.default_rng(2)
    C = sp.random(7, 30 * 2, density=0.2, random_state=3, format="csr")
    C.sort_indices()
    up = LevelBlockUpdate.from_cross_products(C, 2)
    Y = rng.normal(size=(7, 3))
    base = rng.normal(size=(3, 2, 30))
    got = up.transpose_times(Y, into=base.copy())
    ref = base + (C.T @ Y).reshape(30, 2, 3).transpose(2, 1, 0)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
