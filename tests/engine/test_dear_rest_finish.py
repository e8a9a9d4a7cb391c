"""The Newton finish of a crossed design with a wide dense rest block (issue 18).

There each gradient inverts the rest block (about two factorisations more), so Newton
steps below ``1e-7`` are taken from the criterion's value alone. The fit must equal the
one that pays for a gradient down to ``1e-8`` (the finish's default) to 1e-8, and models
with a narrow rest block keep the default.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
import mixedmodels.linalg.blocked as blocked
import mixedmodels.objective.gradient as gradient_module
from mixedmodels.optimize.finish import VALUE_STEP_MAX

FORMULA = "y ~ x + (1 | a) + (1 | b)"


def _crossed_frame(seed: int = 11) -> pd.DataFrame:
    """Crossed random intercepts: 200 levels of a, 40 of b, 5 rows per level of a."""
    rng = np.random.default_rng(seed)
    la, lb, per = 200, 40, 5
    a = rng.permutation(np.repeat(np.arange(la), per))
    b = rng.integers(0, lb, la * per)
    x = rng.normal(size=la * per)
    y = 1.0 + 0.5 * x + rng.normal(0, 0.6, la)[a] + rng.normal(0, 0.4, lb)[b]
    y = y + rng.normal(size=la * per)
    return pd.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str)})


def _fit(data: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, dear: bool):
    """The fit on the large path's sparse update; ``dear``: the rest block counts as wide."""
    made = []
    original = gradient_module.ProfiledDevianceGradient.__init__

    def init(self, dev):
        original(self, dev)
        made.append(self)

    with monkeypatch.context() as mp:
        mp.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)
        mp.setattr(gradient_module.ProfiledDevianceGradient, "__init__", init)
        if dear:
            mp.setattr(gradient_module, "_CHEAP_REST_MAX", 10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = mm.lmer(FORMULA, data)
    return fit, made


def test_wide_rest_block_takes_small_steps_from_values(monkeypatch):
    data = _crossed_frame()
    ref, made_ref = _fit(data, monkeypatch, dear=False)
    fit, made = _fit(data, monkeypatch, dear=True)
    assert made_ref and all(g.value_step_max == VALUE_STEP_MAX for g in made_ref)
    assert made and made[0].value_step_max == gradient_module._DEAR_VALUE_STEP
    np.testing.assert_allclose(fit.theta, ref.theta, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(fit.fixef), np.asarray(ref.fixef), rtol=1e-8)
    assert fit.sigma == pytest.approx(ref.sigma, rel=1e-8)
    assert fit.objective == pytest.approx(ref.objective, rel=1e-12)


def test_small_models_keep_the_default_step(monkeypatch):
    data = _crossed_frame()
    made = []
    original = gradient_module.ProfiledDevianceGradient.__init__

    def init(self, dev):
        original(self, dev)
        made.append(self)

    monkeypatch.setattr(gradient_module.ProfiledDevianceGradient, "__init__", init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mm.lmer(FORMULA, data)
    assert all(g.value_step_max == VALUE_STEP_MAX for g in made)


def test_remembered_hessian_fits_the_differences(monkeypatch):
    """The Hessian fitted to remembered deviance values near the optimum agrees with the
    finite-difference one (both carry ~1e-3 relative error), and there is none to fit
    when the deviance remembers nothing near the point."""
    from mixedmodels.optimize.finish import _hessian

    data = _crossed_frame()
    fit, made = _fit(data, monkeypatch, dear=True)
    grad = made[0]
    dev = grad.dev
    x = np.asarray(fit.theta, dtype=np.float64)
    f0 = dev(x)
    g = grad(x)
    reference, _ = _hessian(dev, x, f0, g)
    dev._memo.clear()
    assert grad.hessian_from_values(x, f0, g) is None
    rng = np.random.default_rng(3)
    for _ in range(6):  # points like BOBYQA's last trust region around x
        dev(x + rng.uniform(-4e-4, 4e-4, size=x.shape))
    H = grad.hessian_from_values(x, f0, g)
    assert H is not None
    np.testing.assert_allclose(H, reference, rtol=1e-2, atol=1e-2 * np.abs(reference).max())
