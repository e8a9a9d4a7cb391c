"""The one-theta search of nAGQ = 0 fits (cubic interpolation on values and slopes) and
the analytic slope it follows (one scalar random-effects term, beta inside PIRLS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mixedmodels.design import build_design
from mixedmodels.family import make_family
from mixedmodels.models.glmm import GeneralizedLinearMixedModel
from mixedmodels.objective.pirls import GlmmResponse, PirlsDeviance
from mixedmodels.optimize.glmm_newton import minimize_scalar

DATA = Path(__file__).resolve().parents[1] / "data"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def _one(function):
    def fg(x):
        value, slope = function(float(x[0]))
        return value, np.array([slope])

    return fg


@pytest.mark.parametrize(
    ("function", "x0", "lower", "expected"),
    [
        (lambda x: ((x - 0.3) ** 2, 2.0 * (x - 0.3)), 1.0, 0.0, 0.3),
        # Far from quadratic: x - log x, minimum at 1.
        (lambda x: (x - np.log(x), 1.0 - 1.0 / x), 3.0, 1e-12, 1.0),
        (lambda x: (np.exp(x) - 2.0 * x, np.exp(x) - 2.0), 1.0, 0.0, np.log(2.0)),
        # Minimum beyond the first step and the start (expansion).
        (lambda x: ((x - 7.0) ** 2, 2.0 * (x - 7.0)), 1.0, 0.0, 7.0),
    ],
)
def test_scalar_search_finds_interior_minima(function, x0, lower, expected):
    result = minimize_scalar(_one(function), x0, lower, tolerance=1e-14)
    assert result.converged
    assert result.x[0] == pytest.approx(expected, abs=1e-6)
    assert result.evaluations <= 12


def test_scalar_search_stops_at_the_bound_where_the_slope_points_out():
    result = minimize_scalar(
        _one(lambda x: ((x + 1.0) ** 2, 2.0 * (x + 1.0))), 1.0, 0.0, tolerance=1e-14
    )
    assert result.converged
    assert result.x[0] == 0.0


def test_scalar_search_leaves_a_bound_whose_zero_slope_is_a_maximum():
    # Even in x, as the GLMM deviance in a relative SD: slope 0 at the bound, yet the
    # minimum is at 1 / sqrt(2).
    function = _one(lambda x: (-(x**2) + x**4, -2.0 * x + 4.0 * x**3))
    result = minimize_scalar(function, 0.0, 0.0, tolerance=1e-14)
    assert result.converged
    assert result.x[0] == pytest.approx(1.0 / np.sqrt(2.0), abs=1e-6)
    # ... also when a step lands on the bound.
    result = minimize_scalar(function, 0.4, 0.0, tolerance=1e-14, first_step=2.0)
    assert result.x[0] == pytest.approx(1.0 / np.sqrt(2.0), abs=1e-6)


def test_scalar_search_shortens_steps_into_undefined_regions():
    def function(x):
        if x < 0.5:
            return np.inf, np.nan
        return (x - 0.6) ** 2, 2.0 * (x - 0.6)

    result = minimize_scalar(_one(function), 2.0, 0.0, tolerance=1e-14)
    assert result.converged
    assert result.x[0] == pytest.approx(0.6, abs=1e-6)


@pytest.mark.parametrize("theta", [0.0, 0.3, 0.64, 1.5])
def test_one_scalar_nagq0_slope_equals_central_differences(theta):
    data = pd.read_csv(DATA / "cbpp.csv")
    design = build_design(CBPP, data, binomial_response=True)
    model = GeneralizedLinearMixedModel(design, make_family("binomial"), nagq=0)
    dev = model.deviance
    value, grad = dev.fast_gradient(np.array([theta]))
    assert value == pytest.approx(dev.fast(np.array([theta])), rel=1e-12)
    if theta == 0.0:  # the criterion is even in theta
        assert grad[0] == 0.0
        return
    h = 1e-5
    fd = (dev.fast(np.array([theta + h])) - dev.fast(np.array([theta - h]))) / (2 * h)
    assert grad[0] == pytest.approx(fd, rel=1e-6, abs=1e-6)


def test_one_scalar_nagq0_slope_with_a_slope_term_and_weights():
    data = pd.read_csv(DATA / "Contraception.csv")
    design = build_design("use ~ age + urban + (0 + age | district)", data, binomial_response=True)
    n = design.X.shape[0]
    weights = np.random.default_rng(5).integers(1, 4, n).astype(float)
    response = GlmmResponse(design.y, weights, None, np.zeros(n), make_family("binomial"))
    model = GeneralizedLinearMixedModel(design, make_family("binomial"), nagq=0)
    dev = PirlsDeviance(model.structure, design.X, response, nagq=1)
    theta = np.array([0.05])
    _, grad = dev.fast_gradient(theta)
    h = 1e-6
    fd = (dev.fast(theta + h) - dev.fast(theta - h)) / (2 * h)
    assert grad[0] == pytest.approx(fd, rel=1e-5)


def test_nagq0_fit_with_one_theta_takes_few_evaluations():
    data = pd.read_csv(DATA / "cbpp.csv")
    design = build_design(CBPP, data, binomial_response=True)
    fit = GeneralizedLinearMixedModel(design, make_family("binomial"), nagq=0).fit()
    assert fit.converged
    assert fit.optimizer["evaluations"]["stage1"] <= 8  # BOBYQA: 15


@pytest.mark.parametrize(
    ("data", "formula", "family_name", "theta"),
    [
        ("cbpp.csv", CBPP, "binomial", 0.64),
        ("Contraception.csv", "use ~ age + urban + (0 + age | district)", "binomial", 0.05),
        ("grouseticks.csv", "TICKS ~ factor(YEAR) + cHEIGHT + (1 | LOCATION)", "poisson", 0.8),
    ],
)
def test_closed_form_beta_hessian_equals_differences_of_the_gradient(
    data, formula, family_name, theta
):
    frame = pd.read_csv(DATA / data)
    design = build_design(formula, frame, binomial_response=family_name == "binomial")
    model = GeneralizedLinearMixedModel(design, make_family(family_name))
    dev = model.deviance
    th = np.array([theta])
    beta = dev.pirls(th, None).beta + 0.05  # away from the optimum
    H = dev.laplace_beta_hessian(th, beta)
    p = beta.size
    fd = np.empty((p, p))
    for j in range(p):
        h = 1e-5 * max(1.0, abs(beta[j]))
        e = np.zeros(p)
        e[j] = h
        fd[:, j] = (
            dev.laplace_gradient(th, beta + e)[1][1:] - dev.laplace_gradient(th, beta - e)[1][1:]
        ) / (2 * h)
    np.testing.assert_allclose(H, fd, rtol=0, atol=1e-7 * np.max(np.abs(fd)))


def test_laplace_fit_with_one_theta_takes_few_evaluations():
    data = pd.read_csv(DATA / "cbpp.csv")
    design = build_design(CBPP, data, binomial_response=True)
    fit = GeneralizedLinearMixedModel(design, make_family("binomial")).fit()
    assert fit.converged
    evaluations = fit.optimizer["evaluations"]
    assert evaluations["stage1"] + evaluations["stage2"] <= 12  # 4 + 13 before


def test_pirls_returns_the_kept_state_for_a_point_asked_again():
    data = pd.read_csv(DATA / "cbpp.csv")
    design = build_design(CBPP, data, binomial_response=True)
    dev = GeneralizedLinearMixedModel(design, make_family("binomial")).deviance
    beta = dev.pirls(np.array([0.6]), None).beta
    first = dev.pirls(np.array([0.6]), beta)
    dev.pirls(np.array([0.7]), beta)
    assert dev.pirls(np.array([0.6]), beta) is first  # two states are kept
    dev.mode_tolerance = 1e-6  # another stopping rule: another run
    assert dev.pirls(np.array([0.6]), beta) is not first


@pytest.mark.parametrize(
    ("data", "formula", "family_name", "theta"),
    [
        ("cbpp.csv", CBPP, "binomial", 0.64),
        ("Contraception.csv", "use ~ age + urban + (0 + age | district)", "binomial", 0.05),
        ("grouseticks.csv", "TICKS ~ factor(YEAR) + cHEIGHT + (1 | LOCATION)", "poisson", 0.8),
    ],
)
def test_closed_form_hessian_over_theta_and_beta_equals_differences_of_the_gradient(
    data, formula, family_name, theta
):
    frame = pd.read_csv(DATA / data)
    design = build_design(formula, frame, binomial_response=family_name == "binomial")
    dev = GeneralizedLinearMixedModel(design, make_family(family_name)).deviance
    th = np.array([theta])
    beta = dev.pirls(th, None).beta + 0.05
    H = dev.laplace_hessian_one_scalar(th, beta)
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-10 * np.max(np.abs(H)))
    x = np.concatenate([th, beta])
    k = x.size
    fd = np.empty((k, k))
    for j in range(k):
        h = 1e-5 * max(1.0, abs(x[j]))
        e = np.zeros(k)
        e[j] = h
        up = dev.laplace_gradient((x + e)[:1], (x + e)[1:])[1]
        down = dev.laplace_gradient((x - e)[:1], (x - e)[1:])[1]
        fd[:, j] = (up - down) / (2 * h)
    np.testing.assert_allclose(H, fd, rtol=0, atol=1e-6 * np.max(np.abs(fd)))
    # The beta block is laplace_beta_hessian's.
    np.testing.assert_allclose(H[1:, 1:], dev.laplace_beta_hessian(th, beta), rtol=1e-10)
