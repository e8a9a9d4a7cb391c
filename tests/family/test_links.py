"""Links against independent computations: round trips, numerical derivatives, R's clamping.

lme4's and R's own values at the same points are checked in test_family_reference.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from mixedmodels.errors import FamilyError, ModelSpecificationError
from mixedmodels.family import (
    EPS,
    LINKS,
    CloglogLink,
    Link,
    LogitLink,
    LogLink,
    make_link,
)

#: Where each inverse link is not clamped and link(inverse(eta)) must give eta back.
ROUND_TRIP = {
    # near mu = 1 the link reads 1 - mu, which keeps a relative precision of eps / (1 - mu)
    "logit": np.linspace(-30.0, 10.0, 81),
    "probit": np.linspace(-8.0, 5.0, 53),
    # 1 - mu = exp(-exp(eta)) keeps a relative precision near eps / (1 - mu): up to eta = 2
    "cloglog": np.linspace(-30.0, 2.0, 81),
    "cauchit": np.linspace(-50.0, 50.0, 101),
    "log": np.linspace(-30.0, 30.0, 121),
    "identity": np.linspace(-5.0, 5.0, 21),
    "sqrt": np.linspace(0.01, 20.0, 41),
    "inverse": np.concatenate([np.linspace(-5.0, -0.1, 20), np.linspace(0.1, 5.0, 20)]),
}

#: d mu / d eta: the densities of the same distributions.
INDEPENDENT_MU_ETA = {
    "logit": stats.logistic.pdf,
    "probit": stats.norm.pdf,
    "cloglog": stats.gumbel_l.pdf,
    "cauchit": stats.cauchy.pdf,
    "log": np.exp,
    "identity": np.ones_like,
    "sqrt": lambda x: 2.0 * x,
    "inverse": lambda x: -1.0 / x**2,
}

#: Mean functions written out with scipy (not the code under test), where not clamped.
INDEPENDENT_INVERSE = {
    "logit": stats.logistic.cdf,
    "probit": stats.norm.cdf,
    "cloglog": stats.gumbel_l.cdf,
    "cauchit": stats.cauchy.cdf,
    "log": np.exp,
    "identity": lambda x: x,
    "sqrt": np.square,
    "inverse": lambda x: 1.0 / x,
}

BINOMIAL_LINKS = ["logit", "probit", "cloglog", "cauchit"]
EXTREME_ETA = np.array([-1e300, -800.0, -40.0, -37.0, -36.0, -31.0, -30.0, -9.0, 0.0, 9.0, 30.0,
                        31.0, 36.0, 37.0, 40.0, 800.0, 1e300])  # fmt: skip


def test_every_link_is_registered_under_its_name():
    assert set(LINKS) == set(ROUND_TRIP)
    for name, link in LINKS.items():
        assert link.name == name
        assert isinstance(link, Link)


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_link_of_inverse_gives_eta_back(name):
    link = make_link(name)
    eta = ROUND_TRIP[name]
    np.testing.assert_allclose(link.link(link.inverse(eta)), eta, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_inverse_agrees_with_scipy(name):
    eta = ROUND_TRIP[name]
    np.testing.assert_allclose(
        make_link(name).inverse(eta), INDEPENDENT_INVERSE[name](eta), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_mu_eta_is_the_density_of_the_inverse_link(name):
    eta = ROUND_TRIP[name]
    np.testing.assert_allclose(
        make_link(name).mu_eta(eta), INDEPENDENT_MU_ETA[name](eta), rtol=1e-11, atol=0
    )


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_mu_eta_is_the_derivative_of_the_inverse(name):
    link = make_link(name)
    eta = ROUND_TRIP[name]
    h = 1e-6 * np.maximum(1.0, np.abs(eta))
    numeric = (link.inverse(eta + h) - link.inverse(eta - h)) / (2.0 * h)
    analytic = link.mu_eta(eta)
    # where the derivative is tiny, the difference quotient is rounding noise
    big = np.abs(analytic) > 1e-3
    assert big.sum() >= 10
    np.testing.assert_allclose(analytic[big], numeric[big], rtol=1e-6)


@pytest.mark.parametrize("name", BINOMIAL_LINKS)
def test_binomial_inverse_links_stay_strictly_inside_zero_one(name):
    link = make_link(name)
    mu = link.inverse(EXTREME_ETA)
    assert np.all(mu > 0.0) and np.all(mu < 1.0)
    assert mu.min() >= EPS and mu.max() <= 1.0 - EPS
    # monotone, and never pushed across 1/2
    assert np.all(np.diff(mu) >= 0)


@pytest.mark.parametrize("name", [*BINOMIAL_LINKS, "log"])
def test_mu_eta_is_never_zero(name):
    d = make_link(name).mu_eta(EXTREME_ETA)
    assert np.all(d >= EPS)
    assert np.all(np.isfinite(d[EXTREME_ETA < 700]))


def test_logit_clamps_as_lme4():
    """lme4 1.1-31's glmFamily.cpp: plogis clamped to [eps, 1-eps], dlogis to >= eps."""
    logit = LogitLink()
    assert logit.inverse(-40.0) == EPS
    assert logit.inverse(40.0) == 1.0 - EPS
    assert logit.mu_eta(-40.0) == EPS
    assert logit.mu_eta(40.0) == EPS
    # between R's threshold |eta| = 30 and the clamp the logistic function is kept
    assert logit.inverse(-35.0) == pytest.approx(stats.logistic.cdf(-35.0), rel=1e-12)
    assert logit.mu_eta(35.0) == pytest.approx(stats.logistic.pdf(35.0), rel=1e-12)


def test_log_link_clamps_below_at_eps_and_overflows_like_r():
    log = LogLink()
    assert log.inverse(-800.0) == EPS
    assert log.mu_eta(-800.0) == EPS
    assert log.inverse(0.0) == 1.0
    assert np.isinf(log.inverse(800.0))  # R: pmax(exp(800), eps) is Inf


def test_cloglog_derivative_does_not_overflow():
    assert CloglogLink().mu_eta(1e6) == EPS
    assert CloglogLink().inverse(1e6) == 1.0 - EPS


def test_probit_tails_are_r_make_link():
    probit = make_link("probit")
    # R: thresh = -qnorm(eps); mu = pnorm(clamped eta): within rounding of eps
    assert probit.inverse(-50.0) == pytest.approx(stats.norm.cdf(stats.norm.ppf(EPS)), rel=1e-6)
    assert probit.mu_eta(-50.0) == EPS


def test_functions_keep_the_shape_of_their_input():
    for link in LINKS.values():
        eta = np.full((3, 2), 0.5)
        assert link.inverse(eta).shape == (3, 2)
        assert link.mu_eta(eta).shape == (3, 2)
        assert link.link(link.inverse(eta)).shape == (3, 2)
        assert np.ndim(link.inverse(0.5)) == 0


def test_valid_eta():
    assert LogitLink().valid_eta(np.array([-1e3, 0.0, 1e3]))
    assert not LogitLink().valid_eta(np.array([0.0, np.nan]))
    assert not LogLink().valid_eta(np.array([np.inf]))
    assert make_link("sqrt").valid_eta([0.5, 2.0])
    assert not make_link("sqrt").valid_eta([0.5, 0.0])
    assert not make_link("sqrt").valid_eta([-0.5])
    assert make_link("inverse").valid_eta([-2.0, 2.0])
    assert not make_link("inverse").valid_eta([0.0])


def test_links_are_immutable_values():
    logit = make_link("logit")
    assert logit == LogitLink()
    assert logit != LogLink()
    assert hash(logit) == hash(LogitLink())
    assert repr(logit) == "Link('logit')"
    with pytest.raises(dataclasses.FrozenInstanceError):
        logit.name = "probit"  # type: ignore[misc]


def test_make_link_names():
    assert make_link(" LOGIT ") is LINKS["logit"]
    link = LogLink()
    assert make_link(link) is link
    with pytest.raises(FamilyError) as info:
        make_link("logistic")
    assert str(info.value) == (
        "unknown link 'logistic'; known links: logit, probit, cloglog, cauchit, log, "
        "identity, sqrt, inverse"
    )
    assert isinstance(info.value, ModelSpecificationError)
    with pytest.raises(FamilyError, match="must be given by name"):
        make_link(3)  # type: ignore[arg-type]


def test_agrees_with_statsmodels_links_where_unclamped():
    links = pytest.importorskip("statsmodels.genmod.families.links")
    pairs = {
        "logit": links.Logit(),
        "probit": links.Probit(),
        "cloglog": links.CLogLog(),
        "cauchit": links.Cauchy(),
        "log": links.Log(),
        "identity": links.Identity(),
        "sqrt": links.Sqrt(),
        "inverse": links.InversePower(),
    }
    for name, theirs in pairs.items():
        eta = ROUND_TRIP[name]
        ours = make_link(name)
        mu = ours.inverse(eta)
        # statsmodels computes 1 - exp(-exp(eta)) for cloglog: absolute accuracy only
        np.testing.assert_allclose(mu, theirs.inverse(eta), rtol=1e-10, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(
            ours.mu_eta(eta), theirs.inverse_deriv(eta), rtol=1e-8, atol=1e-15, err_msg=name
        )
        # ... and log(-log(1 - mu)): compare the links away from mu = 0
        mid = np.abs(eta) < 12
        np.testing.assert_allclose(
            ours.link(mu[mid]), theirs(mu[mid]), rtol=1e-8, atol=1e-10, err_msg=name
        )
