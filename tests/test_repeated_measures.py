"""Repeated-measures residual structures: the objective, bad input and the results' API.

The objective at fixed parameters is checked against the log-likelihood computed here
directly, densely, from the parameterisation documented in docs/repeated-measures.md:
``V = Z Lambda Lambda' Z' + W R W`` (relative to sigma^2), beta and sigma profiled out,

    ML:   -2 l = log|V| + n (1 + log(2 pi r^2 / n)),
    REML: -2 l = log|V| + log|X'V^-1 X| + (n - p)(1 + log(2 pi r^2 / (n - p))),

``r^2 = (y - X b)' V^-1 (y - X b)`` at the GLS ``b``. Variance-function covariates enter
centred (``log|x| - mean log|x|`` for power, ``x - mean x`` for exp), as the engine
parameterises them (the reported sigma is nlme's; see the module docstring of
mixedmodels.residual.variance_functions).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import mixedmodels as mm
from mixedmodels.errors import DataError, ModelSpecificationError

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def orthodont() -> pd.DataFrame:
    return pd.read_csv(DATA / "Orthodont_rm.csv")


@pytest.fixture(scope="module")
def ovary() -> pd.DataFrame:
    return pd.read_csv(DATA / "Ovary.csv")


# ----------------------------------------------------------------------------- dense algebra
def dense_criterion(X, y, Zs, V_res, reml):
    """-2 log-likelihood (REML or ML) with beta and sigma profiled, ``V = Z Z' + V_res``
    where ``Zs`` are the columns ``Z Lambda`` (relative to sigma)."""
    n, p = X.shape
    V = V_res.copy()
    for Z in Zs:
        V += Z @ Z.T
    C = np.linalg.cholesky(V)
    Xw = np.linalg.solve(C, X)
    yw = np.linalg.solve(C, y)
    beta = np.linalg.lstsq(Xw, yw, rcond=None)[0]
    r2 = float(np.sum((yw - Xw @ beta) ** 2))
    logdet = 2.0 * float(np.sum(np.log(np.diag(C))))
    if reml:
        m = n - p
        logdet += float(np.linalg.slogdet(Xw.T @ Xw)[1])
    else:
        m = n
    return logdet + m * (1.0 + np.log(2.0 * np.pi * r2 / m))


def block_diagonal(groups, block_of):
    """``V_res`` from a function giving each group's rows' covariance."""
    n = groups.shape[0]
    V = np.zeros((n, n))
    for g in np.unique(groups):
        rows = np.nonzero(groups == g)[0]
        V[np.ix_(rows, rows)] = block_of(rows)
    return V


def model_of(formula, data, correlation=None, variance=None, reml=True):
    """The model (not fitted) as mm.lmer builds it."""
    from mixedmodels.api import _design_with_structure
    from mixedmodels.models.lmm import LinearMixedModel
    from mixedmodels.residual.specs import parse_correlation, parse_variance

    c, v = parse_correlation(correlation), parse_variance(variance)
    design, frame = _design_with_structure(formula, data, c, v, None)
    return LinearMixedModel(
        design, reml=reml, correlation=c, variance=v, structure_frame=frame
    ), design


def random_intercept_columns(design, theta):
    (term,) = design.re_terms
    Z = np.zeros((design.nobs, term.nlevels))
    Z[np.arange(design.nobs), term.refs] = term.z[:, 0]
    return [theta * Z]


CASES = [
    # formula, correlation, variance, psi (engine scale), theta
    ("distance ~ age*Sex", "cs(1 | Subject)", None, [0.3], None),
    ("distance ~ age*Sex", "ar1(visit | Subject)", None, [0.4], None),
    ("distance ~ age*Sex + (1 | Subject)", "ar1(visit | Subject)", None, [-0.2], 0.8),
    ("distance ~ age*Sex", "car1(age | Subject)", None, [0.7], None),
    (
        "distance ~ age*Sex",
        "us(visit | Subject)",
        None,
        [0.3, -0.2, 0.5, 0.1, 0.4, 0.2, 0.1, -0.1, 0.2],
        None,
    ),
    ("distance ~ age*Sex + (1 | Subject)", None, "power(age)", [0.6], 1.1),
    ("distance ~ age*Sex", None, "exp(age)", [0.05], None),
    ("distance ~ age*Sex + (1 | Subject)", "ar1(visit | Subject)", "ident(Sex)", [0.3, -0.4], 0.9),
    ("distance ~ age*Sex", "cs(1 | Subject)", "power(age)", [0.2, 0.5], None),
]


def residual_covariance(data, correlation, variance, psi):
    """``W R W`` written out from the documented parameterisation."""
    n = len(data)
    groups = data["Subject"].to_numpy()
    psi = list(psi)
    R = np.eye(n)
    if correlation is not None:
        kind = correlation.split("(")[0]
        if kind == "cs":
            lo = -1.0 / (4 - 1)
            rho = lo + (1 - lo) * expit(psi.pop(0))
            R = block_diagonal(groups, lambda rows: np.where(np.eye(len(rows)) == 1, 1.0, rho))
        elif kind in ("ar1", "car1"):
            phi = np.tanh(psi.pop(0)) if kind == "ar1" else expit(psi.pop(0))
            t = data["visit" if kind == "ar1" else "age"].to_numpy(float)
            R = block_diagonal(groups, lambda rows: phi ** np.abs(t[rows, None] - t[None, rows]))
        else:  # us: unit lower-triangular B with psi below the diagonal, rows normalised
            B = np.eye(4)
            B[np.tril_indices(4, -1)] = [psi.pop(0) for _ in range(6)]
            B /= np.linalg.norm(B, axis=1)[:, None]
            C = B @ B.T
            k = data["visit"].to_numpy() - 1
            R = block_diagonal(groups, lambda rows: C[np.ix_(k[rows], k[rows])])
            ratios = np.exp(np.concatenate([[0.0], [psi.pop(0) for _ in range(3)]]))
            w = ratios[k]
            return R * np.outer(w, w)
    w = np.ones(n)
    if variance is not None:
        kind, col = variance.rstrip(")").split("(")
        if kind == "power":
            la = np.log(np.abs(data[col].to_numpy(float)))
            w = np.exp(psi.pop(0) * (la - la.mean()))
        elif kind == "exp":
            x = data[col].to_numpy(float)
            w = np.exp(psi.pop(0) * (x - x.mean()))
        else:  # ident: first sorted level 1
            levels = sorted(data[col].unique())
            ratios = np.exp(np.concatenate([[0.0], [psi.pop(0) for _ in levels[1:]]]))
            w = ratios[data[col].map({lv: i for i, lv in enumerate(levels)}).to_numpy()]
    return R * np.outer(w, w)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[1]}+{c[2]}+{c[4]}" for c in CASES])
def test_objective_matches_dense_likelihood(orthodont, case, reml):
    formula, correlation, variance, psi, theta = case
    model, design = model_of(formula, orthodont, correlation, variance, reml)
    objective = model.objective(reml)
    params = np.array(([] if theta is None else [theta]) + list(psi))
    got = objective(params)
    Zs = [] if theta is None else random_intercept_columns(design, theta)
    V_res = residual_covariance(orthodont, correlation, variance, psi)
    want = dense_criterion(design.X, design.y, Zs, V_res, reml)
    assert got == pytest.approx(want, rel=1e-10)


def test_random_slopes_objective_matches_dense(orthodont):
    """(age | Subject): the whitened Z keeps each row in its subject's level."""
    model, design = model_of(
        "distance ~ age*Sex + (age | Subject)", orthodont, "ar1(visit | Subject)", "power(age)"
    )
    theta = np.array([1.2, -0.1, 0.15])
    psi = np.array([0.3, 0.4])
    got = model.objective(True)(np.concatenate([theta, psi]))
    (term,) = design.re_terms
    T = np.array([[theta[0], 0.0], [theta[1], theta[2]]])
    Z = np.zeros((design.nobs, 2 * term.nlevels))
    for j in range(2):
        Z[np.arange(design.nobs), 2 * term.refs + j] = term.z[:, j]
    ZL = Z @ np.kron(np.eye(term.nlevels), T)
    V_res = residual_covariance(orthodont, "ar1(visit | Subject)", "power(age)", psi)
    want = dense_criterion(design.X, design.y, [ZL], V_res, True)
    assert got == pytest.approx(want, rel=1e-10)


def test_many_subjects_of_unequal_sizes_are_batched():
    """Groups of several sizes (batched by size), gaps in time, one singleton group."""
    rng = np.random.default_rng(1)
    rows = []
    for s in range(60):
        visits = sorted(rng.choice(np.arange(1, 9), size=1 + s % 6, replace=False))
        for v in visits:
            rows.append({"s": f"s{s:02d}", "t": v, "x": rng.normal(), "y": rng.normal() + v})
    data = pd.DataFrame(rows)
    model, design = model_of("y ~ x + t", data, "ar1(t | s)")
    objective = model.objective(False)
    phi_psi = 0.5
    got = objective(np.array([phi_psi]))
    phi = np.tanh(phi_psi)
    t = data["t"].to_numpy(float)
    V = block_diagonal(data["s"].to_numpy(), lambda r: phi ** np.abs(t[r, None] - t[None, r]))
    assert got == pytest.approx(dense_criterion(design.X, design.y, [], V, False), rel=1e-10)


# ------------------------------------------------------------------------- behaviour
def test_row_order_does_not_matter(orthodont):
    a = mm.lmer("distance ~ age*Sex", orthodont, correlation="ar1(visit | Subject)")
    shuffled = orthodont.sample(frac=1.0, random_state=3)
    b = mm.lmer("distance ~ age*Sex", shuffled, correlation="ar1(visit | Subject)")
    assert b.loglik == pytest.approx(a.loglik, rel=1e-9)
    assert b.structure_params["phi"] == pytest.approx(a.structure_params["phi"], abs=1e-6)


def test_ident_is_residual_groups(orthodont):
    a = mm.lmer("distance ~ age*Sex + (1 | Subject)", orthodont, variance="ident(Sex)")
    b = mm.lmer("distance ~ age*Sex + (1 | Subject)", orthodont, residual_groups="Sex")
    assert a.loglik == b.loglik
    assert a.structure_params == b.structure_params
    assert set(a.structure_params["sd_by_level"]) == {"Female", "Male"}


def test_results_report_the_structure(orthodont):
    fit = mm.lmer(
        "distance ~ age*Sex + (1 | Subject)", orthodont, correlation="ar1(visit | Subject)"
    )
    text = str(fit.summary())
    assert "Correlation Structure: AR(1)" in text
    assert "Phi" in text
    assert "Formula: ~visit | Subject" in text
    out = fit.to_dict()
    assert out["correlation"] == "ar1(visit | Subject)"
    assert set(out["structure_params"]) == {"phi", "sigma"}
    assert out["structure_params"]["sigma"] == out["sigma"]
    assert fit.nparams == 4 + 1 + 1 + 1  # beta, theta, phi, sigma
    sd = fit.residual_sd_by_row
    assert np.allclose(sd, fit.sigma)


def test_gls_results(orthodont):
    fit = mm.lmer("distance ~ age*Sex", orthodont, correlation="cs(1 | Subject)")
    assert fit.ngroups == {"Subject": 27}
    assert fit.ranef == {}
    assert list(fit.varcorr["group"]) == ["Residual"]
    assert len(fit.theta) == 0
    assert "Generalized least squares fit by REML" in str(fit.summary())
    pred = fit.predict(orthodont.head(3))
    np.testing.assert_allclose(pred, fit.fitted_marginal.to_numpy()[:3])
    assert fit.ranef_table().empty
    with pytest.raises(ModelSpecificationError, match=r"no random effects|has none"):
        fit.plot_diagnostics()


def test_variance_function_sd_by_row(orthodont):
    fit = mm.lmer("distance ~ age*Sex", orthodont, variance="power(age)")
    delta = fit.structure_params["delta"]
    np.testing.assert_allclose(
        fit.residual_sd_by_row, fit.sigma * orthodont["age"].to_numpy() ** delta, rtol=1e-10
    )


def test_power_fitted_is_a_fixed_point(orthodont):
    fit = mm.lmer("distance ~ age*Sex + (1 | Subject)", orthodont, variance="power(fitted)")
    mu = fit.fitted.to_numpy()
    # Refitting with the covariate held at the final fitted values changes nothing.
    again = mm.lmer(
        "distance ~ age*Sex + (1 | Subject)",
        orthodont.assign(mu=mu),
        variance="power(mu)",
    )
    assert again.structure_params["delta"] == pytest.approx(fit.structure_params["delta"], abs=1e-5)
    assert again.loglik == pytest.approx(fit.loglik, rel=1e-8)


def test_refusals_are_one_line(orthodont):
    fit = mm.lmer("distance ~ age*Sex", orthodont, correlation="ar1(visit | Subject)")
    for call in (
        lambda: fit.coef_table(ddf="kenward-roger"),
        lambda: fit.r2(),
        lambda: fit.icc(),
        lambda: fit.bootstrap(nsim=2, seed=1),
        lambda: fit.confint(method="profile"),
        lambda: fit.refit(fit.design.y + 1.0),
        lambda: fit.simulate(2, seed=1),
        lambda: mm.power(fit, "age", nsim=2, seed=1),
        lambda: fit.predict(orthodont, se_fit=True),
        lambda: fit.predict(orthodont, interval="prediction"),
    ):
        with pytest.raises(ModelSpecificationError) as err:
            call()
        assert "\n" not in str(err.value)
    assert "R2" not in str(fit.summary())
    lme = mm.lmer(
        "distance ~ age*Sex + (1 | Subject)", orthodont, correlation="ar1(visit | Subject)"
    )
    with pytest.raises(ModelSpecificationError) as err:
        lme.influence()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"correlation": "ar2(visit | Subject)"}, ModelSpecificationError, "unknown correlation"),
        ({"correlation": "ar1(visit)"}, ModelSpecificationError, "KIND(TIME | GROUP)"),
        ({"correlation": "cs(visit | Subject)"}, ModelSpecificationError, "cs(1 | Subject)"),
        ({"correlation": "ar1(1 | Subject)"}, ModelSpecificationError, "needs a time"),
        (
            {"correlation": "ar1(__import__('os') | Subject)"},
            ModelSpecificationError,
            "cannot read",
        ),
        ({"variance": "power(fitted())"}, ModelSpecificationError, "cannot read"),
        ({"variance": "sqrt(age)"}, ModelSpecificationError, "unknown variance"),
        ({"correlation": "ar1(Sex | Subject)"}, DataError, "not numeric"),
        ({"correlation": "ar1(half | Subject)"}, DataError, "car1"),
        ({"correlation": "ar1(Sex2 | Subject)"}, DataError, "not in the data"),
        ({"correlation": "ar1(one | Subject)"}, DataError, "occurs twice"),
        ({"correlation": "us(one | Subject)"}, DataError, "one level"),
        ({"correlation": "ar1(visit | row)"}, DataError, "one observation"),
        ({"variance": "power(zero)"}, DataError, "contains 0"),
        (
            {"correlation": "us(visit | Subject)", "variance": "ident(Sex)"},
            ModelSpecificationError,
            "already",
        ),
    ],
)
def test_bad_input(orthodont, kwargs, error, words):
    data = orthodont.assign(
        half=orthodont["visit"] / 2, one=1, row=np.arange(len(orthodont)), zero=0.0
    )
    with pytest.raises(error) as err:
        mm.lmer("distance ~ age*Sex", data, **kwargs)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_groups_must_be_nested_in_random_effects(orthodont):
    data = orthodont.assign(pair=orthodont["Subject"].str[:2])  # F0/F1/M0/M1: cross Subject
    with pytest.raises(DataError, match="nested"):
        mm.lmer("distance ~ age + (1 | Subject)", data, correlation="ar1(visit | pair)")


def test_structure_is_refused_with_weights_and_residual_groups(orthodont):
    with pytest.raises(ModelSpecificationError, match="weights"):
        mm.lmer(
            "distance ~ age", orthodont.assign(w=1.0), weights="w", correlation="cs(1 | Subject)"
        )
    with pytest.raises(ModelSpecificationError, match="ident"):
        mm.lmer("distance ~ age", orthodont, residual_groups="Sex", correlation="cs(1 | Subject)")


def test_missing_structure_columns_drop_rows(ovary):
    data = ovary.copy()
    data.loc[[0, 5], "visit"] = np.nan
    fit = mm.lmer("follicles ~ s1 + c1 + (1 | Mare)", data, correlation="ar1(visit | Mare)")
    assert fit.nobs == len(ovary) - 2
    assert fit.n_dropped_rows == 2


def test_lrt_between_structures(orthodont):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ri = mm.lmer("distance ~ age*Sex + (1 | Subject)", orthodont)
        ar = mm.lmer(
            "distance ~ age*Sex + (1 | Subject)", orthodont, correlation="ar1(visit | Subject)"
        )
    table = mm.lrt(ri, ar).table
    assert table["Df"].iloc[1] == 1
    assert table["Chisq"].iloc[1] == pytest.approx(2 * (ar.loglik - ri.loglik), rel=1e-9)
    cs = mm.lmer("distance ~ age*Sex", orthodont, correlation="cs(1 | Subject)")
    ar_gls = mm.lmer("distance ~ age*Sex", orthodont, correlation="ar1(visit | Subject)")
    with pytest.raises(mm.errors.ModelComparisonError, match="not nested"):
        mm.lrt(cs, ar_gls)


def test_nested_random_effects_with_correlation_inside_the_inner_factor():
    """(1 | clinic) + (1 | subj) with AR(1) within subject: the blocked engine's rest block
    (clinic) after whitening, against the dense likelihood."""
    rng = np.random.default_rng(3)
    rows = []
    for c in range(8):
        for s in range(12):
            for t in range(1, 6):
                rows.append({"clinic": f"c{c}", "subj": f"c{c}s{s}", "t": t, "x": rng.normal()})
    data = pd.DataFrame(rows)
    data["y"] = rng.normal(size=len(data)) + 0.3 * data["t"]
    model, design = model_of(
        "y ~ x + t + (1 | clinic) + (1 | subj)", data, "ar1(t | subj)", None, True
    )
    objective = model.objective(True)
    params = np.array([0.9, 0.7, 0.4])  # engine order: subj (96 levels), clinic, then phi
    got = objective(params)
    by_group = dict(zip([t.group for t in model.structure.terms], params[:2], strict=True))
    Zs = []
    for term in design.re_terms:
        Z = np.zeros((design.nobs, term.nlevels))
        Z[np.arange(design.nobs), term.refs] = 1.0
        Zs.append(by_group[term.group] * Z)
    phi, t = np.tanh(0.4), data["t"].to_numpy(float)
    V = block_diagonal(data["subj"].to_numpy(), lambda r: phi ** np.abs(t[r, None] - t[None, r]))
    assert got == pytest.approx(dense_criterion(design.X, design.y, Zs, V, True), rel=1e-10)
