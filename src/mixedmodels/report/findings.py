"""The findings of an analysis in plain words: effects, ICC, assumptions, what to try next.

Each finding is ``(text, kind)`` with kind ``good`` (an assumption that holds, a clear
result), ``warn`` (a failed assumption, a doubtful fit) or ``info``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .analysis import fixed_factors
from .phrases import Finding, _num, _p, comparison_findings

__all__ = ["findings", "fixed_effect_sentences"]


@dataclass(frozen=True)
class _Part:
    """One factor of a fixed-effects column: a data variable and, for a factor, its level."""

    var: str
    level: str | None = None  # None: a numeric variable
    ref: str | None = None


def _numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _parse_part(
    data: pd.DataFrame, part: str, columns: tuple[str, ...], factors: frozenset[str] = frozenset()
) -> _Part | None:
    """``factors``: columns the model codes as factors although they hold numbers
    (``C(Days)``)."""
    if part in data.columns and _numeric(data[part]) and part not in factors:
        return _Part(part)
    for var in sorted(map(str, data.columns), key=lambda c: -len(c)):
        if not part.startswith(var) or part == var:
            continue
        s = data[var]
        if _numeric(s) and var not in factors:
            continue
        level = part[len(var) :]
        if _numeric(s):
            levels = sorted(
                {str(v) if float(v) != int(v) else str(int(v)) for v in s.dropna().unique()},
                key=float,
            )
        else:
            levels = sorted(map(str, s.dropna().unique()))
        if level not in levels:
            continue
        coded = set()
        for c in columns:
            for q in c.split(":"):
                if q.startswith(var) and q[len(var) :] in levels:
                    coded.add(q[len(var) :])
        others = [lv for lv in levels if lv not in coded]
        return _Part(var, level, others[0] if len(others) == 1 else None)
    return None


def _pretty_term(term: str) -> str:
    """``treatment:C(sex, Treatment('Male'))`` -> ``treatment × sex``."""
    term = re.sub(r"C\(\s*([A-Za-z_.][\w.]*)(?:[^()]|\([^()]*\))*\)", r"\1", str(term))
    return " × ".join(t.strip() for t in term.split(":"))


def _range_text(data: pd.DataFrame, var: str) -> tuple[bool, str]:
    """Whether 0 lies inside the observed range of ``var``, and the range as text."""
    s = pd.to_numeric(data[var], errors="coerce").dropna()
    lo, hi = float(s.min()), float(s.max())
    return lo <= 0 <= hi, f"{lo:g} to {hi:g}"


def _level_text(p: _Part) -> str:
    ref = f" (vs {p.ref})" if p.ref else " (vs the reference level)"
    return f"{p.var} = {p.level}{ref}"


def fixed_effect_sentences(
    data: pd.DataFrame,
    response: str,
    coef: pd.DataFrame,
    factors: frozenset[str] | set[str] = frozenset(),
) -> list[tuple[str, float, str | None]]:
    """One description per fixed-effects column (intercept left out), by its structure.

    Returns ``(text, p, extrapolated)``: ``extrapolated`` is the term's variable when the
    coefficient is its effect at a value of a covariate (0) outside its observed range,
    else None.

    The rules (each tested in tests/report/test_findings.py):
    - a factor dummy without interactions: the difference to the reference level with the
      other predictors held fixed;
    - a numeric covariate without interactions: the change per extra unit;
    - a term that also enters an interaction: the effect at the reference level of each
      factor partner and at 0 of each numeric partner, saying so; when 0 is outside a
      partner's observed range, the sentence says it is an extrapolation;
    - an interaction column: how much the effect of one variable changes with the other;
    - anything else (a transformed variable): the estimate alone.
    """
    columns = tuple(map(str, coef.index))
    factors = frozenset(factors)
    parsed = {c: [_parse_part(data, q, columns, factors) for q in c.split(":")] for c in columns}
    out = []
    for term, r in coef.iterrows():
        term = str(term)
        if term == "(Intercept)":
            continue
        est, p = float(r["estimate"]), float(r["p"])
        parts = parsed[term]
        direction = "higher" if est > 0 else "lower"
        size = _num(abs(est))
        if any(q is None for q in parts):
            out.append((f"{term}: estimate {_num(est)} ({_p(p)})", p, None))
            continue
        if len(parts) > 1:
            names = " × ".join(q.var for q in parts)
            first = parts[0]
            what = (
                f"the slope of {first.var}"
                if first.level is None
                else f"the {first.var} = {first.level} vs {first.ref or 'reference'} difference"
            )
            out.append(
                (
                    f"interaction {names} ({term}): {what} changes by {_num(est)} with "
                    f"{' and '.join(_describe_change(q) for q in parts[1:])} ({_p(p)})",
                    p,
                    None,
                )
            )
            continue
        (me,) = parts
        partners: dict[str, _Part] = {}
        for ps in parsed.values():
            if len(ps) > 1 and any(q is not None and q.var == me.var for q in ps):
                for q in ps:
                    if q is not None and q.var != me.var:
                        partners.setdefault(q.var, q)
        conditions = []
        outside = []
        for q in partners.values():
            if q.level is not None:
                conditions.append(f"{q.var} = {q.ref or 'its reference level'}")
            else:
                conditions.append(f"{q.var} = 0")
                inside, rng = _range_text(data, q.var)
                if not inside:
                    outside.append(f"{q.var} = 0 lies outside the observed {rng}")
        at = f" at {' and '.join(conditions)}" if conditions else ""
        caveat = (
            f" [{'; '.join(outside)}: an extrapolation, not interpreted; see the marginal "
            "means at the covariates' means]"
            if outside
            else ""
        )
        if me.level is not None:
            held = (
                f" (interaction: this is the difference{at} only)"
                if conditions
                else ", other predictors held fixed"
            )
            out.append(
                (
                    f"{_level_text(me)}: {response} {direction} by {size}{held} ({_p(p)}){caveat}",
                    p,
                    me.var if outside else None,
                )
            )
        else:
            which = f" (interaction: the slope{at} only)" if conditions else ""
            out.append(
                (
                    f"{me.var}: each extra unit of {me.var} goes with {response} {direction} by "
                    f"{size}{which} ({_p(p)}){caveat}",
                    p,
                    me.var if outside else None,
                )
            )
    return out


def _describe_change(q: _Part) -> str:
    if q.level is None:
        return f"each extra unit of {q.var}"
    return f"{q.var} = {q.level} instead of {q.ref or 'the reference level'}"


def findings(analysis: Any) -> list[Finding]:
    """The findings of :class:`~mixedmodels.report.analysis.Analysis` in plain words (of a
    :class:`~mixedmodels.report.glmm_analysis.GlmmAnalysis`: see :mod:`.glmm_findings`).

    Every sentence is generated from the models' structure and the tests' results; nothing
    is written for one data set. Non-significant tests are worded as "no evidence of",
    never as evidence of no effect or of equality.
    """
    if getattr(analysis, "kind", "") == "glmm":
        from .glmm_findings import glmm_findings

        return glmm_findings(analysis)
    a = analysis
    out: list[Finding] = []
    out.extend(interaction_findings(a))
    out.extend(fixed_effect_findings(a))
    out.extend(r2_findings(a))
    out.extend(icc_findings(a))
    out.extend(correlation_findings(a))
    names = {m.label: m.name for m in a.models}
    out.extend(comparison_findings(a.comparisons, a.alpha, names))
    out.extend(aic_findings(a))
    out.extend(final_model_findings(a))
    out.extend(diagnosed_model_findings(a))
    for m in a.models:
        for w in m.warnings:
            out.append((f"{m.label}: {w}", "warn"))
    assumption, unequal = assumption_findings(a)
    out.extend(assumption)
    out.extend(influence_findings(a))
    out.extend(next_step_findings(a, unequal))
    return out


def interaction_findings(a: Any) -> list[Finding]:
    """The F tests of the interactions, from the first model that has any."""
    out: list[Finding] = []
    for m in a.models:
        inter = m.interaction_tests
        if inter is None:
            continue
        for term, r in inter.iterrows():
            name = _pretty_term(str(term))
            ftxt = f"F({int(r['NumDF'])}, {_num(r['DenDF'])}) = {_num(r['F'])}, {_p(r['p'])}"
            if r["p"] < a.alpha:
                out.append(
                    (
                        f"The {name} interaction is significant in {m.label} ({ftxt}): the "
                        f"effect of one on {a.response} depends on the other, so the main "
                        "effects cannot be read alone; keep the interaction.",
                        "info",
                    )
                )
            else:
                out.append(
                    (
                        f"No evidence of a {name} interaction in {m.label} ({ftxt}); a model "
                        "without it is simpler and its main effects read on their own.",
                        "good",
                    )
                )
        break
    return out


def fixed_effect_findings(a: Any) -> list[Finding]:
    """The fixed effects of the diagnosed model, read by the model's structure."""
    last = a.diagnosed
    items = fixed_effect_sentences(
        a.data, a.response, last.coef, set(fixed_factors(last.fit, a.data))
    )
    sig = [(t, p, x) for t, p, x in items if p < a.alpha]
    nonsig = [(t, p, x) for t, p, x in items if not p < a.alpha]
    out: list[Finding] = []
    if sig:
        out.append(
            (
                f"Significant fixed effects in {last.label} (at {a.alpha:g}, Satterthwaite df; "
                "95% intervals in the table): " + "; ".join(t for t, _, _ in sig) + ".",
                "info",
            )
        )
    if nonsig:
        out.append(
            (
                f"No evidence (at {a.alpha:g}) that these fixed effects of {last.label} differ "
                "from 0: "
                + "; ".join(t for t, _, _ in nonsig)
                + ". A non-significant test does not show that an effect is absent: the "
                "confidence intervals show which sizes the data allow.",
                "info",
            )
        )
    out.extend(_within_range_contrasts(a, {x for _, _, x in items if x}))
    return out


def _within_range_contrasts(a: Any, variables: set[str]) -> list[Finding]:
    """For a factor whose coefficient is an extrapolation: its pairwise contrasts at the
    covariates' means (the marginal means of the diagnosed model)."""
    out: list[Finding] = []
    for var, em in a.diagnosed.emmeans:
        if var not in variables or not len(em.contrasts):
            continue
        held = ", ".join(f"{k} = {_num(v)}" for k, v in em.covariates.items())
        parts = [
            f"{r['contrast']}: {_num(r['estimate'])} ({_p(r['p_value'])})"
            for _, r in em.contrasts.iterrows()
        ]
        out.append(
            (
                f"Within the observed range, at {held or 'the covariates held at their means'}, "
                f"the {var} differences in {a.response} ({a.diagnosed.label}, marginal means"
                + (f", {em.adjust}-adjusted" if em.adjust != "none" else "")
                + "): "
                + "; ".join(parts)
                + ".",
                "info",
            )
        )
    return out


def final_model_findings(a: Any) -> list[Finding]:
    """The fixed effects of the last model too, when it is not the diagnosed one and no
    likelihood-ratio test prefers another model to it (the end of a model-building path)."""
    last = a.models[-1]
    if last is a.diagnosed or len(a.models) < 2:
        return []
    if any(preferred_over(c, last.label, a.alpha) for c in a.comparisons):
        return []
    tested = [
        c
        for c in a.comparisons
        if c.result is not None and last.label in map(str, c.result.table.index[:2])
    ]
    if not tested:
        return []
    items = fixed_effect_sentences(
        a.data, a.response, last.coef, set(fixed_factors(last.fit, a.data))
    )
    sig = [t for t, p, _ in items if p < a.alpha]
    nonsig = [t for t, p, _ in items if not p < a.alpha]
    text = (
        f"The last model, {last.name}, is not rejected by its likelihood-ratio tests; its "
        "fixed effects: "
    )
    parts = []
    if sig:
        parts.append(f"significant at {a.alpha:g}: " + "; ".join(sig))
    if nonsig:
        parts.append(f"no evidence at {a.alpha:g} of: " + "; ".join(nonsig))
    return [(text + ". ".join(parts) + ".", "info")]


def r2_findings(a: Any) -> list[Finding]:
    m = a.diagnosed
    if m.r2 is None:
        return []
    r = m.r2
    if len(m.fit.fixef) <= 1:
        return [
            (
                f"{m.label} has no fixed effect besides the intercept (marginal R² = 0); the "
                f"random effects explain {r.conditional:.0%} of the variance of {a.response} "
                f"(conditional R² = {_num(r.conditional)}; Nakagawa et al. 2017).",
                "info",
            )
        ]
    return [
        (
            f"In {m.label} the fixed effects explain {r.marginal:.0%} of the variance of "
            f"{a.response} (marginal R² = {_num(r.marginal)}); with the random effects, "
            f"{r.conditional:.0%} (conditional R² = {_num(r.conditional)}; Nakagawa et al. "
            "2017).",
            "info",
        )
    ]


def icc_findings(a: Any) -> list[Finding]:
    """The ICC of the diagnosed model (else of the last random-intercept model)."""
    if a.diagnosed.icc is not None:
        icc_model = a.diagnosed
    else:
        icc_model = next((m for m in reversed(a.models) if m.icc is not None), None)
    if icc_model is None:
        return []
    out: list[Finding] = []
    several = len(icc_model.icc.table) > 1
    for group, r in icc_model.icc.table.iterrows():
        v = float(r["icc"])
        same = (
            f"that share a {group} and no other grouping level"
            if several
            else f"from the same {group}"
        )
        out.append(
            (
                f"ICC for {group} = {_num(v)} ({icc_model.label}): {v:.0%} of the variance "
                f"left after the fixed effects lies between {group} groups, so two "
                f"observations {same} have correlation {_num(v)}. "
                + (
                    "They are not independent: a model that ignores the grouping would "
                    "misstate the standard errors (too small for predictors that vary between "
                    "groups)."
                    if v >= 0.05
                    else "The grouping explains little of the variance."
                ),
                "info",
            )
        )
    return out


def correlation_findings(a: Any) -> list[Finding]:
    out: list[Finding] = []
    for m in a.models:
        for _, r in m.correlations.iterrows():
            c = float(r["corr"])
            kind = "warn" if abs(c) > 0.95 else "info"
            extra = (
                " A correlation this close to ±1 means the model is over-parameterised "
                "(nearly singular): prefer a simpler random-effects structure."
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
    return out


def aic_findings(a: Any) -> list[Finding]:
    """For models that could not be tested against each other: which has the smaller AIC."""
    by_label = {m.label: m for m in a.models}
    out: list[Finding] = []
    for c in a.comparisons:
        if c.result is not None or c.first not in by_label or c.second not in by_label:
            continue
        m1, m2 = by_label[c.first], by_label[c.second]
        if m1.ml_fit is None or m2.ml_fit is None:
            continue
        a1, a2 = float(m1.ml_fit.aic), float(m2.ml_fit.aic)
        best = m1 if a1 <= a2 else m2
        out.append(
            (
                f"{best.label} has the smaller AIC of the two untested models {c.first} and "
                f"{c.second} (ML fits: {_num(min(a1, a2))} vs {_num(max(a1, a2))}); AIC "
                "differences below about 2 are not a reason to prefer one.",
                "info",
            )
        )
    return out


def preferred_over(c: Any, label: str, alpha: float) -> str | None:
    """The other model of comparison ``c`` when its test prefers it to ``label``."""
    if c.result is None:
        return None
    smaller, bigger = map(str, c.result.table.index[:2])
    if label not in (smaller, bigger):
        return None
    p = c.result.table["Pr(>Chisq)"].iloc[1]
    if label == smaller and p < alpha:
        return bigger
    if label == bigger and not p < alpha:
        return smaller
    return None


def diagnosed_model_findings(a: Any) -> list[Finding]:
    """Say so when the tests prefer another model to the one whose assumptions are checked."""
    label = a.diagnosed.label
    others = []
    for c in a.comparisons:
        other = preferred_over(c, label, a.alpha)
        if other is not None and other not in others:
            others.append(other)
    if not others:
        return []
    which = " and ".join(others)
    return [
        (
            f"The assumptions below are checked on {label}, but the likelihood-ratio tests "
            f"prefer {which} to it; check {which} as well (diagnose= / --diagnose).",
            "warn",
        )
    ]


def assumption_findings(a: Any) -> tuple[list[Finding], list[str]]:
    """Sentences for the residual tests, and what the residual variance differs across."""
    alpha = a.alpha
    last = a.diagnosed
    out: list[Finding] = []
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
                        f"No evidence against normal residuals in {last.label} (Shapiro-Wilk "
                        f"W = {_num(t.statistic)}, {_p(t.pvalue)}); see the Q-Q plot as well.",
                        "good",
                    )
                )
        elif name.startswith("White"):
            if rejected:
                unequal.append("the fixed-effects covariates")
                out.append(
                    (
                        f"White's test: the residual variance of {last.label} changes with the "
                        f"fixed-effects columns (LM = {_num(t.statistic)}, {_p(t.pvalue)}).",
                        "warn",
                    )
                )
            else:
                out.append(
                    (
                        "White's test finds no evidence that the residual variance of "
                        f"{last.label} changes with the fixed-effects columns "
                        f"({_p(t.pvalue)}).",
                        "good",
                    )
                )
        elif " across " in name:
            across = name.split(" across ", 1)[1]
            if rejected:
                unequal.append(across)
                out.append(
                    (
                        f"The residual variance of {last.label} differs across {across} "
                        f"({name.split(' across')[0]} F = {_num(t.statistic)}, "
                        f"{_p(t.pvalue)}).",
                        "warn",
                    )
                )
            else:
                out.append(
                    (
                        f"No evidence that the residual variance of {last.label} differs "
                        f"across {across} ({_p(t.pvalue)}).",
                        "good",
                    )
                )
    return out, unequal


def next_step_findings(a: Any, unequal: list[str]) -> list[Finding]:
    """What to try about a residual variance that differs by a factor (or what was tried)."""
    if not unequal:
        return []
    last = a.diagnosed
    factors = [u for u in unequal if u in a.describe_by]
    column = factors[0] if factors else None
    if column is None and all(u in a.groups for u in unequal):
        return [
            (
                f"The residual spread differs between {' and '.join(unequal)} groups: look at "
                "the residuals by group for groups with a much larger spread, and at the "
                "influence of those groups below, before modelling the variance.",
                "info",
            )
        ]
    if column is None:
        return [
            (
                "Try next: model the residual variance by group (residual_groups=<factor>), or "
                "transform the response.",
                "info",
            )
        ]
    fitted = [m for m in a.models if m.residual_groups == column]
    if fitted:
        names = ", ".join(m.name for m in fitted)
        tests = [
            c
            for c in a.comparisons
            if c.result is not None and {c.first, c.second} & {m.label for m in fitted}
        ]
        said = "; ".join(
            f"{c.hypothesis + ' ' if c.hypothesis else ''}{c.first} vs {c.second} "
            f"{_p(c.result.table['Pr(>Chisq)'].iloc[1])}"
            for c in tests
        )
        return [
            (
                f"The residual variance differing across {column} is modelled in {names}, "
                f"each {column} group (or pooled groups) with its own residual variance"
                + (f"; the likelihood-ratio tests: {said}." if said else ".")
                + (
                    " This is the path of West, Welch & Galecki (2014, ch. 3)."
                    if a.ratpup_path
                    else ""
                ),
                "info",
            )
        ]
    return [
        (
            f"Try next: give each {column} group its own residual variance, "
            f'mm.lmer("{last.formula}", data, residual_groups="{column}"), and compare '
            "it with this model by a likelihood-ratio test.",
            "info",
        )
    ]


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
