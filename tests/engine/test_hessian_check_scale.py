"""The Hessian check on large data: no false "numerically singular" warning.

The check (lme4's ``checkHess``) calls an eigenvalue of the Hessian zero when it is below
1e-6 of the largest or below the Hessian's error. That error used to be taken as a
multiple of the deviance's magnitude (``1e-12 |f|`` over the step squared), which grows
with the rows (2.9e8 at 1e8 rows) while the curvature along a parameter such as the
variance of a few groups, or a fixed effect in units of its standard error, does not: a
1e6-row binary GLMM warned "flat along (x +1, (Intercept) -0.3)", an LMM at 1e8 rows
"flat along (item: (Intercept) +1)". Now a closed-form Hessian is judged as it is, and a
Hessian from gradient differences against its own error (asymmetry and second
differences). The true positives (tests/engine/test_identifiability.py) still warn.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.errors import ConvergenceWarning
from mixedmodels.optimize import OptSummary, check_convergence
from mixedmodels.optimize import check as check_module

SINGULAR = "Hessian is numerically singular: parameters are not uniquely determined"
# The magnitude of a deviance on 1e8 rows.
LARGE = 2.9e8


def _summary(x, f, g) -> OptSummary:
    x = np.asarray(x, dtype=np.float64)
    return OptSummary(
        initial_theta=x,
        final_theta=x,
        lower=np.full(x.shape[0], -np.inf),
        initial_objective=f(x),
        final_objective=f(x),
        evaluations=0,
        optimizer="test",
        return_code="SUCCESS",
        gradient=g(x),
    )


def _quadratic(A: np.ndarray, center: np.ndarray, constant: float):
    def f(x):
        d = np.asarray(x) - center
        return float(constant + 0.5 * d @ A @ d)

    def g(x):
        return A @ (np.asarray(x) - center)

    return f, g


def test_well_identified_optimum_of_a_large_deviance_is_not_called_flat():
    # Curvatures 1e6 and 3 (a variance of many groups, one of a few), ratio 3e-6: the
    # screens cannot certify it, so the accurate Hessian is formed; 3 is far above its
    # error, though below the old allowance 1e-12 |f| sqrt(sum h^-2) ~ 6.
    A = np.diag([1e6, 3.0])
    center = np.array([0.7, 2.0])
    f, g = _quadratic(A, center, LARGE)
    summary = _summary(center, f, g)
    checked = check_convergence(f, summary, hessian=A, hessian_accurate=True, gradient=g)
    assert checked.messages == ()
    assert checked.converged
    assert checked.evaluations == 2 + 2 * 2 + 1  # forward screen, central differences, g(x)


def test_flat_direction_of_a_large_deviance_is_still_found():
    # Flat along x0 = x1 (only the difference is seen), with the same large deviance.
    A = np.array([[2e6, -2e6, 0.0], [-2e6, 2e6, 0.0], [0.0, 0.0, 30.0]])
    center = np.array([0.7, 0.7, 2.0])
    f, g = _quadratic(A, center, LARGE)
    summary = _summary(center, f, g)
    checked = check_convergence(f, summary, gradient=g, names=["a", "b", "c"])
    assert checked.converged
    assert checked.messages == (
        SINGULAR + " (the model is not identifiable); the deviance is flat along (a +1, b +1)",
    )


def test_closed_form_hessian_is_judged_as_it_is():
    calls = []

    def f(x):
        calls.append(x)
        return LARGE

    x = np.array([0.8, 0.0, 0.0])
    summary = _summary(x, f, lambda x: np.zeros(3))
    calls.clear()
    # Well identified, eigenvalue ratio 6e-5 (the 1e6-row binary GLMM's): no warning and
    # no evaluation.
    H = np.diag([3.1e5, 1.93, 1.75])
    checked = check_convergence(f, summary, hessian=H, hessian_accurate=True, hessian_exact=True)
    assert checked.messages == () and checked.evaluations == 0 and calls == []
    # Singular: flat along (b +1, c -1), found from the matrix itself.
    H = np.array([[3.1e5, 0.0, 0.0], [0.0, 2.0, 2.0], [0.0, 2.0, 2.0]])
    checked = check_convergence(f, summary, hessian=H, hessian_exact=True, names=["a", "b", "c"])
    assert checked.messages == (
        SINGULAR + " (the model is not identifiable); the deviance is flat along (b +1, c -1)",
    )
    assert calls == []


def _binary(n: int, groups: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    eta = -0.5 + x + 0.8 * rng.normal(size=groups)[g]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def test_binary_glmm_on_4e5_rows_does_not_warn(monkeypatch):
    """The benchmark's synthetic binary design, smaller (4e5 rows, 4e4 groups of ~10; the
    1e6-row one takes ~6 s): its closed-form Hessian over (theta, z) has eigenvalues
    ~(1.75, 1.93, 6e4). It warned "flat along (x +1, (Intercept) -0.37)" (the allowance
    over deviance values was ~8 here, 56 at 1e6 rows); now no warning and no
    finite-difference Hessian."""

    def refuse(*args):
        raise AssertionError("a finite-difference Hessian was formed for the check")

    monkeypatch.setattr(check_module, "_accurate_hessian", refuse)
    fit = mm.glmer("y ~ x + (1 | g)", _binary(400_000, 40_000, 20261203), family="binomial")
    assert fit.converged
    assert fit.messages == ()
    assert fit.fixef["x"] == pytest.approx(1.0, abs=0.03)


def test_glmm_with_two_terms_judged_from_gradient_differences_does_not_warn(monkeypatch):
    """Two scalar terms (2e4 and 5 groups, 2e5 rows): no closed form, so the check forms
    the Hessian from differences of the analytic gradient and reads its error off them.
    The old allowance (8.6, deviance values) called the z directions (eigenvalues ~1.8)
    flat."""
    rng = np.random.default_rng(7)
    n, ng, nh = 200_000, 20_000, 5
    g = rng.integers(0, ng, n)
    h = rng.integers(0, nh, n)
    x = rng.normal(size=n)
    eta = -0.5 + x + 0.8 * rng.normal(size=ng)[g] + 2.0 * rng.normal(size=nh)[h]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    frame = pd.DataFrame({"y": y, "x": x, "g": g, "h": h})
    seen = []
    accurate = check_module._accurate_hessian

    def spy(*args):
        out = accurate(*args)
        seen.append(out)
        return out

    monkeypatch.setattr(check_module, "_accurate_hessian", spy)
    fit = mm.glmer("y ~ x + (1 | g) + (1 | h)", frame, family="binomial")
    assert fit.converged
    assert fit.messages == ()
    [(H, used, error)] = seen
    assert used == 2 * 4 + 1  # gradients, not 2 k^2 deviance values
    evals = np.linalg.eigvalsh(0.5 * (H + H.T))
    assert evals[0] > 1.0
    # The error matrix is far below the curvature along the z directions.
    assert float(np.max(error[1:, 1:])) < 1e-2


def test_lmm_with_few_item_groups_on_1e6_rows_does_not_warn(monkeypatch):
    """3e5 users and 5 items (SD 3): curvatures ~(6e5, 3), ratio 5e-6, so the accurate
    Hessian is formed from gradient differences; its error is read off them."""
    rng = np.random.default_rng(1)
    n, nu, ni = 1_000_000, 300_000, 5
    u = rng.integers(0, nu, n)
    item = rng.integers(0, ni, n)
    x = rng.normal(size=n)
    y = 1.0 + 0.5 * x + 0.7 * rng.normal(size=nu)[u] + 3.0 * rng.normal(size=ni)[item]
    y = y + rng.normal(size=n)
    frame = pd.DataFrame({"y": y, "x": x, "u": u, "i": item})
    seen = []
    accurate = check_module._accurate_hessian

    def spy(*args):
        out = accurate(*args)
        seen.append(out)
        return out

    monkeypatch.setattr(check_module, "_accurate_hessian", spy)
    fit = mm.lmer("y ~ x + (1 | u) + (1 | i)", frame)
    assert fit.opt.messages == ()
    assert fit.converged
    [(H, _, error)] = seen
    assert isinstance(error, np.ndarray)
    evals = np.linalg.eigvalsh(0.5 * (H + H.T))
    assert evals[0] > 1.0 and evals[-1] > 1e5


def test_glmm_with_a_duplicated_term_is_called_flat():
    """lme4 fits ``(1 | herd) + (1 | herd)`` as two blocks and warns: only ``theta1^2 +
    theta2^2`` is seen. The check (gradient differences, several scalar terms) finds the
    flat direction; the fit equals the one-term fit. (It raised an IndexError before:
    the cross-product plan dropped the term's two columns of ones as one.)"""
    formula = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
    single = mm.glmer(formula, "cbpp", family="binomial")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = mm.glmer(formula + " + (1 | herd)", "cbpp", family="binomial")
    messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    assert any(m.startswith(SINGULAR) and "[term 2]" in m for m in messages)
    assert fit.loglik == pytest.approx(single.loglik, rel=1e-10)
    t1, t2 = fit._fit.theta
    assert t1**2 + t2**2 == pytest.approx(single._fit.theta[0] ** 2, rel=1e-5)
