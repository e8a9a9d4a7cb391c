"""The rows x users x items grid of the product design (issue 18), streamed and on Dask.

Model: ``y ~ x + f + (1 + x | user) + (1 | item)``, the product team's design of
``bench_large_data.py --design product`` with the rows, users and items as parameters.
Every user has ``rows / users`` events (whole users per file, users in order); each event
has an item drawn uniformly from ``items``, ``x ~ N(0, 1)`` and a three-level factor
``f``. Truth: fixed effects (1, 0.5, 0.3, -0.2), user intercept SD 0.5 and slope SD 0.2
(independent: correlation 0), item SD 0.3, sigma 1.

Data are written once per cell shape, in Parquet files of 1e6 rows generated one file at
a time (so 1e8 rows never sit in memory), under ``--data-dir`` (default
``/work/bigdata/grid``) and reused while their manifest matches. Each cell runs in a fresh
process (its own peak RSS) with a timeout; its record is appended to
``benchmarks/results/large_grid.json`` as soon as it ends, and ``--resume`` skips cells
already recorded. Cells of 1e6 and 1e7 rows stream from Parquet
(:func:`~mixedmodels.models.streamed.streamed_cross_products`, as ``mm.lmer`` on a
Parquet source does); cells of 1e8 rows read the same files with ``dask.dataframe`` on a
``distributed.LocalCluster`` of 2 worker processes (``lmer_dask``'s passes).

Run on demand (not part of the test suite)::

    OPENBLAS_NUM_THREADS=1 nice -n 10 python benchmarks/bench_large_data.py --grid --resume
    python benchmarks/bench_large_data.py --grid --cells 1e5x1e4x1e2 --data-dir /tmp/g
    python benchmarks/bench_large_data.py --grid --docs     # render the table only
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRID_FORMULA = "y ~ x + f + (1 + x | user) + (1 | item)"
GRID_SEED = 7
GRID_ROWS_PER_FILE = 1_000_000
GRID_TRUTH: dict[str, Any] = {
    "beta": {"(Intercept)": 1.0, "x": 0.5, "fb": 0.3, "fc": -0.2},
    "sd_user": 0.5,
    "sd_user_x": 0.2,
    "corr_user": 0.0,
    "sd_item": 0.3,
    "sigma": 1.0,
}
RESULTS = ROOT / "benchmarks" / "results" / "large_grid.json"
PAIRS = ROOT / "benchmarks" / "results" / "large_grid_pairs.json"
DEFAULT_DATA_DIR = "/work/bigdata/grid"
#: Seconds before a cell is stopped (the Dask cells read 1e8 rows twice).
TIMEOUT_STREAMED = 1800
TIMEOUT_DASK = 3600
#: Address-space limit of a cell's processes (each; the Dask driver holds the 1e8-row
#: cells' blocks): the machine (23 GB) is shared, so a cell that would need more stops
#: with a MemoryError instead of pushing others out.
MEMORY_LIMIT_BYTES = {"parquet": 12 * 1024**3, "dask": 16 * 1024**3}


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: its shape, how it is fitted and why it is not (if so)."""

    rows: int
    users: int
    items: int
    engine: str  # "parquet" (streamed) or "dask"
    skip: str | None = None

    @property
    def key(self) -> str:
        return f"{self.rows:.0e}x{self.users:.0e}x{self.items:.0e}".replace("+0", "")


def grid_cells() -> list[Cell]:
    """Every cell, in the order they run: cheap first; then the 1e8-row Dask cell of 1e6
    users and 1e2 items; then the 1e4-item cells (each evaluation factors a dense
    1e4 x 1e4 block: minutes per cell); then 1e8 x 1e6 x 1e3 on Dask; the other Dask
    cells last."""
    cells = []
    for items in (100, 1000, 10_000):
        for rows in (1_000_000, 10_000_000):
            for users in (100_000, 1_000_000):
                skip = None
                if rows // users < 2:
                    # (The package stops too: "number of levels of each grouping
                    # factor must be < number of observations".)
                    skip = "1 row per user: intercept and slope not identifiable apart from sigma"
                cells.append(Cell(rows, users, items, "parquet", skip))
    for items in (100, 1000, 10_000):
        for users in (1_000_000, 100_000):
            cells.append(Cell(100_000_000, users, items, "dask"))

    def order(c: Cell) -> tuple:
        if c.engine == "dask":
            # 1e6 users x 1e3 items after the 1e4-item cells: its pair positions alone
            # (~4.6e9 pairs of items per evaluation, an int32 each) would exceed the
            # memory limit, so it is the likeliest to fail.
            group = {100: 1, 1000: 3}.get(c.items, 4) if c.users == 1_000_000 else 4
            return (group, c.items, -c.users)
        if c.items >= 10_000:
            # 10 events per user (fewer item pairs) before 100.
            return (2, c.rows, -c.users)
        return (0, c.rows, c.items, c.users)

    return sorted(cells, key=order)


def parse_cell_key(text: str) -> Cell:
    """``"1e7x1e6x1e2"`` -> that cell (Dask from 1e8 rows); ``"1e5x1e4x1e2:dask"`` forces
    the engine (for trying the Dask path on a small cell)."""
    shape, _, engine = text.lower().partition(":")
    rows, users, items = (int(float(v)) for v in shape.split("x"))
    return Cell(rows, users, items, engine or ("dask" if rows >= 100_000_000 else "parquet"))


def _effects(users: int, items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The true random effects: user intercepts and slopes, item intercepts."""
    t = GRID_TRUTH
    rng = np.random.default_rng([GRID_SEED, users, items])
    return (
        rng.normal(0.0, t["sd_user"], users),
        rng.normal(0.0, t["sd_user_x"], users),
        rng.normal(0.0, t["sd_item"], items),
    )


def simulate_grid_file(rows: int, users: int, items: int, index: int) -> dict[str, np.ndarray]:
    """File ``index`` of a cell's data: ``y``, ``x``, ``f`` (codes 0..2), ``user``, ``item``.

    Its users are ``index * k .. (index + 1) * k - 1`` with ``k = 1e6 / (rows / users)``,
    each with ``rows / users`` consecutive events; the events' values come from a
    generator seeded by the cell's shape and the file's index, so a file does not depend on
    the files before it (they are written one at a time).
    """
    per_user = rows // users
    nrows = min(GRID_ROWS_PER_FILE, rows - index * GRID_ROWS_PER_FILE)
    first = index * (GRID_ROWS_PER_FILE // per_user)
    user = first + np.repeat(np.arange(nrows // per_user), per_user)
    b_user, b_user_x, b_item = _effects(users, items)
    rng = np.random.default_rng([GRID_SEED, rows, users, items, index])
    item = rng.integers(0, items, nrows)
    x = rng.normal(size=nrows)
    f = rng.integers(0, 3, nrows)
    beta = GRID_TRUTH["beta"]
    y = (
        beta["(Intercept)"]
        + beta["x"] * x
        + np.array([0.0, beta["fb"], beta["fc"]])[f]
        + b_user[user]
        + b_user_x[user] * x
        + b_item[item]
        + GRID_TRUTH["sigma"] * rng.normal(size=nrows)
    )
    return {"y": y, "x": x, "f": f, "user": user, "item": item}


def write_grid_data(folder: Path, rows: int, users: int, items: int) -> list[Path]:
    """Write (or reuse, when the manifest matches) a cell's Parquet files of 1e6 rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    per_user = rows // users
    if rows % users or (rows > GRID_ROWS_PER_FILE and GRID_ROWS_PER_FILE % per_user):
        raise ValueError(f"rows {rows} must be whole users per file ({users} users)")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    spec = {
        "design": "grid",
        "formula": GRID_FORMULA,
        "seed": GRID_SEED,
        "rows": rows,
        "users": users,
        "items": items,
        "rows_per_file": GRID_ROWS_PER_FILE,
        "truth": GRID_TRUTH,
    }
    nfiles = -(-rows // GRID_ROWS_PER_FILE)
    files = [folder / f"part-{i:04d}.parquet" for i in range(nfiles)]
    if manifest.exists() and json.loads(manifest.read_text()) == spec:
        if all(p.exists() for p in files):
            return files
    manifest.unlink(missing_ok=True)
    levels = pa.array(["a", "b", "c"])
    for i, path in enumerate(files):
        cols = simulate_grid_file(rows, users, items, i)
        table = pa.table(
            {
                "y": cols["y"],
                "x": cols["x"],
                "f": pa.DictionaryArray.from_arrays(pa.array(cols["f"].astype(np.int8)), levels),
                "user": cols["user"],
                "item": cols["item"],
            }
        )
        # Written under a temporary name, then renamed: an interrupted run leaves no
        # truncated file that a later run would take for a complete one.
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp, row_group_size=250_000)
        tmp.rename(path)
    manifest.write_text(json.dumps(spec))
    return files


def item_pairs(folder: Path) -> int:
    """Pairs ``(i >= j)`` of items of the same user, summed over the users: the products
    each evaluation's rank update forms (``LevelBlockUpdate``: ``k (k + 1) / 2`` for a
    user with ``k`` distinct items). Counted file by file (whole users per file)."""
    import pyarrow.parquet as pq

    total = 0
    for path in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(path, columns=["user", "item"])
        user = table["user"].to_numpy()
        item = table["item"].to_numpy()
        key = np.unique((user - user.min()) * (int(item.max()) + 1) + item)
        k = np.bincount(key // (int(item.max()) + 1))
        total += int((k * (k + 1) // 2).sum())
    return total


def _counting() -> dict[str, int]:
    """Count the blocked system's Cholesky factorisations (`_cholesky`: every evaluation,
    factor and gradient that does not reuse one) and the gradients in this process (the
    benchmark wraps the methods; the package is unchanged)."""
    from mixedmodels.linalg.blocked import BlockedSystem
    from mixedmodels.objective.gradient import ProfiledDevianceGradient

    counts = {"factorisations": 0, "gradients": 0}

    def wrap(cls: type, name: str, key: str) -> None:
        original = getattr(cls, name)

        def counted(self, *args, **kwargs):
            counts[key] += 1
            return original(self, *args, **kwargs)

        setattr(cls, name, counted)

    wrap(BlockedSystem, "_cholesky", "factorisations")
    wrap(ProfiledDevianceGradient, "_gradient", "gradients")
    return counts


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _estimates(fit: Any) -> dict[str, Any]:
    """Fixed effects with SEs and z against the truth; the SDs, correlation and sigma."""
    vc = fit.varcorr
    user = vc[vc["group"] == "user"]
    item = vc[vc["group"] == "item"]
    fixef, se = fit.fixef, fit.se
    beta = GRID_TRUTH["beta"]
    return {
        "fixef": {k: float(v) for k, v in fixef.items()},
        "se": {k: float(v) for k, v in se.items()},
        "z_vs_truth": {k: float((fixef[k] - beta[k]) / se[k]) for k in fixef.index},
        "sd_user": float(user[user["term"] == "(Intercept)"]["sd"].dropna().iloc[0]),
        "sd_user_x": float(user[user["term"] == "x"]["sd"].dropna().iloc[0]),
        "corr_user": float(user["corr"].dropna().iloc[0]),
        "sd_item": float(item["sd"].dropna().iloc[0]),
        "sigma": float(fit.sigma),
        "reml_criterion": float(fit.opt.final_objective),
        "theta": [float(t) for t in fit.theta],
    }


def cell_worker(rows: int, users: int, items: int, engine: str, folder: str) -> dict:
    """Fit one cell in this (fresh) process; return its timings, counts, memory, estimates."""
    import warnings

    from mixedmodels.models.lmm import LinearMixedModel

    counts = _counting()
    files = sorted(str(p) for p in Path(folder).glob("part-*.parquet"))
    cpu0 = _cpu_self()
    t0 = time.perf_counter()
    workers: dict[str, Any] = {}
    client = cluster = None
    if engine == "dask":
        import dask.dataframe as dd
        from distributed import Client, LocalCluster

        from mixedmodels.models.dask_fit import dask_cross_products

        # Two worker processes of one thread each (the machine's 2 cores); spill to disk
        # next to the data. 11 GB each: the tree's last sum holds all of Zr'Z1 (2e8
        # nonzeros at 1e6 users x ~100 items: 2.4 GB, and its parts while it sorts them);
        # at 8 GB the worker doing it reached 7.3 GB with 1e3 items and was killed and
        # restarted by its nanny, again and again, with 1e4 items (session 13).
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit="11GB",
            local_directory=str(Path(folder).parent / "dask-spill"),
        )
        client = Client(cluster)
        ddf = dd.read_parquet(files, columns=["y", "x", "f", "user", "item"])
        workers["partitions"] = int(ddf.npartitions)
        t_cluster = time.perf_counter()
        workers["cluster_start_s"] = t_cluster - t0
        result = dask_cross_products(GRID_FORMULA, ddf, progress=False)
    else:
        from mixedmodels.models.streamed import streamed_cross_products

        result = streamed_cross_products(GRID_FORMULA, files, progress=False)
    t1 = time.perf_counter()
    cpu1 = _cpu_self()
    if client is not None:
        # The workers' CPU and peak RSS after the passes (they do no work in the fit).
        def usage() -> dict[str, float]:
            r = resource.getrusage(resource.RUSAGE_SELF)
            return {"cpu_s": r.ru_utime + r.ru_stime, "peak_rss_mb": r.ru_maxrss / 1024.0}

        workers["workers"] = list(client.run(usage).values())
        client.close()
        cluster.close()
    t1b = time.perf_counter()
    model = LinearMixedModel(
        result.design, formula=GRID_FORMULA, cross_products=result.cross_products
    )
    passes_factorisations = counts["factorisations"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = model.fit()
    t2 = time.perf_counter()
    record: dict[str, Any] = {
        "rows": int(result.nrows),
        "users": users,
        "items": items,
        "engine": engine,
        "chunks": int(result.nchunks),
        "pass1_s": result.seconds["pass1"],
        "pass2_s": result.seconds["pass2"],
        "passes_s": t1 - t0,
        "optimise_s": t2 - t1b,
        "total_s": t2 - t0,
        "cpu_passes_s": cpu1 - cpu0,
        "cpu_driver_s": _cpu_self() - cpu0,
        "evaluations": int(fit.opt.evaluations),
        "factorisations": counts["factorisations"] - passes_factorisations,
        "gradients": counts["gradients"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "converged": bool(fit.converged),
        # How the rank update finds its pairs' positions (LevelBlockUpdate.layout).
        "layout": getattr(fit.deviance_function.system.pattern, "layout", None),
        "warnings": [str(w.message)[:300] for w in caught],
        **_estimates(fit),
    }
    if workers:
        record["dask"] = workers
        record["cpu_workers_s"] = sum(w["cpu_s"] for w in workers.get("workers", []))
        record["peak_rss_workers_mb"] = [w["peak_rss_mb"] for w in workers.get("workers", [])]
    return record


def run_cell(cell: Cell, data_dir: Path, timeout: float | None = None) -> dict:
    """Write (or reuse) the cell's data, fit it in a fresh process, return its record.

    A cell that times out or fails gets a record with ``status`` and the end of its error
    output, so the table lists it instead of dropping it.
    """
    base = {"rows": cell.rows, "users": cell.users, "items": cell.items, "engine": cell.engine}
    if cell.skip:
        return {**base, "status": "skipped", "reason": cell.skip}
    folder = data_dir / _folder_name(cell.rows, cell.users, cell.items)
    t = time.perf_counter()
    write_grid_data(folder, cell.rows, cell.users, cell.items)
    data_s = time.perf_counter() - t
    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--cell-worker",
        str(cell.rows),
        str(cell.users),
        str(cell.items),
        cell.engine,
        str(folder),
    ]
    if timeout is None:
        timeout = TIMEOUT_DASK if cell.engine == "dask" else TIMEOUT_STREAMED
    load_before = os.getloadavg()
    # The code measured: HEAD when the cell starts (commits made while it runs are not in it).
    commit = _commit()
    # CPU (user + sys) of the cell's process and every descendant it reaped (the Dask
    # nannies and workers), from the parent: steadier than wall time on a shared machine.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()

    # A new session, so that a timeout stops the cell and its Dask processes together.
    limit = MEMORY_LIMIT_BYTES[cell.engine]

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        # If the machine runs short anyway, the kernel stops this cell first.
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("1000")

    proc = subprocess.Popen(
        cmd,
        preexec_fn=limit_memory,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        return {
            **base,
            "status": "timeout",
            "reason": f"stopped after {timeout:.0f} s",
            "stderr_tail": err[-1500:],
            "load_before": load_before[0],
            "load_after": os.getloadavg()[0],
        }
    seconds = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        return {
            **base,
            "status": "error",
            "reason": (err.strip().splitlines() or ["(no output)"])[-1][:300],
            "returncode": proc.returncode,
            "stderr_tail": err[-3000:],
            "process_wall_s": seconds,
            "load_before": load_before[0],
            "load_after": os.getloadavg()[0],
        }
    record = json.loads(out.strip().splitlines()[-1])
    record.update(
        status="ok",
        data_write_s=data_s,
        process_wall_s=seconds,
        cpu_process_tree_s=cpu,
        load_before=load_before[0],
        load_before_5min=load_before[1],
        load_after=os.getloadavg()[0],
        commit=commit,
        date_utc=time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    )
    return record


def update_item_pairs(data_dir: Path, path: Path = PAIRS) -> dict[str, int]:
    """:func:`item_pairs` of every cell whose data are on disk, by folder name, kept in
    ``path`` (its own file: the grid's runner rewrites the results as cells end)."""
    pairs = json.loads(path.read_text()) if path.exists() else {}
    for cell in grid_cells():
        name = _folder_name(cell.rows, cell.users, cell.items)
        if name not in pairs and (data_dir / name / "manifest.json").exists():
            pairs[name] = item_pairs(data_dir / name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pairs, indent=1))
    return pairs


def _folder_name(rows: int, users: int, items: int) -> str:
    return f"rows{rows:.0e}-users{users:.0e}-items{items:.0e}"


def _src_commit(commit: str) -> str:
    """The last commit that changed ``src/`` as of ``commit``."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h", commit, "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def load_results(path: Path = RESULTS) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def _same_cell(record: dict, cell: Cell) -> bool:
    return (record["rows"], record["users"], record["items"], record["engine"]) == (
        cell.rows,
        cell.users,
        cell.items,
        cell.engine,
    )


def run_grid(
    data_dir: Path,
    *,
    resume: bool,
    only: list[Cell] | None = None,
    results: Path = RESULTS,
    timeout: float | None = None,
) -> list[dict]:
    """Run the grid's cells one at a time, appending each record to ``results`` as it ends.

    With ``resume``, cells already in ``results`` (any status but ``error``/``timeout``)
    are skipped; a cell run again replaces its old record.
    """
    records = load_results(results) if resume or only else []
    cells = grid_cells()
    if only is not None:
        # The grid's own cell where one matches (its skip reason), else the cell as given.
        def grid_cell(o: Cell) -> Cell:
            same = (o.rows, o.users, o.items, o.engine)
            return next((c for c in cells if (c.rows, c.users, c.items, c.engine) == same), o)

        cells = [grid_cell(o) for o in only]
    for cell in cells:
        done = [r for r in records if _same_cell(r, cell)]
        if resume and done and done[-1].get("status") in ("ok", "skipped"):
            continue
        print(f"{cell.key} ({cell.engine}) ...", flush=True)
        record = run_cell(cell, data_dir, timeout)
        records = [r for r in records if not _same_cell(r, cell)] + [record]
        results.parent.mkdir(parents=True, exist_ok=True)
        tmp = results.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1))
        tmp.rename(results)
        if record["status"] == "ok":
            print(
                f"  {record['status']}: passes {record['pass1_s']:.1f} + "
                f"{record['pass2_s']:.1f} s, optimiser {record['optimise_s']:.1f} s "
                f"({record['evaluations']} evaluations, {record['factorisations']} "
                f"factorisations), total {record['total_s']:.1f} s, CPU "
                f"{record['cpu_process_tree_s']:.1f} s, peak RSS {record['peak_rss_mb']:.0f} MB, "
                f"load {record['load_before']:.1f}-{record['load_after']:.1f}",
                flush=True,
            )
        else:
            print(f"  {record['status']}: {record.get('reason')}", flush=True)
    return records


def _load(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def _fmt_rows(n: int) -> str:
    return f"1e{round(math.log10(n))}"


def render_table(records: list[dict], pairs: dict[str, int] | None = None) -> str:
    """The grid's two markdown tables (costs; estimates against the truth), every cell of
    :func:`grid_cells` listed, those without a record as "not run"."""
    beta = GRID_TRUTH["beta"]
    cost = [
        "| rows | users | items | how | pass 1 (s) | pass 2 (s) | optimiser wall / CPU (s) "
        "| evaluations / factorisations / gradients | item pairs | total (s) | CPU (s) "
        "| peak RSS (MB) | load |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    est = [
        "| rows | users | items | "
        + " | ".join(f"{k} (z)" for k in beta)
        + " | sd(user) | sd(user x) | corr | sd(item) | sigma |",
        "|---:|---:|---:|" + "---:|" * (len(beta) + 5),
    ]
    shown = sorted(grid_cells(), key=lambda c: (c.rows, c.users, c.items))
    for cell in shown:
        done = [r for r in records if _same_cell(r, cell)]
        if cell.skip:
            r = {"status": "skipped", "reason": cell.skip}
        else:
            r = done[-1] if done else {"status": "not run"}
        head = f"| {_fmt_rows(cell.rows)} | {_fmt_rows(cell.users)} | {_fmt_rows(cell.items)} |"
        how = "Parquet, streamed" if cell.engine == "parquet" else "Dask, 2 worker processes"
        if r.get("layout") in ("dense", "rank"):
            how += ", pair-free update"
        elif r.get("layout") == "blas":
            how += ", dense-product update"
        if r.get("status") != "ok":
            status = r.get("status", "not run")
            reason = r.get("reason", "")
            text = f"{status}: {reason}" if reason else status
            cost.append(f"{head} {how} | {text} |" + " |" * 8)
            continue
        cpu = r["cpu_process_tree_s"]
        n = (pairs or {}).get(_folder_name(cell.rows, cell.users, cell.items))
        npairs = f"{n:.2e}" if n else ""
        rss = f"{r['peak_rss_mb']:,.0f}"
        if cell.engine == "dask":
            workers = r.get("peak_rss_workers_mb") or []
            if workers:
                rss += " (workers " + ", ".join(f"{w:,.0f}" for w in workers) + ")"
        cost.append(
            f"{head} {how} | {r['pass1_s']:.1f} | {r['pass2_s']:.1f} "
            f"| {r['optimise_s']:.1f} / {r['cpu_driver_s'] - r['cpu_passes_s']:.1f} "
            f"| {r['evaluations']} / {r['factorisations']} / {r['gradients']} | {npairs} "
            f"| {r['total_s']:.1f} | {cpu:.1f} | {rss} "
            f"| {_load(r.get('load_before'))}-{_load(r.get('load_after'))} |"
        )
        fx = " | ".join(
            f"{r['fixef'][k]:.4f} ± {r['se'][k]:.4f} ({r['z_vs_truth'][k]:+.2f})" for k in beta
        )
        est.append(
            f"{head} {fx} | {r['sd_user']:.4f} | {r['sd_user_x']:.4f} | {r['corr_user']:+.3f} "
            f"| {r['sd_item']:.4f} | {r['sigma']:.4f} |"
        )
    t = GRID_TRUTH
    est.append(
        "| truth | | | "
        + " | ".join(f"{v}" for v in beta.values())
        + f" | {t['sd_user']} | {t['sd_user_x']} | {t['corr_user']} | {t['sd_item']} "
        f"| {t['sigma']} |"
    )
    return "\n".join(cost) + "\n\n" + "\n".join(est)


def write_grid_docs(records: list[dict], pairs: dict[str, int] | None = None) -> None:
    """Rewrite the table between ``<!-- grid:start -->`` and ``<!-- grid:end -->`` of
    docs/large-data.md (the section is appended at the end if the markers are missing).

    The hand-written reading of the numbers, from ``<!-- grid:reading -->`` to the end
    marker, is kept as it is: it is written from a run's numbers, not generated.
    """
    doc = ROOT / "docs" / "large-data.md"
    text = doc.read_text()
    start, end, reading = "<!-- grid:start -->", "<!-- grid:end -->", "<!-- grid:reading -->"
    ok = [r for r in records if r.get("status") == "ok"]
    commits = sorted({r.get("commit", "") for r in ok} - {""})
    # The package measured: the last commit that touched src/ as of each run's commit.
    package = sorted({_src_commit(c) for c in commits} - {""})
    dates = sorted({r.get("date_utc", "")[:10] for r in ok} - {""})
    note = (
        f"\nMeasured with the package at {', '.join(package) or '-'} (benchmark code "
        f"{', '.join(commits) or '-'}) on {', '.join(dates) or '-'} "
        f"(`benchmarks/bench_large_data.py --grid`); machine: {os.cpu_count()} cores shared "
        "with other sessions, one BLAS thread. CPU is user + system of the cell's process "
        "tree (with the Dask workers); peak RSS of the fitting process (and of each Dask "
        "worker); load: 1-minute averages before and after the cell. Counts: the fit's "
        "evaluations of the criterion (`fit.opt.evaluations`: BOBYQA and the Newton "
        "finish) / Cholesky factorisations of the blocked system actually computed / "
        "analytic gradients; item pairs: the products each factorisation's rank update "
        "forms, `k (k + 1) / 2` summed over the users (`k`: a user's distinct items, "
        "counted from the data).\n\n"
    )
    note = "\n" + textwrap.fill(note.strip(), width=90) + "\n\n"
    kept = ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        old, tail = rest.split(end, 1)
        if reading in old:
            kept = reading + old.split(reading, 1)[1]
    else:
        head, tail = text.rstrip("\n") + "\n\n", "\n"
    body = start + note + render_table(records, pairs) + "\n"
    if kept:
        body += "\n" + kept.strip("\n") + "\n"
    doc.write_text(head + body + end + tail)


def main(argv: list[str] | None = None) -> int:
    """``--cell-worker rows users items engine folder``: fit one cell, print its JSON."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--cell-worker":
        rows, users, items = (int(v) for v in argv[1:4])
        print(json.dumps(cell_worker(rows, users, items, argv[4], argv[5])))
        return 0
    raise SystemExit("use benchmarks/bench_large_data.py --grid")


if __name__ == "__main__":
    raise SystemExit(main())
