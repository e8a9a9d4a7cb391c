"""The bad-input catalogue of docs/errors.md, entry by entry, through the API and the CLI.

Every entry of the catalogue is one :class:`Case` below: the input files it needs, the
formula, and the exact message a user sees. Each case is checked

* through the Python API (``mm.lmer``; ``predict`` for the prediction entries): the
  exception class and its exact text, or the warning and a correct result;
* through the command line, in a subprocess (``python -m mixedmodels fit ...``): exit
  status, the exact one-line ``mixedmodels: error: ...`` on stderr, nothing on stdout,
  and no traceback (a traceback only with ``--debug``);
* against docs/errors.md: the documented message is the exact message.

The files are written in a fresh directory per case and named relatively, so messages
(which name the file) are the same here and in the docs. ``{cwd}`` in a message stands
for that directory.

The CLI runs are started together, a few at a time, once per session: most of their cost
is the Python start-up, which overlaps.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.errors import (
    DataError,
    FormulaError,
    InputFileError,
    MixedModelsWarning,
    ModelSpecificationError,
    RankDeficiencyWarning,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
CLI_WORKERS = 3


# ------------------------------------------------------------------------------ the data
def base_frame() -> pd.DataFrame:
    """A small, exactly reproducible two-level data set: 10 groups of 6 rows."""
    rng = np.random.default_rng(20240607)
    x = np.round(rng.normal(size=60), 4)
    u = np.repeat(np.round(rng.normal(size=10), 4), 6)
    y = np.round(10.0 + 2.0 * x + u + rng.normal(size=60), 4)
    return pd.DataFrame(
        {
            "y": y,
            "x": x,
            "g": np.repeat([f"g{i:02d}" for i in range(10)], 6),
            "f": np.tile(["a", "b"], 30),
        }
    )


def csv_bytes(frame: pd.DataFrame, sep: str = ",") -> bytes:
    return frame.to_csv(index=False, sep=sep, lineterminator="\n").encode("utf-8")


def with_rows(values: dict[int, float], column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        for row, value in values.items():
            out.loc[row, column] = value
        return out

    return change


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


Files = dict[str, bytes | None]  # None: a directory


@dataclass(frozen=True)
class Case:
    """One catalogue entry.

    ``outcome`` is ``"error"`` (``error`` raised with ``message``; CLI exit 1 with that
    line), ``"warning"`` (the fit succeeds with a ``warning`` whose text is ``message``;
    CLI exit 0 and the warning line) or ``"ok"`` (the fit succeeds; ``check`` inspects it).
    """

    id: str
    files: Callable[[], Files]
    data: str
    formula: str = "y ~ x + (1 | g)"
    outcome: str = "error"
    error: type[Exception] | None = None
    warning: type[Warning] | None = None
    message: str = ""
    cli: bool = True  # False: API only (no CLI command exposes it)
    predict: Callable[[mm.LinearMixedModelResult, Path], object] | None = None
    check: Callable[[object], None] | None = None
    skip_if_root: bool = False
    extra_args: tuple[str, ...] = field(default=())
    # Keyword arguments of mm.lmer, given on the command line as --KEY VALUE.
    options: dict[str, str] = field(default_factory=dict)

    def cli_options(self) -> tuple[str, ...]:
        return tuple(a for k, v in self.options.items() for a in (f"--{k}", v))


def csv_case(change: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> Callable[[], Files]:
    def files() -> Files:
        frame = base_frame()
        return {"data.csv": csv_bytes(change(frame) if change else frame)}

    return files


def scaled(frame: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return frame.assign(big=frame["x"] * 1e8, small=np.round(rng.normal(size=60), 4) * 1e-8)


def check_scaled(fit) -> None:
    """The 1e8 / 1e-8 covariates reach the optimum of the same model on unit scale."""
    frame = scaled(base_frame())
    unit = frame.assign(big=frame["big"] / 1e8, small=frame["small"] / 1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MixedModelsWarning)
        reference = mm.lmer("y ~ big + small + (1 | g)", unit)
    factors = np.array([1.0, 1e-8, 1e8])
    np.testing.assert_allclose(
        fit.fixef.to_numpy(), reference.fixef.to_numpy() * factors, rtol=1e-6
    )
    np.testing.assert_allclose(fit.se.to_numpy(), reference.se.to_numpy() * factors, rtol=1e-5)
    np.testing.assert_allclose(
        fit.varcorr["variance"].to_numpy(), reference.varcorr["variance"].to_numpy(), rtol=1e-6
    )
    # REML: log|R_X| changes by log(1e-8 * 1e8) = 0 with these two scale factors.
    assert fit.loglik == pytest.approx(reference.loglik, rel=1e-9)


def check_unbalanced(fit) -> None:
    assert fit.ngroups == {"g": 6}
    assert fit.converged
    assert np.isfinite(fit.fixef.to_numpy()).all()


def unbalanced(frame: pd.DataFrame) -> pd.DataFrame:
    groups = np.array(["big"] * 55 + ["s1", "s2", "s3", "s4", "s5"])
    return frame.assign(g=groups)


def latin1_bytes() -> Files:
    frame = base_frame()
    frame.loc[3, "g"] = "Gruppe é"
    return {"data.csv": frame.to_csv(index=False, lineterminator="\n").encode("latin-1")}


def duplicated_header() -> Files:
    text = base_frame().to_csv(index=False, lineterminator="\n")
    return {"data.csv": text.replace("y,x,g,f", "y,x,x,g", 1).encode()}


def ragged() -> Files:
    lines = base_frame().to_csv(index=False, lineterminator="\n").splitlines()
    lines[4] += ",7"
    return {"data.csv": ("\n".join(lines) + "\n").encode()}


def unreadable() -> Files:
    return {"data.csv": csv_bytes(base_frame())}


def with_time(frame: pd.DataFrame) -> pd.DataFrame:
    """Six visits 0-5 per group of ``g``, for the residual-structure entries."""
    return frame.assign(t=np.tile(np.arange(6), 10), w=1.0)


def with_repeated_time(frame: pd.DataFrame) -> pd.DataFrame:
    out = with_time(frame)
    out.loc[1, "t"] = 0  # group g00 has visit 0 twice
    return out


_CORRELATIONS = (
    "cs(1 | g) (compound symmetry, nlme's corCompSymm); ar1(t | g) (AR(1) over integer "
    "times, nlme's corAR1); car1(t | g) (continuous-time AR(1), nlme's corCAR1); us(t | g) "
    "(unstructured: corSymm + varIdent by t, SAS/mmrm UN)"
)


def predict_new_level(fit, where: Path):
    new = base_frame().iloc[:4].assign(f=["a", "b", "c", "c"])
    return fit.predict(new)


def predict_new_group(fit, where: Path):
    new = base_frame().iloc[:4].assign(g="unseen")
    return fit.predict(new), fit.fitted_marginal.iloc[:4]


def predict_parquet_schema(fit, where: Path):
    new = mm.read_data(str(where / "new.parquet"))
    return fit.predict(new)


def new_parquet() -> Files:
    frame = base_frame()
    new = frame.iloc[:5].assign(x=frame["x"].iloc[:5].map(lambda v: f"{v:.2f}"))
    return {"data.csv": csv_bytes(frame), "new.parquet": parquet_bytes(new)}


CASES: list[Case] = [
    # -- files ---------------------------------------------------------------------------
    Case(
        "empty-file",
        lambda: {"data.csv": b""},
        "data.csv",
        error=InputFileError,
        message="'data.csv' is empty (0 bytes); check that it was saved completely",
    ),
    Case(
        "blank-lines",
        lambda: {"data.csv": b"\n\n  \n"},
        "data.csv",
        error=InputFileError,
        message="'data.csv' contains only blank lines; it holds no data",
    ),
    Case(
        "header-only",
        lambda: {"data.csv": b"y,x,g,f\n"},
        "data.csv",
        error=InputFileError,
        message="'data.csv' has column names (y, x, g, f) but no data rows; "
        "add the data below the header",
    ),
    Case(
        "wrong-delimiter",
        lambda: {"data.csv": csv_bytes(base_frame(), sep="|")},
        "data.csv",
        error=DataError,
        message="column 'y' used in the formula (formula position 0) is not in the data; "
        "the data have a single column named 'y|x|g|f': the file seems to separate values "
        "with '|', which is not detected — save it with commas, tabs or semicolons "
        "between values",
    ),
    Case(
        "not-utf8",
        latin1_bytes,
        "data.csv",
        error=InputFileError,
        message="'data.csv' is not UTF-8 text: invalid byte 0xe9 at byte offset 92 (line 5); "
        "re-save the file as UTF-8 (e.g. 'CSV UTF-8' in Excel, or iconv -f latin1 -t utf-8)",
    ),
    Case(
        "utf16",
        lambda: {"data.csv": base_frame().to_csv(index=False).encode("utf-16")},
        "data.csv",
        error=InputFileError,
        message="cannot read 'data.csv' as text: it looks like UTF-16 text; re-save it as UTF-8",
    ),
    Case(
        "duplicated-columns",
        duplicated_header,
        "data.csv",
        error=InputFileError,
        message="'data.csv' has duplicated column names: 'x' is column 2 and column 3; "
        "rename them so every column name is unique",
    ),
    Case(
        "ragged-rows",
        ragged,
        "data.csv",
        error=InputFileError,
        message="'data.csv' line 5 has 5 fields but the header has 4 (comma-separated); "
        "quote values that contain a comma or fix the missing or extra separator",
    ),
    Case(
        "file-not-found",
        lambda: {},
        "data.csv",
        error=InputFileError,
        message="file not found: 'data.csv'; check the path (relative paths start at '{cwd}')",
    ),
    Case(
        "dataset-name-typo",
        lambda: {},
        "ratpu",
        error=InputFileError,
        message="no file or embedded dataset named 'ratpu' (did you mean the dataset 'ratpup'?); "
        "give a path to a data file (.csv, .tsv, .txt, .parquet, .pq, .json) or one of the "
        "embedded datasets: ratpup, sleepstudy, Dyestuff, Dyestuff2, Penicillin, Pastes, "
        "cake, Orthodont, cbpp, grouseticks, VerbAgg, Contraception",
    ),
    Case(
        "directory",
        lambda: {"data.csv": None},
        "data.csv",
        error=InputFileError,
        message="'data.csv' is a directory, not a data file; give the path of a data file "
        "(.csv, .tsv, .txt, .parquet, .pq, .json)",
    ),
    Case(
        "unreadable",
        unreadable,
        "data.csv",
        error=InputFileError,
        message="permission denied reading 'data.csv'; make it readable (chmod u+r 'data.csv') "
        "or copy it somewhere you can read",
        skip_if_root=True,
    ),
    Case(
        "unsupported-type",
        lambda: {"data.xlsx": b"PK\x03\x04not really a workbook"},
        "data.xlsx",
        error=InputFileError,
        message="cannot read 'data.xlsx': unsupported file type ('.xlsx'); use one of .csv, "
        ".tsv, .txt, .parquet, .pq, .json (export spreadsheets as CSV UTF-8)",
    ),
    Case(
        "wrong-format",
        lambda: {"data.csv": b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xff\xfe"},
        "data.csv",
        error=InputFileError,
        message="cannot read 'data.csv' as text: it looks like an Excel workbook or zip "
        "archive; export the sheet as CSV (UTF-8)",
    ),
    Case(
        "damaged-parquet",
        lambda: {"data.parquet": parquet_bytes(base_frame())[:-40]},
        "data.parquet",
        error=InputFileError,
        message="'data.parquet' is not a readable Parquet file (Parquet magic bytes not found "
        "in footer. Either the file is corrupted or this is not a parquet file.); check that "
        "it was written completely, or export the data again",
    ),
    Case(
        "parquet-schema-type",
        lambda: {"data.parquet": parquet_bytes(base_frame().assign(y=lambda d: d["y"].map(str)))},
        "data.parquet",
        error=DataError,
        message="the response 'y' must be numeric, but its dtype is str; convert it with "
        "pandas.to_numeric or choose another column",
    ),
    Case(
        "parquet-schema-columns",
        lambda: {"data.parquet": parquet_bytes(base_frame().rename(columns={"g": "group"}))},
        "data.parquet",
        error=DataError,
        message="column 'g' used in the formula (formula position 13) is not in the data; "
        "the data have the columns 'y', 'x', 'group', 'f'",
    ),
    Case(
        "parquet-schema-predict",
        new_parquet,
        "data.csv",
        error=DataError,
        message="column 'x' is not numeric (dtype str) but is used in the numeric expression "
        "x; convert it or use it as a factor",
        cli=False,
        predict=predict_parquet_schema,
    ),
    # -- formulas ------------------------------------------------------------------------
    Case(
        "unknown-column",
        csv_case(),
        "data.csv",
        formula="y ~ x + litsize + (1 | g)",
        error=DataError,
        message="column 'litsize' used in the formula (formula position 8) is not in the "
        "data; the data have the columns 'y', 'x', 'g', 'f'",
    ),
    Case(
        "formula-syntax",
        csv_case(),
        "data.csv",
        formula="y ~ x + (1 | g",
        error=FormulaError,
        message="unbalanced parenthesis: this '(' is never closed; add a ')' "
        "(at position 8: y ~ x + <HERE>(1 | g)",
    ),
    Case(
        "formula-code",
        csv_case(),
        "data.csv",
        formula="y ~ __import__('os').system('touch pwned') + (1 | g)",
        error=FormulaError,
        message="names with double underscores such as '__import__' are not allowed "
        "(formulas never run code); rename the column (at position 4: y ~ "
        "<HERE>__import__('os').system('touch pwned') + (1 | g))",
    ),
    Case(
        "grouping-nested-in-itself",
        csv_case(),
        "data.csv",
        formula="y ~ x + (1 | g/g)",
        error=FormulaError,
        message="grouping factor 'g' is nested in itself; each factor may appear once in "
        "a/b/..., e.g. write (1 | g) instead of (1 | g/g) "
        "(at position 15: y ~ x + (1 | g/<HERE>g))",
    ),
    # -- the response --------------------------------------------------------------------
    Case(
        "response-not-numeric",
        csv_case(),
        "data.csv",
        formula="f ~ x + (1 | g)",
        error=DataError,
        message="the response 'f' must be numeric, but its dtype is str; convert it with "
        "pandas.to_numeric or choose another column",
    ),
    Case(
        "response-constant",
        csv_case(lambda d: d.assign(y=3.5)),
        "data.csv",
        error=DataError,
        message="the response 'y' is constant (every value is 3.5 in the 60 rows used), so "
        "there is no variation to model; check that the formula uses the right column",
    ),
    Case(
        "response-cbind-in-lmm",
        csv_case(lambda d: d.assign(s=(d["y"] > 10).astype(int) + 1, n=3)),
        "data.csv",
        formula="cbind(s, n - s) ~ x + (1 | g)",
        error=ModelSpecificationError,
        message="cbind(...) responses are binomial counts: fit them with "
        "mm.glmer(formula, data, family='binomial')",
    ),
    Case(
        "response-all-missing",
        csv_case(lambda d: d.assign(y=np.nan)),
        "data.csv",
        error=DataError,
        message="no complete rows: column 'y' is missing in all rows",
    ),
    Case(
        "empty-after-missing",
        csv_case(
            lambda d: d.assign(
                y=d["y"].where(np.arange(60) % 2 == 0), x=d["x"].where(np.arange(60) % 2 == 1)
            )
        ),
        "data.csv",
        error=DataError,
        message="no complete rows: every row has a missing value in at least one of the "
        "columns y, x, g; fill in or drop some of them",
    ),
    Case(
        "infinite-response",
        csv_case(with_rows({7: np.inf}, "y")),
        "data.csv",
        error=DataError,
        message="column 'y' has 1 infinite value(s); replace or drop those rows",
    ),
    Case(
        "infinite-covariate",
        csv_case(with_rows({3: -np.inf, 9: np.inf}, "x")),
        "data.csv",
        error=DataError,
        message="column 'x' has 2 infinite value(s); replace or drop those rows",
    ),
    Case(
        "non-finite-transform",
        csv_case(),
        "data.csv",
        formula="y ~ log(x) + (1 | g)",
        error=DataError,
        message="log(x): 31 row(s) have non-positive values of x; remove those rows or use a "
        "shifted transform such as log(x + 1)",
    ),
    # -- factors and grouping factors ----------------------------------------------------
    Case(
        "factor-one-level",
        csv_case(lambda d: d.assign(f="a")),
        "data.csv",
        formula="y ~ x + f + (1 | g)",
        error=DataError,
        message="factor f has only one level ('a') in the rows used; remove it from the formula",
    ),
    Case(
        "grouping-one-level",
        csv_case(lambda d: d.assign(g="g00")),
        "data.csv",
        error=DataError,
        message="grouping factor 'g' has only one level ('g00') in the rows used, so (1 | g) "
        "cannot be estimated; remove the term",
    ),
    Case(
        "grouping-one-row-per-level",
        csv_case(lambda d: d.assign(g=[f"r{i}" for i in range(60)])),
        "data.csv",
        error=DataError,
        message="number of levels of each grouping factor must be < number of observations: "
        "'g' has 60 levels for 60 observations; every row is its own group, so the term is "
        "confounded with the residual — remove it",
    ),
    Case(
        "more-random-effects-than-data",
        csv_case(lambda d: d.assign(z=np.round(np.cos(np.arange(60.0)), 4))),
        "data.csv",
        formula="y ~ x + (1 + x + z | f:g)",
        error=ModelSpecificationError,
        message="number of observations (60) <= number of random effects (60) for term "
        "(1 + x + z | f:g); the random-effects parameters and the residual variance are "
        "probably unidentifiable — simplify the term",
    ),
    Case(
        "more-coefficients-than-data",
        lambda: {
            "data.csv": csv_bytes(base_frame().iloc[[0, 1, 2, 6, 7, 8]].assign(f=list("abcdef")))
        },
        "data.csv",
        formula="y ~ f + (1 | g)",
        error=ModelSpecificationError,
        message="6 observations but 6 fixed-effect coefficients: the model cannot be "
        "estimated; use fewer fixed-effect terms",
    ),
    Case(
        "extremely-unbalanced-groups",
        csv_case(unbalanced),
        "data.csv",
        outcome="ok",
        check=check_unbalanced,
    ),
    # -- covariates ----------------------------------------------------------------------
    Case(
        "collinear-covariates",
        csv_case(lambda d: d.assign(x2=2.0 * d["x"] - 1.0)),
        "data.csv",
        formula="y ~ x + x2 + (1 | g)",
        outcome="warning",
        warning=RankDeficiencyWarning,
        message="fixed-effect model matrix is rank deficient so dropping 1 column: x2",
    ),
    Case(
        "badly-scaled-covariates",
        csv_case(scaled),
        "data.csv",
        formula="y ~ big + small + (1 | g)",
        outcome="ok",
        check=check_scaled,
    ),
    # -- residual structures ---------------------------------------------------------------
    Case(
        "correlation-unknown",
        csv_case(with_time),
        "data.csv",
        options={"correlation": "ar2(t | g)"},
        error=ModelSpecificationError,
        message=f"unknown correlation structure 'ar2' in 'ar2(t | g)'; available: {_CORRELATIONS}",
    ),
    Case(
        "correlation-code",
        csv_case(with_time),
        "data.csv",
        options={"correlation": "ar1(__import__('os') | g)"},
        error=ModelSpecificationError,
        message="cannot read correlation spec \"ar1(__import__('os') | g)\": write "
        f"KIND(TIME | GROUP), one of: {_CORRELATIONS}",
    ),
    Case(
        "correlation-not-nested",
        csv_case(with_time),
        "data.csv",
        options={"correlation": "ar1(t | f)"},
        error=DataError,
        message="ar1(t | f): groups of 'f' cross levels of the random-effects factor 'g'; the "
        "correlation groups must be nested in every grouping factor (use the innermost "
        "factor, e.g. ar1(... | g))",
    ),
    Case(
        "ar1-non-integer-time",
        csv_case(with_time),
        "data.csv",
        options={"correlation": "ar1(x | g)"},
        error=DataError,
        message="ar1: column 'x' has non-integer times; AR(1) needs integer occasions (gaps "
        "allowed): use car1(...) for continuous time",
    ),
    Case(
        "ar1-text-time",
        csv_case(with_time),
        "data.csv",
        options={"correlation": "ar1(f | g)"},
        error=DataError,
        message="ar1: column 'f' is not numeric; give a numeric time (e.g. a visit number), "
        "or use us(...) for visits as levels",
    ),
    Case(
        "correlation-repeated-time",
        csv_case(with_repeated_time),
        "data.csv",
        options={"correlation": "ar1(t | g)"},
        error=DataError,
        message="ar1(t | g): time 0 occurs twice in level 'g00' of 'g'; each time may occur "
        "once per group (check for duplicated rows or use a finer time column)",
    ),
    Case(
        "weights-with-structure",
        csv_case(with_time),
        "data.csv",
        options={"correlation": "ar1(t | g)", "weights": "w"},
        error=ModelSpecificationError,
        message="prior weights cannot be combined with a residual correlation or variance "
        "function yet; drop weights= or the structure",
    ),
    Case(
        "variance-unknown",
        csv_case(with_time),
        "data.csv",
        options={"variance": "pow(t)"},
        error=ModelSpecificationError,
        message="unknown variance function 'pow' in 'pow(t)'; available: power(fitted) or "
        "power(x) (nlme's varPower); exp(x) (nlme's varExp); ident(x) (nlme's varIdent)",
    ),
    Case(
        "variance-power-zero",
        csv_case(with_time),
        "data.csv",
        options={"variance": "power(t)"},
        error=DataError,
        message="power(t): column 't' contains 0, where |x|^delta is 0 or infinite; shift "
        "the covariate or use exp() instead",
    ),
    # -- prediction ----------------------------------------------------------------------
    Case(
        "predict-new-factor-level",
        csv_case(),
        "data.csv",
        formula="y ~ x + f + (1 | g)",
        error=DataError,
        message="column 'f' has level(s) ['c'] that were not in the data the model was "
        "fitted to; known levels: a, b",
        cli=False,
        predict=predict_new_level,
    ),
    Case(
        "predict-new-group",
        csv_case(),
        "data.csv",
        outcome="ok",
        cli=False,
        predict=predict_new_group,
        check=lambda pair: np.testing.assert_allclose(pair[0], pair[1], rtol=1e-12),
    ),
]

BY_ID = {case.id: case for case in CASES}


def test_case_ids_are_unique():
    assert len(BY_ID) == len(CASES)


# ------------------------------------------------------------------------------ helpers
def materialise(case: Case, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    for name, content in case.files().items():
        path = where / name
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
    if case.id == "unreadable":
        os.chmod(where / "data.csv", 0)
    return where


def expected_message(case: Case, where: Path) -> str:
    return case.message.replace("{cwd}", str(where))


def cli_command(case: Case, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mixedmodels",
        "fit",
        case.data,
        "--formula",
        case.formula,
        "--json",
        *case.extra_args,
        *case.cli_options(),
        *extra,
    ]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OPENBLAS_NUM_THREADS"] = "1"
    env.pop("PYTHONWARNINGS", None)
    return env


def run_cli(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def skip_unusable(case: Case) -> None:
    if case.skip_if_root and IS_ROOT:
        pytest.skip("root can read a file without read permission")


# ------------------------------------------------------------------------------ the API
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_api(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    skip_unusable(case)
    where = materialise(case, tmp_path)
    monkeypatch.chdir(where)

    def run():
        if case.predict is None:
            return mm.lmer(case.formula, case.data, **case.options)
        with warnings.catch_warnings():
            warnings.simplefilter("error", MixedModelsWarning)
            fit = mm.lmer(case.formula, case.data, **case.options)
        return case.predict(fit, where)

    if case.outcome == "error":
        assert case.error is not None
        with pytest.raises(case.error) as info:
            run()
        assert str(info.value) == expected_message(case, where)
        if isinstance(info.value, FormulaError):
            assert isinstance(info.value.position, int)
    elif case.outcome == "warning":
        assert case.warning is not None
        with pytest.warns(case.warning) as record:
            result = run()
        assert [str(w.message) for w in record if w.category is case.warning] == [case.message]
        assert np.isfinite(result.fixef.to_numpy()).all()
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", MixedModelsWarning)
            result = run()
        assert case.check is not None
        case.check(result)


def test_formula_code_was_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    case = BY_ID["formula-code"]
    monkeypatch.chdir(materialise(case, tmp_path))
    with pytest.raises(FormulaError):
        mm.lmer(case.formula, case.data)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------ the CLI
CLI_CASES = [c for c in CASES if c.cli and not (c.skip_if_root and IS_ROOT)]


def snapshot(where: Path) -> dict[str, tuple[bytes, int, int]]:
    """Contents, modification time and mode of every file in a directory."""
    out = {}
    for path in sorted(where.rglob("*")):
        if path.is_file():
            info = path.stat()
            content = path.read_bytes() if os.access(path, os.R_OK) else b""
            out[str(path.relative_to(where))] = (content, info.st_mtime_ns, info.st_mode)
    return out


@pytest.fixture(scope="session")
def cli_results(tmp_path_factory: pytest.TempPathFactory):
    """Run every CLI case once, a few processes at a time.

    Returns id -> (directory, result, files before the run).
    """
    base = tmp_path_factory.mktemp("catalogue")
    jobs = {}
    for case in CLI_CASES:
        where = materialise(case, base / case.id)
        jobs[case.id] = (where, cli_command(case), snapshot(where))
    with ThreadPoolExecutor(max_workers=CLI_WORKERS) as pool:
        futures = {key: pool.submit(run_cli, job[1], job[0]) for key, job in jobs.items()}
        return {key: (jobs[key][0], f.result(), jobs[key][2]) for key, f in futures.items()}


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_cli(case: Case, cli_results):
    where, result, before = cli_results[case.id]
    # Inputs are only read: same bytes, same modification time, no new files.
    assert snapshot(where) == before
    assert "Traceback" not in result.stderr, result.stderr
    if case.outcome == "error":
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert result.stderr == f"mixedmodels: error: {expected_message(case, where)}\n"
        return
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["nobs"] > 0
    if case.outcome == "warning":
        assert f"mixedmodels: warning: {case.message}\n" in result.stderr
    else:
        assert result.stderr == ""
    if case.id == "badly-scaled-covariates":
        fixef = {row["term"]: row["estimate"] for row in payload["fixef"]}
        assert abs(fixef["big"]) < 1e-6 < abs(fixef["small"])


def test_cli_formula_code_was_not_run(cli_results):
    where, _, _ = cli_results["formula-code"]
    assert not (where / "pwned").exists()


@pytest.mark.parametrize("case_id", ["formula-syntax", "not-utf8", "response-constant"])
def test_cli_debug_shows_the_traceback(case_id: str, tmp_path: Path):
    case = BY_ID[case_id]
    where = materialise(case, tmp_path)
    result = run_cli(cli_command(case, "--debug"), where)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.endswith(f"mixedmodels: error: {expected_message(case, where)}\n")


# ------------------------------------------------------------------------------ the docs
def documented_entries() -> dict[str, str]:
    """Map each ``### `id` `` heading of docs/errors.md to the text of its section."""
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^### `([a-z0-9-]+)`.*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_case_is_documented_and_every_entry_tested():
    assert list(documented_entries()) == [case.id for case in CASES]


@pytest.mark.parametrize("case", [c for c in CASES if c.message], ids=lambda c: c.id)
def test_documented_message_is_the_exact_message(case: Case):
    section = documented_entries()[case.id]
    blocks = re.findall(r"^```text\n(.*?)\n```$", section, flags=re.MULTILINE | re.DOTALL)
    assert case.message.replace("{cwd}", "<cwd>") in blocks


# ------------------------------------------------------------------------------ outputs
def test_outputs_are_atomic_never_clobbered_and_inputs_untouched(tmp_path: Path):
    where = materialise(BY_ID["collinear-covariates"], tmp_path)
    data = where / "data.csv"
    data.chmod(0o444)  # a read-only input is enough
    case = Case("outputs", lambda: {}, "data.csv", formula="y ~ x + (1 | g)")
    out = where / "fit.json"

    first = run_cli(cli_command(case, "-o", "fit.json"), where)
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    written = out.read_bytes()
    assert json.loads(written)["nobs"] == 60
    before = snapshot(where)

    with ThreadPoolExecutor(max_workers=CLI_WORKERS) as pool:
        again = pool.submit(run_cli, cli_command(case, "-o", "fit.json"), where)
        onto_input = pool.submit(run_cli, cli_command(case, "-o", "data.csv", "--force"), where)
        bad_case = Case("bad", lambda: {}, "data.csv", formula="y ~ x + (1 | g")
        failing = pool.submit(run_cli, cli_command(bad_case, "-o", "never.json"), where)
    again, onto_input, failing = again.result(), onto_input.result(), failing.result()

    assert again.returncode == 1
    assert again.stderr == (
        "mixedmodels: error: 'fit.json' already exists; use --force (force=True) to overwrite it\n"
    )
    assert onto_input.returncode == 1
    assert onto_input.stderr == (
        "mixedmodels: error: refusing to write the output to 'data.csv': it is the input "
        "data file; choose another output path\n"
    )
    assert failing.returncode == 1
    assert "unbalanced parenthesis" in failing.stderr
    # Nothing changed: no output from the failed run, no temporary files left, input intact.
    assert snapshot(where) == before

    out.write_text("old")
    forced = run_cli(cli_command(case, "-o", "fit.json", "--force"), where)
    assert forced.returncode == 0, forced.stderr
    assert out.read_bytes() == written
    assert sorted(p.name for p in where.iterdir()) == ["data.csv", "fit.json"]
    assert snapshot(where)["data.csv"] == before["data.csv"]
