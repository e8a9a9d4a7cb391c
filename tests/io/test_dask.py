"""Dask: partitions summarised and reduced on a real LocalCluster with worker processes."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")
import dask.dataframe as dd
import distributed

import mixedmodels as mm
from mixedmodels.design.levels_spec import summarize_chunk
from mixedmodels.errors import DataError
from mixedmodels.formula import parse_formula
from mixedmodels.io.sources import is_streamed_source
from mixedmodels.models import dask_fit
from mixedmodels.models.chunked import plan_from_summary
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


# --- Pass 2's sum: ranges of partitions summed on the workers, added on the client ---------


def _events(users: int, items: int, by_user: bool, n: int = 12_000) -> pd.DataFrame:
    """Crossed users x items with a random slope per user; sorted by user (partitions hold
    disjoint users but for the one cut at each boundary) or in random order (every
    partition holds most users)."""
    rng = np.random.default_rng(11)
    u = rng.integers(0, users, n)
    it = rng.integers(0, items, n)
    x = rng.normal(size=n)
    y = (
        1
        + 0.5 * x
        + rng.normal(size=users)[u]
        + 0.3 * rng.normal(size=items)[it]
        + rng.normal(size=n)
    )
    frame = pd.DataFrame(
        {"y": y, "x": x, "u": [f"u{v:05d}" for v in u], "it": [f"i{v:04d}" for v in it]}
    )
    return frame.sort_values("u", kind="stable", ignore_index=True) if by_user else frame


def _assert_blocks_close(got, want) -> None:
    """Every block equal to the in-memory one to 1e-12 of the block's largest entry."""
    for name in ("z1tz1", "zrtz1", "zrtzr", "xytz1", "xytzr", "xytxy"):
        a, b = getattr(got, name), getattr(want, name)
        a = a.toarray() if sp.issparse(a) else a
        b = b.toarray() if sp.issparse(b) else b
        assert a.shape == b.shape, name
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b)), name
    assert got.nobs == want.nobs


def _assert_same_bits(a, b) -> None:
    for name in ("z1tz1", "zrtzr", "xytz1", "xytzr", "xytxy"):
        x, y = getattr(a, name), getattr(b, name)
        if sp.issparse(x):
            x, y = x.toarray(), y.toarray()
        assert np.array_equal(x, y), name
    for name in ("data", "indices", "indptr"):
        assert np.array_equal(getattr(a.zrtz1, name), getattr(b.zrtz1, name)), name


@pytest.mark.parametrize(
    ("by_user", "users", "items", "placed"),
    [
        (True, 1500, 300, True),  # users nearly disjoint: Zr'Z1 placed, no sparse add
        (True, 4000, 2500, True),  # the same with Zr'Zr sparse (more than 2048 rest levels)
        (False, 1500, 300, False),  # every partition holds most users: sparse additions
    ],
)
def test_pass2_ranges_equal_in_memory_blocks(client, monkeypatch, by_user, users, items, placed):
    frame = _events(users, items, by_user)
    formula = "y ~ x + (1 + x | u) + (1 | it)"
    want = mm.LinearMixedModel(mm.build_design(formula, frame)).cross_products
    ddf = dd.from_pandas(frame, npartitions=12, sort=False)
    paths = []
    init = dask_fit._PlacedSum.__init__

    def spy(self, layouts):
        init(self, layouts)
        paths.append(self._data is not None)

    monkeypatch.setattr(dask_fit._PlacedSum, "__init__", spy)
    # split_every=3: 3 ranges of 4 partitions, each a two-level tree on the workers.
    first = dask_fit.dask_cross_products(formula, ddf, split_every=3, progress=False)
    again = dask_fit.dask_cross_products(formula, ddf, split_every=3, progress=False)
    assert paths == [placed, placed]
    assert sp.issparse(first.cross_products.zrtzr) == (items > 2048)
    _assert_blocks_close(first.cross_products, want)
    _assert_same_bits(first.cross_products, again.cross_products)  # no dependence on timing
    # Without a distributed client (Dask's local schedulers): the same bits.
    monkeypatch.setattr(dask_fit, "_client", lambda: None)
    local = dask_fit.dask_cross_products(formula, ddf, split_every=3, progress=False)
    _assert_same_bits(first.cross_products, local.cross_products)


def test_placed_sum_with_shared_users_and_empty_ranges():
    """Ranges sharing some users (a user cut at a partition boundary) and a range without
    complete rows: the placed sum adds the shared columns and skips the empty range."""
    frame = _events(400, 50, by_user=True, n=3000)
    formula = "y ~ x + (1 | u) + (1 | it)"
    model = mm.LinearMixedModel(mm.build_design(formula, frame))
    parsed = parse_formula(formula)
    plan = plan_from_summary(parsed, summarize_chunk(parsed, frame, "all"))
    cuts = [0, 1000, 1000, 2001, 3000]  # an empty range; user cut at 2001 likely shared
    pieces = [
        plan.cross_products(frame.iloc[a:b], "part") if b > a else None for a, b in pairwise(cuts)
    ]
    shared = np.intersect1d(pieces[2].zrtz1.indices, pieces[3].zrtz1.indices)
    assert shared.size > 0  # the user cut at row 2001 is in both
    total = dask_fit._PlacedSum([dask_fit._piece_layout(p) for p in pieces])
    assert total._data is not None
    for p in pieces:
        total.add(p)
    _assert_blocks_close(total.result(), model.cross_products)


def test_ranges_of_partitions():
    assert dask_fit._ranges(0, 8) == []
    assert dask_fit._ranges(3, 8) == [(0, 1), (1, 2), (2, 3)]
    assert dask_fit._ranges(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
