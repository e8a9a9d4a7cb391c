"""The caches of integer level labels, factor levels and grouping plans, and the response's
range read from the missing-value check, never hand out another design's answer.

Each is a pure function of values (the integers present, the labels, the reference), so
a later design on other data, or on the same frame changed in place, must get the levels
and codes of its own rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixedmodels.design import build, build_design, factors
from mixedmodels.errors import DataError


def _frame(ids: list[int]) -> pd.DataFrame:
    y = [1.0, 2.5, 2.0, 4.0, 3.5, 6.0, 5.0, 7.5, 8.0, 7.0, 9.5, 11.0]
    return pd.DataFrame({"y": y, "x": np.arange(12.0) % 5, "g": ids})


def test_integer_labels_follow_the_values_present():
    first = build_design("y ~ x + (1 | g)", _frame([7, 7, 8, 8, 9, 9] * 2))
    # The same positions above another lowest value: other labels.
    second = build_design("y ~ x + (1 | g)", _frame([17, 17, 18, 18, 19, 19] * 2))
    # Other values present: other labels and codes.
    third = build_design("y ~ x + (1 | g)", _frame([7, 9, 9, 12, 12, 7] * 2))
    assert first.re_terms[0].levels == ("7", "8", "9")
    assert second.re_terms[0].levels == ("17", "18", "19")
    assert third.re_terms[0].levels == ("7", "9", "12")
    np.testing.assert_array_equal(third.re_terms[0].refs, [0, 1, 1, 2, 2, 0] * 2)


def test_integer_column_changed_in_place_is_coded_again():
    df = _frame([1, 1, 2, 2, 3, 3] * 2)
    before = build_design("y ~ x + (1 | g)", df)
    df.loc[0, "g"] = 3  # the same levels, another row's code
    after = build_design("y ~ x + (1 | g)", df)
    assert before.re_terms[0].levels == after.re_terms[0].levels == ("1", "2", "3")
    assert before.re_terms[0].refs[0] == 0 and after.re_terms[0].refs[0] == 2
    df.loc[0, "g"] = 4  # a new level
    assert build_design("y ~ x + (1 | g)", df).re_terms[0].levels == ("1", "2", "3", "4")


def test_rank_short_range_matches_numpy_unique():
    rng = np.random.default_rng(3)
    for dtype in (np.int8, np.int16, np.int64, np.uint32, np.uint64):
        for low in (0, 5, 100):
            values = (rng.integers(0, 20, 200) + low).astype(dtype)
            codes, labels = factors._rank_short_range(values)
            uniques, inverse = np.unique(values, return_inverse=True)
            assert labels == [str(int(u)) for u in uniques]
            np.testing.assert_array_equal(codes, inverse)
            assert codes.dtype == np.int64
    negative = np.array([-128, 5, -3, 5, 127], dtype=np.int8)  # no wrap-around in int8
    codes, labels = factors._rank_short_range(negative)
    assert labels == ["-128", "-3", "5", "127"]
    np.testing.assert_array_equal(codes, [0, 2, 1, 2, 3])


def test_integer_labels_cache_is_bounded():
    factors._INTEGER_LABELS.clear()
    for start in range(factors._INTEGER_LABELS_MAX + 10):
        factors._rank_short_range(np.arange(start, start + 4, dtype=np.int64))
    assert len(factors._INTEGER_LABELS) <= factors._INTEGER_LABELS_MAX
    many = np.arange(factors._INTEGER_LABELS_LEVELS + 1, dtype=np.int64)
    factors._INTEGER_LABELS.clear()
    _codes, labels = factors._rank_short_range(many)
    assert len(labels) == many.size and not factors._INTEGER_LABELS  # built, not held


def test_factor_levels_are_shared_only_for_equal_arguments():
    a = factors.factor_levels(["p", "q", "r"], "f")
    assert factors.factor_levels(["p", "q", "r"], "f") is a
    other_reference = factors.factor_levels(["p", "q", "r"], "f", reference="q")
    assert other_reference.reference == 1 and a.reference == 0
    assert factors.factor_levels(["p", "q", "r"], "h").column == "h"
    assert factors.factor_levels(["p", "q", "r"], "f", contrast="sum").contrast == "sum"
    for _ in range(2):  # errors every time, never cached
        with pytest.raises(DataError, match="print the same"):
            factors.factor_levels(["p", "p"], "f")
        with pytest.raises(DataError, match="reference level 'z'"):
            factors.factor_levels(["p", "q"], "f", reference="z")


def test_grouping_plans_follow_the_levels():
    build._GROUPINGS.clear()
    first = build_design("y ~ x + (1 | g)", _frame([1, 1, 2, 2, 3, 3] * 2))
    again = build_design("y ~ x + (1 | g)", _frame([1, 2, 3, 1, 2, 3] * 2))
    other = build_design("y ~ x + (1 | g)", _frame([1, 1, 2, 2, 2, 2] * 2))
    assert first.spec.random[0].grouping is again.spec.random[0].grouping
    assert other.spec.random[0].grouping.levels == ("1", "2")
    np.testing.assert_array_equal(again.re_terms[0].refs, [0, 1, 2] * 4)


def test_constant_response_in_the_rows_kept_is_refused():
    # y varies over all rows but not over the complete ones: the range of the whole
    # column must not answer for the rows kept.
    df = pd.DataFrame(
        {
            "y": [5.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            "x": [np.nan, 1.0, 2.0, 3.0, 4.0, 5.0],
            "g": list("aabbcc"),
        }
    )
    with pytest.raises(DataError, match="the response 'y' is constant"):
        build_design("y ~ x + (1 | g)", df)
    with pytest.raises(DataError, match="the response 'y' is constant"):
        build_design("y ~ x + (1 | g)", df.assign(y=1.0, x=1.0 + np.arange(6)))
    assert build_design("y ~ x + (1 | g)", df.assign(x=1.0 + np.arange(6))).y[0] == 5.0


def test_intercept_matrices_are_read_only_and_right():
    df = _frame([1, 1, 2, 2, 3, 3] * 2)
    d = build_design("y ~ 1 + (1 | g)", df)
    for array in (d.X, d.re_terms[0].z):
        assert array.shape == (12, 1) and not array.flags.writeable
        np.testing.assert_array_equal(array, 1.0)
        with pytest.raises(ValueError):
            array.setflags(write=True)  # a view of a read-only array stays read-only
    assert d.x_names == ("(Intercept)",) and d.dropped_columns == ()
    other = build_design("y ~ 1 + (1 | g)", df.iloc[:9])
    assert other.X.shape == (9, 1) and other.re_terms[0].z.shape == (9, 1)


def test_model_matrix_columns_match_an_independent_construction():
    # Interactions (earlier variables fastest), sum contrasts, a numeric column in a
    # product, and a missing level in new data (a NaN row): the transposed fill must give
    # X in C order with exactly these entries.
    rng = np.random.default_rng(5)
    n = 40
    df = pd.DataFrame(
        {
            "y": rng.normal(size=n),
            "a": rng.choice(["p", "q", "r"], n),
            "b": rng.choice(["u", "v"], n),
            "x": rng.normal(size=n),
            "g": np.arange(n) % 5,
        }
    )
    d = build_design("y ~ a * b + x + C(a, contr.sum):x + (1 + x | g)", df)
    a_t = np.column_stack([(df.a == lev).to_numpy(float) for lev in ("q", "r")])
    b_t = (df.b == "v").to_numpy(float)[:, None]
    a_sum = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])[df.a.map({"p": 0, "q": 1, "r": 2})]
    x = df.x.to_numpy()[:, None]
    expected = np.column_stack([np.ones(n), a_t, b_t, x, a_t * b_t, x * a_sum])
    assert d.x_names[-2:] == ("x:a1", "x:a2")
    assert d.X.flags.c_contiguous and d.X.dtype == np.float64
    np.testing.assert_array_equal(d.X, expected)
    np.testing.assert_array_equal(d.re_terms[0].z, np.column_stack([np.ones(n), df.x]))
    new = df.iloc[:3].copy()
    new["a"] = new["a"].astype(object)
    new.loc[new.index[1], "a"] = None
    X_new = d.spec.fixed_matrix(new)
    assert np.isnan(X_new[1, 1:3]).all() and not np.isnan(X_new[[0, 2]]).any()
    np.testing.assert_array_equal(X_new[[0, 2]], d.X[[0, 2]])


def test_long_integer_ranges_are_ranked_as_numpy_unique():
    values = np.arange(0, 200_000, 3, dtype=np.int64)[::-1].copy()
    assert values.max() - values.min() + 1 > factors._SHORT_COUNTS  # the boolean path
    codes, labels = factors._rank_short_range(values)
    uniques, inverse = np.unique(values, return_inverse=True)
    np.testing.assert_array_equal(codes, inverse)
    assert labels == [str(u) for u in uniques.tolist()]
    linear = np.array([5, 70_000, 5, 3], dtype=np.int64)
    present, refs = build._present_and_ranks(linear, 70_001)
    np.testing.assert_array_equal(present, [3, 5, 70_000])
    np.testing.assert_array_equal(refs, [1, 2, 1, 0])


def test_interaction_plans_follow_the_combinations_present():
    def frame(recipe: list[str], rep: list[int]) -> pd.DataFrame:
        y = np.arange(len(recipe), dtype=float) ** 1.3
        return pd.DataFrame({"y": y, "r": recipe, "k": rep})

    build._INTERACTION_PLANS.clear()
    recipe = ["A", "A", "B", "B", "C", "C"] * 3
    first = build_design("y ~ 1 + (1 | r:k)", frame(recipe, [1, 2] * 9))
    again = build_design("y ~ 1 + (1 | r:k)", frame(recipe, [2, 1] * 9))
    other = build_design("y ~ 1 + (1 | r:k)", frame(recipe, [1, 1, 2, 2, 1, 2] * 3))
    assert first.re_terms[0].levels == ("A:1", "A:2", "B:1", "B:2", "C:1", "C:2")
    assert again.spec.random[0].grouping is first.spec.random[0].grouping
    np.testing.assert_array_equal(again.re_terms[0].refs, [1, 0, 3, 2, 5, 4] * 3)
    assert other.re_terms[0].levels == ("A:1", "B:2", "C:1", "C:2")
    np.testing.assert_array_equal(other.re_terms[0].refs, [0, 0, 1, 1, 2, 3] * 3)
    np.testing.assert_array_equal(other.spec.random[0].grouping.present, [0, 3, 4, 5])


def test_one_term_grouping_and_shared_free_entries():
    from mixedmodels.covariance import CovarianceStructure, group_terms

    df = _frame([1, 1, 2, 2, 3, 3] * 2)
    d = build_design("y ~ x + (1 + x | g)", df)
    (term,) = group_terms(d.re_terms)
    assert term.blocks == ((0, 2),) and term.members == (0,)
    assert term.column_names == ("(Intercept)", "x") and term.levels == ("1", "2", "3")
    np.testing.assert_array_equal(term.z, d.re_terms[0].z)
    np.testing.assert_array_equal(term.refs, d.re_terms[0].refs)
    first = CovarianceStructure.from_terms((term,))
    second = CovarianceStructure.from_terms(group_terms(d.re_terms))
    assert first.rows[0].tolist() == [0, 1, 1] and first.cols[0].tolist() == [0, 0, 1]
    assert first.rows[0] is second.rows[0] and not first.rows[0].flags.writeable
    fresh_rows, _ = term.free_entries()  # the method still hands out new arrays
    assert fresh_rows.flags.writeable and fresh_rows is not first.rows[0]


def test_integer_codes_are_kept_by_dtype_and_values():
    factors._INTEGER_CODES.clear()
    ids = np.array([30, 10, 20, 10], dtype=np.int64)
    codes, labels = factors._factorize_sorted_fast(ids)
    again, labels_again = factors._factorize_sorted_fast(ids.copy())
    assert again is codes and labels_again == labels == ["10", "20", "30"]
    assert not codes.flags.writeable
    np.testing.assert_array_equal(codes, [2, 0, 1, 0])
    # The same bytes read as another dtype are other values.
    as_unsigned = ids.view(np.uint64)
    other, _ = factors._factorize_sorted_fast(as_unsigned)
    assert other is not codes
    ids[0] = 5  # changed in place: new values, a new key
    changed, changed_labels = factors._factorize_sorted_fast(ids)
    assert changed_labels == ["5", "10", "20"]
    np.testing.assert_array_equal(changed, [0, 1, 2, 1])
    for i in range(factors._INTEGER_CODES_MAX + 5):
        factors._factorize_sorted_fast(np.arange(i, i + 3, dtype=np.int64))
    assert len(factors._INTEGER_CODES) <= factors._INTEGER_CODES_MAX
    factors._INTEGER_CODES.clear()
    factors._factorize_sorted_fast(np.arange(factors._SHORT_INTEGERS + 1, dtype=np.int64))
    assert not factors._INTEGER_CODES  # a long column: ranked, not held


def test_terms_on_distinct_factors_are_sorted_stably_by_levels():
    from mixedmodels.covariance import group_terms

    df = pd.DataFrame(
        {
            "y": np.arange(24.0) ** 1.2,
            "a": list("ab") * 12,
            "b": list("uvwxyz") * 4,
            "c": list("pq") * 12,
        }
    )
    d = build_design("y ~ 1 + (1 | a) + (1 | b) + (1 | c)", df)
    grouped = group_terms(d.re_terms)
    # b has most levels; a and c tie and keep formula order.
    assert [g.group for g in grouped] == ["b", "a", "c"]
    assert [g.members for g in grouped] == [(1,), (0,), (2,)]
    assert all(g.blocks == ((0, 1),) for g in grouped)
    merged = group_terms(build_design("y ~ 1 + (1 | a) + (0 + c | a) + (1 | b)", df).re_terms)
    assert [g.group for g in merged] == ["b", "a"]
    assert merged[1].blocks == ((0, 1), (1, 3)) and merged[1].members == (0, 1)  # cp, cq
