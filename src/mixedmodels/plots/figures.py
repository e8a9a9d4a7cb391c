"""One function per figure; each returns a :class:`matplotlib.figure.Figure`.

Figures are built on ``matplotlib.figure.Figure`` directly, not through ``pyplot``: no global
state, no GUI backend, safe in threads and on servers (the Agg canvas renders them). Save with
``fig.savefig("qq.png")``; in Jupyter they display as images.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import GLMM_RESIDUAL_CHECKS, DataError, refuse_generalized

__all__ = [
    "boxplot_by",
    "caterpillar",
    "diagnostics",
    "qq",
    "ranef_qq",
    "residual_kde",
    "residuals_by_group",
    "residuals_vs_fitted",
]

# A restrained palette that reads in print and on screens (colour-blind safe).
BLUE = "#2b6cb0"
ORANGE = "#dd6b20"
GREY = "#718096"
LIGHT = "#bee3f8"
PALETTE = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#b7791f"]


def _figure(width: float = 6.0, height: float = 4.0) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("plots need matplotlib: python3 -m pip install matplotlib") from exc
    return Figure(figsize=(width, height), layout="constrained")


def _style(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11, loc="left", fontweight="bold")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(True, color="#e2e8f0", linewidth=0.6)
    ax.set_axisbelow(True)


def _values(fit_or_values: Any) -> tuple[np.ndarray, str]:
    resid = getattr(fit_or_values, "resid", None)
    if resid is not None:
        return np.asarray(resid, dtype=float), "Conditional residual"
    return np.asarray(fit_or_values, dtype=float).ravel(), "Value"


def _axes(ax: Any, width: float = 6.0, height: float = 4.0) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    fig = _figure(width, height)
    return fig, fig.add_subplot()


def _group_of(fit: Any, group: str | None) -> str:
    groups = list(fit.ranef)
    if group is None:
        return groups[0]
    if group not in groups:
        raise DataError(f"no grouping factor {group!r} in the model (has: {', '.join(groups)})")
    return group


def _group_labels(data: pd.DataFrame, by: Sequence[str]) -> pd.Series:
    return data[list(by)].astype(str).agg(" / ".join, axis=1)


# --------------------------------------------------------------------------- data
def boxplot_by(
    data: pd.DataFrame,
    response: str,
    by: str | Sequence[str],
    *,
    ax: Any = None,
) -> Any:
    """Box plots of ``response`` for each combination of the ``by`` columns, with the points.

    Parameters
    ----------
    data
        The data.
    response
        A numeric column.
    by
        One or more grouping columns; their combinations label the boxes.
    ax
        Draw into this Axes instead of a new figure.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fig = boxplot_by(mm.load_dataset("ratpup"), "weight", ["treatment", "sex"])
    """
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in [response, *by] if c not in data.columns]
    if missing:
        raise DataError(f"boxplot_by: no column {', '.join(map(repr, missing))} in the data")
    frame = data[[response, *by]].dropna()
    labels = _group_labels(frame, by)
    order = sorted(labels.unique())
    samples = [frame.loc[labels == k, response].to_numpy(dtype=float) for k in order]
    fig, ax = _axes(ax, max(4.5, 0.9 * len(order) + 2.0), 4.0)
    _boxes(ax, samples, order)
    _style(ax, f"{response} by {' × '.join(by)}", " / ".join(by), response)
    return fig


def _boxes(ax: Any, samples: list[np.ndarray], labels: list[str], points: bool = True) -> None:
    bp = ax.boxplot(
        samples,
        tick_labels=labels,
        patch_artist=True,
        widths=0.55,
        showfliers=not points,
        medianprops={"color": ORANGE, "linewidth": 1.6},
        boxprops={"facecolor": LIGHT, "edgecolor": BLUE, "linewidth": 1.0},
        whiskerprops={"color": BLUE},
        capprops={"color": BLUE},
    )
    del bp
    if points:
        rng = np.random.default_rng(0)
        for i, s in enumerate(samples, start=1):
            x = i + rng.uniform(-0.12, 0.12, size=s.size)
            ax.scatter(x, s, s=7, color=BLUE, alpha=0.45, linewidths=0)
    if len(labels) > 6:
        for label in ax.get_xticklabels():
            label.set_rotation(45)
            label.set_horizontalalignment("right")


# --------------------------------------------------------------------------- residuals
def residual_kde(fit_or_values: Any, *, ax: Any = None) -> Any:
    """Histogram and kernel density of the residuals with the matching normal curve.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> fig = residual_kde(fit)
    """
    refuse_generalized(
        fit_or_values,
        "the normal-theory residual density",
        GLMM_RESIDUAL_CHECKS,
    )
    r, label = _values(fit_or_values)
    fig, ax = _axes(ax)
    ax.hist(r, bins="auto", density=True, color=LIGHT, edgecolor="white", label="histogram")
    grid = np.linspace(r.min() - 0.15 * np.ptp(r), r.max() + 0.15 * np.ptp(r), 400)
    if r.size > 1 and np.ptp(r) > 0:
        ax.plot(grid, stats.gaussian_kde(r)(grid), color=BLUE, linewidth=2, label="density (KDE)")
    sd = r.std(ddof=1) if r.size > 1 else 1.0
    ax.plot(
        grid,
        stats.norm.pdf(grid, r.mean(), sd),
        color=ORANGE,
        linewidth=1.8,
        linestyle="--",
        label="normal, same mean and SD",
    )
    ax.legend(fontsize=8, frameon=False)
    _style(ax, "Distribution of residuals", label, "Density")
    return fig


@functools.lru_cache(maxsize=32)
def _tail_sensitive_level(n: int, level: float, nsim: int = 1000, seed: int = 20131) -> float:
    """Pointwise level whose band holds all ``n`` order statistics with probability ``level``.

    The tail-sensitive band of Aldor-Noiman, Brown, Buja, Rolke & Stine (2013, *The
    American Statistician* 67(4), "The power to see"): under normality ``Phi(z_(i))`` is
    Beta(i, n + 1 - i); for ``nsim`` simulated samples the smallest two-sided pointwise
    tail probability over i is recorded, and its ``1 - level`` quantile is the pointwise
    level ``gamma``. Seeded, so the same data always give the same band; cached per ``n``
    (about 0.1 s for n = 300, 2-3 s for n = 5000, the most the report plots).
    """
    rng = np.random.default_rng(seed)
    i = np.arange(1, n + 1)
    smallest = np.empty(nsim)
    batch = max(1, min(nsim, 2_000_000 // max(n, 1)))  # bound memory for large n
    for start in range(0, nsim, batch):
        stop = min(nsim, start + batch)
        u = np.sort(rng.random((stop - start, n)), axis=1)  # Phi(z_(i)) of a normal sample
        cdf = stats.beta.cdf(u, i, n + 1 - i)
        smallest[start:stop] = np.min(2.0 * np.minimum(cdf, 1.0 - cdf), axis=1)
    return float(np.quantile(smallest, 1.0 - level))


def _qq_points(
    values: np.ndarray, level: float = 0.95, band: str = "simultaneous"
) -> dict[str, np.ndarray]:
    """Normal Q-Q coordinates, a line through the quartiles and a confidence band.

    ``band="pointwise"``: the line +- z * SE of the order statistics,
    ``SE_i = (slope / phi(q_i)) sqrt(p_i (1 - p_i) / n)`` (Fox 2016, *Applied Regression
    Analysis*, sec. 12.1; R's ``car::qqPlot``): each point is inside with probability
    ``level``, so with many points some fall outside by chance.
    ``band="simultaneous"``: the tail-sensitive band (:func:`_tail_sensitive_level`), the
    Beta quantiles of the order statistics at the adjusted level mapped through the line:
    all points are inside with probability ``level`` under normality.
    """
    x = np.sort(values)
    n = x.size
    p = (np.arange(1, n + 1) - 0.5) / n
    q = stats.norm.ppf(p)
    q1, q3 = np.quantile(x, [0.25, 0.75])
    z1, z3 = stats.norm.ppf([0.25, 0.75])
    slope = (q3 - q1) / (z3 - z1)
    intercept = q1 - slope * z1
    line = intercept + slope * q
    if band == "pointwise":
        se = slope / stats.norm.pdf(q) * np.sqrt(p * (1 - p) / n)
        z = stats.norm.ppf(0.5 + level / 2)
        lower, upper = line - z * se, line + z * se
    elif band == "simultaneous":
        gamma = _tail_sensitive_level(n, level)
        i = np.arange(1, n + 1)
        lo = stats.norm.ppf(stats.beta.ppf(gamma / 2, i, n + 1 - i))
        hi = stats.norm.ppf(stats.beta.ppf(1 - gamma / 2, i, n + 1 - i))
        lower, upper = intercept + slope * lo, intercept + slope * hi
    else:
        raise ValueError(f"band must be 'simultaneous' or 'pointwise', not {band!r}")
    return {"theoretical": q, "sample": x, "line": line, "lower": lower, "upper": upper}


def qq(
    fit_or_values: Any,
    *,
    band: bool | str = "simultaneous",
    level: float = 0.95,
    title: str = "Normal Q-Q plot of residuals",
    ax: Any = None,
) -> Any:
    """Normal quantile-quantile plot with a confidence band.

    Parameters
    ----------
    fit_or_values
        A fitted model (its conditional residuals) or an array.
    band
        ``"simultaneous"`` (default): the tail-sensitive band of Aldor-Noiman et al.
        (2013), which holds all points at once with probability ``level`` under normality,
        so a point outside it is evidence against normality. ``"pointwise"``: each point's
        own band (R's ``car::qqPlot``). ``False``: no band.
    level
        Confidence level of the band.
    title
        Axes title.
    ax
        Draw into this Axes instead of a new figure.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> fig = qq(fit)
    """
    refuse_generalized(
        fit_or_values,
        "the normal Q-Q plot of residuals",
        GLMM_RESIDUAL_CHECKS,
    )
    values, label = _values(fit_or_values)
    kind = "simultaneous" if band is True else band
    pts = _qq_points(values, level, kind or "pointwise")
    fig, ax = _axes(ax, 6.0, 4.0)
    if band:
        ax.fill_between(
            pts["theoretical"],
            pts["lower"],
            pts["upper"],
            color=LIGHT,
            alpha=0.7,
            linewidth=0,
            label=f"{level:.0%} {kind} band",
        )
    ax.plot(pts["theoretical"], pts["line"], color=ORANGE, linewidth=1.5, label="reference line")
    outside = (pts["sample"] < pts["lower"]) | (pts["sample"] > pts["upper"])
    if not band:
        outside[:] = False
    ax.scatter(
        pts["theoretical"][~outside], pts["sample"][~outside], s=10, color=BLUE, linewidths=0
    )
    if outside.any():
        ax.scatter(
            pts["theoretical"][outside],
            pts["sample"][outside],
            s=12,
            color="#c53030",
            linewidths=0,
            label="outside the band",
        )
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    _style(ax, title, "Theoretical normal quantile", label)
    return fig


def residuals_vs_fitted(fit: Any, *, ax: Any = None) -> Any:
    """Conditional residuals against conditional fitted values, with a running mean.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> fig = residuals_vs_fitted(fit)
    """
    refuse_generalized(
        fit,
        "the residual vs fitted plot",
        GLMM_RESIDUAL_CHECKS,
    )
    x = np.asarray(fit.fitted, dtype=float)
    r = np.asarray(fit.resid, dtype=float)
    fig, ax = _axes(ax)
    ax.axhline(0, color=GREY, linewidth=1)
    ax.scatter(x, r, s=10, color=BLUE, alpha=0.6, linewidths=0)
    order = np.argsort(x)
    if x.size >= 10:
        # A running mean over a tenth of the points shows curvature without statsmodels.
        k = max(5, x.size // 10)
        kernel = np.ones(k) / k
        smooth = np.convolve(r[order], kernel, mode="valid")
        xs = np.convolve(x[order], kernel, mode="valid")
        ax.plot(xs, smooth, color=ORANGE, linewidth=1.8, label=f"running mean ({k} points)")
        ax.legend(fontsize=8, frameon=False)
    _style(ax, "Residuals vs fitted", "Fitted value (conditional)", "Conditional residual")
    return fig


def residuals_by_group(fit: Any, group: str | None = None, *, ax: Any = None) -> Any:
    """Box plots of the conditional residuals per level of a grouping factor (cluster).

    Levels are ordered by their median residual, so a level with unusual spread or location
    stands out.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> fig = residuals_by_group(fit, "litter")
    """
    refuse_generalized(
        fit,
        "the residuals-by-group plot",
        GLMM_RESIDUAL_CHECKS,
    )
    group = _group_of(fit, group)
    term = next(t for t in fit.structure.terms if t.group == group)
    levels = np.asarray(term.levels)
    r = np.asarray(fit.resid, dtype=float)
    samples = [r[term.refs == i] for i in range(len(levels))]
    order = np.argsort([np.median(s) if s.size else 0.0 for s in samples])
    width = min(14.0, max(6.0, 0.22 * len(levels) + 2))
    fig, ax = _axes(ax, width, 4.0)
    many = len(levels) > 60
    _boxes(ax, [samples[i] for i in order], [str(levels[i]) for i in order], points=not many)
    if many:
        ax.set_xticks([])
    else:
        for label in ax.get_xticklabels():
            label.set_rotation(90)
            label.set_fontsize(7)
            label.set_horizontalalignment("center")
    ax.axhline(0, color=GREY, linewidth=1)
    _style(
        ax, f"Residuals by {group}", f"{group} (ordered by median residual)", "Conditional residual"
    )
    return fig


# --------------------------------------------------------------------------- random effects
def _ranef_column(fit: Any, group: str | None, term: str | None) -> tuple[str, str, pd.Series]:
    group = _group_of(fit, group)
    table = fit.ranef[group]
    if term is None:
        term = str(table.columns[0])
    if term not in table.columns:
        raise DataError(
            f"no random effect {term!r} for {group} (has: {', '.join(map(str, table.columns))})"
        )
    return group, term, table[term]


def ranef_qq(fit: Any, group: str | None = None, term: str | None = None, *, ax: Any = None) -> Any:
    """Normal Q-Q plot of the predicted random effects (BLUPs) of one term.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> fig = ranef_qq(fit)
    """
    group, term, values = _ranef_column(fit, group, term)
    fig, ax = _axes(ax, 6.0, 4.0)
    qq(values.to_numpy(), title=f"Q-Q plot of BLUPs: {term} | {group}", ax=ax)
    ax.set_ylabel("Predicted random effect", fontsize=9)
    return fig


def caterpillar(
    fit: Any,
    group: str | None = None,
    *,
    level: float = 0.95,
    ax: Any = None,
) -> Any:
    """Caterpillar plot: BLUPs of each level, sorted, with ``level`` prediction intervals.

    The intervals are ``b +- z * condsd`` with the conditional standard deviations
    (lme4's ``dotplot(ranef(fit, condVar = TRUE))``). One panel per random-effect term.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> fig = caterpillar(fit)
    """
    group = _group_of(fit, group)
    values = fit.ranef[group]
    sds = fit.ranef_condsd[group]
    z = stats.norm.ppf(0.5 + level / 2)
    nterms = values.shape[1]
    n = values.shape[0]
    height = min(12.0, max(3.5, 0.16 * n + 1.2))
    if ax is not None:
        fig, axes = ax.figure, [ax]
        nterms = 1
    else:
        fig = _figure(min(4.2 * nterms + 1, 12), height)
        axes = fig.subplots(1, nterms, sharey=False, squeeze=False)[0]
    order = np.argsort(values.iloc[:, 0].to_numpy())
    for j, a in enumerate(axes):
        b = values.iloc[order, j].to_numpy()
        sd = sds.iloc[order, j].to_numpy()
        y = np.arange(n)
        a.axvline(0, color=GREY, linewidth=1)
        a.errorbar(
            b,
            y,
            xerr=z * sd,
            fmt="o",
            markersize=3,
            color=BLUE,
            ecolor="#90cdf4",
            elinewidth=1.2,
            capsize=0,
        )
        a.set_yticks(y)
        a.set_yticklabels([str(v) for v in values.index[order]], fontsize=6 if n > 30 else 8)
        if n > 80:
            a.set_yticks([])
        title = str(values.columns[j])
        if ax is not None:
            title = f"BLUPs of {group}: {title}, {level:.0%} intervals"
        _style(a, title, "Predicted random effect", group if j == 0 else "")
    if ax is None:
        fig.suptitle(
            f"Random effects of {group} with {level:.0%} intervals",
            fontsize=11,
            x=0.02,
            horizontalalignment="left",
            fontweight="bold",
        )
    return fig


def diagnostics(fit: Any, group: str | None = None) -> Any:
    """Six diagnostic panels in one figure: residual density, Q-Q, residuals vs fitted,
    residuals by cluster, Q-Q of the BLUPs and their caterpillar plot.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> fig = diagnostics(fit)
    """
    refuse_generalized(
        fit,
        "the normal-theory diagnostics panel",
        GLMM_RESIDUAL_CHECKS,
    )
    group = _group_of(fit, group)
    fig = _figure(15, 9)
    axes = fig.subplots(2, 3)
    residual_kde(fit, ax=axes[0, 0])
    qq(fit, ax=axes[0, 1])
    residuals_vs_fitted(fit, ax=axes[0, 2])
    residuals_by_group(fit, group, ax=axes[1, 0])
    ranef_qq(fit, group, ax=axes[1, 1])
    caterpillar(fit, group, ax=axes[1, 2])
    axes[1, 2].set_yticks([])
    return fig
