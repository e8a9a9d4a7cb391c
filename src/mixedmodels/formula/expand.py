"""Give an AST its formula meaning: expand the term algebra into a ModelFormula.

Semantics follow R's ``terms.formula`` and lme4's ``findbars``/``expandSlash``:

* ``a + b`` union, ``a - b`` removal, ``a:b`` interaction, ``a*b = a + b + a:b``,
  ``a/b = a + a:b`` (in general: left terms plus the interaction of all left
  variables with each right term), ``(a+b+c)^2`` all interactions up to order 2;
* ``1``/``0``/``-1`` switch the intercept;
* R's idioms mean what they mean in R: ``factor(x)``/``as.factor(x)`` make x a factor
  (columns ``factor(x)5``), ``relevel(x, ref = "L")`` sets the reference level
  (columns ``relevel(x, ref = "L")M``), ``poly(x, k)`` is R's orthogonal polynomial
  basis (``poly(x, k, raw = TRUE)`` raw powers), ``C(x, Sum)`` and ``C(x, Helmert)``
  choose R's ``contr.sum``/``contr.helmert`` (columns named as R names them with
  ``contrasts = list(x = "contr.sum")``: ``x1``, ``x2``);
* ``offset(expr)`` at the top level of the fixed part is an offset (lme4: added to the
  linear predictor with coefficient 1), kept apart from the terms;
* ``cbind(successes, failures)``, two numeric expressions, is a binomial response
  (lme4's ``glmer``) and may only be the whole left-hand side;
* ``(lhs | g)`` and ``(lhs || g)`` at the top level of the right-hand side are
  random-effects terms; ``(1 | a/b)`` expands to ``(1 | a) + (1 | b:a)``
  (lme4 names the inner factor ``b:a``: the reference fit of ``(1|batch/cask)`` has
  the group ``cask:batch``), and ``a/b/c`` to ``a``, ``b:a``, ``c:b:a``.

Terms are returned in R's order (interaction order first, then order of
appearance); within a term, variables are ordered by their first appearance in
the formula, as R does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from mixedmodels.errors import FormulaError

from .model_formula import FixedPart, ModelFormula, RandomTerm, Term, Variable
from .nodes import (
    BinOp,
    Call,
    Name,
    Node,
    Number,
    Paren,
    String,
    UnaryOp,
    left_spine,
    r_name,
    walk,
    walk_names,
)
from .parser import parse_ast

#: Upper bound on the number of terms an expansion may create (``a*b*c*...``).
MAX_TERMS = 2_000

#: Upper bound on the levels of nesting in a grouping factor ``a/b/c/...``.
MAX_NESTING_LEVELS = 50

#: Functions allowed in numeric expressions (inside I() and as transforms).
NUMERIC_FUNCTIONS = frozenset({"log", "exp", "sqrt", "scale", "center", "I"})

#: Functions that make their column a factor (R's ``factor``, ``as.factor``, ``relevel``).
FACTOR_FUNCTIONS = frozenset({"C", "factor", "as.factor", "relevel"})

#: Second arguments of ``C(x, ...)`` naming a contrast, and the contrast they choose.
CONTRAST_NAMES = {
    "Treatment": "treatment",
    "contr.treatment": "treatment",
    "Sum": "sum",
    "contr.sum": "sum",
    "Helmert": "helmert",
    "contr.helmert": "helmert",
}

#: R's logical constants, as written for ``poly(x, 2, raw = TRUE)``.
_LOGICALS = {"TRUE": True, "T": True, "FALSE": False, "F": False}

#: The highest polynomial degree ``poly()`` accepts (R has no limit; more is never useful).
MAX_POLY_DEGREE = 50

ARITHMETIC_OPERATORS = frozenset({"+", "-", "*", "/", "^", "**"})


def parse_formula(text: str) -> ModelFormula:
    """Parse an lme4-style model formula into terms, without evaluating anything.

    Parameters
    ----------
    text
        A formula such as ``"weight ~ treatment * sex + litsize + (1 | litter)"``.

    Returns
    -------
    ModelFormula
        Response, fixed part (intercept flag and ordered terms) and random terms.

    Raises
    ------
    FormulaError
        For any syntax problem, with the 0-based ``position`` of the problem.

    Examples
    --------
    >>> f = parse_formula("y ~ a*b + (1 | g)")
    >>> f.fixed.term_labels
    ('a', 'b', 'a:b')
    >>> f.random[0].group
    'g'
    """
    if isinstance(text, ModelFormula):
        return text
    if isinstance(text, str):
        return _parse_cached(text)
    return _parse(text)


def _parse(text: str) -> ModelFormula:
    root = parse_ast(text)
    return _Expander(text).formula(root)


# A ModelFormula is immutable (frozen dataclasses down to the AST nodes), so the same
# text can share one parse: refits, bootstraps and benchmarks parse one formula many
# times, and a parse costs about as much as a small model's deviance evaluations.
# Errors are raised afresh on every call (lru_cache does not cache exceptions).
_parse_cached = functools.lru_cache(maxsize=256)(_parse)


@dataclass
class _TermSet:
    """Intermediate value of the term algebra."""

    terms: dict[frozenset[str], Term] = field(default_factory=dict)
    intercept: bool | None = None  # None: not mentioned
    removals: dict[frozenset[str], Term] = field(default_factory=dict)

    @property
    def is_plain(self) -> bool:
        return self.intercept is None and not self.removals


def _key(term: Term) -> frozenset[str]:
    return frozenset(v.name for v in term)


class _Expander:
    def __init__(self, text: str):
        self.text = text
        self.random: list[RandomTerm] = []
        self.offsets: dict[str, Variable] = {}

    def error(self, message: str, pos: int) -> FormulaError:
        return FormulaError(message, formula=self.text, position=pos)

    # -- top level -------------------------------------------------------------------------
    def formula(self, root: Node) -> ModelFormula:
        if isinstance(root, BinOp) and root.op == "~":
            if any(isinstance(n, BinOp | UnaryOp) and n.op == "~" for n in walk(root.left)):
                raise self.error("only one '~' is allowed in a formula", root.pos)
            self.reject_misplaced_cbind(root)
            response = self.response(root.left)
            rhs = root.right
        elif isinstance(root, UnaryOp) and root.op == "~":
            self.reject_misplaced_cbind(root)
            response = None
            rhs = root.operand
        else:
            raise self.error(
                "a formula needs '~': write 'response ~ predictors', e.g. 'y ~ x + (1 | g)'",
                0,
            )
        self.reject_tilde(rhs)
        order: dict[str, int] = {}
        termset = self.expand(rhs, allow_random=True, order=order)
        fixed = self.fixed_part(termset, order)
        return ModelFormula(
            self.text, response, fixed, tuple(self.random), tuple(self.offsets.values())
        )

    def reject_misplaced_cbind(self, root: Node) -> None:
        """Refuse ``cbind(...)`` anywhere but as the whole response (the first one found)."""
        allowed = None
        if isinstance(root, BinOp) and root.op == "~":
            allowed = _cbind_call(root.left)
        misplaced = [
            sub
            for sub in walk(root)
            if isinstance(sub, Call) and sub.func == "cbind" and sub is not allowed
        ]
        if misplaced:
            first = min(misplaced, key=lambda n: n.pos)
            raise self.error(
                "cbind(...) can only be the whole response of a binomial model, e.g. "
                "'cbind(successes, failures) ~ x + (1 | g)'",
                first.pos,
            )

    def reject_tilde(self, node: Node) -> None:
        for sub in walk(node):
            if (isinstance(sub, BinOp | UnaryOp)) and sub.op == "~":
                raise self.error("only one '~' is allowed in a formula", sub.pos)

    def response(self, node: Node) -> Variable:
        self.reject_tilde(node)
        if isinstance(node, Name):
            return self.variable(node, {})
        cbind = _cbind_call(node)
        if cbind is not None:
            return self.cbind_response(cbind)
        if isinstance(node, Call) and node.func in (*FACTOR_FUNCTIONS, "Treatment"):
            raise self.error(
                f"the response must be numeric; {node.func}(...) cannot be used here", node.pos
            )
        if isinstance(node, Call) and node.func in ("poly", "offset"):
            raise self.error(
                f"{node.func}(...) cannot be the response; write the response as a column or "
                "a numeric expression such as log(y)",
                node.pos,
            )
        if isinstance(node, Number):
            raise self.error("the response must be a column, not a number", node.pos)
        self.check_numeric(node)
        return Variable(
            node.deparse(), node, _columns(node), kind="transform", label=node.deparse()
        )

    def cbind_response(self, node: Call) -> Variable:
        """``cbind(successes, failures)``: binomial counts, each a numeric expression."""
        if len(node.args) != 2:
            raise self.error(
                "cbind(...) takes two numeric expressions, the successes and the failures, "
                "e.g. cbind(incidence, size - incidence)",
                node.pos,
            )
        for arg in node.args:
            self.check_numeric(arg)
        if not _columns(node):
            raise self.error(
                "cbind(...) must read columns of the data, e.g. cbind(incidence, size - incidence)",
                node.pos,
            )
        text = node.deparse()
        return Variable(text, node, _columns(node), kind="cbind", label=text)

    def fixed_part(self, termset: _TermSet, order: dict[str, int]) -> FixedPart:
        intercept = termset.intercept is not False
        terms: list[Term] = []
        for term in termset.terms.values():
            terms.append(tuple(sorted(term, key=lambda v: order[v.name])))
        terms.sort(key=len)  # stable: order of appearance within an interaction order
        return FixedPart(intercept, tuple(terms))

    # -- the term algebra -------------------------------------------------------------------
    def expand(self, node: Node, *, allow_random: bool, order: dict[str, int]) -> _TermSet:
        if isinstance(node, Paren):
            inner = node.inner
            while isinstance(inner, Paren):
                inner = inner.inner
            if isinstance(inner, BinOp) and inner.op in ("|", "||"):
                if not allow_random:
                    raise self.error(
                        "a random-effects term (... | g) can only be added at the top level "
                        "of the right-hand side, e.g. 'y ~ x + (1 | g)'",
                        node.pos,
                    )
                self.random.extend(self.random_terms(inner))
                return _TermSet()
            return self.expand(node.inner, allow_random=allow_random, order=order)
        if isinstance(node, BinOp) and node.op in ("|", "||"):
            raise self.error(
                f"a random-effects term must be in parentheses: write "
                f"'({node.left.deparse()} {node.op} {node.right.deparse()})'",
                node.pos,
            )
        if isinstance(node, BinOp):
            # Walk a left-nested chain (a + b + c ...) iteratively: formulas may be long.
            leftmost, chain = left_spine(node, frozenset({"|", "||", "~"}))
            sums_only = all(link.op in ("+", "-") for link in chain)
            result = self.expand(leftmost, allow_random=allow_random and sums_only, order=order)
            for link in chain:
                result = self.combine(result, link, allow_random=allow_random, order=order)
            return result
        if isinstance(node, UnaryOp):
            inner = self.expand(node.operand, allow_random=False, order=order)
            if node.op == "+":
                return inner
            if inner.removals:
                raise self.error("double negation '- -' is not allowed", node.pos)
            flipped = None if inner.intercept is None else not inner.intercept
            return _TermSet({}, flipped, dict(inner.terms))
        if isinstance(node, Number):
            if node.text in ("0", "1"):
                return _TermSet({}, node.text == "1")
            raise self.error(
                f"the number {node.text} cannot be a term; only 0 and 1 (intercept) may appear "
                f"outside I(...), e.g. I({node.text} * x)",
                node.pos,
            )
        if isinstance(node, String):
            raise self.error(
                "strings are only allowed as reference levels inside C(...), "
                "e.g. C(sex, ref='Male')",
                node.pos,
            )
        if isinstance(node, Call) and node.func == "offset":
            if not allow_random:
                raise self.error(
                    "offset(...) can only be added to the fixed part at the top level, "
                    "e.g. 'y ~ x + offset(log(n)) + (1 | g)'; it cannot be interacted, "
                    "removed or used inside (... | g)",
                    node.pos,
                )
            offset = self.offset_call(node)
            self.offsets.setdefault(offset.name, offset)
            return _TermSet()
        var = self.variable(node, order)
        return _TermSet({frozenset([var.name]): (var,)})

    def combine(
        self, left: _TermSet, link: BinOp, *, allow_random: bool, order: dict[str, int]
    ) -> _TermSet:
        """Apply one binary operator of the term algebra to an expanded left operand."""
        op = link.op
        if op in ("^", "**"):
            return self.power(left, link)
        right = self.expand(link.right, allow_random=allow_random and op == "+", order=order)
        if op == "+":
            return self.union(left, right)
        if op == "-":
            return self.remove(left, right, link)
        self.check_interaction_operands(left, right, link)
        if op == ":":
            return _TermSet(self.product(left.terms, right.terms, link))
        if op == "*":
            both = self.union(left, right)
            return self.union(both, _TermSet(self.product(left.terms, right.terms, link)))
        if op == "/":
            merged: dict[str, Variable] = {}
            for term in left.terms.values():
                for v in term:
                    merged.setdefault(v.name, v)
            outer = {frozenset(merged): tuple(merged.values())}
            return self.union(left, _TermSet(self.product(outer, right.terms, link)))
        raise self.error(f"operator '{op}' cannot be used here", link.pos)

    def union(self, left: _TermSet, right: _TermSet) -> _TermSet:
        terms = dict(left.terms)
        for key in right.removals:
            terms.pop(key, None)
        for key, term in right.terms.items():
            terms.setdefault(key, term)
        self.check_size(len(terms), None)
        intercept = right.intercept if right.intercept is not None else left.intercept
        return _TermSet(terms, intercept, {**left.removals, **right.removals})

    def remove(self, left: _TermSet, right: _TermSet, node: BinOp) -> _TermSet:
        if right.removals:
            raise self.error("cannot remove a negated term; drop the inner '-'", node.pos)
        terms = {k: t for k, t in left.terms.items() if k not in right.terms}
        intercept = left.intercept
        if right.intercept is not None:
            intercept = not right.intercept
        return _TermSet(terms, intercept, dict(left.removals))

    def check_interaction_operands(self, left: _TermSet, right: _TermSet, node: BinOp) -> None:
        for side in (left, right):
            if side.removals:
                raise self.error(
                    f"term removal with '-' cannot be combined with '{node.op}'; "
                    "remove terms at the top level, e.g. 'y ~ a*b - a:b'",
                    node.pos,
                )
            if side.intercept is not None:
                raise self.error(
                    f"'0' and '1' (the intercept) cannot be operands of '{node.op}'", node.pos
                )
            if not side.terms:
                raise self.error(f"operator '{node.op}' needs terms on both sides", node.pos)

    def product(
        self, left: dict[frozenset[str], Term], right: dict[frozenset[str], Term], node: Node
    ) -> dict[frozenset[str], Term]:
        self.check_size(len(left) * len(right), node.pos)
        out: dict[frozenset[str], Term] = {}
        for a in left.values():
            names = {v.name for v in a}
            for b in right.values():
                term = a + tuple(v for v in b if v.name not in names)
                out.setdefault(_key(term), term)
        return out

    def power(self, base: _TermSet, node: BinOp) -> _TermSet:
        exponent = node.right
        while isinstance(exponent, Paren):
            exponent = exponent.inner
        if (
            not isinstance(exponent, Number)
            or not exponent.value.is_integer()
            or (exponent.value < 1)
        ):
            raise self.error(
                "the exponent of '^' in a formula must be a positive whole number, "
                "e.g. (a + b + c)^2; for a numeric power write I(x^2)",
                node.right.pos,
            )
        if not base.is_plain or not base.terms:
            raise self.error("'^' needs terms on its left, e.g. (a + b)^2", node.pos)
        power = int(exponent.value)
        result = dict(base.terms)
        current = dict(base.terms)
        for _ in range(1, min(power, len(base.terms))):
            current = self.product(current, base.terms, node)
            for key, term in current.items():
                result.setdefault(key, term)
            self.check_size(len(result), node.pos)
        return _TermSet(result)

    def check_size(self, n: int, pos: int | None) -> None:
        if n > MAX_TERMS:
            raise self.error(
                f"the formula expands to more than {MAX_TERMS} terms; use fewer interactions",
                0 if pos is None else pos,
            )

    # -- variables --------------------------------------------------------------------------
    def variable(self, node: Node, order: dict[str, int]) -> Variable:
        if isinstance(node, Name):
            name = r_name(node.name)
            var = Variable(name, node, (node.name,), kind="column", label=name)
        elif isinstance(node, Call) and node.func == "C":
            var = self.factor_call(node)
        elif isinstance(node, Call) and node.func in ("factor", "as.factor"):
            column = self.factor_column(node, 1)
            text = node.deparse()
            var = Variable(text, node, (column.name,), kind="factor", label=text)
        elif isinstance(node, Call) and node.func == "relevel":
            var = self.relevel_call(node)
        elif isinstance(node, Call) and node.func == "poly":
            var = self.poly_call(node)
        elif isinstance(node, Call) and node.func == "offset":  # pragma: no cover - expand
            raise self.error("offset(...) cannot be used here", node.pos)
        elif isinstance(node, Call) and node.func == "Treatment":
            raise self.error(
                "Treatment(...) is only allowed as the second argument of C(...), "
                "e.g. C(sex, Treatment('Male'))",
                node.pos,
            )
        elif isinstance(node, Call):
            self.check_numeric(node)
            text = node.deparse()
            var = Variable(text, node, _columns(node), kind="transform", label=text)
        else:  # pragma: no cover - every node kind is handled by the callers
            raise self.error("unexpected expression in a formula", node.pos)
        order.setdefault(var.name, len(order))
        return var

    def factor_call(self, node: Call) -> Variable:
        if not node.args or not isinstance(node.args[0], Name):
            raise self.error(
                "C(...) takes a column name as its first argument, e.g. C(litter)", node.pos
            )
        column = node.args[0]
        reference_node: Node | None = None
        if len(node.args) > 2:
            raise self.error("C(...) takes at most two arguments", node.args[2].pos)
        contrast_kind = "treatment"
        if len(node.args) == 2:
            contrast = node.args[1]
            if isinstance(contrast, Name):
                if contrast.name not in CONTRAST_NAMES:
                    raise self.error(
                        f"unknown contrast '{contrast.name}'; the second argument of C(...) "
                        "can be Treatment('level'), Sum or Helmert",
                        contrast.pos,
                    )
                contrast_kind = CONTRAST_NAMES[contrast.name]
            elif isinstance(contrast, Call) and contrast.func == "Treatment":
                if len(contrast.args) + len(contrast.kwargs) != 1:
                    raise self.error(
                        "Treatment(...) takes exactly one reference level, e.g. Treatment('Male')",
                        contrast.pos,
                    )
                reference_node = contrast.args[0] if contrast.args else contrast.kwargs[0][1]
            else:
                raise self.error(
                    "the second argument of C(...) must be Treatment('level'), Sum or "
                    "Helmert (R's contr.treatment, contr.sum, contr.helmert)",
                    contrast.pos,
                )
        for key, value in node.kwargs:
            if key == "ref":
                if reference_node is not None:
                    raise self.error(
                        "give the reference level once: either Treatment(...) or ref=",
                        value.pos,
                    )
                reference_node = value
        if reference_node is not None and contrast_kind != "treatment":
            raise self.error(
                "a reference level (ref=) only applies to treatment contrasts; "
                f"drop it or use C({column.deparse()}, Treatment(...))",
                reference_node.pos,
            )
        reference = None if reference_node is None else self.level_text(reference_node)
        label = r_name(column.name)
        if contrast_kind != "treatment":
            name = f"C({label}, {contrast_kind.capitalize()})"
            return Variable(
                name, node, (column.name,), kind="factor", label=label, contrast=contrast_kind
            )
        if reference is None:
            name = f"C({label})"
        else:
            shown = (
                String(reference, 0).deparse()
                if isinstance(reference_node, String)
                else (reference)
            )
            name = f"C({label}, Treatment({shown}))"
        return Variable(name, node, (column.name,), kind="factor", label=label, reference=reference)

    def level_text(self, node: Node) -> str:
        """The label of a reference level written as a string or a (negative) number."""
        if isinstance(node, UnaryOp) and node.op == "-" and isinstance(node.operand, Number):
            return "-" + node.operand.deparse()
        if isinstance(node, String):
            return node.value
        if isinstance(node, Number):
            return node.deparse()
        raise self.error(
            "a reference level must be a quoted level name or a number, "
            "e.g. C(sex, ref='Male'), relevel(sex, ref = \"Male\") or C(temperature, ref=175)",
            node.pos,
        )

    def factor_column(self, node: Call, nargs: int) -> Name:
        """The column of ``factor(x)``/``as.factor(x)``/``relevel(x, ...)``, with arity checks."""
        if not node.args or not isinstance(node.args[0], Name):
            example = 'relevel(sex, ref = "Male")' if node.func == "relevel" else "factor(litsize)"
            raise self.error(
                f"{node.func}(...) takes a column name as its first argument, e.g. {example}",
                node.pos,
            )
        if len(node.args) > nargs:
            raise self.error(
                f"{node.func}(...) takes at most {nargs} argument{'s' if nargs > 1 else ''}",
                node.args[nargs].pos,
            )
        return node.args[0]

    def relevel_call(self, node: Call) -> Variable:
        """``relevel(x, ref = "L")`` (or ``relevel(x, "L")``): x as a factor with reference L."""
        first = node.args[0] if node.args else None
        if isinstance(first, Call) and first.func in ("factor", "as.factor"):
            # relevel(factor(size), ref = "8"): R's usual spelling for a numeric column.
            if len(node.args) > 2:
                raise self.error("relevel(...) takes at most 2 arguments", node.args[2].pos)
            column = self.factor_column(first, 1)
        else:
            column = self.factor_column(node, 2)
        reference_node = node.args[1] if len(node.args) == 2 else None
        for _, value in node.kwargs:  # the parser admits only ref=, at most once
            if reference_node is not None:
                raise self.error("give the reference level once", value.pos)
            reference_node = value
        if reference_node is None:
            raise self.error(
                'relevel(...) needs the reference level, e.g. relevel(sex, ref = "Male")',
                node.pos,
            )
        if not isinstance(reference_node, String):
            # R's relevel() reads a number as the level's position, not its label: asking
            # for the label avoids silently choosing another level than meant.
            raise self.error(
                "relevel() needs the reference level as a quoted label, e.g. "
                f'relevel({column.deparse()}, ref = "Male"); R reads a number as the '
                "position of the level, which is ambiguous for numeric levels",
                reference_node.pos,
            )
        text = node.deparse()
        return Variable(
            text, node, (column.name,), kind="factor", label=text, reference=reference_node.value
        )

    def poly_call(self, node: Call) -> Variable:
        """``poly(x, degree)``, ``poly(x, degree = k)``, ``poly(x, k, raw = TRUE)``."""
        if not node.args:
            raise self.error("poly(...) needs a column, e.g. poly(Days, 2)", node.pos)
        if len(node.args) > 2:
            raise self.error(
                "poly(...) takes a column and a degree, e.g. poly(Days, 2) or "
                "poly(Days, 2, raw = TRUE); several columns are not supported",
                node.args[2].pos,
            )
        self.check_numeric(node.args[0])
        kwargs = dict(node.kwargs)
        degree_node = node.args[1] if len(node.args) == 2 else kwargs.get("degree")
        if len(node.args) == 2 and "degree" in kwargs:
            raise self.error("give the degree of poly() once", kwargs["degree"].pos)
        degree = 1  # R's default
        if degree_node is not None:
            if not (
                isinstance(degree_node, Number)
                and degree_node.value.is_integer()
                and 1 <= degree_node.value <= MAX_POLY_DEGREE
            ):
                raise self.error(
                    f"the degree of poly() must be a whole number from 1 to {MAX_POLY_DEGREE}, "
                    "e.g. poly(Days, 2)",
                    degree_node.pos,
                )
            degree = int(degree_node.value)
        raw = False
        if "raw" in kwargs:
            value = kwargs["raw"]
            if not (isinstance(value, Name) and value.name in _LOGICALS):
                raise self.error(
                    "raw = must be TRUE or FALSE, e.g. poly(x, 2, raw = TRUE)", value.pos
                )
            raw = _LOGICALS[value.name]
        text = node.deparse()
        return Variable(
            text,
            node,
            _columns(node.args[0]),
            kind="poly",
            label=text,
            degree=degree,
            raw=raw,
        )

    def offset_call(self, node: Call) -> Variable:
        """``offset(expr)``: a numeric expression added to the linear predictor."""
        if len(node.args) != 1:
            raise self.error(
                "offset(...) takes exactly one numeric expression, e.g. offset(log(n))", node.pos
            )
        self.check_numeric(node.args[0])
        text = node.deparse()
        return Variable(text, node, _columns(node.args[0]), kind="offset", label=text)

    def check_numeric(self, node: Node) -> None:
        """Refuse anything but arithmetic on columns and numbers (inside I() and transforms)."""
        stack = [node]
        while stack:
            sub = stack.pop()
            if isinstance(sub, Name | Number):
                continue
            if isinstance(sub, Paren):
                stack.append(sub.inner)
            elif isinstance(sub, UnaryOp) and sub.op in ("+", "-"):
                stack.append(sub.operand)
            elif isinstance(sub, BinOp) and sub.op in ARITHMETIC_OPERATORS:
                stack.extend((sub.left, sub.right))
            elif isinstance(sub, BinOp):
                raise self.error(
                    f"operator '{sub.op}' cannot be used in a numeric expression; "
                    "allowed: + - * / ^ **",
                    sub.pos,
                )
            elif isinstance(sub, Call) and sub.func in NUMERIC_FUNCTIONS:
                if len(sub.args) != 1 or sub.kwargs:
                    raise self.error(f"{sub.func}() takes exactly one argument", sub.pos)
                stack.append(sub.args[0])
            elif isinstance(sub, Call):
                raise self.error(
                    f"{sub.func}(...) cannot be used inside a numeric expression", sub.pos
                )
            elif isinstance(sub, String):
                raise self.error(
                    "strings are only allowed as reference levels inside C(...)", sub.pos
                )
            else:
                raise self.error("unexpected expression", sub.pos)

    # -- random-effects terms ---------------------------------------------------------------
    def random_terms(self, bar: BinOp) -> list[RandomTerm]:
        order: dict[str, int] = {}
        lhs_set = self.expand(bar.left, allow_random=False, order=order)
        lhs = self.fixed_part(lhs_set, order)
        if not lhs.intercept and not lhs.terms:
            raise self.error(
                "a random-effects term needs at least one column on the left of '|', "
                "e.g. (1 | g) or (0 + x | g)",
                bar.pos,
            )
        groupings = self.groupings(bar.right)
        return [RandomTerm(lhs, g, bar.op == "|") for g in groupings]

    def groupings(self, node: Node) -> list[tuple[Variable, ...]]:
        components = self.slash_components(node)
        if len(components) > MAX_NESTING_LEVELS:
            raise self.error(
                f"more than {MAX_NESTING_LEVELS} nested grouping factors in a/b/...; "
                "use fewer levels of nesting",
                node.pos,
            )
        out: list[tuple[Variable, ...]] = []
        nested: tuple[Variable, ...] = ()
        for component in components:
            # (1 | g/g) would give (1 | g) twice: two copies of one variance, not identifiable.
            repeated = next((v for v in component if v in nested), None)
            if repeated is not None:
                raise self.error(
                    f"grouping factor '{repeated.name}' is nested in itself; each factor may "
                    f"appear once in a/b/..., e.g. write (1 | {repeated.name}) instead of "
                    f"(1 | {repeated.name}/{repeated.name})",
                    repeated.pos,
                )
            nested = component + tuple(v for v in nested if v not in component)
            out.append(nested)
        return out

    def slash_components(self, node: Node) -> list[tuple[Variable, ...]]:
        while isinstance(node, Paren):
            node = node.inner
        if isinstance(node, BinOp) and node.op == "/":
            leftmost, chain = left_spine(node, frozenset({"|", "||", "~", "+", "-", ":", "*"}))
            parts = [leftmost] + [link.right for link in chain]
            out: list[tuple[Variable, ...]] = []
            for part in parts:
                out.extend(self.slash_components(part))
            return out
        return [self.interaction_of_names(node)]

    def interaction_of_names(self, node: Node) -> tuple[Variable, ...]:
        while isinstance(node, Paren):
            node = node.inner
        if isinstance(node, BinOp) and node.op == ":":
            leftmost, chain = left_spine(node, frozenset({"|", "||", "~", "+", "-", "/", "*"}))
            out: tuple[Variable, ...] = ()
            for part in [leftmost] + [link.right for link in chain]:
                out += tuple(v for v in self.interaction_of_names(part) if v not in out)
            return out
        if isinstance(node, Name):
            name = r_name(node.name)
            return (Variable(name, node, (node.name,), kind="column", label=name),)
        if isinstance(node, Call):
            hint = (
                "; grouping factors are always treated as factors"
                if node.func in FACTOR_FUNCTIONS
                else ""
            )
            raise self.error(
                f"a grouping factor must be a column name or an interaction a:b, "
                f"not {node.func}(...){hint}",
                node.pos,
            )
        if isinstance(node, BinOp) and node.op == "+":
            raise self.error(
                "'+' is not allowed right of '|'; write separate terms: (1 | a) + (1 | b)",
                node.pos,
            )
        raise self.error(
            "a grouping factor must be a column name, an interaction a:b or nesting a/b",
            node.pos,
        )


def _columns(node: Node) -> tuple[str, ...]:
    return tuple(walk_names(node))


def _cbind_call(node: Node) -> Call | None:
    """The ``cbind(...)`` call that ``node`` is, inside any parentheses, or None."""
    while isinstance(node, Paren):
        node = node.inner
    return node if isinstance(node, Call) and node.func == "cbind" else None
