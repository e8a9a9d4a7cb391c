"""Newton steps from the moment start for a wide dense rest block under a vector term 1.

The grid's model ``y ~ x + f + (1 + x | user) + (1 | item)`` with a rest block counted as
wide (issue 18: 1e4 items, a dense 1e4 x 1e4 block factored at every evaluation) takes
Newton steps from the moment start (:mod:`mixedmodels.optimize.wide_rest`) when they
cost fewer factorisations than BOBYQA (four theta). The fit must reach the optimum of
the BOBYQA route (criterion to 1e-10, theta to 1e-8 of the template's scale) with fewer
factorisations, and hand an optimum on the boundary to BOBYQA, whose fit is then the one
of the route without Newton steps, to the bit.
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
from mixedmodels.linalg.blocked import BlockedSystem
from mixedmodels.objective.gradient import wide_newton_pays
from mixedmodels.optimize.finish import _hessian

FORMULA = "y ~ x + f + (1 + x | user) + (1 | item)"


def _frame(
    users: int = 400, per: int = 20, items: int = 200, sd_x: float = 0.2, seed: int = 15
) -> pd.DataFrame:
    """The grid's design in miniature: users with ``per`` events each (intercept SD 0.5,
    slope SD ``sd_x``), items drawn uniformly (SD 0.3), a three-level factor, sigma 1."""
    rng = np.random.default_rng(seed)
    n = users * per
    user = np.repeat(np.arange(users), per)
    item = rng.integers(0, items, n)
    x = rng.normal(size=n)
    f = rng.integers(0, 3, n)
    b0, b1 = rng.normal(0, 0.5, users), rng.normal(0, sd_x, users)
    bi = rng.normal(0, 0.3, items)
    y = 1 + 0.5 * x + np.array([0.0, 0.3, -0.2])[f] + b0[user] + b1[user] * x + bi[item]
    y = y + rng.normal(size=n)
    return pd.DataFrame(
        {
            "y": y,
            "x": x,
            "f": np.array(list("abc"))[f],
            "user": user.astype(str),
            "item": item.astype(str),
        }
    )


def _fit(data, monkeypatch, wide: bool, newton: bool = True, reml: bool = False):
    """The fit on the large path's sparse update; ``wide``: the rest block counts as wide;
    ``newton``: Newton steps from the start allowed. Returns the fit, whether the Newton
    steps gave its optimum and the factorisations it took."""
    calls: list[bool] = []
    count = [0]
    original = wide_rest.newton_from_start
    cholesky = BlockedSystem._cholesky

    def spy(*args, **kwargs):
        found = original(*args, **kwargs) if newton else None
        calls.append(found is not None)
        return found

    def counted(self, *args, **kwargs):
        count[0] += 1
        return cholesky(self, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)
        mp.setattr(BlockedSystem, "_cholesky", counted)
        mp.setattr("mixedmodels.models.lmm.newton_from_start", spy)
        if wide:
            mp.setattr(gradient_module, "_CHEAP_REST_MAX", 10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = mm.lmer(FORMULA, data, reml=reml)
    return fit, any(calls), count[0]


def _same_optimum(fit, ref) -> None:
    """Criterion to 1e-10, theta to 1e-8 of the largest entry (an off-diagonal entry near
    0 is finished against its template's scale), fixed effects and sigma to 1e-8."""
    assert fit.objective == pytest.approx(ref.objective, rel=1e-10)
    theta, expected = np.asarray(fit.theta), np.asarray(ref.theta)
    np.testing.assert_allclose(theta, expected, rtol=1e-8, atol=1e-8 * np.abs(expected).max())
    np.testing.assert_allclose(np.asarray(fit.fixef), np.asarray(ref.fixef), rtol=1e-8)
    assert fit.sigma == pytest.approx(ref.sigma, rel=1e-8)


@pytest.mark.parametrize("reml", [False, True])
def test_vector_term_one_takes_newton_steps_to_the_same_optimum(monkeypatch, reml):
    data = _frame()
    ref, used_ref, _ = _fit(data, monkeypatch, wide=False, reml=reml)
    bobyqa, _, made_bobyqa = _fit(data, monkeypatch, wide=True, newton=False, reml=reml)
    fit, used, made = _fit(data, monkeypatch, wide=True, reml=reml)
    assert not used_ref and used
    assert fit.opt.optimizer == "newton" and fit.converged and not fit.singular
    _same_optimum(fit, ref)
    _same_optimum(bobyqa, ref)
    # The point of the steps: fewer factorisations of the (here nominally) wide block
    # than the BOBYQA route on the same block (34 against 15 at 2e5 rows).
    assert made < made_bobyqa
    g = np.asarray(fit.opt.gradient)
    assert np.abs(g).max() < 1e-6 * abs(fit.objective)


def test_boundary_optimum_goes_to_bobyqa_unchanged(monkeypatch):
    """No slope variance: the optimum has the slope's template diagonal on 0. The Newton
    steps hand it over and the fit is the BOBYQA route's, to the bit."""
    data = _frame(users=1000, per=5, items=60, sd_x=0.0, seed=9)
    ref, _, _ = _fit(data, monkeypatch, wide=True, newton=False)
    fit, used, _ = _fit(data, monkeypatch, wide=True)
    narrow, _, _ = _fit(data, monkeypatch, wide=False)
    assert not used and fit.opt.optimizer != "newton"
    assert fit.singular and ref.singular and narrow.singular
    np.testing.assert_array_equal(np.asarray(fit.theta), np.asarray(ref.theta))
    assert fit.objective == ref.objective
    assert fit.objective == pytest.approx(narrow.objective, rel=1e-10)


def test_cost_model():
    """Newton steps pay from four theta on at potri's price (two factorisations per
    inverse); two scalar terms keep BOBYQA (measured 22 against 19), and so do three
    (measured about even)."""
    assert not wide_newton_pays(2, 2.0)
    assert not wide_newton_pays(3, 2.0)
    assert wide_newton_pays(4, 2.0)
    assert wide_newton_pays(6, 2.0)


def _smooth(x: np.ndarray) -> float:
    """A smooth convex function of four entries, minimum at (0.5, 0.1, 0.2, 0.3); the
    first three coupled (one covariance block), the last nearly separate."""
    c = np.array([0.5, 0.1, 0.2, 0.3])
    d = x - c
    A = np.array(
        [[4.0, 0.6, 0.4, 0.1], [0.6, 3.0, 0.5, 0.0], [0.4, 0.5, 2.0, 0.1], [0.1, 0.0, 0.1, 5.0]]
    )
    return float(0.5 * d @ A @ d + 0.3 * np.sum(d**4) + 0.1 * d[0] ** 3)


def _smooth_gradient(x: np.ndarray, h: float = 1e-7) -> np.ndarray:
    """Central differences (error ~1e-14 here)."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        e = np.zeros_like(x)
        e[i] = h
        out[i] = (_smooth(x + e) - _smooth(x - e)) / (2 * h)
    return out


BLOCKS = np.array([0, 0, 0, 1])
LOWER = np.array([0.0, -np.inf, 0.0, 0.0])


def test_block_hessian_skips_pairs_across_blocks():
    x = np.array([0.45, 0.12, 0.25, 0.28])
    f0, g = _smooth(x), _smooth_gradient(x)
    full, n_full = _hessian(_smooth, x, f0, g)
    block, n_block = wide_rest.block_hessian(_smooth, x, f0, g, BLOCKS)
    assert n_full == 10 and n_block == 7
    within = BLOCKS[:, None] == BLOCKS[None, :]
    np.testing.assert_array_equal(block[within], full[within])
    assert (block[~within] == 0.0).all()


def test_newton_from_start_reaches_a_smooth_minimum():
    calls = [0]

    def objective(x):
        calls[0] += 1
        return _smooth(x)

    found = wide_rest.newton_from_start(
        objective, _smooth_gradient, np.array([0.45, 0.12, 0.25, 0.28]), LOWER, 1e-7, blocks=BLOCKS
    )
    assert found is not None
    np.testing.assert_allclose(found.summary.final_theta, [0.5, 0.1, 0.2, 0.3], atol=1e-9)
    assert found.summary.evaluations == calls[0]


def test_far_start_stops_before_the_pairs():
    """A start whose step on the Hessian's diagonal alone is over 1.0 relative gives None
    after the value at the start and the k diagonal values."""
    calls = [0]

    def objective(x):
        calls[0] += 1
        return _smooth(x)

    start = np.array([0.5, 0.1, 0.2, 0.05])  # the last entry 0.25 below its minimum
    found = wide_rest.newton_from_start(
        objective, _smooth_gradient, start, LOWER, 1e-7, blocks=BLOCKS
    )
    assert found is None and calls[0] == 1 + 4


def test_optimum_on_the_bound_gives_none():
    """Minimum of the third entry below its bound 0: Newton steps hand it to BOBYQA."""

    def shifted(x):
        return _smooth(x + np.array([0.0, 0.0, 0.25, 0.0]))

    def shifted_gradient(x):
        return _smooth_gradient(x + np.array([0.0, 0.0, 0.25, 0.0]))

    found = wide_rest.newton_from_start(
        shifted, shifted_gradient, np.array([0.5, 0.1, 0.08, 0.3]), LOWER, 1e-7, blocks=BLOCKS
    )
    assert found is None


def test_off_diagonal_entry_near_zero_counts_against_its_template():
    x = np.array([0.5, 1e-4, 0.2, 0.3])
    step = np.array([0.0, 0.02, 0.0, 0.0])
    split = wide_rest._split_blocks(BLOCKS, LOWER)
    assert wide_rest._relative(step, x) == pytest.approx(20.0)  # against 1e-3
    assert wide_rest._relative(step, x, split) == pytest.approx(0.04)  # against 0.5
    assert wide_rest._relative(step, x, split, 0.1) == pytest.approx(0.4)
