"""Estimated marginal means and pairwise contrasts against R's emmeans 1.8.4-1.

Reference values: reference/emmeans/*.json, written by reference/emmeans/
make_emmeans_reference.R (lme4 1.1-31, lmerTest 3.1-3, pbkrtest 0.5.2; R 4.2.2). R is
not needed to run these tests.

Tolerances (the issue's): means, SEs, estimates and t ratios 1e-6 relative; df 1e-3
relative (both sides differentiate numerically); p-values 1e-3 relative or 1e-6 absolute.
Confidence limits depend on the df through the t quantile: 1e-5 relative.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.errors import DataError, ModelSpecificationError, RankDeficiencyWarning
from mixedmodels.inference.emmeans import (
    ADJUST_METHODS,
    MarginalMeans,
    adjust_pvalues,
    emmeans,
    reference_grid,
    zapsmall,
)
from mixedmodels.results import LinearMixedModelResult

REF = Path(__file__).parent / "reference" / "emmeans"
CASES = sorted(p.stem for p in REF.glob("*.json"))

#: R fit name -> (our formula, dataset, REML). cake's temperature is a factor in R
#: (factor(temperature), treatment contrasts); here C(temperature) does the same.
FITS = {
    "ratpup_a": ("weight ~ treatment*sex + litsize + (1|litter)", "ratpup", True),
    "ratpup_a_ml": ("weight ~ treatment*sex + litsize + (1|litter)", "ratpup", False),
    "ratpup_b": ("weight ~ treatment + sex + litsize + (1|litter)", "ratpup", True),
    "ratpup_log": ("weight ~ treatment + sex + log(litsize) + (1|litter)", "ratpup", True),
    "orthodont": ("distance ~ age*Sex + (age|Subject)", "Orthodont", True),
    "cake": ("angle ~ recipe*C(temperature) + (1|recipe:replicate)", "cake", True),
}
DDF = {"satterthwaite": "satterthwaite", "kenward-roger": "kenward-roger", "asymptotic": "normal"}


def reference(case: str) -> dict:
    return json.loads((REF / f"{case}.json").read_text())


def fit_name(ref: dict) -> str:
    return next(
        name
        for name, (formula, dataset, reml) in FITS.items()
        if ref["fit"]["formula"] == formula.replace("C(temperature)", "temperature")
        and ref["fit"]["data"] == dataset
        and ref["fit"]["REML"] == reml
    )


@functools.cache
def own_fit(name: str):
    formula, dataset, reml = FITS[name]
    return mm.lmer(formula, mm.load_dataset(dataset), reml=reml)


@functools.cache
def fit(name: str):
    """The model evaluated at lme4's theta: the comparisons then test emmeans, not BOBYQA.

    (Orthodont's REML optimum is flat: our optimiser ends 5.6e-6 lower in the REML
    criterion, with theta 2e-3 away from lme4's; see test_own_optimum_is_as_good.)
    """
    own = own_fit(name)
    theta = np.atleast_1d(reference_for_fit(name)["fit"]["theta"])
    opt = dataclasses.replace(own.opt, final_theta=theta)
    return LinearMixedModelResult(
        model=own.model,
        objective_function=own.objective_function,
        deviance_function=own.deviance_function,
        opt=opt,
        reml=own.reml,
    )


def reference_for_fit(name: str) -> dict:
    return next(reference(c) for c in CASES if fit_name(reference(c)) == name)


def emm_for(case: str, adjust: str = "tukey") -> MarginalMeans:
    ref = reference(case)
    name = fit_name(ref)
    data = mm.load_dataset(FITS[name][1]) if name == "ratpup_log" else None
    return emmeans(
        fit(name),
        ref["specs"],
        ref["by"] or None,
        adjust=adjust,
        ddf=DDF[ref["ddf"]],
        level=ref["level"],
        at=ref["at"] or None,
        data=data,
    )


def column(table: dict, name: str) -> np.ndarray:
    return np.array([np.inf if v is None else v for v in table[name]], dtype=float)


def assert_p_close(actual, expected, rtol=1e-3, atol=1e-6):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    ok = (np.abs(actual - expected) <= atol) | (np.abs(actual / expected - 1) <= rtol)
    assert ok.all(), (actual, expected)


@pytest.mark.parametrize("name", list(FITS))
def test_own_optimum_is_as_good(name):
    """Our own fits reach lme4's optimum (or a lower criterion) and its fixed effects."""
    ref = reference_for_fit(name)
    own, at_lme4 = own_fit(name), fit(name)
    assert own.objective <= at_lme4.objective + 1e-7
    np.testing.assert_allclose(own.theta, np.atleast_1d(ref["fit"]["theta"]), rtol=3e-3)
    np.testing.assert_allclose(at_lme4.fixef, list(ref["fit"]["fixef"].values()), rtol=1e-7)
    # The marginal means of our own optimum stay within 1e-3 of emmeans' too.
    case = next(c for c in CASES if fit_name(reference(c)) == name)
    specs, by = ref["specs"], ref["by"] or None
    data = mm.load_dataset(FITS[name][1]) if name == "ratpup_log" else None
    got = emmeans(own, specs, by, ddf=DDF[reference(case)["ddf"]], data=data, at=ref["at"] or None)
    np.testing.assert_allclose(got.means["SE"], reference(case)["means"]["SE"], rtol=1e-3)


@pytest.mark.parametrize("case", CASES)
def test_means_match_emmeans(case):
    ref = reference(case)
    expected = ref["means"]
    got = emm_for(case).means
    for col in [*np.atleast_1d(ref["specs"]), *np.atleast_1d(ref["by"])]:
        assert list(got[col]) == expected[col]
    np.testing.assert_allclose(got["emmean"], expected["emmean"], rtol=1e-6)
    np.testing.assert_allclose(got["SE"], expected["SE"], rtol=1e-6)
    np.testing.assert_allclose(got["df"], column(expected, "df"), rtol=1e-3)
    lower, upper = (
        ("lower.CL", "upper.CL") if "lower.CL" in expected else ("asymp.LCL", "asymp.UCL")
    )
    np.testing.assert_allclose(got["lower"], expected[lower], rtol=1e-5)
    np.testing.assert_allclose(got["upper"], expected[upper], rtol=1e-5)


@pytest.mark.parametrize("adjust", ADJUST_METHODS)
@pytest.mark.parametrize("case", CASES)
def test_contrasts_match_pairs(case, adjust):
    ref = reference(case)
    expected = ref["contrasts"][adjust]
    got = emm_for(case, adjust).contrasts
    assert list(got["contrast"]) == expected["contrast"]
    for col in np.atleast_1d(ref["by"]):
        assert list(got[col]) == expected[col]
    # A difference that is zero in exact arithmetic (cake: two equal cell means) is
    # rounding noise on both sides, hence the absolute tolerance relative to the scale.
    scale = np.max(np.abs(expected["estimate"]))
    np.testing.assert_allclose(got["estimate"], expected["estimate"], rtol=1e-6, atol=1e-12 * scale)
    np.testing.assert_allclose(got["SE"], expected["SE"], rtol=1e-6)
    np.testing.assert_allclose(got["df"], column(expected, "df"), rtol=1e-3)
    t_name = "t.ratio" if "t.ratio" in expected else "z.ratio"
    t_scale = np.max(np.abs(expected[t_name]))
    np.testing.assert_allclose(got["t_ratio"], expected[t_name], rtol=1e-6, atol=1e-12 * t_scale)
    assert_p_close(got["p_value"], expected["p.value"])


def test_kenward_roger_uses_the_adjusted_covariance():
    f = fit("ratpup_a")
    emm = emmeans(f, "treatment", ddf="kenward-roger")
    L = emm.linfct.to_numpy()
    V = f.vcov_kenward_roger.to_numpy()
    np.testing.assert_allclose(emm.means["SE"], np.sqrt(np.diag(L @ V @ L.T)), rtol=1e-12)
    assert (emm.means["SE"] > emmeans(f, "treatment").means["SE"]).all()


def test_kenward_roger_refuses_ml_fits():
    with pytest.raises(ModelSpecificationError, match="REML"):
        emmeans(fit("ratpup_a_ml"), "treatment", ddf="kenward-roger")


def test_reference_grid_cells_and_covariate_mean():
    f = fit("ratpup_a")
    grid = reference_grid(f)
    assert list(grid.cells.columns) == ["treatment", "sex", "litsize"]
    assert list(grid.cells["treatment"]) == ["Control", "High", "Low"] * 2  # first fastest
    assert list(grid.cells["sex"]) == ["Female"] * 3 + ["Male"] * 3
    litsize = mm.load_dataset("ratpup")["litsize"].mean()
    assert grid.covariates["litsize"] == pytest.approx(litsize, rel=1e-14)
    assert grid.X.shape == (6, len(f.fixef))


def test_means_average_cells_with_equal_weights():
    f = fit("ratpup_a")
    grid = reference_grid(f)
    emm = emmeans(f, "treatment")
    cells = grid.X @ f.fixef.to_numpy()
    np.testing.assert_allclose(emm.means["emmean"], (cells[:3] + cells[3:]) / 2, rtol=1e-14)
    assert emm.averaged_over == ("sex",)
    assert any("averaged over the levels of: sex" in n for n in emm.notes)
    assert any("interactions" in n for n in emm.notes)


def test_spec_forms_agree():
    f = fit("ratpup_a")
    a = emmeans(f, "treatment", by="sex").means
    b = emmeans(f, "~ treatment | sex").means
    c = emmeans(f, ["treatment"], by=["sex"]).means
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)
    both = emmeans(f, "treatment * sex").means
    np.testing.assert_allclose(both["emmean"], a["emmean"], rtol=1e-14)


def test_at_restricts_factor_levels():
    f = fit("ratpup_a")
    emm = emmeans(f, "treatment", at={"sex": "Male"})
    full = emmeans(f, "treatment", by="sex").means
    np.testing.assert_allclose(emm.means["emmean"], full["emmean"][3:], rtol=1e-12)


def test_transformed_covariate_needs_data():
    f = fit("ratpup_log")
    with pytest.raises(DataError, match=r"log\(litsize\).*data="):
        emmeans(f, "treatment")
    emm = emmeans(f, "treatment", at={"litsize": 10})
    assert emm.covariates == {"litsize": 10.0}


def test_spec_not_a_factor_names_the_factors():
    f = fit("ratpup_a")
    with pytest.raises(DataError, match="its factors are: treatment, sex"):
        emmeans(f, "litter")
    with pytest.raises(DataError, match="numeric covariate"):
        emmeans(f, "litsize")
    with pytest.raises(DataError, match="both specs and by"):
        emmeans(f, "treatment", by="treatment")
    with pytest.raises(DataError, match="not predictors"):
        emmeans(f, "treatment", at={"weight": 1})
    with pytest.raises(DataError, match="levels are: Female, Male"):
        emmeans(f, "treatment", at={"sex": "Other"})


def test_unknown_adjust_and_level():
    f = fit("ratpup_a")
    with pytest.raises(DataError, match="tukey, holm, bonferroni, none"):
        emmeans(f, "treatment", adjust="scheffe")
    with pytest.raises(DataError, match="level"):
        emmeans(f, "treatment", level=95)
    with pytest.raises(ValueError, match="ddf"):
        emmeans(f, "treatment", ddf="containment")


def test_factor_named_by_its_c_expression():
    f = fit("cake")
    a = emmeans(f, "temperature").means
    b = emmeans(f, "C(temperature)").means
    pd.testing.assert_frame_equal(a, b)


def test_two_level_family_is_not_adjusted():
    emm = emmeans(fit("orthodont"), "Sex", adjust="tukey")
    assert emm.adjust == "none"
    unadjusted = emmeans(fit("orthodont"), "Sex", adjust="none").contrasts["p_value"]
    np.testing.assert_allclose(emm.contrasts["p_value"], unadjusted, rtol=1e-14)


def test_adjustments_by_hand():
    t = np.array([3.0, -1.0, 2.0, 0.5, 2.5, 1.5])
    df = np.full(6, 20.0)
    groups = np.array([0, 0, 0, 1, 1, 1])
    raw, _ = adjust_pvalues(t, df, groups, 3, "none")
    bonf, _ = adjust_pvalues(t, df, groups, 3, "bonferroni")
    np.testing.assert_allclose(bonf, np.minimum(1, 3 * raw))
    holm, _ = adjust_pvalues(t, df, groups, 3, "holm")
    # group 0: sorted raw p are t=3 (x3), t=2 (x2), t=1 (x1), with a running maximum
    expected0 = [3 * raw[0], max(3 * raw[0], 2 * raw[2], raw[1]), max(3 * raw[0], 2 * raw[2])]
    np.testing.assert_allclose(holm[[0, 1, 2]], expected0)
    tukey, _ = adjust_pvalues(t, df, groups, 3, "tukey")
    assert np.all(tukey >= raw) and np.all(tukey <= bonf + 1e-12)


def test_zapsmall_like_r():
    # zapsmall(c(32.88474261, 29.5684)) rounds to 7 - 2 = 5 decimals
    np.testing.assert_array_equal(zapsmall([32.884742612, 29.5684184]), [32.88474, 29.56842])
    np.testing.assert_array_equal(zapsmall([np.inf, np.inf]), [np.inf, np.inf])


def test_rank_deficient_model_warns():
    df = mm.load_dataset("ratpup").copy()
    df["litsize2"] = 2.0 * df["litsize"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficiencyWarning)
        f = mm.lmer("weight ~ treatment + litsize + litsize2 + (1|litter)", df)
    with pytest.warns(RankDeficiencyWarning, match="not estimable"):
        emmeans(f, "treatment", data=df)  # litsize2 has no column in X: its mean needs data


def test_rendering():
    emm = emmeans(fit("ratpup_a"), "treatment", by="sex", adjust="holm")
    text = str(emm)
    assert "Control - High" in text and "holm method for 3 tests" in text
    assert "Degrees-of-freedom method: satterthwaite" in text
    html = emm._repr_html_()
    assert html.startswith('<div class="mm-report">') and "p_value" in html
    d = emm.to_dict()
    json.dumps(d)
    assert d["means"][0]["treatment"] == "Control" and d["adjust"] == "holm"
    normal = emmeans(fit("ratpup_a"), "treatment", ddf="normal").to_dict()
    assert normal["means"][0]["df"] is None
