"""Figures of influence diagnostics (:mod:`mixedmodels.diagnostics.influence`).

* :func:`cooks_distance`: a dot plot of each group's Cook's distance (leave-one-group-out),
  sorted, with the ``4 / G`` cut-off (influence.ME's ``plot(..., which = "cook")``);
* :func:`residual_index`: scaled residuals against row number, coloured by whether they
  pass +-3, the largest labelled with their group.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .figures import BLUE, GREY, ORANGE, _axes, _style

__all__ = ["cooks_distance", "residual_index"]


def cooks_distance(infl: Any, *, ax: Any = None, max_levels: int = 40) -> Any:
    """Cook's distance of each level left out, largest first (at most ``max_levels``)."""
    g = infl.groups.sort_values("cooks_distance", ascending=True)
    g = g[np.isfinite(g["cooks_distance"])].tail(max_levels)
    height = min(8.0, 1.2 + 0.18 * len(g))
    fig, ax = _axes(ax, 5.0, height)
    y = np.arange(len(g))
    flag = g["cooks_distance"].to_numpy() > infl.cutoff
    ax.hlines(y, 0.0, g["cooks_distance"], color="#cbd5e0", linewidth=1.0)
    ax.scatter(g["cooks_distance"][~flag], y[~flag], color=BLUE, s=18, zorder=3)
    ax.scatter(g["cooks_distance"][flag], y[flag], color=ORANGE, s=24, zorder=3)
    ax.axvline(infl.cutoff, color=GREY, linestyle="--", linewidth=0.9)
    ax.text(infl.cutoff, len(g) - 0.4, " 4/G", color=GREY, fontsize=8, va="top")
    ax.set_yticks(y, [str(v) for v in g.index], fontsize=7)
    _style(ax, f"Cook's distance by {infl.group}", "Cook's distance (group left out)", "")
    ax.set_xlim(left=0.0)
    return fig


def residual_index(infl: Any, *, ax: Any = None, label: int = 3) -> Any:
    """Scaled residuals by row, |r| > 3 in orange, the ``label`` largest named by group."""
    obs = infl.observations
    r = obs["scaled_resid"].to_numpy()
    fig, ax = _axes(ax, 6.0, 3.2)
    x = np.arange(r.shape[0])
    big = np.abs(r) > 3.0
    ax.scatter(x[~big], r[~big], color=BLUE, s=8, alpha=0.7)
    ax.scatter(x[big], r[big], color=ORANGE, s=16)
    for lim in (-3.0, 3.0):
        ax.axhline(lim, color=GREY, linestyle="--", linewidth=0.8)
    ax.axhline(0.0, color=GREY, linewidth=0.6)
    for i in np.argsort(-np.abs(r))[:label]:
        ax.annotate(
            f"{obs.index[i]} ({infl.group} {obs['group'].iloc[i]})",
            (x[i], r[i]),
            textcoords="offset points",
            xytext=(4, 0),
            fontsize=7,
            va="center",
        )
    _style(ax, "Scaled residuals by row", "row", "scaled residual")
    return fig
