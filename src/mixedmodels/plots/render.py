"""Turn figures into bytes for reports: PNG (inline base64 in HTML) or SVG."""

from __future__ import annotations

import io
from typing import Any

__all__ = ["figure_to_png", "figure_to_svg"]


def figure_to_png(fig: Any, *, dpi: int = 110) -> bytes:
    """Render ``fig`` to PNG bytes with the Agg canvas (no display needed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def figure_to_svg(fig: Any) -> str:
    """Render ``fig`` to SVG text (fonts as paths, so the file needs nothing else)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", facecolor="white")
    return buf.getvalue()
