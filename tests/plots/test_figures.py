"""Each figure function returns a matplotlib Figure that renders to a non-empty PNG."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mixedmodels as mm
from mixedmodels import plots

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def fit():
    return mm.lmer("weight ~ treatment + sex + litsize + (1 + sex | litter)", "ratpup")


@pytest.mark.parametrize(
    "draw",
    [
        plots.qq,
        plots.residual_kde,
        plots.residuals_vs_fitted,
        plots.residuals_by_group,
        plots.ranef_qq,
        plots.caterpillar,
        plots.diagnostics,
    ],
)
def test_figure_renders(fit, draw):
    from matplotlib.figure import Figure

    fig = draw(fit)
    assert isinstance(fig, Figure)
    png = plots.figure_to_png(fig, dpi=40)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert plots.figure_to_svg(fig).lstrip().startswith("<?xml")


def test_boxplot_by_and_qq_of_values():
    data = mm.load_dataset("ratpup")
    assert len(plots.boxplot_by(data, "weight", ["treatment", "sex"]).axes) == 1
    assert len(plots.qq([0.1, -0.3, 0.2, 1.5, -0.7]).axes) == 1
    with pytest.raises(mm.DataError, match="nope"):
        plots.boxplot_by(data, "weight", "nope")


def test_caterpillar_one_panel_per_term(fit):
    assert len(plots.caterpillar(fit).axes) == 2
    with pytest.raises(mm.DataError, match="grouping factor"):
        plots.caterpillar(fit, "nope")


def test_import_does_not_load_matplotlib():
    code = "import sys, mixedmodels, mixedmodels.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_simultaneous_qq_band_holds_all_points_95_percent_of_the_time():
    """Monte Carlo coverage under normality: simultaneous ~0.95, pointwise far lower."""
    import numpy as np

    from mixedmodels.plots.figures import _qq_points

    rng = np.random.default_rng(4)
    n, reps = 100, 400
    inside = {"simultaneous": 0, "pointwise": 0}
    for _ in range(reps):
        x = rng.normal(3.0, 2.0, n)
        for kind in inside:
            pts = _qq_points(x, 0.95, kind)
            ok = (pts["sample"] >= pts["lower"]) & (pts["sample"] <= pts["upper"])
            inside[kind] += bool(ok.all())
    # The band is built from N(0, 1) samples and mapped through the quartile line (estimated
    # location and scale), as qqplotr does: coverage is near, not exactly, 0.95.
    assert 0.90 <= inside["simultaneous"] / reps <= 0.995
    # All 100 points inside a pointwise band: about 0.6 here.
    assert inside["pointwise"] / reps < inside["simultaneous"] / reps - 0.2
    # The tail-sensitive band is wider than the pointwise one in the tails.
    x = rng.normal(size=n)
    sim, point = _qq_points(x, 0.95, "simultaneous"), _qq_points(x, 0.95, "pointwise")
    assert sim["upper"][-1] - sim["lower"][-1] > point["upper"][-1] - point["lower"][-1]
    with pytest.raises(ValueError, match="band must be"):
        _qq_points(x, 0.95, "nope")


def test_qq_band_options_render():
    for band in ("simultaneous", "pointwise", True, False):
        fig = plots.qq([0.1, -0.3, 0.2, 1.5, -0.7, 0.4, -0.2], band=band)
        assert len(fig.axes) == 1
