"""The one-term spectrum and the moment start read from it.

``DenseSystem.one_term_spectrum`` is checked against ``Z'MZ`` and ``Z'My`` formed from the
rows with NumPy (eigenvalues, the squared coordinates of ``Z'My``, ``y'My`` and
``log|X'X|``), and ``spectral_moment_theta`` against Henderson's method 3 written out with
a pseudo-inverse. Which designs get a spectrum: unbalanced, one scalar term, few levels.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

import mixedmodels as mm
from mixedmodels.linalg.dense import SPECTRAL_MAX_LEVELS
from mixedmodels.objective.start import dense_moment_start, spectral_moment_theta

RATPUP = "weight ~ treatment + sex + litsize + (1|litter)"


def _rows(fit: mm.LinearMixedModelResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    design = fit.model.design
    X = np.asarray(design.X, dtype=float)
    y = np.asarray(design.y, dtype=float)
    refs = fit.model.structure.terms[0].refs
    Z = np.zeros((len(y), int(refs.max()) + 1))
    Z[np.arange(len(y)), refs] = 1.0
    return X, Z, y


def test_spectrum_matches_the_projection_formed_from_rows():
    fit = mm.lmer(RATPUP, mm.load_dataset("ratpup"))
    spectrum = fit.model.dense_deviance(True).system.one_term_spectrum()
    assert spectrum is not None
    X, Z, y = _rows(fit)
    M = np.eye(len(y)) - X @ np.linalg.solve(X.T @ X, X.T)
    C = Z.T @ M @ Z
    lam, V = np.linalg.eigh(C)
    np.testing.assert_allclose(spectrum.eigenvalues, np.maximum(lam, 0.0), atol=1e-9)
    # litter-level columns (intercept, treatment, litsize) leave 4 null directions
    assert sum(x < 1e-9 for x in spectrum.eigenvalues) == 4
    s = Z.T @ M @ y
    positive = lam > 1e-9
    # c_i^2 of a repeated eigenvalue depends on the basis; the positive ones are simple here
    np.testing.assert_allclose(
        np.asarray(spectrum.c_squared)[positive], (V.T @ s)[positive] ** 2, rtol=1e-8, atol=1e-8
    )
    assert math.isclose(spectrum.rss, float(y @ M @ y), rel_tol=1e-10)
    assert math.isclose(spectrum.log_det_xtx, np.linalg.slogdet(X.T @ X)[1], rel_tol=1e-12)
    np.testing.assert_array_equal(spectrum.n_l, np.bincount(fit.model.structure.terms[0].refs))


def test_spectral_moment_start_is_henderson_method_3():
    fit = mm.lmer(RATPUP, mm.load_dataset("ratpup"))
    system = fit.model.dense_deviance(True).system
    X, Z, y = _rows(fit)
    n, p = X.shape
    M = np.eye(n) - X @ np.linalg.solve(X.T @ X, X.T)
    C = Z.T @ M @ Z
    s = Z.T @ M @ y
    k = np.linalg.matrix_rank(C, tol=1e-9 * np.abs(C).max())
    between = float(s @ np.linalg.pinv(C, rcond=1e-9, hermitian=True) @ s)
    rss = float(y @ M @ y)
    sigma2 = (rss - between) / (n - p - k)
    sigma2_1 = (between - k * sigma2) / np.trace(C)
    expected = math.sqrt(sigma2_1 / sigma2)
    t = spectral_moment_theta(system.one_term_spectrum(), n - p)
    assert math.isclose(t, expected, rel_tol=1e-9)
    theta, steps = dense_moment_start(system, 0.1)
    assert theta.tolist() == [t]
    assert steps.tolist() == [0.3 * t]
    # ~2.5% from the REML optimum (0.7735): the Newton steps take it from there
    assert abs(t / fit.theta[0] - 1.0) < 0.05


def test_spectrum_only_for_unbalanced_one_term_designs_with_few_levels():
    def spectrum(formula: str, frame: pd.DataFrame):
        fit = mm.lmer(formula, frame)
        return fit.model.dense_deviance(True).system.one_term_spectrum()

    assert spectrum("Yield ~ 1 + (1|Batch)", mm.load_dataset("dyestuff")) is None  # balanced
    assert spectrum("TICKS ~ YEAR + (1|BROOD)", mm.load_dataset("grouseticks")) is None  # 118
    pastes = mm.load_dataset("pastes")
    assert spectrum("strength ~ 1 + (1|batch) + (1|cask)", pastes) is None  # two terms
    unbalanced = mm.load_dataset("dyestuff").iloc[2:].reset_index(drop=True)
    assert spectrum("Yield ~ 1 + (1|Batch)", unbalanced) is not None
    assert SPECTRAL_MAX_LEVELS >= 27  # ratpup's litters


def test_no_moment_estimate_at_a_boundary():
    """Dyestuff2's batch variance is estimated below 0 by method 3: no spectral start (the
    general start and the fit's boundary handling take it)."""
    frame = mm.load_dataset("Dyestuff2").iloc[1:].reset_index(drop=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mm.lmer("Yield ~ 1 + (1|Batch)", frame)
    system = fit.model.dense_deviance(True).system
    spectrum = system.one_term_spectrum()
    assert spectrum is not None
    assert spectral_moment_theta(spectrum, system.n - system.p) is None
    assert fit.theta[0] == 0.0
