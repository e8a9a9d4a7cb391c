"""A short terminal summary of an analysis: the models, their comparison and the findings.

Plain text always works; with ``rich`` installed and a terminal on stdout the same content
is printed as rich tables (:func:`print_summary`).
"""

from __future__ import annotations

import sys
import textwrap
from typing import Any, TextIO

import pandas as pd

from ..tables import Table
from .analysis import comparison_table

__all__ = ["print_summary", "terminal_summary"]

_MARK = {"good": "ok", "warn": "!!", "info": "--"}


def _models_table(report: Any) -> Table:
    a = report.analysis
    rows = []
    if getattr(a, "kind", "") == "glmm":
        for m in a.models:
            f = m.fit
            rows.append({"formula": m.formula, "AIC": f.aic, "BIC": f.bic, "logLik": f.loglik})
        df = pd.DataFrame(rows, index=pd.Index([m.label for m in a.models], name="model"))
        return Table(f"Models ({a.family}, {a.link} link; maximum likelihood)", df, digits=6)
    several = any(m.residual_groups for m in a.models)
    for m in a.models:
        ml = m.ml_fit or m.fit
        row = {"formula": m.formula}
        if several:
            row["residual variance"] = m.residual_structure
        row.update({"AIC (ML)": ml.aic, "BIC (ML)": ml.bic, "logLik (ML)": ml.loglik})
        rows.append(row)
    df = pd.DataFrame(rows, index=pd.Index([m.name for m in a.models], name="model"))
    return Table("Models", df, digits=6)


def _lrt_table(report: Any) -> Table | None:
    a = report.analysis
    title = (
        "Likelihood-ratio tests (tutorial and West et al.'s hypotheses)"
        if getattr(a, "ratpup_path", False)
        else "Likelihood-ratio tests of neighbouring models"
    )
    table = comparison_table(a.comparisons, title)
    if table is None:
        return None
    cols = ["criterion", "Chisq", "Df", "p", "reference"]
    if "hypothesis" in table.data.columns:
        cols.insert(0, "hypothesis")
    data = table.data[cols]
    return Table(table.title, data, pvalue_columns=("p",))


def _headline(a: Any) -> str:
    kind = "Generalized linear mixed-model" if getattr(a, "kind", "") == "glmm" else "Mixed-model"
    return f"{kind} analysis of {a.data_name}: {len(a.data)} rows, response {a.response}"


def terminal_summary(report: Any, *, path: str | None = None, width: int = 100) -> str:
    """The summary as plain text."""
    from .findings import findings

    a = report.analysis
    parts = [_headline(a), ""]
    parts += [_models_table(report).to_text(), ""]
    lrt = _lrt_table(report)
    if lrt is not None:
        parts += [lrt.to_text(), ""]
    parts.append("Findings:")
    for text, kind in findings(a):
        parts.append(
            textwrap.fill(
                text, width=width, initial_indent=f" {_MARK[kind]} ", subsequent_indent="    "
            )
        )
    if path:
        parts += ["", f"Report written to {path}"]
    return "\n".join(parts) + "\n"


def print_summary(report: Any, *, path: str | None = None, file: TextIO | None = None) -> bool:
    """Print the summary with rich tables; return False (printing nothing) without rich."""
    try:
        from rich import box
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table as RichTable
    except ImportError:
        return False
    from .findings import findings

    console = Console(file=file or sys.stdout)
    a = report.analysis
    console.print(f"[bold]{escape(_headline(a))}[/bold]", highlight=False)
    for table in (_models_table(report), _lrt_table(report)):
        if table is None:
            continue
        shown = table.formatted()
        rt = RichTable(title=table.title, box=box.SIMPLE_HEAVY, title_justify="left")
        rt.add_column(str(shown.index.name or ""), style="bold")
        for col in shown.columns:
            rt.add_column(
                str(col),
                justify="left"
                if col in ("formula", "criterion", "reference", "residual variance", "hypothesis")
                else "right",
            )
        for idx, row in shown.iterrows():
            rt.add_row(str(idx), *[str(v) for v in row])
        console.print(rt)
    console.print("[bold]Findings[/bold]")
    style = {"good": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "info": "[blue]•[/blue]"}
    for text, kind in findings(a):
        console.print(f" {style[kind]} ", end="")
        console.print(text, highlight=False, markup=False)
    if path:
        console.print(f"\nReport written to [bold]{path}[/bold]")
    return True
