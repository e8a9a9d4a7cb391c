"""Entry points: ``lmer`` fits a formula to in-memory, streamed or Dask data.

Chooses the route by the kind of data (a DataFrame, file or dataset name in memory; a
glob, folder or list of Parquet files, a DuckDB query or a Dask DataFrame in chunks), builds
the design and the model, and fits it. The stages it calls are public on their own
(``build_design`` -> ``LinearMixedModel`` -> ``fit``), as lme4's ``lFormula`` ->
``mkLmerDevfun`` -> ``optimizeLmer`` -> ``mkMerMod``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.design import build_design
from mixedmodels.design.model_design import ModelDesign
from mixedmodels.errors import DataError, ModelSpecificationError
from mixedmodels.inference.glm import glm  # re-exported: the CLI's null model without RE
from mixedmodels.io import read_data
from mixedmodels.io.frames import as_pandas, is_arrow_like
from mixedmodels.io.sources import is_streamed_source
from mixedmodels.models.lmm import LinearMixedModel
from mixedmodels.models.streamed import lmer_streamed
from mixedmodels.optimize import OptimizerOptions
from mixedmodels.residual.var_ident import ResidualStrata, residual_strata
from mixedmodels.results import LinearMixedModelResult

__all__ = ["glm", "glmer", "lmer"]


def lmer(
    formula: str,
    data: Any,
    *,
    reml: bool = True,
    weights: str | Sequence[float] | np.ndarray | pd.Series | None = None,
    residual_groups: str | None = None,
    residual_pooling: Mapping[str, Sequence[object]] | None = None,
    residual_reference: str | None = None,
    correlation: str | None = None,
    variance: str | None = None,
    start: np.ndarray | None = None,
    control: OptimizerOptions | None = None,
    chunk_rows: int | None = None,
    progress: bool = True,
) -> LinearMixedModelResult:
    """Fit a linear mixed model given in lme4 formula syntax.

    Parameters
    ----------
    formula
        lme4 syntax, e.g. ``"weight ~ treatment + sex + litsize + (1 | litter)"``. The
        formula is parsed, never evaluated as Python.
    data
        A pandas DataFrame, a path to a CSV or Parquet file, or the name of an embedded
        dataset (``"ratpup"``). Data larger than memory are streamed in chunks: a glob or a
        folder of Parquet files (``"events/*.parquet"``), a list of files or DataFrames,
        ``mm.duckdb_query(sql)``, or a Dask DataFrame (map-reduced on its cluster).
    reml
        REML (default) or ML estimation.
    weights
        Prior weights, as lme4's ``weights=``: a column name or an array with one value per
        row of ``data``; row ``i`` has residual variance ``sigma^2 / w_i``. Offsets are
        written in the formula: ``y ~ x + offset(log(exposure)) + (1 | g)`` (coefficient 1;
        several add up).
    residual_groups
        A column whose groups get their own residual variance (nlme's
        ``weights = varIdent(form = ~ 1 | column)``); None for one residual variance.
    residual_pooling
        Levels of ``residual_groups`` that share a variance, e.g.
        ``{"High/Low": ["High", "Low"]}`` (West et al.'s Model 3.2B).
    residual_reference
        The stratum whose SD ratio is 1 (default: the first in sorted order).
    correlation
        Residual correlation within groups (nlme's ``correlation=``; see
        docs/repeated-measures.md): ``"cs(1 | g)"`` (compound symmetry), ``"ar1(t | g)"``
        (AR(1) over integer times), ``"car1(t | g)"`` (continuous time), ``"us(t | g)"``
        (unstructured, an SD per level of t). Specs are parsed, never evaluated.
    variance
        Residual variance function (nlme's ``weights=``): ``"power(fitted)"``,
        ``"power(x)"``, ``"exp(x)"``, ``"ident(x)"`` (the same as ``residual_groups=x``).
        With ``correlation`` or ``variance`` the formula may have no random-effects term
        (nlme's ``gls``).
    start
        Starting values for theta (followed by the log SD ratios with residual groups).
    control
        Optimiser options.
    chunk_rows
        Stream the data in chunks of this many rows (default for streamed sources: 500,000).
    progress
        Show a progress bar on stderr while streaming.

    Returns
    -------
    LinearMixedModelResult

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("Reaction ~ Days + (Days | Subject)", "sleepstudy")
    >>> round(fit.fixef["Days"], 4)
    10.4673
    """
    data = _pandas_input(data, formula, weights, residual_groups)
    # A DataFrame is read into memory unless chunk_rows asks otherwise (is_streamed_source
    # answers for a DataFrame before its slower Protocol check).
    from mixedmodels.residual.specs import parse_correlation, parse_variance

    corr_spec, var_spec = parse_correlation(correlation), parse_variance(variance)
    if var_spec is not None and var_spec.kind == "ident" and corr_spec is None:
        if residual_groups is not None and residual_groups != var_spec.covariate:
            raise ModelSpecificationError(
                "give the residual groups once: residual_groups= or variance='ident(...)'"
            )
        residual_groups, var_spec = var_spec.covariate, None  # the same model (varIdent)
    repeated = corr_spec is not None or var_spec is not None
    if chunk_rows is not None or is_streamed_source(data):
        if repeated:
            raise ModelSpecificationError(
                "residual correlation and variance functions are not available for streamed "
                "or Dask data; fit an in-memory DataFrame instead"
            )
        if residual_groups is not None:
            raise ModelSpecificationError(
                "residual_groups is not available for streamed or Dask data yet; "
                "fit an in-memory DataFrame instead"
            )
        return lmer_streamed(
            formula,
            data,
            reml=reml,
            weights=_weights_column(weights),
            chunk_rows=chunk_rows,
            progress=progress,
            start=start,
            control=control,
        )
    data_name = data if isinstance(data, str) else None
    frame = read_data(data)
    if not isinstance(frame, pd.DataFrame):  # pragma: no cover - read_data guarantees it
        raise TypeError("data must be a pandas DataFrame, a file path or a dataset name")
    strata = None
    if repeated:
        if residual_groups is not None:
            raise ModelSpecificationError(
                "residual_groups cannot be combined with correlation= or variance=; write the "
                "groups as variance='ident(column)'"
            )
        design, structure_frame = _design_with_structure(
            formula, frame, corr_spec, var_spec, weights
        )
        model = LinearMixedModel(
            design,
            reml=reml,
            formula=formula,
            data_name=data_name,
            correlation=corr_spec,
            variance=var_spec,
            structure_frame=structure_frame,
        )
        return model.fit(start=start, options=control)
    if residual_groups is None:
        if residual_pooling is not None or residual_reference is not None:
            raise ModelSpecificationError(
                "residual_pooling and residual_reference need residual_groups=<column>"
            )
        design = build_design(formula, frame, weights=weights)
    else:
        design, strata = _design_with_strata(
            formula, frame, residual_groups, residual_pooling, residual_reference, weights
        )
    model = LinearMixedModel(
        design, reml=reml, formula=formula, data_name=data_name, residual_strata=strata
    )
    return model.fit(start=start, options=control)


def _design_with_strata(
    formula: str,
    frame: pd.DataFrame,
    column: str,
    pooling: Mapping[str, Sequence[object]] | None,
    reference: str | None,
    weights: Any = None,
) -> tuple[ModelDesign, ResidualStrata]:
    """Build the design on rows where ``column`` is present, and the strata of those rows."""
    import difflib

    if column not in frame.columns:
        close = difflib.get_close_matches(column, [str(c) for c in frame.columns], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"residual groups column {column!r} is not in the data{hint}")
    present = frame[column].notna().to_numpy()
    used = frame.loc[present].reset_index(drop=True)
    if weights is not None and not isinstance(weights, str):
        values = np.asarray(weights)
        if values.ndim != 1 or values.shape[0] != len(frame):
            raise DataError(
                f"weights has {values.shape[0] if values.ndim == 1 else values.shape} values "
                f"but the data have {len(frame)} rows; pass one weight per row (or a column name)"
            )
        weights = values[present]
    design = build_design(formula, used, weights=weights)
    positions = np.asarray(design.row_index)
    original_index = frame.index[present][positions]
    design = replace(
        design,
        row_index=original_index,
        n_dropped_rows=design.n_dropped_rows + int((~present).sum()),
    )
    strata = residual_strata(used[column].iloc[positions], column, pooling, reference)
    return design, strata


def _pandas_input(data: Any, formula: str, *extra: Any) -> Any:
    """A polars or pyarrow table as a pandas DataFrame of the columns the model reads
    (the formula's, and ``extra`` names: weights, residual groups); anything else as is."""
    if not is_arrow_like(data):
        return data
    from mixedmodels.formula import parse_formula

    try:
        columns = list(parse_formula(formula).columns_used())
    except Exception:  # the design stage reports a bad formula with its position
        return as_pandas(data)
    columns += [c for c in extra if isinstance(c, str)]
    return as_pandas(data, columns)


def _design_with_structure(
    formula: str, frame: pd.DataFrame, correlation: Any, variance: Any, weights: Any
) -> tuple[ModelDesign, pd.DataFrame]:
    """The design on rows where the residual structure's columns are present, and those
    columns for the rows of the design (in its order)."""
    import difflib

    from mixedmodels.residual.repeated import structure_columns

    columns = structure_columns(correlation, variance)
    for column in columns:
        if column not in frame.columns:
            close = difflib.get_close_matches(column, [str(c) for c in frame.columns], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataError(f"column {column!r} of the residual structure is not in the data{hint}")
    present = frame[columns].notna().all(axis=1).to_numpy()
    used = frame.loc[present].reset_index(drop=True)
    if weights is not None and not isinstance(weights, str):
        weights = np.asarray(weights)[present]
    design = build_design(formula, used, weights=weights)
    positions = np.asarray(design.row_index)
    design = replace(
        design,
        row_index=frame.index[present][positions],
        n_dropped_rows=design.n_dropped_rows + int((~present).sum()),
    )
    return design, used.iloc[positions].reset_index(drop=True)


def _weights_column(weights: Any) -> str | None:
    """Streamed data give weights by column name only (an array cannot follow the chunks)."""
    if weights is None or isinstance(weights, str):
        return weights
    raise ModelSpecificationError(
        "for streamed or Dask data, give weights as a column name (weights='w'), not an array"
    )


def glmer(
    formula: str,
    data: Any,
    *,
    family: Any = "binomial",
    link: str | None = None,
    nagq: int = 1,
    weights: str | Sequence[float] | np.ndarray | pd.Series | None = None,
    start: np.ndarray | None = None,
    chunk_rows: int | None = None,
    progress: bool = True,
):
    """Fit a generalized linear mixed model given in lme4 formula syntax (lme4's ``glmer``).

    Parameters
    ----------
    formula
        lme4 syntax. A binomial response may be 0/1, a two-level factor (the second level,
        in sorted order, is a success, as R), or ``cbind(successes, failures)``; a
        proportion takes its number of trials through ``weights=``. Offsets are written in
        the formula: ``y ~ x + offset(log(exposure)) + (1 | g)``.
    data
        A pandas DataFrame, a path to a CSV or Parquet file, or an embedded dataset name.
        Data larger than memory are streamed in chunks, as for :func:`lmer`: a glob or a
        folder of Parquet files, a list of files or DataFrames, ``mm.duckdb_query(sql)``,
        or a Dask DataFrame (map-reduced on its cluster). Each PIRLS step is then one
        pass over the data (:mod:`mixedmodels.models.glmm_streamed`); the fit equals the
        in-memory one, and fitted values and residuals are computed chunk by chunk with
        ``fit.predict(chunk)``.
    family
        ``"binomial"``, ``"poisson"``, ``"negative-binomial"`` or a family object
        (:func:`mixedmodels.family.binomial` etc.). The negative binomial's dispersion
        ``theta`` (``var = mu + mu^2 / theta``) is estimated unless the object fixes it.
    link
        A link other than the canonical one: ``"probit"``, ``"cloglog"`` (binomial);
        ``"identity"``, ``"sqrt"`` (Poisson, negative binomial).
    nagq
        1: the Laplace approximation (default, as lme4); k > 1: adaptive Gauss-Hermite
        quadrature with k nodes (one scalar random-effects term only); 0: lme4's fast
        mode (beta estimated inside PIRLS).
    weights
        Prior weights (a column or one value per row): for a binomial proportion, the
        number of trials. Streamed data take a column name.
    start
        Starting values for theta.
    chunk_rows
        Stream the data in chunks of this many rows (default for streamed sources: 500,000).
    progress
        Show the passes over streamed or Dask data on stderr (in-memory fits show
        nothing).

    Returns
    -------
    GeneralizedLinearMixedModelResult

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.glmer("cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
    ...                "cbpp", family="binomial")   # doctest: +SKIP
    """
    from mixedmodels.family import make_family
    from mixedmodels.models.glmm import GeneralizedLinearMixedModel
    from mixedmodels.results.glmm import GeneralizedLinearMixedModelResult

    fam = make_family(family, link)
    data = _pandas_input(data, formula, weights)
    if chunk_rows is not None or is_streamed_source(data):
        from mixedmodels.models.glmm_streamed import glmer_streamed

        return glmer_streamed(
            formula,
            data,
            family=fam,
            nagq=nagq,
            weights=_weights_column(weights),
            chunk_rows=chunk_rows,
            progress=progress,
            start=start,
        )
    data_name = data if isinstance(data, str) else None
    frame = read_data(data)
    design = build_design(
        formula,
        frame,
        weights=weights,
        binomial_response=fam.name == "binomial",
        observation_level_terms=True,
    )
    model = GeneralizedLinearMixedModel(
        design, fam, nagq=nagq, formula=formula, data_name=data_name
    )
    return GeneralizedLinearMixedModelResult(model.fit(start=start, progress=progress))
