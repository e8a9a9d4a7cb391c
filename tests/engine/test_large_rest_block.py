"""The large-model path with a sparse Zr'Zr, a handed-over workspace and pattern condVar.

Large rest blocks (more than ``SPARSE_REST_MIN`` levels outside term 1) keep ``Zr'Zr``
sparse, the deviance hands its m x m workspace over to the factor instead of copying it,
and the conditional variances read ``(L22 L22')^{-1}`` at the rank-update pattern's
positions. Small designs are forced onto that path here and checked against the dense
computation of the same formulas (``test_dense_agreement._dense_reference``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
from test_dense_agreement import DESIGNS, _dense_reference, _term

import mixedmodels.linalg.blocked as deviance_module
from mixedmodels.covariance import CovarianceStructure, group_terms
from mixedmodels.linalg.blocked import BlockedSystem
from mixedmodels.linalg.cross_products import compute_cross_products
from mixedmodels.linalg.solution import (
    conditional_variances,
    estimate,
    rest_inverse_in_place,
    rest_inverse_lower,
    solve_l22_transposed,
)
from mixedmodels.objective.profiled_deviance import ProfiledDeviance

WITH_REST = sorted(k for k, v in DESIGNS.items() if len(v) > 1)


def _problem(name: str, seed: int = 42, n: int = 240):
    rng = np.random.default_rng(seed)
    terms = tuple(_term(rng, n, f"g{k}", nl, nc) for k, (nl, nc) in enumerate(DESIGNS[name]))
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    y = rng.normal(size=n) + X @ np.array([1.0, 0.5, -0.3])
    grouped = group_terms(terms)
    structure = CovarianceStructure.from_terms(grouped)
    theta = structure.initial_theta() * 0.8 + rng.uniform(-0.3, 0.3, structure.ntheta)
    theta = np.maximum(theta, structure.lower_bounds())
    return grouped, structure, X, y, theta


def _large_path(structure, A, monkeypatch, reml=True) -> ProfiledDeviance:
    monkeypatch.setattr(deviance_module, "_DENSE_UPDATE_LIMIT", -1)
    dev = ProfiledDeviance(BlockedSystem(structure, A), reml=reml)
    assert not dev.system._dense
    return dev


@pytest.mark.parametrize("name", WITH_REST)
def test_sparse_and_dense_zrtzr_hold_the_same_numbers(name):
    grouped, _, X, y, _ = _problem(name)
    dense = compute_cross_products(grouped, X, y, sparse_rest=False)
    sparse = compute_cross_products(grouped, X, y, sparse_rest=True)
    assert isinstance(dense.zrtzr, np.ndarray) and sp.issparse(sparse.zrtzr)
    np.testing.assert_allclose(sparse.zrtzr.toarray(), dense.zrtzr, rtol=1e-14)
    np.testing.assert_array_equal(sparse.zrtzr_diagonal(), np.diagonal(dense.zrtzr))
    for a, b in zip(sparse.zrtzr_lower(), dense.zrtzr_lower(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    # Chunks of rows add up in the sparse storage too.
    cut = 97
    parts = [
        compute_cross_products(
            grouped,
            X[s],
            y[s],
            refs=[t.refs[s] for t in grouped],
            zs=[t.z[s] for t in grouped],
            sparse_rest=True,
        )
        for s in (slice(0, cut), slice(cut, None))
    ]
    total = parts[0] + parts[1]
    assert sp.issparse(total.zrtzr)
    np.testing.assert_allclose(total.zrtzr.toarray(), dense.zrtzr, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", WITH_REST)
@pytest.mark.parametrize("sparse_rest", [False, True])
@pytest.mark.parametrize("reml", [True, False])
def test_large_path_equals_dense_reference(name, sparse_rest, reml, monkeypatch):
    grouped, structure, X, y, theta = _problem(name)
    A = compute_cross_products(grouped, X, y, sparse_rest=sparse_rest)
    dev = _large_path(structure, A, monkeypatch, reml)
    ref_dev, ref_beta, ref_b, ref_varb = _dense_reference(structure, X, y, theta, reml)
    assert dev(theta) == pytest.approx(ref_dev, rel=1e-11)
    f = dev.factor(theta)
    assert dev.objective(f) == pytest.approx(ref_dev, rel=1e-11)
    est = estimate(dev.system, f, dev.reml)
    np.testing.assert_allclose(est.beta, ref_beta, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(
        np.concatenate([b.ravel() for b in est.b]), ref_b, rtol=1e-8, atol=1e-10
    )
    offset = 0
    for term, v in zip(
        structure.terms, conditional_variances(dev.system, f, est.sigma), strict=True
    ):
        p = term.ncols
        for lvl in range(term.nlevels):
            s = offset + lvl * p
            want = ref_varb[s : s + p, s : s + p]
            np.testing.assert_allclose(v[lvl], want, rtol=1e-8, atol=1e-12)
        offset += term.nranef


@pytest.mark.parametrize("scalar_rest", [True, False])
def test_sparse_zrtzr_outside_the_update_pattern(scalar_rest, monkeypatch):
    """Rows with z = 0 in term 1 put entries in Zr'Zr that the rank update never touches."""
    rng = np.random.default_rng(11)
    n = 200
    slope = _term(rng, n, "g0", 25, 1)
    z = slope.z.copy()  # a term's arrays are read-only: edit copies
    z[:60] = 0.0  # term 1 is (0 + x | g0) with x = 0 on these rows
    slope = replace(slope, z=z)
    other = _term(rng, n, "g1", 8, 1 if scalar_rest else 2)
    refs = other.refs.copy()
    refs[:60] = 7  # level 7 of g1 only on those rows: Zr'Zr has it, the update not
    refs[60:] = rng.integers(0, 7, n - 60)
    other = replace(other, refs=refs)
    terms = (slope, other, _term(rng, n, "g2", 3, 1))
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.normal(size=n) + X @ np.array([1.0, 0.5])
    grouped = group_terms(terms)
    structure = CovarianceStructure.from_terms(grouped)
    dense = ProfiledDeviance(BlockedSystem(structure, compute_cross_products(grouped, X, y)))
    A = compute_cross_products(grouped, X, y, sparse_rest=True)
    large = _large_path(structure, A, monkeypatch)
    assert not large.system._rest_in_pattern
    theta = structure.initial_theta() * 0.9 + 0.1
    assert large(theta) == pytest.approx(dense(theta), rel=1e-12)
    ref = _dense_reference(structure, X, y, theta, True)
    f = large.factor(theta)
    est = estimate(large.system, f, large.reml)
    np.testing.assert_allclose(est.beta, ref[1], rtol=1e-9, atol=1e-11)
    offset = 0
    for term, v in zip(
        structure.terms, conditional_variances(large.system, f, est.sigma), strict=True
    ):
        p = term.ncols
        for lvl in range(term.nlevels):
            s = offset + lvl * p
            np.testing.assert_allclose(v[lvl], ref[3][s : s + p, s : s + p], rtol=1e-8, atol=1e-12)
        offset += term.nranef


def test_factor_owns_its_array_and_survives_later_evaluations(monkeypatch):
    grouped, structure, X, y, theta = _problem("crossed_scalar")
    dev = _large_path(structure, compute_cross_products(grouped, X, y), monkeypatch)
    f = dev.factor(theta)
    assert dev.system._S is None  # handed over: the factor holds the only m x m array
    L = f.L.copy()
    np.testing.assert_array_equal(np.triu(f.L, 1), 0.0)
    assert np.shares_memory(f.L22, f.L) and np.shares_memory(f.LXX, f.L)
    other = theta * 1.3 + 0.05
    dev(other)
    dev.factor(other)
    dev(theta * 0.7)
    np.testing.assert_array_equal(f.L, L)  # later evaluations did not touch it


def test_repeated_theta_is_not_factored_again(monkeypatch):
    grouped, structure, X, y, theta = _problem("crossed_vector")
    dev = _large_path(structure, compute_cross_products(grouped, X, y), monkeypatch)
    calls = []
    original = dev.system._cholesky

    def counting(t):
        calls.append(np.array(t, copy=True))
        return original(t)

    monkeypatch.setattr(dev.system, "_cholesky", counting)
    first = dev(theta)
    assert dev(theta.copy()) == first  # remembered
    assert len(calls) == 1
    f = dev.factor(theta)  # the workspace holds this theta's factor: reused
    assert len(calls) == 1
    fresh = ProfiledDeviance(BlockedSystem(structure, dev.A)).factor(theta)
    np.testing.assert_allclose(f.L, fresh.L, rtol=1e-13, atol=1e-15)
    assert dev.objective(f) == pytest.approx(first, rel=1e-14)
    assert dev.factor(theta) is f  # asked again before any other evaluation: the same
    assert len(calls) == 1
    dev(theta * 1.1)  # needs a workspace: the kept factor is let go
    assert dev.system._kept is None
    again = dev.factor(theta)
    assert again is not f and len(calls) == 3
    np.testing.assert_array_equal(again.L, f.L)
    other = theta * 0.9
    dev.factor(other)
    assert dev(other) == pytest.approx(
        ProfiledDeviance(BlockedSystem(structure, dev.A))(other), rel=1e-14
    )
    assert len(calls) == 4  # the value came from the factor just computed
    assert dev.evaluations == 4


def test_non_positive_definite_point_does_not_leave_a_stale_factor(monkeypatch):
    grouped, structure, X, y, theta = _problem("crossed_scalar")
    dev = _large_path(structure, compute_cross_products(grouped, X, y), monkeypatch)
    dev(theta)
    monkeypatch.setattr(
        deviance_module,
        "_dpotrf",
        lambda a, **kw: (a, 1),  # a failed factorisation after S was written
    )
    assert dev(theta * 1.1) == float("inf")
    assert dev.system._S_theta is None


@pytest.mark.parametrize("name", WITH_REST)
def test_rest_inverse_in_place_equals_the_copying_one(name, monkeypatch):
    grouped, structure, X, y, theta = _problem(name)
    dev = _large_path(structure, compute_cross_products(grouped, X, y), monkeypatch)
    f = dev.factor(theta)
    want = np.tril(rest_inverse_lower(f))
    S = f.L22 @ f.L22.T
    np.testing.assert_allclose(np.tril(np.linalg.inv(S)), want, rtol=1e-10, atol=1e-13)
    got = rest_inverse_in_place(dev, f)
    assert np.shares_memory(got, f.L)
    assert dev.system._kept is None  # released: factor() computes afresh
    scale = np.abs(want).max()
    np.testing.assert_allclose(np.tril(got), want, rtol=0, atol=1e-12 * scale)
    fresh = dev.factor(theta)
    assert fresh is not f
    np.testing.assert_allclose(fresh.L22 @ fresh.L22.T, S, rtol=1e-12, atol=1e-12)


def test_solve_l22_transposed_takes_vectors_and_matrices(monkeypatch):
    grouped, structure, X, y, theta = _problem("crossed_vector")
    dev = _large_path(structure, compute_cross_products(grouped, X, y), monkeypatch)
    f = dev.factor(theta)
    rng = np.random.default_rng(5)
    for v in (rng.normal(size=f.L22.shape[0]), rng.normal(size=(f.L22.shape[0], 3))):
        want = np.linalg.solve(f.L22.T, v)
        np.testing.assert_allclose(solve_l22_transposed(f, v), want, rtol=1e-10, atol=1e-12)
