"""Time one contestant on one or more models, in a process of its own.

    python benchmarks/worker.py CONTESTANT MODEL [MODEL ...] [--quick]

Prints one JSON document on its last stdout line. Run by ``run.py``; a process per
(model, contestant) keeps each peak-memory reading to that one model and lets ``run.py``
stop a fit that runs past its time cap. MODEL is an LMM of ``models.py`` or a GLMM of
``glmm_models.py``; the contestant's adapter for that kind of model does the fitting.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import resource
import statistics
import sys
import time
import traceback
from typing import Any

import contestants
import glmm_contestants
import glmm_models
import models
import supervise

QUICK_REPEATS = 3
LARGE_REPEATS = 3
SMALL_MIN_REPEATS = 5
SMALL_MAX_REPEATS = 25
SMALL_BUDGET_S = 2.0  # seconds of timed fits per small model and contestant


ALL_MODELS = {**models.BY_KEY, **glmm_models.BY_KEY}
assert len(ALL_MODELS) == len(models.BY_KEY) + len(glmm_models.BY_KEY), "model keys clash"


def is_glmm(model: Any) -> bool:
    return isinstance(model, glmm_models.GlmmModel)


def load_frame(model: Any, scale: float = 1.0) -> Any:
    """The model's DataFrame (LMM or GLMM table)."""
    if is_glmm(model):
        return glmm_models.load_frame(model, scale)
    return models.load_frame(model, scale)


def contestant_for(key: str, model: Any) -> Any:
    """The library's adapter for this kind of model, or None if it has none."""
    table = glmm_contestants.BY_KEY if is_glmm(model) else contestants.BY_KEY
    return table.get(key)


def peak_rss_mb() -> float:
    """This process's peak resident set size (MB): VmHWM, else ru_maxrss.

    Not ru_maxrss where /proc exists: Linux carries the parent's resident size at fork
    over into the child's ru_maxrss across exec, so every worker would report at least
    what run.py held when it started it (run.py grows when it writes a 1e6-row CSV for
    lme4). VmHWM belongs to the process's own memory map.
    """
    try:
        status = open("/proc/self/status", encoding="ascii").read()
    except OSError:
        status = ""
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    if found:
        return int(found.group(1)) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def enough(model: models.Model, times: list[float], warmup_s: float, quick: bool) -> bool:
    """Whether the timed fits so far suffice (the warm-up only sizes the InstEval runs)."""
    if quick:
        return len(times) >= QUICK_REPEATS
    if model.large:
        # A contestant that needs minutes per fit gets fewer repeats, not a longer run.
        wanted = 1 if warmup_s > 60 else (LARGE_REPEATS if warmup_s < 20 else 2)
        return len(times) >= wanted
    if len(times) < SMALL_MIN_REPEATS:
        return False
    return len(times) >= SMALL_MAX_REPEATS or sum(times) >= SMALL_BUDGET_S


def time_synthetic(contestant: Any, model: Any) -> dict:
    """One timed fit of a 1e6-row synthetic design, after a warm-up on its 1% version.

    The warm-up loads the library's lazy parts (imports, compiled code) on 10,000 rows of
    the same formula; a second fit of the full design would add minutes and nothing else.
    ``FIT_STARTED`` tells the supervising run.py that its fit-time cap starts now.
    """
    row: dict[str, Any] = {"model": model.key, "contestant": contestant.key}
    frame = load_frame(model)
    row["n"] = len(frame)
    warm = contestant.prepare(model, load_frame(model, scale=0.01))
    start = time.perf_counter()
    warm()
    row["warmup_s"] = time.perf_counter() - start
    del warm
    fit = contestant.prepare(model, frame)
    gc.collect()
    row["rss_before_mb"] = peak_rss_mb()
    print(supervise.FIT_STARTED, flush=True)
    start = time.perf_counter()
    result = fit()
    elapsed = time.perf_counter() - start
    row.update(
        status="ok",
        times_s=[elapsed],
        median_s=elapsed,
        min_s=elapsed,
        repeats=1,
        peak_rss_mb=peak_rss_mb(),
    )
    row.update(contestant.outcome(model, frame, result))
    details = getattr(contestant, "details", None)
    if details is not None:
        row["details"] = details(result)
    return row


WARM_LIMIT_S = 0.05
WARM_FITS = 15


def time_one(contestant: Any, model: Any, quick: bool) -> dict:
    if model.synthetic is not None:
        return time_synthetic(contestant, model)
    row: dict[str, Any] = {"model": model.key, "contestant": contestant.key}
    frame = load_frame(model)
    row["n"] = len(frame)
    row["rss_before_mb"] = peak_rss_mb()
    fit = contestant.prepare(model, frame)

    gc.collect()
    start = time.perf_counter()
    result = fit()
    row["warmup_s"] = time.perf_counter() - start
    # A progress line, so that run.py can tell how long one fit took if it has to stop us.
    print(json.dumps({"warmup_s": row["warmup_s"], "model": model.key}), flush=True)

    times: list[float] = []
    while not enough(model, times, row["warmup_s"], quick):
        gc.collect()
        start = time.perf_counter()
        result = fit()
        times.append(time.perf_counter() - start)

    # Warm timing as issue 17 states it (consecutive fits, no collection in between):
    # only for fits under WARM_LIMIT_S, where 15 more fits cost nothing noticeable.
    if statistics.median(times) < WARM_LIMIT_S:
        warm: list[float] = []
        for _ in range(WARM_FITS):
            start = time.perf_counter()
            result = fit()
            warm.append(time.perf_counter() - start)
        row["warm_median_s"] = statistics.median(warm)

    row.update(
        status="ok",
        times_s=times,
        median_s=statistics.median(times),
        min_s=min(times),
        repeats=len(times),
        peak_rss_mb=peak_rss_mb(),
    )
    row.update(contestant.outcome(model, frame, result))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contestant", choices=sorted(contestants.BY_KEY))
    parser.add_argument("models", nargs="+", choices=sorted(ALL_MODELS))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)

    # Import the library (and report its version) through whichever adapter it has.
    first = contestant_for(args.contestant, ALL_MODELS[args.models[0]])
    library = first or contestants.BY_KEY[args.contestant]
    out: dict[str, Any] = {"contestant": args.contestant, "rows": []}
    missing = library.missing()
    if missing is None:
        out["version"] = library.version()
        out["rss_after_import_mb"] = peak_rss_mb()
    for key in args.models:
        model = ALL_MODELS[key]
        contestant = contestant_for(args.contestant, model)
        reason = missing
        if reason is None:
            reason = "no adapter for this kind of model" if contestant is None else None
        if reason is None:
            reason = contestant.skip(model)
        if reason is not None:
            row = {"model": key, "contestant": args.contestant, "status": "skipped"}
            row["reason"] = reason
        else:
            try:
                row = time_one(contestant, model, args.quick)
            except Exception as exc:
                row = {"model": key, "contestant": contestant.key, "status": "failed"}
                row["reason"] = f"{type(exc).__name__}: {exc}"[:300]
                traceback.print_exc(file=sys.stderr)
        out["rows"].append(row)
        print(f"  {args.contestant:12s} {key:16s} {_brief(row)}", file=sys.stderr, flush=True)
    print(json.dumps(out))
    return 0


def _brief(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row.get('reason', '')}"
    if "loglik" in row:
        return f"{row['median_s']:.4g} s (x{row['repeats']}), logLik {row['loglik']:.10g}"
    return f"{row['median_s']:.4g} s (x{row['repeats']}), criterion {row['criterion']:.10g}"


if __name__ == "__main__":
    sys.exit(main())
