"""Lay out an :class:`~mixedmodels.report.analysis.Analysis` as a report document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ..tables import Table
from .analysis import Analysis, ModelAnalysis, comparison_table, fit_statistics, fixed_factors
from .document import Bullets, Document, Note, Section, Text, make_figure
from .findings import findings
from .methods import methods_section

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
    traj = None
    if a.trajectory is not None:
        time, group = a.trajectory
        by = _constant_factor(a, group)
        step("drawing trajectories")
        traj = Section(
            "data-trajectories",
            "Trajectories",
            (
                make_figure(
                    plots.trajectories(a.data, a.response, time, group, by=by),
                    f"{a.response} over {time} by {group}",
                    f"One line per {group}; the thick line is the mean at each {time}"
                    + (f", per {by}." if by else "."),
                ),
            ),
        )
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
    subs = tuple(s for s in (summaries, boxes, traj, hierarchy) if s is not None)
    return Section("data", "Data", tuple(blocks), subs)


def _constant_factor(a: Analysis, group: str) -> str | None:
    """A fixed-effects factor that is constant within each ``group`` (colours trajectories)."""
    for var in fixed_factors(a.diagnosed.fit, a.data):
        if var == group or a.data[var].nunique() > 6:
            continue
        if (a.data.groupby(group, observed=True)[var].nunique() <= 1).all():
            return var
    return None


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
            "2.5 %": c["lower"],
            "97.5 %": c["upper"],
        }
    )
    return Table(
        "Fixed effects",
        df,
        pvalue_columns=("Pr(>|t|)",),
        notes=(
            "df and p-values by Satterthwaite's method (as lmerTest); 95% Wald intervals "
            "estimate ± t(df) × SE with the same df.",
        ),
    )


def _variance_ci_display(m: ModelAnalysis) -> list[Any]:
    if m.vc_ci is None:
        return [Note(f"Variance parameters: {m.vc_ci_method}.", "info")]
    df = m.vc_ci.rename(columns={"estimate": "Estimate", "lower": "2.5 %", "upper": "97.5 %"})
    return [
        Table(
            "Intervals of the variance parameters",
            df,
            notes=(
                f"95% intervals by {m.vc_ci_method}, on lme4's scale: sd_ = standard "
                "deviation, cor_ = correlation, sigma = residual SD, sdratio_ = residual SD of "
                "a group relative to the reference group.",
            ),
        )
    ]


def _r2_text(m: ModelAnalysis) -> list[Any]:
    r = m.r2
    if r is None:
        return []
    return [
        Text(
            f"Marginal R² = {r.marginal:.3f} (variance explained by the fixed effects), "
            f"conditional R² = {r.conditional:.3f} (fixed and random effects together; "
            "Nakagawa, Johnson & Schielzeth 2017, as performance::r2_nakagawa)."
        )
    ]


def _emmeans_display(m: ModelAnalysis) -> list[Any]:
    from scipy import stats

    out: list[Any] = []
    for var, em in m.emmeans:
        means = em.means.rename(columns={"lower": "2.5 %", "upper": "97.5 %"})
        held = ", ".join(f"{k} = {v:.4g}" for k, v in em.covariates.items())
        notes = [
            "Estimated marginal means (emmeans) with 95% intervals, Satterthwaite df"
            + (f"; averaged over {', '.join(em.averaged_over)}" if em.averaged_over else "")
            + (f"; covariates held at {held}" if held else "")
            + "."
        ]
        notes.extend(n for n in em.notes if "misleading" in n)
        out.append(
            Table(
                f"Marginal means of {var} ({m.label})", means, show_index=False, notes=tuple(notes)
            )
        )
        c = em.contrasts.copy()
        if len(c):
            q = stats.t.ppf(0.975, c["df"].to_numpy(dtype=float))
            c["2.5 %"] = c["estimate"] - q * c["SE"]
            c["97.5 %"] = c["estimate"] + q * c["SE"]
            out.append(
                Table(
                    f"Pairwise contrasts of {var} ({m.label})",
                    c,
                    show_index=False,
                    pvalue_columns=("p_value",),
                    notes=(
                        f"p-values adjusted by the {em.adjust} method; the intervals are "
                        "unadjusted 95% t intervals.",
                    ),
                )
            )
    return out


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
    blocks: list[Any] = [Text(m.explanation)] if m.explanation else []
    blocks += [
        Text(
            f"Formula: {m.formula}"
            + (
                f"; residual variance {m.residual_structure}"
                if m.residual_groups is not None
                else ""
            )
            + f". Fitted by {'REML' if f.reml else 'maximum likelihood'} to "
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
    blocks.extend(_variance_ci_display(m))
    blocks.extend(_r2_text(m))
    if m.icc is not None:
        blocks.append(
            Table("Intraclass correlation", m.icc.table, notes=(m.icc.definition, *m.icc.notes))
        )
    blocks.extend(_emmeans_display(m))
    if data is not None:
        blocks.extend(_effects_figure(m, data))
    for n in m.notes:
        blocks.append(Note(n, "warn"))
    title = f"{m.name}: {m.formula}"
    if m.residual_groups is not None:
        title += f"; residual variance {m.residual_structure}"
    return Section(f"model-{m.label.lower()}", title, tuple(blocks))


def _models_section(a: Analysis) -> Section:
    subs = [_model_section(m, a.data if m is a.diagnosed else None) for m in a.models]
    comp_blocks: list[Any] = [fit_statistics(a.models)]
    title = (
        "Likelihood-ratio tests (tutorial and West et al.'s hypotheses)"
        if a.ratpup_path
        else "Likelihood-ratio tests of neighbouring models"
    )
    table = comparison_table(a.comparisons, title)
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
            intro=(
                "The likelihood-ratio tests of the rat-pup tutorial's models and of West, "
                "Welch & Galecki's hypotheses H3.1-H3.5 (2014, ch. 3)."
                if a.ratpup_path
                else "Each model is tested against the next one in the sequence."
                if len(a.models) > 1
                else "One model: nothing to compare it with."
            ),
        )
    )
    intro = f"{len(a.models)} model(s), fitted in the order given."
    if a.ratpup_path:
        intro = (
            "The tutorial's models M1-M4 (its statsmodels calls, written in lme4 syntax, with "
            "Male the reference sex as in the book), then the models West, Welch & Galecki "
            "(2014, ch. 3) fit when the residual variance differs by treatment: M5 = Model "
            "3.2A, M6 = Model 3.2B, M7 = Model 3.3 (M1 is their Model 3.1)."
        )
    return Section("models", "Models", (Text(intro),), tuple(subs))


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
        subtitle=(
            "Exploration, model building, tests and diagnostics of a sequence of linear "
            "mixed models."
            if len(a.models) > 1
            else "Exploration, tests and diagnostics of a linear mixed model."
        ),
        facts=facts,
        sections=(findings_sec, data_sec, models_sec, assumptions_sec, methods_section(a)),
        footer=f"Made by mixedmodels {__version__}. Estimates by REML/ML as lme4; df by "
        "Satterthwaite's method as lmerTest.",
    )
