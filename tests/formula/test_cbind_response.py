"""``cbind(successes, failures)`` as a binomial response: parsed only as the whole response."""

from __future__ import annotations

import pytest

from mixedmodels.errors import FormulaError
from mixedmodels.formula import parse_formula
from mixedmodels.formula.nodes import BinOp, Name

GOOD = [
    # text, response name (as R deparses it), columns read by the response
    (
        "cbind(incidence, size - incidence) ~ period + (1 | herd)",
        "cbind(incidence, size - incidence)",
        ("incidence", "size"),
    ),
    ("cbind(incidence,size-incidence) ~ 1", "cbind(incidence, size - incidence)",
     ("incidence", "size")),
    ("cbind(s, f) ~ x", "cbind(s, f)", ("s", "f")),
    ("cbind(I(2 * s), n - 2 * s) ~ x", "cbind(I(2 * s), n - 2 * s)", ("s", "n")),
    ("cbind(s, 10 - s) ~ x", "cbind(s, 10 - s)", ("s",)),
    ("(cbind(s, f)) ~ x", "cbind(s, f)", ("s", "f")),
    ("cbind(`a b`, f) ~ x", "cbind(`a b`, f)", ("a b", "f")),
]  # fmt: skip


@pytest.mark.parametrize(("text", "name", "columns"), GOOD)
def test_cbind_response(text, name, columns):
    f = parse_formula(text)
    assert f.binomial_counts
    assert f.response is not None
    assert (f.response.name, f.response.kind, f.response.columns) == (name, "cbind", columns)
    assert f.columns_used()[: len(columns)] == columns
    successes, failures = f.response.count_exprs
    assert successes.deparse() + ", " + failures.deparse() == name[len("cbind(") : -1]


def test_cbpp_formula_keeps_its_terms():
    f = parse_formula("cbind(incidence, size - incidence) ~ C(period) + (1 | herd)")
    assert f.fixed.term_labels == ("C(period)",)
    assert [rt.group for rt in f.random] == ["herd"]
    assert str(f) == "cbind(incidence, size - incidence) ~ 1 + C(period) + (1 | herd)"
    successes, failures = f.response.count_exprs
    assert isinstance(successes, Name) and isinstance(failures, BinOp)


def test_other_responses_are_not_binomial_counts():
    assert not parse_formula("y ~ x").binomial_counts
    assert not parse_formula("log(y) ~ x").binomial_counts
    assert not parse_formula("~ x").binomial_counts
    with pytest.raises(ValueError, match="not a cbind"):
        _ = parse_formula("y ~ x").response.count_exprs


MISPLACED = "cbind(...) can only be the whole response of a binomial model"

BAD = [
    # text, position of the problem, fragment of the message
    ("y ~ cbind(a, b) + x", 4, MISPLACED),
    ("y ~ x + cbind(a, b)", 8, MISPLACED),
    ("y ~ x:cbind(a, b)", 6, MISPLACED),
    ("y ~ x + (cbind(a, b) | g)", 9, MISPLACED),
    ("y ~ x + (1 | cbind(a, b))", 13, MISPLACED),
    ("y ~ I(cbind(a, b))", 6, MISPLACED),
    ("y ~ x + offset(cbind(a, b))", 15, MISPLACED),
    ("~ cbind(a, b)", 2, MISPLACED),
    ("log(cbind(a, b)) ~ x", 4, MISPLACED),
    ("cbind(a, b) + 1 ~ x", 0, MISPLACED),
    ("cbind(cbind(a, b), c) ~ x", 6, MISPLACED),
    ("cbind(a, b) ~ cbind(c, d)", 14, MISPLACED),
    ("cbind(a) ~ x", 0, "cbind(...) takes two numeric expressions, the successes and the failures"),
    ("cbind(a, b, c) ~ x", 0, "takes two numeric expressions"),
    ("cbind(1, 2) ~ x", 0, "cbind(...) must read columns of the data"),
    ("cbind(a, C(b)) ~ x", 9, "C(...) cannot be used inside a numeric expression"),
    ("cbind(a, 'b') ~ x", 9, "strings are only allowed as reference levels"),
    ("cbind(a, b = 2) ~ x", 9, "cbind() takes no keyword arguments"),
    ("cbind() ~ x", 5, "cbind() needs an argument"),
    ("cbind(a, b) ~ x ~ z", 16, "only one '~' is allowed"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "position", "fragment"), BAD)
def test_misplaced_or_malformed_cbind(text, position, fragment):
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    assert info.value.position == position, str(info.value)
    assert fragment in info.value.message
    assert "\n" not in str(info.value)
