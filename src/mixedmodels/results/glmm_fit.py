"""What a GLMM fit hands its result: the optimum and the pieces computed there.

The contract between :mod:`mixedmodels.models.glmm` (which fits) and
:class:`mixedmodels.results.glmm.GeneralizedLinearMixedModelResult` (which reports). All
arrays are read-only; everything a result shows is computed from these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixedmodels.design.model_design import ModelDesign, hold_read_only


@dataclass(frozen=True, eq=False)
class GlmmFit:
    """The optimum of a generalized linear mixed model and what follows from it.

    Attributes
    ----------
    design
        The numeric design (``design.y`` is the response as the family sees it: 0/1 or the
        proportion of successes for a binomial ``cbind`` response; ``design.trials`` the
        number of trials per row or None).
    family
        The :class:`mixedmodels.family.Family` (with its link; the negative binomial's
        ``theta`` set to the estimate).
    terms
        The grouped random-effects terms in engine order (``CovarianceStructure.terms``).
    structure
        The :class:`mixedmodels.covariance.CovarianceStructure` of those terms.
    nagq
        0 (lme4's fast mode), 1 (Laplace) or the number of adaptive Gauss-Hermite nodes.
    theta
        Relative covariance parameters (lme4's order within each term; terms in engine
        order). There is no residual scale: the covariance of term k is ``T_k T_k'``.
    beta
        Fixed effects, in the order of ``design.x_names``.
    vcov_beta
        Covariance of beta-hat as lme4's default ``vcov()``: for nagq >= 1 the beta block
        of ``2 H^{-1}``, H the Hessian of the deviance over (theta, beta) jointly; for
        nagq = 0 the inverse information at fixed theta (``vcov_beta_rx``).
    vcov_beta_rx
        ``vcov(use.hessian = FALSE)``: inverse information of beta at fixed theta from the
        final PIRLS step.
    b
        Conditional modes per term (engine order), each (levels, ncols).
    b_condvar
        Conditional covariance of the modes per term, each (levels, ncols, ncols).
    eta
        Linear predictor per row at the optimum (offset included); None for a fit of
        streamed or Dask data, which keeps no rows.
    mu
        Conditional mean per row (response scale); None as ``eta``.
    prior_weights
        The weights the family sees per row (prior weights times binomial trials), or all
        ones; None as ``eta``.
    loglik
        lme4's ``logLik``: the Laplace approximation (nagq <= 1) or the AGQ value
        computed from deviance residuals (nagq > 1; omits the saturated log-likelihood).
    loglik_marginal
        The approximation of the full marginal log-likelihood (= ``loglik`` for nagq <= 1;
        ``loglik`` plus the saturated log-likelihood for nagq > 1).
    deviance
        lme4's ``deviance()``: the sum of squared deviance residuals at the modes.
    nparams
        Parameters counted in AIC/BIC: len(theta) + len(beta) (+ 1 for the negative
        binomial's theta).
    converged, singular
        Optimiser convergence (and the gradient check), and a boundary (singular) fit.
    messages
        Warnings raised during the fit (already emitted), for the summary.
    optimizer
        Free-form facts about the optimisation (evaluations, stages, time).
    formula
        The formula text.
    data_name
        What the data were called, or None.
    offset
        The offset per row (None without one).
    nobs
        Number of rows fitted (None: ``design.nobs``; a streamed design holds no rows).
    pearson_chisq
        The Pearson statistic ``sum (y - mu)^2 w / V(mu)`` when the fit keeps no rows to
        compute it from (else None).
    refitter
        Refits the model to a new response (``refit(y) -> (theta, beta, -2 loglik,
        nb_theta)``): the parametric bootstrap's, set by the model (results cannot import
        models). None for a fit without rows (streamed or Dask data).
    """

    design: ModelDesign
    family: Any
    terms: tuple
    structure: Any
    nagq: int
    theta: np.ndarray
    beta: np.ndarray
    vcov_beta: np.ndarray
    vcov_beta_rx: np.ndarray
    b: tuple[np.ndarray, ...]
    b_condvar: tuple[np.ndarray, ...]
    eta: np.ndarray | None
    mu: np.ndarray | None
    prior_weights: np.ndarray | None
    loglik: float
    loglik_marginal: float
    deviance: float
    nparams: int
    converged: bool
    singular: bool
    messages: tuple[str, ...] = ()
    optimizer: dict[str, Any] = field(default_factory=dict)
    formula: str | None = None
    data_name: str | None = None
    offset: np.ndarray | None = None
    nobs: int | None = None
    pearson_chisq: float | None = None
    refitter: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        hold_read_only(
            self, "theta", "beta", "vcov_beta", "vcov_beta_rx", "eta", "mu", "prior_weights"
        )
        object.__setattr__(self, "b", tuple(_read_only(a) for a in self.b))
        object.__setattr__(self, "b_condvar", tuple(_read_only(a) for a in self.b_condvar))


def _read_only(a: np.ndarray) -> np.ndarray:
    view = np.asarray(a).view()
    view.setflags(write=False)
    return view
