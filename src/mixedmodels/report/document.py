"""A renderer-neutral report document: sections of text, tables and figures.

The analysis builds a :class:`Document`; the same document renders to one self-contained
HTML file (figures inline as base64 PNG, styles inline, no external URL), to Markdown and
to plain data (``to_dict``). Tables are :class:`mixedmodels.tables.Table` objects, so the
numbers look the same as in ``fit.summary()``.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..tables import Table
from .style import CSS

__all__ = ["Bullets", "Document", "Figure", "Note", "Section", "Text"]


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text."""

    text: str


@dataclass(frozen=True)
class Note:
    """A highlighted remark: ``kind`` is ``info``, ``good`` or ``warn``."""

    text: str
    kind: str = "info"


@dataclass(frozen=True)
class Bullets:
    """A list of short statements; each item may carry a kind (``info``/``good``/``warn``)."""

    items: tuple[tuple[str, str], ...]
    title: str = ""


@dataclass(frozen=True)
class Figure:
    """A rendered figure: PNG bytes, a title and a caption."""

    title: str
    png: bytes
    caption: str = ""
    width: int = 0
    height: int = 0
    wide: bool = False

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


Block = Text | Note | Bullets | Figure | Table


@dataclass(frozen=True)
class Section:
    """A numbered part of the report; ``subsections`` render one level down."""

    id: str
    title: str
    blocks: tuple[Block, ...] = ()
    subsections: tuple[Section, ...] = ()
    intro: str = ""


def _png_size(png: bytes) -> tuple[int, int]:
    # Width and height are big-endian integers at bytes 16-24 of the IHDR chunk.
    if len(png) >= 24 and png[:8] == b"\x89PNG\r\n\x1a\n":
        return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    return 0, 0


#: Figures wider than this many pixels take a whole row of the figure grid.
WIDE_FIGURE_PX = 560


def make_figure(
    fig: Any, title: str, caption: str = "", *, dpi: int = 110, wide: bool = False
) -> Figure:
    """Render a matplotlib figure into a :class:`Figure` block (``wide``: full row)."""
    from ..plots.render import figure_to_png

    png = figure_to_png(fig, dpi=dpi)
    w, h = _png_size(png)
    # A figure wider than a half-row cell would be shrunk there (a two-panel caterpillar
    # plot's labels become unreadable): give it the whole row. Never drawn larger than its
    # pixels (style.py: width auto, max-width 100%).
    wide = wide or w > WIDE_FIGURE_PX
    return Figure(title=title, png=png, caption=caption, width=w, height=h, wide=wide)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def table_records(table: Table) -> dict[str, Any]:
    """A table as data: title, column names and one record per row (index as ``""``)."""
    df = table.data
    records = []
    for idx, row in df.iterrows():
        rec = {"": _jsonable(idx)} if table.show_index else {}
        rec.update({str(k): _jsonable(v) for k, v in row.items()})
        records.append(rec)
    return {
        "type": "table",
        "title": table.title,
        "columns": ([""] if table.show_index else []) + [str(c) for c in df.columns],
        "rows": records,
        "notes": list(table.notes),
    }


@dataclass(frozen=True)
class Document:
    """The whole report: a title, header facts and sections."""

    title: str
    subtitle: str = ""
    facts: tuple[tuple[str, str], ...] = ()
    sections: tuple[Section, ...] = field(default_factory=tuple)
    footer: str = ""

    # ------------------------------------------------------------------ walking
    def figures(self) -> list[Figure]:
        out: list[Figure] = []

        def walk(sec: Section) -> None:
            out.extend(b for b in sec.blocks if isinstance(b, Figure))
            for sub in sec.subsections:
                walk(sub)

        for s in self.sections:
            walk(s)
        return out

    # ------------------------------------------------------------------ HTML
    def to_html(self, *, standalone: bool = True) -> str:
        """Self-contained HTML; ``standalone=False`` gives a fragment (for Jupyter)."""
        body = self._html_body()
        if not standalone:
            return f"<style>{CSS}</style>{body}"
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            # Nothing may be fetched: no scripts, no external images, fonts or styles.
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "img-src data:; style-src 'unsafe-inline'\">"
            f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>\n"
        )

    def _html_body(self) -> str:
        parts = ['<div class="mmr">', '<header class="mmr-header">']
        parts.append(f"<h1>{html.escape(self.title)}</h1>")
        if self.subtitle:
            parts.append(f'<p class="mmr-subtitle">{html.escape(self.subtitle)}</p>')
        if self.facts:
            parts.append('<dl class="mmr-facts">')
            for k, v in self.facts:
                parts.append(f"<div><dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd></div>")
            parts.append("</dl>")
        parts.append("</header>")
        parts.append('<nav class="mmr-toc" aria-label="Contents"><h2>Contents</h2><ol>')
        for s in self.sections:
            parts.append(f'<li><a href="#{s.id}">{html.escape(s.title)}</a>')
            if s.subsections:
                parts.append("<ol>")
                for sub in s.subsections:
                    parts.append(f'<li><a href="#{sub.id}">{html.escape(sub.title)}</a></li>')
                parts.append("</ol>")
            parts.append("</li>")
        parts.append("</ol></nav><main>")
        for i, s in enumerate(self.sections, 1):
            parts.append(self._html_section(s, level=2, number=f"{i}. "))
        parts.append("</main>")
        if self.footer:
            parts.append(f'<footer class="mmr-footer">{html.escape(self.footer)}</footer>')
        parts.append("</div>")
        return "".join(parts)

    def _html_section(self, sec: Section, level: int, number: str = "") -> str:
        parts = [f'<section id="{sec.id}" class="mmr-section mmr-h{level}">']
        parts.append(f"<h{level}>{html.escape(number + sec.title)}</h{level}>")
        if sec.intro:
            parts.append(f'<p class="mmr-intro">{html.escape(sec.intro)}</p>')
        figures: list[str] = []

        def flush() -> None:
            if figures:
                parts.append('<div class="mmr-figures">' + "".join(figures) + "</div>")
                figures.clear()

        for block in sec.blocks:
            if isinstance(block, Figure):
                figures.append(_html_figure(block))
                continue
            flush()
            parts.append(_html_block(block))
        flush()
        for sub in sec.subsections:
            parts.append(self._html_section(sub, level + 1))
        parts.append("</section>")
        return "".join(parts)

    # ------------------------------------------------------------------ Markdown
    def to_markdown(self) -> str:
        """Markdown with the same content; figures are inline data-URI images."""
        lines = [f"# {self.title}", ""]
        if self.subtitle:
            lines += [self.subtitle, ""]
        for k, v in self.facts:
            lines.append(f"- **{k}:** {v}")
        if self.facts:
            lines.append("")
        lines += ["## Contents", ""]
        for i, s in enumerate(self.sections, 1):
            lines.append(f"{i}. [{s.title}](#{s.id})")
            for sub in s.subsections:
                lines.append(f"   - [{sub.title}](#{sub.id})")
        lines.append("")
        for i, s in enumerate(self.sections, 1):
            lines += self._md_section(s, 2, f"{i}. ")
        if self.footer:
            lines += ["---", "", self.footer, ""]
        return "\n".join(lines).rstrip() + "\n"

    def _md_section(self, sec: Section, level: int, number: str = "") -> list[str]:
        lines = [f'<a id="{sec.id}"></a>', "", f"{'#' * level} {number}{sec.title}", ""]
        if sec.intro:
            lines += [f"*{sec.intro}*", ""]
        for block in sec.blocks:
            lines += _md_block(block)
        for sub in sec.subsections:
            lines += self._md_section(sub, level + 1)
        return lines

    # ------------------------------------------------------------------ data
    def to_dict(self) -> dict[str, Any]:
        """Plain data: sections with their tables (as records), text and figure titles."""

        def block(b: Block) -> dict[str, Any]:
            if isinstance(b, Table):
                return table_records(b)
            if isinstance(b, Figure):
                return {
                    "type": "figure",
                    "title": b.title,
                    "caption": b.caption,
                    "width": b.width,
                    "height": b.height,
                }
            if isinstance(b, Bullets):
                return {
                    "type": "list",
                    "title": b.title,
                    "items": [{"text": t, "kind": k} for t, k in b.items],
                }
            if isinstance(b, Note):
                return {"type": "note", "kind": b.kind, "text": b.text}
            return {"type": "text", "text": b.text}

        def section(s: Section) -> dict[str, Any]:
            return {
                "id": s.id,
                "title": s.title,
                "intro": s.intro,
                "blocks": [block(b) for b in s.blocks],
                "sections": [section(x) for x in s.subsections],
            }

        return {
            "title": self.title,
            "subtitle": self.subtitle,
            "facts": {k: v for k, v in self.facts},
            "sections": [section(s) for s in self.sections],
        }


def _html_figure(f: Figure) -> str:
    size = f' width="{f.width}" height="{f.height}"' if f.width and f.height else ""
    cap = f"<strong>{html.escape(f.title)}</strong>"
    if f.caption:
        cap += f" {html.escape(f.caption)}"
    wide = " mmr-wide" if f.wide else ""
    return (
        f'<figure class="mmr-figure{wide}">'
        f'<img src="{f.data_uri}" alt="{html.escape(f.title)}"{size}>'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def _html_block(b: Block) -> str:
    if isinstance(b, Table):
        return f'<div class="mmr-table-wrap">{_html_table(b)}</div>'
    if isinstance(b, Note):
        return f'<p class="mmr-note mmr-{b.kind}">{html.escape(b.text)}</p>'
    if isinstance(b, Bullets):
        title = f"<h4>{html.escape(b.title)}</h4>" if b.title else ""
        items = "".join(
            f'<li class="mmr-{kind}">{html.escape(text)}</li>' for text, kind in b.items
        )
        return f'{title}<ul class="mmr-list">{items}</ul>'
    if isinstance(b, Text):
        return f"<p>{html.escape(b.text)}</p>"
    raise TypeError(f"cannot render a {type(b).__name__} block")


def _html_table(t: Table) -> str:
    """Render a Table as :meth:`Table.to_html` does, with text columns aligned left."""
    df = t.formatted()
    text_cols = {
        j
        for j, c in enumerate(t.data.columns)
        if not pd.api.types.is_numeric_dtype(t.data[c]) and c not in t.pvalue_columns
    }

    def cls(j: int) -> str:
        return ' class="mmr-text"' if j in text_cols else ""

    parts = ['<table class="mm-table">']
    if t.title:
        parts.append(f"<caption>{html.escape(t.title)}</caption>")
    head = [f"<th>{html.escape(str(df.index.name or ''))}</th>"] if t.show_index else []
    head += [f"<th{cls(j)}>{html.escape(str(c))}</th>" for j, c in enumerate(df.columns)]
    parts.append("<thead><tr>" + "".join(head) + "</tr></thead><tbody>")
    for i, row in zip(df.index, df.itertuples(index=False), strict=True):
        cells = [f"<th>{html.escape(str(i))}</th>"] if t.show_index else []
        cells += [f"<td{cls(j)}>{html.escape(str(v))}</td>" for j, v in enumerate(row)]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    parts.extend(f'<p class="mm-note">{html.escape(n)}</p>' for n in t.notes)
    return "".join(parts)


_MD_MARK = {"good": "✓", "warn": "⚠", "info": "•"}


def _md_block(b: Block) -> list[str]:
    if isinstance(b, Table):
        return [b.to_markdown(), ""]
    if isinstance(b, Figure):
        cap = f"**{b.title}.** {b.caption}".strip()
        return [f"![{b.title}]({b.data_uri})", "", cap, ""]
    if isinstance(b, Bullets):
        out = [f"**{b.title}**", ""] if b.title else []
        out += [f"- {_MD_MARK.get(k, '•')} {t}" for t, k in b.items]
        return [*out, ""]
    if isinstance(b, Note):
        return [f"> {_MD_MARK.get(b.kind, '•')} {b.text}", ""]
    return [b.text, ""]
