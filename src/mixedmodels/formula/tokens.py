"""Split formula text into tokens, each with its 0-based offset.

The tokenizer is a single left-to-right scan (linear time, no regular-expression
backtracking).  It already refuses characters that only make sense in program code
(``;``, ``[``, ``{``, ``@``, a ``.`` that does not belong to a name or a number, ...)
and bare dunder names, so that nothing resembling code ever reaches the parser.

Names follow R's rules for syntactic names, because the formula is R's language,
not Python's: a name starts with a letter (or ``_``, harmless here) and goes on with
letters, digits, ``_`` and ``.``, so ``body.weight`` and ``as.factor`` are single
names, as in R.  A name never starts with ``.`` (R's ``.`` means "all other columns",
which is not supported; write ```.x``` in backticks).  Python keywords and soft
keywords (``yield``, ``class``, ``lambda``, ``in``, ``match``, ``type``) are ordinary
column names: nothing is ever evaluated, so a keyword cannot do anything, and R
accepts such columns (the classic Oats data's response is ``yield``).

Bare names with a dot-separated part that starts or ends with ``__`` (``__import__``,
``x.__class__``) stay refused.  This is a deliberate belt-and-braces rule, not a
necessity: a formula is never evaluated, so such a name could only ever be looked up
as a column; but no real data set has such columns, and refusing them keeps every
classic code-injection string an immediate parse error with a clear message.  A
column that really has such a name can be written in backticks: ```__id__```.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from mixedmodels.errors import FormulaError

MAX_FORMULA_LENGTH = 10_000


class Kind(Enum):
    NAME = "name"  # identifier or `backticked name`
    NUMBER = "number"
    STRING = "string"
    OP = "operator"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    EQUALS = "="
    END = "end of formula"


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token: its kind, its text (unquoted for names and strings) and offset."""

    kind: Kind
    text: str
    pos: int
    quoted: bool = False  # a backticked name


# Longest operators first: the scan tries them in this order.
OPERATORS = ("||", "**", "~", "+", "-", "*", "/", ":", "^", "|")

_SINGLE = {"(": Kind.LPAREN, ")": Kind.RPAREN, ",": Kind.COMMA}

# Characters refused outright, with the reason shown to the user.
_REFUSED = {
    ".": "'.' may not start a name (and there is no attribute access); write a column "
    "name that starts with a dot in backticks: `.x`",
    ";": "';' is not allowed: a formula is a single expression such as 'y ~ x + (1 | g)'",
    "[": "subscripts '[...]' are not allowed in a formula; select the rows or columns "
    "in the DataFrame instead",
    "]": "subscripts '[...]' are not allowed in a formula",
    "{": "braces are not allowed in a formula",
    "}": "braces are not allowed in a formula",
    "@": "'@' is not allowed in a formula",
    "$": "'$' is not allowed in a formula; use the column name directly",
    "!": "'!' is not allowed in a formula",
    "&": "'&' is not allowed in a formula",
    "%": "'%' operators are not supported; use '/' for nesting and ':' for interactions",
    "<": "comparisons are not allowed in a formula; create an indicator column instead",
    ">": "comparisons are not allowed in a formula; create an indicator column instead",
    "#": "comments are not allowed in a formula",
    "\\": "backslashes are not allowed in a formula",
}


def _is_name_start(ch: str) -> bool:
    return ch.isascii() and (ch.isalpha() or ch == "_")


def _is_name_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch in "_.")


def _is_digit(ch: str) -> bool:
    # ASCII only: str.isdigit() also accepts '²' or '٣', which float() rejects or misreads.
    return "0" <= ch <= "9"


def tokenize(text: str) -> list[Token]:
    """Return the tokens of ``text``, ending with an END token.

    Raises
    ------
    FormulaError
        For characters, names or literals that cannot appear in a formula.
    """
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be a string, not {type(text).__name__}")
    if len(text) > MAX_FORMULA_LENGTH:
        raise FormulaError(
            f"formula is too long ({len(text)} characters; the limit is {MAX_FORMULA_LENGTH})",
            position=MAX_FORMULA_LENGTH,
        )
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if _is_name_start(ch):
            j = i + 1
            while j < n and _is_name_char(text[j]):
                j += 1
            name = text[i:j]
            _check_bare_name(name, text, i)
            tokens.append(Token(Kind.NAME, name, i))
            i = j
            continue
        if ch == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise FormulaError(
                    "unclosed backtick: a quoted column name needs a closing '`'",
                    formula=text,
                    position=i,
                )
            name = text[i + 1 : j]
            if not name or "\n" in name:
                raise FormulaError(
                    "empty or multi-line `backticked` column name", formula=text, position=i
                )
            tokens.append(Token(Kind.NAME, name, i, quoted=True))
            i = j + 1
            continue
        if _is_digit(ch) or (ch == "." and i + 1 < n and _is_digit(text[i + 1])):
            j = _scan_number(text, i)
            _check_finite(text, i, j)
            tokens.append(Token(Kind.NUMBER, text[i:j], i))
            i = j
            continue
        if ch in "'\"":
            j = _scan_string(text, i)
            tokens.append(Token(Kind.STRING, text[i + 1 : j - 1], i))
            i = j
            continue
        if ch in _SINGLE:
            tokens.append(Token(_SINGLE[ch], ch, i))
            i += 1
            continue
        if ch == "=":
            if i + 1 < n and text[i + 1] == "=":
                raise FormulaError(
                    "comparisons ('==') are not allowed in a formula; "
                    "create an indicator column instead",
                    formula=text,
                    position=i,
                )
            tokens.append(Token(Kind.EQUALS, ch, i))
            i += 1
            continue
        for op in OPERATORS:
            if text.startswith(op, i):
                tokens.append(Token(Kind.OP, op, i))
                i += len(op)
                break
        else:
            reason = _REFUSED.get(ch, f"unexpected character {ch!r}")
            raise FormulaError(reason, formula=text, position=i)
    tokens.append(Token(Kind.END, "", n))
    return tokens


def _check_bare_name(name: str, text: str, pos: int) -> None:
    # Python keywords are plain names here (see the module docstring); dunders are not.
    if any(part.startswith("__") or part.endswith("__") for part in name.split(".")):
        raise FormulaError(
            f"names with double underscores such as {name!r} are not allowed "
            "(formulas never run code); rename the column",
            formula=text,
            position=pos,
        )


def _scan_number(text: str, i: int) -> int:
    n = len(text)
    j = i
    while j < n and _is_digit(text[j]):
        j += 1
    if j < n and text[j] == ".":
        j += 1
        while j < n and _is_digit(text[j]):
            j += 1
    if j < n and text[j] in "eE":
        k = j + 1
        if k < n and text[k] in "+-":
            k += 1
        if k < n and _is_digit(text[k]):
            while k < n and _is_digit(text[k]):
                k += 1
            j = k
    if j < n and (_is_name_char(text[j]) or text[j] == "."):
        raise FormulaError(f"malformed number {text[i : j + 1]!r}", formula=text, position=i)
    return j


def _check_finite(text: str, i: int, j: int) -> None:
    # 1e400 would silently become inf (and deparse as the name 'inf').
    if not math.isfinite(float(text[i:j])):
        raise FormulaError(
            f"the number {text[i:j]} is too large to be represented; rescale it",
            formula=text,
            position=i,
        )


def _scan_string(text: str, i: int) -> int:
    quote = text[i]
    j = i + 1
    n = len(text)
    while j < n and text[j] != quote:
        if text[j] in "\\\n":
            raise FormulaError(
                "escapes and line breaks are not allowed inside a quoted level name",
                formula=text,
                position=j,
            )
        j += 1
    if j >= n:
        raise FormulaError(f"unclosed string: add the closing {quote}", formula=text, position=i)
    return j + 1
