"""Figures of simulated (DHARMa) residuals: each renders, and shows what it claims."""

from __future__ import annotations

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels import plots

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def grouse():
    fit = mm.glmer("TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)", "grouseticks", family="poisson")
    return mm.simulated_residuals(fit, nsim=100, seed=3)


@pytest.fixture(scope="module")
def cbpp():
    fit = mm.glmer(
        "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", "cbpp", family="binomial"
    )
    return mm.simulated_residuals(fit, nsim=100, seed=3)


@pytest.mark.parametrize(
    "draw",
    [
        plots.uniform_qq,
        plots.scaled_residuals_vs_predicted,
        plots.dispersion_histogram,
        plots.zero_inflation_histogram,
        plots.simulated_residual_panels,
    ],
)
@pytest.mark.parametrize("which", ["grouse", "cbpp"])
def test_figure_renders(request, draw, which):
    from matplotlib.figure import Figure

    fig = draw(request.getfixturevalue(which))
    assert isinstance(fig, Figure)
    png = plots.figure_to_png(fig, dpi=40)
    assert png.startswith(b"\x89PNG") and len(png) > 1000


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_qq_shows_the_ks_p_in_red_when_significant(grouse):
    fig = plots.uniform_qq(grouse)
    ax = fig.axes[0]
    ks = next(t for t in ax.texts if t.get_text().startswith("KS test"))
    assert ks.get_text() == "KS test: p < 0.001"
    assert ks.get_color() == "#c53030"
    # the points are the sorted residuals against uniform plotting positions
    points = ax.collections[-1].get_offsets()
    np.testing.assert_allclose(points[:, 1], np.sort(grouse.scaled))
    np.testing.assert_allclose(points[:, 0], (np.arange(1, 404) - 0.5) / 403)


def test_residuals_vs_predicted_ranks_and_stars(grouse):
    fig = plots.scaled_residuals_vs_predicted(grouse)
    ax = fig.axes[0]
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections[:2]])
    assert xs.min() > 0 and xs.max() == 1.0  # rank-transformed
    n_outside = int(np.sum((grouse.scaled == 0) | (grouse.scaled == 1)))
    assert n_outside > 0 and len(ax.collections[1].get_offsets()) == n_outside
    assert "rank transformed" in ax.get_xlabel()


def test_residuals_vs_few_predictions_are_boxes(cbpp):
    # cbpp's population-level predictions take 4 values (one per period): box plots.
    fig = plots.scaled_residuals_vs_predicted(cbpp)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(labels) == 4


def test_histogram_marks_the_observed_statistic(grouse):
    fig = plots.dispersion_histogram(grouse)
    ax = fig.axes[0]
    t = grouse.test_dispersion()
    line = ax.lines[0]
    assert line.get_xdata()[0] == pytest.approx(t.observed)
    assert "ratio 1.3" in ax.get_xlabel() and "p < 0.02" in ax.get_xlabel()
    with pytest.raises(ValueError, match="no simulated statistics"):
        plots.simulation_histogram(grouse.test_uniformity())
