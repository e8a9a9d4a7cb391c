"""fit.refit(y) equals a fresh fit on the modified data; fit.simulate draws from the model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.errors import DataError
from mixedmodels.inference.bootstrap import bootstrap

SLEEP = "Reaction ~ Days + (Days | Subject)"
RATPUP = "weight ~ treatment + sex + litsize + (1 | litter)"


def _new_data(fit, name, dataset, y):
    frame = mm.load_dataset(dataset).loc[fit.design.row_index].copy()
    frame[name] = y
    return frame


@pytest.mark.parametrize(
    "formula,dataset,response,reml",
    [
        (SLEEP, "sleepstudy", "Reaction", True),
        (SLEEP, "sleepstudy", "Reaction", False),
        (RATPUP, "ratpup", "weight", True),
        ("strength ~ 1 + (1 | batch/cask)", "Pastes", "strength", True),
    ],
)
def test_refit_equals_lmer_on_modified_data(formula, dataset, response, reml):
    fit = mm.lmer(formula, dataset, reml=reml)
    # An interior optimum away from the first fit's: the response with its random part
    # rescaled and new noise (the same simulated response for every run).
    y = fit.simulate(1, seed=11).iloc[:, 0].to_numpy()
    y = 0.25 * y + 0.75 * fit.design.y
    refit = fit.refit(y)
    full = mm.lmer(formula, _new_data(fit, response, dataset, y), reml=reml)
    assert refit.reml == full.reml
    assert refit.loglik == pytest.approx(full.loglik, abs=1e-8)
    np.testing.assert_allclose(refit.fixef.to_numpy(), full.fixef.to_numpy(), atol=1e-8)
    np.testing.assert_allclose(refit.theta, full.theta, atol=1e-6)
    assert refit.sigma == pytest.approx(full.sigma, rel=1e-8)
    np.testing.assert_allclose(refit.vcov.to_numpy(), full.vcov.to_numpy(), rtol=1e-6)
    # a full result: everything downstream works
    assert refit.coef_table().shape == full.coef_table().shape
    np.testing.assert_allclose(refit.fitted.to_numpy(), full.fitted.to_numpy(), atol=1e-6)


def test_refit_takes_a_series_aligned_on_the_index_and_leaves_the_fit_alone():
    fit = mm.lmer(SLEEP, "sleepstudy")
    before = fit.fixef.copy()
    y = pd.Series(fit.design.y + 1.0, index=fit.fitted.index)
    shifted = fit.refit(y.iloc[::-1])  # reversed order: aligned on the index
    assert shifted.fixef["(Intercept)"] == pytest.approx(before["(Intercept)"] + 1.0, abs=1e-6)
    assert shifted.fixef["Days"] == pytest.approx(before["Days"], abs=1e-6)
    pd.testing.assert_series_equal(fit.fixef, before)
    np.testing.assert_array_equal(fit.design.y, mm.load_dataset("sleepstudy")["Reaction"])


def test_refit_of_a_refit_and_with_weights_and_strata():
    fit = mm.lmer(RATPUP, "ratpup", residual_groups="treatment")
    y = fit.simulate(2, seed=3).to_numpy()
    r1 = fit.refit(y[:, 0])
    r2 = r1.refit(y[:, 1])
    full = mm.lmer(RATPUP, _new_data(fit, "weight", "ratpup", y[:, 1]), residual_groups="treatment")
    assert r2.loglik == pytest.approx(full.loglik, abs=1e-8)
    np.testing.assert_allclose(r2.fixef.to_numpy(), full.fixef.to_numpy(), atol=1e-7)
    data = mm.load_dataset("ratpup").assign(w=lambda d: 1.0 + (d.index % 3))
    wfit = mm.lmer(RATPUP, data, weights="w")
    yw = wfit.simulate(1, seed=4).iloc[:, 0].to_numpy()
    wfull = mm.lmer(RATPUP, data.assign(weight=yw), weights="w")
    assert wfit.refit(yw).loglik == pytest.approx(wfull.loglik, abs=1e-8)


def test_refit_rejects_wrong_length_and_missing():
    fit = mm.lmer(SLEEP, "sleepstudy")
    with pytest.raises(DataError, match="one value per row"):
        fit.refit(np.zeros(3))
    y = fit.design.y.copy()
    y[0] = np.nan
    with pytest.raises(DataError, match="missing"):
        fit.refit(y)


def test_simulate_shapes_seeds_and_moments():
    fit = mm.lmer(SLEEP, "sleepstudy")
    sims = fit.simulate(400, seed=1)
    assert sims.shape == (fit.nobs, 400)
    assert list(sims.columns[:2]) == ["sim_1", "sim_2"]
    pd.testing.assert_frame_equal(sims.iloc[:, :5], fit.simulate(5, seed=1))
    # marginal: mean X beta, variance Z Sigma Z' + sigma^2 (row 0: Days = 0)
    vc = fit.varcorr
    var0 = float(vc.loc[(vc.group == "Subject") & (vc.term == "(Intercept)"), "variance"].iloc[0])
    row0 = sims.iloc[0].to_numpy()
    assert row0.mean() == pytest.approx(fit.fixef["(Intercept)"], abs=4 * np.sqrt(var0 / 400) + 5)
    assert row0.var() == pytest.approx(var0 + fit.sigma**2, rel=0.25)
    # conditional: mean = fitted values, variance sigma^2
    cond = fit.simulate(400, seed=2, re="conditional")
    np.testing.assert_allclose(cond.mean(axis=1), fit.fitted, atol=4.5 * fit.sigma / 20)
    assert cond.to_numpy().var(axis=1).mean() == pytest.approx(fit.sigma**2, rel=0.1)
    with pytest.raises(mm.ModelSpecificationError):
        fit.simulate(2, re="both")


def test_simulate_uses_row_sds_of_strata():
    fit = mm.lmer(RATPUP, "ratpup", residual_groups="treatment")
    cond = fit.simulate(600, seed=5, re="conditional").to_numpy()
    resid_var = ((cond - fit.fitted.to_numpy()[:, None]) ** 2).mean(axis=1)
    sd = fit.residual_sd_by_row
    for level in np.unique(sd):
        rows = sd == level
        assert resid_var[rows].mean() == pytest.approx(level**2, rel=0.1)


def test_bootstrap_refits_the_simulated_responses():
    fit = mm.lmer(RATPUP, "ratpup")
    boot = bootstrap(fit, nsim=3, seed=8, progress=False)
    sims = fit.simulate(3, seed=8)
    for i in range(3):
        r = fit.refit(sims.iloc[:, i].to_numpy())
        np.testing.assert_allclose(
            boot.replicates.iloc[i][list(fit.fixef.index)].to_numpy(),
            r.fixef.to_numpy(),
            rtol=1e-6,
        )


def test_refit_of_a_blocked_model_equals_lmer():
    """A model past the dense size (120 litters): the blocked system takes the new y."""
    from mixedmodels.power_analysis import extend_data

    data = extend_data(mm.load_dataset("ratpup"), RATPUP, groups={"litter": 120})
    fit = mm.lmer(RATPUP, data)
    assert not fit.model.is_small()
    y = 0.3 * fit.simulate(1, seed=4).iloc[:, 0].to_numpy() + 0.7 * fit.design.y
    refit = fit.refit(y)
    full = mm.lmer(RATPUP, data.assign(weight=y))
    assert refit.loglik == pytest.approx(full.loglik, abs=1e-8)
    np.testing.assert_allclose(refit.fixef.to_numpy(), full.fixef.to_numpy(), atol=1e-8)
