"""The design of data that are never in memory at once, from one pass of summaries over chunks.

``build_design`` sees every row; streamed and distributed fits see one chunk at a time.
They get the same design in two steps:

1. :func:`summarize_chunk` on each chunk, merged with :meth:`ChunkSummary.merge` (in any
   tree shape): the kinds of the columns, the distinct values of factors and grouping
   factors among complete rows (a level that first appears in the last chunk is found),
   the number of rows and of complete rows, the moments that ``scale()``/``center()``
   need, and the range of the response;
2. :func:`design_from_summary` turns the merged summary into a :class:`StreamedDesign`
   whose :class:`~mixedmodels.design.build.DesignSpec` is the one ``build_design`` would
   have built on all rows: same factor levels and reference levels, same column names,
   same grouping-factor levels (sorted as R sorts them), same ``scale()`` parameters.
   :meth:`StreamedDesign.chunk_arrays` then gives each chunk's ``X``, ``y`` and
   random-effects rows with the columns and level indices of the whole data, and
   :meth:`StreamedDesign.chunk_weights_offset` its prior weights and summed offsets.

Prior weights (a column named by ``weights=``) and the columns of ``offset(...)`` terms
are among the columns each chunk must hold (:func:`used_columns`); a row with a missing
weight or offset input is dropped like any incomplete row. ``poly(x, k)`` needs every
value of x at once (its basis is orthogonal over all rows) and is refused here;
``poly(x, k, raw = TRUE)`` streams.

Whether X is rank deficient is decided from ``X'X`` once the cross products are summed
(:func:`independent_columns_from_gram`), as ``build_design``'s fast path does; in the rare
case that the decision is too close to call, from the R factor of ``X`` accumulated over
chunks (:func:`independent_columns_from_r`), as its exact path does.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from mixedmodels.errors import DataError, RankDeficiencyWarning
from mixedmodels.formula import ModelFormula, Variable
from mixedmodels.formula.nodes import BinOp, Call, Node, Paren, UnaryOp

from .build import (
    RANK_TOLERANCE,
    DesignSpec,
    RandomPlan,
    _binomial_counts,
    _check_grouping,
    _fit_grouping,
    _Frame,
    _is_factor,
    _plan,
    _sequential_pivots,
    _sequential_residuals,
    check_binomial_range,
    check_has_trials,
    check_two_levels,
    refuse_binomial_counts,
)
from .evaluate import TransformState, evaluate_numeric
from .factors import FactorLevels, fit_factor
from .model_design import ModelDesign, RandomEffectsTerm

__all__ = [
    "ChunkSummary",
    "StreamedDesign",
    "column_kind",
    "design_from_summary",
    "independent_columns_from_gram",
    "independent_columns_from_r",
    "response_values",
    "summarize_chunk",
    "used_columns",
]

#: Column kinds; "empty" (all values missing) agrees with every other kind.
KINDS = ("number", "logical", "text", "categorical", "empty")
_KIND_WORDS = {
    "number": "numbers",
    "logical": "true/false values",
    "text": "text",
    "categorical": "categories (a dictionary-encoded or pandas Categorical column)",
}
_STATEFUL = ("scale", "center")


def column_kind(series: pd.Series) -> str:
    """Classify a column as build_design sees it: numbers, logical, text or categorical."""
    if len(series) == 0 or bool(series.isna().all()):
        return "empty"
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_bool_dtype(dtype):
        return "logical"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    return "text"


# ---------------------------------------------------------------------------------------------
# Pass 1: summaries of chunks
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ChunkSummary:
    """What pass 1 learns from some rows; summaries of disjoint rows merge exactly.

    Attributes
    ----------
    nrows
        Rows seen.
    ncomplete
        Rows with no missing value in a column the formula uses (the rows fitted).
    kinds
        Column -> (kind, where it was first seen).
    distinct
        Tuple of columns -> DataFrame of their distinct value combinations among
        complete rows (one column for a factor, several for an interaction grouping).
    moments
        ``scale()``/``center()`` call text -> (count, mean, sum of squared deviations).
    y_range
        Smallest and largest response value among complete rows (None if unknown).
    weight_sum
        Sum of the prior weights of the complete rows (0 without weights).
    trials_sum
        Sum of the binomial trials of a ``cbind(successes, failures)`` response (else 0).
    """

    nrows: int = 0
    ncomplete: int = 0
    kinds: dict[str, tuple[str, str]] = field(default_factory=dict)
    distinct: dict[tuple[str, ...], pd.DataFrame] = field(default_factory=dict)
    moments: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    y_range: tuple[float, float] | None = None
    weight_sum: float = 0.0
    trials_sum: float = 0.0

    def merge(self, other: ChunkSummary) -> ChunkSummary:
        """Return the summary of the rows of both (``self``'s rows first)."""
        kinds = dict(self.kinds)
        for column, (kind, where) in other.kinds.items():
            mine = kinds.get(column)
            if mine is None or mine[0] == "empty":
                kinds[column] = (kind, where)
            elif kind != "empty" and kind != mine[0]:
                raise DataError(
                    f"column '{column}' holds {_KIND_WORDS[mine[0]]} in {mine[1]} but "
                    f"{_KIND_WORDS[kind]} in {where}; every chunk (file, partition) must give "
                    "the column the same type: fix or re-export the odd one, or cast the "
                    "column to one type in the query"
                )
        distinct = dict(self.distinct)
        for key, frame in other.distinct.items():
            distinct[key] = frame if key not in distinct else _union(distinct[key], frame)
        moments = dict(self.moments)
        for key, value in other.moments.items():
            moments[key] = value if key not in moments else _merge_moments(moments[key], value)
        y_range = self.y_range
        if other.y_range is not None:
            y_range = (
                other.y_range
                if y_range is None
                else (min(y_range[0], other.y_range[0]), max(y_range[1], other.y_range[1]))
            )
        return ChunkSummary(
            nrows=self.nrows + other.nrows,
            ncomplete=self.ncomplete + other.ncomplete,
            kinds=kinds,
            distinct=distinct,
            moments=moments,
            y_range=y_range,
            weight_sum=self.weight_sum + other.weight_sum,
            trials_sum=self.trials_sum + other.trials_sum,
        )


def _union(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Distinct rows of both, ``a``'s first; categorical columns get the union of categories."""
    a = a.copy()
    b = b.copy()
    for column in a.columns:
        ca, cb = a[column].dtype, b[column].dtype
        if isinstance(ca, pd.CategoricalDtype) and isinstance(cb, pd.CategoricalDtype):
            if list(ca.categories) != list(cb.categories):
                # Categories in order of first appearance, as pyarrow unifies dictionaries.
                extra = [c for c in cb.categories if c not in set(ca.categories)]
                dtype = pd.CategoricalDtype([*ca.categories, *extra], ordered=ca.ordered)
                a[column] = a[column].astype(dtype)
                b[column] = b[column].astype(dtype)
    return pd.concat([a, b], ignore_index=True).drop_duplicates(ignore_index=True)


def _merge_moments(a: tuple[int, float, float], b: tuple[int, float, float]):
    """Combine (count, mean, M2) of two samples (Chan, Golub & LeVeque 1979)."""
    na, ma, sa = a
    nb, mb, sb = b
    if na == 0:
        return b
    if nb == 0:
        return a
    n = na + nb
    delta = mb - ma
    return (n, ma + delta * nb / n, sa + sb + delta * delta * na * nb / n)


def _stateful_calls(node: Node, inside: bool = False) -> list[Call]:
    """``scale()``/``center()`` calls in ``node``; nested ones cannot be streamed."""
    found: list[Call] = []
    stack: list[tuple[Node, bool]] = [(node, inside)]
    while stack:
        sub, within = stack.pop()
        if isinstance(sub, Call):
            hit = sub.func in _STATEFUL
            if hit and within:
                raise DataError(
                    f"{sub.deparse()} inside another scale()/center() needs the data twice; "
                    "for streamed data compute the inner transform as a column first"
                )
            if hit:
                found.append(sub)
            stack.extend((arg, within or hit) for arg in sub.args)
        elif isinstance(sub, BinOp):
            stack.extend(((sub.left, within), (sub.right, within)))
        elif isinstance(sub, UnaryOp):
            stack.append((sub.operand, within))
        elif isinstance(sub, Paren):
            stack.append((sub.inner, within))
    return found


def _variables(formula: ModelFormula) -> list[Variable]:
    """Fixed and random-effects variables, distinct by name, in build_design's order."""
    seen: dict[str, Variable] = {}
    for var in [*formula.fixed.variables, *(v for rt in formula.random for v in rt.lhs.variables)]:
        seen.setdefault(var.name, var)
    return list(seen.values())


def used_columns(formula: ModelFormula, weights: str | None = None) -> tuple[str, ...]:
    """Columns each chunk must hold: the formula's (offsets included) and the weights column."""
    columns = formula.columns_used()
    if weights is not None and weights not in columns:
        columns = (*columns, weights)
    return columns


def _chunk_weights(data: pd.DataFrame, weights: str) -> np.ndarray:
    """Prior weights of complete rows, checked as ``build_design`` checks them."""
    series = data[weights]
    if column_kind(series) not in ("number", "empty"):
        raise DataError(
            f"weights column '{weights}' is not numeric (dtype {series.dtype}); "
            "give a column of non-negative numbers"
        )
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isinf(values).any():
        raise DataError(
            f"weights column '{weights}' has {int(np.isinf(values).sum())} infinite value(s); "
            "weights must be finite, so fix or drop those rows"
        )
    if (values < 0).any():
        raise DataError(
            f"weights column '{weights}' has {int((values < 0).sum())} negative value(s) (the "
            f"smallest is {np.nanmin(values):.6g}); weights must be non-negative"
        )
    return values


def _grouping_columns(formula: ModelFormula) -> list[tuple[str, ...]]:
    keys = [tuple(v.columns[0] for v in rt.grouping) for rt in formula.random]
    return list(dict.fromkeys(keys))


def summarize_chunk(
    formula: ModelFormula,
    data: pd.DataFrame,
    where: str,
    weights: str | None = None,
    *,
    binomial_response: bool = False,
) -> ChunkSummary:
    """Summarise one chunk of rows for :func:`design_from_summary`.

    Parameters
    ----------
    formula
        The parsed formula.
    data
        The chunk; it must hold every column of :func:`used_columns`.
    where
        Where the chunk comes from (file and rows, partition number), for messages.
    weights
        Name of the prior-weights column, if any.
    binomial_response
        Read the response as ``build_design(binomial_response=True)`` does (a binomial
        GLMM): ``cbind(successes, failures)`` (each row's counts checked here, the
        proportions' range and the trials summed) or a two-level column (its values
        collected; the levels are decided over all chunks).

    Raises
    ------
    DataError
        A column is missing, not numeric where it must be, has infinite values, the
        response is not numeric, a weight is negative or infinite, or the formula uses
        ``poly(x, k)`` (orthogonal polynomials need all rows at once); binomial counts
        that are negative, not whole numbers or use ``scale()``.
    ModelSpecificationError
        The response is ``cbind(successes, failures)`` without ``binomial_response``:
        binomial counts need a GLMM.
    """
    if not binomial_response:
        refuse_binomial_counts(formula)
    _refuse_orthogonal_poly(formula)
    columns = list(used_columns(formula, weights))
    frame = _Frame(data, formula, fitting=True)
    try:
        frame.require(columns)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    kinds = {c: (column_kind(data[c]), where) for c in columns}
    keep = ~data[columns].isna().to_numpy().any(axis=1)
    ncomplete = int(keep.sum())
    if ncomplete == 0:
        return ChunkSummary(nrows=len(data), kinds=kinds)
    used = frame.subset(keep)
    try:
        summary = _summarize_complete(formula, used, len(data), ncomplete, kinds, binomial_response)
        if weights is not None:
            summary = replace(summary, weight_sum=float(_chunk_weights(used.data, weights).sum()))
        return summary
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None


def _refuse_orthogonal_poly(formula: ModelFormula) -> None:
    for var in _variables(formula):
        if var.kind == "poly" and not var.raw:
            raise DataError(
                f"{var.name} needs every value of its argument at once (its orthogonal basis "
                "depends on all rows), so it cannot be used with streamed or distributed data; "
                f"use raw powers, {var.name[:-1]}, raw = TRUE), or fit in memory"
            )


def _summarize_complete(
    formula: ModelFormula,
    frame: _Frame,
    nrows: int,
    ncomplete: int,
    kinds: dict[str, tuple[str, str]],
    binomial_response: bool = False,
) -> ChunkSummary:
    distinct: dict[tuple[str, ...], pd.DataFrame] = {}
    moments: dict[str, tuple[int, float, float]] = {}
    response = formula.response
    assert response is not None
    counts = response.kind == "cbind"
    two_levels = (
        binomial_response
        and response.is_plain_column
        and kinds[response.columns[0]][0] in ("text", "logical", "categorical")
    )
    if response.is_plain_column and not two_levels:
        series = frame.series(response.columns[0])
        if kinds[response.columns[0]][0] != "number":
            raise DataError(
                f"the response '{response.columns[0]}' must be numeric, but its dtype is "
                f"{series.dtype}; convert it with pandas.to_numeric or choose another column"
            )
    if counts and any(_stateful_calls(e) for e in response.count_exprs):
        raise DataError(
            f"{response.name}: scale()/center() inside cbind() needs all rows at once; "
            "for streamed data compute the counts as columns first"
        )
    stateful: dict[str, Call] = {}
    for var in [*([] if counts else [response]), *_variables(formula), *formula.offsets]:
        for call in _stateful_calls(var.numeric_expr):
            stateful.setdefault(call.deparse(), call)
    y_range = None
    trials_sum = 0.0
    if counts:
        y, trials = _binomial_counts(response, frame, {}, fitting=False)
        y_range = (float(y.min()), float(y.max()))
        trials_sum = float(trials.sum())
    elif two_levels:
        key = (response.columns[0],)
        distinct[key] = frame.data[list(key)].drop_duplicates(ignore_index=True)
    else:
        inputs = frame.numeric_inputs(response.expr, response.name)
        if not any(_stateful_calls(response.expr)):
            y = np.broadcast_to(
                np.asarray(evaluate_numeric(response.expr, inputs, {}, fitting=False), float),
                (ncomplete,),
            )
            bad = int((~np.isfinite(y)).sum())
            if bad:
                raise DataError(f"the response {response.name} has {bad} non-finite value(s)")
            y_range = (float(y.min()), float(y.max()))
    for var in _variables(formula):
        if _is_factor(var, frame):
            key = (var.columns[0],)
            if key not in distinct:
                distinct[key] = frame.data[list(key)].drop_duplicates(ignore_index=True)
        else:
            frame.numeric_inputs(var.numeric_expr, var.name)  # numeric, finite
    for var in formula.offsets:
        frame.numeric_inputs(var.numeric_expr, var.name)
    for key in _grouping_columns(formula):
        if key not in distinct:
            distinct[key] = frame.data[list(key)].drop_duplicates(ignore_index=True)
    for text, call in stateful.items():
        arg = call.args[0]
        x = evaluate_numeric(arg, frame.numeric_inputs(arg, text), {}, fitting=False)
        x = np.broadcast_to(np.asarray(x, dtype=np.float64), (ncomplete,))
        mean = float(np.mean(x))
        moments[text] = (ncomplete, mean, float(np.sum((x - mean) ** 2)))
    return ChunkSummary(
        nrows=nrows,
        ncomplete=ncomplete,
        kinds=kinds,
        distinct=distinct,
        moments=moments,
        y_range=y_range,
        trials_sum=trials_sum,
    )


# ---------------------------------------------------------------------------------------------
# From the summary to a design
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class StreamedDesign:
    """The design of all rows, known from pass 1, applied one chunk at a time.

    Attributes
    ----------
    formula
        The parsed formula.
    spec
        The spec with every column of the fixed-effects matrix (the rank is decided later).
    nobs
        Number of complete rows (the rows fitted).
    n_dropped_rows
        Rows dropped for missing values.
    re_terms
        Random-effects terms with levels and column names but no rows.
    """

    formula: ModelFormula
    spec: DesignSpec
    nobs: int
    n_dropped_rows: int
    re_terms: tuple[RandomEffectsTerm, ...]

    @property
    def weights_column(self) -> str | None:
        """The prior-weights column, or None."""
        return self.spec.weights_column

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns each chunk must hold (formula, offsets and weights)."""
        return used_columns(self.formula, self.weights_column)

    @property
    def nfixed(self) -> int:
        """Number of fixed-effects columns before the rank check."""
        return len(self.spec.fixed.column_names)

    def complete(self, data: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``data`` with every used column present (the rows fitted)."""
        keep = complete_rows(self.formula, data, self.weights_column)
        # Usually every row is complete: no copy then (a GLMM reads its chunks per step).
        return data if keep.all() else data.loc[keep]

    def chunk_weights_offset(
        self, data: pd.DataFrame
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Return the chunk's prior weights and summed offsets, each float64 (n,) or None.

        ``data`` must hold complete rows only (see :meth:`complete`), as for
        :meth:`chunk_arrays`, whose rows these arrays align with. ``None`` means no
        weights (all ones) or no ``offset(...)`` term.

        Raises
        ------
        DataError
            A weight is negative or infinite, or an offset is not finite.
        """
        weights = None
        if self.weights_column is not None:
            weights = np.ascontiguousarray(_chunk_weights(data, self.weights_column))
        offset = self.spec.offset_values(data)
        if offset is not None and not np.isfinite(offset).all():
            names = " + ".join(v.name for v in self.formula.offsets)
            raise DataError(
                f"{names} gives {int((~np.isfinite(offset)).sum())} non-finite value(s) "
                "(division by zero or overflow?); fix the expression or drop those rows"
            )
        return weights, offset

    def chunk_arrays(
        self, data: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """Return ``X`` (all columns), ``y`` and per random-effects term ``(refs, z)``.

        ``data`` must hold complete rows only (see :meth:`complete`).

        Raises
        ------
        DataError
            A level was not seen in pass 1 (the data changed between passes), or a value
            is not finite.
        """
        X, y, _, rows = self.chunk_glmm_arrays(data)
        return X, y, rows

    def chunk_glmm_arrays(
        self, data: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[tuple[np.ndarray, np.ndarray]]]:
        """Return ``X`` (all columns), ``y``, the binomial trials (or None) and per
        random-effects term ``(refs, z)``; ``y`` and the trials as :meth:`chunk_response`.

        ``data`` must hold complete rows only (see :meth:`complete`).

        Raises
        ------
        DataError
            As :meth:`chunk_arrays`; binomial counts that are negative or fractional.
        """
        X = self.spec.fixed_matrix(data)
        y, trials = self.chunk_response(data)
        rows = self.spec.random_effects_rows(data)
        for (refs, z), term in zip(rows, self.re_terms, strict=True):
            if refs.size and refs.min() < 0:
                raise DataError(
                    f"grouping factor '{term.group}' has a level that was not in the first pass "
                    "over the data; the data changed between passes — fit again"
                )
            if not np.isfinite(z).all():
                raise DataError(f"the random-effects term on '{term.group}' has non-finite values")
        if not np.isfinite(X).all():
            bad = [self.spec.fixed.column_names[j] for j in np.flatnonzero(~np.isfinite(X).all(0))]
            raise DataError(
                f"fixed-effects column(s) {', '.join(bad)} have non-finite values (division by "
                "zero or overflow?); fix the expression or drop those rows"
            )
        if not np.isfinite(y).all():
            raise DataError(
                f"the response {self.formula.response.name} has "  # type: ignore[union-attr]
                f"{int((~np.isfinite(y)).sum())} non-finite value(s)"
            )
        return X, y, trials, rows

    def chunk_response(self, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """The response of ``data`` (complete rows) and its binomial trials (or None).

        As ``build_design`` reads it: ``cbind(successes, failures)`` gives the proportion
        of successes and the trials; a two-level response column (the levels of all rows,
        from pass 1) 0 and 1; anything else the numbers (with the fitted ``scale()``
        parameters).

        Raises
        ------
        DataError
            Binomial counts that are negative or fractional; a response level that was
            not in the first pass.
        """
        response = self.formula.response
        assert response is not None
        if response.kind == "cbind":
            frame = _Frame(data, self.formula, fitting=False)
            state = dict(self.spec.transform_state)
            return _binomial_counts(response, frame, state, fitting=False)
        levels = self.spec.response_levels
        if levels is not None:
            column = response.columns[0]
            codes = FactorLevels(column, tuple(levels)).encode(data[column])
            if codes.size and codes.min() < 0:
                raise DataError(
                    f"the binomial response '{column}' has a value that was not in the first "
                    "pass over the data; the data changed between passes — fit again"
                )
            return codes.astype(np.float64), None
        return response_values(self.spec, data), None

    def model_design(self, kept: tuple[int, ...]) -> ModelDesign:
        """The row-free design with fixed-effects columns ``kept``; warns about dropped ones."""
        names = self.spec.fixed.column_names
        dropped = tuple(name for j, name in enumerate(names) if j not in set(kept))
        if dropped:
            warnings.warn(
                f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
                f"column{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}",
                RankDeficiencyWarning,
                stacklevel=3,
            )
        spec = replace(self.spec, kept_columns=tuple(kept))
        assert self.formula.response is not None
        return ModelDesign(
            y=np.empty(0),
            X=np.empty((0, len(kept))),
            x_names=spec.x_names,
            re_terms=self.re_terms,
            response_name=self.formula.response.name,
            dropped_columns=dropped,
            n_dropped_rows=self.n_dropped_rows,
            row_index=None,
            spec=spec,
        )


def complete_rows(
    formula: ModelFormula, data: pd.DataFrame, weights: str | None = None
) -> np.ndarray:
    """Boolean mask of the rows with no missing value in a used column (weights included)."""
    columns = list(used_columns(formula, weights))
    _Frame(data, formula, fitting=False).require(columns)
    return ~data[columns].isna().to_numpy().any(axis=1)


def response_values(spec: DesignSpec, data: pd.DataFrame) -> np.ndarray:
    """The response of ``data`` (complete rows) with the fitted ``scale()`` parameters."""
    response = spec.formula.response
    if response is None:
        raise DataError("the formula has no response")
    frame = _Frame(data, spec.formula, fitting=False)
    values = evaluate_numeric(
        response.expr,
        frame.numeric_inputs(response.expr, response.name),
        spec.transform_state,
        fitting=False,
    )
    return np.ascontiguousarray(np.broadcast_to(np.asarray(values, dtype=np.float64), (len(data),)))


def design_from_summary(
    formula: ModelFormula,
    summary: ChunkSummary,
    weights: str | None = None,
    *,
    binomial_response: bool = False,
    observation_level_terms: bool = False,
) -> StreamedDesign:
    """Build the design of all rows from the merged pass-1 summary.

    The checks are ``build_design``'s, on all rows: factors need two levels, grouping
    factors need two levels and fewer levels than rows, the response must vary, the
    weights (``weights``: the column given to :func:`summarize_chunk`) must not all be zero.
    ``binomial_response`` and ``observation_level_terms`` mean what they mean for
    ``build_design`` (a GLMM: binomial responses, glmer's checks of the grouping
    factors); the summaries must have been made with the same ``binomial_response``.

    Raises
    ------
    DataError
        No complete rows, a one-level factor, a constant response, a constant ``scale()``
        argument, all-zero weights, or an unusable grouping factor; a binomial response
        without trials or two levels.
    ModelSpecificationError
        The response is ``cbind(successes, failures)`` without ``binomial_response``:
        binomial counts need a GLMM.
    """
    if not binomial_response:
        refuse_binomial_counts(formula)
    n = summary.ncomplete
    if n == 0:
        if summary.nrows == 0:
            raise DataError("no complete rows: the data have no rows")
        raise DataError(
            f"no complete rows: each of the {summary.nrows} rows has a missing value in at "
            f"least one of the columns {', '.join(formula.columns_used())}"
        )
    response = formula.response
    assert response is not None
    kinds = {c: k for c, (k, _) in summary.kinds.items()}
    response_levels = None
    if binomial_response:
        response_levels = _binomial_checks(response, summary, kinds)
    elif summary.y_range is not None and summary.y_range[0] == summary.y_range[1]:
        raise DataError(
            f"the response '{response.name}' is constant (every value is "
            f"{summary.y_range[0]:.6g} in the {n} rows used), so there is no variation to "
            "model; check that the formula uses the right column"
        )
    if weights is not None and not summary.weight_sum > 0:
        raise DataError(
            f"weights column '{weights}' is all zero in the {n} rows used; give positive "
            "weights (a weight is the inverse of a row's relative residual variance)"
        )
    factors = {}
    for var in _variables(formula):
        if var.name in factors or not _is_factor_kind(var, kinds):
            continue
        values = summary.distinct[(var.columns[0],)][var.columns[0]]
        levels, _ = fit_factor(values, var.columns[0], var.reference, var.contrast)
        if levels.nlevels < 2:
            raise DataError(
                f"factor {var.name} has only one level ({levels.levels[0]!r}) in the rows used; "
                "remove it from the formula"
            )
        factors[var.name] = levels
    state: TransformState = {}
    for text, (count, mean, m2) in summary.moments.items():
        sd = math.sqrt(m2 / (count - 1)) if count > 1 else float("nan")
        if text.startswith("scale("):
            if not (sd > 0):
                raise DataError(
                    f"{text}: its argument is constant, so it cannot be scaled; drop it or use "
                    "center()"
                )
            state[text] = (mean, sd)
        else:
            state[text] = (mean, 1.0)
    fixed_plan = _plan(formula.fixed, factors)
    re_terms: list[RandomEffectsTerm] = []
    random_plans: list[RandomPlan] = []
    for rt in formula.random:
        plan = _plan(rt.lhs, factors)
        key = tuple(v.columns[0] for v in rt.grouping)
        grouping, _ = _fit_grouping(
            rt.grouping, _Frame(summary.distinct[key], formula, fitting=True)
        )
        _check_grouping(grouping, n, plan, str(rt), allow_n=observation_level_terms)
        ncols = len(plan.column_names)
        blocks = [tuple(range(ncols))] if rt.correlated else [(j,) for j in range(ncols)]
        for cols in blocks:
            re_terms.append(
                RandomEffectsTerm(
                    group=grouping.name,
                    levels=grouping.levels,
                    refs=np.empty(0, dtype=np.int64),
                    z=np.empty((0, len(cols))),
                    column_names=tuple(plan.column_names[j] for j in cols),
                )
            )
            random_plans.append(RandomPlan(plan, cols, grouping))
    spec = DesignSpec(
        formula,
        factors,
        state,
        fixed_plan,
        tuple(range(len(fixed_plan.column_names))),
        tuple(random_plans),
        weights,
        response_levels,
    )
    return StreamedDesign(
        formula=formula,
        spec=spec,
        nobs=n,
        n_dropped_rows=summary.nrows - n,
        re_terms=tuple(re_terms),
    )


def _binomial_checks(
    response: Variable, summary: ChunkSummary, kinds: dict[str, str]
) -> tuple[str, ...] | None:
    """``build_design``'s checks of a binomial response, on all rows; the levels of a
    two-level response column (failure, success), else None."""
    n = summary.ncomplete
    if response.kind == "cbind":
        check_has_trials(response, summary.trials_sum, n)
        subject, source = f"the proportion of successes of {response.name}", "columns"
    elif response.is_plain_column and kinds.get(response.columns[0]) in (
        "text",
        "logical",
        "categorical",
    ):
        column = response.columns[0]
        levels, _ = fit_factor(summary.distinct[(column,)][column], column)
        check_two_levels(levels, column, n)
        return levels.levels
    else:
        subject, source = f"the binomial response '{response.name}'", "column"
    if summary.y_range is not None:
        check_binomial_range(*summary.y_range, n, subject, source)
    return None


def _is_factor_kind(var: Variable, kinds: dict[str, str]) -> bool:
    """build_design's ``_is_factor`` from the merged column kinds."""
    if var.kind == "factor":
        return True
    if var.kind != "column":  # transforms, poly(), offset(): numeric
        return False
    return kinds.get(var.columns[0]) in ("text", "categorical", "logical")


# ---------------------------------------------------------------------------------------------
# Rank of X from its cross products
# ---------------------------------------------------------------------------------------------
def independent_columns_from_gram(
    xtx: np.ndarray, tol: float = RANK_TOLERANCE
) -> tuple[tuple[int, ...], bool]:
    """Columns of X to keep, decided from ``X'X``; and whether the decision is too close.

    The same sequential test as ``build_design`` (keep a column unless its residual on
    the kept earlier columns is below ``tol`` times its norm). When ambiguous, decide with
    :func:`independent_columns_from_r` instead.
    """
    p = xtx.shape[0]
    if p == 0:
        return (), False
    norms = np.sqrt(np.clip(np.diag(xtx), 0.0, None))
    nonzero = norms > 0
    index = np.flatnonzero(nonzero)
    gram = xtx[np.ix_(index, index)] / np.outer(norms[index], norms[index])
    kept_sub, ambiguous = _sequential_pivots(gram, tol**2, margin=100.0)
    return tuple(int(index[j]) for j in kept_sub), ambiguous


def independent_columns_from_r(R: np.ndarray, tol: float = RANK_TOLERANCE) -> tuple[int, ...]:
    """Columns of X to keep, from the triangular factor R of a QR decomposition of X."""
    norms = np.sqrt(np.einsum("ij,ij->j", R, R))
    nonzero = norms > 0
    index = np.flatnonzero(nonzero)
    kept_sub = _sequential_residuals(R[:, index] / norms[index], tol)
    return tuple(int(index[j]) for j in kept_sub)
