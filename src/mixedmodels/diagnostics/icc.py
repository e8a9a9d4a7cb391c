"""Intraclass correlation coefficients from the variance components of a fit.

The adjusted ICC of grouping factor ``g`` is

    ICC_g = sigma_g^2 / (sum_h sigma_h^2 + sigma^2)

with ``sigma_h^2`` the random-intercept variances of all grouping factors and ``sigma^2`` the
residual variance: the share of the variance (beyond the fixed effects) due to ``g``, and the
correlation of two observations that share the level of ``g`` and no other (West, Welch &
Galecki 2014, sec. 2.5.4; Nakagawa & Schielzeth 2010). With random slopes the variance of the
random part depends on the covariates; the ICC is then reported at covariate value 0, where
only the random intercepts contribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.errors import refuse_generalized, refuse_repeated

from ..tables import Report, Table

DEFINITION = (
    "adjusted ICC_g = var(random intercept of g) / "
    "(sum of random-intercept variances + residual variance)"
)


@dataclass(frozen=True, eq=False)
class ICCResult:
    """ICC per grouping factor.

    Attributes
    ----------
    table
        Indexed by grouping factor: ``variance`` (random-intercept variance), ``icc`` and,
        with a bootstrap interval, ``lower`` and ``upper``.
    residual_variance
        ``sigma^2``.
    definition
        The formula used, in words.
    notes
        Caveats (random slopes, factors without an intercept, how intervals were computed).
    """

    table: pd.DataFrame
    residual_variance: float
    definition: str
    notes: tuple[str, ...]

    def __getitem__(self, group: str) -> float:
        return float(self.table.loc[group, "icc"])

    def summary(self) -> Report:
        return Report(
            title="Intraclass correlation",
            lines=(self.definition,),
            tables=(Table("", self.table, digits=4),),
            footer=tuple(f"Note: {n}" for n in self.notes),
        )

    def __str__(self) -> str:
        return self.summary().to_text()

    def _repr_html_(self) -> str:
        return self.summary().to_html()


def _intercept_variances(fit: Any) -> tuple[dict[str, float], list[str], float]:
    """Random-intercept variance per grouping factor, factors with slopes, residual variance."""
    vc = fit.varcorr
    sigma2 = float(vc.loc[vc["group"] == "Residual", "variance"].iloc[0])
    variances: dict[str, float] = {}
    with_slopes: list[str] = []
    for group, rows in vc[vc["group"] != "Residual"].groupby("group", sort=False):
        var_rows = rows[rows["term2"].isna()]
        terms = list(var_rows["term"])
        intercept = var_rows[var_rows["term"] == "(Intercept)"]
        variances[str(group)] = float(intercept["variance"].iloc[0]) if len(intercept) else 0.0
        if any(t != "(Intercept)" for t in terms):
            with_slopes.append(str(group))
    return variances, with_slopes, sigma2


def icc_values(fit: Any) -> pd.Series:
    """Adjusted ICC per grouping factor (at covariate value 0 when there are random slopes)."""
    refuse_repeated(
        fit, "the ICC", "the within-group correlation is in fit.structure_params and fit.varcorr"
    )
    variances, _, sigma2 = _intercept_variances(fit)
    total = sum(variances.values()) + sigma2
    return pd.Series({g: v / total for g, v in variances.items()}, name="icc", dtype=float)


def icc(
    fit: Any,
    *,
    ci: str | None = None,
    level: float = 0.95,
    nsim: int = 500,
    seed: int | None = None,
    n_jobs: int = 1,
    progress: bool | None = None,
) -> ICCResult:
    """Intraclass correlation per grouping factor (adjusted ICC).

    Parameters
    ----------
    fit
        A fitted linear mixed model.
    ci
        None (default) or ``"bootstrap"``: percentile interval from a parametric bootstrap
        (:func:`mixedmodels.inference.bootstrap.bootstrap`).
    level
        Confidence level of the interval.
    nsim, seed, n_jobs, progress
        Bootstrap settings.

    Returns
    -------
    ICCResult

    Notes
    -----
    ``ICC_g = sigma_g^2 / (sum_h sigma_h^2 + sigma^2)`` over the random-intercept variances
    ``sigma_h^2`` of all grouping factors. For models with random slopes the ICC depends on
    the covariates and is reported at covariate value 0.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> from mixedmodels.diagnostics.icc import icc
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> round(icc(fit)["litter"], 4)
    0.3743
    """
    refuse_generalized(
        fit,
        "the ICC",
        "a GLMM has no residual variance on the response scale; report the variance "
        "components (fit.varcorr)",
    )
    variances, with_slopes, sigma2 = _intercept_variances(fit)
    values = icc_values(fit)
    table = pd.DataFrame({"variance": pd.Series(variances), "icc": values})
    table.index.name = "group"
    notes: list[str] = []
    if with_slopes:
        notes.append(
            "random slopes for " + ", ".join(with_slopes) + ": the variance of the random part "
            "depends on the covariates, so the ICC is reported at covariate value 0 (random "
            "intercepts only)"
        )
    no_int = [g for g, v in variances.items() if v == 0.0 and g in with_slopes]
    if no_int:
        notes.append("no random intercept for " + ", ".join(no_int) + ": ICC 0 at covariate 0")
    if len(variances) > 1:
        notes.append(
            "several grouping factors: for nested factors the correlation of two observations in "
            "the same inner group is the sum of the ICCs of the inner and outer factors"
        )
    model = getattr(fit, "model", None)
    if getattr(model, "weights", None) is not None:
        notes.append(
            "prior weights: the residual variance is that of a row with weight 1 "
            "(row i has sigma^2 / w_i)"
        )
    strata = getattr(fit, "residual_strata", None)
    if strata is not None:
        notes.append(
            f"residual variance by {strata.column}: the ICC uses the reference group's "
            f"({strata.labels[0]}); the other groups' ICCs differ"
        )
    if ci is not None:
        if ci != "bootstrap":
            raise ValueError(f"ci must be None or 'bootstrap', not {ci!r}")
        from ..inference.bootstrap import bootstrap

        groups = list(values.index)

        def func(rep):
            return rep.icc(groups)

        boot = bootstrap(fit, nsim=nsim, seed=seed, func=func, n_jobs=n_jobs, progress=progress)
        reps = boot.replicates.to_numpy()
        alpha = (1.0 - level) / 2.0
        ok = np.all(np.isfinite(reps), axis=1)
        table["lower"] = np.quantile(reps[ok], alpha, axis=0)
        table["upper"] = np.quantile(reps[ok], 1.0 - alpha, axis=0)
        notes.append(
            f"{level:.0%} percentile intervals from a parametric bootstrap "
            f"(nsim={nsim}, seed={seed}, {int(ok.sum())} successful refits)"
        )
    return ICCResult(
        table=table, residual_variance=sigma2, definition=DEFINITION, notes=tuple(notes)
    )
