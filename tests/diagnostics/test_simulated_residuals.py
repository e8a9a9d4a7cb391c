"""Simulated (DHARMa) residuals of GLMMs: definitions against DHARMa's R code, behaviour
under the model and under overdispersion and zero inflation, reproducibility, refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.diagnostics.simulated_residuals import (
    SimulatedResiduals,
    observation_level_groups,
    pit_residuals,
    simulated_residuals,
)
from mixedmodels.errors import ModelSpecificationError

REF = Path(__file__).parent / "reference"
GROUSE = "TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)"
GROUSE_OLRE = "TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION) + (1 | INDEX)"
CBPP = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"


@pytest.fixture(scope="module")
def grouse_poisson():
    return mm.glmer(GROUSE, "grouseticks", family="poisson")


@pytest.fixture(scope="module")
def grouse_olre():
    return mm.glmer(GROUSE_OLRE, "grouseticks", family="poisson")


@pytest.fixture(scope="module")
def cbpp_fit():
    return mm.glmer(CBPP, "cbpp", family="binomial")


# --------------------------------------------------------------------------- PIT
def test_pit_residuals_by_hand():
    sims = np.array([[1.0, 2.0, 2.0, 3.0]] * 3 + [[0.1, 0.2, 0.3, 0.4]])
    obs = np.array([2.0, 0.0, 5.0, 0.25])
    r = pit_residuals(sims, obs, np.random.default_rng(1))
    assert 0.25 <= r[0] <= 0.75  # tie: uniform between P(< y) and P(<= y)
    assert r[1] == 0.0 and r[2] == 1.0  # outside every simulation
    assert r[3] == 0.5  # no tie: the empirical CDF, no randomisation


def test_pit_residuals_are_uniform_for_discrete_data():
    # Data and simulations from the same Poisson: the randomisation makes them uniform.
    from scipy import stats

    rng = np.random.default_rng(7)
    mu = rng.uniform(0.2, 4.0, size=2000)
    sims = rng.poisson(mu[:, None] * np.ones((1, 250))).astype(float)
    obs = rng.poisson(mu).astype(float)
    r = pit_residuals(sims, obs, rng)
    assert stats.kstest(r, "uniform").pvalue > 0.05
    # without the randomisation they would not be: P(< y) piles up below
    lower = np.mean(sims < obs[:, None], axis=1)
    assert stats.kstest(lower, "uniform").pvalue < 1e-6


# --------------------------------------------------------------------------- against DHARMa
def _from_reference(case: dict, scaled: list[float]) -> SimulatedResiduals:
    sims = np.asarray(case["simulated"], dtype=float)
    return SimulatedResiduals(
        scaled=np.asarray(scaled),
        observed=np.asarray(case["observed"], dtype=float),
        simulated=sims,
        predicted=np.asarray(case["expected"]),
        trials=None,
        row_index=pd.RangeIndex(sims.shape[0]),
        family=case["family"],
        link="logit" if case["family"] == "binomial" else "log",
        formula=case["formula"],
        nsim=sims.shape[1],
        simulate_re="conditional",
        integer_response=True,
        seed=None,
    )


@pytest.mark.parametrize("name", ["cbpp", "grouseticks"])
def test_tests_match_dharma(name):
    """Same simulations and residuals in, DHARMa 0.5.1's statistics and p-values out."""
    inputs = json.loads((REF / "dharma_inputs.json").read_text())[name]
    ref = json.loads((REF / "dharma_reference.json").read_text())[name]
    res = _from_reference(inputs, ref["scaled"])
    unif = res.test_uniformity()
    assert unif.statistic == pytest.approx(ref["uniformity"]["D"], rel=1e-12)
    assert unif.pvalue == pytest.approx(ref["uniformity"]["p"], rel=1e-6)
    for d in ref["dispersion"]:
        t = res.test_dispersion(d["alternative"])
        assert t.statistic == pytest.approx(d["ratio"], rel=1e-12)
        assert t.pvalue == pytest.approx(d["p"], abs=1e-12)
    zi = res.test_zero_inflation()
    assert zi.statistic == pytest.approx(ref["zero_inflation"]["ratio"], rel=1e-12)
    assert zi.pvalue == pytest.approx(ref["zero_inflation"]["p"], abs=1e-12)
    out = res.test_outliers(type="binomial")
    assert out.statistic == ref["outliers"]["count"]
    assert out.pvalue == pytest.approx(ref["outliers"]["p"], rel=1e-9)


@pytest.mark.parametrize("name", ["cbpp", "grouseticks"])
def test_pit_residuals_match_dharma_where_no_randomisation(name):
    inputs = json.loads((REF / "dharma_inputs.json").read_text())[name]
    ref = np.asarray(json.loads((REF / "dharma_reference.json").read_text())[name]["scaled"])
    sims = np.asarray(inputs["simulated"], dtype=float)
    obs = np.asarray(inputs["observed"], dtype=float)
    ours = pit_residuals(sims, obs, np.random.default_rng(0))
    lower = np.mean(sims < obs[:, None], axis=1)
    upper = np.mean(sims <= obs[:, None], axis=1)
    exact = lower == upper
    assert exact.any()
    np.testing.assert_array_equal(ours[exact], ref[exact])
    for r in (ours, ref):  # both inside the tie interval elsewhere
        assert np.all((r >= lower) & (r <= upper))


# --------------------------------------------------------------------------- the result
def test_scale_and_shapes_for_cbind(cbpp_fit):
    res = simulated_residuals(cbpp_fit, nsim=50, seed=1)
    data = mm.load_dataset("cbpp")
    np.testing.assert_array_equal(res.observed, data["incidence"].to_numpy())
    assert res.simulated.shape == (56, 50)
    assert np.all(res.simulated <= data["size"].to_numpy()[:, None])
    assert np.all(res.simulated == np.rint(res.simulated))
    np.testing.assert_allclose(res.predicted, cbpp_fit.predict(re=False).to_numpy())
    np.testing.assert_allclose(res.expected_response, res.predicted * data["size"].to_numpy())
    assert res.residuals.between(0, 1).all() and len(res.residuals) == 56
    assert res.integer_response and not res.binary


def test_reproducible_with_a_seed(grouse_poisson):
    a = simulated_residuals(grouse_poisson, nsim=60, seed=11)
    b = simulated_residuals(grouse_poisson, nsim=60, seed=11)
    c = simulated_residuals(grouse_poisson, nsim=60, seed=12)
    np.testing.assert_array_equal(a.scaled, b.scaled)
    np.testing.assert_array_equal(a.simulated, b.simulated)
    assert [t.pvalue for t in a.tests()] == [t.pvalue for t in b.tests()]
    assert not np.array_equal(a.scaled, c.scaled)


def test_frozen_and_read_only(grouse_poisson):
    res = simulated_residuals(grouse_poisson, nsim=20, seed=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.nsim = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        res.scaled[0] = 0.5
    t = res.test_dispersion()
    with pytest.raises(ValueError):
        t.simulated[0] = 1.0
    series = res.residuals
    series.iloc[0] = -1.0  # a fresh copy
    assert res.scaled[0] >= 0.0


def test_to_dict_is_strict_json(grouse_poisson):
    res = simulated_residuals(grouse_poisson, nsim=20, seed=1)
    d = res.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert '"simulate_re": "conditional"' in text
    assert [t["test"] for t in d["tests"]][1] == "DHARMa dispersion test"
    assert len(d["scaled_residuals"]) == 403
    assert "scaled_residuals" not in res.to_dict(residuals=False)
    assert d["tests"][0]["expected"] is None  # uniformity has no simulated expectation
    assert np.isnan(res.test_uniformity().ratio)
    disp = res.test_dispersion()
    assert disp.ratio == pytest.approx(disp.statistic)
    assert "DHARMa" in str(res) and "nsim=20" in repr(res)


# --------------------------------------------------------------------------- behaviour
def test_overdispersed_poisson_is_detected(grouse_poisson):
    res = simulated_residuals(grouse_poisson, seed=123)
    t = res.test_dispersion()
    assert t.statistic > 1.2 and t.pvalue < 0.01
    assert t.interpretation.startswith("Overdispersion: the dispersion test ratio is 1.")
    assert "observation-level random effect or a negative binomial" in t.interpretation
    assert res.test_dispersion("greater").pvalue < 0.01
    assert res.test_uniformity().pvalue < 0.01


def test_observation_level_effect_removes_it(grouse_olre):
    assert observation_level_groups(grouse_olre) == ("INDEX",)
    res = simulated_residuals(grouse_olre, seed=123)
    assert res.test_dispersion().pvalue > 0.05
    assert res.test_uniformity().pvalue > 0.05
    assert res.test_dispersion().interpretation.startswith("No over- or underdispersion")


def test_unconditional_simulations_use_new_random_effects(grouse_poisson):
    # fit.simulate draws new random effects; they hide the overdispersion (why the
    # default is conditional, as in DHARMa >= 0.5.0).
    res = simulated_residuals(grouse_poisson, seed=123, simulate_re="unconditional")
    assert res.simulate_re == "unconditional"
    cond = simulated_residuals(grouse_poisson, seed=123)
    assert res.simulated.var() > cond.simulated.var()
    assert res.test_dispersion().statistic < cond.test_dispersion().statistic


def _grouped_counts(seed: int, zero_prob: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(40), 10)
    x = rng.normal(size=groups.size)
    eta = 0.8 + 0.5 * x + rng.normal(0, 0.5, size=40)[groups]
    y = rng.poisson(np.exp(eta))
    y[rng.random(y.size) < zero_prob] = 0
    return pd.DataFrame({"y": y, "x": x, "g": groups.astype(str)})


def test_zero_inflation_is_detected():
    fit = mm.glmer("y ~ x + (1 | g)", _grouped_counts(3, 0.3), family="poisson")
    t = simulated_residuals(fit, seed=5).test_zero_inflation()
    assert t.statistic > 1.3 and t.pvalue < 0.01
    assert t.interpretation.startswith("Zero inflation: more zeros than the model expects")


def test_no_zero_inflation_without_extra_zeros():
    fit = mm.glmer("y ~ x + (1 | g)", _grouped_counts(3, 0.0), family="poisson")
    res = simulated_residuals(fit, seed=5)
    assert res.test_zero_inflation().pvalue > 0.05
    assert res.test_dispersion().pvalue > 0.05


@pytest.mark.parametrize(
    ("formula", "data", "family", "response"),
    [
        (CBPP, "cbpp", "binomial", "incidence"),
        (GROUSE, "grouseticks", "negative-binomial", "TICKS"),
    ],
)
def test_uniform_under_the_model(formula, data, family, response):
    """Data simulated from a fitted GLMM, refitted: the checks pass (fixed seeds)."""
    fit = mm.glmer(formula, data, family=family)
    frame = mm.load_dataset(data).copy()
    y = fit.simulate(1, seed=99)["sim_1"].to_numpy()
    frame[response] = np.rint(y * frame["size"]) if family == "binomial" else y
    refit = mm.glmer(formula, frame, family=family)
    res = simulated_residuals(refit, seed=2)
    assert res.test_uniformity().pvalue > 0.05
    assert res.test_dispersion().pvalue > 0.05
    assert res.test_zero_inflation().pvalue > 0.05
    assert res.test_outliers().pvalue > 0.05


def test_outlier_test_types(grouse_poisson):
    res = simulated_residuals(grouse_poisson, nsim=100, seed=4)
    boot = res.test_outliers()  # integer response, 403 rows: the bootstrap
    assert boot.name.endswith("(bootstrap)")
    assert boot.simulated.size == 100
    assert res.test_outliers().pvalue == boot.pvalue  # resampling seed fixed
    binom = res.test_outliers(type="binomial", margin="upper")
    assert binom.name.endswith("(exact binomial)")
    assert binom.expected == pytest.approx(1 / 101)
    assert binom.statistic == np.sum(res.scaled > 1 - 1 / 101)


def test_binary_response_dispersion_is_worded(cbpp_fit):
    data = mm.load_dataset("cbpp")
    rows = data.loc[data.index.repeat(data["size"])].copy()
    pairs = zip(data["incidence"], data["size"], strict=True)
    rows["case"] = np.concatenate([np.r_[np.ones(k), np.zeros(n - k)] for k, n in pairs])
    fit = mm.glmer("case ~ C(period) + (1 | herd)", rows, family="binomial")
    res = simulated_residuals(fit, nsim=50, seed=1)
    assert res.binary
    assert "cannot show row by row" in res.test_dispersion().interpretation


# --------------------------------------------------------------------------- refusals
def test_refuses_linear_mixed_models():
    fit = mm.lmer("weight ~ treatment + (1 | litter)", "ratpup")
    with pytest.raises(ModelSpecificationError, match="normal-theory checks") as info:
        simulated_residuals(fit)
    assert "\n" not in str(info.value)


def test_refuses_bad_arguments(cbpp_fit):
    with pytest.raises(ValueError, match="nsim must be at least 2"):
        simulated_residuals(cbpp_fit, nsim=1)
    with pytest.raises(ValueError, match="simulate_re"):
        simulated_residuals(cbpp_fit, simulate_re="some")
    res = simulated_residuals(cbpp_fit, nsim=10, seed=1)
    with pytest.raises(ValueError, match="alternative"):
        res.test_dispersion("bigger")
    with pytest.raises(ValueError, match="margin"):
        res.test_outliers(margin="left")
    with pytest.raises(ModelSpecificationError, match=r"mm\.glmer"):
        simulated_residuals(object())


def test_public_name():
    assert mm.simulated_residuals is simulated_residuals
