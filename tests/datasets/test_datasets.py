"""Embedded datasets: names, shapes, types, descriptions, and byte-identity with the R inputs."""

from __future__ import annotations

import hashlib
from importlib import resources

import pandas as pd
import pytest

from mixedmodels.datasets import dataset_names, list_datasets, load_dataset
from mixedmodels.errors import DataError

# (name, rows, columns). Shapes of the CSVs in ../shared/data.
SHAPES = [
    ("ratpup", 322, ["pup_id", "weight", "sex", "litter", "litsize", "treatment"]),
    ("sleepstudy", 180, ["Reaction", "Days", "Subject"]),
    ("Dyestuff", 30, ["Batch", "Yield"]),
    ("Dyestuff2", 30, ["Batch", "Yield"]),
    ("Penicillin", 144, ["diameter", "plate", "sample"]),
    ("Pastes", 60, ["strength", "batch", "cask", "sample"]),
    ("cake", 270, ["replicate", "recipe", "temperature", "angle", "temp"]),
    ("Orthodont", 108, ["distance", "age", "Subject", "Sex"]),
    ("cbpp", 56, ["herd", "incidence", "size", "period"]),
    ("grouseticks", 403, ["INDEX", "TICKS", "BROOD", "HEIGHT", "YEAR", "LOCATION", "cHEIGHT"]),
    ("VerbAgg", 7584, ["Anger", "Gender", "item", "resp", "id", "btype", "situ", "mode", "r2"]),
    ("Contraception", 1934, ["woman", "district", "use", "livch", "age", "urban"]),
]

# data_md5 of the files the R reference fits were computed from (field `data_md5`
# in ../shared/reference/*_reml.json, R 4.2.2 / lme4 1.1.31). Equal digests mean
# a fit on the embedded data can be compared with those references directly.
REFERENCE_MD5 = {
    "Dyestuff.csv": "be28e77f2be8ab6521c32a46bd4a0464",
    "Dyestuff2.csv": "90665ecdd716deb5f45c1b39a4103f2d",
    "Orthodont.csv": "6f0e8b9a9c5d9ace448b400757bea4b3",
    "Pastes.csv": "a2a57ff15f9c8e9bbaa8af2483578595",
    "Penicillin.csv": "bb9cd230b152bf03c5315aadc4a704d6",
    "cake.csv": "c769a9eefe1c0f0dca4d60d16eef39fa",
    "ratpup.csv": "ffad8af1886097fe8fbc80071fa69dc9",
    "sleepstudy.csv": "89097dd5376ecbc60cf9c269ded4c559",
    # ../shared/reference/glmm/*.json (R 4.2.2 / lme4 1.1.31, glmer)
    "cbpp.csv": "3f83cec0223bf1e4b243a68b307959a4",
    "grouseticks.csv": "8301fbb6c683cc6841a0a93b47a92849",
    "VerbAgg.csv": "ba24a0750d2cddcac8100b07ef7304b8",
    "Contraception.csv": "68b3abc2628b0b952c3ab03e9320d002",
}


@pytest.mark.parametrize(("name", "rows", "columns"), SHAPES)
def test_load_dataset_shape_and_columns(name, rows, columns):
    frame = load_dataset(name)
    assert isinstance(frame, pd.DataFrame)
    assert frame.shape == (rows, len(columns))
    assert list(frame.columns) == columns
    assert not frame.isna().any().any()


@pytest.mark.parametrize("spelling", ["ratpup", "RATPUP", "RatPup", "  ratpup "])
def test_names_are_case_insensitive(spelling):
    assert load_dataset(spelling).shape == (322, 6)


def test_dyestuff_and_orthodont_any_case():
    assert load_dataset("dyestuff").equals(load_dataset("Dyestuff"))
    assert load_dataset("orthodont").shape == (108, 4)


def test_identifier_columns_keep_csv_types():
    assert pd.api.types.is_integer_dtype(load_dataset("ratpup")["litter"])
    assert pd.api.types.is_integer_dtype(load_dataset("sleepstudy")["Subject"])
    assert pd.api.types.is_integer_dtype(load_dataset("cake")["replicate"])
    assert pd.api.types.is_float_dtype(load_dataset("ratpup")["weight"])
    assert not pd.api.types.is_numeric_dtype(load_dataset("ratpup")["treatment"])
    assert not pd.api.types.is_numeric_dtype(load_dataset("Orthodont")["Subject"])


def test_each_call_returns_a_fresh_copy():
    first = load_dataset("ratpup")
    first.loc[0, "weight"] = -1.0
    first["extra"] = 1
    second = load_dataset("ratpup")
    assert second.loc[0, "weight"] == 6.6
    assert "extra" not in second.columns


def test_unknown_name_lists_available_datasets():
    with pytest.raises(DataError) as info:
        load_dataset("nosuchdata")
    message = str(info.value)
    assert "nosuchdata" in message
    for name in dataset_names():
        assert name in message


def test_unknown_name_suggests_close_match():
    with pytest.raises(DataError, match="did you mean 'sleepstudy'"):
        load_dataset("sleepstudi")


def test_non_string_name_is_a_data_error():
    with pytest.raises(DataError, match="string"):
        load_dataset(3)


def test_dataset_names_in_display_order():
    assert dataset_names() == tuple(name for name, _, _ in SHAPES)


def test_list_datasets_table():
    table = list_datasets()
    assert list(table.columns) == ["name", "rows", "columns", "variables", "description", "source"]
    assert list(table["name"]) == [name for name, _, _ in SHAPES]
    for record in table.to_dict(orient="records"):
        frame = load_dataset(record["name"])
        assert record["rows"] == frame.shape[0]
        assert record["columns"] == frame.shape[1]
        assert record["variables"] == ", ".join(frame.columns)
        assert record["description"]
        assert "\n" not in record["description"]


@pytest.mark.parametrize(
    ("name", "citation"),
    [
        ("ratpup", "West, Welch & Galecki (2014)"),
        ("sleepstudy", "Belenky et al. (2003)"),
        ("Dyestuff", "Davies & Goldsmith (1972)"),
        ("Penicillin", "Davies & Goldsmith (1972)"),
        ("Pastes", "Davies & Goldsmith (1972)"),
        ("cake", "Cook (1938)"),
        ("Orthodont", "Potthoff & Roy (1964)"),
        ("cbpp", "Lesnoff et al. (2004)"),
        ("grouseticks", "Elston et al. (2001)"),
        ("VerbAgg", "De Boeck & Wilson (2004)"),
        ("Contraception", "Bangladesh Fertility Survey 1989"),
    ],
)
def test_list_datasets_cites_sources(name, citation):
    table = list_datasets().set_index("name")
    assert citation in table.loc[name, "source"]


@pytest.mark.parametrize(("filename", "digest"), sorted(REFERENCE_MD5.items()))
def test_embedded_csv_is_byte_identical_to_reference_input(filename, digest):
    raw = resources.files("mixedmodels.datasets").joinpath(filename).read_bytes()
    assert hashlib.md5(raw).hexdigest() == digest


def test_glmm_datasets_hold_the_recoded_responses():
    """Binary responses are 0/1 as in the glmer references; the binomial counts add up."""
    verbagg = load_dataset("VerbAgg")
    assert sorted(verbagg["r2"].unique()) == [0, 1]
    assert (verbagg["r2"] == (verbagg["resp"] != "no")).all()
    assert (verbagg["id"].nunique(), verbagg["item"].nunique()) == (316, 24)
    contraception = load_dataset("Contraception")
    assert sorted(contraception["use"].unique()) == [0, 1]
    assert sorted(contraception["urban"].unique()) == ["N", "Y"]
    assert contraception["district"].nunique() == 60
    cbpp = load_dataset("cbpp")
    assert ((0 <= cbpp["incidence"]) & (cbpp["incidence"] <= cbpp["size"])).all()
    assert (cbpp["herd"].nunique(), sorted(cbpp["period"].unique())) == (15, [1, 2, 3, 4])
    grouse = load_dataset("grouseticks")
    assert grouse["INDEX"].is_unique and (grouse["TICKS"] >= 0).all()
