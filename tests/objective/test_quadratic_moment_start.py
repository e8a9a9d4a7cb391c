"""The quadratic-form moment start of scalar terms (objective/start.py).

On balanced designs the moment equations' solution is the ANOVA estimate, which is the
REML optimum when every component is positive: the start must equal the fitted theta
(Dyestuff, Penicillin crossed, Pastes nested, Cake with its fixed effects); on unbalanced
data it must be an unbiased estimate close to the optimum; a component estimated below 0
hands over to the one-way start; the blocked and dense forms start alike.
"""

from __future__ import annotations

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.linalg.blocked import BlockedSystem
from mixedmodels.linalg.dense import DenseSystem, cross_products_from_rows
from mixedmodels.objective.start import (
    _solve_small,
    blocked_moment_start,
    dense_moment_start,
    quadratic_moment_theta,
)

BALANCED = [
    ("dyestuff", "Yield ~ 1 + (1|Batch)"),
    ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
    ("pastes", "strength ~ 1 + (1|batch/cask)"),
    ("cake", "angle ~ recipe * temperature + (1|recipe:replicate)"),
]


def _dense(fit) -> DenseSystem:
    model = fit.model
    W = cross_products_from_rows(model.structure, model.design.X, model.design.y)
    return DenseSystem(model.structure, W, model.nobs)


@pytest.mark.parametrize(("name", "formula"), BALANCED, ids=[c[1] for c in BALANCED])
def test_balanced_designs_start_at_the_reml_optimum(name, formula):
    fit = mm.lmer(formula, mm.load_dataset(name))
    system = _dense(fit)
    theta = quadratic_moment_theta(system.W, system.n, system.p, system.scalar_indicator())
    assert theta is not None
    np.testing.assert_allclose(theta, fit.theta, rtol=1e-7)
    # One term: the start sums over all levels without the indicator (S=None), the same
    # estimate up to the order of the sums.
    one = len(system.structure.terms) == 1
    if one:
        alone = quadratic_moment_theta(system.W, system.n, system.p, None)
        np.testing.assert_allclose(alone, theta, rtol=1e-14)
        theta = alone
    start, steps = dense_moment_start(system, 0.5)
    np.testing.assert_array_equal(start, theta)
    np.testing.assert_allclose(steps, 0.3 * theta)


def test_unbalanced_design_starts_near_the_optimum():
    fit = mm.lmer("weight ~ treatment + sex + litsize + (1|litter)", mm.load_dataset("ratpup"))
    system = _dense(fit)
    theta = quadratic_moment_theta(system.W, system.n, system.p, system.scalar_indicator())
    assert theta is not None
    assert abs(theta[0] / fit.theta[0] - 1.0) < 0.02  # 0.780 for 0.773


def test_a_negative_component_falls_back_on_the_one_way_start():
    """A response with no between-group variance (the group effect cancelled): the
    estimate of its component is below 0, so the quadratic start gives None and the dense
    start is the one-way one."""
    rng = np.random.default_rng(11)
    g = np.repeat(np.arange(8), 6)
    y = rng.normal(size=g.shape[0])
    y -= np.bincount(g, y)[g] / 6.0  # every group mean exactly 0
    y += rng.normal(scale=1e-3, size=y.shape[0])
    import pandas as pd

    frame = pd.DataFrame({"y": y, "g": [f"g{i}" for i in g]})
    with pytest.warns(mm.errors.SingularFitWarning):
        fit = mm.lmer("y ~ 1 + (1|g)", frame)
    system = _dense(fit)
    assert quadratic_moment_theta(system.W, system.n, system.p, system.scalar_indicator()) is None
    start, _ = dense_moment_start(system, 0.5)
    assert np.all(np.isfinite(start))


@pytest.mark.parametrize(("name", "formula"), BALANCED[1:3], ids=[c[1] for c in BALANCED[1:3]])
def test_blocked_and_dense_start_alike(name, formula):
    fit = mm.lmer(formula, mm.load_dataset(name))
    blocked = BlockedSystem(fit.model.structure, fit.model.cross_products)
    theta_b, steps_b = blocked_moment_start(blocked, 0.5)
    theta_d, steps_d = dense_moment_start(_dense(fit), 0.5)
    np.testing.assert_allclose(theta_b, theta_d, rtol=1e-12)
    np.testing.assert_array_equal(steps_b, steps_d)


def test_small_solve_matches_numpy_and_refuses_singular_systems():
    rng = np.random.default_rng(5)
    for k in (1, 2, 3, 5):
        M = rng.normal(size=(k, k)) + k * np.eye(k)
        b = rng.normal(size=k)
        x = _solve_small(M.tolist(), b.tolist())
        np.testing.assert_allclose(x, np.linalg.solve(M, b), rtol=1e-12, atol=1e-12)
    # a row permutation needs the pivoting
    x = _solve_small([[0.0, 1.0], [1.0, 0.0]], [2.0, 3.0])
    assert x == [3.0, 2.0]
    assert _solve_small([[1.0, 2.0], [2.0, 4.0]], [1.0, 1.0]) is None
    assert _solve_small([[0.0]], [1.0]) is None
