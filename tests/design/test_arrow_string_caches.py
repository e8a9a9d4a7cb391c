"""The caches keyed by a column's Arrow data (its ChunkedArray) never serve stale codes.

Short pyarrow-backed string columns keep their sorted factorisation, and interactions of
such columns their grouping plan and codes, for as long as the column holds the same
ChunkedArray (Arrow arrays are immutable: pandas gives a column a new one on every
write). A frame changed in place, a copy with other rows, other levels or another dtype
must give the design of its own data, equal to a design built with the caches empty.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.design import build, build_design, factors

pytestmark = pytest.mark.filterwarnings("ignore::mixedmodels.errors.SingularFitWarning")

FORMULA = "y ~ f + (1 | g) + (1 | g:h)"


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 48
    return pd.DataFrame(
        {
            "y": rng.normal(size=n) + np.repeat(rng.normal(size=8), 6),
            "f": ["p", "q", "r"] * 16,
            "g": np.repeat(list("abcdefgh"), 6).tolist(),
            "h": ["u", "v"] * 24,
        }
    ).astype({"f": "str", "g": "str", "h": "str"})


def _uncached(formula: str, df: pd.DataFrame):
    """The design with both caches emptied first (what a first call computes)."""
    factors._ARROW_CODES.clear()
    build._INTERACTIONS.clear()
    return build_design(formula, df)


def _assert_same_design(a, b) -> None:
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.x_names == b.x_names
    assert len(a.re_terms) == len(b.re_terms)
    for s, t in zip(a.re_terms, b.re_terms, strict=True):
        assert s.group == t.group and s.levels == t.levels
        np.testing.assert_array_equal(s.refs, t.refs)
        np.testing.assert_array_equal(s.z, t.z)


def test_columns_are_arrow_strings():
    # The premise of the tests below (pandas 3: str columns are pyarrow-backed).
    dtype = _frame()["g"].dtype
    if not (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"):
        pytest.skip("this pandas does not store strings in Arrow")


def test_second_design_uses_the_caches_and_equals_the_first():
    df = _frame()
    first = _uncached(FORMULA, df)
    assert factors._ARROW_CODES and build._INTERACTIONS
    second = build_design(FORMULA, df)
    _assert_same_design(first, second)
    # The interaction's codes are the cached (read-only) array itself.
    (cached,) = build._INTERACTIONS.values()
    assert not cached[2].flags.writeable
    assert np.shares_memory(second.re_terms[1].refs, cached[2]) or np.shares_memory(
        second.re_terms[0].refs, cached[2]
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda df: df.loc.__setitem__((0, "g"), "h"),  # one value, an existing level
        lambda df: df.loc.__setitem__((5, "h"), "w"),  # a new level of one component
        lambda df: df.iloc.__setitem__((7, 3), "u"),  # by position
        lambda df: df.__setitem__("g", df["g"].str.upper()),  # a whole new column
        lambda df: df.replace({"f": {"p": "z"}}, inplace=True),
        lambda df: df.__setitem__("h", pd.Series(["v", "u"] * 24, dtype="str")),
    ],
)
def test_frame_changed_in_place_is_read_again(change):
    df = _frame()
    build_design(FORMULA, df)
    build_design(FORMULA, df)  # the caches hold this frame's columns
    change(df)
    after = build_design(FORMULA, df)
    _assert_same_design(after, _uncached(FORMULA, df))


def test_rows_dropped_other_dtypes_and_copies():
    df = _frame()
    build_design(FORMULA, df)
    # A missing value: the rows used are a subset, with codes of their own.
    holes = df.copy()
    holes.loc[3, "h"] = None
    _assert_same_design(build_design(FORMULA, holes), _uncached(FORMULA, holes))
    assert build_design(FORMULA, holes).nobs == 47
    # Object and categorical columns of the same strings take the general paths and agree.
    build_design(FORMULA, df)
    for dtype in ("object", "category"):
        other = df.astype({"g": dtype, "h": dtype})
        _assert_same_design(build_design(FORMULA, other), build_design(FORMULA, df))
    # A copy shares the immutable Arrow data: the same design.
    _assert_same_design(build_design(FORMULA, df.copy()), _uncached(FORMULA, df))


def test_cached_codes_are_read_only_and_the_caches_bounded():
    factors._ARROW_CODES.clear()
    build._INTERACTIONS.clear()
    frames = []
    for i in range(factors._ARROW_CODES_MAX + 5):
        df = _frame()
        df["g"] = (df["g"] + str(i)).astype("str")
        frames.append(df)
        build_design(FORMULA, df)
    assert len(factors._ARROW_CODES) <= factors._ARROW_CODES_MAX
    assert len(build._INTERACTIONS) <= build._INTERACTIONS_MAX
    for _, codes, _labels in factors._ARROW_CODES.values():
        assert not codes.flags.writeable
    # Long columns are not kept.
    factors._ARROW_CODES.clear()
    long = pd.Series([f"s{i % 9}" for i in range(factors._SMALL_STRINGS + 1)], dtype="str")
    codes, labels = factors._factorize_sorted_fast(long)
    assert labels == [f"s{i}" for i in range(9)]
    assert not factors._ARROW_CODES


def test_fits_with_and_without_the_caches_are_identical():
    df = _frame()
    factors._ARROW_CODES.clear()
    build._INTERACTIONS.clear()
    first = mm.lmer(FORMULA, df)
    second = mm.lmer(FORMULA, df)
    assert first.reml_criterion == second.reml_criterion
    np.testing.assert_array_equal(first.opt.final_theta, second.opt.final_theta)
    np.testing.assert_array_equal(first.fixef.to_numpy(), second.fixef.to_numpy())
