"""Abstract syntax tree of a formula: plain frozen data, never Python code objects.

Every node records ``pos``, the offset of its first character in the formula text,
so that later stages can point at the offending spot.  ``deparse`` renders a node
as R prints it (``x * 2``, ``x^2``, ``x/2``, ``-x``), which is what names
transformed variables and model-matrix columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_R_SYNTACTIC = re.compile(r"^(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*$")
_R_RESERVED = frozenset(
    "if else repeat while function for next break TRUE FALSE NULL Inf NaN NA "
    "NA_integer_ NA_real_ NA_character_ in".split()
)


def r_name(name: str) -> str:
    """Return ``name`` as R prints a variable: bare if syntactic, otherwise in backticks."""
    if _R_SYNTACTIC.match(name) and name not in _R_RESERVED:
        return name
    return f"`{name}`"


@dataclass(frozen=True, slots=True)
class Name:
    """A column reference (``litsize`` or ```body weight```)."""

    name: str
    pos: int

    def deparse(self) -> str:
        return r_name(self.name)


@dataclass(frozen=True, slots=True)
class Number:
    """A numeric literal, kept as written so that names print as typed."""

    text: str
    pos: int

    @property
    def value(self) -> float:
        return float(self.text)

    def deparse(self) -> str:
        value = self.value
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".15g")


@dataclass(frozen=True, slots=True)
class String:
    """A quoted level name; only legal inside ``C(...)``/``Treatment(...)``."""

    value: str
    pos: int

    def deparse(self) -> str:
        # Formulas have no escapes: a level containing ' must be shown in double quotes.
        quote = '"' if "'" in self.value else "'"
        return quote + self.value + quote


#: Calls printed in the patsy spelling the seed tutorial uses (``ref='Male'``); every
#: other call prints as R's ``deparse`` does (``relevel(sex, ref = "Male")``), because
#: R names model-matrix columns after the deparsed call.
_PATSY_CALLS = frozenset({"C", "Treatment"})


def _r_argument(node: Node) -> str:
    if isinstance(node, String):
        # R deparses strings in double quotes; a level holding " keeps single quotes.
        return node.deparse() if '"' in node.value else f'"{node.value}"'
    if isinstance(node, Name) and node.name in ("TRUE", "FALSE"):
        return node.name  # the constants of poly(x, 2, raw = TRUE), not column names
    return node.deparse()


@dataclass(frozen=True, slots=True)
class Call:
    """A call of an allowed function, e.g. ``log(x)`` or ``C(sex, ref='Male')``."""

    func: str
    args: tuple[Node, ...]
    kwargs: tuple[tuple[str, Node], ...]
    pos: int

    def deparse(self) -> str:
        if self.func in _PATSY_CALLS:
            parts = [a.deparse() for a in self.args]
            parts += [f"{k}={v.deparse()}" for k, v in self.kwargs]
        else:
            parts = [_r_argument(a) for a in self.args]
            parts += [f"{k} = {_r_argument(v)}" for k, v in self.kwargs]
        return f"{self.func}({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class BinOp:
    """A binary operator: formula operators and, inside ``I()``, arithmetic."""

    op: str
    left: Node
    right: Node
    pos: int  # offset of the operator itself

    def deparse(self) -> str:
        # Long left-associative chains (a + b + c + ...) are walked iteratively.
        leftmost, chain = left_spine(self)
        parts = [leftmost.deparse()]
        for link in chain:
            op = "^" if link.op == "**" else link.op
            sep = op if op in ("^", ":", "/") else f" {op} "
            parts.append(sep + link.right.deparse())
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class UnaryOp:
    """A prefix ``-``, ``+`` or ``~`` (one-sided formula)."""

    op: str
    operand: Node
    pos: int

    def deparse(self) -> str:
        return f"{self.op}{self.operand.deparse()}"


@dataclass(frozen=True, slots=True)
class Paren:
    """Parentheses, kept so that names print as written and ``(… | g)`` is recognised."""

    inner: Node
    pos: int

    def deparse(self) -> str:
        return f"({self.inner.deparse()})"


Node = Name | Number | String | Call | BinOp | UnaryOp | Paren


def walk(node: Node):
    """Yield ``node`` and every node below it (iteratively: deep formulas cannot overflow)."""
    stack: list[Node] = [node]
    while stack:
        sub = stack.pop()
        yield sub
        if isinstance(sub, BinOp):
            stack.extend((sub.left, sub.right))
        elif isinstance(sub, UnaryOp):
            stack.append(sub.operand)
        elif isinstance(sub, Paren):
            stack.append(sub.inner)
        elif isinstance(sub, Call):
            stack.extend(sub.args)
            stack.extend(v for _, v in sub.kwargs)


def walk_names(node: Node) -> list[str]:
    """Return the column names read by ``node``, distinct, in order of appearance."""
    found = [sub for sub in walk(node) if isinstance(sub, Name)]
    found.sort(key=lambda n: n.pos)
    return list(dict.fromkeys(n.name for n in found))


def left_spine(node: Node, stop: frozenset[str] = frozenset()) -> tuple[Node, list[BinOp]]:
    """Unroll a left-nested chain of binary operators without recursion.

    Returns the leftmost operand and the operators in evaluation order, so that
    ``((a + b) * c)`` gives ``(a, [+b, *c])``.  Operators in ``stop`` end the walk.
    """
    chain: list[BinOp] = []
    while isinstance(node, BinOp) and node.op not in stop:
        chain.append(node)
        node = node.left
    chain.reverse()
    return node, chain
