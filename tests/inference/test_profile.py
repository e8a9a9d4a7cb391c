"""Profile-likelihood and Wald intervals against lme4's confint (reference files in ./reference).

lme4 interpolates splines through profile points (about 1e-3 relative); we root-find on the
profile directly, so the tolerance is 2e-3 relative for profiles lme4 marks clean.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.inference.profile import LikelihoodProfile, SdCorParameters, confint

REF = Path(__file__).parent / "reference"

MODELS = {
    "ratpup_b": ("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup"),
    "ratpup_c": ("weight ~ treatment + sex + litsize + (1 + sex || litter)", "ratpup"),
    "sleepstudy_corr": ("Reaction ~ Days + (Days | Subject)", "sleepstudy"),
    "sleepstudy_uncorr": ("Reaction ~ Days + (Days || Subject)", "sleepstudy"),
    "pastes": ("strength ~ 1 + (1 | batch/cask)", "Pastes"),
    "penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin"),
}


def _fit(model: str, reml: bool):
    formula, data = MODELS[model]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mm.SingularFitWarning)
        return mm.lmer(formula, data, reml=reml)


def _check(ci, ref_rows, rel=2e-3):
    worst = 0.0
    for r in ref_rows:
        name = r["param"].replace('dummy(sex, "Male")', "sexMale")
        for side in ("lower", "upper"):
            ours, theirs = ci.loc[name, side], r[side]
            if theirs == 0:
                assert abs(ours) < 1e-8, (name, side, ours)
                continue
            err = abs(ours / theirs - 1)
            worst = max(worst, err)
            assert err < rel, (name, side, ours, theirs)
    return worst


@pytest.mark.parametrize(
    "model,crit",
    [
        ("ratpup_b", "reml"),
        ("ratpup_b", "ml"),
        ("ratpup_c", "reml"),
        ("sleepstudy_corr", "reml"),
        ("sleepstudy_uncorr", "ml"),
        ("pastes", "ml"),
    ],
)
def test_profile_confint_matches_lme4(model, crit):
    ref = json.loads((REF / f"{model}_{crit}.json").read_text())
    assert ref["confint_profile_clean"]
    ci = confint(_fit(model, crit == "reml"), "profile")
    assert list(ci.columns) == ["estimate", "lower", "upper"]
    assert len(ci) == len(ref["confint_profile"])
    _check(ci, ref["confint_profile"])


@pytest.mark.slow
@pytest.mark.parametrize("crit", ["reml", "ml"])
def test_profile_penicillin(crit):
    ref = json.loads((REF / f"penicillin_{crit}.json").read_text())
    _check(confint(_fit("penicillin", crit == "reml"), "profile"), ref["confint_profile"])


def test_profile_selected_parameters_and_level():
    fit = _fit("ratpup_b", True)
    prof = LikelihoodProfile(fit)
    ci95 = prof.confint(parm=["sigma", "litsize"])
    ci80 = prof.confint(level=0.8, parm="beta_")
    assert list(ci95.index) == ["sigma", "litsize"]
    assert ci80.loc["litsize", "lower"] > ci95.loc["litsize", "lower"]
    assert ci80.loc["litsize", "upper"] < ci95.loc["litsize", "upper"]
    # zeta is the signed root of the deviance increase: +-z at the end points.
    assert prof.zeta("sigma", ci95.loc["sigma", "upper"]) == pytest.approx(1.959964, abs=1e-6)
    assert prof.zeta("litsize", ci95.loc["litsize", "lower"]) == pytest.approx(-1.959964, abs=1e-6)
    pts = prof.points
    assert set(pts["param"]) <= set(prof.names)
    with pytest.raises(KeyError, match="unknown parameter"):
        prof.confint(parm="nope")


def test_sdcor_roundtrip():
    fit = _fit("sleepstudy_corr", False)
    params = SdCorParameters(fit.structure)
    phi = params.to_phi(fit.theta, fit.sigma)
    np.testing.assert_allclose(params.to_theta(phi), fit.theta, rtol=1e-12, atol=1e-14)
    vc = fit.varcorr
    assert phi[0] == pytest.approx(vc["sd"].iloc[0])
    assert phi[1] == pytest.approx(vc["corr"].dropna().iloc[0])
    assert params.names == [
        "sd_(Intercept)|Subject",
        "cor_Days.(Intercept)|Subject",
        "sd_Days|Subject",
        "sigma",
    ]


@pytest.mark.parametrize("crit", ["reml", "ml"])
def test_wald_confint(crit):
    ref = json.loads((REF / f"ratpup_b_{crit}.json").read_text())
    ci = confint(_fit("ratpup_b", crit == "reml"), "wald")
    for r in ref["confint_wald"]:
        assert ci.loc[r["param"], "lower"] == pytest.approx(r["lower"], rel=1e-5)
        assert ci.loc[r["param"], "upper"] == pytest.approx(r["upper"], rel=1e-5)


def test_unknown_method():
    with pytest.raises(ValueError, match="method"):
        confint(_fit("ratpup_b", True), "nope")


def test_profile_in_two_processes_equals_one():
    """Interval ends shared over forked processes: the same numbers, the points merged."""
    one = LikelihoodProfile(_fit("sleepstudy_corr", True))
    two = LikelihoodProfile(_fit("sleepstudy_corr", True))
    a = one.confint(n_jobs=1)
    b = two.confint(n_jobs=2)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    assert len(two.points) == len(one.points) > 2 * len(a)


@pytest.mark.parametrize(
    "formula,data,options",
    [
        ("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup", {}),
        ("Reaction ~ Days + (Days | Subject)", "sleepstudy", {}),
        ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", {}),
        (
            "weight ~ treatment + sex + litsize + (1 | litter)",
            "ratpup",
            {"residual_groups": "treatment"},
        ),
    ],
    ids=["ratpup", "sleepstudy", "penicillin", "ratpup-residual-groups"],
)
def test_fixed_effect_ends_by_one_optimisation_equal_root_finding(formula, data, options):
    """A fixed effect's end point found as max/min of beta_j over the model's parameters
    (closed form in beta) is the end point root-finding on the profile finds, where every
    profile point is a fit of the model with beta_j moved into the response."""
    fit = mm.lmer(formula, data, **options)
    profile = LikelihoodProfile(fit, progress=False)
    z = 1.959963984540054
    for name, se in zip(profile.x_names, profile.beta_se, strict=True):
        i = profile.names.index(name)
        for sign in (-1, 1):
            direct = profile._direct_endpoint(i, sign, z)
            rooted = profile._endpoint(name, i, sign, z)
            assert direct is not None
            assert direct == pytest.approx(rooted, abs=1e-5 * se), (name, sign)
            # At the end point the profile's deviance is z^2 above the optimum.
            assert profile.zeta(name, direct) == pytest.approx(sign * z, abs=1e-5)
