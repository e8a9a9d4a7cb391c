"""Optimisation of a model's objective: BOBYQA, the finish of the optimum, and its check."""

from mixedmodels.optimize.bobyqa import OptimizerOptions, OptSummary, minimize_bobyqa
from mixedmodels.optimize.check import check_convergence
from mixedmodels.optimize.finish import (
    cholesky_or_none,
    gradient_differences,
    gradient_is_small,
    minimize_with_restart,
    newton_finish,
    newton_first,
    newton_polish,
    polish,
    snap_to_bounds,
)

__all__ = [
    "OptSummary",
    "OptimizerOptions",
    "check_convergence",
    "cholesky_or_none",
    "gradient_differences",
    "gradient_is_small",
    "minimize_bobyqa",
    "minimize_with_restart",
    "newton_finish",
    "newton_first",
    "newton_polish",
    "polish",
    "snap_to_bounds",
]
