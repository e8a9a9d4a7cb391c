"""The exact Hessian of a small model's criterion from its dense system.

``DenseSystem.log_terms_gradient_and_hessian`` must give the value and gradient of
``log_terms_and_gradient`` and a Hessian equal to central differences of that analytic
gradient (truncation ~1e-10 relative at the step used), on every kind of template: scalar
terms (the diagonal-D form), vector, ``||`` and nested terms, REML and ML; entries of a
template on its bound are NaN as in the gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.linalg.dense import DenseSystem
from mixedmodels.objective.gradient import DenseDevianceGradient
from mixedmodels.objective.profiled_deviance import ProfiledDeviance

CASES = [
    ("dyestuff", "Yield ~ 1 + (1|Batch)"),
    ("sleepstudy", "Reaction ~ Days + (Days|Subject)"),
    ("sleepstudy", "Reaction ~ Days + (Days||Subject)"),
    ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
    ("pastes", "strength ~ 1 + (1|batch/cask)"),
    ("ratpup", "weight ~ treatment + sex + litsize + (1 + sex|litter)"),
    ("orthodont", "distance ~ age * Sex + (age|Subject)"),
]


def _dense(fit, reml: bool) -> ProfiledDeviance:
    system = DenseSystem.from_cross_products(fit.model.structure, fit.model.cross_products)
    return ProfiledDeviance(system, reml)


def _gradient_differences(dev: ProfiledDeviance, theta: np.ndarray) -> np.ndarray:
    """Central differences of the analytic gradient, step 1e-5 relative."""
    k = theta.shape[0]
    H = np.empty((k, k))
    for i in range(k):
        h = 1e-5 * max(1.0, abs(theta[i]))
        e = np.zeros(k)
        e[i] = h
        H[:, i] = (dev.value_and_gradient(theta + e)[1] - dev.value_and_gradient(theta - e)[1]) / (
            2.0 * h
        )
    return H


@pytest.mark.filterwarnings("ignore::mixedmodels.errors.SingularFitWarning")
@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize(("name", "formula"), CASES, ids=[c[1] for c in CASES])
def test_exact_hessian_equals_differences_of_the_gradient(name, formula, reml):
    fit = mm.lmer(formula, mm.load_dataset(name), reml=reml)
    dev = _dense(fit, reml)
    theta = fit.theta * 1.1 + 0.01  # off the optimum, every entry away from its bound
    value, g, H = dev.value_gradient_and_hessian(theta)
    value0, g0 = dev.value_and_gradient(theta)
    assert value == value0
    np.testing.assert_allclose(g, g0, rtol=1e-10, atol=1e-10 * np.abs(g0).max())
    reference = _gradient_differences(dev, theta)
    scale = np.abs(reference).max()
    assert np.abs(H - reference).max() / scale < 1e-6, (H, reference)
    np.testing.assert_array_equal(H, H.T)
    gradient = DenseDevianceGradient(dev)
    H1, used = gradient.hessian(theta)
    np.testing.assert_array_equal(H1, H)
    assert used == 1


def test_hessian_of_a_singular_template_is_nan_in_its_rows():
    fit = mm.lmer("Reaction ~ Days + (Days|Subject)", mm.load_dataset("sleepstudy"))
    dev = _dense(fit, True)
    theta = np.array([0.9, 0.02, 0.0])  # the template's second diagonal on its bound
    _, g, H = dev.value_gradient_and_hessian(theta)
    assert np.isnan(g).all()
    assert np.isnan(H).all()
    theta = np.array([fit.theta[0], fit.theta[1], fit.theta[2]])
    _, g, H = dev.value_gradient_and_hessian(theta)
    assert np.isfinite(g).all() and np.isfinite(H).all()


@pytest.mark.parametrize("ml", [False, True], ids=["REML", "ML"])
def test_gradient_entries_by_inverse_equal_those_by_solve(ml):
    # Every small model takes the solve; the inverse serves larger orders only.
    fit = mm.lmer("distance ~ age * Sex + (age|Subject)", mm.load_dataset("orthodont"))
    system = _dense(fit, True).system
    U, K = system._factor(fit.theta * 1.1)
    by_solve = system._p_entries_by_solve(U, K, ml)
    by_inverse = system._p_entries_by_inverse(U.copy(order="F"), K, ml)
    for a, b in zip(by_solve, by_inverse, strict=True):
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(a).max())
