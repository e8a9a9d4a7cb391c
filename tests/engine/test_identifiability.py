"""The Hessian check of the convergence verdict: non-identifiable models warn (issue 13).

lme4's ``checkConv`` (R/checkConv.R, ``checkHess``) warns when the Hessian of the deviance
over theta at the optimum is not positive definite: "Hessian is numerically singular:
parameters are not uniquely determined" for a zero eigenvalue, "degenerate Hessian with k
negative eigenvalues" for negative ones. Ours does the same with a relative tolerance
(1e-6 of the largest eigenvalue), leaves out blocks with a diagonal on its bound, and names
the flat direction in theta entries a user can read.

The two models that must warn: ratpup's ``(treatment | litter)`` (treatment is constant
within litter, so only one variance per treatment group is seen: 3 of the 6 theta
directions are flat) and ``(1 | litter) + (1 | litter)`` (the likelihood sees
``theta1^2 + theta2^2`` only). Every reference model lme4 fits cleanly must not warn: the
reference tests run with warnings as errors, and the test below says so explicitly.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.errors import ConvergenceWarning
from mixedmodels.optimize import OptSummary, check_convergence
from mixedmodels.optimize import check as check_module


def _reference_module():
    """tests/test_model_reference.py, shared (with its cache of fits) if already imported."""
    if "test_model_reference" not in sys.modules:
        path = Path(__file__).parents[1] / "test_model_reference.py"
        spec = importlib.util.spec_from_file_location("test_model_reference", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["test_model_reference"] = module
        spec.loader.exec_module(module)
    return sys.modules["test_model_reference"]


reference = _reference_module()
SINGULAR = "Hessian is numerically singular: parameters are not uniquely determined"


@pytest.fixture(scope="module")
def ratpup():
    return mm.load_dataset("ratpup")


@pytest.mark.parametrize("reml", [True, False])
def test_random_treatment_within_litter_is_not_identifiable(ratpup, reml):
    with pytest.warns(ConvergenceWarning, match=SINGULAR) as caught:
        fit = mm.lmer("weight ~ treatment + (treatment | litter)", ratpup, reml=reml)
    [message] = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    # Three variances are seen (one per treatment group), six theta entries fitted.
    assert "flat in 3 directions" in message
    assert re.search(r"litter: treatment(High|Low)", message)
    assert "\n" not in message
    assert fit.opt.messages == (message,)
    # A flat optimum is still an optimum (lme4's code -4 is a warning, not a failure).
    assert fit.converged
    # What the data do identify, the variance of each treatment group's litter effect,
    # agrees with the model that has one variance per group and no correlations.
    per_group = mm.lmer("weight ~ treatment + (0 + treatment || litter)", ratpup, reml=reml)
    cov = fit.covariance_matrices()["litter"][0][1]
    contrasts = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    seen = np.diag(contrasts @ cov @ contrasts.T)
    ours = per_group.varcorr.set_index("term")["variance"]
    np.testing.assert_allclose(
        seen, ours[["treatmentControl", "treatmentHigh", "treatmentLow"]], rtol=1e-4
    )
    assert fit.objective == pytest.approx(per_group.objective, rel=1e-9)


@pytest.mark.parametrize("reml", [True, False])
def test_duplicated_term_is_not_identifiable(ratpup, reml):
    """lme4 fits ``(1 | g) + (1 | g)`` as two blocks and warns; so do we."""
    with pytest.warns(ConvergenceWarning, match=SINGULAR) as caught:
        fit = mm.lmer("weight ~ treatment + (1 | litter) + (1 | litter)", ratpup, reml=reml)
    [message] = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    assert fit.model.structure.theta_labels() == [
        "litter: (Intercept) [term 1]",
        "litter: (Intercept) [term 2]",
    ]
    # The flat direction is the circle's tangent (theta2, -theta1), scaled to +1 first.
    t1, t2 = fit.theta
    expected = f"(litter: (Intercept) [term 1] +1, litter: (Intercept) [term 2] {-t1 / t2:+.2g})"
    assert message.endswith("the deviance is flat along " + expected)
    assert fit.converged
    single = mm.lmer("weight ~ treatment + (1 | litter)", ratpup, reml=reml)
    assert t1**2 + t2**2 == pytest.approx(single.theta[0] ** 2, rel=1e-6)
    assert fit.objective == pytest.approx(single.objective, rel=1e-10)


def test_non_identifiable_with_var_ident_residuals(ratpup):
    """Without an analytic gradient the Hessian comes from deviance values (lme4's deriv12)."""
    with pytest.warns(ConvergenceWarning, match=SINGULAR) as caught:
        mm.lmer(
            "weight ~ treatment + (1 | litter) + (1 | litter)",
            ratpup,
            residual_groups="treatment",
        )
    [message] = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    assert "[term 1]" in message and "[term 2]" in message


@pytest.mark.parametrize("name", reference.SMALL)
def test_reference_models_do_not_warn(name):
    # The fits of test_model_reference (its cache): a message recorded is a warning issued.
    fit, _ = reference.fitted(name)
    assert fit.opt.messages == ()
    assert fit.converged


@pytest.mark.parametrize(
    ("name", "formula"),
    [
        ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
        ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
        ("ratpup", "weight ~ treatment + sex + litsize + (1 | litter)"),
        ("pastes", "strength ~ 1 + (1 | batch) + (1 | batch:cask)"),
    ],
)
def test_well_conditioned_fits_reuse_the_finish_hessian(monkeypatch, name, formula):
    """The check costs no deviance evaluation when the finish's Hessian is clearly PD."""

    def refuse(*args):
        raise AssertionError("an accurate Hessian was computed for a well-conditioned fit")

    monkeypatch.setattr(check_module, "_accurate_hessian", refuse)
    fit = mm.lmer(formula, mm.load_dataset(name))
    assert fit.opt.messages == ()


# -- the check on its own, on functions whose Hessian is known ---------------------------------
def _summary(x, lower, f, gradient=None):
    x = np.asarray(x, dtype=np.float64)
    return OptSummary(
        initial_theta=x,
        final_theta=x,
        lower=np.asarray(lower, dtype=np.float64),
        initial_objective=f(x),
        final_objective=f(x),
        evaluations=0,
        optimizer="test",
        return_code="SUCCESS",
        gradient=gradient,
    )


def _saddle(x):
    return float(x[0] ** 2 - 0.5 * x[1] ** 2 + 0.1 * x[0] * x[1])


def _valley(x):
    # Flat along x0 = x1 (only the difference is seen); minimum 0 on that line.
    return float((x[0] - x[1]) ** 2 + x[2] ** 2)


def test_check_reports_negative_eigenvalues_and_fails():
    summary = _summary([0.0, 0.0], [-np.inf, -np.inf], _saddle)
    checked = check_convergence(_saddle, summary, names=["a", "b"])
    assert not checked.converged
    [message] = checked.messages
    assert message.startswith("model failed to converge: degenerate Hessian with 1 negative")
    # The descent direction: b, with a's share (0.033) below a tenth of it left out.
    assert message.endswith("the deviance decreases along (b +1)")
    np.testing.assert_array_equal(checked.final_theta, summary.final_theta)


def test_check_names_the_flat_direction():
    summary = _summary([1.0, 1.0, 0.0], [0.0, 0.0, -np.inf], _valley)
    checked = check_convergence(_valley, summary, names=["g: a", "g: b", "h: c"])
    assert checked.converged
    assert checked.messages == (
        SINGULAR + " (the model is not identifiable); the deviance is flat along "
        "(g: a +1, g: b +1)",
    )


def _circle(x):
    # Flat along x1 at (0, 0, .): the circle (x0 + 1)^2 + x1^2 = 1 is tangent to it there.
    return float(((x[0] + 1) ** 2 + x[1] ** 2 - 1) ** 2 + x[2] ** 2)


def test_check_skips_blocks_with_a_diagonal_on_its_bound():
    # x0 is a template diagonal on its bound, x1 an entry of the same block (as with
    # T[0, 0] = 0, where T[1, 0] is not determined): the block is left out.
    summary = _summary([0.0, 0.0, 0.0], [0.0, -np.inf, -np.inf], _circle)
    checked = check_convergence(_circle, summary, blocks=np.array([0, 0, 1]))
    assert checked.messages == ()
    assert checked.converged
    # Told that each entry is a block of its own, the check sees x1's flat direction.
    alone = check_convergence(_circle, summary, names=["a", "b", "c"])
    assert alone.messages == (
        SINGULAR + " (the model is not identifiable); the deviance is flat along (b +1)",
    )


def test_check_passes_a_positive_definite_hessian_without_evaluations():
    def bowl(x):
        return float(x[0] ** 2 + 3 * x[1] ** 2 + x[0] * x[1])

    hessian = np.array([[2.0, 1.0], [1.0, 6.0]])
    summary = _summary([0.0, 0.0], [-np.inf, -np.inf], bowl, gradient=np.zeros(2))
    calls = []

    def counted(x):
        calls.append(x)
        return bowl(x)

    checked = check_convergence(counted, summary, hessian=hessian)
    assert checked.messages == () and checked.converged
    assert calls == []
    assert checked.evaluations == 0
