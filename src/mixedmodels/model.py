"""The linear mixed model: design -> cross products -> profiled deviance -> fit.

lme4's four public stages (``lFormula`` -> ``mkLmerDevfun`` -> ``optimizeLmer`` ->
``mkMerMod``) appear here as ``build_design`` (design/), :class:`LinearMixedModel` (cross
products and the deviance function), :meth:`LinearMixedModel.fit` (optimisation and
checks) and :class:`~mixedmodels.results.LinearMixedModelResult` (immutable results).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from .covariance import CovarianceStructure, group_terms
from .design.model_design import ModelDesign
from .deviance import ProfiledDeviance
from .errors import ConvergenceWarning, ModelSpecificationError, SingularFitWarning
from .linalg.cross_products import compute_cross_products
from .optimize import OptimizerOptions, check_convergence, minimize_bobyqa
from .results import LinearMixedModelResult


class LinearMixedModel:
    """A linear mixed model ready to fit: cross products formed once, deviance built once.

    Parameters
    ----------
    design
        The numeric design (see :func:`mixedmodels.design.build_design`).
    reml
        Fit by REML (default, as lme4) or ML.
    formula
        The formula text, for display.
    data_name
        What the data were called, for display.
    """

    def __init__(
        self,
        design: ModelDesign,
        *,
        reml: bool = True,
        formula: str | None = None,
        data_name: str | None = None,
    ):
        self.design = design
        self.reml = bool(reml)
        self.formula = formula
        self.data_name = data_name
        n, p = design.X.shape
        if not design.re_terms:
            raise ModelSpecificationError(
                "the formula has no random-effects term such as (1 | group); "
                "add one, or fit an ordinary linear model instead"
            )
        if n <= p:
            raise ModelSpecificationError(
                f"{n} observations but {p} fixed-effect coefficients: the model cannot be "
                "estimated; use fewer fixed-effect terms"
            )
        for term in design.re_terms:
            if term.nranef >= n:
                raise ModelSpecificationError(
                    f"number of observations ({n}) <= number of random effects ({term.nranef}) "
                    f"for term ({' + '.join(term.column_names)} | {term.group}); the "
                    "random-effects variances and the residual variance are not identifiable: "
                    "simplify the random-effects structure"
                )
        self.terms = group_terms(design.re_terms)
        self.structure = CovarianceStructure.from_terms(self.terms)
        self.cross_products = compute_cross_products(self.terms, design.X, design.y)
        self._deviances: dict[bool, ProfiledDeviance] = {}

    def deviance_function(self, reml: bool | None = None) -> ProfiledDeviance:
        """The profiled deviance (REML or ML) as a function of theta; built once and cached."""
        key = self.reml if reml is None else bool(reml)
        if key not in self._deviances:
            self._deviances[key] = ProfiledDeviance(self.structure, self.cross_products, reml=key)
        return self._deviances[key]

    def fit(
        self,
        *,
        reml: bool | None = None,
        start: np.ndarray | None = None,
        options: OptimizerOptions | None = None,
    ) -> LinearMixedModelResult:
        """Optimise theta and return immutable results.

        Parameters
        ----------
        reml
            Override the model's REML flag for this fit (e.g. ML refits for LRTs).
        start
            Starting theta (default: lme4's, identity templates).
        options
            Optimiser tolerances.
        """
        use_reml = self.reml if reml is None else bool(reml)
        dev = self.deviance_function(use_reml)
        theta0 = self.structure.initial_theta() if start is None else np.asarray(start, float)
        lower = self.structure.lower_bounds()
        summary = minimize_bobyqa(dev, theta0, lower, options)
        summary = check_convergence(dev, summary)
        result = LinearMixedModelResult(
            model=self, deviance_function=dev, opt=summary, reml=use_reml
        )
        for msg in summary.messages:
            warnings.warn(msg, ConvergenceWarning, stacklevel=2)
        if result.singular:
            warnings.warn(
                "boundary (singular) fit: a random-effect variance is estimated as 0 or a "
                "correlation as +-1; consider simplifying the random-effects structure",
                SingularFitWarning,
                stacklevel=2,
            )
        return result


def lmer(
    formula: str,
    data: Any,
    *,
    reml: bool = True,
    start: np.ndarray | None = None,
    control: OptimizerOptions | None = None,
) -> LinearMixedModelResult:
    """Fit a linear mixed model given in lme4 formula syntax.

    Parameters
    ----------
    formula
        lme4 syntax, e.g. ``"weight ~ treatment + sex + litsize + (1 | litter)"``. The
        formula is parsed, never evaluated as Python.
    data
        A pandas DataFrame, a path to a CSV or Parquet file, or the name of an embedded
        dataset (``"ratpup"``).
    reml
        REML (default) or ML estimation.
    start
        Starting values for theta.
    control
        Optimiser options.

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
    from .design import build_design
    from .io import read_data

    data_name = data if isinstance(data, str) else None
    frame = read_data(data)
    if not isinstance(frame, pd.DataFrame):  # pragma: no cover - read_data guarantees it
        raise TypeError("data must be a pandas DataFrame, a file path or a dataset name")
    design = build_design(formula, frame)
    model = LinearMixedModel(design, reml=reml, formula=formula, data_name=data_name)
    return model.fit(start=start, options=control)
