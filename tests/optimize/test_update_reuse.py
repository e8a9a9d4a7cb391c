"""The blocked system's rank update reused across evaluations that share term 1's theta.

On the large path ``C W C'`` (``C = Zr'Z1``) depends on theta through term 1's blocks
``W_l`` alone; a rest term's entry (the grid's item variance) only scales the rest block.
An evaluation that changes only rest entries reuses the last update (at 1e8 rows x 1e5
users x 1e4 items one update is ~500 s of CPU), and the wide-rest Newton start steps the
rest entries first in its value Hessian so that their points follow the value at the
start. Both must leave every number as it was, to the bit.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_wide_rest import FORMULA, _frame

import mixedmodels as mm
import mixedmodels.linalg.blocked as blocked
import mixedmodels.objective.gradient as gradient_module
from mixedmodels.linalg.blocked import BlockedSystem
from mixedmodels.optimize.finish import _hessian
from mixedmodels.optimize.wide_rest import block_hessian


def _large_fit(data, monkeypatch, reuse: bool = True):
    """The grid's model on the large path with its rest block counted as wide (Newton
    start); ``reuse`` False forgets the kept update before every evaluation. Returns the
    fit, the factorisations and the rank updates formed."""
    cholesky, schur = BlockedSystem._cholesky, BlockedSystem._schur
    count, systems = [0], []

    def counted(self, *args, **kwargs):
        count[0] += 1
        if not any(s is self for s in systems):
            systems.append(self)
        return cholesky(self, *args, **kwargs)

    def forgetful(self, *args, **kwargs):
        self._update_key = None
        return schur(self, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)
        mp.setattr(gradient_module, "_CHEAP_REST_MAX", 10)
        mp.setattr(BlockedSystem, "_cholesky", counted)
        if not reuse:
            mp.setattr(BlockedSystem, "_schur", forgetful)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = mm.lmer(FORMULA, data, reml=False)
    return fit, count[0], sum(s.rank_updates for s in systems)


def test_rest_only_change_reuses_the_update(monkeypatch):
    """A new item entry alone: no new update, and the criterion's pieces equal those of a
    fresh system at that theta to the bit; a new term-1 entry forms one."""
    data = _frame(users=300, per=15, items=80, seed=4)
    fit, _, _ = _large_fit(data, monkeypatch)
    system = fit.deviance_function.system
    monkeypatch.setattr(blocked, "_DENSE_UPDATE_LIMIT", -1)
    fresh = BlockedSystem(system.structure, system.A)
    theta = np.asarray(fit.theta, dtype=np.float64)
    other = theta.copy()
    other[-1] *= 1.7  # (1 | item)'s entry
    moved = theta.copy()
    moved[0] *= 1.1  # the user intercept's
    system.log_diagonal(theta * 1.0001)  # term 1 elsewhere: the next point forms one
    before = system.rank_updates
    system.log_diagonal(theta * 1.0001)  # factored again, the update reused
    assert system.rank_updates == before
    points = [theta, other, moved, other]
    updates = [1, 0, 1, 1]
    for point, new in zip(points, updates, strict=True):
        before = system.rank_updates
        a = system.log_diagonal(point)
        assert system.rank_updates - before == new
        b = fresh.log_diagonal(point)
        assert a[0] == b[0] and a[2] == b[2]
        np.testing.assert_array_equal(a[1], b[1])


def test_newton_start_forms_one_update_fewer(monkeypatch):
    """The wide-rest Newton start: the item entry's Hessian value reuses the start's
    update; the fit is the one without reuse, to the bit."""
    data = _frame()
    fit, made, updates = _large_fit(data, monkeypatch)
    ref, made_ref, updates_ref = _large_fit(data, monkeypatch, reuse=False)
    assert fit.opt.optimizer == "newton"
    assert made == made_ref and updates_ref == made_ref
    assert updates == made - 1
    assert fit.objective == ref.objective
    np.testing.assert_array_equal(np.asarray(fit.theta), np.asarray(ref.theta))


def _curved(x: np.ndarray) -> float:
    return float(np.exp(0.3 * x[0] - 0.2 * x[3]) + (x[1] * x[2]) ** 2 + x @ x + x[3] ** 4)


@pytest.mark.parametrize("blocks", [[0, 0, 0, 1], [0, 1, 0, 2], [1, 1, 0, 0]])
def test_block_hessian_steps_other_blocks_first(blocks):
    """The same Hessian as the unpermuted differences, to the bit; the entries outside
    the first entry's block come first; ``diagonal_ok`` sees the diagonal in theta's
    order."""
    x = np.array([0.7, -0.4, 1.3, 0.2])
    g = np.array([0.1, -0.3, 0.2, 0.05])
    f0 = _curved(x)
    blocks = np.array(blocks)
    seen: list[np.ndarray] = []

    def recorded(y: np.ndarray) -> float:
        seen.append(y - x)
        return _curved(y)

    H, count = block_hessian(recorded, x, f0, g, blocks)
    H_ref, count_ref = _hessian(_curved, x, f0, g, blocks=blocks)
    np.testing.assert_array_equal(H, H_ref)
    assert count == count_ref
    first = np.flatnonzero(blocks != blocks[0])
    for step, i in zip(seen, first, strict=False):
        assert np.flatnonzero(step).tolist() == [i]
    diagonals: list[np.ndarray] = []
    block_hessian(_curved, x, f0, g, blocks, diagonal_ok=lambda d: diagonals.append(d) or True)
    np.testing.assert_array_equal(diagonals[0], np.diag(H_ref))
