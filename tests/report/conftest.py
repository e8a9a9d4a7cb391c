"""One analysis of the rat-pup data, shared by the report tests (fitting and drawing take
a few seconds)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ratpup_report():
    from mixedmodels.report import analyze

    return analyze()


@pytest.fixture(scope="session")
def report_file(ratpup_report, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "ratpup-report.html"
    ratpup_report.save(path)
    return path
