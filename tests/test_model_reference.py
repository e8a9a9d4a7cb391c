"""Every lme4 reference model, fitted from its formula and data, against R's numbers.

Provenance: tests/reference/*.json were made with R 4.2.2, lme4 1.1.31 (see
tests/reference/README-shared.md). Tolerances are the issue's: log-likelihood / REML
criterion 1e-6 relative; fixed effects and variance components 1e-4 relative (1e-6
absolute near 0); standard errors 1e-3 relative; BLUPs and their conditional SDs 1e-3
relative (1e-4 x the term's SD absolute near 0).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.errors import SingularFitWarning

HERE = Path(__file__).parent
REFERENCE = HERE / "reference"

# Our spelling of each reference model (lme4's dummy() is `||` on a factor here).
FORMULAS = {
    "ratpup_c": "weight ~ treatment + sex + litsize + (1 + sex || litter)",
}
DATASETS = {
    "ratpup": "ratpup",
    "sleepstudy": "sleepstudy",
    "Dyestuff": "dyestuff",
    "Dyestuff2": "dyestuff2",
    "Penicillin": "penicillin",
    "Pastes": "pastes",
    "cake": "cake",
    "Orthodont": "orthodont",
}
# lme4's term labels -> ours
TERM_NAMES = {'dummy(sex, "Male")': "sexMale"}

SMALL = sorted(p.stem for p in REFERENCE.glob("*.json") if not p.stem.startswith("insteval"))
LARGE = sorted(p.stem for p in REFERENCE.glob("insteval*.json"))


def load_reference(name: str) -> dict:
    return json.loads((REFERENCE / f"{name}.json").read_text())


def reference_data(ref: dict) -> pd.DataFrame:
    """The reference's data with its factors coded as R coded them (levels, reference)."""
    stem = Path(ref["data_file"]).stem
    if stem == "InstEval":
        df = pd.read_csv(HERE / "data" / "InstEval.csv.gz")
    else:
        df = mm.load_dataset(DATASETS[stem])
    for col, spec in (ref["data_prep"].get("factors") or {}).items():
        levels = list(spec["levels"])
        ref_level = spec["reference"]
        ordered = [ref_level] + [lv for lv in levels if lv != ref_level]
        as_text = df[col].astype(str)
        if pd.api.types.is_numeric_dtype(df[col]):
            as_text = df[col].map(lambda v: str(int(v)) if float(v).is_integer() else str(v))
        df[col] = pd.Categorical(as_text, categories=ordered)
    return df


_FITS: dict[str, mm.LinearMixedModelResult] = {}


def fitted(name: str) -> tuple[mm.LinearMixedModelResult, dict]:
    """Session-wide cache: each reference model is fitted once."""
    ref = load_reference(name)
    if name not in _FITS:
        formula = FORMULAS.get(ref["model"], ref["formula"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingularFitWarning)
            _FITS[name] = mm.lmer(formula, reference_data(ref), reml=ref["REML"])
    return _FITS[name], ref


def close(got, want, rel, abs_near_zero=0.0):
    np.testing.assert_allclose(got, want, rtol=rel, atol=abs_near_zero)


def check_model(name: str) -> None:
    fit, ref = fitted(name)
    # Criterion and likelihood.
    if ref["REML"]:
        assert fit.reml_criterion == pytest.approx(ref["REMLcrit"], rel=1e-6)
        assert fit.deviance is None
    else:
        assert fit.deviance == pytest.approx(ref["deviance"], rel=1e-6)
    assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-6)
    assert fit.nparams == ref["logLik_df"]
    assert fit.aic == pytest.approx(ref["AIC"], rel=1e-6)
    assert fit.bic == pytest.approx(ref["BIC"], rel=1e-6)
    assert fit.nobs == ref["nobs"]
    assert fit.singular == ref["isSingular"]
    assert fit.ngroups == {k: v for k, v in ref["ngroups"].items()}
    # Fixed effects.
    names = [f["name"] for f in ref["fixed_effects"]]
    assert list(fit.fixef.index) == names
    close(fit.fixef.to_numpy(), [f["estimate"] for f in ref["fixed_effects"]], 1e-4, 1e-6)
    close(fit.se.to_numpy(), [f["se"] for f in ref["fixed_effects"]], 1e-3)
    vc = np.array(ref["vcov_fixed"]["matrix"], dtype=float)
    close(fit.vcov.to_numpy(), vc, 1e-3, 1e-3 * np.sqrt(np.outer(np.diag(vc), np.diag(vc))).max())
    # Variance components (lme4's as.data.frame(VarCorr)).
    ours = fit.varcorr
    sd_near_zero = 1e-6
    for row in ref["variance_components_flat"]:
        if row["kind"] == "residual":
            assert fit.sigma == pytest.approx(row["sdcor"], rel=1e-4)
            continue
        group = _grouping_factor(ref, row["group"])
        t1 = TERM_NAMES.get(row["var1"], row["var1"])
        if row["var2"] is None:
            hit = ours[(ours.group == group) & (ours.term == t1) & ours.term2.isna()]
            assert len(hit) == 1, (group, t1)
            if not ref["isSingular"] or row["sdcor"] > 1e-3:
                close(hit.variance.iloc[0], row["vcov"], 1e-4, sd_near_zero)
                close(hit.sd.iloc[0], row["sdcor"], 1e-4, sd_near_zero)
            else:
                assert hit.sd.iloc[0] < 1e-3
        else:
            t2 = TERM_NAMES.get(row["var2"], row["var2"])
            hit = ours[(ours.group == group) & (ours.term == t1) & (ours.term2 == t2)]
            assert len(hit) == 1, (group, t1, t2)
            if not ref["isSingular"]:
                close(hit["corr"].iloc[0], row["sdcor"], 1e-4, 1e-6)
    # BLUPs and conditional SDs.
    for group, blk in ref["blups"].items():
        modes = fit.ranef[group]
        condsd = fit.ranef_condsd[group]
        for v in blk["values"]:
            term = TERM_NAMES.get(v["term"], v["term"])
            term_sd = ours[(ours.group == group) & (ours.term == term) & ours.term2.isna()].sd.iloc[
                0
            ]
            atol = 1e-4 * max(term_sd, 1e-12)
            close(modes.loc[v["level"], term], v["condval"], 1e-3, atol)
            close(condsd.loc[v["level"], term], v["condsd"], 1e-3, atol)
    # Fitted values and residuals (first 10 rows).
    close(fit.fitted.to_numpy()[:10], ref["fitted_first10"], 1e-6)
    close(fit.resid.to_numpy()[:10], ref["residuals_first10"], 1e-4, 1e-4 * fit.sigma)


def _grouping_factor(ref: dict, group_label: str) -> str:
    """lme4 labels a second term on one factor 'litter.1'; we label both 'litter'."""
    for comp in ref["variance_components"]:
        if comp["group"] == group_label:
            return comp["grouping_factor"]
    return group_label


@pytest.mark.parametrize("name", SMALL)
def test_reference_model(name):
    check_model(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_reference_model_insteval(name):
    check_model(name)


def test_singular_fit_is_flagged_and_warned():
    df = mm.load_dataset("dyestuff2")
    with pytest.warns(SingularFitWarning, match="singular"):
        fit = mm.lmer("Yield ~ 1 + (1 | Batch)", df)
    assert fit.singular
    assert fit.varcorr.loc[0, "sd"] == 0.0
