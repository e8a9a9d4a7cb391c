"""This checkout's fit times against an earlier commit's, on the same machine in one run.

    python benchmarks/baseline.py --against 50e3e02            # the small models, 5 rounds
    python benchmarks/baseline.py --against 50e3e02 --rounds 3 --models dyestuff pastes

Benchmark tables from different machines cannot be compared (a page generated on an AMD
EPYC and one on an Intel Xeon differ by 20-30% for every Python library alike), so the
question "is any model slower than it was at commit X" is answered here: the commit is
checked out into a temporary git worktree and both source trees are timed by the same
worker (``worker.py ours``, the page's protocol: a fresh process per model, a warm-up fit,
the median of repeated fits with ``gc.collect()`` before each), interleaved round by round
with the order alternated, so that drift of a shared VM falls on both alike. A model's time
is the median of its round medians; the ratio is this checkout's over the commit's.

The result is written to docs/benchmarks.md between its own markers (a full ``run.py``
keeps the section) and to benchmarks/results/baseline.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import machine  # noqa: E402  (the benchmark modules sit next to this script)
import models  # noqa: E402
import sections  # noqa: E402
import worker_call  # noqa: E402

BEGIN, END = sections.markers("baseline")
RESULTS = HERE / "results" / "baseline.json"
DOCS_MD = REPO / "docs" / "benchmarks.md"


def small_models() -> list[str]:
    return [m.key for m in models.MODELS if not m.large and m.synthetic is None]


def time_tree(src: Path, model_key: str) -> tuple[float, float] | None:
    """Median and fastest fit time of ``ours`` on one model with ``src`` first on the path."""
    row = worker_call.worker_row("ours", model_key, src) or {}
    if row.get("status") != "ok":
        return None
    return float(row["median_s"]), float(row["min_s"])


def commit_of(ref: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=7", ref],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def run(against: str, keys: list[str], rounds: int) -> dict:
    base_commit = commit_of(against)
    head_commit = commit_of("HEAD")
    dirty = bool(
        subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        ).stdout.strip()
    )
    started = time.time()
    times: dict[str, dict[str, list[float]]] = {k: {"head": [], "base": []} for k in keys}
    fastest: dict[str, dict[str, float]] = {k: {"head": math.inf, "base": math.inf} for k in keys}
    with tempfile.TemporaryDirectory(prefix="mm-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), base_commit],
            check=True,
        )
        try:
            trees = {"head": REPO / "src", "base": tree / "src"}
            for r in range(rounds):
                order = ("head", "base") if r % 2 == 0 else ("base", "head")
                for key in keys:
                    for which in order:
                        t = time_tree(trees[which], key)
                        if t is not None:
                            times[key][which].append(t[0])
                            fastest[key][which] = min(fastest[key][which], t[1])
                print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                check=False,
            )
    rows = []
    for key in keys:
        head = statistics.median(times[key]["head"]) if times[key]["head"] else None
        base = statistics.median(times[key]["base"]) if times[key]["base"] else None
        rows.append(
            {
                "model": key,
                "head_s": head,
                "base_s": base,
                "ratio": None if head is None or base is None else head / base,
                "head_min_s": fastest[key]["head"],
                "base_min_s": fastest[key]["base"],
                "min_ratio": fastest[key]["head"] / fastest[key]["base"],
                "rounds": {w: times[key][w] for w in ("head", "base")},
            }
        )
    return {
        "against": base_commit,
        "head": head_commit + ("+uncommitted changes" if dirty else ""),
        "rounds": rounds,
        "machine": machine.describe() if hasattr(machine, "describe") else None,
        "load_before_after": None,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "elapsed_s": time.time() - started,
        "rows": rows,
    }


def section(result: dict) -> str:
    lines = [
        "## Against an earlier commit (same machine, same run)",
        "",
        f"Generated by `python benchmarks/baseline.py --against {result['against']}` "
        f"({result['started']}, {result['elapsed_s'] / 60:.0f} min): this checkout "
        f"({result['head']}) against commit {result['against']}, each model timed by the "
        "page's worker in a fresh process per round, the two trees interleaved with the "
        f"order alternated over {result['rounds']} rounds; a model's time is the median of "
        "its round medians. Tables generated on different machines cannot be compared; "
        "this one can. The fastest fit of all rounds is the steadier statistic on a shared "
        "VM (round medians move by 20-40% from round to round); both ratios are given.",
        "",
        f"Load average before / after: {_load(result, 0)} / {_load(result, 1)} (2 cores).",
        "",
        f"| model | {result['against']} (s) | this checkout (s) | ratio of medians | "
        "ratio of fastest fits | round ratios |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        heads, bases = row["rounds"]["head"], row["rounds"]["base"]
        per_round = ", ".join(f"{h / b:.2f}" for h, b in zip(heads, bases, strict=False))
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}"
        base = "" if row["base_s"] is None else f"{row['base_s']:.5f}"
        head = "" if row["head_s"] is None else f"{row['head_s']:.5f}"
        fast = f"{row['min_ratio']:.2f}" if math.isfinite(row["min_ratio"]) else ""
        lines.append(f"| {row['model']} | {base} | {head} | {ratio} | {fast} | {per_round} |")
    return "\n".join(lines)


def _load(result: dict, i: int) -> str:
    loads = result.get("load_before_after")
    return " ".join(f"{x:.2f}" for x in loads[i]) if loads else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="the earlier commit (any git ref)")
    parser.add_argument("--models", nargs="*", help="model keys (default: the small models)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    keys = args.models or small_models()
    unknown = [k for k in keys if k not in models.BY_KEY]
    if unknown:
        parser.error(f"unknown model keys: {', '.join(unknown)}")
    load_before = os.getloadavg()
    result = run(args.against, keys, args.rounds)
    result["load_before_after"] = [list(load_before), list(os.getloadavg())]
    text = section(result)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        page = DOCS_MD.read_text(encoding="utf-8") if DOCS_MD.is_file() else "# Benchmarks\n"
        DOCS_MD.write_text(sections.splice(page, text, BEGIN, END), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
