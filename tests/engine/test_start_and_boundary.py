"""Starting values for vector templates, and boundary optima after an early BOBYQA stop.

The two-stage start (per-level OLS, ProfiledDeviance._two_stage_template) must land near
the optimum on a textbook design and fall back to lme4's identity start when the levels
cannot be fitted one by one; a boundary optimum reached after the early stop must be as
good as a tight BOBYQA run's, and exactly on the bound.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.errors import SingularFitWarning
from mixedmodels.optimize import OptimizerOptions, OptSummary
from mixedmodels.optimize import snap_to_bounds as _snap_to_bounds


def test_two_stage_start_lands_near_the_sleepstudy_optimum():
    fit = mm.lmer("Reaction ~ Days + (Days|Subject)", "sleepstudy")
    theta0, steps = fit.model.deviance_function(True).moment_start(0.5)
    # lme4's optimum: theta = (0.9667, 0.0152, 0.2309); identity would be (1, 0, 1).
    np.testing.assert_allclose(theta0, fit.theta, atol=0.015)
    np.testing.assert_array_equal(steps, [0.05, 0.05, 0.05])


def test_two_stage_start_falls_back_to_identity_without_per_level_fits():
    # x is constant within each level: no level's Z_l'Z_l is invertible for (1 + x).
    rng = np.random.default_rng(1)
    n = 60
    g = np.arange(n) // 3
    frame = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=20)[g], "g": g.astype(str)})
    model = mm.LinearMixedModel(mm.build_design("y ~ x + (1 + x|g)", frame), reml=True)
    theta0, steps = model.deviance_function(True).moment_start(0.5)
    np.testing.assert_array_equal(theta0, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(steps, [0.5, 0.5, 0.5])


def test_boundary_optimum_after_the_early_stop_is_as_good_as_a_tight_run():
    """ratpup (1 + sex | litter) by ML is singular: the early stop, the tight restart and
    the polish must reach at least the criterion of BOBYQA run tight from the start."""
    formula = "weight ~ treatment + sex + litsize + (1 + sex|litter)"
    with pytest.warns(SingularFitWarning):
        default = mm.lmer(formula, "ratpup", reml=False)
    with pytest.warns(SingularFitWarning):
        tight = mm.lmer(formula, "ratpup", reml=False, control=OptimizerOptions())
    assert default.deviance <= tight.deviance + 1e-12 * tight.deviance
    assert default.theta[2] == 0.0  # on the bound itself
    np.testing.assert_allclose(default.theta[:2], tight.theta[:2], rtol=1e-5)


def _summary(theta, value):
    theta = np.asarray(theta, float)
    return OptSummary(
        initial_theta=theta,
        final_theta=theta,
        lower=np.array([0.0, -np.inf, 0.0]),
        initial_objective=value,
        final_objective=value,
        evaluations=1,
        optimizer="test",
        return_code="SUCCESS",
    )


def test_snap_to_bounds_takes_the_bound_only_when_it_is_no_worse():
    on_diag = np.array([True, False, True])

    def rising(x):  # decreases towards theta[2] = 0: the bound is better
        return 10.0 + x[2]

    summary, used = _snap_to_bounds(rising, _summary([1.0, 1e-6, 3e-6], 10.0 + 3e-6), on_diag)
    assert used == 1
    np.testing.assert_array_equal(summary.final_theta, [1.0, 1e-6, 0.0])  # off-diagonal kept
    assert summary.final_objective == 10.0

    def falling(x):  # increases towards the bound: keep the interior point
        return 10.0 - x[2]

    start = _summary([1.0, 0.0, 3e-6], 10.0 - 3e-6)
    summary, used = _snap_to_bounds(falling, start, on_diag)
    assert summary is start and used == 1
    far = _summary([1.0, 0.0, 0.2], 9.8)
    assert _snap_to_bounds(falling, far, on_diag) == (far, 0)
