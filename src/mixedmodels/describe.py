"""Descriptive statistics before modelling: variables, the response by group, the hierarchy.

``summary_by`` gives, per group of one or more factors, the table researchpy's
``summary_cont`` prints (N, mean, SD, SE, 95% confidence interval from the t distribution),
which is how the rat-pup tutorial starts (West, Welch & Galecki 2014, table 3.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .errors import DataError

__all__ = ["hierarchy", "summary_by", "variables"]

SUMMARY_COLUMNS = ["N", "Mean", "SD", "SE", "95% CI lower", "95% CI upper"]

# A numeric column with at most this many distinct values is listed with its levels.
_MAX_LEVELS_SHOWN = 12


def check_columns(data: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise :class:`DataError` naming every column of ``columns`` missing from ``data``."""
    missing = [c for c in columns if c not in data.columns]
    if missing:
        have = ", ".join(map(str, data.columns))
        raise DataError(
            f"{what}: no column named {', '.join(repr(c) for c in missing)} in the data "
            f"(columns: {have})"
        )


def _is_categorical(s: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def variables(data: pd.DataFrame) -> pd.DataFrame:
    """Describe each column: type, non-missing N, missing, distinct values and levels.

    Parameters
    ----------
    data
        The data.

    Returns
    -------
    pandas.DataFrame
        Indexed by column name: ``type`` (``factor`` or ``numeric``), ``N``, ``missing``,
        ``distinct`` and ``levels`` (the levels of a factor, or the range of a numeric column).

    Examples
    --------
    >>> import mixedmodels as mm
    >>> variables(mm.load_dataset("ratpup")).loc["sex", "levels"]
    'Female, Male'
    """
    rows = []
    for name in data.columns:
        s = data[name]
        n_missing = int(s.isna().sum())
        present = s.dropna()
        distinct = int(present.nunique())
        if _is_categorical(s):
            kind = "factor"
            levels = sorted(map(str, present.unique()))
            shown = ", ".join(levels[:_MAX_LEVELS_SHOWN])
            if len(levels) > _MAX_LEVELS_SHOWN:
                shown += f", ... ({len(levels)} levels)"
        else:
            kind = "numeric"
            if len(present):
                shown = f"{present.min():g} to {present.max():g}"
            else:
                shown = ""
        rows.append(
            {
                "type": kind,
                "N": len(present),
                "missing": n_missing,
                "distinct": distinct,
                "levels": shown,
            }
        )
    out = pd.DataFrame(rows, index=pd.Index([str(c) for c in data.columns], name="variable"))
    return out


def _summary(values: np.ndarray, level: float) -> list[float]:
    values = values[~np.isnan(values)]
    n = values.size
    mean = float(values.mean()) if n else np.nan
    sd = float(values.std(ddof=1)) if n > 1 else np.nan
    se = sd / np.sqrt(n) if n > 1 else np.nan
    if n > 1:
        half = stats.t.ppf(0.5 + level / 2.0, n - 1) * se
        lo, hi = mean - half, mean + half
    else:
        lo = hi = np.nan
    return [n, mean, sd, se, lo, hi]


def summary_by(
    data: pd.DataFrame,
    response: str,
    by: str | Sequence[str] | None = None,
    *,
    level: float = 0.95,
) -> pd.DataFrame:
    """Summary statistics of ``response`` per group: N, mean, SD, SE and a t-based CI.

    Parameters
    ----------
    data
        The data.
    response
        A numeric column.
    by
        Zero, one or more grouping columns. Groups appear in sorted order of their levels.
    level
        Confidence level of the interval ``mean +- t(level, N-1) * SE``.

    Returns
    -------
    pandas.DataFrame
        Columns ``N, Mean, SD, SE, 95% CI lower, 95% CI upper`` (the level in the names
        follows ``level``), one row per group (a single row ``all`` without ``by``); the
        index holds the group labels, joined by ``" / "`` for several columns.

    Notes
    -----
    The same numbers as researchpy's ``summary_cont(df.groupby(by)[response])``: SD with
    ``N - 1`` in the denominator, SE = SD / sqrt(N), CI from Student's t with N - 1 df.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> t = summary_by(mm.load_dataset("ratpup"), "weight", "sex")
    >>> int(t.loc["Female", "N"])
    151
    """
    if by is None:
        by = []
    elif isinstance(by, str):
        by = [by]
    by = list(by)
    check_columns(data, [response, *by], "summary_by")
    y = pd.to_numeric(data[response], errors="coerce")
    if y.notna().sum() == 0:
        raise DataError(f"summary_by: column {response!r} has no numeric values")
    pct = f"{level * 100:g}%"
    columns = ["N", "Mean", "SD", "SE", f"{pct} CI lower", f"{pct} CI upper"]
    if not by:
        rows = [_summary(y.to_numpy(dtype=float), level)]
        return _typed(pd.DataFrame(rows, index=pd.Index(["all"], name=response), columns=columns))
    keys = data[by].astype(str)
    frame = pd.concat([keys, y.rename("__y__")], axis=1).dropna(subset=by)
    labels, rows = [], []
    for key, group in frame.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        labels.append(" / ".join(map(str, key)))
        rows.append(_summary(group["__y__"].to_numpy(dtype=float), level))
    index = pd.Index(labels, name=" / ".join(by))
    return _typed(pd.DataFrame(rows, index=index, columns=columns))


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    table["N"] = table["N"].astype(int)
    return table


def hierarchy(data: pd.DataFrame, group: str) -> dict[str, Any]:
    """Describe a grouping factor: number of groups and the distribution of group sizes.

    Parameters
    ----------
    data
        The data.
    group
        The grouping column (e.g. ``"litter"``).

    Returns
    -------
    dict
        ``group``, ``ngroups``, ``nobs``, ``sizes`` (a Series: level -> rows) and
        ``size_summary`` (min, quartiles, mean, max of the sizes).

    Examples
    --------
    >>> import mixedmodels as mm
    >>> hierarchy(mm.load_dataset("ratpup"), "litter")["ngroups"]
    27
    """
    check_columns(data, [group], "hierarchy")
    keys = data[group].dropna()
    sizes = keys.astype(str).value_counts(sort=False)
    try:
        order = sorted(sizes.index, key=lambda v: (0, float(v)))
    except ValueError:
        order = sorted(sizes.index)
    sizes = sizes.reindex(order)
    sizes.index.name = group
    sizes.name = "rows"
    q = np.quantile(sizes.to_numpy(), [0, 0.25, 0.5, 0.75, 1]) if len(sizes) else [np.nan] * 5
    size_summary = pd.Series(
        {
            "min": q[0],
            "25%": q[1],
            "median": q[2],
            "75%": q[3],
            "max": q[4],
            "mean": float(sizes.mean()) if len(sizes) else np.nan,
        }
    )
    return {
        "group": group,
        "ngroups": len(sizes),
        "nobs": int(keys.size),
        "sizes": sizes,
        "size_summary": size_summary,
    }
