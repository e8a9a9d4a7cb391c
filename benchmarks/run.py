"""Benchmark suite: mixedmodels against statsmodels MixedLM, lme4 and other Python packages.

    python benchmarks/run.py                  # everything; writes docs/benchmarks.md + .png
    python benchmarks/run.py --quick          # small models, 3 repeats, under a minute
    python benchmarks/run.py --models sleepstudy_corr penicillin
    python benchmarks/run.py --glmm           # the GLMMs only: the page's GLMM section
    python benchmarks/run.py --glmm --models verbagg cbpp_laplace   # -> results/subset.md

Each (model, contestant) pair is timed in a fresh worker process (``worker.py``): the
DataFrame is built, one warm-up fit is made, then the median of repeated fits is taken
(fewer repeats for the InstEval models). Results go to benchmarks/results/latest.json
(git-ignored). The full run writes docs/benchmarks.md and docs/benchmarks.png; --quick
and --models write benchmarks/results/quick.md or subset.md instead, so that a partial
run does not overwrite the published numbers.

The synthetic 1e6-row designs (synthetic.py) run each contestant under a fit-time cap
(--synthetic-timeout, default 600 s) and a memory cap (--memory-cap-gb); --no-synthetic
leaves them out.

The GLMMs (glmm_models.py, issue 14) follow the same protocol (glmm_run.py), with lme4
as one more contestant in the rounds; their section of the page (glmm_render.py) sits
between two HTML comments, so that --glmm can rewrite it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import contestants  # noqa: E402  (the benchmark modules sit next to this script)
import glmm_models  # noqa: E402
import glmm_render  # noqa: E402
import glmm_run  # noqa: E402
import lme4_live  # noqa: E402
import machine  # noqa: E402
import models  # noqa: E402
import render  # noqa: E402
import sections  # noqa: E402
import startup  # noqa: E402
import supervise  # noqa: E402

RESULTS_DIR = HERE / "results"
DOCS_MD = REPO / "docs" / "benchmarks.md"
DOCS_PNG = REPO / "docs" / "benchmarks.png"
LME4_LIVE_REPS = {False: 10, True: 3}  # small, large
# Seconds a synthetic-design worker may spend simulating data and on its 1% warm-up fit
# before its fit-time cap starts (lme4 also reads the 1e6-row CSV in that time).
SYNTHETIC_SETUP_S = 300.0


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def worker_env(blas_threads: int | None = None) -> dict[str, str]:
    """Environment for worker processes: this checkout's src/ first on the path."""
    env = dict(os.environ)
    if blas_threads is not None:
        for var in BLAS_THREAD_VARS:
            env[var] = str(blas_threads)
    paths = [str(REPO / "src"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def run_worker(
    contestant: str, model_keys: list[str], quick: bool, timeout: float, env: dict[str, str]
) -> dict:
    cmd = [sys.executable, str(HERE / "worker.py"), contestant, *model_keys]
    if quick:
        cmd.append("--quick")
    try:
        done = subprocess.run(
            cmd, env=env, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        reason = f"too slow (no fit finished within the {timeout:.0f} s cap)"
        partial = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        for line in partial.splitlines():
            if line.startswith('{"warmup_s"'):
                one = json.loads(line)["warmup_s"]
                reason = f"too slow (one fit took {one:.0f} s; stopped at the {timeout:.0f} s cap)"
        print(f"  {contestant:12s} {' '.join(model_keys)}: {reason}", file=sys.stderr)
        return {
            "rows": [
                {"model": k, "contestant": contestant, "status": "skipped", "reason": reason}
                for k in model_keys
            ]
        }
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        reason = f"worker exited with {done.returncode}"
        return {
            "rows": [
                {"model": k, "contestant": contestant, "status": "failed", "reason": reason}
                for k in model_keys
            ]
        }
    return json.loads(lines[-1])


def run_synthetic_worker(
    contestant: str, model: models.Model, args: argparse.Namespace, env: dict[str, str]
) -> dict:
    """One contestant on one synthetic design, under the fit-time and memory caps."""
    cmd = [sys.executable, str(HERE / "worker.py"), contestant, model.key]
    out = supervise.run_supervised(
        cmd,
        env,
        fit_timeout=args.synthetic_timeout,
        setup_timeout=SYNTHETIC_SETUP_S,
        memory_cap_mb=args.memory_cap_gb * 1024.0,
    )
    base = {"model": model.key, "contestant": contestant, "sampled_peak_rss_mb": out.peak_rss_mb}
    if out.status != "exited":
        print(f"  {contestant:12s} {model.key}: {out.reason}", file=sys.stderr, flush=True)
        return {"rows": [{**base, "status": "stopped", "reason": out.reason}]}
    if out.returncode != 0 or not out.stdout or not out.stdout[-1].startswith("{"):
        reason = "worker " + out.crash_reason()
        return {"rows": [{**base, "status": "failed", "reason": reason}]}
    doc = json.loads(out.stdout[-1])
    for row in doc["rows"]:
        row["sampled_peak_rss_mb"] = out.peak_rss_mb
    return doc


def skip_reason(model: models.Model, contestant: str, try_slow: bool) -> str | None:
    missing = models.dataset_missing(model)
    if missing:
        return missing
    if contestant == "statsmodels":
        if model.statsmodels is None:
            return "cannot express"
        if model.statsmodels_skip and not try_slow:
            return model.statsmodels_skip
    return None


def statsmodels_call(model: models.Model) -> str:
    spec = model.statsmodels
    if spec is None:
        return ""
    groups = ":".join(spec.groups) if spec.groups else "<one group>"
    parts = [f'mixedlm("{spec.formula}", groups={groups}']
    if spec.re_formula is not None:
        parts.append(f're_formula="{spec.re_formula}"')
    if spec.vc_formula:
        vc = ", ".join(f'"{k}": "{v}"' for k, v in spec.vc_formula.items())
        parts.append("vc_formula={" + vc + "}")
    if spec.use_sparse:
        parts.append("use_sparse=True")
    return ", ".join(parts) + ").fit(reml=True)"


def run_contestant(
    ckey: str,
    chosen: list[models.Model],
    round_index: int,
    quick: bool,
    args: argparse.Namespace,
    env: dict[str, str],
    rows: dict[tuple[str, str], dict],
    results: dict,
) -> None:
    """One contestant's workers for one round (later rounds: small models only)."""
    todo = []
    for model in chosen:
        if round_index > 0 and (model.large or model.synthetic is not None):
            continue
        reason = skip_reason(model, ckey, args.try_slow)
        if reason:
            rows[(model.key, ckey)] = {"status": "skipped", "reason": reason}
        elif round_index > 0 and rows.get((model.key, ckey), {}).get("status") != "ok":
            continue  # failed or too slow in round 1: not tried again
        else:
            todo.append(model)
    if not todo:
        return
    print(f"[{ckey}] round {round_index + 1}", file=sys.stderr, flush=True)
    if quick:  # one process for all models: no per-model memory, much less start-up
        batches = [todo]
    else:
        batches = [[m] for m in todo]
    for batch in batches:
        if len(batch) == 1 and batch[0].synthetic is not None:
            out = run_synthetic_worker(ckey, batch[0], args, env)
        else:
            timeout = args.large_timeout if any(m.large for m in batch) else args.small_timeout
            out = run_worker(ckey, [m.key for m in batch], quick, timeout, env)
        if "version" in out:
            results["contestant_versions"][ckey] = out["version"]
        for row in out["rows"]:
            key = (row["model"], ckey)
            previous = rows.get(key)
            if previous is not None and row.get("status") == "ok":
                # A later round: keep the first round's row, add this round's median.
                previous["round_medians"].append(row["median_s"])
                previous["times_s"] = previous["times_s"] + row["times_s"]
                previous["peak_rss_mb"] = max(
                    previous.get("peak_rss_mb", 0.0), row.get("peak_rss_mb", 0.0)
                )
                continue
            if row.get("status") == "ok":
                row["round_medians"] = [row["median_s"]]
            rows[key] = row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small models, 3 repeats")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the small models, contestants interleaved; the reported median is "
        "the median of the rounds' medians (default 3; --quick: 1)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=sorted({**models.BY_KEY, **glmm_models.BY_KEY}),
        metavar="MODEL",
        help=f"subset of the LMMs: {', '.join(models.BY_KEY)}; and of the GLMMs: "
        f"{', '.join(glmm_models.BY_KEY)}",
    )
    parser.add_argument(
        "--glmm",
        action="store_true",
        help="the GLMMs only (issue 14; all of them unless --models names some); without "
        "--models or --quick it rewrites the GLMM section of docs/benchmarks.md and leaves "
        "the LMM sections as they are",
    )
    parser.add_argument("--no-glmm", action="store_true", help="leave the GLMMs out of a full run")
    parser.add_argument(
        "--contestants",
        nargs="+",
        choices=sorted(contestants.BY_KEY),
        default=[c.key for c in contestants.CONTESTANTS],
    )
    parser.add_argument(
        "--lme4",
        choices=("auto", "file", "live"),
        default="auto",
        help="live = time lme4 through Rscript; file = benchmarks/lme4_timings.md",
    )
    parser.add_argument(
        "--try-slow",
        action="store_true",
        help="also try statsmodels on InstEval (capped by --large-timeout)",
    )
    parser.add_argument(
        "--small-timeout",
        type=float,
        default=180.0,
        help="seconds allowed per worker for a small model",
    )
    parser.add_argument(
        "--large-timeout",
        type=float,
        default=240.0,
        help="seconds allowed per worker for an InstEval model",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="OPENBLAS/OMP/MKL_NUM_THREADS for the worker processes (default 1, like lme4's "
        "reference BLAS; 0 = leave the libraries' own default)",
    )
    parser.add_argument(
        "--no-startup", action="store_true", help="skip the import and CLI start-up timings"
    )
    parser.add_argument(
        "--no-synthetic",
        action="store_true",
        help="skip the synthetic 1e6-row designs (each contestant may take up to "
        "--synthetic-timeout seconds on each)",
    )
    parser.add_argument(
        "--synthetic-timeout",
        type=float,
        default=600.0,
        help="seconds one fit of a synthetic 1e6-row design may take before the contestant "
        "is stopped and reported as 'did not finish' (default 600)",
    )
    parser.add_argument(
        "--memory-cap-gb",
        type=float,
        default=8.0,
        help="resident memory (GB) above which a contestant on a synthetic design is "
        "stopped (default 8)",
    )
    args = parser.parse_args(argv)

    chosen, glmm_chosen = choose_models(args)
    env = worker_env(args.blas_threads or None)
    sys.path.insert(0, str(REPO / "src"))

    started = time.perf_counter()
    results: dict = run_lmm(chosen, args, env) if chosen else {}
    if glmm_chosen:
        live = args.lme4 == "live" or (args.lme4 == "auto" and lme4_live.rscript_works())
        results["glmm"] = glmm_run.run(glmm_chosen, args, env, live)
    results["elapsed_s"] = time.perf_counter() - started
    write(results, args)
    return 0


def choose_models(
    args: argparse.Namespace,
) -> tuple[list[models.Model], list[glmm_models.GlmmModel]]:
    """The LMMs and the GLMMs this run times.

    A full run takes both (the GLMMs unless --no-glmm); --quick the quick LMMs; --glmm
    the GLMMs only (those named by --models, else all); --models what it names.
    """
    if args.models:
        lmm = [models.BY_KEY[k] for k in args.models if k in models.BY_KEY]
        glmm = [glmm_models.BY_KEY[k] for k in args.models if k in glmm_models.BY_KEY]
        if args.glmm:
            lmm = []
    elif args.glmm:
        lmm, glmm = [], list(glmm_models.MODELS)
    elif args.quick:
        lmm, glmm = [models.BY_KEY[k] for k in models.QUICK], []
    else:
        lmm = list(models.MODELS)
        glmm = [] if args.no_glmm else list(glmm_models.MODELS)
    if args.quick:
        lmm = [m for m in lmm if not m.large]
        glmm = [m for m in glmm if not m.large]
    if args.no_synthetic:
        lmm = [m for m in lmm if m.synthetic is None]
        glmm = [m for m in glmm if m.synthetic is None]
    return lmm, glmm


def run_lmm(chosen: list[models.Model], args: argparse.Namespace, env: dict[str, str]) -> dict:
    """Time the LMMs: the Python contestants in rounds, then lme4, start-up; the results."""
    quick = args.quick
    results: dict = {
        "settings": {
            "quick": quick,
            "models": [m.key for m in chosen],
            "contestants": args.contestants,
            "try_slow": args.try_slow,
            "blas_threads": args.blas_threads,
            "synthetic_timeout_s": args.synthetic_timeout,
            "memory_cap_gb": args.memory_cap_gb,
        },
        "machine": machine.describe(),
        "load_before": machine.load_average(),
        "contestants": [],
        "contestant_versions": {},
        "models": {},
        "notes": [],
    }

    # -- Python contestants, each pair in its own process ------------------------------
    # Small models run in --rounds rounds, the contestants interleaved in each: on a shared
    # VM the speed drifts by 20-30% over minutes, and a contestant measured in one slow
    # minute would carry it into its ratio. The row keeps every round's median (its own
    # median is the median of those); large and synthetic designs run once.
    rows: dict[tuple[str, str], dict] = {}
    rounds = 1 if quick else max(1, args.rounds)
    for round_index in range(rounds):
        for ckey in args.contestants:
            run_contestant(ckey, chosen, round_index, quick, args, env, rows, results)
    for row in rows.values():
        medians = row.pop("round_medians", None)
        if medians and len(medians) > 1:
            row["median_s"] = statistics.median(medians)
            row["round_medians_s"] = medians
    for ckey in args.contestants:
        contestant = contestants.BY_KEY[ckey]
        if ckey not in results["contestant_versions"] and contestant.missing() is None:
            # Installed, but every worker was stopped before reporting its version.
            results["contestant_versions"][ckey] = contestant.version()
        if ckey not in results["contestant_versions"] and ckey not in ("ours", "statsmodels"):
            # Not installed (or never ran): leave it out of the tables.
            for model in chosen:
                rows.pop((model.key, ckey), None)
            continue
        results["contestants"].append(ckey)

    # -- lme4 ---------------------------------------------------------------------------
    live = args.lme4 == "live" or (args.lme4 == "auto" and lme4_live.rscript_works())
    if live:
        print("[lme4 via Rscript]", file=sys.stderr, flush=True)
        regular = [m for m in chosen if m.synthetic is None]
        frames = {m.key: models.load_frame(m) for m in regular if not models.dataset_missing(m)}
        reps = {m.key: 3 if quick else LME4_LIVE_REPS[m.large] for m in regular}
        runnable = [m for m in regular if m.key in frames]
        lme4_rows, lme4_version = {}, ""
        if runnable:
            lme4_rows, lme4_version = lme4_live.run_live(runnable, frames, reps, timeout=3600)
        for model in chosen:
            if model.synthetic is None:
                continue
            row, version = lme4_live.run_synthetic(
                model,
                fit_timeout=args.synthetic_timeout,
                setup_timeout=SYNTHETIC_SETUP_S,
                memory_cap_mb=args.memory_cap_gb * 1024.0,
            )
            lme4_rows[model.key] = row
            lme4_version = lme4_version or version
        results["lme4"] = {
            "source": "live",
            "description": f"{lme4_version}, timed live on this machine through Rscript "
            "(median of repeated lmer() calls after a warm-up, default lmerControl())",
        }
    else:
        lme4_rows = lme4_live.from_file()
        results["lme4"] = {
            "source": "file",
            "description": "Rscript with lme4 is not installed here, so the lme4 column is "
            "copied from benchmarks/lme4_timings.md: " + lme4_live.FILE_SOURCE + ". Its REML "
            "criteria come from the tightly converged reference fits.",
        }
        cpu_now = results["machine"]["cpu"]
        if "Xeon" not in cpu_now:
            results["notes"].append(
                f"The lme4 times were recorded on a VM that reported an Intel Xeon CPU; this "
                f'run\'s machine reports "{cpu_now}". Same VM size (2 vCPU), but the lme4 '
                "ratios compare numbers from two different CPUs."
            )

    # -- per-model assembly ---------------------------------------------------------------
    for model in chosen:
        model_rows = {
            c: rows[(model.key, c)] for c in results["contestants"] if (model.key, c) in rows
        }
        n = next((r["n"] for r in model_rows.values() if "n" in r), None)
        if n is None and model.key in lme4_rows:
            n = lme4_rows[model.key].get("n")
        criteria = {
            c: float(r["criterion"]) for c, r in model_rows.items() if r.get("status") == "ok"
        }
        lme4_row = lme4_rows.get(model.key)
        if lme4_row is not None and "criterion" in lme4_row:
            criteria["lme4"] = float(lme4_row["criterion"])
        results["models"][model.key] = {
            "formula": model.formula,
            "statsmodels_call": statsmodels_call(model),
            "n": n,
            "rows": model_rows,
            "lme4": lme4_row,
            "criteria": criteria,
            "agreement": render.agreement(criteria),
        }
        for c, r in model_rows.items():
            if r.get("status") == "ok" and r.get("converged") is False:
                label = render.LABELS[c]
                results["notes"].append(f"{model.key}: {label} reported non-convergence.")
        if lme4_row is not None and lme4_row.get("messages"):
            results["notes"].append(f"{model.key}: lme4 warned: {lme4_row['messages']}")

    # -- start-up times ---------------------------------------------------------------------
    if not (quick or args.no_startup):
        print("[start-up]", file=sys.stderr, flush=True)
        results["startup"] = startup.measure(env)

    results["load_after"] = machine.load_average()
    busy = machine.busy(results["load_before"], results["load_after"])
    if busy:
        results["notes"].append(busy)
    results["method"] = method_notes(quick, live)
    if rounds > 1:
        results["method"].append(
            f"Small models: {rounds} rounds, the Python contestants interleaved in each (on a "
            "shared VM the speed drifts by 20-30% over minutes); a small model's median is the "
            "median of its rounds' medians, and its fits are counted over all rounds. InstEval "
            "and the synthetic designs run once."
        )
    if args.blas_threads:
        results["method"].append(
            f"BLAS threads: {args.blas_threads} per worker process (OPENBLAS_NUM_THREADS, "
            "OMP_NUM_THREADS, MKL_NUM_THREADS), the same for every library; lme4's numbers "
            "used Debian's single-threaded reference BLAS. `--blas-threads 0` keeps the "
            "libraries' defaults."
        )
    results["notes"] += model_notes(chosen, args.try_slow)
    if any(m.synthetic is not None for m in chosen):
        results["method"] += synthetic_method_notes(args)
    return results


def write(results: dict, args: argparse.Namespace) -> None:
    """Write the page and the JSON document of a run.

    Only a full run replaces the published page (docs/benchmarks.md); a full GLMM run
    (--glmm) replaces the page's GLMM section and leaves the LMM sections as they are. A
    quick look or a subset of models (--models) goes to benchmarks/results/ under its own
    name.
    """
    quick = args.quick
    glmm = results.get("glmm")
    name = "quick" if quick else ("subset" if args.models else None)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    if "models" not in results:  # GLMMs only
        if name:
            md_path = RESULTS_DIR / f"{name}.md"
            md_path.write_text(glmm_render.page(glmm, name), encoding="utf-8")
        else:
            md_path = DOCS_MD
            page = DOCS_MD.read_text(encoding="utf-8") if DOCS_MD.is_file() else "# Benchmarks\n"
            section = glmm_render.section(glmm)
            md_path.write_text(glmm_render.splice(page, section), encoding="utf-8")
        json_path = RESULTS_DIR / (f"{name}.json" if name else "glmm.json")
        json_path.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
        print(
            f"wrote {md_path.relative_to(REPO)} and {json_path.relative_to(REPO)} "
            f"in {results['elapsed_s']:.0f} s",
            file=sys.stderr,
        )
        print(md_path.read_text(encoding="utf-8"))
        return

    if name:
        md_path, png_path = RESULTS_DIR / f"{name}.md", RESULTS_DIR / f"{name}.png"
    else:
        md_path, png_path = DOCS_MD, DOCS_PNG
    if render.plot(results, png_path):
        results["plot"] = png_path.name if png_path.parent == md_path.parent else str(png_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    markdown = render.markdown(results)
    if glmm:
        markdown = glmm_render.splice(markdown, glmm_render.section(glmm))
    if not name and DOCS_MD.is_file():
        # Sections of other scripts (baseline.py, bench_repeated.py, ...) are their runs'.
        markdown = sections.keep_owned(DOCS_MD.read_text(encoding="utf-8"), markdown)
    md_path.write_text(markdown, encoding="utf-8")
    json_path = RESULTS_DIR / (f"{name}.json" if name else "latest.json")
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    print(
        f"wrote {md_path.relative_to(REPO)} and {json_path.relative_to(REPO)} "
        f"in {results['elapsed_s']:.0f} s",
        file=sys.stderr,
    )
    print(md_path.read_text(encoding="utf-8"))


def method_notes(quick: bool, live_lme4: bool) -> list[str]:
    from worker import (
        LARGE_REPEATS,
        QUICK_REPEATS,
        SMALL_BUDGET_S,
        SMALL_MAX_REPEATS,
        SMALL_MIN_REPEATS,
    )

    if quick:
        reps = f"{QUICK_REPEATS} timed fits per model"
    else:
        reps = (
            f"small models: {SMALL_MIN_REPEATS} to {SMALL_MAX_REPEATS} timed fits "
            f"(as many as fit in about {SMALL_BUDGET_S:g} s); InstEval: {LARGE_REPEATS} "
            "(fewer when one fit takes over 20 s)"
        )
    notes = [
        "What is timed: one call from formula string + pandas DataFrame to a fitted REML "
        "model, in-process (`time.perf_counter`), so formula parsing and design matrices "
        "are included; interpreter start-up and imports are not (see Start-up). "
        "mixedmodels computes beta-hat, the conditional modes and the criterion on first "
        "use, so its timed call reads them (the other libraries return them computed).",
        f"Each (model, library) pair runs in a fresh Python process: one warm-up fit, then "
        f"the median of the timed fits ({reps}). `gc.collect()` runs before each fit.",
        "Every library gets the same DataFrame; columns listed as factors (InstEval `s`, `d`, "
        "`service`, `dept`; cake `temperature`) are converted to strings first.",
        "statsmodels: `statsmodels.formula.api.mixedlm(...).fit(reml=True)` with default "
        "optimiser settings; crossed random effects use a single group holding all rows with "
        "one variance component per crossed factor, nested ones (Pastes) a variance "
        "component within the outer group. Building the model is inside the timing.",
        "Optimum agreement: the REML criterion is -2 x REML log-likelihood (statsmodels: "
        "`-2 * result.llf`, which uses the same REML likelihood as lme4).",
    ]
    if not live_lme4:
        notes.append(
            "lme4 did not run here: its times and REML criteria come from "
            "benchmarks/lme4_timings.md (see there for how they were measured)."
        )
    return notes


def synthetic_method_notes(args: argparse.Namespace) -> list[str]:
    return [
        "Synthetic 1e6-row designs (`benchmarks/synthetic.py`, simulated from a fixed seed "
        "in every worker, no data files): each contestant makes one warm-up fit of the same "
        "formula on a 1% version of the design (10,000 rows), then one timed fit of the "
        f"full design. A fit that runs past {args.synthetic_timeout:g} s is stopped and "
        "reported as 'did not finish'; a process whose resident memory passes "
        f"{args.memory_cap_gb:g} GB is stopped too. lme4 reads the same rows from a CSV "
        "file (reading is not timed) and reports its peak RSS from /proc/self/status "
        "(VmHWM), and so do the Python workers.",
    ]


def model_notes(chosen: list[models.Model], try_slow: bool) -> list[str]:
    notes = []
    keys = {m.key for m in chosen}
    if not try_slow and {"insteval_1", "insteval_2"} & keys:
        notes.append(
            "statsmodels on InstEval is not run by default (table: 'not run: too slow'): "
            "the crossed design needs one group of 73421 rows with 2972 + 1128 (+ 14) "
            "variance-component columns. With use_sparse=True, building the model alone took "
            "23 s and 3.6 GB of memory, and a single REML fit of insteval_1 had not finished "
            "when stopped at a 420 s wall-clock cap (about 4 CPU-minutes; measured on this "
            "machine while developing the suite, other jobs running). `--try-slow` attempts "
            "it under the --large-timeout cap."
        )
    for model in chosen:
        notes += [f"{model.key}: {n}" for n in model.notes]
    return notes


if __name__ == "__main__":
    sys.exit(main())
