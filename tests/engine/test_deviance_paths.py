"""The deviance's two update paths (dense for small models, sparse pattern for large) agree.

Small test designs take the dense path; forcing the sparse one (as InstEval-sized models
use) must give the same deviance and the same factor to rounding.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_dense_agreement import DESIGNS, _term

import mixedmodels.linalg.blocked as deviance_module
from mixedmodels.covariance import CovarianceStructure, group_terms
from mixedmodels.linalg.blocked import BlockedSystem
from mixedmodels.linalg.cross_products import compute_cross_products
from mixedmodels.objective.profiled_deviance import ProfiledDeviance


@pytest.mark.parametrize("name", sorted(DESIGNS))
@pytest.mark.parametrize("reml", [True, False])
def test_dense_and_sparse_updates_agree(name, reml, monkeypatch):
    rng = np.random.default_rng(7)
    n = 240
    terms = tuple(_term(rng, n, f"g{k}", nl, nc) for k, (nl, nc) in enumerate(DESIGNS[name]))
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.normal(size=n) + X @ np.array([1.0, 0.5])
    grouped = group_terms(terms)
    structure = CovarianceStructure.from_terms(grouped)
    A = compute_cross_products(grouped, X, y)
    dense = ProfiledDeviance(BlockedSystem(structure, A), reml=reml)
    monkeypatch.setattr(deviance_module, "_DENSE_UPDATE_LIMIT", -1)
    sparse = ProfiledDeviance(BlockedSystem(structure, A), reml=reml)
    assert dense.system._dense and not sparse.system._dense
    for _ in range(3):
        theta = structure.initial_theta() * 0.7 + rng.uniform(-0.4, 0.4, structure.ntheta)
        theta = np.maximum(theta, structure.lower_bounds())
        assert sparse(theta) == pytest.approx(dense(theta), rel=1e-12)
        fd, fs = dense.factor(theta), sparse.factor(theta)
        assert sparse.objective(fs) == pytest.approx(dense(theta), rel=1e-12)
        np.testing.assert_allclose(fs.LXX, fd.LXX, rtol=1e-10, atol=1e-12)
        if fd.L22 is not None:
            np.testing.assert_allclose(fs.L22, fd.L22, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(fs.LX2, fd.LX2, rtol=1e-10, atol=1e-12)


def test_moment_start_is_near_the_optimum_for_a_random_intercept():
    rng = np.random.default_rng(3)
    n, levels = 2000, 100
    g = _term(rng, n, "g", levels, 1)
    X = np.ones((n, 1))
    y = 2.0 * rng.normal(size=levels)[g.refs] + rng.normal(size=n)  # theta = 2
    grouped = group_terms((g,))
    structure = CovarianceStructure.from_terms(grouped)
    dev = ProfiledDeviance(BlockedSystem(structure, compute_cross_products(grouped, X, y)))
    theta0, steps = dev.moment_start(0.5)
    assert 1.5 < theta0[0] < 2.5
    # Small model: the dense start's first trust region, 30% of the estimate.
    assert steps.tolist() == [0.3 * theta0[0]]


def test_sparse_update_when_some_rows_have_no_term1_effect(monkeypatch):
    """Rows with z = 0 in term 1 put entries in Zr'Zr that the rank update never touches."""
    rng = np.random.default_rng(11)
    n = 200
    slope = _term(rng, n, "g0", 25, 1)
    z = slope.z.copy()  # a term's arrays are read-only: edit copies
    z[:60] = 0.0  # term 1 is (0 + x | g0) with x = 0 on these rows
    slope = replace(slope, z=z)
    other = _term(rng, n, "g1", 8, 1)
    refs = other.refs.copy()
    refs[:60] = 7  # level 7 of g1 only on those rows: Zr'Zr has it, the update not
    refs[60:] = rng.integers(0, 7, n - 60)
    other = replace(other, refs=refs)
    terms = (slope, other, _term(rng, n, "g2", 3, 1))
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.normal(size=n) + X @ np.array([1.0, 0.5])
    grouped = group_terms(terms)
    structure = CovarianceStructure.from_terms(grouped)
    A = compute_cross_products(grouped, X, y)
    dense = ProfiledDeviance(BlockedSystem(structure, A))
    monkeypatch.setattr(deviance_module, "_DENSE_UPDATE_LIMIT", -1)
    sparse = ProfiledDeviance(BlockedSystem(structure, A))
    assert not sparse.system._rest_in_pattern
    theta = np.array([0.8, 1.3, 0.4])
    assert sparse(theta) == pytest.approx(dense(theta), rel=1e-12)
