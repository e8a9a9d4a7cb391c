"""Phrases shared by the findings of linear and generalized linear mixed models: p-values
and numbers in words, factor dummies read as levels, the likelihood-ratio tests."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..tables import format_number, format_pvalue

__all__ = ["Finding", "comparison_findings"]

Finding = tuple[str, str]


def _p(p: float) -> str:
    text = format_pvalue(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _num(x: float) -> str:
    return format_number(float(x), 3)


def _factor_reading(data: pd.DataFrame, column: str, columns: tuple[str, ...] = ()) -> str | None:
    """``treatmentHigh`` -> "treatment = High (vs Control)" when it is a factor dummy.

    The reference is the one level of the factor without a column among ``columns``.
    """
    for var in sorted(data.columns, key=lambda c: -len(str(c))):
        name = str(var)
        if not column.startswith(name) or column == name:
            continue
        s = data[var]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            continue
        level = column[len(name) :]
        levels = sorted(map(str, s.dropna().unique()))
        if level not in levels:
            continue
        coded = {c[len(name) :] for c in columns if c.startswith(name) and ":" not in c}
        coded.add(level)
        others = [lv for lv in levels if lv not in coded]
        ref = others[0] if len(others) == 1 else None
        if ref is None:
            return f"{name} = {level} (vs the reference level)"
        return f"{name} = {level} (vs {ref})"
    return None


def comparison_findings(
    comparisons: list[Any], alpha: float, names: dict[str, str] | None = None
) -> list[Finding]:
    """One sentence per likelihood-ratio test (or why there is none); ``names`` gives a
    longer name per label (``M5`` -> ``M5 (Model 3.2A)``)."""
    names = names or {}
    out: list[Finding] = []
    for c in comparisons:
        hyp = f"{c.hypothesis}: " if getattr(c, "hypothesis", "") else ""
        if c.result is None:
            out.append(
                (
                    f"{hyp}{names.get(c.first, c.first)} and {names.get(c.second, c.second)} "
                    f"were not compared by a likelihood-ratio test: {c.refused}",
                    "warn",
                )
            )
            continue
        r = c.result.table.iloc[1]
        bigger = str(c.result.table.index[1])
        smaller = str(c.result.table.index[0])
        big, small = names.get(bigger, bigger), names.get(smaller, smaller)
        verdict = (
            f"evidence for the larger model {big}"
            if r["Pr(>Chisq)"] < alpha
            else f"no evidence that the larger model {big} fits better, so the simpler "
            f"{small} is preferred"
        )
        ref = f", {r['Reference']}" if r["Reference"] else ""
        out.append(
            (
                f"{hyp}{small} vs {big}: likelihood ratio {_num(r['Chisq'])} on "
                f"{int(r['Df'])} df{ref}, {_p(r['Pr(>Chisq)'])} ({c.result.criterion}): "
                f"{verdict}.",
                "info",
            )
        )
    return out
