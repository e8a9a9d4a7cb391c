"""Effects plot: the predicted response along each predictor, with confidence bands.

One panel per data column of the fixed-effects part of the formula: for a factor, the
population-level prediction at each level (points with bars); for a numeric column, a line
over its observed range with a band. The other columns are held at a typical value (a
factor at its most frequent level, a number at its mean), named under the figure's panels.
Bands are confidence intervals of the population-level mean, ``x' beta +- z se`` with
``se = sqrt(x' vcov x)`` (:func:`mixedmodels.inference.prediction.prediction_frame`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .figures import BLUE, LIGHT, _figure, _style

__all__ = ["effect_grids", "effects"]


def _fixed_columns(fit: Any) -> list[str]:
    spec = fit.design.spec
    cols = [c for t in spec.fixed.terms for v in t.variables for c in v.columns]
    return list(dict.fromkeys(cols))


def _typical(data: pd.DataFrame, column: str, factors: Any) -> Any:
    if column in factors or not pd.api.types.is_numeric_dtype(data[column]):
        return data[column].mode().iloc[0]
    return float(data[column].mean())


def effect_grids(
    fit: Any, data: pd.DataFrame, *, points: int = 40, level: float = 0.95
) -> dict[str, pd.DataFrame]:
    """For each predictor column, the grid of values and its predictions
    (``fit, se, lower, upper``), the other columns at their typical values (``attrs``)."""
    spec = fit.design.spec
    if spec is None:
        raise DataError("an effects plot needs a fit from a formula")
    factors = dict(spec.factors)
    columns = _fixed_columns(fit)
    offsets = list(dict.fromkeys(c for v in spec.formula.offsets for c in v.columns))
    missing = [c for c in columns + offsets if c not in data.columns]
    if missing:
        raise DataError(f"the data passed have no column {', '.join(map(repr, missing))}")
    typical = {c: _typical(data, c, factors) for c in columns + offsets}
    out: dict[str, pd.DataFrame] = {}
    for col in columns:
        if col in factors:
            values: Any = list(factors[col].levels)
            is_factor = True
        elif not pd.api.types.is_numeric_dtype(data[col]):
            values = sorted(data[col].dropna().unique().tolist())
            is_factor = True
        else:
            lo, hi = float(data[col].min()), float(data[col].max())
            values = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
            is_factor = False
        grid = pd.DataFrame({c: [v] * len(values) for c, v in typical.items() if c != col})
        grid[col] = values
        if is_factor and col in data.columns and isinstance(data[col].dtype, pd.CategoricalDtype):
            grid[col] = pd.Categorical(grid[col], categories=data[col].cat.categories)
        pred = fit.predict(grid, re=False, interval="confidence", level=level)
        frame = pd.concat([grid[[col]].reset_index(drop=True), pred.reset_index(drop=True)], axis=1)
        frame.attrs.update(
            factor=is_factor, held={c: v for c, v in typical.items() if c != col}, level=level
        )
        out[col] = frame
    return out


def effects(fit: Any, data: pd.DataFrame, *, level: float = 0.95, max_panels: int = 6) -> Any:
    """Predicted response along each predictor with ``level`` confidence bands.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> data = mm.load_dataset("ratpup")
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", data)
    >>> fig = effects(fit, data)
    """
    grids = list(effect_grids(fit, data, level=level).items())[:max_panels]
    if not grids:
        raise DataError("the model has no predictor in its fixed part: nothing to plot")
    ncol = min(3, len(grids))
    nrow = -(-len(grids) // ncol)
    fig = _figure(3.0 * ncol, 2.7 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    response = fit.design.response_name
    for ax, (col, g) in zip(axes.ravel(), grids, strict=False):
        if g.attrs["factor"]:
            x = np.arange(len(g))
            ax.errorbar(
                x,
                g["fit"],
                yerr=[g["fit"] - g["lower"], g["upper"] - g["fit"]],
                fmt="o",
                color=BLUE,
                capsize=3,
            )
            ax.set_xticks(x, [str(v) for v in g[col]], fontsize=8)
            ax.set_xlim(-0.5, len(g) - 0.5)
        else:
            ax.fill_between(g[col], g["lower"], g["upper"], color=LIGHT, linewidth=0)
            ax.plot(g[col], g["fit"], color=BLUE)
        held = ", ".join(
            f"{c} = {v:.3g}" if isinstance(v, float) else f"{c} = {v}"
            for c, v in g.attrs["held"].items()
        )
        _style(ax, col, f"{col}\n(at {held})" if held else col, response)
        ax.xaxis.label.set_fontsize(7)
    for ax in axes.ravel()[len(grids) :]:
        ax.set_visible(False)
    return fig
