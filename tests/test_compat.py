"""statsmodels-style mixedlm: the same models as statsmodels MixedLM fits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.compat import lme4_formula, mixedlm
from mixedmodels.errors import ModelSpecificationError

smf = pytest.importorskip("statsmodels.formula.api")

FIXED = "weight ~ C(treatment) + C(sex) + litsize"


@pytest.fixture(scope="module")
def ratpup():
    return mm.load_dataset("ratpup")


def _statsmodels_fit(data, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return smf.mixedlm(FIXED, data, groups="litter", **kwargs).fit(reml=True)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "(1 | litter)"),
        ({"re_formula": "1 + C(sex)"}, "(1 + C(sex) | litter)"),
        ({"vc_formula": {"sex": "0 + C(sex)"}}, "(1 | litter:sex)"),
        (
            {"re_formula": "1", "vc_formula": {"sex": "0 + C(sex)"}},
            "(1 | litter) + (1 | litter:sex)",
        ),
    ],
)
def test_mapping(kwargs, expected):
    assert lme4_formula(FIXED, "litter", **kwargs) == f"{FIXED} + {expected}"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"vc_formula": {"sex": "0 + C(sex)"}},
        {"re_formula": "1", "vc_formula": {"sex": "0 + C(sex)"}},
    ],
)
def test_matches_statsmodels(ratpup, kwargs, capsys):
    ours = mixedlm(FIXED, ratpup, groups="litter", **kwargs).fit().mixedmodels_result
    assert "mixedlm -> lmer:" in capsys.readouterr().out
    theirs = _statsmodels_fit(ratpup, **kwargs)
    np.testing.assert_allclose(ours.fixef.to_numpy(), theirs.fe_params.to_numpy(), rtol=1e-4)
    assert ours.loglik == pytest.approx(theirs.llf, abs=1e-3)
    assert ours.sigma**2 == pytest.approx(theirs.scale, rel=1e-3)


def test_random_slope_matches_statsmodels(ratpup, capsys):
    ours = mixedlm(FIXED, ratpup, groups="litter", re_formula="1 + C(sex)").fit()
    ours = ours.mixedmodels_result
    theirs = _statsmodels_fit(ratpup, re_formula="1 + C(sex)")
    np.testing.assert_allclose(ours.fixef.to_numpy(), theirs.fe_params.to_numpy(), atol=2e-3)
    # statsmodels' optimiser stops a little short of the optimum lme4 and we find.
    assert ours.loglik >= theirs.llf - 1e-3
    assert ours.loglik == pytest.approx(theirs.llf, abs=0.05)


@pytest.mark.parametrize(
    ("re_formula", "expected"),
    [("~Days", "(Days | Subject)"), ("~ 1 + Days", "(1 + Days | Subject)"), ("1", "(1 | Subject)")],
)
def test_one_sided_re_formula(re_formula, expected):
    assert lme4_formula("Reaction ~ Days", "Subject", re_formula=re_formula) == (
        f"Reaction ~ Days + {expected}"
    )


def test_groups_as_series_or_array(capsys):
    data = mm.load_dataset("sleepstudy")
    by_series = mixedlm("Reaction ~ Days", data, groups=data["Subject"], re_formula="~Days")
    assert by_series.lme4_formula == "Reaction ~ Days + (Days | Subject)"
    by_array = mixedlm("Reaction ~ Days", data, groups=data["Subject"].to_numpy())
    assert by_array.lme4_formula == "Reaction ~ Days + (1 | Group)"
    fit = by_array.fit()
    # statsmodels calls an array's groups "Group"
    assert list(fit.params.index) == ["Intercept", "Days", "Group Var"]
    assert list(fit.random_effects)[:2] == [308, 309]
    assert fit.model.groups.shape == (180,)
    capsys.readouterr()


def test_bad_specifications(ratpup):
    with pytest.raises(ModelSpecificationError, match="groups"):
        mixedlm(FIXED, ratpup, groups="nope", verbose=False)
    with pytest.raises(ModelSpecificationError, match="vc_formula"):
        mixedlm(FIXED, ratpup, groups="litter", vc_formula={"x": "1 + C(sex)"}, verbose=False)
    with pytest.raises(ModelSpecificationError, match="one group per row"):
        mixedlm(FIXED, ratpup, groups=ratpup["litter"].to_numpy()[:10], verbose=False)
    with pytest.raises(ModelSpecificationError, match="no response"):
        mixedlm(FIXED, ratpup, groups="litter", re_formula="y ~ x", verbose=False)
    with pytest.raises(ModelSpecificationError, match=r"\|"):
        mixedlm("weight ~ sex + (1|litter)", ratpup, groups="litter", verbose=False)
