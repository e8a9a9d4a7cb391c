"""Closed-form derivatives of a one-scalar-term criterion and the Newton-first fit.

``OneTermDerivatives`` is checked against the dense deviance (value) and against
Richardson differences of it (gradient) and of its own gradient (Hessian), on balanced
designs (its eigenvalue form) and unbalanced ones (its level-sum form), REML and ML. The
Newton-first fit must land on the optimum of BOBYQA run to the tight tolerances, and hand
a boundary optimum to BOBYQA (the edge restart and snap), as before.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from engine_cases import richardson

import mixedmodels as mm
from mixedmodels.errors import SingularFitWarning
from mixedmodels.objective.gradient import OneTermDerivatives
from mixedmodels.optimize import OptimizerOptions, gradient_differences, newton_first

# (dataset, formula, the form OneTermDerivatives takes: balanced designs' eigenvalue form,
# the projected spectrum of unbalanced designs with few levels, else the level-sum form)
ONE_TERM = [
    ("dyestuff", "Yield ~ 1 + (1|Batch)", "balanced"),
    ("sleepstudy", "Reaction ~ Days + (1|Subject)", "balanced"),
    ("ratpup", "weight ~ treatment + sex + litsize + (1|litter)", "spectral"),
    ("cake", "angle ~ recipe * temperature + (1|recipe:replicate)", "balanced"),
    ("sleepstudy", "Reaction ~ Days + (0 + Days|Subject)", "balanced"),
    ("Contraception", "age ~ urban + livch + (1|district)", "level-sum"),
]


def _form(derivs: OneTermDerivatives) -> str:
    if derivs._balanced is not None:
        return "balanced"
    return "spectral" if derivs._spectral is not None else "level-sum"


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize(("name", "formula", "form"), ONE_TERM, ids=[c[1] for c in ONE_TERM])
def test_one_term_derivatives_match_the_deviance(name, formula, form, reml):
    fit = mm.lmer(formula, mm.load_dataset(name), reml=reml)
    dev = fit.model.dense_deviance(reml)
    derivs = OneTermDerivatives(dev)
    assert _form(derivs) == form
    for theta in (fit.theta * 0.4 + 0.05, fit.theta, fit.theta * 2.5):
        f, g, H = derivs.value_gradient_hessian(theta)
        assert abs(f - dev(theta)) <= 1e-12 * abs(f)
        fd = richardson(dev, theta)
        assert abs(g[0] - fd[0]) <= 1e-6 * max(1.0, abs(fd[0])), (g, fd)

        def gradient(t: np.ndarray) -> float:
            return float(derivs.value_gradient_hessian(t)[1][0])

        h = 1e-4 * max(1.0, float(theta[0]))
        e = np.array([h])
        central = [
            (gradient(theta + s * e) - gradient(theta - s * e)) / (2 * s * h) for s in (1, 2)
        ]
        fdh = (4 * central[0] - central[1]) / 3
        assert abs(H[0, 0] - fdh) <= 1e-6 * max(1.0, abs(fdh)), (H, fdh)


def test_balanced_and_level_sum_forms_agree():
    """The level-sum form (the unbalanced designs'), forced on a balanced design, agrees
    with its eigenvalue form."""
    fit = mm.lmer("Yield ~ 1 + (1|Batch)", mm.load_dataset("dyestuff"))
    dev = fit.model.dense_deviance(True)
    fast = OneTermDerivatives(dev)
    assert fast._balanced is not None
    general = OneTermDerivatives(dev)
    spectrum = general._balanced
    general._balanced = None
    W = dev.system.W
    q = W.shape[0] - dev.p - 1
    general._level_sum_form(W[q:, :q], dev.p)
    assert spectrum is not None
    for t in (0.1, 0.85, 3.0):
        a = fast.value_gradient_hessian(np.array([t]))
        b = general.value_gradient_hessian(np.array([t]))
        assert abs(a[0] - b[0]) <= 1e-12 * abs(a[0])
        np.testing.assert_allclose(a[1], b[1], rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(a[2], b[2], rtol=1e-8, atol=1e-9)


FIRST = [
    ("dyestuff", "Yield ~ 1 + (1|Batch)"),
    ("sleepstudy", "Reaction ~ Days + (1|Subject)"),
    ("ratpup", "weight ~ treatment + sex + litsize + (1|litter)"),
    ("sleepstudy", "Reaction ~ Days + (Days|Subject)"),
    ("orthodont", "distance ~ age * Sex + (age|Subject)"),
    ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
    ("pastes", "strength ~ 1 + (1|batch/cask)"),
]


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize(("name", "formula"), FIRST, ids=[c[1] for c in FIRST])
def test_default_fit_lands_on_the_tight_bobyqa_optimum(name, formula, reml):
    frame = mm.load_dataset(name)
    default = mm.lmer(formula, frame, reml=reml)
    tight = mm.lmer(formula, frame, reml=reml, control=OptimizerOptions())
    assert default.opt.evaluations < tight.opt.evaluations
    np.testing.assert_allclose(default.theta, tight.theta, rtol=1e-7, atol=1e-8)
    assert default.objective <= tight.objective + 1e-11 * abs(tight.objective)
    assert default.converged


def test_newton_first_hands_a_boundary_optimum_back():
    """Dyestuff2's between-batch variance is estimated at 0: Newton steps end at (or run
    into) the bound, newton_first gives up, and the fit (BOBYQA, restart, snap) ends on the
    bound itself."""
    frame = mm.load_dataset("Dyestuff2")
    with pytest.warns(SingularFitWarning):
        fit = mm.lmer("Yield ~ 1 + (1|Batch)", frame)
    assert fit.theta[0] == 0.0
    dev = fit.model.dense_deviance(True)
    derivs = OneTermDerivatives(dev)
    x0 = np.array([0.5])
    assert newton_first(dev, derivs.value_and_gradient, derivs.hessian, x0, np.zeros(1)) is None


def test_newton_first_with_gradient_differences_on_a_quadratic():
    """Two parameters, Hessian from differences of the gradient: a convex quadratic's
    minimum inside the bounds in a few steps, with the record's gradient ~0."""
    A = np.array([[3.0, 1.0], [1.0, 2.0]])
    b = np.array([4.0, 5.0])

    def f(x: np.ndarray) -> float:
        return float(0.5 * x @ A @ x - b @ x + 10.0)

    def grad(x: np.ndarray) -> np.ndarray:
        return A @ x - b

    def vg(x: np.ndarray) -> tuple[float, np.ndarray]:
        return f(x), grad(x)

    found = newton_first(f, vg, gradient_differences(grad), np.array([2.0, 2.0]), np.zeros(2))
    assert found is not None
    np.testing.assert_allclose(found.summary.final_theta, np.linalg.solve(A, b), rtol=1e-10)
    np.testing.assert_allclose(found.hessian, A, rtol=1e-4)
    assert found.summary.evaluations < 15


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
def test_spectral_and_level_sum_forms_agree(reml):
    """ratpup's 27 litters (unbalanced): the projected spectrum's sums and the level-sum
    form, forced, give the same criterion and derivatives."""
    fit = mm.lmer("weight ~ treatment + sex + litsize + (1|litter)", mm.load_dataset("ratpup"))
    dev = fit.model.dense_deviance(reml)
    fast = OneTermDerivatives(dev)
    assert fast._spectral is not None
    general = OneTermDerivatives(dev)
    general._spectral = None
    W = dev.system.W
    q = W.shape[0] - dev.p - 1
    general._level_sum_form(W[q:, :q], dev.p)
    for t in (0.0, 0.05, 0.77, 4.0, 60.0):
        a = fast.value_gradient_hessian(np.array([t]))
        b = general.value_gradient_hessian(np.array([t]))
        assert abs(a[0] - b[0]) <= 1e-12 * abs(a[0])
        np.testing.assert_allclose(a[1], b[1], rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(a[2], b[2], rtol=1e-8, atol=1e-9)


def test_weighted_one_term_spectrum_matches_the_deviance():
    """Prior weights enter A, so the spectral form of a weighted fit is the weighted
    criterion (value to rounding, gradient to Richardson differences)."""
    frame = mm.load_dataset("ratpup")
    w = 0.5 + (np.arange(len(frame)) % 7) / 4.0
    fit = mm.lmer("weight ~ treatment + sex + litsize + (1|litter)", frame, weights=w)
    dev = fit.model.dense_deviance(True)
    derivs = OneTermDerivatives(dev)
    assert derivs._spectral is not None
    for theta in (fit.theta * 0.5, fit.theta, fit.theta * 3.0):
        f, g, _ = derivs.value_gradient_hessian(theta)
        assert abs(f - dev(theta)) <= 1e-12 * abs(f)
        fd = richardson(dev, theta)
        assert abs(g[0] - fd[0]) <= 1e-6 * max(1.0, abs(fd[0])), (g, fd)
    assert fit.opt.gradient is not None and abs(float(fit.opt.gradient[0])) < 1e-6


def test_unbalanced_one_term_design_is_detected():
    frame = mm.load_dataset("dyestuff").iloc[2:].reset_index(drop=True)
    fit = mm.lmer("Yield ~ 1 + (1|Batch)", frame)
    assert OneTermDerivatives(fit.model.dense_deviance(True))._balanced is None
    assert isinstance(frame, pd.DataFrame)


@pytest.mark.parametrize(
    ("dataset", "formula"),
    [
        # 322 rows x 27 levels: by blocks, the level sums by bincount
        ("ratpup", "weight ~ treatment + sex + litsize + (1|litter)"),
        ("ratpup", "weight ~ treatment + sex + (0 + litsize|litter)"),  # z = litsize
        # 30 x 6: by blocks, the level sums by the product with the indicator
        ("dyestuff", "Yield ~ 1 + (1|Batch)"),
    ],
)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_one_term_cross_products_by_blocks_equal_the_whole_product(weighted, dataset, formula):
    """One scalar term's dense A, as the whole product or by blocks (the form larger
    designs take), equals M'WM for M = [Z X y]."""
    from mixedmodels.linalg.dense import _one_term_cross_products, cross_products_from_rows

    fit = mm.lmer(formula, mm.load_dataset(dataset))
    model = fit.model
    X, y = model.design.X, model.y
    term = model.structure.terms[0]
    n, q = X.shape[0], term.nranef
    w = np.linspace(0.5, 2.0, n) if weighted else None
    M = np.zeros((n, q + X.shape[1] + 1))
    M[np.arange(n), term.refs] = term.z[:, 0]
    M[:, q:-1] = X
    M[:, -1] = y
    expected = M.T @ M if w is None else (M * w[:, None]).T @ M
    got = cross_products_from_rows(model.structure, X, y, w)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-10 * np.abs(expected).max())
    by_blocks = _one_term_cross_products(term, X, y, w)
    np.testing.assert_allclose(by_blocks, expected, rtol=1e-13, atol=1e-10 * np.abs(expected).max())


def test_newton_first_on_simulated_designs_matches_tight_bobyqa():
    """Balanced and unbalanced one-term designs with between-group SDs from 0 to 10
    (boundary optima among them): the default fit (Newton first, or BOBYQA where Newton
    hands back) reaches the criterion of BOBYQA run tight, with the same verdicts."""
    rng = np.random.default_rng(7)
    for i in range(24):
        levels = int(rng.integers(3, 40))
        if i % 2:
            sizes = rng.integers(1, 12, size=levels)
        else:
            sizes = np.full(levels, int(rng.integers(2, 10)))
        g = np.repeat(np.arange(levels), sizes)
        sd = [0.0, 0.05, 0.3, 1.0, 3.0, 10.0][i % 6]
        x = rng.normal(size=g.shape[0])
        y = 1 + 0.5 * x + sd * rng.normal(size=levels)[g] + rng.normal(size=g.shape[0])
        frame = pd.DataFrame({"y": y, "x": x, "g": [f"g{v}" for v in g]})
        reml = bool(i % 3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingularFitWarning)
            default = mm.lmer("y ~ x + (1|g)", frame, reml=reml)
            tight = mm.lmer("y ~ x + (1|g)", frame, reml=reml, control=OptimizerOptions())
        assert default.objective <= tight.objective + 1e-12 * abs(tight.objective)
        np.testing.assert_allclose(default.theta, tight.theta, rtol=1e-6, atol=1e-6)
        assert default.singular == tight.singular
        assert default.converged == tight.converged
