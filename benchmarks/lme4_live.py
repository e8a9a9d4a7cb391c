"""The lme4 column: timed live through Rscript when R and lme4 are installed, otherwise
read from ``benchmarks/lme4_timings.md`` (numbers copied from the project's R run).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import supervise
from models import Model, load_frame

HERE = Path(__file__).resolve().parent
TIMINGS_FILE = HERE / "lme4_timings.md"


def rscript_works() -> bool:
    """True when ``Rscript -e 'library(lme4)'`` runs cleanly."""
    if shutil.which("Rscript") is None:
        return False
    try:
        done = subprocess.run(
            ["Rscript", "-e", "suppressMessages(library(lme4))"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def from_file() -> dict[str, dict[str, Any]]:
    """model key -> {seconds, reps, criterion, source} from the copied table."""
    rows: dict[str, dict[str, Any]] = {}
    for line in TIMINGS_FILE.read_text(encoding="utf-8").splitlines():
        # Cells are separated by "|" not preceded by a backslash (formulas escape theirs).
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 7 or not re.fullmatch(r"[0-9.]+", cells[3]):
            continue
        rows[cells[0]] = {
            "n": int(cells[2]),
            "seconds": float(cells[3]),
            "reps": int(cells[4]),
            "criterion": float(cells[6]),
            "source": "benchmarks/lme4_timings.md",
        }
    return rows


# One R function per run: fits every model once as a warm-up, then times each one.
# Output is one line per model, "RESULT<TAB>key<TAB>median seconds<TAB>reps<TAB>REMLcrit",
# so that no R package beyond lme4 is needed to report back.
_R_TEMPLATE = r"""
suppressMessages(library(lme4))
# factors as character: a column of empty cells would otherwise be read as logical NA
jobs <- read.csv("{jobs}", stringsAsFactors = FALSE, colClasses = c(factors = "character"))
for (i in seq_len(nrow(jobs))) {{
  d <- read.csv(jobs$csv[i], stringsAsFactors = FALSE)
  fac <- strsplit(jobs$factors[i], ",", fixed = TRUE)[[1]]
  for (v in fac) d[[v]] <- factor(as.character(d[[v]]))
  for (v in names(d)) if (is.character(d[[v]])) d[[v]] <- factor(d[[v]])
  f <- as.formula(jobs$formula[i])
  fit <- lmer(f, data = d, REML = TRUE)
  reps <- jobs$reps[i]
  times <- numeric(reps)
  for (r in seq_len(reps)) {{
    t0 <- proc.time()[["elapsed"]]
    fit <- lmer(f, data = d, REML = TRUE)
    times[r] <- proc.time()[["elapsed"]] - t0
  }}
  cat(sprintf("RESULT\t%s\t%.9g\t%d\t%.15g\n", jobs$key[i], median(times), reps,
              unname(REMLcrit(fit))))
}}
cat(sprintf("VERSION\t%s\t%s\n", R.version.string, as.character(packageVersion("lme4"))))
"""


def run_live(
    models: list[Model], frames: dict[str, pd.DataFrame], reps: dict[str, int], timeout: float
) -> tuple[dict[str, dict[str, Any]], str]:
    """Time lme4 on the very DataFrames the Python contestants fit.

    Returns (model key -> {seconds, reps, criterion, source}, R/lme4 version string).
    Note: R's ``proc.time`` has a 1 ms resolution, so millisecond fits are coarse.
    """
    rows: dict[str, dict[str, Any]] = {}
    version = ""
    with tempfile.TemporaryDirectory(prefix="mm-bench-r-") as tmp:
        jobs = []
        for model in models:
            csv = Path(tmp) / f"{model.key}.csv"
            frames[model.key].to_csv(csv, index=False)
            jobs.append(
                {
                    "key": model.key,
                    "csv": str(csv),
                    "formula": model.formula,
                    "factors": ",".join(model.factors),
                    "reps": reps[model.key],
                }
            )
        jobs_csv = Path(tmp) / "jobs.csv"
        pd.DataFrame(jobs).to_csv(jobs_csv, index=False)
        script = Path(tmp) / "bench.R"
        script.write_text(_R_TEMPLATE.format(jobs=jobs_csv), encoding="utf-8")
        done = subprocess.run(
            ["Rscript", str(script)], capture_output=True, text=True, timeout=timeout, check=False
        )
    for line in done.stdout.splitlines():
        parts = line.split("\t")
        if parts[0] == "RESULT" and len(parts) == 5:
            rows[parts[1]] = {
                "seconds": float(parts[2]),
                "reps": int(parts[3]),
                "criterion": float(parts[4]),
                "source": "Rscript (live)",
            }
        elif parts[0] == "VERSION" and len(parts) == 3:
            version = f"{parts[1]}, lme4 {parts[2]}"
    if done.returncode != 0:
        version += f" (Rscript exited {done.returncode}: {done.stderr.strip()[-300:]})"
    return rows, version


# A synthetic 1e6-row design: warm-up on the 1% version, then one timed fit, then the peak
# resident memory of this R process (VmHWM, kB) and lme4's convergence messages.
_R_SYNTHETIC = r"""
suppressMessages(library(lme4))
read <- function(path) {{
  d <- read.csv(path, stringsAsFactors = FALSE)
  for (v in names(d)) if (is.character(d[[v]])) d[[v]] <- factor(d[[v]])
  d
}}
f <- as.formula("{formula}")
small <- read("{small}")
fit <- lmer(f, data = small, REML = TRUE)
d <- read("{full}")
rm(small, fit)
invisible(gc())
cat("{started}\n")
flush(stdout())
t0 <- proc.time()[["elapsed"]]
fit <- lmer(f, data = d, REML = TRUE)
elapsed <- proc.time()[["elapsed"]] - t0
status <- readLines("/proc/self/status")
hwm <- as.numeric(gsub("[^0-9]", "", grep("^VmHWM", status, value = TRUE)))
msgs <- paste(fit@optinfo$conv$lme4$messages, collapse = "; ")
cat(sprintf("RESULT\t%s\t%.9g\t%.15g\t%.0f\t%s\n", "{key}", elapsed,
            unname(REMLcrit(fit)), hwm, msgs))
cat(sprintf("VERSION\t%s\t%s\n", R.version.string, as.character(packageVersion("lme4"))))
"""


def run_synthetic(
    model: Model, fit_timeout: float, setup_timeout: float, memory_cap_mb: float
) -> tuple[dict[str, Any], str]:
    """Time lme4 on one synthetic design in an R process of its own, under both caps.

    Returns the lme4 row ({seconds, criterion, peak_rss_mb, ...} or {status, reason}) and
    the R/lme4 version string ("" when R was stopped before printing it).
    """
    with tempfile.TemporaryDirectory(prefix="mm-bench-r-") as tmp:
        full, small = Path(tmp) / "full.csv", Path(tmp) / "small.csv"
        load_frame(model).to_csv(full, index=False)
        load_frame(model, scale=0.01).to_csv(small, index=False)
        script = Path(tmp) / "synthetic.R"
        script.write_text(
            _R_SYNTHETIC.format(
                formula=model.formula,
                small=small,
                full=full,
                key=model.key,
                started=supervise.FIT_STARTED,
            ),
            encoding="utf-8",
        )
        out = supervise.run_supervised(
            ["Rscript", str(script)],
            None,
            fit_timeout=fit_timeout,
            setup_timeout=setup_timeout,
            memory_cap_mb=memory_cap_mb,
        )
    row: dict[str, Any] = {"source": "Rscript (live)", "sampled_peak_rss_mb": out.peak_rss_mb}
    version = ""
    for line in out.stdout:
        parts = line.split("\t")
        if parts[0] == "RESULT" and len(parts) == 6:
            row.update(
                status="ok",
                seconds=float(parts[2]),
                reps=1,
                criterion=float(parts[3]),
                peak_rss_mb=float(parts[4]) / 1024.0,
                messages=parts[5],
            )
        elif parts[0] == "VERSION" and len(parts) == 3:
            version = f"{parts[1]}, lme4 {parts[2]}"
    if out.status != "exited":
        row.update(status="stopped", reason=out.reason)
    elif "seconds" not in row:
        row.update(status="failed", reason="Rscript " + out.crash_reason())
    brief = row.get("seconds", row.get("reason"))
    print(f"  lme4         {model.key}: {brief}", file=sys.stderr, flush=True)
    return row, version


FILE_SOURCE = (
    "R 4.2.2, lme4 1.1.31, Debian reference BLAS; recorded 2026-11-25 on the project's "
    "2-vCPU VM (copied into benchmarks/lme4_timings.md)"
)
