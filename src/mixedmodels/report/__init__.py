"""The analysis report: ``analyze`` runs the whole analysis and renders it.

>>> import mixedmodels as mm
>>> report = mm.analyze()          # doctest: +SKIP   (the rat-pup analysis)
>>> report.save("ratpup-report.html")  # doctest: +SKIP
"""

from __future__ import annotations

from .api import FORMATS, AnalysisReport, analyze, format_from_path
from .terminal import terminal_summary

__all__ = ["FORMATS", "AnalysisReport", "analyze", "format_from_path", "terminal_summary"]
