"""R's formula idioms end to end: the command line a user types, against lme4's numbers.

Each reference in tests/reference/formula/ (R 4.2.2, lme4 1.1.31; see its README) is
fitted by ``mixedmodels fit DATA --formula F --json`` in process, on the embedded
datasets (value for value the shared CSV files R read). Tolerances, never loosened:

* log-likelihood: 1e-6 relative;
* fixed effects, in R's column order with R's exact names: 1e-4 relative (no estimate
  in these files is near 0: the smallest in absolute value is 0.0217, so relative is
  meaningful for all);
* standard errors: 1e-3 relative.

Measured agreement (largest relative difference, this implementation):
factor_litter_numeric logLik 2.4e-13, estimates 3.6e-11, SEs 3.8e-10;
poly_days 9.3e-15, 5.3e-14, 2.9e-8; relevel_sex 2.6e-14, 3.6e-9, 5.1e-8;
scale_log 3.8e-13, 2.9e-9, 3.9e-8; sum_contrasts 4.6e-15, 3.0e-9, 4.8e-9.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels import cli
from mixedmodels.datasets import load_dataset
from mixedmodels.design import build_design
from mixedmodels.errors import DataError

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "formula"
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

#: Reference id -> (embedded dataset, our spelling of the R formula).
CASES = {
    "factor_litter_numeric": (
        "ratpup",
        "weight ~ treatment + sex + factor(litsize) + (1|litter)",
    ),
    "relevel_sex": (
        "ratpup",
        'weight ~ treatment + relevel(sex, ref = "Male") + litsize + (1|litter)',
    ),
    "poly_days": ("sleepstudy", "Reaction ~ poly(Days, 2) + (Days|Subject)"),
    "scale_log": ("ratpup", "log(weight) ~ treatment + sex + scale(litsize) + (1|litter)"),
    # R: contrasts = list(treatment = "contr.sum", sex = "contr.sum")
    "sum_contrasts": (
        "ratpup",
        "weight ~ C(treatment, Sum)*C(sex, Sum) + litsize + (1|litter)",
    ),
}


def load_reference(name: str) -> dict:
    return json.loads((REFERENCE / f"{name}.json").read_text())


def cli_fit(capsys, data: str, formula: str) -> dict:
    code = cli.main(["fit", data, "--formula", formula, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("name", CASES)
def test_cli_fit_matches_lme4(name, capsys):
    ref = load_reference(name)
    data, formula = CASES[name]
    assert ref["data_file"].endswith(f"{data}.csv")
    if name != "sum_contrasts":
        assert formula.replace(" ", "") == ref["formula"].replace(" ", "")
    fit = cli_fit(capsys, data, formula)
    assert fit["nobs"] == ref["nobs"]
    assert fit["reml"] is ref["REML"]
    assert fit["loglik"] == pytest.approx(ref["logLik"], rel=1e-6)
    assert fit["sigma"] == pytest.approx(ref["sigma"], rel=1e-4)
    assert [row["term"] for row in fit["fixef"]] == [r["name"] for r in ref["fixed_effects"]]
    for row, expected in zip(fit["fixef"], ref["fixed_effects"], strict=True):
        assert row["estimate"] == pytest.approx(expected["estimate"], rel=1e-4), row["term"]
        assert row["se"] == pytest.approx(expected["se"], rel=1e-3), row["term"]


@pytest.mark.parametrize("name", ["ratpup", "sleepstudy"])
def test_embedded_data_are_the_csv_r_read(name):
    """The references were computed on ../shared/data/*.csv; the embedded data equal them."""
    path = SHARED_DATA / f"{name}.csv"
    if not path.exists():
        pytest.skip("../shared is not present (a fresh clone)")
    shared = pd.read_csv(path)
    embedded = load_dataset(name)
    assert list(embedded.columns) == list(shared.columns)
    for column in shared.columns:
        assert embedded[column].astype(str).tolist() == shared[column].astype(str).tolist()


# ------------------------------------------------------------------ prediction rebuilds


def test_predict_spec_rebuilds_poly_scale_factor_and_relevel_columns():
    """The spec evaluates the fitted bases on new rows (R's predvars / predict.poly)."""
    ratpup = load_dataset("ratpup")
    order = np.random.default_rng(1).permutation(len(ratpup))
    for formula in (
        'weight ~ relevel(sex, ref = "Male") + C(treatment, Helmert) + scale(pup_id)'
        " + poly(litsize, 3) + (1|litter)",
        "weight ~ factor(litsize) + C(sex, Sum) + (1|litter)",
    ):
        design = build_design(formula, ratpup)
        # The same rows, shuffled and a subset: every column equals the fitted one.
        rebuilt = design.spec.fixed_matrix(ratpup.iloc[order[:50]])
        np.testing.assert_allclose(rebuilt, design.X[order[:50]], rtol=0, atol=1e-12)


def test_poly_on_new_values_follows_r_predict_poly():
    """predict(poly(Days, 2), newdata) in R: the recurrence with the fitted alpha, norm2.

    For x = 0..9 (each 18 times) R gives alpha = (4.5, 4.5) and
    norm2 = (1, 180, 1485, 9504); at new x = 10 and 2.5 the monic polynomials are
    P1 = x - 4.5 and P2 = (x - 4.5) P1 - (1485 / 180), scaled by sqrt(norm2[3:4]).
    """
    sleep = load_dataset("sleepstudy")
    spec = build_design("Reaction ~ poly(Days, 2) + (Days|Subject)", sleep).spec
    alpha, norm2 = spec.transform_state["poly(Days, 2)"]
    np.testing.assert_allclose(alpha, [4.5, 4.5], rtol=1e-14)
    np.testing.assert_allclose(norm2, [1.0, 180.0, 1485.0, 9504.0], rtol=1e-13)
    new = pd.DataFrame({"Days": [10.0, 2.5], "Subject": [308, 308], "Reaction": [0.0, 0.0]})
    x = new["Days"].to_numpy()
    p1 = x - 4.5
    p2 = (x - 4.5) * p1 - 1485.0 / 180.0
    expected = np.column_stack([np.ones(2), p1 / np.sqrt(1485.0), p2 / np.sqrt(9504.0)])
    np.testing.assert_allclose(spec.fixed_matrix(new), expected, rtol=1e-13)


def test_raw_poly_columns_are_powers():
    sleep = load_dataset("sleepstudy")
    design = build_design("Reaction ~ poly(Days, 2, raw = TRUE) + (1|Subject)", sleep)
    assert design.x_names == (
        "(Intercept)",
        "poly(Days, 2, raw = TRUE)1",
        "poly(Days, 2, raw = TRUE)2",
    )
    days = sleep["Days"].to_numpy(dtype=float)
    np.testing.assert_array_equal(design.X[:, 1:], np.column_stack([days, days**2]))


# ------------------------------------------------------------------ no reference file


def test_as_factor_is_factor():
    ratpup = load_dataset("ratpup")
    a = build_design("weight ~ as.factor(litsize) + (1|litter)", ratpup)
    b = build_design("weight ~ factor(litsize) + (1|litter)", ratpup)
    np.testing.assert_array_equal(a.X, b.X)
    assert a.x_names[1:] == tuple(n.replace("factor", "as.factor") for n in b.x_names[1:])
    assert a.x_names[1] == "as.factor(litsize)3"  # numeric levels sorted numerically: 2 < 3


def test_helmert_columns_are_rs_contr_helmert():
    """contr.helmert(3) in R: columns (-1, 1, 0) and (-1, -1, 2), named treatment1, 2."""
    ratpup = load_dataset("ratpup")
    design = build_design("weight ~ C(treatment, Helmert) + (1|litter)", ratpup)
    assert design.x_names == ("(Intercept)", "treatment1", "treatment2")
    helmert = {"Control": (-1.0, -1.0), "High": (1.0, -1.0), "Low": (0.0, 2.0)}
    expected = np.array([helmert[t] for t in ratpup["treatment"]])
    np.testing.assert_array_equal(design.X[:, 1:], expected)


def test_sum_contrast_columns_and_interaction_are_rs():
    """contr.sum: the last level is -1 in every column; interactions are products."""
    ratpup = load_dataset("ratpup")
    design = build_design("weight ~ C(treatment, Sum)*C(sex, Sum) + (1|litter)", ratpup)
    assert design.x_names == (
        "(Intercept)",
        "treatment1",
        "treatment2",
        "sex1",
        "treatment1:sex1",
        "treatment2:sex1",
    )
    codes = {"Control": (1.0, 0.0), "High": (0.0, 1.0), "Low": (-1.0, -1.0)}
    t = np.array([codes[v] for v in ratpup["treatment"]])
    s = np.where(ratpup["sex"] == "Female", 1.0, -1.0)
    np.testing.assert_array_equal(design.X[:, 1:], np.column_stack([t, s, t * s[:, None]]))


@pytest.mark.parametrize("reml", [False, True])
def test_helmert_and_sum_fit_as_treatment_coding(reml):
    """Same column space as treatment coding: the same fit.

    The ML log-likelihood and the fitted values do not depend on how X's column space is
    parametrised. The REML criterion does, by the constant log|det T|^2 of the change of
    basis T (lme4's REML criterion has no log|X'X| term), so for REML the variance
    components and fitted values are compared instead.
    """
    ratpup = load_dataset("ratpup")
    fits = [
        mm.lmer(f"weight ~ {t} + sex + litsize + (1|litter)", ratpup, reml=reml)
        for t in ("treatment", "C(treatment, Helmert)", "C(treatment, Sum)")
    ]
    for other in fits[1:]:
        if not reml:
            assert other.loglik == pytest.approx(fits[0].loglik, rel=1e-9)
        assert other.sigma == pytest.approx(fits[0].sigma, rel=1e-6)
        np.testing.assert_allclose(np.asarray(other.fitted), np.asarray(fits[0].fitted), rtol=1e-7)


def test_oats_model_with_a_keyword_response():
    """R's classic Oats model: the response is called yield, a Python keyword."""
    rng = np.random.default_rng(20240607)
    blocks, varieties, nitro = ["I", "II", "III", "IV", "V", "VI"], ["GR", "MR", "V"], [0.0, 0.2]
    rows = [(b, v, n) for b in blocks for v in varieties for n in [*nitro, 0.4, 0.6]]
    frame = pd.DataFrame(rows, columns=["Block", "Variety", "nitro"])
    block_effect = frame["Block"].map(dict(zip(blocks, rng.normal(0, 12, 6), strict=True)))
    plot_effect = rng.normal(0, 8, 18)[
        frame.groupby(["Block", "Variety"], sort=False).ngroup().to_numpy()
    ]
    frame["yield"] = 80 + 70 * frame["nitro"] + block_effect + plot_effect + rng.normal(0, 10, 72)
    fit = mm.lmer("yield ~ nitro*Variety + (1|Block/Variety)", frame)
    assert fit.design.x_names == (
        "(Intercept)",
        "nitro",
        "VarietyMR",
        "VarietyV",
        "nitro:VarietyMR",
        "nitro:VarietyV",
    )
    assert fit.design.response_name == "yield"
    assert sorted(t.group for t in fit.design.re_terms) == ["Block", "Variety:Block"]
    assert np.isfinite(fit.loglik)


def test_plan_records_the_columns_of_each_term():
    """R's assign: poly(Days, 2) has two columns, a sum-coded 3-level factor two."""
    sleep = load_dataset("sleepstudy")
    plan = build_design("Reaction ~ poly(Days, 2) + (Days|Subject)", sleep).spec.fixed
    assert plan.term_ncols == (2,)
    ratpup = load_dataset("ratpup")
    formula = "weight ~ C(treatment, Sum)*C(sex, Sum) + litsize + (1|litter)"
    plan = build_design(formula, ratpup).spec.fixed
    assert plan.term_ncols == (2, 1, 1, 2)


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("weight ~ poly(sex, 2) + (1|litter)",
         "column 'sex' is not numeric (dtype str) but is used in the numeric expression "
         "poly(sex, 2)"),
        ("weight ~ poly(litsize, 13) + (1|litter)",
         "poly(litsize, 13): the degree must be less than the number of distinct values of "
         "its argument (13); lower the degree"),
        ("log(weight - 6) ~ litsize + (1|litter)",
         "log(weight - 6): 150 row(s) have non-positive values of weight - 6"),
        ("weight ~ sqrt(litsize - 10) + (1|litter)",
         "sqrt(litsize - 10): 44 row(s) have negative values of litsize - 10"),
        ('weight ~ relevel(sex, ref = "male") + (1|litter)',
         "reference level 'male' is not a level of column 'sex'; its levels are: "
         "'Female', 'Male'"),
        ("weight ~ factor(pup) + (1|litter)",
         "column 'pup' used in the formula (formula position 16) is not in the data; "
         "did you mean 'pup_id'?"),
    ],
)  # fmt: skip
def test_idiom_data_errors_are_one_clear_line(formula, message):
    with pytest.raises(DataError) as info:
        build_design(formula, load_dataset("ratpup"))
    assert message in str(info.value)
    assert "\n" not in str(info.value)
