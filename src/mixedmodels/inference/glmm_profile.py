"""Profile-likelihood intervals for GLMMs (lme4's ``confint(fit, method = "profile")``).

For a parameter ``psi`` (a fixed effect, or the SD of a scalar random-effects term) the
profile deviance is ``D(psi) = min D(theta, beta)`` over the other parameters with
``psi`` held, ``D`` the Laplace (or AGQ) deviance of the fit; the signed root
``zeta(psi) = sign(psi - psi_hat) sqrt(D(psi) - D_hat)`` is approximately standard normal
and the interval is ``{psi : |zeta(psi)| <= z_(1 - alpha/2)}`` (Bates et al. 2015, sec.
5.1; lme4's ``profile.merMod``). The endpoints are found by Brent's method on ``zeta``,
bracketed from the Wald interval outwards.

The other fixed effects are optimised in coordinates conditioned on ``psi``: with
``V = Var(beta_hat)``, ``beta_-j = beta_hat_-j + (V_-j,j / V_jj)(beta_j - beta_hat_j) + C z``,
``C C' = V_-j,-j - V_-j,j V_j,-j / V_jj``, so that the nuisance problem is as well scaled
as the fit's own (see :mod:`mixedmodels.models.glmm`). A negative binomial's dispersion
is held at its estimate (as a profile of lme4's final ``glmer`` fit is).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from mixedmodels.errors import ModelSpecificationError
from mixedmodels.objective.pirls import PirlsDeviance
from mixedmodels.optimize import OptimizerOptions, minimize_bobyqa

_NUISANCE = OptimizerOptions(ftol_rel=1e-12, ftol_abs=1e-9, xtol_abs=1e-7, initial_step=0.2)


class _GlmmProfile:
    def __init__(self, fit: Any):
        refitter = fit.refitter
        if refitter is None:
            raise ModelSpecificationError(
                "profile intervals refit the model, and this GLMM result has no model to "
                "refit (fitted from streamed data, or built by hand); use method='wald'"
            )
        self.fit = fit
        self.structure = refitter.structure
        response = refitter.base.with_family(fit.family_object)
        self.dev = PirlsDeviance(self.structure, refitter.X, response, max(fit.nagq, 1))
        self.ntheta = self.structure.ntheta
        self.theta = np.asarray(fit.theta, dtype=np.float64)
        self.beta = fit.fixef.to_numpy()
        self.V = fit.vcov.to_numpy()
        self.lower = self.structure.lower_bounds()
        self.best = float(self.dev(np.concatenate([self.theta, self.beta])))

    # -- profile deviance ---------------------------------------------------------------
    def _beta_deviance(self, j: int, value: float) -> float:
        V, p, k = self.V, self.beta.shape[0], self.ntheta
        rest = np.delete(np.arange(p), j)
        slope = V[rest, j] / V[j, j]
        C = np.linalg.cholesky(V[np.ix_(rest, rest)] - np.outer(slope, V[j, rest]))
        shift = self.beta[rest] + slope * (value - self.beta[j])

        def objective(x: np.ndarray) -> float:
            beta = np.empty(p)
            beta[j] = value
            beta[rest] = shift + C @ x[k:]
            return self.dev(np.concatenate([x[:k], beta]))

        x0 = np.concatenate([self.theta, np.zeros(p - 1)])
        lower = np.concatenate([self.lower, np.full(p - 1, -np.inf)])
        steps = np.concatenate([np.full(k, 0.1), np.full(p - 1, 0.5)])
        return float(minimize_bobyqa(objective, x0, lower, _NUISANCE, steps).final_objective)

    def _theta_deviance(self, i: int, value: float) -> float:
        k, p = self.ntheta, self.beta.shape[0]
        others = np.delete(np.arange(k), i)
        L = np.linalg.cholesky(self.V)

        def objective(x: np.ndarray) -> float:
            theta = np.empty(k)
            theta[i] = value
            theta[others] = x[: k - 1]
            return self.dev(np.concatenate([theta, self.beta + L @ x[k - 1 :]]))

        x0 = np.concatenate([self.theta[others], np.zeros(p)])
        lower = np.concatenate([self.lower[others], np.full(p, -np.inf)])
        steps = np.concatenate([np.full(k - 1, 0.1), np.full(p, 0.5)])
        return float(minimize_bobyqa(objective, x0, lower, _NUISANCE, steps).final_objective)

    def zeta(self, kind: str, index: int, value: float, estimate: float) -> float:
        deviance = (
            self._beta_deviance(index, value)
            if kind == "beta"
            else self._theta_deviance(index, value)
        )
        rise = max(deviance - self.best, 0.0)
        return float(np.sign(value - estimate) * np.sqrt(rise))

    # -- endpoints --------------------------------------------------------------------------
    def endpoint(self, kind: str, index: int, estimate: float, se: float, sign: int, z: float):
        """The value where ``zeta = sign * z``; for an SD, 0 when zeta never gets there."""
        target = sign * z
        step = max(se, 1e-3 * max(1.0, abs(estimate)))
        near = estimate
        for _ in range(40):
            far = near + sign * step
            if kind == "theta" and far <= 0.0:
                # The profile of an SD may stay inside the level down to 0 (a boundary).
                at_zero = self.zeta(kind, index, 0.0, estimate)
                if sign * at_zero <= z:
                    return 0.0
                far = 0.0
            if sign * self.zeta(kind, index, far, estimate) >= z:
                return optimize.brentq(
                    lambda v: self.zeta(kind, index, v, estimate) - target,
                    min(near, far),
                    max(near, far),
                    xtol=1e-6 * max(1.0, abs(estimate)),
                )
            near, step = far, step * 1.6
        return np.nan


def glmm_profile_confint(fit: Any, level: float = 0.95, parm: Any = None) -> pd.DataFrame:
    """Profile-likelihood intervals of a GLMM's fixed effects and scalar-term SDs.

    Parameters
    ----------
    fit
        A :class:`~mixedmodels.results.glmm.GeneralizedLinearMixedModelResult`.
    level
        Confidence level.
    parm
        Names (``sd_(Intercept)|herd``, fixed-effect names), ``"beta_"`` for the fixed
        effects, ``"theta_"`` for the SDs; default all.

    Returns
    -------
    pandas.DataFrame
        ``estimate, lower, upper`` per parameter, as the LMM profile intervals.
    """
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    profile = _GlmmProfile(fit)
    structure = profile.structure
    sd_params: dict[str, int] = {}
    for k, term in enumerate(structure.terms):
        name = f"sd_{term.column_names[0]}|{term.group}"
        if term.ncols == 1:
            sd_params[name] = int(structure.offsets[k])
    names_beta = list(fit.fixef.index)
    wanted = _wanted(parm, list(sd_params), names_beta, structure)
    rows = {}
    se_theta = 0.1
    for name in wanted:
        if name in sd_params:
            i = sd_params[name]
            est = abs(float(profile.theta[i]))
            lo = profile.endpoint("theta", i, est, se_theta, -1, z)
            hi = profile.endpoint("theta", i, est, se_theta, +1, z)
        else:
            j = names_beta.index(name)
            est = float(profile.beta[j])
            se = float(np.sqrt(profile.V[j, j]))
            lo = profile.endpoint("beta", j, est, se, -1, z)
            hi = profile.endpoint("beta", j, est, se, +1, z)
        rows[name] = (est, lo, hi)
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["estimate", "lower", "upper"])
    out.index.name = "param"
    out.attrs["level"] = level
    out.attrs["method"] = "profile"
    return out


def _wanted(parm: Any, sds: list[str], betas: list[str], structure: Any) -> list[str]:
    vector_terms = [t.group for t in structure.terms if t.ncols > 1]
    if parm is None:
        if vector_terms:
            raise ModelSpecificationError(
                "profile intervals for GLMMs cover fixed effects and the SDs of scalar "
                f"random-effects terms; {', '.join(vector_terms)} has a vector term: pass "
                "parm='beta_' for the fixed effects, or use bootstrap intervals"
            )
        return [*sds, *betas]
    names = [parm] if isinstance(parm, str) else list(parm)
    if names == ["beta_"]:
        return betas
    if names == ["theta_"]:
        return sds
    unknown = [n for n in names if n not in sds and n not in betas]
    if unknown:
        raise ModelSpecificationError(
            f"no profile for {unknown}; GLMM profiles cover {', '.join([*sds, *betas])}"
        )
    return names
