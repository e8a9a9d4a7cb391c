"""The README's set-up commands are the ones CI and the tests actually run."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIT_COMMAND = "python3 -m pip install . && mixedmodels analyze"
TEST_COMMAND = 'python3 -m pip install -e ".[test]" && python3 -m pytest -q'


def test_readme_shows_both_setup_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert FIT_COMMAND in readme
    assert TEST_COMMAND in readme


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in script.splitlines()]
    assert "set -euo pipefail" in lines
    install, run_tests = TEST_COMMAND.split(" && ")
    assert lines.index(install) < lines.index(run_tests)
