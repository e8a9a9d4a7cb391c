"""Time one contestant on one or more models, in a process of its own.

    python benchmarks/worker.py CONTESTANT MODEL [MODEL ...] [--quick]

Prints one JSON document on its last stdout line. Run by ``run.py``; a process per
(model, contestant) keeps each peak-memory reading to that one model and lets ``run.py``
stop a fit that runs past its time cap.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
import traceback
from typing import Any

import contestants
import models
import supervise

QUICK_REPEATS = 3
LARGE_REPEATS = 3
SMALL_MIN_REPEATS = 5
SMALL_MAX_REPEATS = 25
SMALL_BUDGET_S = 2.0  # seconds of timed fits per small model and contestant


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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


def time_synthetic(contestant: contestants.Contestant, model: models.Model) -> dict:
    """One timed fit of a 1e6-row synthetic design, after a warm-up on its 1% version.

    The warm-up loads the library's lazy parts (imports, compiled code) on 10,000 rows of
    the same formula; a second fit of the full design would add minutes and nothing else.
    ``FIT_STARTED`` tells the supervising run.py that its fit-time cap starts now.
    """
    row: dict[str, Any] = {"model": model.key, "contestant": contestant.key}
    frame = models.load_frame(model)
    row["n"] = len(frame)
    warm = contestant.prepare(model, models.load_frame(model, scale=0.01))
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
        criterion=contestant.criterion(result),
        converged=contestant.converged(result),
        peak_rss_mb=peak_rss_mb(),
    )
    if contestant.details is not None:
        row["details"] = contestant.details(result)
    return row


def time_one(contestant: contestants.Contestant, model: models.Model, quick: bool) -> dict:
    if model.synthetic is not None:
        return time_synthetic(contestant, model)
    row: dict[str, Any] = {"model": model.key, "contestant": contestant.key}
    frame = models.load_frame(model)
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

    row.update(
        status="ok",
        times_s=times,
        median_s=statistics.median(times),
        min_s=min(times),
        repeats=len(times),
        criterion=contestant.criterion(result),
        converged=contestant.converged(result),
        peak_rss_mb=peak_rss_mb(),
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contestant", choices=sorted(contestants.BY_KEY))
    parser.add_argument("models", nargs="+", choices=sorted(models.BY_KEY))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)

    contestant = contestants.BY_KEY[args.contestant]
    out: dict[str, Any] = {"contestant": contestant.key, "rows": []}
    missing = contestant.missing()
    if missing is None:
        out["version"] = contestant.version()
        out["rss_after_import_mb"] = peak_rss_mb()
    for key in args.models:
        model = models.BY_KEY[key]
        if missing is not None:
            row = {"model": key, "contestant": contestant.key, "status": "skipped"}
            row["reason"] = missing
        else:
            try:
                row = time_one(contestant, model, args.quick)
            except Exception as exc:
                row = {"model": key, "contestant": contestant.key, "status": "failed"}
                row["reason"] = f"{type(exc).__name__}: {exc}"[:300]
                traceback.print_exc(file=sys.stderr)
        out["rows"].append(row)
        print(f"  {contestant.key:12s} {key:16s} {_brief(row)}", file=sys.stderr, flush=True)
    print(json.dumps(out))
    return 0


def _brief(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row.get('reason', '')}"
    return f"{row['median_s']:.4g} s (x{row['repeats']}), criterion {row['criterion']:.10g}"


if __name__ == "__main__":
    sys.exit(main())
