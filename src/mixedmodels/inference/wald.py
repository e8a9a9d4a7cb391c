"""Wald t and F tests of linear hypotheses ``L beta = rhs`` about the fixed effects.

Hypotheses are given as a matrix ``L`` (with ``rhs``) or as text over coefficient names,
e.g. ``"treatmentHigh = treatmentLow"``, ``"treatmentHigh = 0, treatmentLow = 0"`` or
``"2*litsize - sexMale = 0.5"``. The text is parsed by a small recursive-descent parser
over names, numbers, ``+ - * /`` and parentheses; it is never evaluated as Python.

Denominator degrees of freedom (``ddf``):

* ``"satterthwaite"``: lmerTest's method (:mod:`.satterthwaite`), REML or ML fits;
* ``"kenward-roger"``: pbkrtest's method (:mod:`.kenward_roger`), REML fits; the
  adjusted covariance is used for the standard error and the F statistic is scaled;
* ``"residual"``: ``n - p``;
* ``"normal"``: infinite (z and chi-square tests).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import DataError, FormulaError
from .distributions import chi2_sf, f_sf, norm_sf, t_sf
from .kenward_roger import kenward_roger_covariance_of, kenward_roger_df, kenward_roger_f_test
from .satterthwaite import satterthwaite_df, satterthwaite_f_test

if TYPE_CHECKING:  # pragma: no cover
    from ..results import LinearMixedModelResult

DDF_METHODS = ("satterthwaite", "kenward-roger", "residual", "normal")
_DDF_ALIASES = {
    "satterthwaite": "satterthwaite",
    "kenward-roger": "kenward-roger",
    "kenward_roger": "kenward-roger",
    "kenwardroger": "kenward-roger",
    "kr": "kenward-roger",
    "residual": "residual",
    "normal": "normal",
    "asymptotic": "normal",
    "z": "normal",
}


def normalize_ddf(ddf: str) -> str:
    """Return the canonical name of a ddf method (case-insensitive; ``"KR"`` accepted)."""
    key = str(ddf).strip().lower()
    if key not in _DDF_ALIASES:
        raise ValueError(f"unknown ddf method {ddf!r}; use one of: {', '.join(DDF_METHODS)}")
    return _DDF_ALIASES[key]


# ---------------------------------------------------------------------------------------
# Parsing hypotheses
# ---------------------------------------------------------------------------------------
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.:]*")


class _Parser:
    """Parse ``expr (= expr)? (, ...)*`` into rows of (coefficients, constant).

    An expression is linear in the coefficients: ``a*b`` needs one side to be a number,
    ``a/b`` needs ``b`` to be a number.
    """

    def __init__(self, text: str, names: list[str]):
        self.text = text
        self.names = names
        self.index = {nm: i for i, nm in enumerate(names)}
        # Longest names first so "treatmentHigh:sexMale" wins over "treatmentHigh".
        self.by_length = sorted(names, key=len, reverse=True)
        self.pos = 0

    # -- low level ----------------------------------------------------------------------
    def error(self, message: str, pos: int | None = None) -> FormulaError:
        return FormulaError(message, self.text, self.pos if pos is None else pos)

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            found = self.peek() or "end of text"
            raise self.error(f"expected '{ch}' but found '{found}'")
        self.pos += 1

    # -- grammar ------------------------------------------------------------------------
    def hypotheses(self) -> list[tuple[np.ndarray, float, str]]:
        rows = []
        while True:
            start = self.pos
            lhs = self.expr()
            if self.peek() == "=":
                self.pos += 1
                if self.peek() == "=":  # tolerate "=="
                    self.pos += 1
                rhs = self.expr()
            else:
                rhs = (np.zeros(len(self.names)), 0.0)
            coef = lhs[0] - rhs[0]
            const = rhs[1] - lhs[1]
            rows.append((coef, const, self.text[start : self.pos].strip()))
            nxt = self.peek()
            if nxt in (",", ";", "\n"):
                self.pos += 1
                continue
            if nxt == "":
                return rows
            raise self.error(f"unexpected '{nxt}'; separate hypotheses with ','")

    def expr(self) -> tuple[np.ndarray, float]:
        coef, const = self.term()
        while self.peek() in ("+", "-"):
            sign = 1.0 if self.text[self.pos] == "+" else -1.0
            self.pos += 1
            c2, k2 = self.term()
            coef, const = coef + sign * c2, const + sign * k2
        return coef, const

    def term(self) -> tuple[np.ndarray, float]:
        coef, const = self.unary()
        while self.peek() in ("*", "/"):
            op = self.text[self.pos]
            at = self.pos
            self.pos += 1
            c2, k2 = self.unary()
            if op == "*":
                if not np.any(coef):
                    coef, const = const * c2, const * k2
                elif not np.any(c2):
                    coef, const = coef * k2, const * k2
                else:
                    raise self.error("a product of two coefficients is not a linear hypothesis", at)
            else:
                if np.any(c2):
                    raise self.error("division by a coefficient is not a linear hypothesis", at)
                if k2 == 0:
                    raise self.error("division by zero", at)
                coef, const = coef / k2, const / k2
        return coef, const

    def unary(self) -> tuple[np.ndarray, float]:
        ch = self.peek()
        if ch in ("+", "-"):
            self.pos += 1
            coef, const = self.unary()
            return (coef, const) if ch == "+" else (-coef, -const)
        return self.atom()

    def atom(self) -> tuple[np.ndarray, float]:
        self.skip()
        zero = np.zeros(len(self.names))
        text, pos = self.text, self.pos
        # Known coefficient names first: they may contain '(', ':' or spaces.
        for nm in self.by_length:
            if text.startswith(nm, pos):
                end = pos + len(nm)
                cont = end < len(text) and (text[end].isalnum() or text[end] in "_.:")
                if cont and _IDENT.match(nm[-1]):
                    continue  # a longer identifier that merely starts with this name
                self.pos = end
                out = zero.copy()
                out[self.index[nm]] = 1.0
                return out, 0.0
        if pos < len(text) and text[pos] == "`":
            end = text.find("`", pos + 1)
            if end < 0:
                raise self.error("unterminated `quoted` name")
            self.pos = end + 1
            return self.lookup(text[pos + 1 : end], pos), 0.0
        m = _NUMBER.match(text, pos)
        if m:
            self.pos = m.end()
            return zero, float(m.group())
        if pos < len(text) and text[pos] == "(":
            self.pos += 1
            val = self.expr()
            self.expect(")")
            return val
        m = _IDENT.match(text, pos)
        if m:
            self.pos = m.end()
            return self.lookup(m.group(), pos), 0.0
        found = text[pos] if pos < len(text) else "end of text"
        raise self.error(f"expected a coefficient name or a number but found '{found}'")

    def lookup(self, name: str, pos: int) -> np.ndarray:
        if name not in self.index:
            close = difflib.get_close_matches(name, self.names, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise FormulaError(
                f"unknown coefficient {name!r}{hint} (coefficients: {', '.join(self.names)})",
                self.text,
                pos,
            )
        out = np.zeros(len(self.names))
        out[self.index[name]] = 1.0
        return out


def parse_hypothesis(
    text: str, names: list[str] | tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse linear hypotheses over coefficient names into ``(L, rhs, labels)``.

    Parameters
    ----------
    text
        One or more equations separated by ``,`` (or ``;``); a side without ``=`` means
        ``= 0``. Names may be quoted with backticks.
    names
        The coefficient names, in the order of beta.

    Returns
    -------
    L : numpy.ndarray
        ``(m, p)``.
    rhs : numpy.ndarray
        ``(m,)``.
    labels : list of str
        The text of each equation.

    Raises
    ------
    FormulaError
        On a syntax error, an unknown name (with close matches suggested) or a non-linear
        expression.

    Examples
    --------
    >>> L, rhs, _ = parse_hypothesis("2*b - a = 0.5", ["a", "b"])
    >>> L.tolist(), rhs.tolist()
    ([[-1.0, 2.0]], [0.5])
    """
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the hypothesis is empty; write e.g. 'treatmentHigh = 0'")
    parser = _Parser(text, list(names))
    rows = parser.hypotheses()
    L = np.array([r[0] for r in rows])
    rhs = np.array([r[1] for r in rows])
    return L, rhs, [r[2] for r in rows]


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WaldTest:
    """The result of a Wald test of ``L beta = rhs``.

    Attributes
    ----------
    hypotheses
        Labels of the rows of ``L``.
    L, rhs
        The hypothesis.
    estimate
        ``L beta - rhs``.
    se
        Standard errors of ``L beta`` (adjusted for Kenward-Roger).
    statistic
        ``t`` for one row, ``F`` otherwise (``F = t^2`` for one row).
    num_df, den_df
        Numerator (rank of L) and denominator degrees of freedom.
    p
        Two-sided p value (t) or upper tail (F).
    ddf
        The ddf method.
    """

    hypotheses: tuple[str, ...]
    L: np.ndarray
    rhs: np.ndarray
    estimate: np.ndarray
    se: np.ndarray
    t: float | None
    F: float
    num_df: int
    den_df: float
    p: float
    ddf: str

    @property
    def statistic(self) -> float:
        return self.t if self.t is not None else self.F

    def to_frame(self) -> pd.DataFrame:
        """One row: ``F, NumDF, DenDF, p`` (and ``estimate, se, t`` for one-row hypotheses)."""
        row: dict[str, float] = {}
        if self.t is not None:
            row.update(estimate=float(self.estimate[0]), se=float(self.se[0]), t=self.t)
        row.update(F=self.F, NumDF=self.num_df, DenDF=self.den_df, p=self.p)
        return pd.DataFrame([row], index=[", ".join(self.hypotheses)])


def _as_hypothesis(fit: LinearMixedModelResult, hypothesis, rhs):
    names = list(fit.design.x_names)
    p = len(names)
    if isinstance(hypothesis, str):
        if rhs is not None:
            raise ValueError("give the right-hand side inside the hypothesis text, not as rhs=")
        L, r, labels = parse_hypothesis(hypothesis, names)
    else:
        L = np.atleast_2d(np.asarray(hypothesis, dtype=np.float64))
        if L.ndim != 2 or L.shape[1] != p:
            raise DataError(
                f"L must have {p} columns (one per fixed effect: {', '.join(names)}); got shape "
                f"{np.shape(hypothesis)}"
            )
        r = np.zeros(L.shape[0]) if rhs is None else np.asarray(rhs, dtype=np.float64).ravel()
        if r.size == 1 and L.shape[0] > 1:
            r = np.full(L.shape[0], float(r[0]))
        if r.size != L.shape[0]:
            raise DataError(f"rhs has {r.size} values but L has {L.shape[0]} rows")
        labels = [_row_label(row, names, v) for row, v in zip(L, r, strict=True)]
    if not np.all(np.isfinite(L)) or not np.all(np.isfinite(r)):
        raise DataError("the hypothesis contains non-finite values")
    zero = [lab for row, lab in zip(L, labels, strict=True) if not np.any(row)]
    if zero:
        raise DataError(
            f"hypothesis {zero[0]!r} involves no coefficient (its coefficients cancel); remove it"
        )
    rank = np.linalg.matrix_rank(L)
    if rank < L.shape[0]:
        raise DataError(
            f"the {L.shape[0]} hypotheses are linearly dependent (rank {rank}): the "
            "hypothesis matrix is singular; drop the redundant equations"
        )
    return L, r, labels


def _row_label(row: np.ndarray, names: list[str], rhs: float) -> str:
    parts = []
    for c, nm in zip(row, names, strict=True):
        if c == 0:
            continue
        mag = abs(c)
        term = nm if mag == 1 else f"{mag:g}*{nm}"
        sign = "-" if c < 0 else "+"
        parts.append((sign, term))
    if not parts:
        return f"0 = {rhs:g}"
    text = ("-" if parts[0][0] == "-" else "") + parts[0][1]
    for sign, term in parts[1:]:
        text += f" {sign} {term}"
    return f"{text} = {rhs:g}"


def _residual_df(fit: LinearMixedModelResult) -> float:
    return float(fit.nobs - len(fit.design.x_names))


def linear_hypothesis(
    fit: LinearMixedModelResult,
    hypothesis: str | np.ndarray,
    rhs: np.ndarray | float | None = None,
    *,
    ddf: str = "satterthwaite",
) -> WaldTest:
    """Test linear hypotheses about the fixed effects.

    Parameters
    ----------
    fit
        A fitted linear mixed model.
    hypothesis
        Text such as ``"treatmentHigh = treatmentLow"`` or ``"a = 0, b = 0"``, or a
        ``(m, p)`` (or ``(p,)``) matrix ``L``.
    rhs
        Right-hand side for a matrix hypothesis (default 0).
    ddf
        ``"satterthwaite"`` (default), ``"kenward-roger"``, ``"residual"`` or ``"normal"``.

    Returns
    -------
    WaldTest
        A t test for one equation, an F test otherwise.

    Raises
    ------
    FormulaError
        If the text cannot be parsed or names an unknown coefficient.
    DataError
        If the hypotheses are linearly dependent or L has the wrong shape.

    Notes
    -----
    One row: ``t = (l'b - r) / se`` with ``se^2 = l' V l`` (``l' Phi_A l`` for
    Kenward-Roger). Several rows: ``F = (Lb - r)' (L V L')^{-1} (Lb - r) / q``, with
    Satterthwaite's ddf from the eigen-decomposition of ``L V L'`` (Fai & Cornelius 1996;
    Kuznetsova et al. 2017, JSS 82(13)) or Kenward-Roger's scaled F and ddf (Kenward &
    Roger 1997).

    Examples
    --------
    >>> linear_hypothesis(fit, "treatmentHigh = treatmentLow")   # doctest: +SKIP
    """
    method = normalize_ddf(ddf)
    L, r, labels = _as_hypothesis(fit, hypothesis, rhs)
    beta = fit.estimates.beta
    V = fit.estimates.vcov_beta
    est = L @ beta - r
    q = L.shape[0]
    if method == "kenward-roger":
        Vuse = kenward_roger_covariance_of(fit).vcov_beta_adjusted
    else:
        Vuse = V
    se = np.sqrt(np.einsum("ma,ab,mb->m", L, Vuse, L))
    if q == 1:
        if method == "satterthwaite":
            df = float(satterthwaite_df(fit, L)[0])
        elif method == "kenward-roger":
            df = float(kenward_roger_df(fit, L)[0])
        elif method == "residual":
            df = _residual_df(fit)
        else:
            df = float("inf")
        t = float(est[0] / se[0])
        p = float(2.0 * t_sf(abs(t), df)) if np.isfinite(df) else float(2.0 * norm_sf(abs(t)))
        return WaldTest(tuple(labels), L, r, est, se, t, t * t, 1, df, p, method)
    if method == "satterthwaite":
        res = satterthwaite_f_test(fit, L, r)
        F, num, den, p = res.F, res.num_df, res.den_df, res.p
    elif method == "kenward-roger":
        kr = kenward_roger_f_test(fit, L, r)
        F, num, den, p = kr.F, kr.num_df, kr.den_df, kr.p
    else:
        F = float(est @ np.linalg.solve(L @ V @ L.T, est) / q)
        num = q
        den = _residual_df(fit) if method == "residual" else float("inf")
        p = float(f_sf(F, q, den)) if np.isfinite(den) else float(chi2_sf(F * q, q))
    return WaldTest(tuple(labels), L, r, est, se, None, F, num, den, p, method)


def coef_table(fit: LinearMixedModelResult, *, ddf: str = "satterthwaite") -> pd.DataFrame:
    """Fixed-effects table ``estimate, se, df, t, p`` with the chosen ddf method.

    As lmerTest's ``summary(fit, ddf=...)``: Kenward-Roger uses the adjusted standard
    errors; ``"normal"`` gives z tests (df infinite).

    Examples
    --------
    >>> coef_table(fit, ddf="kenward-roger")   # doctest: +SKIP
    """
    method = normalize_ddf(ddf)
    names = list(fit.design.x_names)
    beta = fit.estimates.beta
    p = len(names)
    eye = np.eye(p)
    if method == "kenward-roger":
        se = np.sqrt(np.diag(kenward_roger_covariance_of(fit).vcov_beta_adjusted))
        df = kenward_roger_df(fit, eye) if p else np.zeros(0)
    else:
        se = np.sqrt(np.diag(fit.estimates.vcov_beta))
        if method == "satterthwaite":
            df = satterthwaite_df(fit, eye) if p else np.zeros(0)
        elif method == "residual":
            df = np.full(p, _residual_df(fit))
        else:
            df = np.full(p, np.inf)
    t = beta / se
    pv = np.where(np.isfinite(df), 2.0 * t_sf(np.abs(t), df), 2.0 * norm_sf(np.abs(t)))
    return pd.DataFrame({"estimate": beta, "se": se, "df": df, "t": t, "p": pv}, index=names)
