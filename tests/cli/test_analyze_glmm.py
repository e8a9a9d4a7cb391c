"""`mixedmodels analyze --family`: the GLMM report from the command line, and its refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from mixedmodels.cli import main

CBPP = "cbind(incidence, size - incidence) ~ C(period) + (1|herd)"
CBPP_NULL = "cbind(incidence, size - incidence) ~ C(period)"
GROUSE = "TICKS ~ C(YEAR) + cHEIGHT + (1|LOCATION)"
SECTIONS = [
    'id="findings"',
    'id="data"',
    'id="data-summaries"',
    'id="models"',
    'id="model-comparison"',
    'id="assumptions"',
    'id="assumptions-residuals"',
    'id="assumptions-dispersion"',
    'id="assumptions-ranef"',
]


def _exe() -> list[str]:
    found = shutil.which("mixedmodels")
    return [found] if found else [sys.executable, "-m", "mixedmodels"]


def test_cbpp_page_and_summary(tmp_path, capsys):
    target = tmp_path / "cbpp.html"
    argv = ["analyze", "cbpp", "-f", CBPP_NULL, "-f", CBPP, "--family", "binomial"]
    rc = main([*argv, "-o", str(target), "--quiet"])
    assert rc == 0
    html = target.read_text()
    for s in SECTIONS:
        assert s in html
    assert "Odds ratios" in html and "odds ratio 0.371" in html
    assert "Simulated-residual checks" in html and "DHARMa dispersion test" in html
    assert "Satterthwaite" not in html and "Shapiro" not in html
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out.startswith("Generalized linear mixed-model analysis of cbpp: 56 rows")
    assert "M1 vs M2" in out.out and "Findings:" in out.out
    assert f"Report written to {target}" in out.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cbpp.html"]


def test_grouseticks_json(tmp_path, capsys):
    target = tmp_path / "g.json"
    rc = main(["analyze", "grouseticks", "-f", GROUSE, "--family", "poisson", "-o", str(target)])
    assert rc == 0
    d = json.loads(target.read_text())
    assert [s["id"] for s in d["sections"]] == ["findings", "data", "models", "assumptions"]
    assert d["facts"]["Family"] == "poisson (log link)"
    items = d["sections"][0]["blocks"][0]["items"]
    assert any(
        i["text"].startswith("M1: Overdispersion: the dispersion test ratio is") for i in items
    )
    assert any("rate ratio" in i["text"] for i in items)
    cap = capsys.readouterr()
    assert "simulating residuals of M1" in cap.err  # progress on stderr without --quiet


def test_default_output_name(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(
        [*_exe(), "analyze", "cbpp", "-f", CBPP, "--family", "binomial", "--format", "md"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "cbpp-report.md"]
    md = (tmp_path / "cbpp-report.md").read_text()
    assert "Generalized linear mixed-model analysis of cbpp" in md


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["-f", CBPP, "--link", "logit"], 2, "--link applies to generalized linear mixed models"),
        (["-f", CBPP, "--nagq", "5"], 2, "--nagq applies to generalized linear mixed models"),
        (["-f", CBPP, "--family", "binomial", "--ml"], 2, "--ml does not apply with --family"),
        (["--family", "binomial"], 1, "analyze --family needs the models"),
        (["-f", CBPP, "--family", "gaussian"], 2, "invalid choice: 'gaussian'"),
        (["-f", CBPP_NULL, "--family", "binomial"], 1, "has no random effects"),
        (["-f", CBPP, "--family", "binomial", "--link", "identity"], 1, "link"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(tmp_path, capsys, args, status, message):
    target = tmp_path / "r.html"
    rc = main(["analyze", "cbpp", *args, "-o", str(target), "--quiet"])
    assert rc == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mixedmodels: error:")
    assert message in err[0]
    assert not target.exists()
