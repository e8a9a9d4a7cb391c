"""The GLMM engine: reweighted blocks, single-use systems, and the Laplace / AGQ deviance.

The deviance at lme4's reference parameters must equal lme4's log-likelihood (the files in
tests/reference/glmm were computed with a converged PIRLS), for the Laplace approximation
and for adaptive Gauss-Hermite quadrature; the blocks PIRLS forms from its plan must equal
those formed from rows by the LMM code; a single-use system must factor as the reusable
one does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mixedmodels.covariance import CovarianceStructure, group_terms
from mixedmodels.design import build_design
from mixedmodels.family import make_family
from mixedmodels.linalg.blocked import BlockedSystem
from mixedmodels.linalg.cross_products import CrossProductPlan, compute_cross_products
from mixedmodels.linalg.solution import estimate
from mixedmodels.objective.pirls import GlmmResponse, PirlsDeviance

TESTS = Path(__file__).resolve().parents[1]
REFERENCE = TESTS / "reference" / "glmm"
DATA = TESTS / "data"

CASES = {
    "verbagg": "r2 ~ Anger + Gender + btype + situ + (1|id) + (1|item)",
    "contraception_slope": "use ~ age + I(age^2) + urban + livch + (urban|district)",
    "grouseticks": "TICKS ~ factor(YEAR) + cHEIGHT + (1|BROOD) + (1|INDEX) + (1|LOCATION)",
}
FILES = {
    "verbagg": "VerbAgg.csv",
    "contraception_slope": "Contraception.csv",
    "grouseticks": "grouseticks.csv",
}


def _design(name: str, formula: str | None = None):
    data = pd.read_csv(DATA / FILES.get(name, name))
    design = build_design(formula or CASES[name], data, observation_level_terms=True)
    terms = group_terms(design.re_terms)
    return design, terms, CovarianceStructure.from_terms(terms)


def _dense(M):
    return M.toarray() if sp.issparse(M) else np.asarray(M)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("with_x", [False, True])
def test_plan_blocks_equal_blocks_from_rows(name, with_x):
    design, terms, _ = _design(name)
    rng = np.random.default_rng(7)
    n = design.nobs
    w, y = rng.uniform(0.2, 2.0, n), rng.standard_normal(n)
    X = design.X if with_x else np.empty((n, 0))
    expected = compute_cross_products(terms, X, y, weights=w)
    for dense_rest_first in (False, True):
        got = CrossProductPlan(terms, X, dense_rest_first=dense_rest_first)(w, y)
        for block in ("z1tz1", "zrtz1", "zrtzr", "xytz1", "xytzr", "xytxy"):
            a, b = getattr(expected, block), getattr(got, block)
            if a is None:
                assert b is None
                continue
            np.testing.assert_allclose(_dense(b), _dense(a), rtol=1e-12, atol=1e-12)
        assert got.sum_log_weights == pytest.approx(expected.sum_log_weights, rel=1e-13)


@pytest.mark.parametrize("name", sorted(CASES))
def test_single_use_system_factors_as_the_reusable_one(name):
    design, terms, structure = _design(name)
    rng = np.random.default_rng(3)
    n = design.nobs
    w, y = rng.uniform(0.2, 2.0, n), rng.standard_normal(n)
    theta = 0.7 * structure.initial_theta() + 0.05
    A = compute_cross_products(terms, design.X, y, weights=w)
    f_ref = BlockedSystem(structure, A).factor(theta)
    e_ref = estimate(BlockedSystem(structure, A), f_ref, reml=False)
    plan = CrossProductPlan(terms, design.X, dense_rest_first=True)
    single = BlockedSystem(structure, plan(w, y), single_use=True)
    # Bind other values first, then the ones compared: with_values must replace them all.
    single = single.with_values(plan(w[::-1].copy(), y)).with_values(plan(w, y))
    f = single.factor(theta)
    assert f.logdet_z == pytest.approx(f_ref.logdet_z, rel=1e-12)
    assert f.pwrss == pytest.approx(f_ref.pwrss, rel=1e-10)
    e = estimate(single, f, reml=False)
    np.testing.assert_allclose(e.beta, e_ref.beta, rtol=1e-10, atol=1e-12)
    for u, u_ref in zip(e.u, e_ref.u, strict=True):
        np.testing.assert_allclose(u, u_ref, rtol=1e-9, atol=1e-12)


def _reference(file: str) -> dict:
    return json.loads((REFERENCE / file).read_text())


@pytest.mark.parametrize(
    ("file", "data", "formula"),
    [
        ("verbagg.json", "VerbAgg.csv", CASES["verbagg"]),
        (
            "contraception_laplace.json",
            "Contraception.csv",
            "use ~ age + I(age^2) + urban + livch + (1|district)",
        ),
        ("contraception_slope.json", "Contraception.csv", CASES["contraception_slope"]),
        (
            "contraception_agq10.json",
            "Contraception.csv",
            "use ~ age + I(age^2) + urban + livch + (1|district)",
        ),
        ("grouseticks_poisson.json", "grouseticks.csv", CASES["grouseticks"]),
        ("grouseticks_nb.json", "grouseticks.csv", "TICKS ~ factor(YEAR) + cHEIGHT + (1|LOCATION)"),
    ],
)
def test_deviance_at_lme4_parameters_is_lme4_loglik(file, data, formula):
    ref = _reference(file)
    design, _, structure = _design(data, formula)
    family = make_family(ref["family"], theta=ref.get("nb_theta"))
    n = design.nobs
    response = GlmmResponse(design.y, np.ones(n), None, np.zeros(n), family)
    deviance = PirlsDeviance(structure, design.X, response, nagq=max(1, ref["nAGQ"]))
    theta = np.array(ref["theta"]["values"])
    beta = np.array([fe["estimate"] for fe in ref["fixed_effects"]])
    value = deviance(np.concatenate([theta, beta]))
    assert -0.5 * value == pytest.approx(ref["logLik"], rel=1e-9)
    if ref["nAGQ"] > 1:
        state = deviance.state(np.concatenate([theta, beta]))
        marginal = -0.5 * (value + deviance.saturated(state.mu))
        assert marginal == pytest.approx(ref["logLik_marginal"], rel=1e-9)


def _contraception_deviance(nagq: int) -> tuple[PirlsDeviance, np.ndarray]:
    design, _, structure = _design(
        "Contraception.csv", "use ~ age + I(age^2) + urban + livch + (1|district)"
    )
    n = design.nobs
    response = GlmmResponse(design.y, np.ones(n), None, np.zeros(n), make_family("binomial"))
    params = np.concatenate([[0.5], 0.05 * np.linspace(-1.0, 1.0, design.X.shape[1])])
    return PirlsDeviance(structure, design.X, response, nagq=nagq), params


def test_laplace_is_modes_deviance_plus_penalty_plus_log_determinant():
    laplace, params = _contraception_deviance(1)
    state = laplace.state(params)
    value = laplace(params)
    # -2 log p = deviance residuals + the saturated constant (0/1 data: 0).
    by_parts = state.deviance + state.penalty + state.logdet + laplace.saturated(state.mu)
    assert laplace.saturated(state.mu) == pytest.approx(0.0, abs=1e-9)
    assert value == pytest.approx(by_parts, rel=1e-12)


def test_quadrature_converges_in_the_number_of_nodes_and_differs_from_laplace():
    values = {}
    for k in (1, 15, 25, 40):
        dev, params = _contraception_deviance(k)
        values[k] = dev(params)
    assert values[25] == pytest.approx(values[40], abs=1e-8)
    assert values[15] == pytest.approx(values[40], abs=1e-6)
    assert abs(values[1] - values[40]) > 1e-3  # the Laplace error AGQ removes


def test_binomial_with_non_integer_weights_uses_r_rounded_log_likelihood():
    # R's binomial aic rounds m*y: with non-integer prior weights -2 log p is not the
    # deviance plus a constant, so the engine evaluates the log-density itself.
    design, _, structure = _design("Contraception.csv", "use ~ age + urban + (1|district)")
    n = design.nobs
    w = np.random.default_rng(5).uniform(0.5, 2.5, n)
    family = make_family("binomial")
    response = GlmmResponse(design.y, w, None, np.zeros(n), family)
    dev = PirlsDeviance(structure, design.X, response, nagq=1)
    params = np.array([0.4, -0.5, 0.01, 0.6])
    value = dev(params)
    state = dev.state(params)
    direct = family.minus_twice_loglik(design.y, state.mu, w, None)
    assert value == pytest.approx(direct + state.penalty + state.logdet, rel=1e-12)
    assert abs(direct - (state.deviance + dev.saturated())) > 1e-3


@pytest.mark.parametrize(
    ("name", "family_name", "theta"),
    [
        ("verbagg", "binomial", [1.2, 0.6]),
        ("contraception_slope", "binomial", [0.6, -0.3, 0.5]),
        ("grouseticks", "poisson", [0.5, 0.9, 0.4]),
    ],
)
def test_laplace_beta_gradient_equals_central_differences(name, family_name, theta):
    # Away from the optimum (the gradient is large there) and with every kind of term:
    # crossed scalar terms, one vector-valued term, three scalar terms.
    design, _, structure = _design(name)
    n, p = design.X.shape
    weights = np.random.default_rng(3).integers(1, 4, n).astype(float)
    response = GlmmResponse(design.y, weights, None, np.zeros(n), make_family(family_name))
    dev = PirlsDeviance(structure, design.X, response, nagq=1)
    assert dev.has_beta_gradient()
    theta = np.array(theta)
    scale = np.maximum(np.abs(design.X).max(axis=0), 1.0)
    beta = np.random.default_rng(4).normal(0.0, 0.2, p) / scale
    value, grad = dev.laplace_beta_gradient(theta, beta)
    assert value == pytest.approx(dev(np.concatenate([theta, beta])), rel=1e-12)
    fd = np.empty(p)
    for j in range(p):
        h = 1e-5 / scale[j]
        e = np.zeros(p)
        e[j] = h
        up = dev(np.concatenate([theta, beta + e]))
        down = dev(np.concatenate([theta, beta - e]))
        fd[j] = (up - down) / (2.0 * h)
    assert np.allclose(grad, fd, rtol=1e-6, atol=1e-5 * np.max(np.abs(fd)))


def test_beta_gradient_only_for_canonical_links_and_laplace():
    design, _, structure = _design("Contraception.csv", "use ~ age + urban + (1|district)")
    n = design.nobs
    for family, nagq, applies in [
        (make_family("binomial"), 1, True),
        (make_family("binomial", "probit"), 1, False),
        (make_family("binomial"), 5, False),
    ]:
        response = GlmmResponse(design.y, np.ones(n), None, np.zeros(n), family)
        assert PirlsDeviance(structure, design.X, response, nagq=nagq).has_beta_gradient() is (
            applies
        )


def _same_modes_and_laplace(fast, general, theta, beta):
    """A fast PIRLS path and the general blocked one give the same modes, beta and
    Laplace terms at ``(theta, beta)``; returns both states for further checks."""
    a, b = fast.pirls(theta, beta), general.pirls(theta, beta)
    np.testing.assert_allclose(a.u, b.u, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-9, atol=1e-11)
    assert a.laplace == pytest.approx(b.laplace, rel=1e-12)
    assert a.logdet == pytest.approx(b.logdet, rel=1e-12)
    return a, b


def _same_beta_gradient(fast, general, theta, beta):
    """... and the same Laplace value and beta-gradient at fixed ``beta``."""
    value, grad = fast.laplace_beta_gradient(theta, beta)
    value_g, grad_g = general.laplace_beta_gradient(theta, beta)
    assert value == pytest.approx(value_g, rel=1e-12)
    np.testing.assert_allclose(grad, grad_g, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize(
    ("data", "formula", "family_name", "offset"),
    [
        ("Contraception.csv", "use ~ age + I(age^2) + urban + livch + (1|district)", "binomial", 0),
        ("grouseticks.csv", "TICKS ~ factor(YEAR) + cHEIGHT + (1|LOCATION)", "poisson", 0.3),
        ("Contraception.csv", "use ~ age + urban + (0 + age|district)", "binomial", 0),
    ],
)
@pytest.mark.parametrize("with_x", [False, True])
def test_one_scalar_term_pirls_equals_the_blocked_system(
    data, formula, family_name, offset, with_x
):
    # The per-level PIRLS of a single scalar term (intercept or slope, with an offset)
    # must give the modes, beta and Laplace terms of the general blocked system.
    design, _, structure = _design(data, formula)
    n = design.nobs
    offsets = offset * np.sin(np.arange(n))
    family = make_family(family_name)
    response = GlmmResponse(design.y, np.ones(n), None, offsets, family)
    fast = PirlsDeviance(structure, design.X, response)
    general = PirlsDeviance(structure, design.X, response)
    general._one_scalar = False
    assert fast._one_scalar
    theta = np.array([0.7])
    beta = None if with_x else 0.05 * np.linspace(-1.0, 1.0, design.X.shape[1])
    a, b = _same_modes_and_laplace(fast, general, theta, beta)
    np.testing.assert_allclose(a.term1_weights, b.blocks.z1tz1[:, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(a.blocks.xytz1, b.blocks.xytz1, rtol=1e-9, atol=1e-9)
    if not with_x:
        _same_beta_gradient(fast, general, theta, beta)


@pytest.mark.parametrize(
    ("data", "formula", "family_name"),
    [
        ("VerbAgg.csv", CASES["verbagg"], "binomial"),
        ("grouseticks.csv", CASES["grouseticks"], "poisson"),
        ("VerbAgg.csv", "r2 ~ Anger + Gender + (1|id) + (0 + Anger|item)", "binomial"),
        ("grouseticks.csv", "TICKS ~ factor(YEAR) + cHEIGHT + (1|BROOD) + (1|LOCATION)", "poisson"),
        (
            "grouseticks.csv",
            "TICKS ~ cHEIGHT + (1|BROOD) + (1|LOCATION) + (1|YEAR)",
            "poisson",
        ),
    ],
)
@pytest.mark.parametrize("with_x", [False, True])
def test_scalar_terms_pirls_equals_the_blocked_system(data, formula, family_name, with_x):
    # The dense-Schur PIRLS of several scalar terms (crossed, nested, slopes, three terms)
    # must give the modes and Laplace terms of the general blocked system.
    design, _, structure = _design(data, formula)
    n = design.nobs
    family = make_family(family_name)
    response = GlmmResponse(design.y, np.ones(n), None, 0.2 * np.cos(np.arange(n)), family)
    fast = PirlsDeviance(structure, design.X, response)
    general = PirlsDeviance(structure, design.X, response)
    general._scalar_terms = None
    assert fast._scalar_terms is not None
    theta = np.linspace(0.4, 1.1, structure.ntheta)
    beta = None if with_x else 0.05 * np.linspace(-1.0, 1.0, design.X.shape[1])
    a, b = _same_modes_and_laplace(fast, general, theta, beta)
    np.testing.assert_allclose(a.blocks.z1tz1, b.blocks.z1tz1, rtol=1e-12)
    np.testing.assert_allclose(a.blocks.xytxy, b.blocks.xytxy, rtol=1e-9)
    if not with_x:
        _same_beta_gradient(fast, general, theta, beta)


@pytest.mark.parametrize(
    "formula",
    [
        CASES["contraception_slope"],
        "use ~ age + urban + (1 + age + urban|district)",
    ],
)
@pytest.mark.parametrize("with_x", [False, True])
def test_one_vector_term_pirls_equals_the_blocked_system(formula, with_x):
    # The per-level PIRLS of one vector-valued term must give the modes, beta and Laplace
    # terms of the general blocked system (and the same beta-gradient).
    design, _, structure = _design("Contraception.csv", formula)
    n = design.nobs
    family = make_family("binomial")
    response = GlmmResponse(design.y, np.ones(n), None, 0.2 * np.sin(np.arange(n)), family)
    fast = PirlsDeviance(structure, design.X, response)
    general = PirlsDeviance(structure, design.X, response)
    general._one_vector = False
    assert fast._one_vector
    theta = np.linspace(0.3, 0.9, structure.ntheta)
    theta[[1]] = -0.2  # an off-diagonal entry
    beta = None if with_x else 0.05 * np.linspace(-1.0, 1.0, design.X.shape[1])
    a, b = _same_modes_and_laplace(fast, general, theta, beta)
    np.testing.assert_allclose(a.blocks.z1tz1, b.blocks.z1tz1, rtol=1e-12)
    if not with_x:
        _same_beta_gradient(fast, general, theta, beta)


@pytest.mark.parametrize(
    ("data", "formula", "family_name", "theta", "general"),
    [
        ("VerbAgg.csv", CASES["verbagg"], "binomial", [1.2, 0.6], False),
        ("VerbAgg.csv", CASES["verbagg"], "binomial", [1.2, 0.6], True),
        ("grouseticks.csv", CASES["grouseticks"], "poisson", [0.5, 0.9, 0.4], False),
        ("grouseticks.csv", CASES["grouseticks"], "poisson", [0.0, 0.9, 0.4], False),
        ("Contraception.csv", "use ~ age + urban + (1|district)", "binomial", [0.7], False),
        ("Contraception.csv", "use ~ age + urban + (0 + age|district)", "binomial", [0.05], False),
    ],
)
def test_laplace_theta_gradient_equals_central_differences(
    data, formula, family_name, theta, general
):
    # Scalar terms (one, crossed, nested; a random slope; a variance at its bound, where
    # the deviance is even in theta), away from the optimum, with prior weights; `general`
    # forces the blocked system's pieces instead of PIRLS' dense scalar blocks.
    design, _, structure = _design(data, formula)
    n, p = design.X.shape
    weights = np.random.default_rng(3).integers(1, 4, n).astype(float)
    response = GlmmResponse(design.y, weights, None, np.zeros(n), make_family(family_name))
    dev = PirlsDeviance(structure, design.X, response, nagq=1)
    if general:
        dev._scalar_terms = None
    assert dev.has_theta_gradient()
    theta = np.array(theta)
    scale = np.maximum(np.abs(design.X).max(axis=0), 1.0)
    beta = np.random.default_rng(4).normal(0.0, 0.2, p) / scale
    value, grad = dev.laplace_gradient(theta, beta)
    x = np.concatenate([theta, beta])
    assert value == pytest.approx(dev(x), rel=1e-12)
    _, grad_beta = dev.laplace_beta_gradient(theta, beta)
    np.testing.assert_allclose(grad[theta.size :], grad_beta, rtol=1e-12, atol=1e-12)
    fd = np.empty(theta.size)
    for k in range(theta.size):
        e = np.zeros_like(x)
        e[k] = 1e-5
        fd[k] = (dev(x + e) - dev(x - e)) / 2e-5
    assert np.allclose(grad[: theta.size], fd, rtol=1e-6, atol=1e-6 * np.max(np.abs(fd)))


@pytest.mark.parametrize(
    ("data", "formula", "family_name", "theta"),
    [
        ("Contraception.csv", "use ~ age + urban + (1|district)", "binomial", [0.7]),
        ("Contraception.csv", "use ~ age + urban + (0 + age|district)", "binomial", [0.05]),
        ("Contraception.csv", "use ~ age + urban + (1|district)", "binomial", [0.0]),
        ("grouseticks.csv", "TICKS ~ YEAR + HEIGHT + (1|LOCATION)", "poisson", [0.8]),
    ],
)
def test_one_scalar_laplace_gradient_equals_the_general_route(data, formula, family_name, theta):
    # The one-scalar-term shortcut of laplace_gradient (row vectors, one bincount) gives
    # the general pieces' gradient to rounding, with prior weights and away from the optimum.
    design, _, structure = _design(data, formula)
    n, p = design.X.shape
    weights = np.random.default_rng(5).integers(1, 4, n).astype(float)
    response = GlmmResponse(design.y, weights, None, np.zeros(n), make_family(family_name))
    dev = PirlsDeviance(structure, design.X, response, nagq=1)
    assert dev._one_scalar and dev.has_theta_gradient()
    theta = np.array(theta)
    scale = np.maximum(np.abs(design.X).max(axis=0), 1.0)
    beta = np.random.default_rng(6).normal(0.0, 0.2, p) / scale
    value, grad = dev.laplace_gradient(theta, beta)
    state, _, general = dev._laplace_gradient(theta, beta)
    assert value == state.laplace
    np.testing.assert_allclose(grad, general, rtol=1e-10, atol=1e-10 * np.max(np.abs(general)))


@pytest.mark.parametrize(
    ("formula", "family", "link"),
    [
        ("use ~ age + urban + (1|district)", "binomial", None),
        ("use ~ age + urban + (0 + age|district)", "binomial", None),
        ("use ~ age + urban + (1|district)", "binomial", "probit"),
    ],
)
def test_one_scalar_final_matrices_equal_the_blocked_systems(formula, family, link):
    # Var(beta) at fixed theta and the conditional variances of b from PIRLS' per-level
    # blocks, against the blocked system's factor, with prior weights.
    from mixedmodels.linalg.solution import conditional_variances

    design, _, structure = _design("Contraception.csv", formula)
    n, p = design.X.shape
    weights = np.random.default_rng(8).integers(1, 4, n).astype(float)
    fam = make_family(family, link) if link else make_family(family)
    response = GlmmResponse(design.y, weights, None, np.zeros(n), fam)
    dev = PirlsDeviance(structure, design.X, response, nagq=1)
    assert dev._one_scalar
    theta = np.array([0.6])
    beta = np.random.default_rng(9).normal(0.0, 0.1, p) / np.maximum(
        np.abs(design.X).max(axis=0), 1.0
    )
    state = dev.pirls(theta, beta)
    vcov, condvar = dev.final_one_scalar(theta, state)
    system, factor, est = dev.final_system(theta, state)
    np.testing.assert_allclose(vcov, np.asarray(est.vcov_beta) / est.sigma**2, rtol=1e-10)
    np.testing.assert_allclose(condvar, conditional_variances(system, factor, 1.0)[0], rtol=1e-10)


def test_theta_gradient_only_for_scalar_terms_in_memory_with_a_canonical_link():
    for formula, family, applies in [
        ("use ~ age + urban + (1|district)", make_family("binomial"), True),
        ("use ~ age + urban + (urban|district)", make_family("binomial"), False),
        ("use ~ age + urban + (1|district)", make_family("binomial", "probit"), False),
    ]:
        design, _, structure = _design("Contraception.csv", formula)
        n = design.nobs
        response = GlmmResponse(design.y, np.ones(n), None, np.zeros(n), family)
        dev = PirlsDeviance(structure, design.X, response, nagq=1)
        assert dev.has_theta_gradient() is applies


@pytest.mark.parametrize(
    ("data", "formula", "family_name", "theta"),
    [
        ("VerbAgg.csv", CASES["verbagg"], "binomial", [1.2, 0.6]),
        ("grouseticks.csv", CASES["grouseticks"], "poisson", [0.5, 0.9, 0.4]),
        ("Contraception.csv", "use ~ age + urban + (1|district)", "binomial", [0.7]),
    ],
)
def test_nagq0_gradient_equals_central_differences(data, formula, family_name, theta):
    # beta inside PIRLS: the total derivative through beta~(theta) (implicit function).
    design, _, structure = _design(data, formula)
    n, _ = design.X.shape
    weights = np.random.default_rng(3).integers(1, 4, n).astype(float)
    response = GlmmResponse(design.y, weights, None, np.zeros(n), make_family(family_name))
    dev = PirlsDeviance(structure, design.X, response, nagq=1)
    assert dev.has_fast_gradient()
    theta = np.array(theta)
    value, grad = dev.fast_gradient(theta)
    assert value == pytest.approx(dev.fast(theta), rel=1e-12)
    fd = np.empty(theta.size)
    for k in range(theta.size):
        e = np.zeros_like(theta)
        e[k] = 1e-5
        fd[k] = (dev.fast(theta + e) - dev.fast(theta - e)) / 2e-5
    assert np.allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.max(np.abs(fd)))


@pytest.mark.parametrize(
    ("data", "formula", "family_name", "theta"),
    [
        ("Contraception.csv", "use ~ age + urban + (1|district)", "binomial", [0.7]),
        ("grouseticks.csv", "TICKS ~ factor(YEAR) + cHEIGHT + (1|LOCATION)", "poisson", [0.8]),
        ("Contraception.csv", "use ~ age + urban + (0 + age|district)", "binomial", [0.05]),
    ],
)
def test_agq_gradient_equals_central_differences(data, formula, family_name, theta):
    design, _, structure = _design(data, formula)
    n, p = design.X.shape
    weights = np.random.default_rng(3).integers(1, 4, n).astype(float)
    response = GlmmResponse(design.y, weights, None, np.zeros(n), make_family(family_name))
    dev = PirlsDeviance(structure, design.X, response, nagq=9)
    assert dev.has_agq_gradient()
    theta = np.array(theta)
    scale = np.maximum(np.abs(design.X).max(axis=0), 1.0)
    beta = np.random.default_rng(4).normal(0.0, 0.2, p) / scale
    value, grad = dev.agq_gradient(theta, beta)
    x = np.concatenate([theta, beta])
    assert value == pytest.approx(dev(x), rel=1e-12)
    steps = np.concatenate([[1e-5], 1e-5 / scale])
    fd = np.empty(x.size)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = steps[j]
        fd[j] = (dev(x + e) - dev(x - e)) / (2.0 * steps[j])
    assert np.allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.max(np.abs(fd)))
