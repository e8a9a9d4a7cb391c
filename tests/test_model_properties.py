"""Invariances a correct fit must have, predictions, and the API's bad-input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.errors import DataError, FormulaError, ModelSpecificationError

RATPUP_D = "weight ~ treatment + sex + litsize + (1 + sex | litter)"
SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def ratpup():
    return mm.load_dataset("ratpup")


@pytest.fixture(scope="module")
def fit_d(ratpup):
    return mm.lmer(RATPUP_D, ratpup)


def test_row_order_does_not_change_the_fit(ratpup, fit_d):
    shuffled = ratpup.sample(frac=1.0, random_state=3)
    other = mm.lmer(RATPUP_D, shuffled)
    assert other.loglik == pytest.approx(fit_d.loglik, rel=1e-10)
    np.testing.assert_allclose(other.fixef, fit_d.fixef, rtol=1e-6)
    np.testing.assert_allclose(other.varcorr["variance"], fit_d.varcorr["variance"], rtol=1e-5)
    # fitted values follow their rows
    np.testing.assert_allclose(other.fitted.loc[ratpup.index], fit_d.fitted, rtol=1e-6)


def test_renaming_group_labels_only_renames_blups(ratpup, fit_d):
    renamed = ratpup.assign(litter=ratpup["litter"].map(lambda v: f"L{100 - v:03d}"))
    other = mm.lmer(RATPUP_D, renamed)
    assert other.loglik == pytest.approx(fit_d.loglik, rel=1e-10)
    np.testing.assert_allclose(other.fixef, fit_d.fixef, rtol=1e-6)
    mapping = {str(v): f"L{100 - v:03d}" for v in ratpup["litter"].unique()}
    blups = fit_d.ranef["litter"].rename(index=mapping).sort_index()
    np.testing.assert_allclose(
        other.ranef["litter"].sort_index().to_numpy(), blups.to_numpy(), rtol=1e-4, atol=1e-8
    )


@pytest.mark.parametrize(("scale", "shift"), [(10.0, 0.0), (0.01, 5.0), (-3.0, 100.0)])
def test_affine_response_changes_estimates_as_it_should(scale, shift):
    df = mm.load_dataset("sleepstudy")
    base = mm.lmer(SLEEP, df)
    other = mm.lmer(SLEEP, df.assign(Reaction=df["Reaction"] * scale + shift))
    expected = base.fixef * scale
    expected["(Intercept)"] += shift
    np.testing.assert_allclose(other.fixef, expected, rtol=1e-5)
    np.testing.assert_allclose(other.se, base.se * abs(scale), rtol=1e-4)
    assert other.sigma == pytest.approx(base.sigma * abs(scale), rel=1e-5)
    variances = base.varcorr["variance"].to_numpy() * scale**2
    np.testing.assert_allclose(other.varcorr["variance"], variances, rtol=1e-4)
    corr = base.varcorr["corr"].to_numpy() * np.sign(scale) ** 2
    np.testing.assert_allclose(other.varcorr["corr"], corr, rtol=1e-4)
    # The REML log-likelihood shifts by the Jacobian of the response transform.
    n_minus_p = base.nobs - len(base.fixef)
    assert other.loglik == pytest.approx(base.loglik - n_minus_p * np.log(abs(scale)), rel=1e-8)


def test_predict_reproduces_fitted_values_and_handles_new_levels(ratpup, fit_d):
    np.testing.assert_allclose(fit_d.predict(ratpup), fit_d.fitted, rtol=1e-10)
    np.testing.assert_allclose(fit_d.predict(ratpup, re=False), fit_d.fitted_marginal, rtol=1e-10)
    new = ratpup.iloc[:3].assign(litter=999)
    np.testing.assert_allclose(fit_d.predict(new), fit_d.fitted_marginal.iloc[:3], rtol=1e-10)


def test_missing_values_are_dropped_and_counted(ratpup):
    holes = ratpup.copy()
    holes.loc[[0, 5, 9], "weight"] = np.nan
    holes.loc[[20], "litsize"] = np.nan
    fit = mm.lmer("weight ~ treatment + litsize + (1 | litter)", holes)
    assert fit.nobs == len(ratpup) - 4
    assert fit.n_dropped_rows == 4
    assert fit.to_dict()["dropped_rows"] == 4
    ref = mm.lmer("weight ~ treatment + litsize + (1 | litter)", holes.dropna())
    assert fit.loglik == pytest.approx(ref.loglik, rel=1e-12)


def test_summary_and_json_contract(fit_d):
    text = str(fit_d.summary())
    for needle in (
        "REML criterion",
        "Random effects:",
        "Fixed effects:",
        "treatmentHigh",
        "litter",
    ):
        assert needle in text
    assert "<table" in fit_d._repr_html_()
    out = fit_d.to_dict()
    assert set(out) >= {
        "formula", "reml", "nobs", "ngroups", "fixef", "varcorr", "sigma", "loglik",
        "deviance", "reml_criterion", "aic", "bic", "theta", "singular", "converged",
        "dropped_rows",
    }  # fmt: skip
    assert out["deviance"] is None and out["reml_criterion"] == pytest.approx(-2 * out["loglik"])
    corr = [r for r in out["varcorr"] if "corr" in r]
    assert corr and corr[0]["term"] == "(Intercept)" and corr[0]["term2"] == "sexMale"


# -- bad input through the public API ---------------------------------------------------


def test_unknown_column_names_the_column(ratpup):
    with pytest.raises(DataError, match=r"treatmnt.*did you mean 'treatment'"):
        mm.lmer("weight ~ treatmnt + (1 | litter)", ratpup)


def test_syntax_error_gives_a_position(ratpup):
    with pytest.raises(FormulaError) as info:
        mm.lmer("weight ~ treatment + (1 | litter", ratpup)
    assert info.value.position is not None


def test_response_must_be_numeric(ratpup):
    with pytest.raises(DataError, match="sex"):
        mm.lmer("sex ~ treatment + (1 | litter)", ratpup)


def test_no_rows_left_after_dropping_missing(ratpup):
    with pytest.raises(DataError):
        mm.lmer("weight ~ treatment + (1 | litter)", ratpup.assign(weight=np.nan))


def test_grouping_factor_with_one_level(ratpup):
    with pytest.raises(DataError, match="level"):
        mm.lmer("weight ~ treatment + (1 | g)", ratpup.assign(g="a"))


def test_grouping_factor_with_as_many_levels_as_rows(ratpup):
    with pytest.raises((DataError, ModelSpecificationError), match="pup_id"):
        mm.lmer("weight ~ treatment + (1 | pup_id)", ratpup)


def test_non_finite_values_are_refused(ratpup):
    bad = ratpup.astype({"litsize": float})
    bad.loc[3, "litsize"] = np.inf
    with pytest.raises(DataError, match="litsize"):
        mm.lmer("weight ~ litsize + (1 | litter)", bad)


def test_no_random_effects_term(ratpup):
    with pytest.raises(ModelSpecificationError, match="random-effects"):
        mm.lmer("weight ~ treatment", ratpup)


def test_formula_that_tries_to_run_code_is_refused(ratpup):
    with pytest.raises(FormulaError):
        mm.lmer("weight ~ __import__('os').system('echo hi') + (1 | litter)", ratpup)


def test_data_argument_must_be_usable():
    with pytest.raises(mm.MixedModelsError):
        mm.lmer("y ~ x + (1 | g)", "no-such-file-or-dataset.csv")
    with pytest.raises(mm.MixedModelsError):
        mm.lmer("y ~ x + (1 | g)", pd.DataFrame())


def test_response_that_the_fixed_effects_reproduce_exactly_is_refused():
    df = pd.DataFrame({"x": np.arange(30.0), "g": np.repeat(["a", "b", "c"], 10)})
    df["y"] = 1.0 + 2.0 * df["x"]
    with pytest.raises(DataError, match="exactly"):
        mm.lmer("y ~ x + (1 | g)", df)
