"""Immutable results of a generalized linear mixed-model fit (lme4's ``glmer``).

Everything is computed from a :class:`~mixedmodels.results.glmm_fit.GlmmFit`, the optimum the
engine hands over. Names follow :class:`~mixedmodels.results.lmm.LinearMixedModelResult`
(``fixef``, ``vcov``, ``varcorr``, ``ranef``, ``loglik``) where they apply; there is no
residual scale (binomial, Poisson and negative binomial GLMMs have none), so ``varcorr``
has no Residual row and the covariance of term k is ``T_k T_k'``.

Definitions (lme4 1.1-31, Bates et al. 2015, JSS 67(1); McCullagh & Nelder 1989, sec. 2.4):

- residuals: deviance ``sign(y - mu) sqrt(d_i)`` with ``d_i`` the row's weighted unit
  deviance; Pearson ``(y - mu) sqrt(w_i) / sqrt(V(mu))``; response ``y - mu``; working
  ``(y - mu) / (dmu/deta)``. ``resid`` is the deviance residual (lme4's default for glmer).
- ``aic = -2 loglik + 2 k``, ``bic = -2 loglik + log(n) k`` with ``k = nparams`` (theta, beta
  and the negative binomial's theta) and ``n`` the number of rows (not of binomial trials).
- ``deviance`` is lme4's ``deviance()``: the sum of squared deviance residuals at the
  conditional modes, not ``-2 loglik`` (the summary's "deviance" column is ``-2 loglik``,
  as lme4's summary prints it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.errors import ModelSpecificationError
from mixedmodels.results.glmm_fit import GlmmFit
from mixedmodels.results.prediction import linear_predictor
from mixedmodels.results.random_effects import condsd_by_group, modes_by_group, ranef_frame
from mixedmodels.results.variance_components import (
    COLUMNS as VARCORR_COLUMNS,
)
from mixedmodels.results.variance_components import (
    term_covariances,
    variance_component_rows,
)
from mixedmodels.tables import Report, Table

__all__ = ["GeneralizedLinearMixedModelResult", "Overdispersion"]

#: Ratio names of exp(beta) by link.
_RATIO_BY_LINK = {"logit": "odds ratio", "log": "rate ratio"}
_RESIDUAL_TYPES = ("deviance", "pearson", "response", "working")
_SIGNIF_CODES = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"


@dataclass(frozen=True)
class Overdispersion:
    """The Pearson overdispersion check (as ``performance::check_overdispersion``).

    Attributes
    ----------
    chisq
        Sum of squared Pearson residuals.
    df
        Residual degrees of freedom, ``nobs - nparams``.
    ratio
        ``chisq / df``: near 1 without overdispersion, well above 1 with it.
    p
        ``P(chi2(df) > chisq)``: small values speak for overdispersion.

    Notes
    -----
    Under the model the Pearson statistic is approximately ``chi2(df)``; the approximation
    is poor for binary (0/1) responses, where the check says little.
    """

    chisq: float
    df: int
    ratio: float
    p: float

    def __str__(self) -> str:
        return (
            f"Overdispersion: Pearson chi2 = {self.chisq:.4g} on {self.df} df, "
            f"ratio = {self.ratio:.4g}, p = {self.p:.4g}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types (non-finite numbers as None)."""
        return {
            "chisq": _num(self.chisq),
            "ratio": _num(self.ratio),
            "df": int(self.df),
            "p": _num(self.p),
        }


class GeneralizedLinearMixedModelResult:
    """A fitted generalized linear mixed model; nothing about it ever changes.

    Nothing it returns can change it: the arrays it holds are read-only (those of the
    :class:`~mixedmodels.results.glmm_fit.GlmmFit`, the design and its terms), and pandas
    objects (``fixef``, ``vcov``, ``varcorr``, ``ranef``, ``fitted``, tables) are fresh
    copies on each access, free to edit.

    Parameters
    ----------
    fit
        The optimum and what the engine computed there.

    Attributes
    ----------
    fixef : pandas.Series
        Fixed-effects estimates (link scale), indexed by R-style column names.
    vcov : pandas.DataFrame
        Covariance of the fixed effects (lme4's default: from the Hessian over theta and
        beta for nAGQ >= 1).
    varcorr : pandas.DataFrame
        Variance components ``group, term, term2, variance, sd, corr``; no Residual row.
    ranef : dict[str, pandas.DataFrame]
        Conditional modes per grouping factor (link scale), levels x terms.
    loglik : float
        lme4's ``logLik`` (Laplace, or the AGQ value without the saturated log-likelihood
        for nAGQ > 1; ``loglik_marginal`` adds it back).

    Examples
    --------
    >>> import mixedmodels as mm  # doctest: +SKIP
    >>> fit = mm.glmer("cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
    ...                "cbpp", family="binomial")  # doctest: +SKIP
    >>> fit.odds_ratios()  # doctest: +SKIP
    """

    def __init__(self, fit: GlmmFit):
        self._fit = fit
        self.design = fit.design
        self.structure = fit.structure
        self.reml = False  # maximum likelihood (Laplace or AGQ), as lme4's isREML(glmer)

    # -- scalars ---------------------------------------------------------------------
    @property
    def formula(self) -> str | None:
        """The formula as written (None when the fit was not given one)."""
        return self._fit.formula

    @property
    def data_name(self) -> str | None:
        """What the data were called (a dataset name or file), or None."""
        return self._fit.data_name

    @property
    def family(self) -> str:
        """The family's name: ``"binomial"``, ``"poisson"`` or ``"negative-binomial"``."""
        return str(self._fit.family.name)

    @property
    def link(self) -> str:
        """The link's name: ``"logit"``, ``"probit"``, ``"log"``..."""
        return str(self._fit.family.link.name)

    @property
    def family_object(self) -> Any:
        """The :class:`mixedmodels.family.Family` itself (link functions, variance)."""
        return self._fit.family

    @property
    def nb_theta(self) -> float | None:
        """The negative binomial's dispersion (``var = mu + mu^2 / nb_theta``), else None."""
        value = getattr(self._fit.family, "theta", None)
        return None if value is None else float(value)

    @property
    def nagq(self) -> int:
        """0 (lme4's fast mode), 1 (Laplace) or the number of quadrature nodes."""
        return int(self._fit.nagq)

    @property
    def theta(self) -> np.ndarray:
        """Relative covariance parameters (lme4's order within each term)."""
        return np.array(self._fit.theta, dtype=np.float64)

    @property
    def nobs(self) -> int:
        """Number of rows used (for a binomial ``cbind`` response: rows, not trials)."""
        nobs = self._fit.nobs
        return int(self.design.nobs if nobs is None else nobs)

    @property
    def has_rows(self) -> bool:
        """Whether the fit keeps its rows (False for streamed or Dask data, whose fitted
        values and residuals are computed chunk by chunk with :meth:`predict`)."""
        return self._fit.mu is not None

    def _require_rows(self, what: str) -> None:
        if not self.has_rows:
            raise ModelSpecificationError(
                f"{what} need the data rows, and this model was fitted from streamed or Dask "
                "data; compute them chunk by chunk with predict(chunk)"
            )

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor (engine order)."""
        return {t.group: t.nlevels for t in self.structure.terms}

    @property
    def n_dropped_rows(self) -> int:
        """Rows dropped because a used column was missing."""
        return int(self.design.n_dropped_rows)

    @property
    def nparams(self) -> int:
        """Parameters counted in AIC/BIC: theta, beta (and the negative binomial's theta)."""
        return int(self._fit.nparams)

    @property
    def df_resid(self) -> int:
        """``nobs - nparams`` (lme4's ``df.residual``)."""
        return self.nobs - self.nparams

    @property
    def loglik(self) -> float:
        """lme4's ``logLik``: the Laplace approximation (nAGQ <= 1) or the AGQ value
        without the saturated log-likelihood (nAGQ > 1)."""
        return float(self._fit.loglik)

    @property
    def loglik_marginal(self) -> float:
        """The approximation of the full marginal log-likelihood (comparable across nAGQ)."""
        return float(self._fit.loglik_marginal)

    @property
    def objective(self) -> float:
        """``-2 loglik``: the criterion a likelihood-ratio test compares."""
        return -2.0 * self.loglik

    @property
    def aic(self) -> float:
        """``-2 loglik + 2 nparams`` (lme4's AIC)."""
        return self.objective + 2.0 * self.nparams

    @property
    def bic(self) -> float:
        """``-2 loglik + log(nobs) nparams`` (lme4's BIC; nobs counts rows)."""
        return self.objective + math.log(self.nobs) * self.nparams

    @property
    def deviance(self) -> float:
        """lme4's ``deviance()``: the sum of squared deviance residuals at the modes."""
        return float(self._fit.deviance)

    @property
    def singular(self) -> bool:
        """Whether the fit is on the boundary (a variance at zero or a correlation at +-1)."""
        return bool(self._fit.singular)

    @property
    def converged(self) -> bool:
        """Whether the optimiser converged and the convergence check passed."""
        return bool(self._fit.converged)

    @property
    def messages(self) -> tuple[str, ...]:
        """Warnings raised during the fit (already emitted)."""
        return tuple(self._fit.messages)

    @property
    def optimizer(self) -> dict[str, Any]:
        """Facts about the optimisation (evaluations, stages, time); a copy."""
        return copy.deepcopy(dict(self._fit.optimizer))

    # -- fixed effects -----------------------------------------------------------------
    @property
    def fixef(self) -> pd.Series:
        """Fixed-effects estimates (link scale), indexed by the columns of X."""
        return pd.Series(np.array(self._fit.beta), index=list(self.design.x_names), name="estimate")

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance of beta-hat, as lme4's ``vcov()`` (``use.hessian = TRUE``)."""
        return self._frame(self._fit.vcov_beta)

    @property
    def vcov_rx(self) -> pd.DataFrame:
        """``vcov(use.hessian = FALSE)``: inverse information of beta at fixed theta."""
        return self._frame(self._fit.vcov_beta_rx)

    def _frame(self, matrix: np.ndarray) -> pd.DataFrame:
        names = list(self.design.x_names)
        return pd.DataFrame(np.array(matrix), index=names, columns=names)

    @property
    def se(self) -> pd.Series:
        """Standard errors of the fixed effects, from :attr:`vcov`."""
        return pd.Series(
            np.sqrt(np.diag(self._fit.vcov_beta)), index=list(self.design.x_names), name="se"
        )

    def coef_table(self, *, use_hessian: bool = True) -> pd.DataFrame:
        """Fixed-effects table ``estimate, se, z, p`` (Wald z tests, as ``summary(glmer)``).

        Parameters
        ----------
        use_hessian
            Standard errors from :attr:`vcov` (default, lme4's) or, if False, from
            :attr:`vcov_rx` (theta held fixed, as ``vcov(use.hessian = FALSE)``).

        Notes
        -----
        ``z = estimate / se`` and ``p = 2 Phi(-|z|)``, two-sided.
        """
        from scipy.special import ndtr  # scipy.stats costs ~1 s of CLI start-up

        V = self._fit.vcov_beta if use_hessian else self._fit.vcov_beta_rx
        est = np.array(self._fit.beta)
        se = np.sqrt(np.diag(V))
        z = est / se
        p = 2.0 * ndtr(-np.abs(z))
        return pd.DataFrame(
            {"estimate": est, "se": se, "z": z, "p": p},
            index=pd.Index(list(self.design.x_names), name="term"),
        )

    def confint(
        self, method: str = "wald", level: float = 0.95, parm: Any = None, **kwargs: Any
    ) -> pd.DataFrame:
        """Confidence intervals (link scale): ``"wald"`` (default: fixed effects,
        ``estimate -+ z se`` with lme4's default SEs), ``"profile"`` (profile likelihood:
        fixed effects and scalar-term SDs; :mod:`mixedmodels.inference.glmm_profile`) or
        ``"bootstrap"`` (parametric bootstrap percentiles; ``nsim=``, ``seed=``).

        Columns ``estimate, lower, upper`` (as the LMM result's ``confint``).
        """
        if method != "wald":
            from mixedmodels.inference.profile import confint

            return confint(self, method, level, parm=parm, **kwargs)
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must lie between 0 and 1, not {level!r}")
        from scipy.special import ndtri

        q = float(ndtri(0.5 + level / 2.0))
        est = np.array(self._fit.beta)
        se = np.sqrt(np.diag(self._fit.vcov_beta))
        out = pd.DataFrame(
            {"estimate": est, "lower": est - q * se, "upper": est + q * se},
            index=pd.Index(list(self.design.x_names), name="param"),
        )
        out.attrs["method"] = "wald"
        out.attrs["level"] = level
        return out

    def exp_fixef(self, level: float = 0.95) -> pd.DataFrame:
        """exp of the fixed effects and of their Wald limits: odds ratios or rate ratios.

        Parameters
        ----------
        level
            Confidence level of the intervals.

        Returns
        -------
        pandas.DataFrame
            Columns ``"odds ratio"`` (logit link) or ``"rate ratio"`` (log link), ``lower``,
            ``upper``; one row per fixed effect. The intercept's row is the odds (rate) at
            the reference levels, not a ratio.

        Raises
        ------
        ModelSpecificationError
            For links under which exp(beta) is not a ratio (probit, identity, ...).
        """
        label = _RATIO_BY_LINK.get(self.link)
        if label is None:
            raise ModelSpecificationError(
                f"exp(fixed effects) is a ratio only under the logit link (odds ratios) or "
                f"the log link (rate ratios); this fit uses the {self.link} link"
            )
        ci = self.confint("wald", level)
        out = pd.DataFrame(
            {
                label: np.exp(ci["estimate"].to_numpy()),
                "lower": np.exp(ci["lower"].to_numpy()),
                "upper": np.exp(ci["upper"].to_numpy()),
            },
            index=pd.Index(list(self.design.x_names), name="term"),
        )
        out.attrs["level"] = level
        return out

    def odds_ratios(self, level: float = 0.95) -> pd.DataFrame:
        """Odds ratios exp(beta) with Wald intervals (logit link only); see :meth:`exp_fixef`."""
        if self.link != "logit":
            raise ModelSpecificationError(
                f"odds ratios need the logit link; this fit uses the {self.link} link"
                + (" (use rate_ratios())" if self.link == "log" else "")
            )
        return self.exp_fixef(level)

    def rate_ratios(self, level: float = 0.95) -> pd.DataFrame:
        """Rate ratios exp(beta) with Wald intervals (log link only); see :meth:`exp_fixef`."""
        if self.link != "log":
            raise ModelSpecificationError(
                f"rate ratios need the log link; this fit uses the {self.link} link"
                + (" (use odds_ratios())" if self.link == "logit" else "")
            )
        return self.exp_fixef(level)

    # -- variance components -------------------------------------------------------------
    def covariance_matrices(self) -> dict[str, list[tuple[tuple[str, ...], np.ndarray]]]:
        """Per grouping factor, the covariance matrix of each original term (with names).

        The covariance of a term is ``T T'`` with ``T`` its lower-triangular template at
        theta: there is no residual scale to multiply by.
        """
        return term_covariances(self.structure, self._fit.theta)

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components (see the class docstring); a fresh copy on each access."""
        return self._varcorr.copy()

    @cached_property
    def _varcorr(self) -> pd.DataFrame:
        rows = variance_component_rows(self.covariance_matrices())
        return pd.DataFrame(rows, columns=VARCORR_COLUMNS)

    # -- random effects --------------------------------------------------------------------
    @property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes per grouping factor (link scale), levels x terms; fresh copies."""
        return {group: frame.copy() for group, frame in self._ranef.items()}

    @cached_property
    def _ranef(self) -> dict[str, pd.DataFrame]:
        return modes_by_group(self._fit.b, self.structure.terms)

    @property
    def ranef_condvar(self) -> dict[str, np.ndarray]:
        """Conditional covariance matrices of the modes: group -> (levels, p, p), read-only."""
        return {t.group: v for t, v in zip(self.structure.terms, self._fit.b_condvar, strict=True)}

    @property
    def ranef_condsd(self) -> dict[str, pd.DataFrame]:
        """Conditional SDs of the modes (lme4's ``condVar``), levels x terms; fresh copies."""
        return {group: frame.copy() for group, frame in self._ranef_condsd.items()}

    @cached_property
    def _ranef_condsd(self) -> dict[str, pd.DataFrame]:
        return condsd_by_group(self._fit.b_condvar, self.structure.terms)

    def ranef_table(self) -> pd.DataFrame:
        """Tidy modes: ``group, level, term, condval, condsd`` (lme4's as.data.frame(ranef))."""
        return ranef_frame(self._ranef, self._ranef_condsd)

    # -- fitted values, predictions, residuals ---------------------------------------------
    def _series(self, values: np.ndarray, name: str) -> pd.Series:
        return pd.Series(np.array(values, dtype=np.float64), index=self.design.row_index, name=name)

    def _fixed_eta(self) -> np.ndarray:
        """``X beta`` plus the offset (lme4's linear predictor without random effects)."""
        self._require_rows("fitted values")
        eta = self.design.X @ np.asarray(self._fit.beta)
        offset = self._fit.offset
        return eta if offset is None else eta + offset

    @property
    def fitted(self) -> pd.Series:
        """Conditional means ``mu`` at the modes (response scale), as lme4's ``fitted()``.

        For a binomial ``cbind`` response these are proportions.
        """
        self._require_rows("fitted values")
        return self._series(self._fit.mu, "fitted")

    @property
    def linear_predictor(self) -> pd.Series:
        """``eta = X beta + offset + Z b`` per row."""
        self._require_rows("linear predictors")
        return self._series(self._fit.eta, "eta")

    @property
    def prior_weights(self) -> pd.Series:
        """The weights the family sees per row (prior weights times binomial trials)."""
        self._require_rows("prior weights per row")
        return self._series(self._fit.prior_weights, "prior_weights")

    def simulate(self, nsim: int = 1, seed: int | None = None) -> pd.DataFrame:
        """Responses simulated from the fitted model (lme4's ``simulate(fit)``).

        Each simulation draws new random effects ``u ~ N(0, I)`` (``b = Lambda u``, lme4's
        default ``use.u = FALSE``), then one response per row from the family at
        ``mu = g^{-1}(offset + X beta + Z b)``: 0/1 or, for a ``cbind`` response, the
        proportion of successes out of the row's trials (as ``design.y``); counts for
        Poisson and the negative binomial (``size = nb_theta``). Columns ``sim_1`` ...
        """
        if nsim < 1:
            raise ValueError(f"nsim must be at least 1, not {nsim}")
        rng = np.random.default_rng(seed)
        out = {f"sim_{k + 1}": self.draw_response(rng) for k in range(nsim)}
        return pd.DataFrame(out, index=self.design.row_index)

    def draw_response(self, rng: np.random.Generator) -> np.ndarray:
        """One response drawn from the fitted model with new random effects (see
        :meth:`simulate`), from the generator ``rng``."""
        fit = self._fit
        family = fit.family
        eta = self._fixed_eta()
        for term, T in zip(fit.terms, fit.structure.templates(np.asarray(fit.theta)), strict=True):
            b = rng.standard_normal((term.nlevels, term.ncols)) @ T.T
            eta = eta + np.einsum("ij,ij->i", term.z, b[term.refs])
        return family.random(rng, family.link.inverse(eta), fit.prior_weights)

    @property
    def refitter(self) -> Any:
        """Refits this model to a new response (the parametric bootstrap's), or None."""
        return self._fit.refitter

    def bootstrap(self, nsim: int = 500, seed: int | None = None, **kwargs: Any):
        """Parametric bootstrap (:func:`mixedmodels.inference.bootstrap.bootstrap`)."""
        from mixedmodels.inference.bootstrap import bootstrap

        return bootstrap(self, nsim, seed, **kwargs)

    def influence(self, group: str | None = None):
        """Not available for GLMMs: refuses in one line
        (:func:`mixedmodels.diagnostics.influence.influence`)."""
        from mixedmodels.diagnostics.influence import influence

        return influence(self, group)

    def emmeans(self, specs: Any, by: Any = None, **kwargs: Any):
        """Estimated marginal means (:func:`mixedmodels.inference.emmeans.emmeans`; z tests,
        ``type="link"`` or ``"response"``)."""
        from mixedmodels.inference.emmeans import emmeans

        return emmeans(self, specs, by, **kwargs)

    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        *,
        type: str = "response",
        re: bool = True,
        allow_new_levels: bool = True,
        se_fit: bool = False,
        interval: str | None = None,
        level: float = 0.95,
    ) -> pd.Series | pd.DataFrame:
        """Predictions on the response or the link scale, as lme4's ``predict.merMod``.

        Parameters
        ----------
        newdata
            Rows with the formula's predictor and grouping columns (no response needed);
            None predicts the fitted rows.
        type
            ``"response"`` (default: ``mu = g^{-1}(eta)``, probabilities, proportions or
            means) or ``"link"`` (``eta``; the offset included, as lme4).
        re
            Include the random effects (conditional prediction); False gives the
            population-level prediction ``X beta + offset``.
        allow_new_levels
            Levels not seen in fitting get zero random effects (default); False raises.
        se_fit, interval, level
            Population-level only (``re=False``): a DataFrame ``fit, se_link`` (and
            ``lower, upper`` for ``interval="confidence"``, formed on the link scale and
            mapped by the inverse link); see
            :func:`mixedmodels.inference.prediction.glmm_prediction_frame`. With
            ``re=True`` or ``interval="prediction"`` they are refused.

        Returns
        -------
        pandas.Series
            Indexed like ``newdata`` (or the fitted rows).
        """
        if se_fit or interval is not None:
            from mixedmodels.inference.prediction import glmm_prediction_frame

            return glmm_prediction_frame(
                self, newdata, re=re, interval=interval, level=level, type=type
            )
        if type not in ("response", "link"):
            raise ValueError(f"type must be 'response' or 'link', not {type!r}")
        if newdata is None:
            self._require_rows("predictions for the fitted rows (newdata=None)")
            eta = np.asarray(self._fit.eta) if re else self._fixed_eta()
            index = self.design.row_index
        else:
            eta = linear_predictor(
                self.design,
                self.structure.terms,
                np.asarray(self._fit.beta),
                self._fit.b,
                newdata,
                re=re,
                allow_new_levels=allow_new_levels,
            )
            index = newdata.index
        values = eta if type == "link" else self._fit.family.link.inverse(eta)
        return pd.Series(np.array(values, dtype=np.float64), index=index, name="predicted")

    def residuals(self, type: str = "deviance") -> pd.Series:
        """Residuals of the fitted rows, with R's definitions for GLMs.

        Parameters
        ----------
        type
            ``"deviance"`` (default, as lme4's ``residuals(glmer)``), ``"pearson"``,
            ``"response"`` or ``"working"``.

        Notes
        -----
        With ``y`` the response as the family sees it (a proportion for ``cbind``), ``mu``
        the conditional mean, ``w`` the prior weights (times the trials) and ``d_i`` the
        row's weighted unit deviance:

        - deviance: ``sign(y - mu) sqrt(d_i)`` (their squares sum to :attr:`deviance`);
        - pearson: ``(y - mu) sqrt(w) / sqrt(V(mu))``;
        - response: ``y - mu``;
        - working: ``(y - mu) / mu_eta(eta)``, the residual of PIRLS's working response.
        """
        if type not in _RESIDUAL_TYPES:
            raise ValueError(
                f"residual type must be one of {', '.join(_RESIDUAL_TYPES)}; not {type!r}"
            )
        return self._series(self._residuals[type], "resid")

    @cached_property
    def _residuals(self) -> dict[str, np.ndarray]:
        self._require_rows("residuals")
        family = self._fit.family
        y = np.asarray(self.design.y, dtype=np.float64)
        mu = np.asarray(self._fit.mu, dtype=np.float64)
        w = np.asarray(self._fit.prior_weights, dtype=np.float64)
        raw = y - mu
        unit = np.asarray(family.deviance_residuals(y, mu, w), dtype=np.float64)
        out = {
            "deviance": np.sign(raw) * np.sqrt(np.maximum(unit, 0.0)),
            "pearson": raw * np.sqrt(w) / np.sqrt(np.asarray(family.variance(mu))),
            "response": raw,
            "working": raw / np.asarray(family.link.mu_eta(np.asarray(self._fit.eta))),
        }
        for values in out.values():
            values.setflags(write=False)
        return out

    @property
    def resid(self) -> pd.Series:
        """Deviance residuals (lme4's default ``residuals()`` for glmer fits)."""
        return self.residuals("deviance")

    def overdispersion(self) -> Overdispersion:
        """The Pearson overdispersion check: ``sum(pearson^2) / df_resid`` and its p-value.

        As ``performance::check_overdispersion`` for GLMMs: the statistic is compared with
        ``chi2(nobs - nparams)``. Meaningful for counts and binomial proportions, not for
        0/1 responses.
        """
        from mixedmodels.inference.distributions import chi2_sf

        if self.has_rows:
            chisq = float(np.sum(self._residuals["pearson"] ** 2))
        else:  # summed over the chunks by the fit
            chisq = float(self._fit.pearson_chisq)  # type: ignore[arg-type]
        df = self.df_resid
        if df <= 0:
            return Overdispersion(chisq=chisq, df=df, ratio=math.nan, p=math.nan)
        return Overdispersion(chisq=chisq, df=df, ratio=chisq / df, p=float(chi2_sf(chisq, df)))

    # -- presentation ----------------------------------------------------------------------
    def _method_title(self) -> str:
        # lme4's methTitle: nAGQ = 1 is the Laplace approximation; any other value
        # (including 0, lme4's fast mode) is printed as quadrature with that nAGQ.
        if self.nagq == 1:
            how = "(Laplace Approximation)"
        else:
            how = f"(Adaptive Gauss-Hermite Quadrature, nAGQ = {self.nagq})"
        return f"Generalized linear mixed model fit by maximum likelihood {how} ['glmerMod']"

    def _family_label(self) -> str:
        if self.family == "negative-binomial" and self.nb_theta is not None:
            return f"Negative Binomial({round(self.nb_theta, 4):.15g})"  # as MASS names it
        return self.family

    def _random_effects_table(self) -> pd.DataFrame:
        rows = []
        with_corr = False
        for group, blocks in self.covariance_matrices().items():
            first_of_group = True
            for names, cov in blocks:
                sd = np.sqrt(np.diag(cov))
                for i, name in enumerate(names):
                    corr = [
                        cov[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else math.nan
                        for j in range(i)
                    ]
                    with_corr = with_corr or bool(corr)
                    rows.append(
                        [
                            group if first_of_group else "",
                            name,
                            float(cov[i, i]),
                            float(sd[i]),
                            " ".join("NaN" if math.isnan(c) else f"{c:.2f}" for c in corr),
                        ]
                    )
                    first_of_group = False
        table = pd.DataFrame(rows, columns=["Groups", "Name", "Variance", "Std.Dev.", "Corr"])
        return table if with_corr else table.drop(columns="Corr")

    def summary(self) -> Report:
        """lme4's ``summary(glmer)``: criteria, scaled residuals, random and fixed effects."""
        lines = [f" Family: {self._family_label()}  ( {self.link} )"]
        if self.formula:
            lines.append(f"Formula: {self.formula}")
        if self.data_name:
            lines.append(f"   Data: {self.data_name}")
        crit = pd.DataFrame(
            [[self.aic, self.bic, self.loglik, self.objective, self.df_resid]],
            columns=["AIC", "BIC", "logLik", "deviance", "df.resid"],
        )
        residual_tables = []
        if self.has_rows:  # a streamed fit keeps no residuals to take quantiles of
            q = np.quantile(self._residuals["pearson"], [0, 0.25, 0.5, 0.75, 1.0])
            scaled = pd.DataFrame([q], columns=["Min", "1Q", "Median", "3Q", "Max"])
            residual_tables.append(Table("Scaled residuals:", scaled, show_index=False))
        groups = "; ".join(f"{g}, {n}" for g, n in self.ngroups.items())
        coef = self.coef_table()
        fixed = pd.DataFrame(
            {
                "Estimate": coef["estimate"],
                "Std. Error": coef["se"],
                "z value": coef["z"],
                "Pr(>|z|)": coef["p"],
                "": [_stars(p) for p in coef["p"]],
            }
        )
        fixed.index.name = None
        footer = []
        if self.design.dropped_columns:
            footer.append("dropped (rank deficient): " + ", ".join(self.design.dropped_columns))
        if self.n_dropped_rows:
            footer.append(f"{self.n_dropped_rows} rows with missing values were dropped")
        footer.extend(self.messages)
        if self.singular and not any("singular" in m for m in self.messages):
            footer.append("boundary (singular) fit: see help('isSingular')")
        if not self.converged and not self.messages:
            footer.append("the optimiser did not converge: see fit.optimizer")
        return Report(
            title=self._method_title(),
            lines=tuple(lines),
            tables=(
                Table("", crit, show_index=False, digits=6),
                *residual_tables,
                Table(
                    "Random effects:",
                    self._random_effects_table(),
                    notes=(f"Number of obs: {self.nobs}, groups:  {groups}",),
                    show_index=False,
                ),
                Table(
                    "Fixed effects:",
                    fixed,
                    notes=("---", _SIGNIF_CODES),
                    pvalue_columns=("Pr(>|z|)",),
                ),
            ),
            footer=tuple(footer),
        )

    def __repr__(self) -> str:
        method = "Laplace" if self.nagq == 1 else f"nAGQ={self.nagq}"
        return (
            f"<GeneralizedLinearMixedModelResult {self.formula!r}: {self.family}({self.link}), "
            f"{method}, nobs={self.nobs}, loglik={self.loglik:.4f}>"
        )

    def _repr_html_(self) -> str:
        return self.summary().to_html()

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON object (DESIGN.md's GLMM fields): plain Python types only."""
        fixef = [
            {
                "term": str(name),
                "estimate": _num(r.estimate),
                "se": _num(r.se),
                "z": _num(r.z),
                "p": _num(r.p),
            }
            for name, r in self.coef_table().iterrows()
        ]
        varcorr = []
        for _, r in self._varcorr.iterrows():
            if pd.isna(r["term2"]):
                varcorr.append(
                    {
                        "group": r["group"],
                        "term": r["term"],
                        "variance": _num(r["variance"]),
                        "sd": _num(r["sd"]),
                    }
                )
            else:
                varcorr.append(
                    {
                        "group": r["group"],
                        "term": r["term"],
                        "term2": r["term2"],
                        "corr": _num(r["corr"]),
                    }
                )
        out: dict[str, Any] = {
            "formula": self.formula,
            "family": self.family,
            "link": self.link,
            "nagq": self.nagq,
            "nobs": self.nobs,
            "ngroups": self.ngroups,
            "fixef": fixef,
            "varcorr": varcorr,
            "loglik": _num(self.loglik),
            "loglik_marginal": _num(self.loglik_marginal),
            "aic": _num(self.aic),
            "bic": _num(self.bic),
            "deviance": _num(self.deviance),
            "theta": [float(t) for t in self._fit.theta],
        }
        if self.family == "negative-binomial":
            out["nb_theta"] = _num(self.nb_theta)
        out.update(
            {
                "singular": self.singular,
                "converged": self.converged,
                "overdispersion": self.overdispersion().to_dict(),
                "nparams": self.nparams,
                "df_resid": self.df_resid,
                "dropped_rows": self.n_dropped_rows,
            }
        )
        return out


def _num(x: Any) -> float | None:
    """A finite float, or None (JSON null) for None, NaN and infinities."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _stars(p: float) -> str:
    """R's significance stars (``printCoefmat``)."""
    if p is None or not math.isfinite(p):
        return ""
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return mark
    return ""
