"""ANOVA tables against lmerTest 3.1.3 ``anova(fit, type = 3, ddf = ...)``.

Tolerances: SumSq, MeanSq, DenDF, F 1e-3 relative; p 1e-3 relative or 1e-6 absolute.
Type I and II have no stored R reference; they are checked through identities.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_satterthwaite import MODELS, assert_p_close, fit, reference

from mixedmodels.inference.anova import (
    ANOVA_COLUMNS,
    anova,
    contrasts_type1,
    contrasts_type3,
    doolittle,
)

CASES = [
    (n, r, d)
    for n in MODELS
    for r in (True, False)
    for d in ("satterthwaite", "kenward-roger")
    if r or d == "satterthwaite"
]
KEY = {"satterthwaite": "Satterthwaite", "kenward-roger": "Kenward-Roger"}


@pytest.mark.parametrize(("name", "reml", "ddf"), CASES)
def test_type3_matches_lmertest(name, reml, ddf):
    ref = pd.DataFrame(reference(name, reml)["anova_type3"][KEY[ddf]])
    tab = anova(fit(name, reml), type=3, ddf=ddf)
    assert list(tab.columns) == ANOVA_COLUMNS
    if ref.empty:
        assert tab.empty
        return
    ref = ref.set_index("term")
    assert list(tab.index) == list(ref.index)
    np.testing.assert_array_equal(tab["NumDF"], ref["NumDF"])
    for col in ("SumSq", "MeanSq", "DenDF", "F"):
        np.testing.assert_allclose(tab[col].astype(float), ref[col], rtol=1e-3, err_msg=col)
    assert_p_close(tab["p"], ref["p"])


def test_type3_is_invariant_to_the_reference_level():
    a = anova(fit("ratpup_b", True))
    b = anova(fit("ratpup_b_maleref", True))
    pd.testing.assert_frame_equal(a, b, rtol=1e-4)  # two fits: optimiser noise only


def test_type3_interaction_hypotheses_are_not_dropping_columns():
    # With an interaction, the treatment hypothesis involves the interaction coefficients.
    L = contrasts_type3(fit("ratpup_a", True))["treatment"]
    assert L.shape == (2, 7)
    assert np.any(L[:, 5:] != 0)


def test_type1_rows_span_cholesky_rows():
    f = fit("ratpup_a", True)
    XtX = f.design.X.T @ f.design.X
    R = np.linalg.cholesky(XtX).T  # upper
    for label, L in contrasts_type1(f).items():
        cols = {"treatment": [1, 2], "sex": [3], "litsize": [4], "treatment:sex": [5, 6]}[label]
        both = np.vstack([L, R[cols]])
        assert np.linalg.matrix_rank(both, tol=1e-8 * np.abs(both).max()) == len(cols)


def test_doolittle_factorises():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(5, 5))
    A = A @ A.T + 5 * np.eye(5)
    L, U = doolittle(A, eps=0.0)
    np.testing.assert_allclose(L @ U, A, rtol=1e-12)
    np.testing.assert_allclose(np.diag(L), 1.0)


def test_type1_and_type2_identities():
    f = fit("ratpup_b", True)
    t1, t2, t3 = (anova(f, type=k) for k in (1, 2, 3))
    # The last term of a sequential table is adjusted for everything: equals type II/III.
    assert t1.loc["litsize", "F"] == pytest.approx(t3.loc["litsize", "F"], rel=1e-10)
    # Main-effects model: type II hypotheses = type III hypotheses.
    pd.testing.assert_frame_equal(t2, t3, rtol=1e-8)
    # With an interaction, type II main effects are not adjusted for it (differ from type III).
    g = fit("ratpup_a", True)
    assert anova(g, type="II").loc["treatment", "F"] != pytest.approx(
        anova(g).loc["treatment", "F"], rel=1e-3
    )
    assert anova(g, type=2).loc["treatment:sex", "F"] == pytest.approx(
        anova(g).loc["treatment:sex", "F"], rel=1e-8
    )


def test_balanced_split_plot_types_agree():
    f = fit("cake", True)
    t1, t3 = anova(f, type=1), anova(f, type=3)
    np.testing.assert_allclose(t1["F"], t3["F"], rtol=1e-6)  # type III L is zapsmall-rounded


def test_other_ddf_and_errors():
    f = fit("orthodont", True)
    res = anova(f, ddf="residual")
    assert (res["DenDF"] == f.nobs - 4).all()
    z = anova(f, ddf="normal")
    assert np.isinf(z["DenDF"]).all()
    np.testing.assert_allclose(z["F"], res["F"])
    with pytest.raises(ValueError, match="ANOVA type"):
        anova(f, type=4)
    assert anova(fit("dyestuff", True)).empty
