"""Likelihood-ratio tests between GLMM results (``inference.lrt.compare``), without the engine.

The fits are built by hand at lme4's optima (``glmm_hand_fits``); the statistics must be
those of ``tests/reference/glmm/lrt_*.json``: ``chisq = 2 (logLik_alt - logLik_null)``, df
the difference in parameters, the naive chi2(df) p and, where one variance is added to
the same fixed effects, the ``0.5 chisq(df - 1) + 0.5 chisq(df)`` mixture.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pytest
from glmm_hand_fits import REFERENCE, data, hand_fit

import mixedmodels as mm
from mixedmodels.design import build_design
from mixedmodels.inference.lrt import ModelComparisonError, compare
from mixedmodels.results.glmm import GeneralizedLinearMixedModelResult


def lrt_reference(name: str) -> dict[str, Any]:
    return json.loads((REFERENCE / f"{name}.json").read_text())


def glmm(name: str, **changes: Any) -> GeneralizedLinearMixedModelResult:
    return GeneralizedLinearMixedModelResult(hand_fit(name, **changes))


def test_fixed_effect_test_cbpp_period():
    ref = lrt_reference("lrt_cbpp_period")
    result = compare(glmm("cbpp_laplace"), glmm("cbpp_period_null"))
    assert result.criterion == "ML"
    assert [r for r in result.table["npar"]] == [ref["df_null"], ref["df_alt"]]
    alt = result.table.iloc[1]
    assert alt["Chisq"] == pytest.approx(ref["chisq"], rel=1e-12)
    assert alt["Df"] == ref["df"]
    assert alt["Pr(>Chisq)"] == pytest.approx(ref["p_naive_chisq"], rel=1e-9)
    assert alt["Reference"] == "chisq(3)"  # fixed effects differ: no boundary mixture
    assert result.table.iloc[0]["logLik"] == ref["logLik_null"]
    assert any("Laplace approximation" in note for note in result.notes)


def test_random_slope_test_contraception_uses_the_mixture():
    ref = lrt_reference("lrt_contraception_slope")
    result = compare(glmm("contraception_laplace"), glmm("contraception_slope"))
    alt = result.table.iloc[1]
    assert alt["Chisq"] == pytest.approx(ref["chisq"], rel=1e-12)
    assert alt["Df"] == ref["df"] == 2
    assert alt["Pr(naive)"] == pytest.approx(ref["p_naive_chisq"], rel=1e-9)
    assert alt["Pr(>Chisq)"] == pytest.approx(ref["p_mixture"], rel=1e-9)
    assert alt["Reference"] == ref["mixture"] == "0.5*chisq(1) + 0.5*chisq(2)"


@dataclass(frozen=True)
class GlmLike:
    """What a GLM without random effects must offer to be the null of a variance test."""

    design: Any
    loglik: float
    nparams: int
    formula: str = "cbind(incidence, size - incidence) ~ C(period)"
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


def test_variance_against_a_glm_uses_the_chibar_mixture():
    """The hook a GLM fit plugs into: lrt_cbpp_herd (stats::glm null vs cbpp_laplace)."""
    ref = lrt_reference("lrt_cbpp_herd")
    design = build_design("incidence_rate ~ C(period)", data("cbpp_laplace"), weights="size")
    null = GlmLike(design, ref["logLik_null"], ref["df_null"])
    result = compare(null, glmm("cbpp_laplace"))
    alt = result.table.iloc[1]
    assert alt["Chisq"] == pytest.approx(ref["chisq"], rel=1e-12)
    assert alt["Df"] == ref["df"] == 1
    assert alt["Pr(naive)"] == pytest.approx(ref["p_naive_chisq"], rel=1e-9)
    assert alt["Pr(>Chisq)"] == pytest.approx(ref["p_mixture"], rel=1e-9)
    assert alt["Reference"] == ref["mixture"] == "0.5*chisq(0) + 0.5*chisq(1)"


def test_glmm_and_lmm_are_not_compared():
    lmm = mm.lmer(
        "incidence_rate ~ C(period) + (1 | herd)",
        data("cbpp_laplace"),
        weights="size",
        reml=False,
        progress=False,
    )
    with pytest.raises(ModelComparisonError, match="different response distributions"):
        compare(lmm, glmm("cbpp_laplace"))


def test_quadrature_and_laplace_are_not_compared():
    agq = glmm("cbpp_laplace", nagq=25)
    with pytest.raises(ModelComparisonError, match="mix adaptive quadrature"):
        compare(glmm("cbpp_period_null"), agq)


def test_different_prior_weights_are_refused():
    frame = data("cbpp_laplace")
    design = build_design(
        "incidence_rate ~ C(period) + (1 | herd)", frame, weights=frame["size"] * 2.0
    )
    other = glmm("cbpp_laplace", design=design)
    with pytest.raises(ModelComparisonError, match="different weights"):
        compare(glmm("cbpp_period_null"), other)
