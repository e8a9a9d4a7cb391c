"""The GLMM result class on fits built by hand from lme4's numbers (no engine needed).

``glmm_hand_fits`` builds a :class:`GlmmFit` at lme4's optimum for three reference models
(cbpp binomial ``cbind``, Contraception with a correlated random slope, grouseticks negative
binomial); every derived quantity is checked here against the reference file or a hand
computation: z and p, AIC/BIC from logLik, varcorr from theta, the four residual types,
the overdispersion check, odds/rate ratios, predictions, the summary and the JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from glmm_hand_fits import Family, Link, data, hand_fit, reference
from scipy import stats

from mixedmodels.errors import DataError, ModelSpecificationError
from mixedmodels.results.glmm import GeneralizedLinearMixedModelResult, Overdispersion

NAMES = ("cbpp_laplace", "contraception_slope", "grouseticks_nb")
_CACHE: dict[str, GeneralizedLinearMixedModelResult] = {}


def result(name: str) -> GeneralizedLinearMixedModelResult:
    if name not in _CACHE:
        _CACHE[name] = GeneralizedLinearMixedModelResult(hand_fit(name))
    return _CACHE[name]


def variant(name: str, **changes) -> GeneralizedLinearMixedModelResult:
    return GeneralizedLinearMixedModelResult(hand_fit(name, **changes))


# ------------------------------------------------------------------ the fixture is lme4's
@pytest.mark.parametrize("name", NAMES)
def test_hand_fit_reproduces_lme4_modes_and_fitted_values(name):
    """The modes, their conditional SDs and mu computed at lme4's parameters are lme4's."""
    ref, fit = reference(name), result(name)
    table = fit.ranef_table()
    for group, blups in ref["blups"].items():
        expected = pd.DataFrame(blups["values"])
        got = table[table["group"] == group].merge(expected, on=["level", "term"])
        assert len(got) == len(expected)
        np.testing.assert_allclose(got["condval_x"], got["condval_y"], rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(got["condsd_x"], got["condsd_y"], rtol=1e-8)
    np.testing.assert_allclose(fit.fitted.to_numpy()[:10], ref["fitted_first10"], rtol=1e-8)


# ------------------------------------------------------------------ fixed effects
@pytest.mark.parametrize("name", NAMES)
def test_fixed_effects_z_and_p_are_lme4s(name):
    ref, fit = reference(name), result(name)
    expected = pd.DataFrame(ref["fixed_effects"]).set_index("name")
    table = fit.coef_table()
    assert list(table.columns) == ["estimate", "se", "z", "p"]
    assert list(table.index) == list(expected.index)
    np.testing.assert_allclose(table["estimate"], expected["estimate"], rtol=0, atol=0)
    np.testing.assert_allclose(table["se"], expected["se"], rtol=1e-14)
    np.testing.assert_allclose(table["z"], expected["z"], rtol=1e-13)
    np.testing.assert_allclose(table["p"], expected["p"], rtol=1e-9)
    np.testing.assert_allclose(fit.fixef, expected["estimate"], rtol=0)
    np.testing.assert_allclose(fit.se, expected["se"], rtol=1e-14)
    rx = fit.coef_table(use_hessian=False)
    np.testing.assert_allclose(rx["se"], expected["se_rx"], rtol=1e-14)
    np.testing.assert_allclose(rx["z"], rx["estimate"] / rx["se"], rtol=1e-15)


def test_vcov_frames_are_labelled_copies_of_the_fit():
    ref, fit = reference("cbpp_laplace"), result("cbpp_laplace")
    names = ref["vcov_fixed"]["names"]
    assert list(fit.vcov.index) == list(fit.vcov.columns) == names
    np.testing.assert_array_equal(fit.vcov.to_numpy(), ref["vcov_fixed"]["matrix"])
    np.testing.assert_array_equal(fit.vcov_rx.to_numpy(), ref["vcov_fixed_rx"]["matrix"])


def test_wald_confint_uses_normal_quantiles():
    fit = result("cbpp_laplace")
    ci = fit.confint()
    q = stats.norm.ppf(0.975)
    np.testing.assert_allclose(ci["lower"], fit.fixef - q * fit.se, rtol=1e-14)
    np.testing.assert_allclose(ci["upper"], fit.fixef + q * fit.se, rtol=1e-14)
    ci90 = fit.confint(level=0.9)
    assert (ci90["upper"] < ci["upper"]).all()
    with pytest.raises(ModelSpecificationError, match="method='wald'"):
        fit.confint("profile")


# ------------------------------------------------------------------ likelihood and criteria
@pytest.mark.parametrize("name", NAMES)
def test_loglik_aic_bic_deviance(name):
    ref, fit = reference(name), result(name)
    k, n = ref["logLik_df"], ref["nobs"]
    assert fit.nparams == k and fit.nobs == n and fit.df_resid == n - k
    assert fit.loglik == ref["logLik"]
    assert fit.loglik_marginal == ref["logLik_marginal"]
    assert fit.objective == pytest.approx(ref["minus2logLik"], rel=1e-15)
    assert fit.aic == pytest.approx(-2 * ref["logLik"] + 2 * k, rel=1e-15)
    assert fit.aic == pytest.approx(ref["AIC"], rel=1e-14)
    assert fit.bic == pytest.approx(-2 * ref["logLik"] + math.log(n) * k, rel=1e-15)
    assert fit.bic == pytest.approx(ref["BIC"], rel=1e-14)
    assert fit.deviance == ref["deviance"]
    assert fit.ngroups == ref["ngroups"]
    assert fit.singular is False and fit.converged is True
    assert fit.reml is False


def test_agq_loglik_and_marginal_are_kept_apart():
    ref = reference("cbpp_agq25")
    fit = variant(
        "cbpp_laplace",
        nagq=25,
        loglik=ref["logLik"],
        loglik_marginal=ref["logLik_marginal"],
    )
    assert fit.nagq == 25
    assert fit.loglik == ref["logLik"]
    assert fit.loglik_marginal == pytest.approx(ref["logLik"] + ref["logLik_agq_offset"], rel=1e-14)
    # lme4's AIC for nAGQ > 1 is from its logLik (without the saturated part).
    assert fit.aic == pytest.approx(ref["AIC"], rel=1e-14)


# ------------------------------------------------------------------ variance components
@pytest.mark.parametrize("name", NAMES)
def test_varcorr_from_theta_is_lme4s_varcorr(name):
    ref, fit = reference(name), result(name)
    vc = fit.varcorr
    assert list(vc.columns) == ["group", "term", "term2", "variance", "sd", "corr"]
    assert "Residual" not in set(vc["group"])
    flat = ref["variance_components_flat"]
    variances = [r for r in flat if r["kind"] == "variance"]
    covariances = [r for r in flat if r["kind"] == "covariance"]
    got_var = vc[vc["term2"].isna()]
    assert list(zip(got_var["group"], got_var["term"], strict=True)) == [
        (r["group"], r["var1"]) for r in variances
    ]
    np.testing.assert_allclose(got_var["variance"], [r["vcov"] for r in variances], rtol=1e-13)
    np.testing.assert_allclose(got_var["sd"], [r["sdcor"] for r in variances], rtol=1e-13)
    got_cor = vc[vc["term2"].notna()]
    assert list(zip(got_cor["term"], got_cor["term2"], strict=True)) == [
        (r["var1"], r["var2"]) for r in covariances
    ]
    np.testing.assert_allclose(got_cor["corr"], [r["sdcor"] for r in covariances], rtol=1e-13)
    np.testing.assert_array_equal(fit.theta, ref["theta"]["values"])


def test_covariance_matrices_are_template_products():
    ref, fit = reference("contraception_slope"), result("contraception_slope")
    ((names, cov),) = fit.covariance_matrices()["district"]
    assert names == ("(Intercept)", "urbanY")
    np.testing.assert_allclose(cov, ref["variance_components"][0]["cov"], rtol=1e-13)


def test_ranef_frames_and_condvar():
    fit = result("contraception_slope")
    ranef = fit.ranef["district"]
    assert list(ranef.columns) == ["(Intercept)", "urbanY"]
    assert ranef.index.name == "district" and len(ranef) == 60
    condvar = fit.ranef_condvar["district"]
    assert condvar.shape == (60, 2, 2) and not condvar.flags.writeable
    np.testing.assert_allclose(
        fit.ranef_condsd["district"].to_numpy(),
        np.sqrt(np.diagonal(condvar, axis1=1, axis2=2)),
        rtol=1e-15,
    )
    table = fit.ranef_table()
    assert list(table.columns) == ["group", "level", "term", "condval", "condsd"]
    assert len(table) == 120


# ------------------------------------------------------------------ residuals
def test_residual_definitions_binomial_cbind():
    fit = result("cbpp_laplace")
    frame = data("cbpp_laplace")
    y = (frame["incidence"] / frame["size"]).to_numpy()
    n = frame["size"].to_numpy().astype(float)
    mu = fit.fitted.to_numpy()
    eta = np.log(mu / (1 - mu))
    np.testing.assert_allclose(fit.linear_predictor, eta, rtol=1e-12)
    np.testing.assert_allclose(fit.residuals("response"), y - mu, rtol=1e-15)
    np.testing.assert_allclose(
        fit.residuals("pearson"), (y - mu) * np.sqrt(n) / np.sqrt(mu * (1 - mu)), rtol=1e-13
    )
    np.testing.assert_allclose(fit.residuals("working"), (y - mu) / (mu * (1 - mu)), rtol=1e-13)
    # Deviance residuals by hand: 2 n [y log(y/mu) + (1-y) log((1-y)/(1-mu))], 0 log 0 = 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(y > 0, y * np.log(y / mu), 0.0)
        b = np.where(y < 1, (1 - y) * np.log((1 - y) / (1 - mu)), 0.0)
    dev = np.sign(y - mu) * np.sqrt(2 * n * (a + b))
    np.testing.assert_allclose(fit.residuals("deviance"), dev, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fit.resid, dev, rtol=1e-12, atol=1e-14)
    # Their squares sum to lme4's deviance().
    assert float(np.sum(fit.resid**2)) == pytest.approx(fit.deviance, rel=1e-12)
    assert fit.resid.name == "resid"
    assert list(fit.resid.index) == list(frame.index)


def test_residual_definitions_negative_binomial():
    fit = result("grouseticks_nb")
    theta = fit.nb_theta
    y = data("grouseticks_nb")["TICKS"].to_numpy().astype(float)
    mu = fit.fitted.to_numpy()
    np.testing.assert_allclose(
        fit.residuals("pearson"), (y - mu) / np.sqrt(mu + mu**2 / theta), rtol=1e-13
    )
    np.testing.assert_allclose(fit.residuals("working"), (y - mu) / mu, rtol=1e-13)
    assert float(np.sum(fit.resid**2)) == pytest.approx(
        reference("grouseticks_nb")["deviance"], rel=1e-8
    )


def test_unknown_residual_type_is_refused():
    with pytest.raises(ValueError, match="deviance, pearson, response, working"):
        result("cbpp_laplace").residuals("studentized")


def test_overdispersion_check():
    fit = result("cbpp_laplace")
    check = fit.overdispersion()
    assert isinstance(check, Overdispersion)
    chisq = float(np.sum(fit.residuals("pearson") ** 2))
    assert check.chisq == pytest.approx(chisq, rel=1e-14)
    assert check.df == 51
    assert check.ratio == pytest.approx(chisq / 51, rel=1e-14)
    assert check.p == pytest.approx(stats.chi2.sf(chisq, 51), rel=1e-10)
    assert "51 df" in str(check)
    assert check.to_dict() == {
        "chisq": check.chisq,
        "ratio": check.ratio,
        "df": 51,
        "p": check.p,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.chisq = 0.0  # type: ignore[misc]


# ------------------------------------------------------------------ ratios
def test_odds_ratios_logit():
    fit = result("cbpp_laplace")
    table = fit.odds_ratios()
    assert list(table.columns) == ["odds ratio", "lower", "upper"]
    q = stats.norm.ppf(0.975)
    np.testing.assert_allclose(table["odds ratio"], np.exp(fit.fixef), rtol=1e-15)
    np.testing.assert_allclose(table["lower"], np.exp(fit.fixef - q * fit.se), rtol=1e-13)
    np.testing.assert_allclose(table["upper"], np.exp(fit.fixef + q * fit.se), rtol=1e-13)
    assert fit.exp_fixef().equals(table)
    with pytest.raises(
        ModelSpecificationError, match=r"rate ratios need the log link.*odds_ratios"
    ):
        fit.rate_ratios()


def test_rate_ratios_log():
    fit = result("grouseticks_nb")
    table = fit.rate_ratios(level=0.9)
    assert list(table.columns) == ["rate ratio", "lower", "upper"]
    q = stats.norm.ppf(0.95)
    np.testing.assert_allclose(table["lower"], np.exp(fit.fixef - q * fit.se), rtol=1e-13)
    with pytest.raises(ModelSpecificationError, match="odds ratios need the logit link"):
        fit.odds_ratios()


def test_ratios_refused_for_other_links():
    fit = variant("cbpp_laplace", family=Family("binomial", Link("probit")))
    assert fit.link == "probit"
    with pytest.raises(ModelSpecificationError, match="probit link") as info:
        fit.exp_fixef()
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ predictions
def test_predict_fitted_rows_on_both_scales():
    fit = result("cbpp_laplace")
    np.testing.assert_array_equal(fit.predict(), fit.fitted)
    np.testing.assert_array_equal(fit.predict(type="link"), fit.linear_predictor)
    fixed = fit.design.X @ fit.fixef.to_numpy()
    np.testing.assert_allclose(fit.predict(type="link", re=False), fixed, rtol=1e-15)
    np.testing.assert_allclose(fit.predict(re=False), 1 / (1 + np.exp(-fixed)), rtol=1e-15)
    with pytest.raises(ValueError, match="'response' or 'link'"):
        fit.predict(type="terms")


def test_predict_newdata_and_new_levels():
    fit = result("cbpp_laplace")
    frame = data("cbpp_laplace")
    np.testing.assert_allclose(fit.predict(frame), fit.fitted, rtol=1e-13)
    np.testing.assert_allclose(fit.predict(frame, type="link"), fit.linear_predictor, rtol=1e-13)
    new = pd.DataFrame({"period": [1, 2], "herd": [1, 99]}, index=["seen", "unseen"])
    link = fit.predict(new, type="link")
    assert list(link.index) == ["seen", "unseen"]
    beta = fit.fixef
    b1 = fit.ranef["herd"].loc["1", "(Intercept)"]
    assert link["seen"] == pytest.approx(beta["(Intercept)"] + b1, rel=1e-14)
    # lme4: a level not seen in fitting gets zero random effects.
    assert link["unseen"] == pytest.approx(beta["(Intercept)"] + beta["period2"], rel=1e-14)
    assert fit.predict(new)["unseen"] == pytest.approx(1 / (1 + np.exp(-link["unseen"])))
    with pytest.raises(DataError, match="not seen in fitting") as info:
        fit.predict(new, allow_new_levels=False)
    assert "'unseen'" in str(info.value)


def test_predict_includes_the_offset_on_the_link_scale():
    """lme4's predict(type = "link") includes the offset; the response scale maps it."""
    frame = data("grouseticks_nb").assign(exposure=lambda d: 1.0 + (d.index % 3))
    offset = np.log(frame["exposure"].to_numpy())
    base = hand_fit("grouseticks_nb")
    eta = np.asarray(base.eta) + offset
    from mixedmodels.design import build_design

    design = build_design(
        "TICKS ~ C(YEAR) + cHEIGHT + offset(log(exposure)) + (1 | LOCATION)", frame
    )
    fit = variant("grouseticks_nb", design=design, eta=eta, mu=np.exp(eta), offset=design.offset)
    np.testing.assert_allclose(fit.predict(type="link"), eta, rtol=1e-15)
    fixed = design.X @ fit.fixef.to_numpy() + offset
    np.testing.assert_allclose(fit.predict(type="link", re=False), fixed, rtol=1e-15)
    np.testing.assert_allclose(fit.predict(frame, type="link"), eta, rtol=1e-13)
    np.testing.assert_allclose(fit.predict(frame), np.exp(eta), rtol=1e-13)


# ------------------------------------------------------------------ presentation
def test_summary_text_follows_lme4():
    text = str(result("cbpp_laplace").summary())
    lines = text.splitlines()
    assert lines[0] == (
        "Generalized linear mixed model fit by maximum likelihood (Laplace Approximation) "
        "['glmerMod']"
    )
    assert lines[1] == " Family: binomial  ( logit )"
    assert lines[2] == "Formula: cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
    assert lines[3] == "   Data: cbpp"
    header = next(line for line in lines if "AIC" in line).split()
    assert header == ["AIC", "BIC", "logLik", "deviance", "df.resid"]
    values = lines[lines.index(next(line for line in lines if "AIC" in line)) + 1].split()
    assert values == ["194.053", "204.179", "-92.0263", "184.053", "51"]  # deviance = -2 logLik
    assert "Scaled residuals:" in lines
    assert "Random effects:" in lines
    assert "Residual" not in text
    assert "Number of obs: 56, groups:  herd, 15" in lines
    fixed_header = lines[lines.index("Fixed effects:") + 1].split()
    assert fixed_header[:4] == ["Estimate", "Std.", "Error", "z"]
    assert "Pr(>|z|)" in fixed_header
    period2 = next(line for line in lines if line.lstrip().startswith("period2"))
    assert period2.split()[-1] == "**"  # p = 0.0012
    assert "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1" in lines


def test_summary_scaled_residuals_are_pearson_quantiles():
    fit = result("cbpp_laplace")
    table = fit.summary().tables[1]
    assert table.title == "Scaled residuals:"
    np.testing.assert_allclose(
        table.data.to_numpy()[0],
        np.quantile(fit.residuals("pearson"), [0, 0.25, 0.5, 0.75, 1]),
        rtol=1e-15,
    )


def test_summary_random_effects_with_correlation():
    text = str(result("contraception_slope").summary())
    lines = text.splitlines()
    header = lines[lines.index("Random effects:") + 1].split()
    assert header == ["Groups", "Name", "Variance", "Std.Dev.", "Corr"]
    urban = lines[lines.index("Random effects:") + 3].split()
    assert urban == ["urbanY", "0.5412", "0.7357", "-0.79"]  # group name shown once, as lme4
    assert "Number of obs: 1934, groups:  district, 60" in lines


def test_summary_titles_for_quadrature_and_negative_binomial():
    agq = variant("cbpp_laplace", nagq=25)
    assert str(agq.summary()).splitlines()[0] == (
        "Generalized linear mixed model fit by maximum likelihood (Adaptive Gauss-Hermite "
        "Quadrature, nAGQ = 25) ['glmerMod']"
    )
    # lme4 prints nAGQ = 0 (its fast mode) the same way.
    fast = variant("cbpp_laplace", nagq=0)
    assert "(Adaptive Gauss-Hermite Quadrature, nAGQ = 0)" in str(fast.summary())
    nb = str(result("grouseticks_nb").summary()).splitlines()
    assert nb[1] == " Family: Negative Binomial(2.0522)  ( log )"


def test_summary_groups_line_lists_every_factor():
    """lme4 separates grouping factors by '; ' on the Number of obs line."""
    fit = result("contraception_slope")
    assert fit.summary().tables[2].notes == ("Number of obs: 1934, groups:  district, 60",)


def test_summary_shows_messages_and_singular_fits():
    fit = variant(
        "cbpp_laplace",
        singular=True,
        converged=False,
        messages=("Model failed to converge with max|grad| = 0.0123 (tol = 0.002)",),
    )
    text = str(fit.summary())
    assert "Model failed to converge with max|grad| = 0.0123 (tol = 0.002)" in text
    assert "boundary (singular) fit: see help('isSingular')" in text
    quiet = str(result("cbpp_laplace").summary())
    assert "singular" not in quiet and "converge" not in quiet


def test_repr_and_html():
    fit = result("cbpp_laplace")
    assert repr(fit) == (
        "<GeneralizedLinearMixedModelResult 'cbind(incidence, size - incidence) ~ C(period) + "
        "(1 | herd)': binomial(logit), Laplace, nobs=56, loglik=-92.0263>"
    )
    html = fit._repr_html_()
    assert html.startswith('<div class="mm-report">') and "glmerMod" in html


# ------------------------------------------------------------------ JSON
GLMM_KEYS = {
    "formula",
    "family",
    "link",
    "nagq",
    "nobs",
    "ngroups",
    "fixef",
    "varcorr",
    "loglik",
    "loglik_marginal",
    "aic",
    "bic",
    "deviance",
    "theta",
    "singular",
    "converged",
    "overdispersion",
}


@pytest.mark.parametrize("name", NAMES)
def test_to_dict_is_the_glmm_json_contract(name):
    ref, fit = reference(name), result(name)
    out = fit.to_dict()
    text = json.dumps(out, allow_nan=False)  # strict JSON: plain types, no NaN
    assert json.loads(text) == out
    assert GLMM_KEYS <= set(out)
    assert ("nb_theta" in out) == (ref["family"] == "negative-binomial")
    assert not {"reml", "sigma", "reml_criterion"} & set(out)
    assert out["family"] == ref["family"] and out["link"] == ref["link"]
    assert out["nagq"] == ref["nAGQ"] and out["nobs"] == ref["nobs"]
    assert out["ngroups"] == ref["ngroups"]
    assert out["loglik"] == ref["logLik"] and out["deviance"] == ref["deviance"]
    assert out["aic"] == pytest.approx(ref["AIC"], rel=1e-14)
    assert out["theta"] == ref["theta"]["values"]
    for row, expected in zip(out["fixef"], ref["fixed_effects"], strict=True):
        assert set(row) == {"term", "estimate", "se", "z", "p"}
        assert row["term"] == expected["name"]
        assert row["estimate"] == expected["estimate"]
        assert row["z"] == pytest.approx(expected["z"], rel=1e-13)
    assert all(r["group"] != "Residual" for r in out["varcorr"])
    assert set(out["overdispersion"]) == {"chisq", "ratio", "df", "p"}
    if "nb_theta" in out:
        assert out["nb_theta"] == ref["nb_theta"]


def test_varcorr_records_match_the_lmm_json_style():
    out = result("contraception_slope").to_dict()["varcorr"]
    assert out == [
        {"group": "district", "term": "(Intercept)", "variance": pytest.approx(0.38491569217419724),
         "sd": pytest.approx(0.6204157413978124)},
        {"group": "district", "term": "urbanY", "variance": pytest.approx(0.5412088201482883),
         "sd": pytest.approx(0.7356689609792494)},
        {"group": "district", "term": "(Intercept)", "term2": "urbanY",
         "corr": pytest.approx(-0.792906540165661)},
    ]  # fmt: skip


def test_non_finite_numbers_become_null():
    fit = variant("cbpp_laplace", loglik=math.nan, nparams=56)
    out = fit.to_dict()
    assert out["loglik"] is None and out["aic"] is None
    assert out["overdispersion"]["ratio"] is None  # df_resid = 0
    json.dumps(out, allow_nan=False)


# ------------------------------------------------------------------ immutability
def test_returned_objects_are_fresh_and_arrays_read_only():
    fit = result("contraception_slope")
    before = fit.to_dict()
    varcorr, fixef, ranef, vcov, fitted = (
        fit.varcorr,
        fit.fixef,
        fit.ranef["district"],
        fit.vcov,
        fit.fitted,
    )
    varcorr.loc[0, "variance"] = 99.0
    fixef.iloc[0] = 9.0
    ranef.iloc[0, 0] = 9.0
    vcov.iloc[0, 0] = 9.0
    fitted.iloc[0] = 9.0
    theta, optimizer = fit.theta, fit.optimizer
    theta[0] = 9.0
    optimizer["evaluations"] = -1
    assert fit.to_dict() == before
    assert fit.optimizer["evaluations"] == 97
    for array in (fit.ranef_condvar["district"], fit.design.X, fit.design.y):
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0.0
