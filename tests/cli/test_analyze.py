"""`mixedmodels analyze`: the README's first command, its options and its errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from mixedmodels.cli import main

SECTIONS = [
    'id="findings"',
    'id="data"',
    'id="models"',
    'id="model-comparison"',
    'id="assumptions"',
    'id="data-hierarchy"',
    'id="assumptions-ranef"',
]


def _exe() -> list[str]:
    found = shutil.which("mixedmodels")
    return [found] if found else [sys.executable, "-m", "mixedmodels"]


def test_no_arguments_writes_the_ratpup_report(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(
        [*_exe(), "analyze"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "ratpup-report.html").read_text()
    for s in SECTIONS:
        assert s in html
    assert "Findings" in out.stdout and "ratpup-report.html" in out.stdout
    assert "fitting M1" in out.stderr  # progress on stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "ratpup-report.html"]


def test_formulas_describe_by_and_json(tmp_path, capsys):
    target = tmp_path / "r.json"
    rc = main(
        [
            "analyze",
            "ratpup",
            "-f",
            "weight ~ treatment + sex + (1|litter)",
            "-f",
            "weight ~ treatment + sex + litsize + (1|litter)",
            "--describe-by",
            "treatment",
            "-o",
            str(target),
            "--quiet",
        ]
    )
    assert rc == 0
    data = json.loads(target.read_text())
    assert [s["id"] for s in data["sections"]] == [
        "findings",
        "data",
        "models",
        "assumptions",
        "methods",
    ]
    methods = data["sections"][-1]
    prov = {r[""]: r["value"] for r in methods["blocks"][2]["rows"]}
    assert prov["Command"] == (
        "mixedmodels analyze ratpup -f 'weight ~ treatment + sex + (1|litter)' -f 'weight ~ "
        f"treatment + sex + litsize + (1|litter)' --describe-by treatment -o {target}"
    )
    assert len(prov["Data SHA-256"]) == 64
    cap = capsys.readouterr()
    assert cap.err == ""
    assert "M1 vs M2" in cap.out


def test_missing_describe_by_column(tmp_path, capsys):
    target = tmp_path / "r.html"
    rc = main(["analyze", "ratpup", "--describe-by", "treatment,nope", "-o", str(target)])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mixedmodels: error: --describe-by: no column named 'nope'")
    assert "Traceback" not in "\n".join(err)
    assert not target.exists()


def test_not_nested_models_still_write_the_report(tmp_path, capsys):
    target = tmp_path / "r.md"
    rc = main(
        [
            "analyze",
            "ratpup",
            "-f",
            "weight ~ sex + (1|litter)",
            "-f",
            "weight ~ litsize + (1|litter)",
            "-o",
            str(target),
            "--quiet",
        ]
    )
    assert rc == 0
    md = target.read_text()
    assert "not tested" in md and "not nested" in md
    assert "Assumptions of M2" in md


@pytest.mark.parametrize("where", ["missing-dir/r.html", "is-a-dir"])
def test_unwritable_output(tmp_path, capsys, where):
    (tmp_path / "is-a-dir").mkdir()
    target = tmp_path / where
    rc = main(["analyze", "-o", str(target), "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mixedmodels: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is-a-dir"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_directory(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    rc = main(["analyze", "-o", str(ro / "r.html"), "--quiet"])
    assert rc == 1 and list(ro.iterdir()) == []


def test_existing_output_needs_force(tmp_path, capsys):
    target = tmp_path / "r.html"
    target.write_text("keep")
    assert main(["analyze", "-o", str(target), "--quiet"]) == 1
    assert "--force" in capsys.readouterr().err
    assert target.read_text() == "keep"


def test_debug_shows_the_traceback(tmp_path, capsys):
    rc = main(
        ["--debug", "analyze", "ratpup", "--describe-by", "nope", "-o", str(tmp_path / "r.html")]
    )
    assert rc == 1
    assert "Traceback" in capsys.readouterr().err
