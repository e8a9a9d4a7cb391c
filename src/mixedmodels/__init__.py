"""mixedmodels: linear mixed-effects models in Python, checked against R's lme4.

>>> import mixedmodels as mm
>>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
>>> print(fit.summary())  # doctest: +SKIP

The public names are imported on first use, so ``import mixedmodels`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "lmer": "mixedmodels.api",
    "glmer": "mixedmodels.api",
    "glm": "mixedmodels.inference.glm",
    "GeneralizedLinearMixedModel": "mixedmodels.models.glmm",
    "binomial": "mixedmodels.family",
    "poisson": "mixedmodels.family",
    "negative_binomial": "mixedmodels.family",
    "LinearMixedModel": "mixedmodels.models.lmm",
    "LinearMixedModelResult": "mixedmodels.results",
    "GeneralizedLinearMixedModelResult": "mixedmodels.results",
    "OptimizerOptions": "mixedmodels.optimize",
    "OptSummary": "mixedmodels.optimize",
    "load_dataset": "mixedmodels.datasets",
    "list_datasets": "mixedmodels.datasets",
    "read_data": "mixedmodels.io",
    "parse_formula": "mixedmodels.formula",
    "build_design": "mixedmodels.design",
    "analyze": "mixedmodels.report",
    "AnalysisReport": "mixedmodels.report",
    "mixedlm": "mixedmodels.compat",
    "summary_by": "mixedmodels.describe",
    "emmeans": "mixedmodels.inference.emmeans",
    "MarginalMeans": "mixedmodels.inference.emmeans",
    "compare": "mixedmodels.inference.lrt",
    "lrt": "mixedmodels.inference.lrt",
    "lm": "mixedmodels.inference.linear_model",
    "confint": "mixedmodels.inference.profile",
    "profile": "mixedmodels.inference.profile",
    "bootstrap": "mixedmodels.inference.bootstrap",
    "bootstrap_compare": "mixedmodels.inference.bootstrap",
    "simulate": "mixedmodels.inference.bootstrap",
    "power": "mixedmodels.power_analysis",
    "power_curve": "mixedmodels.power_analysis",
    "extend_data": "mixedmodels.power_analysis",
    "PowerResult": "mixedmodels.power_analysis",
    "PowerCurve": "mixedmodels.power_analysis",
    "icc": "mixedmodels.diagnostics.icc",
    "simulated_residuals": "mixedmodels.diagnostics.simulated_residuals",
    "SimulatedResiduals": "mixedmodels.diagnostics.simulated_residuals",
    "ModelComparisonError": "mixedmodels.errors",
    "duckdb_query": "mixedmodels.io.duckdb_source",
    "lmer_streamed": "mixedmodels.models.streamed",
    "write_predictions": "mixedmodels.results.streamed",
    "sample_residuals": "mixedmodels.results.streamed",
    "lmer_dask": "mixedmodels.models.dask_fit",
    "MixedModelsError": "mixedmodels.errors",
    "FormulaError": "mixedmodels.errors",
    "DataError": "mixedmodels.errors",
    "InputFileError": "mixedmodels.errors",
    "ModelSpecificationError": "mixedmodels.errors",
    "ConvergenceError": "mixedmodels.errors",
    "MixedModelsWarning": "mixedmodels.errors",
    "ConvergenceWarning": "mixedmodels.errors",
    "SingularFitWarning": "mixedmodels.errors",
    "RankDeficiencyWarning": "mixedmodels.errors",
}

__all__ = [*sorted(_PUBLIC), "__version__"]


# public submodules, imported on first attribute access (``mm.plots.qq(fit)``)
_SUBMODULES = ("plots", "datasets", "inference", "diagnostics", "report")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value = importlib.import_module(f"mixedmodels.{name}")
        globals()[name] = value
        return value
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'mixedmodels' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
