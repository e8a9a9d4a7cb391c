"""Parametric bootstrap: exact refits through the cross products, reproducibility, and sanity."""

from __future__ import annotations

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.inference.bootstrap import _Refitter, _Simulator, bootstrap, bootstrap_compare
from mixedmodels.inference.linear_model import lm
from mixedmodels.inference.profile import confint

RATPUP_B = "weight ~ treatment + sex + litsize + (1 | litter)"


@pytest.fixture(scope="module")
def ratpup_b():
    return mm.lmer(RATPUP_B, "ratpup")


@pytest.mark.parametrize(
    "formula,data,reml",
    [
        (RATPUP_B, "ratpup", True),
        ("strength ~ 1 + (1 | batch/cask)", "Pastes", False),
        ("Reaction ~ Days + (Days | Subject)", "sleepstudy", True),
    ],
)
def test_refit_on_original_response_reproduces_fit(formula, data, reml):
    fit = mm.lmer(formula, data, reml=reml)
    r = _Refitter(fit, reml).refit(fit.design.y)
    assert r.objective == pytest.approx(fit.objective, rel=1e-9)
    np.testing.assert_allclose(r.beta, fit.fixef.to_numpy(), rtol=1e-6)
    assert r.sigma == pytest.approx(fit.sigma, rel=1e-6)


def test_refit_on_new_response_matches_full_fit(ratpup_b):
    y = _Simulator(ratpup_b).draw(np.random.default_rng(7))
    frame = mm.load_dataset("ratpup").loc[ratpup_b.design.row_index].copy()
    frame["weight"] = y
    full = mm.lmer(RATPUP_B, frame)
    r = _Refitter(ratpup_b, True).refit(y)
    assert r.objective == pytest.approx(full.objective, rel=1e-9)
    np.testing.assert_allclose(r.theta, full.theta, rtol=1e-4)


def test_bootstrap_reproducible_and_parallel_invariant(ratpup_b):
    a = bootstrap(ratpup_b, nsim=12, seed=5)
    b = bootstrap(ratpup_b, nsim=12, seed=5)
    c = bootstrap(ratpup_b, nsim=12, seed=5, n_jobs=2)
    pd_a = a.replicates.to_numpy()
    np.testing.assert_array_equal(pd_a, b.replicates.to_numpy())
    np.testing.assert_allclose(pd_a, c.replicates.to_numpy(), rtol=1e-12)
    assert a.failures == 0
    assert list(a.replicates.columns) == ["sd_(Intercept)|litter", "sigma", *ratpup_b.fixef.index]
    assert not np.allclose(pd_a, bootstrap(ratpup_b, nsim=12, seed=6).replicates.to_numpy())


def test_bootstrap_confint_brackets_estimates(ratpup_b):
    ci = confint(ratpup_b, "bootstrap", nsim=60, seed=1)
    assert (ci["lower"] < ci["estimate"]).all() and (ci["estimate"] < ci["upper"]).all()
    wald = confint(ratpup_b, "wald")
    # Percentile intervals of the fixed effects are close to the Wald ones (same order of width).
    width_ratio = (ci.loc[wald.index, "upper"] - ci.loc[wald.index, "lower"]) / (
        wald["upper"] - wald["lower"]
    )
    assert ((width_ratio > 0.5) & (width_ratio < 1.6)).all()
    assert ci.attrs["nsim"] == 60


def test_bootstrap_custom_func(ratpup_b):
    boot = bootstrap(ratpup_b, nsim=5, seed=2, func=lambda f: f.sigma)
    assert boot.replicates.shape == (5, 1)
    assert boot.estimate.iloc[0] == pytest.approx(ratpup_b.sigma, rel=1e-6)


def test_bootstrap_compare_random_intercept():
    m0 = lm("weight ~ treatment + sex + litsize", "ratpup")
    m1 = mm.lmer(RATPUP_B, "ratpup", reml=False)
    res = bootstrap_compare(m1, m0, nsim=19, seed=1)
    assert res.criterion == "ML"
    assert res.df == 1
    assert res.p_value == pytest.approx(1 / 20)  # the litter variance is overwhelming
    assert res.statistic > 60
    assert "bootstrap" in str(res)


def test_bootstrap_compare_null_true_gives_moderate_p():
    m0 = mm.lmer("Reaction ~ Days + (Days || Subject)", "sleepstudy", reml=False)
    m1 = mm.lmer("Reaction ~ Days + (Days | Subject)", "sleepstudy", reml=False)
    res = bootstrap_compare(m0, m1, nsim=40, seed=3)
    assert 0.3 < res.p_value <= 1.0
    assert np.isfinite(res.replicates).all()
    assert (res.replicates > -1e-6).all()


@pytest.mark.slow
def test_bootstrap_null_distribution_is_close_to_chibar():
    # Under the null (no random slope variance) about half the LRT* are 0: the 50:50 mixture.
    m0 = mm.lmer("Reaction ~ Days + (1 | Subject)", "sleepstudy", reml=False)
    m1 = mm.lmer("Reaction ~ Days + (Days || Subject)", "sleepstudy", reml=False)
    res = bootstrap_compare(m0, m1, nsim=400, seed=11)
    zero = np.mean(res.replicates < 1e-6)
    assert 0.35 < zero < 0.75
