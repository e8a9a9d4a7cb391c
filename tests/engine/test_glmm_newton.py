"""Newton's method with bounds on an analytic gradient (GLMM stage 2), on functions whose
minimum is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mixedmodels.optimize.glmm_newton import gradient_differences, newton_minimize


def _rosenbrock(x):
    a, b = x
    value = (1.0 - a) ** 2 + 100.0 * (b - a * a) ** 2
    grad = np.array([-2.0 * (1.0 - a) - 400.0 * a * (b - a * a), 200.0 * (b - a * a)])
    return value, grad


def _bounded_quadratic(x):
    # Minimum at (-1, 2) without bounds; with x0 >= 0 it is at (0, 2 + 0.5 * 1).
    A = np.array([[2.0, 1.0], [1.0, 4.0]])
    c = np.array([-1.0, 2.0])
    d = x - c
    return float(0.5 * d @ A @ d), A @ d


def test_newton_reaches_rosenbrocks_minimum_with_the_hessian_there():
    result = newton_minimize(
        _rosenbrock, np.array([-0.5, 0.8]), np.full(2, -np.inf), step=1e-4, tolerance=1e-14
    )
    assert result.converged
    np.testing.assert_allclose(result.x, [1.0, 1.0], atol=1e-6)
    exact = np.array([[802.0, -400.0], [-400.0, 200.0]])
    np.testing.assert_allclose(result.hessian, exact, rtol=1e-6)


def test_newton_stops_at_a_bound_where_the_gradient_points_out():
    result = newton_minimize(
        _bounded_quadratic,
        np.array([1.0, 0.0]),
        np.array([0.0, -np.inf]),
        step=1e-4,
        tolerance=1e-14,
    )
    assert result.converged
    # At x0 = 0 the best x1 solves 4 (x1 - 2) + 1 (0 + 1) = 0.
    np.testing.assert_allclose(result.x, [0.0, 1.75], atol=1e-8)
    assert result.gradient[0] > 0


def test_newton_reports_a_criterion_it_cannot_evaluate():
    result = newton_minimize(
        lambda x: (np.inf, np.full(2, np.nan)),
        np.zeros(2),
        np.full(2, -np.inf),
        step=1e-4,
        tolerance=1e-10,
    )
    assert not result.converged
    assert "not finite" in result.message


@pytest.mark.parametrize("columns", [None, np.array([1])])
def test_gradient_differences_of_a_quadratic_are_exact(columns):
    H, used = gradient_differences(_bounded_quadratic, np.array([0.3, -0.2]), 1e-3, columns)
    exact = np.array([[2.0, 1.0], [1.0, 4.0]])
    expected = exact if columns is None else exact[:, columns]
    np.testing.assert_allclose(H, expected, rtol=1e-10)
    assert used == 2 * (2 if columns is None else 1)


def test_forward_gradient_differences_use_one_evaluation_per_column():
    x = np.array([0.3, -0.2])
    _, g = _bounded_quadratic(x)
    H, used = gradient_differences(_bounded_quadratic, x, 1e-5, gradient=g)
    np.testing.assert_allclose(H, [[2.0, 1.0], [1.0, 4.0]], rtol=1e-8)
    assert used == 2


def test_newton_with_forward_hessians_reaches_rosenbrocks_minimum():
    result = newton_minimize(
        _rosenbrock,
        np.array([-0.5, 0.8]),
        np.full(2, -np.inf),
        step=1e-7,
        forward=True,
        tolerance=1e-14,
    )
    assert result.converged
    np.testing.assert_allclose(result.x, [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(result.hessian, [[802.0, -400.0], [-400.0, 200.0]], rtol=1e-5)


def test_stage1_evaluates_no_theta_twice():
    # PIRLS warm-starts from the last modes, so stage 1's criterion is remembered per point
    # (BOBYQA would otherwise evaluate its start and its optimum again).
    import pandas as pd

    from mixedmodels.design import build_design
    from mixedmodels.family import make_family
    from mixedmodels.models.glmm import GeneralizedLinearMixedModel

    data = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "cbpp.csv")
    formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
    design = build_design(formula, data, binomial_response=True)
    model = GeneralizedLinearMixedModel(design, make_family("binomial"))
    seen: list[tuple[float, ...]] = []
    fast = model.deviance.fast

    def counted(theta):
        seen.append(tuple(np.asarray(theta).tolist()))
        return fast(theta)

    model.deviance.fast = counted
    fit = model.fit()
    assert len(seen) == len(set(seen)) >= 3
    assert fit.converged
