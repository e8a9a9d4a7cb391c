"""Inference on GLMM fits: marginal means on both scales, simulation, the parametric
bootstrap, and one-line refusals of the methods that exist only for linear mixed models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

import mixedmodels as mm
from mixedmodels.diagnostics.residual_tests import shapiro_wilk, white_test
from mixedmodels.errors import ModelSpecificationError


@pytest.fixture(scope="module")
def contraception():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mm.glmer(
            "use ~ age + urban + livch + (1|district)", "Contraception", family="binomial"
        )


@pytest.fixture(scope="module")
def cbpp():
    return mm.glmer(
        "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", "cbpp", family="binomial"
    )


def test_emmeans_link_scale_is_the_linear_function_of_beta_with_z_tests(contraception):
    emm = mm.emmeans(contraception, "urban")
    L = emm.linfct.to_numpy()
    beta, V = contraception.fixef.to_numpy(), contraception.vcov.to_numpy()
    np.testing.assert_allclose(emm.means["emmean"], L @ beta, rtol=1e-12)
    np.testing.assert_allclose(emm.means["SE"], np.sqrt(np.diag(L @ V @ L.T)), rtol=1e-12)
    assert np.all(np.isinf(emm.means["df"]))
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(emm.means["lower"], L @ beta - z * emm.means["SE"], rtol=1e-10)
    c = emm.contrasts.iloc[0]
    assert c["p_value"] == pytest.approx(2 * stats.norm.sf(abs(c["t_ratio"])), rel=1e-10)
    assert "logit" in emm.notes[0]


def test_emmeans_response_scale_back_transforms(contraception):
    link = mm.emmeans(contraception, "urban")
    resp = contraception.emmeans("urban", type="response")
    eta = link.means["emmean"].to_numpy()
    p = 1.0 / (1.0 + np.exp(-eta))
    np.testing.assert_allclose(resp.means["prob"], p, rtol=1e-12)
    np.testing.assert_allclose(resp.means["SE"], p * (1 - p) * link.means["SE"], rtol=1e-10)
    np.testing.assert_allclose(
        resp.means["lower"], 1 / (1 + np.exp(-link.means["lower"].to_numpy())), rtol=1e-12
    )
    ratio = resp.contrasts["odds_ratio"].to_numpy()
    np.testing.assert_allclose(ratio, np.exp(link.contrasts["estimate"]), rtol=1e-12)
    np.testing.assert_allclose(resp.contrasts["p_value"], link.contrasts["p_value"])


def test_emmeans_refuses_small_sample_df_for_glmm(contraception):
    with pytest.raises(mm.DataError, match="z statistics"):
        mm.emmeans(contraception, "urban", ddf="kenward-roger")


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda f: mm.profile(f), "likelihood profile"),
        (lambda f: mm.icc(f), "ICC"),
        (lambda f: mm.plots.qq(f), "Q-Q plot"),
        (lambda f: mm.plots.residuals_vs_fitted(f), "residual vs fitted"),
        (lambda f: mm.plots.residual_kde(f), "residual density"),
        (lambda f: mm.plots.diagnostics(f), "diagnostics panel"),
        (lambda f: shapiro_wilk(f), "Shapiro-Wilk"),
        (lambda f: white_test(f), "White's test"),
    ],
)
def test_linear_only_methods_refuse_glmm_in_one_line(contraception, call, what):
    with pytest.raises(ModelSpecificationError) as info:
        call(contraception)
    message = str(info.value)
    assert what in message and "generalized linear mixed models" in message
    assert "\n" not in message


def test_wald_confint_works_on_glmm(contraception):
    ci = mm.confint(contraception)
    se = contraception.se
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(ci["lower"], contraception.fixef - z * se, rtol=1e-10)
    np.testing.assert_allclose(ci["upper"], contraception.fixef + z * se, rtol=1e-10)


def test_simulate_draws_from_the_family(cbpp, contraception):
    sims = cbpp.simulate(nsim=3, seed=1)
    assert sims.shape == (cbpp.nobs, 3)
    trials = cbpp.design.trials
    successes = sims.to_numpy() * trials[:, None]
    np.testing.assert_allclose(successes, np.rint(successes), atol=1e-9)
    assert np.all((sims.to_numpy() >= 0) & (sims.to_numpy() <= 1))
    again = cbpp.simulate(nsim=3, seed=1)
    np.testing.assert_array_equal(sims.to_numpy(), again.to_numpy())
    binary = contraception.simulate(nsim=200, seed=2).to_numpy()
    assert set(np.unique(binary)) <= {0.0, 1.0}
    # Averaged over simulations, the rate of 1s matches the observed rate (both are
    # near the model's marginal mean): 200 x 1934 draws, SE ~ 0.004 plus the RE spread.
    assert binary.mean() == pytest.approx(contraception.design.y.mean(), abs=0.03)


def test_simulate_counts_are_integers():
    fit = mm.glmer("TICKS ~ C(YEAR) + cHEIGHT + (1|LOCATION)", "grouseticks", family="poisson")
    sims = fit.simulate(nsim=2, seed=3).to_numpy()
    np.testing.assert_array_equal(sims, np.rint(sims))
    assert sims.min() >= 0


def test_refit_of_the_observed_response_reproduces_the_fit(cbpp):
    theta, beta, objective, _ = cbpp.refitter.refit(cbpp.design.y)
    np.testing.assert_allclose(theta, cbpp.theta, rtol=1e-5)
    np.testing.assert_allclose(beta, cbpp.fixef.to_numpy(), rtol=1e-5, atol=1e-6)
    assert -0.5 * objective == pytest.approx(cbpp.loglik, rel=1e-9)


def test_glmm_parametric_bootstrap(cbpp):
    boot = mm.bootstrap(cbpp, nsim=40, seed=7, progress=False)
    again = cbpp.bootstrap(40, seed=7, progress=False)
    np.testing.assert_array_equal(boot.replicates.to_numpy(), again.replicates.to_numpy())
    assert list(boot.replicates.columns) == ["sd_(Intercept)|herd", *cbpp.fixef.index]
    assert boot.failures == 0
    reps = boot.replicates[list(cbpp.fixef.index)]
    # Simulated under the fit: replicate means within 4 Monte Carlo SEs of the estimates.
    mc_se = reps.std() / np.sqrt(len(reps))
    assert np.all(np.abs(reps.mean() - cbpp.fixef) < 4 * mc_se + 0.05 * cbpp.se)
    ci = boot.confint()
    assert np.all(ci["lower"] < ci["estimate"]) and np.all(ci["estimate"] < ci["upper"])


def test_glmm_bootstrap_lrt_against_the_glm_null(cbpp):
    null = mm.glm("cbind(incidence, size - incidence) ~ C(period)", "cbpp")
    result = mm.bootstrap_compare(null, cbpp, nsim=30, seed=2, progress=False)
    assert result.statistic == pytest.approx(14.00583524, rel=1e-6)
    assert result.df == 1
    assert np.isfinite(result.replicates).all()
    # Under the null the herd variance is often estimated at 0: statistics near 0 are common.
    assert np.mean(result.replicates < 1.0) > 0.3
    assert result.p_value == pytest.approx(
        (1 + np.sum(result.replicates >= result.statistic)) / 31, rel=1e-12
    )


def test_profile_intervals_refuse_vector_terms_unless_asked_for_fixed_effects():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mm.glmer("use ~ age + urban + (urban|district)", "Contraception", family="binomial")
    with pytest.raises(ModelSpecificationError, match="vector term"):
        fit.confint("profile")
    ci = fit.confint("profile", parm="age")
    assert ci.loc["age", "lower"] < fit.fixef["age"] < ci.loc["age", "upper"]
    wald = fit.confint()
    # Near-quadratic here: profile and Wald agree to a few percent of the SE.
    assert ci.loc["age", "lower"] == pytest.approx(
        wald.loc["age", "lower"], abs=0.05 * fit.se["age"]
    )


def test_simulate_proportions_given_with_trials_as_weights():
    data = mm.load_dataset("cbpp")
    data = data.assign(prop=data["incidence"] / data["size"])
    fit = mm.glmer("prop ~ C(period) + (1 | herd)", data, family="binomial", weights="size")
    sims = fit.simulate(nsim=2, seed=4).to_numpy()
    successes = sims * data["size"].to_numpy()[:, None]
    np.testing.assert_allclose(successes, np.rint(successes), atol=1e-9)
    assert (sims > 0).mean() > 0.1 and np.all(sims <= 1)  # not 0/1 draws
    assert not set(np.unique(sims)) <= {0.0, 1.0}
