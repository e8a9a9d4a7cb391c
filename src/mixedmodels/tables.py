"""One renderer-neutral table model behind every output: text, HTML, Markdown, JSON.

A :class:`Table` is a title, a DataFrame and notes; a :class:`Report` is a sequence of
header lines and tables. Renderers format numbers the same way everywhere
(``format_number``), so the terminal, Jupyter and the HTML report agree.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


def format_number(x: object, digits: int = 4) -> str:
    """Format a number for display: ``digits`` significant digits, p-values as ``<2e-16``."""
    if x is None:
        return ""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        v = float(x)
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "Inf" if v > 0 else "-Inf"
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1e6 or a < 1e-4:
            return f"{v:.{max(digits - 1, 1)}e}"
        if a >= 10**digits:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(x)


def format_pvalue(p: float) -> str:
    """R-style p-value: ``<2e-16`` below machine precision, else 3 significant digits."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    if p < 2.2e-16:
        return "<2e-16"
    if p < 1e-4:
        return f"{p:.2e}"
    return f"{p:.4f}"


@dataclass(frozen=True)
class Table:
    """A titled table of values.

    Attributes
    ----------
    title
        Heading shown above the table.
    data
        The values; the index is shown when ``show_index`` is True.
    notes
        Lines shown under the table.
    pvalue_columns
        Columns formatted as p-values.
    """

    title: str
    data: pd.DataFrame
    notes: tuple[str, ...] = ()
    pvalue_columns: tuple[str, ...] = ()
    show_index: bool = True
    digits: int = 4

    def formatted(self) -> pd.DataFrame:
        """All cells as display strings."""
        out = self.data.copy().astype(object)
        for col in out.columns:
            if col in self.pvalue_columns:
                out[col] = [format_pvalue(v) for v in self.data[col]]
            else:
                out[col] = [format_number(v, self.digits) for v in self.data[col]]
        return out

    def to_text(self) -> str:
        df = self.formatted()
        header = ([""] if self.show_index else []) + [str(c) for c in df.columns]
        rows = [
            ([str(i)] if self.show_index else []) + [str(v) for v in row]
            for i, row in zip(df.index, df.itertuples(index=False), strict=True)
        ]
        widths = [
            max(len(h), *(len(r[j]) for r in rows)) if rows else len(h)
            for j, h in enumerate(header)
        ]
        lines = [self.title] if self.title else []

        def fmt(cells):
            parts = []
            for j, c in enumerate(cells):
                parts.append(
                    c.ljust(widths[j]) if (j == 0 and self.show_index) else c.rjust(widths[j])
                )
            return " " + "  ".join(parts).rstrip()

        lines.append(fmt(header))
        lines.extend(fmt(r) for r in rows)
        lines.extend(self.notes)
        return "\n".join(lines)

    def to_markdown(self) -> str:
        df = self.formatted()
        cols = ([""] if self.show_index else []) + [str(c) for c in df.columns]
        lines = [f"### {self.title}", ""] if self.title else []
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        for i, row in zip(df.index, df.itertuples(index=False), strict=True):
            cells = ([str(i)] if self.show_index else []) + [str(v) for v in row]
            lines.append("| " + " | ".join(cells) + " |")
        lines.extend(["", *self.notes] if self.notes else [])
        return "\n".join(lines)

    def to_html(self) -> str:
        df = self.formatted()
        parts = ['<table class="mm-table">']
        if self.title:
            parts.append(f"<caption>{html.escape(self.title)}</caption>")
        head = ([""] if self.show_index else []) + [str(c) for c in df.columns]
        parts.append(
            "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>"
        )
        parts.append("<tbody>")
        for i, row in zip(df.index, df.itertuples(index=False), strict=True):
            cells = ([f"<th>{html.escape(str(i))}</th>"] if self.show_index else []) + [
                f"<td>{html.escape(str(v))}</td>" for v in row
            ]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
        for note in self.notes:
            parts.append(f'<p class="mm-note">{html.escape(note)}</p>')
        return "".join(parts)


@dataclass(frozen=True)
class Report:
    """Header lines followed by tables; rendered the same way in every format."""

    title: str
    lines: tuple[str, ...] = ()
    tables: tuple[Table, ...] = field(default_factory=tuple)
    footer: tuple[str, ...] = ()

    def to_text(self) -> str:
        parts = [self.title, *self.lines, ""]
        for t in self.tables:
            parts.append(t.to_text())
            parts.append("")
        parts.extend(self.footer)
        return "\n".join(parts).rstrip() + "\n"

    def __str__(self) -> str:
        return self.to_text()

    def to_markdown(self) -> str:
        parts = [f"## {self.title}", "", *[f"{x}  " for x in self.lines], ""]
        for t in self.tables:
            parts.append(t.to_markdown())
            parts.append("")
        parts.extend(self.footer)
        return "\n".join(parts).rstrip() + "\n"

    def to_html(self) -> str:
        parts = ['<div class="mm-report">', f"<h3>{html.escape(self.title)}</h3>"]
        if self.lines:
            parts.append("<p>" + "<br>".join(html.escape(x) for x in self.lines) + "</p>")
        parts.extend(t.to_html() for t in self.tables)
        if self.footer:
            parts.append("<p>" + "<br>".join(html.escape(x) for x in self.footer) + "</p>")
        parts.append("</div>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()
