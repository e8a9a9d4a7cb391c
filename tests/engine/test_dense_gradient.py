"""The dense value-and-gradient of small models, factor ownership, and the early BOBYQA stop.

The dense formula (mixedmodels.dense_gradient) must give the deviance and the gradient of
the blocked engine on every kind of model (scalar, vector, `||`, crossed, nested, 3x3
templates; REML and ML) and agree with Richardson differences; the Newton finish it
serves lets BOBYQA stop at looser tolerances, which must land on the tight optimum.
"""

from __future__ import annotations

import numpy as np
import pytest

import mixedmodels as mm
import mixedmodels.dense_gradient as dense_module
import mixedmodels.deviance as deviance_module
import mixedmodels.gradient as gradient_module
from mixedmodels.dense_gradient import DenseDevianceGradient, dense_size
from mixedmodels.errors import SingularFitWarning
from mixedmodels.gradient import ProfiledDevianceGradient, deviance_gradient
from mixedmodels.optimize import OptimizerOptions

CASES = [
    ("dyestuff", "Yield ~ 1 + (1|Batch)"),
    ("sleepstudy", "Reaction ~ Days + (Days|Subject)"),
    ("sleepstudy", "Reaction ~ Days + (Days||Subject)"),
    ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
    ("pastes", "strength ~ 1 + (1|batch/cask)"),
    ("ratpup", "weight ~ treatment + sex + litsize + (1 + sex|litter)"),
    ("sleepstudy", "Reaction ~ Days + (Days|Subject) + (1|Days)"),
    ("orthodont", "distance ~ age * Sex + (age|Subject)"),
]


def richardson(dev, theta: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central differences with one Richardson step: O(h^4) truncation error."""

    def central(i: int, step: float) -> float:
        e = np.zeros_like(theta)
        e[i] = step
        return (dev(theta + e) - dev(theta - e)) / (2 * step)

    return np.array([(4 * central(i, h) - central(i, 2 * h)) / 3 for i in range(theta.shape[0])])


@pytest.mark.filterwarnings("ignore::mixedmodels.errors.SingularFitWarning")
@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize(("name", "formula"), CASES, ids=[c[1] for c in CASES])
def test_dense_value_and_gradient_equal_the_blocked_engine(name, formula, reml):
    fit = mm.lmer(formula, mm.load_dataset(name), reml=reml)
    dev = fit.model.deviance_function(reml)
    assert dense_size(dev) <= dense_module.DENSE_GRADIENT_MAX
    theta = fit.theta * 1.15 + 0.05  # away from the optimum: every entry matters
    value, g = DenseDevianceGradient(dev).value_and_gradient(theta)
    assert value == pytest.approx(dev(theta), rel=1e-11)
    blocked = ProfiledDevianceGradient(dev)(theta)
    scale = max(1.0, float(np.max(np.abs(blocked))))
    assert np.max(np.abs(g - blocked)) / scale < 1e-9, (g, blocked)
    fd = richardson(dev, theta)
    assert np.max(np.abs(g - fd)) / max(1.0, float(np.max(np.abs(fd)))) < 1e-6, (g, fd)
    np.testing.assert_array_equal(DenseDevianceGradient(dev)(theta), g)


def test_dense_gradient_marks_the_same_singular_entries_as_the_blocked_one():
    formula = "Reaction ~ Days + (Days|Subject) + (1|Days)"
    with pytest.warns(SingularFitWarning):
        fit = mm.lmer(formula, mm.load_dataset("sleepstudy"))
    dev = fit.model.deviance_function(True)
    theta = fit.theta + np.array([0.05, 0.02, -0.03, 0.0])
    g = DenseDevianceGradient(dev)(theta)
    blocked = ProfiledDevianceGradient(dev)(theta)
    np.testing.assert_array_equal(np.isnan(g), [False, False, False, True])
    np.testing.assert_allclose(g[:3], blocked[:3], rtol=1e-9, atol=1e-9)


def test_the_cheaper_form_is_chosen_by_size(monkeypatch):
    fit = mm.lmer("diameter ~ 1 + (1|plate) + (1|sample)", mm.load_dataset("penicillin"))
    dev = fit.model.deviance_function(True)
    assert dense_size(dev) == 24 + 6 + 1 + 1
    assert isinstance(deviance_gradient(dev), DenseDevianceGradient)
    monkeypatch.setattr(gradient_module, "DENSE_GRADIENT_MAX", 31)
    assert isinstance(deviance_gradient(dev), ProfiledDevianceGradient)


def test_not_positive_definite_gives_inf_and_nan():
    fit = mm.lmer("Reaction ~ Days + (Days|Subject)", mm.load_dataset("sleepstudy"))
    grad = DenseDevianceGradient(fit.model.deviance_function(True))
    grad._W = grad._W.copy()
    grad._W[-1, -1] = -1.0  # y'y < 0: the last pivot fails
    value, g = grad.value_and_gradient(fit.theta)
    assert value == np.inf and np.isnan(g).all()


def test_owned_factor_is_consumed_and_a_kept_one_is_left_intact(monkeypatch):
    """On the large path the gradient inverts a factor it owns in place; the factor that
    dev.factor() handed out (and may hand out again) must survive a gradient call."""
    monkeypatch.setattr(deviance_module, "_DENSE_UPDATE_LIMIT", -1)
    frame = mm.load_dataset("penicillin")
    fit = mm.lmer("diameter ~ 1 + (1|plate) + (1|sample)", frame)
    dev = fit.model.deviance_function(True).with_cross_products(fit.model.cross_products)
    assert not dev._dense
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


@pytest.mark.filterwarnings("ignore::mixedmodels.errors.SingularFitWarning")
@pytest.mark.parametrize(("name", "formula"), CASES, ids=[c[1] for c in CASES])
def test_early_bobyqa_stop_and_newton_finish_reach_the_tight_optimum(name, formula):
    """The default fit stops BOBYQA early and finishes with Newton steps; it must land on
    the optimum of BOBYQA run to the tight tolerances (OptimizerOptions())."""
    frame = mm.load_dataset(name)
    default = mm.lmer(formula, frame)
    tight = mm.lmer(formula, frame, control=OptimizerOptions())
    assert default.opt.evaluations < tight.opt.evaluations
    np.testing.assert_allclose(default.theta, tight.theta, rtol=1e-8, atol=1e-9)
    assert default.reml_criterion <= tight.reml_criterion + 1e-9 * abs(tight.reml_criterion)
