"""Smoke tests of the large-data grid's generator and table (benchmarks/large_grid.py).

The grid itself runs on demand (minutes to an hour); these check, on a few thousand rows,
that the simulation is what its docstring says (whole users per file, reproducible files)
and that the table lists every cell, run or not.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "large_grid.py"


@pytest.fixture(scope="module")
def grid():
    spec = importlib.util.spec_from_file_location("large_grid", _PATH)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    # Registered while it runs: its dataclass looks its module up by name.
    sys.modules["large_grid"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["large_grid"]
    return module


def test_files_hold_whole_users_and_are_reproducible(grid):
    rows, users, items = 3_000_000, 300_000, 50
    first = grid.simulate_grid_file(rows, users, items, 0)
    second = grid.simulate_grid_file(rows, users, items, 1)
    again = grid.simulate_grid_file(rows, users, items, 1)
    for cols in (first, second):
        assert cols["y"].shape == (grid.GRID_ROWS_PER_FILE,)
        counts = np.bincount(cols["user"] - cols["user"].min())
        assert (counts == rows // users).all()  # 10 consecutive events per user
        assert cols["item"].min() >= 0 and cols["item"].max() < items
    assert first["user"].max() + 1 == second["user"].min()
    for key in first:
        np.testing.assert_array_equal(second[key], again[key])


def test_written_files_are_reused(grid, tmp_path):
    files = grid.write_grid_data(tmp_path, 2_000, 200, 10)
    assert len(files) == 1
    table = pq.read_table(files[0])
    assert table.num_rows == 2_000
    assert table.column_names == ["y", "x", "f", "user", "item"]
    stamp = files[0].stat().st_mtime_ns
    assert grid.write_grid_data(tmp_path, 2_000, 200, 10) == files
    assert files[0].stat().st_mtime_ns == stamp


def test_table_lists_every_required_cell(grid):
    table = grid.render_table([])
    for cell in grid.grid_cells():
        row = (
            f"| {grid._fmt_rows(cell.rows)} | {grid._fmt_rows(cell.users)} "
            f"| {grid._fmt_rows(cell.items)} |"
        )
        assert row in table
    # 1 row per user: listed with the reason, run or not; every other cell "not run"
    # (the 1e8 x 1e5 cells too, since session 13).
    assert table.count("skipped: 1 row per user") == 3
    assert table.count("not run") == 15
    cell = grid.parse_cell_key("1e8x1e6x1e2")
    assert (cell.rows, cell.users, cell.items, cell.engine) == (10**8, 10**6, 100, "dask")
    assert grid.parse_cell_key("1e5x1e4x1e2:dask").engine == "dask"


def test_item_pairs_counts_each_users_distinct_items(grid, tmp_path):
    files = grid.write_grid_data(tmp_path, 2_000, 100, 30)
    table = pq.read_table(files[0]).to_pandas()
    k = table.groupby("user")["item"].nunique().to_numpy()
    assert grid.item_pairs(tmp_path) == int((k * (k + 1) // 2).sum())


def test_table_marks_pair_free_cells(grid):
    """A cell whose rank update computed its pair positions per piece says so."""
    beta = grid.GRID_TRUTH["beta"]
    record = {
        "rows": 10**8,
        "users": 10**6,
        "items": 1000,
        "engine": "dask",
        "status": "ok",
        "layout": "dense",
        "pass1_s": 1.0,
        "pass2_s": 2.0,
        "optimise_s": 3.0,
        "cpu_driver_s": 5.0,
        "cpu_passes_s": 1.0,
        "evaluations": 40,
        "factorisations": 30,
        "gradients": 10,
        "total_s": 6.0,
        "cpu_process_tree_s": 7.0,
        "peak_rss_mb": 1000.0,
        "fixef": dict(beta),
        "se": {k: 0.1 for k in beta},
        "z_vs_truth": {k: 0.0 for k in beta},
        "sd_user": 0.5,
        "sd_user_x": 0.2,
        "corr_user": 0.0,
        "sd_item": 0.3,
        "sigma": 1.0,
    }
    table = grid.render_table([record])
    assert "| 1e8 | 1e6 | 1e3 | Dask, 2 worker processes, pair-free update | 1.0 | 2.0 |" in table
    assert table.count("pair-free") == 1
    # The dense-product (dsyrk) layout is named too.
    blas = dict(record, items=100, layout="blas")
    table = grid.render_table([blas])
    assert "| 1e8 | 1e6 | 1e2 | Dask, 2 worker processes, dense-product update | 1.0 |" in table
    assert "pair-free" not in table
