"""Parametric bootstrap: simulate from the fitted model, refit through the cross products.

Each replicate draws ``y* = X beta_hat + Z b* + e*`` with ``b* = sigma_hat Lambda(theta_hat) u*``,
``u* ~ N(0, I)`` and ``e* ~ N(0, sigma_hat^2 I)`` (lme4's ``simulate``/``bootMer`` with new
random effects), then refits. Only the response changes, so only the ``y`` parts of the
cross products ``A`` are recomputed (``Z'y*``, ``X'y*``, ``y*'y*``); the Z and X blocks are
shared. Replicate ``i`` uses its own stream ``SeedSequence(seed).spawn(nsim)[i]``, so results do
not depend on ``n_jobs``.

:func:`bootstrap_compare` is the parametric-bootstrap likelihood-ratio test (pbkrtest's
``PBmodcomp``): simulate under the smaller model, refit both, and compare the observed
statistic with the simulated ones: ``p = (1 + #{LRT* >= LRT}) / (1 + nsim)``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ModelSpecificationError, refuse_repeated
from ..linalg.blas_threads import blas_threads_for
from ..optimize import OptimizerOptions, minimize_bobyqa
from .linear_model import LinearModelResult, ols_criterion
from .parameters import SdCorParameters, residual_ratio_names

_REFIT = OptimizerOptions(ftol_rel=1e-10, ftol_abs=1e-8, xtol_abs=1e-7, initial_step=0.3)


# -- one refit ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class BootstrapFit:
    """One refit to simulated data (what ``func`` receives).

    Attributes
    ----------
    theta, beta, sigma
        Estimates on the simulated response.
    objective
        -2 x (REML) log-likelihood at the optimum.
    reml
        Criterion used.
    names
        Parameter names of :meth:`params` (``sd_...``, ``cor_...``, ``sigma``, fixed effects).
    """

    theta: np.ndarray
    beta: np.ndarray
    sigma: float
    objective: float
    reml: bool
    structure: Any
    x_names: tuple[str, ...]
    psi: np.ndarray = field(default_factory=lambda: np.zeros(0))
    strata: Any = None

    @property
    def loglik(self) -> float:
        return -0.5 * self.objective

    def params(self) -> pd.Series:
        """sd/cor parameters, sigma and fixed effects, named as in :func:`confint`."""
        return pd.Series(self.param_values(), index=self.param_names())

    def param_values(self) -> np.ndarray:
        """The values of :meth:`params` (no pandas: the default statistic of each replicate)."""
        if self.structure is None:
            return np.concatenate([[self.sigma], self.beta])
        vals = np.concatenate(
            [SdCorParameters(self.structure).to_phi(self.theta, self.sigma), self.beta]
        )
        if self.strata is not None:
            # Residual SD ratios of the non-reference groups (nlme's varIdent coefficients).
            vals = np.concatenate([vals, np.exp(self.psi)])
        return vals

    def param_names(self) -> list[str]:
        """The names of :meth:`params`."""
        if self.structure is None:
            return ["sigma", *self.x_names]
        names = [*SdCorParameters(self.structure).names, *self.x_names]
        if self.strata is not None:
            names += residual_ratio_names(self.strata)
        return names

    def icc(self, groups: list[str]) -> np.ndarray:
        """Adjusted ICC of ``groups`` (random-intercept variances over their sum plus sigma^2)."""
        s2 = self.sigma**2
        var: dict[str, float] = {}
        for T, term in zip(self.structure.templates(self.theta), self.structure.terms, strict=True):
            cov = s2 * (T @ T.T)
            names = term.column_names
            var[term.group] = (
                float(cov[names.index("(Intercept)"), names.index("(Intercept)")])
                if "(Intercept)" in names
                else 0.0
            )
        total = sum(var.values()) + s2
        return np.array([var[g] / total for g in groups])


class _Refitter:
    """Refits one model to new responses (picklable): the model's own :meth:`refit`.

    Only the response changes, so only the ``y`` parts of the cross products are formed
    again (``Z'Wy``, ``X'Wy``, ``y'Wy`` with the prior weights ``W``, after the offset is
    taken from y); the rest, and the systems' symbolic set-up, are shared
    (``LinearMixedModel.with_response``). Newton steps from the fit's optimum finish most
    refits; the others (boundary optima) run the full fit. With residual variances by
    group the blocks of each group are formed again and the model's whole objective
    (theta and the SD ratios) is minimised, as the fit did.
    """

    def __init__(self, fit: Any, reml: bool):
        self.reml = bool(reml)
        self.X = fit.design.X
        self.x_names = tuple(fit.design.x_names)
        self.mixed = not isinstance(fit, LinearModelResult)
        if self.mixed:
            model = fit.model
            if not model.has_rows:
                raise ModelSpecificationError(
                    "the parametric bootstrap simulates and refits rows, and this fit was made "
                    "from streamed chunks without keeping them; fit an in-memory sample instead"
                )
            self.model = model
            self.structure = fit.structure
            self.strata = model.residual_strata
            self.start = fit.opt.final_theta.copy()
            self.lower = fit.objective_function.lower_bounds()
            self.steps = None
            if self.strata is None:
                self.steps = 0.1 * np.maximum(np.abs(self.start), 0.1)
        else:
            self.structure = None
            self._logdet = fit.logdet_xtx

    def refit(self, y: np.ndarray) -> BootstrapFit:
        X = self.X
        if not self.mixed:
            beta, *_ = np.linalg.lstsq(X, y, rcond=None)
            r = y - X @ beta
            rss = float(r @ r)
            n, p = X.shape
            obj = ols_criterion(rss, self._logdet, n, p, self.reml)
            sigma = math.sqrt(rss / (n - p if self.reml else n))
            return BootstrapFit(np.zeros(0), beta, sigma, obj, self.reml, None, self.x_names)
        model = self.model.with_response(y)
        if self.strata is None:
            # The model's own deviance on the new response, minimised from the fit's
            # optimum with a small first trust region. No Newton finish or convergence
            # report: a replicate needs its estimates to ~1e-7, not to 1e-10 (fit.refit
            # gives the full fit).
            dev = model.evaluation_deviance(self.reml)
            opt = minimize_bobyqa(dev, self.start, self.lower, _REFIT, self.steps)
            theta = opt.final_theta
            if dev.is_dense:
                est, value = dev.estimates(theta)
                beta, sigma = est.beta, est.sigma
            else:
                # beta and sigma alone; the criterion at the optimum is the optimiser's.
                beta, sigma = dev.system.beta_sigma(theta, self.reml)
                value = opt.final_objective
            psi = np.zeros(0)
        else:
            objective = model.objective(self.reml)
            opt = minimize_bobyqa(objective, self.start, self.lower, _REFIT)
            theta, psi = objective.split(opt.final_theta)
            dev = objective.factored_at(psi)
            beta, sigma = dev.system.beta_sigma(theta, self.reml)
            value = opt.final_objective
        return BootstrapFit(
            theta.copy(),
            beta,
            sigma,
            value,
            self.reml,
            self.structure,
            self.x_names,
            psi,
            self.strata,
        )


class _Simulator:
    """Draws responses from a fitted model (picklable): its fixed part with the offset, new
    random effects (``conditional=False``, lme4's ``use.u = FALSE``) or the conditional
    modes (``conditional=True``), and residuals with each row's own SD
    (``sigma delta_i / sqrt(w_i)``)."""

    def __init__(self, fit: Any, conditional: bool = False):
        self.mean = fit.design.X @ fit.fixef.to_numpy()
        self.sigma = float(fit.sigma)
        self.terms: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
        self.scale: np.ndarray | None = None  # residual SD of each row relative to sigma
        if not isinstance(fit, LinearModelResult):
            model = fit.model
            if conditional:
                self.mean = fit.fitted.to_numpy()  # X beta + Z b-hat + offset
            else:
                if model.offset is not None:
                    self.mean = self.mean + model.offset
                templates = fit.structure.templates(fit.theta)
                for T, term in zip(templates, fit.structure.terms, strict=True):
                    self.terms.append((T, term.refs, term.z, term.nlevels))
            scale = np.ones(self.mean.shape[0])
            if model.residual_strata is not None:
                scale = fit.residual_sd_ratio.to_numpy()[model.residual_strata.codes]
            if model.weights is not None:
                scale = scale / np.sqrt(model.weights)
            if model.residual_strata is not None or model.weights is not None:
                self.scale = scale

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        y = self.mean.copy()
        for T, refs, z, nlevels in self.terms:
            u = rng.standard_normal((nlevels, T.shape[0]))
            b = self.sigma * (u @ T.T)
            y += np.einsum("ij,ij->i", z, b[refs])
        e = self.sigma * rng.standard_normal(y.shape[0])
        y += e if self.scale is None else e * self.scale
        return y


def simulate(fit: Any, nsim: int = 1, seed: int | None = None, *, re: str = "marginal"):
    """Responses drawn from a fitted linear mixed model (lme4's ``simulate.merMod``).

    Parameters
    ----------
    fit
        A fitted linear mixed model (or a linear model without random effects).
    nsim
        Number of responses.
    seed
        Seed of the random streams: column ``i`` uses ``SeedSequence(seed).spawn(nsim)[i]``,
        as replicate ``i`` of :func:`bootstrap` does (so ``bootstrap`` refits exactly these
        responses).
    re
        ``"marginal"``: new random effects ``b* = sigma Lambda(theta) u*`` (lme4's default);
        ``"conditional"``: the random effects held at their conditional modes.

    Returns
    -------
    pandas.DataFrame
        One row per observation used in the fit (index as :attr:`fitted`), columns
        ``sim_1 .. sim_nsim``.
    """
    if re not in ("marginal", "conditional"):
        raise ModelSpecificationError(f're must be "marginal" or "conditional", not {re!r}')
    # Draws with each row's own SD would miss a residual correlation.
    refuse_repeated(fit, "simulate", "simulate from the model by hand for now")
    if not isinstance(fit, LinearModelResult) and not fit.model.has_rows:
        raise ModelSpecificationError(
            "simulating responses needs the data rows; this model was fitted from streamed chunks"
        )
    simulator = _Simulator(fit, conditional=re == "conditional")
    seeds = np.random.SeedSequence(seed).spawn(int(nsim))
    out = np.empty((simulator.mean.shape[0], int(nsim)))
    for i, ss in enumerate(seeds):
        out[:, i] = simulator.draw(np.random.default_rng(ss))
    return pd.DataFrame(
        out, index=fit.design.row_index, columns=[f"sim_{i + 1}" for i in range(int(nsim))]
    )


# -- generalized linear mixed models ------------------------------------------------------
@dataclass(frozen=True, eq=False)
class GlmmBootstrapFit:
    """One GLMM refit to simulated data (what ``func`` receives for a GLMM).

    ``objective`` is -2 x the Laplace (or AGQ) log-likelihood; ``nb_theta`` the negative
    binomial's dispersion (None for other families, or when it was held fixed).
    """

    theta: np.ndarray
    beta: np.ndarray
    objective: float
    structure: Any
    x_names: tuple[str, ...]
    nb_theta: float | None = None

    @property
    def loglik(self) -> float:
        return -0.5 * self.objective

    def params(self) -> pd.Series:
        """sd/cor parameters of the random effects and the fixed effects (and ``nb_theta``)."""
        names, vals = list(self.x_names), list(self.beta)
        if self.structure is not None:
            sc = SdCorParameters(self.structure)
            names = [*sc.names[:-1], *names]
            vals = [*sc.to_phi(self.theta, 1.0)[:-1], *vals]
        if self.nb_theta is not None:
            names.append("nb_theta")
            vals.append(self.nb_theta)
        return pd.Series(np.asarray(vals, dtype=float), index=names)


class _GlmmRefitter:
    """Adapts a GLMM (or GLM) fit's own refitter to the replicate loop (picklable)."""

    def __init__(self, fit: Any):
        self.x_names = tuple(fit.design.x_names)
        self.glm = not hasattr(fit, "structure")
        if self.glm:
            self.design, self.family = fit.design, fit.family_spec
            self.structure, self.refitter = None, None
            return
        if fit.refitter is None:
            raise ModelSpecificationError(
                "this GLMM fit cannot be refitted (fitted from streamed data?); the "
                "parametric bootstrap needs the rows in memory"
            )
        self.structure = fit.structure
        self.refitter = fit.refitter
        self.estimated_nb = fit.family == "negative-binomial"

    def refit(self, y: np.ndarray) -> GlmmBootstrapFit:
        if self.glm:
            from .glm import fit_glm

            g = fit_glm(replace(self.design, y=y), self.family)
            return GlmmBootstrapFit(np.zeros(0), g.beta, -2.0 * g.loglik, None, self.x_names)
        theta, beta, objective, nb = self.refitter.refit(y)
        return GlmmBootstrapFit(
            theta, beta, objective, self.structure, self.x_names, nb if self.estimated_nb else None
        )


class _GlmmSimulator:
    """Draws responses from a fitted GLMM (new random effects) or GLM (picklable)."""

    def __init__(self, fit: Any):
        self.fit = fit

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        fit = self.fit
        if hasattr(fit, "draw_response"):
            return fit.draw_response(rng)
        return fit.family_spec.random(rng, fit.mu, fit.prior_weights)  # a GLM: no RE


def _is_generalized(fit: Any) -> bool:
    return hasattr(fit, "family") and hasattr(fit, "nagq")


# -- the replicate loop ---------------------------------------------------------------------
def _blas_limit(refitters: list[Any]):
    """The BLAS threads for refitting these models (:func:`blas_threads_for`): one for
    small models, whose refits and tests (Kenward-Roger's are n x n) are small matrices (a
    power curve's Kenward-Roger tests ran 3-5x slower with two threads on a busy VM)."""
    sizes = [getattr(getattr(r, "model", None), "rest_size", 0) for r in refitters]
    return blas_threads_for(max(sizes, default=0))


def _run_chunk(task: tuple[Any, list[Any], list[np.random.SeedSequence], Callable[..., Any]]):
    simulator, refitters, seeds, func = task
    with _blas_limit(refitters):
        return _run_seeds(simulator, refitters, seeds, func)


def _run_seeds(simulator, refitters, seeds, func) -> list[Any]:
    out = []
    for ss in seeds:
        rng = np.random.default_rng(ss)
        y = simulator.draw(rng)
        try:
            fits = [r.refit(y) for r in refitters]
            out.append(func(*fits))
        except Exception as exc:  # a failed refit is recorded, not fatal
            out.append(exc)
    return out


def _show(enabled: bool, label: str, done: int, total: int) -> None:
    if enabled:
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{label}: {done}/{total}{end}")
        sys.stderr.flush()


def _replicates(
    simulator: _Simulator,
    refitters: list[_Refitter],
    func: Callable[..., Any],
    nsim: int,
    seed: int | None,
    n_jobs: int,
    progress: bool | None,
    label: str,
) -> list[Any]:
    seeds = np.random.SeedSequence(seed).spawn(nsim)
    show = (sys.stderr.isatty() and nsim >= 20) if progress is None else bool(progress)
    results: list[Any] = []
    if n_jobs <= 1:
        step = max(1, nsim // 100)
        with _blas_limit(refitters):
            for i in range(0, nsim, step):
                results.extend(_run_seeds(simulator, refitters, seeds[i : i + step], func))
                _show(show, label, len(results), nsim)
        return results
    nchunks = min(nsim, 4 * n_jobs)
    bounds = np.linspace(0, nsim, nchunks + 1).astype(int)
    tasks = [(simulator, refitters, seeds[a:b], func) for a, b in pairwise(bounds)]
    with ProcessPoolExecutor(max_workers=n_jobs) as ex:
        for chunk in ex.map(_run_chunk, tasks):
            results.extend(chunk)
            _show(show, label, len(results), nsim)
    return results


def _default_func(fit: BootstrapFit | GlmmBootstrapFit) -> np.ndarray:
    if isinstance(fit, BootstrapFit):
        return fit.param_values()  # no pandas per replicate
    return fit.params().to_numpy()


# -- public API ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """Replicates of a statistic under the fitted model.

    Attributes
    ----------
    replicates
        One row per replicate (NaN rows where a refit failed).
    estimate
        The statistic on the original data.
    nsim, seed
        Settings.
    failures
        Number of replicates whose refit failed.
    """

    replicates: pd.DataFrame
    estimate: pd.Series
    nsim: int
    seed: int | None
    failures: int

    def confint(self, level: float = 0.95, parm: Any = None) -> pd.DataFrame:
        """Percentile intervals: rows ``parm`` (default all), columns ``estimate, lower, upper``."""
        reps = self.replicates
        if parm is not None:
            names = [parm] if isinstance(parm, str) else list(parm)
            if names == ["beta_"]:
                names = [
                    n for n in reps.columns if not n.startswith(("sd_", "cor_")) and n != "sigma"
                ]
            elif names == ["theta_"]:
                names = [n for n in reps.columns if n.startswith(("sd_", "cor_")) or n == "sigma"]
            reps = reps[names]
        alpha = (1.0 - level) / 2.0
        ok = reps.dropna()
        out = pd.DataFrame(
            {
                "estimate": self.estimate[reps.columns],
                "lower": ok.quantile(alpha),
                "upper": ok.quantile(1.0 - alpha),
            }
        )
        out.index.name = "param"
        out.attrs.update(level=level, method="bootstrap", nsim=self.nsim, failures=self.failures)
        return out


def bootstrap(
    fit: Any,
    nsim: int = 500,
    seed: int | None = None,
    *,
    func: Callable[[BootstrapFit], Any] | None = None,
    n_jobs: int = 1,
    progress: bool | None = None,
) -> BootstrapResult:
    """Parametric bootstrap of a fitted linear or generalized linear mixed model (``bootMer``).

    Parameters
    ----------
    fit
        A fitted linear mixed model (refits use its criterion, REML or ML).
    nsim
        Number of simulated data sets.
    seed
        Seed of the random streams (``numpy.random.SeedSequence``).
    func
        Statistic of a refit (:class:`BootstrapFit`) returning a number, an array or a
        pandas Series; default: sd/cor parameters, sigma and fixed effects
        (:meth:`BootstrapFit.params`).
    n_jobs
        Worker processes (``func`` must then be picklable: a module-level function).
    progress
        Progress on stderr (default: when stderr is a terminal).

    Returns
    -------
    BootstrapResult

    Examples
    --------
    >>> import mixedmodels as mm
    >>> from mixedmodels.inference.bootstrap import bootstrap
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> boot = bootstrap(fit, nsim=20, seed=1)
    >>> boot.confint().shape
    (7, 3)
    """
    if _is_generalized(fit):
        refitter, simulator = _GlmmRefitter(fit), _GlmmSimulator(fit)
        original = GlmmBootstrapFit(
            np.asarray(fit.theta),
            fit.fixef.to_numpy(),
            -2.0 * fit.loglik,
            fit.structure,
            tuple(fit.design.x_names),
            fit.nb_theta,
        )
    else:
        refuse_repeated(
            fit,
            "the parametric bootstrap",
            "its simulation would draw independent residuals; use Wald intervals or an LRT",
        )
        refitter = _Refitter(fit, fit.reml)
        simulator = _Simulator(fit)
        original = None
    user = func if func is not None else _default_func
    if original is None:
        original = refitter.refit(fit.design.y)
    est = user(original)
    if isinstance(est, pd.Series):
        columns = list(est.index)
    elif func is None:
        columns = list(original.params().index)
    else:
        columns = [f"stat{i}" for i in range(np.size(est))] if np.ndim(est) else ["stat"]
    results = _replicates(simulator, [refitter], user, nsim, seed, n_jobs, progress, "bootstrap")
    width = len(columns)
    rows = np.full((nsim, width), np.nan)
    failures = 0
    for i, r in enumerate(results):
        if isinstance(r, Exception):
            failures += 1
            continue
        rows[i] = np.asarray(r, dtype=float).reshape(width)
    return BootstrapResult(
        replicates=pd.DataFrame(rows, columns=columns),
        estimate=pd.Series(np.asarray(est, dtype=float).reshape(width), index=columns),
        nsim=nsim,
        seed=seed,
        failures=failures,
    )


@dataclass(frozen=True, eq=False)
class BootstrapComparison:
    """Parametric bootstrap likelihood-ratio test (pbkrtest's ``PBmodcomp``).

    Attributes
    ----------
    statistic
        Observed likelihood-ratio statistic.
    df
        Difference in number of parameters.
    p_value
        ``(1 + #{LRT* >= LRT}) / (1 + n)`` over the ``n`` successful replicates.
    p_chisq
        Naive ``chi2(df)`` p-value, for reference.
    replicates
        Simulated statistics (NaN where a refit failed).
    criterion
        ``"ML"`` or ``"REML"`` (as :func:`~.lrt.compare` chooses).
    notes
        What was done.
    """

    statistic: float
    df: int
    p_value: float
    p_chisq: float
    replicates: np.ndarray
    criterion: str
    notes: tuple[str, ...]

    def __str__(self) -> str:
        ok = int(np.isfinite(self.replicates).sum())
        lines = [
            f"Parametric bootstrap LRT ({self.criterion}): "
            f"LRT = {self.statistic:.4f}, df = {self.df}",
            f"  p (bootstrap, {ok} samples) = {self.p_value:.4g};  "
            f"p (chi2({self.df})) = {self.p_chisq:.4g}",
        ]
        return "\n".join(lines + [f"Note: {n}" for n in self.notes])


def _lrt_func(f0: BootstrapFit, f1: BootstrapFit) -> float:
    return f0.objective - f1.objective


def bootstrap_compare(
    fit0: Any,
    fit1: Any,
    nsim: int = 1000,
    seed: int | None = 1,
    *,
    n_jobs: int = 1,
    progress: bool | None = None,
) -> BootstrapComparison:
    """Parametric bootstrap likelihood-ratio test of nested models.

    Parameters
    ----------
    fit0, fit1
        The smaller and the larger model (either order); :func:`~.lrt.compare`'s rules pick
        the criterion (ML refits where fixed effects differ) and check nesting and data.
    nsim
        Number of data sets simulated under the smaller model.
    seed
        Seed of the random streams.
    n_jobs
        Worker processes.
    progress
        Progress on stderr (default: when stderr is a terminal).

    Returns
    -------
    BootstrapComparison

    Notes
    -----
    Useful where the chi2 or chi-bar-square reference is doubtful (several variances on the
    boundary, small samples). pbkrtest's ``PBmodcomp`` (Halekoh & Hojsgaard 2014, JSS 59(9)).
    """
    from .lrt import compare

    table = compare(fit0, fit1)
    small, big = table.fits
    stat = float(table.table["Chisq"].iloc[1])
    df = int(table.table["Df"].iloc[1])
    reml = table.criterion == "REML"
    if _is_generalized(small) or _is_generalized(big):
        refitters = [_GlmmRefitter(small), _GlmmRefitter(big)]
        simulator: Any = _GlmmSimulator(small)
    else:
        refitters = [_Refitter(small, reml), _Refitter(big, reml)]
        simulator = _Simulator(small)
    results = _replicates(
        simulator, refitters, _lrt_func, nsim, seed, n_jobs, progress, "bootstrap LRT"
    )
    reps = np.array([np.nan if isinstance(r, Exception) else float(r) for r in results])
    ok = reps[np.isfinite(reps)]
    p = (1.0 + np.sum(ok >= stat - 1e-10 * max(1.0, abs(stat)))) / (1.0 + ok.size)
    notes = [*table.notes, f"simulated under the smaller model: nsim={nsim}, seed={seed}"]
    if ok.size < nsim:
        notes.append(f"{nsim - ok.size} refits failed and were dropped")
    return BootstrapComparison(
        statistic=stat,
        df=df,
        p_value=float(p),
        p_chisq=float(table.table["Pr(naive)"].iloc[1]),
        replicates=reps,
        criterion=table.criterion,
        notes=tuple(notes),
    )
