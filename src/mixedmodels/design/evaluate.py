"""A tiny interpreter for the numeric part of formulas: arithmetic on columns, with numpy.

Only the node kinds the formula layer admits are understood (names, numbers,
parentheses, ``+ - * / ^ **``, unary minus and the functions ``log exp sqrt scale
center I``); anything else is an error.  Nothing is ever passed to ``eval``.

``scale(x)`` and ``center(x)`` are stateful: their mean (and standard deviation,
``ddof=1`` as R's ``sd``) are computed on the fitting data and remembered in
``state`` under the call's canonical text, so that prediction on new data applies
the same shift and scale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from mixedmodels.errors import DataError
from mixedmodels.formula.nodes import BinOp, Call, Name, Node, Number, Paren, UnaryOp, left_spine

Value = np.ndarray | float
TransformState = dict[str, tuple[float, float]]


_OPERATORS: dict[str, Callable[[Value, Value], Value]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "^": np.power,
    "**": np.power,
}


def evaluate_numeric(
    node: Node,
    columns: Mapping[str, np.ndarray],
    state: TransformState,
    *,
    fitting: bool,
) -> Value:
    """Evaluate a numeric formula expression on float64 column arrays.

    Parameters
    ----------
    node
        AST of a numeric expression (validated by the formula layer).
    columns
        Column name -> float64 array, all of the same length.
    state
        Remembered ``scale``/``center`` parameters; filled when ``fitting``.
    fitting
        True on the fitting data (compute and store parameters), False for new data.
    """
    if isinstance(node, Name):
        # A bare column (most variables): no arithmetic, so no floating-point state to set.
        return columns[node.name]
    with np.errstate(all="ignore"):
        return _eval(node, columns, state, fitting)


def _eval(node: Node, columns: Mapping[str, np.ndarray], state: TransformState, fitting: bool):
    if isinstance(node, Name):
        return columns[node.name]
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Paren):
        return _eval(node.inner, columns, state, fitting)
    if isinstance(node, UnaryOp) and node.op in ("-", "+"):
        value = _eval(node.operand, columns, state, fitting)
        return -value if node.op == "-" else value
    if isinstance(node, BinOp) and node.op in ("+", "-", "*", "/", "^", "**"):
        # Left-nested chains (x + x + ... ) are evaluated iteratively.
        leftmost, chain = left_spine(node)
        value = _eval(leftmost, columns, state, fitting)
        for link in chain:
            if link.op not in _OPERATORS:
                raise DataError(f"operator '{link.op}' cannot be evaluated as arithmetic")
            value = _OPERATORS[link.op](value, _eval(link.right, columns, state, fitting))
        return value
    if isinstance(node, Call) and len(node.args) == 1:
        x = _eval(node.args[0], columns, state, fitting)
        return _call(node, x, state, fitting)
    raise DataError(f"cannot evaluate {node.deparse()!r} as a number")


def _call(node: Call, x: Value, state: TransformState, fitting: bool) -> Value:
    func = node.func
    if func == "I":
        return x
    if func == "exp":
        return np.exp(x)
    if func in ("log", "sqrt"):
        arr = np.asarray(x, dtype=np.float64)
        bad = (arr <= 0) if func == "log" else (arr < 0)
        nbad = int(np.count_nonzero(bad))
        if nbad:
            what = "non-positive" if func == "log" else "negative"
            raise DataError(
                f"{node.deparse()}: {nbad} row(s) have {what} values of "
                f"{node.args[0].deparse()}; remove those rows or use a shifted "
                f"transform such as {func}(x + 1)"
            )
        return np.log(x) if func == "log" else np.sqrt(x)
    if func in ("scale", "center"):
        key = node.deparse()
        if fitting:
            arr = np.broadcast_to(np.asarray(x, dtype=np.float64), (1,)) if np.ndim(x) == 0 else x
            mean = float(np.mean(arr))
            sd = float(np.std(arr, ddof=1)) if arr.size > 1 else float("nan")
            if func == "scale" and not (sd > 0):
                raise DataError(
                    f"{key}: {node.args[0].deparse()} is constant, so it cannot be scaled; "
                    "drop it or use center()"
                )
            state[key] = (mean, sd if func == "scale" else 1.0)
        mean, sd = state[key]
        return (x - mean) / sd
    raise DataError(f"unknown function {func!r}")  # pragma: no cover - parser refuses it
