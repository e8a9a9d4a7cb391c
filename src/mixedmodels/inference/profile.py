"""Profile-likelihood confidence intervals (lme4's ``confint(profile(fit))``), and ``confint``.

The profile of a parameter ``phi_i`` is the signed square root of the deviance increase,

    zeta(v) = sign(v - phi_i_hat) sqrt( min_{phi: phi_i = v} d(phi) - d(phi_hat) ),

and the ``level`` interval is ``{v : |zeta(v)| <= z_{(1+level)/2}}``. As in lme4, the deviance
is always the ML deviance (a REML fit is refitted by ML first; lme4's ``devfun2`` does the
same), so the intervals of a REML fit equal those of the ML fit.

* Variance parameters (``sd_<term>|<group>``, ``cor_<term2>.<term1>|<group>``, ``sigma``):
  the deviance as a function of the standard deviations, correlations and sigma (with beta
  profiled out), ``d = log|L_Z|^2 + n log(2 pi sigma^2) + r^2(theta) / sigma^2`` with
  ``theta = T / sigma``, ``T = diag(sd) chol(corr)`` (lme4's ``devfun2``), is minimised over
  the other parameters with the profiled one held fixed.
* Fixed effects: ``beta_j = b`` is imposed by moving ``b x_j`` into the response (an offset)
  and dropping column ``j``; the new cross products are a linear map of the old ones, so no
  data rows are touched; the ML deviance is then minimised over theta.

lme4 interpolates a spline through a grid of profile points; here each end point is found
directly. For a fixed effect it is one optimisation
(:meth:`LikelihoodProfile._direct_endpoint`): with ``D* = d_hat + z^2`` the upper end of
``beta_j`` is

    max { beta_j : d(x, beta) <= D* } = max over x of  max { beta_j : d(x, beta) <= D* },

where ``x`` are the model's own parameters (theta and the residual structure's), and the
inner maximum has a closed form because beta enters the ML deviance only through ``r^2``,
quadratically. One smooth optimisation over ``x`` per end replaces a sequence of fits of
models with ``beta_j`` moved into the response (each a new system). Variance parameters
use root-finding on ``zeta(v) = +-z``: inverse quadratic interpolation on the scale where
zeta is nearly linear, then Brent's method when needed. (The same device works for sd's
and sigma, whose inner maximum over sigma has a closed form too, but with large n the
feasible set is a thin shell around the optimum and BOBYQA needed twice the evaluations
of the root-finding on InstEval, and settled less exactly.)
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg as sla
from scipy import optimize, stats

from mixedmodels.errors import refuse_generalized, refuse_repeated

from ..objective.profiled_deviance import ProfiledDeviance
from ..optimize import OptimizerOptions, minimize_bobyqa
from .parameters import SdCorParameters, residual_ratio_names

_LOG_2PI = math.log(2.0 * math.pi)
_INNER = OptimizerOptions(ftol_rel=1e-12, ftol_abs=1e-9, xtol_abs=1e-8, initial_step=0.2)


def ml_deviance_sdcor(dev: ProfiledDeviance, params: SdCorParameters, phi: np.ndarray) -> float:
    """ML deviance at ``phi`` (sd's, correlations, sigma), beta profiled out (lme4's devfun2),
    with the deviance's constant (the log-Jacobian of weights or residual SD ratios)."""
    sigma = phi[-1]
    if not sigma > 0:
        return math.inf
    theta = params.to_theta(phi)
    if theta is None:
        return math.inf
    try:
        f = dev.factor(theta)
    except np.linalg.LinAlgError:
        return math.inf
    s2 = sigma * sigma
    return f.logdet_z + dev.n * (_LOG_2PI + math.log(s2)) + f.pwrss / s2 + dev.constant


def _bobyqa(
    fun, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray, step: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Bound-constrained BOBYQA (NLopt) with tight tolerances, for the small inner problems
    (``step``: initial steps, default a tenth of each start, at least 0.05)."""
    import nlopt

    k = x0.shape[0]
    if k == 0:
        return x0, float(fun(x0))
    best = [math.inf, x0.copy()]

    def wrapped(x, grad):
        v = float(fun(x))
        if v < best[0]:
            best[0] = v
            best[1] = np.array(x, copy=True)
        return v if math.isfinite(v) else 1e300

    opt = nlopt.opt(nlopt.LN_BOBYQA, k)
    opt.set_min_objective(wrapped)
    opt.set_lower_bounds(lower)
    opt.set_upper_bounds(upper)
    opt.set_ftol_rel(_INNER.ftol_rel)
    opt.set_ftol_abs(_INNER.ftol_abs)
    opt.set_xtol_abs(_INNER.xtol_abs)
    opt.set_maxeval(20_000)
    x0 = np.clip(x0, lower, upper)
    width = np.minimum(upper - lower, 1e6)
    if step is None:
        step = np.maximum(0.1 * np.abs(x0), 0.05)
    step = np.minimum(step, 0.25 * width)
    opt.set_initial_step(step)
    try:
        opt.optimize(x0)
    except (nlopt.RoundoffLimited, ValueError):
        pass
    return best[1], best[0]


def _interpolate(pts: list[tuple[float, float]], target: float) -> float:
    """``t`` at ``zeta = target`` by inverse interpolation through ``(t, zeta)`` points:
    the quadratic through three (Lagrange form), the line through two."""
    if len(pts) == 2:
        (t0, z0), (t1, z1) = pts
        return t1 + (target - z1) * (t1 - t0) / (z1 - z0) if z1 != z0 else math.nan
    (t0, z0), (t1, z1), (t2, z2) = pts
    if len({z0, z1, z2}) < 3:
        return math.nan
    return (
        t0 * (target - z1) * (target - z2) / ((z0 - z1) * (z0 - z2))
        + t1 * (target - z0) * (target - z2) / ((z1 - z0) * (z1 - z2))
        + t2 * (target - z0) * (target - z1) / ((z2 - z0) * (z2 - z1))
    )


class _Progress:
    def __init__(self, total: int, label: str, enabled: bool | None):
        self.total = total
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.done = 0

    def step(self, what: str) -> None:
        self.done += 1
        if self.enabled:
            end = "\n" if self.done >= self.total else ""
            sys.stderr.write(f"\r{self.label}: {self.done}/{self.total} {what[:40]:<40}{end}")
            sys.stderr.flush()


# -- the profile ------------------------------------------------------------------------------
class LikelihoodProfile:
    """Profile zeta functions of every parameter of a fit, evaluated on demand and cached.

    Parameters
    ----------
    fit
        A fitted linear mixed model (REML fits are refitted by ML, as lme4 does).
    progress
        Show progress on stderr (default: when stderr is a terminal).

    Attributes
    ----------
    names
        ``sd_...``, ``cor_...``, ``sigma`` and the fixed-effect names (lme4's
        ``oldNames = FALSE`` names).
    estimates
        ML estimates of those parameters.
    base_deviance
        ML deviance at the optimum.
    points
        Every profile point evaluated so far: ``param, value, zeta``.
    """

    def __init__(self, fit: Any, *, progress: bool | None = None):
        refuse_generalized(
            fit, "the likelihood profile object", "for intervals use confint(fit, 'profile')"
        )
        if fit.reml:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ml = fit.model.fit(reml=False, start=fit.theta)
        else:
            ml = fit
        self.fit = fit
        self.ml_fit = ml
        self.progress = progress
        # The fitted model's own ML objective: theta and the residual structure's parameters.
        self.objective = ml.objective_function
        self.params = SdCorParameters(ml.structure)
        theta_hat, psi_hat = self.objective.split(ml.opt.final_theta)
        strata = getattr(ml, "residual_strata", None)
        ratio_names = [] if strata is None or psi_hat.size == 0 else residual_ratio_names(strata)
        self._nres = len(ratio_names)
        self.phi_hat = np.concatenate(
            [self.params.to_phi(theta_hat, ml.sigma), np.exp(psi_hat[: self._nres])]
        )
        self.base_deviance = float(ml.objective)
        self.beta_hat = ml.fixef.to_numpy()
        self.beta_se = ml.se.to_numpy()
        self.x_names = list(ml.design.x_names)
        self.kinds = [*self.params.kinds, *(["ratio"] * self._nres)]
        self.names = [*self.params.names, *ratio_names, *self.x_names]
        self.estimates = pd.Series(np.concatenate([self.phi_hat, self.beta_hat]), index=self.names)
        nvp = len(self.phi_hat)
        lower = np.array([0.0 if k in ("sd", "sigma", "ratio") else -1.0 for k in self.kinds])
        upper = np.array([math.inf if k != "cor" else 1.0 for k in self.kinds])
        self._lower = np.concatenate([lower, np.full(len(self.beta_hat), -math.inf)])
        self._upper = np.concatenate([upper, np.full(len(self.beta_hat), math.inf)])
        self._nvp = nvp
        self._cache: dict[str, dict[float, tuple[float, np.ndarray]]] = {n: {} for n in self.names}

    # -- zeta -----------------------------------------------------------------------------
    def _warm_start(
        self, name: str, value: float, default: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The other parameters' start at ``value``, and the initial steps for BOBYQA (None:
        its defaults).

        Linear extrapolation (or interpolation) in ``value`` through the two nearest
        points already profiled on the same side of the estimate, the estimate itself
        included (a start from the other side can sit in another basin, e.g. a
        correlation near -1). The conditional optimum moves smoothly with ``value``, so
        the error is second order: the steps are a fraction of the extrapolation's own
        move, which keeps BOBYQA's first trust region near the answer.
        """
        est = float(self.estimates[name])
        known = [(v, x) for v, (_, x) in self._cache[name].items() if (v - est) * (value - est) > 0]
        known.append((est, np.asarray(default, dtype=np.float64)))
        known.sort(key=lambda vx: abs(vx[0] - value))
        if len(known) < 2 or known[0][0] == est:
            return np.array(known[0][1], dtype=np.float64), None
        (va, xa), (vb, xb) = known[0], known[1]
        if va == vb:
            return np.array(xa, dtype=np.float64), None
        x = xa + (xb - xa) * (value - va) / (vb - va)
        x = np.clip(x, self._nuisance_lower(name), np.inf)
        move = np.abs(x - xa)
        return x, np.maximum(0.5 * move, 1e-4 * np.maximum(np.abs(x), 1e-2))

    def _nuisance_lower(self, name: str) -> np.ndarray | float:
        """Lower bounds of the parameters held free while ``name`` is profiled."""
        i = self.names.index(name)
        if i < self._nvp:
            return self._lower[[j for j in range(self._nvp) if j != i]]
        return self.objective.lower_bounds()

    def _variance_deviance(self, vp: np.ndarray) -> float:
        """ML deviance at the sd/cor parameters, sigma and residual SD ratios ``vp``."""
        k = len(self.params.names)
        ratios = vp[k:]
        if np.any(ratios <= 0.0):
            return math.inf
        dev = self.objective.factored_at(np.log(ratios))
        return ml_deviance_sdcor(dev, self.params, vp[:k])

    def _zeta_variance(self, i: int, value: float) -> tuple[float, np.ndarray]:
        name = self.names[i]
        free = np.array([j for j in range(self._nvp) if j != i])
        vp = self.phi_hat.copy()
        x0, step = self._warm_start(name, value, self.phi_hat[free])
        x0 = x0.copy()
        lower = self._lower[free].copy()
        upper = self._upper[free].copy()
        # sigma and SD ratios (when free) are optimised on the log scale: unbounded and
        # better scaled.
        log_pos = np.flatnonzero([self.kinds[j] in ("sigma", "ratio") for j in free])
        x0[log_pos] = np.maximum(x0[log_pos], 1e-300)
        if step is not None:
            step = step.copy()
            step[log_pos] = step[log_pos] / x0[log_pos]  # d log x = dx / x
            step = np.minimum(step, 0.5 * np.where(np.isfinite(upper - lower), upper - lower, 1.0))
        x0[log_pos] = np.log(x0[log_pos])
        lower[log_pos] = -math.inf

        def objective(x):
            full = vp.copy()
            full[i] = value
            xx = x.copy()
            xx[log_pos] = np.exp(xx[log_pos])
            full[free] = xx
            return self._variance_deviance(full)

        x, fval = _bobyqa(objective, x0, lower, upper, step)
        x = x.copy()
        x[log_pos] = np.exp(x[log_pos])
        return fval, x

    def _zeta_fixed(self, j: int, value: float) -> tuple[float, np.ndarray]:
        """``beta_j = b`` imposed by moving ``b x_j`` into the response and dropping column
        ``j``: a linear map of the ``[X y]`` columns (no rows), then the model's whole ML
        objective is minimised over the other parameters."""
        name = self.x_names[j]
        p = len(self.x_names)
        keep = [c for c in range(p) if c != j]
        M = np.zeros((p, p + 1))
        M[np.arange(p - 1), keep] = 1.0
        M[p - 1, p] = 1.0
        M[p - 1, j] = -value
        objective = self.objective.with_xy_transform(M)
        x0, step = self._warm_start(name, value, self.ml_fit.opt.final_theta)
        res = minimize_bobyqa(objective, x0, objective.lower_bounds(), _INNER, step)
        return res.final_objective, res.final_theta

    def zeta(self, name: str, value: float) -> float:
        """Signed root of the ML deviance increase with ``name`` held at ``value``."""
        i = self.names.index(name)
        value = float(value)
        cache = self._cache[name]
        if value not in cache:
            if i < self._nvp:
                fval, x = self._zeta_variance(i, value)
            else:
                fval, x = self._zeta_fixed(i - self._nvp, value)
            cache[value] = (fval, x)
        fval = cache[value][0]
        diff = fval - self.base_deviance
        if diff < -1e-6 * max(1.0, abs(self.base_deviance)):
            warnings.warn(
                f"profiling {name} found a deviance {-diff:.3g} below the fit's: the fit may not "
                "be at the optimum; refit with tighter optimiser tolerances",
                stacklevel=2,
            )
        est = self.estimates[name]
        return math.copysign(math.sqrt(max(diff, 0.0)), value - est) if value != est else 0.0

    @property
    def points(self) -> pd.DataFrame:
        rows = [
            {"param": n, "value": v, "zeta": self.zeta(n, v)}
            for n in self.names
            for v in sorted(self._cache[n])
        ]
        return pd.DataFrame(rows, columns=["param", "value", "zeta"])

    # -- intervals ------------------------------------------------------------------------
    def _scale(self, i: int) -> float:
        if i >= self._nvp:
            return float(self.beta_se[i - self._nvp])
        kind = self.kinds[i]
        est = self.phi_hat[i]
        if kind == "cor":
            return 0.2
        if kind in ("sigma", "ratio"):
            return 0.1 * est
        return 0.5 * est if est > 0 else 0.2 * self.phi_hat[-1]

    def _transform(self, i: int):
        """The scale on which zeta is close to linear: identity for fixed effects, log for
        standard deviations, sigma and SD ratios, Fisher's z for correlations."""
        if i >= self._nvp:
            return (lambda v: v), (lambda t: t)
        if self.kinds[i] == "cor":
            return np.arctanh, np.tanh
        return np.log, np.exp

    def _end(self, name: str, sign: int, z: float) -> float:
        """One end of ``name``'s interval: the direct optimisation where it applies and
        succeeds, else the root-finding on zeta."""
        i = self.names.index(name)
        value = self._direct_endpoint(i, sign, z)
        if value is None:
            value = self._endpoint(name, i, sign, z)
        return value

    def _direct_endpoint(self, i: int, sign: int, z: float) -> float | None:
        """``sign``'s end of fixed effect ``i`` as one optimisation over the model's own
        parameters ``x`` (see the module docs); None for variance parameters, or where the
        optimisation does not settle (the caller falls back to root-finding).

        With ``d(x)`` the ML deviance at ``x`` (sigma and beta profiled out), ``n`` the
        number of observations and ``delta = (D* - d(x)) / n``: holding ``beta_j = b``
        raises ``r^2`` by ``(b - beta_hat_j(x))^2 / v_jj(x)``, ``v = (R_X' R_X)^-1``, and the
        deviance stays within ``D*`` while ``r^2`` grows by at most the factor ``e^delta``:

            |b - beta_hat_j(x)| <= sqrt(v_jj(x) r^2(x) (e^delta - 1)).

        Outside the feasible set (``delta < 0``) the value continues as the mirror image,
        pushed further by the excess ``d(x) - D*`` in standard errors, so the optimiser
        stays where ``d(x) <= D*`` (inside, the value rises from the boundary with infinite
        slope: the maximum is never on it).
        """
        if i < self._nvp:
            return None
        target = self.base_deviance + z * z
        objective = self.objective
        x_hat = np.asarray(self.ml_fit.opt.final_theta, dtype=np.float64)
        p = len(self.x_names)
        j = i - self._nvp
        se_j = float(self.beta_se[j])
        e_j = np.zeros(p)
        e_j[j] = 1.0
        lowest = [math.inf]

        def endpoint_at(x: np.ndarray) -> float:
            theta, psi = objective.split(x)
            try:
                dev = objective.factored_at(psi)
                f = dev.factor(theta)
            except (np.linalg.LinAlgError, FloatingPointError):
                return math.nan
            d = dev.objective(f)
            if not math.isfinite(d):
                return math.nan
            lowest[0] = min(lowest[0], d)
            r2 = f.pwrss
            delta = (target - d) / dev.n
            Rt = f.LXX[:p, :p]  # R_X'
            beta_j = float(sla.solve_triangular(Rt, f.LXX[p, :p], lower=True, trans="T")[j])
            # v_jj = |row j of R_X^-1|^2 = |R_X'^-1 e_j|^2: a vector right-hand side (BLAS's
            # threaded matrix solve costs milliseconds even for 2 x 2 on a busy machine).
            y = sla.solve_triangular(Rt, e_j, lower=True)
            v = float(np.dot(y, y))
            if delta >= 0:
                return beta_j + sign * math.sqrt(max(v * r2 * math.expm1(delta), 0.0))
            half = math.sqrt(max(v * r2 * -math.expm1(delta), 0.0))
            return beta_j - sign * (half + (d - target) * se_j)

        def negative(x: np.ndarray) -> float:
            v = endpoint_at(x)
            return -sign * v if math.isfinite(v) else math.inf

        step = np.maximum(0.1 * np.abs(x_hat), 0.05)
        upper = np.full(x_hat.shape, math.inf)
        _, fval = _bobyqa(negative, x_hat, objective.lower_bounds(), upper, step)
        if lowest[0] < self.base_deviance - 1e-6 * max(1.0, abs(self.base_deviance)):
            warnings.warn(
                f"profiling {self.names[i]} found a deviance "
                f"{self.base_deviance - lowest[0]:.3g} below the fit's: the fit may not be at "
                "the optimum; refit with tighter optimiser tolerances",
                stacklevel=3,
            )
            return None
        if not math.isfinite(fval):
            return None
        value = -sign * fval
        return value if (value - float(self.estimates.iloc[i])) * sign > 0 else None

    def _endpoint(self, name: str, i: int, sign: int, z: float) -> float:
        """The value where ``zeta = sign * z``.

        Interpolation on the scale where zeta is nearly linear (:meth:`_transform`): the
        estimate (zeta = 0) and a first guess, then inverse quadratic interpolation
        through the last three profile points (secant with two), kept inside any
        bracket found; typically four or five profile points, each a warm-started inner
        fit. Where it falters (a bound within reach, zeta not increasing), the
        bracketing search of :meth:`_endpoint_bracketed` takes over, reusing the points.
        """
        est = float(self.estimates[name])
        lo, hi = self._lower[i], self._upper[i]
        if (sign < 0 and est <= lo) or (sign > 0 and est >= hi):
            return est
        fwd, back = self._transform(i)
        target = sign * z
        first = est + sign * self._scale(i) * (z if i >= self._nvp else 1.0)
        if not lo < first < hi or (i < self._nvp and est <= 0.0):
            return self._endpoint_bracketed(name, i, sign, z)
        t_est = float(fwd(est))
        pts = [(t_est, 0.0), (float(fwd(first)), self.zeta(name, first))]
        tol = 1e-10 * max(1.0, abs(t_est))
        for _ in range(12):
            t1, z1 = pts[-1]
            if not math.isfinite(z1):
                break
            if abs(z1 - target) < 1e-6:
                return float(back(t1))
            t_new = _interpolate(pts[-3:] if len(pts) >= 3 else pts, target)
            below = [t for t, zz in pts if (zz - target) * sign < 0]
            above = [t for t, zz in pts if (zz - target) * sign > 0]
            if above:  # a bracket: stay inside it
                a = max(below, key=lambda t: sign * t)
                b = min(above, key=lambda t: sign * t)
                if not (math.isfinite(t_new) and (t_new - a) * (t_new - b) < 0):
                    t_new = 0.5 * (a + b)
            if not math.isfinite(t_new) or (t_new - t_est) * sign <= 0:
                break
            v_new = float(back(t_new))
            if not lo < v_new < hi:
                break
            z_new = self.zeta(name, v_new)
            pts.append((t_new, z_new))
            if abs(t_new - t1) < tol:
                return v_new
            # zeta must increase along t; otherwise the bracketing search decides.
            ts = [t for t, _ in pts]
            zs = [zz for _, zz in pts]
            order = np.argsort(ts)
            if np.any(np.diff(np.asarray(zs)[order]) <= 0):
                break
        return self._endpoint_bracketed(name, i, sign, z)

    def _endpoint_bracketed(self, name: str, i: int, sign: int, z: float) -> float:
        """Walk out from the estimate until zeta passes ``sign * z`` (or a bound), then
        Brent's method inside the bracket; profile points already computed are reused."""
        est = float(self.estimates[name])
        lo, hi = self._lower[i], self._upper[i]
        open_lower = i < self._nvp and self.kinds[i] in ("sigma", "ratio")
        h = self._scale(i) * (z if i >= self._nvp else 1.0)
        prev_v = est
        for _ in range(80):
            v = est + sign * h
            at_bound = False
            if v <= lo:
                if open_lower:
                    v = 0.5 * (prev_v + lo)
                else:
                    v, at_bound = lo, True
            elif v >= hi:
                v, at_bound = hi, True
            zv = self.zeta(name, v)
            if sign * zv >= z:
                a, b = sorted((prev_v, v))
                return optimize.brentq(
                    lambda x: self.zeta(name, x) - sign * z,
                    a,
                    b,
                    xtol=1e-10 * max(abs(est), self._scale(i)),
                    rtol=1e-10,
                )
            if at_bound:
                return v
            prev_v = v
            h *= 1.6 if i >= self._nvp else 2.0
        return math.nan

    def _select(self, parm: Any) -> list[str]:
        if parm is None:
            return list(self.names)
        if isinstance(parm, str):
            parm = [parm]
        out: list[str] = []
        for p in parm:
            if p == "theta_":
                out.extend(self.names[: self._nvp])
            elif p == "beta_":
                out.extend(self.x_names)
            elif p in self.names:
                out.append(p)
            else:
                raise KeyError(f"unknown parameter {p!r}; choose from {self.names}")
        return out

    def confint(
        self, level: float = 0.95, parm: Any = None, *, n_jobs: int | None = None
    ) -> pd.DataFrame:
        """Profile intervals: rows ``parm`` (default all), columns ``estimate, lower, upper``.

        ``n_jobs``: processes over which the interval ends are shared (None: both cores
        when one evaluation of the deviance takes long enough to repay starting them,
        see :func:`_auto_jobs`). The ends are found independently, so the numbers do not
        depend on it.
        """
        z = float(stats.norm.ppf(0.5 + level / 2.0))
        names = self._select(parm)
        tasks = [(name, sign) for name in names for sign in (-1, +1)]
        jobs = _auto_jobs(self) if n_jobs is None else max(1, int(n_jobs))
        bar = _Progress(len(tasks), "profile", self.progress)
        ends: dict[tuple[str, int], float] = {}
        if jobs > 1 and len(tasks) > 1 and _FORK is not None:
            ends = self._ends_in_processes(tasks, z, jobs, bar)
        else:
            for name, sign in tasks:
                ends[name, sign] = self._end(name, sign, z)
                bar.step(name)
        rows = [
            {"estimate": float(self.estimates[n]), "lower": ends[n, -1], "upper": ends[n, +1]}
            for n in names
        ]
        out = pd.DataFrame(rows, index=pd.Index(names, name="param"))
        out.attrs["level"] = level
        out.attrs["method"] = "profile"
        return out

    def _ends_in_processes(
        self, tasks: list[tuple[str, int]], z: float, jobs: int, bar: _Progress
    ) -> dict[tuple[str, int], float]:
        """Interval ends in ``jobs`` forked processes (each inherits this profile); the
        profile points they computed are merged back into the cache."""
        global _FORKED
        _FORKED = (self, z)
        ends: dict[tuple[str, int], float] = {}
        try:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=_FORK) as pool:
                futures = [pool.submit(_forked_endpoint, name, sign) for name, sign in tasks]
                for future in as_completed(futures):
                    name, sign, value, points = future.result()
                    ends[name, sign] = value
                    self._cache[name].update(points)
                    bar.step(name)
        finally:
            _FORKED = None
        return ends


# -- processes ---------------------------------------------------------------------------------
# Forked workers inherit the profile (its factorisations and caches) instead of pickling it.
_FORK = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
_FORKED: tuple[LikelihoodProfile, float] | None = None
#: An evaluation of the deviance this slow (seconds) makes two processes pay: an interval
#: end costs some 50-100 evaluations, a forked process ~50 ms to start.
_PARALLEL_EVALUATION_S = 0.02


def _forked_endpoint(name: str, sign: int) -> tuple[str, int, float, dict]:
    profile, z = _FORKED
    value = profile._end(name, sign, z)
    return name, sign, value, dict(profile._cache[name])


def _auto_jobs(profile: LikelihoodProfile) -> int:
    """Both cores (at most two processes) when one deviance evaluation takes
    ``_PARALLEL_EVALUATION_S`` or more, else one."""
    cores = os.cpu_count() or 1
    if cores < 2 or _FORK is None:
        return 1
    start = time.perf_counter()
    profile._variance_deviance(profile.phi_hat)
    return 2 if time.perf_counter() - start >= _PARALLEL_EVALUATION_S else 1


def profile(fit: Any, *, progress: bool | None = None) -> LikelihoodProfile:
    """Profile the ML likelihood of a fit (lme4's ``profile``); evaluate with ``.confint()``."""
    refuse_generalized(
        fit, "the likelihood profile object", "for intervals use confint(fit, 'profile')"
    )
    refuse_repeated(fit, "the likelihood profile", "use Wald intervals (method='wald')")
    return LikelihoodProfile(fit, progress=progress)


# -- confint ----------------------------------------------------------------------------------
def wald_confint(fit: Any, level: float = 0.95, parm: Any = None) -> pd.DataFrame:
    """Wald intervals ``beta_hat +- z se`` for the fixed effects (lme4's ``method = "Wald"``)."""
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    est = fit.fixef
    se = fit.se
    out = pd.DataFrame({"estimate": est, "lower": est - z * se, "upper": est + z * se})
    out.index.name = "param"
    if parm is not None:
        names = [parm] if isinstance(parm, str) else list(parm)
        if names == ["beta_"]:
            names = list(est.index)
        out = out.loc[names]
    out.attrs["level"] = level
    out.attrs["method"] = "wald"
    return out


def confint(
    fit: Any,
    method: str = "wald",
    level: float = 0.95,
    parm: Any = None,
    *,
    nsim: int = 500,
    seed: int | None = None,
    n_jobs: int | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Confidence intervals for the parameters of a fit.

    Parameters
    ----------
    fit
        A fitted linear mixed model.
    method
        ``"wald"`` (fixed effects, normal quantiles: fast), ``"profile"`` (profile likelihood,
        as lme4's ``confint(profile(fit))``: sd/cor parameters, sigma and fixed effects) or
        ``"bootstrap"`` (parametric bootstrap percentile intervals).
    level
        Confidence level.
    parm
        Parameter names (``"sd_(Intercept)|litter"``, ``"sigma"``, ``"treatmentHigh"``), or
        ``"theta_"`` / ``"beta_"`` for all variance / fixed-effect parameters; default all.
    nsim, seed
        Bootstrap settings (``method="bootstrap"`` only).
    n_jobs
        Processes: bootstrap refits (default 1) or profile interval ends (default: both
        cores when the model's deviance is slow enough to repay them).
    progress
        Progress on stderr for profile and bootstrap (default: when stderr is a terminal).

    Returns
    -------
    pandas.DataFrame
        Indexed by parameter; columns ``estimate, lower, upper``.

    Notes
    -----
    Profile intervals use the ML likelihood even for REML fits, as lme4 does (its
    ``profile`` refits by ML), so they are the same for a REML fit and its ML refit.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> from mixedmodels.inference.profile import confint
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> ci = confint(fit, "profile", parm="sigma")
    >>> round(float(ci.loc["sigma", "lower"]), 4)
    0.3723
    """
    m = method.lower()
    if m == "wald":
        return wald_confint(fit, level, parm)
    if m == "profile":
        if hasattr(fit, "family") and hasattr(fit, "nagq"):
            from .glmm_profile import glmm_profile_confint

            return glmm_profile_confint(fit, level, parm)
        refuse_repeated(fit, "the likelihood profile", "use Wald intervals (method='wald')")
        return LikelihoodProfile(fit, progress=progress).confint(level, parm, n_jobs=n_jobs)
    if m in ("bootstrap", "boot"):
        from .bootstrap import bootstrap

        jobs = 1 if n_jobs is None else n_jobs
        boot = bootstrap(fit, nsim=nsim, seed=seed, n_jobs=jobs, progress=progress)
        return boot.confint(level, parm)
    raise ValueError(f"method must be 'wald', 'profile' or 'bootstrap', not {method!r}")
