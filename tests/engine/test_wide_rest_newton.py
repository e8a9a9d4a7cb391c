"""Newton steps from the start for a wide dense rest block (issue 18).

The fit of a crossed design whose rest block counts as wide takes Newton steps from the
moment start (:mod:`mixedmodels.optimize.wide_rest`) instead of BOBYQA and the finish;
it must reach the same optimum as the fit that does not (criterion to 1e-12, theta and
the fixed effects to 1e-8), with its gradient from the trace shortcut (balanced term 1;
an unbalanced one keeps BOBYQA, where the steps also work but cost more), and give the
optimum to BOBYQA where Newton steps cannot reach it (an optimum on the boundary).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
import mixedmodels.linalg.blocked as blocked
import mixedmodels.objective.gradient as gradient_module
import mixedmodels.optimize.wide_rest as wide_rest

FORMULA = "y ~ x + (1 | a) + (1 | b)"


def _frame(balanced: bool = True, sd_b: float = 0.5, seed: int = 21) -> pd.DataFrame:
    """Crossed intercepts: 240 levels of a (5 rows each when balanced), 48 of b."""
    rng = np.random.default_rng(seed)
    la, lb, per = 240, 48, 5
    if balanced:
        a = rng.permutation(np.repeat(np.arange(la), per))
    else:
        a = rng.integers(0, la, la * per)
    b = rng.integers(0, lb, la * per)
    x = rng.normal(size=la * per)
    y = 1.0 + 0.5 * x + rng.normal(0, 0.6, la)[a] + sd_b * rng.normal(0, 1.0, lb)[b]
    y = y + rng.normal(size=la * per)
    return pd.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str)})


def _fit(data: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, wide: bool, newton: bool = True):
    """The fit on the large path's sparse update; ``wide``: the rest block counts as wide;
    ``newton``: it may take Newton steps from the start. Returns the fit and whether the
    Newton steps gave its optimum."""
    calls = []
    original = wide_rest.newton_from_start

    def spy(*args, **kwargs):
        found = original(*args, **kwargs) if newton else None
        calls.append(found is not None)
        return found

    with monkeypatch.context() as mp:
        mp.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)
        mp.setattr("mixedmodels.models.lmm.newton_from_start", spy)
        if wide:
            mp.setattr(gradient_module, "_CHEAP_REST_MAX", 10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = mm.lmer(FORMULA, data)
    return fit, any(calls)


def _same(fit, ref) -> None:
    np.testing.assert_allclose(fit.theta, ref.theta, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(fit.fixef), np.asarray(ref.fixef), rtol=1e-8)
    assert fit.sigma == pytest.approx(ref.sigma, rel=1e-8)
    assert fit.objective == pytest.approx(ref.objective, rel=1e-12)


def test_newton_from_start_reaches_the_same_optimum(monkeypatch):
    data = _frame()
    ref, used_ref = _fit(data, monkeypatch, wide=False)
    fit, used = _fit(data, monkeypatch, wide=True)
    assert not used_ref and used
    assert fit.opt.optimizer == "newton"
    assert fit.opt.converged
    _same(fit, ref)
    g = np.asarray(fit.opt.gradient)
    assert np.abs(g).max() < 1e-7 * abs(fit.objective)


def test_newton_steps_reach_the_optimum_with_the_full_inverse(monkeypatch):
    """An unbalanced term 1 (potri's gradient): the fit keeps BOBYQA and the finish, and
    the Newton steps, where asked for, reach the same optimum."""
    data = _frame(balanced=False)
    ref, _ = _fit(data, monkeypatch, wide=False)
    fit, used = _fit(data, monkeypatch, wide=True)
    assert not used and fit.opt.optimizer != "newton"
    _same(fit, ref)
    with monkeypatch.context() as mp:
        mp.setattr(gradient_module.ProfiledDevianceGradient, "newton_from_start", True)
        mp.setattr(gradient_module, "balanced_scalar_crossed", lambda system: None)
        forced, used = _fit(data, monkeypatch, wide=True)
    assert used and forced.opt.optimizer == "newton"
    _same(forced, ref)


def test_bobyqa_route_of_the_wide_block_is_unchanged(monkeypatch):
    """Without the Newton steps (they gave up) the wide block's BOBYQA and finish give
    the same optimum."""
    data = _frame()
    ref, _ = _fit(data, monkeypatch, wide=False)
    fit, used = _fit(data, monkeypatch, wide=True, newton=False)
    assert not used and fit.opt.optimizer != "newton"
    _same(fit, ref)


def test_boundary_optimum_goes_to_bobyqa(monkeypatch):
    """b's variance at 0: the Newton steps hand over (a step would cross the bound or end
    at the edge) and the fit equals the one without them."""
    data = _frame(sd_b=0.0, seed=4)
    ref, _ = _fit(data, monkeypatch, wide=False)
    fit, used = _fit(data, monkeypatch, wide=True)
    assert not used
    assert fit.theta[1] == pytest.approx(ref.theta[1], abs=1e-6)
    np.testing.assert_allclose(fit.theta[0], ref.theta[0], rtol=1e-6)
    assert fit.objective == pytest.approx(ref.objective, rel=1e-10)
