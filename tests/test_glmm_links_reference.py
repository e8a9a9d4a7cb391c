"""GLMMs beyond the canonical links, against lme4 (tests/reference/glmm_links/README.md):
probit and cloglog (the latter with AGQ), an offset, and a proportion with weights = trials."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import mixedmodels as mm

REFERENCE = Path(__file__).resolve().parent / "reference" / "glmm_links"

CBIND = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
MODELS = {
    "cbpp_probit": (CBIND, "cbpp", {"family": "binomial", "link": "probit"}),
    "cbpp_cloglog_agq9": (CBIND, "cbpp", {"family": "binomial", "link": "cloglog", "nagq": 9}),
    "grouseticks_offset": (
        "TICKS ~ C(YEAR) + offset(log(HEIGHT)) + (1 | LOCATION)",
        "grouseticks",
        {"family": "poisson"},
    ),
    "contraception_probit_agq5": (
        "use ~ age + urban + (1 | district)",
        "Contraception",
        {"family": "binomial", "link": "probit", "nagq": 5},
    ),
    "cbpp_proportion_weights": (
        "prop ~ C(period) + (1 | herd)",
        "cbpp",
        {"family": "binomial", "weights": "size"},
    ),
}


def _reference() -> dict[str, list[np.ndarray]]:
    out = {}
    for line in (REFERENCE / "lme4_links_offsets.txt").read_text().splitlines():
        name, *fields = (part.strip() for part in line.split("|"))
        out[name] = [np.array([float(v) for v in f.split()]) for f in fields]
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_glmer_matches_lme4(name):
    formula, dataset, kwargs = MODELS[name]
    data = mm.load_dataset(dataset)
    if name == "cbpp_proportion_weights":
        data = data.assign(prop=data["incidence"] / data["size"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mm.glmer(formula, data, **kwargs)
    loglik, fixef, se, theta = _reference()[name]
    # Our optimum is at least as good as lme4's (it may be a hair higher).
    assert fit.loglik == pytest.approx(loglik[0], rel=1e-6)
    assert fit.loglik >= loglik[0] - 1e-6 * abs(loglik[0])
    np.testing.assert_allclose(fit.fixef.to_numpy(), fixef, atol=1e-4, rtol=0)
    np.testing.assert_allclose(fit.se.to_numpy(), se, rtol=1e-3)
    np.testing.assert_allclose(fit.theta, theta, rtol=1e-3)


def test_profile_intervals_match_lme4():
    lines = (REFERENCE / "lme4_profile_cbpp.txt").read_text().splitlines()
    ref = {}
    for line in lines:
        name, values = (part.strip() for part in line.split("|"))
        ref[name] = [float(v) for v in values.split()]
    fit = mm.glmer(CBIND, "cbpp", family="binomial")
    ci = fit.confint("profile")
    # The SD has no Wald SE: its scale is the one its profile interval implies.
    sd_lower, sd_upper = ref[".sig01"]
    se = {**fit.se.to_dict(), "sd_(Intercept)|herd": (sd_upper - sd_lower) / (2 * 1.959964)}
    names = {
        "sd_(Intercept)|herd": ".sig01",
        **{n: n.replace("C(period)", "period") for n in fit.fixef.index},
    }
    for ours, theirs in names.items():
        lower, upper = ref[theirs]
        assert ci.loc[ours, "lower"] == pytest.approx(lower, abs=0.01 * se[ours])
        assert ci.loc[ours, "upper"] == pytest.approx(upper, abs=0.01 * se[ours])
    assert ci.loc["(Intercept)", "lower"] < ci.loc["(Intercept)", "estimate"]
