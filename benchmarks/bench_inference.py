"""Time and memory of Satterthwaite and Kenward-Roger inference on the InstEval models.

    python benchmarks/bench_inference.py                 # everything; writes the docs page
    python benchmarks/bench_inference.py --models insteval_1 --tasks fit satterthwaite

The inference issue asks that Satterthwaite and Kenward-Roger denominator df for an
InstEval-size model (n = 73421) never build an n x n matrix. Each (model, task) pair runs
in a fresh Python process, one after the other, so that the peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that task alone:

    fit              load the data and fit the model (REML)
    satterthwaite    fit + fit.coef_table(ddf="satterthwaite")
    anova            fit + fit.anova(ddf="satterthwaite")     (type III)
    kenward-roger    fit + fit.coef_table(ddf="kenward-roger")

Besides wall time and peak RSS, every worker records

* the kernel's peak virtual size (VmPeak): address space ever reserved, so an n x n array
  that was allocated but never written (np.zeros) would still show up there;
* the peak RSS of the inference step alone (VmHWM, reset through /proc/self/clear_refs
  after the fit, where the kernel allows it);
* the largest new anonymous memory mapping seen by a sampling thread (every 20 ms) during
  the fit and during the inference step. glibc serves every allocation above 32 MiB with
  its own mmap, so this bounds the largest array the step formed from above (allocator
  arenas and OpenBLAS work buffers, 32 to 96 MiB, set a floor below which it says
  nothing).

The worker runs under an address-space limit (RLIMIT_AS, default 12 GiB), far below the
43 GB of one 73421 x 73421 float64 matrix: a task that completes under it cannot have
allocated one. BLAS runs single-threaded (OPENBLAS/OMP/MKL_NUM_THREADS=1) like the rest of
the benchmark suite, so that numbers are reproducible on a shared 2-core machine.

Output: docs/benchmarks-inference.md and benchmarks/results/inference.json (with --out
PAGE: PAGE and PAGE with a .json suffix, and docs/benchmarks.md is left alone). A link to
the page is appended to docs/benchmarks.md when it is missing; benchmarks/run.py rewrites
that file, so run this script after it (or re-add the link) when both are regenerated.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO / "tests" / "data" / "InstEval.csv.gz"
REFERENCE = REPO / "tests" / "reference"
DOCS_MD = REPO / "docs" / "benchmarks-inference.md"
SUITE_MD = REPO / "docs" / "benchmarks.md"
RESULTS_JSON = HERE / "results" / "inference.json"

SECTION_TITLE = "Satterthwaite and Kenward-Roger on InstEval"
LINK_LINE = f"## [{SECTION_TITLE}](benchmarks-inference.md)"

MODELS = {
    "insteval_1": "y ~ 1 + service + (1|s) + (1|d) + (1|dept)",
    "insteval_2": "y ~ 1 + service*dept + (1|s) + (1|d)",
}
FACTORS = ("s", "d", "dept", "service")
TASKS = ("fit", "satterthwaite", "anova", "kenward-roger")
TASK_CALLS = {
    "fit": "`lmer(formula, data, reml=True)`",
    "satterthwaite": 'fit + `fit.coef_table(ddf="satterthwaite")`',
    "anova": 'fit + `fit.anova(ddf="satterthwaite")` (type III)',
    "kenward-roger": 'fit + `fit.coef_table(ddf="kenward-roger")`',
}
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
SAMPLE_EVERY_S = 0.02
MIB = 1024.0**2
N_BY_N = 73421**2 * 8  # bytes of one dense n x n float64 matrix for InstEval


# ---------------------------------------------------------------------------------------
# worker side (one fresh process per model and task)
# ---------------------------------------------------------------------------------------


def _status_kib(field: str) -> float | None:
    """A ``kB`` field of /proc/self/status (VmPeak, VmHWM, ...), or None."""
    try:
        text = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return None


def _ru_maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _anonymous_mappings() -> dict[int, int]:
    """Start address -> size in bytes of this process's anonymous mappings.

    File-backed mappings, [heap], [stack] and the like are left out, and so are
    address-space reservations without access rights (``---p``), which hold no data.
    """
    out: dict[int, int] = {}
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as fh:
            for line in fh:
                parts = line.split(maxsplit=5)
                if len(parts) > 5 and parts[5].strip():
                    continue
                if parts[1].startswith("---"):
                    continue
                lo, hi = parts[0].split("-")
                out[int(lo, 16)] = int(hi, 16) - int(lo, 16)
    except OSError:
        pass
    return out


class MappingSampler:
    """Background thread: the largest anonymous mapping seen since the last ``phase``.

    Mappings that already exist when the sampler starts (after the data are read) are
    ignored: among them is pyarrow's memory pool, a 1 GiB address-space reservation of
    which only a few MiB are ever resident. Every array the fit and the inference step
    allocate above glibc's mmap threshold (at most 32 MiB) is a new mapping.
    """

    def __init__(self, every: float = SAMPLE_EVERY_S) -> None:
        self.every = every
        self.current = 0
        self.samples = 0
        self.baseline = {start: size for start, size in _anonymous_mappings().items()}
        self.ignored = max(self.baseline.values(), default=0)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _largest_new(self) -> int:
        now = _anonymous_mappings()
        return max((v for k, v in now.items() if k not in self.baseline), default=0)

    def _run(self) -> None:
        while not self._stop.is_set():
            size = self._largest_new()
            with self._lock:
                self.current = max(self.current, size)
                self.samples += 1
            self._stop.wait(self.every)

    def start(self) -> MappingSampler:
        self._thread.start()
        return self

    def phase(self) -> int:
        """Return the largest mapping of the phase just ended and start a new phase."""
        size = self._largest_new()
        with self._lock:
            out = max(self.current, size)
            self.current = 0
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def load_instEval():
    """InstEval with s, d, dept and service as factors (levels in numeric order, as R)."""
    import pandas as pd

    frame = pd.read_csv(DATA)
    for column in FACTORS:
        levels = sorted(frame[column].unique())
        frame[column] = pd.Categorical(
            frame[column].astype(str), categories=[str(v) for v in levels]
        )
    return frame


def blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "OPENBLAS_NUM_THREADS=" + os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(
        f"{i.get('internal_api', '?')} {i.get('version', '')}: {i.get('num_threads')} thread(s)"
        for i in info
    )


def worker(model_key: str, task: str, as_limit_gib: float) -> dict:
    if as_limit_gib > 0:
        cap = int(as_limit_gib * 1024**3)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    started = time.perf_counter()

    import warnings

    import numpy as np

    import mixedmodels as mm

    warnings.simplefilter("ignore")
    out: dict = {"model": model_key, "task": task, "status": "ok"}
    out["import_s"] = time.perf_counter() - started
    out["blas"] = blas_threads()
    out["mixedmodels_file"] = mm.__file__

    t0 = time.perf_counter()
    frame = load_instEval()
    out["load_s"] = time.perf_counter() - t0
    sampler = MappingSampler().start()
    out["ignored_mapping_mib"] = sampler.ignored / MIB

    t0 = time.perf_counter()
    fit = mm.lmer(MODELS[model_key], frame, reml=True, progress=False)
    out["fit_s"] = time.perf_counter() - t0
    out["largest_map_fit_mib"] = sampler.phase() / MIB
    out["rss_after_fit_mib"] = _ru_maxrss_mib()
    out["n"] = int(fit.deviance_function.n)
    out["p"] = int(fit.deviance_function.p)
    out["q"] = int(sum(term.nranef for term in fit.structure.terms))
    out["q_terms"] = {term.group: int(term.nranef) for term in fit.structure.terms}
    out["reml_criterion"] = float(fit.deviance_function(np.asarray(fit.theta)))

    if task != "fit":
        # Resetting VmHWM also resets ru_maxrss on Linux: the whole-process peak is the
        # larger of the reading just above and the one at the end.
        out["hwm_reset"] = _reset_hwm()
        t0 = time.perf_counter()
        if task == "satterthwaite":
            table = fit.coef_table(ddf="satterthwaite")
            out["df"] = {str(k): float(v) for k, v in table["df"].items()}
        elif task == "kenward-roger":
            table = fit.coef_table(ddf="kenward-roger")
            out["df"] = {str(k): float(v) for k, v in table["df"].items()}
            out["se"] = {str(k): float(v) for k, v in table["se"].items()}
        elif task == "anova":
            table = fit.anova(ddf="satterthwaite")
            out["anova"] = {
                str(term): {"NumDF": float(row["NumDF"]), "DenDF": float(row["DenDF"])}
                for term, row in table.iterrows()
            }
        else:
            raise ValueError(f"unknown task {task!r}")
        out["method_s"] = time.perf_counter() - t0
        out["largest_map_method_mib"] = sampler.phase() / MIB
        hwm = _status_kib("VmHWM")
        out["method_hwm_mib"] = hwm / 1024.0 if (hwm is not None and out["hwm_reset"]) else None

    sampler.stop()
    out["samples"] = sampler.samples
    out["peak_rss_mib"] = max(out["rss_after_fit_mib"], _ru_maxrss_mib())
    vm_peak = _status_kib("VmPeak")
    out["vm_peak_mib"] = None if vm_peak is None else vm_peak / 1024.0
    out["in_process_s"] = time.perf_counter() - started
    return out


# ---------------------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------------------


def worker_env(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in BLAS_VARS:
        env[var] = "1"
    paths = [str(src), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONWARNINGS"] = "ignore"
    return env


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def uptime_line() -> str:
    try:
        done = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "uptime unavailable; load average " + " ".join(map(str, load_average()))
    return done.stdout.strip()


def run_task(model_key: str, task: str, timeout: float, as_limit_gib: float, src: Path) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        model_key,
        task,
        "--as-limit-gib",
        str(as_limit_gib),
    ]
    load_before = load_average()
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, env=worker_env(src), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        row = {
            "model": model_key,
            "task": task,
            "status": "stopped",
            "reason": f"not finished within {timeout:.0f} s; the process was stopped",
        }
    else:
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            row = json.loads(lines[-1])
        else:
            tail = " ".join(done.stderr.strip().splitlines()[-3:])
            row = {
                "model": model_key,
                "task": task,
                "status": "failed",
                "reason": f"exit code {done.returncode}: {tail}",
            }
    row["wall_s"] = time.perf_counter() - t0
    row["load_before"] = load_before
    row["load_after"] = load_average()
    return row


def _git(*args: str, stdin: str | None = None) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def source_state(src: Path) -> dict:
    """Which code the workers import: the git commit and how ``src`` differs from it.

    Compares the blob hash of every file under ``src`` with ``git ls-tree HEAD src``, so it
    works for the checkout's own src/ (uncommitted edits) and for an exported copy.
    """
    state: dict = {"src": str(src), "commit": (_git("rev-parse", "HEAD") or "?").strip()}
    tree = _git("ls-tree", "-r", "HEAD", "--", "src")
    files = sorted(
        f
        for f in src.rglob("*")
        if f.is_file() and "__pycache__" not in f.parts and ".egg-info" not in str(f)
    )
    hashes = _git("hash-object", "--stdin-paths", stdin="\n".join(map(str, files)) + "\n")
    if tree is None or hashes is None:
        state["differs"] = None
        return state
    committed = {}
    for line in tree.splitlines():
        meta, path = line.split("\t", 1)
        committed[path[len("src/") :]] = meta.split()[2]
    present = {str(f.relative_to(src)): h for f, h in zip(files, hashes.split(), strict=True)}
    differs = [
        f"{name} ({'untracked' if name not in committed else 'modified'})"
        for name, blob in present.items()
        if committed.get(name) != blob
    ]
    differs += [f"{name} (missing)" for name in committed if name not in present]
    state["differs"] = differs
    return state


def reference(model_key: str) -> dict:
    return json.loads((REFERENCE / f"{model_key}_reml.json").read_text(encoding="utf-8"))


def check_no_n_by_n(row: dict, as_limit_gib: float) -> tuple[bool, str]:
    """Whether this task provably never held a 73421 x 73421 float64 array."""
    if row.get("status") != "ok":
        return False, "did not complete"
    n = row["n"]
    nn_mib = n * n * 8 / MIB
    peak = row["peak_rss_mib"]
    vm = row.get("vm_peak_mib")
    ok = peak < nn_mib / 10
    why = [f"peak RSS {peak / 1024:.2f} GiB < {nn_mib / 10240:.1f} GiB"]
    if vm is not None:
        ok = ok and vm < nn_mib
        why.append(f"VmPeak {vm / 1024:.2f} GiB < {nn_mib / 1024:.1f} GiB")
    if as_limit_gib > 0:
        ok = ok and as_limit_gib * 1024 < nn_mib
        why.append(f"ran under RLIMIT_AS = {as_limit_gib:g} GiB")
    return ok, "; ".join(why)


def side(mib: float | None) -> str:
    """The side of a square float64 matrix with this many MiB."""
    if not mib:
        return ""
    return f"{math.sqrt(mib * MIB / 8):.0f}"


def fmt(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def markdown(results: dict) -> str:
    rows = results["rows"]
    limit = results["settings"]["as_limit_gib"]
    by = {(r["model"], r["task"]): r for r in rows}
    out = [f"# {SECTION_TITLE}", ""]
    out += [
        "Generated by `python benchmarks/bench_inference.py` (do not edit by hand). "
        "Issue 3 asks that Satterthwaite and Kenward-Roger denominator df for "
        "InstEval-size models never build n x n matrices (n = 73421: one dense n x n "
        f"float64 matrix would take {N_BY_N / 1e9:.1f} GB = {N_BY_N / 1024**3:.1f} GiB); "
        "this page reports their time and memory. Linked from the end of "
        "[benchmarks.md](benchmarks.md), which `benchmarks/run.py` regenerates.",
        "",
        "## Setup",
        "",
        f"- Run: {results['machine']['date_utc']} on {results['machine']['cpu']}, "
        f"{results['machine']['cores']} cores, {fmt(results['machine']['ram_gib'])} GiB RAM, "
        f"Python {results['machine']['python']}; "
        + ", ".join(
            f"{k} {v}"
            for k, v in results["machine"]["versions"].items()
            if k in ("mixedmodels", "numpy", "scipy", "pandas")
        )
        + ".",
        f"- BLAS: single-threaded (`OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=MKL_NUM_THREADS=1` "
        f"in every worker; reported: {results['blas']}), as in the rest of the benchmark "
        "suite, for reproducibility on a shared machine.",
        f"- Machine load: `uptime` before the run: `{results['uptime_before']}`; after: "
        f"`{results['uptime_after']}`. Other engineers' jobs shared the 2 cores, so the "
        "absolute times are inflated and noisy; each row also lists the 1-minute load "
        "average before and after the task.",
        code_line(results),
        "- Data: `tests/data/InstEval.csv.gz` (73421 rows); `s`, `d`, `dept`, `service` "
        "as categorical (levels in numeric order, as R). REML fits.",
        "- Each (model, task) runs in a fresh Python process, one at a time, so peak RSS "
        "(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) is that task's own. "
        f"Per-task time limit {results['settings']['timeout']:.0f} s; address-space limit "
        f"(RLIMIT_AS) {limit:g} GiB per worker.",
        "",
        "Tasks:",
        "",
    ]
    out += [f"- `{t}`: {TASK_CALLS[t]}" for t in results["settings"]["tasks"]]
    out += [
        "",
        "## Time and memory",
        "",
        "- *wall*: the whole worker process (interpreter start-up, imports, reading the "
        "CSV, fit, inference). *fit* and *inference* are timed in-process "
        "(`time.perf_counter`); *inference* is the extra time over the fit, and *x fit* "
        "that time as a multiple of the same process's fit time.",
        "- *peak RSS*: `ru_maxrss` of the worker (whole process, data and fit included). "
        "*extra RSS*: peak RSS minus that of the fit-only worker of the same model (0 "
        "when the inference step stays below the fit's own peak). *inference peak*: "
        "peak RSS during the inference step alone (VmHWM reset through "
        "`/proc/self/clear_refs` after the fit; the process's resident memory at that "
        "time counts, the fit's transient peak does not).",
        "- *VmPeak*: peak virtual address space of the worker (includes a 1 GiB "
        "reservation of pyarrow's memory pool, of which a few MiB are resident, and "
        "OpenBLAS buffers).",
        "- *largest mapping*: the largest new anonymous memory mapping sampled every "
        f"{SAMPLE_EVERY_S * 1000:.0f} ms during the inference step (during the fit, for "
        "the fit rows), with the side of a square float64 matrix of that size. glibc "
        "gives every allocation above 32 MiB its own mapping, so this bounds the largest "
        "array from above. Values of 32 to 96 MiB are at the floor of this measure: "
        "the allocator and BLAS also map regions that size (glibc thread arenas are "
        "64 MiB-aligned 64 MiB regions, OpenBLAS work buffers 32 MiB, and adjacent "
        "mappings can merge), so they show only that no array was larger. "
        "Kenward-Roger's value is exactly one q x q float64 matrix.",
        "",
        "| model | task | wall s | fit s | inference s | x fit | peak RSS MiB | extra "
        "RSS MiB | inference peak MiB | VmPeak MiB | largest mapping MiB (side) | load "
        "before/after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        model, task = row["model"], row["task"]
        load = "/".join(
            f"{x[0]:.1f}" if x else "?" for x in (row["load_before"], row["load_after"])
        )
        if row["status"] != "ok":
            out.append(
                f"| {model} | {task} | {fmt(row['wall_s'], 0)} | {row['status']}: "
                f"{row['reason']} | | | | | | | | {load} |"
            )
            continue
        base = by.get((model, "fit"))
        extra_rss = ""
        if base and base.get("status") == "ok" and task != "fit":
            extra_rss = f"{max(row['peak_rss_mib'] - base['peak_rss_mib'], 0.0):.0f}"
        if task == "fit":
            method, ratio, largest = "", "", row["largest_map_fit_mib"]
        else:
            method = fmt(row["method_s"])
            ratio = f"{row['method_s'] / row['fit_s']:.1f}"
            largest = row["largest_map_method_mib"]
        out.append(
            f"| {model} | {task} | {fmt(row['wall_s'])} | {fmt(row['fit_s'])} | {method} | "
            f"{ratio} | "
            f"{fmt(row['peak_rss_mib'], 0)} | {extra_rss} | {fmt(row.get('method_hwm_mib'), 0)} "
            f"| {fmt(row.get('vm_peak_mib'), 0)} | {fmt(largest)} ({side(largest)}) | {load} |"
        )
    out += ["", "## No n x n matrix", ""]
    dims = results["dims"]
    for model in results["settings"]["models"]:
        d = dims.get(model)
        if not d:
            continue
        terms = " + ".join(f"{v} ({k})" for k, v in d["q_terms"].items())
        q_r = d["q"] - next(iter(d["q_terms"].values()))
        out.append(
            f"- {model}: n = {d['n']}, p = {d['p']}, q = {terms} = {d['q']}; "
            f"as float64: n x n = {d['n'] ** 2 * 8 / MIB:.0f} MiB, n x q = "
            f"{d['n'] * d['q'] * 8 / MIB:.0f} MiB, q x q = {d['q'] ** 2 * 8 / MIB:.1f} MiB, "
            f"n x p = {d['n'] * d['p'] * 8 / MIB:.1f} MiB, q_rest x q_rest ({q_r}) = "
            f"{q_r**2 * 8 / MIB:.1f} MiB."
        )
    out += [
        "",
        "Largest dense matrix each method forms, read from the code and consistent with "
        "the sampled largest mapping above:",
        "",
        "- fit: the blocked Cholesky factor of `mixedmodels.objective.profiled_deviance` "
        "works from the cross products Z'Z, Z'X, X'X; term 1 (`s`, 2972 levels) is "
        "eliminated level by level, "
        "the other terms form one dense q_rest x q_rest block (`fit.factor.L22`; q_rest = "
        "q minus the levels of `s`). The other large array the fit keeps is the n x p "
        "fixed-effects design X. Largest: n x p or q_rest x q_rest.",
        "- Satterthwaite (`inference/satterthwaite.py`): the same blocked factor at "
        "1 + 2k theta values (exact first derivatives of vcov(beta) and r^2 from the "
        "factor at the optimum; Hessian by central differences of the exact gradient; "
        "k = number of theta: 7 factorisations and 6 gradients for insteval_1, 5 and 4 for "
        "insteval_2), plus (k+1) x (k+1) and (k+1) x p x p arrays. Largest: q_rest x "
        "q_rest (the gradient's inverse of the rest block), one at a time; nothing n x n "
        "or q x q.",
        "- anova with Satterthwaite: the same (the varpar covariance is computed once per "
        "fit), plus p x p contrast matrices.",
        "- Kenward-Roger (`inference/kenward_roger.py`): the Woodbury identity on the "
        "cross products; dense q x q matrices (Z'Z, Lambda, Lambda' Z'Z Lambda + I, W, "
        "W Z'Z, Z' Sigma^-1 Z, Sigma^-1 Z factor, Z' Sigma^-2 Z) plus one q x q matrix "
        "per variance parameter (D_r Z' Sigma^-1 Z), and (m, m, p, p) arrays. Largest: "
        "q x q" + kr_count(results, by) + "; nothing n x n and nothing n x q.",
        "",
        "Check per task: peak RSS below a tenth of one n x n float64 matrix, peak virtual "
        "size below one n x n matrix, and the worker ran under an address-space limit "
        "smaller than one n x n matrix (so an attempt to allocate one would have failed "
        "with MemoryError, not gone unnoticed):",
        "",
        "| model | task | no n x n | evidence |",
        "|---|---|---|---|",
    ]
    for row in rows:
        ok, why = check_no_n_by_n(row, limit)
        verdict = "yes" if ok else ("not checked" if row["status"] != "ok" else "FAILED")
        out.append(f"| {row['model']} | {row['task']} | {verdict} | {why} |")
    out += ["", "## Degrees of freedom against lmerTest", ""]
    out += [
        "Reference: `tests/reference/<model>_reml.json` (lme4 1.1.31, lmerTest 3.1.3, "
        "pbkrtest 0.5.2). pbkrtest has no InstEval reference: the reference run skipped it "
        "because pbkrtest forms dense n x n matrices for n > 3000, so the Kenward-Roger df "
        "are shown next to Satterthwaite's without a reference.",
        "",
    ]
    for model in results["settings"]["models"]:
        out += df_section(model, by)
    return "\n".join(out).rstrip() + "\n"


def code_line(results: dict) -> str:
    before, after = results["source_before"], results["source_after"]
    if before["src"] == str(REPO / "src"):
        where = "the checkout's `src/`"
    else:
        where = f"`{before['src']}` (`--src`; for example an export made with `git archive`)"
    text = f"- Code: mixedmodels from {where} at commit `{before['commit'][:12]}`"
    if before.get("differs") is None:
        text += " (could not compare with git)."
    elif before["differs"]:
        text += ", with uncommitted changes in: " + ", ".join(before["differs"]) + "."
    else:
        text += ", identical to the commit."
    if before != after:
        text += (
            " **The source changed while the benchmark ran** (after the run: "
            + (", ".join(after.get("differs") or []) or "identical to the commit")
            + "), so rows may mix versions."
        )
    return text


def kr_count(results: dict, by: dict) -> str:
    """The Kenward-Roger extra RSS in units of one q x q float64 matrix, per model."""
    parts = []
    for model in results["settings"]["models"]:
        kr, base = by.get((model, "kenward-roger"), {}), by.get((model, "fit"), {})
        if kr.get("status") != "ok" or base.get("status") != "ok":
            continue
        one = kr["q"] ** 2 * 8 / MIB
        extra = kr["peak_rss_mib"] - base["peak_rss_mib"]
        parts.append(f"{model}: {extra:.0f} MiB = {extra / one:.1f} x {one:.0f} MiB")
    if not parts:
        return ""
    return " (its extra RSS over the fit, in q x q matrices: " + "; ".join(parts) + ")"


def df_section(model: str, by: dict) -> list[str]:
    ref = reference(model)
    ref_df = {fe["name"]: fe["df_satterthwaite"] for fe in ref["fixed_effects"]}
    satt = by.get((model, "satterthwaite"), {}).get("df") or {}
    kr = by.get((model, "kenward-roger"), {}).get("df") or {}
    if not (satt or kr):
        return []
    out = [f"### {model}: `{MODELS[model]}`", ""]
    crit = next(
        (r["reml_criterion"] for r in by.values() if r["model"] == model and "reml_criterion" in r),
        None,
    )
    if crit is not None:
        out += [
            f"REML criterion: ours {crit:.6f}, lme4 {ref['REMLcrit']:.6f} (difference "
            f"{crit - ref['REMLcrit']:+.1e}).",
            "",
        ]
    if satt:
        rel = [abs(satt[k] / ref_df[k] - 1.0) for k in satt if k in ref_df]
        if rel:
            out += [
                f"Satterthwaite df: largest relative difference from lmerTest "
                f"{max(rel):.2e} over {len(rel)} coefficients.",
                "",
            ]
    out += [
        "| coefficient | lmerTest df | ours (Satterthwaite) | rel. diff | ours (KR) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, ref_value in ref_df.items():
        ours = satt.get(name)
        rel = "" if ours is None else f"{ours / ref_value - 1.0:+.1e}"
        out.append(
            f"| {name} | {ref_value:.2f} | {fmt(ours, 2)} | {rel} | {fmt(kr.get(name), 2)} |"
        )
    anova_row = by.get((model, "anova"), {}).get("anova")
    ref_anova = ref.get("anova_type3", {}).get("Satterthwaite") or []
    if anova_row and ref_anova:
        out += [
            "",
            "Type III anova, Satterthwaite DenDF:",
            "",
            "| term | NumDF | lmerTest DenDF | ours | rel. diff |",
            "|---|---:|---:|---:|---:|",
        ]
        for ref_row in ref_anova:
            ours = anova_row.get(ref_row["term"], {})
            den = ours.get("DenDF")
            rel = "" if den is None else f"{den / ref_row['DenDF'] - 1.0:+.1e}"
            out.append(
                f"| {ref_row['term']} | {ref_row['NumDF']} | {ref_row['DenDF']:.2f} | "
                f"{fmt(den, 2)} | {rel} |"
            )
    out.append("")
    return out


def ensure_link() -> bool:
    """Append the link line to docs/benchmarks.md unless it is already there."""
    if not SUITE_MD.is_file():
        return False
    text = SUITE_MD.read_text(encoding="utf-8")
    if "benchmarks-inference.md" in text:
        return False
    SUITE_MD.write_text(text.rstrip("\n") + "\n\n" + LINK_LINE + "\n", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds allowed per task (default 600)"
    )
    parser.add_argument(
        "--as-limit-gib",
        type=float,
        default=12.0,
        help="address-space limit of each worker in GiB (default 12; 0 = none)",
    )
    parser.add_argument("--out", type=Path, default=DOCS_MD, help="markdown page to write")
    parser.add_argument(
        "--src",
        type=Path,
        default=REPO / "src",
        help="directory the workers import mixedmodels from (default: this checkout's src/; "
        "e.g. an export of a commit: git archive HEAD src | tar -x -C DIR, then DIR/src)",
    )
    parser.add_argument("--no-link", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "TASK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        model_key, task = args.worker
        print(json.dumps(worker(model_key, task, args.as_limit_gib)), flush=True)
        return 0

    sys.path.insert(0, str(HERE))
    import machine  # the suite's machine description (benchmarks/machine.py)

    if "fit" not in args.tasks:
        args.tasks.insert(0, "fit")  # the baseline for the extra time and memory
    results: dict = {
        "settings": {
            "models": args.models,
            "tasks": args.tasks,
            "timeout": args.timeout,
            "as_limit_gib": args.as_limit_gib,
            "blas_threads": 1,
            "src": str(args.src.resolve()),
        },
        "machine": machine.describe(),
        "uptime_before": uptime_line(),
        "source_before": source_state(args.src.resolve()),
        "rows": [],
        "dims": {},
    }
    print(f"[bench_inference] {results['uptime_before']}", file=sys.stderr, flush=True)
    for model_key in args.models:
        for task in args.tasks:
            row = run_task(model_key, task, args.timeout, args.as_limit_gib, args.src.resolve())
            results["rows"].append(row)
            if row["status"] == "ok":
                results["dims"].setdefault(
                    model_key, {k: row[k] for k in ("n", "p", "q", "q_terms")}
                )
                results.setdefault("blas", row["blas"])
                extra = f"inference {row['method_s']:.1f} s, " if "method_s" in row else ""
                msg = (
                    f"fit {row['fit_s']:.1f} s, {extra}peak RSS "
                    f"{row['peak_rss_mib']:.0f} MiB, wall {row['wall_s']:.1f} s"
                )
            else:
                msg = f"{row['status']}: {row['reason']}"
            print(f"  {model_key:10s} {task:14s} {msg}", file=sys.stderr, flush=True)
    results.setdefault("blas", "unknown")
    results["uptime_after"] = uptime_line()
    results["source_after"] = source_state(args.src.resolve())

    # A page written elsewhere (--out) keeps its JSON beside it, not over the published one.
    json_path = RESULTS_JSON if args.out.resolve() == DOCS_MD else args.out.with_suffix(".json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    text = markdown(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    if args.out.resolve() == DOCS_MD and not args.no_link:
        ensure_link()
    print(text)
    checks = [check_no_n_by_n(r, args.as_limit_gib)[0] for r in results["rows"]]
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
