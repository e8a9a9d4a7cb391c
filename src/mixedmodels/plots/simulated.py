"""Figures of simulated (DHARMa) residuals of GLMMs; each function returns a Figure.

They take a :class:`~mixedmodels.diagnostics.simulated_residuals.SimulatedResiduals`
(``mm.simulated_residuals(fit)``) and follow DHARMa's plots (Hartig, DHARMa vignette):
``plotQQunif`` (uniform Q-Q plot with the test p-values), ``plotResiduals`` (scaled
residuals against the rank-transformed predictions) and the histograms that
``testDispersion``/``testZeroInflation`` draw (the simulated statistic, the observed one
marked).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .figures import BLUE, GREY, LIGHT, ORANGE, _axes, _boxes, _figure, _style

__all__ = [
    "dispersion_histogram",
    "scaled_residuals_vs_predicted",
    "simulated_residual_panels",
    "simulation_histogram",
    "uniform_qq",
    "zero_inflation_histogram",
]

RED = "#c53030"
#: Above this many rows the uniform Q-Q plot has no band (its calibration takes seconds).
_MAX_BAND_ROWS = 5000


def _p_label(p: float, nsim: int = 0, alternative: str = "two-sided") -> str:
    """``p = 0.012``; a simulation p-value of 0 as its resolution, ``p < 2/nsim``."""
    if p == 0.0 and nsim:
        return f"p < {(2.0 if alternative == 'two-sided' else 1.0) / nsim:.2g}"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def uniform_qq(
    res: Any,
    *,
    tests: bool = True,
    band: bool = True,
    level: float = 0.95,
    ax: Any = None,
) -> Any:
    """Uniform Q-Q plot of the scaled residuals, with the KS test's p-value.

    Parameters
    ----------
    res
        Simulated residuals (:func:`mixedmodels.simulated_residuals`).
    tests
        Write the p-values of the uniformity (KS), dispersion and outlier tests on the
        plot, in red where significant at 0.05 (DHARMa's ``plotQQunif``).
    band
        Shade a simultaneous ``level`` band: under the model every point lies inside it
        with probability ``level`` (the order statistics of n uniforms are Beta(i, n + 1 -
        i); the pointwise level is calibrated as in Aldor-Noiman et al. 2013). Left out
        above 5000 rows.
    level
        Confidence level of the band.
    ax
        Draw into this Axes instead of a new figure.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.glmer("TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)", "grouseticks",
    ...                family="poisson")
    >>> fig = uniform_qq(mm.simulated_residuals(fit, seed=1))
    """
    from scipy import stats

    from .figures import _tail_sensitive_level

    r = np.sort(np.asarray(res.scaled, dtype=float))
    n = r.size
    expected = (np.arange(1, n + 1) - 0.5) / n
    fig, ax = _axes(ax, 5.0, 5.0)
    if band and n <= _MAX_BAND_ROWS:
        gamma = _tail_sensitive_level(n, level)
        i = np.arange(1, n + 1)
        lower = stats.beta.ppf(gamma / 2, i, n + 1 - i)
        upper = stats.beta.ppf(1 - gamma / 2, i, n + 1 - i)
        ax.fill_between(
            expected, lower, upper, color=LIGHT, alpha=0.7, linewidth=0, label=f"{level:.0%} band"
        )
    ax.plot([0, 1], [0, 1], color=ORANGE, linewidth=1.5, label="uniform")
    ax.scatter(expected, r, s=9, color=BLUE, linewidths=0, alpha=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    if tests:
        checks = [
            ("KS test", res.test_uniformity(), 0),
            ("Dispersion test", res.test_dispersion(), res.nsim),
            ("Outlier test", res.test_outliers(), 0),
        ]
        for k, (name, t, nsim) in enumerate(checks):
            ax.text(
                0.03,
                0.97 - 0.065 * k,
                f"{name}: {_p_label(t.pvalue, nsim)}",
                transform=ax.transAxes,
                fontsize=8,
                verticalalignment="top",
                color=RED if t.pvalue < 0.05 else "black",
            )
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    _style(ax, "Q-Q plot of scaled residuals", "Expected (uniform)", "Observed scaled residual")
    return fig


def _rank_transform(x: np.ndarray) -> np.ndarray:
    """Ranks (ties averaged) over the largest rank: DHARMa's ``rankTransform``."""
    from scipy import stats

    ranks = stats.rankdata(x, method="average")
    return ranks / ranks.max()


def scaled_residuals_vs_predicted(
    res: Any,
    *,
    rank: bool = True,
    quantiles: Sequence[float] = (0.25, 0.5, 0.75),
    quantile_lines: bool = True,
    ax: Any = None,
) -> Any:
    """Scaled residuals against the (rank-transformed) predicted response.

    Parameters
    ----------
    res
        Simulated residuals (:func:`mixedmodels.simulated_residuals`).
    rank
        Plot against the ranks of the predictions scaled to (0, 1] (DHARMa's default),
        which spreads skewed predictions evenly.
    quantiles
        Where dashed reference lines are drawn: under the model these quantiles of the
        residuals are flat at these heights.
    quantile_lines
        Draw the empirical quantiles of the residuals in bins of the predictions (about 10
        bins of at least 20 rows), to show trends away from the reference lines.
    ax
        Draw into this Axes instead of a new figure.

    Notes
    -----
    DHARMa's ``plotResiduals``: the x axis is the population-level predicted response
    (without random effects). Rows outside the simulation range (residual 0 or 1) are
    drawn as stars, red when the outlier test is significant. When the predictions take
    few values (fewer than 10, with more than 10 rows each) the residuals are shown as box
    plots per value, as DHARMa does. DHARMa fits quantile regressions (qgam) and tests
    them; the binned quantiles here are a visual aid without a test.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.glmer("TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)", "grouseticks",
    ...                family="poisson")
    >>> fig = scaled_residuals_vs_predicted(mm.simulated_residuals(fit, seed=1))
    """
    r = np.asarray(res.scaled, dtype=float)
    pred = np.asarray(res.predicted, dtype=float)
    fig, ax = _axes(ax, 6.0, 4.5)
    values = np.unique(pred)
    as_boxes = values.size == 1 or (values.size < 10 and r.size / values.size > 10)
    outside = (r == 0.0) | (r == 1.0)
    significant = res.test_outliers().pvalue < 0.05
    star = RED if significant else GREY
    if as_boxes:
        samples = [r[pred == v] for v in values]
        _boxes(ax, samples, [f"{v:.3g}" for v in values])
        xlabel = "Predicted response (population level)"
    else:
        x = _rank_transform(pred) if rank else pred
        ax.scatter(x[~outside], r[~outside], s=9, color=BLUE, alpha=0.55, linewidths=0)
        if outside.any():
            ax.scatter(
                x[outside],
                r[outside],
                s=40,
                marker="*",
                color=star,
                linewidths=0,
                label="outside the simulations",
            )
        if quantile_lines:
            _binned_quantiles(ax, x, r, quantiles)
        xlabel = "Predicted response" + (" (rank transformed)" if rank else "")
    for q in quantiles:
        ax.axhline(q, color=GREY, linewidth=0.8, linestyle="--")
    ax.set_ylim(-0.02, 1.02)
    ax.set_yticks([0.0, *quantiles, 1.0])
    if ax.get_legend_handles_labels()[0]:
        ax.legend(
            fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2
        )
    _style(ax, "Scaled residuals vs predicted", xlabel, "Scaled residual")
    return fig


def _binned_quantiles(ax: Any, x: np.ndarray, r: np.ndarray, quantiles: Sequence[float]) -> None:
    n = x.size
    nbins = min(10, n // 20)
    if nbins < 3:
        return
    order = np.argsort(x, kind="stable")
    bins = np.array_split(order, nbins)
    centres = np.array([np.mean(x[b]) for b in bins])
    for k, q in enumerate(quantiles):
        line = np.array([np.quantile(r[b], q) for b in bins])
        ax.plot(
            centres,
            line,
            color=ORANGE,
            linewidth=1.8,
            marker="o",
            markersize=3,
            label="binned quantiles" if k == 0 else None,
        )


def simulation_histogram(test: Any, *, title: str | None = None, ax: Any = None) -> Any:
    """Histogram of a simulation test's statistic over the simulations, the data's marked.

    Parameters
    ----------
    test
        A :class:`~mixedmodels.diagnostics.simulated_residuals.SimulationTest` with
        simulated values (dispersion, zero inflation, bootstrap outliers).
    title
        Axes title (default: the test's name).
    ax
        Draw into this Axes instead of a new figure.

    Notes
    -----
    What DHARMa's ``testGeneric`` plots: grey the statistic of each simulated data set
    (its distribution under the model), red the data's.
    """
    values = np.asarray(test.simulated, dtype=float)
    if values.size == 0:
        raise ValueError(f"{test.name} has no simulated statistics to draw")
    fig, ax = _axes(ax, 5.5, 4.0)
    lo = min(values.min(), test.observed)
    hi = max(values.max(), test.observed)
    whole = np.all(values == np.rint(values)) and float(test.observed).is_integer()
    if whole and hi - lo <= 60:  # counts (zeros): one bar per value
        bins = np.arange(lo - 0.5, hi + 1.5)
    else:
        span = hi - lo if hi > lo else 1.0
        nbins = max(20, min(60, values.size // 5))
        bins = np.linspace(lo - 0.02 * span, hi + 0.02 * span, nbins)
    ax.hist(values, bins=bins, color=LIGHT, edgecolor="white", label="simulated")
    ax.axvline(test.observed, color=RED, linewidth=2, label="observed")
    ax.legend(fontsize=8, frameon=False)
    label = f"ratio {test.ratio:.3g}, " if np.isfinite(test.ratio) else ""
    _style(
        ax,
        title or test.name,
        f"Simulated values ({label}{_p_label(test.pvalue, values.size, test.alternative)}, "
        f"{test.alternative})",
        "Simulations",
    )
    return fig


def dispersion_histogram(res: Any, *, ax: Any = None) -> Any:
    """The dispersion test's histogram (:meth:`SimulatedResiduals.test_dispersion`).

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.glmer("TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)", "grouseticks",
    ...                family="poisson")
    >>> fig = dispersion_histogram(mm.simulated_residuals(fit, seed=1))
    """
    return simulation_histogram(res.test_dispersion(), title="Dispersion test", ax=ax)


def zero_inflation_histogram(res: Any, *, ax: Any = None) -> Any:
    """The zero-inflation test's histogram of simulated numbers of zeros.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.glmer("TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)", "grouseticks",
    ...                family="poisson")
    >>> fig = zero_inflation_histogram(mm.simulated_residuals(fit, seed=1))
    """
    return simulation_histogram(res.test_zero_inflation(), title="Zero-inflation test", ax=ax)


def simulated_residual_panels(res: Any) -> Any:
    """Four panels: uniform Q-Q, residuals vs predicted, dispersion and zero-inflation tests.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.glmer("TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)", "grouseticks",
    ...                family="poisson")
    >>> fig = simulated_residual_panels(mm.simulated_residuals(fit, seed=1))
    """
    fig = _figure(11, 9)
    axes = fig.subplots(2, 2)
    uniform_qq(res, ax=axes[0, 0])
    scaled_residuals_vs_predicted(res, ax=axes[0, 1])
    dispersion_histogram(res, ax=axes[1, 0])
    zero_inflation_histogram(res, ax=axes[1, 1])
    return fig
