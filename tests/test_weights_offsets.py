"""Prior weights and offsets against lme4 (tests/reference/weights, made by lmer with
``weights=`` and ``offset()``), through the command line as a user runs it.

Tolerances (issue 13): log-likelihood 1e-6 relative, fixed effects 1e-4, SEs 1e-3, sigma
1e-4. lme4's meaning: row i has residual variance sigma^2 / w_i; ``offset(col)`` adds col to
the linear predictor with coefficient 1.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.cli import main
from mixedmodels.errors import DataError, ModelSpecificationError

HERE = Path(__file__).resolve().parent
REF = HERE / "reference" / "weights"
CASES = sorted(p.stem for p in REF.glob("*.json"))


def _reference(name: str) -> dict:
    return json.loads((REF / f"{name}.json").read_text())


def _data_file(ref: dict) -> Path:
    return HERE / "data" / Path(ref["data_file"]).name


def _cli_fit(ref: dict) -> dict:
    args = ["fit", str(_data_file(ref)), "--formula", ref["formula"], "--json"]
    if ref.get("weights"):
        args += ["--weights", ref["weights"]]
    if not ref["REML"]:
        args.append("--ml")
    out = io.StringIO()
    with redirect_stdout(out):
        status = main(args)
    assert status in (0, None)
    return json.loads(out.getvalue())


@pytest.mark.parametrize("name", CASES)
def test_cli_fit_matches_lme4(name):
    ref = _reference(name)
    got = _cli_fit(ref)
    assert got["nobs"] == ref["nobs"]
    assert got["loglik"] == pytest.approx(ref["logLik"], rel=1e-6)
    assert got["sigma"] == pytest.approx(ref["sigma"], rel=1e-4)
    assert got["aic"] == pytest.approx(ref["AIC"], rel=1e-6)
    assert got["bic"] == pytest.approx(ref["BIC"], rel=1e-6)
    fixef = {row["term"]: row for row in got["fixef"]}
    assert list(fixef) == [fe["name"] for fe in ref["fixed_effects"]]
    for fe in ref["fixed_effects"]:
        assert fixef[fe["name"]]["estimate"] == pytest.approx(fe["estimate"], rel=1e-4)
        assert fixef[fe["name"]]["se"] == pytest.approx(fe["se"], rel=1e-3)
    sds = {(v["group"], v.get("term")): v.get("sd") for v in got["varcorr"] if "sd" in v}
    for vc in ref["variance_components_flat"]:
        if vc["var2"] is not None:
            continue
        key = ("Residual", None) if vc["grp"] == "Residual" else (vc["grp"], vc["var1"])
        assert sds[key] == pytest.approx(vc["sdcor"], rel=1e-3)


@pytest.mark.parametrize("name", CASES)
def test_fitted_values_include_the_offset(name):
    ref = _reference(name)
    data = pd.read_csv(_data_file(ref))
    fit = mm.lmer(ref["formula"], data, weights=ref.get("weights"), reml=ref["REML"])
    np.testing.assert_allclose(fit.fitted.to_numpy()[:10], ref["fitted_first10"], rtol=1e-5)
    # predict(newdata) evaluates the offset on the new rows (and, here, equals fitted).
    np.testing.assert_allclose(fit.predict(data).to_numpy(), fit.fitted.to_numpy(), rtol=1e-10)


def test_weights_as_array_equal_weights_as_column():
    data = pd.read_csv(HERE / "data" / "sleepstudy_weighted.csv")
    f = "Reaction ~ Days + (Days|Subject)"
    by_name = mm.lmer(f, data, weights="w")
    by_array = mm.lmer(f, data, weights=data["w"].to_numpy())
    assert by_array.loglik == pytest.approx(by_name.loglik, rel=1e-12)
    np.testing.assert_allclose(by_array.fixef, by_name.fixef, rtol=1e-10)


def test_weighted_fit_equals_a_fit_of_rescaled_rows():
    """Weights w give the likelihood of rows scaled by sqrt(w), plus 1/2 sum log w."""
    data = pd.read_csv(HERE / "data" / "sleepstudy_weighted.csv")
    fit = mm.lmer("Reaction ~ Days + (1|Subject)", data, weights="w", reml=False)
    # Duplicating each row w times (integer weights) is not the same model (it changes n),
    # but the residual variance of row i must be sigma^2 / w_i: check the standardised
    # residuals' variance against 1 within each weight class.
    r = fit.resid.to_numpy() * np.sqrt(data["w"].to_numpy()) / fit.sigma
    for w in np.unique(data["w"]):
        sel = data["w"].to_numpy() == w
        assert 0.5 < float(np.mean(r[sel] ** 2)) < 1.5
    assert np.isfinite(fit.loglik)


def test_streamed_and_dask_weighted_fits_equal_the_in_memory_fit():
    ref = _reference("ratpup_w_off_reml")
    data = pd.read_csv(_data_file(ref))
    whole = mm.lmer(ref["formula"], data, weights="w")
    chunks = [data.iloc[i : i + 50] for i in range(0, len(data), 50)]
    streamed = mm.lmer(ref["formula"], chunks, weights="w", progress=False)
    assert streamed.loglik == pytest.approx(whole.loglik, rel=1e-10)
    np.testing.assert_allclose(streamed.fixef, whole.fixef, rtol=1e-7)
    np.testing.assert_allclose(streamed.se, whole.se, rtol=1e-6)
    dd = pytest.importorskip("dask.dataframe")
    ddf = dd.from_pandas(data, npartitions=4)
    import dask

    with dask.config.set(scheduler="synchronous"):
        on_dask = mm.lmer(ref["formula"], ddf, weights="w", progress=False)
    assert on_dask.loglik == pytest.approx(whole.loglik, rel=1e-10)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("nope", "weights column 'nope'"),
        (-1.0, "negative"),
        (0.0, "zero"),
        (np.nan, "missing|NaN|non-finite"),
    ],
    ids=["unknown", "negative", "all-zero", "missing"],
)
def test_bad_weights_get_one_clear_error(weights, message):
    data = pd.read_csv(HERE / "data" / "sleepstudy_weighted.csv")
    if isinstance(weights, str):
        arg = weights
    else:
        data = data.assign(bad=weights)
        arg = "bad"
    with pytest.raises((DataError, ModelSpecificationError), match=message):
        mm.lmer("Reaction ~ Days + (1|Subject)", data, weights=arg)


def test_a_single_zero_weight_is_refused_with_the_fix():
    data = pd.read_csv(HERE / "data" / "sleepstudy_weighted.csv")
    data.loc[0, "w"] = 0.0
    with pytest.raises(ModelSpecificationError, match="weights are 0"):
        mm.lmer("Reaction ~ Days + (1|Subject)", data, weights="w")


def test_likelihood_ratio_tests_refuse_models_with_different_weights_or_offsets():
    data = pd.read_csv(HERE / "data" / "sleepstudy_weighted.csv")
    small = mm.lmer("Reaction ~ Days + (1|Subject)", data, weights="w", reml=False)
    big = mm.lmer("Reaction ~ Days + (Days|Subject)", data, weights="w", reml=False)
    table = mm.compare(small, big)
    assert table.table["Chisq"].iloc[1] == pytest.approx(2 * (big.loglik - small.loglik))
    unweighted = mm.lmer("Reaction ~ Days + (Days|Subject)", data, reml=False)
    with pytest.raises(mm.ModelComparisonError, match="different weights"):
        mm.compare(small, unweighted)
    offset = mm.lmer("Reaction ~ Days + offset(off) + (Days|Subject)", data, weights="w")
    with pytest.raises(mm.ModelComparisonError, match="different offset"):
        mm.compare(small, offset)


def test_summary_scales_residuals_as_pearson_residuals():
    """lme4's summary shows resid(type = "pearson", scaled = TRUE): (y - fitted) sqrt(w) / sigma."""
    data = pd.read_csv(HERE / "data" / "sleepstudy_weighted.csv")
    fit = mm.lmer("Reaction ~ Days + (Days|Subject)", data, weights="w")
    table = fit.summary().tables[1].data
    pearson = fit.resid.to_numpy() * np.sqrt(data["w"].to_numpy()) / fit.sigma
    want = np.quantile(pearson, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(table.iloc[0].to_numpy(dtype=float), want, rtol=1e-12)


def test_a_zero_weight_in_streamed_chunks_is_refused_with_the_fix():
    data = pd.read_csv(HERE / "data" / "sleepstudy_weighted.csv")
    data.loc[5, "w"] = 0.0
    chunks = [data.iloc[i : i + 60] for i in range(0, len(data), 60)]
    with pytest.raises(ModelSpecificationError, match="weights are 0"):
        mm.lmer("Reaction ~ Days + (1|Subject)", chunks, weights="w", progress=False)
