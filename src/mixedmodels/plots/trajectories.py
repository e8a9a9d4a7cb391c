"""Trajectories (a spaghetti plot): the response over time, one line per subject."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .figures import GREY, PALETTE, _figure, _style

__all__ = ["trajectories"]


def trajectories(
    data: pd.DataFrame,
    response: str,
    time: str,
    group: str,
    *,
    by: str | None = None,
    width: float = 6.0,
    height: float = 4.0,
) -> Any:
    """Draw ``response`` against ``time`` with one line per level of ``group``.

    Lines are coloured by ``by`` (a factor constant within each group, e.g. sex) when given;
    the thick line is the mean of ``response`` at each time (per level of ``by``).

    Examples
    --------
    >>> import mixedmodels as mm
    >>> from mixedmodels import plots
    >>> fig = plots.trajectories(mm.load_dataset("sleepstudy"), "Reaction", "Days", "Subject")
    """
    for col in (response, time, group) + ((by,) if by else ()):
        if col not in data.columns:
            raise DataError(f"trajectories: no column named {col!r}")
    frame = data[[c for c in (response, time, group, by) if c]].dropna()
    fig = _figure(width, height)
    ax = fig.add_subplot()
    levels = sorted(map(str, frame[by].unique())) if by else [None]
    for k, level in enumerate(levels):
        part = frame if level is None else frame[frame[by].astype(str) == level]
        colour = GREY if level is None else PALETTE[k % len(PALETTE)]
        for _, rows in part.groupby(group, observed=True, sort=False):
            rows = rows.sort_values(time)
            ax.plot(rows[time], rows[response], color=colour, alpha=0.45, linewidth=0.9)
        mean = part.groupby(time, observed=True)[response].mean()
        ax.plot(
            mean.index.to_numpy(dtype=float),
            mean.to_numpy(dtype=float),
            color="#1a202c" if level is None else colour,
            linewidth=2.6,
            label="mean" if level is None else f"{by} = {level} (mean)",
        )
    ax.legend(fontsize=8, frameon=False)
    n = frame[group].nunique()
    _style(ax, f"{response} over {time}: {n} {group} trajectories", time, response)
    ticks = np.sort(frame[time].unique())
    if len(ticks) <= 15:
        ax.set_xticks(ticks)
    return fig
