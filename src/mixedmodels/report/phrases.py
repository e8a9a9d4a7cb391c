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


def comparison_findings(comparisons: list[Any], alpha: float) -> list[Finding]:
    """One sentence per likelihood-ratio test of neighbouring models (or why there is none)."""
    out: list[Finding] = []
    for c in comparisons:
        if c.result is None:
            out.append(
                (
                    f"{c.first} and {c.second} were not compared by a likelihood-ratio "
                    f"test: {c.refused}",
                    "warn",
                )
            )
            continue
        r = c.result.table.iloc[1]
        bigger = c.result.table.index[1]
        smaller = c.result.table.index[0]
        verdict = (
            f"the data support the larger model {bigger}"
            if r["Pr(>Chisq)"] < alpha
            else f"the simpler model {smaller} is enough"
        )
        ref = f", {r['Reference']}" if r["Reference"] else ""
        out.append(
            (
                f"{smaller} vs {bigger}: likelihood ratio {_num(r['Chisq'])} on {int(r['Df'])} df"
                f"{ref}, {_p(r['Pr(>Chisq)'])} ({c.result.criterion}): {verdict}.",
                "info",
            )
        )
    return out
