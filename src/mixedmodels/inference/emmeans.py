"""Estimated marginal means and their pairwise contrasts, as R's emmeans does for lmer fits.

The *reference grid* (Lenth 2016, JSS 69(1), sec. 2) is every combination of the levels
of the factors in the fixed part, with each numeric covariate held at its mean over the
rows used in the fit (or at a value given in ``at``). Each grid cell ``c`` has a row
``x_c`` of the model matrix and a prediction ``x_c' beta``. The marginal mean of a
combination of levels of ``specs`` (within a ``by`` group) averages the cells that share
those levels with equal weights, so it is ``l' beta`` with ``l`` the mean of their rows:

    emmean = l' beta,   SE = sqrt(l' V l),   CI = emmean -/+ t(1 - alpha/2, df) SE,

with ``V`` the covariance of beta-hat (Kenward-Roger's adjusted ``Phi_A`` for
``ddf="kenward-roger"``) and ``df`` Satterthwaite's or Kenward-Roger's for the single
contrast ``l`` (what emmeans gets from ``lmerTest::calcSatterth`` and
``pbkrtest::Lb_ddf``). Pairwise contrasts ``l_i - l_j`` (i < j, in grid order, as
emmeans' ``pairwise.emmc``) get their own SE, df and t ratio; p-values are adjusted per
``by`` group:

* ``"tukey"``: ``P(Q > sqrt(2) |t|)`` for the studentized range ``Q`` with ``k`` means
  (the family size) and each contrast's own df. Like emmeans, which calls
  ``ptukey(sqrt(2) * abs(t), k, zapsmall(df))`` with the df of every contrast of the
  table rounded together by ``zapsmall``; the df differ between contrasts under
  Satterthwaite or Kenward-Roger, so this is Tukey's distribution evaluated at each
  contrast's df rather than one joint family df.
* ``"holm"``, ``"bonferroni"``: R's ``p.adjust`` within each ``by`` group.
* ``"none"``: two-sided t p-values.

With a single contrast per group emmeans uses no adjustment, and so does this module.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import special

from ..errors import DataError, RankDeficiencyWarning
from ..tables import Report, Table
from .distributions import norm_sf, t_sf
from .kenward_roger import kenward_roger_covariance_of, kenward_roger_df
from .satterthwaite import satterthwaite_df
from .wald import normalize_ddf

if TYPE_CHECKING:  # pragma: no cover
    from ..formula import Variable
    from ..results import LinearMixedModelResult

#: p-value adjustments for pairwise contrasts (emmeans' names).
ADJUST_METHODS = ("tukey", "holm", "bonferroni", "none")

#: Significant digits R's ``zapsmall`` keeps (``getOption("digits")``), which emmeans
#: applies to the df before ``ptukey``.
_ZAPSMALL_DIGITS = 7


# ---------------------------------------------------------------------------------------
# Reference grid
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ReferenceGrid:
    """The cells at which the model is evaluated (emmeans' ``ref_grid``).

    Attributes
    ----------
    factors
        Data column -> its levels on the grid (model order; restricted by ``at``).
    covariates
        Numeric data column -> the value it is held at (its mean unless given in ``at``).
    cells
        One row per combination of factor levels, the first factor varying fastest, with
        the covariate columns; the DataFrame the model matrix is rebuilt from.
    X
        ``(cells, p)`` rows of the fixed-effects model matrix of the cells.
    """

    factors: dict[str, tuple[str, ...]]
    covariates: dict[str, float]
    cells: pd.DataFrame
    X: np.ndarray


def _factor_variables(fit: LinearMixedModelResult) -> dict[str, Variable]:
    """Fixed-part factors of the model by data column (``C(sex, ref='Male')`` -> ``sex``)."""
    spec = fit.design.spec
    out: dict[str, Variable] = {}
    for var in spec.formula.fixed.variables:
        if var.name in spec.factors:
            out.setdefault(var.columns[0], var)
    return out


def _numeric_variables(fit: LinearMixedModelResult) -> list[Variable]:
    spec = fit.design.spec
    return [v for v in spec.formula.fixed.variables if v.name not in spec.factors]


def _mean_from_design(fit: LinearMixedModelResult, column: str) -> float | None:
    """Mean of a bare numeric column that has its own column in X (None if there is none)."""
    if fit.design.X.shape[0] == 0:  # a streamed fit keeps no rows
        return None
    for var in _numeric_variables(fit):
        if var.kind == "column" and var.columns == (column,) and var.name in fit.design.x_names:
            j = list(fit.design.x_names).index(var.name)
            X = fit.design.X
            return float(np.mean(X[:, j])) if X.shape[0] else None
    return None


def _mean_from_data(fit: LinearMixedModelResult, column: str, data: pd.DataFrame) -> float:
    if column not in data.columns:
        raise DataError(f"column '{column}' is not in the data passed to emmeans")
    rows = fit.design.row_index
    try:
        values = data[column].loc[rows]
    except KeyError as exc:
        raise DataError(
            "the data passed to emmeans do not have the row labels of the data the model "
            "was fitted to; pass the same DataFrame that was given to lmer"
        ) from exc
    if len(values) != fit.nobs:
        raise DataError(
            f"the data passed to emmeans give {len(values)} rows for the {fit.nobs} used in "
            "the fit (duplicated row labels?); pass the DataFrame that was given to lmer"
        )
    return float(pd.to_numeric(values).mean())


def _scalar(column: str, value: Any) -> float:
    arr = np.atleast_1d(np.asarray(value, dtype=object))
    if arr.size != 1:
        raise DataError(
            f"at['{column}'] must be one number (a covariate is held at one value on the "
            f"grid), not {len(arr)} values"
        )
    try:
        return float(arr[0])
    except (TypeError, ValueError) as exc:
        raise DataError(f"at['{column}'] must be a number, not {arr[0]!r}") from exc


def _restricted_levels(column: str, levels: tuple[str, ...], value: Any) -> tuple[str, ...]:
    from ..design import format_level

    wanted = [value] if isinstance(value, str) or np.ndim(value) == 0 else list(value)
    labels = [format_level(v) for v in wanted]
    unknown = [lab for lab in labels if lab not in levels]
    if unknown or not labels:
        raise DataError(
            f"at['{column}'] names level(s) {unknown} that the factor does not have; "
            f"its levels are: {', '.join(levels)}"
        )
    return tuple(lev for lev in levels if lev in labels)


def reference_grid(
    fit: LinearMixedModelResult,
    *,
    at: Mapping[str, Any] | None = None,
    data: pd.DataFrame | None = None,
) -> ReferenceGrid:
    """Build the reference grid of a fit: all factor-level combinations, covariates at means.

    Parameters
    ----------
    fit
        A fitted linear mixed model.
    at
        Values to use instead of the defaults: a number for a covariate, or a level (or
        list of levels) of a factor to restrict the grid to (emmeans' ``at``).
    data
        The data the model was fitted to. Needed only when a covariate enters the model
        only through a transformation (``log(litsize)``), whose raw mean cannot be
        recovered from the model matrix; emmeans averages the raw column, then transforms.

    Returns
    -------
    ReferenceGrid

    Raises
    ------
    DataError
        For ``at`` keys that are not predictors of the model, unknown levels, or a
        covariate whose mean needs ``data``.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> grid = reference_grid(fit)
    >>> grid.cells.shape, round(grid.covariates["litsize"], 4)
    ((6, 3), 13.3292)
    """
    at = dict(at or {})
    factor_vars = _factor_variables(fit)
    numeric_columns = list(dict.fromkeys(c for v in _numeric_variables(fit) for c in v.columns))
    known = list(factor_vars) + numeric_columns
    unknown = [k for k in at if k not in known]
    if unknown:
        raise DataError(
            f"at names {unknown}, which are not predictors of the fixed part of the model; "
            f"its predictors are: {', '.join(known) or '(none)'}"
        )
    clash = [c for c in numeric_columns if c in factor_vars]
    if clash:
        raise DataError(
            f"column(s) {clash} enter the model both as a factor and as a number; the "
            "reference grid cannot hold both: make a separate column for one of the uses"
        )

    spec = fit.design.spec
    factors: dict[str, tuple[str, ...]] = {}
    for column, var in factor_vars.items():
        levels = spec.factors[var.name].levels
        factors[column] = _restricted_levels(column, levels, at[column]) if column in at else levels

    covariates: dict[str, float] = {}
    for column in numeric_columns:
        if column in at:
            covariates[column] = _scalar(column, at[column])
            continue
        value = _mean_from_design(fit, column)
        if value is None:
            if data is None:
                used = [v.name for v in _numeric_variables(fit) if column in v.columns]
                raise DataError(
                    f"the covariate '{column}' enters the model only through "
                    f"{', '.join(used)}, so its mean cannot be recovered from the model "
                    f"matrix; pass data=<the DataFrame the model was fitted to> or "
                    f"at={{'{column}': value}}"
                )
            value = _mean_from_data(fit, column, data)
        covariates[column] = value

    columns = list(factors)
    # itertools.product varies its last argument fastest; emmeans varies the first factor
    # fastest, so take the product over the reversed list and reverse each combination.
    combos = [
        tuple(reversed(c)) for c in itertools.product(*(factors[c] for c in reversed(columns)))
    ]
    cells = pd.DataFrame(combos, columns=columns, dtype=object)
    if not columns:
        cells = pd.DataFrame(index=pd.RangeIndex(1))
    for column, value in covariates.items():
        cells[column] = np.full(len(cells), value, dtype=np.float64)
    X = spec.fixed_matrix(cells)
    if not np.isfinite(X).all():
        raise DataError(
            "the model matrix of the reference grid has non-finite entries (a covariate "
            f"value outside a transformation's domain?): covariates at {covariates}"
        )
    return ReferenceGrid(factors, covariates, cells, X)


# ---------------------------------------------------------------------------------------
# Degrees of freedom and p-values
# ---------------------------------------------------------------------------------------
def _degrees_of_freedom(fit: LinearMixedModelResult, L: np.ndarray, method: str) -> np.ndarray:
    if L.shape[0] == 0:
        return np.zeros(0)
    if method == "satterthwaite":
        return satterthwaite_df(fit, L)
    if method == "kenward-roger":
        return kenward_roger_df(fit, L)
    if method == "residual":
        return np.full(L.shape[0], float(fit.nobs - len(fit.design.x_names)))
    return np.full(L.shape[0], np.inf)


def _t_quantile(prob: float, df: np.ndarray) -> np.ndarray:
    """Quantile of Student's t (the normal where df is infinite)."""
    df = np.asarray(df, dtype=np.float64)
    z = special.ndtri(prob)
    with np.errstate(invalid="ignore"):
        t = special.stdtrit(np.where(np.isfinite(df), df, 1.0), prob)
    return np.where(np.isfinite(df), t, z)


def _two_sided_p(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    finite = np.isfinite(df)
    safe_df = np.where(finite, df, 1.0)
    return np.where(finite, 2.0 * t_sf(np.abs(t), safe_df), 2.0 * norm_sf(np.abs(t)))


def zapsmall(x: np.ndarray, digits: int = _ZAPSMALL_DIGITS) -> np.ndarray:
    """Round like R's ``zapsmall``: to ``digits`` significant digits of the largest entry."""
    x = np.asarray(x, dtype=np.float64)
    finite = x[~np.isnan(x)]
    if finite.size == 0:
        return x
    mx = float(np.max(np.abs(finite)))
    if mx == 0.0:
        return np.round(x, digits)
    if math.isinf(mx):
        return np.round(x, 0)
    return np.round(x, max(0, digits - math.ceil(math.log10(mx))))


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment (R's ``p.adjust(p, "holm")``)."""
    n = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((n - np.arange(n)) * p[order]))
    out = np.empty(n)
    out[order] = adjusted
    return out


def adjust_pvalues(
    t: np.ndarray, df: np.ndarray, groups: np.ndarray, family_size: int, adjust: str
) -> tuple[np.ndarray, str]:
    """Return p-values of pairwise t ratios adjusted within each group, and the method used.

    Parameters
    ----------
    t, df
        t ratios and their degrees of freedom (``inf`` for z tests).
    groups
        Group (``by`` level combination) of each contrast; every group has the same
        number of contrasts.
    family_size
        Number of means compared in each group (Tukey's ``k``).
    adjust
        One of :data:`ADJUST_METHODS`.

    Notes
    -----
    As emmeans' ``.adj.p.value``: one contrast per group means no adjustment; Tukey's p is
    ``ptukey(sqrt(2) |t|, k, zapsmall(df), lower.tail = FALSE)`` with the df of the whole
    table rounded together; Holm and Bonferroni use ``p.adjust`` per group.
    """
    t = np.asarray(t, dtype=np.float64)
    df = np.asarray(df, dtype=np.float64)
    p = _two_sided_p(t, df)
    if t.size == 0:
        return p, "none"
    n_contrasts = int(np.max(np.bincount(groups)))
    if n_contrasts == 1:
        return p, "none"
    if adjust == "tukey":
        from scipy.stats import studentized_range  # scipy.stats is slow to import

        q = math.sqrt(2.0) * np.abs(t)
        return np.asarray(studentized_range.sf(q, family_size, zapsmall(df)), float), adjust
    if adjust == "none":
        return p, adjust
    out = np.empty_like(p)
    for g in np.unique(groups):
        rows = groups == g
        if adjust == "bonferroni":
            out[rows] = np.minimum(1.0, p[rows] * rows.sum())
        else:
            out[rows] = _holm(p[rows])
    return out, adjust


# ---------------------------------------------------------------------------------------
# Marginal means
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class MarginalMeans:
    """Estimated marginal means and pairwise contrasts (emmeans' ``emmeans`` + ``pairs``).

    Attributes
    ----------
    means
        One row per level combination of ``specs`` (first varying fastest) within each
        ``by`` group: the factor columns, then ``emmean, SE, df, lower, upper``.
    contrasts
        Pairwise differences within each ``by`` group: ``contrast`` (``"A - B"``), the
        ``by`` columns, ``estimate, SE, df, t_ratio, p_value``.
    specs, by
        The factors the means are for, and the factors that group them.
    averaged_over
        The factors averaged over with equal weights.
    covariates
        The values the numeric covariates are held at.
    ddf
        Degrees-of-freedom method; ``adjust`` is the p-value adjustment actually used
        (``"none"`` when each group has one contrast), ``level`` the confidence level.
    linfct, contrast_linfct
        The rows ``l`` (over the fixed effects) of the means and of the contrasts.
    notes
        What emmeans would print under the tables.
    """

    means: pd.DataFrame
    contrasts: pd.DataFrame
    specs: tuple[str, ...]
    by: tuple[str, ...]
    averaged_over: tuple[str, ...]
    covariates: dict[str, float]
    ddf: str
    adjust: str
    level: float
    linfct: pd.DataFrame = field(repr=False)
    contrast_linfct: pd.DataFrame = field(repr=False)
    notes: tuple[str, ...] = ()

    def summary(self) -> Report:
        """Both tables with emmeans' notes, renderable as text, Markdown or HTML."""
        means = Table(
            "Estimated marginal means:",
            self.means,
            notes=tuple(self.notes),
            show_index=False,
        )
        adjust_note = (
            f"P value adjustment: {self.adjust} method"
            + (
                f" for comparing a family of {len(self.means) // max(self._ngroups, 1)} estimates"
                if self.adjust == "tukey"
                else f" for {len(self.contrasts) // max(self._ngroups, 1)} tests"
            )
            if self.adjust != "none"
            else "P values are not adjusted for multiplicity"
        )
        contrasts = Table(
            "Pairwise contrasts:",
            self.contrasts,
            notes=(f"Degrees-of-freedom method: {self.ddf}", adjust_note),
            pvalue_columns=("p_value",),
            show_index=False,
        )
        what = " * ".join(self.specs) + (f" | {' * '.join(self.by)}" if self.by else "")
        return Report(title=f"Marginal means of {what}", tables=(means, contrasts))

    @property
    def _ngroups(self) -> int:
        return len(self.means.drop_duplicates(list(self.by))) if self.by else 1

    def __str__(self) -> str:
        return self.summary().to_text()

    def _repr_html_(self) -> str:
        return self.summary().to_html()

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types (JSON-ready; infinite or missing numbers become None)."""

        def records(df: pd.DataFrame) -> list[dict[str, Any]]:
            out = []
            for row in df.to_dict(orient="records"):
                out.append(
                    {
                        k: (
                            (float(v) if math.isfinite(v) else None)
                            if isinstance(v, float | np.floating)
                            else v
                        )
                        for k, v in row.items()
                    }
                )
            return out

        return {
            "specs": list(self.specs),
            "by": list(self.by),
            "averaged_over": list(self.averaged_over),
            "covariates": {k: float(v) for k, v in self.covariates.items()},
            "ddf": self.ddf,
            "adjust": self.adjust,
            "level": self.level,
            "means": records(self.means),
            "contrasts": records(self.contrasts),
            "notes": list(self.notes),
        }


_SPLIT = re.compile(r"[*+:]")


def _names(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [s.strip() for s in _SPLIT.split(value) if s.strip()]
    return [str(v).strip() for v in value]


def _parse_specs(
    specs: str | Sequence[str], by: str | Sequence[str] | None, known: list[str]
) -> tuple[list[str], list[str]]:
    """Accept ``"treatment"``, ``["treatment", "sex"]`` or emmeans' ``"~ treatment | sex"``."""
    if isinstance(specs, str) and specs.strip() not in known:
        text = specs.strip().removeprefix("~")
        if "|" in text:
            if by is not None:
                raise DataError(
                    f"specs {specs!r} already has a '|' part; give the grouping factors "
                    "either there or in by=, not both"
                )
            text, by_text = text.split("|", 1)
            return _names(text), _names(by_text)
        return _names(text), _names(by)
    names = [specs] if isinstance(specs, str) else _names(specs)
    return [n.strip() for n in names], _names(by)


def _resolve(
    names: list[str], factor_vars: dict[str, Variable], numeric: list[str], role: str
) -> list[str]:
    by_name = {v.name: column for column, v in factor_vars.items()}
    out = []
    for name in names:
        column = name if name in factor_vars else by_name.get(name)
        if column is None:
            factors = ", ".join(factor_vars) or "(none)"
            if name in numeric:
                raise DataError(
                    f"{role} '{name}' is a numeric covariate, not a factor; marginal means "
                    f"are over factor levels (the model's factors: {factors}); hold the "
                    f"covariate at chosen values with at={{'{name}': value}}"
                )
            raise DataError(
                f"{role} '{name}' is not a factor of the fixed part of the model; "
                f"its factors are: {factors}"
            )
        if column in out:
            raise DataError(f"factor '{name}' is named twice in {role}")
        out.append(column)
    return out


def _interaction_note(fit: LinearMixedModelResult, shown: list[str], averaged: list[str]):
    """emmeans' warning when an averaged factor interacts with a shown one."""
    for term in fit.design.spec.formula.fixed.terms:
        columns = {v.columns[0] for v in term}
        if columns & set(shown) and columns & set(averaged):
            return "NOTE: Results may be misleading due to involvement in interactions"
    return None


def _looks_numeric(label: str) -> bool:
    """Whether R's ``as.numeric`` reads the label as a number (emmeans' ``.is.num``)."""
    if "_" in label:
        return False
    try:
        return not math.isnan(float(label))
    except ValueError:
        return False


_NEEDS_PARENS = re.compile(r"-|\+|/|\*")


def _contrast_labels(means: pd.DataFrame, specs: list[str]) -> list[str]:
    """Cell names as emmeans' ``contrast`` writes them.

    Levels of a factor whose levels all look numeric get the factor's name as prefix
    (``temperature175``); several factors are joined by a space; a name containing
    ``-``, ``+``, ``/`` or ``*`` is put in parentheses (emmeans' ``enhance.levels`` and
    ``parens`` defaults).
    """
    parts = []
    for k in specs:
        values = [str(v) for v in means[k]]
        if all(_looks_numeric(v) for v in values):
            values = [f"{k}{v}" for v in values]
        parts.append(values)
    labels = [" ".join(cell) for cell in zip(*parts, strict=True)]
    return [f"({x})" if _NEEDS_PARENS.search(x) else x for x in labels]


def _cell_labels(means: pd.DataFrame, keys: list[str]) -> list[str]:
    return [" ".join(str(v) for v in row) for row in means[keys].itertuples(index=False)]


def emmeans(
    fit: LinearMixedModelResult,
    specs: str | Sequence[str],
    by: str | Sequence[str] | None = None,
    *,
    adjust: str = "tukey",
    ddf: str | None = None,
    level: float = 0.95,
    at: Mapping[str, Any] | None = None,
    data: pd.DataFrame | None = None,
    type: str = "link",
) -> MarginalMeans:
    """Compute estimated marginal means of ``specs`` within ``by`` and their pairwise contrasts.

    Parameters
    ----------
    fit
        A fitted linear mixed model.
    specs
        Factor(s) whose level means are wanted: ``"treatment"``, ``["treatment", "sex"]``
        or emmeans' formula text ``"~ treatment | sex"``.
    by
        Factor(s) within whose levels the means are computed and compared.
    adjust
        p-value adjustment of the pairwise contrasts within each ``by`` group:
        ``"tukey"`` (default, as emmeans), ``"holm"``, ``"bonferroni"`` or ``"none"``.
    ddf
        ``"satterthwaite"`` (default for linear mixed models, as emmeans with lmerTest),
        ``"kenward-roger"`` (REML fits; adjusted covariance, as pbkrtest), ``"normal"``
        (emmeans' ``"asymptotic"``: z tests; the default, and the only choice, for GLMMs)
        or ``"residual"`` (n - p).
    level
        Confidence level of the intervals for the means (not adjusted for multiplicity,
        as emmeans).
    at
        Covariate values (numbers) or factor levels to restrict the grid to.
    data
        The fitting data, needed only for a covariate that enters the model only through
        a transformation (its raw mean is taken, then transformed, as emmeans does).
    type
        GLMMs: ``"link"`` (default: means and contrasts on the linear-predictor scale, as
        emmeans) or ``"response"`` (emmeans' ``type = "response"``: means back-transformed,
        ``prob`` / ``rate`` with delta-method SEs and back-transformed intervals; contrasts
        of logit and log links also as odds ratios / ratios, ``exp(estimate)``, tested on
        the link scale). Linear mixed models have the identity link: both are the same.

    Returns
    -------
    MarginalMeans
        ``.means`` (``emmean, SE, df, lower, upper``) and ``.contrasts`` (``estimate, SE,
        df, t_ratio, p_value``).

    Raises
    ------
    DataError
        For a spec or by that is not a factor of the model (the message names those that
        are), an unknown ``adjust``, or a ``level`` outside (0, 1).

    Notes
    -----
    Reference grid and equal-weight averaging as emmeans (Lenth 2016, JSS 69(1); Searle,
    Speed & Milliken 1980, "population marginal means"): see the module docstring for the
    formulas and for how Tukey's adjustment treats contrasts with different df.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment * sex + litsize + (1 | litter)", "ratpup")
    >>> emm = emmeans(fit, "treatment", by="sex")
    >>> emm.means[["treatment", "sex", "emmean"]].round(4).head(3)
      treatment     sex  emmean
    0   Control  Female  6.2004
    1      High  Female  5.4014
    2       Low  Female  5.8172
    """
    adjust_key = str(adjust).strip().lower()
    if adjust_key not in ADJUST_METHODS:
        raise DataError(
            f"unknown p-value adjustment {adjust!r}; use one of: {', '.join(ADJUST_METHODS)}"
        )
    if not 0.0 < float(level) < 1.0:
        raise DataError(f"level must be between 0 and 1 (e.g. 0.95), not {level!r}")
    generalized = hasattr(fit, "nagq") and hasattr(fit, "family")
    scale = str(type).strip().lower()
    if scale not in ("link", "response"):
        raise DataError(f"type must be 'link' or 'response', not {type!r}")
    if generalized:
        method = "normal" if ddf is None else normalize_ddf(ddf)
        if method != "normal":
            raise DataError(
                f"ddf={ddf!r} does not apply to a generalized linear mixed model: its "
                "marginal means are tested with z statistics (emmeans' asymptotic df); "
                "leave ddf unset"
            )
    else:
        method = normalize_ddf("satterthwaite" if ddf is None else ddf)

    factor_vars = _factor_variables(fit)
    numeric = [c for v in _numeric_variables(fit) for c in v.columns]
    known = list(factor_vars) + [v.name for v in factor_vars.values()]
    spec_names, by_names = _parse_specs(specs, by, known)
    if not spec_names:
        raise DataError("specs names no factor; e.g. emmeans(fit, 'treatment')")
    spec_cols = _resolve(spec_names, factor_vars, numeric, "spec")
    by_cols = _resolve(by_names, factor_vars, numeric, "by")
    both = [c for c in spec_cols if c in by_cols]
    if both:
        raise DataError(f"{both} are in both specs and by; a factor can be in only one")
    if fit.design.dropped_columns:
        warnings.warn(
            "the fixed-effects model matrix is rank deficient (dropped: "
            f"{', '.join(fit.design.dropped_columns)}); marginal means that depend on the "
            "dropped columns are not estimable (emmeans reports them as NA) and are "
            "computed here with those coefficients set to zero",
            RankDeficiencyWarning,
            stacklevel=2,
        )

    grid = reference_grid(fit, at=at, data=data)
    keys = spec_cols + by_cols
    averaged = [c for c in grid.factors if c not in keys]

    # Index of each cell's (specs, by) combination, the first key varying fastest.
    sizes = [len(grid.factors[k]) for k in keys]
    index = np.zeros(len(grid.cells), dtype=np.int64)
    stride = 1
    for k, size in zip(keys, sizes, strict=True):
        lookup = {lev: i for i, lev in enumerate(grid.factors[k])}
        index += stride * grid.cells[k].map(lookup).to_numpy(dtype=np.int64)
        stride *= size
    nmeans = stride
    L = np.zeros((nmeans, grid.X.shape[1]))
    np.add.at(L, index, grid.X)
    L /= np.bincount(index, minlength=nmeans)[:, None]  # equal weights over the other factors

    combos = [
        tuple(reversed(c)) for c in itertools.product(*(grid.factors[k] for k in reversed(keys)))
    ]
    labels = pd.DataFrame(combos, columns=keys, dtype=object)

    if generalized:
        beta, V = fit.fixef.to_numpy(), fit.vcov.to_numpy()
    else:
        beta = fit.estimates.beta
        V = (
            kenward_roger_covariance_of(fit).vcov_beta_adjusted
            if method == "kenward-roger"
            else fit.estimates.vcov_beta
        )
    emmean = L @ beta
    se = np.sqrt(np.einsum("ij,jk,ik->i", L, V, L))
    df = _degrees_of_freedom(fit, L, method)
    half = _t_quantile(0.5 + 0.5 * float(level), df) * se
    means = labels.assign(emmean=emmean, SE=se, df=df, lower=emmean - half, upper=emmean + half)

    # Pairwise contrasts within each by group (means rows are in blocks of nspec per group).
    nspec = int(np.prod([len(grid.factors[k]) for k in spec_cols]))
    ngroups = nmeans // nspec
    cell_names = _contrast_labels(means, spec_cols)
    rows: list[tuple[int, int]] = []
    group_of: list[int] = []
    for g in range(ngroups):
        base = g * nspec
        for i in range(nspec - 1):
            for j in range(i + 1, nspec):
                rows.append((base + i, base + j))
                group_of.append(g)
    first = np.array([r[0] for r in rows], dtype=np.int64)
    second = np.array([r[1] for r in rows], dtype=np.int64)
    C = L[first] - L[second] if rows else np.zeros((0, L.shape[1]))
    estimate = C @ beta
    cse = np.sqrt(np.einsum("ij,jk,ik->i", C, V, C))
    cdf = _degrees_of_freedom(fit, C, method)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = estimate / cse
    groups = np.array(group_of, dtype=np.int64)
    p, used = adjust_pvalues(t, cdf, groups, nspec, adjust_key)
    contrasts = pd.DataFrame(
        {"contrast": [f"{cell_names[a]} - {cell_names[b]}" for a, b in rows]}, dtype=object
    )
    for k in by_cols:
        contrasts[k] = means[k].to_numpy()[first]
    contrasts = contrasts.assign(estimate=estimate, SE=cse, df=cdf, t_ratio=t, p_value=p)

    notes: list[str] = []
    if generalized:
        means, contrasts, scale_notes = _on_scale(fit, means, contrasts, scale)
        notes.extend(scale_notes)
    if averaged:
        notes.append(f"Results are averaged over the levels of: {', '.join(averaged)}")
        interaction = _interaction_note(fit, keys, averaged)
        if interaction:
            notes.append(interaction)
    if grid.covariates:
        held = ", ".join(f"{k} = {v:.6g}" for k, v in grid.covariates.items())
        notes.append(f"Covariates held at: {held}")
    notes.append(f"Degrees-of-freedom method: {method}")
    notes.append(f"Confidence level used: {float(level):g}")

    names = list(fit.design.x_names)
    mean_index = _cell_labels(means, keys)
    return MarginalMeans(
        means=means,
        contrasts=contrasts,
        specs=tuple(spec_cols),
        by=tuple(by_cols),
        averaged_over=tuple(averaged),
        covariates=dict(grid.covariates),
        ddf=method,
        adjust=used,
        level=float(level),
        linfct=pd.DataFrame(L, index=mean_index, columns=names),
        contrast_linfct=pd.DataFrame(
            C, index=list(contrasts["contrast"] + _by_suffix(contrasts, by_cols)), columns=names
        ),
        notes=tuple(notes),
    )


def _on_scale(
    fit: Any, means: pd.DataFrame, contrasts: pd.DataFrame, scale: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """A GLMM's means and contrasts on the requested scale, with emmeans' wording."""
    link = str(fit.link)
    if scale == "link":
        return means, contrasts, [f"Results are given on the {link} (not the response) scale."]
    family = str(fit.family)
    inverse = fit.family_object.link.inverse
    mu_eta = fit.family_object.link.mu_eta
    name = "prob" if family == "binomial" else "rate" if link == "log" else "response"
    eta = means["emmean"].to_numpy()
    out = means.drop(columns=["emmean", "SE", "lower", "upper"])
    out.insert(len(out.columns) - 1, name, inverse(eta))
    out.insert(len(out.columns) - 1, "SE", np.abs(mu_eta(eta)) * means["SE"].to_numpy())
    out["lower"] = inverse(means["lower"].to_numpy())
    out["upper"] = inverse(means["upper"].to_numpy())
    notes = ["Intervals are back-transformed from the " + link + " scale."]
    if link in ("logit", "log"):
        what = "odds_ratio" if link == "logit" else "ratio"
        ratio = np.exp(contrasts["estimate"].to_numpy())
        contrasts = contrasts.assign(**{what: ratio, f"{what}_SE": ratio * contrasts["SE"]})
        notes.append(
            f"Contrasts: {what.replace('_', ' ')}s exp(estimate); tests are performed on "
            f"the {link} scale."
        )
    else:
        notes.append(f"Contrasts are on the {link} scale.")
    return out, contrasts, notes


def _by_suffix(contrasts: pd.DataFrame, by_cols: list[str]) -> pd.Series:
    """``" | sex=Female"`` for each contrast (empty without ``by``), to label rows of L."""
    if not by_cols:
        return pd.Series([""] * len(contrasts), index=contrasts.index, dtype=object)
    parts = [
        ", ".join(f"{k}={v}" for k, v in zip(by_cols, row, strict=True))
        for row in contrasts[by_cols].itertuples(index=False)
    ]
    return pd.Series([f" | {x}" for x in parts], index=contrasts.index, dtype=object)
