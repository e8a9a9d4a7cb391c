"""The generalized linear mixed model: design -> PIRLS criterion -> two-stage fit -> result.

lme4's ``glmer``: ``glFormula`` -> ``mkGlmerDevfun`` -> ``optimizeGlmer`` (twice) ->
``mkMerMod``. Here :class:`GeneralizedLinearMixedModel` holds the design, the family and
the criterion (:class:`mixedmodels.objective.pirls.PirlsDeviance`, on the same blocked
engine as the linear mixed model, reweighted), and :meth:`GeneralizedLinearMixedModel.fit`
runs lme4's two stages:

1. ``nAGQ = 0``: theta optimised, beta and the modes from PIRLS at each theta (fast, and
   a good start);
2. ``nAGQ >= 1``: theta and beta optimised jointly on the Laplace (or AGQ) deviance, from
   the first stage's optimum.

Standard errors are lme4's default: from the Hessian of the deviance over (theta, beta)
jointly (central differences at the optimum, :mod:`mixedmodels.optimize.derivatives`),
which also serves a Newton step that completes BOBYQA's optimum and lme4's convergence
check.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from mixedmodels.covariance import CovarianceStructure, group_terms
from mixedmodels.design.model_design import ModelDesign
from mixedmodels.errors import (
    ConvergenceError,
    ConvergenceWarning,
    ModelSpecificationError,
    SingularFitWarning,
)
from mixedmodels.linalg.blas_threads import blas_threads_for
from mixedmodels.objective.pirls import (
    MODE_TOLERANCE,
    GlmmResponse,
    PirlsDeviance,
    PirlsRows,
    nb_moment_sums,
    pearson_chisq,
)
from mixedmodels.optimize import OptimizerOptions, OptSummary, check_convergence
from mixedmodels.optimize.bobyqa import minimize_bobyqa
from mixedmodels.optimize.derivatives import central_derivatives, cross_differences
from mixedmodels.optimize.finish import cholesky_or_none
from mixedmodels.optimize.glmm_newton import (
    gradient_differences,
    minimize_scalar,
    newton_minimize,
)
from mixedmodels.results.glmm_fit import GlmmFit

#: Stage-2 tolerances: the deviance to ~1e-12 relative; the Newton step does the rest.
_STAGE2 = OptimizerOptions(ftol_rel=1e-12, ftol_abs=1e-10, xtol_abs=1e-8, initial_step=0.2)
#: Stage 1 is only the start of stage 2 (which moves theta too); when it is the fit
#: (nAGQ = 0), it runs to the tight tolerances.
_STAGE1 = OptimizerOptions(ftol_rel=1e-6, ftol_abs=1e-4, xtol_abs=1e-3, initial_step=0.5)
#: PIRLS' stopping rule in stage 1 when it is only the start: its optimiser stops at
#: ftol_abs = 1e-4, far above the deviance's error from modes this close (~1e-12 and below).
_STAGE1_MODE_TOLERANCE = 1e-6
#: ... and looser still when Newton steps on the analytic gradient follow: they converge
#: from farther in fewer evaluations than BOBYQA's last stage-1 steps cost.
_STAGE1_NEWTON = OptimizerOptions(ftol_rel=1e-2, ftol_abs=1.0, xtol_abs=5e-2, initial_step=0.5)
#: ... and with one theta, the Newton decrement at which the slope search stops.
_STAGE1_SCALAR_TOLERANCE = 1e-2
_STAGE1_FINAL = OptimizerOptions(ftol_rel=1e-12, ftol_abs=1e-10, xtol_abs=1e-8, initial_step=0.5)


#: nAGQ = 0 fits use Newton steps on the analytic gradient from this many rows on; below,
#: PIRLS is so cheap that BOBYQA's evaluations (values only) cost less than gradients.
_NEWTON_STAGE1_MIN_ROWS = 200
#: ... and this many thetas: with one or two, BOBYQA's quadratic model needs only a few
#: more values than Newton needs gradients, and a gradient costs about two values
#: (VerbAgg's two terms: 172 -> 188 ms by Newton; grouseticks' three: 162 -> 131 ms).
_NEWTON_STAGE1_MIN_THETAS = 3
#: Finite-difference step for the derivatives at the optimum (theta; beta in SE units).
_STEP = 2e-3
#: Newton stage 2 stops when the Newton decrement (twice the predicted decrease of the
#: deviance) is below this: the parameters are then ~1e-6 standard errors from the optimum,
#: so that fits of the same data by different routes (chunks) end at the same point.
_NEWTON_TOLERANCE = 1e-12
#: Its Hessians are forward differences of the analytic gradient with this relative step:
#: the truncation error (~1e-5 relative in the standard errors on the reference fits) is
#: far below the SEs' tolerance, and k evaluations replace central differences' 2k.
_FORWARD_STEP = 1e-5
#: ... and no step longer than this (theta; beta in SE units): from the first stage's
#: optimum the steps are below 1; a longer one comes from a Hessian far from convex.
_NEWTON_MAX_STEP = 5.0


class _Remembered:
    """A criterion of theta that answers a point it has seen from memory.

    PIRLS warm-starts from the last modes, so a criterion built on it is not a pure
    function to the last bit, and BOBYQA would evaluate it again at its start and at its
    optimum (:func:`~mixedmodels.optimize.bobyqa.minimize_bobyqa`): two PIRLS runs of a
    stage-1 fit's ~6 on a small model. The value remembered is the one the optimiser was
    given, so it sees one consistent function; marked pure for that reason.
    """

    is_pure = True

    def __init__(self, criterion: Any):
        self.criterion = criterion
        self.seen: dict[tuple[float, ...], float] = {}

    def __call__(self, theta: np.ndarray) -> float:
        key = tuple(np.asarray(theta, dtype=np.float64).tolist())
        value = self.seen.get(key)
        if value is None:
            value = self.seen[key] = float(self.criterion(theta))
        return value


class _Whitened:
    """The deviance over ``[theta, z]`` with ``beta = beta1 + L z``."""

    def __init__(self, dev: PirlsDeviance, ntheta: int, beta1: np.ndarray, L: np.ndarray):
        self.dev, self.ntheta, self.beta1, self.L = dev, ntheta, beta1, L

    def params(self, x: np.ndarray) -> np.ndarray:
        k = self.ntheta
        return np.concatenate([x[:k], self.beta1 + self.L @ x[k:]])

    def __call__(self, x: np.ndarray) -> float:
        return self.dev(self.params(np.asarray(x, dtype=np.float64)))

    def jacobian_inverse(self) -> np.ndarray:
        """d[theta, z] / d[theta, beta]: maps a Hessian over (theta, z) to (theta, beta)."""
        k, p = self.ntheta, self.L.shape[0]
        J = np.eye(k + p)
        J[k:, k:] = np.linalg.inv(self.L)
        return J


def _gradient_derivatives(
    transform: _Whitened, x: np.ndarray, f0: float, step: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Gradient and Hessian of the deviance over ``x = [theta, z]`` from the analytic
    gradient over beta (:meth:`PirlsDeviance.laplace_beta_gradient`), and the evaluations
    used.

    Notes
    -----
    The steps are :func:`~mixedmodels.optimize.derivatives.central_derivatives`' (``h_i =
    step * max(1, |x_i|)``). Central differences of the gradient over ``z`` (``L' g_beta``)
    at ``x +- h_i e_i`` give every row of the Hessian's ``z`` columns (its ``z`` block
    symmetrised); the values there give the gradient over theta and the theta diagonal, and
    the theta block's off-diagonal entries take the values at ``x +- (h_i e_i + h_j e_j)``
    as there. That is ``1 + 2 k + t (t - 1)`` evaluations (``t`` thetas) against ``2 k + k
    (k - 1)`` from values alone, and the ``z`` columns carry only the gradient's rounding
    over ``2 h``, not the value's over ``h^2``.
    """
    dev, nt, L = transform.dev, transform.ntheta, transform.L
    x = np.asarray(x, dtype=np.float64)
    k = x.shape[0]
    p = k - nt

    def value_gradient(point: np.ndarray) -> tuple[float, np.ndarray]:
        params = transform.params(point)
        try:
            value, g_beta = dev.laplace_beta_gradient(params[:nt], params[nt:])
        except (ConvergenceError, np.linalg.LinAlgError, FloatingPointError):
            return np.inf, np.full(p, np.nan)
        return value, L.T @ g_beta

    h = step * np.maximum(1.0, np.abs(x))
    _, g_z = value_gradient(x)
    used = 1
    plus, minus = np.empty(k), np.empty(k)
    D = np.empty((k, p))  # D[i] = d g_z / d x_i
    for i in range(k):
        e = np.zeros(k)
        e[i] = h[i]
        plus[i], g_plus = value_gradient(x + e)
        minus[i], g_minus = value_gradient(x - e)
        used += 2
        D[i] = (g_plus - g_minus) / (2.0 * h[i])
    g = np.empty(k)
    g[:nt] = (plus[:nt] - minus[:nt]) / (2.0 * h[:nt])
    g[nt:] = g_z
    H = np.empty((k, k))
    H[:, nt:] = D
    H[nt:, :nt] = D[:nt].T
    H[nt:, nt:] = 0.5 * (D[nt:] + D[nt:].T)
    H[np.arange(nt), np.arange(nt)] = (plus[:nt] - 2.0 * f0 + minus[:nt]) / (h[:nt] * h[:nt])
    used += cross_differences(transform, x, h, plus, minus, f0, H, nt)
    return g, H, used


def _value_gradient(transform: _Whitened):
    """``x -> (D, dD/dx)`` over ``x = [theta, z]`` (``dD/dz = L' dD/dbeta``) from
    :meth:`PirlsDeviance.laplace_gradient` (AGQ: :meth:`~PirlsDeviance.agq_gradient`);
    ``(inf, nan)`` where PIRLS fails."""
    dev, nt, L = transform.dev, transform.ntheta, transform.L

    def fg(x: np.ndarray) -> tuple[float, np.ndarray]:
        params = transform.params(np.asarray(x, dtype=np.float64))
        try:
            if dev.nagq > 1:
                value, grad = dev.agq_gradient(params[:nt], params[nt:])
            else:
                value, grad = dev.laplace_gradient(params[:nt], params[nt:])
        except (ConvergenceError, np.linalg.LinAlgError, FloatingPointError):
            return np.inf, np.full(params.shape[0], np.nan)
        dev.evaluations += 1
        out = grad.copy()
        out[nt:] = L.T @ grad[nt:]
        return float(value), out

    return fg


def _minimize_stage2(
    transform: _Whitened,
    x0: np.ndarray,
    lower: np.ndarray,
    steps: np.ndarray,
    family: Any,
    estimate_dispersion: bool,
) -> tuple[OptSummary, float | None]:
    """BOBYQA over ``[theta, z]``, with the negative binomial's ``log nb_theta`` appended
    when it is estimated: glmer.nb's theta maximises the Laplace log-likelihood over it, and
    optimising it jointly with (theta, beta) reaches the same optimum. Returns the summary
    over ``[theta, z]`` and the estimate of nb_theta (None when not estimated); the
    deviance is left at that estimate."""
    if not estimate_dispersion:
        return minimize_bobyqa(transform, x0, lower, _STAGE2, steps), None
    dev = transform.dev

    def joint(x: np.ndarray) -> float:
        value = float(np.exp(x[-1]))
        if not 1e-8 < value < 1e8:
            return np.inf
        dev.set_family(family.with_theta(value))
        return transform(np.asarray(x[:-1]))

    opt = minimize_bobyqa(
        joint,
        np.concatenate([x0, [np.log(family.theta)]]),
        np.concatenate([lower, [-np.inf]]),
        _STAGE2,
        np.concatenate([steps, [0.2]]),
    )
    nb_theta = float(np.exp(opt.final_theta[-1]))
    dev.set_family(family.with_theta(nb_theta))
    summary = replace(
        opt,
        final_theta=np.asarray(opt.final_theta[:-1]),
        initial_theta=np.asarray(opt.initial_theta[:-1]),
        lower=lower,
    )
    return summary, nb_theta


class GeneralizedLinearMixedModel:
    """A GLMM ready to fit: the family, the design, and the PIRLS criterion set up once.

    Parameters
    ----------
    design
        The numeric design; for a binomial ``cbind`` response ``design.y`` is the
        proportion and ``design.trials`` the number of trials per row.
    family
        A :class:`mixedmodels.family.Family` (with its link).
    nagq
        0, 1 (Laplace) or the number of adaptive Gauss-Hermite nodes (> 1: one scalar
        random-effects term only, as lme4).
    formula, data_name
        For display.
    rows
        The rows as the criterion reads them when they are not in ``design`` (streamed
        or Dask data: :class:`~mixedmodels.objective.pirls.ChunkedRows`, whose responses
        the caller has checked); ``design`` then has names, levels and spec but no rows,
        and results that need rows (fitted values, residuals) are unavailable.
    """

    def __init__(
        self,
        design: ModelDesign,
        family: object,
        *,
        nagq: int = 1,
        formula: str | None = None,
        data_name: str | None = None,
        rows: PirlsRows | None = None,
    ):
        self.design = design
        self.family = family
        self.formula = formula
        self.data_name = data_name
        if not design.re_terms:
            raise ModelSpecificationError(
                "the formula has no random-effects term such as (1 | group); add one, or fit "
                "a GLM without random effects with mm.glm(formula, data, family=...)"
            )
        nagq = int(nagq)
        if nagq < 0:
            raise ModelSpecificationError(f"nagq must be 0, 1 or more, not {nagq}")
        self.terms = group_terms(design.re_terms)
        self.structure = CovarianceStructure.from_terms(self.terms)
        if nagq > 1 and (len(self.terms) != 1 or self.terms[0].ncols != 1):
            raise ModelSpecificationError(
                f"nagq = {nagq} (adaptive Gauss-Hermite quadrature) needs exactly one scalar "
                "random-effects term such as (1 | group), as lme4; use nagq=1 (Laplace) for "
                "this model"
            )
        self.nagq = nagq
        self._estimate_dispersion = (
            getattr(family, "name", "") == "negative-binomial" and family.theta is None
        )
        if self._estimate_dispersion:
            family = family.with_theta(1.0)  # replaced by the start in fit()
            self.family = family
        self.has_rows = rows is None
        if rows is not None:
            self.prior_weights: np.ndarray | None = None
            self.response: GlmmResponse | None = None
            self.deviance = PirlsDeviance.on_rows(self.structure, rows, family, max(nagq, 1))
            self.nobs = int(rows.nobs)
            return
        n = design.nobs
        trials = getattr(design, "trials", None)
        prior = design.weights if design.weights is not None else np.ones(n)
        weights = prior * trials if trials is not None else np.asarray(prior, dtype=np.float64)
        offset = design.offset if design.offset is not None else np.zeros(n)
        check = getattr(family, "check_response", None)
        if check is not None:
            check(design.y, trials)
        self.prior_weights = np.asarray(weights, dtype=np.float64)
        self.response = GlmmResponse(design.y, self.prior_weights, trials, offset, family)
        self.deviance = PirlsDeviance(self.structure, design.X, self.response, max(nagq, 1))
        self.nobs = n

    # -- fitting --------------------------------------------------------------------------
    def fit(self, *, start: np.ndarray | None = None, progress: bool = False) -> GlmmFit:
        """Fit by lme4's two stages; return the optimum (:class:`GlmmFit`) with warnings
        issued for convergence problems and singular fits."""
        clock = time.perf_counter()
        dev = self.deviance
        structure = self.structure
        ntheta = structure.ntheta
        lower_theta = structure.lower_bounds()
        qr = sum(t.nranef for t in self.terms[1:])
        with blas_threads_for(qr):
            theta0 = structure.initial_theta() if start is None else np.asarray(start, float)
            evaluations: dict[str, int] = {}
            if self.estimates_dispersion:
                self._start_dispersion(theta0[:ntheta], evaluations)
            options = _STAGE1_FINAL if self.nagq == 0 else _STAGE1
            if self.nagq > 0:
                dev.mode_tolerance = _STAGE1_MODE_TOLERANCE
            newton = self._uses_newton()
            if newton:
                options = _STAGE1_NEWTON
            try:
                stage1 = None
                if self.nagq == 0 and (
                    ntheta == 1
                    or (
                        self.nobs >= _NEWTON_STAGE1_MIN_ROWS and ntheta >= _NEWTON_STAGE1_MIN_THETAS
                    )
                ):
                    stage1 = self._newton_stage1(theta0[:ntheta], lower_theta)
                elif newton and ntheta == 1:
                    # Stage 2's start: the closer, the fewer of its Newton steps (each a
                    # PIRLS run and a Hessian column) it takes.
                    stage1 = self._newton_stage1(
                        theta0[:ntheta], lower_theta, tolerance=_STAGE1_SCALAR_TOLERANCE
                    )
                if stage1 is None:
                    stage1 = minimize_bobyqa(
                        _Remembered(dev.fast), theta0[:ntheta], lower_theta, options
                    )
            except ConvergenceError as exc:
                link = self.family.link.name
                raise ConvergenceError(
                    "PIRLS found no valid fit at the starting values (the deviance is not "
                    f"finite): the {self.family.name} family with the {link} link may not suit "
                    "these data (e.g. fitted means leaving the valid range); try the canonical "
                    "link, or check for separation (a factor level with all 0s or all 1s)"
                ) from exc
            finally:
                dev.mode_tolerance = MODE_TOLERANCE
            theta1 = np.asarray(stage1.final_theta, dtype=np.float64)
            if newton:
                # Stage 2's origin and whitening only: the modes to stage 1's own rule
                # (its last state is kept; Newton's steps do the rest).
                dev.mode_tolerance = _STAGE1_MODE_TOLERANCE
                try:
                    state1 = dev.pirls(theta1, None)
                finally:
                    dev.mode_tolerance = MODE_TOLERANCE
            else:
                state1 = dev.pirls(theta1, None)
            evaluations["stage1"] = stage1.evaluations
            if self.nagq == 0:
                summary = stage1
                params = np.concatenate([theta1, state1.beta])
                H = None
            else:
                # beta in units of its stage-1 standard errors (beta = beta1 + L z with
                # L L' = Var(beta1) at fixed theta): the deviance is then about equally
                # curved in every direction, which BOBYQA's trust region and the
                # finite-difference Hessian both need (covariates such as age^2 make
                # the raw coefficients differ in scale by 1e4).
                if state1.rxtrx is not None:
                    # PIRLS' fast paths keep R_X'R_X at the weights of the converged
                    # modes: the same matrix as the blocked system's (to ~1e-14
                    # relative on the reference fits), without building that system.
                    L = np.linalg.cholesky(np.linalg.inv(state1.rxtrx))
                else:
                    _, _, est1 = dev.final_system(theta1, state1)
                    L = np.linalg.cholesky(np.asarray(est1.vcov_beta) / est1.sigma**2)
                beta1 = state1.beta
                if newton and self.nagq == 1 and dev._one_term_scalar:
                    # Stage 2's first point is (theta1, beta1), whose fixed-beta modes are
                    # these joint ones: no PIRLS run there. Only where its Hessians are in
                    # closed form: forward differences of the gradient (step 1e-5) from
                    # modes at stage 1's rule (1e-6) would carry its error (grouseticks:
                    # 27 -> 31 stage-2 evaluations).
                    dev.keep_state_at(theta1, beta1, state1)
                transform = _Whitened(dev, ntheta, beta1, L)
                x0 = np.concatenate([theta1, np.zeros(dev.p)])
                lower = np.concatenate([lower_theta, np.full(dev.p, -np.inf)])
                steps = np.concatenate([np.full(ntheta, 0.1), np.full(dev.p, 0.5)])
                done = self._newton_stage2(transform, x0, lower, evaluations) if newton else None
                if done is not None:
                    summary, Hz = done
                else:
                    if newton:  # BOBYQA starts PIRLS from the first stage's modes
                        dev.pirls(theta1, beta1, state1.u)
                    # The standard errors below hold a negative binomial's estimated theta
                    # fixed, as glmer.nb's final glmer fit does.
                    stage2, nb_theta = _minimize_stage2(
                        transform, x0, lower, steps, self.family, self.estimates_dispersion
                    )
                    if nb_theta is not None:
                        self._set_dispersion(nb_theta)
                    evaluations["stage2"] = stage2.evaluations
                    summary, Hz, used = self._newton_finish(transform, stage2)
                    evaluations["derivatives"] = used
                params = transform.params(np.asarray(summary.final_theta, dtype=np.float64))
                summary = replace(summary, final_theta=params)
                J = transform.jacobian_inverse()
                H = None if Hz is None else J.T @ Hz @ J
            fit = self._fit_at(params, summary, H, evaluations, clock)
        for message in fit.messages:
            warnings.warn(message, ConvergenceWarning, stacklevel=2)
        if fit.singular:
            warnings.warn(
                "boundary (singular) fit: a random-effect variance is estimated as 0 or a "
                "correlation as +-1; consider simplifying the random-effects structure",
                SingularFitWarning,
                stacklevel=2,
            )
        return fit

    @property
    def estimates_dispersion(self) -> bool:
        """Whether the fit estimates the negative binomial's theta."""
        return self._estimate_dispersion

    def _set_dispersion(self, value: float) -> None:
        self.family = self.family.with_theta(value)
        self.deviance.set_family(self.family)

    def _start_dispersion(self, theta: np.ndarray, evaluations: dict[str, int]) -> None:
        """A start for the negative binomial's theta: the moment estimate
        ``sum mu^2 / sum((y - mu)^2 - mu)`` on the modes of a Poisson fit at the initial
        theta (lme4's glmer.nb also starts from a Poisson GLMM)."""
        from mixedmodels.family import make_family

        poisson = make_family("poisson", self.family.link.name)
        self.deviance.set_family(poisson)
        state = self.deviance.pirls(theta, None)
        squares, excess = self.deviance.rows.sums(nb_moment_sums, poisson, state.coefficients)
        start = float(squares) / float(excess) if excess > 0 else 1e3
        self._set_dispersion(float(np.clip(start, 1e-2, 1e3)))
        evaluations["dispersion_start"] = 1

    def _newton_stage1(
        self, theta0: np.ndarray, lower: np.ndarray, tolerance: float = _NEWTON_TOLERANCE
    ) -> OptSummary | None:
        """The nAGQ = 0 optimum over theta by Newton steps on its analytic gradient
        (:meth:`PirlsDeviance.fast_gradient`), Hessians by forward differences of it; None
        where that gradient does not apply or Newton did not converge (BOBYQA then).
        ``tolerance``: on the Newton decrement (looser when stage 2 follows)."""
        dev = self.deviance
        if self.estimates_dispersion or not dev.has_fast_gradient():
            return None

        def fg(theta: np.ndarray) -> tuple[float, np.ndarray]:
            dev.evaluations += 1
            try:
                return dev.fast_gradient(theta)
            except (ConvergenceError, np.linalg.LinAlgError, FloatingPointError):
                return np.inf, np.full(theta.shape[0], np.nan)

        def scalar_fg(theta: np.ndarray) -> tuple[float, np.ndarray]:
            # The value as every stage-1 criterion gives it (dev.fast); the slope from the
            # same PIRLS state (PirlsDeviance.pirls keeps it), not a second run.
            value = dev.fast(theta)
            if not np.isfinite(value):
                return np.inf, np.full(1, np.nan)
            try:
                return value, dev.fast_gradient(theta)[1]
            except (ConvergenceError, np.linalg.LinAlgError, FloatingPointError):
                return np.inf, np.full(1, np.nan)

        one = theta0.shape[0] == 1
        f0, g0 = (scalar_fg if one else fg)(theta0)
        if not np.isfinite(f0):
            return None
        if one:
            # One theta: cubic interpolation on values and slopes, no Hessian to difference.
            result = minimize_scalar(
                scalar_fg, float(theta0[0]), float(lower[0]), tolerance=tolerance, start=(f0, g0)
            )
        else:
            result = newton_minimize(
                fg,
                theta0,
                lower,
                step=_FORWARD_STEP,
                forward=True,
                max_step=_NEWTON_MAX_STEP,
                tolerance=_NEWTON_TOLERANCE,
                start=(f0, g0),
                refresh_ratio=0.1,  # a Hessian over theta alone costs only t evaluations
            )
        if not result.converged:
            return None
        return OptSummary(
            initial_theta=theta0,
            final_theta=result.x,
            lower=lower,
            initial_objective=float(f0),
            final_objective=result.value,
            evaluations=result.evaluations + 1,
            optimizer="newton",
            return_code="NEWTON_DECREMENT_REACHED",
            gradient=result.gradient,
        )

    def _uses_newton(self) -> bool:
        """Whether stage 2 runs Newton steps on the analytic gradient: Laplace with scalar
        terms or AGQ (one scalar term, rows in memory), a canonical link, no dispersion to
        estimate."""
        if self.estimates_dispersion:
            return False
        if self.nagq > 1:
            return self.deviance.has_agq_gradient()
        return self.nagq == 1 and self.deviance.has_theta_gradient()

    def _newton_stage2(
        self,
        transform: _Whitened,
        x0: np.ndarray,
        lower: np.ndarray,
        evaluations: dict[str, int],
    ) -> tuple[OptSummary, np.ndarray] | None:
        """Stage 2 by Newton steps on the analytic gradient over ``[theta, z]``
        (:func:`~mixedmodels.optimize.glmm_newton.newton_minimize`); None if it did not
        converge (the caller then runs BOBYQA). Returns the checked summary and the
        Hessian at the optimum (central differences of the gradient).

        Notes
        -----
        The start Hessian takes its theta rows and columns from differences of the gradient
        (``2 t`` evaluations for ``t`` thetas) and ``2 I`` for the ``z`` block: beta is
        whitened by the first stage's ``Var(beta)`` at fixed theta, ``(R_X'R_X)^{-1}``,
        and the deviance's Hessian over beta there is ``2 R_X'R_X``.
        """
        fg = _value_gradient(transform)
        nt = transform.ntheta
        refresh_ratio = 1.0
        f0, g0 = fg(x0)
        used = 1
        start_hessian = None
        hessian = self._closed_form_hessian(transform, fg)
        if hessian is not None:
            refresh_ratio = 0.1  # a Hessian costs no evaluation, only its two passes
            if np.isfinite(f0):
                H0, n = hessian(x0, g0)
                used += n
                if H0 is not None and cholesky_or_none(H0) is not None:
                    start_hessian = H0
        elif np.isfinite(f0):
            cols, n = gradient_differences(fg, x0, _FORWARD_STEP, np.arange(nt), g0)
            used += n
            if cols is not None:
                H0 = 2.0 * np.eye(x0.shape[0])
                H0[:, :nt] = cols
                H0[:nt, :] = cols.T
                H0[:nt, :nt] = 0.5 * (cols[:nt] + cols[:nt].T)
                if cholesky_or_none(H0) is not None:
                    start_hessian = H0
        result = newton_minimize(
            fg,
            x0,
            lower,
            step=_FORWARD_STEP,
            forward=True,
            max_step=_NEWTON_MAX_STEP,
            tolerance=_NEWTON_TOLERANCE,
            initial_hessian=start_hessian,
            start=(f0, g0),
            hessian=hessian,
            refresh_ratio=refresh_ratio,
        )
        used += result.evaluations
        if not result.converged or result.hessian is None:
            evaluations["newton_unconverged"] = used  # BOBYQA's count follows as stage2
            return None
        evaluations["stage2"] = used
        summary = OptSummary(
            initial_theta=x0,
            final_theta=result.x,
            lower=lower,
            initial_objective=float(f0),
            final_objective=result.value,
            evaluations=used,
            optimizer="newton",
            return_code="NEWTON_DECREMENT_REACHED",
            gradient=result.gradient,
        )
        # The closed-form Hessian is the check's verdict as it is; one from gradient
        # differences is judged against its own rounding, read off gradient differences
        # (not off the deviance's magnitude, which grows with the rows).
        summary = check_convergence(
            transform,
            summary,
            hessian=result.hessian,
            hessian_accurate=True,
            hessian_exact=hessian is not None,
            gradient=lambda x: fg(x)[1],
            names=self._parameter_names(),
            blocks=self._parameter_blocks(),
        )
        return summary, result.hessian

    def _closed_form_hessian(self, transform: _Whitened, fg):
        """``(x, g) -> (H, evaluations)`` over ``[theta, z]`` in closed form
        (:meth:`PirlsDeviance.laplace_hessian_one_scalar`: one scalar term, Laplace, a
        canonical link), at no evaluation beyond the point's own; None where the closed
        form does not apply (``fg`` is kept for the signature of the caller's fallback).

        Notes
        -----
        With ``beta = beta1 + L z``: ``H_z = J'HJ``, ``J = diag(I, L)``.
        """
        dev = transform.dev
        if self.nagq != 1 or not dev._one_term_scalar or not dev.has_theta_gradient():
            return None
        nt, L = transform.ntheta, transform.L

        def hessian(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray | None, int]:
            params = transform.params(np.asarray(x, dtype=np.float64))
            try:
                H = dev.laplace_hessian_one_scalar(params[:nt], params[nt:])
            except (ConvergenceError, np.linalg.LinAlgError, FloatingPointError):
                return None, 0
            if not np.all(np.isfinite(H)):
                return None, 0
            Hz = np.empty_like(H)
            Hz[:nt, :nt] = H[:nt, :nt]
            Hz[:nt, nt:] = H[:nt, nt:] @ L
            Hz[nt:, :nt] = Hz[:nt, nt:].T
            Hz[nt:, nt:] = L.T @ H[nt:, nt:] @ L
            return Hz, 0

        return hessian

    def _parameter_names(self) -> list[str]:
        return [*self.structure.theta_labels(), *self.design.x_names]

    def _parameter_blocks(self) -> np.ndarray:
        blocks = self.structure.theta_blocks()
        return np.concatenate([blocks, np.max(blocks, initial=-1) + 1 + np.arange(self.deviance.p)])

    def _newton_finish(self, dev, summary: OptSummary) -> tuple[OptSummary, np.ndarray, int]:
        """Derivatives at BOBYQA's optimum; one Newton step if it lowers the deviance (free
        coordinates only), then lme4's convergence check with that Hessian."""
        x = np.asarray(summary.final_theta, dtype=np.float64)
        f0 = float(summary.final_objective)
        if isinstance(dev, _Whitened) and dev.dev.has_beta_gradient():
            g, H, used = _gradient_derivatives(dev, x, f0, step=_STEP)
        else:
            g, H, used = central_derivatives(dev, x, f0, step=_STEP)
        lower = summary.lower
        free = ~(np.isfinite(lower) & (x - lower < 1e-6))
        idx = np.flatnonzero(free)
        C = cholesky_or_none(H[np.ix_(idx, idx)]) if idx.size else None
        if C is not None:
            step = np.zeros_like(x)
            step[idx] = np.linalg.solve(H[np.ix_(idx, idx)], g[idx])
            trial = np.maximum(x - step, np.where(np.isfinite(lower), lower, -np.inf))
            f1 = float(dev(trial))
            used += 1
            if f1 < f0:
                x, f0 = trial, f1
                g = g - H @ step  # the gradient after an exact Newton step on a quadratic
        summary = replace(
            summary,
            final_theta=x,
            final_objective=f0,
            gradient=g,
            evaluations=summary.evaluations + used,
        )
        summary = check_convergence(
            dev,
            summary,
            hessian=H,
            hessian_accurate=True,
            names=self._parameter_names(),
            blocks=self._parameter_blocks(),
        )
        return summary, H, used

    def _fit_at(
        self,
        params: np.ndarray,
        summary: OptSummary,
        H: np.ndarray | None,
        evaluations: dict[str, int],
        clock: float,
    ) -> GlmmFit:
        dev = self.deviance
        ntheta = self.structure.ntheta
        theta, beta = params[:ntheta], params[ntheta:]
        state = dev.pirls(theta, beta)
        value = state.laplace if self.nagq <= 1 else dev.quadrature(theta, state)
        if dev._one_scalar:
            # One scalar term: PIRLS' per-level blocks give both without the blocked system.
            vcov_rx, condvar = dev.final_one_scalar(theta, state)
            condvar = [condvar]
        else:
            system, factor, est = dev.final_system(theta, state)
            # estimate() scales by sigma^2 = pwrss / n; a GLMM has no residual scale.
            vcov_rx = np.asarray(est.vcov_beta) / (est.sigma**2)
            from mixedmodels.linalg.solution import conditional_variances

            condvar = conditional_variances(system, factor, 1.0)
        vcov = vcov_rx
        messages = list(summary.messages)
        if H is not None:
            C = cholesky_or_none(H)
            if C is None:
                messages.append(
                    "the Hessian of the deviance over (theta, beta) is not positive definite: "
                    "standard errors are those at fixed theta (vcov(use.hessian = FALSE))"
                )
            else:
                inv = np.linalg.inv(H)
                vcov = 2.0 * inv[ntheta:, ntheta:]
                vcov = 0.5 * (vcov + vcov.T)
        b = []
        start = 0
        templates = self.structure.templates(theta)
        for term, T in zip(self.terms, templates, strict=True):
            stop = start + term.nranef
            b.append(state.u[start:stop].reshape(term.nlevels, term.ncols) @ T.T)
            start = stop
        saturated = dev.saturated() if self.nagq > 1 else 0.0
        # The Pearson statistic needs the rows: a result without them (chunks) keeps it.
        chisq = (
            None
            if self.has_rows
            else float(dev.rows.sums(pearson_chisq, self.family, state.coefficients)[0])
        )
        loglik = -0.5 * value
        nparams = (
            ntheta + dev.p + (1 if getattr(self.family, "name", "") == "negative-binomial" else 0)
        )
        optimizer = {
            "evaluations": evaluations,
            "seconds": time.perf_counter() - clock,
            "return_code": summary.return_code,
            "gradient": None if summary.gradient is None else np.asarray(summary.gradient).tolist(),
        }
        return GlmmFit(
            design=self.design,
            family=self.family,
            terms=self.terms,
            structure=self.structure,
            nagq=self.nagq,
            theta=theta.copy(),
            beta=beta.copy(),
            vcov_beta=vcov,
            vcov_beta_rx=vcov_rx,
            b=tuple(b),
            b_condvar=tuple(condvar),
            eta=state.eta,
            mu=state.mu,
            prior_weights=self.prior_weights,
            nobs=self.nobs,
            pearson_chisq=chisq,
            loglik=loglik,
            loglik_marginal=loglik - 0.5 * saturated,
            deviance=state.deviance,
            nparams=nparams,
            converged=bool(summary.converged),
            singular=self.structure.is_singular(theta),
            messages=tuple(messages),
            optimizer=optimizer,
            formula=self.formula,
            data_name=self.data_name,
            offset=self.design.offset,
            # Refits (bootstrap, profiles) need the rows in memory.
            refitter=GlmmRefitter(self, theta, beta, vcov_rx) if self.has_rows else None,
        )


class GlmmRefitter:
    """Refits a GLMM to new responses, from the fit's optimum (the parametric bootstrap).

    Only the response changes: the structure, X, weights, trials and offset are the fit's.
    Each refit runs the fit's last stage from the fit's estimates (beta whitened by the
    fit's ``Var(beta)`` at fixed theta; the negative binomial's dispersion jointly, when
    the fit estimated it) and skips the Hessian: a replicate needs estimates, not SEs.
    Picklable (worker processes take one each).
    """

    def __init__(
        self,
        model: GeneralizedLinearMixedModel,
        theta: np.ndarray,
        beta: np.ndarray,
        vcov_rx: np.ndarray,
    ):
        self.structure = model.structure
        self.X = model.design.X
        self.base = model.response
        self.nagq = model.nagq
        self.estimates_dispersion = model.estimates_dispersion
        self.theta = np.array(theta, dtype=np.float64)
        self.beta = np.array(beta, dtype=np.float64)
        self.family = model.family
        self._vcov_rx = np.asarray(vcov_rx)
        self._L: np.ndarray | None = None

    @property
    def L(self) -> np.ndarray:
        """Cholesky factor of the fit's ``Var(beta)`` at fixed theta (beta's whitening),
        formed at the first refit: a fit that is never refitted does not pay for it."""
        if self._L is None:
            self._L = np.linalg.cholesky(self._vcov_rx)
        return self._L

    def refit(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float | None]:
        """``(theta, beta, -2 loglik, nb_theta)`` of the model refitted to ``y``."""
        base = self.base
        response = GlmmResponse(
            np.asarray(y, dtype=np.float64), base.weights, base.trials, base.offset, self.family
        )
        dev = PirlsDeviance(self.structure, self.X, response, max(self.nagq, 1))
        ntheta = self.structure.ntheta
        lower_theta = self.structure.lower_bounds()
        if self.nagq == 0:
            opt = minimize_bobyqa(dev.fast, self.theta, lower_theta, _STAGE1_FINAL)
            theta = np.asarray(opt.final_theta, dtype=np.float64)
            state = dev.pirls(theta, None)
            return theta, state.beta, state.laplace, getattr(self.family, "theta", None)
        transform = _Whitened(dev, ntheta, self.beta, self.L)
        x0 = np.concatenate([self.theta, np.zeros(dev.p)])
        lower = np.concatenate([lower_theta, np.full(dev.p, -np.inf)])
        steps = np.concatenate([np.full(ntheta, 0.1), np.full(dev.p, 0.5)])
        opt, nb_theta = _minimize_stage2(
            transform, x0, lower, steps, self.family, self.estimates_dispersion
        )
        if nb_theta is None:
            nb_theta = getattr(self.family, "theta", None)
        x = np.asarray(opt.final_theta, dtype=np.float64)
        params = transform.params(x)
        return params[:ntheta], params[ntheta:], float(opt.final_objective), nb_theta


__all__ = ["ConvergenceError", "GeneralizedLinearMixedModel", "GlmmRefitter"]
