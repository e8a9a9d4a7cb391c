"""Small models in dense form, factor ownership, and the early BOBYQA stop.

The dense engine (mixedmodels.objective.dense_deviance) must give the deviance, the gradient, the
moment start and the estimates of the blocked engine on every kind of model (scalar,
vector, `||`, crossed, nested, 3x3 templates; REML and ML), and its gradient must agree
with Richardson differences; the Newton finish it serves lets BOBYQA stop at looser
tolerances, which must land on the tight optimum.
"""

from __future__ import annotations

import numpy as np
import pytest
from engine_cases import CASES, richardson

import mixedmodels as mm
import mixedmodels.linalg.blocked as deviance_module
import mixedmodels.linalg.choice as dense_module
from mixedmodels.errors import SingularFitWarning
from mixedmodels.linalg.choice import dense_size, evaluates_dense
from mixedmodels.linalg.dense import DenseSystem, cross_products_from_rows
from mixedmodels.linalg.solution import estimate
from mixedmodels.objective.gradient import (
    DenseDevianceGradient,
    ProfiledDevianceGradient,
    deviance_gradient,
)
from mixedmodels.objective.profiled_deviance import ProfiledDeviance
from mixedmodels.optimize import OptimizerOptions


def _dense(fit, reml: bool) -> ProfiledDeviance:
    system = DenseSystem.from_cross_products(fit.model.structure, fit.model.cross_products)
    return ProfiledDeviance(system, reml)


@pytest.mark.filterwarnings("ignore::mixedmodels.errors.SingularFitWarning")
@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize(("name", "formula"), CASES, ids=[c[1] for c in CASES])
def test_dense_value_and_gradient_equal_the_blocked_engine(name, formula, reml):
    fit = mm.lmer(formula, mm.load_dataset(name), reml=reml)
    dev = fit.model.deviance_function(reml)
    dense = _dense(fit, reml)
    assert dense_size(fit.model.structure, dev.p) <= dense_module.DENSE_MAX
    theta = fit.theta * 1.15 + 0.05  # away from the optimum: every entry matters
    value, g = dense.value_and_gradient(theta)
    assert value == pytest.approx(dev(theta), rel=1e-11)
    assert dense(theta) == value
    blocked = ProfiledDevianceGradient(dev)(theta)
    scale = max(1.0, float(np.max(np.abs(blocked))))
    assert np.max(np.abs(g - blocked)) / scale < 1e-9, (g, blocked)
    fd = richardson(dense, theta)
    assert np.max(np.abs(g - fd)) / max(1.0, float(np.max(np.abs(fd)))) < 1e-6, (g, fd)
    np.testing.assert_array_equal(DenseDevianceGradient(dense)(theta), g)


@pytest.mark.filterwarnings("ignore::mixedmodels.errors.SingularFitWarning")
@pytest.mark.parametrize(("name", "formula"), CASES, ids=[c[1] for c in CASES])
def test_dense_estimates_start_and_rows_equal_the_blocked_engine(name, formula):
    fit = mm.lmer(formula, mm.load_dataset(name))
    model = fit.model
    from_rows = cross_products_from_rows(model.structure, model.design.X, model.design.y)
    dense = _dense(fit, True)
    np.testing.assert_allclose(from_rows, dense.system._W, rtol=1e-12, atol=1e-9)
    dev = model.deviance_function(True)
    if evaluates_dense(model.structure):  # the dense start serves 1 x 1 templates only
        theta0, steps0 = dev.moment_start(0.5)
        theta1, steps1 = dense.moment_start(0.5)
        np.testing.assert_allclose(theta1, theta0, rtol=1e-10)
        np.testing.assert_array_equal(steps1, steps0)
    est, value = dense.estimates(fit.theta)
    blocked = estimate(dev.system, dev.factor(fit.theta), dev.reml)
    assert value == pytest.approx(dev(fit.theta), rel=1e-12)
    assert est.sigma == pytest.approx(blocked.sigma, rel=1e-10)
    np.testing.assert_allclose(est.beta, blocked.beta, rtol=1e-10)
    np.testing.assert_allclose(est.vcov_beta, blocked.vcov_beta, rtol=1e-9)
    for got, want in zip(est.b + est.u, blocked.b + blocked.u, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10 * np.max(np.abs(want)))


def test_dense_gradient_marks_the_same_singular_entries_as_the_blocked_one():
    formula = "Reaction ~ Days + (Days|Subject) + (1|Days)"
    with pytest.warns(SingularFitWarning):
        fit = mm.lmer(formula, mm.load_dataset("sleepstudy"))
    dev = fit.model.deviance_function(True)
    theta = fit.theta + np.array([0.05, 0.02, -0.03, 0.0])
    g = DenseDevianceGradient(_dense(fit, True))(theta)
    blocked = ProfiledDevianceGradient(dev)(theta)
    np.testing.assert_array_equal(np.isnan(g), [False, False, False, True])
    np.testing.assert_allclose(g[:3], blocked[:3], rtol=1e-9, atol=1e-9)


def test_the_form_is_chosen_by_size(monkeypatch):
    fit = mm.lmer("diameter ~ 1 + (1|plate) + (1|sample)", mm.load_dataset("penicillin"))
    dev = fit.model.deviance_function(True)
    assert dense_size(fit.model.structure, 1) == 24 + 6 + 1 + 1
    assert fit.model.is_small()
    assert isinstance(deviance_gradient(dev), DenseDevianceGradient)
    # Vector templates: BOBYQA evaluates the blocked engine (closed-form 2 x 2 level
    # blocks), the gradient and the estimates are dense; Newton steps from the start (the
    # default options) take their few values from the dense system too, and no blocked
    # system is built.
    formula = "weight ~ treatment + sex + litsize + (1 + sex|litter)"
    slopes = mm.lmer(formula, "ratpup")
    assert dense_size(slopes.model.structure, 6) == 61 and slopes.model.is_small()
    assert not evaluates_dense(slopes.model.structure) and evaluates_dense(fit.model.structure)
    assert "estimates" in vars(slopes) and "deviance_function" not in vars(slopes)
    assert slopes.model._deviances == {}
    by_bobyqa = mm.lmer(formula, "ratpup", control=mm.OptimizerOptions())
    assert {"estimates", "deviance_function"} <= set(vars(by_bobyqa))
    assert by_bobyqa.reml_criterion == pytest.approx(slopes.reml_criterion, rel=1e-10)
    assert "deviance_function" not in vars(fit)
    monkeypatch.setattr(dense_module, "DENSE_MAX", 31)
    assert isinstance(deviance_gradient(dev), ProfiledDevianceGradient)
    assert not fit.model.is_small()
    large = mm.lmer("diameter ~ 1 + (1|plate) + (1|sample)", mm.load_dataset("penicillin"))
    assert "factor" not in vars(large) and "estimates" not in vars(large)
    np.testing.assert_allclose(large.theta, fit.theta, rtol=1e-8)
    assert large.reml_criterion == pytest.approx(fit.reml_criterion, rel=1e-12)


def test_not_positive_definite_gives_inf_and_nan():
    fit = mm.lmer("Reaction ~ Days + (Days|Subject)", mm.load_dataset("sleepstudy"))
    dense = _dense(fit, True)
    dense.system._W = dense.system._W.copy()
    dense.system._W[-1, -1] = -1.0  # y'y < 0: the last pivot fails
    value, g = dense.value_and_gradient(fit.theta)
    assert value == np.inf and dense(fit.theta) == np.inf and np.isnan(g).all()
    with pytest.raises(np.linalg.LinAlgError):
        dense.estimates(fit.theta)


def test_owned_factor_is_consumed_and_a_kept_one_is_left_intact(monkeypatch):
    """On the large path the gradient inverts a factor it owns in place; the factor that
    dev.factor() handed out (and may hand out again) must survive a gradient call."""
    monkeypatch.setattr(deviance_module, "_DENSE_UPDATE_LIMIT", -1)
    frame = mm.load_dataset("penicillin")
    fit = mm.lmer("diameter ~ 1 + (1|plate) + (1|sample)", frame)
    base = fit.model.deviance_function(True)
    dev = ProfiledDeviance(base.system.with_values(fit.model.cross_products), base.reml)
    assert not dev.system._dense
    grad = ProfiledDevianceGradient(dev)
    theta = fit.theta * 1.1
    kept = dev.factor(theta)
    L = kept.L.copy()
    shared = grad(theta)  # the kept factor: read, not consumed
    np.testing.assert_array_equal(kept.L, L)
    assert dev.factor(theta) is kept

    other = fit.theta * 0.9
    f, owned = dev.owned_factor(other)
    assert owned and dev.owned_factor(other)[0] is not f  # not remembered
    value, consumed = grad.value_and_gradient(other)  # an owned factor, inverted in place
    np.testing.assert_allclose(consumed, grad(other, factor=dev.factor(other)), rtol=1e-10)
    assert value == pytest.approx(dev(other), rel=1e-12)
    np.testing.assert_array_equal(kept.L, L)
    fd = richardson(dev, theta)
    assert np.max(np.abs(shared - fd)) / max(1.0, float(np.max(np.abs(fd)))) < 1e-6


INTERIOR = [c for c in CASES if "(1|Days)" not in c[1]]


@pytest.mark.parametrize(("name", "formula"), INTERIOR, ids=[c[1] for c in INTERIOR])
def test_early_bobyqa_stop_and_newton_finish_reach_the_tight_optimum(name, formula):
    """The default fit stops BOBYQA early and finishes with Newton steps; it must land on
    the optimum of BOBYQA run to the tight tolerances (OptimizerOptions())."""
    frame = mm.load_dataset(name)
    default = mm.lmer(formula, frame)
    tight = mm.lmer(formula, frame, control=OptimizerOptions())
    assert default.opt.evaluations < tight.opt.evaluations
    np.testing.assert_allclose(default.theta, tight.theta, rtol=1e-8, atol=1e-9)
    assert default.reml_criterion <= tight.reml_criterion + 1e-9 * abs(tight.reml_criterion)


def test_early_stop_on_a_boundary_optimum_is_at_least_as_good():
    """(1|Days) is estimated at 0: the loose first run ends at the edge and is restarted
    with the tight tolerances; it lands on the bound itself and on a criterion no worse
    (to rounding, 1e-12 relative) than BOBYQA run tight from the start."""
    formula = "Reaction ~ Days + (Days|Subject) + (1|Days)"
    frame = mm.load_dataset("sleepstudy")
    with pytest.warns(SingularFitWarning):
        default = mm.lmer(formula, frame)
    with pytest.warns(SingularFitWarning):
        tight = mm.lmer(formula, frame, control=OptimizerOptions())
    assert default.theta[3] == 0.0
    assert default.reml_criterion <= tight.reml_criterion * (1 + 1e-12)
    np.testing.assert_allclose(default.theta, tight.theta, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "formula"),
    [
        ("ratpup", "weight ~ treatment + sex + litsize + (1|litter)"),
        ("cake", "angle ~ recipe*temperature + (1|recipe:replicate)"),
    ],
)
def test_one_scalar_term_in_closed_form_equals_the_factor(name, formula):
    """One scalar term (24 levels or more): the optimiser's closed-form evaluation gives the
    whole factor's criterion to rounding, and the gradient's value is the same number."""
    fit = mm.lmer(formula, mm.load_dataset(name))
    for reml in (True, False):
        dense = fit.model.dense_deviance(reml)
        assert dense.system._one_term is not None
        blocked = fit.model.deviance_function(reml)
        for theta in (fit.theta * 1.15 + 0.05, np.zeros(1), fit.theta):
            value, _ = dense.value_and_gradient(theta)
            assert dense(theta) == value
            assert value == pytest.approx(dense.value(dense.system.log_terms(theta)), rel=1e-12)
            assert value == pytest.approx(blocked(theta), rel=1e-11)
