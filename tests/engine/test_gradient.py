"""The analytic gradient of the profiled deviance and the Newton finish of the optimum.

The gradient is checked against Richardson-extrapolated central differences of the
deviance itself (error ~1e-9 relative at these steps), on every engine path: one term
(closed-form 1x1 and 2x2 blocks, and a 3x3 block), crossed and nested terms (dense small
path), the sparse large path, `||` templates with fixed zeros, REML and ML; a singular
template gives NaN for its own entries only. The Newton finish must bring a perturbed
optimum back to the same point to 1e-9.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from engine_cases import CASES, richardson

import mixedmodels as mm
import mixedmodels.objective.gradient as gradient_module
from mixedmodels.errors import SingularFitWarning
from mixedmodels.objective.gradient import ProfiledDevianceGradient, profiled_deviance_gradient
from mixedmodels.optimize import check_convergence, newton_finish, newton_polish


def assert_gradient_matches(dev, theta: np.ndarray, tol: float = 1e-6) -> None:
    g = ProfiledDevianceGradient(dev)(theta)
    fd = richardson(dev, theta)
    scale = max(1.0, float(np.max(np.abs(fd))))
    assert np.max(np.abs(g - fd)) / scale < tol, (g, fd)


@pytest.mark.filterwarnings("ignore::mixedmodels.errors.SingularFitWarning")
@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize(("name", "formula"), CASES, ids=[c[1] for c in CASES])
def test_gradient_equals_finite_differences(name, formula, reml):
    fit = mm.lmer(formula, mm.load_dataset(name), reml=reml)
    dev = fit.model.deviance_function(reml)
    # Away from the optimum (and from any boundary), so every entry matters.
    theta = fit.theta * 1.15 + 0.05
    assert_gradient_matches(dev, theta)
    if not fit.singular:
        # At an interior optimum it vanishes (the fit was finished on it).
        g = ProfiledDevianceGradient(dev)(fit.theta)
        assert np.max(np.abs(g)) < 1e-9 * abs(fit.objective)


def test_three_by_three_template_and_factor_reuse():
    frame = mm.load_dataset("sleepstudy").assign(D2=lambda d: (d["Days"] - 4.5) ** 2 / 10)
    fit = mm.lmer("Reaction ~ Days + D2 + (Days + D2 | Subject)", frame)
    dev = fit.model.deviance_function(True)
    theta = fit.theta + 0.03
    assert_gradient_matches(dev, theta)
    f = dev.factor(theta)
    np.testing.assert_array_equal(
        profiled_deviance_gradient(dev, theta, factor=f), profiled_deviance_gradient(dev, theta)
    )


def crossed_frame(n_a: int = 60, n_b: int = 150, n: int = 1500, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n_a, n)
    b = rng.integers(0, n_b, n)
    x = rng.normal(size=n)
    slope = rng.normal(size=n_b)[b] * 0.4
    y = 1 + (0.5 + slope) * x + rng.normal(size=n_a)[a] * 0.8 + rng.normal(size=n_b)[b] * 0.5
    y = y + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str)})


@pytest.mark.parametrize("dense_trace", [True, False], ids=["dense-trace", "sparse-trace"])
def test_gradient_on_the_large_sparse_path(monkeypatch, dense_trace):
    """A rest block of 150 levels (m > 128) uses the deviance's sparse update path."""
    if not dense_trace:
        monkeypatch.setattr(gradient_module, "_DENSE_LIMIT", 0)
    frame = crossed_frame()
    fit = mm.lmer("y ~ x + (1|a) + (1 + x|b)", frame)
    dev = fit.model.deviance_function(True)
    assert not dev.system._dense
    assert_gradient_matches(dev, fit.theta * 0.9 + 0.02)
    ml = fit.model.deviance_function(False)
    assert_gradient_matches(ml, fit.theta * 1.1 + 0.02)


@pytest.mark.parametrize("formula", ["y ~ x + (1 + x|a) + (1|b)", "y ~ x + (1|a) + (1|b)"])
def test_pattern_trace_equals_sparse_products_and_differences(monkeypatch, formula):
    """Scalar rest terms on the large path: term 1's trace from the rank update's level
    forms equals the sparse products' trace and finite differences."""
    frame = crossed_frame()
    fit = mm.lmer(formula, frame)
    dev = fit.model.deviance_function(True)
    assert not dev.system._dense and dev.system.pattern is not None
    theta = fit.theta * 0.9 + 0.02
    assert_gradient_matches(dev, theta)
    monkeypatch.setattr(gradient_module, "_DENSE_LIMIT", 0)
    via_pattern = ProfiledDevianceGradient(dev)(theta)
    monkeypatch.setattr(dev.system, "pattern", None)  # the sparse products' trace
    via_products = ProfiledDevianceGradient(dev)(theta)
    np.testing.assert_allclose(via_pattern, via_products, rtol=1e-9, atol=1e-9)


def test_singular_template_gives_nan_for_its_own_entries_only():
    with pytest.warns(SingularFitWarning):
        fit = mm.lmer("Yield ~ 1 + (1|Batch)", mm.load_dataset("dyestuff2"))
    assert fit.theta[0] == 0.0  # Dyestuff2's boundary optimum
    g = ProfiledDevianceGradient(fit.model.deviance_function(True))(fit.theta)
    assert np.isnan(g).all()

    # (1|Days) is estimated at 0; the (Days|Subject) entries stay exact.
    formula = "Reaction ~ Days + (Days|Subject) + (1|Days)"
    frame = mm.load_dataset("sleepstudy")
    with pytest.warns(SingularFitWarning):
        fit = mm.lmer(formula, frame)
    dev = fit.model.deviance_function(True)
    assert fit.theta[3] == 0.0
    theta = fit.theta + np.array([0.05, 0.02, -0.03, 0.0])
    g = ProfiledDevianceGradient(dev)(theta)
    assert np.isnan(g[3])
    fd = richardson(dev, theta)
    assert np.max(np.abs(g[:3] - fd[:3])) / max(1.0, np.max(np.abs(fd[:3]))) < 1e-6
    # ... so the finish still applies to them: row order does not move them.
    at_optimum = ProfiledDevianceGradient(dev)(fit.theta)
    assert np.max(np.abs(at_optimum[:3])) < 1e-9 * abs(fit.objective)
    with pytest.warns(SingularFitWarning):
        other = mm.lmer(formula, frame.sample(frac=1.0, random_state=3))
    np.testing.assert_allclose(other.theta, fit.theta, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize(("name", "formula"), CASES[:6], ids=[c[1] for c in CASES[:6]])
def test_newton_finish_recovers_a_perturbed_optimum(name, formula):
    fit = mm.lmer(formula, mm.load_dataset(name))
    dev = fit.model.deviance_function(True)
    grad = ProfiledDevianceGradient(dev)
    moved = fit.theta * (1 + 2e-5) + 1e-6
    start = type(fit.opt)(
        initial_theta=moved,
        final_theta=moved,
        lower=fit.opt.lower,
        initial_objective=dev(moved),
        final_objective=dev(moved),
        evaluations=0,
        optimizer="test",
        return_code="SUCCESS",
    )
    polished, g, H = newton_polish(dev, grad, start)
    assert H is not None
    scale = np.maximum(np.abs(fit.theta), 1e-3)
    assert np.max(np.abs(polished.final_theta - fit.theta) / scale) < 1e-9
    assert polished.final_objective <= start.final_objective
    assert np.max(np.abs(g)) < 1e-9 * abs(fit.objective)
    finished, hessian, accurate = newton_finish(dev, grad, start)
    np.testing.assert_allclose(finished.final_theta, polished.final_theta, rtol=1e-12)
    np.testing.assert_array_equal(finished.gradient, g)
    assert finished.evaluations > 0
    checked = check_convergence(
        dev, finished, hessian=hessian, hessian_accurate=accurate, gradient=grad
    )
    assert checked.converged
    assert checked.messages == ()
    # The check judges; it does not move the optimum.
    np.testing.assert_array_equal(checked.final_theta, finished.final_theta)
    assert checked.final_objective == finished.final_objective


def test_fits_do_not_depend_on_row_order_beyond_1e_8():
    """Without the Newton finish, row order moved Pastes' theta by 2.4e-6."""
    for name, formula in CASES[:6]:
        frame = mm.load_dataset(name)
        a = mm.lmer(formula, frame)
        b = mm.lmer(formula, frame.sample(frac=1.0, random_state=11))
        scale = np.maximum(np.abs(a.theta), 1e-3)
        assert np.max(np.abs(a.theta - b.theta) / scale) < 1e-8, formula
        np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-8)
