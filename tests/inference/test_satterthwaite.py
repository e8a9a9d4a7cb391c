"""Satterthwaite df and Wald tests against lmerTest 3.1.3 (reference JSON in ./reference).

Tolerances (the issue's): df and t 1e-3 relative; p 1e-3 relative or 1e-6 absolute.
lmerTest differentiates numerically (~1e-6 relative noise), so agreement is ~1e-6
except where the optimum is flat in theta (ratpup_d REML: ~2e-4, the fits' theta differ).
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.errors import DataError, FormulaError
from mixedmodels.inference.satterthwaite import (
    f_test_ddf,
    satterthwaite_df,
    satterthwaite_f_test,
    unprofiled_deviance,
    varpar_covariance_of,
)
from mixedmodels.inference.wald import coef_table, linear_hypothesis, parse_hypothesis

REF = Path(__file__).parent / "reference"
MODELS = {
    "sleepstudy_int": ("Reaction ~ Days + (1|Subject)", "sleepstudy"),
    "sleepstudy_corr": ("Reaction ~ Days + (Days|Subject)", "sleepstudy"),
    "sleepstudy_uncorr": ("Reaction ~ Days + (Days||Subject)", "sleepstudy"),
    "dyestuff": ("Yield ~ 1 + (1|Batch)", "Dyestuff"),
    "dyestuff2": ("Yield ~ 1 + (1|Batch)", "Dyestuff2"),
    "penicillin": ("diameter ~ 1 + (1|plate) + (1|sample)", "Penicillin"),
    "pastes": ("strength ~ 1 + (1|batch/cask)", "Pastes"),
    "ratpup_a": ("weight ~ treatment*sex + litsize + (1|litter)", "ratpup"),
    "ratpup_b": ("weight ~ treatment + sex + litsize + (1|litter)", "ratpup"),
    "ratpup_b_maleref": ("weight ~ treatment + sex + litsize + (1|litter)", "ratpup"),
    "ratpup_c": ("weight ~ treatment + sex + litsize + (1|litter) + (0 + male|litter)", "ratpup"),
    "ratpup_d": ("weight ~ treatment + sex + litsize + (1 + sex|litter)", "ratpup"),
    "orthodont": ("distance ~ age*Sex + (age|Subject)", "Orthodont"),
    "cake": ("angle ~ recipe*temperature + (1|recipe:replicate)", "cake"),
}
FITS = [(name, reml) for name in MODELS for reml in (True, False)]


def reference(name: str, reml: bool) -> dict:
    return json.loads((REF / f"{name}_{'reml' if reml else 'ml'}.json").read_text())


def data(name: str) -> pd.DataFrame:
    """The dataset with the reference's factor coding (``data_prep.factors``)."""
    df = mm.load_dataset(MODELS[name][1]).copy()
    if name == "ratpup_c":  # (0 + dummy(sex, "Male") | litter)
        df["male"] = (df["sex"] == "Male").astype(float)
    if name == "ratpup_b_maleref":
        df["sex"] = pd.Categorical(df["sex"], categories=["Male", "Female"])
    if name == "cake":
        levels = reference("cake", True)["data_prep"]["factors"]["temperature"]["levels"]
        df["temperature"] = pd.Categorical(
            df["temperature"].astype(int).astype(str), categories=levels
        )
    return df


@functools.cache
def fit(name: str, reml: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mm.lmer(MODELS[name][0], data(name), reml=reml)


def assert_p_close(actual, expected, rtol=1e-3, atol=1e-6):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    ok = (np.abs(actual - expected) <= atol) | (np.abs(actual / expected - 1) <= rtol)
    assert ok.all(), (actual, expected)


@pytest.mark.parametrize(("name", "reml"), FITS)
def test_coef_table_matches_lmertest(name, reml):
    ref = reference(name, reml)["fixed_effects"]
    tab = coef_table(fit(name, reml), ddf="satterthwaite")
    assert list(tab.index) == [r["name"] for r in ref]
    np.testing.assert_allclose(tab["df"], [r["df_satterthwaite"] for r in ref], rtol=1e-3)
    np.testing.assert_allclose(tab["t"], [r["t"] for r in ref], rtol=1e-3)
    assert_p_close(tab["p"], [r["p_satterthwaite"] for r in ref])


@pytest.mark.parametrize(
    ("name", "reml"),
    [("sleepstudy_corr", True), ("ratpup_c", False), ("penicillin", True), ("dyestuff2", False)],
)
def test_unprofiled_deviance_equals_profiled_at_optimum(name, reml):
    f = fit(name, reml)
    d = unprofiled_deviance(f.deviance_function, f.theta, f.sigma)
    assert d == pytest.approx(f.objective, rel=1e-12)
    # sigma is at its optimum: moving it increases -2 log L
    assert unprofiled_deviance(f.deviance_function, f.theta, 1.01 * f.sigma) > d


def test_hessian_and_jacobian_against_finite_differences():
    f = fit("sleepstudy_corr", True)
    info = varpar_covariance_of(f)
    np.testing.assert_allclose(info.vcov_beta, f.estimates.vcov_beta, rtol=1e-10)
    assert np.all(np.linalg.eigvalsh(info.hessian) > 0)
    # The sigma row is analytic; check it with a plain central difference.
    dev, th, s = f.deviance_function, f.theta, f.sigma
    h = 1e-4 * s
    d2 = (
        unprofiled_deviance(dev, th, s + h) - 2 * f.objective + unprofiled_deviance(dev, th, s - h)
    ) / h**2
    assert info.hessian[-1, -1] == pytest.approx(d2, rel=1e-5)
    e = np.zeros_like(th)
    e[0] = 1e-4
    mixed = (
        unprofiled_deviance(dev, th + e, s + h)
        - unprofiled_deviance(dev, th + e, s - h)
        - unprofiled_deviance(dev, th - e, s + h)
        + unprofiled_deviance(dev, th - e, s - h)
    ) / (4 * e[0] * h)
    assert info.hessian[0, -1] == pytest.approx(mixed, rel=1e-4)


def test_f_test_ddf_rules():
    assert f_test_ddf([7.5]) == 7.5
    assert f_test_ddf([10.0, 10.0, 10.0]) == 10.0
    assert f_test_ddf([10.0, 1.5]) == 2.0
    nu = np.array([10.0, 20.0])
    E = np.sum(nu / (nu - 2))
    assert f_test_ddf(nu) == pytest.approx(2 * E / (E - 2))


def test_one_row_f_test_is_squared_t():
    f = fit("ratpup_a", True)
    tab = coef_table(f)
    res = satterthwaite_f_test(f, np.eye(7)[[4]])
    assert res.F == pytest.approx(tab["t"].iloc[4] ** 2, rel=1e-10)
    assert res.den_df == pytest.approx(tab["df"].iloc[4], rel=1e-10)
    assert res.num_df == 1
    assert res.mean_sq == pytest.approx(res.F * f.sigma**2)


def test_rank_deficient_contrast_uses_its_rank():
    f = fit("ratpup_b", True)
    L = np.array([[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 1, 0, 0]], float)
    full = satterthwaite_f_test(f, L[:2])
    redundant = satterthwaite_f_test(f, L)
    assert redundant.num_df == 2
    assert redundant.F == pytest.approx(full.F, rel=1e-10)
    # (the ddf depend on the eigen-basis of L V L', as in lmerTest, so they may differ)
    assert 20 < redundant.den_df < 30


def test_satterthwaite_df_for_several_rows_at_once():
    f = fit("orthodont", False)
    L = np.eye(4)
    np.testing.assert_allclose(satterthwaite_df(f, L), [satterthwaite_df(f, r)[0] for r in L])


# -- hypotheses from text ------------------------------------------------------------------
NAMES = [
    "(Intercept)",
    "treatmentHigh",
    "treatmentLow",
    "sexMale",
    "litsize",
    "treatmentHigh:sexMale",
    "treatmentLow:sexMale",
]


@pytest.mark.parametrize(
    ("text", "L", "rhs"),
    [
        ("treatmentHigh = treatmentLow", [[0, 1, -1, 0, 0, 0, 0]], [0]),
        (
            "treatmentHigh = 0, treatmentLow = 0",
            [[0, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0]],
            [0, 0],
        ),
        ("2*litsize - sexMale = 0.5", [[0, 0, 0, -1, 2, 0, 0]], [0.5]),
        ("litsize", [[0, 0, 0, 0, 1, 0, 0]], [0]),
        ("(Intercept) + 3 = 1", [[1, 0, 0, 0, 0, 0, 0]], [-2]),
        ("treatmentHigh:sexMale - treatmentLow:sexMale == 0", [[0, 0, 0, 0, 0, 1, -1]], [0]),
        ("(treatmentHigh + treatmentLow)/2 = -sexMale*1e-1", [[0, 0.5, 0.5, 0.1, 0, 0, 0]], [0]),
        (
            "`treatmentHigh` - 2 * (litsize - 1) = 0; sexMale = 1",
            [[0, 1, 0, 0, -2, 0, 0], [0, 0, 0, 1, 0, 0, 0]],
            [-2, 1],
        ),
    ],
)
def test_parse_hypothesis(text, L, rhs):
    L_, rhs_, labels = parse_hypothesis(text, NAMES)
    np.testing.assert_allclose(L_, L)
    np.testing.assert_allclose(rhs_, rhs)
    assert len(labels) == len(rhs)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("treatmenthigh = 0", "unknown coefficient 'treatmenthigh'.*did you mean 'treatmentHigh'"),
        ("treatmentHigh:sexmale = 0", "unknown coefficient 'treatmentHigh:sexmale'"),
        ("litsize * sexMale = 0", "product of two coefficients"),
        ("1 / litsize = 0", "division by a coefficient"),
        ("litsize = ", "expected a coefficient name or a number"),
        ("(litsize = 0", "expected '\\)'"),
        ("litsize = 0 sexMale", "unexpected"),
        ("__import__('os')", "unknown coefficient"),
        ("", "empty"),
    ],
)
def test_parse_errors(text, match):
    with pytest.raises(FormulaError, match=match):
        parse_hypothesis(text, NAMES)


def test_parse_error_reports_position():
    with pytest.raises(FormulaError) as err:
        parse_hypothesis("litsize + sexmale = 0", NAMES)
    assert err.value.position == 10


def test_singular_hypotheses_are_rejected():
    f = fit("ratpup_a", True)
    with pytest.raises(DataError, match="linearly dependent"):
        linear_hypothesis(f, "treatmentHigh = 0, 2*treatmentHigh = 0")
    with pytest.raises(DataError, match="involves no coefficient"):
        linear_hypothesis(f, "litsize - litsize = 0")
    with pytest.raises(DataError, match="7 columns"):
        linear_hypothesis(f, np.ones((1, 3)))


def test_linear_hypothesis_single_row_matches_coef_table():
    f = fit("ratpup_a", True)
    tab = coef_table(f)
    res = linear_hypothesis(f, "litsize = 0")
    assert res.t == pytest.approx(tab.loc["litsize", "t"], rel=1e-12)
    assert res.den_df == pytest.approx(tab.loc["litsize", "df"], rel=1e-12)
    assert res.p == pytest.approx(tab.loc["litsize", "p"], rel=1e-10)
    shifted = linear_hypothesis(f, "litsize = -0.1")
    assert shifted.estimate[0] == pytest.approx(f.fixef["litsize"] + 0.1)
    frame = shifted.to_frame()
    assert list(frame.columns) == ["estimate", "se", "t", "F", "NumDF", "DenDF", "p"]


def test_linear_hypothesis_matrix_and_text_agree():
    f = fit("ratpup_a", False)
    a = linear_hypothesis(f, "treatmentHigh = treatmentLow, sexMale = 0.4")
    L = np.zeros((2, 7))
    L[0, 1], L[0, 2], L[1, 3] = 1, -1, 1
    b = linear_hypothesis(f, L, [0, 0.4])
    assert a.F == pytest.approx(b.F, rel=1e-12)
    assert a.den_df == pytest.approx(b.den_df, rel=1e-12)
    assert a.num_df == 2 and a.t is None


def test_joint_treatment_test_matches_anova_row():
    # Main-effects model: the type III treatment hypothesis is treatmentHigh = treatmentLow = 0.
    f = fit("ratpup_b", True)
    ref = {r["term"]: r for r in reference("ratpup_b", True)["anova_type3"]["Satterthwaite"]}[
        "treatment"
    ]
    res = linear_hypothesis(f, "treatmentHigh = 0, treatmentLow = 0")
    assert res.F == pytest.approx(ref["F"], rel=1e-3)
    assert res.den_df == pytest.approx(ref["DenDF"], rel=1e-3)
    assert_p_close(res.p, ref["p"])


def test_residual_and_normal_ddf():
    f = fit("sleepstudy_corr", True)
    res = linear_hypothesis(f, "Days = 0", ddf="residual")
    assert res.den_df == 178
    z = linear_hypothesis(f, "Days = 0", ddf="normal")
    assert np.isinf(z.den_df)
    tab = coef_table(f, ddf="normal")
    assert tab.loc["Days", "p"] == pytest.approx(z.p)
    joint = linear_hypothesis(f, "(Intercept) = 250, Days = 10", ddf="normal")
    assert np.isinf(joint.den_df) and 0 < joint.p < 1
    with pytest.raises(ValueError, match="unknown ddf"):
        coef_table(f, ddf="containment")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "formula", "reml"),
    [
        (n, f, r)
        for n, f in [
            ("insteval_1", "y ~ 1 + service + (1|s) + (1|d) + (1|dept)"),
            ("insteval_2", "y ~ 1 + service*dept + (1|s) + (1|d)"),
        ]
        for r in (True, False)
    ],
)
def test_insteval(name, formula, reml):
    from mixedmodels.inference.anova import anova

    # InstEval is not embedded (1.4 MB); the tests keep a gzipped copy.
    df = pd.read_csv(Path(__file__).parents[1] / "data" / "InstEval.csv.gz")
    ref = reference(name, reml)
    for c, spec in ref["data_prep"]["factors"].items():  # R's level order (numeric sort)
        df[c] = pd.Categorical(df[c].astype(str), categories=spec["levels"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = mm.lmer(formula, df, reml=reml)
    tab = coef_table(f)
    np.testing.assert_allclose(
        tab["df"], [r["df_satterthwaite"] for r in ref["fixed_effects"]], rtol=1e-3
    )
    assert_p_close(tab["p"], [r["p_satterthwaite"] for r in ref["fixed_effects"]])
    a = anova(f)
    for row in ref["anova_type3"]["Satterthwaite"]:
        got = a.loc[row["term"]]
        assert got["DenDF"] == pytest.approx(row["DenDF"], rel=1e-3)
        assert got["F"] == pytest.approx(row["F"], rel=1e-3)
        assert_p_close(got["p"], row["p"])


def _df_of(info, p: int) -> np.ndarray:
    L = np.eye(p)
    var = np.einsum("ma,ab,mb->m", L, info.vcov_beta, L)
    g = np.einsum("ma,kab,mb->mk", L, info.jacobian, L)
    return 2 * var**2 / np.einsum("mk,kl,ml->m", g, info.vcov_varpar, g)


def _compare_methods(f) -> None:
    """Exact first derivatives against numDeriv's tableau: the Jacobian of vcov(beta) to
    1e-7 and the Hessian to 1e-5 (of their largest entries; the tableau's own error), the
    df to 1e-6 relative times the Hessian's condition number over 100 (the df solve with H
    amplifies the tableau's error by it: ratpup_d REML, condition 2e4, differs by 1.4e-4,
    and there the exact version is the one closer to lmerTest, see below)."""
    from mixedmodels.inference.satterthwaite import varpar_covariance

    args = (f.objective_function, f.opt.final_theta, f.estimates.sigma)
    num = varpar_covariance(*args, reml=f.reml, method="numerical")
    exact = varpar_covariance(*args, reml=f.reml, method="analytic")
    scale = np.max(np.abs(num.jacobian))
    np.testing.assert_allclose(exact.jacobian, num.jacobian, rtol=0, atol=1e-7 * scale)
    scale = np.max(np.abs(num.hessian))
    np.testing.assert_allclose(exact.hessian, num.hessian, rtol=0, atol=1e-5 * scale)
    p = f.estimates.beta.shape[0]
    cond = np.linalg.cond(num.hessian)
    np.testing.assert_allclose(_df_of(exact, p), _df_of(num, p), rtol=1e-6 * max(1.0, cond / 100))


@pytest.mark.parametrize(("name", "reml"), FITS)
def test_analytic_derivatives_match_numerical(name, reml):
    f = fit(name, reml)
    theta = f.opt.final_theta
    templates = f.objective_function.structure.templates(theta)
    if any(np.min(np.abs(np.diag(T))) <= 1e-6 * max(1.0, np.max(np.abs(T))) for T in templates):
        # A boundary fit: "auto" keeps the numerical path, "analytic" refuses.
        from mixedmodels.inference.satterthwaite import varpar_covariance

        with pytest.raises(ValueError, match="method='numerical'"):
            varpar_covariance(
                f.objective_function, theta, f.estimates.sigma, reml=reml, method="analytic"
            )
        return
    _compare_methods(f)


def test_analytic_derivatives_vector_rest_term_and_weights():
    # A second term with two columns (its levels' 2 x 2 blocks in the rest block) and
    # prior weights: the cases the reference models do not cover.
    rng = np.random.default_rng(3)
    n, ng, nh = 600, 40, 8
    g, h = rng.integers(0, ng, n), rng.integers(0, nh, n)
    x = rng.normal(size=n)
    y = (
        1
        + 0.5 * x
        + rng.normal(0, 0.7, ng)[g]
        + rng.normal(0, 0.5, nh)[h]
        + rng.normal(0, 0.3, nh)[h] * x
        + rng.normal(size=n)
    )
    df = pd.DataFrame({"y": y, "x": x, "g": g.astype(str), "h": h.astype(str)})
    df["w"] = rng.uniform(0.5, 2.0, n)
    for reml in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _compare_methods(mm.lmer("y ~ x + (1|g) + (1 + x|h)", df, reml=reml))
            _compare_methods(mm.lmer("y ~ x + (1|g) + (1|h)", df, reml=reml, weights="w"))


def test_analytic_df_closer_to_lmertest_on_flat_optimum():
    from mixedmodels.inference.satterthwaite import varpar_covariance

    f = fit("ratpup_d", True)
    args = (f.objective_function, f.opt.final_theta, f.estimates.sigma)
    ref = np.array([r["df_satterthwaite"] for r in reference("ratpup_d", True)["fixed_effects"]])
    p = ref.shape[0]
    num = _df_of(varpar_covariance(*args, reml=True, method="numerical"), p)
    exact = _df_of(varpar_covariance(*args, reml=True, method="analytic"), p)
    assert np.all(np.abs(exact / ref - 1) < np.abs(num / ref - 1))
