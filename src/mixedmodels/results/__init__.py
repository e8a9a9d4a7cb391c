"""Immutable results of fits."""

from mixedmodels.results.lmm import LinearMixedModelResult

__all__ = ["LinearMixedModelResult"]
