"""Tests of the residual assumptions: normality (Shapiro-Wilk), equal variance (White, Levene).

All tests take a fitted model (conditional residuals ``y - X beta - Z b``) or plain arrays,
so they are checked against scipy and statsmodels on the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import GLMM_RESIDUAL_CHECKS, DataError, refuse_generalized

__all__ = ["TestResult", "levene", "residual_groups", "shapiro_wilk", "white_test"]


@dataclass(frozen=True)
class TestResult:
    """One hypothesis test.

    Attributes
    ----------
    name
        The test's name.
    statistic
        Its statistic.
    pvalue
        Its p-value.
    df
        Degrees of freedom, when the reference distribution has them (``(df1, df2)`` for F).
    null
        The null hypothesis in words.
    extra
        Other statistics (e.g. White's F variant).
    """

    name: str
    statistic: float
    pvalue: float
    df: tuple[float, ...] = ()
    null: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def rejected(self, alpha: float = 0.05) -> bool:
        """Whether the null hypothesis is rejected at level ``alpha``."""
        return bool(self.pvalue < alpha)

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.name,
            "statistic": float(self.statistic),
            "df": [float(d) for d in self.df],
            "p": float(self.pvalue),
            "null": self.null,
            **{k: float(v) for k, v in self.extra.items()},
        }


def _residuals(fit_or_resid: Any) -> np.ndarray:
    resid = getattr(fit_or_resid, "resid", fit_or_resid)
    return np.asarray(resid, dtype=np.float64).ravel()


def shapiro_wilk(fit_or_resid: Any) -> TestResult:
    """Shapiro-Wilk test of normality of the conditional residuals.

    Parameters
    ----------
    fit_or_resid
        A fitted model (its ``resid`` is used) or an array of residuals.

    Returns
    -------
    TestResult
        ``statistic`` is W; the same numbers as ``scipy.stats.shapiro``.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> shapiro_wilk(fit).pvalue < 0.05
    True
    """
    refuse_generalized(
        fit_or_resid,
        "the Shapiro-Wilk test of residuals",
        GLMM_RESIDUAL_CHECKS,
    )
    r = _residuals(fit_or_resid)
    if r.size < 3:
        raise DataError("the Shapiro-Wilk test needs at least 3 residuals")
    res = stats.shapiro(r)
    return TestResult(
        name="Shapiro-Wilk",
        statistic=float(res.statistic),
        pvalue=float(res.pvalue),
        null="the residuals are normally distributed",
    )


def white_test(fit_or_resid: Any, exog: Any = None) -> TestResult:
    """White's Lagrange multiplier test of constant residual variance.

    The squared residuals are regressed on the columns of ``exog``, their squares and
    cross products (with the intercept); ``LM = n R^2`` is chi-square with as many df as
    the auxiliary regression has non-constant independent columns.

    Parameters
    ----------
    fit_or_resid
        A fitted model or an array of residuals.
    exog
        The design; default the fitted model's fixed-effects matrix ``X``. Must contain a
        constant column.

    Returns
    -------
    TestResult
        ``statistic`` is LM with its chi-square p-value; ``extra`` holds the F variant
        (``F``, ``F_p``, ``df_num``, ``df_den``).

    Notes
    -----
    White (1980), Econometrica 48(4); the definition of statsmodels'
    ``het_white(resid, exog)``, which gives the same numbers: auxiliary regressors
    ``x_i x_j`` for ``i <= j``, df of LM = rank of that matrix - 1, R^2 centred.
    Applied to the conditional residuals of a mixed model it is a descriptive check, as in
    the rat-pup tutorial, not an exact test.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> white_test(fit).df
    (10.0,)
    """
    refuse_generalized(
        fit_or_resid,
        "White's test",
        GLMM_RESIDUAL_CHECKS,
    )
    r = _residuals(fit_or_resid)
    if exog is None:
        design = getattr(fit_or_resid, "design", None)
        if design is None:
            raise ValueError("white_test needs exog when given residuals instead of a fit")
        x = np.asarray(design.X, dtype=np.float64)
    else:
        x = np.asarray(exog, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = r.size
    if x.shape[0] != n:
        raise ValueError(f"exog has {x.shape[0]} rows but there are {n} residuals")
    if not np.any(np.ptp(x, axis=0) == 0.0) or not np.any(np.all(x != 0.0, axis=0)):
        raise ValueError("White's test needs a constant column (intercept) in exog")
    i0, i1 = np.triu_indices(x.shape[1])
    z = x[:, i0] * x[:, i1]
    e2 = r**2
    rank = int(np.linalg.matrix_rank(z))
    coef, *_ = np.linalg.lstsq(z, e2, rcond=None)
    ssr = float(np.sum((e2 - z @ coef) ** 2))
    tss = float(np.sum((e2 - e2.mean()) ** 2))
    r2 = 1.0 - ssr / tss
    df_model = rank - 1
    df_resid = n - rank
    lm = n * r2
    f = ((tss - ssr) / df_model) / (ssr / df_resid)
    return TestResult(
        name="White's LM test",
        statistic=float(lm),
        pvalue=float(stats.chi2.sf(lm, df_model)),
        df=(float(df_model),),
        null="the residual variance does not depend on the fixed-effects covariates",
        extra={
            "F": float(f),
            "F_p": float(stats.f.sf(f, df_model, df_resid)),
            "df_num": float(df_model),
            "df_den": float(df_resid),
        },
    )


def levene(
    fit_or_resid: Any,
    groups: Any,
    *,
    center: str = "median",
) -> TestResult:
    """Levene's test (Brown-Forsythe with ``center="median"``) of equal variance across groups.

    Parameters
    ----------
    fit_or_resid
        A fitted model or an array of residuals.
    groups
        One label per residual (an array or Series); for a fit, take them from the rows
        it used, e.g. ``residual_groups(data, fit, ["treatment"])``.
    center
        ``"median"`` (Brown-Forsythe, robust; default) or ``"mean"`` (Levene's original).

    Returns
    -------
    TestResult
        The same numbers as ``scipy.stats.levene(*samples, center=center)``.
    """
    refuse_generalized(
        fit_or_resid,
        "Levene's test of residual variances",
        GLMM_RESIDUAL_CHECKS,
    )
    r = _residuals(fit_or_resid)
    labels = np.asarray(groups)
    if labels.shape[0] != r.size:
        raise ValueError(f"{labels.shape[0]} group labels for {r.size} residuals")
    keys = pd.Series(labels).astype(str)
    samples = [r[(keys == k).to_numpy()] for k in sorted(keys.unique())]
    samples = [s for s in samples if s.size > 0]
    if len(samples) < 2:
        raise DataError("Levene's test needs at least two groups")
    res = stats.levene(*samples, center=center)
    k = len(samples)
    name = "Brown-Forsythe (Levene, median)" if center == "median" else "Levene (mean)"
    return TestResult(
        name=name,
        statistic=float(res.statistic),
        pvalue=float(res.pvalue),
        df=(float(k - 1), float(r.size - k)),
        null="the residual variance is the same in every group",
    )


def residual_groups(data: pd.DataFrame, fit: Any, columns: Sequence[str]) -> pd.Series:
    """Labels of the rows used by ``fit``: the combination of ``columns`` (``"High / Male"``)."""
    rows = data.loc[fit.resid.index, list(columns)].astype(str)
    return rows.agg(" / ".join, axis=1)
