"""Exception and warning classes shared by every layer.

Every error says what is wrong, where (column, formula position) and what to do.
The CLI prints ``str(error)`` on one line and exits non-zero.
"""

from __future__ import annotations


class MixedModelsError(Exception):
    """Base class of every error this package raises on purpose."""


class FormulaError(MixedModelsError, ValueError):
    """A model formula that cannot be parsed or does not fit the data.

    Parameters
    ----------
    message
        What is wrong and how to fix it.
    formula
        The formula text, if known.
    position
        0-based character offset of the problem in ``formula``, if known.
    """

    def __init__(self, message: str, formula: str | None = None, position: int | None = None):
        self.message = message
        self.formula = formula
        self.position = position
        text = message
        if formula is not None and position is not None:
            marked = f"{formula[:position]}<HERE>{formula[position:]}"
            text = f"{message} (at position {position}: {marked})"
        super().__init__(text)


class DataError(MixedModelsError, ValueError):
    """Data that cannot be used as given (missing column, wrong type, too few rows...)."""


class InputFileError(DataError):
    """A data file that cannot be found, opened or parsed."""


class ModelSpecificationError(MixedModelsError, ValueError):
    """A model that cannot be estimated from these data (e.g. more random effects than rows)."""


class FamilyError(ModelSpecificationError):
    """An unknown GLMM family, a link the family does not allow, or an unusable parameter.

    A :class:`ModelSpecificationError`, so code that catches that catches this too.
    """


class ModelComparisonError(MixedModelsError, ValueError):
    """Models that cannot be compared (not nested, different data or response)."""


class ConvergenceError(MixedModelsError, RuntimeError):
    """The optimiser failed outright (non-finite deviance at the start, etc.)."""


class MixedModelsWarning(UserWarning):
    """Base class of the warnings this package issues; filter it to silence them all."""


class ConvergenceWarning(MixedModelsWarning):
    """The optimum may not have been reached (gradient or Hessian check failed)."""


class SingularFitWarning(MixedModelsWarning):
    """The fit is on the boundary: a variance is zero or a correlation is +-1."""


class RankDeficiencyWarning(MixedModelsWarning):
    """Fixed-effects columns were dropped because X is rank deficient."""


class ResponseWarning(MixedModelsWarning):
    """The response is usable by the family but doubtful (e.g. non-integer counts)."""


#: What to use instead of a normal-theory residual check on a GLMM.
GLMM_RESIDUAL_CHECKS = (
    "use mm.simulated_residuals(fit) and mm.plots.simulated_residual_panels (DHARMa-style "
    "checks for GLMMs)"
)


def refuse_generalized(fit: object, what: str, instead: str) -> None:
    """Raise a one-line error when ``fit`` is a generalized linear mixed model (or GLM)
    and ``what`` is only available for linear (mixed) models; ``instead`` says what to use.

    A method must never silently treat a GLMM as a linear model (a residual variance,
    t statistics with Satterthwaite df): it refuses here instead.
    """
    if hasattr(fit, "family") and hasattr(fit, "nagq"):
        raise ModelSpecificationError(
            f"{what} is not available for generalized linear mixed models yet; {instead}"
        )


def refuse_repeated(fit: object, what: str, instead: str) -> None:
    """Raise a one-line error when ``fit`` has a residual correlation or variance function
    (repeated measures) and ``what`` cannot account for it; ``instead`` says what to use.

    Such a method would treat the residuals as independent with one variance: a silently
    wrong number, so it refuses here instead.
    """
    model = getattr(fit, "model", None)
    if getattr(model, "repeated", None) is not None:
        raise ModelSpecificationError(
            f"{what} is not available for fits with a residual correlation or variance "
            f"function yet; {instead}"
        )
