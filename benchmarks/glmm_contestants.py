"""The Python libraries timed on the GLMMs, one adapter each.

An adapter turns (model, DataFrame) into a zero-argument ``fit`` callable, which is what
gets timed, and reads the fitted result afterwards: the log-likelihood as the library
reports it and on the full scale (normalising constants included, the AGQ value as an
approximation of the marginal likelihood), convergence, and the estimates.

Anything a library needs that is not the fit itself (lme-python's polars frame, its
proportion column) is made before the clock starts; a call that users make once per
fit (building a family object) is inside it.

statsmodels is listed but not timed: its ``BinomialBayesMixedGLM`` and
``PoissonBayesMixedGLM`` fit a variational Bayes approximation to a posterior under
priors on the variance parameters, not the maximum of a Laplace or quadrature
likelihood, and report no log-likelihood to compare; a time ratio would compare two
different computations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from contestants import Contestant
from glmm_models import GlmmModel, saturated_loglik

STATSMODELS_REASON = "not comparable: different estimator"
STATSMODELS_WHY = (
    "its BinomialBayesMixedGLM and PoissonBayesMixedGLM fit a variational Bayes "
    "approximation to a posterior under priors on the variance parameters, not a maximum "
    "of the likelihood, and report no log-likelihood to compare"
)


@dataclass(frozen=True)
class GlmmContestant:
    key: str
    label: str
    module: str
    distribution: str
    prepare: Callable[[GlmmModel, pd.DataFrame], Callable[[], Any]]
    #: (model, frame, result) -> {loglik, loglik_reported, converged, estimates}
    read: Callable[[GlmmModel, pd.DataFrame, Any], dict]
    skip: Callable[[GlmmModel], str | None] = lambda model: None

    missing = Contestant.missing
    version = Contestant.version

    def outcome(self, model: GlmmModel, frame: pd.DataFrame, result: Any) -> dict:
        """What the worker records about a fit besides its time."""
        facts = self.read(model, frame, result)
        facts["criterion"] = -2.0 * facts["loglik"]  # lower is better, as the LMM rows
        return facts


def _finite(x: Any) -> float | None:
    value = float(x)
    return value if math.isfinite(value) else None


# -- this project ----------------------------------------------------------------------
def _prepare_ours(model: GlmmModel, frame: pd.DataFrame) -> Callable[[], Any]:
    import mixedmodels as mm

    # The fit computes everything it reports (beta, the Hessian SEs, the modes, logLik)
    # before it returns, as lme4's glmer with its default calc.derivs = TRUE.
    return lambda: mm.glmer(model.formula, frame, family=model.family, nagq=model.nagq)


def _read_ours(model: GlmmModel, frame: pd.DataFrame, fit: Any) -> dict:
    sds = {
        f"{r['group']}: {r['term']}": _finite(r["sd"])
        for r in fit.varcorr.to_dict(orient="records")
        if r.get("term2") is None or r.get("term2") != r.get("term2")  # None or NaN
    }
    estimates: dict[str, Any] = {
        "fixef": {str(k): float(v) for k, v in fit.fixef.items()},
        "sd": sds,
    }
    if fit.nb_theta is not None:
        estimates["nb_theta"] = float(fit.nb_theta)
    return {
        "loglik": float(fit.loglik_marginal),
        "loglik_reported": float(fit.loglik),
        "converged": bool(fit.converged),
        "estimates": estimates,
        "evaluations": fit.optimizer.get("evaluations"),
    }


OURS = GlmmContestant(
    key="ours",
    label="mixedmodels",
    module="mixedmodels",
    distribution="mixedmodels",
    prepare=_prepare_ours,
    read=_read_ours,
)


# -- mixedlm (PyPI 1.3.0; Rust backend, lme4-like API) ----------------------------------
def _prepare_mixedlm(model: GlmmModel, frame: pd.DataFrame) -> Callable[[], Any]:
    import mixedlm
    from mixedlm import families

    formula = model.spelling("mixedlm")

    def fit() -> Any:
        if model.family == "negative-binomial":
            # mixedlm's glmer_nb holds the NB dispersion at its `theta` argument (default
            # 1.0) instead of estimating it as lme4's glmer.nb: the page flags the logLik.
            result = mixedlm.glmer_nb(formula, frame, nAGQ=model.nagq)
        else:
            family = families.Binomial() if model.family == "binomial" else families.Poisson()
            result = mixedlm.glmer(formula, frame, family=family, nAGQ=model.nagq)
        # mixedlm computes vcov on first use; lme4 and ours have it when the fit returns.
        result.vcov()
        return result

    return fit


def _read_mixedlm(model: GlmmModel, frame: pd.DataFrame, fit: Any) -> dict:
    # mixedlm reports the full log-likelihood, and for nAGQ > 1 the AGQ approximation
    # of the marginal one (lme4's value plus the saturated constant).
    loglik = float(fit.logLik())
    sds = {
        f"{group}: {term}": _finite(math.sqrt(max(float(var), 0.0)))
        for group, terms in fit.VarCorr().as_dict().items()
        for term, var in terms.items()
    }
    estimates: dict[str, Any] = {
        "fixef": {str(k): float(v) for k, v in fit.fixef().items()},
        "sd": sds,
    }
    if model.family == "negative-binomial":
        estimates["nb_theta"] = float(fit.family.theta)
    return {
        "loglik": loglik,
        "loglik_reported": loglik,
        "converged": bool(fit.converged),
        "estimates": estimates,
    }


MIXEDLM = GlmmContestant(
    key="mixedlm",
    label="mixedlm (PyPI)",
    module="mixedlm",
    distribution="mixedlm",
    prepare=_prepare_mixedlm,
    read=_read_mixedlm,
)


# -- lme-python (PyPI 0.2.7; Rust backend) ----------------------------------------------
LME_PYTHON_FAMILIES = {"binomial": "binomial", "poisson": "poisson"}


def _skip_lme_python(model: GlmmModel) -> str | None:
    if model.family not in LME_PYTHON_FAMILIES:
        return "no negative binomial family (binomial, poisson, gamma, gaussian only)"
    return None


def _prepare_lme_python(model: GlmmModel, frame: pd.DataFrame) -> Callable[[], Any]:
    import lme_python
    import polars as pl

    # Its guide: "using polars.DataFrame directly is the supported path" (pandas users
    # convert first), so the conversion is made before the clock starts.
    frame = frame.copy()
    for name, column, level in model.numeric_dummies:
        frame[name] = (frame[column] == level).astype(float)
    formula = model.spelling("lme_python")
    family = LME_PYTHON_FAMILIES[model.family]
    if model.trials is not None:
        # A grouped binomial response: the proportion, with the trials as prior weights
        # (glmer_weighted), as R's glm family does for proportions.
        successes, trials = model.trials
        response = formula.split("~")[0].strip()
        frame[response] = frame[successes] / frame[trials]
        weights = frame[trials].astype(float).tolist()
        data = pl.from_pandas(frame)
        return lambda: lme_python.glmer_weighted(formula, data, family, model.nagq, weights=weights)
    data = pl.from_pandas(frame)
    return lambda: lme_python.glmer(formula, data, family, model.nagq)


def _read_lme_python(model: GlmmModel, frame: pd.DataFrame, fit: Any) -> dict:
    # lme-python's log-likelihood comes from deviance residuals and leaves out the
    # saturated log-likelihood (0 for 0/1 data): add it for the full scale.
    reported = float(fit.log_likelihood)
    names = list(fit.fixed_names or [])
    sds = {
        f"{group}: {term}": _finite(sd)
        for group, term, term2, _var, sd in (fit.var_corr or [])
        if group != "Residual" and term == term2
    }
    diagnostics = fit.diagnostics or {}
    return {
        "loglik": reported + saturated_loglik(model, frame),
        "loglik_reported": reported,
        "converged": fit.converged,
        "estimates": {
            "fixef": dict(zip(names, map(float, fit.coefficients), strict=True)),
            "sd": sds,
            "effective_n_agq": diagnostics.get("effective_n_agq"),
        },
    }


LME_PYTHON = GlmmContestant(
    key="lme_python",
    label="lme-python (PyPI)",
    module="lme_python",
    distribution="lme-python",
    prepare=_prepare_lme_python,
    read=_read_lme_python,
    skip=_skip_lme_python,
)


CONTESTANTS: tuple[GlmmContestant, ...] = (OURS, MIXEDLM, LME_PYTHON)
BY_KEY = {c.key: c for c in CONTESTANTS}
