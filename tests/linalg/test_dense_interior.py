"""Scalar terms' exact Hessian by the interior formulas (DenseSystem._scalar_interior_derivatives).

Inside the floor ``theta_i^2 a_i >= _INTERIOR_MIN`` the Hessian and gradient of
``log_terms_gradient_and_hessian`` come from ``G = Omega^{-1}`` alone; they must equal the
general formulas (the products with ``K = A D``) to rounding, REML and ML, crossed and
nested terms, with prior weights; below the floor (and on the bound) the general formulas
serve unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

import mixedmodels as mm
import mixedmodels.linalg.dense as dense_module
from mixedmodels.linalg.dense import DenseSystem, cross_products_from_rows

CASES = [
    ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
    ("pastes", "strength ~ 1 + (1|batch/cask)"),
    ("sleepstudy", "Reaction ~ Days + (1|Subject) + (0 + Days|Subject)"),
    ("dyestuff", "Yield ~ 1 + (1|Batch)"),
]


def _system(name: str, formula: str, weighted: bool = False) -> DenseSystem:
    data = mm.load_dataset(name)
    model = mm.lmer(formula, data).model
    w = None
    if weighted:
        w = np.random.default_rng(3).uniform(0.5, 2.0, model.nobs)
    W = cross_products_from_rows(model.structure, model.design.X, model.design.y, w)
    return DenseSystem(model.structure, W, model.nobs)


def _general(system, theta, logdet, weight):
    old = dense_module._INTERIOR_MIN
    dense_module._INTERIOR_MIN = np.inf  # every point below the floor: the general formulas
    try:
        return system.log_terms_gradient_and_hessian(theta, logdet, weight, False)
    finally:
        dense_module._INTERIOR_MIN = old


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weights"])
@pytest.mark.parametrize("logdet", ["zx", "z"], ids=["REML", "ML"])
@pytest.mark.parametrize(("name", "formula"), CASES, ids=[c[1] for c in CASES])
def test_interior_formulas_equal_the_general_ones(name, formula, logdet, weighted):
    system = _system(name, formula, weighted)
    k = system.structure.ntheta
    rng = np.random.default_rng(7)
    for theta in (np.full(k, 1.3), rng.uniform(0.05, 4.0, k)):
        weight = float(system.n - (system.p if logdet == "zx" else 0))
        terms, g, H = system.log_terms_gradient_and_hessian(theta, logdet, weight, False)
        terms0, g0, H0 = _general(system, theta, logdet, weight)
        assert terms == terms0
        scale_g = max(1.0, float(np.max(np.abs(g0))))
        scale_h = max(1.0, float(np.max(np.abs(H0))))
        assert np.max(np.abs(g - g0)) / scale_g < 1e-11, (g, g0)
        assert np.max(np.abs(H - H0)) / scale_h < 1e-11, (H, H0)
        np.testing.assert_array_equal(H, H.T)


def test_below_the_floor_and_on_the_bound_the_general_formulas_serve():
    system = _system(*CASES[0])
    for theta in (np.array([1.5, 0.0]), np.array([1e-5, 2.0])):
        found = system.log_terms_gradient_and_hessian(theta, "zx", 143.0, False)
        expected = _general(system, theta, "zx", 143.0)
        np.testing.assert_array_equal(found[1], expected[1])
        np.testing.assert_array_equal(found[2], expected[2])
    # NaN on a singular template, as the general formulas report it
    _, g, H = system.log_terms_gradient_and_hessian(np.array([1.5, 0.0]), "zx", 143.0)
    assert np.isnan(g[1]) and np.isnan(H[1]).all() and np.isfinite(H[0, 0])
