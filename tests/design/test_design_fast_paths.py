"""The design layer's fast paths give what the general pandas/NumPy paths give.

``build_design`` avoids slow pandas calls on small data (sorted factorisation, ``isna``,
``to_numpy(na_value=...)``) and a Python loop for the rank check. Each shortcut is
compared here with the general computation it replaces, value for value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixedmodels.design import build_design, format_level
from mixedmodels.design.build import (
    RANK_TOLERANCE,
    _clearly_full_rank,
    _clearly_full_rank_unscaled,
    _independent_columns,
    _missing,
    _present_and_ranks,
    _sequential_pivots,
)
from mixedmodels.design.factors import (
    _factorize_labels,
    _factorize_sorted_fast,
    column_array,
    fit_factor,
)


def reference_factorize(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    """The general path: pandas' sorted factorisation and R-style labels."""
    codes, uniques = pd.factorize(series, sort=True, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), [format_level(u) for u in uniques]


def _strings(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    pool = ["b", "a", "B", "aa", "", "é", "z", "ä", "\U0001f600", "10", "9", "a b"]
    return [pool[i] for i in rng.integers(0, len(pool), n)]


SERIES = {
    "str-arrow": pd.Series(_strings(50, 1), dtype="string[pyarrow]"),
    "str-python": pd.Series(_strings(50, 2), dtype="string[python]"),
    "str-default": pd.Series(_strings(50, 3)).astype("str"),
    "str-missing": pd.Series(["b", None, "a", "b", None], dtype="string[pyarrow]"),
    "str-long": pd.Series(_strings(12_000, 4), dtype="string[pyarrow]"),  # Arrow branch
    "str-long-missing": pd.Series([*_strings(12_000, 5), None], dtype="string[pyarrow]"),
    "int": pd.Series([3, 1, 2, -5, 3, 1]),
    "int-long": pd.Series(np.random.default_rng(6).integers(-40, 400, 20_000)),
    "uint8": pd.Series([3, 1, 2, 1], dtype="uint8"),
    "int32": pd.Series([30, 10, 20], dtype="int32"),
    "int8-extremes": pd.Series([5, -128, 127, 5], dtype="int8"),  # would wrap in int8
    "uint64-huge": pd.Series([2**64 - 1, 3, 2**64 - 1], dtype="uint64"),  # hash path
    "int64-extremes": pd.Series([-(2**63), -(2**63) + 2, -(2**63)]),
    "bool": pd.Series([True, False, True]),
    "float": pd.Series([0.5, -0.0, 0.0, 2.0, 1e20, -3.25, 175.0]),
    "float32": pd.Series([1.5, 2.5, 1.5], dtype="float32"),
    "float-inf": pd.Series([np.inf, -np.inf, 1.0]),
}


@pytest.mark.parametrize("key", list(SERIES))
def test_sorted_factorisation_matches_pandas(key):
    series = SERIES[key]
    fast = _factorize_sorted_fast(series)
    assert fast is not None, "this column should take the fast path"
    codes, labels = fast
    ref_codes, ref_labels = reference_factorize(series)
    assert labels == ref_labels
    assert codes.dtype == np.int64
    np.testing.assert_array_equal(codes, ref_codes)


@pytest.mark.parametrize("key", list(SERIES))
def test_sorted_factorisation_of_the_array_matches_the_series(key):
    # build_design reads columns as arrays (no Series per column): the same codes and labels.
    series = SERIES[key]
    from_series = _factorize_sorted_fast(series)
    from_array = _factorize_sorted_fast(column_array(series))
    assert from_series is not None and from_array is not None
    assert from_array[1] == from_series[1]
    np.testing.assert_array_equal(from_array[0], from_series[0])


@pytest.mark.parametrize(
    "series",
    [
        pd.Series(["x", 1, 2.5], dtype=object),
        pd.Series(["b", "a"], dtype=object),
        pd.Series([1.0, np.nan, 2.0]),
        pd.Series(pd.Categorical(["b", "a"], categories=["c", "b", "a"])),
        pd.Series([1, None, 3], dtype="Int64"),
    ],
)
def test_other_columns_keep_the_general_path(series):
    assert _factorize_sorted_fast(series) is None
    codes, labels = _factorize_labels(series, sort=True)  # still works
    assert len(codes) == len(series)
    assert labels


def test_fit_factor_reference_level_with_the_fast_path():
    series = pd.Series(["Male", "Female", "Male"], dtype="string[pyarrow]")
    levels, codes = fit_factor(series, "sex", "Male")
    assert levels.levels == ("Female", "Male")
    assert levels.reference == 1
    np.testing.assert_array_equal(codes, [1, 0, 1])


MISSING = {
    "int": pd.Series([1, 2, 3]),
    "bool": pd.Series([True, False]),
    "float": pd.Series([1.0, np.nan, 3.0]),
    "float32": pd.Series([np.nan, 1.0], dtype="float32"),
    "object": pd.Series(["a", None, np.nan, "b"], dtype=object),
    "str-arrow": pd.Series(["a", None, "b"], dtype="string[pyarrow]"),
    "str-python": pd.Series(["a", None, "b"], dtype="string[python]"),
    "str-default": pd.Series(["a", None, "b"]).astype("str"),
    "categorical": pd.Series(pd.Categorical(["a", None, "b"])),
    "datetime": pd.Series(pd.to_datetime(["2020-01-01", None])),
    "Int64": pd.Series([1, None, 3], dtype="Int64"),
    "boolean": pd.Series([True, None], dtype="boolean"),
}


@pytest.mark.parametrize("as_array", [False, True])
@pytest.mark.parametrize("key", list(MISSING))
def test_missing_mask_matches_isna(key, as_array):
    series = MISSING[key]
    mask = _missing(column_array(series) if as_array else series)
    expected = series.isna().to_numpy()
    if mask is None:
        assert not expected.any()
    else:
        assert mask.dtype == bool
        np.testing.assert_array_equal(mask, expected)


def _sequential_decision(X: np.ndarray) -> tuple[int, ...]:
    """The rank decision without the Cholesky shortcut (what _independent_columns did)."""
    norms = np.sqrt(np.einsum("ij,ij->j", X, X))
    nonzero = norms > 0
    scaled = X[:, nonzero] / norms[nonzero]
    kept, _ = _sequential_pivots(scaled.T @ scaled, RANK_TOLERANCE**2, margin=100.0)
    index = np.flatnonzero(nonzero)
    return tuple(int(index[j]) for j in kept)


def _matrices():
    rng = np.random.default_rng(11)
    base = rng.normal(size=(40, 5))
    yield "full", base
    yield "intercept", np.ones((40, 1))
    yield "zero column", np.zeros((40, 1))
    yield "duplicate", np.column_stack([base, base[:, 1]])
    yield "combination", np.column_stack([base, base[:, 0] - 2 * base[:, 3]])
    yield "zero among others", np.column_stack([base[:, :2], np.zeros(40), base[:, 2:]])
    indicators = (rng.integers(0, 3, 40)[:, None] == np.arange(3)).astype(float)
    yield "indicators + intercept", np.column_stack([np.ones(40), indicators])
    yield "scaled", base * np.array([1e-6, 1.0, 1e6, 3.0, 1e3])
    wide = rng.normal(size=(60, 16))  # more columns than the Python-float shortcut takes
    yield "wide", wide
    yield "wide, dependent", np.column_stack([wide, wide[:, 2] + wide[:, 9]])
    yield "wide, near", np.column_stack([wide, wide[:, 4] + 3e-7 * rng.normal(size=60)])


@pytest.mark.parametrize(("name", "X"), list(_matrices()))
def test_rank_decision_matches_the_sequential_pivots(name, X):
    assert _independent_columns(X) == _sequential_decision(X), name


@pytest.mark.parametrize(("name", "X"), list(_matrices()))
def test_unscaled_full_rank_check_matches_the_scaled_one(name, X):
    # The shortcut reads X'X; where every column is non-zero its answer is that of the
    # unit-scaled Gram matrix (zero columns: it declines, the scaled path drops them).
    norms = np.sqrt((X * X).sum(axis=0))
    threshold = RANK_TOLERANCE**2 * 100.0
    if not (norms > 0).all():
        assert not _clearly_full_rank_unscaled(X, threshold), name
        return
    scaled = X / norms
    assert _clearly_full_rank_unscaled(X, threshold) == _clearly_full_rank(
        scaled.T @ scaled, threshold
    ), name


def test_full_rank_shortcut_declines_near_the_tolerance():
    # A column whose residual is just above the tolerance must go to the careful path.
    rng = np.random.default_rng(2)
    a = rng.normal(size=50)
    b = a + 3e-7 * rng.normal(size=50)
    X = np.column_stack([a, b])
    norms = np.sqrt((X * X).sum(axis=0))
    gram = (X / norms).T @ (X / norms)
    assert not _clearly_full_rank(gram, RANK_TOLERANCE**2 * 100.0)
    assert not _clearly_full_rank_unscaled(X, RANK_TOLERANCE**2 * 100.0)
    assert _independent_columns(X) == _sequential_decision(X)


def test_design_does_not_share_memory_with_the_data():
    df = pd.DataFrame(
        {
            "y": np.arange(12.0) ** 1.5,
            "x": np.arange(12.0),
            "k": np.arange(12) % 5,
            "g": list("abcd") * 3,
        }
    )
    d = build_design("y ~ x + k + (1 + x | g)", df)
    for column in df.columns:
        values = df[column].to_numpy()
        for array in (d.y, d.X, d.re_terms[0].z):
            assert not np.shares_memory(array, values)
    assert not d.y.flags.writeable  # as before: the response is a read-only array


def test_terms_with_the_same_left_side_get_equal_separate_matrices():
    df = pd.DataFrame(
        {
            "y": [1.0, 2.5, 2.0, 4.0, 3.5, 6.0, 5.0, 7.5, 8.0, 7.0, 9.5, 11.0],
            "a": list("pqpqpqpqpqpq"),
            "b": list("uuvvwwuuvvww"),
        }
    )
    d = build_design("y ~ 1 + (1 | a) + (1 | a:b) + (1 | b)", df)
    z = [t.z for t in d.re_terms]
    for i in range(len(z)):
        for j in range(i + 1, len(z)):
            np.testing.assert_array_equal(z[i], z[j])
            assert not np.shares_memory(z[i], z[j])
    assert [t.group for t in d.re_terms] == ["a", "a:b", "b"]
    assert d.re_terms[0].levels == ("p", "q")
    assert d.re_terms[1].levels == ("p:u", "p:v", "p:w", "q:u", "q:v", "q:w")


@pytest.mark.parametrize(
    ("total", "n"),
    [(30, 60), (1, 5), (5000, 40), (10**9, 100)],  # mask path, then np.unique
)
def test_present_and_ranks_match_unique(total, n):
    linear = np.random.default_rng(total).integers(0, total, n).astype(np.int64)
    present, refs = _present_and_ranks(linear, total)
    ref_present, ref_refs = np.unique(linear, return_inverse=True)
    assert present.dtype == np.int64
    np.testing.assert_array_equal(present, ref_present)
    np.testing.assert_array_equal(refs, ref_refs)
