"""Immutable results of fits."""

from mixedmodels.results.glmm import GeneralizedLinearMixedModelResult, Overdispersion
from mixedmodels.results.lmm import LinearMixedModelResult

__all__ = ["GeneralizedLinearMixedModelResult", "LinearMixedModelResult", "Overdispersion"]
