"""Figures of binomial and count responses before modelling (proportions by group)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .figures import BLUE, ORANGE, _axes, _group_labels, _style

__all__ = ["proportions_by", "wilson_interval"]


def wilson_interval(events: float, trials: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``events / trials``.

    Notes
    -----
    Wilson (1927), *J. Am. Stat. Assoc.* 22(158): the limits are
    ``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``; unlike the Wald interval it
    stays inside [0, 1] and keeps its coverage near 0 and 1. It treats the trials as
    independent, so with clustered data it is descriptive only.

    Examples
    --------
    >>> lo, hi = wilson_interval(3, 10)
    >>> round(lo, 4), round(hi, 4)
    (0.1078, 0.6032)
    """
    from scipy.special import ndtri

    if trials <= 0:
        return math.nan, math.nan
    z = float(ndtri(0.5 + level / 2.0))
    p = events / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2.0 * trials)) / denom
    half = z * math.sqrt(p * (1.0 - p) / trials + z * z / (4.0 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def proportions_by(
    data: pd.DataFrame,
    events: str,
    trials: str,
    by: str | Sequence[str],
    *,
    level: float = 0.95,
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """Proportion of events per group with Wilson intervals, and each row's proportion.

    Parameters
    ----------
    data
        One row per observation.
    events, trials
        Columns with the number of events (successes) and of trials per row (1 for 0/1
        data).
    by
        One or more grouping columns; their combinations label the groups.
    level
        Confidence level of the intervals (descriptive: they ignore any clustering).
    title
        Axes title (default: "Proportion of EVENTS by BY").
    ax
        Draw into this Axes instead of a new figure.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> cbpp = mm.load_dataset("cbpp")
    >>> fig = proportions_by(cbpp, "incidence", "size", "period")
    """
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in [events, trials, *by] if c not in data.columns]
    if missing:
        raise DataError(f"proportions_by: no column {', '.join(map(repr, missing))} in the data")
    frame = data[[events, trials, *by]].dropna()
    labels = _group_labels(frame, by)
    order = sorted(labels.unique())
    fig, ax = _axes(ax, max(4.5, 0.9 * len(order) + 2.0), 4.0)
    rng = np.random.default_rng(0)
    for i, key in enumerate(order):
        part = frame[labels == key]
        e = part[events].to_numpy(dtype=float)
        n = part[trials].to_numpy(dtype=float)
        total, count = float(e.sum()), float(n.sum())
        p = total / count if count > 0 else math.nan
        lo, hi = wilson_interval(total, count, level)
        ax.bar(i, p, width=0.6, color="#bee3f8", edgecolor=BLUE)
        ax.errorbar(i, p, yerr=[[p - lo], [hi - p]], color=ORANGE, capsize=4, linewidth=1.6)
        if n.size and np.any(n > 1):  # the rows' own proportions (uninformative for 0/1 rows)
            keep = n > 0
            x = i + rng.uniform(-0.15, 0.15, size=int(keep.sum()))
            ax.scatter(x, e[keep] / n[keep], s=8, color=BLUE, alpha=0.5, linewidths=0)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order)
    if len(order) > 6:
        for label in ax.get_xticklabels():
            label.set_rotation(45)
            label.set_horizontalalignment("right")
    ax.set_ylim(0, None)
    _style(
        ax,
        title or f"Proportion of {events} by {' × '.join(by)}",
        " / ".join(by),
        f"Proportion ({level:.0%} Wilson interval)",
    )
    return fig
