"""Immutable results of a linear mixed-model fit.

Names follow lme4 (``fixef``, ``vcov``, ``VarCorr`` -> ``varcorr``, ``ranef``, ``sigma``,
``logLik`` -> ``loglik``) and tidy DataFrames use stable column names.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mixedmodels.errors import ModelSpecificationError
from mixedmodels.linalg.solution import Estimates, conditional_variances, estimate
from mixedmodels.results.prediction import linear_predictor, pandas_rows
from mixedmodels.results.random_effects import condsd_by_group, modes_by_group, ranef_frame
from mixedmodels.results.variance_components import COLUMNS as VARCORR_COLUMNS
from mixedmodels.results.variance_components import term_covariances, variance_component_rows
from mixedmodels.tables import Report, Table

if TYPE_CHECKING:  # pragma: no cover
    from mixedmodels.linalg.blocked import BlockedFactor
    from mixedmodels.models.lmm import LinearMixedModel
    from mixedmodels.objective.model_objective import LinearMixedObjective
    from mixedmodels.objective.profiled_deviance import ProfiledDeviance
    from mixedmodels.optimize import OptSummary


#: Theta entries up to which :attr:`LinearMixedModelResult.singular` reads Python floats.
_FEW_THETA = 16


class LinearMixedModelResult:
    """The fitted model. All attributes are computed from the optimum and never change.

    Nothing it returns can change it: the arrays it holds (``estimates``, ``opt``, the
    design and its terms, ``ranef_condvar``) are read-only, and pandas objects (``fixef``,
    ``vcov``, ``varcorr``, ``ranef``, ``ranef_condsd``, ``fitted``, tables) are fresh
    copies on each access, free to edit.

    Attributes
    ----------
    fixef : pandas.Series
        Fixed-effects estimates, indexed by R-style column names.
    vcov : pandas.DataFrame
        Covariance matrix of the fixed-effects estimates.
    varcorr : pandas.DataFrame
        Variance components: ``group, term, term2, variance, sd, corr`` (one row per
        variance, one per correlation, and the residual).
    ranef : dict[str, pandas.DataFrame]
        Conditional modes (BLUPs) per grouping factor: levels x terms.
    sigma : float
        Residual standard deviation.
    theta : numpy.ndarray
        Relative covariance parameters in lme4's order.
    loglik : float
        Log-likelihood (REML log-likelihood for REML fits, as lme4's ``logLik``).
    """

    def __init__(
        self,
        *,
        model: LinearMixedModel,
        objective_function: LinearMixedObjective | None,
        deviance_function: ProfiledDeviance | None,
        opt: OptSummary,
        reml: bool,
        estimates: Estimates | None = None,
        objective: float | None = None,
    ):
        self.model = model
        self._objective_function = objective_function
        self.design = model.design
        self.structure = model.structure
        self.reml = bool(reml)
        self.opt = opt
        # A small model's fit passes its estimates and criterion (computed in dense form,
        # dense_deviance.py) and no blocked deviance: that is built on first use.
        if deviance_function is not None:
            self.__dict__["deviance_function"] = deviance_function
        if estimates is not None:
            self.__dict__["estimates"] = estimates
        if objective is not None:
            self.__dict__["objective"] = float(objective)

    @cached_property
    def deviance_function(self) -> ProfiledDeviance:
        """The blocked profiled deviance in theta at the fit's residual parameters."""
        return self.model.deviance_function(self.reml)

    @property
    def objective_function(self) -> LinearMixedObjective:
        """The criterion this fit minimised, over all its parameters (named blocks ``theta``
        and ``residual``; :mod:`mixedmodels.objective.model_objective`). Inference asks it."""
        if self._objective_function is None:  # built on first use (one residual variance)
            self._objective_function = self.model.objective(self.reml)
        return self._objective_function

    @property
    def parameters(self) -> pd.Series:
        """The optimum of :attr:`objective_function`, named (theta, then residual parameters)."""
        return pd.Series(
            self.opt.final_theta.copy(), index=list(self.objective_function.names), name="value"
        )

    # -- the factor at the optimum and what follows from it ----------------------------
    # Computed on first use, once: the deviance function is a pure function of theta (its
    # cross products never change), so the numbers are those an eager computation would
    # give. A caller that only needs the optimum (a benchmark, an LRT refit that reads
    # the criterion) skips the solves for beta, b and Var(beta) until they are asked for.
    @cached_property
    def factor(self) -> BlockedFactor:
        """The blocked Cholesky factor ``L`` at theta-hat (:mod:`.objective.profiled_deviance`)."""
        return self.deviance_function.factor(self.opt.final_theta)

    @cached_property
    def estimates(self) -> Estimates:
        """beta-hat, sigma-hat, Var(beta-hat) and the conditional modes, from :attr:`factor`.

        A model without random effects fitted by ML reports nlme's ``gls`` Var(beta-hat):
        ``sigma^2 (X'V^-1 X)^-1`` with the residual-df ``sigma^2 n / (n - p)`` (nlme scales
        ``varBeta`` by ``(N - REML p) / (N - p)``), so its standard errors are the REML-type
        ones, as R users of gls see them.
        """
        out = estimate(self.deviance_function.system, self.factor, self.reml)
        if self._gls and not self.reml:
            n, p = self.nobs, out.beta.shape[0]
            out = replace(out, vcov_beta=out.vcov_beta * (n / (n - p)))
        return out

    @cached_property
    def objective(self) -> float:
        """The REML criterion or ML deviance at theta-hat, from :attr:`factor`."""
        return float(self.deviance_function.objective(self.factor))

    # -- scalars ---------------------------------------------------------------------
    @property
    def formula(self) -> str | None:
        return self.model.formula

    @property
    def theta(self) -> np.ndarray:
        return self.opt.final_theta[: self.structure.ntheta].copy()

    @property
    def residual_strata(self):
        """The residual-variance strata (None when there is one residual variance)."""
        return self.model.residual_strata

    @property
    def residual_sd_ratio(self) -> pd.Series:
        """SD of each residual stratum relative to the reference (nlme's varIdent coef)."""
        strata = self.residual_strata
        if strata is None:
            return pd.Series([1.0], index=["Residual"], name="sd_ratio")
        rho = self.opt.final_theta[self.structure.ntheta :]
        ratios = np.exp(np.concatenate([[0.0], rho]))
        return pd.Series(ratios, index=list(strata.labels), name="sd_ratio")

    # -- repeated-measures residuals (residual/repeated.py) ---------------------------------
    @property
    def repeated(self):
        """The fitted residual correlation / variance function structure (None without)."""
        if getattr(self.model, "repeated", None) is None:
            return None
        return self.objective_function.residual

    @property
    def _gls(self) -> bool:
        return bool(getattr(self.model, "gls", False))

    @property
    def re_terms(self) -> tuple:
        """The grouped random-effects terms (none for a model without random effects)."""
        return () if self._gls else self.structure.terms

    @property
    def residual_psi(self) -> np.ndarray:
        """The residual structure's parameters (unconstrained scale) at the optimum."""
        return self.opt.final_theta[self.structure.ntheta :].copy()

    @property
    def structure_params(self) -> dict[str, Any] | None:
        """The residual structure's parameters on the natural scale, by name: ``phi`` (ar1,
        car1), ``rho`` (cs), ``corr`` and ``levels`` (us: matrix by sorted time level),
        ``delta`` (power), ``exp_t`` (exp), ``sd_by_level`` (us, ident), ``sigma``. None for
        models without a correlation or variance function."""
        repeated = self.repeated
        if repeated is None:
            if self.residual_strata is None:
                return None
            sd = self.residual_sd
            return {"sd_by_level": {k: float(v) for k, v in sd.items()}, "sigma": self.sigma}
        return repeated.report(self.residual_psi, self.sigma)

    @property
    def residual_sd_by_row(self) -> np.ndarray:
        """The residual SD of each row (its stratum's, or ``sigma w_i`` of a variance
        function; sigma everywhere without either)."""
        if self.repeated is not None:
            return self.repeated.sd_by_row(self.residual_psi, self.sigma)
        strata = self.residual_strata
        if strata is None:
            return np.full(self.nobs, self.sigma)
        return self.residual_sd.to_numpy()[strata.codes]

    @property
    def residual_sd(self) -> pd.Series:
        """Residual SD of each stratum (``sigma`` x ratio); one value without strata."""
        return (self.residual_sd_ratio * self.sigma).rename("sd")

    @property
    def sigma(self) -> float:
        """The residual SD scale (nlme's ``sigma``: with a variance function ``sd_i = sigma
        w_i``)."""
        if self.repeated is not None:
            return self.estimates.sigma * self.repeated.sigma_scale(self.residual_psi)
        return self.estimates.sigma

    @property
    def nobs(self) -> int:
        return self.model.nobs

    def _require_rows(self, what: str) -> None:
        if not self.model.has_rows:
            raise ModelSpecificationError(
                f"{what} need the data rows, and this model was fitted from precomputed cross "
                "products (streamed data); compute them chunk by chunk with predict(chunk)"
            )

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor (engine order); for a model without
        random effects, of the correlation's grouping factor (nlme's gls)."""
        if self._gls:
            group = None if self.repeated is None else self.repeated.group
            return {} if group is None else {group[0]: group[1]}
        return {t.group: t.nlevels for t in self.structure.terms}

    @property
    def n_dropped_rows(self) -> int:
        return int(self.design.n_dropped_rows)

    @property
    def nparams(self) -> int:
        """Number of estimated parameters: fixed effects, theta, the residual structure's
        and sigma (lme4's and nlme's logLik df)."""
        extra = self.opt.final_theta.shape[0] - self.structure.ntheta
        return len(self.estimates.beta) + self.structure.ntheta + 1 + extra

    @property
    def loglik(self) -> float:
        return -0.5 * self.objective

    @property
    def reml_criterion(self) -> float | None:
        """-2 x REML log-likelihood (REML fits only)."""
        return self.objective if self.reml else None

    @property
    def deviance(self) -> float | None:
        """-2 x ML log-likelihood (ML fits only; None for REML fits, as in the JSON contract)."""
        return None if self.reml else self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2.0 * self.nparams

    @property
    def bic(self) -> float:
        """BIC with log(n) even for REML fits (lme4's convention)."""
        return self.objective + math.log(self.nobs) * self.nparams

    @property
    def singular(self) -> bool:
        """lme4's ``isSingular``: a template diagonal within 1e-4 of 0 (a boundary fit)."""
        # The optimiser's record holds the bounds (0 on template diagonals, -inf elsewhere):
        # the structure's isSingular without building them again.
        k = self.structure.ntheta
        theta, lower = self.opt.final_theta[:k], self.opt.lower[:k]
        if k <= _FEW_THETA:
            # Python floats for the few entries of a small model (every fit asks this for
            # its warning): the same test without four NumPy calls.
            return any(
                math.isfinite(b) and abs(t) < 1e-4
                for t, b in zip(theta.tolist(), lower.tolist(), strict=True)
            )
        return bool(np.any(np.isfinite(lower) & (np.abs(theta) < 1e-4)))

    @property
    def converged(self) -> bool:
        return bool(self.opt.converged)

    # -- fixed effects -----------------------------------------------------------------
    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self.estimates.beta, index=list(self.design.x_names), name="estimate")

    @property
    def vcov(self) -> pd.DataFrame:
        names = list(self.design.x_names)
        return pd.DataFrame(self.estimates.vcov_beta, index=names, columns=names)

    @property
    def se(self) -> pd.Series:
        return pd.Series(
            np.sqrt(np.diag(self.estimates.vcov_beta)), index=list(self.design.x_names)
        )

    def coef_table(self, *, ddf: str = "satterthwaite") -> pd.DataFrame:
        """Fixed-effects table: ``estimate, se, df, t, p`` (lmerTest's summary).

        Parameters
        ----------
        ddf
            Denominator degrees of freedom: ``"satterthwaite"`` (default, as lmerTest),
            ``"kenward-roger"`` (REML fits; adjusted SEs as pbkrtest), ``"residual"``
            (n - p) or ``"normal"`` (Wald z, infinite df).
        """
        if ddf == "normal":
            est = self.fixef
            se = self.se
            t = est / se
            df = pd.Series(np.inf, index=est.index)
            from scipy.special import ndtr  # scipy.stats costs ~1 s of CLI start-up

            p = pd.Series(2.0 * ndtr(-np.abs(t.to_numpy())), index=est.index)
            return pd.DataFrame({"estimate": est, "se": se, "df": df, "t": t, "p": p})
        from mixedmodels.inference.wald import coef_table

        return coef_table(self, ddf=ddf)

    def anova(self, *, type: int | str = 3, ddf: str = "satterthwaite") -> pd.DataFrame:
        """F tests per model term (lmerTest's ``anova``): Type I, II or III (default).

        Columns ``SumSq, MeanSq, NumDF, DenDF, F, p``; ``ddf`` as in :meth:`coef_table`.
        """
        from mixedmodels.inference.anova import anova

        return anova(self, type=type, ddf=ddf)

    def test(self, hypothesis: Any, rhs: Any = None, *, ddf: str = "satterthwaite"):
        """Wald test of a linear hypothesis ``L beta = c``.

        ``hypothesis`` is a string over coefficient names (``"treatmentHigh =
        treatmentLow"``, ``"treatmentHigh = 0, treatmentLow = 0"``), parsed safely, or a
        matrix ``L`` with ``rhs``. One row gives a t test, several an F test.
        """
        from mixedmodels.inference.wald import linear_hypothesis

        return linear_hypothesis(self, hypothesis, rhs, ddf=ddf)

    @property
    def vcov_kenward_roger(self) -> pd.DataFrame:
        """Kenward-Roger adjusted covariance of the fixed effects (REML fits; pbkrtest)."""
        from mixedmodels.inference.kenward_roger import kenward_roger_covariance_of

        names = list(self.design.x_names)
        V = kenward_roger_covariance_of(self).vcov_beta_adjusted
        return pd.DataFrame(V, index=names, columns=names)

    # -- variance components -------------------------------------------------------------
    def covariance_matrices(self) -> dict[str, list[tuple[tuple[str, ...], np.ndarray]]]:
        """Per grouping factor, the covariance matrix of each original term (with names)."""
        if self._gls:
            return {}
        # theta is relative to the engine's sigma (centred variance covariates)
        return term_covariances(self.structure, self.theta, self.estimates.sigma**2)

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components (see the class docstring); a fresh copy on each access."""
        return self._varcorr.copy()

    @cached_property
    def _varcorr(self) -> pd.DataFrame:
        rows = variance_component_rows(self.covariance_matrices())
        strata = self.residual_strata
        for label, sd in self.residual_sd.items():
            rows.append(
                {
                    "group": "Residual",
                    "term": None if strata is None else f"{strata.column}={label}",
                    "term2": None,
                    "variance": sd**2,
                    "sd": sd,
                    "corr": np.nan,
                }
            )
        return pd.DataFrame(rows, columns=VARCORR_COLUMNS)

    # -- random effects --------------------------------------------------------------------
    @property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes per grouping factor, levels x terms (fresh copies)."""
        return {group: frame.copy() for group, frame in self._ranef.items()}

    @cached_property
    def _ranef(self) -> dict[str, pd.DataFrame]:
        if self._gls:
            return {}
        return modes_by_group(self.estimates.b, self.structure.terms)

    @cached_property
    def _condvar(self) -> list[np.ndarray]:
        out = conditional_variances(
            self.deviance_function.system, self.factor, self.estimates.sigma
        )
        for v in out:
            v.setflags(write=False)  # handed out by ranef_condvar
        return out

    @property
    def ranef_condvar(self) -> dict[str, np.ndarray]:
        """Conditional covariance matrices of the BLUPs: group -> (levels, p, p), read-only."""
        if self._gls:
            return {}
        return {t.group: v for t, v in zip(self.structure.terms, self._condvar, strict=True)}

    @property
    def ranef_condsd(self) -> dict[str, pd.DataFrame]:
        """Conditional standard deviations of the BLUPs (lme4's ``condVar``), levels x terms.

        Fresh copies on each access.
        """
        return {group: frame.copy() for group, frame in self._ranef_condsd.items()}

    @cached_property
    def _ranef_condsd(self) -> dict[str, pd.DataFrame]:
        if self._gls:
            return {}
        return condsd_by_group(self._condvar, self.structure.terms)

    def ranef_table(self) -> pd.DataFrame:
        """Tidy BLUPs: ``group, level, term, condval, condsd`` (lme4's as.data.frame(ranef))."""
        if self._gls:
            return pd.DataFrame(columns=["group", "level", "term", "condval", "condsd"])
        return ranef_frame(self._ranef, self._ranef_condsd)

    # -- fitted values ---------------------------------------------------------------------
    def _random_part(self) -> np.ndarray:
        out = np.zeros(self.nobs)
        for b, term in zip(self.estimates.b, self.structure.terms, strict=True):
            out += np.einsum("ij,ij->i", term.z, b[term.refs])
        return out

    def _fixed_part(self) -> np.ndarray:
        """``X beta`` plus the offset (lme4's fitted values include it)."""
        eta = self.design.X @ self.estimates.beta
        offset = self.model.offset
        return eta if offset is None else eta + offset

    @cached_property
    def _fitted_values(self) -> np.ndarray:
        self._require_rows("fitted values and residuals")
        out = self._fixed_part() + self._random_part()
        out.setflags(write=False)
        return out

    @property
    def fitted(self) -> pd.Series:
        """Conditional fitted values X beta + offset + Z b."""
        return pd.Series(self._fitted_values, index=self.design.row_index, name="fitted")

    @property
    def resid(self) -> pd.Series:
        """Conditional residuals y - X beta - Z b."""
        return pd.Series(
            self.design.y - self._fitted_values, index=self.design.row_index, name="resid"
        )

    @property
    def fitted_marginal(self) -> pd.Series:
        """Population-level fitted values X beta (+ offset)."""
        self._require_rows("fitted values")
        return pd.Series(self._fixed_part(), index=self.design.row_index, name="fitted")

    @property
    def resid_marginal(self) -> pd.Series:
        """Marginal residuals y - X beta (- offset)."""
        self._require_rows("residuals")
        return pd.Series(
            self.design.y - self._fixed_part(), index=self.design.row_index, name="resid"
        )

    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        *,
        re: bool = True,
        se_fit: bool = False,
        interval: str | None = None,
        level: float = 0.95,
        weights: Any = None,
    ) -> pd.Series | pd.DataFrame:
        """Predictions for new rows, optionally with standard errors and intervals.

        Parameters
        ----------
        newdata
            Rows with the formula's predictor columns (the response is not needed). None
            gives the fitted values.
        re
            Include the random effects (conditional prediction). Levels not seen in fitting
            get zero random effects, i.e. the population-level prediction.
        se_fit
            Return a DataFrame ``fit, se`` instead of a Series.
        interval
            ``"confidence"`` (for the mean) or ``"prediction"`` (for a new observation):
            a DataFrame with ``lower, upper`` too (``se_pred`` for prediction intervals).
        level
            Coverage of the interval (normal quantiles).
        weights
            Prior weights of the new rows for prediction intervals (column name or values).

        Notes
        -----
        What each variance includes is in :mod:`mixedmodels.inference.prediction`:
        ``x' vcov x`` for ``re=False``; with random effects the joint prediction error
        variance of beta-hat and the BLUPs (``sigma^2 [Lambda'z; x]' C^{-1} [Lambda'z; x]``,
        variance parameters treated as known); prediction intervals add the row's residual
        variance and, for unseen levels, the random effects' variance.
        """
        if se_fit or interval is not None:
            from mixedmodels.inference.prediction import prediction_frame

            return prediction_frame(
                self, newdata, re=re, interval=interval, level=level, weights=weights
            )
        if newdata is None:
            return self.fitted if re else self.fitted_marginal
        newdata = pandas_rows(newdata)
        re = re and not self._gls
        pred = linear_predictor(
            self.design, self.structure.terms, self.estimates.beta, self.estimates.b, newdata, re=re
        )
        return pd.Series(pred, index=newdata.index, name="predicted")

    # -- inference (imported on use: keeps `import mixedmodels` light) ----------------------
    def confint(
        self, method: str = "wald", level: float = 0.95, parm: Any = None, **kwargs: Any
    ) -> pd.DataFrame:
        """Confidence intervals: ``method="wald"`` (fixed effects), ``"profile"`` (lme4's
        profile likelihood intervals, all parameters) or ``"bootstrap"`` (parametric,
        percentile). See :func:`mixedmodels.inference.profile.confint`."""
        from mixedmodels.inference.profile import confint

        return confint(self, method, level, parm, **kwargs)

    def profile(self, **kwargs: Any):
        """Likelihood profiles of all parameters (lme4's ``profile``)."""
        from mixedmodels.inference.profile import profile

        return profile(self, **kwargs)

    def emmeans(
        self,
        specs: Any,
        by: Any = None,
        *,
        adjust: str = "tukey",
        ddf: str = "satterthwaite",
        level: float = 0.95,
        at: Any = None,
        data: Any = None,
    ):
        """Estimated marginal means of ``specs`` (within ``by``) and their pairwise
        contrasts (R's emmeans + pairs): ``adjust="tukey"|"holm"|"bonferroni"|"none"``.
        See :func:`mixedmodels.inference.emmeans.emmeans`."""
        from mixedmodels.inference.emmeans import emmeans

        return emmeans(self, specs, by, adjust=adjust, ddf=ddf, level=level, at=at, data=data)

    def icc(self, **kwargs: Any):
        """Intraclass correlation per grouping factor, with its definition stated."""
        from mixedmodels.diagnostics.icc import icc

        return icc(self, **kwargs)

    def r2(self):
        """Marginal and conditional R² (Nakagawa, Johnson & Schielzeth 2017); see
        :func:`mixedmodels.diagnostics.r2.r2`."""
        from mixedmodels.diagnostics.r2 import r2

        return r2(self)

    def influence(self, group: str | None = None):
        """Leave-one-group-out influence (Cook's distance, DFBETAS, changes in the variance
        parameters) and per-observation hat values and scaled residuals; see
        :func:`mixedmodels.diagnostics.influence.influence`."""
        from mixedmodels.diagnostics.influence import influence

        return influence(self, group)

    def bootstrap(self, nsim: int = 500, seed: int | None = None, **kwargs: Any):
        """Parametric bootstrap of the fit (reproducible given ``seed``)."""
        from mixedmodels.inference.bootstrap import bootstrap

        return bootstrap(self, nsim, seed, **kwargs)

    def refit(self, y: Any) -> LinearMixedModelResult:
        """Fit the same model to a new response (lme4's ``refit``): a full result.

        ``y`` has one value per row used in the fit (``nobs``, in the order of
        :attr:`fitted`; a Series is aligned on its index). No formula, design or symbolic
        work is done again: only the ``y`` parts of the cross products change, and the
        optimiser starts from this fit's optimum. The result equals :func:`mixedmodels.lmer`
        on the data with the new response (same criterion, REML or ML).
        """
        self._require_rows("refit")
        if isinstance(y, pd.Series):
            y = y.reindex(self.design.row_index)
        return self.model.refit(
            np.asarray(y, dtype=float), start=self.opt.final_theta, reml=self.reml
        )

    def simulate(self, nsim: int = 1, seed: int | None = None, *, re: str = "marginal"):
        """Responses drawn from the fitted model (lme4's ``simulate``): rows x ``nsim``.

        ``re="marginal"`` draws new random effects (lme4's default ``use.u = FALSE``);
        ``"conditional"`` keeps them at their conditional modes and draws residuals only.
        Residuals have each row's own SD (residual strata, prior weights); the offset is
        included. Column ``sim_i`` uses the random stream ``SeedSequence(seed).spawn(nsim)[i]``,
        the same as replicate ``i`` of :meth:`bootstrap`. See
        :func:`mixedmodels.inference.bootstrap.simulate`.
        """
        from mixedmodels.inference.bootstrap import simulate

        return simulate(self, nsim, seed, re=re)

    # -- figures (matplotlib is imported on use) -------------------------------------------
    def plot_diagnostics(self, group: str | None = None):
        """Six-panel residual and random-effects diagnostics (a matplotlib Figure)."""
        from mixedmodels import plots

        self._refuse_without_random_effects("the diagnostics panels", "use plot_qq()")
        return plots.diagnostics(self, group)

    def plot_qq(self):
        """Normal Q-Q plot of the conditional residuals with a 95% band."""
        from mixedmodels import plots

        return plots.qq(self)

    def plot_caterpillar(self, group: str | None = None):
        """BLUPs with 95% intervals from their conditional SDs, sorted."""
        from mixedmodels import plots

        self._refuse_without_random_effects("the caterpillar plot", "there are no BLUPs")
        return plots.caterpillar(self, group)

    def _refuse_without_random_effects(self, what: str, instead: str) -> None:
        if self._gls:
            raise ModelSpecificationError(
                f"{what} need random effects and this model has none (a gls fit); {instead}"
            )

    # -- presentation ----------------------------------------------------------------------
    def summary(self) -> Report:
        """lme4-style summary: fit criteria, scaled residuals, random and fixed effects."""
        method = "REML" if self.reml else "maximum likelihood"
        kind = "Generalized least squares" if self._gls else "Linear mixed model"
        lines = [f"Formula: {self.formula}"] if self.formula else []
        if self.model.data_name:
            lines.append(f"   Data: {self.model.data_name}")
        crit = pd.DataFrame(
            [
                [
                    self.aic,
                    self.bic,
                    self.loglik,
                    self.objective,
                    self.nobs - len(self.estimates.beta),
                ]
            ],
            columns=[
                "AIC",
                "BIC",
                "logLik",
                "REML criterion" if self.reml else "deviance",
                "df.resid",
            ],
        )
        residual_tables = []
        if self.model.has_rows:
            scaled = self.resid.to_numpy() / self.residual_sd_by_row
            if self.model.weights is not None:  # Pearson residuals, as lme4's summary
                scaled = scaled * np.sqrt(self.model.weights)
            q = np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1.0])
            res_tab = pd.DataFrame([q], columns=["Min", "1Q", "Median", "3Q", "Max"])
            residual_tables.append(Table("Scaled residuals:", res_tab, show_index=False))
        vc = self.varcorr
        vc_rows = []
        for _, r in vc.iterrows():
            if r["group"] == "Residual":
                label = "" if pd.isna(r["term"]) else r["term"]
                vc_rows.append(["Residual", label, r["variance"], r["sd"], ""])
            elif pd.isna(r["term2"]):
                vc_rows.append([r["group"], r["term"], r["variance"], r["sd"], ""])
        corr_notes = [
            f"  corr({r['group']}: {r['term']}, {r['term2']}) = {r['corr']:.3f}"
            for _, r in vc.iterrows()
            if not pd.isna(r["term2"]) and r["group"] != "Residual"
        ]
        vc_tab = pd.DataFrame(vc_rows, columns=["Groups", "Name", "Variance", "Std.Dev.", ""]).drop(
            columns=""
        )
        groups = ", ".join(f"{g}, {n}" for g, n in self.ngroups.items())
        coef = self.coef_table()
        has_df = np.isfinite(coef["df"]).any()
        coef_disp = pd.DataFrame(
            {
                "Estimate": coef["estimate"],
                "Std. Error": coef["se"],
                **({"df": coef["df"]} if has_df else {}),
                "t value": coef["t"],
                "Pr(>|t|)" if has_df else "Pr(>|z|)": coef["p"],
            }
        )
        notes = [*self._r2_summary_line()]
        if self.design.dropped_columns:
            notes.append("dropped (rank deficient): " + ", ".join(self.design.dropped_columns))
        if self.n_dropped_rows:
            notes.append(f"{self.n_dropped_rows} rows with missing values were dropped")
        if self.singular:
            notes.append("boundary (singular) fit: see help on singular fits")
        if not self.converged:
            notes.extend(self.opt.messages)
        obs_note = f"Number of obs: {self.nobs}" + (f", groups: {groups}" if groups else "")
        random_tables = (
            ()
            if self._gls
            else (
                Table(
                    "Random effects:",
                    vc_tab,
                    notes=(*tuple(corr_notes), obs_note),
                    show_index=False,
                ),
            )
        )
        if self._gls:
            lines.append(obs_note)
        tables = (
            Table("", crit, show_index=False, digits=6),
            *residual_tables,
            *self._structure_tables(),
            *random_tables,
            Table(
                "Fixed effects:" + ("" if has_df else " (p from the normal approximation)"),
                coef_disp,
                pvalue_columns=("Pr(>|t|)", "Pr(>|z|)"),
            ),
        )
        return Report(
            title=f"{kind} fit by {method}",
            lines=tuple(lines),
            tables=tables,
            footer=tuple(notes),
        )

    def _structure_tables(self) -> tuple[Table, ...]:
        """nlme's print of the correlation structure and variance function."""
        repeated = self.repeated
        if repeated is None:
            return ()
        pc, parts = repeated.split(self.residual_psi)
        out = []
        if repeated.correlation is not None:
            spec = getattr(self.model, "correlation", None)
            rows = repeated.correlation.describe(pc)
            if spec.kind == "us":
                C = np.asarray(repeated.correlation.matrix(pc))
                levels = list(repeated.correlation.levels)
                frame = pd.DataFrame(C, index=levels, columns=levels)
                show_index = True
            else:
                frame = pd.DataFrame([[v for _, v in rows]], columns=[n for n, _ in rows])
                show_index = False
            out.append(
                Table(
                    f"Correlation Structure: {repeated.correlation.title}",
                    frame,
                    notes=(f" Formula: ~{spec.time or 1} | {spec.group}",),
                    show_index=show_index,
                )
            )
        for v, p in zip(repeated.variances, parts, strict=True):
            title, rows = v.describe(p)
            frame = pd.DataFrame([[x for _, x in rows]], columns=[n for n, _ in rows])
            out.append(Table(title, frame, show_index=False))
        sigma = pd.DataFrame([[self.sigma]], columns=["Residual standard error (sigma)"])
        out.append(Table("", sigma, show_index=False))
        return tuple(out)

    def __repr__(self) -> str:
        return (
            f"<LinearMixedModelResult {self.formula!r}: {'REML' if self.reml else 'ML'}, "
            f"nobs={self.nobs}, loglik={self.loglik:.4f}>"
        )

    def _repr_html_(self) -> str:
        return self.summary().to_html()

    def _r2_summary_line(self) -> tuple[str, ...]:
        try:
            r2 = self.r2()
        except ModelSpecificationError:
            return ()
        return (f"R2 (Nakagawa): marginal {r2.marginal:.4f}, conditional {r2.conditional:.4f}",)

    def _r2_fields(self, num) -> dict[str, Any]:
        """``r2_marginal``/``r2_conditional`` for the JSON object (null if not computable)."""
        try:
            r2 = self.r2()
        except ModelSpecificationError:
            return {"r2_marginal": None, "r2_conditional": None}
        return {"r2_marginal": num(r2.marginal), "r2_conditional": num(r2.conditional)}

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON contract (DESIGN.md): plain Python types only."""

        def num(x):
            if x is None:
                return None
            x = float(x)
            return x if math.isfinite(x) else None

        coef = self.coef_table()
        fixef = [
            {
                "term": name,
                "estimate": num(r.estimate),
                "se": num(r.se),
                "df": num(r.df),
                "t": num(r.t),
                "p": num(r.p),
            }
            for name, r in coef.iterrows()
        ]
        vc = []
        for _, r in self.varcorr.iterrows():
            if r["group"] == "Residual":
                entry = {"group": "Residual", "variance": num(r["variance"]), "sd": num(r["sd"])}
                if not pd.isna(r["term"]):
                    entry["term"] = r["term"]
                vc.append(entry)
            elif pd.isna(r["term2"]):
                vc.append(
                    {
                        "group": r["group"],
                        "term": r["term"],
                        "variance": num(r["variance"]),
                        "sd": num(r["sd"]),
                    }
                )
            else:
                vc.append(
                    {
                        "group": r["group"],
                        "term": r["term"],
                        "term2": r["term2"],
                        "corr": num(r["corr"]),
                    }
                )
        out = {
            "formula": self.formula,
            "reml": self.reml,
            "nobs": self.nobs,
            "ngroups": self.ngroups,
            "fixef": fixef,
            "varcorr": vc,
            "sigma": num(self.sigma),
            "loglik": num(self.loglik),
            "deviance": num(self.deviance),
            "reml_criterion": num(self.reml_criterion),
            "aic": num(self.aic),
            "bic": num(self.bic),
            "theta": [float(t) for t in self.theta],
            "singular": self.singular,
            "converged": self.converged,
            "dropped_rows": self.n_dropped_rows,
            **self._r2_fields(num),
        }
        if self.repeated is not None or self.residual_strata is not None:
            out["correlation"] = (
                None
                if getattr(self.model, "correlation", None) is None
                else str(getattr(self.model, "correlation", None))
            )
            out["variance"] = (
                f"ident({self.residual_strata.column})"
                if getattr(self.model, "variance", None) is None
                and self.residual_strata is not None
                else None
                if getattr(self.model, "variance", None) is None
                else str(getattr(self.model, "variance", None))
            )
            out["structure_params"] = _plain(self.structure_params)
        if self.residual_strata is not None:
            out["residual_groups"] = self.residual_strata.column
            out["residual_sd"] = {k: num(v) for k, v in self.residual_sd.items()}
            out["residual_sd_ratio"] = {k: num(v) for k, v in self.residual_sd_ratio.items()}
        return out


def _plain(value: Any) -> Any:
    """Plain JSON values (non-finite numbers as None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float | np.floating):
        x = float(value)
        return x if math.isfinite(x) else None
    return value
