"""A tiny interpreter for the numeric part of formulas: arithmetic on columns, with numpy.

Only the node kinds the formula layer admits are understood (names, numbers,
parentheses, ``+ - * / ^ **``, unary minus and the functions ``log exp sqrt scale
center I``); anything else is an error.  Nothing is ever passed to ``eval``.

``scale(x)`` and ``center(x)`` are stateful: their mean (and standard deviation,
``ddof=1`` as R's ``sd``) are computed on the fitting data and remembered in
``state`` under the call's canonical text, so that prediction on new data applies
the same shift and scale.  ``poly(x, k)`` is stateful too (:func:`poly_basis`): the
recurrence coefficients of R's orthogonal polynomials are remembered the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from mixedmodels.errors import DataError
from mixedmodels.formula.nodes import BinOp, Call, Name, Node, Number, Paren, UnaryOp, left_spine

Value = np.ndarray | float
#: Call text -> remembered parameters: ``(mean, sd)`` for scale()/center(),
#: ``(alpha, norm2)`` tuples for poly().
TransformState = dict[str, tuple]


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


def poly_basis(
    x: np.ndarray, degree: int, *, raw: bool, key: str, state: TransformState, fitting: bool
) -> np.ndarray:
    """Return the (n, degree) basis of R's ``poly(x, degree)`` (or raw powers).

    Parameters
    ----------
    x
        float64 (n,) values.
    degree
        Number of columns.
    raw
        ``poly(x, degree, raw = TRUE)``: the columns are ``x, x^2, ...``.
    key
        The call's text, under which the coefficients are kept in ``state``.
    state
        Remembered coefficients; filled when ``fitting``.
    fitting
        True on the fitting data, False for new data (``predict``).

    Raises
    ------
    DataError
        If ``x`` has no more distinct values than ``degree`` (R: "'degree' must be less
        than number of unique points").

    Notes
    -----
    On the fitting data R (``stats::poly``) centres x at its mean, takes the QR
    decomposition of the Vandermonde matrix ``[1, x, ..., x^degree]`` and keeps
    ``Z = Q diag(R)``: column j is x^j minus its projection on the lower powers, the
    monic orthogonal polynomial of degree j evaluated at x, whatever the signs chosen
    by the QR. With ``norm2_j = |Z_j|^2`` and ``alpha_j = <x, Z_j^2> / norm2_j + mean``,
    the basis is ``Z_j / sqrt(norm2_j)`` for j = 1..degree. R keeps
    ``coefs = list(alpha, norm2)`` (norm2 with 1 prepended) and ``predict.poly`` rebuilds
    the polynomials on new x by the three-term recurrence
    ``P_{j+1} = (x - alpha_{j+1}) P_j - (norm2_{j+2} / norm2_{j+1}) P_{j-1}``,
    ``P_0 = 1``, ``P_1 = x - alpha_1``, then divides by ``sqrt(norm2)``; so does this
    function when ``fitting`` is False.

    Examples
    --------
    R's ``poly(0:4, 2)``: the first column is ``(x - 2) / sqrt(10)``, the second
    ``((x - 2)^2 - 2) / sqrt(14)``.

    >>> z = poly_basis(np.arange(5.0), 2, raw=False, key="poly(x, 2)", state={}, fitting=True)
    >>> (np.round(z * np.sqrt([10.0, 14.0]), 12) + 0.0).tolist()
    [[-2.0, 2.0], [-1.0, -1.0], [0.0, -2.0], [1.0, -1.0], [2.0, 2.0]]
    """
    x = np.asarray(x, dtype=np.float64)
    if raw:
        return np.column_stack([x**j for j in range(1, degree + 1)])
    if fitting:
        nunique = np.unique(x).size
        if degree >= nunique:
            raise DataError(
                f"{key}: the degree must be less than the number of distinct values of its "
                f"argument ({nunique}); lower the degree"
            )
        mean = float(np.mean(x))
        centred = x - mean
        vandermonde = np.column_stack([centred**j for j in range(degree + 1)])
        q, r = np.linalg.qr(vandermonde)
        z = q * np.diagonal(r)
        norm2 = np.einsum("ij,ij->j", z, z)
        alpha = np.einsum("i,ij->j", centred, z * z) / norm2 + mean
        state[key] = (tuple(alpha[:degree].tolist()), (1.0, *norm2.tolist()))
        return z[:, 1:] / np.sqrt(norm2[1:])
    alpha_t, norm2_t = state[key]
    alpha = np.asarray(alpha_t)
    norm2 = np.asarray(norm2_t)
    p = np.empty((x.shape[0], degree + 1))
    p[:, 0] = 1.0
    p[:, 1] = x - alpha[0]
    for i in range(1, degree):
        p[:, i + 1] = (x - alpha[i]) * p[:, i] - (norm2[i + 1] / norm2[i]) * p[:, i - 1]
    return p[:, 1:] / np.sqrt(norm2[2:])
