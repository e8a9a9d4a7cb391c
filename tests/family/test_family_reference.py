"""Links and families against R's and lme4's own values (tests/reference/family/).

``family_functions.json`` was written by ``family_functions.R`` next to it (R 4.2.2,
lme4 1.1.31, MASS 7.3-58.2): for a grid of eta, R's ``make.link`` values and the values
lme4's PIRLS uses (its C++ ``glmFamily`` through a ``glmResp`` object); for fixed
(y, mu, weights, trials), R's ``variance``, ``dev.resids``, ``aic`` and the ``mustart``
of ``initialize`` (binomial, poisson, MASS::negative.binomial(theta)).

Tolerances: links and per-row functions 1e-13 relative (last-bit differences between
libm and Rmath); deviance residuals 1e-12 relative plus R's own rounding error (see
there); -2 log-likelihoods 1e-12 relative.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixedmodels.family import EPS, make_family, make_link

REFERENCE = json.loads(
    (
        Path(__file__).resolve().parents[1] / "reference" / "family" / "family_functions.json"
    ).read_text()
)


def floats(values) -> np.ndarray:
    """Numbers as written by the R script; "Inf", "-Inf" and "NaN" are strings there."""
    if not isinstance(values, list):
        values = [values]
    return np.array([float(v) for v in values])


LINK_CASES = sorted(REFERENCE["links"])
FAMILY_CASES = sorted(REFERENCE["families"])


def family_of(ref: dict):
    """Our family for R's ``family`` field (``Negative Binomial(3.7)`` for MASS's)."""
    name = "negative-binomial" if ref["family"].startswith("Negative Binomial") else ref["family"]
    return make_family(name, ref["link"], theta=ref["theta"])


def test_reference_double_eps():
    assert REFERENCE["double_eps"] == EPS


@pytest.mark.parametrize("case", LINK_CASES)
def test_links_agree_with_lme4_pirls(case):
    ref = REFERENCE["links"][case]
    link = make_link(ref["link"])
    eta = floats(ref["eta"])
    lme4_mu = floats(ref["lme4"]["mu"])
    # lme4's probit leaves pnorm and dnorm unclamped below (0 far out); ours keeps R's eps
    # bounds there (test_probit_tails_are_r_make_link)
    keep = lme4_mu >= EPS
    np.testing.assert_allclose(link.inverse(eta[keep]), lme4_mu[keep], rtol=1e-13)
    lme4_mu_eta = floats(ref["lme4"]["mu_eta"])
    keep &= lme4_mu_eta >= EPS
    np.testing.assert_allclose(link.mu_eta(eta[keep]), lme4_mu_eta[keep], rtol=1e-13)
    fam = make_family(ref["family"], ref["link"])
    np.testing.assert_allclose(
        fam.variance(link.inverse(eta)), floats(ref["lme4"]["variance"]), rtol=1e-13
    )


@pytest.mark.parametrize("case", LINK_CASES)
def test_links_agree_with_r_make_link_where_r_and_lme4_agree(case):
    ref = REFERENCE["links"][case]
    link = make_link(ref["link"])
    eta = floats(ref["eta"])
    keep = np.ones(eta.shape, dtype=bool)
    if ref["link"] == "logit":
        # R's C code thresholds at |eta| > 30 where lme4 clamps plogis at eps
        keep = np.abs(eta) <= 30
    mu_rtol = 1e-13
    if ref["link"] == "probit":
        # R clamps eta at qnorm(eps) = -8.13 and gives pnorm(-8.13), eps to 3e-15
        mu_rtol = 1e-14 / EPS
    np.testing.assert_allclose(
        link.inverse(eta[keep]), floats(ref["R_linkinv"])[keep], rtol=mu_rtol
    )
    np.testing.assert_allclose(link.mu_eta(eta[keep]), floats(ref["R_mu_eta"])[keep], rtol=1e-13)


def test_probit_tails_are_r_make_link():
    ref = REFERENCE["links"]["binomial_probit"]
    eta = floats(ref["eta"])
    assert min(floats(ref["lme4"]["mu_eta"])) == 0.0  # what we do not reproduce
    assert min(floats(ref["lme4"]["mu"])) == 0.0
    np.testing.assert_allclose(make_link("probit").mu_eta(eta), floats(ref["R_mu_eta"]), rtol=1e-13)


@pytest.mark.parametrize("case", FAMILY_CASES)
def test_family_functions_agree_with_r(case):
    ref = REFERENCE["families"][case]
    fam = family_of(ref)
    y, mu, wt, n = (floats(ref[k]) for k in ("y", "mu", "wt", "n"))
    np.testing.assert_allclose(fam.variance(mu), floats(ref["variance"]), rtol=1e-13)
    # R evaluates (y + theta) log((y + theta)/(mu + theta)) and y log(y/mu) - (y - mu) as
    # written, exact to about (y + theta) eps absolute (2e-11 for theta = 1e5); ours uses
    # log1p and is closer to the exact value, so the comparison allows R's error
    scale = np.max(y) + (fam.theta or 1.0)
    np.testing.assert_allclose(
        fam.deviance_residuals(y, mu, wt),
        floats(ref["dev_resids"]),
        rtol=1e-12,
        atol=64 * EPS * scale,
    )
    trials = None if np.all(n == 1) else n
    got = fam.minus_twice_loglik(y, mu, wt, trials)
    # With theta = 1e5 the terms are ~1e6 (lgamma(theta)) and cancel to ~50: R's sum is off
    # by -1.2e-9, ours (through log B(theta, y + 1)) by +5.6e-10, from the exact
    # 55.813239136312682 (50-digit arithmetic, mpmath)
    slack = 3e-9 if (fam.theta or 0) > 1e4 else 0.0
    assert got == pytest.approx(ref["aic"], rel=1e-12, abs=slack)
    if case == "nb_1e+05":
        assert got == pytest.approx(55.813239136312682, abs=1e-9)


@pytest.mark.parametrize("case", FAMILY_CASES)
def test_initial_mu_is_r_mustart(case):
    ref = REFERENCE["families"][case]
    fam = family_of(ref)
    init = ref["initialize"]
    y = floats(init["y"])  # the proportion, for cbind
    n = floats(init["n"])
    trials = None if np.all(n == 1) else n
    # R's initialize turns the prior weights into prior weights * trials for cbind
    prior = floats(ref["wt"]) if trials is None else np.ones_like(y)
    np.testing.assert_allclose(floats(init["weights"]), prior * (1 if trials is None else n))
    np.testing.assert_allclose(
        fam.initial_mu(y, floats(init["weights"]), trials), floats(init["mustart"]), rtol=1e-14
    )
