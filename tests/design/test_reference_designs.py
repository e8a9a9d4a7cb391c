"""The design matches lme4's: fixed-effect names, groups, level labels and order.

Reference: ``data/lme4_designs.json``, extracted from ``../shared/reference/<id>_reml.json``
(lme4 1.1.31 on R 4.2.2; see ``_provenance`` in the file).  The data are the CSVs in
``data/`` (copies of the package's embedded datasets, identical to ``../shared/data``);
factor columns are converted with the levels listed by the reference (``data_prep``).
InstEval (1.4 MB) is not shipped: a synthetic frame with the same factor levels checks
its names and the build time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mixedmodels.design import build_design

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "lme4_designs.json").read_text())["models"]

#: Our spelling where the reference formula uses R-only syntax.
OUR_FORMULA = {
    "ratpup_c": "weight ~ treatment + sex + litsize + (1 + sex || litter)",
}


def load(ref: dict, *, as_categorical: bool) -> pd.DataFrame:
    df = pd.read_csv(DATA / Path(ref["data_file"]).name)
    for column, info in ref["factors"].items():
        if as_categorical:
            df[column] = pd.Categorical(df[column].astype(str), categories=info["levels"])
    return df


LOCAL = sorted(k for k in REFERENCE if not k.startswith("insteval"))


def _raw_columns_code_like_r(model_id: str) -> bool:
    """True when the CSV columns, read as they are, already give lme4's coding."""
    ref = REFERENCE[model_id]
    return not (
        model_id == "cake"  # temperature is numeric in the CSV: see the C() test below
        or any(
            info["levels"][0] != info["reference"]
            or (not info["levels"][0].isdigit() and info["levels"] != sorted(info["levels"]))
            for info in ref["factors"].values()
        )
    )


CASES = [(m, True) for m in LOCAL] + [(m, False) for m in LOCAL if _raw_columns_code_like_r(m)]


@pytest.mark.parametrize(("model_id", "as_categorical"), CASES)
def test_design_matches_lme4(model_id, as_categorical):
    ref = REFERENCE[model_id]
    df = load(ref, as_categorical=as_categorical)
    design = build_design(OUR_FORMULA.get(model_id, ref["formula"]), df)

    assert design.nobs == ref["nobs"]
    assert list(design.x_names) == ref["fixed_effects"]
    assert design.X.shape == (ref["nobs"], len(ref["fixed_effects"]))
    ngroups = {t.group: t.nlevels for t in design.re_terms}
    assert ngroups == ref["ngroups"]
    for group, blups in ref["blups"].items():
        terms = [t for t in design.re_terms if t.group == group]
        assert terms, group
        labels = blups["levels"]
        for term in terms:
            assert list(term.levels[: len(labels)]) == labels
        assert [name for t in terms for name in t.column_names] == blups["terms"] or (
            model_id == "ratpup_c"  # lme4 names the column dummy(sex, "Male")
        )
    # Variance-component blocks: one per (split) term, with lme4's column names.
    blocks = [(vc["grouping_factor"], tuple(vc["terms"])) for vc in ref["variance_components"]]
    ours = [(t.group, t.column_names) for t in design.re_terms]
    if model_id == "ratpup_c":
        blocks = [("litter", ("(Intercept)",)), ("litter", ("sexMale",))]
    assert sorted(ours) == sorted(blocks)
    for term in design.re_terms:
        assert term.refs.dtype == np.int64
        assert term.refs.min() == 0 and term.refs.max() == term.nlevels - 1
        assert term.z.dtype == np.float64 and term.z.flags.c_contiguous


def test_maleref_coefficient_name_via_C():
    ref = REFERENCE["ratpup_b_maleref"]
    df = load(ref, as_categorical=False)
    for formula in (
        "weight ~ treatment + C(sex, Treatment('Male')) + litsize + (1|litter)",
        "weight ~ treatment + C(sex, ref='Male') + litsize + (1|litter)",
    ):
        assert list(build_design(formula, df).x_names) == ref["fixed_effects"]


def test_cake_interaction_columns_first_factor_fastest():
    df = pd.read_csv(DATA / "cake.csv")
    d = build_design("angle ~ C(recipe)*C(temperature) + (1|recipe:replicate)", df)
    assert list(d.x_names) == REFERENCE["cake"]["fixed_effects"]
    names = REFERENCE["cake"]["fixed_effects"]
    assert names[8:11] == [
        "recipeB:temperature185",
        "recipeC:temperature185",
        "recipeB:temperature195",
    ]
    assert d.re_terms[0].levels[:3] == ("A:1", "A:2", "A:3")  # replicate sorted numerically


def insteval_like(seed: int = 1) -> pd.DataFrame:
    """A frame shaped like InstEval: 73,421 rows, s 2972, d 1128, dept 14 levels."""
    rng = np.random.default_rng(seed)
    n = 73_421
    s = np.concatenate([np.arange(1, 2973), rng.integers(1, 2973, n - 2972)])
    d = np.concatenate([np.arange(1, 1129), rng.integers(1, 1129, n - 1128)])
    depts = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15])
    dept = np.concatenate([depts, depts[rng.integers(0, 14, n - 14)]])
    service = rng.integers(0, 2, n)
    y = rng.integers(1, 6, n)
    return pd.DataFrame({"s": s, "d": d, "dept": dept, "service": service, "y": y})


def test_insteval_names():
    # (The design stage's speed is measured in benchmarks/, not asserted here: a timed
    # unit test fails on a busy machine and proves nothing on a fast one.)
    df = insteval_like()
    for column in ("s", "d", "dept", "service"):
        df[column] = pd.Categorical(df[column])  # numeric categories, sorted numerically
    for model_id in ("insteval_1", "insteval_2"):
        ref = REFERENCE[model_id]
        design = build_design(ref["formula"], df)
        assert list(design.x_names) == ref["fixed_effects"]
        assert {t.group: t.nlevels for t in design.re_terms} == ref["ngroups"]
    # Plain integer columns wrapped in C() give the same names.
    raw = insteval_like()
    d = build_design("y ~ 1 + C(service)*C(dept) + (1|s) + (1|d)", raw)
    assert list(d.x_names) == REFERENCE["insteval_2"]["fixed_effects"]
    assert d.re_terms[0].levels[:3] == ("1", "2", "3")
