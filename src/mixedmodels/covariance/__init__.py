"""Random-effects covariance: terms grouped by factor and their relative Cholesky templates."""

from mixedmodels.covariance.structure import CovarianceStructure, GroupedTerm, group_terms

__all__ = ["CovarianceStructure", "GroupedTerm", "group_terms"]
