"""ANOVA tables of the fixed-effects terms: type I, II and III F tests.

Each term is tested with one hypothesis matrix ``L_term`` (lmerTest's definitions,
Kuznetsova, Brockhoff & Christensen 2017, JSS 82(13), sec. 4):

* type I (sequential): rows of the unit upper-triangular factor of the Doolittle
  decomposition ``X'X = L D U`` belonging to the term;
* type II (marginal, respecting hierarchy): a term contained in no other term is tested
  by its own coefficients; otherwise as type I after moving the term and the terms that
  contain it to the end of X;
* type III (SAS's contrast-invariant hypotheses, Goodnight 1980, "The Four Types of
  Estimable Functions"): the coefficients of the over-parameterised cell design
  ``rdX`` (every factor coded by all its indicators) in terms of X, orthogonalised,
  highest-order terms first, against the terms that contain them.

Containment (SAS): ``F1`` is contained in ``F2`` if every variable of ``F1`` is in
``F2``, ``F2`` has more variables, and both involve the same numeric covariates.

The type III matrices depend only on how X codes the factors, not on the data values,
when every cell indicator lies in the span of X (any full-rank model with treatment
contrasts and a hierarchical term structure). They are therefore computed on a grid
with every cell of the fixed-effect factors and random covariate values, so the fitted
result needs no copy of the data.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import DataError, refuse_generalized
from .distributions import chi2_sf, f_sf
from .kenward_roger import kenward_roger_f_test
from .satterthwaite import satterthwaite_f_test
from .wald import normalize_ddf

if TYPE_CHECKING:  # pragma: no cover
    from ..results import LinearMixedModelResult

ANOVA_COLUMNS = ["SumSq", "MeanSq", "NumDF", "DenDF", "F", "p"]

#: Largest number of rows of the synthetic cell grid used for type III contrasts.
MAX_GRID_ROWS = 500_000


@dataclass(frozen=True)
class _Term:
    label: str
    variables: tuple[str, ...]  # variable names
    numerics: frozenset[str]  # the numeric covariates among them
    columns: tuple[int, ...]  # columns of X (after dropping aliased ones)


@dataclass(frozen=True)
class _Structure:
    intercept: bool
    terms: tuple[_Term, ...]
    x_names: tuple[str, ...]


def _structure(fit: LinearMixedModelResult) -> _Structure:
    """Terms of the fixed part and the X columns of each (R's ``assign``)."""
    spec = getattr(fit.design, "spec", None)
    if spec is None or not hasattr(spec, "fixed"):
        raise DataError(
            "this fit has no formula terms (its design was built by hand); ANOVA tables "
            "need a model fitted from a formula; use linear_hypothesis() with an L matrix"
        )
    plan = spec.fixed
    kept = list(spec.kept_columns)
    position = {j: i for i, j in enumerate(kept)}
    col = 1 if plan.intercept else 0
    terms = []
    widths = getattr(plan, "term_ncols", ()) or tuple(
        _term_width(tp, spec.factors) for tp in plan.terms
    )
    for tp, width in zip(plan.terms, widths, strict=True):
        cols = tuple(position[j] for j in range(col, col + width) if j in position)
        col += width
        names = tuple(v.name for v in tp.variables)
        numerics = frozenset(v.name for v in tp.variables if v.name not in spec.factors)
        terms.append(_Term(tp.label, names, numerics, cols))
    return _Structure(bool(plan.intercept), tuple(terms), tuple(fit.design.x_names))


def _term_width(tp, factors) -> int:
    width = 1
    for var, coding in zip(tp.variables, tp.codings, strict=True):
        if coding == "numeric":
            continue
        k = factors[var.name].nlevels
        width *= k if coding == "full" else k - 1
    return width


def containment(structure: _Structure) -> dict[str, list[str]]:
    """For each term, the terms that contain it (SAS's definition; lmerTest's ``containment``)."""
    out: dict[str, list[str]] = {}
    for t1 in structure.terms:
        v1 = set(t1.variables)
        out[t1.label] = [
            t2.label
            for t2 in structure.terms
            if v1 <= set(t2.variables) and set(t2.variables) - v1 and t1.numerics == t2.numerics
        ]
    return out


def doolittle(x: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Doolittle decomposition ``x = L U`` with unit lower-triangular ``L``.

    As lmerTest's ``doolittle``: entries below ``eps`` in absolute value are set to zero
    and a pivot below ``eps`` zeroes its column of ``L``.
    """
    n = x.shape[0]
    L = np.eye(n)
    U = np.zeros((n, n))
    for i in range(n):
        U[i, :] = x[i, :] - L[i, :i] @ U[:i, :]
        for j in range(i + 1, n):
            val = x[j, i] - L[j, :i] @ U[:i, i]
            L[j, i] = 0.0 if abs(U[i, i]) < eps else val / U[i, i]
    L[np.abs(L) < eps] = 0.0
    U[np.abs(U) < eps] = 0.0
    return L, U


def zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's ``zapsmall``: round to ``digits`` significant digits relative to the largest entry."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.abs(x[np.isfinite(x)])
    mx = float(finite.max()) if finite.size else 0.0
    d = max(0, digits - int(np.ceil(np.log10(mx)))) if mx > 0 else digits
    return np.round(x, d)


def _xtx(fit: LinearMixedModelResult) -> np.ndarray:
    """``X'X`` of the model matrix, unweighted as lmerTest's ``crossprod(X)`` (from the
    blocks when the fit kept no rows: there weighted by any prior weights)."""
    if fit.model.has_rows:
        X = fit.design.X
        return X.T @ X
    p = len(fit.design.x_names)
    return np.asarray(fit.model.cross_products.xytxy[:p, :p])


def contrasts_type1(fit: LinearMixedModelResult) -> dict[str, np.ndarray]:
    """Type I (sequential) hypothesis matrices, one per term (lmerTest: get_contrasts_type1)."""
    st = _structure(fit)
    p = len(st.x_names)
    if p == 1:
        Lt = np.ones((1, 1))
    else:
        Lt = doolittle(_xtx(fit))[0].T
    return {t.label: Lt[list(t.columns), :] for t in st.terms}


def contrasts_type2(fit: LinearMixedModelResult) -> dict[str, np.ndarray]:
    """Type II hypothesis matrices (lmerTest's ``get_contrasts_type2_unfolded``)."""
    st = _structure(fit)
    p = len(st.x_names)
    if p <= 1 or len(st.terms) <= 1:
        return contrasts_type1(fit)
    contained = containment(st)
    by_label = {t.label: t for t in st.terms}
    XtX = _xtx(fit)
    out = {}
    for t in st.terms:
        if not contained[t.label]:
            out[t.label] = np.eye(p)[list(t.columns), :]
            continue
        moved = list(t.columns) + [c for lab in contained[t.label] for c in by_label[lab].columns]
        order = [c for c in range(p) if c not in set(moved)] + moved
        Lc = doolittle(XtX[np.ix_(order, order)])[0].T
        rows = [i for i, c in enumerate(order) if c in set(t.columns)]
        back = np.argsort(order)  # column of the original X -> position in `order`
        out[t.label] = Lc[rows][:, back]
    return out


def _grid_design(fit: LinearMixedModelResult, seed: int = 20240607):
    """X and the cell design rdX (with column names) on a grid of all factor cells."""
    spec = fit.design.spec
    plan = spec.fixed
    factor_names = sorted(
        {v.name for tp in plan.terms for v in tp.variables if v.name in spec.factors}
    )
    numeric_names = sorted(
        {v.name for tp in plan.terms for v in tp.variables if v.name not in spec.factors}
    )
    levels = [range(spec.factors[f].nlevels) for f in factor_names]
    ncells = int(np.prod([len(lv) for lv in levels])) if levels else 1
    reps = 2 * (len(numeric_names) + 1) + len({frozenset(tp.variables) for tp in plan.terms})
    nrows = ncells * reps
    if nrows > MAX_GRID_ROWS:
        raise DataError(
            f"type III contrasts need a grid of {ncells} factor cells, too many; use "
            "type=1 or type=2, or test the hypotheses with linear_hypothesis()"
        )
    cells = np.array(list(itertools.product(*levels)), dtype=np.int64).reshape(ncells, -1)
    codes = {f: np.repeat(cells[:, i], reps) for i, f in enumerate(factor_names)}
    rng = np.random.default_rng(seed)
    values = {v: rng.uniform(-1.0, 1.0, nrows) + 0.37 for v in numeric_names}

    def block(var, coding):
        if coding == "numeric":
            return values[var.name][:, None], [var.name]
        fl = spec.factors[var.name]
        keep = [i for i in range(fl.nlevels) if coding == "full" or i != fl.reference]
        mat = (codes[var.name][:, None] == np.asarray(keep)[None, :]).astype(np.float64)
        return mat, [var.label + fl.levels[i] for i in keep]

    def term_matrix(tp, codings):
        prod, names = None, None
        for var, coding in zip(tp.variables, codings, strict=True):
            b, nm = block(var, coding)
            if prod is None:
                prod, names = b, nm
            else:  # earlier variables vary fastest (R's column order)
                prod = (b[:, :, None] * prod[:, None, :]).reshape(nrows, -1)
                names = [f"{a}:{c}" for c in nm for a in names]
        return prod, names

    xs, rds, rd_names = [], [], []
    if plan.intercept:
        xs.append(np.ones((nrows, 1)))
        rds.append(np.ones((nrows, 1)))
        rd_names.append("(Intercept)")
    for tp in plan.terms:
        xs.append(term_matrix(tp, tp.codings)[0])
        full = tuple("numeric" if c == "numeric" else "full" for c in tp.codings)
        m, nm = term_matrix(tp, full)
        rds.append(m)
        rd_names.extend(nm)
    X = np.hstack(xs)[:, list(spec.kept_columns)]
    return X, np.hstack(rds), rd_names


def contrasts_type3(fit: LinearMixedModelResult) -> dict[str, np.ndarray]:
    """Type III hypothesis matrices (lmerTest's ``get_contrasts_type3``, treatment coding).

    Notes
    -----
    ``L = (X^+ rdX)'`` expresses every cell-design column through the coefficients; for
    each term contained in others (highest order first) its columns of ``L`` are replaced
    by their residuals on the columns of the containing terms; the rows named like X's
    columns are kept and each term's columns, transposed, are its hypothesis (zero rows
    dropped). lmerTest's ``zapsmall`` rounding is reproduced.
    """
    st = _structure(fit)
    p = len(st.x_names)
    if p <= 1 or len(st.terms) <= 1:
        return contrasts_type1(fit)
    Xg, rdX, rd_names = _grid_design(fit)
    if np.linalg.matrix_rank(Xg) < p:
        raise DataError(
            "type III contrasts could not be formed (X is rank deficient on the cell grid)"
        )
    B, *_ = np.linalg.lstsq(Xg, rdX, rcond=None)
    L = zapsmall(B.T)  # rows: cell-design columns; columns: coefficients
    contained = containment(st)
    by_label = {t.label: t for t in st.terms}
    order = sorted(range(len(st.terms)), key=lambda i: -len(st.terms[i].variables))
    for i in order:
        t = st.terms[i]
        contains = contained[t.label]
        if not contains or not t.columns:
            continue
        cols = list(t.columns)
        ccols = [c for lab in contains for c in by_label[lab].columns]
        Xc = L[:, ccols]
        coef, *_ = np.linalg.lstsq(Xc, L[:, cols], rcond=None)
        L[:, cols] = zapsmall(L[:, cols] - Xc @ coef)
    index = {}
    for j, nm in enumerate(rd_names):
        index.setdefault(nm, j)
    missing = [nm for nm in st.x_names if nm not in index]
    if missing:
        raise DataError(
            f"type III contrasts need every coefficient to be a cell-design column; "
            f"{', '.join(missing)} is not (non-standard coding?); use type=1 or type=2"
        )
    L = L[[index[nm] for nm in st.x_names], :]
    out = {}
    for t in st.terms:
        Lt = L[:, list(t.columns)].T
        out[t.label] = Lt[np.sum(np.abs(Lt), axis=1) > 1e-8]
    return out


def _f_row(fit: LinearMixedModelResult, L: np.ndarray, method: str) -> list[float]:
    nan = float("nan")
    if L.shape[0] == 0:
        return [nan] * 6
    if method == "satterthwaite":
        r = satterthwaite_f_test(fit, L)
        return [r.sum_sq, r.mean_sq, r.num_df, r.den_df, r.F, r.p]
    if method == "kenward-roger":
        k = kenward_roger_f_test(fit, L)
        ms = k.F_unscaled * fit.sigma**2
        return [ms * k.num_df, ms, k.num_df, k.den_df, k.F, k.p]
    beta = fit.estimates.beta
    V = fit.estimates.vcov_beta
    VL = L @ V @ L.T
    d, P = np.linalg.eigh(VL)
    pos = d > max(np.sqrt(np.finfo(float).eps) * d.max(), 0.0)
    q = int(pos.sum())
    z = P[:, pos].T @ (L @ beta)
    F = float(np.sum(z**2 / d[pos]) / q)
    den = float(fit.nobs - len(beta)) if method == "residual" else float("inf")
    p = float(f_sf(F, q, den)) if np.isfinite(den) else float(chi2_sf(F * q, q))
    ms = F * fit.sigma**2
    return [ms * q, ms, q, den, F, p]


def anova(
    fit: LinearMixedModelResult, *, type: int | str = 3, ddf: str = "satterthwaite"
) -> pd.DataFrame:
    """ANOVA table of the fixed-effects terms, as lmerTest's ``anova(fit, type=, ddf=)``.

    Parameters
    ----------
    fit
        A model fitted from a formula.
    type
        1 (sequential), 2 (marginal, hierarchical) or 3 (SAS type III; default).
    ddf
        ``"satterthwaite"`` (default), ``"kenward-roger"`` (REML fits), ``"residual"`` or
        ``"normal"``.

    Returns
    -------
    pandas.DataFrame
        Indexed by term; columns ``SumSq, MeanSq, NumDF, DenDF, F, p``. ``MeanSq = F
        sigma^2`` (for Kenward-Roger the unscaled F, as lmerTest), ``SumSq = MeanSq NumDF``.
        Empty for an intercept-only model.

    Notes
    -----
    Kuznetsova et al. (2017), JSS 82(13), sec. 4; the F tests are those of
    :func:`~mixedmodels.inference.wald.linear_hypothesis`.

    Examples
    --------
    >>> anova(fit, type=3, ddf="kenward-roger")   # doctest: +SKIP
    """
    refuse_generalized(
        fit,
        "the F-test ANOVA table",
        "test terms by likelihood ratio: mm.compare(fit_without_term, fit)",
    )
    method = normalize_ddf(ddf)
    kind = str(type).upper().replace("TYPE", "").strip()
    builders = {
        "1": contrasts_type1,
        "I": contrasts_type1,
        "2": contrasts_type2,
        "II": contrasts_type2,
        "3": contrasts_type3,
        "III": contrasts_type3,
    }
    if kind not in builders:
        raise ValueError(f"unknown ANOVA type {type!r}; use 1, 2 or 3")
    st = _structure(fit)
    if not st.terms:
        return pd.DataFrame(columns=ANOVA_COLUMNS, index=pd.Index([], name="term"), dtype=float)
    Ls = builders[kind](fit)
    rows = [_f_row(fit, Ls[t.label], method) for t in st.terms]
    out = pd.DataFrame(
        rows, columns=ANOVA_COLUMNS, index=pd.Index([t.label for t in st.terms], name="term")
    )
    out["NumDF"] = (
        out["NumDF"].astype("Int64") if out["NumDF"].isna().any() else out["NumDF"].astype(int)
    )
    return out
