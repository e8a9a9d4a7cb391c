"""Build the numeric design (y, X, random-effects terms) from a formula and a DataFrame.

R conventions reproduced here (``model.frame``/``model.matrix`` and lme4's ``mkReTrms``):

* rows with a missing value in any used column are dropped (``na.omit``);
* treatment contrasts; for each factor in a term, contrasts are used when the
  term without that factor is contained in an earlier term (the intercept counts
  as the empty term), otherwise full indicator coding; with no intercept the first
  factor of the first term containing a factor is coded by indicators (R's
  ``model.c``);
* interaction columns: the first variable of the term varies fastest;
* column names: ``(Intercept)``, ``litsize``, ``treatmentHigh``,
  ``treatmentHigh:sexMale``; a factor level column is the variable's label followed
  by the level, where the label of ``C(column, ...)`` is the bare column name
  (``C(sex, Treatment('Male'))`` gives ``sexFemale``);
* a rank-deficient X loses its later columns (pivoted QR, tolerance 1e-7), with a
  :class:`~mixedmodels.errors.RankDeficiencyWarning`, like lme4.

Random-effects terms written with ``||`` are split into one term per model-matrix
column.  This deliberately differs from lme4 for factors: lme4 turns
``(1 + sex || litter)`` into ``(1 | litter) + (0 + sex | litter)``, a correlated
model in disguise, whereas here it is ``(1 | litter) + (0 + sexMale | litter)``
(independent variances for the contrast columns, as MixedModels.jl's ``zerocorr``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np
import pandas as pd
from scipy.linalg.lapack import dpotrf as _dpotrf

from mixedmodels.errors import DataError, ModelSpecificationError, RankDeficiencyWarning
from mixedmodels.formula import FixedPart, ModelFormula, RandomTerm, Variable, parse_formula
from mixedmodels.formula.nodes import Name, Node, walk_names

from .evaluate import TransformState, evaluate_numeric, poly_basis
from .factors import (
    _SHORT_COUNTS,
    _SMALL_STRINGS,
    FactorLevels,
    _factorize_sorted_fast,
    _forget_oldest,
    column_array,
    factor_levels,
    factorize_sorted,
    fit_factor,
    is_factor_dtype,
    is_numeric_dtype,
)
from .model_design import ModelDesign, RandomEffectsTerm, hold_read_only

#: Relative tolerance of the rank check (lme4's ``chkRank.drop.cols`` uses 1e-7).
RANK_TOLERANCE = 1e-7

Coding = Literal["numeric", "contrast", "full"]


# ---------------------------------------------------------------------------------------------
# Plans: what to build, remembered for prediction
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TermPlan:
    """How one term becomes columns: each variable's coding, in the term's order."""

    label: str
    variables: tuple[Variable, ...]
    codings: tuple[Coding, ...]


@dataclass(frozen=True)
class MatrixPlan:
    """A model matrix: optional intercept column, then the columns of each term.

    ``term_ncols[i]`` is the number of columns of ``terms[i]`` (R's ``assign``): a
    factor's contrast columns, a ``poly(x, k)`` term's k columns, their products.
    """

    intercept: bool
    terms: tuple[TermPlan, ...]
    column_names: tuple[str, ...]
    term_ncols: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False)
class GroupingPlan:
    """A grouping factor: one column or an interaction of columns, with its levels."""

    name: str
    components: tuple[FactorLevels, ...]
    levels: tuple[str, ...]
    present: np.ndarray | None = field(default=None, repr=False)  # sorted linear codes

    def __post_init__(self) -> None:
        hold_read_only(self, "present")


@dataclass(frozen=True)
class RandomPlan:
    """One random-effects term of the design: columns of its LHS matrix and its grouping."""

    matrix: MatrixPlan
    columns: tuple[int, ...]
    grouping: GroupingPlan


@dataclass(frozen=True, eq=False)
class DesignSpec:
    """Everything needed to rebuild the design's columns on new data (for ``predict``).

    Levels, reference levels, contrasts and ``scale()``/``center()`` parameters are
    those of the fitting data. ``response_levels`` are the two levels of a binomial
    response given as a factor (the second counts as success), else None.
    """

    formula: ModelFormula
    factors: dict[str, FactorLevels]
    transform_state: TransformState
    fixed: MatrixPlan
    kept_columns: tuple[int, ...]
    random: tuple[RandomPlan, ...]
    weights_column: str | None = None
    #: A binomial response given as a two-level factor: its levels (failure, success).
    response_levels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Read-only views (no copy): a result hands its design out, and predict() and the
        # inference code read these (issue 13, item 6).
        for name in ("factors", "transform_state"):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, MappingProxyType(value))

    def __reduce__(self):
        # A mapping proxy cannot be pickled: pickle the fields with plain dicts, and
        # __post_init__ wraps them again on loading (results, and the models they hold,
        # go through pickle in joblib/multiprocessing and when saved).
        fields = [getattr(self, f.name) for f in dataclasses.fields(self)]
        plain = [dict(v) if isinstance(v, MappingProxyType) else v for v in fields]
        return (type(self), tuple(plain))

    @property
    def x_names(self) -> tuple[str, ...]:
        names = self.fixed.column_names
        if len(self.kept_columns) == len(names):  # every column kept (kept is increasing)
            return names
        return tuple(names[j] for j in self.kept_columns)

    def offset_values(self, newdata: pd.DataFrame) -> np.ndarray | None:
        """Return the summed ``offset(...)`` terms for ``newdata``, or None without offsets.

        The offsets are evaluated as in fitting (``scale()`` inside an offset uses the
        fitted mean and sd); a row with a missing input gives NaN, as
        :meth:`fixed_matrix` does. lme4's ``predict`` adds this vector to ``X beta``.

        Raises
        ------
        DataError
            If a column an offset reads is absent.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"y": [1.0, 2, 4, 3, 5, 7], "n": [1.0, 2, 4, 1, 2, 4],
        ...                    "g": list("aabbcc")})
        >>> spec = build_design("y ~ 1 + offset(log(n)) + (1 | g)", df).spec
        >>> spec.offset_values(pd.DataFrame({"n": [1.0, 10.0]})).round(4).tolist()
        [0.0, 2.3026]
        """
        if not self.formula.offsets:
            return None
        frame = _Frame(newdata, self.formula, fitting=False)
        frame.require(_columns_of(list(self.formula.offsets)))
        return _offset_sum(self.formula.offsets, frame, dict(self.transform_state), fitting=False)

    def fixed_matrix(self, newdata: pd.DataFrame) -> np.ndarray:
        """Return X for ``newdata`` with the fitted design's columns (NaN rows where missing).

        Raises
        ------
        DataError
            If a needed column is absent or a factor has a level unseen in fitting.
        """
        frame = _Frame(newdata, self.formula, fitting=False)
        columns = [v for t in self.fixed.terms for v in t.variables]
        frame.require(_columns_of(columns))
        X = _model_matrix(self.fixed, frame, self.factors, self.transform_state)
        return np.ascontiguousarray(X[:, list(self.kept_columns)])

    def random_effects_rows(self, newdata: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return, per random-effects term (fitted order), ``(refs, z)`` for ``newdata``.

        ``refs`` is int64 with -1 where the grouping level was not seen in fitting
        (or is missing); ``z`` is float64 (n, ncols).
        """
        frame = _Frame(newdata, self.formula, fitting=False)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        cache: dict[int, np.ndarray] = {}
        for plan in self.random:
            variables = [v for t in plan.matrix.terms for v in t.variables]
            frame.require(_columns_of(variables) + [c.column for c in plan.grouping.components])
            key = id(plan.matrix)
            if key not in cache:
                cache[key] = _model_matrix(plan.matrix, frame, self.factors, self.transform_state)
            z = np.ascontiguousarray(cache[key][:, list(plan.columns)])
            out.append((_grouping_refs_new(plan.grouping, frame), z))
        return out


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------
def build_design(
    formula: str | ModelFormula,
    data: pd.DataFrame,
    weights: str | np.ndarray | pd.Series | list[float] | None = None,
    *,
    binomial_response: bool = False,
    observation_level_terms: bool = False,
) -> ModelDesign:
    """Build y, X, the random-effects terms, the offset and the weights of a mixed model.

    Parameters
    ----------
    formula
        An lme4-style formula (text or parsed), e.g.
        ``"weight ~ treatment * sex + litsize + (1 | litter)"``; ``offset(expr)`` terms
        are summed into ``design.offset`` (lme4: added to the linear predictor with
        coefficient 1), never columns of X.
    data
        One row per observation; every column the formula uses must be present.
    weights
        Prior weights (lme4's ``weights``: the residual variance of row i is
        ``sigma^2 / w_i``): the name of a numeric column of ``data``, or one number per
        row of ``data``. A row whose weight is missing (NaN, None) is dropped like a row
        with a missing value in the formula, and counted in ``n_dropped_rows`` (R's
        ``na.action = na.omit``). Weights must be finite and non-negative; single zero
        weights are allowed (such rows carry no information, as in lme4), but not a
        zero sum.
    binomial_response
        Read the response as lme4's ``glmer(family = binomial)`` does:
        ``cbind(successes, failures)`` gives ``y = successes / trials`` (0
        where ``trials`` is 0) and ``design.trials = successes + failures``, both
        counts whole numbers >= 0; a column of strings, booleans or categories with
        two levels gives 0 for the first level and 1 for the second (levels sorted as
        for factors: ``False``/``True``, ``'N'``/``'Y'``; R: the second level is a
        success); numbers (0/1, or proportions with weights = trials) are taken as
        they are, for the family to check. False (every LMM): a ``cbind`` response
        is a :class:`ModelSpecificationError`, a factor response a ``DataError``.
    observation_level_terms
        Apply ``glmer``'s checks instead of ``lmer``'s (lme4's ``allow.n = TRUE``): a
        grouping factor may have one level per row (a GLMM's observation-level random
        effect for overdispersion, e.g. ``(1 | INDEX)``) and a term as many random
        effects as rows, not more. A linear mixed model cannot tell such a term from the
        residual, so by default it is refused. Pass it for every GLMM family;
        ``binomial_response`` in addition for the binomial.

    Returns
    -------
    ModelDesign
        ``spec`` rebuilds the same columns (and, by ``spec.offset_values``, the offset)
        for new data; ``weights`` and ``offset`` are aligned with ``y``; ``trials`` is
        set for a ``cbind`` response.

    Raises
    ------
    FormulaError
        If the formula cannot be parsed.
    DataError
        For unknown columns, non-numeric responses, infinite values, unknown reference
        levels, unusable grouping factors, unusable weights (unknown column, wrong
        length, negative, infinite, zero sum), or when no complete rows remain; for a
        binomial response, counts that are negative or not whole numbers, a factor
        response without exactly two levels, or a response that never varies.
    ModelSpecificationError
        If a random-effects term has at least as many random effects as observations
        (more, with ``observation_level_terms``), or for a ``cbind`` response without
        ``binomial_response``.

    Warns
    -----
    RankDeficiencyWarning
        When columns of X are dropped because X is rank deficient.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"y": [1.0, 2, 3, 4, 5, 7], "x": [1.0, 2, 3, 4, 5, 6],
    ...                    "g": list("aabbcc")})
    >>> d = build_design("y ~ x + (1 | g)", df)
    >>> d.x_names, d.re_terms[0].levels
    (('(Intercept)', 'x'), ('a', 'b', 'c'))

    Binomial counts (lme4's ``cbpp`` model):

    >>> counts = pd.DataFrame({"s": [2, 3, 0, 1, 4, 1], "n": [5, 6, 4, 4, 8, 3],
    ...                        "g": list("aabbcc")})
    >>> b = build_design("cbind(s, n - s) ~ 1 + (1 | g)", counts, binomial_response=True)
    >>> b.y.tolist()[:3], b.trials.tolist()[:3]
    ([0.4, 0.5, 0.0], [5.0, 6.0, 4.0])
    """
    parsed = parse_formula(formula) if isinstance(formula, str) else formula
    if not isinstance(parsed, ModelFormula):
        raise TypeError("formula must be a string or a ModelFormula")
    if parsed.response is None:
        raise DataError(
            "the formula has no response; write 'response ~ predictors', e.g. 'y ~ x + (1 | g)'"
        )
    if not binomial_response:
        refuse_binomial_counts(parsed)
    frame = _Frame(data, parsed, fitting=True)
    n_total = frame.nrows
    columns = list(parsed.columns_used())
    frame.require(columns)
    all_weights = _weights_values(weights, frame)
    drop = frame.incomplete_rows(columns, None if all_weights is None else np.isnan(all_weights))
    if drop is not None:
        keep = ~drop
        frame = frame.subset(keep)
        if all_weights is not None:
            all_weights = all_weights[keep]
    n = frame.nrows
    prior_weights = None
    if all_weights is not None:
        prior_weights = _check_weights(all_weights, weights)

    state: TransformState = {}
    if binomial_response:
        y, trials, response_levels = _binomial_response(parsed.response, frame, state)
    else:
        y, trials, response_levels = _response(parsed.response, frame, state), None, None
    offset = _offset_sum(parsed.offsets, frame, state, fitting=True)

    fixed_vars = list(parsed.fixed.variables)
    random_vars = [v for rt in parsed.random for v in rt.lhs.variables]
    factors = _fit_factors(fixed_vars + random_vars, frame)
    _check_numeric_inputs(fixed_vars + random_vars, frame, factors)

    fixed_plan = _plan(parsed.fixed, factors)
    X_full = _model_matrix(fixed_plan, frame, factors, state, fitting=True)
    # Made here, held by no one else: read-only in place, so that ModelDesign need not
    # hold a read-only view of it (a view and its flags cost ~2 us; so for z below).
    X_full.setflags(write=False)
    if fixed_plan.intercept and len(fixed_plan.column_names) == 1:
        kept = (0,)  # X is the intercept alone: a column of ones (n >= 1 rows), kept
    else:
        kept = _independent_columns(X_full)
    dropped: tuple[str, ...] = ()
    if len(kept) < X_full.shape[1]:
        kept_set = set(kept)
        dropped = tuple(c for j, c in enumerate(fixed_plan.column_names) if j not in kept_set)
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}",
            RankDeficiencyWarning,
            stacklevel=2,
        )
    # Every column kept (the usual full-rank X): X_full itself, not a copy of it.
    X = X_full if len(kept) == X_full.shape[1] else np.ascontiguousarray(X_full[:, list(kept)])

    re_terms: list[RandomEffectsTerm] = []
    random_plans: list[RandomPlan] = []
    # Terms with the same left-hand side ((1 | a) + (1 | a:b)) share one model matrix.
    z_by_plan: dict[MatrixPlan, np.ndarray] = {}
    for rt in parsed.random:
        plan = _plan(rt.lhs, factors)
        z_full = z_by_plan.get(plan)
        fresh = z_full is None  # no other term holds this matrix yet
        if z_full is None:
            z_full = z_by_plan[plan] = _model_matrix(plan, frame, factors, state, fitting=True)
            z_full.setflags(write=False)
        grouping, refs = _fit_grouping(rt.grouping, frame)
        _check_grouping(grouping, n, plan, rt, allow_n=observation_level_terms)
        blocks = [tuple(range(z_full.shape[1]))]
        if not rt.correlated:
            blocks = [(j,) for j in range(z_full.shape[1])]
        for cols in blocks:
            re_terms.append(
                RandomEffectsTerm(
                    group=grouping.name,
                    levels=grouping.levels,
                    refs=refs,
                    # The whole matrix for a correlated term, no copy, unless another
                    # term holds it already (each term owns its matrix).
                    z=(
                        z_full
                        if fresh and len(cols) == z_full.shape[1]
                        else np.ascontiguousarray(z_full[:, list(cols)])
                    ),
                    column_names=(
                        plan.column_names
                        if len(cols) == len(plan.column_names)
                        else tuple(plan.column_names[j] for j in cols)
                    ),
                )
            )
            random_plans.append(RandomPlan(plan, cols, grouping))

    spec = DesignSpec(
        parsed,
        factors,
        state,
        fixed_plan,
        kept,
        tuple(random_plans),
        weights if isinstance(weights, str) else None,
        response_levels,
    )
    return ModelDesign(
        y=y,
        X=X,
        x_names=spec.x_names,
        re_terms=tuple(re_terms),
        response_name=parsed.response.name,
        dropped_columns=dropped,
        n_dropped_rows=n_total - n,
        row_index=frame.data.index,
        spec=spec,
        offset=offset,
        weights=prior_weights,
        trials=trials,
    )


def refuse_binomial_counts(formula: ModelFormula) -> None:
    """Refuse a ``cbind(successes, failures)`` response where a linear mixed model is built.

    Raises
    ------
    ModelSpecificationError
        If the response is ``cbind(...)``: binomial counts need a GLMM.
    """
    if formula.binomial_counts:
        raise ModelSpecificationError(
            "cbind(...) responses are binomial counts: fit them with "
            "mm.glmer(formula, data, family='binomial')"
        )


# ---------------------------------------------------------------------------------------------
# Data access and validation
# ---------------------------------------------------------------------------------------------
class _Frame:
    """The data restricted to the rows in use, with cached float64 columns."""

    def __init__(self, data: pd.DataFrame, formula: ModelFormula, *, fitting: bool):
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
        if not data.columns.is_unique:
            dup = data.columns[data.columns.duplicated()].tolist()
            raise DataError(f"the data have duplicated column names {dup}; rename them")
        self.data = data
        self.nrows = len(data)  # asked for often; len(DataFrame) is two Python calls
        self.formula = formula
        self.fitting = fitting
        # pandas builds a new Series on every ``data[column]`` (~10 us each, ~0.2 ms for
        # the first after a gc.collect()); the design reads each column's array once
        # (values()) and builds a Series only where a general pandas path needs one.
        self._values: dict[str, np.ndarray | pd.api.extensions.ExtensionArray] = {}
        self._positions: dict[str, object] = {}  # column -> Index.get_loc, by require()
        self._series: dict[str, pd.Series] = {}
        self._floats: dict[str, np.ndarray] = {}
        # Float columns whose sum is finite (so no NaN and no infinity: see _missing), read
        # by incomplete_rows(): floats() need not look for infinities in them again.
        self._finite: set[str] = set()
        # (smallest, largest) value of those float columns, in the rows of this frame: the
        # response's constancy check reads them instead of two more reductions.
        self._ranges: dict[str, tuple[float, float]] = {}
        self.codes: dict[str, np.ndarray] = {}  # level indices of factors found in fitting
        self._factorized: dict[str, tuple[np.ndarray, list[str]]] = {}  # see factor()
        # Levels and codes of grouping columns: (1 | a) + (1 | a:b) uses column a twice.
        self.grouping_levels: dict[str, tuple[FactorLevels, np.ndarray]] = {}

    def require(self, columns: list[str]) -> None:
        get_loc = self.data.columns.get_loc
        for col in columns:
            try:
                # The position, kept for values(): one lookup instead of `in`, then get_loc.
                self._positions[col] = get_loc(col)
                continue
            except (KeyError, TypeError):
                pass
            if col not in self.data.columns:
                available = [str(c) for c in self.data.columns]
                close = difflib.get_close_matches(col, available, n=3)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                if not close:
                    hint = _available_hint(col, available)
                pos = _column_position(self.formula.text, col)
                where = f" (formula position {pos})" if pos >= 0 and self.fitting else ""
                raise DataError(
                    f"column '{col}' used in the formula{where} is not in the data{hint}"
                )

    def complete_rows(
        self, columns: list[str], also_missing: np.ndarray | None = None
    ) -> np.ndarray:
        """Mask of the rows without a missing value in ``columns`` (nor ``also_missing``).

        Raises
        ------
        DataError
            When no row is complete.
        """
        drop = self.incomplete_rows(columns, also_missing)
        return np.ones(self.nrows, dtype=bool) if drop is None else ~drop

    def incomplete_rows(
        self, columns: list[str], also_missing: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Mask of the rows to drop (:meth:`complete_rows`), or None when every row is
        complete: then there is no mask to build, negate or apply (the usual small data).

        Raises
        ------
        DataError
            When no row is complete.
        """
        # Column by column: selecting a sub-DataFrame copies it, which costs more than a
        # whole small-model fit's deviance evaluations. values() inlined: the first read of
        # every column happens here, and its layers cost ~0.5 us a column.
        known, positions = self._values, self._positions
        getter = getattr(self.data, "_get_column_array", None)
        na: dict[str, np.ndarray | None] = {}
        for c in columns:
            values = known.get(c)
            if values is None:
                position = positions.get(c)
                if getter is not None and type(position) is int:
                    values = getter(position)
                else:
                    values = _column_values(self.data, c, position)
                known[c] = values
            na[c] = _missing(values, c, self._finite, self._ranges)
        drop: np.ndarray | None = None
        for missing in na.values():
            if missing is not None:
                drop = missing if drop is None else drop | missing
        if also_missing is not None:  # missing prior weights
            drop = also_missing if drop is None else drop | also_missing
            if np.logical_and.reduce(drop) and bool(np.logical_and.reduce(also_missing)):
                raise DataError("no complete rows: the weights are missing in all rows")
        n = self.nrows
        if n == 0 or (drop is not None and np.logical_and.reduce(drop)):
            all_missing = [
                c for c in columns if na[c] is not None and bool(np.logical_and.reduce(na[c]))
            ]
            if n == 0:
                raise DataError("no complete rows: the data have no rows")
            if all_missing:
                raise DataError(
                    f"no complete rows: column '{all_missing[0]}' is missing in all rows"
                )
            raise DataError(
                "no complete rows: every row has a missing value in at least one of the "
                f"columns {', '.join(columns)}; fill in or drop some of them"
            )
        if drop is not None and not np.logical_or.reduce(drop):
            return None
        return drop

    def subset(self, keep: np.ndarray) -> _Frame:
        sub = _Frame.__new__(_Frame)
        sub.data = self.data.loc[keep] if not np.logical_and.reduce(keep) else self.data
        sub.nrows = len(sub.data)
        sub.formula = self.formula
        sub.fitting = self.fitting
        same = sub.data is self.data
        sub._values = self._values if same else {}
        sub._positions = self._positions  # a row subset keeps the columns' positions
        sub._series = self._series if same else {}
        sub._floats = {}
        sub._finite = self._finite  # the rows kept of a finite column are finite
        sub._ranges = self._ranges if same else {}  # other rows: other ranges
        sub._factorized = {}
        sub.codes = {}
        sub.grouping_levels = {}
        return sub

    def series(self, column: str) -> pd.Series:
        series = self._series.get(column)
        if series is None:
            series = self._series[column] = self.data[column]
        return series

    def values(self, column: str) -> np.ndarray | pd.api.extensions.ExtensionArray:
        """The column's array (:func:`_column_values`), read once; never written to."""
        values = self._values.get(column)
        if values is None:
            values = self._values[column] = _column_values(
                self.data, column, self._positions.get(column)
            )
        return values

    def floats(self, column: str, used_in: str) -> np.ndarray:
        arr = self._floats.get(column)
        if arr is None:
            values = self.values(column)
            if not is_numeric_dtype(values):
                raise DataError(
                    f"column '{column}' is not numeric (dtype {values.dtype}) but is used in "
                    f"the numeric expression {used_in}; convert it or use it as a factor"
                )
            if isinstance(values, np.ndarray):
                # NumPy-backed numbers hold no missing value other than NaN, so na_value
                # has nothing to do; pandas' na_value path costs ~30 us more. A copy, as
                # there: the design must not share memory with the caller's DataFrame.
                arr = np.array(values, dtype=np.float64)
            else:
                arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
            if self.fitting and column not in self._finite and np.logical_or.reduce(np.isinf(arr)):
                count = int(np.isinf(arr).sum())
                raise DataError(
                    f"column '{column}' has {count} infinite value(s); replace or drop those rows"
                )
            self._floats[column] = arr
        return arr

    def factor(
        self, column: str, reference: str | None = None, contrast: str = "treatment"
    ) -> tuple[FactorLevels, np.ndarray]:
        """:func:`fit_factor` of a column; its sorted factorisation is found once, however
        many ways the formula codes the column (a fixed factor and a grouping factor)."""
        found = self._factorized.get(column)
        if found is None:
            # The fast paths read the array; the general one (categoricals, objects,
            # datetimes) keeps pandas' Series semantics, labels included.
            found = _factorize_sorted_fast(self.values(column))
            if found is None:
                found = factorize_sorted(self.series(column))
            self._factorized[column] = found
        codes, labels = found
        return factor_levels(labels, column, reference, contrast), codes

    def arrow_strings(self, columns: list[str]) -> tuple[object, ...] | None:
        """The Arrow data (ChunkedArrays) of ``columns`` when each is a short pyarrow-backed
        string column (at most ``_SMALL_STRINGS`` rows), else None."""
        if self.nrows > _SMALL_STRINGS:
            return None
        arrays = []
        for column in columns:
            dtype = self.values(column).dtype
            if not (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"):
                return None
            arrays.append(self.values(column).__arrow_array__())
        return tuple(arrays)

    def numeric_inputs(self, node: Node, used_in: str) -> dict[str, np.ndarray]:
        if isinstance(node, Name):  # a bare column (most variables): no tree to walk
            return {node.name: self.floats(node.name, used_in)}
        return {name: self.floats(name, used_in) for name in walk_names(node)}


def _column_values(
    data: pd.DataFrame, column: str, position: object = None
) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """The array of one column (an ndarray for NumPy dtypes, else its ExtensionArray),
    without building a Series.

    ``data[column]`` builds a Series and its Index view (~10 us warm, ~0.2 ms as the first
    pandas call after a ``gc.collect()``); ``DataFrame._get_column_array`` (pandas >= 1.3,
    private but stable through 3.x) hands out the block's array. Column names are unique
    (checked by :class:`_Frame`), so ``get_loc`` gives one position; ``position`` is that
    position when the caller has it already.
    """
    getter = getattr(data, "_get_column_array", None)
    if position is None:
        position = data.columns.get_loc(column)
    if getter is None or not isinstance(position, int | np.integer):
        # A future pandas without it, or a label that is not one column (MultiIndex).
        return column_array(data[column])
    return getter(position)


def _missing(
    series: pd.Series | np.ndarray | pd.api.extensions.ExtensionArray,
    column: str | None = None,
    finite: set[str] | None = None,
    ranges: dict[str, tuple[float, float]] | None = None,
) -> np.ndarray | None:
    """Missing-value mask of a column, or None when it holds no missing value.

    ``Series.isna()`` builds a new Series (~15 us); NumPy integer and boolean columns
    cannot be missing, float columns are missing exactly where they are NaN, and an Arrow
    column knows how many nulls it holds (usually none: no mask to build or apply).
    ``series`` is a Series or the column's array (:func:`column_array`).

    A float column whose smallest and largest values are finite holds neither NaN nor an
    infinity (a NaN makes both NaN): two reductions instead of a NaN mask and its test,
    and the column's name is added to ``finite`` (when given), as is an integer or
    boolean column's, so that the infinity checks of the fitting data are not repeated;
    the two values are kept in ``ranges`` (when given) under the column's name.
    """
    values = column_array(series)
    dtype = values.dtype
    if isinstance(dtype, np.dtype):
        if dtype.kind in "biu":
            if finite is not None and column is not None:
                finite.add(column)  # as floats, integers and booleans are finite
            return None
        if dtype.kind == "f":
            # NaN propagates through both reductions, which never warn (a sum would on
            # overflow or on inf - inf).
            low, high = np.minimum.reduce(values, axis=None), np.maximum.reduce(values, axis=None)
            if math.isfinite(low) and math.isfinite(high):
                if finite is not None and column is not None:
                    finite.add(column)
                    if ranges is not None:
                        ranges[column] = (low, high)
                return None
            return np.isnan(values)
        return np.asarray(pd.isna(values), dtype=bool)  # objects, datetimes
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        if values.__arrow_array__().null_count == 0:
            return None
    return np.asarray(values.isna(), dtype=bool)


_SEPARATORS = ("|", ";", ",", "\t", ":", " ")


def _column_position(text: str, column: str) -> int:
    """Offset of ``column`` as a whole name (bare or in backticks) in the formula, or -1.

    ``str.find`` would point into a longer name: 'a' in 'y ~ lag + a' is at 10, not 5.
    """
    for match in re.finditer(re.escape(column), text):
        start, end = match.start(), match.end()
        if start > 0 and end < len(text) and text[start - 1] == "`" and text[end] == "`":
            return start - 1
        before = text[start - 1] if start > 0 else " "
        after = text[end] if end < len(text) else " "
        if not (_is_word(before) or _is_word(after) or "`" in (before, after)):
            return start
    return -1


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch in "_."


def _available_hint(col: str, available: list[str]) -> str:
    """Say which columns exist; spot a file read with the wrong delimiter (one glued column)."""
    if len(available) == 1:
        only = available[0]
        for sep in _SEPARATORS:
            if sep in only and col in (part.strip() for part in only.split(sep)):
                return (
                    f"; the data have a single column named {only!r}: the file seems to "
                    f"separate values with {sep!r}, which is not detected — save it with "
                    "commas, tabs or semicolons between values"
                )
    shown = ", ".join(repr(c) for c in available[:10]) + (", ..." if len(available) > 10 else "")
    return f"; the data have the columns {shown}"


def _columns_of(variables: list[Variable]) -> list[str]:
    return list(dict.fromkeys(c for v in variables for c in v.columns))


def _is_factor(var: Variable, frame: _Frame) -> bool:
    if var.kind == "factor":
        return True
    if var.kind != "column":  # transforms, poly(), offset(): numeric
        return False
    return is_factor_dtype(frame.values(var.columns[0]))


def _response(var: Variable, frame: _Frame, state: TransformState) -> np.ndarray:
    """The numeric response of a linear mixed model; it must vary."""
    y = _response_values(var, frame, state)
    # A bare float column's range was found by incomplete_rows() on these very rows.
    known = frame._ranges.get(var.expr.name) if isinstance(var.expr, Name) else None
    if known is not None:
        low, high = known
    elif y.size:
        low, high = np.minimum.reduce(y), np.maximum.reduce(y)
    if y.size and low == high:
        # Otherwise the engine fails later with a non-finite deviance and a misleading hint.
        raise DataError(
            f"the response '{var.name}' is constant (every value is {y[0]:.6g} in the "
            f"{y.size} rows used), so there is no variation to model; check that the "
            "formula uses the right column"
        )
    return y


def _response_values(var: Variable, frame: _Frame, state: TransformState) -> np.ndarray:
    """A numeric response (a numeric column or expression), finite in every row used."""
    if isinstance(var.expr, Name):
        column_values = frame.values(var.columns[0])
        dtype = column_values.dtype
        if isinstance(dtype, np.dtype):  # pandas' answer without its dtype machinery
            if dtype.kind in "iuf" and frame.fitting:
                # A bare NumPy column of the fitting data (most responses): its float64
                # copy, finite already (floats() refused infinities, complete_rows()
                # dropped the NaN), read-only; what the general path below gives,
                # without the evaluator and its dictionary.
                y = frame.floats(var.expr.name, var.name).view()
                y.setflags(write=False)
                return y
            refused = dtype.kind not in "iufc"
        else:
            refused = (
                not pd.api.types.is_numeric_dtype(dtype)
                or pd.api.types.is_bool_dtype(dtype)
                or isinstance(dtype, pd.CategoricalDtype)
            )
        if refused:
            raise DataError(
                f"the response '{var.columns[0]}' must be numeric, but its dtype is "
                f"{dtype}; convert it with pandas.to_numeric or choose another column"
            )
    values = evaluate_numeric(
        var.expr, frame.numeric_inputs(var.expr, var.name), state, fitting=True
    )
    y = _full_column(values, frame.nrows)
    # A bare NumPy column of the fitting data is finite already: floats() refused
    # infinities and complete_rows() dropped the NaN (an extension column may hold a NaN
    # that is not its missing value, so it is checked).
    checked = (
        frame.fitting
        and isinstance(var.expr, Name)
        and isinstance(frame.values(var.expr.name), np.ndarray)
    )
    if not checked and not np.isfinite(y).all():
        raise DataError(
            f"the response {var.name} has {int((~np.isfinite(y)).sum())} non-finite value(s)"
        )
    return y


def _binomial_response(
    var: Variable, frame: _Frame, state: TransformState
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]:
    """Read a binomial response as lme4's ``glmer``: ``(y, trials, factor levels)``.

    ``cbind(successes, failures)``: ``y = successes / trials``, ``trials = successes +
    failures`` (R's binomial ``initialize``); a two-level factor column: 0/1 for its
    first/second level (R: ``y != levels(y)[1]``, here refused with more than two
    levels); anything else: the numbers as they are (0/1, or proportions with weights =
    trials; the family checks their range). The response must vary (lme4's
    ``check.response.not.const``).
    """
    if var.kind == "cbind":
        y, trials = _binomial_counts(var, frame, state)
        check_has_trials(var, float(trials.sum()), y.size)
        _check_binomial_varies(y, f"the proportion of successes of {var.name}", "columns")
        return y, trials, None
    if var.is_plain_column and is_factor_dtype(frame.values(var.columns[0])):
        y, levels = _two_level_response(var.columns[0], frame)
        return y, None, levels
    y = _response_values(var, frame, state)
    _check_binomial_varies(y, f"the binomial response '{var.name}'", "column")
    return y, None, None


def _binomial_counts(
    var: Variable, frame: _Frame, state: TransformState, *, fitting: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate ``cbind(successes, failures)``: (proportion of successes, trials).

    Each row's counts are checked here; that there are trials at all, over all rows, by
    :func:`check_has_trials` (a chunk of streamed rows may have none).
    """
    n = frame.nrows
    counts: list[np.ndarray] = []
    for role, expr in zip(("successes", "failures"), var.count_exprs, strict=True):
        values = _full_column(
            evaluate_numeric(expr, frame.numeric_inputs(expr, var.name), state, fitting=fitting),
            n,
        )
        if isinstance(expr, Name):
            what = f"column '{expr.name}'"
        else:
            names = walk_names(expr)
            what = f"{expr.deparse()} (column{'s' if len(names) > 1 else ''} {', '.join(names)})"
        # the first problem found, in this order (the later tests need finite values)
        bad, verb = ~np.isfinite(values), "are not finite"
        if not bad.any():
            bad, verb = values < 0, "are negative"
        if not bad.any():
            bad, verb = (
                np.abs(values - np.rint(values)) > 1e-7 * np.maximum(1.0, np.abs(values)),
                "are not whole numbers",
            )
        if bad.any():
            examples = ", ".join(f"{v:.6g}" for v in values[bad][:3])
            raise DataError(
                f"{var.name}: the {role}, {what}, {verb} in {int(bad.sum())} row(s) "
                f"(e.g. {examples}); successes and failures are counts, whole numbers "
                ">= 0 — fix the data or drop those rows"
            )
        counts.append(values)
    successes, failures = counts
    trials = successes + failures
    y = np.divide(successes, trials, out=np.zeros(n), where=trials > 0)
    return y, trials


def check_has_trials(var: Variable, total: float, n: int) -> None:
    """Refuse ``cbind(successes, failures)`` whose ``n`` rows hold ``total = 0`` trials."""
    if n and not total > 0:
        raise DataError(
            f"{var.name} has no trials: successes + failures is 0 in all {n} rows used, so "
            "there is nothing to model; check the columns"
        )


def _two_level_response(column: str, frame: _Frame) -> tuple[np.ndarray, tuple[str, ...]]:
    """A binomial response given as a two-level column: 0/1 for the first/second level."""
    levels, codes = fit_factor(frame.series(column), column)
    check_two_levels(levels, column, codes.size)
    return codes.astype(np.float64), levels.levels


def check_two_levels(levels: FactorLevels, column: str, n: int) -> None:
    """Refuse a binomial response column without exactly two levels in its ``n`` rows."""
    if levels.nlevels > 2:
        shown = ", ".join(repr(x) for x in levels.levels[:5])
        shown += ", ..." if levels.nlevels > 5 else ""
        raise DataError(
            f"the binomial response '{column}' has {levels.nlevels} levels ({shown}); a "
            "binomial response needs two levels (the second counts as success), 0/1 "
            "numbers or cbind(successes, failures) — recode it, e.g. 1 for the level that "
            "means success"
        )
    if levels.nlevels < 2:
        raise DataError(
            f"the binomial response '{column}' has only the level {levels.levels[0]!r} in "
            f"the {n} rows used, so there is nothing to model; check the column "
            "and the rows kept"
        )


def _check_binomial_varies(y: np.ndarray, subject: str, source: str) -> None:
    """Refuse a binomial response that never varies (no successes, or no failures)."""
    if y.size:
        check_binomial_range(float(y.min()), float(y.max()), y.size, subject, source)


def check_binomial_range(low: float, high: float, n: int, subject: str, source: str) -> None:
    """Refuse a binomial response whose ``n`` values all equal ``low == high``."""
    if low == high:
        what = {0.0: " (no successes)", 1.0: " (no failures)"}.get(low, "")
        raise DataError(
            f"{subject} is {low:.6g} in all {n} rows used{what}, so there is nothing "
            f"to model; check the {source} and the rows kept"
        )


def _offset_sum(
    offsets: tuple[Variable, ...], frame: _Frame, state: TransformState, *, fitting: bool
) -> np.ndarray | None:
    """Sum the ``offset(expr)`` terms on the frame's rows (None when there are none)."""
    if not offsets:
        return None
    n = frame.nrows
    total = np.zeros(n)
    for var in offsets:
        expr = var.numeric_expr
        values = evaluate_numeric(
            expr, frame.numeric_inputs(expr, var.name), state, fitting=fitting
        )
        total += _full_column(values, n)
    if fitting and not np.isfinite(total).all():
        bad = int((~np.isfinite(total)).sum())
        names = " + ".join(v.name for v in offsets)
        raise DataError(
            f"{names} gives {bad} non-finite value(s) (division by zero or overflow?); "
            "fix the expression or drop those rows"
        )
    return total


def _weights_values(weights: object, frame: _Frame) -> np.ndarray | None:
    """Return the prior weights of every row as float64 (NaN where missing), or None."""
    if weights is None:
        return None
    n = frame.nrows
    if isinstance(weights, str):
        if weights not in frame.data.columns:
            available = [str(c) for c in frame.data.columns]
            close = difflib.get_close_matches(weights, available, n=3)
            hint = (
                f"; did you mean {', '.join(repr(c) for c in close)}?"
                if close
                else _available_hint(weights, available)
            )
            raise DataError(f"weights column '{weights}' is not in the data{hint}")
        series = frame.data[weights]
        if not is_numeric_dtype(series):
            raise DataError(
                f"weights column '{weights}' is not numeric (dtype {series.dtype}); "
                "give a column of non-negative numbers"
            )
        return series.to_numpy(dtype=np.float64, na_value=np.nan).copy()
    if isinstance(weights, pd.DataFrame):
        raise DataError("weights must be a column name or one number per row, not a DataFrame")
    raw = (
        weights.to_numpy() if isinstance(weights, pd.Series) else np.asarray(weights, dtype=object)
    )
    if raw.ndim != 1 or raw.shape[0] != n:
        count = raw.shape[0] if raw.ndim == 1 else f"an array of shape {raw.shape} of"
        raise DataError(
            f"weights has {count} values but the data have {n} rows; pass one weight per row "
            "or the name of a weights column"
        )
    try:
        numbers = pd.to_numeric(pd.Series(raw, copy=False), errors="raise")
        return numbers.to_numpy(dtype=np.float64, na_value=np.nan).copy()
    except (TypeError, ValueError):
        raise DataError(
            "weights must be numbers (one per row of the data) or the name of a numeric column"
        ) from None


def _check_weights(values: np.ndarray, given: object) -> np.ndarray:
    """Refuse negative, infinite and all-zero weights of the rows used."""
    what = f"weights column '{given}'" if isinstance(given, str) else "weights"
    if np.isinf(values).any():
        bad = int(np.isinf(values).sum())
        raise DataError(
            f"{what} has {bad} infinite value(s); weights must be finite, so fix or drop those rows"
        )
    negative = values < 0
    if negative.any():
        raise DataError(
            f"{what} has {int(negative.sum())} negative value(s) (the smallest is "
            f"{values.min():.6g}); weights must be non-negative"
        )
    if not values.sum() > 0:
        raise DataError(
            f"{what} are all zero in the {values.size} rows used; give positive weights "
            "(a weight is the inverse of a row's relative residual variance)"
        )
    out = np.ascontiguousarray(values, dtype=np.float64)
    out.flags.writeable = False
    return out


def _full_column(values: np.ndarray | float, n: int) -> np.ndarray:
    """Return ``values`` as a read-only float64 (n,) array (a constant is repeated).

    The result may share memory with ``values``: callers copy when they build matrices.
    ``np.broadcast_to`` gives the same read-only view but costs more than the check.
    """
    if isinstance(values, np.ndarray) and values.dtype == np.float64 and values.shape == (n,):
        if values.flags.c_contiguous:
            view = values.view()
            view.flags.writeable = False
            return view
    return np.ascontiguousarray(np.broadcast_to(np.asarray(values, dtype=np.float64), (n,)))


def _fit_factors(variables: list[Variable], frame: _Frame) -> dict[str, FactorLevels]:
    factors: dict[str, FactorLevels] = {}
    for var in variables:
        if var.name in factors or not _is_factor(var, frame):
            continue
        levels, codes = frame.factor(var.columns[0], var.reference, var.contrast)
        frame.codes[var.name] = codes
        if levels.nlevels < 2:
            raise DataError(
                f"factor {var.name} has only one level ({levels.levels[0]!r}) in the rows used; "
                "remove it from the formula"
            )
        factors[var.name] = levels
    return factors


def _check_numeric_inputs(
    variables: list[Variable], frame: _Frame, factors: dict[str, FactorLevels]
) -> None:
    for var in variables:
        if var.name not in factors:
            frame.numeric_inputs(var.numeric_expr, var.name)


# ---------------------------------------------------------------------------------------------
# Model matrices
# ---------------------------------------------------------------------------------------------
def _plan(part: FixedPart, factors: dict[str, FactorLevels]) -> MatrixPlan:
    """Choose each factor's coding per term (R's ``TermCode``) and name the columns.

    The plan is a pure function of the (immutable, cached) formula part and the levels of
    its factors: it is kept for the next design of the same formula with the same levels
    (a refit, a bootstrap, a power simulation), not made again. The part itself is held
    by the entry, so that its ``id`` stays its own.
    """
    get = factors.get
    levels = tuple([get(v.name) for v in part.variables])
    # Keyed by identity (factor_levels() hands out one object per set of levels): hashing
    # the levels' labels on every design cost more than the lookup. The entry holds the
    # part and the levels, so that their ids stay theirs; the tuple comparison is then
    # one identity test per factor.
    key = (id(part), *map(id, levels))
    found = _PLANS.get(key)
    if found is not None and found[0] is part and found[1] == levels:
        return found[2]
    plan = _make_plan(part, factors)
    if len(_PLANS) >= _CACHE_SIZE:
        _PLANS.clear()
    _PLANS[key] = (part, levels, plan)
    return plan


_PLANS: dict[tuple, tuple[FixedPart, tuple[FactorLevels | None, ...], MatrixPlan]] = {}


def _make_plan(part: FixedPart, factors: dict[str, FactorLevels]) -> MatrixPlan:
    """:func:`_plan` without its cache."""
    keys = [frozenset(v.name for v in term) for term in part.terms]
    codings: list[list[Coding]] = []
    for j, term in enumerate(part.terms):
        row: list[Coding] = []
        for var in term:
            if var.name not in factors:
                row.append("numeric")
                continue
            rest = keys[j] - {var.name}
            in_model = not rest or any(rest <= keys[k] for k in range(j))
            row.append("contrast" if in_model else "full")
        codings.append(row)
    if not part.intercept:
        # R: the first factor of the first term containing one is coded by indicators.
        for row in codings:
            idx = next((i for i, c in enumerate(row) if c != "numeric"), None)
            if idx is not None:
                row[idx] = "full"
                break
    terms: list[TermPlan] = []
    names: list[str] = ["(Intercept)"] if part.intercept else []
    ncols: list[int] = []
    for term, row in zip(part.terms, codings, strict=True):
        plan = TermPlan(":".join(v.name for v in term), term, tuple(row))
        terms.append(plan)
        term_names = _term_column_names(plan, factors)
        names.extend(term_names)
        ncols.append(len(term_names))
    return MatrixPlan(part.intercept, tuple(terms), tuple(names), tuple(ncols))


def _variable_column_names(
    var: Variable, coding: Coding, factors: dict[str, FactorLevels]
) -> list[str]:
    if coding == "numeric":
        if var.kind == "poly":  # R: poly(Days, 2)1, poly(Days, 2)2
            return [f"{var.name}{j}" for j in range(1, var.degree + 1)]
        return [var.name]
    levels = factors[var.name]
    if coding == "contrast":  # R: sexMale (treatment), treatment1 (sum, Helmert)
        return [var.label + suffix for suffix in levels.contrast_names()]
    return [var.label + lev for lev in levels.levels]


def _keeps(levels: FactorLevels, coding: Coding, i: int) -> bool:
    return coding == "full" or i != levels.reference


def _term_column_names(plan: TermPlan, factors: dict[str, FactorLevels]) -> list[str]:
    names: list[str] = [""]
    first = True
    for var, coding in zip(plan.variables, plan.codings, strict=True):
        block = _variable_column_names(var, coding, factors)
        if first:
            names = block
            first = False
        else:  # earlier variables vary fastest
            names = [f"{a}:{b}" for b in block for a in names]
    return names


def _variable_rows(
    var: Variable,
    coding: Coding,
    frame: _Frame,
    factors: dict[str, FactorLevels],
    state: TransformState,
    fitting: bool,
) -> np.ndarray:
    """A variable's columns of the model matrix, as rows: a (k, n) array (maybe a view).

    The model matrix is filled row-wise in its transpose (:func:`_model_matrix`).
    """
    n = frame.nrows
    expr = var.expr
    if coding == "numeric" and isinstance(expr, Name):
        # A bare numeric column (most numeric variables): its float64 copy, read once by
        # the frame; what evaluate_numeric() gives for a name, without its dictionary.
        col = frame.floats(expr.name, var.name)
        if fitting and expr.name not in frame._finite and not np.isfinite(col).all():
            bad = int((~np.isfinite(col)).sum())
            raise DataError(
                f"{var.name} gives {bad} non-finite value(s) (division by zero or overflow?); "
                "fix the expression or drop those rows"
            )
        return col.reshape(1, n)
    if coding == "numeric":
        expr = var.numeric_expr
        values = evaluate_numeric(
            expr, frame.numeric_inputs(expr, var.name), state, fitting=fitting
        )
        col = _full_column(values, n)
        if fitting and isinstance(expr, Name) and expr.name in frame._finite:
            fitting_check = False  # a bare column found finite by incomplete_rows()
        else:
            fitting_check = fitting
        if var.kind == "poly":
            if fitting_check and not np.isfinite(col).all():
                bad = int((~np.isfinite(col)).sum())
                raise DataError(
                    f"the argument of {var.name} has {bad} non-finite value(s); "
                    "fix the expression or drop those rows"
                )
            return poly_basis(
                col, var.degree, raw=var.raw, key=var.name, state=state, fitting=fitting
            ).T
        if fitting_check and not np.isfinite(col).all():
            bad = int((~np.isfinite(col)).sum())
            raise DataError(
                f"{var.name} gives {bad} non-finite value(s) (division by zero or overflow?); "
                "fix the expression or drop those rows"
            )
        return col.reshape(1, n)
    levels = factors[var.name]
    codes = frame.codes.get(var.name)
    if codes is None:  # new data: its levels must be among the fitted ones
        codes = levels.encode(frame.series(var.columns[0]))
        unseen = codes == -2
        if unseen.any():
            bad = frame.series(var.columns[0])[unseen].unique()[:5]
            raise DataError(
                f"column '{var.columns[0]}' has level(s) {list(bad)} that were not in the "
                f"data the model was fitted to; known levels: {', '.join(levels.levels)}"
            )
    # Codes are in [-1, nlevels): "wrap" reads -1 as the last (NaN) column, as "raise"
    # would, without the bounds pass and its buffer.
    return _coding_table(levels, coding).take(codes, axis=1, mode="wrap")


def _coding_table(levels: FactorLevels, coding: Coding) -> np.ndarray:
    """The columns a factor's codes pick: one column per level, then a column of NaN.

    The transpose of the contrast matrix with a NaN row appended, (k, nlevels + 1), in C
    order, so that ``take(codes, axis=1)`` gives the variable's rows of the transposed
    model matrix. Code -1 (a missing value) picks the NaN column: one ``take`` instead of
    building indicators row by row. Treatment or full coding: rows of the identity
    (without the reference's column); sum and Helmert contrasts: R's ``contr.sum`` /
    ``contr.helmert``. A pure function of the levels and the coding, so it is kept
    (read-only) for the next design with the same levels.
    """
    key = (levels, coding)
    table = _CODING_TABLES.get(key)
    if table is not None:
        return table
    if coding == "contrast" and levels.contrast != "treatment":
        table = np.vstack([levels.contrast_matrix(), np.full((1, levels.nlevels - 1), np.nan)])
    else:
        keep = [i for i in range(levels.nlevels) if _keeps(levels, coding, i)]
        table = np.zeros((levels.nlevels + 1, len(keep)), dtype=np.float64)
        table[keep, range(len(keep))] = 1.0
        table[-1] = np.nan
    table = np.ascontiguousarray(table.T)
    table.flags.writeable = False
    if table.size <= _CACHED_TABLE_SIZE:  # a factor of many levels: not held (levels^2)
        if len(_CODING_TABLES) >= _CACHE_SIZE:
            _CODING_TABLES.clear()
        _CODING_TABLES[key] = table
    return table


#: Entries kept by each of the value-keyed caches below (cleared when full).
_CACHE_SIZE = 256
_CODING_TABLES: dict[tuple[FactorLevels, Coding], np.ndarray] = {}
#: Entries of the largest coding table kept (32 kB): factors of up to ~60 levels.
_CACHED_TABLE_SIZE = 4096


def _model_matrix(
    plan: MatrixPlan,
    frame: _Frame,
    factors: dict[str, FactorLevels],
    state: TransformState,
    *,
    fitting: bool = False,
) -> np.ndarray:
    n = frame.nrows
    if plan.intercept and not plan.terms:
        return _intercept_column(n)
    # Filled in place, in its transpose: each column of X is a contiguous row of XT, so
    # every write is one contiguous copy (a slice of X's columns is strided: writing two
    # columns of a few hundred rows costs ~4 us, the take that makes them ~1 us); one
    # transposing copy gives X in C order at the end.
    XT = np.empty((len(plan.column_names), n), dtype=np.float64)
    j = 0
    if plan.intercept:
        XT[0] = 1.0
        j = 1
    for term in plan.terms:
        product: np.ndarray | None = None
        for var, coding in zip(term.variables, term.codings, strict=True):
            block = _variable_rows(var, coding, frame, factors, state, fitting)
            if product is None:
                product = block
            else:  # earlier variables vary fastest: column index = i_new * k_old + i_old
                product = (block[:, None, :] * product[None, :, :]).reshape(-1, n)
        assert product is not None
        XT[j : j + product.shape[0]] = product
        j += product.shape[0]
    if j != XT.shape[0]:  # pragma: no cover - the plan names every column it builds
        raise AssertionError(f"model matrix has {j} columns, its plan names {XT.shape[0]}")
    return np.ascontiguousarray(XT.T)


def _intercept_column(n: int) -> np.ndarray:
    """A read-only (n, 1) column of ones: the model matrix of ``1`` (``y ~ 1``, ``(1 | g)``).

    A pure function of ``n``: a view of one array per ``n`` (:data:`_ONES`), not a new
    filled array per design and term. The array is read-only, and so is every view of
    it (NumPy refuses to make a view of a read-only array writeable), so no holder can
    change what the next design reads.
    """
    base = _ONES.get(n)
    if base is None:
        base = np.ones((n, 1), dtype=np.float64)
        base.setflags(write=False)
        if n <= _ONES_MAX_ROWS:
            if len(_ONES) >= _ONES_MAX:
                _ONES.clear()
            _ONES[n] = base
    return base.view()


#: Columns of ones by number of rows (each at most 8 * ``_ONES_MAX_ROWS`` bytes).
_ONES: dict[int, np.ndarray] = {}
_ONES_MAX_ROWS = 100_000
_ONES_MAX = 16


def _independent_columns(X: np.ndarray, tol: float = RANK_TOLERANCE) -> tuple[int, ...]:
    """Return the columns to keep: each is kept unless it lies in the span of earlier kept ones.

    Like R's ``qr()`` (LINPACK ``dqrdc2``, used by lme4) this keeps earlier columns: a
    column is dropped when the norm of its residual after projection on the kept
    columns is below ``tol`` times its own norm.

    Notes
    -----
    The fast path works on the Gram matrix of the unit-scaled columns (a sequential
    Cholesky whose pivots are the squared relative residual norms).  Squaring loses
    half the digits, so when any pivot is within a factor 100 of ``tol**2`` the
    decision is repeated on the triangular factor of a Householder QR of X, which has
    the same column geometry as X and full accuracy.
    """
    p = X.shape[1]
    if p == 0:
        return ()
    if p == 1:
        # One column (often the intercept alone): kept unless it is zero. Its Gram matrix
        # is the number x'x, whose only pivot is itself: the test below (pivot > 2e-12
        # x'x) and the scaled path both keep it exactly when 0 < x'x < inf, so one dot
        # product decides (no matrix product nor LAPACK call); overflow or a non-finite
        # entry takes the general path below.
        xtx = float(np.dot(X[:, 0], X[:, 0]))
        if math.isfinite(xtx):
            return (0,) if xtx > 0.0 else ()
    margin = 100.0
    if _clearly_full_rank_unscaled(X, tol**2 * margin):
        return tuple(range(p))
    norms = np.sqrt(np.einsum("ij,ij->j", X, X))
    if p == 1 and np.isfinite(norms[0]):
        # One column (often the intercept alone): kept unless it is zero, which is what
        # the pivots below decide too (the unit-scaled column has pivot 1).
        return (0,) if norms[0] > 0 else ()
    nonzero = norms > 0
    scaled = X[:, nonzero] / norms[nonzero]
    gram = scaled.T @ scaled
    if _clearly_full_rank(gram, tol**2 * margin):
        index = np.flatnonzero(nonzero)
        return tuple(int(j) for j in index)
    kept_sub, ambiguous = _sequential_pivots(gram, tol**2, margin=margin)
    if ambiguous:
        R = np.linalg.qr(scaled, mode="r")
        if R.shape[0] < R.shape[1]:
            R = np.vstack([R, np.zeros((R.shape[1] - R.shape[0], R.shape[1]))])
        kept_sub = _sequential_residuals(R, tol)
    index = np.flatnonzero(nonzero)
    return tuple(int(index[j]) for j in kept_sub)


def _clearly_full_rank(gram: np.ndarray, threshold: float) -> bool:
    """Whether every pivot of the Gram matrix is well above ``threshold`` (then all are kept).

    The common case, a full-rank X, by one Cholesky factorisation instead of the column by
    column loop of :func:`_sequential_pivots`. When every column is kept, the sequential
    pivots are the squared diagonal of this factor, up to rounding of order 1e-16; the
    factor 2 keeps the decision away from the ambiguity band of :func:`_sequential_pivots`,
    so both paths agree.
    """
    p = gram.shape[0]
    if p > _SMALL_GRAM:
        try:
            L = np.linalg.cholesky(gram)
        except np.linalg.LinAlgError:
            return False
        return bool(np.all(np.diagonal(L) ** 2 > 2.0 * threshold))
    # Few columns (the usual X): Python floats cost less than the LAPACK call's wrapper.
    g = gram.tolist()
    rows: list[list[float]] = []
    for j in range(p):
        row = []
        for k in range(j):
            row.append(
                (g[j][k] - sum(a * b for a, b in zip(row, rows[k], strict=False))) / rows[k][k]
            )
        pivot = g[j][j] - sum(a * a for a in row)
        if not pivot > 2.0 * threshold:  # also False for NaN
            return False
        row.append(math.sqrt(pivot))
        rows.append(row)
    return True


#: Columns up to which the full-rank check runs in Python floats.
_SMALL_GRAM = 12


def _clearly_full_rank_unscaled(X: np.ndarray, threshold: float) -> bool:
    """:func:`_clearly_full_rank` of the unit-scaled Gram matrix, read from ``X'X`` itself.

    The Cholesky factor of ``D^-1 X'X D^-1`` (``D`` the column norms) is ``D^-1 L`` with
    ``L`` that of ``X'X``, so its pivots are ``L[j, j]^2 / (X'X)[j, j]``: one matrix
    product and one LAPACK call, without the column norms, the scaled copy of X and its
    product (NumPy calls that cost most of the check on a small design). Cholesky's
    rounding errors are relative to the diagonal, so the scaling changes the pivots by a
    few units in the 16th digit, far inside the factor-2 margin of the test: the decision
    is the same. A zero, non-finite or doubtful pivot answers False and the caller takes
    the scaled path.

    ``dpotrf`` itself rather than ``np.linalg.cholesky``: no Python wrapper layers (their
    first call after a ``gc.collect()`` costs more than the factorisation), and the fit
    calls the same routine.
    """
    gram = X.T @ X
    L, info = _dpotrf(gram, lower=1, clean=0)
    if info != 0:  # not positive definite (a zero or dependent column), or bad input
        return False
    limit = 2.0 * threshold
    if gram.shape[0] <= _SMALL_GRAM:
        # The same comparisons in Python floats: each NumPy call below costs more than
        # the few products (the same IEEE operations, so the same decision).
        for lj, gj in zip(L.diagonal().tolist(), gram.diagonal().tolist(), strict=True):
            if not lj * lj > limit * gj:  # also False for NaN
                return False
        return True
    pivots = L.diagonal() ** 2
    # False for NaN pivots (non-finite input): every comparison with NaN is.
    return bool(np.logical_and.reduce(pivots > limit * gram.diagonal()))


def _sequential_pivots(gram: np.ndarray, tol2: float, margin: float) -> tuple[list[int], bool]:
    """Sequential Cholesky on a unit-diagonal Gram matrix; flag pivots too close to call."""
    p = gram.shape[0]
    kept: list[int] = []
    L = np.zeros((p, p))  # rows: columns of X; cols: kept pivots
    ambiguous = False
    for j in range(p):
        k = len(kept)
        lj = L[j, :k]
        pivot = gram[j, j] - lj @ lj
        if tol2 / margin < pivot < tol2 * margin:
            ambiguous = True
        if pivot > tol2:
            d = np.sqrt(pivot)
            rest = np.arange(j + 1, p)
            L[rest, k] = (gram[rest, j] - L[rest, :k] @ lj) / d
            L[j, k] = d
            kept.append(j)
    return kept, ambiguous


def _sequential_residuals(R: np.ndarray, tol: float) -> list[int]:
    """Keep-earlier rank decision on the columns of a triangular factor (Gram-Schmidt, twice)."""
    kept: list[int] = []
    Q = np.zeros((R.shape[0], 0))
    for j in range(R.shape[1]):
        col = R[:, j]
        norm = np.linalg.norm(col)
        resid = col - Q @ (Q.T @ col)
        resid = resid - Q @ (Q.T @ resid)
        rnorm = np.linalg.norm(resid)
        if rnorm > tol * norm:
            kept.append(j)
            Q = np.column_stack([Q, resid / rnorm])
    return kept


# ---------------------------------------------------------------------------------------------
# Grouping factors
# ---------------------------------------------------------------------------------------------
def _fit_grouping(grouping: tuple[Variable, ...], frame: _Frame) -> tuple[GroupingPlan, np.ndarray]:
    name = ":".join(v.name for v in grouping)
    components: list[FactorLevels] = []
    codes_list: list[np.ndarray] = []
    for var in grouping:
        column = var.columns[0]
        fitted = frame.grouping_levels.get(column)
        if fitted is None:
            fitted = frame.grouping_levels[column] = frame.factor(column)
        levels, codes = fitted
        components.append(levels)
        codes_list.append(codes)
    if len(components) == 1:
        # A pure function of the name and the (shared, immutable) levels: the plan made
        # for them before (a refit, a bootstrap), not a new dataclass per design.
        only = components[0]
        key1 = (name, id(only))
        known1 = _GROUPINGS.get(key1)
        if known1 is not None and known1[0] is only:
            return known1[1], codes_list[0]
        plan1 = GroupingPlan(name, (only,), only.levels)
        if only.nlevels <= _CACHED_TABLE_SIZE:  # a factor of many levels: not held
            if len(_GROUPINGS) >= _CACHE_SIZE:
                _GROUPINGS.clear()
            _GROUPINGS[key1] = (only, plan1)
        return plan1, codes_list[0]
    # An interaction of short Arrow string columns seen before (the same ChunkedArrays:
    # immutable, so the same rows; see factors._remember_arrow_codes): its plan and codes.
    arrays = frame.arrow_strings([var.columns[0] for var in grouping])
    key = None
    if arrays is not None:
        key = (name, tuple(var.columns[0] for var in grouping), tuple(map(id, arrays)))
        known = _INTERACTIONS.get(key)
        if known is not None and all(a is b for a, b in zip(known[0], arrays, strict=True)):
            return known[1], known[2]
    linear = _linear_codes(codes_list, components, name)
    present, refs = _present_and_ranks(linear, math.prod(c.nlevels for c in components))
    # The plan is a pure function of the components' (shared, immutable) levels and the
    # combinations present: the one made for them before, without decoding the
    # combinations and joining their labels again (cake's recipe:replicate, ~20 us).
    key_plan = None
    if present.shape[0] <= _CACHED_TABLE_SIZE:  # many combinations: not held
        key_plan = (name, *map(id, components), present.tobytes())
        known_plan = _INTERACTION_PLANS.get(key_plan)
        if known_plan is not None and all(
            a is b for a, b in zip(known_plan[0], components, strict=True)
        ):
            return known_plan[1], refs
    # Decode present combinations back to component level indices (first slowest).
    parts = []
    rem = present
    for comp in reversed(components):
        parts.append(rem % comp.nlevels)
        rem = rem // comp.nlevels
    parts.reverse()
    # Python strings, not object arrays: each component's labels of the present
    # combinations, then one join per combination (map and zip run in C).
    columns = [
        [comp.levels[i] for i in part.tolist()]
        for comp, part in zip(components, parts, strict=True)
    ]
    labels = tuple(map(":".join, zip(*columns, strict=True)))
    plan = GroupingPlan(name, tuple(components), labels, present)
    refs = np.asarray(refs, dtype=np.int64).reshape(-1)
    if key_plan is not None:
        if len(_INTERACTION_PLANS) >= _INTERACTIONS_MAX:
            _forget_oldest(_INTERACTION_PLANS)
        _INTERACTION_PLANS[key_plan] = (tuple(components), plan)
    if key is not None and arrays is not None:
        # Kept with the arrays themselves (their ids stay theirs while the entry lives);
        # the codes read-only, as every caller gets the same array.
        refs.setflags(write=False)
        if len(_INTERACTIONS) >= _INTERACTIONS_MAX:
            _forget_oldest(_INTERACTIONS)
        _INTERACTIONS[key] = (arrays, plan, refs)
    return plan, refs


#: Grouping factors of one column: ``(name, id(levels)) -> (levels, plan)`` (the entry holds
#: the levels, so that their ``id`` stays theirs).
_GROUPINGS: dict[tuple[str, int], tuple[FactorLevels, GroupingPlan]] = {}

#: Interaction grouping factors of short Arrow string columns (``(1 | batch/cask)``):
#: ``(name, columns, ids of their ChunkedArrays) -> (ChunkedArrays, plan, codes)``, oldest
#: first. The labels' string joins and the codes' ranks cost ~0.1 ms per fit after a
#: ``gc.collect()`` (Pastes: a twentieth of its fit).
_INTERACTIONS: dict[tuple, tuple[tuple[object, ...], GroupingPlan, np.ndarray]] = {}
_INTERACTIONS_MAX = 32

#: Interaction grouping plans by their components' levels (identity) and the combinations
#: present: ``(name, ids of the levels, present codes as bytes) -> (levels, plan)``.
_INTERACTION_PLANS: dict[tuple, tuple[tuple[FactorLevels, ...], GroupingPlan]] = {}


def _present_and_ranks(linear: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(linear, return_inverse=True)`` for codes in ``[0, total)``.

    When the range is at most a few times the number of rows (interactions of a few
    factors), a presence mask and its running count give the sorted codes present and each
    row's rank among them: no sort, and none of ``np.unique``'s Python layers, which cost
    ~0.1 ms on a small design after a ``gc.collect()``.
    """
    if total > 4 * linear.shape[0] + 1024:
        present, refs = np.unique(linear, return_inverse=True)
        return present, refs
    if total <= _SHORT_COUNTS:
        # int64 counts from the start and add.accumulate, as factors._rank_short_range.
        counts = np.zeros(total, dtype=np.int64)
        counts[linear] = 1
        refs = np.add.accumulate(counts)[linear]
        refs -= 1
        return counts.nonzero()[0], refs
    seen = np.zeros(total, dtype=bool)  # a long range: a byte per code, not eight
    seen[linear] = True
    rank = seen.cumsum(dtype=np.int64)  # methods: no Python wrappers (see factors.py)
    rank -= 1
    return seen.nonzero()[0].astype(np.int64, copy=False), rank[linear]


def _linear_codes(codes_list: list[np.ndarray], components: list[FactorLevels], name: str):
    total = 1
    for comp in components:
        total *= comp.nlevels
    if total >= 2**62:
        raise DataError(f"grouping factor {name} has too many level combinations")
    # The first component's codes start the sum (a new array: the codes may be shared).
    linear = np.array(codes_list[0], dtype=np.int64)
    for codes, comp in zip(codes_list[1:], components[1:], strict=True):
        linear = linear * comp.nlevels + codes
    return linear


def _grouping_refs_new(plan: GroupingPlan, frame: _Frame) -> np.ndarray:
    codes_list = [comp.encode(frame.series(comp.column)) for comp in plan.components]
    if len(codes_list) == 1:
        refs = codes_list[0]
        return np.where(refs >= 0, refs, -1).astype(np.int64)
    valid = np.logical_and.reduce([c >= 0 for c in codes_list])
    safe = [np.where(c >= 0, c, 0) for c in codes_list]
    linear = _linear_codes(safe, list(plan.components), plan.name)
    assert plan.present is not None
    idx = np.searchsorted(plan.present, linear)
    idx_clipped = np.minimum(idx, len(plan.present) - 1)
    found = valid & (plan.present[idx_clipped] == linear)
    return np.where(found, idx_clipped, -1).astype(np.int64)


def _check_grouping(
    grouping: GroupingPlan,
    n: int,
    plan: MatrixPlan,
    term: str | RandomTerm,
    *,
    allow_n: bool = False,
) -> None:
    """lme4's ``checkNlevels`` and ``checkZdims``; ``allow_n`` is glmer's ``allow.n = TRUE``.

    An LMM needs fewer levels (and random effects) than rows, or the term is confounded
    with the residual; a GLMM has no residual term, so one level per row is allowed.
    ``term`` is the term or its text (only an error message prints it).
    """
    nlev = len(grouping.levels)
    if nlev < 2:
        raise DataError(
            f"grouping factor '{grouping.name}' has only one level ({grouping.levels[0]!r}) "
            f"in the rows used, so {term} cannot be estimated; remove the term"
        )
    nre = nlev * len(plan.column_names)
    if allow_n:
        if nre > n:
            raise ModelSpecificationError(
                f"number of observations ({n}) < number of random effects ({nre}) for term "
                f"{term}; the random-effects parameters are probably unidentifiable — "
                "simplify the term"
            )
        return
    if nlev >= n:
        raise DataError(
            f"number of levels of each grouping factor must be < number of observations: "
            f"'{grouping.name}' has {nlev} levels for {n} observations; every row is its own "
            "group, so the term is confounded with the residual — remove it"
        )
    if nre >= n:
        raise ModelSpecificationError(
            f"number of observations ({n}) <= number of random effects ({nre}) for term "
            f"{term}; the random-effects parameters and the residual variance are probably "
            "unidentifiable — simplify the term"
        )
