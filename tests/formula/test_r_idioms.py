"""R's names and idioms in formulas: table-driven parse tests (what each call means)."""

from __future__ import annotations

import pytest

from mixedmodels.errors import FormulaError
from mixedmodels.formula import parse_formula

# formula, fixed-term labels, columns used (response first, offsets last)
NAMES = [
    ("yield ~ nitro*Variety + (1|Block/Variety)",
     ("nitro", "Variety", "nitro:Variety"), ("yield", "nitro", "Variety", "Block")),
    ("y ~ class + type + match + case + lambda + as + `if`",
     ("class", "type", "match", "case", "lambda", "as", "`if`"),
     ("y", "class", "type", "match", "case", "lambda", "as", "if")),
    ("body.weight ~ age.months + x. + (1 | litter.id)",
     ("age.months", "x."), ("body.weight", "age.months", "x.", "litter.id")),
    ("y ~ `in` + in", ("`in`",), ("y", "in")),  # R reserves 'in': printed in backticks
    ("y ~ `__id__`", ("`__id__`",), ("y", "__id__")),
]  # fmt: skip


@pytest.mark.parametrize(("text", "labels", "columns"), NAMES)
def test_r_names(text, labels, columns):
    f = parse_formula(text)
    assert f.fixed.term_labels == labels
    assert f.columns_used() == columns


# formula, the variable's name (= R's term label), kind, label, reference, contrast
IDIOMS = [
    ("y ~ factor(litsize)", "factor(litsize)", "factor", "factor(litsize)", None, "treatment"),
    ("y ~ as.factor(x)", "as.factor(x)", "factor", "as.factor(x)", None, "treatment"),
    ('y ~ relevel(sex, ref = "Male")', 'relevel(sex, ref = "Male")', "factor",
     'relevel(sex, ref = "Male")', "Male", "treatment"),
    ("y ~ relevel(sex, ref='Male')", 'relevel(sex, ref = "Male")', "factor",
     'relevel(sex, ref = "Male")', "Male", "treatment"),
    ('y ~ relevel(sex, "Male")', 'relevel(sex, "Male")', "factor",
     'relevel(sex, "Male")', "Male", "treatment"),
    ('y ~ relevel(factor(size), ref = "8")', 'relevel(factor(size), ref = "8")', "factor",
     'relevel(factor(size), ref = "8")', "8", "treatment"),
    ("y ~ C(x, Sum)", "C(x, Sum)", "factor", "x", None, "sum"),
    ("y ~ C(x, contr.sum)", "C(x, Sum)", "factor", "x", None, "sum"),
    ("y ~ C(x, Helmert)", "C(x, Helmert)", "factor", "x", None, "helmert"),
    ("y ~ C(x, Treatment('b'))", "C(x, Treatment('b'))", "factor", "x", "b", "treatment"),
    ("y ~ C(x, Treatment)", "C(x)", "factor", "x", None, "treatment"),
    ("y ~ poly(Days, 2)", "poly(Days, 2)", "poly", "poly(Days, 2)", None, "treatment"),
    ("y ~ scale(litsize)", "scale(litsize)", "transform", "scale(litsize)", None, "treatment"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "name", "kind", "label", "reference", "contrast"), IDIOMS)
def test_idioms_mean_what_r_means(text, name, kind, label, reference, contrast):
    (var,) = parse_formula(text).fixed.variables
    assert (var.name, var.kind, var.label, var.reference) == (name, kind, label, reference)
    if kind == "factor":
        assert var.contrast == contrast


@pytest.mark.parametrize(
    ("text", "name", "degree", "raw"),
    [
        ("y ~ poly(x, 3)", "poly(x, 3)", 3, False),
        ("y ~ poly(x)", "poly(x)", 1, False),
        ("y ~ poly(x, degree = 2)", "poly(x, degree = 2)", 2, False),
        ("y ~ poly(x, 2, raw = TRUE)", "poly(x, 2, raw = TRUE)", 2, True),
        ("y ~ poly(x, 2, raw=T)", "poly(x, 2, raw = T)", 2, True),
        ("y ~ poly(x, 2, raw = FALSE)", "poly(x, 2, raw = FALSE)", 2, False),
        ("y ~ poly(log(x), 2)", "poly(log(x), 2)", 2, False),
    ],
)
def test_poly(text, name, degree, raw):
    f = parse_formula(text)
    (var,) = f.fixed.variables
    assert (var.name, var.degree, var.raw) == (name, degree, raw)
    assert f.columns_used() == ("y", "x")


def test_response_transforms():
    f = parse_formula("log(weight) ~ sqrt(x) + exp(z)")
    assert f.response.name == "log(weight)"
    assert f.fixed.term_labels == ("sqrt(x)", "exp(z)")


def test_offsets_are_kept_apart_from_the_terms():
    f = parse_formula("y ~ x + offset(log(exposure)) + offset(z) + offset(z) + (1 | g)")
    assert f.fixed.term_labels == ("x",)
    assert [v.name for v in f.offsets] == ["offset(log(exposure))", "offset(z)"]
    assert [v.kind for v in f.offsets] == ["offset", "offset"]
    assert f.columns_used() == ("y", "x", "g", "exposure", "z")
    assert str(f) == "y ~ 1 + x + offset(log(exposure)) + offset(z) + (1 | g)"
    assert parse_formula(str(f)).offsets == f.offsets


def test_offset_alone_keeps_the_intercept():
    f = parse_formula("y ~ offset(n)")
    assert f.fixed.intercept and f.fixed.terms == ()
    assert [v.name for v in f.offsets] == ["offset(n)"]


def test_sum_contrast_interaction_terms():
    f = parse_formula("weight ~ C(treatment, Sum)*C(sex, Sum) + litsize + (1|litter)")
    assert f.fixed.term_labels == (
        "C(treatment, Sum)",
        "C(sex, Sum)",
        "litsize",
        "C(treatment, Sum):C(sex, Sum)",
    )


@pytest.mark.parametrize(
    "text",
    [
        "y ~ factor(x) + relevel(s, ref = 'a') + poly(z, 2, raw = TRUE) + C(g, Helmert)",
        "y ~ as.factor(x):C(g, Sum) + offset(log(n))",
    ],
)
def test_text_form_round_trips(text):
    f = parse_formula(text)
    again = parse_formula(str(f))
    assert again.fixed.term_labels == f.fixed.term_labels
    assert again.offsets == f.offsets


BAD = [
    ("y ~ factor(log(x))", 4, "column name as its first argument"),
    ("y ~ factor(x, y)", 14, "at most 1 argument"),
    ("y ~ relevel(sex)", 4, "needs the reference level"),
    ("y ~ relevel(sex, 'a', ref = 'b')", 28, "give the reference level once"),
    ("y ~ relevel(sex, ref = x)", 23, "needs the reference level as a quoted label"),
    ("y ~ relevel(factor(size), ref = 8)", 32, "R reads a number as the position"),
    ("y ~ relevel(factor(size), '8', 2)", 31, "at most 2 arguments"),
    ("y ~ relevel(log(x), 'a')", 4, 'e.g. relevel(sex, ref = "Male")'),
    ("y ~ relevel(sex, level = 'a')", 17, "unknown keyword argument 'level='"),
    ("y ~ poly(x, 0)", 12, "whole number from 1 to 50"),
    ("y ~ poly(x, 2.5)", 12, "whole number from 1 to 50"),
    ("y ~ poly(x, 2, raw = yes)", 21, "TRUE or FALSE"),
    ("y ~ poly(x, 2, 3)", 15, "a column and a degree"),
    ("y ~ poly(x, 2, degree = 2)", 24, "give the degree of poly() once"),
    ("y ~ poly(C(x), 2)", 9, "cannot be used inside a numeric expression"),
    ("y ~ offset(x):z", 4, "at the top level"),
    ("y ~ x - offset(z)", 8, "at the top level"),
    ("y ~ x + (offset(z) | g)", 9, "at the top level"),
    ("y ~ offset(x, z)", 4, "exactly one numeric expression"),
    ("y ~ offset(factor(x))", 11, "cannot be used inside a numeric expression"),
    ("offset(y) ~ x", 0, "cannot be the response"),
    ("factor(y) ~ x", 0, "response must be numeric"),
    ("y ~ x + (1 | factor(g))", 13, "grouping factors are always treated as factors"),
    ("y ~ I(poly(x, 2))", 6, "cannot be used inside a numeric expression"),
]


@pytest.mark.parametrize(("text", "position", "fragment"), BAD)
def test_misused_idioms_are_one_clear_error(text, position, fragment):
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    assert fragment in info.value.message
    assert info.value.position == position
    assert "\n" not in str(info.value)
