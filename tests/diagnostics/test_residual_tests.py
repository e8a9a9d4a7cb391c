"""Residual tests against scipy and statsmodels on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import mixedmodels as mm
from mixedmodels.diagnostics.residual_tests import (
    levene,
    residual_groups,
    shapiro_wilk,
    white_test,
)

diagnostic = pytest.importorskip("statsmodels.stats.diagnostic")

FORMULAS = [
    "weight ~ treatment * sex + litsize + (1 | litter)",
    "weight ~ treatment + sex + litsize + (1 | litter)",
    "weight ~ treatment + sex + litsize + (1 + sex | litter)",
]


@pytest.fixture(scope="module")
def ratpup():
    return mm.load_dataset("ratpup")


@pytest.fixture(scope="module", params=FORMULAS)
def fit(request, ratpup):
    return mm.lmer(request.param, ratpup)


def test_shapiro_equals_scipy(fit):
    ours = shapiro_wilk(fit)
    theirs = stats.shapiro(fit.resid.to_numpy())
    assert ours.statistic == theirs.statistic
    assert ours.pvalue == theirs.pvalue


def test_white_equals_statsmodels(fit):
    ours = white_test(fit)
    lm, lm_p, f, f_p = _het_white(fit.resid.to_numpy(), fit.design.X)
    assert ours.statistic == pytest.approx(lm, abs=1e-8, rel=1e-10)
    assert ours.pvalue == pytest.approx(lm_p, abs=1e-8)
    assert ours.extra["F"] == pytest.approx(f, abs=1e-8)
    assert ours.extra["F_p"] == pytest.approx(f_p, abs=1e-8)


def test_white_on_continuous_design_equals_statsmodels():
    rng = np.random.default_rng(1)
    x = np.column_stack([np.ones(200), rng.normal(size=(200, 3))])
    resid = rng.normal(size=200) * (1 + np.abs(x[:, 1]))
    ours = white_test(resid, x)
    lm, lm_p, _, _ = _het_white(resid, x)
    assert ours.statistic == pytest.approx(lm, abs=1e-8)
    assert ours.pvalue == pytest.approx(lm_p, abs=1e-8)
    assert ours.df == (9.0,)


def test_white_needs_an_intercept():
    with pytest.raises(ValueError, match="constant"):
        white_test(np.arange(5.0), np.arange(10.0).reshape(5, 2))


def test_levene_equals_scipy(fit, ratpup):
    labels = residual_groups(ratpup, fit, ["treatment"]).to_numpy()
    r = fit.resid.to_numpy()
    for center in ("median", "mean"):
        ours = levene(fit, labels, center=center)
        theirs = stats.levene(*[r[labels == k] for k in sorted(set(labels))], center=center)
        assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12)
        assert ours.pvalue == pytest.approx(theirs.pvalue, rel=1e-12)


def _het_white(resid, x):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels warns about the rank-deficient squares
        return diagnostic.het_white(resid, x)
