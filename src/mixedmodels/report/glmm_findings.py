"""The findings of a GLMM analysis in plain words: effects as odds or rate ratios, the
spread of the random effects, the model comparisons, the simulated-residual checks.

Each finding is ``(text, kind)`` with kind ``good``, ``warn`` or ``info``, as for linear
mixed models (:mod:`~mixedmodels.report.findings`).
"""

from __future__ import annotations

import math
from typing import Any

from .glmm_analysis import RATIO_OF
from .phrases import Finding, _factor_reading, _num, _p, comparison_findings

__all__ = ["glmm_findings"]

_PLURAL = {"odds": "odds", "rate": "rates"}
#: The scale a link puts the estimates on, in words.
_SCALE = {"logit": "log-odds", "log": "log", "probit": "probit", "cloglog": "cloglog"}


def _reading(analysis: Any, fit: Any, term: str) -> tuple[str, bool]:
    """``("period = 2 (vs 1)", True)`` for a factor dummy, ``("cHEIGHT", False)`` else."""
    for label, factor in fit.design.spec.factors.items():
        if factor.contrast != "treatment":
            continue
        levels = [str(v) for v in factor.levels]
        # C(period) names its columns period2, ...; factor(YEAR) names them factor(YEAR)96.
        for prefix in dict.fromkeys((str(label), str(factor.column))):
            level = term[len(prefix) :] if term.startswith(prefix) else ""
            if level in levels:
                ref = levels[int(factor.reference)] if factor.reference is not None else None
                vs = f" (vs {ref})" if ref is not None and ref != level else ""
                return f"{factor.column} = {level}{vs}", True
    names = tuple(map(str, fit.design.x_names))
    reading = _factor_reading(analysis.data, term, names)
    if reading is not None:
        return reading, True
    return term, False


def _ci(lo: float, hi: float) -> str:
    return f"95% CI {_num(lo)} to {_num(hi)}"


def describe_glmm_effect(analysis: Any, m: Any, term: str) -> str:
    """One phrase for one fixed effect: a ratio under logit/log links, else the estimate."""
    row = m.coef.loc[term]
    reading, is_factor = _reading(analysis, m.fit, term)
    if m.ratios is not None:
        of = RATIO_OF[str(m.fit.link)]
        r = m.ratios.loc[term]
        ratio = float(r.iloc[0])
        tail = f"({_ci(r['lower'], r['upper'])}, {_p(row['p'])})"
        if ":" in term:
            return f"interaction {term}: ratio of {of} ratios {_num(ratio)} {tail}"
        if is_factor:
            return f"{reading}: {m.ratio_name} {_num(ratio)} {tail}"
        return f"{term}: {m.ratio_name} {_num(ratio)} per unit {tail}"
    scale = _SCALE.get(str(m.fit.link), f"{m.fit.link}-link")
    return f"{reading}: {_num(row['estimate'])} on the {scale} scale ({_p(row['p'])})"


def _effects(a: Any) -> list[Finding]:
    m = a.diagnosed
    coef = m.coef.drop(index="(Intercept)", errors="ignore")
    sig = coef[coef["p"] < a.alpha]
    nonsig = coef[coef["p"] >= a.alpha]
    out: list[Finding] = []
    if len(sig):
        what = {"odds ratio": "odds ratios", "rate ratio": "rate ratios"}.get(m.ratio_name or "")
        how = f", as {what} with Wald intervals" if what else ""
        out.append(
            (
                f"Significant fixed effects in {m.label} (Wald z tests at {a.alpha:g}{how}): "
                + "; ".join(describe_glmm_effect(a, m, str(t)) for t in sig.index)
                + ".",
                "info",
            )
        )
    if len(nonsig):
        out.append(
            (
                f"No evidence (at {a.alpha:g}) that these fixed effects of {m.label} differ "
                "from 0: "
                + ", ".join(f"{t} ({_p(r['p'])})" for t, r in nonsig.iterrows())
                + ". A non-significant test does not show that an effect is absent.",
                "info",
            )
        )
    if m.ratio_name is None:
        out.append(
            (
                f"Under the {m.fit.link} link exp(estimate) is neither an odds ratio nor a rate "
                "ratio; the estimates are read on the link scale.",
                "info",
            )
        )
    return out


def _spread(a: Any) -> list[Finding]:
    """The random intercepts' SD in words: how far groups' odds or rates typically differ."""
    m = a.diagnosed
    of = RATIO_OF.get(str(m.fit.link))
    out: list[Finding] = []
    vc = m.fit.varcorr
    rows = vc[vc["term2"].isna() & (vc["term"] == "(Intercept)")]
    for _, r in rows.iterrows():
        group, sd = str(r["group"]), float(r["sd"])
        if group in a.observation_level:
            out.append(
                (
                    f"The observation-level random effect ({group}) has SD {_num(sd)}: extra "
                    f"{'binomial' if a.family == 'binomial' else 'Poisson'} variation, row by "
                    "row.",
                    "info",
                )
            )
            continue
        if sd == 0.0:
            out.append(
                (
                    f"The random intercept of {group} has variance 0 in {m.label}: the groups "
                    "do not differ beyond the fixed effects (a singular fit).",
                    "warn",
                )
            )
            continue
        if of is None:
            scale = _SCALE.get(str(m.fit.link), f"{m.fit.link}-link")
            text = f"Random intercepts of {group}: SD {_num(sd)} on the {scale} scale."
            out.append((text, "info"))
            continue
        lo, hi = math.exp(-1.96 * sd), math.exp(1.96 * sd)
        out.append(
            (
                f"Groups differ: the random intercept of {group} has SD {_num(sd)} on the "
                f"{_SCALE[str(m.fit.link)]} scale, so the middle 95% of {group} groups have "
                f"{_PLURAL[of]} between {_num(lo)} and {_num(hi)} times those of a typical "
                f"{group}.",
                "info",
            )
        )
    return out


def _checks(a: Any) -> list[Finding]:
    """The simulated-residual tests, worded by the tests themselves."""
    m = a.diagnosed
    out: list[Finding] = []
    for t in a.tests:
        text = t.interpretation
        kind = "warn" if t.rejected() else "good"
        if a.simulated.binary and "dispersion" in t.name:
            kind = "info"
        out.append((f"{m.label}: {text}", kind))
    if a.simulated.binary:
        out.append(
            (
                f"{m.label} has a 0/1 response: over-dispersion and zero inflation cannot be "
                "seen row by row, so they were not tested.",
                "info",
            )
        )
    return out


def glmm_findings(analysis: Any) -> list[Finding]:
    """The findings of a :class:`~mixedmodels.report.glmm_analysis.GlmmAnalysis`."""
    a = analysis
    out: list[Finding] = []
    out.extend(_effects(a))
    out.extend(_spread(a))
    out.extend(comparison_findings(a.comparisons, a.alpha))
    for m in a.models:
        for w in m.warnings:
            out.append((f"{m.label}: {w}", "warn"))
    out.extend(_checks(a))
    return out
