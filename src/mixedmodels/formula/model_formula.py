"""Frozen descriptions of a parsed formula: variables, terms, fixed and random parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .nodes import Name, Node

VariableKind = Literal["column", "transform", "factor"]


@dataclass(frozen=True)
class Variable:
    """One variable of a formula: a column, a numeric transform or a ``C()`` factor.

    Two variables are equal when their canonical ``name`` is equal.

    Attributes
    ----------
    name
        Canonical R-like text: ``litsize``, ``log(x)``, ``I(x^2)``,
        ``C(sex, Treatment('Male'))``.
    expr
        The AST the design layer evaluates (never Python code).
    columns
        Names of the data columns read, in order of appearance.
    kind
        ``"column"`` (a bare column: factor or numeric depending on its dtype),
        ``"transform"`` (numeric: ``log``, ``exp``, ``sqrt``, ``scale``, ``center``,
        ``I``) or ``"factor"`` (``C(column, ...)``: always a factor).
    label
        Prefix of model-matrix column names for factor levels: the bare column
        name for a column or a ``C(column, ...)``, so ``C(sex, ref='Male')`` gives
        the column ``sexFemale``; ``name`` otherwise.
    reference
        For ``C(x, Treatment(L))`` / ``C(x, ref=L)``: the reference level as a label
        (``'Male'``, ``'175'`` for the number 175); ``None`` means the first level.
    """

    name: str
    expr: Node = field(compare=False, repr=False)
    columns: tuple[str, ...] = field(compare=False)
    kind: VariableKind = field(compare=False, default="column")
    label: str = field(compare=False, default="")
    reference: str | None = field(compare=False, default=None)

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

    @property
    def variables(self) -> tuple[Variable, ...]:
        """Distinct variables in order of first appearance in ``terms``."""
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
    """A parsed mixed-model formula ``response ~ fixed + (random | group) ...``."""

    text: str
    response: Variable | None
    fixed: FixedPart
    random: tuple[RandomTerm, ...] = ()

    def columns_used(self) -> tuple[str, ...]:
        """Data columns the formula reads, in order of first appearance (response first)."""
        cols: dict[str, None] = {}
        variables: list[Variable] = []
        if self.response is not None:
            variables.append(self.response)
        variables.extend(self.fixed.variables)
        for rt in self.random:
            variables.extend(rt.lhs.variables)
            variables.extend(rt.grouping)
        for v in variables:
            for c in v.columns:
                cols.setdefault(c, None)
        return tuple(cols)

    def __str__(self) -> str:
        rhs = ["1" if self.fixed.intercept else "0", *self.fixed.term_labels]
        rhs += [str(r) for r in self.random]
        lhs = self.response.name + " " if self.response is not None else ""
        return f"{lhs}~ {' + '.join(rhs)}"
