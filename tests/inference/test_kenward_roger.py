"""Kenward-Roger against pbkrtest 0.5.2 (via lmerTest 3.1.3; reference JSON in ./reference).

Tolerances: Phi_A, SE, df, t 1e-3 relative; p 1e-3 relative or 1e-6 absolute. The
Woodbury-based computation is also checked against a dense n x n implementation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_satterthwaite import MODELS, assert_p_close, fit, reference

import mixedmodels as mm
from mixedmodels.errors import ModelSpecificationError
from mixedmodels.inference.kenward_roger import (
    _lambda_dense,
    _parameter_patterns,
    kenward_roger_covariance,
    kenward_roger_df,
    kenward_roger_f_test,
)
from mixedmodels.inference.wald import coef_table, linear_hypothesis

REML_FITS = list(MODELS)


@pytest.mark.parametrize("name", REML_FITS)
def test_matches_pbkrtest(name):
    f = fit(name, True)
    ref = reference(name, True)
    kr = kenward_roger_covariance(f)
    V = np.asarray(ref["vcov_fixed_kr"]["matrix"])
    np.testing.assert_allclose(kr.vcov_beta_adjusted, V, rtol=1e-3, atol=1e-6 * np.abs(V).max())
    fe = ref["fixed_effects"]
    tab = coef_table(f, ddf="kenward-roger")
    np.testing.assert_allclose(tab["se"], [r["se_kr"] for r in fe], rtol=1e-3)
    np.testing.assert_allclose(tab["df"], [r["df_kr"] for r in fe], rtol=1e-3)
    np.testing.assert_allclose(tab["t"], [r["t_kr"] for r in fe], rtol=1e-3)
    assert_p_close(tab["p"], [r["p_kr"] for r in fe])


def _dense_phi_a(f):
    """pbkrtest's vcovAdj literally, with n x n matrices (small models only)."""
    n = f.nobs
    Z = np.hstack(
        [
            np.concatenate(
                [np.eye(t.nlevels)[t.refs][:, :, None] * t.z[:, None, :]], axis=0
            ).reshape(n, -1)
            for t in f.structure.terms
        ]
    )
    X = f.design.X
    Lam = _lambda_dense(f)
    Si = np.linalg.inv(f.sigma**2 * (Z @ Lam @ Lam.T @ Z.T + np.eye(n)))
    G = []
    for a, b, _ in _parameter_patterns(f):
        D = np.zeros((Z.shape[1],) * 2)
        np.add.at(D, (a, b), 1.0)
        G.append(Z @ D @ Z.T)
    G.append(np.eye(n))
    Phi = np.linalg.inv(X.T @ Si @ X)
    P = [-X.T @ Si @ g @ Si @ X for g in G]
    m = len(G)
    Q = [[X.T @ Si @ G[r] @ Si @ G[s] @ Si @ X for s in range(m)] for r in range(m)]
    Pm = Si - Si @ X @ Phi @ X.T @ Si
    info = np.array([[0.5 * np.trace(Pm @ G[r] @ Pm @ G[s]) for s in range(m)] for r in range(m)])
    W = np.linalg.inv(info)
    U = sum(W[r, s] * (Q[r][s] - P[r] @ Phi @ P[s]) for r in range(m) for s in range(m))
    return Phi + 2 * Phi @ U @ Phi, W


@pytest.mark.parametrize("name", ["ratpup_d", "ratpup_c", "penicillin", "orthodont"])
def test_woodbury_equals_dense(name):
    f = fit(name, True)
    kr = kenward_roger_covariance(f)
    PhiA, W = _dense_phi_a(f)
    np.testing.assert_allclose(kr.vcov_beta_adjusted, PhiA, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(kr.W, W, rtol=1e-7)


def test_one_row_f_is_squared_t_and_unscaled():
    f = fit("ratpup_a", True)
    tab = coef_table(f, ddf="kr")
    res = kenward_roger_f_test(f, np.eye(7)[[1]])
    assert res.scaling == pytest.approx(1.0, rel=1e-10)
    assert res.F == pytest.approx(tab["t"].iloc[1] ** 2, rel=1e-10)
    assert res.den_df == pytest.approx(tab["df"].iloc[1], rel=1e-10)
    assert kenward_roger_df(f, np.eye(7)[1])[0] == pytest.approx(res.den_df)


def test_linear_hypothesis_kr():
    f = fit("ratpup_b", True)
    ref = {r["term"]: r for r in reference("ratpup_b", True)["anova_type3"]["Kenward-Roger"]}
    res = linear_hypothesis(f, "treatmentHigh = 0, treatmentLow = 0", ddf="Kenward-Roger")
    assert res.F == pytest.approx(ref["treatment"]["F"], rel=1e-3)
    assert res.den_df == pytest.approx(ref["treatment"]["DenDF"], rel=1e-3)
    assert_p_close(res.p, ref["treatment"]["p"])


def test_ml_fit_is_refused():
    with pytest.raises(ModelSpecificationError, match="REML"):
        kenward_roger_covariance(fit("ratpup_b", False))


def test_kenward_roger_with_a_sparse_rest_block(monkeypatch):
    """Above SPARSE_REST_MIN rest rows Zr'Zr is stored sparse; KR must read it as well."""
    import mixedmodels.linalg.cross_products as cross_products

    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    dense = mm.lmer(formula, "penicillin")
    monkeypatch.setattr(cross_products, "SPARSE_REST_MIN", 0)
    sparse = mm.lmer(formula, "penicillin")
    assert sparse.model.cross_products.zrtzr.__class__.__name__.startswith("csr")
    np.testing.assert_allclose(sparse.vcov_kenward_roger, dense.vcov_kenward_roger, rtol=1e-10)
    pd.testing.assert_frame_equal(
        sparse.coef_table(ddf="kenward-roger"), dense.coef_table(ddf="kenward-roger"), rtol=1e-8
    )
