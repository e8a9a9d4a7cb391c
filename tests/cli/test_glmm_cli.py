"""`mixedmodels fit/compare --family ...`: the GLMM command line with a stand-in for glmer.

``mixedmodels.api.glmer`` is replaced by a fake that records its arguments and returns
GLMM results built by hand at lme4's optima (``tests/results/glmm_hand_fits.py``), so the
argument handling, refusals, output and the LRT path are tested apart from the engine.
``tests/test_glmm_reference.py`` runs the same commands with the real engine.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mixedmodels.api
from mixedmodels import cli
from mixedmodels.errors import FormulaError
from mixedmodels.results.glmm import GeneralizedLinearMixedModelResult

TESTS = Path(__file__).resolve().parents[1]
CBPP = str(TESTS / "data" / "cbpp.csv")
ALT = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
# compare parses each formula to see whether it has random effects, and the formula layer
# reads cbind() only once the family stage lands: these stand for the cbind formulas (the
# fake maps them to the same hand-built fits).
CMP_ALT = "incidence ~ C(period) + (1 | herd)"
NULL_PERIOD = "incidence ~ 1 + (1 | herd)"
NULL_GLM = "incidence ~ C(period)"


def _hand_fits():
    """tests/results/glmm_hand_fits.py, loaded by path (tests/ is not a package)."""
    module = sys.modules.get("glmm_hand_fits")
    if module is None:
        path = TESTS / "results" / "glmm_hand_fits.py"
        spec = importlib.util.spec_from_file_location("glmm_hand_fits", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["glmm_hand_fits"] = module
        spec.loader.exec_module(module)
    return module


HAND = _hand_fits()
BY_FORMULA = {ALT: "cbpp_laplace", CMP_ALT: "cbpp_laplace", NULL_PERIOD: "cbpp_period_null"}


def reference(name: str) -> dict[str, Any]:
    return json.loads((HAND.REFERENCE / f"{name}.json").read_text())


@pytest.fixture
def calls(monkeypatch):
    recorded: list[dict[str, Any]] = []

    def glmer(formula, data, *, family="binomial", link=None, nagq=1, weights=None, **rest):
        recorded.append(
            {
                "formula": formula,
                "rows": len(data),
                "is_frame": isinstance(data, pd.DataFrame),
                "family": family,
                "link": link,
                "nagq": nagq,
                "weights": weights,
                **rest,
            }
        )
        if formula not in BY_FORMULA:
            raise FormulaError("unknown column 'nosuch'", formula, 0)
        return GeneralizedLinearMixedModelResult(HAND.hand_fit(BY_FORMULA[formula]))

    monkeypatch.setattr(mixedmodels.api, "glmer", glmer, raising=False)
    return recorded


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_family_json(calls, capsys):
    code, out, err = run(["fit", CBPP, "-f", ALT, "--family", "binomial", "--json"], capsys)
    assert (code, err) == (0, "")
    assert out.endswith("\n") and out.count("\n") == 1
    result = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert {"family", "link", "nagq", "loglik_marginal", "overdispersion"} <= set(result)
    assert result["fixef"][0] == {
        "term": "(Intercept)",
        "estimate": pytest.approx(-1.3985321554449843),
        "se": pytest.approx(0.2324718339100837),
        "z": pytest.approx(-6.015920861991022),
        "p": pytest.approx(1.7886694410735617e-09),
    }
    assert calls == [
        {
            "formula": ALT,
            "rows": 56,
            "is_frame": True,
            "family": "binomial",
            "link": None,
            "nagq": 1,
            "weights": None,
        }
    ]


def test_fit_family_options_are_passed_on(calls, capsys):
    argv = ["fit", CBPP, "-f", ALT, "--family", "binomial", "--link", "logit", "--nagq", "25"]
    code, _, _ = run([*argv, "--weights", "size"], capsys)
    assert code == 0
    assert calls[0]["link"] == "logit" and calls[0]["nagq"] == 25
    assert calls[0]["weights"] == "size"


def test_fit_family_prints_the_glmer_summary(calls, capsys):
    code, out, err = run(["fit", CBPP, "-f", ALT, "--family", "binomial"], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("Generalized linear mixed model fit by maximum likelihood")
    assert lines[1] == " Family: binomial  ( logit )"
    assert "Number of obs: 56, groups:  herd, 15" in lines


def test_fit_family_model_error_is_one_line(calls, capsys):
    code, out, err = run(
        ["fit", CBPP, "-f", "y ~ nosuch + (1|herd)", "--family", "poisson"], capsys
    )
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "unknown column 'nosuch'" in err
    assert calls[0]["family"] == "poisson"


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--ml"], "--ml"),
        (["--ddf", "kenward-roger"], "--ddf"),
        (["--anova"], "--anova"),
        (["--residual-groups", "period"], "--residual-groups"),
        (["--residual-pool", "a=1,2"], "--residual-pool"),
    ],
)
def test_fit_family_refuses_lmm_only_options(calls, capsys, extra, option):
    code, out, err = run(["fit", CBPP, "-f", ALT, "--family", "binomial", *extra], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith(f"mixedmodels: error: {option} does not apply with --family")
    assert calls == []


@pytest.mark.parametrize("extra", [["--nagq", "25"], ["--link", "probit"]])
def test_glmm_options_without_family_are_refused(calls, capsys, extra):
    code, out, err = run(["fit", CBPP, "-f", ALT, *extra], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert f"{extra[0]} applies to generalized linear mixed models only: add --family" in err


def test_negative_nagq_and_unknown_family_are_usage_errors(calls, capsys):
    code, _, err = run(["fit", CBPP, "-f", ALT, "--family", "binomial", "--nagq", "-1"], capsys)
    assert code == 2 and "--nagq must be 0, 1 or a number" in err
    code, _, err = run(["fit", CBPP, "-f", ALT, "--family", "gamma"], capsys)
    assert code == 2 and "invalid choice: 'gamma'" in err


def test_compare_family_fixed_effect_lrt(calls, capsys):
    ref = reference("lrt_cbpp_period")
    argv = ["compare", CBPP, "-f", NULL_PERIOD, "-f", CMP_ALT, "--family", "binomial", "--json"]
    code, out, err = run(argv, capsys)
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["criterion"] == "ML"
    null, alt = result["models"]
    assert (null["npar"], alt["npar"]) == (ref["df_null"], ref["df_alt"])
    assert alt["Chisq"] == pytest.approx(ref["chisq"], rel=1e-10)
    assert alt["Df"] == ref["df"]
    assert alt["Pr(>Chisq)"] == pytest.approx(ref["p_naive_chisq"], rel=1e-8)
    assert [c["family"] for c in calls] == ["binomial", "binomial"]


def test_compare_family_without_a_glm_fit_says_so(calls, capsys, monkeypatch):
    monkeypatch.delattr(mixedmodels.api, "glm", raising=False)
    argv = ["compare", CBPP, "-f", NULL_GLM, "-f", CMP_ALT, "--family", "binomial"]
    code, out, err = run(argv, capsys)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "no (...|group) term" in err and "not available yet" in err


@dataclass(frozen=True)
class FakeGlm:
    design: Any
    loglik: float
    nparams: int
    formula: str
    family: str = "binomial"
    link: str = "logit"
    nagq: int = 1
    reml: bool = False

    @property
    def objective(self) -> float:
        return -2.0 * self.loglik

    @property
    def aic(self) -> float:
        return self.objective + 2 * self.nparams

    @property
    def bic(self) -> float:
        return self.objective + math.log(self.design.nobs) * self.nparams


def test_compare_family_variance_test_through_a_glm_hook(calls, capsys, monkeypatch):
    """With an ``api.glm`` (the lead's), compare gives lrt_cbpp_herd's mixture p."""
    from mixedmodels.design import build_design

    ref = reference("lrt_cbpp_herd")
    glm_calls = []

    def glm(formula, data, *, family, link):
        glm_calls.append((formula, family, link))
        frame = data.assign(incidence_rate=data["incidence"] / data["size"])
        design = build_design("incidence_rate ~ C(period)", frame, weights="size")
        return FakeGlm(design, ref["logLik_null"], ref["df_null"], formula)

    monkeypatch.setattr(mixedmodels.api, "glm", glm, raising=False)
    argv = ["compare", CBPP, "-f", NULL_GLM, "-f", CMP_ALT, "--family", "binomial", "--json"]
    code, out, err = run(argv, capsys)
    assert (code, err) == (0, "")
    alt = json.loads(out)["models"][1]
    assert alt["Chisq"] == pytest.approx(ref["chisq"], rel=1e-10)
    assert alt["Pr(>Chisq)"] == pytest.approx(ref["p_mixture"], rel=1e-8)
    assert alt["Reference"] == ref["mixture"]
    assert glm_calls == [(NULL_GLM, "binomial", None)]


def test_compare_family_refuses_ml(calls, capsys):
    argv = ["compare", CBPP, "-f", NULL_PERIOD, "-f", CMP_ALT, "--family", "binomial", "--ml"]
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, "")
    assert "--ml does not apply with --family" in err


def test_help_lists_family_options(capsys):
    code, out, _ = run(["fit", "--help"], capsys)
    assert code == 0
    assert "--family" in out and "--nagq" in out and "--link" in out
    code, out, _ = run(["compare", "--help"], capsys)
    assert code == 0 and "--family" in out


def test_fit_family_streams_with_chunk_rows_and_equals_in_memory(tmp_path, capsys):
    # The real glmer, not the stand-in: chunks of 10 rows of cbpp give the in-memory fit.
    import json

    import mixedmodels as mm
    from mixedmodels.cli import main

    path = tmp_path / "cbpp.parquet"
    mm.load_dataset("cbpp").to_parquet(path)
    formula = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
    outs = []
    for extra in ([], ["--chunk-rows", "10"]):
        code = main(["fit", str(path), "-f", formula, "--family", "binomial", "--json", *extra])
        out = capsys.readouterr().out
        assert code == 0
        outs.append(json.loads(out))
    memory, streamed = outs
    assert streamed["loglik"] == pytest.approx(memory["loglik"], rel=1e-10)
    for a, b in zip(memory["fixef"], streamed["fixef"], strict=True):
        assert b["estimate"] == pytest.approx(a["estimate"], rel=1e-7, abs=1e-9)
