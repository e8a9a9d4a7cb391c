"""Streamed fits of large synthetic data from Parquet: time, peak memory and correctness.

Model: ``y ~ x + f + (1 + x | g)`` with 100,000 groups ``g``, a three-level factor ``f``
and known parameters. Rows are written once (10 files of 1e6 rows) to ``--data-dir``;
the fit at ``n`` rows reads the first ``n / 1e6`` files. Each size runs in a fresh
process, so its peak RSS is its own.

Run on demand (not part of the test suite)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_large_data.py            # 1e6, 3e6, 1e7
    python benchmarks/bench_large_data.py --sizes 1e6 --data-dir /tmp/mm-large
    python benchmarks/bench_large_data.py --design product --sizes 1e6,1e7   # issue 18
    nice -n 10 python benchmarks/bench_large_data.py --grid --resume       # rows x users x items
    python benchmarks/bench_large_data.py --grid --docs                     # its table only

Writes ``benchmarks/results/large_data.json`` and, with ``--docs``, the table and plot in
``docs/large-data.md`` / ``docs/large-data.png``. ``--grid`` runs the rows x users x items
grid of the product design (:mod:`large_grid`: 1e6 and 1e7 rows streamed, 1e8 rows on a
Dask ``LocalCluster``) into ``benchmarks/results/large_grid.json``; with ``--docs`` it
renders that table into the grid section of ``docs/large-data.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = "/tmp/mixedmodels-large-data"
FORMULA = "y ~ x + f + (1 + x | g)"
ROWS_PER_FILE = 1_000_000
NGROUPS = 100_000
SEED = 20240601
#: The simulation's true values.
TRUTH = {
    "beta": {"(Intercept)": 1.0, "x": 0.5, "fb": 0.3, "fc": -0.2},
    "sd_intercept": 0.5,
    "sd_slope": 0.2,
    "corr": 0.3,
    "sigma": 1.0,
}


def write_data(folder: Path, nfiles: int) -> list[Path]:
    """Write (or reuse) ``nfiles`` Parquet files of the simulation; return their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    spec = {"seed": SEED, "rows_per_file": ROWS_PER_FILE, "groups": NGROUPS, "truth": TRUTH}
    files = [folder / f"part-{i:03d}.parquet" for i in range(nfiles)]
    if manifest.exists() and json.loads(manifest.read_text()) == spec:
        if all(f.exists() for f in files):
            return files
    rng = np.random.default_rng(SEED)
    sd = np.array([TRUTH["sd_intercept"], TRUTH["sd_slope"]])
    corr = np.array([[1.0, TRUTH["corr"]], [TRUTH["corr"], 1.0]])
    cov = corr * np.outer(sd, sd)
    u = rng.multivariate_normal(np.zeros(2), cov, size=NGROUPS)
    beta = TRUTH["beta"]
    for i, path in enumerate(files):
        file_rng = np.random.default_rng([SEED, i])
        g = file_rng.integers(0, NGROUPS, ROWS_PER_FILE)
        x = file_rng.normal(size=ROWS_PER_FILE)
        f = file_rng.integers(0, 3, ROWS_PER_FILE)
        y = (
            beta["(Intercept)"]
            + beta["x"] * x
            + np.where(f == 1, beta["fb"], 0.0)
            + np.where(f == 2, beta["fc"], 0.0)
            + u[g, 0]
            + u[g, 1] * x
            + TRUTH["sigma"] * file_rng.normal(size=ROWS_PER_FILE)
        )
        table = pa.table(
            {
                "y": y,
                "x": x,
                "f": pa.array(np.array(["a", "b", "c"])[f]),
                "g": g,
            }
        )
        pq.write_table(table, path, row_group_size=ROWS_PER_FILE // 4)
    manifest.write_text(json.dumps(spec))
    return files


#: The product team's design (issue 18): 10 events per user, a random slope per user,
#: 500 items; simulated with numpy seed 7.
PRODUCT_FORMULA = "y ~ x + f + (1 + x | user) + (1 | item)"
PRODUCT_EVENTS_PER_USER = 10
PRODUCT_ITEMS = 500
PRODUCT_SEED = 7
PRODUCT_TRUTH = {
    "beta": {"(Intercept)": 1.0, "x": 0.5, "fb": 0.3, "fc": -0.2},
    "sd_user": 0.5,
    "sd_user_x": 0.2,
    "sd_item": 0.3,
    "sigma": 1.0,
}


def simulate_product(nusers: int, seed: int = PRODUCT_SEED):
    """The product design's columns for ``nusers`` users (10 events each), as numpy arrays:
    ``y``, ``x``, ``f`` (codes 0..2), ``user``, ``item``."""
    rng = np.random.default_rng(seed)
    n = nusers * PRODUCT_EVENTS_PER_USER
    user = np.repeat(np.arange(nusers), PRODUCT_EVENTS_PER_USER)
    item = rng.integers(0, PRODUCT_ITEMS, n)
    x = rng.normal(size=n)
    f = rng.integers(0, 3, n)
    t = PRODUCT_TRUTH
    b_user = rng.normal(0.0, t["sd_user"], nusers)
    b_user_x = rng.normal(0.0, t["sd_user_x"], nusers)
    b_item = rng.normal(0.0, t["sd_item"], PRODUCT_ITEMS)
    beta = t["beta"]
    y = (
        beta["(Intercept)"]
        + beta["x"] * x
        + np.array([0.0, beta["fb"], beta["fc"]])[f]
        + b_user[user]
        + b_user_x[user] * x
        + b_item[item]
        + t["sigma"] * rng.normal(size=n)
    )
    return {"y": y, "x": x, "f": f, "user": user, "item": item}


def write_product_data(folder: Path, nusers: int, nfiles: int) -> list[Path]:
    """Write (or reuse) the product design for ``nusers`` users in ``nfiles`` Parquet files
    (whole users per file; ``f`` dictionary-encoded strings, ``item`` strings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    spec = {"design": "product", "seed": PRODUCT_SEED, "users": nusers, "files": nfiles}
    files = [folder / f"part-{i:03d}.parquet" for i in range(nfiles)]
    if manifest.exists() and json.loads(manifest.read_text()) == spec:
        if all(p.exists() for p in files):
            return files
    cols = simulate_product(nusers)
    n = cols["y"].shape[0]
    per = -(-nusers // nfiles) * PRODUCT_EVENTS_PER_USER
    levels = pa.array(["a", "b", "c"])
    for i, path in enumerate(files):
        s = slice(i * per, min((i + 1) * per, n))
        table = pa.table(
            {
                "y": cols["y"][s],
                "x": cols["x"][s],
                "f": pa.DictionaryArray.from_arrays(pa.array(cols["f"][s].astype(np.int8)), levels),
                "user": cols["user"][s],
                "item": cols["item"][s],
            }
        )
        pq.write_table(table, path, row_group_size=250_000)
    manifest.write_text(json.dumps(spec))
    return files


def worker(files: list[str], chunk_rows: int | None) -> dict:
    """Fit once in this process; return timings, peak RSS and the estimates."""
    import warnings

    import mixedmodels as mm
    from mixedmodels.models.streamed import streamed_cross_products

    t0 = time.perf_counter()
    result = streamed_cross_products(FORMULA, files, chunk_rows=chunk_rows, progress=False)
    t1 = time.perf_counter()
    model = mm.LinearMixedModel(
        result.design, formula=FORMULA, cross_products=result.cross_products
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = model.fit()
    t2 = time.perf_counter()
    vc = fit.varcorr
    sds = vc[vc["group"] == "g"]
    fixef = fit.fixef
    se = fit.se
    return {
        "rows": int(result.nrows),
        "chunks": int(result.nchunks),
        "pass1_s": result.seconds["pass1"],
        "pass2_s": result.seconds["pass2"],
        "optimise_s": t2 - t1,
        "total_s": t2 - t0,
        "evaluations": int(fit.opt.evaluations),
        "seconds_per_evaluation": (t2 - t1) / max(int(fit.opt.evaluations), 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "fixef": {k: float(v) for k, v in fixef.items()},
        "se": {k: float(v) for k, v in se.items()},
        "z_vs_truth": {k: float((fixef[k] - TRUTH["beta"][k]) / se[k]) for k in fixef.index},
        "sd_intercept": float(sds[sds["term"] == "(Intercept)"]["sd"].dropna().iloc[0]),
        "sd_slope": float(sds[sds["term"] == "x"]["sd"].dropna().iloc[0]),
        "corr": float(sds["corr"].dropna().iloc[0]),
        "sigma": float(fit.sigma),
        "warnings": [str(w.message) for w in caught],
        "converged": bool(fit.converged),
    }


def run_product(files: list[Path]) -> dict:
    """The product design through the command line, as users run it (``--json``: the fit,
    Satterthwaite's df), in a fresh process: wall time, peak RSS, the JSON's estimates."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    env["PYTHONPATH"] = str(ROOT / "src")
    pattern = str(files[0].parent / "*.parquet")
    code = (
        "import json, resource, sys\n"
        "from mixedmodels.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(json.dumps({'peak_rss_mb': "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))\n"
    )
    cmd = [sys.executable, "-c", code, "fit", pattern, "-f", PRODUCT_FORMULA, "--json"]
    load_before = os.getloadavg()[0]
    # CPU seconds (user + system) of the child: steadier than wall time on a shared machine.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    seconds = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = out.stdout.strip().splitlines()
    fit = json.loads("\n".join(lines[:-1]))
    return {
        "rows": fit["nobs"],
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": json.loads(lines[-1])["peak_rss_mb"],
        "theta": fit["theta"],
        "reml_criterion": fit["reml_criterion"],
        "fixef": {r["term"]: r["estimate"] for r in fit["fixef"]},
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def run_size(files: list[Path], chunk_rows: int | None) -> dict:
    """Run :func:`worker` in a fresh interpreter (own peak RSS) and return its record."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--worker", *map(str, files)]
    if chunk_rows:
        cmd += ["--chunk-rows", str(chunk_rows)]
    wall = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["process_wall_s"] = time.perf_counter() - wall
    record["load_before"] = load_before
    record["load_after"] = os.getloadavg()[0]
    return record


def write_docs(records: list[dict], chunk_rows: int | None) -> None:
    """Plot time and memory against rows and rewrite the results table in the doc."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.array([r["rows"] for r in records]) / 1e6
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(rows, [r["pass1_s"] + r["pass2_s"] for r in records], "o-", label="passes 1+2")
    ax1.plot(rows, [r["optimise_s"] for r in records], "s-", label="optimiser")
    ax1.plot(rows, [r["total_s"] for r in records], "^-", label="total")
    ax1.axhline(60, color="grey", ls=":", lw=1)
    ax1.set_xlabel("rows (millions)")
    ax1.set_ylabel("seconds")
    ax1.legend(frameon=False)
    ax1.set_title("wall time")
    ax2.plot(rows, [r["peak_rss_mb"] for r in records], "o-", color="C3")
    ax2.axhline(2048, color="grey", ls=":", lw=1)
    ax2.set_xlabel("rows (millions)")
    ax2.set_ylabel("MB")
    ax2.set_ylim(0, 2200)
    ax2.set_title("peak RSS")
    fig.suptitle(f"{FORMULA}, {NGROUPS:,} groups, streamed from Parquet")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "large-data.png", dpi=110)

    lines = [
        "| rows | chunks | pass 1 (s) | pass 2 (s) | optimiser (s) | evaluations | total (s) "
        "| peak RSS (MB) | load (1-min avg) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r['rows']:,} | {r['chunks']} | {r['pass1_s']:.1f} | {r['pass2_s']:.1f} | "
            f"{r['optimise_s']:.1f} | {r['evaluations']} | {r['total_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['load_before']:.1f}-{r['load_after']:.1f} |"
        )
    lines += [
        "",
        "| rows | " + " | ".join(f"{k} (z vs truth)" for k in TRUTH["beta"]) + " | sd(Int) "
        "| sd(x) | corr | sigma |",
        "|---:|" + "---:|" * (len(TRUTH["beta"]) + 4),
    ]
    for r in records:
        fx = " | ".join(
            f"{r['fixef'][k]:.4f} ± {r['se'][k]:.4f} ({r['z_vs_truth'][k]:+.2f})"
            for k in TRUTH["beta"]
        )
        lines.append(
            f"| {r['rows']:,} | {fx} | {r['sd_intercept']:.4f} | {r['sd_slope']:.4f} | "
            f"{r['corr']:.3f} | {r['sigma']:.4f} |"
        )
    truth = " | ".join(f"{v}" for v in TRUTH["beta"].values())
    lines.append(
        f"| truth | {truth} | {TRUTH['sd_intercept']} | {TRUTH['sd_slope']} | "
        f"{TRUTH['corr']} | {TRUTH['sigma']} |"
    )
    table = "\n".join(lines)
    doc = ROOT / "docs" / "large-data.md"
    text = doc.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        rows = chunk_rows or "default (500,000)"
        note = f"\nchunk_rows = {rows}; machine: {os.cpu_count()} cores.\n\n"
        doc.write_text(head + start + note + table + "\n" + end + tail)


def run_grid_cli(args: argparse.Namespace) -> int:
    """``--grid``: run (``--cells``, ``--resume``) and/or render (``--docs``) the grid."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import large_grid

    results = Path(args.results) if args.results else large_grid.RESULTS
    data_dir = Path(
        args.data_dir if args.data_dir != DEFAULT_DATA_DIR else large_grid.DEFAULT_DATA_DIR
    )
    only = [large_grid.parse_cell_key(c) for c in args.cells.split(",")] if args.cells else None
    if only is not None or args.resume or not args.docs:
        large_grid.run_grid(
            data_dir, resume=args.resume, only=only, results=results, timeout=args.timeout
        )
    if args.docs:
        pairs = large_grid.update_item_pairs(data_dir)
        large_grid.write_grid_docs(large_grid.load_results(results), pairs)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,3e6,1e7", help="comma-separated row counts")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--chunk-rows", type=int, default=None)
    parser.add_argument("--docs", action="store_true", help="update docs/large-data.md and plot")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument(
        "--design",
        choices=["slope", "product"],
        default="slope",
        help="slope: y ~ x + f + (1 + x | g), 1e5 groups; product: issue 18's "
        "y ~ x + f + (1 + x | user) + (1 | item), 10 events per user, 500 items",
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="the rows x users x items grid of the product design (benchmarks/large_grid.py)",
    )
    parser.add_argument("--resume", action="store_true", help="--grid: skip cells already run")
    parser.add_argument(
        "--cells",
        default=None,
        help="--grid: only these cells, rows x users x items, e.g. 1e7x1e6x1e2,1e5x1e4x1e2:dask",
    )
    parser.add_argument(
        "--results",
        default=None,
        help="--grid: results JSON (default benchmarks/results/large_grid.json)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="--grid: seconds per cell")
    args = parser.parse_args(argv)
    if args.grid:
        return run_grid_cli(args)
    if args.design == "product" and not args.worker:
        records = []
        for size in (int(float(s)) for s in args.sizes.split(",")):
            users = size // PRODUCT_EVENTS_PER_USER
            folder = Path(args.data_dir) / f"product-{size}"
            files = write_product_data(folder, users, max(1, size // ROWS_PER_FILE))
            record = run_product(files)
            records.append(record)
            print(
                f"{record['rows']:>11,} rows: {record['seconds']:.1f} s "
                f"(CPU {record['cpu_seconds']:.1f} s), peak RSS "
                f"{record['peak_rss_mb']:.0f} MB, load {record['load_before']:.1f}-"
                f"{record['load_after']:.1f}",
                flush=True,
            )
        out = ROOT / "benchmarks" / "results" / "large_data_product.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(records, indent=1))
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, args.chunk_rows)))
        return 0
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    nfiles = max(-(-s // ROWS_PER_FILE) for s in sizes)
    files = write_data(Path(args.data_dir), nfiles)
    records = []
    for size in sizes:
        record = run_size(files[: -(-size // ROWS_PER_FILE)], args.chunk_rows)
        records.append(record)
        print(
            f"{record['rows']:>11,} rows: pass1 {record['pass1_s']:.1f} s, pass2 "
            f"{record['pass2_s']:.1f} s, optimiser {record['optimise_s']:.1f} s "
            f"({record['evaluations']} evaluations), total {record['total_s']:.1f} s, peak RSS "
            f"{record['peak_rss_mb']:.0f} MB, load {record['load_before']:.1f}",
            flush=True,
        )
    out = ROOT / "benchmarks" / "results" / "large_data.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(records, indent=1))
    if args.docs:
        write_docs(records, args.chunk_rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
