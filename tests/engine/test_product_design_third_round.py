"""The product design's third round (issue 18): fewer factorisations on the large path.

A term 1 with several columns and a rest block, factored through ``LevelBlockUpdate``
(users with slopes and items). Satterthwaite's Hessian there comes from forward
differences of the profiled gradient (``k`` factorisations, ``k + 1`` gradients); it must
give the df of the central differences (``2k`` of each) to ~1e-6.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from engine_cases import product_frame

import mixedmodels as mm
import mixedmodels.linalg.blocked as blocked
import mixedmodels.objective.gradient as gradient_module
from mixedmodels.inference import satterthwaite
from mixedmodels.linalg.rank_update import LevelBlockUpdate

FORMULA = "y ~ x + (1 + x | user) + (1 | item)"


@pytest.fixture(scope="module")
def large_fit():
    mp = pytest.MonkeyPatch()
    mp.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)  # the large path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = mm.lmer(FORMULA, product_frame(11, users=120, per=8, items=12))
    finally:
        mp.undo()
    assert isinstance(fit.deviance_function.system.pattern, LevelBlockUpdate)
    return fit


def _df(info) -> np.ndarray:
    var = np.diag(info.vcov_beta)
    g = np.einsum("kaa->ak", info.jacobian)
    return 2 * var**2 / np.einsum("mk,kl,ml->m", g, info.vcov_varpar, g)


def test_forward_differences_give_the_central_df(large_fit, monkeypatch):
    f = large_fit
    dev = f.deviance_function
    theta, sigma = f.opt.final_theta, f.estimates.sigma
    H, jac, s0, used = satterthwaite._analytic_covariance(
        dev, theta, sigma, f.reml, satterthwaite._GRADIENT_STEP
    )
    k = theta.shape[0]
    assert used == 1 + k  # forward: k factorisations after the one at theta
    forward = satterthwaite._covariance(H, jac, theta, sigma, sigma**2 * s0.xtvinvx_inv)
    # The central differences of the unprofiled gradient (every other model's way).
    monkeypatch.setattr(gradient_module, "_large_path", lambda dev: False)
    Hc, jacc, s0c, usedc = satterthwaite._analytic_covariance(
        dev, theta, sigma, f.reml, satterthwaite._GRADIENT_STEP
    )
    assert usedc == 1 + 2 * k
    central = satterthwaite._covariance(Hc, jacc, theta, sigma, sigma**2 * s0c.xtvinvx_inv)
    scale = np.max(np.abs(Hc))
    np.testing.assert_allclose(H, Hc, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(_df(forward), _df(central), rtol=2e-6)


def test_the_large_path_starts_with_newton_steps(large_fit):
    """From the moment start the finish's Newton steps (BFGS-refreshed) find the optimum
    without BOBYQA; the fit equals the one through BOBYQA and the finish (below)."""
    assert large_fit.opt.optimizer == "newton"
    assert large_fit.converged and not large_fit.opt.messages


def test_newton_from_the_start_falls_back_to_bobyqa(large_fit, monkeypatch):
    import mixedmodels.models.lmm as lmm_module
    from mixedmodels.optimize import finish

    calls = []

    def never(*args, **kwargs):  # as when the steps do not converge
        calls.append(1)
        return None

    monkeypatch.setattr(lmm_module, "newton_secant_first", never)
    monkeypatch.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mm.lmer(FORMULA, product_frame(11, users=120, per=8, items=12))
    assert calls and fit.opt.optimizer != "newton"
    assert fit.converged and not fit.opt.messages
    np.testing.assert_allclose(fit.theta, large_fit.theta, rtol=1e-7)
    assert fit.opt.final_objective == pytest.approx(large_fit.opt.final_objective, rel=1e-12)
    np.testing.assert_allclose(fit.fixef, large_fit.fixef, rtol=1e-8)
    # A start that cannot converge in one step gives None, not a half-finished optimum.
    dev = large_fit.deviance_function
    grad = gradient_module.ProfiledDevianceGradient(dev)
    start = large_fit.opt.final_theta * 1.2
    lower = dev.structure.lower_bounds()
    assert finish.newton_secant_first(dev, grad, start, lower, max_steps=1) is None
