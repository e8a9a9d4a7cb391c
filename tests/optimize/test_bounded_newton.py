"""Projected Newton steps on the exact Hessian from the start (optimize/bounded_newton.py).

Unit cases on functions with known optima: a bound held by a positive gradient (KKT), an
even entry certified on its bound by its curvature, a negative curvature on the bound left
inward, the mirror point of a false boundary (``Lambda``'s column sign), and a flat
optimum handed back (None). Model cases: the small reference models land on the optimum of
the BOBYQA path (the path the models took before) to 1e-10 of the criterion, and
simulated fits with small variances (about half of them singular) are never worse than
that path's.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import mixedmodels as mm
import mixedmodels.models.lmm as lmm_module
from mixedmodels.optimize.bounded_newton import bounded_newton, template_columns


def _problem(f, g, h):
    """``objective`` and ``derivatives`` callables of a function given in closed form."""

    def objective(x: np.ndarray) -> float:
        return float(f(x))

    def derivatives(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        return float(f(x)), np.asarray(g(x), float), np.asarray(h(x), float)

    return objective, derivatives


def _none(x: np.ndarray) -> list[int]:
    return []


def test_a_bound_pushed_outward_is_held():
    """Quadratic with its unconstrained minimum at x0 < 0: the bound x0 = 0 holds (g > 0)
    and the free entry takes its conditional minimum."""
    A = np.array([[2.0, 0.5], [0.5, 1.0]])
    c = np.array([-1.0, 2.0])
    obj, der = _problem(lambda x: 0.5 * (x - c) @ A @ (x - c), lambda x: A @ (x - c), lambda x: A)
    lower = np.array([0.0, -np.inf])
    found = bounded_newton(obj, der, np.array([1.0, 0.0]), lower, _none)
    assert found is not None
    x = found.summary.final_theta
    assert x[0] == 0.0
    # the conditional minimum over x1 with x0 = 0: A11 (x1 - c1) + A10 (0 - c0) = 0
    assert x[1] == pytest.approx(c[1] + A[1, 0] * c[0] / A[1, 1], abs=1e-10)
    assert found.summary.gradient[0] > 0.0  # KKT: pushing outward


def test_an_even_entry_converges_onto_its_bound():
    """f = a t^2 + b t^4 + (u - 1)^2 (a > 0): the optimum t = 0 is reached (snapped) and
    certified by the positive curvature, with the gradient there 0."""
    a, b = 0.3, 2.0
    obj, der = _problem(
        lambda x: a * x[0] ** 2 + b * x[0] ** 4 + (x[1] - 1.0) ** 2,
        lambda x: [2 * a * x[0] + 4 * b * x[0] ** 3, 2 * (x[1] - 1.0)],
        lambda x: [[2 * a + 12 * b * x[0] ** 2, 0.0], [0.0, 2.0]],
    )
    found = bounded_newton(obj, der, np.array([0.8, 3.0]), np.array([0.0, -np.inf]), _none)
    assert found is not None
    assert found.summary.final_theta[0] == 0.0
    assert found.summary.final_theta[1] == pytest.approx(1.0, abs=1e-9)


def test_negative_curvature_on_the_bound_is_left_inward():
    """f = -t^2 + t^4 from t = 0 (a stationary point on the bound, a maximum along t):
    the step along the negative curvature reaches the minimum t = 1/sqrt(2)."""
    obj, der = _problem(
        lambda x: -(x[0] ** 2) + x[0] ** 4 + (x[1] + 0.5) ** 2,
        lambda x: [-2 * x[0] + 4 * x[0] ** 3, 2 * (x[1] + 0.5)],
        lambda x: [[-2 + 12 * x[0] ** 2, 0.0], [0.0, 2.0]],
    )
    found = bounded_newton(obj, der, np.array([0.0, 0.0]), np.array([0.0, -np.inf]), _none)
    assert found is not None
    assert found.summary.final_theta == pytest.approx([2**-0.5, -0.5], abs=1e-9)
    assert found.summary.final_objective == pytest.approx(-0.25, abs=1e-14)


def test_the_mirror_point_leaves_a_false_boundary():
    """f(t11, t21) = (t11 t21 - 1)^2 + (t11^2 - 1)^2 is unchanged by (t11, t21) ->
    (-t11, -t21) (a column sign of a template). From (0, -1) the bound t11 = 0 is held by
    a positive gradient, a minimum on that side only; its mirror image (0, 1) leads to the
    optimum (1, 1), f = 0."""

    def f(x):
        return (x[0] * x[1] - 1) ** 2 + (x[0] ** 2 - 1) ** 2

    def g(x):
        r = x[0] * x[1] - 1
        return [2 * r * x[1] + 4 * (x[0] ** 2 - 1) * x[0], 2 * r * x[0]]

    def h(x):
        r = x[0] * x[1] - 1
        h00 = 2 * x[1] ** 2 + 12 * x[0] ** 2 - 4
        h01 = 2 * x[0] * x[1] + 2 * r
        return [[h00, h01], [h01, 2 * x[0] ** 2]]

    obj, der = _problem(f, g, h)
    lower = np.array([0.0, -np.inf])
    start = np.array([0.0, -1.0])
    assert g(start)[0] > 0.0
    columns = template_columns([np.array([0, 1])], [np.array([0, 0])], np.array([0, 2]))
    assert [c.tolist() for c in columns] == [[0, 1]]
    found = bounded_newton(obj, der, start, lower, _none, columns)
    assert found is not None
    assert found.summary.final_theta == pytest.approx([1.0, 1.0], abs=1e-8)
    assert found.summary.final_objective <= 1e-16
    # without the mirror the method stops on the false boundary or gives up
    without = bounded_newton(obj, der, start, lower, _none)
    assert without is None or without.summary.final_objective > 0.5


def test_a_flat_optimum_is_left_to_the_check():
    """f = (x + y - 1)^2: a line of minima. The steps end on it (f = 0) and hand the
    singular Hessian on, for the convergence check to name the flat direction."""
    obj, der = _problem(
        lambda x: (x[0] + x[1] - 1) ** 2,
        lambda x: [2 * (x[0] + x[1] - 1)] * 2,
        lambda x: [[2.0, 2.0], [2.0, 2.0]],
    )
    found = bounded_newton(obj, der, np.array([0.3, 0.2]), np.zeros(2), _none)
    if found is not None:
        assert found.summary.final_objective <= 1e-20
        assert np.linalg.eigvalsh(found.hessian)[0] == pytest.approx(0.0, abs=1e-12)


def test_no_decrease_is_handed_back():
    """A criterion that is not finite beyond the start (no step lowers it): None."""
    obj, der = _problem(
        lambda x: (x[0] - 2.0) ** 2 if x[0] <= 1.0 else np.inf,
        lambda x: [2 * (x[0] - 2.0)],
        lambda x: [[2.0]],
    )
    assert bounded_newton(obj, der, np.array([1.0]), np.zeros(1), _none) is None


MODELS = [
    ("sleepstudy", "Reaction ~ Days + (Days|Subject)"),
    ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
    ("pastes", "strength ~ 1 + (1|batch/cask)"),
    ("orthodont", "distance ~ age*Sex + (age|Subject)"),
    ("ratpup", "weight ~ treatment + sex + litsize + (1 + sex|litter)"),
]


def _fit(formula, data, reml, newton: bool):
    """The fit with the projected Newton steps, or along the BOBYQA path (as before)."""
    real = lmm_module.bounded_newton
    if not newton:
        lmm_module.bounded_newton = lambda *args, **kwargs: None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mm.lmer(formula, data, reml=reml)
    finally:
        lmm_module.bounded_newton = real


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize(("name", "formula"), MODELS, ids=[m[0] for m in MODELS])
def test_reference_models_land_on_the_bobyqa_optimum(name, formula, reml):
    data = mm.load_dataset(name)
    new = _fit(formula, data, reml, newton=True)
    old = _fit(formula, data, reml, newton=False)
    assert new.opt.optimizer == "newton"
    crit_new, crit_old = new.opt.final_objective, old.opt.final_objective
    assert crit_new <= crit_old + 1e-10 * abs(crit_old)
    assert abs(crit_new - crit_old) <= 1e-10 * abs(crit_old)
    np.testing.assert_allclose(new.theta, old.theta, rtol=0, atol=1e-6)
    assert new.singular == old.singular
    assert new.converged == old.converged
    # far fewer factorisations than BOBYQA's evaluations and the finish
    assert new.opt.evaluations < old.opt.evaluations


@pytest.mark.parametrize(
    ("name", "formula", "groups", "slope", "sigma"),
    [
        ("orthodont", "distance ~ age*Sex + (age|Subject)", "Subject", "age", 1.4),
        ("sleepstudy", "Reaction ~ Days + (Days|Subject)", "Subject", "Days", 25.0),
        ("pastes", "strength ~ 1 + (1|batch/cask)", "sample", None, 0.8),
    ],
    ids=["orthodont", "sleepstudy", "pastes"],
)
def test_simulated_boundary_fits_are_never_worse(name, formula, groups, slope, sigma):
    """Small random-effect variances (many singular fits): the criterion is never above the
    BOBYQA path's by more than its rounding (it is often below: a trust region stopped on a
    flat edge, or on a false boundary the mirror leaves)."""
    data = mm.load_dataset(name)
    rng = np.random.default_rng(2026)
    codes = np.unique(np.asarray(data[groups]).astype(str), return_inverse=True)[1]
    response = formula.split("~")[0].strip()
    singular = 0
    for _ in range(12):
        frame = data.copy()
        y = 10.0 + rng.normal(0.0, sigma, len(frame))
        scale = sigma * rng.uniform(0.0, 0.6)
        y += rng.normal(0.0, scale, codes.max() + 1)[codes]
        if slope is not None:
            x = np.asarray(frame[slope], float)
            y += rng.normal(0.0, 0.3 * scale, codes.max() + 1)[codes] * x
        frame[response] = y
        new = _fit(formula, frame, True, newton=True)
        old = _fit(formula, frame, True, newton=False)
        crit_new, crit_old = new.opt.final_objective, old.opt.final_objective
        assert crit_new <= crit_old + 1e-12 * abs(crit_old), (crit_new, crit_old)
        singular += new.singular
    assert singular > 0  # the batch does reach the boundary


@pytest.mark.parametrize("seed", range(6))
def test_plain_direction_equals_the_numpy_one(seed, monkeypatch):
    """The Newton direction on Python floats (a handful of parameters) is the numpy path's
    to rounding: free and binding entries, even entries stepped in their square, and
    Hessians that are not positive definite (handed to the eigenvalue path)."""
    import mixedmodels.optimize.bounded_newton as bn

    rng = np.random.default_rng(seed)
    for k in (1, 2, 3, 4):
        B = rng.normal(size=(k, k))
        H = B @ B.T + (0.1 if seed % 3 else -2.0) * np.eye(k)
        g = rng.normal(size=k)
        x = rng.uniform(0.0, 2.0, k)
        x[rng.uniform(size=k) < 0.3] = 0.0  # some on the bound (binding where g > 0)
        lower = np.where(rng.uniform(size=k) < 0.7, 0.0, -np.inf)
        even = rng.uniform(size=k) < 0.5 if seed % 2 else None
        plain = bn._newton_direction(x, g, H, lower, 1e-3, even)
        monkeypatch.setattr(bn, "_PLAIN_MAX", 0)
        ref = bn._newton_direction(x, g, H, lower, 1e-3, even)
        monkeypatch.undo()
        assert plain.modified == ref.modified
        np.testing.assert_allclose(plain.d, ref.d, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(plain.x1, ref.x1, rtol=1e-10, atol=1e-12)
        assert plain.size == pytest.approx(ref.size, rel=1e-10, abs=1e-14)
        assert plain.dec == pytest.approx(ref.dec, rel=1e-10, abs=1e-14)
        assert plain.small == ref.small
        assert (plain.binding is None) == (ref.binding is None)
        if ref.binding is not None:
            np.testing.assert_array_equal(plain.binding, ref.binding)
        assert (plain.squared is None) == (ref.squared is None)
        if ref.squared is not None:
            np.testing.assert_array_equal(plain.squared, ref.squared)
