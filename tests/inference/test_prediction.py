"""Predictions with standard errors and intervals (inference/prediction.py).

* glmmTMB 1.1.5 (tests/reference/prediction/prediction_glmmTMB.R) with the covariance
  parameters held at the REML estimates: conditional and population-level fits and SEs,
  and for a subject not seen in fitting the SE that includes the random effects' variance,
  all within 1e-6 relative (observed ~1e-9). glmmTMB's own fit, whose SEs add the
  covariance parameters' uncertainty, within 8% (its largest excess: 6.6% at day 0).
* By definition against a dense computation in the original scale (Henderson's
  mixed-model equations with R = sigma^2 diag(delta^2 / w), G = blockdiag Sigma_k) for a
  weighted fit with residual variances by group: 1e-8 relative.
* Default predict() is unchanged (a Series); GLMMs: population-level link-scale SEs, the
  rest refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.linalg as sla
from scipy.special import expit, ndtri

import mixedmodels as mm
from mixedmodels.errors import ModelSpecificationError
from mixedmodels.results.prediction import linear_predictor

REF = json.loads(
    (
        Path(__file__).resolve().parents[1] / "reference" / "prediction" / "prediction_glmmTMB.json"
    ).read_text()
)
SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep_fit():
    return mm.lmer(SLEEP, "sleepstudy")


def test_default_predict_unchanged(sleep_fit):
    nd = pd.DataFrame(REF["newdata"])
    p = sleep_fit.predict(nd)
    assert isinstance(p, pd.Series) and p.name == "predicted"
    expect = linear_predictor(
        sleep_fit.design,
        sleep_fit.structure.terms,
        sleep_fit.estimates.beta,
        sleep_fit.estimates.b,
        nd,
    )
    np.testing.assert_array_equal(p.to_numpy(), expect)
    pd.testing.assert_series_equal(sleep_fit.predict(), sleep_fit.fitted)
    pd.testing.assert_series_equal(sleep_fit.predict(re=False), sleep_fit.fitted_marginal)


def test_matches_glmmTMB_at_known_covariance_parameters(sleep_fit):
    nd = pd.DataFrame(REF["newdata"])
    ref = REF["fixed"]
    p = sleep_fit.predict(nd, interval="prediction")
    seen = (nd["Subject"] != "999").to_numpy()
    np.testing.assert_allclose(p["fit"], ref["fit"], rtol=1e-8)
    np.testing.assert_allclose(p["se"][seen], np.asarray(ref["se"])[seen], rtol=1e-6)
    # a new subject: glmmTMB's se.fit includes z' Sigma z, our prediction SE adds sigma^2
    unseen_se = np.sqrt(p["se_pred"] ** 2 - sleep_fit.sigma**2)
    np.testing.assert_allclose(unseen_se[~seen], np.asarray(ref["se"])[~seen], rtol=1e-6)
    pop = sleep_fit.predict(nd, re=False, se_fit=True)
    np.testing.assert_allclose(pop["fit"], ref["fit_population"], rtol=1e-8)
    np.testing.assert_allclose(pop["se"], ref["se_population"], rtol=1e-6)


def test_glmmTMB_own_fit_adds_covariance_parameter_uncertainty(sleep_fit):
    nd = pd.DataFrame(REF["newdata"])
    p = sleep_fit.predict(nd, se_fit=True)
    seen = (nd["Subject"] != "999").to_numpy()
    ratio = np.asarray(REF["free"]["se"])[seen] / p["se"].to_numpy()[seen]
    assert np.all(ratio >= 1.0 - 1e-4) and np.all(ratio < 1.08)


def test_population_se_and_intervals_by_definition(sleep_fit):
    nd = pd.DataFrame({"Days": [0.0, 4.5, 12.0], "Subject": ["308", "330", "new"]})
    out = sleep_fit.predict(nd, re=False, interval="confidence", level=0.9)
    X = np.column_stack([np.ones(3), nd["Days"]])
    V = sleep_fit.vcov.to_numpy()
    se = np.sqrt(np.einsum("ij,jk,ik->i", X, V, X))
    np.testing.assert_allclose(out["se"], se, rtol=1e-12)
    z = ndtri(0.95)
    np.testing.assert_allclose(out["lower"], out["fit"] - z * se, rtol=1e-12)
    np.testing.assert_allclose(out["upper"], out["fit"] + z * se, rtol=1e-12)
    assert out.attrs["level"] == 0.9


def _dense_reference(fit, data, weights, strata_col):
    """Henderson's equations in the original scale, from dense Z and X built by hand."""
    X = fit.design.X
    lit = data["litter"].astype(str).to_numpy()
    levels = list(fit.ranef["litter"].index.astype(str))
    Z = (lit[:, None] == np.asarray(levels)[None, :]).astype(float)
    s2 = fit.sigma**2
    ratio = fit.residual_sd_ratio
    delta = data[strata_col].astype(str).map(lambda v: ratio[v]).to_numpy()
    Rinv = np.diag(weights / (s2 * delta**2))
    g = fit.varcorr.query("group == 'litter'")["variance"].iloc[0]
    Ginv = np.eye(len(levels)) / g
    C = np.block([[X.T @ Rinv @ X, X.T @ Rinv @ Z], [Z.T @ Rinv @ X, Z.T @ Rinv @ Z + Ginv]])
    return sla.inv(C), levels


def test_conditional_se_by_definition_weights_and_residual_groups():
    data = mm.load_dataset("ratpup")
    data["w"] = data["litsize"] / 10.0
    fit = mm.lmer(
        "weight ~ treatment + sex + litsize + (1 | litter)",
        data,
        weights="w",
        residual_groups="treatment",
    )
    Cinv, levels = _dense_reference(fit, data, data["w"].to_numpy(), "treatment")
    nd = data.iloc[[0, 40, 100, 200, 321]].copy()
    nd.loc[nd.index[-1], "litter"] = 999  # a litter not seen in fitting
    out = fit.predict(nd, interval="prediction", weights="w")
    X = fit.design.spec.fixed_matrix(nd)
    Z = (nd["litter"].astype(str).to_numpy()[:, None] == np.asarray(levels)[None, :]).astype(float)
    K = np.hstack([X, Z])
    pev = np.einsum("ij,jk,ik->i", K, Cinv, K)
    np.testing.assert_allclose(out["se"] ** 2, pev, rtol=1e-8)
    ratio = fit.residual_sd_ratio
    delta = nd["treatment"].astype(str).map(lambda v: ratio[v]).to_numpy()
    resid_var = fit.sigma**2 * delta**2 / nd["w"].to_numpy()
    g = fit.varcorr.query("group == 'litter'")["variance"].iloc[0]
    extra = np.array([0, 0, 0, 0, g])
    np.testing.assert_allclose(out["se_pred"] ** 2, pev + resid_var + extra, rtol=1e-8)
    # the fitted rows (newdata=None) use their own weights and strata
    fitted = fit.predict(se_fit=True)
    np.testing.assert_allclose(fitted["fit"], fit.fitted, rtol=1e-12)
    Kall = np.hstack(
        [
            fit.design.X,
            (data["litter"].astype(str).to_numpy()[:, None] == np.asarray(levels)[None, :]).astype(
                float
            ),
        ]
    )
    np.testing.assert_allclose(
        fitted["se"] ** 2, np.einsum("ij,jk,ik->i", Kall, Cinv, Kall), rtol=1e-8
    )


def test_prediction_interval_needs_the_strata_column():
    fit = mm.lmer("weight ~ sex + (1 | litter)", "ratpup", residual_groups="treatment")
    nd = pd.DataFrame({"treatment": ["High"], "sex": ["Male"], "litter": [1]})
    fit.predict(nd, interval="prediction")
    fit.predict(nd.drop(columns="treatment"), interval="confidence")  # not needed there
    with pytest.raises(mm.DataError, match="not seen in fitting"):
        fit.predict(nd.assign(treatment=["Nope"]), interval="prediction")
    with pytest.raises(mm.DataError, match="residual-variance column"):
        fit.predict(nd.drop(columns="treatment"), re=False, interval="prediction")


def test_bad_arguments():
    fit = mm.lmer(SLEEP, "sleepstudy")
    with pytest.raises(ValueError, match="interval"):
        fit.predict(interval="wide")
    with pytest.raises(ValueError, match="level"):
        fit.predict(se_fit=True, interval="confidence", level=95)


def test_glmm_population_level_and_refusals():
    gl = mm.glmer(
        "cbind(incidence, size - incidence) ~ period + (1 | herd)", "cbpp", family="binomial"
    )
    nd = pd.DataFrame({"period": [1, 2, 3, 4], "herd": [1, 1, 2, 99]})
    out = gl.predict(nd, re=False, interval="confidence")
    X = gl.design.spec.fixed_matrix(nd)
    eta = X @ gl.fixef.to_numpy()
    se = np.sqrt(np.einsum("ij,jk,ik->i", X, gl.vcov.to_numpy(), X))
    np.testing.assert_allclose(out["se_link"], se, rtol=1e-12)
    np.testing.assert_allclose(out["fit"], expit(eta), rtol=1e-12)
    z = ndtri(0.975)
    np.testing.assert_allclose(out["lower"], expit(eta - z * se), rtol=1e-12)
    np.testing.assert_allclose(out["upper"], expit(eta + z * se), rtol=1e-12)
    link = gl.predict(nd, re=False, se_fit=True, type="link")
    np.testing.assert_allclose(link["fit"], eta, rtol=1e-12)
    with pytest.raises(ModelSpecificationError, match="re=False"):
        gl.predict(nd, se_fit=True)
    with pytest.raises(ModelSpecificationError, match="prediction intervals"):
        gl.predict(nd, re=False, interval="prediction")


def test_crossed_factors_by_dense_definition():
    data = mm.load_dataset("Penicillin")
    fit = mm.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
    Zs, Ginv, names = [], [], []
    for term in fit.structure.terms:
        Z = np.zeros((fit.nobs, term.nlevels))
        Z[np.arange(fit.nobs), term.refs] = 1.0
        Zs.append(Z)
        var = fit.varcorr.query(f"group == '{term.group}'")["variance"].iloc[0]
        Ginv.append(np.full(term.nlevels, 1.0 / var))
        names.append(list(map(str, term.levels)))
    X = fit.design.X
    Z = np.hstack(Zs)
    s2 = fit.sigma**2
    C = np.block([[X.T @ X, X.T @ Z], [Z.T @ X, Z.T @ Z + s2 * np.diag(np.concatenate(Ginv))]])
    Cinv = s2 * np.linalg.inv(C)
    nd = pd.DataFrame({"plate": ["a", "b", "new"], "sample": ["A", "new", "F"]})
    out = fit.predict(nd, interval="prediction")
    K = np.zeros((3, 1 + Z.shape[1]))
    K[:, 0] = 1.0
    offs = np.cumsum([0] + [len(n) for n in names])
    for k, col in enumerate([nd["plate"], nd["sample"]]):
        for i, v in enumerate(col):
            if v in names[k]:
                K[i, 1 + offs[k] + names[k].index(v)] = 1.0
    np.testing.assert_allclose(out["se"] ** 2, np.einsum("ij,jk,ik->i", K, Cinv, K), rtol=1e-8)
    unseen = np.array([0.0, 1.0 / Ginv[1][0], 1.0 / Ginv[0][0]])
    np.testing.assert_allclose(out["se_pred"] ** 2, out["se"] ** 2 + s2 + unseen, rtol=1e-8)


def test_many_levels_of_one_factor_are_not_refused():
    """Term 1 is eliminated level by level: 4000 groups need no 4000 x 4000 matrix."""
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(4000), 3)
    x = rng.standard_normal(g.size)
    y = 1.0 + x + rng.standard_normal(4000)[g] + rng.standard_normal(g.size)
    fit = mm.lmer("y ~ x + (1 | g)", pd.DataFrame({"g": g, "x": x, "y": y}))
    out = fit.predict(pd.DataFrame({"g": [0, 1, -5], "x": [0.0, 1.0, 2.0]}), se_fit=True)
    assert np.isfinite(out["se"]).all()
    from mixedmodels.diagnostics.influence import hat_values

    h = hat_values(fit)
    assert np.all((h > 0) & (h < 1))


def test_effect_grids_and_plot():
    from mixedmodels import plots

    data = mm.load_dataset("ratpup")
    fit = mm.lmer("weight ~ treatment * sex + litsize + (1 | litter)", data)
    grids = plots.effect_grids(fit, data)
    assert list(grids) == ["treatment", "sex", "litsize"]
    t = grids["treatment"]
    assert list(t["treatment"]) == ["Control", "High", "Low"]
    held = t.attrs["held"]
    assert held["sex"] == data["sex"].mode().iloc[0]
    assert held["litsize"] == pytest.approx(data["litsize"].mean())
    # the grid's predictions are predict(re=False) with confidence intervals
    row = pd.DataFrame({"treatment": ["High"], "sex": [held["sex"]], "litsize": [held["litsize"]]})
    expect = fit.predict(row, re=False, interval="confidence")
    np.testing.assert_allclose(t.loc[1, ["fit", "se", "lower", "upper"]], expect.iloc[0])
    lit = grids["litsize"]
    assert lit["litsize"].min() == data["litsize"].min() and len(lit) == 40
    assert not lit.attrs["factor"]
    assert plots.figure_to_png(plots.effects(fit, data)).startswith(b"\x89PNG")
