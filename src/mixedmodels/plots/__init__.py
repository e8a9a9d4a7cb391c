"""Figures of the analysis, one function per figure, each returning a matplotlib Figure.

matplotlib is imported when a figure is drawn, not when ``mixedmodels`` is imported.

>>> import mixedmodels as mm
>>> from mixedmodels import plots
>>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
>>> fig = plots.qq(fit)
>>> fig.savefig("qq.png")  # doctest: +SKIP
"""

from __future__ import annotations

from .effects import effect_grids, effects
from .figures import (
    boxplot_by,
    caterpillar,
    diagnostics,
    qq,
    ranef_qq,
    residual_kde,
    residuals_by_group,
    residuals_vs_fitted,
)
from .influence import cooks_distance, residual_index
from .render import figure_to_png, figure_to_svg
from .responses import proportions_by, wilson_interval
from .simulated import (
    dispersion_histogram,
    scaled_residuals_vs_predicted,
    simulated_residual_panels,
    simulation_histogram,
    uniform_qq,
    zero_inflation_histogram,
)
from .trajectories import trajectories

__all__ = [
    "boxplot_by",
    "caterpillar",
    "cooks_distance",
    "diagnostics",
    "dispersion_histogram",
    "effect_grids",
    "effects",
    "figure_to_png",
    "figure_to_svg",
    "proportions_by",
    "qq",
    "ranef_qq",
    "residual_index",
    "residual_kde",
    "residuals_by_group",
    "residuals_vs_fitted",
    "scaled_residuals_vs_predicted",
    "simulated_residual_panels",
    "simulation_histogram",
    "trajectories",
    "uniform_qq",
    "wilson_interval",
    "zero_inflation_histogram",
]
