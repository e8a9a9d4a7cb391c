"""The blocked engine against a dense computation of the same formulas.

Bates et al. (2015, eqs. 34, 41): the deviance, beta, b and Var(b | y) follow from the
Cholesky factor of the dense augmented matrix; the blocked code must agree to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla

from mixedmodels.covariance import CovarianceStructure, group_terms
from mixedmodels.design.model_design import RandomEffectsTerm
from mixedmodels.linalg.cross_products import compute_cross_products
from mixedmodels.objective.profiled_deviance import ProfiledDeviance
from mixedmodels.objective.solution import conditional_variances, estimate


def _term(rng, n, group, nlevels, ncols):
    refs = rng.integers(0, nlevels, n)
    refs[:nlevels] = np.arange(nlevels)  # every level present
    z = np.column_stack([np.ones(n)] + [rng.normal(size=n) for _ in range(ncols - 1)])
    names = ("(Intercept)", *tuple(f"x{j}" for j in range(1, ncols)))
    levels = tuple(f"{group}{i}" for i in range(nlevels))
    return RandomEffectsTerm(group, levels, refs.astype(np.int64), z, names)


def _dense_z(term, ncols):
    n = term.refs.shape[0]
    Z = np.zeros((n, term.nlevels * ncols))
    for j in range(ncols):
        Z[np.arange(n), term.refs * ncols + j] = term.z[:, j]
    return Z


def _dense_reference(structure, X, y, theta, reml):
    Zs, lams = [], []
    for T, term in zip(structure.templates(theta), structure.terms, strict=True):
        Zs.append(_dense_z(term, term.ncols))
        lams.append(np.kron(np.eye(term.nlevels), T))
    Z = np.hstack(Zs)
    Lam = sla.block_diag(*lams)
    ZL = Z @ Lam
    q = ZL.shape[1]
    n, p = X.shape
    M = np.block(
        [
            [ZL.T @ ZL + np.eye(q), ZL.T @ X, (ZL.T @ y)[:, None]],
            [X.T @ ZL, X.T @ X, (X.T @ y)[:, None]],
            [(y @ ZL)[None, :], (y @ X)[None, :], np.array([[y @ y]])],
        ]
    )
    L = np.linalg.cholesky(M)
    logdet_z = 2 * np.sum(np.log(np.diag(L)[:q]))
    logdet_x = 2 * np.sum(np.log(np.diag(L)[q : q + p]))
    r2 = L[-1, -1] ** 2
    if reml:
        dev = logdet_z + logdet_x + (n - p) * (1 + np.log(2 * np.pi * r2 / (n - p)))
    else:
        dev = logdet_z + n * (1 + np.log(2 * np.pi * r2 / n))
    # Penalised least squares: [u; beta] from the full system.
    sol = np.linalg.solve(M[:-1, :-1], M[:-1, -1])
    u, beta = sol[:q], sol[q:]
    b = Lam @ u
    sigma2 = r2 / ((n - p) if reml else n)
    Lz = L[:q, :q]
    var_u = np.linalg.inv(Lz @ Lz.T) * sigma2
    var_b = Lam @ var_u @ Lam.T
    return dev, beta, b, var_b


DESIGNS = {
    # (levels, ncols) per term, in formula order
    "one_scalar": [(12, 1)],
    "one_vector": [(15, 3)],
    "crossed_scalar": [(20, 1), (7, 1), (3, 1)],
    "crossed_vector": [(18, 2), (6, 2)],
    "vector_then_scalar": [(10, 1), (9, 3)],
}


@pytest.mark.parametrize("name", sorted(DESIGNS))
@pytest.mark.parametrize("reml", [True, False])
def test_blocked_engine_equals_dense(name, reml):
    rng = np.random.default_rng(42)
    n = 240
    terms = tuple(_term(rng, n, f"g{k}", nl, nc) for k, (nl, nc) in enumerate(DESIGNS[name]))
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    y = rng.normal(size=n) + X @ np.array([1.0, 0.5, -0.3])
    grouped = group_terms(terms)
    structure = CovarianceStructure.from_terms(grouped)
    A = compute_cross_products(grouped, X, y)
    dev = ProfiledDeviance(structure, A, reml=reml)
    theta = structure.initial_theta() * 0.8 + rng.uniform(-0.3, 0.3, structure.ntheta)
    theta = np.maximum(theta, structure.lower_bounds())
    ref_dev, ref_beta, ref_b, ref_varb = _dense_reference(structure, X, y, theta, reml)
    f = dev.factor(theta)
    assert dev.objective(f) == pytest.approx(ref_dev, rel=1e-11)
    est = estimate(dev, f)
    np.testing.assert_allclose(est.beta, ref_beta, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(
        np.concatenate([b.ravel() for b in est.b]), ref_b, rtol=1e-8, atol=1e-10
    )
    cv = conditional_variances(dev, f, est.sigma)
    diag_blocks = []
    offset = 0
    for term, v in zip(structure.terms, cv, strict=True):
        p = term.ncols
        for lvl in range(term.nlevels):
            s = offset + lvl * p
            diag_blocks.append((v[lvl], ref_varb[s : s + p, s : s + p]))
        offset += term.nranef
    for got, want in diag_blocks:
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12)


def test_uncorrelated_terms_on_one_factor_are_merged_in_lme4_order():
    rng = np.random.default_rng(1)
    n = 100
    a = _term(rng, n, "g", 10, 1)
    slope = RandomEffectsTerm("g", a.levels, a.refs, rng.normal(size=(n, 1)), ("x",))
    grouped = group_terms((a, slope))
    assert len(grouped) == 1
    structure = CovarianceStructure.from_terms(grouped)
    assert structure.theta_names() == ["g.(Intercept)", "g.x"]
    T = structure.templates(np.array([0.5, 0.25]))[0]
    np.testing.assert_array_equal(T, np.diag([0.5, 0.25]))


def test_cross_products_of_chunks_add_up():
    rng = np.random.default_rng(7)
    n = 150
    terms = (_term(rng, n, "a", 12, 2), _term(rng, n, "b", 5, 1))
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.normal(size=n)
    grouped = group_terms(terms)
    whole = compute_cross_products(grouped, X, y)
    cut = 61
    parts = [
        compute_cross_products(
            grouped, X[s], y[s], refs=[t.refs[s] for t in grouped], zs=[t.z[s] for t in grouped]
        )
        for s in (slice(0, cut), slice(cut, n))
    ]
    total = parts[0] + parts[1]
    np.testing.assert_allclose(total.z1tz1, whole.z1tz1)
    np.testing.assert_allclose(total.zrtz1.toarray(), whole.zrtz1.toarray())
    np.testing.assert_allclose(total.zrtzr, whole.zrtzr)
    np.testing.assert_allclose(total.xytxy, whole.xytxy)
    assert total.nobs == n
