"""Binomial responses in the design: cbind counts, two-level factors, 0/1 numbers; glmer checks.

The data are the embedded datasets, byte-identical to the CSV files lme4's glmer
references were fitted to (tests/datasets checks their md5). The expected names and
levels are those of the references' ``data_prep`` (../shared/reference/glmm).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.datasets import load_dataset
from mixedmodels.design import build_design
from mixedmodels.errors import DataError, FormulaError, ModelSpecificationError

CBPP = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
CBIND_IN_LMM = (
    "cbind(...) responses are binomial counts: fit them with "
    "mm.glmer(formula, data, family='binomial')"
)


@pytest.fixture(scope="module")
def cbpp() -> pd.DataFrame:
    return load_dataset("cbpp")


# --------------------------------------------------------------------------------- cbind
def test_cbpp_counts(cbpp):
    design = build_design(CBPP, cbpp, binomial_response=True)
    np.testing.assert_array_equal(design.trials, cbpp["size"].to_numpy(float))
    np.testing.assert_allclose(design.y, cbpp["incidence"] / cbpp["size"], rtol=0)
    assert design.response_name == "cbind(incidence, size - incidence)"
    assert design.x_names == ("(Intercept)", "period2", "period3", "period4")
    assert design.re_terms[0].group == "herd"
    assert design.re_terms[0].levels == tuple(str(i) for i in range(1, 16))
    assert design.nobs == 56 and design.weights is None and design.offset is None
    assert design.spec.response_levels is None
    assert not design.trials.flags.writeable and not design.y.flags.writeable
    # the proportions are what R's binomial initialize computes: incidence / size
    assert design.y[:4].tolist() == [2 / 14, 3 / 12, 4 / 9, 0.0]


def test_cbind_arguments_are_numeric_expressions(cbpp):
    frame = cbpp.assign(failures=cbpp["size"] - cbpp["incidence"])
    plain = build_design("cbind(incidence, failures) ~ C(period) + (1 | herd)", frame,
                         binomial_response=True)  # fmt: skip
    computed = build_design(CBPP, cbpp, binomial_response=True)
    np.testing.assert_array_equal(plain.y, computed.y)
    np.testing.assert_array_equal(plain.trials, computed.trials)
    scaled = build_design("cbind(I(2 * incidence), 2 * size - 2 * incidence) ~ 1 + (1 | herd)",
                          cbpp, binomial_response=True)  # fmt: skip
    np.testing.assert_allclose(scaled.y, computed.y, rtol=1e-15)
    np.testing.assert_array_equal(scaled.trials, 2 * computed.trials)


def test_cbind_rows_without_trials_have_proportion_zero_as_in_r(cbpp):
    frame = cbpp.copy()
    frame.loc[[0, 5], ["incidence", "size"]] = 0
    design = build_design(CBPP, frame, binomial_response=True)
    assert design.trials[0] == 0 and design.y[0] == 0.0 and design.y[5] == 0.0
    assert design.nobs == 56


def test_cbind_rows_with_missing_counts_are_dropped(cbpp):
    frame = cbpp.astype({"incidence": float})
    frame.loc[[2, 7], "incidence"] = np.nan
    design = build_design(CBPP, frame, binomial_response=True)
    assert (design.nobs, design.n_dropped_rows) == (54, 2)
    assert 2 not in design.row_index and 7 not in design.row_index


def test_cbind_spec_rebuilds_columns_for_prediction(cbpp):
    design = build_design(CBPP, cbpp, binomial_response=True)
    newdata = pd.DataFrame({"period": [1, 3, 4], "herd": [1, 2, 99]})
    X = design.spec.fixed_matrix(newdata)
    np.testing.assert_array_equal(X, [[1, 0, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]])
    ((refs, z),) = design.spec.random_effects_rows(newdata)
    assert z.shape == (3, 1)
    assert refs.tolist() == [0, 1, -1]
    assert design.spec.formula.binomial_counts


def test_cbind_with_prior_weights_keeps_them_apart_from_the_trials(cbpp):
    w = np.linspace(0.5, 2.0, len(cbpp))
    design = build_design(CBPP, cbpp, weights=w, binomial_response=True)
    np.testing.assert_allclose(design.weights, w)
    np.testing.assert_array_equal(design.trials, cbpp["size"].to_numpy(float))


@pytest.mark.parametrize(
    ("change", "formula", "message"),
    [
        (
            {3: ("incidence", 20)},
            CBPP,
            "cbind(incidence, size - incidence): the failures, size - incidence (columns size, "
            "incidence), are negative in 1 row(s) (e.g. -15); successes and failures are "
            "counts, whole numbers >= 0 — fix the data or drop those rows",
        ),
        (
            {0: ("incidence", -1)},
            CBPP,
            "cbind(incidence, size - incidence): the successes, column 'incidence', are "
            "negative in 1 row(s) (e.g. -1); successes and failures are counts, whole numbers "
            ">= 0 — fix the data or drop those rows",
        ),
        (
            {0: ("incidence", 2.5), 1: ("incidence", 0.25)},
            CBPP,
            "cbind(incidence, size - incidence): the successes, column 'incidence', are not "
            "whole numbers in 2 row(s) (e.g. 2.5, 0.25); successes and failures are counts, "
            "whole numbers >= 0 — fix the data or drop those rows",
        ),
        (
            {},
            "cbind(incidence, size / (size - 14)) ~ 1 + (1 | herd)",
            "cbind(incidence, size/(size - 14)): the failures, size/(size - 14) (column size), "
            "are not finite in 1 row(s) (e.g. inf)",
        ),
    ],
)
def test_cbind_counts_must_be_whole_and_non_negative(cbpp, change, formula, message):
    frame = cbpp.astype({"incidence": float, "size": float})
    for row, (column, value) in change.items():
        frame.loc[row, column] = value
    with pytest.raises(DataError) as info:
        build_design(formula, frame, binomial_response=True)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_cbind_without_any_success_or_trial_is_refused(cbpp):
    with pytest.raises(DataError) as info:
        build_design(CBPP, cbpp.assign(incidence=0), binomial_response=True)
    assert str(info.value) == (
        "the proportion of successes of cbind(incidence, size - incidence) is 0 in all 56 "
        "rows used (no successes), so there is nothing to model; check the columns and the "
        "rows kept"
    )
    with pytest.raises(DataError, match=r"has no trials: successes \+ failures is 0 in all"):
        build_design(CBPP, cbpp.assign(incidence=0, size=0), binomial_response=True)


def test_cbind_in_a_linear_mixed_model_is_refused(cbpp):
    with pytest.raises(ModelSpecificationError) as info:
        build_design(CBPP, cbpp)
    assert str(info.value) == CBIND_IN_LMM
    with pytest.raises(ModelSpecificationError) as info:
        mm.lmer(CBPP, cbpp)
    assert str(info.value) == CBIND_IN_LMM


def test_cbind_is_refused_by_the_streamed_design(cbpp):
    from mixedmodels.design.levels_spec import summarize_chunk
    from mixedmodels.formula import parse_formula

    with pytest.raises(ModelSpecificationError, match=r"cbind\(\.\.\.\) responses are binomial"):
        summarize_chunk(parse_formula(CBPP), cbpp, "chunk 1")


def test_cbind_on_the_right_hand_side_is_a_formula_error(cbpp):
    with pytest.raises(FormulaError) as info:
        build_design("incidence ~ cbind(incidence, size) + (1 | herd)", cbpp,
                     binomial_response=True)  # fmt: skip
    assert info.value.position == 12


# ------------------------------------------------------------------ two-level responses
def test_two_level_string_response_is_zero_one_by_sorted_levels():
    data = load_dataset("Contraception")
    design = build_design("urban ~ age + (1 | district)", data, binomial_response=True)
    np.testing.assert_array_equal(design.y, (data["urban"] == "Y").to_numpy(float))
    assert design.spec.response_levels == ("N", "Y")
    assert design.trials is None
    assert design.response_name == "urban"


@pytest.mark.parametrize(
    ("values", "levels", "expected"),
    [
        (["yes", "no", "no", "yes", "no", "yes"], ("no", "yes"), [1, 0, 0, 1, 0, 1]),
        ([True, False, False, True, True, False], ("FALSE", "TRUE"), [1, 0, 0, 1, 1, 0]),
        (pd.Categorical(["hi", "lo", "lo", "hi", "lo", "hi"], categories=["lo", "hi"]),
         ("lo", "hi"), [1, 0, 0, 1, 0, 1]),
        (pd.Categorical(["b", "a", "a", "b", "a", "b"], categories=["b", "a", "z"]),
         ("b", "a"), [0, 1, 1, 0, 1, 0]),
    ],
)  # fmt: skip
def test_two_level_columns(values, levels, expected):
    """Strings and booleans sort (R: factor()); a Categorical keeps its category order."""
    data = pd.DataFrame({"r": values, "x": np.arange(6.0), "g": list("aabbcc")})
    design = build_design("r ~ x + (1 | g)", data, binomial_response=True)
    assert design.spec.response_levels == levels
    assert design.y.tolist() == expected


def test_three_levels_are_refused_in_one_line():
    data = load_dataset("VerbAgg")
    with pytest.raises(DataError) as info:
        build_design("resp ~ Anger + (1 | id)", data, binomial_response=True)
    assert str(info.value) == (
        "the binomial response 'resp' has 3 levels ('no', 'perhaps', 'yes'); a binomial "
        "response needs two levels (the second counts as success), 0/1 numbers or "
        "cbind(successes, failures) — recode it, e.g. 1 for the level that means success"
    )


def test_one_level_is_refused():
    data = pd.DataFrame({"r": ["y"] * 6, "x": np.arange(6.0), "g": list("aabbcc")})
    with pytest.raises(DataError) as info:
        build_design("r ~ x + (1 | g)", data, binomial_response=True)
    assert str(info.value) == (
        "the binomial response 'r' has only the level 'y' in the 6 rows used, so there is "
        "nothing to model; check the column and the rows kept"
    )


def test_factor_response_keeps_the_lmm_error():
    data = load_dataset("Contraception")
    with pytest.raises(DataError, match="the response 'urban' must be numeric"):
        build_design("urban ~ age + (1 | district)", data)


# ------------------------------------------------------------------------ 0/1 numbers
def test_zero_one_numbers_are_taken_as_they_are():
    data = load_dataset("Contraception")
    design = build_design("use ~ age + I(age^2) + urban + livch + (1 | district)", data,
                          binomial_response=True)  # fmt: skip
    np.testing.assert_array_equal(design.y, data["use"].to_numpy(float))
    assert design.x_names == ("(Intercept)", "age", "I(age^2)", "urbanY", "livch1", "livch2",
                              "livch3+")  # fmt: skip
    assert len(design.re_terms[0].levels) == 60
    assert design.trials is None and design.spec.response_levels is None


@pytest.mark.parametrize(("value", "what"), [(0, "no successes"), (1, "no failures")])
def test_constant_zero_one_response_is_explained_in_binomial_words(value, what):
    data = load_dataset("Contraception").assign(use=value)
    with pytest.raises(DataError) as info:
        build_design("use ~ age + (1 | district)", data, binomial_response=True)
    assert str(info.value) == (
        f"the binomial response 'use' is {value} in all 1934 rows used ({what}), so there is "
        "nothing to model; check the column and the rows kept"
    )


def test_constant_response_keeps_the_lmm_message():
    data = load_dataset("Contraception").assign(use=0)
    with pytest.raises(DataError, match=r"the response 'use' is constant \(every value is 0"):
        build_design("use ~ age + (1 | district)", data)


# -------------------------------------------------------------------- glmer's checks
GROUSE = "TICKS ~ C(YEAR) + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)"


def test_observation_level_terms_allow_one_level_per_row():
    """grouseticks' observation-level effect INDEX (lme4's glmer: allow.n = TRUE)."""
    data = load_dataset("grouseticks")
    design = build_design(GROUSE, data, observation_level_terms=True)
    assert [t.nlevels for t in design.re_terms] == [118, 403, 63]
    assert design.x_names == ("(Intercept)", "YEAR96", "YEAR97", "cHEIGHT")
    with pytest.raises(DataError, match="'INDEX' has 403 levels for 403 observations"):
        build_design(GROUSE, data)


def test_observation_level_binomial_term():
    data = pd.DataFrame({"r": [0, 1, 1, 0, 1, 0], "x": np.arange(6.0), "obs": list("abcdef")})
    design = build_design("r ~ x + (1 | obs)", data, binomial_response=True,
                          observation_level_terms=True)  # fmt: skip
    assert design.re_terms[0].nlevels == 6
    with pytest.raises(DataError, match="'obs' has 6 levels for 6 observations"):
        build_design("r ~ x + (1 | obs)", data, binomial_response=True)


def test_observation_level_terms_refuse_more_random_effects_than_rows():
    data = pd.DataFrame({"y": [0, 1, 2, 0, 1, 3], "x": [0.1, 0.5, 0.2, 0.9, 0.3, 0.4],
                         "g": list("aabcdd"), "h": list("aabbcc")})  # fmt: skip
    # 6 random effects for 6 rows: allowed (glmer's allow.n); 8 are not
    build_design("y ~ 1 + (1 + x | h)", data, observation_level_terms=True)
    with pytest.raises(ModelSpecificationError) as info:
        build_design("y ~ 1 + (1 + x | g)", data, observation_level_terms=True)
    assert str(info.value) == (
        "number of observations (6) < number of random effects (8) for term (1 + x | g); "
        "the random-effects parameters are probably unidentifiable — simplify the term"
    )
