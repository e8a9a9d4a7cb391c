"""FactorLevels.encode's integer path (issue 18, pass 2): the same codes as the labels'.

A streamed fit codes every chunk's integer ids (1e6 users) against the levels of pass 1;
the integer path reads them from a table over the levels' range instead of formatting
and looking up each chunk's labels. Every case must give the general path's codes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixedmodels.design.factors import FactorLevels, _factorize_labels


def _general(levels: FactorLevels, series: pd.Series) -> np.ndarray:
    codes, labels = _factorize_labels(series, sort=False)
    lookup = {label: i for i, label in enumerate(levels.levels)}
    mapping = np.array([lookup.get(label, -2) for label in labels] + [-1], dtype=np.int64)
    return mapping[codes]


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.int8])
def test_integer_codes_equal_the_labels_codes(dtype):
    rng = np.random.default_rng(3)
    levels = FactorLevels("user", tuple(str(v) for v in sorted({3, 5, 8, 13, 21, 34, 55})))
    values = rng.choice(np.array([3, 5, 8, 13, 21, 34, 55, 4, 0, 100, 99], dtype=dtype), 500)
    series = pd.Series(values)
    got = levels.encode(series)
    assert levels._integer_table is not None
    np.testing.assert_array_equal(got, _general(levels, series))
    assert got.dtype == np.int64
    assert (got[values == 4] == -2).all() and (got[values == 100] == -2).all()


def test_negative_and_wide_integers():
    levels = FactorLevels("g", ("-7", "-1", "0", "2"))
    series = pd.Series(np.array([-7, 2, 0, -1, -8, 3, 2**40], dtype=np.int64))
    np.testing.assert_array_equal(levels.encode(series), _general(levels, series))
    wide = FactorLevels("g", ("1", "1000000000"))  # a range far wider than the levels
    assert wide._integer_table is None
    series = pd.Series(np.array([1, 1000000000, 5], dtype=np.int64))
    np.testing.assert_array_equal(wide.encode(series), [0, 1, -2])


@pytest.mark.parametrize("labels", [("a", "b"), ("01", "2"), ("1.5", "2"), ("+1", "2")])
def test_labels_that_are_not_integers_keep_the_general_path(labels):
    levels = FactorLevels("g", labels)
    assert levels._integer_table is None
    series = pd.Series(np.array([1, 2, 2], dtype=np.int64))
    np.testing.assert_array_equal(levels.encode(series), _general(levels, series))


def test_the_table_is_not_pickled():
    import pickle

    levels = FactorLevels("g", ("1", "2", "3"))
    levels.encode(pd.Series([1, 2, 3]))
    assert "_integer_table" in levels.__dict__
    again = pickle.loads(pickle.dumps(levels))
    assert "_integer_table" not in again.__dict__
    np.testing.assert_array_equal(again.encode(pd.Series([3, 1])), [2, 0])
