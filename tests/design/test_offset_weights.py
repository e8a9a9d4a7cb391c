"""offset(...) terms and prior weights at the design stage (in memory and streamed).

The engine's use of them (fitting y - offset, weighted cross products) is tested with
the engine; here: the values, X without the offset, missing-value handling, the
prediction spec, and one clear error per unusable input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixedmodels.datasets import load_dataset
from mixedmodels.design import build_design
from mixedmodels.design.levels_spec import (
    ChunkSummary,
    design_from_summary,
    summarize_chunk,
    used_columns,
)
from mixedmodels.errors import DataError
from mixedmodels.formula import parse_formula


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 40
    return pd.DataFrame(
        {
            "y": rng.normal(size=n) + 5,
            "x": rng.normal(size=n),
            "exposure": rng.uniform(0.5, 3.0, size=n),
            "z": rng.normal(size=n),
            "w": rng.uniform(0.2, 2.0, size=n),
            "g": np.repeat(list("abcdefgh"), 5),
        }
    )


# ------------------------------------------------------------------ offsets
def test_offsets_are_summed_and_kept_out_of_x(frame):
    d = build_design("y ~ x + offset(log(exposure)) + offset(2 * z) + (1 | g)", frame)
    assert d.x_names == ("(Intercept)", "x")
    np.testing.assert_allclose(d.offset, np.log(frame["exposure"]) + 2 * frame["z"], rtol=1e-15)
    plain = build_design("y ~ x + (1 | g)", frame)
    np.testing.assert_array_equal(d.X, plain.X)
    np.testing.assert_array_equal(d.y, plain.y)
    assert plain.offset is None and plain.weights is None


def test_offset_rows_with_missing_values_are_dropped(frame):
    frame.loc[[3, 17], "exposure"] = np.nan
    d = build_design("y ~ x + offset(log(exposure)) + (1 | g)", frame)
    assert d.n_dropped_rows == 2 and d.nobs == 38
    assert list(d.row_index) == [i for i in range(40) if i not in (3, 17)]
    np.testing.assert_allclose(d.offset, np.log(frame["exposure"].dropna()), rtol=1e-15)


def test_offset_on_new_data_for_predict(frame):
    d = build_design("y ~ x + offset(scale(exposure)) + offset(z) + (1 | g)", frame)
    mean, sd = frame["exposure"].mean(), frame["exposure"].std()
    new = pd.DataFrame({"exposure": [1.0, 2.0, np.nan], "z": [0.5, 0.0, 1.0]})
    got = d.spec.offset_values(new)
    np.testing.assert_allclose(got[:2], (new["exposure"][:2] - mean) / sd + new["z"][:2])
    assert np.isnan(got[2])
    assert build_design("y ~ x + (1 | g)", frame).spec.offset_values(new) is None


def test_offset_error_names_the_column(frame):
    frame.loc[4, "exposure"] = 0.0
    with pytest.raises(DataError, match=r"log\(exposure\): 1 row\(s\) have non-positive values"):
        build_design("y ~ x + offset(log(exposure)) + (1 | g)", frame)
    with pytest.raises(DataError, match="column 'exposur' used in the formula"):
        build_design("y ~ x + offset(exposur) + (1 | g)", frame)


# ------------------------------------------------------------------ weights
def test_weights_by_column_name_and_by_array(frame):
    by_name = build_design("y ~ x + (1 | g)", frame, weights="w")
    by_array = build_design("y ~ x + (1 | g)", frame, weights=frame["w"].to_numpy())
    by_list = build_design("y ~ x + (1 | g)", frame, weights=frame["w"].tolist())
    for d in (by_name, by_array, by_list):
        assert d.weights.dtype == np.float64
        np.testing.assert_array_equal(d.weights, frame["w"].to_numpy())
    assert by_name.spec.weights_column == "w"
    assert by_array.spec.weights_column is None


def test_missing_weights_drop_the_row(frame):
    frame.loc[[0, 9], "w"] = np.nan
    frame.loc[5, "x"] = np.nan
    d = build_design("y ~ x + (1 | g)", frame, weights="w")
    assert d.n_dropped_rows == 3
    keep = frame["w"].notna() & frame["x"].notna()
    np.testing.assert_array_equal(d.weights, frame.loc[keep, "w"].to_numpy())
    np.testing.assert_array_equal(d.y, frame.loc[keep, "y"].to_numpy())
    with_none = build_design("y ~ x + (1 | g)", frame, weights=[None, *frame["w"][1:]])
    assert with_none.n_dropped_rows == 3


def test_zero_weights_are_allowed(frame):
    frame.loc[:3, "w"] = 0.0
    assert build_design("y ~ x + (1 | g)", frame, weights="w").weights[:4].tolist() == [0.0] * 4


@pytest.mark.parametrize(
    ("change", "weights", "message"),
    [
        (lambda f: f.assign(w=-f["w"]), "w", "weights column 'w' has 40 negative value"),
        (lambda f: f.assign(w=0.0), "w", "weights column 'w' are all zero in the 40 rows used"),
        (lambda f: f.assign(w=np.where(f.index == 2, np.inf, f["w"])), "w",
         "weights column 'w' has 1 infinite value"),
        (lambda f: f.assign(w=np.nan), "w", "the weights are missing in all rows"),
        (lambda f: f, "wt", "weights column 'wt' is not in the data; did you mean 'w'?"),
        (lambda f: f, "weight", "'weight' is not in the data; the data have the columns"),
        (lambda f: f, "g", "weights column 'g' is not numeric"),
        (lambda f: f, [1.0, 2.0], "weights has 2 values but the data have 40 rows"),
        (lambda f: f, np.ones((40, 2)), "weights has an array of shape (40, 2) of values"),
        (lambda f: f, ["a"] * 40, "weights must be numbers"),
    ],
)  # fmt: skip
def test_unusable_weights_are_one_line_errors(frame, change, weights, message):
    with pytest.raises(DataError) as info:
        build_design("y ~ x + (1 | g)", change(frame), weights=weights)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ streamed
def test_streamed_chunks_give_the_in_memory_weights_and_offset(frame):
    frame.loc[[2, 31], "w"] = np.nan
    frame.loc[11, "exposure"] = np.nan
    formula = parse_formula("y ~ x + offset(log(exposure)) + offset(z) + (1 | g)")
    assert used_columns(formula, "w") == ("y", "x", "g", "exposure", "z", "w")
    chunks = [frame.iloc[i : i + 15] for i in range(0, 40, 15)]
    summary = ChunkSummary()
    for i, chunk in enumerate(chunks):
        summary = summary.merge(summarize_chunk(formula, chunk, f"chunk {i}", weights="w"))
    streamed = design_from_summary(formula, summary, weights="w")
    whole = build_design(formula, frame, weights="w")
    assert streamed.nobs == whole.nobs and streamed.n_dropped_rows == 3
    assert streamed.columns == used_columns(formula, "w")
    weights, offsets = [], []
    for chunk in chunks:
        rows = streamed.complete(chunk)
        w, o = streamed.chunk_weights_offset(rows)
        weights.append(w)
        offsets.append(o)
    np.testing.assert_array_equal(np.concatenate(weights), whole.weights)
    np.testing.assert_allclose(np.concatenate(offsets), whole.offset, rtol=1e-15)


def test_streamed_without_weights_or_offset_gives_none(frame):
    formula = parse_formula("y ~ x + (1 | g)")
    streamed = design_from_summary(formula, summarize_chunk(formula, frame, "all"))
    assert streamed.chunk_weights_offset(frame) == (None, None)


def test_streamed_weight_errors(frame):
    formula = parse_formula("y ~ x + (1 | g)")
    with pytest.raises(DataError, match="chunk 1: weights column 'w' has 40 negative value"):
        summarize_chunk(formula, frame.assign(w=-1.0), "chunk 1", weights="w")
    summary = summarize_chunk(formula, frame.assign(w=0.0), "chunk 1", weights="w")
    with pytest.raises(DataError, match="weights column 'w' is all zero"):
        design_from_summary(formula, summary, weights="w")


def test_streamed_orthogonal_poly_is_refused_raw_streams():
    sleep = load_dataset("sleepstudy")
    formula = parse_formula("Reaction ~ poly(Days, 2) + (1 | Subject)")
    with pytest.raises(DataError, match=r"use raw powers, poly\(Days, 2, raw = TRUE\)"):
        summarize_chunk(formula, sleep, "chunk 1")
    raw = parse_formula("Reaction ~ poly(Days, 2, raw = TRUE) + C(Subject, Sum) + (1 | Subject)")
    streamed = design_from_summary(raw, summarize_chunk(raw, sleep, "all"))
    whole = build_design(raw, sleep)
    X, _, _ = streamed.chunk_arrays(sleep)
    np.testing.assert_array_equal(X, whole.X)
    assert streamed.spec.x_names == whole.x_names
