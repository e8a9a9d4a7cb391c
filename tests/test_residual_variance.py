"""Residual variance by group against nlme's lme(..., weights = varIdent(...)).

Provenance: tests/reference/nlme/*.json (R 4.2.2, nlme 3.1.162; see
tests/reference/README-shared.md). Tolerance (issue): 1e-4 relative for log-likelihoods,
fixed effects, variance components and residual SD ratios; LRT statistics reproduce R's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixedmodels as mm
from mixedmodels.errors import DataError

NLME = Path(__file__).parent / "reference" / "nlme"

MEAN_A = "weight ~ treatment*C(sex, ref='Male') + litsize + (1 | litter)"
MEAN_B = "weight ~ treatment + C(sex, ref='Male') + litsize + (1 | litter)"
POOLED = {"HighLow": ["High", "Low"]}

# reference id -> (formula, residual_groups, pooling, data)
MODELS = {
    "west_3_1_reml": (MEAN_A, None, None, "ratpup"),
    "west_3_2a_reml": (MEAN_A, "treatment", None, "ratpup"),
    "west_3_2b_reml": (MEAN_A, "treatment", POOLED, "ratpup"),
    "west_3_3_reml": (MEAN_B, "treatment", POOLED, "ratpup"),
    "west_3_3_ml": (MEAN_B, "treatment", POOLED, "ratpup"),
    "west_3_3a_ml": (MEAN_A, "treatment", POOLED, "ratpup"),
    "west_3_3_notrt_ml": (
        "weight ~ C(sex, ref='Male') + litsize + (1 | litter)",
        "treatment",
        POOLED,
        "ratpup",
    ),
    "orthodont_varident_reml": ("distance ~ age*Sex + (age | Subject)", "Sex", None, "orthodont"),
    "orthodont_varident_ml": ("distance ~ age*Sex + (age | Subject)", "Sex", None, "orthodont"),
}

_CACHE: dict[str, mm.LinearMixedModelResult] = {}


def reference(name: str) -> dict:
    return json.loads((NLME / f"{name}.json").read_text())


def fit(name: str) -> mm.LinearMixedModelResult:
    if name not in _CACHE:
        formula, groups, pooling, data = MODELS[name]
        reml = reference(name)["method"] == "REML"
        _CACHE[name] = mm.lmer(
            formula, data, reml=reml, residual_groups=groups, residual_pooling=pooling
        )
    return _CACHE[name]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_matches_nlme(name):
    ref = reference(name)
    f = fit(name)
    assert f.loglik == pytest.approx(ref["logLik"], rel=1e-4)
    # We are at least as good an optimum as nlme (nlme's tolerance is looser than ours).
    assert f.loglik >= ref["logLik"] - 1e-7
    assert f.nparams == ref["logLik_df"]
    assert list(f.fixef.index) == [x["name"] for x in ref["fixed_effects"]]
    np.testing.assert_allclose(f.fixef, [x["estimate"] for x in ref["fixed_effects"]], rtol=1e-4)
    se = f.se.to_numpy()
    if not f.reml:
        # nlme scales ML standard errors by sqrt(n / (n - p)); lme4 (and we) do not.
        se = se * np.sqrt(f.nobs / (f.nobs - len(se)))
    np.testing.assert_allclose(se, [x["se"] for x in ref["fixed_effects"]], rtol=1e-3)
    cov = np.array(ref["random"]["cov"]["matrix"])
    ours = f.varcorr
    names = ref["random"]["cov"]["names"]
    for i, term in enumerate(names):
        row = ours[(ours.group != "Residual") & (ours.term == term) & ours.term2.isna()]
        assert row.variance.iloc[0] == pytest.approx(cov[i, i], rel=1e-4)
    if len(names) == 2:
        corr = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
        assert ours["corr"].dropna().iloc[0] == pytest.approx(corr, rel=1e-4)
    assert f.sigma == pytest.approx(ref["residual_sd"], rel=1e-4)
    vf = ref.get("variance_function")
    if vf is None:
        assert f.residual_strata is None
    else:
        want = dict(zip(vf["coef_names"], vf["coef"], strict=True))
        got = f.residual_sd_ratio.to_dict()
        assert set(got) == set(want)
        for label, value in want.items():
            assert got[label] == pytest.approx(value, rel=1e-4)
        for label, value in vf["residual_sd_by_group"].items():
            assert f.residual_sd[label] == pytest.approx(value, rel=1e-4)
    np.testing.assert_allclose(f.fitted.to_numpy()[:10], ref["fitted_first10"], rtol=1e-5)
    blups = ref["random"]["blups"][0]["values"]
    group = next(iter(f.ranef))
    for b in blups:
        for term, value in b["values"].items():
            scale = ours[(ours.group != "Residual") & (ours.term == term)].sd.iloc[0]
            assert f.ranef[group].loc[b["level"], term] == pytest.approx(value, abs=1e-4 * scale)


@pytest.mark.parametrize("hypothesis", ["H3_2", "H3_3", "H3_4", "H3_5", "H3_6"])
def test_book_likelihood_ratio_tests(hypothesis):
    lrt = json.loads((NLME / f"lrt_west_{hypothesis}.json").read_text())
    null, alt = fit(lrt["null_model"]), fit(lrt["alt_model"])
    chisq = 2 * (alt.loglik - null.loglik)
    assert chisq == pytest.approx(lrt["chisq"], rel=1e-4, abs=1e-6)
    assert alt.nparams - null.nparams == lrt["df"]
    p = stats.chi2.sf(chisq, lrt["df"])
    assert p == pytest.approx(lrt["p_naive_chisq"], rel=1e-3)


def test_orthodont_homoscedastic_vs_residual_sd_by_sex():
    lrt = json.loads((NLME / "lrt_orthodont_varident_reml.json").read_text())
    homo = mm.lmer("distance ~ age*Sex + (age | Subject)", "orthodont")
    hetero = fit("orthodont_varident_reml")
    assert 2 * (hetero.loglik - homo.loglik) == pytest.approx(lrt["chisq"], rel=1e-4)


def test_json_reports_residual_sd_per_group():
    out = fit("west_3_2a_reml").to_dict()
    assert out["residual_groups"] == "treatment"
    assert set(out["residual_sd"]) == {"Control", "High", "Low"}
    assert out["residual_sd_ratio"]["Control"] == 1.0
    residual_rows = [r for r in out["varcorr"] if r["group"] == "Residual"]
    assert [r["term"] for r in residual_rows] == [
        "treatment=Control",
        "treatment=High",
        "treatment=Low",
    ]


def test_reference_stratum_can_be_chosen_without_changing_the_fit():
    base = fit("west_3_2a_reml")
    other = mm.lmer(MEAN_A, "ratpup", residual_groups="treatment", residual_reference="High")
    assert other.loglik == pytest.approx(base.loglik, rel=1e-9)
    assert other.residual_sd_ratio["High"] == 1.0
    np.testing.assert_allclose(
        other.residual_sd.sort_index(), base.residual_sd.sort_index(), rtol=1e-5
    )


def test_crossed_design_with_residual_groups_matches_row_weighting():
    """With SD ratios fixed, the stratified deviance equals a fit on rescaled rows."""
    df = mm.load_dataset("penicillin")
    df["half"] = np.where(df["sample"].isin(["A", "B", "C"]), "abc", "def")
    f = mm.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", df, residual_groups="half")
    model = f.model
    rho = f.opt.final_theta[model.structure.ntheta :]
    delta = np.where(df["half"] == "abc", 1.0, np.exp(rho[0]))
    scaled = mm.LinearMixedModel(
        mm.build_design("diameter ~ 1 + (1 | plate) + (1 | sample)", df), reml=True
    )
    # Rescale rows by hand: y/delta, X/delta, z/delta.
    from dataclasses import replace

    design = scaled.design
    terms = tuple(replace(t, z=t.z / delta[:, None]) for t in design.re_terms)
    manual = mm.LinearMixedModel(
        replace(design, y=design.y / delta, X=design.X / delta[:, None], re_terms=terms)
    )
    dev = manual.deviance_function(True)
    jacobian = 2 * np.sum(np.log(delta))
    assert dev(f.theta) + jacobian == pytest.approx(f.objective, rel=1e-10)


def test_unknown_pooling_level_is_a_clear_error():
    with pytest.raises(DataError, match=r"'Medium'.*Control, High, Low"):
        mm.lmer(MEAN_B, "ratpup", residual_groups="treatment", residual_pooling={"x": ["Medium"]})


def test_stratum_with_one_observation_is_a_clear_error():
    df = mm.load_dataset("ratpup")
    df["grp"] = np.where(np.arange(len(df)) == 0, "lonely", "crowd")
    with pytest.raises(DataError, match=r"'lonely'.*fewer than two observations"):
        mm.lmer(MEAN_B, df, residual_groups="grp")


def test_missing_residual_groups_column_is_named():
    with pytest.raises(DataError, match=r"'treatmnt'.*did you mean 'treatment'"):
        mm.lmer(MEAN_B, "ratpup", residual_groups="treatmnt")


def test_rows_missing_the_residual_group_are_dropped_and_counted():
    df = mm.load_dataset("ratpup")
    df.loc[[3, 7], "treatment"] = None
    f = mm.lmer("weight ~ sex + litsize + (1 | litter)", df, residual_groups="treatment")
    assert f.nobs == len(df) - 2
    assert f.n_dropped_rows == 2
    assert isinstance(f.fitted.index, pd.Index) and 3 not in f.fitted.index


def test_compare_reproduces_the_book_tests_h3_1_h3_5_h3_6():
    """H3.1 against a model without random effects (REML), H3.5/H3.6 refitted by ML."""
    h31 = json.loads((NLME / "lrt_west_H3_1.json").read_text())
    no_litter = mm.lm("weight ~ treatment*C(sex, ref='Male') + litsize", "ratpup", reml=True)
    table = mm.compare(no_litter, fit("west_3_1_reml")).table
    assert table["Chisq"].iloc[1] == pytest.approx(h31["chisq"], rel=1e-6)
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(h31["p_mixture"], rel=1e-3)
    for hyp, null_formula, alt_formula in [
        ("H3_5", MEAN_B, MEAN_A),
        ("H3_6", "weight ~ C(sex, ref='Male') + litsize + (1 | litter)", MEAN_B),
    ]:
        lrt = json.loads((NLME / f"lrt_west_{hyp}.json").read_text())
        null, alt = (
            mm.lmer(f, "ratpup", residual_groups="treatment", residual_pooling=POOLED)
            for f in (null_formula, alt_formula)
        )  # REML fits: compare refits both by ML because the fixed effects differ
        result = mm.compare(null, alt)
        assert result.criterion == "ML"
        assert result.table["Chisq"].iloc[1] == pytest.approx(lrt["chisq"], rel=1e-4)
        assert result.table["Pr(>Chisq)"].iloc[1] == pytest.approx(lrt["p_naive_chisq"], rel=1e-3)


@pytest.mark.parametrize("hypothesis", ["H3_2", "H3_3"])
def test_compare_accepts_nested_residual_strata(hypothesis):
    """H3.2 (one variance within strata by treatment) and H3.3 (pooled within full)."""
    lrt = json.loads((NLME / f"lrt_west_{hypothesis}.json").read_text())
    null, alt = fit(lrt["null_model"]), fit(lrt["alt_model"])
    table = mm.compare(null, alt).table
    assert table["Chisq"].iloc[1] == pytest.approx(lrt["chisq"], rel=1e-4, abs=1e-6)
    assert table["Df"].iloc[1] == lrt["df"]
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(lrt["p_naive_chisq"], rel=1e-3)
    # Either order: compare sorts by the number of parameters.
    again = mm.compare(alt, null).table
    assert again["Chisq"].iloc[1] == pytest.approx(table["Chisq"].iloc[1], rel=1e-12)


def test_compare_refuses_residual_strata_that_are_not_nested():
    formula = MODELS["west_3_2a_reml"][0]
    by_sex = mm.lmer(formula, "ratpup", residual_groups="sex")
    by_treatment = fit("west_3_2b_reml")  # 2 strata, as by_sex: different partitions
    with pytest.raises(mm.ModelComparisonError, match="do not pool"):
        mm.compare(by_sex, by_treatment)
    full = fit("west_3_2a_reml")  # 3 strata by treatment do not pool the 2 by sex
    with pytest.raises(mm.ModelComparisonError, match="do not pool"):
        mm.compare(by_sex, full)
