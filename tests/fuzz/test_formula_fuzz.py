"""Formula fuzzing: generated and mutated formulas parse or fail cleanly, fast, and run no code.

A small grammar generates lme4 formulas (fixed terms, interactions, transforms, ``C()``
factors, random terms with ``|``, ``||``, ``/`` and ``:``); a mutator then damages them
(deletes, duplicates, swaps and inserts characters, splices formulas, and drops in
pieces of Python such as ``__import__('os')``, ``.attr``, ``lambda``, ``[0]``, ``:=`` or
f-strings). For every formula ``parse_formula`` must either return a ModelFormula whose
text form parses back to the same formula, or raise ``FormulaError`` with an integer
position inside the formula — nothing else — within a time bound. An audit hook watches
the whole run: no code may be compiled or executed, no process started, no file opened.

``MIXEDMODELS_FUZZ_N`` sets the number of formulas (default 100,000, about half a minute);
``MIXEDMODELS_FUZZ_SEED`` the seed (default fixed, so CI is reproducible). See
docs/testing.md for the long run.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixedmodels.errors import FormulaError
from mixedmodels.formula import ModelFormula, parse_formula
from mixedmodels.formula.nodes import r_name

N_FORMULAS = int(os.environ.get("MIXEDMODELS_FUZZ_N", "100000"))
SEED = int(os.environ.get("MIXEDMODELS_FUZZ_SEED", "20240607"))
#: Seconds one formula may take. Parsing is linear and takes well under a millisecond;
#: the bound is generous because CI machines are shared.
TIME_BOUND = 1.0

# Events that mean code is being compiled or run, a process started or a file opened.
FORBIDDEN_EVENTS = frozenset(
    {
        "exec",
        "compile",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "subprocess.Popen",
        "open",
        "ctypes.dlopen",
        "builtins.input",
        "socket.connect",
    }
)


class _Watch:
    active = False
    seen: list[tuple[str, str]] = []  # noqa: RUF012 - one shared record for the hook


def _audit(event: str, args: tuple) -> None:
    if _Watch.active and event in FORBIDDEN_EVENTS:
        _Watch.seen.append((event, repr(args)[:200]))


sys.addaudithook(_audit)  # hooks cannot be removed; this one only records while active


# ------------------------------------------------------------------------------ generator
NAMES = ["y", "x", "x1", "z", "litsize", "treatment", "sex", "g", "litter", "a", "b", "c",
         "Days", "Subject", "`body weight`", "`odd.name`", "`if`", "T", "F", "I2",
         "body.weight", "yield", "class", "as.x"]  # fmt: skip
FUNCS = ["log", "exp", "sqrt", "scale", "center", "I"]
HOSTILE = [
    "__import__('os').system('touch pwned')",
    "__import__",
    ".system('id')",
    ".__class__",
    "os.system",
    "lambda x: x",
    "lambda: 0",
    "[0]",
    "[x for x in y]",
    "(z := 1)",
    ":=",
    "f'{x}'",
    'f"{__import__(1)}"',
    "eval('1')",
    "exec",
    "open('/etc/passwd')",
    "getattr(x, 'y')",
    "globals()",
    "__builtins__",
    "x.__dict__",
    "b'x'",
    "yield",
    "await x",
    "not x",
    "x if y else z",
    "x @ y",
    "{x}",
    ";",
    "\\",
    "#",
    "\n",
    "\x00",
    "²",
    "٣",
    "é",
    "𝑥",
    "1e400",
    "1e-400",
    "0x1F",
    "1_000",
    "...",
    "`",
    "'",
    '"',
]
ALPHABET = (
    "abcxyzg019_ ()+-*/:^|~,=.'\"`[]{}@$!&%<>#;\\\t\n"
    + "²٣é𝑥\u200b\u00a0"  # non-ASCII digits, letters, zero-width and no-break spaces
)


class FormulaGenerator:
    """Random lme4 formulas from a small grammar, and mutations of them."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def name(self) -> str:
        return self.rng.choice(NAMES)

    def number(self) -> str:
        return self.rng.choice(["0", "1", "2", "-1", "0.5", "1e3", "2.5e-2", ".5", "10"])

    def numeric(self, depth: int) -> str:
        r = self.rng.random()
        if depth <= 0 or r < 0.35:
            return self.name() if self.rng.random() < 0.7 else self.number()
        if r < 0.55:
            op = self.rng.choice(["+", "-", "*", "/", "^", "**"])
            return f"{self.numeric(depth - 1)} {op} {self.numeric(depth - 1)}"
        if r < 0.75:
            return f"{self.rng.choice(FUNCS)}({self.numeric(depth - 1)})"
        if r < 0.85:
            return f"-{self.numeric(depth - 1)}"
        return f"({self.numeric(depth - 1)})"

    def factor(self) -> str:
        column = self.name()
        level = self.rng.choice(["'Male'", '"High"', "175", "-1", "'a b'"])
        form = self.rng.randrange(8)
        if form == 0:
            return f"C({column})"
        if form == 1:
            return f"C({column}, Treatment({level}))"
        if form == 2:
            return f"C({column}, ref={level})"
        if form == 3:
            return f"{self.rng.choice(['factor', 'as.factor'])}({column})"
        if form == 4:
            return f"relevel({column}, ref = {level})"
        if form == 5:
            return f"C({column}, {self.rng.choice(['Sum', 'Helmert', 'contr.sum'])})"
        raw = self.rng.choice(["", ", raw = TRUE", ", raw = FALSE"])
        return f"poly({self.numeric(1)}, {self.rng.randint(1, 3)}{raw})"

    def term(self, depth: int) -> str:
        r = self.rng.random()
        if depth <= 0 or r < 0.4:
            return self.name()
        if r < 0.55:
            return f"{self.rng.choice(FUNCS)}({self.numeric(2)})"
        if r < 0.65:
            return self.factor()
        if r < 0.85:
            op = self.rng.choice([":", "*", "/", "+", "-"])
            return f"{self.term(depth - 1)}{op}{self.term(depth - 1)}"
        if r < 0.93:
            return f"({self.term(depth - 1)} + {self.term(depth - 1)})^{self.rng.randint(1, 3)}"
        return f"({self.term(depth - 1)})"

    def grouping(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return self.name()
        op = "/" if r < 0.8 else ":"
        return op.join(self.rng.sample(["a", "b", "c", "g", "litter", "Subject"], 2))

    def random_term(self) -> str:
        lhs = self.rng.choice(["1", "0 + x", "1 + x", "x", "Days", "1 + sex", "0 + x + z"])
        bar = self.rng.choice(["|", "|", "||"])
        return f"({lhs} {bar} {self.grouping()})"

    def formula(self) -> str:
        parts = [self.term(3) for _ in range(self.rng.randint(1, 4))]
        parts += [self.random_term() for _ in range(self.rng.randint(0, 3))]
        if self.rng.random() < 0.15:
            parts.append(f"offset({self.numeric(2)})")
        if self.rng.random() < 0.2:
            parts.insert(0, self.rng.choice(["0", "1", "-1"]))
        self.rng.shuffle(parts)
        rhs = " + ".join(parts)
        r = self.rng.random()
        if r < 0.8:
            return f"{self.name()} ~ {rhs}"
        if r < 0.9:
            return f"{self.rng.choice(FUNCS)}({self.name()}) ~ {rhs}"
        return f"~ {rhs}"

    def mutate(self, text: str) -> str:
        for _ in range(self.rng.randint(1, 4)):
            text = self.rng.choice(self._mutations)(self, text)
        return text

    def _insert_char(self, text: str) -> str:
        i = self.rng.randint(0, len(text))
        return text[:i] + self.rng.choice(ALPHABET) + text[i:]

    def _insert_hostile(self, text: str) -> str:
        i = self.rng.randint(0, len(text))
        return text[:i] + self.rng.choice(HOSTILE) + text[i:]

    def _delete(self, text: str) -> str:
        if not text:
            return text
        i = self.rng.randrange(len(text))
        return text[:i] + text[i + self.rng.randint(1, 4) :]

    def _replace(self, text: str) -> str:
        if not text:
            return text
        i = self.rng.randrange(len(text))
        return text[:i] + self.rng.choice(ALPHABET) + text[i + 1 :]

    def _duplicate(self, text: str) -> str:
        if not text:
            return text
        i = self.rng.randrange(len(text))
        j = min(len(text), i + self.rng.randint(1, 12))
        return text[:j] + text[i:j] + text[j:]

    def _swap(self, text: str) -> str:
        if len(text) < 2:
            return text
        i, j = sorted(self.rng.sample(range(len(text)), 2))
        return text[:i] + text[j] + text[i + 1 : j] + text[i] + text[j + 1 :]

    def _splice(self, text: str) -> str:
        other = self.formula()
        return text[: self.rng.randint(0, len(text))] + other[self.rng.randint(0, len(other)) :]

    def _truncate(self, text: str) -> str:
        return text[: self.rng.randint(0, len(text))]

    _mutations = (
        _insert_char,
        _insert_hostile,
        _delete,
        _replace,
        _duplicate,
        _swap,
        _splice,
        _truncate,
    )

    def __iter__(self):
        while True:
            text = self.formula()
            yield text if self.rng.random() < 0.3 else self.mutate(text)


# ------------------------------------------------------------------------------ checks
def check_formula(text: str, clock: Callable[[], float] = time.perf_counter) -> str | None:
    """Parse ``text``; return a description of what went wrong, or None if all is well
    (including: it took more than ``TIME_BOUND`` seconds of ``clock``)."""
    start = clock()
    try:
        parsed = parse_formula(text)
    except FormulaError as exc:
        elapsed = clock() - start
        if not isinstance(exc.position, int) or not 0 <= exc.position <= len(text):
            return f"FormulaError without a valid position ({exc.position!r}): {exc}"
        if elapsed > TIME_BOUND:
            return f"took {elapsed:.2f} s"
        return None
    except Exception as exc:  # anything else is a bug
        return f"{type(exc).__name__}: {exc}"
    elapsed = clock() - start
    if elapsed > TIME_BOUND:
        return f"took {elapsed:.2f} s"
    if not isinstance(parsed, ModelFormula):
        return f"returned {type(parsed).__name__}"
    # The text form parses back to the same model. Names print as R prints them, so a
    # backticked `.x` or `__id__` comes back bare, which the parser refuses (a name never
    # starts with '.', and bare dunder names are refused): skip those.
    if not all(prints_parseably(column) for column in parsed.columns_used()):
        return None
    canonical = str(parsed)
    try:
        again = parse_formula(canonical)
    except Exception as exc:
        return f"text form {canonical!r} does not parse: {type(exc).__name__}: {exc}"
    if structure(again) != structure(parsed):
        return f"text form {canonical!r} parses to another model: {str(again)!r}"
    return None


def prints_parseably(column: str) -> bool:
    try:
        parse_formula(f"~ {r_name(column)}")
    except FormulaError:
        return False
    return True


def _part(part) -> tuple:
    # Within an interaction R orders variables by first appearance in the formula, which
    # the text form can change (a:b:c may come back as c:a:b): compare sets.
    return (part.intercept, frozenset(frozenset(v.name for v in term) for term in part.terms))


def structure(formula: ModelFormula) -> tuple:
    """What a formula means: response, fixed terms, random terms (order-free where R is)."""
    response = None if formula.response is None else formula.response.name
    random = sorted(
        (repr(_part(rt.lhs)), repr(sorted(v.name for v in rt.grouping)), rt.correlated)
        for rt in formula.random
    )
    offsets = frozenset(v.name for v in formula.offsets)
    return (response, _part(formula.fixed), tuple(random), offsets)


def run_checks(formulas) -> list[tuple[str, str]]:
    failures: list[tuple[str, str]] = []
    _Watch.seen.clear()
    _Watch.active = True
    try:
        for text in formulas:
            problem = check_formula(text)
            if problem is not None:
                failures.append((text, problem))
                if len(failures) >= 20:
                    break
    finally:
        _Watch.active = False
    return failures


def test_generated_and_mutated_formulas_parse_or_fail_cleanly():
    parse_formula("y ~ x + (1 | g)")  # warm up: imports happen before the watch starts
    stream = iter(FormulaGenerator(SEED))
    formulas = (next(stream) for _ in range(N_FORMULAS))
    failures = run_checks(formulas)
    assert not _Watch.seen, f"code ran while parsing: {_Watch.seen[:5]}"
    assert not failures, "\n".join(f"{text!r}: {problem}" for text, problem in failures)


def test_the_generator_makes_both_valid_and_invalid_formulas():
    stream = iter(FormulaGenerator(SEED))
    parsed = refused = 0
    for _ in range(2000):
        try:
            parse_formula(next(stream))
            parsed += 1
        except FormulaError:
            refused += 1
    # Both outcomes are common, so both code paths are exercised by the big run.
    assert parsed > 300 and refused > 300, (parsed, refused)


@settings(max_examples=3000, deadline=None, database=None, derandomize=True)
@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_fails_cleanly(text):
    assert check_formula(text) is None


@settings(max_examples=2000, deadline=None, database=None, derandomize=True)
@given(
    st.lists(
        st.sampled_from([*NAMES, *FUNCS, *HOSTILE, "(", ")", "+", "~", "|", "||", "1", ","]),
        max_size=25,
    )
)
def test_token_soup_parses_or_fails_cleanly(tokens):
    assert check_formula(" ".join(tokens)) is None


# ------------------------------------------------------------------------------ refusals
CODE = [
    "__import__('os').system('touch pwned')",
    "y ~ __import__('os').system('touch pwned')",
    "y ~ x + __import__('os').system('touch pwned') + (1 | g)",
    "y ~ os.system('touch pwned')",
    "y ~ x.__class__.__bases__",
    "y ~ log(x).real",
    "y ~ `x`.y",
    "y ~ (lambda: 1)()",
    "y ~ lambda x: x",
    "y ~ x[0]",
    "y ~ I(x[0])",
    "y ~ [x for x in y]",
    "y ~ f'{x}'",
    "y ~ f\"{__import__('os').system('touch pwned')}\"",
    "y ~ (z := 1)",
    "y ~ I(z := x)",
    "y ~ eval('1')",
    "y ~ exec('import os')",
    "y ~ open('/etc/passwd')",
    "y ~ getattr(x, 'y')",
    "y ~ globals()",
    "y ~ __builtins__",
    "y ~ x + __dict__",
    "y ~ _x_ + __class__",
    "y ~ x; import os",
    "y ~ x if y else z",
    "y ~ not x",
    "y ~ x @ y",
    "y ~ {x}",
    "y ~ b'x'",
    "y ~ yield x",
    "y ~ await x",
    "y ~ I((1).__class__)",
    "y ~ C(x, ref=__import__('os'))",
    "y ~ C(x, ref=exec)",
    "y ~ log(x, base=__import__('os'))",
    "y ~ x + (1 | __import__('os'))",
    "y ~ (1 | g.__class__)",
]


#: Text that looks like Python but, in R's formula language, is only column names: a dotted
#: name is one name (R's ``body.weight``) and keywords are names (the Oats data's ``yield``).
#: They parse to column look-ups, and nothing runs.
NAMES_NOT_CODE = {
    "y ~ x.real": ("y", "x.real"),
    "yield ~ class + lambda + import": ("yield", "class", "lambda", "import"),
    "y ~ os.path + sys.modules": ("y", "os.path", "sys.modules"),
}


@pytest.mark.parametrize(("formula", "columns"), NAMES_NOT_CODE.items())
def test_python_lookalikes_are_only_column_names(formula, columns, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parse_formula("y ~ x")
    _Watch.seen.clear()
    _Watch.active = True
    try:
        parsed = parse_formula(formula)
    finally:
        _Watch.active = False
    assert parsed.columns_used() == columns
    assert not _Watch.seen


@pytest.mark.parametrize("formula", CODE)
def test_formulas_that_try_to_run_code_are_refused(formula, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parse_formula("y ~ x")
    _Watch.seen.clear()
    _Watch.active = True
    try:
        with pytest.raises(FormulaError) as info:
            parse_formula(formula)
    finally:
        _Watch.active = False
    assert isinstance(info.value.position, int)
    assert 0 <= info.value.position <= len(formula)
    assert not _Watch.seen
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------ pathologies
PATHOLOGICAL = {
    "deep parentheses": "y ~ " + "(" * 5000 + "x" + ")" * 5000,
    "deep unary minus": "y ~ " + "-" * 9000 + "x",
    "deep power": "y ~ I(" + "x^" * 3000 + "x)",
    "long sum": "y ~ " + " + ".join(f"x{i}" for i in range(1500)),
    "long product": "y ~ " + "*".join(f"x{i}" for i in range(40)),
    "big power": "y ~ (" + "+".join(f"x{i}" for i in range(30)) + ")^30",
    "deep nesting": "y ~ (1 | " + "/".join(f"g{i}" for i in range(200)) + ")",
    "many random terms": "y ~ " + " + ".join(f"(1 | g{i})" for i in range(1000)),
    "long name": "y ~ `" + "a" * 9000 + "`",
    "unclosed backtick": "y ~ `" + "a" * 9000,
    "unclosed string": "y ~ C(x, ref='" + "a" * 9000,
    "too long": "y ~ " + "x + " * 5000 + "x",
    "many tildes": "~" * 9000,
    "many bars": "y ~ (1 " + "| g " * 2000 + ")",
}


@pytest.mark.parametrize("formula", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_pathological_formulas_fail_cleanly_and_fast(formula):
    # CPU time, not wall time: on a loaded machine (load 10+) "deep unary minus" took
    # 1.6-1.8 s of wall time for ~0.03 s of CPU; the bound is about the parser's work.
    assert check_formula(formula, clock=time.process_time) is None
