"""Repeated-measures fits (issue 15): mixedmodels against nlme (through Rscript).

Simulates subjects with 5 visits each (fixed seed; a random intercept, AR(1) residuals with
phi = 0.5 and a treatment-by-visit interaction), writes the rows to a temporary CSV, and
times the same models in both (REML, from formula and data to the fitted model; data
reading not timed): the median of ``--repeats`` fits after a warm-up. Prints a Markdown
section for docs/benchmarks.md, with the log-likelihoods each reached.

    python benchmarks/bench_repeated.py [--subjects 300 3000] [--repeats 3]

With ``--write`` the section replaces its part of docs/benchmarks.md (kept by run.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = [
    # label, our formula, correlation, variance, nlme call
    (
        "lme: (1 \\| subject) + ar1",
        "y ~ visit*trt + (1 | subject)",
        "ar1(visit | subject)",
        None,
        "lme(y ~ visit*trt, random = ~1 | subject, data = d, "
        "correlation = corAR1(form = ~visit | subject))",
    ),
    (
        "gls: ar1",
        "y ~ visit*trt",
        "ar1(visit | subject)",
        None,
        "gls(y ~ visit*trt, data = d, correlation = corAR1(form = ~visit | subject))",
    ),
    (
        "gls: cs",
        "y ~ visit*trt",
        "cs(1 | subject)",
        None,
        "gls(y ~ visit*trt, data = d, correlation = corCompSymm(form = ~1 | subject))",
    ),
    (
        "gls: us (corSymm + varIdent)",
        "y ~ visit*trt",
        "us(visit | subject)",
        None,
        "gls(y ~ visit*trt, data = d, correlation = corSymm(form = ~visit | subject), "
        "weights = varIdent(form = ~1 | visit))",
    ),
    (
        "lme: (1 \\| subject) + power(visit)",
        "y ~ visit*trt + (1 | subject)",
        None,
        "power(visit)",
        "lme(y ~ visit*trt, random = ~1 | subject, data = d, weights = varPower(form = ~visit))",
    ),
]


def simulate(subjects: int, visits: int = 5, seed: int = 42) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = subjects * visits
    visit = np.tile(np.arange(1, visits + 1), subjects)
    trt = np.repeat(rng.integers(0, 2, subjects), visits)
    b = np.repeat(rng.normal(0.0, 2.0, subjects), visits)
    phi = 0.5
    e = np.empty((subjects, visits))
    e[:, 0] = rng.normal(size=subjects)
    for t in range(1, visits):
        e[:, t] = phi * e[:, t - 1] + np.sqrt(1 - phi**2) * rng.normal(size=subjects)
    y = 10 + 0.5 * visit + trt + 0.3 * visit * trt + b + 1.5 * e.ravel()
    ids = np.repeat(np.arange(subjects), visits)
    return pd.DataFrame(
        {"subject": [f"s{i:05d}" for i in ids], "visit": visit, "trt": trt, "y": y}
    ).iloc[:n]


def time_ours(data: pd.DataFrame, repeats: int) -> list[tuple[float, float]]:
    import mixedmodels as mm

    out = []
    for _, formula, corr, var, _ in MODELS:
        times = []
        fit = None
        for k in range(repeats + 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                fit = mm.lmer(formula, data, correlation=corr, variance=var)
                elapsed = time.perf_counter() - t
            if k:
                times.append(elapsed)
        out.append((statistics.median(times), float(fit.loglik)))
    return out


R_SCRIPT = r"""
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
args <- commandArgs(TRUE)
d <- read.csv(args[1]); d$trt <- as.numeric(d$trt)
repeats <- as.integer(args[2]); calls <- fromJSON(args[3])
out <- lapply(calls, function(cl) {
  ex <- parse(text = cl)[[1]]
  fit <- eval(ex)
  ts <- sapply(seq_len(repeats), function(i) system.time(fit <<- eval(ex))[["elapsed"]])
  list(seconds = median(ts), loglik = as.numeric(logLik(fit)))
})
cat(toJSON(out, auto_unbox = TRUE, digits = NA))
"""


def time_nlme(csv: Path, repeats: int) -> list[dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as f:
        f.write(R_SCRIPT)
    calls = json.dumps([m[4] for m in MODELS])
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    res = subprocess.run(
        ["Rscript", f.name, str(csv), str(repeats), calls],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(res.stdout)


def main() -> None:
    import sections

    sections.run_report("repeated", _report)


def _report() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    r_version = subprocess.run(
        ["Rscript", "-e", 'cat(R.version.string, "nlme", format(packageVersion("nlme")))'],
        capture_output=True,
        text=True,
    ).stdout
    print("## Repeated measures (issue 15): `mm.lmer(..., correlation=, variance=)` against nlme")
    print()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"Generated by `python benchmarks/bench_repeated.py`; {stamp};")
    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, load average {os.getloadavg()[0]:.2f}; {r_version}.")
    print("Simulated data: 5 visits per subject, random intercept, AR(1) residuals (phi 0.5);")
    print(f"REML; median of {args.repeats} fits after a warm-up, single-threaded BLAS in both.")
    print()
    print("| subjects (rows) | model | mixedmodels s | nlme s | nlme / ours | logLik ours - nlme |")
    print("|---|---|---:|---:|---:|---:|")
    for subjects in args.subjects:
        data = simulate(subjects)
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "rm.csv"
            data.to_csv(csv, index=False)
            nlme = time_nlme(csv, args.repeats)
        ours = time_ours(data, args.repeats)
        for (label, *_), (sec, ll), r in zip(MODELS, ours, nlme, strict=True):
            print(
                f"| {subjects} ({len(data)}) | {label} | {sec:.3f} | {r['seconds']:.2f} | "
                f"{r['seconds'] / sec:.1f}x | {ll - r['loglik']:.2g} |"
            )


if __name__ == "__main__":
    main()
