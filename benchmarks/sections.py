"""Sections of docs/benchmarks.md that one script owns, between two HTML comments."""

from __future__ import annotations


def splice(page: str, section: str, begin: str, end: str) -> str:
    """``page`` with the section between ``begin`` and ``end`` replaced by ``section``
    (appended if the page has none)."""
    block = f"{begin}\n\n{section.strip()}\n\n{end}\n"
    if begin in page and end in page:
        head, rest = page.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        return head + block + ("\n" + tail if tail else "")
    return page.rstrip("\n") + "\n\n" + block


def extract(page: str, begin: str, end: str) -> str | None:
    """The section between ``begin`` and ``end`` (markers excluded), None if absent."""
    if begin not in page or end not in page:
        return None
    return page.split(begin, 1)[1].split(end, 1)[0].strip()
