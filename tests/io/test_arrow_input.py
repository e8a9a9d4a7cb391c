"""polars DataFrames/LazyFrames and pyarrow Tables give the same fits as pandas."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.io.frames import as_pandas, is_arrow_like

pl = pytest.importorskip("polars")
pa = pytest.importorskip("pyarrow")

RATPUP = "weight ~ treatment + sex + litsize + (1 | litter)"


@pytest.fixture(scope="module")
def ratpup_with_nulls() -> pd.DataFrame:
    """ratpup with a few missing weights and litsizes, litter as strings."""
    frame = mm.load_dataset("ratpup").copy()
    frame["litter"] = "L" + frame["litter"].astype(str)
    frame.loc[[3, 50, 200], "weight"] = np.nan
    frame.loc[[7], "litsize"] = np.nan
    return frame


def _kinds(frame: pd.DataFrame):
    yield "pandas", frame
    polars = pl.from_pandas(frame)
    yield "polars", polars
    yield (
        "polars-categorical",
        polars.with_columns(
            pl.col("treatment").cast(pl.Categorical), pl.col("sex").cast(pl.Categorical)
        ),
    )
    yield "lazy", polars.lazy()
    yield "arrow", pa.Table.from_pandas(frame, preserve_index=False)


def _same(a, b):
    assert a.nobs == b.nobs
    assert a.n_dropped_rows == b.n_dropped_rows
    pd.testing.assert_series_equal(a.fixef, b.fixef, rtol=1e-10, atol=1e-10)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-10)
    np.testing.assert_allclose(a.theta, b.theta, atol=1e-9)
    assert a.ngroups == b.ngroups


def test_lmer_same_fit_from_every_kind_with_strings_categoricals_and_nulls(ratpup_with_nulls):
    base = mm.lmer(RATPUP, ratpup_with_nulls.reset_index(drop=True))
    assert base.n_dropped_rows == 4
    for kind, data in _kinds(ratpup_with_nulls.reset_index(drop=True)):
        fit = mm.lmer(RATPUP, data)
        _same(fit, base), kind
        assert list(fit.fixef.index) == list(base.fixef.index), kind
        assert list(fit.ranef["litter"].index) == list(base.ranef["litter"].index), kind


def test_lmer_weights_and_residual_groups_columns_are_read_too():
    frame = mm.load_dataset("ratpup").assign(w=lambda d: 1.0 + (d.index % 2))
    base = mm.lmer(RATPUP, frame, weights="w", residual_groups="treatment")
    fit = mm.lmer(RATPUP, pl.from_pandas(frame).lazy(), weights="w", residual_groups="treatment")
    _same(fit, base)


def test_glmer_and_compat_and_glm_accept_polars():
    cbpp = mm.load_dataset("cbpp")
    formula = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
    base = mm.glmer(formula, cbpp, family="binomial")
    for data in (pl.from_pandas(cbpp), pa.Table.from_pandas(cbpp)):
        fit = mm.glmer(formula, data, family="binomial")
        pd.testing.assert_series_equal(fit.fixef, base.fixef, rtol=1e-8)
    sleep = mm.load_dataset("sleepstudy")
    from mixedmodels import compat

    md = compat.mixedlm("Reaction ~ Days", pl.from_pandas(sleep), groups="Subject").fit()
    md0 = compat.mixedlm("Reaction ~ Days", sleep, groups="Subject").fit()
    np.testing.assert_allclose(md.fe_params, md0.fe_params, rtol=1e-10)


def test_polars_enum_keeps_its_declared_order():
    frame = mm.load_dataset("ratpup")
    enum = pl.Enum(["High", "Low", "Control"])
    data = pl.from_pandas(frame).with_columns(pl.col("treatment").cast(enum))
    fit = mm.lmer(RATPUP, data)
    assert list(fit.fixef.index[:3]) == ["(Intercept)", "treatmentLow", "treatmentControl"]


def test_predict_newdata_in_polars_and_arrow(ratpup_with_nulls):
    fit = mm.lmer(RATPUP, "ratpup")
    new = mm.load_dataset("ratpup").iloc[:10]
    expected = fit.predict(new)
    for data in (pl.from_pandas(new), pl.from_pandas(new).lazy(), pa.Table.from_pandas(new)):
        got = fit.predict(data)
        np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-12)
        np.testing.assert_allclose(
            fit.predict(data, re=False).to_numpy(), fit.predict(new, re=False).to_numpy()
        )


def test_analyze_accepts_polars():
    sleep = mm.load_dataset("sleepstudy")
    formulas = ["Reaction ~ Days + (Days | Subject)"]
    report = mm.analyze(pl.from_pandas(sleep), formulas).to_dict()
    base = mm.analyze(sleep, formulas).to_dict()

    def undated(sections):
        # The provenance names the UTC minute of the run: the two runs may straddle one.
        return json.loads(re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "<date>", json.dumps(sections)))

    assert "<date>" in json.dumps(undated(base["sections"]))
    assert undated(report["sections"]) == undated(base["sections"])


def test_only_the_formula_columns_are_read_and_a_missing_column_is_named():
    frame = pl.DataFrame({"y": [1.0, 2.0, None], "g": ["a", "b", "a"], "extra": [1, 2, 3]})
    out = as_pandas(frame, ["y", "g"])
    assert list(out.columns) == ["y", "g"]
    assert np.isnan(out["y"].iloc[2])
    assert list(as_pandas(frame.lazy(), ["y", "nope"]).columns) == ["y", "g", "extra"]
    assert is_arrow_like(frame) and is_arrow_like(frame.lazy())
    assert not is_arrow_like(frame.to_pandas())
    data = pl.from_pandas(mm.load_dataset("sleepstudy"))
    with pytest.raises(mm.DataError, match="Reaktion"):
        mm.lmer("Reaktion ~ Days + (1 | Subject)", data)
