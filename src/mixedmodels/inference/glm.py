"""Generalized linear models without random effects (R's ``glm``), for "GLMM vs no random
effects" likelihood-ratio tests.

Fitted by iteratively reweighted least squares (McCullagh & Nelder 1989, sec. 2.5; R's
``glm.fit``): from the family's starting means, each step solves the weighted least-squares
problem of the working response ``z = eta - offset + (y - mu) / (dmu/deta)`` with weights
``a (dmu/deta)^2 / V(mu)``, halving a step that raises the deviance, until the deviance
changes by less than ``1e-12`` relative. The log-likelihood is R's ``logLik.glm``
(``-aic / 2`` of the family, normalising constants included), comparable with the Laplace
log-likelihood of a GLMM fitted to the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.design import build_design
from mixedmodels.design.model_design import ModelDesign
from mixedmodels.errors import ConvergenceError, ModelSpecificationError

_TOLERANCE = 1e-12
_MAX_ITERATIONS = 100


@dataclass(frozen=True, eq=False)
class GeneralizedLinearModelResult:
    """A fitted GLM: ``g(E y) = offset + X beta``, dispersion 1 (binomial, Poisson).

    Attributes
    ----------
    design
        The design (no random-effects terms).
    family_spec
        The :class:`mixedmodels.family.Family` (``family`` and ``link`` are its names, as
        for GLMM results).
    beta, vcov_beta
        Estimates and their covariance (inverse Fisher information).
    eta, mu
        Linear predictor and mean per row.
    loglik
        R's ``logLik(glm)``.
    deviance
        Sum of the squared deviance residuals.
    iterations
        IRLS iterations used.
    formula
        For display.
    """

    design: ModelDesign
    family_spec: Any
    beta: np.ndarray
    vcov_beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    loglik: float
    deviance: float
    iterations: int
    formula: str | None = None

    #: Likelihood-ratio tests read these as they do a GLMM result's: no REML, and the
    #: exact log-likelihood (comparable with Laplace fits).
    reml = False
    nagq = 1

    @property
    def family(self) -> str:
        return str(self.family_spec.name)

    @property
    def link(self) -> str:
        return str(self.family_spec.link.name)

    @property
    def objective(self) -> float:
        """-2 log-likelihood."""
        return -2.0 * self.loglik

    @property
    def nobs(self) -> int:
        return self.design.nobs

    @property
    def prior_weights(self) -> np.ndarray:
        """The weights the family sees per row (prior weights times binomial trials)."""
        return _family_weights(self.design)

    @property
    def nparams(self) -> int:
        """Coefficients (R's ``attr(logLik(glm), "df")`` for binomial and Poisson)."""
        return int(self.beta.shape[0])

    @property
    def aic(self) -> float:
        return -2.0 * self.loglik + 2.0 * self.nparams

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + math.log(self.nobs) * self.nparams

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(np.array(self.beta), index=list(self.design.x_names), name="estimate")

    @property
    def se(self) -> pd.Series:
        return pd.Series(
            np.sqrt(np.diag(self.vcov_beta)), index=list(self.design.x_names), name="se"
        )

    def coef_table(self) -> pd.DataFrame:
        """Estimate, SE, Wald z and two-sided p (as ``summary(glm)``)."""
        from scipy.special import ndtr  # scipy.stats would cost ~0.4 s of CLI start-up

        est, se = self.fixef.to_numpy(), self.se.to_numpy()
        z = est / se
        return pd.DataFrame(
            {"estimate": est, "se": se, "z": z, "p": 2.0 * ndtr(-np.abs(z))},
            index=list(self.design.x_names),
        )


def _family_weights(design: ModelDesign) -> np.ndarray:
    """Prior weights times binomial trials (R's ``weights`` after ``family$initialize``)."""
    trials = getattr(design, "trials", None)
    prior = design.weights if design.weights is not None else np.ones(design.nobs)
    prior = np.asarray(prior, dtype=np.float64)
    return prior * trials if trials is not None else prior


def fit_glm(
    design: ModelDesign, family: Any, formula: str | None = None
) -> GeneralizedLinearModelResult:
    """Fit a GLM to a design by IRLS (see the module docstring)."""
    if getattr(family, "name", "") == "negative-binomial":
        raise ModelSpecificationError(
            "a negative binomial model without random effects (MASS::glm.nb) is not "
            "available; compare negative binomial GLMMs with each other instead"
        )
    X, y = design.X, design.y
    trials = getattr(design, "trials", None)
    weights = _family_weights(design)
    offset = design.offset if design.offset is not None else np.zeros(design.nobs)
    link = family.link
    mu = family.initial_mu(y, weights, trials)
    eta = link.link(mu)
    dev = np.inf
    beta = np.zeros(X.shape[1])
    for iteration in range(1, _MAX_ITERATIONS + 1):  # noqa: B007 (read after the loop)
        mu_eta = link.mu_eta(eta)
        w = weights * mu_eta * mu_eta / family.variance(mu)
        z = eta - offset + (y - mu) / mu_eta
        sw = np.sqrt(w)
        new_beta, *_ = np.linalg.lstsq(X * sw[:, None], z * sw, rcond=None)
        step = new_beta - beta
        scale = 1.0
        for _ in range(30):
            trial = beta + scale * step
            eta_t = offset + X @ trial
            mu_t = link.inverse(eta_t)
            dev_t = float(family.deviance_residuals(y, mu_t, weights).sum())
            if np.isfinite(dev_t) and (not np.isfinite(dev) or dev_t <= dev * (1 + 1e-14)):
                break
            scale *= 0.5
        else:
            raise ConvergenceError("IRLS step-halvings failed to reduce the GLM deviance")
        converged = np.isfinite(dev) and abs(dev - dev_t) / (abs(dev_t) + 0.1) < _TOLERANCE
        beta, eta, mu, dev = trial, eta_t, mu_t, dev_t
        if converged:
            break
    else:
        raise ConvergenceError(f"IRLS did not converge in {_MAX_ITERATIONS} iterations")
    mu_eta = link.mu_eta(eta)
    w = weights * mu_eta * mu_eta / family.variance(mu)
    vcov = np.linalg.inv(X.T @ (X * w[:, None]))
    loglik = -0.5 * family.minus_twice_loglik(y, mu, weights, trials)
    return GeneralizedLinearModelResult(
        design=design,
        family_spec=family,
        beta=beta,
        vcov_beta=vcov,
        eta=eta,
        mu=mu,
        loglik=float(loglik),
        deviance=dev,
        iterations=iteration,
        formula=formula,
    )


def glm(
    formula: str,
    data: Any,
    *,
    family: Any = "binomial",
    link: str | None = None,
    weights: Any = None,
) -> GeneralizedLinearModelResult:
    """Fit a GLM without random effects (R's ``glm``); e.g. the null model of a test of a
    GLMM's random-effect variance.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.glm("cbind(incidence, size - incidence) ~ C(period)", "cbpp")  # doctest: +SKIP
    """
    from mixedmodels.family import make_family
    from mixedmodels.io import read_data

    fam = make_family(family, link)
    frame = read_data(data)
    design = build_design(formula, frame, weights=weights, binomial_response=fam.name == "binomial")
    if design.re_terms:
        raise ModelSpecificationError(
            "glm() fits models without random effects; for (... | group) terms use mm.glmer"
        )
    return fit_glm(design, fam, formula)
