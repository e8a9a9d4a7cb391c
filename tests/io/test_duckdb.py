"""A DuckDB query as a streamed source: the fit equals the in-memory fit of the query result."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")
import duckdb

import mixedmodels as mm
from mixedmodels.errors import DataError, InputFileError
from mixedmodels.io.duckdb_source import duckdb_query
from mixedmodels.io.sources import is_streamed_source
from mixedmodels.models.streamed import lmer_streamed

FORMULA = "weight ~ treatment + sex + litsize + (1 | litter)"


@pytest.fixture()
def ratpup_files(tmp_path):
    frame = mm.load_dataset("ratpup")
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[part].to_parquet(tmp_path / f"r{i}.parquet", index=False)
    return frame, str(tmp_path / "*.parquet")


def test_query_over_parquet_glob_with_filter(ratpup_files):
    frame, pattern = ratpup_files
    query = duckdb_query(f"SELECT * FROM '{pattern}' WHERE litsize > ?", params=[6])
    assert is_streamed_source(query)
    whole = mm.lmer(FORMULA, frame[frame["litsize"] > 6].reset_index(drop=True))
    streamed = lmer_streamed(FORMULA, query, chunk_rows=40, progress=False)
    assert streamed.nobs == whole.nobs
    assert streamed.objective == pytest.approx(whole.objective, rel=1e-10)
    np.testing.assert_allclose(streamed.fixef, whole.fixef, rtol=1e-8)
    np.testing.assert_allclose(streamed.theta, whole.theta, rtol=1e-8)
    assert list(streamed.fixef.index) == list(whole.fixef.index)


def test_query_on_an_open_connection():
    con = duckdb.connect()
    con.register("pups", mm.load_dataset("ratpup"))
    whole = mm.lmer(FORMULA, "ratpup")
    streamed = lmer_streamed(
        FORMULA, duckdb_query("SELECT * FROM pups", connection=con), chunk_rows=100, progress=False
    )
    assert streamed.objective == pytest.approx(whole.objective, rel=1e-10)


def test_query_errors_are_clear(ratpup_files):
    _, pattern = ratpup_files
    with pytest.raises(DataError, match="column 'weight' used in the formula is not in the result"):
        lmer_streamed(FORMULA, duckdb_query(f"SELECT litter FROM '{pattern}'"), progress=False)
    with pytest.raises(InputFileError, match="the DuckDB query failed"):
        lmer_streamed(FORMULA, duckdb_query("SELEC nonsense"), progress=False)
    with pytest.raises(DataError, match="empty"):
        duckdb_query("  ")
