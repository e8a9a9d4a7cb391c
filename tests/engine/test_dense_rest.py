"""The wide rest block's gradient traces from ``diag(S^{-1})`` alone (issue 18).

With a balanced scalar term 1 and one scalar rest term the gradient reads only the
diagonal of ``S^{-1}`` (LAPACK trtri, :mod:`mixedmodels.linalg.dense_rest`); it must
equal the gradient from the full inverse (potri) to rounding, at the optimum and away
from it, whether the factor is owned (inverted in place) or shared (copied).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
import mixedmodels.linalg.blocked as blocked
import mixedmodels.objective.gradient as gradient_module
from mixedmodels.linalg.dense_rest import balanced_scalar_crossed

FORMULA = "y ~ x + (1 | a) + (1 | b)"


def _frame(balanced: bool, seed: int = 5) -> pd.DataFrame:
    """Crossed intercepts: 150 levels of a (4 rows each when balanced), 30 of b."""
    rng = np.random.default_rng(seed)
    la, lb, per = 150, 30, 4
    if balanced:
        a = rng.permutation(np.repeat(np.arange(la), per))
    else:
        a = rng.integers(0, la, la * per)
    b = rng.integers(0, lb, la * per)
    x = rng.normal(size=la * per)
    y = 1.0 + 0.5 * x + rng.normal(0, 0.7, la)[a] + rng.normal(0, 0.5, lb)[b]
    y = y + rng.normal(size=la * per)
    return pd.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str)})


def _gradient(data: pd.DataFrame, monkeypatch: pytest.MonkeyPatch):
    """The fit and the gradient object of its deviance on the wide-rest path."""
    made = []
    original = gradient_module.ProfiledDevianceGradient.__init__

    def init(self, dev):
        original(self, dev)
        made.append(self)

    monkeypatch.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)
    monkeypatch.setattr(gradient_module, "_CHEAP_REST_MAX", 10)
    monkeypatch.setattr(gradient_module.ProfiledDevianceGradient, "__init__", init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mm.lmer(FORMULA, data)
    return fit, made[0]


@pytest.mark.parametrize("reml", [True, False])
def test_balanced_traces_equal_the_full_inverse(monkeypatch, reml):
    fit, grad = _gradient(_frame(balanced=True), monkeypatch)
    assert grad._balanced_n1 == 4.0
    if not reml:
        grad = gradient_module.ProfiledDevianceGradient(fit.model.evaluation_deviance(False))
        assert grad._balanced_n1 == 4.0
    dev = grad.dev
    for theta in ([0.5, 0.3], [1.4, 0.05], [0.02, 2.0], list(fit.theta)):
        x = np.array(theta, dtype=np.float64)
        shared = grad(x, dev.factor(x))  # a shared factor: L22 copied, kept intact
        f, owned = dev.owned_factor(np.array([0.9, 0.9]))
        owned_grad = grad.of_owned_factor(np.array([0.9, 0.9]), f, owned)
        value, both = grad.value_and_gradient(x)  # an owned factor: inverted in place
        balanced = grad._balanced_n1
        grad._balanced_n1 = None  # the general route: potri
        try:
            reference = grad(x)
            owned_ref = grad(np.array([0.9, 0.9]))
        finally:
            grad._balanced_n1 = balanced
        # At the optimum the entries are ~1e-11, sums of terms of the criterion's size:
        # equal to its rounding there (BLAS threads change the last bits).
        atol = 1e-12 * abs(value)
        np.testing.assert_allclose(shared, reference, rtol=1e-10, atol=atol)
        np.testing.assert_allclose(both, reference, rtol=1e-10, atol=atol)
        np.testing.assert_allclose(owned_grad, owned_ref, rtol=1e-10, atol=atol)
        assert value == pytest.approx(dev(x), rel=1e-14)


def test_unbalanced_term_uses_the_full_inverse(monkeypatch):
    _, grad = _gradient(_frame(balanced=False), monkeypatch)
    assert balanced_scalar_crossed(grad.dev.system) is None
    assert grad._balanced_n1 is None
