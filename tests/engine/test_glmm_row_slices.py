"""The one-scalar-term GLMM passes over slices of rows (``pirls._SLICE_ROWS``).

The gradient, nAGQ = 0 slope, closed-form Hessians, final blocks and saturated constant of
a fit with one scalar random-effects term sum over the rows in slices, so that their row
temporaries take a slice's memory: the session-11 closed-form Hessian allocated ~360 bytes
per row at once (a 1e6-row binary fit peaked at 882 MB, against 492 MB before it). Sliced
or not, the level sums are the same bits (``np.add.at`` adds in row order, as
``bincount``); the ``X'v`` products differ by rounding only. And the memory of a Hessian
pass is bounded by a slice, not by the rows.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mixedmodels.design import build_design
from mixedmodels.family import make_family
from mixedmodels.models.glmm import GeneralizedLinearMixedModel
from mixedmodels.objective import pirls

DATA = Path(__file__).resolve().parents[1] / "data"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
SLOPE = "use ~ age + urban + (0 + age | district)"


def _model(data: str, formula: str, family: str = "binomial", nagq: int = 1):
    frame = pd.read_csv(DATA / data)
    design = build_design(formula, frame, binomial_response=family == "binomial")
    return GeneralizedLinearMixedModel(design, make_family(family), nagq=nagq)


def _everything(dev: pirls.PirlsDeviance, theta: np.ndarray, beta: np.ndarray) -> dict:
    """Every sliced pass of a one-scalar-term deviance at ``(theta, beta)``."""
    state = dev.pirls(theta, beta)
    value, gradient = dev.laplace_gradient(theta, beta)
    vcov_rx, condvar = dev.final_one_scalar(theta, state)
    fast_value, fast_slope = dev.fast_gradient(theta)
    return {
        "value": np.array([value]),
        "gradient": gradient,
        "hessian": dev.laplace_hessian_one_scalar(theta, beta),
        "beta_hessian": dev.laplace_beta_hessian(theta, beta),
        "vcov_rx": vcov_rx,
        "condvar": condvar.ravel(),
        "fast": np.array([fast_value]),
        "fast_slope": fast_slope,
        "saturated": np.array([dev.rows.saturated(dev.family)]),
    }


@pytest.mark.parametrize(
    ("data", "formula", "family", "theta"),
    [
        ("cbpp.csv", CBPP, "binomial", 0.64),
        ("Contraception.csv", SLOPE, "binomial", 0.05),
        ("grouseticks.csv", "TICKS ~ factor(YEAR) + cHEIGHT + (1 | LOCATION)", "poisson", 0.8),
    ],
)
def test_passes_in_slices_equal_the_passes_over_all_rows(monkeypatch, data, formula, family, theta):
    th = np.array([theta])
    whole_model = _model(data, formula, family)
    whole_dev = whole_model.deviance
    beta = whole_dev.pirls(th, None).beta + 0.03  # away from both optima
    assert whole_dev.rows.nobs > 7
    whole = _everything(whole_dev, th, beta)
    # Slices of 7 rows (the last one shorter), on a model built afresh (no kept state).
    monkeypatch.setattr(pirls, "_SLICE_ROWS", 7)
    sliced_dev = _model(data, formula, family).deviance
    assert (
        len(sliced_dev.rows._slices(sliced_dev.family, sliced_dev.pirls(th, beta).coefficients)) > 1
    )
    sliced = _everything(sliced_dev, th, beta)
    for name, expected in whole.items():
        got = sliced[name]
        scale = float(np.max(np.abs(expected)))
        # The level sums add in the same order; X'v per slice: rounding of the sums.
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13 * scale, err_msg=name)


def test_sliced_fit_equals_the_fit_over_all_rows(monkeypatch):
    formula = "use ~ age + I(age**2) + urban + livch + (1 | district)"
    whole = _model("Contraception.csv", formula).fit()
    monkeypatch.setattr(pirls, "_SLICE_ROWS", 100)
    sliced = _model("Contraception.csv", formula).fit()
    assert sliced.loglik == pytest.approx(whole.loglik, rel=1e-13)
    np.testing.assert_allclose(sliced.beta, whole.beta, rtol=1e-9)
    np.testing.assert_allclose(sliced.theta, whole.theta, rtol=1e-9)
    np.testing.assert_allclose(sliced.vcov_beta, whole.vcov_beta, rtol=1e-8)


def _binary_model(n: int, groups: int, seed: int = 11) -> GeneralizedLinearMixedModel:
    """``y ~ x + (1 | g)``, logit, ``n`` rows in ``groups`` groups (as the benchmark's
    synthetic binary design, smaller)."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    eta = -0.5 + x + 0.8 * rng.normal(size=groups)[g]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    frame = pd.DataFrame({"y": y, "x": x, "g": g})
    design = build_design("y ~ x + (1 | g)", frame, binomial_response=True)
    return GeneralizedLinearMixedModel(design, make_family("binomial"))


def _peak_bytes(function) -> int:
    """The peak of the memory ``function()`` allocates (tracemalloc, numpy included) above
    what was allocated when it started."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        function()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_hessian_and_gradient_passes_take_a_slice_of_memory_not_the_rows(monkeypatch):
    """2e5 rows in 2e4 groups: a closed-form Hessian pass (two passes over the rows) and a
    gradient allocate well under two row vectors (3.2 MB) beyond their per-level results;
    the unsliced passes of session 11 took ~45 row vectors at once (~72 MB here)."""
    n, groups = 200_000, 20_000
    model = _binary_model(n, groups)
    dev = model.deviance
    theta = np.array([0.8])
    beta = dev.pirls(theta, None).beta
    dev.pirls(theta, beta)  # the state at the point: the passes form no eta or mu
    monkeypatch.setattr(pirls, "_SLICE_ROWS", 8192)
    row_vector = 8 * n
    # What does not depend on the rows: the per-level arrays the Hessian passes stack
    # ((4 (p + 1) + p + 3) x levels floats for p = 2) and their products.
    levels = 8 * groups * (4 * 3 + 2 + 3) * 2
    hessian = _peak_bytes(lambda: dev.laplace_hessian_one_scalar(theta, beta))
    assert hessian < 2 * row_vector + levels, hessian / row_vector
    gradient = _peak_bytes(lambda: dev.laplace_gradient(theta, beta))
    assert gradient < 2 * row_vector, gradient / row_vector
    beta_hessian = _peak_bytes(lambda: dev.laplace_beta_hessian(theta, beta))
    assert beta_hessian < 2 * row_vector + levels, beta_hessian / row_vector


def test_whole_fit_peak_memory_is_a_few_row_vectors(monkeypatch):
    """The whole 2e5-row fit allocates at most ~30 row vectors at its peak (session 11's
    closed-form Hessian alone took ~45 on top of the fit's ~28; the fit before it ~32):
    the kept PIRLS states hold eta and mu only, and no pass forms (p + 1) n temporaries.
    (Slices of 8192 rows: the default slice, a constant ~35 MB, is most of 2e5 rows.)"""
    monkeypatch.setattr(pirls, "_SLICE_ROWS", 8192)
    n = 200_000
    model = _binary_model(n, 20_000)
    peak = _peak_bytes(model.fit)
    assert peak < 30 * 8 * n, peak / (8 * n)
