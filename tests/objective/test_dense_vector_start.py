"""The dense system's start for a vector-valued first term equals the blocked one.

Small models with vector templates are fitted by Newton steps on the dense system alone
(no blocked system is built), so their start is read from the dense ``A``: the two-stage
template of term 1 and the one-way moment estimate of scalar rest terms, with the same
steps as :func:`~mixedmodels.objective.start.blocked_moment_start`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.design import build_design
from mixedmodels.models.lmm import LinearMixedModel, _EstimatesAt
from mixedmodels.objective.start import blocked_moment_start, dense_moment_start


def _two_factor_sleepstudy() -> pd.DataFrame:
    frame = mm.load_dataset("sleepstudy").copy()
    rng = np.random.default_rng(3)
    frame["block"] = rng.choice(list("abcd"), size=len(frame))
    return frame


CASES = [
    ("Reaction ~ Days + (Days|Subject)", "sleepstudy"),
    ("distance ~ age*Sex + (age|Subject)", "orthodont"),
    ("weight ~ treatment + sex + litsize + (1 + sex|litter)", "ratpup"),
    ("Reaction ~ Days + (Days||Subject)", "sleepstudy"),
    ("Reaction ~ Days + (Days|Subject) + (1|block)", None),
]


def _model(formula: str, data: str | None) -> LinearMixedModel:
    frame = _two_factor_sleepstudy() if data is None else mm.load_dataset(data)
    return LinearMixedModel(build_design(formula, frame))


@pytest.mark.parametrize(("formula", "data"), CASES)
def test_dense_start_equals_the_blocked_start(formula, data):
    model = _model(formula, data)
    assert model.is_small()
    dense = model.dense_deviance(True).system
    blocked = model.deviance_function(True).system
    theta_d, steps_d = dense_moment_start(dense, 0.75)
    theta_b, steps_b = blocked_moment_start(blocked, 0.75)
    np.testing.assert_allclose(theta_d, theta_b, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(steps_d, steps_b)


@pytest.mark.parametrize(("formula", "data"), CASES[:3])
def test_vector_templates_fit_without_the_blocked_system(formula, data):
    """The Newton fit equals BOBYQA's on the blocked system (options given) within 1e-10
    of the criterion, and builds no blocked system."""
    fit = mm.lmer(formula, data)
    assert fit.model._deviances == {} and fit.model._cross_products is None
    by_bobyqa = mm.lmer(formula, data, control=mm.OptimizerOptions())
    assert fit.reml_criterion <= by_bobyqa.reml_criterion + 1e-10 * abs(fit.reml_criterion)
    assert fit.reml_criterion == pytest.approx(by_bobyqa.reml_criterion, rel=1e-9)
    assert fit.converged and by_bobyqa.converged


def test_estimates_kept_at_the_last_point_only():
    model = _model(*CASES[0])
    dense = model.dense_deviance(True)
    kept = _EstimatesAt(dense)
    theta = np.array([0.9, 0.02, 0.2])
    assert kept.at(theta) is None
    value = kept(theta)
    assert value == pytest.approx(dense(theta), rel=1e-13)
    est, v = kept.at(theta.copy())
    assert v == value
    np.testing.assert_array_equal(est.beta, dense.estimates(theta)[0].beta)
    assert kept.at(theta + 1e-9) is None
    kept(np.array([0.8, 0.0, 0.3]))
    assert kept.at(theta) is None
    # Not positive definite: inf, as the criterion, and nothing kept.
    bad = _EstimatesAt(dense)
    dense.system._W = dense.system._W.copy()
    dense.system._W[-1, -1] = -1.0
    assert bad(theta) == np.inf and bad.at(theta) is None
