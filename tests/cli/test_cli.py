"""The mixedmodels command: plumbing tested with a fake model, end to end with subprocesses.

The fake stands in for ``mixedmodels.lmer`` so that argument handling, output,
warnings, errors and exit codes are tested independently of the model code.
The tests at the end use the real ``lmer`` and R's reference numbers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import mixedmodels
from mixedmodels import cli
from mixedmodels.datasets import dataset_names

SRC = Path(__file__).resolve().parents[2] / "src"

# One source for the fake, used in-process (exec) and in subprocesses (-c).
FAKE_SOURCE = """
import math
import warnings

import numpy as np

from mixedmodels.errors import FormulaError, SingularFitWarning

CALLS = []


class FakeSummary:
    def __str__(self):
        return "Linear mixed model fit by FAKE\\nFixed effects: (Intercept) 1.0\\n"


class FakeFit:
    def __init__(self, formula, data, reml):
        self.formula, self.data, self.reml = formula, data, reml

    def summary(self):
        return FakeSummary()

    def to_dict(self):
        return {
            "formula": self.formula, "reml": self.reml, "nobs": int(len(self.data)),
            "ngroups": {"litter": np.int64(27)},
            "fixef": [{"term": "(Intercept)", "estimate": np.float64(1.0), "se": 0.5,
                       "df": math.inf, "t": 2.0, "p": 0.05}],
            "varcorr": [{"group": "Residual", "variance": 1.0, "sd": 1.0}],
            "sigma": 1.0, "loglik": -10.0, "deviance": 20.0,
            "reml_criterion": float("nan"), "aic": 26.0, "bic": 30.0,
            "theta": np.array([0.5]), "singular": np.bool_(False), "converged": True,
            "dropped_rows": 0,
        }


def lmer(formula, data, *, reml=True, **options):
    CALLS.append((formula, reml))
    if "syntax error" in formula:
        raise FormulaError("unexpected ')' in formula", formula, 3)
    if "crash" in formula:
        raise RuntimeError("kaboom")
    if "singular" in formula:
        warnings.warn("boundary (singular) fit: see help('isSingular')", SingularFitWarning,
                      stacklevel=2)
    if "numpy" in formula:
        warnings.warn("overflow encountered", RuntimeWarning, stacklevel=2)
    return FakeFit(formula, data, reml)


def install():
    import mixedmodels
    mixedmodels.lmer = lmer
"""

FORMULA = "weight ~ treatment + sex + litsize + (1|litter)"
CONTRACT_KEYS = {
    "formula",
    "reml",
    "nobs",
    "ngroups",
    "fixef",
    "varcorr",
    "sigma",
    "loglik",
    "deviance",
    "reml_criterion",
    "aic",
    "bic",
    "theta",
    "singular",
    "converged",
    "dropped_rows",
}


@pytest.fixture
def fake(monkeypatch):
    module = types.ModuleType("fake_lmer")
    exec(FAKE_SOURCE, module.__dict__)
    monkeypatch.setattr(mixedmodels, "lmer", module.lmer, raising=False)
    return module


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ in-process plumbing


def test_fit_prints_summary(fake, capsys):
    code, out, err = run(["fit", "ratpup", "--formula", FORMULA], capsys)
    assert (code, err) == (0, "")
    assert out == "Linear mixed model fit by FAKE\nFixed effects: (Intercept) 1.0\n"
    assert fake.CALLS == [(FORMULA, True)]


def test_fit_ml_passes_reml_false(fake, capsys):
    code, _, _ = run(
        ["fit", "sleepstudy", "-f", "Reaction ~ Days + (Days|Subject)", "--ml"], capsys
    )
    assert code == 0
    assert fake.CALLS == [("Reaction ~ Days + (Days|Subject)", False)]


def test_fit_json_is_strict_one_line_json(fake, capsys):
    code, out, err = run(["fit", "ratpup", "--formula", FORMULA, "--json"], capsys)
    assert (code, err) == (0, "")
    assert out.endswith("\n") and out.count("\n") == 1
    # Strict JSON: NaN/Infinity would make this fail.
    result = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert set(result) == CONTRACT_KEYS
    assert result["nobs"] == 322
    assert result["ngroups"] == {"litter": 27}
    assert result["reml_criterion"] is None
    assert result["fixef"][0]["df"] is None
    assert result["theta"] == [0.5]
    assert result["singular"] is False


def test_fit_reads_files(fake, capsys, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y,g\n1,a\n2,b\n")
    code, out, _ = run(["fit", str(path), "-f", "y ~ 1 + (1|g)", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["nobs"] == 2


def test_output_file_written_atomically(fake, capsys, tmp_path):
    target = tmp_path / "fit.json"
    code, out, err = run(["fit", "ratpup", "-f", FORMULA, "--json", "-o", str(target)], capsys)
    assert (code, out, err) == (0, "", "")
    assert json.loads(target.read_text())["formula"] == FORMULA
    assert [p.name for p in tmp_path.iterdir()] == ["fit.json"]


def test_output_file_not_overwritten_without_force(fake, capsys, tmp_path):
    target = tmp_path / "fit.txt"
    target.write_text("keep me")
    code, out, err = run(["fit", "ratpup", "-f", FORMULA, "-o", str(target)], capsys)
    assert code == 1
    assert out == ""
    assert err.startswith("mixedmodels: error: ") and "already exists" in err
    assert "--force" in err
    assert target.read_text() == "keep me"

    code, _, err = run(["fit", "ratpup", "-f", FORMULA, "-o", str(target), "--force"], capsys)
    assert (code, err) == (0, "")
    assert target.read_text().startswith("Linear mixed model fit by FAKE")


def test_output_to_missing_directory(fake, capsys, tmp_path):
    code, _, err = run(["fit", "ratpup", "-f", FORMULA, "-o", str(tmp_path / "no" / "x")], capsys)
    assert code == 1
    assert "does not exist" in err


def test_package_warnings_become_one_line_each(fake, capsys):
    code, out, err = run(["fit", "ratpup", "-f", "y ~ singular + (1|g)"], capsys)
    assert code == 0
    assert out.startswith("Linear mixed model fit by FAKE")
    assert err == "mixedmodels: warning: boundary (singular) fit: see help('isSingular')\n"


@pytest.mark.filterwarnings("default::RuntimeWarning")  # the CLI keeps Python's filters
def test_other_warnings_name_their_category(fake, capsys):
    code, _, err = run(["fit", "ratpup", "-f", "y ~ numpy + (1|g)"], capsys)
    assert code == 0
    assert err == "mixedmodels: warning: RuntimeWarning: overflow encountered\n"


def test_model_error_one_line_exit_1_no_traceback(fake, capsys):
    code, out, err = run(["fit", "ratpup", "-f", "y ~ syntax error)"], capsys)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("mixedmodels: error: unexpected ')' in formula")
    assert "Traceback" not in err


def test_debug_shows_traceback(fake, capsys):
    code, _, err = run(["fit", "ratpup", "-f", "y ~ syntax error)", "--debug"], capsys)
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert err.rstrip("\n").splitlines()[-1].startswith("mixedmodels: error: unexpected")


def test_debug_before_the_command(fake, capsys):
    code, _, err = run(["--debug", "fit", "ratpup", "-f", "y ~ syntax error)"], capsys)
    assert code == 1
    assert "Traceback" in err


def test_internal_error_exit_3(fake, capsys):
    code, _, err = run(["fit", "ratpup", "-f", "y ~ crash"], capsys)
    assert code == 3
    assert err.count("\n") == 1
    assert "internal error: RuntimeError: kaboom" in err
    assert "--debug" in err
    assert "Traceback" not in err


def test_unknown_dataset_exit_1(fake, capsys):
    code, out, err = run(["fit", "nosuchdata", "-f", FORMULA], capsys)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "nosuchdata" in err and "ratpup" in err
    assert fake.CALLS == []


def test_datasets_table(capsys):
    code, out, err = run(["datasets"], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "rows", "cols"]
    for name in dataset_names():
        assert any(line.startswith(name + " ") for line in lines)
    assert "West, Welch & Galecki (2014)" in out
    assert max(len(line) for line in lines) <= 120


def test_datasets_json(capsys):
    code, out, _ = run(["datasets", "--json"], capsys)
    assert code == 0
    records = json.loads(out)
    assert [r["name"] for r in records] == list(dataset_names())
    assert records[0]["rows"] == 322


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "choose a command: datasets, fit"),
        (["fit", "ratpup"], "required: -f/--formula"),
        (["fit", "-f", FORMULA], "required: DATA"),
        (["fit", "ratpup", "-f", FORMULA, "--bogus"], "unrecognized arguments: --bogus"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2_on_one_line(argv, fragment, capsys):
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith("mixedmodels: error: ")
    assert fragment in err
    assert "--help" in err


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.startswith("mixedmodels ")


def test_help(capsys):
    code, out, _ = run(["fit", "--help"], capsys)
    assert code == 0
    assert "--formula" in out and "--json" in out and "--ml" in out


def test_jsonable_rejects_unknown_objects():
    with pytest.raises(TypeError, match="as JSON"):
        cli._to_json({"x": object()})


def test_jsonable_maps_non_finite_to_null():
    assert json.loads(cli._to_json([math.nan, math.inf, -math.inf, 1.5])) == [None, None, None, 1.5]


# ------------------------------------------------------------------ subprocess, end to end


def env() -> dict[str, str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), environ.get("PYTHONPATH")]))
    return environ


def cli_run(*args: str, fake_model: bool = False, tmp_path: Path | None = None):
    if fake_model:
        assert tmp_path is not None
        (tmp_path / "fake_lmer.py").write_text(FAKE_SOURCE)
        code = (
            f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import fake_lmer; "
            "fake_lmer.install(); from mixedmodels.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        command = [sys.executable, "-c", code, *args]
    else:
        command = [sys.executable, "-m", "mixedmodels.cli", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=env(), timeout=300, stdin=subprocess.DEVNULL
    )


def assert_one_line_error(result, code: int) -> str:
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mixedmodels: error: ")
    return lines[0]


def test_e2e_unknown_dataset():
    line = assert_one_line_error(cli_run("fit", "nosuch", "-f", FORMULA), 1)
    assert "no file or embedded dataset named 'nosuch'" in line


def test_e2e_missing_file(tmp_path):
    line = assert_one_line_error(cli_run("fit", str(tmp_path / "gone.csv"), "-f", FORMULA), 1)
    assert "file not found" in line


def test_e2e_unreadable_file(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"weight,litter\n1,M\xfcnchen\n")
    line = assert_one_line_error(cli_run("fit", str(path), "-f", FORMULA), 1)
    assert "not UTF-8" in line and "byte offset 17" in line


def test_e2e_directory(tmp_path):
    line = assert_one_line_error(cli_run("fit", str(tmp_path), "-f", FORMULA), 1)
    assert "is a directory" in line


def test_e2e_wrong_format(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK\x03\x04")
    line = assert_one_line_error(cli_run("fit", str(path), "-f", FORMULA), 1)
    assert "unsupported file type ('.xlsx')" in line


def test_e2e_corrupted_parquet(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1 this is not really parquet PAR1")
    line = assert_one_line_error(cli_run("fit", str(path), "-f", FORMULA), 1)
    assert "not a readable Parquet file" in line


def test_e2e_usage_error_exit_2():
    line = assert_one_line_error(cli_run("fit", "ratpup"), 2)
    assert "--formula" in line


def test_e2e_json_with_fake_model(tmp_path):
    result = cli_run("fit", "ratpup", "-f", FORMULA, "--json", fake_model=True, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert set(json.loads(result.stdout)) == CONTRACT_KEYS


def test_e2e_warning_line_with_fake_model(tmp_path):
    result = cli_run("fit", "ratpup", "-f", "y ~ singular", fake_model=True, tmp_path=tmp_path)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "mixedmodels: warning: boundary (singular) fit: see help('isSingular')"
    ]


def test_e2e_traceback_only_with_debug(tmp_path):
    args = ("fit", "ratpup", "-f", "y ~ syntax error)")
    quiet = cli_run(*args, fake_model=True, tmp_path=tmp_path)
    assert_one_line_error(quiet, 1)
    loud = cli_run(*args, "--debug", fake_model=True, tmp_path=tmp_path)
    assert loud.returncode == 1
    assert "Traceback (most recent call last)" in loud.stderr
    assert "FormulaError" in loud.stderr


def test_e2e_internal_error_exit_3(tmp_path):
    result = cli_run("fit", "ratpup", "-f", "crash", fake_model=True, tmp_path=tmp_path)
    assert_one_line_error(result, 3)


def test_e2e_datasets_and_version():
    listed = cli_run("datasets")
    assert listed.returncode == 0 and listed.stderr == ""
    assert listed.stdout.startswith("name")
    version = cli_run("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("mixedmodels ")


def test_import_is_light():
    code = (
        "import sys, mixedmodels.cli; "
        "print(','.join(m for m in ('matplotlib', 'pyarrow') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# ------------------------------------------------------------------ with the real model

# R 4.2.2, lme4 1.1.31: ../shared/reference/ratpup_b_reml.json (REML fit of
# weight ~ treatment + sex + litsize + (1|litter) on the embedded ratpup.csv,
# treatment contrasts with sorted levels). Agreement to 1e-4 relative is far
# looser than the reference's accuracy; the model tests check the digits.
RATPUP_B_REML_FIXEF = {
    "(Intercept)": 7.95079216925385,
    "treatmentHigh": -0.858698274663364,
    "treatmentLow": -0.428501831879072,
}


def test_real_ratpup_json_matches_lme4():
    result = cli_run("fit", "ratpup", "--formula", FORMULA, "--json")
    assert result.returncode == 0, result.stderr
    fit = json.loads(result.stdout)
    assert CONTRACT_KEYS <= set(fit)
    assert fit["formula"] == FORMULA
    assert fit["reml"] is True
    assert fit["nobs"] == 322
    assert fit["ngroups"] == {"litter": 27}
    assert fit["dropped_rows"] == 0
    estimates = {row["term"]: row["estimate"] for row in fit["fixef"]}
    for term, expected in RATPUP_B_REML_FIXEF.items():
        assert estimates[term] == pytest.approx(expected, rel=1e-4)


def test_real_ratpup_summary_and_ml():
    text = cli_run("fit", "ratpup", "--formula", FORMULA)
    assert text.returncode == 0, text.stderr
    assert "treatmentHigh" in text.stdout
    ml = cli_run("fit", "ratpup", "--formula", FORMULA, "--ml", "--json")
    assert ml.returncode == 0, ml.stderr
    assert json.loads(ml.stdout)["reml"] is False


def test_real_unknown_column_is_one_line_error():
    result = cli_run("fit", "ratpup", "--formula", "weight ~ nosuchcolumn + (1|litter)")
    line = assert_one_line_error(result, 1)
    assert "nosuchcolumn" in line


def test_real_console_script_if_installed():
    import shutil

    script = shutil.which("mixedmodels")
    if script is None:
        pytest.skip("the mixedmodels console script is not installed")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert result.stdout.startswith("mixedmodels ")
