"""`mixedmodels fit --residual-groups/--residual-pool` (West et al. Model 3.2B)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORMULA = "weight ~ treatment*C(sex, ref='Male') + litsize + (1|litter)"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mixedmodels", *args], capture_output=True, text=True, timeout=120
    )


def test_pooled_residual_groups_in_json():
    out = run(
        "fit", "ratpup", "-f", FORMULA, "--json",
        "--residual-groups", "treatment", "--residual-pool", "HighLow=High,Low",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    # nlme::lme(..., weights = varIdent(~1 | trtgrp)), REML: West et al. Model 3.2B.
    assert result["loglik"] == pytest.approx(-180.540369963891, rel=1e-6)
    assert result["residual_sd"]["Control"] == pytest.approx(0.514792241831929, rel=1e-4)
    assert result["residual_sd"]["HighLow"] == pytest.approx(0.304005041380827, rel=1e-4)


def test_pool_without_groups_is_one_line_error():
    out = run("fit", "ratpup", "-f", FORMULA, "--residual-pool", "HighLow=High,Low")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "--residual-groups" in out.stderr and "Traceback" not in out.stderr


def test_bad_pool_syntax_is_one_line_error():
    out = run(
        "fit", "ratpup", "-f", FORMULA, "--residual-groups", "treatment",
        "--residual-pool", "HighLow",
    )  # fmt: skip
    assert out.returncode == 1
    assert "NAME=LEVEL,LEVEL" in out.stderr and "Traceback" not in out.stderr
