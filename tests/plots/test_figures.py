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
