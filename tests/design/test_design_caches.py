"""The design's value-keyed caches (matrix plans, coding tables) never hand out stale columns.

Plans and coding tables are kept by the formula part and the factors' levels; a second
design of the same formula on data with other levels, or on the same frame after it was
changed in place, must give the columns of its own data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mixedmodels.design import build, build_design


def _frame(levels: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "y": [1.0, 2.5, 2.0, 4.0, 3.5, 6.0, 5.0, 7.5, 8.0, 7.0, 9.5, 11.0],
            "f": [levels[i % len(levels)] for i in range(12)],
            "g": list("aabbccddeeff"),
        }
    )


def test_same_formula_other_levels_gives_its_own_columns():
    formula = "y ~ f + (1 | g)"
    first = build_design(formula, _frame(["p", "q", "r"]))
    second = build_design(formula, _frame(["u", "v"]))
    assert first.x_names == ("(Intercept)", "fq", "fr")
    assert second.x_names == (
        "(Intercept)",
        "fv",
    )
    np.testing.assert_array_equal(second.X[:, 1], [0.0, 1.0] * 6)


def test_frame_changed_in_place_is_read_again():
    formula = "y ~ f + (1 | g)"
    df = _frame(["p", "q"])
    before = build_design(formula, df)
    df.loc[0, "f"] = "q"  # same levels, other rows: the plan is shared, X is not
    after = build_design(formula, df)
    assert before.x_names == after.x_names
    assert before.X[0, 1] == 0.0 and after.X[0, 1] == 1.0
    df["f"] = ["r"] * 6 + ["s"] * 6  # other levels
    assert build_design(formula, df).x_names == ("(Intercept)", "fs")


def test_coding_tables_are_read_only_and_large_ones_not_kept():
    many = [f"L{i:03d}" for i in range(100)]
    df = pd.DataFrame({"y": np.arange(300.0) % 7, "f": many * 3, "g": list("abc") * 100})
    build._CODING_TABLES.clear()
    d = build_design("y ~ f + (1 | g)", df)
    assert d.X.shape == (300, 100)
    assert not build._CODING_TABLES  # 101 x 99 entries: built, used, not held
    small = build_design("y ~ f + (1 | g)", _frame(["p", "q"]))
    (table,) = build._CODING_TABLES.values()
    assert not table.flags.writeable
    assert small.X.shape == (12, 2)
