"""Dask: partitions summarised and reduced on a real LocalCluster with worker processes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")
import dask.dataframe as dd
import distributed

import mixedmodels as mm
from mixedmodels.errors import DataError
from mixedmodels.io.sources import is_streamed_source
from mixedmodels.models.dask_fit import lmer_dask, predictions_dask
from mixedmodels.models.streamed import lmer_streamed


@pytest.fixture(scope="module")
def client():
    import dask

    # Generous start-up timeouts: worker processes start slowly on a loaded 2-core machine.
    # ":0": the scheduler's HTTP server takes any free port (8787 may be taken).
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


@pytest.mark.parametrize(
    ("name", "formula"),
    [
        ("ratpup", "weight ~ treatment * sex + litsize + (1 | litter)"),
        ("pastes", "strength ~ 1 + (1 | batch/cask)"),
        ("sleepstudy", "Reaction ~ scale(Days) + (Days | Subject)"),
    ],
)
def test_dask_fit_equals_in_memory(client, name, formula):
    frame = mm.load_dataset(name).sample(frac=1.0, random_state=5).reset_index(drop=True)
    whole_model = mm.LinearMixedModel(mm.build_design(formula, frame))
    whole = whole_model.fit()
    ddf = dd.from_pandas(frame, npartitions=5)
    assert is_streamed_source(ddf)
    streamed = lmer_streamed(formula, ddf, progress=False)  # dispatches to lmer_dask
    assert streamed.nobs == whole.nobs
    assert streamed.objective == pytest.approx(whole.objective, rel=1e-10)
    a, b = streamed.model.cross_products.xytxy, whole_model.cross_products.xytxy
    assert np.max(np.abs(a - b)) < 1e-12 * np.max(np.abs(b))
    scale = np.maximum(np.abs(whole.theta), 1e-3)
    assert np.max(np.abs(streamed.theta - whole.theta) / scale) < 1e-8
    np.testing.assert_allclose(streamed.fixef, whole.fixef, rtol=1e-8)
    assert streamed.sigma == pytest.approx(whole.sigma, rel=1e-8)
    assert list(streamed.fixef.index) == list(whole.fixef.index)


def test_level_only_in_last_partition_and_predictions(client):
    frame = mm.load_dataset("ratpup")
    late = (frame["treatment"] == "High").to_numpy()
    parts = [frame[~late].iloc[:100], frame[~late].iloc[100:], frame[late]]
    ddf = dd.from_pandas(pd.concat(parts, ignore_index=True), npartitions=3, sort=False)
    formula = "weight ~ treatment + sex + (1 | litter)"
    whole = mm.lmer(formula, pd.concat(parts, ignore_index=True))
    fit = lmer_dask(formula, ddf, progress=False)
    assert "treatmentHigh" in fit.fixef.index
    assert fit.objective == pytest.approx(whole.objective, rel=1e-10)
    pred = predictions_dask(whole, ddf).compute()
    np.testing.assert_allclose(pred["fitted"].to_numpy(), whole.fitted.to_numpy(), rtol=1e-10)


def test_partition_with_a_column_of_another_type(client):
    frame = mm.load_dataset("sleepstudy")
    odd = frame.iloc[120:].assign(Days=frame["Days"].iloc[120:].astype(str))
    ddf = dd.from_delayed(
        _delayed_parts([frame.iloc[:120], odd]), meta=frame.iloc[:0], verify_meta=False
    )
    with pytest.raises(
        DataError, match=r"'Days' holds numbers in partition 1 .* text in partition 2"
    ):
        lmer_dask("Reaction ~ Days + (1 | Subject)", ddf, progress=False)


def _delayed_parts(frames):
    import dask

    return [dask.delayed(f) for f in frames]


def test_missing_column(client):
    ddf = dd.from_pandas(mm.load_dataset("sleepstudy"), npartitions=2)
    with pytest.raises(DataError, match="column 'Dayz' used in the formula is not in the Dask"):
        lmer_dask("Reaction ~ Dayz + (1 | Subject)", ddf, progress=False)
