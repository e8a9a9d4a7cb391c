"""Behaviour of build_design: coding rules, NA handling, rank deficiency, errors, predict."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mixedmodels.design import build_design, format_level
from mixedmodels.errors import (
    DataError,
    FormulaError,
    ModelSpecificationError,
    RankDeficiencyWarning,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def ratpup() -> pd.DataFrame:
    return pd.read_csv(DATA / "ratpup.csv")


@pytest.fixture(scope="module")
def sleepstudy() -> pd.DataFrame:
    return pd.read_csv(DATA / "sleepstudy.csv")


def small() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "y": [1.0, 2.0, 3.5, 4.0, 5.5, 7.0, 6.0, 8.5],
            "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            "f": ["b", "a", "c", "a", "b", "c", "a", "b"],
            "g": ["u", "u", "v", "v", "w", "w", "u", "v"],
        }
    )


# -- fixed-effects coding ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("formula", "names"),
    [
        ("weight ~ sex", ("(Intercept)", "sexMale")),
        ("weight ~ 0 + sex", ("sexFemale", "sexMale")),
        ("weight ~ sex - 1", ("sexFemale", "sexMale")),
        ("weight ~ 0 + sex + treatment", ("sexFemale", "sexMale", "treatmentHigh", "treatmentLow")),
        (
            "weight ~ treatment*sex",
            (
                "(Intercept)",
                "treatmentHigh",
                "treatmentLow",
                "sexMale",
                "treatmentHigh:sexMale",
                "treatmentLow:sexMale",
            ),
        ),
        (
            "weight ~ treatment:sex",
            (
                "(Intercept)",
                "treatmentControl:sexFemale",
                "treatmentHigh:sexFemale",
                "treatmentLow:sexFemale",
                "treatmentControl:sexMale",
                "treatmentHigh:sexMale",
                "treatmentLow:sexMale",
            ),
        ),
        (
            "weight ~ treatment/sex",
            (
                "(Intercept)",
                "treatmentHigh",
                "treatmentLow",
                "treatmentControl:sexMale",
                "treatmentHigh:sexMale",
                "treatmentLow:sexMale",
            ),
        ),
        ("weight ~ litsize:sex", ("(Intercept)", "litsize:sexFemale", "litsize:sexMale")),
        ("weight ~ litsize*sex", ("(Intercept)", "litsize", "sexMale", "litsize:sexMale")),
        (
            "weight ~ sex:litsize + sex",
            ("(Intercept)", "sexMale", "sexFemale:litsize", "sexMale:litsize"),
        ),
        (
            "weight ~ log(litsize) + I(litsize^2) + scale(litsize)",
            ("(Intercept)", "log(litsize)", "I(litsize^2)", "scale(litsize)"),
        ),
        ("weight ~ C(sex, Treatment('Male'))", ("(Intercept)", "sexFemale")),
        ("weight ~ C(treatment, ref='Low')", ("(Intercept)", "treatmentControl", "treatmentHigh")),
        ("weight ~ C(litsize, ref=12)", None),  # checked below
    ],
)
def test_fixed_column_names(ratpup, formula, names):
    with warnings.catch_warnings():
        # treatment:sex has all 6 cells besides the intercept: lme4 drops the last one too.
        warnings.simplefilter("ignore", RankDeficiencyWarning)
        d = build_design(formula, ratpup)
    if names is not None:
        assert d.x_names + d.dropped_columns == names
    else:
        assert "litsize12" not in d.x_names and "litsize3" in d.x_names
    assert d.X.shape == (322, len(d.x_names))


def test_treatment_coding_values(ratpup):
    d = build_design("weight ~ treatment*sex + litsize + (1|litter)", ratpup)
    X = pd.DataFrame(d.X, columns=d.x_names)
    assert np.array_equal(X["treatmentHigh"], (ratpup.treatment == "High").astype(float))
    assert np.array_equal(
        X["treatmentHigh:sexMale"],
        ((ratpup.treatment == "High") & (ratpup.sex == "Male")).astype(float),
    )
    assert np.array_equal(X["litsize"], ratpup.litsize.astype(float))
    assert np.array_equal(d.y, ratpup.weight.to_numpy())


def test_ols_on_X_reproduces_group_means(ratpup):
    d = build_design("weight ~ treatment + (1|litter)", ratpup)
    beta, *_ = np.linalg.lstsq(d.X, d.y, rcond=None)
    means = ratpup.groupby("treatment")["weight"].mean()
    expected = [means["Control"], means["High"] - means["Control"], means["Low"] - means["Control"]]
    np.testing.assert_allclose(beta, expected, rtol=1e-12)


def test_ols_on_X_reproduces_simple_regression(sleepstudy):
    d = build_design("Reaction ~ Days + (Days | Subject)", sleepstudy)
    beta, *_ = np.linalg.lstsq(d.X, d.y, rcond=None)
    slope, intercept = np.polyfit(sleepstudy.Days, sleepstudy.Reaction, 1)
    np.testing.assert_allclose(beta, [intercept, slope], rtol=1e-10)


def test_transforms_evaluate_like_numpy():
    df = small()
    d = build_design("log(y) ~ log(x) + exp(x/10) + sqrt(x) + I(x^2 - 2*x) + I(-x) ", df)
    x = df.x.to_numpy()
    np.testing.assert_allclose(d.y, np.log(df.y))
    X = pd.DataFrame(d.X, columns=d.x_names)
    np.testing.assert_allclose(X["log(x)"], np.log(x))
    np.testing.assert_allclose(X["exp(x/10)"], np.exp(x / 10))
    np.testing.assert_allclose(X["sqrt(x)"], np.sqrt(x))
    np.testing.assert_allclose(X["I(x^2 - 2 * x)"], x**2 - 2 * x)
    np.testing.assert_allclose(X["I(-x)"], -x)
    assert d.response_name == "log(y)"


def test_scale_and_center_drop_rank():
    df = small()
    with pytest.warns(RankDeficiencyWarning):
        d = build_design("y ~ x + scale(x) + center(x)", df)
    assert d.x_names == ("(Intercept)", "x")
    assert d.dropped_columns == ("scale(x)", "center(x)")


def test_levels_sorted_and_labels_like_r():
    df = pd.DataFrame(
        {
            "y": np.arange(8.0),
            "t": [175.0, 185.0, 175.0, 0.5, 185.0, 0.5, 175.0, 185.0],
            "s": ["b", "B", "a", "b", "B", "a", "a", "b"],
            "flag": [True, False, True, False, True, False, True, True],
        }
    )
    d = build_design("y ~ C(t) + s + flag", df)
    assert d.x_names == ("(Intercept)", "t175", "t185", "sa", "sb", "flagTRUE")
    assert format_level(175.0) == "175" and format_level(0.1) == "0.1"
    assert format_level(True) == "TRUE" and format_level(np.int64(3)) == "3"


def test_categorical_keeps_order_and_drops_unused():
    df = small()
    df["f"] = pd.Categorical(df["f"], categories=["c", "zz", "b", "a"])
    d = build_design("y ~ f", df)
    assert d.x_names == ("(Intercept)", "fb", "fa")


# -- random-effects terms --------------------------------------------------------------------
def test_random_slope_and_uncorrelated_split(ratpup, sleepstudy):
    d = build_design("weight ~ sex + (1 + sex | litter)", ratpup)
    (term,) = d.re_terms
    assert term.column_names == ("(Intercept)", "sexMale")
    assert term.z.shape == (322, 2)
    np.testing.assert_array_equal(term.z[:, 1], (ratpup.sex == "Male").astype(float))
    d = build_design("weight ~ sex + (1 + sex || litter)", ratpup)
    assert [(t.group, t.column_names) for t in d.re_terms] == [
        ("litter", ("(Intercept)",)),
        ("litter", ("sexMale",)),
    ]
    d = build_design("Reaction ~ Days + (Days || Subject)", sleepstudy)
    assert [t.column_names for t in d.re_terms] == [("(Intercept)",), ("Days",)]
    assert d.re_terms[0].refs is d.re_terms[1].refs or np.array_equal(
        d.re_terms[0].refs, d.re_terms[1].refs
    )
    d = build_design("weight ~ 1 + (0 + sex | litter)", ratpup)
    assert d.re_terms[0].column_names == ("sexFemale", "sexMale")


def test_grouping_levels_and_refs(sleepstudy):
    d = build_design("Reaction ~ Days + (1 | Subject)", sleepstudy)
    term = d.re_terms[0]
    assert term.levels[:3] == ("308", "309", "310")
    labels = np.asarray(term.levels)[term.refs]
    assert list(labels) == [str(s) for s in sleepstudy.Subject]


def test_interaction_grouping_present_combinations_only():
    df = pd.DataFrame(
        {
            "y": np.arange(8.0),
            "a": ["p", "p", "q", "q", "p", "q", "p", "q"],
            "b": [2, 10, 2, 2, 2, 10, 10, 2],
            "c": ["z", "z", "z", "z", "y", "y", "y", "y"],
        }
    )
    d = build_design("y ~ 1 + (1 | a:b)", df)
    assert d.re_terms[0].group == "a:b"
    assert d.re_terms[0].levels == ("p:2", "p:10", "q:2", "q:10")
    d = build_design("y ~ 1 + (1 | c/a)", df)
    assert [t.group for t in d.re_terms] == ["c", "a:c"]
    assert d.re_terms[1].levels == ("p:y", "p:z", "q:y", "q:z")
    labels = np.asarray(d.re_terms[1].levels)[d.re_terms[1].refs]
    assert list(labels) == [f"{a}:{c}" for a, c in zip(df.a, df.c, strict=True)]


# -- missing values ------------------------------------------------------------------------------
def test_missing_values_are_dropped_and_counted():
    df = small()
    df.loc[1, "x"] = np.nan
    df.loc[4, "f"] = None
    df.loc[6, "g"] = None
    df["unused"] = np.nan  # not in the formula: ignored
    d = build_design("y ~ x + f + (1 | g)", df)
    assert d.n_dropped_rows == 3
    assert d.nobs == 5
    assert list(d.row_index) == [0, 2, 3, 5, 7]
    np.testing.assert_array_equal(d.y, df.y.to_numpy()[[0, 2, 3, 5, 7]])


def test_pandas_na_is_missing():
    df = small()
    df["y"] = pd.array([1, 2, None, 4, 5, 7, 6, 9], dtype="Int64")
    d = build_design("y ~ x + (1 | g)", df)
    assert d.n_dropped_rows == 1 and d.y.dtype == np.float64


def test_no_complete_rows():
    df = small()
    df["x"] = np.nan
    with pytest.raises(DataError, match="column 'x' is missing in all rows"):
        build_design("y ~ x + (1 | g)", df)


# -- rank deficiency -----------------------------------------------------------------------------
def test_rank_deficient_columns_dropped_with_warning():
    df = small()
    df["x2"] = 2 * df["x"] + 1
    with pytest.warns(RankDeficiencyWarning, match="dropping 1 column: x2"):
        d = build_design("y ~ x + x2 + (1 | g)", df)
    assert d.x_names == ("(Intercept)", "x")
    assert d.dropped_columns == ("x2",)
    assert d.X.shape == (8, 2)
    assert d.spec.fixed_matrix(df).shape == (8, 2)


def test_rank_deficient_interaction_keeps_earlier_columns(ratpup):
    # litsize is constant within litter; treatment too: the empty cell-free design is full
    # rank, but duplicating a factor through C() is not.
    with pytest.warns(RankDeficiencyWarning, match="dropping 2 columns"):
        d = build_design("weight ~ treatment + C(treatment, ref='High')", ratpup)
    assert d.x_names == ("(Intercept)", "treatmentHigh", "treatmentLow")


def test_full_rank_does_not_warn(ratpup):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = build_design("weight ~ treatment*sex + litsize + (1|litter)", ratpup)
    assert d.dropped_columns == ()


def test_nearly_collinear_but_independent_column_is_kept():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    df = pd.DataFrame({"y": rng.normal(size=200), "x": x, "z": x + 1e-5 * rng.normal(size=200)})
    d = build_design("y ~ x + z", df)
    assert d.x_names == ("(Intercept)", "x", "z")
    df["z"] = x + 1e-12 * rng.normal(size=200)
    with pytest.warns(RankDeficiencyWarning):
        assert build_design("y ~ x + z", df).x_names == ("(Intercept)", "x")


# -- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("formula", "exc", "fragment"),
    [
        ("weight ~ treatmnt + (1|litter)", DataError, "did you mean 'treatment'"),
        ("wieght ~ treatment", DataError, "column 'wieght'"),
        ("sex ~ treatment", DataError, "the response 'sex' must be numeric"),
        ("weight ~ log(treatment)", DataError, "column 'treatment' is not numeric"),
        ("weight ~ C(sex, ref='male')", DataError, "reference level 'male' is not a level"),
        ("weight ~ log(litsize - 10)", DataError, "non-positive values"),
        ("weight ~ sqrt(litsize - 10)", DataError, "negative values"),
        ("weight ~ I(1/(litsize - 12))", DataError, "non-finite"),
        ("weight ~ 1 + (1 | pup_id)", DataError, "must be < number of observations"),
        ("weight ~ 1 + (1 | one)", DataError, "has only one level"),
        ("weight ~ one", DataError, "has only one level"),
        ("weight ~ (litter|litter)", FormulaError, None),
        ("weight ~ 1 + (1 + litsize + I(litsize^2) + I(litsize^3) | treatment)", None, None),
        ("~ litsize", DataError, "no response"),
        ("weight ~ litsize +", FormulaError, "missing its right-hand side"),
    ],
)
def test_errors(ratpup, formula, exc, fragment):
    df = ratpup.assign(one="a")
    if exc is None:
        build_design(formula, df)
        return
    if formula == "weight ~ (litter|litter)":
        df = df.assign(litter=df.litter.astype(str))
        with pytest.raises((DataError, ModelSpecificationError, FormulaError)):
            build_design(formula, df)
        return
    with pytest.raises(exc) as info:
        build_design(formula, df)
    if fragment:
        assert fragment in str(info.value)


def test_infinite_values_are_refused():
    df = small()
    df.loc[2, "x"] = np.inf
    with pytest.raises(DataError, match="column 'x' has 1 infinite value"):
        build_design("y ~ x + (1|g)", df)


def test_too_many_random_effects():
    df = small()
    with pytest.raises(ModelSpecificationError, match="number of random effects"):
        build_design("y ~ 1 + (1 + x + I(x^2) | g)", df)


def test_not_a_dataframe():
    with pytest.raises(DataError, match="pandas DataFrame"):
        build_design("y ~ x", {"y": [1, 2], "x": [1, 2]})  # type: ignore[arg-type]


# -- prediction spec -----------------------------------------------------------------------------
def test_spec_rebuilds_same_columns(ratpup):
    formula = "weight ~ treatment*sex + scale(litsize) + (1 + sex | litter) + (1 | treatment)"
    d = build_design(formula, ratpup)
    np.testing.assert_array_equal(d.spec.fixed_matrix(ratpup), d.X)
    rows = d.spec.random_effects_rows(ratpup)
    assert len(rows) == len(d.re_terms)
    for (refs, z), term in zip(rows, d.re_terms, strict=True):
        np.testing.assert_array_equal(refs, term.refs)
        np.testing.assert_array_equal(z, term.z)


def test_spec_remembers_levels_and_scaling(ratpup):
    d = build_design("weight ~ treatment + scale(litsize) + (1 | litter)", ratpup)
    new = pd.DataFrame({"treatment": ["Low", "High"], "litsize": [12, 3], "litter": [5, 999]})
    X = d.spec.fixed_matrix(new)
    mean, sd = ratpup.litsize.mean(), ratpup.litsize.std(ddof=1)
    np.testing.assert_allclose(X, [[1, 0, 1, (12 - mean) / sd], [1, 1, 0, (3 - mean) / sd]])
    ((refs, z),) = d.spec.random_effects_rows(new)
    assert refs.tolist() == [d.re_terms[0].levels.index("5"), -1]
    np.testing.assert_array_equal(z, [[1.0], [1.0]])


def test_spec_unseen_fixed_level_is_an_error(ratpup):
    d = build_design("weight ~ treatment + (1 | litter)", ratpup)
    new = pd.DataFrame({"treatment": ["Medium"], "litter": [1]})
    with pytest.raises(DataError, match="not in the data the model was fitted to"):
        d.spec.fixed_matrix(new)
    with pytest.raises(DataError, match="column 'treatment'"):
        d.spec.fixed_matrix(pd.DataFrame({"litter": [1]}))


def test_spec_missing_values_give_nan_rows(ratpup):
    d = build_design("weight ~ treatment + litsize + (1 | litter)", ratpup)
    new = pd.DataFrame({"treatment": ["Low", None], "litsize": [np.nan, 3], "litter": [1, None]})
    X = d.spec.fixed_matrix(new)
    assert np.isnan(X[0, 3]) and np.isnan(X[1, 1:3]).all()
    ((refs, _),) = d.spec.random_effects_rows(new)
    assert refs.tolist() == [0, -1]


def test_spec_interaction_grouping_for_new_data():
    df = pd.DataFrame({"y": np.arange(6.0), "a": list("ppqqpq"), "b": [1, 2, 1, 1, 1, 2]})
    d = build_design("y ~ 1 + (1 | a:b)", df)
    new = pd.DataFrame({"a": ["q", "p", "r"], "b": [2, 2, 1]})
    ((refs, _),) = d.spec.random_effects_rows(new)
    assert refs.tolist() == [
        d.re_terms[0].levels.index("q:2"),
        d.re_terms[0].levels.index("p:2"),
        -1,
    ]
