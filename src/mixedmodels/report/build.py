"""Lay out an :class:`~mixedmodels.report.analysis.Analysis` as a report document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ..tables import Table
from .analysis import Analysis, ModelAnalysis, comparison_table, fit_statistics
from .document import Bullets, Document, Note, Section, Text, make_figure
from .findings import findings

__all__ = ["build_document"]


# --------------------------------------------------------------------------- data
def _data_section(a: Analysis, step: Callable[[str], None]) -> Section:
    from .. import plots

    n_rows = len(a.data)
    used = a.models[0].fit.nobs
    blocks: list[Any] = [
        Text(
            f"{n_rows} rows and {a.data.shape[1]} columns; the response is {a.response}. "
            f"The first model uses {used} rows"
            + (f" ({n_rows - used} dropped for missing values)." if used < n_rows else ".")
        ),
        Table("Variables", a.variables),
    ]
    summaries = Section(
        "data-summaries",
        f"Summary statistics of {a.response}",
        tuple(
            Table(
                f"{a.response} by {name}" if name != "all rows" else f"{a.response}, all rows",
                table,
            )
            for name, table in a.summaries
        ),
        intro="N, mean, standard deviation, standard error and the t-based 95% confidence "
        "interval of the mean (as researchpy's summary_cont).",
    )
    figures = []
    if a.describe_by:
        step("drawing box plots of the data")
        figures.append(
            make_figure(
                plots.boxplot_by(a.data, a.response, a.describe_by),
                f"{a.response} by {' × '.join(a.describe_by)}",
                "Boxes show quartiles and median; points are the observations.",
                wide=len(a.describe_by) > 1,
            )
        )
        if len(a.describe_by) > 1:
            for col in a.describe_by:
                figures.append(
                    make_figure(plots.boxplot_by(a.data, a.response, col), f"{a.response} by {col}")
                )
    boxes = Section("data-boxplots", "Box plots", tuple(figures)) if figures else None
    h_blocks: list[Any] = []
    for h in a.hierarchy:
        sizes = h["sizes"]
        counts = sizes.value_counts().sort_index()
        dist = pd.DataFrame(
            {"groups": counts.to_numpy()},
            index=pd.Index(counts.index.astype(int), name="rows per group"),
        )
        s = h["size_summary"]
        h_blocks.append(
            Text(
                f"{h['group']}: {h['ngroups']} groups holding {h['nobs']} rows; group sizes from "
                f"{s['min']:g} to {s['max']:g} (median {s['median']:g}, mean {s['mean']:.3g})."
            )
        )
        h_blocks.append(Table(f"Group sizes of {h['group']}", dist.T, show_index=True))
    hierarchy = Section("data-hierarchy", "Hierarchy", tuple(h_blocks)) if h_blocks else None
    subs = tuple(s for s in (summaries, boxes, hierarchy) if s is not None)
    return Section("data", "Data", tuple(blocks), subs)


# --------------------------------------------------------------------------- models
def _coef_display(m: ModelAnalysis) -> Table:
    c = m.coef
    df = pd.DataFrame(
        {
            "Estimate": c["estimate"],
            "Std. Error": c["se"],
            "df": c["df"],
            "t value": c["t"],
            "Pr(>|t|)": c["p"],
        }
    )
    return Table(
        "Fixed effects",
        df,
        pvalue_columns=("Pr(>|t|)",),
        notes=("df and p-values by Satterthwaite's method (as lmerTest).",),
    )


def _random_display(m: ModelAnalysis) -> list[Table]:
    vc = m.fit.varcorr
    var = vc[vc["term2"].isna()]
    rows = pd.DataFrame(
        {
            "Groups": var["group"],
            "Name": var["term"].fillna(""),
            "Variance": var["variance"],
            "Std.Dev.": var["sd"],
        }
    )
    groups = ", ".join(f"{g}: {n}" for g, n in m.fit.ngroups.items())
    out = [
        Table(
            "Random effects",
            rows,
            show_index=False,
            notes=(f"Number of obs: {m.fit.nobs}; groups: {groups}",),
        )
    ]
    corr = m.correlations
    if len(corr):
        out.append(
            Table(
                "Correlation of random effects",
                corr.rename(
                    columns={
                        "group": "Groups",
                        "term": "Term 1",
                        "term2": "Term 2",
                        "corr": "Correlation",
                    }
                ),
                show_index=False,
            )
        )
    return out


def _effects_figure(m: ModelAnalysis, data: pd.DataFrame) -> list[Any]:
    """The effects plot of the diagnosed model (nothing if it cannot be drawn)."""
    from .. import plots
    from ..errors import MixedModelsError

    try:
        fig = plots.effects(m.fit, data)
    except (MixedModelsError, ValueError):
        return []
    return [
        make_figure(
            fig,
            f"Effects of {m.label}",
            "Population-level predicted response along each predictor with 95% confidence "
            "bands (x' beta +- 1.96 se, se = sqrt(x' V x)); the other predictors are held at "
            "their most frequent level or mean, as written under each panel.",
            wide=True,
        )
    ]


def _model_section(m: ModelAnalysis, data: pd.DataFrame | None = None) -> Section:
    f = m.fit
    crit = "REML criterion" if f.reml else "deviance"
    blocks: list[Any] = [
        Text(
            f"Formula: {m.formula}. Fitted by {'REML' if f.reml else 'maximum likelihood'} to "
            f"{f.nobs} observations; {crit} {f.objective:.4f}, log-likelihood "
            f"{f.loglik:.4f}, AIC {f.aic:.4f}, BIC {f.bic:.4f}, residual SD {f.sigma:.4f}."
        )
    ]
    for w in m.warnings:
        blocks.append(Note(w, "warn"))
    blocks.append(_coef_display(m))
    if m.anova is not None and len(m.anova):
        inter = m.interaction_tests
        notes = ["Type III F tests with Satterthwaite denominator df (lmerTest's anova)."]
        if inter is not None:
            notes.append(
                "Interaction test: "
                + "; ".join(f"{t}: F = {r['F']:.4g}, p = {r['p']:.4g}" for t, r in inter.iterrows())
            )
        blocks.append(
            Table(
                "Tests of fixed-effects terms",
                m.anova[["NumDF", "DenDF", "F", "p"]],
                pvalue_columns=("p",),
                notes=tuple(notes),
            )
        )
    blocks.extend(_random_display(m))
    if m.icc is not None:
        blocks.append(
            Table("Intraclass correlation", m.icc.table, notes=(m.icc.definition, *m.icc.notes))
        )
    if data is not None:
        blocks.extend(_effects_figure(m, data))
    for n in m.notes:
        blocks.append(Note(n, "warn"))
    return Section(f"model-{m.label.lower()}", f"{m.label}: {m.formula}", tuple(blocks))


def _models_section(a: Analysis) -> Section:
    subs = [_model_section(m, a.data if m is a.diagnosed else None) for m in a.models]
    comp_blocks: list[Any] = [fit_statistics(a.models)]
    table = comparison_table(a.comparisons)
    if table is not None:
        comp_blocks.append(table)
    for c in a.comparisons:
        if c.result is None:
            comp_blocks.append(Note(f"{c.first} vs {c.second} not tested: {c.refused}", "warn"))
    subs.append(
        Section(
            "model-comparison",
            "Model comparison",
            tuple(comp_blocks),
            intro="Each model is tested against the next one in the sequence.",
        )
    )
    return Section(
        "models",
        "Models",
        (Text(f"{len(a.models)} model(s), fitted in the order given."),),
        tuple(subs),
    )


# --------------------------------------------------------------------------- assumptions
def _tests_table(a: Analysis) -> Table:
    rows = []
    for t in a.tests:
        df = ", ".join(f"{d:g}" for d in t.df)
        rows.append({"statistic": t.statistic, "df": df, "p": t.pvalue, "null hypothesis": t.null})
        if "F" in t.extra:
            rows.append(
                {
                    "statistic": t.extra["F"],
                    "df": f"{t.extra['df_num']:g}, {t.extra['df_den']:g}",
                    "p": t.extra["F_p"],
                    "null hypothesis": "(F variant of White's test)",
                }
            )
    names = []
    for t in a.tests:
        names.append(t.name)
        if "F" in t.extra:
            names.append("White's F test")
    return Table(
        "Tests of the residual assumptions",
        pd.DataFrame(rows, index=names),
        pvalue_columns=("p",),
        notes=(
            "Shapiro-Wilk on the conditional residuals; White's test regresses the "
            "squared residuals on the fixed-effects columns, their squares and cross "
            "products; Brown-Forsythe is Levene's test about the median.",
        ),
    )


def _assumptions_section(a: Analysis, step: Callable[[str], None]) -> Section:
    from .. import plots

    m = a.diagnosed
    fit = m.fit
    group = a.groups[0]
    step("drawing residual plots")
    resid = np.asarray(fit.resid)
    normal = [
        make_figure(
            plots.residual_kde(fit),
            "Residual density",
            "Kernel density of the conditional residuals with the normal curve of the "
            "same mean and SD.",
        ),
        make_figure(
            plots.qq(fit),
            "Normal Q-Q plot of residuals",
            "Points outside the shaded band are marked: a 95% simultaneous (tail-sensitive) "
            "band, so under normality all points fall inside it with probability 0.95.",
        ),
    ]
    spread = [
        make_figure(
            plots.residuals_vs_fitted(fit),
            "Residuals vs fitted",
            "A funnel shape means unequal variance; a curve, a missing term.",
        ),
        make_figure(
            plots.residuals_by_group(fit, group),
            f"Residuals by {group}",
            "One box per cluster, ordered by median.",
            wide=True,
        ),
    ]
    if a.describe_by:
        frame = a.data.loc[fit.resid.index, a.describe_by].copy()
        frame["residual"] = resid
        spread.append(
            make_figure(
                plots.boxplot_by(frame, "residual", a.describe_by),
                f"Residuals by {' × '.join(a.describe_by)}",
            )
        )
    step("drawing random-effects plots")
    ranef = []
    for g in fit.ranef:
        for term in fit.ranef[g].columns:
            ranef.append(
                make_figure(plots.ranef_qq(fit, g, term), f"Q-Q plot of BLUPs: {term} | {g}")
            )
        ranef.append(
            make_figure(
                plots.caterpillar(fit, g),
                f"Caterpillar plot of {g}",
                "Predicted random effects with 95% intervals from their conditional SDs.",
            )
        )
    tests = _tests_table(a)
    subsections = [
        Section("assumptions-normality", "Normality of residuals", tuple(normal)),
        Section("assumptions-variance", "Equal variance", tuple(spread)),
        Section("assumptions-ranef", "Random effects", tuple(ranef)),
    ]
    if a.influence is not None:
        step("drawing influence plots")
        subsections.append(_influence_section(a))
    return Section(
        "assumptions",
        f"Assumptions of {m.label}",
        (
            Text(
                f"Checks of {m.label} ({m.formula}) on its conditional residuals "
                "y - X beta - Z b and its predicted random effects."
            ),
            tests,
        ),
        tuple(subsections),
    )


def _influence_section(a: Analysis) -> Section:
    from .. import plots

    infl = a.influence
    g = infl.group
    summary = infl.summary()
    return Section(
        "assumptions-influence",
        "Influence",
        (
            Text(
                f"Each {g} group left out in turn and the model refitted (warm start): Cook's "
                "distance of the fixed effects, D = (b - b_(g))' V^-1 (b - b_(g)) / p with V "
                "the full fit's covariance (influence.ME's definition), flagged above 4/G. "
                "Scaled residuals are Pearson residuals over sigma (lme4's summary)."
            ),
            *summary.tables,
            make_figure(
                plots.cooks_distance(infl),
                f"Cook's distance by {g}",
                "Leave-one-group-out Cook's distance; the dashed line is 4/G.",
            ),
            make_figure(
                plots.residual_index(infl),
                "Scaled residuals by row",
                "Rows beyond ±3 in orange; the three largest are labelled (row, group).",
            ),
        ),
    )


def build_document(a: Analysis, *, progress: Callable[[str], None] | None = None) -> Document:
    """Lay out the analysis: data, models, assumptions, findings (GLMMs: see
    :func:`~mixedmodels.report.glmm_build.build_glmm_document`)."""
    from .. import __version__

    step = progress or (lambda _text: None)
    data_sec = _data_section(a, step)
    models_sec = _models_section(a)
    assumptions_sec = _assumptions_section(a, step)
    step("writing the findings")
    items = tuple(findings(a))
    findings_sec = Section(
        "findings",
        "Findings",
        (Bullets(items),),
        intro=f"In plain words, at significance level {a.alpha:g}.",
    )
    facts = (
        ("Data", a.data_name),
        ("Observations", str(len(a.data))),
        ("Response", a.response),
        ("Grouping", ", ".join(f"{g} ({n})" for g, n in a.models[0].fit.ngroups.items())),
        ("Models", str(len(a.models))),
        ("Diagnosed", a.diagnosed.label),
    )
    return Document(
        title=f"Mixed-model analysis of {a.data_name}",
        subtitle="Exploration, model building, tests and diagnostics of a sequence of linear "
        "mixed models.",
        facts=facts,
        sections=(findings_sec, data_sec, models_sec, assumptions_sec),
        footer=f"Made by mixedmodels {__version__}. Estimates by REML/ML as lme4; df by "
        "Satterthwaite's method as lmerTest.",
    )
