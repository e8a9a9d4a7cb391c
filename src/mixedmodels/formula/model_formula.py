"""Frozen descriptions of a parsed formula: variables, terms, fixed and random parts."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

from .nodes import Call, Name, Node

VariableKind = Literal["column", "transform", "factor", "poly", "offset", "cbind"]
Contrast = Literal["treatment", "sum", "helmert"]


@dataclass(frozen=True)
class Variable:
    """One variable of a formula: a column, a transform, a factor, a polynomial or an offset.

    Two variables are equal when their canonical ``name`` is equal.

    Attributes
    ----------
    name
        Canonical R-like text: ``litsize``, ``log(x)``, ``I(x^2)``,
        ``C(sex, Treatment('Male'))``, ``factor(litsize)``,
        ``relevel(sex, ref = "Male")``, ``poly(Days, 2)``, ``offset(log(n))``.
    expr
        The AST the design layer evaluates (never Python code).
    columns
        Names of the data columns read, in order of appearance.
    kind
        ``"column"`` (a bare column: factor or numeric depending on its dtype),
        ``"transform"`` (numeric: ``log``, ``exp``, ``sqrt``, ``scale``, ``center``,
        ``I``), ``"factor"`` (``C(column, ...)``, ``factor(column)``,
        ``as.factor(column)``, ``relevel(column, ref)``: always a factor), ``"poly"``
        (``poly(x, degree)``: ``degree`` numeric columns), ``"offset"``
        (``offset(expr)``: added to the linear predictor, never a column of X) or
        ``"cbind"`` (only as the whole response: ``cbind(successes, failures)``, two
        numeric expressions giving binomial counts, as lme4's ``glmer`` reads them).
    label
        Prefix of model-matrix column names for factor levels: the bare column
        name for a column or a ``C(column, ...)``, so ``C(sex, ref='Male')`` gives
        the column ``sexFemale`` (R's names when contrasts are set by
        ``contrasts = list(...)``); the call as R deparses it for ``factor()``,
        ``as.factor()`` and ``relevel()`` (``factor(litsize)5``,
        ``relevel(sex, ref = "Male")Female``, as R names them); ``name`` otherwise.
    reference
        For ``C(x, Treatment(L))`` / ``C(x, ref=L)`` / ``relevel(x, ref = L)``: the
        reference level as a label (``'Male'``, ``'175'`` for the number 175);
        ``None`` means the first level.
    contrast
        Coding of a factor's contrast columns: ``"treatment"`` (R's
        ``contr.treatment``), ``"sum"`` (``contr.sum``, from ``C(x, Sum)``) or
        ``"helmert"`` (``contr.helmert``, from ``C(x, Helmert)``).
    degree
        For ``poly()``: the number of polynomial columns.
    raw
        For ``poly(..., raw = TRUE)``: raw powers instead of orthogonal polynomials.
    """

    name: str
    expr: Node = field(compare=False, repr=False)
    columns: tuple[str, ...] = field(compare=False)
    kind: VariableKind = field(compare=False, default="column")
    label: str = field(compare=False, default="")
    reference: str | None = field(compare=False, default=None)
    contrast: Contrast = field(compare=False, default="treatment")
    degree: int = field(compare=False, default=0)
    raw: bool = field(compare=False, default=False)

    @property
    def numeric_expr(self) -> Node:
        """The numeric expression evaluated (for ``poly`` and ``offset``: the argument)."""
        if self.kind in ("poly", "offset") and isinstance(self.expr, Call):
            return self.expr.args[0]
        return self.expr

    @property
    def count_exprs(self) -> tuple[Node, Node]:
        """For ``cbind(successes, failures)``: the two numeric expressions."""
        if self.kind != "cbind" or not isinstance(self.expr, Call):
            raise ValueError(f"{self.name} is not a cbind(successes, failures) response")
        successes, failures = self.expr.args
        return successes, failures

    @property
    def pos(self) -> int:
        """Offset of the variable in the formula text."""
        return self.expr.pos

    @property
    def is_plain_column(self) -> bool:
        return isinstance(self.expr, Name)


#: An interaction of variables; the empty tuple stands for the intercept.
Term = tuple[Variable, ...]


def term_label(term: Term) -> str:
    """R's label of a term: variable names joined by ``:`` (``"(Intercept)"`` if empty)."""
    return ":".join(v.name for v in term) if term else "(Intercept)"


@dataclass(frozen=True)
class FixedPart:
    """An intercept flag and terms in R's order (by interaction order, then appearance)."""

    intercept: bool
    terms: tuple[Term, ...]

    @property
    def term_labels(self) -> tuple[str, ...]:
        return tuple(term_label(t) for t in self.terms)

    @functools.cached_property
    def variables(self) -> tuple[Variable, ...]:
        """Distinct variables in order of first appearance in ``terms``.

        Computed once per (immutable) part: parsed formulas are cached, and each design
        built from one asks for its variables several times.
        """
        seen: dict[str, Variable] = {}
        for term in self.terms:
            for v in term:
                seen.setdefault(v.name, v)
        return tuple(seen.values())


@dataclass(frozen=True)
class RandomTerm:
    """A random-effects term ``(lhs | grouping)`` or, uncorrelated, ``(lhs || grouping)``.

    ``grouping`` holds one variable, or several for an interaction grouping factor
    (``recipe:replicate``, or ``cask:batch`` from the nested ``batch/cask``).
    """

    lhs: FixedPart
    grouping: tuple[Variable, ...]
    correlated: bool = True

    @property
    def group(self) -> str:
        """Grouping factor name as lme4 prints it, e.g. ``"cask:batch"``."""
        return ":".join(v.name for v in self.grouping)

    def __str__(self) -> str:
        parts = ["1" if self.lhs.intercept else "0", *self.lhs.term_labels]
        bar = "|" if self.correlated else "||"
        return f"({' + '.join(parts)} {bar} {self.group})"


@dataclass(frozen=True)
class ModelFormula:
    """A parsed mixed-model formula ``response ~ fixed + (random | group) ...``.

    ``offsets`` are the distinct ``offset(expr)`` terms of the fixed part (kind
    ``"offset"``), in order of appearance: lme4 adds their sum to the linear predictor
    with coefficient 1; they are never columns of X.  As in R, an offset written twice
    counts once. A ``cbind(successes, failures)`` response has kind ``"cbind"``
    (:attr:`binomial_counts`); ``cbind`` is refused anywhere else.
    """

    text: str
    response: Variable | None
    fixed: FixedPart
    random: tuple[RandomTerm, ...] = ()
    offsets: tuple[Variable, ...] = ()

    @property
    def binomial_counts(self) -> bool:
        """Whether the response is ``cbind(successes, failures)`` (binomial counts)."""
        return self.response is not None and self.response.kind == "cbind"

    def columns_used(self) -> tuple[str, ...]:
        """Data columns the formula reads, in order of first appearance (response first)."""
        return self._columns_used

    @functools.cached_property
    def _columns_used(self) -> tuple[str, ...]:
        # Once per (immutable, cached) formula; cached_property writes the instance
        # __dict__ directly, which a frozen dataclass allows.
        cols: dict[str, None] = {}
        variables: list[Variable] = []
        if self.response is not None:
            variables.append(self.response)
        variables.extend(self.fixed.variables)
        for rt in self.random:
            variables.extend(rt.lhs.variables)
            variables.extend(rt.grouping)
        variables.extend(self.offsets)
        for v in variables:
            for c in v.columns:
                cols.setdefault(c, None)
        return tuple(cols)

    def __str__(self) -> str:
        rhs = ["1" if self.fixed.intercept else "0", *self.fixed.term_labels]
        rhs += [v.name for v in self.offsets]
        rhs += [str(r) for r in self.random]
        lhs = self.response.name + " " if self.response is not None else ""
        return f"{lhs}~ {' + '.join(rhs)}"
