"""`mixedmodels compare` and `mixedmodels fit --anova/--ddf` against R's numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

RATPUP_A = "weight ~ treatment*sex + litsize + (1|litter)"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mixedmodels", *args], capture_output=True, text=True, timeout=300
    )


def test_compare_litter_variance_with_mixture_p():
    # R: lrt_ratpup_a_litter_reml.json (lmer REML vs logLik(lm, REML = TRUE)).
    out = run(
        "compare", "ratpup", "-f", "weight ~ treatment*sex + litsize", "-f", RATPUP_A, "--json"
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["criterion"] == "REML"
    alt = result["models"][1]
    assert alt["Chisq"] == pytest.approx(89.4056183086634, rel=1e-6)
    assert alt["Pr(>Chisq)"] == pytest.approx(1.60810952202e-21, rel=1e-3)
    assert alt["Pr(naive)"] == pytest.approx(3.21621904404001e-21, rel=1e-3)


def test_compare_refuses_non_nested_models_in_one_line():
    out = run(
        "compare",
        "ratpup",
        "-f",
        "weight ~ treatment + (1|litter)",
        "-f",
        "weight ~ sex + (1|litter)",
    )
    assert out.returncode == 1
    assert "not nested" in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0


def test_compare_needs_two_formulas():
    out = run("compare", "ratpup", "-f", RATPUP_A)
    assert out.returncode == 1 and "at least two" in out.stderr


def test_fit_anova_json_matches_lmertest():
    # R: ratpup_a_reml.json anova_type3 (lmerTest, Satterthwaite and Kenward-Roger).
    out = run("fit", "ratpup", "-f", RATPUP_A, "--anova", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["term"]: r for r in json.loads(out.stdout)["anova"]}
    assert rows["treatment:sex"]["F"] == pytest.approx(0.465580584263658, rel=1e-3)
    assert rows["treatment:sex"]["NumDF"] == 2
    kr = run("fit", "ratpup", "-f", RATPUP_A, "--anova", "--json", "--ddf", "kenward-roger")
    fixef = {r["term"]: r for r in json.loads(kr.stdout)["fixef"]}
    # pbkrtest df for treatmentHigh (ratpup_summary.json)
    assert fixef["treatmentHigh"]["df"] == pytest.approx(32.1405254211182, rel=1e-3)
