"""ICC against the R reference (ratpup_b_*.json extras)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mixedmodels as mm
from mixedmodels.diagnostics.icc import icc

REF = Path(__file__).parents[1] / "inference" / "reference"
RATPUP_B = "weight ~ treatment + sex + litsize + (1 | litter)"


@pytest.mark.parametrize("crit", ["reml", "ml"])
def test_icc_ratpup_b(crit):
    ref = json.loads((REF / f"ratpup_b_{crit}.json").read_text())["extras"]
    fit = mm.lmer(RATPUP_B, "ratpup", reml=crit == "reml")
    res = icc(fit)
    assert res["litter"] == pytest.approx(ref["ICC_litter"], rel=1e-5)
    assert res.table.loc["litter", "variance"] == pytest.approx(ref["var_litter"], rel=1e-5)
    assert res.residual_variance == pytest.approx(ref["var_residual"], rel=1e-5)
    assert "adjusted ICC" in str(res)
    assert res.notes == ()


def test_icc_random_slopes_note():
    fit = mm.lmer("Reaction ~ Days + (Days | Subject)", "sleepstudy")
    res = icc(fit)
    vc = fit.varcorr
    v0 = vc.loc[
        (vc.group == "Subject") & (vc.term == "(Intercept)") & vc.term2.isna(), "variance"
    ].iloc[0]
    assert res["Subject"] == pytest.approx(v0 / (v0 + fit.sigma**2))
    assert any("covariate value 0" in n for n in res.notes)


def test_icc_two_factors():
    fit = mm.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin")
    res = icc(fit)
    vc = fit.varcorr.set_index("group")["variance"]
    total = vc.sum()
    assert res["plate"] == pytest.approx(vc["plate"] / total)
    assert res["sample"] == pytest.approx(vc["sample"] / total)


def test_icc_bootstrap_interval():
    fit = mm.lmer(RATPUP_B, "ratpup")
    res = icc(fit, ci="bootstrap", nsim=20, seed=3)
    lo, hi = res.table.loc["litter", ["lower", "upper"]]
    assert 0 <= lo < res["litter"] < hi <= 1
    again = icc(fit, ci="bootstrap", nsim=20, seed=3)
    assert again.table.loc["litter", "lower"] == lo
