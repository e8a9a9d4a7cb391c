"""Predictions of a linear mixed model with standard errors and intervals.

For a new row with fixed-effects row ``x`` and random-effects rows ``z_k`` (one per
grouping factor, at the row's level), the prediction is ``x' beta-hat + sum_k z_k' b-hat_k``
(levels not seen in fitting: ``b = 0``, the population-level prediction, as lme4's
``allow.new.levels``). Its variances, at the estimated covariance parameters:

* ``re=False``: ``Var(x' beta-hat) = x' V x`` (``V`` = ``vcov``), as R's
  ``predict(..., se.fit = TRUE)`` for fixed effects.
* ``re=True``: the joint prediction error variance of ``beta-hat`` and ``b-hat - b``
  (Henderson 1975): with ``m = [Lambda' z; x]`` (``z`` zero for unseen levels) and
  ``C = [Z Lambda  X]' W [Z Lambda  X] + diag(I_q, 0)`` the coefficient matrix of the
  mixed-model equations in the spherical scale (``W`` the residual structure's weights:
  prior weights, ``residual_groups=`` SD ratios),

      Var(x' beta-hat + z' b-hat - x' beta - z' b) = sigma^2 m' C^{-1} m,

  which is ``Var(x' beta-hat) + z' Var(b-hat - b) z + 2 cov``: the conditional variance
  of the BLUPs *with* the uncertainty of beta-hat and its covariance with them. It treats
  the variance parameters as known; glmmTMB's ``predict(se.fit = TRUE)`` adds their
  uncertainty (delta method), which for sleepstudy raises the SE by up to 7% at day 0
  and under 2% elsewhere (tests/reference/prediction/). glmmTMB also gives a level not seen
  in fitting a random effect ``b ~ N(0, Sigma)``, so its ``se.fit`` there includes
  ``z' Sigma z``; here that variance enters the prediction interval only (``se`` is that
  of the population-level mean the row is predicted at).
* ``interval="prediction"`` adds the variance of a new observation around that mean:
  ``sigma^2 delta_i^2 / w_i`` (``delta_i`` the row's residual SD ratio of
  ``residual_groups=``, ``w_i`` its prior weight, 1 unless ``weights=`` is given), and for
  each grouping factor whose level was not seen in fitting the random effect's variance
  ``z_k' Sigma_k z_k`` (a new group's effect is unknown).

Intervals are ``fit +- z_{(1+level)/2} se`` (normal quantiles, as lme4's ``bootMer``-free
intervals, merTools and glmmTMB).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg as sla
from scipy.special import ndtri

from ..errors import DataError, ModelSpecificationError
from ..linalg.dense import cross_products_from_blocks

#: ``C`` is formed and factored densely over ``q + p`` columns up to this size.
DENSE_MAX_COLUMNS = 3000


def henderson_factor(fit: Any) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Lower Cholesky factor of ``C = M'M + diag(I_q, 0)`` at the fit's optimum, with the
    templates ``T_k`` and the first column of each term (``q`` columns, then ``p``).

    ``M = S [Z Lambda  X]`` are the rows whitened by the residual structure, so ``C`` is
    formed from the fit's cross products at its residual parameters (no pass over rows).
    """
    structure = fit.structure
    objective = fit.objective_function
    theta, psi = objective.split(fit.opt.final_theta)
    A = objective.residual.cross_products(psi)
    sizes = [t.nranef for t in structure.terms]
    q = int(sum(sizes))
    p = len(fit.design.x_names)
    m = q + p
    if m > DENSE_MAX_COLUMNS:
        raise ModelSpecificationError(
            f"this needs the mixed-model equations factored densely over q + p = {m} "
            f"columns, more than {DENSE_MAX_COLUMNS}; not computed for a model this size"
        )
    W = cross_products_from_blocks(structure, A)[:m, :m]
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    templates = structure.templates(theta)
    D = np.zeros((m, m))
    for k, (term, T) in enumerate(zip(structure.terms, templates, strict=True)):
        for lev in range(term.nlevels):
            s = offs[k] + lev * term.ncols
            D[s : s + term.ncols, s : s + term.ncols] = T
    D[q:, q:] = np.eye(p)
    C = D.T @ W @ D
    C[np.arange(q), np.arange(q)] += 1.0
    return np.linalg.cholesky(C), templates, offs


def _new_rows(fit: Any, newdata: pd.DataFrame):
    """``X``, the offset, and per term the level index (-1 unseen) and ``z`` (n, p_k)."""
    spec = fit.design.spec
    if spec is None:
        raise ModelSpecificationError(
            "this fit keeps no formula specification to rebuild columns for new data"
        )
    X = np.asarray(spec.fixed_matrix(newdata), dtype=np.float64)
    offset = None
    offset_values = getattr(spec, "offset_values", None)
    if offset_values is not None:
        offset = offset_values(newdata)
    rows = spec.random_effects_rows(newdata)
    n = X.shape[0]
    per_term = []
    for term in fit.structure.terms:
        refs = np.full(n, -1, dtype=np.int64)
        z = np.zeros((n, term.ncols))
        for (start, stop), member in zip(term.blocks, term.members, strict=True):
            r, zm = rows[member]
            r = np.asarray(r)
            refs = np.where(r >= 0, r, refs)
            z[:, start:stop] = np.asarray(zm, dtype=np.float64)
        per_term.append((refs, z))
    return X, offset, per_term


def _residual_factor(fit: Any, newdata: pd.DataFrame, weights: Any) -> np.ndarray:
    """``delta_i^2 / w_i`` of each new row (its residual variance over ``sigma^2``)."""
    n = len(newdata)
    factor = np.ones(n)
    strata = fit.residual_strata
    if strata is not None:
        if strata.column not in newdata.columns:
            raise DataError(
                f"prediction intervals need the residual-variance column {strata.column!r} "
                "in the new data (the fit has residual variances by group)"
            )
        ratio = fit.residual_sd_ratio
        label_of = {
            str(m): lab
            for lab, members in zip(strata.labels, strata.members, strict=True)
            for m in members
        }
        values = newdata[strata.column].astype(str)
        unknown = sorted(set(values) - set(label_of))
        if unknown:
            raise DataError(
                f"the new data have values of {strata.column!r} not seen in fitting: "
                f"{', '.join(unknown[:5])}"
            )
        delta = values.map(lambda v: ratio[label_of[v]]).to_numpy(dtype=np.float64)
        factor = factor * delta**2
    if weights is not None:
        w = newdata[weights] if isinstance(weights, str) else weights
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (n,) or not np.all(w > 0):
            raise DataError("weights for prediction intervals need one positive value per row")
        factor = factor / w
    return factor


def _fitted_residual_factor(fit: Any, weights: Any) -> np.ndarray:
    """``delta_i^2 / w_i`` of the fitted rows (their own prior weights unless given)."""
    factor = np.ones(fit.nobs)
    if fit.residual_strata is not None:
        factor = factor * fit.residual_sd_ratio.to_numpy()[fit.residual_strata.codes] ** 2
    w = fit.model.weights if weights is None else np.asarray(weights, dtype=np.float64)
    return factor if w is None else factor / w


def prediction_frame(
    fit: Any,
    newdata: pd.DataFrame | None = None,
    *,
    re: bool = True,
    interval: str | None = None,
    level: float = 0.95,
    weights: Any = None,
) -> pd.DataFrame:
    """Predictions with standard errors (and intervals) as a DataFrame.

    Parameters
    ----------
    fit
        A linear mixed-model fit.
    newdata
        New rows (None: the fitted rows, which must be in memory).
    re
        Conditional on the random effects (True) or population-level (False).
    interval
        None (columns ``fit, se``), ``"confidence"`` (for the mean; adds ``lower, upper``)
        or ``"prediction"`` (for a new observation; adds ``se_pred, lower, upper``).
    level
        Coverage of the interval.
    weights
        Prior weights of the new rows (a column name or values), for prediction intervals
        of a weighted fit: a row's residual variance is ``sigma^2 / w``. Default 1.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``newdata``; the definitions are in the module docstring.
    """
    if hasattr(fit, "family"):
        raise ModelSpecificationError(
            "se_fit and intervals are for linear mixed models; for a GLMM use "
            "predict(type='link') with bootstrap() for intervals"
        )
    if interval not in (None, "confidence", "prediction"):
        raise ValueError(f"interval must be 'confidence' or 'prediction', not {interval!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, not {level!r}")
    if newdata is None:
        if not fit.model.has_rows:
            raise ModelSpecificationError(
                "predictions for the fitted rows need the rows, and this fit was made from "
                "streamed chunks; pass newdata"
            )
        X = fit.design.X
        offset = fit.model.offset
        per_term = [(t.refs, t.z) for t in fit.structure.terms]
        index = fit.design.row_index
    else:
        X, offset, per_term = _new_rows(fit, newdata)
        index = newdata.index
    beta = fit.fixef.to_numpy()
    V = fit.vcov.to_numpy()
    est = X @ beta
    if offset is not None:
        est = est + np.asarray(offset, dtype=np.float64)
    n = X.shape[0]
    sigma2 = fit.sigma**2
    extra = np.zeros(n)  # variance of unseen levels' random effects (prediction intervals)
    if not re:
        var = np.einsum("ij,jk,ik->i", X, V, X)
    else:
        L, templates, offs = henderson_factor(fit)
        q = int(offs[-1])
        m = L.shape[0]
        var = np.empty(n)
        step = max(1, 2_000_000 // m)
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            cols = np.arange(r1 - r0)
            Mt = np.zeros((m, r1 - r0))
            for k, (term, (refs, z)) in enumerate(zip(fit.structure.terms, per_term, strict=True)):
                b = fit.estimates.b[k]
                r, zz = refs[r0:r1], z[r0:r1]
                seen = r >= 0
                T = templates[k]
                est[r0:r1][seen] += np.einsum("ij,ij->i", zz[seen], b[r[seen]])
                zl = zz @ T  # (Lambda' z)' at the level's block: z' T
                base = offs[k] + np.where(seen, r, 0) * term.ncols
                for j in range(term.ncols):
                    Mt[base[seen] + j, cols[seen]] = zl[seen, j]
                if not seen.all():
                    S = sigma2 * (T @ T.T)
                    u = zz[~seen]
                    extra[r0:r1][~seen] += np.einsum("ij,jk,ik->i", u, S, u)
            Mt[q:] = X[r0:r1].T
            Y = sla.solve_triangular(L, Mt, lower=True, check_finite=False)
            var[r0:r1] = sigma2 * np.einsum("ij,ij->j", Y, Y)
    se = np.sqrt(np.maximum(var, 0.0))
    out = pd.DataFrame({"fit": est, "se": se}, index=index)
    if interval is None:
        return out
    zq = float(ndtri(0.5 + level / 2.0))
    if interval == "prediction":
        if newdata is None:
            resid_var = sigma2 * _fitted_residual_factor(fit, weights)
        else:
            resid_var = sigma2 * _residual_factor(fit, newdata, weights)
        se_pred = np.sqrt(var + extra + resid_var)
        out["se_pred"] = se_pred
        half = zq * se_pred
    else:
        half = zq * se
    out["lower"] = est - half
    out["upper"] = est + half
    out.attrs.update(level=level, interval=interval, re=re)
    return out


def glmm_prediction_frame(
    fit: Any,
    newdata: pd.DataFrame | None = None,
    *,
    re: bool = True,
    interval: str | None = None,
    level: float = 0.95,
    type: str = "response",
) -> pd.DataFrame:
    """Population-level GLMM predictions with standard errors on the link scale.

    ``se_link = sqrt(x' V x)`` (``V`` = ``vcov``, lme4's); a confidence interval is formed
    on the link scale, ``eta +- z se_link``, and mapped by the inverse link (so it stays
    inside the response's range). Conditional (``re=True``) standard errors and
    prediction intervals are refused: they need the PIRLS-weighted mixed-model equations,
    not implemented for GLMMs (use :func:`~mixedmodels.inference.bootstrap.bootstrap`).
    """
    if re:
        raise ModelSpecificationError(
            "GLMM predictions with standard errors are population-level only: pass "
            "re=False (random-effect uncertainty for GLMMs: use bootstrap())"
        )
    if interval == "prediction":
        raise ModelSpecificationError(
            "prediction intervals are for linear mixed models; a GLMM gives "
            "interval='confidence' (for the mean, on the response scale)"
        )
    if interval not in (None, "confidence"):
        raise ValueError(f"interval must be 'confidence' or 'prediction', not {interval!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, not {level!r}")
    if type not in ("response", "link"):
        raise ValueError(f"type must be 'response' or 'link', not {type!r}")
    beta = fit.fixef.to_numpy()
    if newdata is None:
        X = fit.design.X
        index = fit.design.row_index
        eta = fit.predict(type="link", re=False).to_numpy()
    else:
        X, offset, _ = _new_rows(fit, newdata)
        index = newdata.index
        eta = X @ beta
        if offset is not None:
            eta = eta + np.asarray(offset, dtype=np.float64)
    V = fit.vcov.to_numpy()
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", X, V, X), 0.0))
    inverse = fit.family_object.link.inverse if type == "response" else (lambda e: e)
    out = pd.DataFrame({"fit": inverse(eta), "se_link": se}, index=index)
    if interval is not None:
        zq = float(ndtri(0.5 + level / 2.0))
        a, b = inverse(eta - zq * se), inverse(eta + zq * se)
        out["lower"] = np.minimum(a, b)
        out["upper"] = np.maximum(a, b)
    out.attrs.update(level=level, interval=interval, re=re, type=type)
    return out
