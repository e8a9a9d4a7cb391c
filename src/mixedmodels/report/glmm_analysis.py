"""The analysis of a sequence of generalized linear mixed models (``analyze(family=...)``).

The same steps as the linear-model analysis (:mod:`~mixedmodels.report.analysis`), with
what applies to GLMMs: the response summarised as proportions (binomial) or counts and
rates; lme4's ``summary(glmer)`` table with Wald z tests, and odds ratios (logit link) or
rate ratios (log link); likelihood-ratio tests of neighbouring models (``mm.compare``; a
formula without random effects is fitted by ``mm.glm``, the null of a variance test); and
instead of the normal-theory checks the simulation-based residual checks of DHARMa
(``mm.simulated_residuals``: uniformity, dispersion, zero inflation, outliers). Nothing
that needs a residual variance (Satterthwaite df, ICC, residual variance by group) is
computed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import describe as desc
from ..errors import ModelSpecificationError
from ..plots.responses import wilson_interval
from .analysis import Comparison, _check_describe_by, _compare, _fit_quietly

__all__ = ["GlmmAnalysis", "GlmmModelAnalysis", "run_glmm_analysis"]

#: exp(beta) is a ratio only under these links; other links get no ratio wording.
RATIO_NAMES = {"logit": "odds ratio", "log": "rate ratio"}
#: The quantity a ratio multiplies, by link.
RATIO_OF = {"logit": "odds", "log": "rate"}

ProgressCallback = Callable[[str], None]


@dataclass
class GlmmModelAnalysis:
    """One model of a GLMM sequence and what was computed from it.

    Attributes
    ----------
    label
        ``M1``, ``M2``, ...
    formula
        The formula as given.
    fit
        A GLMM fit (``mm.glmer``) or, for a formula without random effects, a GLM
        (``mm.glm``).
    coef
        Fixed effects ``estimate, se, z, p`` (Wald z tests).
    ratios
        ``exp`` of the estimates and of their 95% Wald limits, columns ``[ratio_name,
        "lower", "upper"]``; None for links under which they are not ratios.
    ratio_name
        ``"odds ratio"`` (logit link), ``"rate ratio"`` (log link) or None.
    warnings
        Messages of the warnings the fit raised (singular fit, convergence).
    notes
        Anything that could not be computed, and why.
    """

    label: str
    formula: str
    fit: Any
    coef: pd.DataFrame
    ratios: pd.DataFrame | None = None
    ratio_name: str | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def has_random_effects(self) -> bool:
        return hasattr(self.fit, "varcorr")

    @property
    def correlations(self) -> pd.DataFrame:
        if not self.has_random_effects:
            return pd.DataFrame(columns=["group", "term", "term2", "corr"])
        vc = self.fit.varcorr
        rows = vc[vc["term2"].notna()]
        return rows[["group", "term", "term2", "corr"]].reset_index(drop=True)


@dataclass
class GlmmAnalysis:
    """Everything the GLMM report shows, as data."""

    data: pd.DataFrame
    data_name: str
    response: str
    family: str
    link: str
    nagq: int
    describe_by: list[str]
    groups: list[str]
    models: list[GlmmModelAnalysis]
    comparisons: list[Comparison]
    diagnosed: GlmmModelAnalysis
    simulated: Any
    tests: list[Any]
    pearson: Any
    variables: pd.DataFrame
    summaries: list[tuple[str, pd.DataFrame]]
    hierarchy: list[dict[str, Any]]
    observation_level: tuple[str, ...] = ()
    alpha: float = 0.05

    kind = "glmm"

    @property
    def ratio_name(self) -> str | None:
        return RATIO_NAMES.get(self.link)


def exp_table(fit: Any, level: float = 0.95) -> pd.DataFrame:
    """``exp`` of the estimates and of their Wald limits (GLMM or GLM fits alike)."""
    from scipy.special import ndtri

    label = RATIO_NAMES[str(fit.link)]
    coef = fit.coef_table()
    q = float(ndtri(0.5 + level / 2.0))
    est, se = coef["estimate"].to_numpy(), coef["se"].to_numpy()
    return pd.DataFrame(
        {label: np.exp(est), "lower": np.exp(est - q * se), "upper": np.exp(est + q * se)},
        index=pd.Index(list(coef.index), name="term"),
    )


def run_glmm_analysis(
    data: Any,
    formulas: Sequence[str] | None,
    *,
    family: str,
    link: str | None = None,
    nagq: int | None = None,
    describe_by: Sequence[str] | str | None = None,
    diagnose: int = -1,
    alpha: float = 0.05,
    nsim: int = 250,
    seed: int | None = 123,
    progress: ProgressCallback | None = None,
) -> GlmmAnalysis:
    """Compute everything the GLMM report shows; see :func:`mixedmodels.report.analyze`."""
    from ..api import glmer
    from ..diagnostics.simulated_residuals import (
        observation_level_groups,
        simulated_residuals,
    )
    from ..formula import parse_formula
    from ..inference.glm import glm
    from ..io import read_data

    step = progress or (lambda _text: None)
    data_name = data if isinstance(data, str) else "data"
    if not formulas:
        raise ModelSpecificationError(
            "give at least one model formula with --family, e.g. --formula "
            "'cbind(successes, failures) ~ x + (1 | g)'"
        )
    formulas = [str(f) for f in formulas]
    if not -len(formulas) <= diagnose < len(formulas):
        raise ValueError(f"diagnose={diagnose} but there are {len(formulas)} formulas")
    random = [bool(parse_formula(f).random) for f in formulas]
    if diagnose == -1 and not random[-1] and any(random):
        # The default is the last model; a GLM null listed last is not checked: the last
        # model with random effects is.
        diagnose = max(i for i, r in enumerate(random) if r)
    if not random[diagnose]:
        which = diagnose % len(formulas) + 1
        raise ModelSpecificationError(
            f"model M{which} ({formulas[diagnose]}) has no random effects; the residual checks "
            "are for GLMMs: diagnose a model with a (... | group) term (--diagnose K)"
        )
    step(f"reading {data_name}")
    # Rows are matched to the fits by label: make the labels unique (a DataFrame may repeat them).
    frame = read_data(data).reset_index(drop=True)
    if isinstance(describe_by, str):
        describe_by = describe_by.split(",")

    models: list[GlmmModelAnalysis] = []
    for k, (formula, has_re) in enumerate(zip(formulas, random, strict=True), start=1):
        label = f"M{k}"
        step(f"fitting {label}: {formula}")
        if has_re:
            fit, messages = _fit_quietly(
                lambda f=formula: glmer(
                    f, frame, family=family, link=link, nagq=1 if nagq is None else nagq
                )
            )
        else:
            fit, messages = _fit_quietly(lambda f=formula: glm(f, frame, family=family, link=link))
        m = GlmmModelAnalysis(label, formula, fit, fit.coef_table(), warnings=messages)
        m.ratio_name = RATIO_NAMES.get(str(fit.link))
        if m.ratio_name is not None:
            m.ratios = exp_table(fit)
        models.append(m)

    target = models[diagnose]
    fit = target.fit
    response = fit.design.response_name
    by = _check_describe_by(frame, describe_by or _default_describe_by(fit))
    groups: list[str] = []
    for m in models:
        for g in getattr(m.fit, "ngroups", {}):
            if g not in groups:
                groups.append(g)

    comparisons = []
    for a, b in itertools.pairwise(models):
        step(f"comparing {a.label} and {b.label}")
        comparisons.append(_compare(a, b))

    step("describing the data")
    variables = desc.variables(frame)
    summaries = response_summaries(frame, fit, by)
    olre = observation_level_groups(fit)
    hierarchy = [desc.hierarchy(frame, g) for g in groups if g in frame.columns and g not in olre]

    step(f"simulating residuals of {target.label} ({nsim} simulations)")
    sim = simulated_residuals(fit, nsim=nsim, seed=seed)
    tests = [sim.test_uniformity(alpha=alpha)]
    if not sim.binary:
        tests += [sim.test_dispersion(alpha=alpha), sim.test_zero_inflation(alpha=alpha)]
    tests.append(sim.test_outliers(alpha=alpha))
    pearson = None if sim.binary else fit.overdispersion()
    return GlmmAnalysis(
        data=frame,
        data_name=data_name,
        response=response,
        family=str(fit.family),
        link=str(fit.link),
        nagq=int(fit.nagq),
        describe_by=by,
        groups=groups,
        models=models,
        comparisons=comparisons,
        diagnosed=target,
        simulated=sim,
        tests=tests,
        pearson=pearson,
        variables=variables,
        summaries=summaries,
        hierarchy=hierarchy,
        observation_level=olre,
        alpha=alpha,
    )


def _default_describe_by(fit: Any) -> list[str]:
    """The data columns of the fixed effects' factors (at most two), in formula order."""
    out: list[str] = []
    for factor in fit.design.spec.factors.values():
        column = str(factor.column)
        if column not in out:
            out.append(column)
    return out[:2]


# --------------------------------------------------------------------------- the response
def response_frame(frame: pd.DataFrame, fit: Any) -> pd.DataFrame:
    """Per row used by ``fit``: ``events`` and ``trials`` (binomial) or ``count`` and
    ``exposure`` (``exp`` of the offset; 1 without one), indexed like the data."""
    design = fit.design
    y = np.asarray(design.y, dtype=np.float64)
    index = design.row_index
    if str(fit.family) == "binomial":
        trials = getattr(design, "trials", None)
        m = np.ones_like(y) if trials is None else np.asarray(trials, dtype=np.float64)
        return pd.DataFrame({"events": np.rint(y * m), "trials": m}, index=index)
    offset = getattr(design, "offset", None)
    exposure = np.ones_like(y) if offset is None else np.exp(np.asarray(offset, dtype=float))
    return pd.DataFrame({"count": y, "exposure": exposure}, index=index)


def _binomial_row(rows: pd.DataFrame) -> dict[str, float]:
    events, trials = float(rows["events"].sum()), float(rows["trials"].sum())
    lo, hi = wilson_interval(events, trials)
    return {
        "rows": len(rows),
        "trials": trials,
        "events": events,
        "proportion": events / trials if trials > 0 else math.nan,
        "95% CI lower": lo,
        "95% CI upper": hi,
    }


def _count_row(rows: pd.DataFrame, with_exposure: bool) -> dict[str, float]:
    y = rows["count"].to_numpy(dtype=float)
    mean = float(y.mean()) if y.size else math.nan
    var = float(y.var(ddof=1)) if y.size > 1 else math.nan
    out = {
        "rows": len(rows),
        "total": float(y.sum()),
        "mean": mean,
        "variance": var,
        "variance/mean": var / mean if mean > 0 else math.nan,
        "zeros": int(np.sum(y == 0)),
        "% zeros": 100.0 * float(np.mean(y == 0)) if y.size else math.nan,
    }
    if with_exposure:
        exposure = float(rows["exposure"].sum())
        out["exposure"] = exposure
        out["rate"] = float(y.sum()) / exposure if exposure > 0 else math.nan
    return out


def response_summaries(
    frame: pd.DataFrame, fit: Any, by: list[str]
) -> list[tuple[str, pd.DataFrame]]:
    """The response of the rows used, overall and by each ``by`` column and their combination.

    Binomial: rows, trials, events, proportion with Wilson's 95% interval. Counts: rows,
    total, mean, variance, variance/mean (1 for Poisson data without extra variation),
    zeros; with an offset also the exposure ``sum(exp(offset))`` and the rate.
    """
    per_row = response_frame(frame, fit)
    binomial = "events" in per_row.columns
    with_exposure = not binomial and getattr(fit.design, "offset", None) is not None

    def table(groups: list[str]) -> pd.DataFrame:
        if not groups:
            rows = [_binomial_row(per_row) if binomial else _count_row(per_row, with_exposure)]
            return pd.DataFrame(rows, index=pd.Index(["all"], name=""))
        keys = frame.loc[per_row.index, groups].astype(str)
        labels, rows = [], []
        for key, part in per_row.groupby([keys[g] for g in groups], sort=True):
            key = key if isinstance(key, tuple) else (key,)
            labels.append(" / ".join(map(str, key)))
            rows.append(_binomial_row(part) if binomial else _count_row(part, with_exposure))
        return pd.DataFrame(rows, index=pd.Index(labels, name=" / ".join(groups)))

    out = [("all rows", table([]))]
    for col in by:
        out.append((col, table([col])))
    if len(by) > 1:
        out.append((" × ".join(by), table(list(by))))
    for _, t in out:
        t["rows"] = t["rows"].astype(int)
    return out
