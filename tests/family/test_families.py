"""Families against independent computations (scipy.stats), R's conventions and each other.

R's own numbers at the same points are checked in test_family_reference.py.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from scipy import special, stats

import mixedmodels as mm
from mixedmodels.errors import (
    DataError,
    FamilyError,
    ModelSpecificationError,
    ResponseWarning,
)
from mixedmodels.family import (
    EPS,
    Binomial,
    Family,
    IdentityLink,
    LogitLink,
    NegativeBinomial,
    Poisson,
    binomial,
    make_family,
    negative_binomial,
    poisson,
)

RNG = np.random.default_rng(20240611)

# Binomial counts: trials, successes and means (cbpp-like sizes, a few extremes).
TRIALS = np.array([14.0, 12, 9, 5, 22, 1, 1, 30, 7, 3, 10, 0])
SUCCESSES = np.array([2.0, 3, 4, 0, 3, 1, 0, 30, 7, 1, 5, 0])
PROPORTION = np.divide(SUCCESSES, TRIALS, out=np.zeros_like(TRIALS), where=TRIALS > 0)
P_MU = np.array([0.1, 0.3, 0.45, 0.05, 0.2, 0.7, 0.2, 0.97, 0.6, 0.001, 0.5, 0.3])

# Counts and means, zeros and large values included.
COUNTS = np.array([0.0, 0, 1, 2, 3, 7, 12, 40, 150, 0, 5, 1000])
C_MU = np.array([0.3, 4.0, 1.5, 2.0, 2.9, 5.0, 20.0, 35.0, 160.0, 1e-10, 5.0, 1010.0])
C_W = np.array([1.0, 1, 2, 1, 0.5, 1, 1, 3, 1, 1, 0.25, 1])

THETAS = [0.05, 0.5, 3.7, 250.0, 1e6]


def nb_logpmf(y, mu, theta):
    """scipy's NB2: n = theta, p = theta / (theta + mu)."""
    return stats.nbinom.logpmf(y, n=theta, p=theta / (theta + mu))


# ----------------------------------------------------------------------------- -2 log p
def test_binomial_counts_minus_twice_loglik_is_scipy_logpmf():
    fam = binomial()
    got = fam.unit_minus_twice_loglik(PROPORTION, P_MU, TRIALS, TRIALS)
    expected = -2.0 * stats.binom.logpmf(SUCCESSES, TRIALS, P_MU)
    expected[TRIALS == 0] = 0.0  # R: rows with m = 0 count 0
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert fam.minus_twice_loglik(PROPORTION, P_MU, TRIALS, TRIALS) == pytest.approx(
        expected.sum(), rel=1e-13
    )


def test_binomial_01_response_is_bernoulli():
    y = (RNG.random(50) < 0.4).astype(float)
    mu = RNG.uniform(0.01, 0.99, 50)
    got = binomial().unit_minus_twice_loglik(y, mu, None, None)
    np.testing.assert_allclose(got, -2.0 * stats.bernoulli.logpmf(y, mu), rtol=1e-13)
    np.testing.assert_allclose(
        binomial().unit_minus_twice_loglik(y, mu, np.ones(50), np.ones(50)), got, rtol=0
    )


def test_binomial_prior_weights_with_counts_scale_each_row():
    """cbind with prior weights: weights = prior * trials, the term is (w / m) log dbinom."""
    prior = np.array([1.0, 2, 0.5, 1, 3, 1, 1, 1, 2, 1, 1, 1])
    got = binomial().unit_minus_twice_loglik(PROPORTION, P_MU, prior * TRIALS, TRIALS)
    expected = -2.0 * prior * stats.binom.logpmf(SUCCESSES, TRIALS, P_MU)
    expected[TRIALS == 0] = 0.0
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_binomial_proportions_with_weights_are_counts_as_in_r():
    """R's aic: with no row of more than one trial, m = the weights (glm's weights = n idiom)."""
    y = np.array([0.0, 0.25, 0.5, 1.0, 0.2])
    w = np.array([4.0, 4, 2, 3, 5])
    mu = np.array([0.1, 0.3, 0.45, 0.8, 0.25])
    got = binomial().unit_minus_twice_loglik(y, mu, w, None)
    np.testing.assert_allclose(got, -2.0 * stats.binom.logpmf(w * y, w, mu), rtol=1e-12)


def test_poisson_minus_twice_loglik_is_scipy_logpmf():
    got = poisson().unit_minus_twice_loglik(COUNTS, C_MU, C_W, None)
    np.testing.assert_allclose(got, -2.0 * C_W * stats.poisson.logpmf(COUNTS, C_MU), rtol=1e-12)
    assert poisson().minus_twice_loglik(COUNTS, C_MU, None, None) == pytest.approx(
        -2.0 * stats.poisson.logpmf(COUNTS, C_MU).sum(), rel=1e-13
    )


@pytest.mark.parametrize("theta", THETAS)
def test_negative_binomial_minus_twice_loglik_is_scipy_logpmf(theta):
    got = negative_binomial(theta).unit_minus_twice_loglik(COUNTS, C_MU, C_W, None)
    expected = -2.0 * C_W * nb_logpmf(COUNTS, C_MU, theta)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("theta", [0.05, 0.5, 3.7, 250.0])
def test_negative_binomial_is_mass_aic_formula(theta):
    """MASS::negative.binomial(theta)$aic, term by term as written there."""
    y, mu, w = COUNTS, C_MU, C_W
    term = (
        (y + theta) * np.log(mu + theta)
        - special.xlogy(y, mu)
        + special.gammaln(y + 1)
        - theta * np.log(theta)
        + special.gammaln(theta)
        - special.gammaln(theta + y)
    )
    got = negative_binomial(theta).unit_minus_twice_loglik(y, mu, w, None)
    np.testing.assert_allclose(got, 2.0 * w * term, rtol=1e-9, atol=1e-8)


def test_negative_binomial_tends_to_poisson():
    nb = negative_binomial(1e9).unit_minus_twice_loglik(COUNTS, C_MU, None, None)
    pois = poisson().unit_minus_twice_loglik(COUNTS, C_MU, None, None)
    np.testing.assert_allclose(nb, pois, rtol=1e-5, atol=1e-5)


def test_zero_weight_rows_count_zero():
    for fam in (poisson(), negative_binomial(2.0)):
        w = np.zeros_like(COUNTS)
        assert np.all(fam.unit_minus_twice_loglik(COUNTS, C_MU, w, None) == 0.0)
        assert np.all(fam.deviance_residuals(COUNTS, C_MU, w) == 0.0)


# ----------------------------------------------------------------------- deviance residuals
def saturated_gap(fam: Family, y, mu, weights, trials):
    """2 (log p(y | mu = y) - log p(y | mu)), from scipy's log-densities."""
    if isinstance(fam, Binomial):
        k = y * trials
        sat = stats.binom.logpmf(k, trials, y)
        at = stats.binom.logpmf(k, trials, mu)
        return 2.0 * (weights / trials) * (sat - at)
    if isinstance(fam, Poisson):
        return 2.0 * weights * (stats.poisson.logpmf(y, y) - stats.poisson.logpmf(y, mu))
    theta = fam.theta
    return 2.0 * weights * (nb_logpmf(y, y, theta) - nb_logpmf(y, mu, theta))


@pytest.mark.parametrize(
    "fam",
    [binomial(), poisson(), *(negative_binomial(t) for t in THETAS[:4])],
    ids=repr,
)
def test_deviance_residuals_are_twice_the_gap_to_the_saturated_model(fam):
    if isinstance(fam, Binomial):
        keep = TRIALS > 0
        y, mu, trials = PROPORTION[keep], P_MU[keep], TRIALS[keep]
        weights = trials * 1.5
    else:
        y, mu, trials, weights = COUNTS, C_MU, None, C_W
    got = fam.deviance_residuals(y, mu, weights)
    expected = saturated_gap(fam, y, mu, weights, trials)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-9)
    assert np.all(got >= 0)


@pytest.mark.parametrize("fam", [binomial(), poisson(), negative_binomial(2.0)], ids=repr)
def test_deviance_residuals_vanish_at_the_data_and_never_go_negative(fam):
    y = PROPORTION if isinstance(fam, Binomial) else COUNTS
    y = np.clip(y, 1e-9, 1 - 1e-9) if isinstance(fam, Binomial) else y + 1e-3
    assert np.all(fam.deviance_residuals(y, y, None) == 0.0)
    for scale in (1 + 1e-15, 1 - 1e-15, 1 + 1e-9):
        assert np.all(fam.deviance_residuals(y, y * scale, None) >= 0.0)


def test_binomial_deviance_at_zero_and_one_uses_y_log_y_equals_zero():
    d = binomial().deviance_residuals([0.0, 1.0], [0.2, 0.2], [3.0, 3.0])
    np.testing.assert_allclose(d, [-6.0 * np.log(0.8), -6.0 * np.log(0.2)], rtol=1e-14)


def test_deviance_residuals_agree_with_statsmodels():
    families = pytest.importorskip("statsmodels.genmod.families")
    keep = TRIALS > 0
    cases = [
        (binomial(), families.Binomial(), PROPORTION[keep], P_MU[keep], TRIALS[keep]),
        (poisson(), families.Poisson(), COUNTS, C_MU, C_W),
        (
            negative_binomial(3.7),
            families.NegativeBinomial(alpha=1 / 3.7),
            COUNTS,
            C_MU,
            C_W,
        ),
    ]
    for ours, theirs, y, mu, w in cases:
        signed = theirs.resid_dev(y, mu, var_weights=w)
        # at mu = 1e-10 statsmodels' y log(y/mu) - (y - mu) keeps ~1e-16 absolute accuracy
        np.testing.assert_allclose(
            ours.deviance_residuals(y, mu, w), signed**2, rtol=1e-8, atol=1e-15
        )


# ------------------------------------------------------------------------------ variance
def test_variance_functions_are_the_distributions_variances():
    p = np.linspace(0.01, 0.99, 9)
    np.testing.assert_allclose(binomial().variance(p), stats.binom.var(10, p) / 10, rtol=1e-13)
    np.testing.assert_allclose(poisson().variance(C_MU), stats.poisson.var(C_MU), rtol=1e-14)
    for theta in THETAS[:4]:
        np.testing.assert_allclose(
            negative_binomial(theta).variance(C_MU),
            stats.nbinom.var(theta, theta / (theta + C_MU)),
            rtol=1e-8,
            atol=1e-13,  # scipy: n (1 - p) / p^2, 1 - p rounded, at mu = 1e-10
        )


def test_binomial_variance_is_bounded_below_by_eps_as_in_lme4():
    assert binomial().variance([1e-300, 1.0, 0.0]).tolist() == [EPS, EPS, EPS]


# ------------------------------------------------------------------------------ start values
def test_initial_mu_is_r_mustart():
    y01 = np.array([0.0, 1.0, 1.0])
    np.testing.assert_allclose(binomial().initial_mu(y01, None, None), [0.25, 0.75, 0.75])
    # 0/1 form with prior weights: (w y + 1/2) / (w + 1)
    np.testing.assert_allclose(
        binomial().initial_mu(y01, np.array([3.0, 1.0, 0.0]), None), [0.125, 0.75, 0.5]
    )
    # cbind form: (n y + 1/2) / (n + 1), n the trials (R ignores prior weights here)
    np.testing.assert_allclose(
        binomial().initial_mu(np.array([0.25, 0.0]), np.array([8.0, 6.0]), np.array([4.0, 3.0])),
        [1.5 / 5, 0.5 / 4],
    )
    np.testing.assert_allclose(poisson().initial_mu(COUNTS, None, None), COUNTS + 0.1)
    nb = negative_binomial().initial_mu(np.array([0.0, 2.0, 0.0]), None, None)
    np.testing.assert_allclose(nb, [1 / 6, 2.0, 1 / 6])


def test_initial_mu_is_valid_for_the_link():
    for fam, y in [(binomial(), PROPORTION), (poisson(), COUNTS), (negative_binomial(), COUNTS)]:
        mu = fam.initial_mu(y, TRIALS if isinstance(fam, Binomial) else None, None)
        assert fam.valid_mu(mu)
        assert fam.link.valid_eta(fam.link.link(mu))


# --------------------------------------------------------------------------- the response
def test_binomial_check_response():
    binomial().check_response(np.array([0.0, 0.5, 1.0]), None)
    binomial().check_response(PROPORTION, TRIALS)
    with pytest.raises(DataError) as info:
        binomial().check_response(np.array([0.0, 2.0, 1.0, -1.0]), None)
    assert str(info.value) == (
        "the binomial response has 2 value(s) outside [0, 1] (e.g. 2, -1); give 0/1 values, "
        "proportions with weights = numbers of trials, or cbind(successes, failures)"
    )
    with pytest.warns(ResponseWarning, match="non-integer number"):
        binomial().check_response(np.array([0.3, 0.5]), np.array([2.0, 2.0]))


@pytest.mark.parametrize("fam", [poisson(), negative_binomial(1.0)], ids=repr)
def test_count_check_response(fam):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fam.check_response(COUNTS, None)
    with pytest.raises(DataError) as info:
        fam.check_response(np.array([1.0, -2.0, 3.0]), None)
    assert str(info.value) == (
        f"the {fam.name} response has 1 negative value(s) (e.g. -2); counts must be 0 or "
        "more — check the column, or use an LMM (mm.lmer) for a response that can be negative"
    )
    with pytest.raises(DataError, match="1 non-finite value"):
        fam.check_response(np.array([1.0, np.nan]), None)
    with pytest.warns(ResponseWarning, match=r"2 non-integer value\(s\) \(e.g. 4.5, 0.25\)"):
        fam.check_response(np.array([4.5, 3.0, 0.25]), None)


def test_non_integer_counts_get_the_continuous_log_factorial():
    got = poisson().unit_minus_twice_loglik(np.array([2.5]), np.array([2.0]), None, None)
    expected = -2.0 * (2.5 * np.log(2.0) - 2.0 - special.gammaln(3.5))
    np.testing.assert_allclose(got, [expected], rtol=1e-14)


# ------------------------------------------------------------------------- make_family etc.
@pytest.mark.parametrize(
    ("spelling", "cls"),
    [
        ("binomial", Binomial),
        ("Binomial", Binomial),
        (" POISSON ", Poisson),
        ("negative-binomial", NegativeBinomial),
        ("negative_binomial", NegativeBinomial),
        ("Negative Binomial", NegativeBinomial),
        ("nbinom", NegativeBinomial),
        ("NegBin", NegativeBinomial),
    ],
)
def test_make_family_spellings(spelling, cls):
    fam = make_family(spelling)
    assert type(fam) is cls
    assert fam.link.name == cls.allowed_links[0]


def test_default_links_and_canonical_flags():
    assert (binomial().link.name, binomial().canonical) == ("logit", True)
    assert (poisson().link.name, poisson().canonical) == ("log", True)
    assert (negative_binomial().link.name, negative_binomial().canonical) == ("log", False)
    assert not binomial("probit").canonical
    assert not poisson("sqrt").canonical
    assert make_family("binomial", "CLOGLOG").link.name == "cloglog"
    assert make_family("poisson", IdentityLink()).link == IdentityLink()


@pytest.mark.parametrize(
    ("family", "link", "message"),
    [
        ("poisson", "logit", "link 'logit' is not available for the poisson family; allowed: "
         "log, identity, sqrt"),
        ("binomial", "identity", "link 'identity' is not available for the binomial family; "
         "allowed: logit, probit, cloglog, cauchit, log"),
        ("negative-binomial", "inverse", "link 'inverse' is not available for the "
         "negative-binomial family; allowed: log, identity, sqrt"),
        ("gamma", None, "unknown family 'gamma'; allowed: binomial, poisson, negative-binomial"),
        ("gaussian", None, "unknown family 'gaussian' (a Gaussian model is a linear mixed "
         "model: use mm.lmer); allowed: binomial, poisson, negative-binomial"),
        ("binomial", "logistic", "unknown link 'logistic'; known links: logit, probit, "
         "cloglog, cauchit, log, identity, sqrt, inverse"),
    ],
)  # fmt: skip
def test_make_family_refuses_in_one_line(family, link, message):
    with pytest.raises(FamilyError) as info:
        make_family(family, link)
    assert str(info.value) == message
    assert "\n" not in message
    assert isinstance(info.value, ModelSpecificationError)


def test_theta():
    nb = make_family("negbin", theta=2)
    assert nb.theta == 2.0 and isinstance(nb.theta, float)
    assert negative_binomial().theta is None
    assert nb.with_theta(5.0) == negative_binomial(5.0)
    assert nb.with_theta(5.0).link == nb.link
    assert make_family(nb, theta=3.0).theta == 3.0
    with pytest.raises(FamilyError, match="theta is not set"):
        negative_binomial().variance([1.0])
    with pytest.raises(FamilyError, match="theta applies only to the negative binomial"):
        make_family("poisson", theta=2.0)
    with pytest.raises(FamilyError, match="the poisson family has no theta"):
        poisson().with_theta(2.0)
    for bad in (0.0, -1.0, np.inf, np.nan, "a"):
        with pytest.raises(FamilyError, match="theta of the negative binomial must be"):
            negative_binomial(bad)  # type: ignore[arg-type]


def test_families_are_immutable_values():
    fam = binomial()
    assert fam == make_family("binomial") == Binomial(LogitLink())
    assert fam != binomial("probit")
    assert hash(fam) == hash(binomial())
    assert negative_binomial(2.0) != negative_binomial(3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fam.theta = 1.0  # type: ignore[misc]
    assert repr(fam) == "binomial(link='logit')"
    assert repr(negative_binomial(2.5, "sqrt")) == "negative_binomial(theta=2.5, link='sqrt')"
    assert negative_binomial(2.5).r_name == "Negative Binomial(2.5)"
    assert make_family(fam) is fam
    assert make_family(fam, "probit") == binomial("probit")
    assert Binomial("probit").link.name == "probit"  # type: ignore[arg-type]


def test_top_level_constructors():
    assert mm.binomial() == binomial()
    assert mm.poisson("sqrt") == poisson("sqrt")
    assert mm.negative_binomial(2.0) == negative_binomial(2.0)
    assert {"binomial", "poisson", "negative_binomial"} <= set(dir(mm))


@pytest.mark.parametrize(
    ("family", "y"),
    [
        (make_family("binomial"), np.array([0.0, 1.0, 1.0, 0.0, 0.25, 0.8])),
        (make_family("binomial", "probit"), np.array([0.0, 1.0, 0.5, 0.0, 1.0, 1.0])),
        (make_family("poisson"), np.array([0.0, 3.0, 1.0, 12.0, 0.0, 40.0])),
        (make_family("negative-binomial", theta=2.5), np.array([0.0, 3.0, 1.0, 12.0, 0.0, 40.0])),
    ],
)
def test_deviance_function_is_the_sum_of_deviance_residuals(family, y):
    # PIRLS' fast deviance (what depends on y computed once) against the per-row residuals.
    rng = np.random.default_rng(11)
    weights = rng.uniform(0.5, 3.0, y.shape[0])
    deviance = family.deviance_function(y, weights)
    for _ in range(5):
        eta = rng.normal(0.0, 1.5, y.shape[0])
        if family.name != "binomial":
            eta = eta + 1.0
        mu = family.link.inverse(eta)
        expected = float(np.sum(family.deviance_residuals(y, mu, weights)))
        assert deviance(mu) == pytest.approx(expected, rel=1e-12, abs=1e-12)
