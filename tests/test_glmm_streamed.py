"""Streamed (Parquet, DuckDB) and Dask GLMM fits equal the in-memory fit (issue 14).

Reference models' data (tests/reference/glmm) are written to Parquet files, a DuckDB
query or a Dask DataFrame on a real ``distributed.LocalCluster``, and fitted by
``mm.glmer``, which reads them once per PIRLS step (one pass of weighted cross products
over the chunks). The issue's tolerances against the in-memory fit are 1e-6 (loglik
relative, fixed effects, SEs relative, theta); the fits are sums of the same terms in
another order, so they agree far closer (observed: loglik ~1e-15 relative, fixed effects
and theta ~1e-10, conditional modes ~1e-10), and the tests hold them to:

- loglik (and AGQ's ``loglik_marginal``): 1e-10 relative;
- fixed effects and theta: 1e-8 absolute (the optimum is flat: summation order moves it
  by ~1e-10, and the deviance residuals' sum, first order in the parameters, by ~1e-9
  relative: 1e-8 there);
- standard errors: the issue's 1e-6 relative. They come from a finite-difference
  Hessian of the deviance (step 2e-3), which turns a 1e-14 relative change of the
  deviance (the summation order of the blocks) into 1e-7 (Contraception) to 7e-7
  (grouseticks) of the SEs, whatever the chunks;
- the same optimiser path (evaluations per stage).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.errors import ModelSpecificationError

DATA = Path(__file__).resolve().parent / "data"

CONTRACEPTION = "use ~ age + I(age^2) + urban + livch + (1|district)"
CBPP = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
GROUSETICKS = (
    "TICKS ~ C(YEAR) + cHEIGHT + offset(log(exposure)) + (1|BROOD) + (1|INDEX) + (1|LOCATION)"
)


def frame(name: str) -> pd.DataFrame:
    data = pd.read_csv(DATA / f"{name}.csv")
    if name == "grouseticks":
        # An offset column: exposures 1, 2, 3 in turn (an offset the fit must carry).
        data["exposure"] = 1.0 + (np.arange(len(data)) % 3)
    return data


@functools.cache
def in_memory(name: str, formula: str, family: str, nagq: int = 1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lme4's convergence notes are not the subject here
        return mm.glmer(formula, frame(name), family=family, nagq=nagq)


def parquet_files(folder: Path, name: str, nfiles: int) -> str:
    """The data written to ``nfiles`` Parquet files (rows shuffled); their glob."""
    data = frame(name).sample(frac=1.0, random_state=11).reset_index(drop=True)
    folder.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(np.array_split(np.arange(len(data)), nfiles)):
        data.iloc[rows].to_parquet(folder / f"part-{i}.parquet", index=False)
    return str(folder / "*.parquet")


def assert_same_fit(streamed, whole) -> None:
    assert streamed.nobs == whole.nobs
    assert streamed.loglik == pytest.approx(whole.loglik, rel=1e-10)
    assert streamed.loglik_marginal == pytest.approx(whole.loglik_marginal, rel=1e-10)
    assert streamed.deviance == pytest.approx(whole.deviance, rel=1e-8)
    assert list(streamed.fixef.index) == list(whole.fixef.index)
    np.testing.assert_allclose(streamed.fixef, whole.fixef, rtol=0, atol=1e-8)
    np.testing.assert_allclose(streamed.theta, whole.theta, rtol=0, atol=1e-8)
    np.testing.assert_allclose(streamed.se, whole.se, rtol=1e-6)
    np.testing.assert_allclose(streamed.vcov_rx, whole.vcov_rx, rtol=1e-8, atol=1e-14)
    for group, modes in whole.ranef.items():
        np.testing.assert_allclose(streamed.ranef[group], modes, rtol=0, atol=1e-7)
        np.testing.assert_allclose(
            streamed.ranef_condsd[group], whole.ranef_condsd[group], rtol=1e-7
        )
    assert streamed.optimizer["evaluations"] == whole.optimizer["evaluations"]
    assert streamed.overdispersion().chisq == pytest.approx(whole.overdispersion().chisq, rel=1e-8)


# ------------------------------------------------------------------ streamed from Parquet
def test_contraception_laplace_from_parquet_files(tmp_path):
    whole = in_memory("Contraception", CONTRACEPTION, "binomial")
    glob = parquet_files(tmp_path / "contraception", "Contraception", 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mm.glmer(CONTRACEPTION, glob, family="binomial", progress=False)
    assert_same_fit(fit, whole)
    # One pass per PIRLS step, plus the start, the final system and the Pearson sum.
    assert fit.optimizer["passes"] > sum(fit.optimizer["evaluations"].values())
    assert fit.optimizer["chunks"] == 3


def test_fast_mode_in_chunks(tmp_path):
    # nAGQ = 0: beta inside PIRLS, the working system with X summed over the chunks.
    whole = in_memory("Contraception", CONTRACEPTION, "binomial", 0)
    glob = parquet_files(tmp_path / "contraception", "Contraception", 2)
    fit = mm.glmer(CONTRACEPTION, glob, family="binomial", nagq=0, progress=False)
    assert_same_fit(fit, whole)


def test_cbpp_cbind_adaptive_quadrature_in_chunks(tmp_path):
    # nAGQ = 25: one more pass per evaluation (each herd's deviance at the 25 nodes);
    # loglik_marginal adds the saturated log-likelihood, summed over the chunks.
    whole = in_memory("cbpp", CBPP, "binomial", 25)
    parquet_files(tmp_path / "cbpp", "cbpp", 2)
    files = sorted(str(f) for f in (tmp_path / "cbpp").glob("*.parquet"))  # a list of files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mm.glmer(CBPP, files, family="binomial", nagq=25, chunk_rows=20, progress=False)
    assert_same_fit(fit, whole)
    assert fit.loglik_marginal != pytest.approx(fit.loglik)  # cbpp's constant is -41.98
    assert fit.optimizer["chunks"] == 4  # 28 rows per file, 20 rows per chunk


def test_grouseticks_poisson_with_an_offset_column(tmp_path):
    # Three terms, one of them observation-level (Zr'Z1 sparse: the summed blocks must
    # keep one pattern), and an offset read from every chunk.
    whole = in_memory("grouseticks", GROUSETICKS, "poisson")
    assert whole.fixef.index[0] == "(Intercept)"
    glob = parquet_files(tmp_path / "grouseticks", "grouseticks", 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mm.glmer(GROUSETICKS, glob, family="poisson", progress=False)
    assert_same_fit(fit, whole)
    without = in_memory(
        "grouseticks", GROUSETICKS.replace(" + offset(log(exposure))", ""), "poisson"
    )
    assert abs(fit.loglik - without.loglik) > 1.0  # the offset did reach the fit


def test_duckdb_query_in_small_chunks(tmp_path, capsys):
    duckdb = pytest.importorskip("duckdb")
    whole = in_memory("cbpp", CBPP, "binomial")
    glob = parquet_files(tmp_path / "cbpp", "cbpp", 1)
    # The query runs once per pass: on one open connection (a new one costs ~30 ms).
    connection = duckdb.connect()
    try:
        query = mm.duckdb_query(f"SELECT * FROM read_parquet('{glob}')", connection=connection)
        fit = mm.glmer(CBPP, query, family="binomial", chunk_rows=30, progress=True)
    finally:
        connection.close()
    assert_same_fit(fit, whole)
    shown = capsys.readouterr().err
    assert "pass 1: levels" in shown and "evaluations" in shown  # the progress display


# ------------------------------------------------------------------ results without rows
@pytest.fixture(scope="module")
def streamed_cbpp(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cbpp")
    parquet_files(folder, "cbpp", 2)
    return mm.glmer(CBPP, str(folder), family="binomial", progress=False)  # a folder


def test_an_in_memory_frame_streams_with_chunk_rows():
    whole = in_memory("cbpp", CBPP, "binomial")
    fit = mm.glmer(CBPP, frame("cbpp"), family="binomial", chunk_rows=25, progress=False)
    assert not fit.has_rows and fit.optimizer["chunks"] == 3
    assert_same_fit(fit, whole)


def test_a_streamed_fit_refuses_what_needs_rows_in_one_line(streamed_cbpp):
    fit = streamed_cbpp
    assert not fit.has_rows
    for what in (
        lambda: fit.fitted,
        lambda: fit.resid,
        lambda: fit.residuals("pearson"),
        lambda: fit.linear_predictor,
        lambda: fit.prior_weights,
        lambda: fit.predict(),
    ):
        with pytest.raises(ModelSpecificationError, match="predict\\(chunk\\)"):
            what()
    # Refits (profiles, the parametric bootstrap) need the rows too: no refitter.
    for method in ("profile", "bootstrap"):
        with pytest.raises(ModelSpecificationError, match="streamed data"):
            fit.confint(method=method)


def test_a_streamed_fit_predicts_chunks_and_reports(streamed_cbpp):
    fit, whole = streamed_cbpp, in_memory("cbpp", CBPP, "binomial")
    chunk = frame("cbpp").iloc[10:30]
    np.testing.assert_allclose(fit.predict(chunk), whole.predict(chunk), rtol=1e-7)
    np.testing.assert_allclose(
        fit.predict(chunk, type="link", re=False),
        whole.predict(chunk, type="link", re=False),
        rtol=1e-7,
    )
    text = str(fit.summary())
    assert "Scaled residuals" not in text and "Number of obs: 56" in text
    ours, theirs = fit.to_dict(), whole.to_dict()
    assert ours["overdispersion"]["chisq"] == pytest.approx(theirs["overdispersion"]["chisq"])
    assert ours["nobs"] == theirs["nobs"] == 56


def test_streamed_glmm_weights_must_be_a_column(tmp_path):
    glob = parquet_files(tmp_path / "cbpp", "cbpp", 2)
    with pytest.raises(ModelSpecificationError, match="column name"):
        mm.glmer(CBPP, glob, family="binomial", weights=np.ones(56), progress=False)


# ------------------------------------------------------------------ Dask
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    import dask

    # As tests/io/test_dask.py: worker processes start slowly on a loaded 2-core machine.
    with dask.config.set({"distributed.comm.timeouts.connect": "120s"}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", timeout=120
        )
    client = distributed.Client(cluster, timeout=120)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def test_dask_contraception_equals_in_memory(client):
    whole = in_memory("Contraception", CONTRACEPTION, "binomial")
    data = frame("Contraception").sample(frac=1.0, random_state=3).reset_index(drop=True)
    ddf = dd.from_pandas(data, npartitions=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mm.glmer(CONTRACEPTION, ddf, family="binomial", progress=False)
    assert_same_fit(fit, whole)
    assert fit.optimizer["partitions"] == 3
    assert fit.data_name == "Dask DataFrame (3 partitions)"


def test_dask_cbpp_cbind_equals_in_memory(client):
    whole = in_memory("cbpp", CBPP, "binomial")
    ddf = dd.from_pandas(frame("cbpp"), npartitions=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mm.glmer(CBPP, ddf, family="binomial", progress=False)
    assert_same_fit(fit, whole)
