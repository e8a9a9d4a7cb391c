"""Lay out a :class:`~mixedmodels.report.glmm_analysis.GlmmAnalysis` as a report document.

The page has the sections of the linear-model report (findings, data, models, assumptions)
with GLMM content: the response as proportions or counts, lme4's ``summary(glmer)`` tables
with odds or rate ratios, likelihood-ratio tests, and the simulated (DHARMa) residual
checks in place of the normal-theory ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from ..tables import Table
from .build import _random_display
from .document import Bullets, Document, Note, Section, Text, make_figure
from .findings import findings
from .glmm_analysis import GlmmAnalysis, GlmmModelAnalysis, response_frame

__all__ = ["build_glmm_document"]

_METHOD = {0: "lme4's fast mode (nAGQ = 0)", 1: "the Laplace approximation"}


def _family_text(family: str, link: str) -> str:
    return f"{family} family, {link} link"


def _method_text(fit: Any) -> str:
    if not hasattr(fit, "varcorr"):
        return "maximum likelihood (a GLM without random effects, by IRLS)"
    nagq = int(fit.nagq)
    how = _METHOD.get(nagq, f"adaptive Gauss-Hermite quadrature with {nagq} nodes")
    return f"maximum likelihood ({how})"


# --------------------------------------------------------------------------- data
def _data_section(a: GlmmAnalysis, step: Callable[[str], None]) -> Section:
    from .. import plots

    fit = a.diagnosed.fit
    n_rows, used = len(a.data), fit.nobs
    binomial = a.family == "binomial"
    kind = "events out of trials (a binomial response)" if binomial else "counts"
    blocks: list[Any] = [
        Text(
            f"{n_rows} rows and {a.data.shape[1]} columns; the response {a.response} is read "
            f"as {kind}. {a.diagnosed.label} uses {used} rows"
            + (f" ({n_rows - used} dropped for missing values)." if used < n_rows else ".")
        ),
        Table("Variables", a.variables),
    ]
    intro = (
        "Rows, trials, events and the proportion of events with Wilson's 95% interval "
        "(which treats trials as independent: descriptive only)."
        if binomial
        else "Rows, total and mean count, variance and variance/mean (about 1 for Poisson "
        "counts; larger values hint at overdispersion before any model), and zeros."
    )
    summaries = Section(
        "data-summaries",
        f"Summary of {a.response}",
        tuple(
            Table(f"{a.response}, all rows" if name == "all rows" else f"by {name}", table)
            for name, table in a.summaries
        ),
        intro=intro,
    )
    figures = []
    if a.describe_by:
        step("drawing the response by group")
        per_row = response_frame(a.data, fit)
        frame = a.data.loc[per_row.index, a.describe_by].copy()
        for col in per_row.columns:
            frame[f"__{col}__"] = per_row[col].to_numpy()
        for by in [a.describe_by] + (
            [[c] for c in a.describe_by] if len(a.describe_by) > 1 else []
        ):
            title = f"{a.response} by {' × '.join(by)}"
            if binomial:
                fig = plots.proportions_by(
                    frame,
                    "__events__",
                    "__trials__",
                    by,
                    title=f"Proportion of events by {' × '.join(by)}",
                )
                caption = "Bars: proportion of events with its 95% Wilson interval; points: rows."
            else:
                counts = frame.rename(columns={"__count__": a.response})
                fig = plots.boxplot_by(counts, a.response, by)
                caption = "Boxes show quartiles and median; points are the counts."
            figures.append(make_figure(fig, title, caption, wide=len(by) > 1))
    boxes = Section("data-figures", "The response by group", tuple(figures)) if figures else None
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
    for g in a.observation_level:
        h_blocks.append(Text(f"{g}: one level per row (an observation-level random effect)."))
    hierarchy = Section("data-hierarchy", "Hierarchy", tuple(h_blocks)) if h_blocks else None
    subs = tuple(s for s in (summaries, boxes, hierarchy) if s is not None)
    return Section("data", "Data", tuple(blocks), subs)


# --------------------------------------------------------------------------- models
def _coef_display(m: GlmmModelAnalysis) -> Table:
    c = m.coef
    df = pd.DataFrame(
        {
            "Estimate": c["estimate"],
            "Std. Error": c["se"],
            "z value": c["z"],
            "Pr(>|z|)": c["p"],
        },
        index=pd.Index(list(c.index)),
    )
    return Table(
        "Fixed effects",
        df,
        pvalue_columns=("Pr(>|z|)",),
        notes=(
            f"Estimates on the {m.fit.link} scale; Wald z tests (as R's "
            f"{'summary(glmer)' if m.has_random_effects else 'summary(glm)'}).",
        ),
    )


def _ratio_display(m: GlmmModelAnalysis) -> Table | Note:
    if m.ratios is None or m.ratio_name is None:
        return Note(
            f"Under the {m.fit.link} link exp(estimate) is not an odds ratio or a rate ratio; "
            "read the estimates on the link scale.",
            "info",
        )
    title = {"odds ratio": "Odds ratios", "rate ratio": "Rate ratios"}[m.ratio_name]
    of = "odds" if m.ratio_name == "odds ratio" else "rate"
    df = m.ratios.rename(columns={"lower": "lower 95%", "upper": "upper 95%"})
    df.index.name = None
    return Table(
        title,
        df,
        notes=(
            "exp of the estimates and of their 95% Wald limits. The (Intercept) row is the "
            f"{of} at the reference levels and zero covariates, not a ratio.",
        ),
    )


def _model_section(m: GlmmModelAnalysis) -> Section:
    f = m.fit
    facts = (
        f"Formula: {m.formula}. {_family_text(f.family, f.link).capitalize()}; fitted by "
        f"{_method_text(f)} to {f.nobs} observations; log-likelihood {f.loglik:.4f}, "
        f"-2 log-likelihood {-2.0 * f.loglik:.4f}, AIC {f.aic:.4f}, BIC {f.bic:.4f}"
    )
    theta = getattr(f, "nb_theta", None)
    if theta is not None:
        facts += f", negative binomial theta {theta:.4g} (variance mu + mu^2/theta)"
    blocks: list[Any] = [Text(facts + ".")]
    for w in m.warnings:
        blocks.append(Note(w, "warn"))
    blocks.append(_coef_display(m))
    blocks.append(_ratio_display(m))
    if m.has_random_effects:
        blocks.extend(_random_display(m))  # type: ignore[arg-type]
    else:
        blocks.append(
            Note(
                "No random effects: an ordinary GLM (mm.glm), the null model of the test of "
                "the next model's random-effect variance.",
                "info",
            )
        )
    for n in m.notes:
        blocks.append(Note(n, "warn"))
    return Section(f"model-{m.label.lower()}", f"{m.label}: {m.formula}", tuple(blocks))


def fit_statistics(models: list[GlmmModelAnalysis]) -> Table:
    """One row per model: family, parameters, log-likelihood, AIC, BIC, singularity."""
    rows = []
    for m in models:
        f = m.fit
        rows.append(
            {
                "formula": m.formula,
                "family (link)": f"{f.family} ({f.link})",
                "npar": f.nparams,
                "logLik": f.loglik,
                "AIC": f.aic,
                "BIC": f.bic,
                "-2 logLik": -2.0 * f.loglik,
                "singular": "yes" if getattr(f, "singular", False) else "no",
            }
        )
    return Table(
        "Fit statistics",
        pd.DataFrame(rows, index=pd.Index([m.label for m in models], name="model")),
        notes=(
            "All fits by maximum likelihood: AIC and BIC compare any of them (smaller is better).",
        ),
        digits=6,
    )


def _models_section(a: GlmmAnalysis) -> Section:
    from .analysis import comparison_table

    subs = [_model_section(m) for m in a.models]
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
            intro="Each model is tested against the next one by a likelihood-ratio test of "
            "their maximum-likelihood fits (mm.compare); a variance tested at zero gets the "
            "chi-bar-square mixture.",
        )
    )
    return Section(
        "models",
        "Models",
        (
            Text(
                f"{len(a.models)} model(s) of the {_family_text(a.family, a.link)}, fitted in "
                "the order given (lme4's glmer)."
            ),
        ),
        tuple(subs),
    )


# --------------------------------------------------------------------------- assumptions
def _tests_table(a: GlmmAnalysis) -> Table:
    rows, names = [], []
    for t in a.tests:
        names.append(t.name)
        rows.append(
            {
                "statistic": t.statistic,
                "observed": t.observed,
                "expected": t.expected,
                "p": t.pvalue,
                "null hypothesis": t.null,
            }
        )
    notes = [
        "Dispersion and zero inflation: ratio of the data's statistic to its mean over the "
        "simulations, two-sided p from the simulations (DHARMa's testDispersion and "
        "testZeroInflation); uniformity: Kolmogorov-Smirnov D; outliers: rows outside "
        "their simulations (DHARMa's testOutliers).",
    ]
    if a.pearson is not None:
        p = a.pearson
        names.append("Pearson chi2 / df")
        rows.append(
            {
                "statistic": p.ratio,
                "observed": p.chisq,
                "expected": float(p.df),
                "p": p.p,
                "null hypothesis": "no overdispersion (chi2 on nobs - nparams df)",
            }
        )
        notes.append(
            "Pearson chi2 / df (performance::check_overdispersion) is shown for comparison: "
            "its df ignore what the random effects use, so it leans towards underdispersion "
            "(Hartig, DHARMa help for testDispersion)."
        )
    return Table(
        "Simulated-residual checks",
        pd.DataFrame(rows, index=names),
        pvalue_columns=("p",),
        notes=tuple(notes),
    )


def _assumptions_section(a: GlmmAnalysis, step: Callable[[str], None]) -> Section:
    from .. import plots

    m = a.diagnosed
    sim = a.simulated
    step("drawing the simulated-residual plots")
    residual_figs = [
        make_figure(
            plots.uniform_qq(sim),
            "Q-Q plot of scaled residuals",
            "Scaled residuals against the uniform distribution they follow under the model; "
            "the band holds all points with probability 0.95. An S shape means over- (points "
            "pile up near 0 and 1) or underdispersion.",
        ),
        make_figure(
            plots.scaled_residuals_vs_predicted(sim),
            "Scaled residuals vs predicted",
            "Dashed lines: the 0.25, 0.5 and 0.75 quantiles expected under the model; a trend "
            "away from them means a missing term or a wrong link. Stars: rows outside all "
            "simulations.",
        ),
    ]
    test_figs = []
    if not sim.binary:
        test_figs = [
            make_figure(
                plots.dispersion_histogram(sim),
                "Dispersion test",
                "Grey: the spread of each simulated data set around the predictions; red: the "
                "data's. Red far to the right: overdispersion; to the left: underdispersion.",
            ),
            make_figure(
                plots.zero_inflation_histogram(sim),
                "Zero-inflation test",
                "Grey: zeros in each simulated data set; red: zeros in the data.",
            ),
        ]
    step("drawing random-effects plots")
    ranef = []
    fit = m.fit
    for g in fit.ranef:
        if g in a.observation_level:
            continue
        for term in fit.ranef[g].columns:
            ranef.append(
                make_figure(
                    plots.ranef_qq(fit, g, term), f"Q-Q plot of conditional modes: {term} | {g}"
                )
            )
        ranef.append(
            make_figure(
                plots.caterpillar(fit, g),
                f"Caterpillar plot of {g}",
                "Conditional modes (link scale) with 95% intervals from their conditional SDs.",
            )
        )
    how = (
        f"{sim.nsim} data sets simulated from {m.label}, conditional on its fitted random "
        "effects"
        + (
            f" (the observation-level {', '.join(a.observation_level)} redrawn)"
            if a.observation_level
            else ""
        )
        if sim.simulate_re == "conditional"
        else f"{sim.nsim} data sets simulated from {m.label} with new random effects"
    )
    intro = Text(
        f"Checks of {m.label} ({m.formula}) by simulated (DHARMa) residuals: {how}, seed "
        f"{sim.seed}. Each row's scaled residual is the share of its simulated responses "
        "below the observed one (ties randomised), so under the model they are uniform on "
        "(0, 1) whatever the family. Normal-theory checks do not apply to GLMMs."
    )
    subs = [
        Section("assumptions-residuals", "Scaled residuals", tuple(residual_figs)),
    ]
    if test_figs:
        subs.append(Section("assumptions-dispersion", "Dispersion and zeros", tuple(test_figs)))
    else:
        subs.append(
            Section(
                "assumptions-dispersion",
                "Dispersion and zeros",
                (
                    Note(
                        "A 0/1 response cannot be over- or underdispersed row by row; these "
                        "tests were not run.",
                        "info",
                    ),
                ),
            )
        )
    if ranef:
        subs.append(Section("assumptions-ranef", "Random effects", tuple(ranef)))
    return Section(
        "assumptions",
        f"Assumptions of {m.label}",
        (intro, _tests_table(a)),
        tuple(subs),
    )


def build_glmm_document(
    a: GlmmAnalysis, *, progress: Callable[[str], None] | None = None
) -> Document:
    """Lay out the GLMM analysis: findings, data, models, assumptions."""
    from .. import __version__

    step = progress or (lambda _text: None)
    data_sec = _data_section(a, step)
    models_sec = _models_section(a)
    assumptions_sec = _assumptions_section(a, step)
    step("writing the findings")
    findings_sec = Section(
        "findings",
        "Findings",
        (Bullets(tuple(findings(a))),),
        intro=f"In plain words, at significance level {a.alpha:g}.",
    )
    fit = a.diagnosed.fit
    facts = (
        ("Data", a.data_name),
        ("Observations", str(len(a.data))),
        ("Response", a.response),
        ("Family", f"{a.family} ({a.link} link)"),
        ("Grouping", ", ".join(f"{g} ({n})" for g, n in fit.ngroups.items())),
        ("Models", str(len(a.models))),
        ("Diagnosed", a.diagnosed.label),
    )
    return Document(
        title=f"Generalized linear mixed-model analysis of {a.data_name}",
        subtitle="Exploration, model building, tests and simulated-residual diagnostics of a "
        "sequence of generalized linear mixed models.",
        facts=facts,
        sections=(findings_sec, data_sec, models_sec, assumptions_sec),
        footer=f"Made by mixedmodels {__version__}. Estimates by maximum likelihood as lme4's "
        "glmer; residual checks by simulation as DHARMa.",
    )
