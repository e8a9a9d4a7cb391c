"""The findings of an analysis in plain words: effects, ICC, assumptions, what to try next.

Each finding is ``(text, kind)`` with kind ``good`` (an assumption that holds, a clear
result), ``warn`` (a failed assumption, a doubtful fit) or ``info``.
"""

from __future__ import annotations

import inspect
from typing import Any

import pandas as pd

from .phrases import Finding, _factor_reading, _num, _p, comparison_findings

__all__ = ["findings"]


def describe_effect(
    data: pd.DataFrame,
    response: str,
    term: str,
    est: float,
    p: float,
    columns: tuple[str, ...] = (),
) -> str:
    """One sentence for one fixed effect (``columns``: all fixed-effects column names)."""
    direction = "higher" if est > 0 else "lower"
    size = _num(abs(est))
    if ":" in term:
        return f"interaction {term}: an extra {_num(est)} in {response} ({_p(p)})"
    reading = _factor_reading(data, term, columns)
    if reading is not None:
        return f"{reading}: {response} {direction} by {size} ({_p(p)})"
    if term in data.columns:
        return f"{term}: each extra unit goes with {response} {direction} by {size} ({_p(p)})"
    return f"{term}: estimate {_num(est)} ({_p(p)})"


def _has_residual_groups() -> bool:
    from ..api import lmer

    return "residual_groups" in inspect.signature(lmer).parameters


def findings(analysis: Any) -> list[Finding]:
    """The findings of :class:`~mixedmodels.report.analysis.Analysis` in plain words (of a
    :class:`~mixedmodels.report.glmm_analysis.GlmmAnalysis`: see :mod:`.glmm_findings`)."""
    if getattr(analysis, "kind", "") == "glmm":
        from .glmm_findings import glmm_findings

        return glmm_findings(analysis)
    a = analysis
    alpha = a.alpha
    out: list[Finding] = []
    last = a.diagnosed
    data = a.data

    # Interaction tests, from the first model that has any.
    for m in a.models:
        inter = m.interaction_tests
        if inter is None:
            continue
        for term, r in inter.iterrows():
            ftxt = f"F({int(r['NumDF'])}, {_num(r['DenDF'])}) = {_num(r['F'])}, {_p(r['p'])}"
            if r["p"] < alpha:
                out.append(
                    (
                        f"The {term} interaction is significant in {m.label} ({ftxt}): the effect "
                        f"of one factor on {a.response} depends on the other; keep it.",
                        "info",
                    )
                )
            else:
                out.append(
                    (
                        f"The {term} interaction is not significant in {m.label} ({ftxt}): the "
                        "effects can be interpreted separately, and a model without it is simpler.",
                        "good",
                    )
                )
        break

    # Fixed effects of the diagnosed model.
    coef = last.coef.drop(index="(Intercept)", errors="ignore")
    sig = coef[coef["p"] < alpha]
    nonsig = coef[coef["p"] >= alpha]
    if len(sig):
        names = tuple(map(str, last.coef.index))
        parts = [
            describe_effect(data, a.response, str(t), r["estimate"], r["p"], names)
            for t, r in sig.iterrows()
        ]
        out.append(
            (
                f"Significant fixed effects in {last.label} (at {alpha:g}, Satterthwaite df): "
                + "; ".join(parts)
                + ".",
                "info",
            )
        )
    if len(nonsig):
        out.append(
            (
                f"Not significant in {last.label}: "
                + ", ".join(f"{t} ({_p(r['p'])})" for t, r in nonsig.iterrows())
                + ".",
                "info",
            )
        )

    # ICC of the last random-intercept model.
    icc_model = next((m for m in reversed(a.models) if m.icc is not None), None)
    if icc_model is not None:
        for group, r in icc_model.icc.table.iterrows():
            v = float(r["icc"])
            out.append(
                (
                    f"ICC for {group} = {_num(v)} ({icc_model.label}): {v:.0%} of the variance "
                    f"left after the fixed effects lies between {group} groups, so two "
                    f"observations from the same {group} have correlation {_num(v)}. "
                    + (
                        "They are not independent: a model that ignores the grouping would give "
                        "too small standard errors."
                        if v >= 0.05
                        else "The grouping explains little of the variance."
                    ),
                    "info",
                )
            )

    # Random slopes: correlation, and the LRT that added them.
    for m in a.models:
        corr = m.correlations
        for _, r in corr.iterrows():
            c = float(r["corr"])
            kind = "warn" if abs(c) > 0.95 else "info"
            extra = (
                " A correlation this close to ±1 means the model is over-parameterised "
                "(nearly singular): prefer the simpler model."
                if kind == "warn"
                else ""
            )
            out.append(
                (
                    f"In {m.label} the random {r['term']} and {r['term2']} of {r['group']} have "
                    f"correlation {_num(c)}.{extra}",
                    kind,
                )
            )
    out.extend(comparison_findings(a.comparisons, alpha))

    # Fits.
    for m in a.models:
        for w in m.warnings:
            out.append((f"{m.label}: {w}", "warn"))

    # Assumptions.
    unequal: list[str] = []
    for t in a.tests:
        rejected = t.pvalue < alpha
        name = t.name
        if name.startswith("Shapiro"):
            if rejected:
                out.append(
                    (
                        f"Residuals of {last.label} are not normal (Shapiro-Wilk W = "
                        f"{_num(t.statistic)}, {_p(t.pvalue)}). Look at the Q-Q plot for outliers "
                        "or heavy tails; with many observations the fixed-effect tests are fairly "
                        "robust, but check influential points.",
                        "warn",
                    )
                )
            else:
                out.append(
                    (
                        f"Residuals of {last.label} look normal (Shapiro-Wilk {_p(t.pvalue)}).",
                        "good",
                    )
                )
        elif name.startswith("White"):
            if rejected:
                unequal.append("the fixed-effects covariates")
                out.append(
                    (
                        f"White's test: the residual variance changes with the covariates "
                        f"(LM = {_num(t.statistic)}, {_p(t.pvalue)}).",
                        "warn",
                    )
                )
            else:
                out.append(
                    (
                        f"White's test finds no change of residual variance with the "
                        f"covariates ({_p(t.pvalue)}).",
                        "good",
                    )
                )
        elif " across " in name:
            across = name.split(" across ", 1)[1]
            if rejected:
                unequal.append(across)
                out.append(
                    (
                        f"The residual variance differs across {across} ({name.split(' across')[0]}"
                        f" F = {_num(t.statistic)}, {_p(t.pvalue)}).",
                        "warn",
                    )
                )
            else:
                out.append(
                    (f"Residual variance is similar across {across} ({_p(t.pvalue)}).", "good")
                )

    out.extend(influence_findings(a))

    # What to try next.
    if unequal:
        factors = [u for u in unequal if u in a.describe_by]
        column = factors[0] if factors else None
        if column is not None and _has_residual_groups():
            out.append(
                (
                    f"Try next: give each {column} group its own residual variance, "
                    f'mm.lmer("{last.formula}", data, residual_groups="{column}"), and compare '
                    "it with this model by a likelihood-ratio test (West et al. 2014, Model 3.2A).",
                    "info",
                )
            )
        elif column is not None:
            out.append(
                (
                    f"Try next: a model with a residual variance per {column} group "
                    f'(residual_groups="{column}").',
                    "info",
                )
            )
        else:
            out.append(
                (
                    "Try next: model the residual variance by group (residual_groups=<factor>), or "
                    "transform the response.",
                    "info",
                )
            )
    return out


def influence_findings(a: Any, k: int = 3) -> list[Finding]:
    """The largest scaled residuals (row, group, value) and the most influential groups of
    the diagnosed model, with what to do about them."""
    infl = getattr(a, "influence", None)
    if infl is None:
        return []
    label = a.diagnosed.label
    g = infl.group
    out: list[Finding] = []
    obs = infl.top_observations(k)
    big = obs[obs["scaled_resid"].abs() > 3.0]
    response = a.response if a.response in a.data.columns else None

    def row_text(row: Any, r: Any) -> str:
        value = ""
        if response is not None and row in a.data.index:
            value = f", {response} {_num(a.data.at[row, response])}"
        return f"row with index {row} ({g} {r['group']}{value}): {_num(r['scaled_resid'])}"

    if len(big):
        rows = "; ".join(row_text(row, r) for row, r in big.iterrows())
        out.append(
            (
                f"Largest scaled residuals of {label} (|r| > 3; about 3 in 1000 rows of normal "
                f"data would pass 3): {rows}. Check these rows for recording errors; if they "
                "are genuine, refit without them and report whether the conclusions change.",
                "warn",
            )
        )
    else:
        r = obs.iloc[0]
        out.append(
            (
                f"No scaled residual of {label} exceeds 3 in absolute value (largest: "
                f"{row_text(obs.index[0], r)}).",
                "good",
            )
        )
    top = infl.top_groups(k)
    listed = ", ".join(f"{lev} (D = {_num(d)})" for lev, d in top["cooks_distance"].items())
    flagged = infl.groups[infl.groups["influential"]]
    if len(flagged):
        worst = str(top.index[0])
        out.append(
            (
                f"Most influential {g} groups in {label} (Cook's distance of the fixed effects "
                f"when the group is left out): {listed}; {len(flagged)} of {len(infl.groups)} "
                f"above 4/{len(infl.groups)} = {_num(infl.cutoff)}. Refit without {g} {worst} "
                "(and any other flagged group) and compare the fixed effects; report both fits "
                "if a conclusion changes.",
                "warn",
            )
        )
    else:
        out.append(
            (
                f"No {g} group has a Cook's distance above 4/{len(infl.groups)} = "
                f"{_num(infl.cutoff)} in {label} (largest: {listed}): no single group drives "
                "the fixed effects.",
                "good",
            )
        )
    return out
