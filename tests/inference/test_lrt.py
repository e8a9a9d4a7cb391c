"""Likelihood-ratio tests against R (lme4 anova / logLik.lm), reference files in ./reference."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.inference.linear_model import lm
from mixedmodels.inference.lrt import ModelComparisonError, chibar_pvalue, compare

REF = Path(__file__).parent / "reference"

FORMULAS = {
    "ratpup_a": ("weight ~ treatment * sex + litsize + (1 | litter)", "ratpup"),
    "ratpup_b": ("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup"),
    "ratpup_c": ("weight ~ treatment + sex + litsize + (1 + sex || litter)", "ratpup"),
    "ratpup_d": ("weight ~ treatment + sex + litsize + (1 + sex | litter)", "ratpup"),
    "sleepstudy_int": ("Reaction ~ Days + (1 | Subject)", "sleepstudy"),
    "sleepstudy_corr": ("Reaction ~ Days + (Days | Subject)", "sleepstudy"),
    "sleepstudy_uncorr": ("Reaction ~ Days + (Days || Subject)", "sleepstudy"),
}
LM_FORMULAS = {
    "ratpup_a": "weight ~ treatment * sex + litsize",
    "ratpup_b": "weight ~ treatment + sex + litsize",
}

_CACHE: dict[tuple[str, bool], object] = {}


def get_fit(name: str, reml: bool):
    key = (name, reml)
    if key not in _CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mm.SingularFitWarning)
            if name.startswith("lm:"):
                _CACHE[key] = lm(LM_FORMULAS[name[3:]], "ratpup", reml=reml)
            else:
                formula, data = FORMULAS[name]
                _CACHE[key] = mm.lmer(formula, data, reml=reml)
    return _CACHE[key]


def _model_key(ref_name: str) -> str:
    if ref_name.startswith("lm("):
        for key, form in LM_FORMULAS.items():
            if ref_name.startswith(f"lm({form.replace(' * ', '*').replace(' + ', ' + ')})"):
                return "lm:" + key
        inner = ref_name[3 : ref_name.index(")")]
        for key, form in LM_FORMULAS.items():
            if inner.replace(" ", "") == form.replace(" ", ""):
                return "lm:" + key
        raise KeyError(ref_name)
    return ref_name.removesuffix("_reml").removesuffix("_ml")


LRT_FILES = sorted(
    p.name for p in REF.glob("lrt_*.json") if "west" not in p.name and "orthodont" not in p.name
)


@pytest.mark.parametrize("fname", LRT_FILES)
def test_lrt_matches_r(fname):
    ref = json.loads((REF / fname).read_text())
    reml = ref["criterion"] == "REML"
    m0 = get_fit(_model_key(ref["null_model"]), reml)
    m1 = get_fit(_model_key(ref["alt_model"]), reml)
    res = compare(m1, m0)  # order of arguments does not matter
    assert res.criterion == ref["criterion"]
    row = res.table.iloc[1]
    assert res.table.index[1] == res.names[1]
    assert row["Df"] == ref["df"]
    assert row["Chisq"] == pytest.approx(ref["chisq"], rel=1e-6)
    assert res.table["logLik"].iloc[0] == pytest.approx(ref["logLik_null"], rel=1e-8)
    assert res.table["npar"].iloc[0] == ref["df_null"]
    assert res.table["npar"].iloc[1] == ref["df_alt"]
    assert row["Pr(naive)"] == pytest.approx(ref["p_naive_chisq"], rel=1e-5)
    if "p_mixture" in ref:
        assert row["Pr(>Chisq)"] == pytest.approx(ref["p_mixture"], rel=1e-5)
        assert row["Reference"] == ref["mixture"].replace(" ", "").replace("+", " + ")
        assert any("boundary" in n for n in res.notes)
    else:
        assert row["Pr(>Chisq)"] == pytest.approx(ref["p_naive_chisq"], rel=1e-5)


def test_reml_fits_with_different_fixed_effects_are_refitted_by_ml():
    ref = json.loads((REF / "lrt_ratpup_a_vs_b_ml.json").read_text())
    res = compare(get_fit("ratpup_a", True), get_fit("ratpup_b", True))
    assert res.criterion == "ML"
    assert any("refitted with ML" in n for n in res.notes)
    assert res.table["Chisq"].iloc[1] == pytest.approx(ref["chisq"], rel=1e-6)
    with pytest.raises(ModelComparisonError, match="REML"):
        compare(get_fit("ratpup_a", True), get_fit("ratpup_b", True), refit=False)


def test_refit_true_forces_ml():
    ref = json.loads((REF / "lrt_sleepstudy_int_vs_corr_ml.json").read_text())
    res = compare(get_fit("sleepstudy_int", True), get_fit("sleepstudy_corr", True), refit=True)
    assert res.criterion == "ML"
    assert res.table["Chisq"].iloc[1] == pytest.approx(ref["chisq"], rel=1e-6)


def test_boundary_switch():
    m0, m1 = get_fit("sleepstudy_int", False), get_fit("sleepstudy_uncorr", False)
    auto = compare(m0, m1).table.iloc[1]
    naive = compare(m0, m1, boundary=False).table.iloc[1]
    forced = compare(
        get_fit("sleepstudy_uncorr", False), get_fit("sleepstudy_corr", False), boundary=True
    )
    assert naive["Pr(>Chisq)"] == pytest.approx(2 * auto["Pr(>Chisq)"])
    assert forced.table["Reference"].iloc[1] == "0.5*chisq(0) + 0.5*chisq(1)"


def test_three_models_in_npar_order_and_rendering():
    res = compare(
        get_fit("sleepstudy_corr", False),
        get_fit("sleepstudy_int", False),
        get_fit("sleepstudy_uncorr", False),
        names=["corr", "int", "uncorr"],
    )
    assert res.names == ["int", "uncorr", "corr"]
    assert list(res.table["npar"]) == [4, 5, 6]
    text = str(res)
    assert "Pr(>Chisq)" in text and "Note:" in text
    d = res.to_dict()
    assert d["criterion"] == "ML" and len(d["models"]) == 3
    assert "<table" in res._repr_html_()


def test_non_nested_models_are_refused():
    # Fixed sexMale in (b) but not here; random sex slope here but not in (b): not nested.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mm.SingularFitWarning)
        m_no_sex = mm.lmer(
            "weight ~ treatment + litsize + (1 + sex | litter)", "ratpup", reml=False
        )
    with pytest.raises(ModelComparisonError, match="not nested"):
        compare(get_fit("ratpup_b", False), m_no_sex)


def test_different_data_are_refused():
    other = mm.lmer(
        "Reaction ~ Days + (1 | Subject)", mm.load_dataset("sleepstudy").iloc[:170], reml=False
    )
    with pytest.raises(ModelComparisonError, match="observations"):
        compare(get_fit("sleepstudy_int", False), other)
    with pytest.raises(ModelComparisonError, match="at least two"):
        compare(other)


def test_chibar_pvalue():
    assert chibar_pvalue(0.0, 1) == 1.0
    assert chibar_pvalue(2.705543, 1) == pytest.approx(0.05, rel=1e-5)
    assert np.isclose(chibar_pvalue(5.0, 2), 0.5 * (0.0253473 + 0.0820850), rtol=1e-5)


def test_linear_model_matches_logLik_lm():
    ref = json.loads((REF / "lrt_ratpup_a_litter_reml.json").read_text())
    fit = get_fit("lm:ratpup_a", True)
    assert fit.loglik == pytest.approx(ref["logLik_null"], rel=1e-10)
    assert fit.nparams == 8
    ml = fit.refit(reml=False)
    ref_ml = json.loads((REF / "lrt_ratpup_a_litter_ml.json").read_text())
    assert ml.loglik == pytest.approx(ref_ml["logLik_null"], rel=1e-10)
