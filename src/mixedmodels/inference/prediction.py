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
import scipy.sparse as sp
from scipy.special import ndtri

from ..errors import DataError, ModelSpecificationError, refuse_repeated

#: The rest of ``C`` after term 1's levels are eliminated (``q_r + p`` columns: the random
#: effects of the other grouping factors and the fixed effects) is factored densely up to
#: this size.
DENSE_MAX_COLUMNS = 3000


class MixedModelEquations:
    """``C = M'M + diag(I_q, 0)`` at a fit's optimum, factored by eliminating term 1.

    ``M = S [Z Lambda  X]`` are the rows whitened by the residual structure, so ``C`` comes
    from the fit's cross products at its residual parameters (no pass over rows). Term 1
    (the factor with most levels) is block diagonal in ``C``: ``D_l = T1' Z1_l'Z1_l T1 + I``
    per level. With ``B`` the rest of ``C``'s columns of term 1 and ``E`` the block of the
    other terms and ``X``, ``m = [a; c]`` (``a`` at one level ``l`` of term 1) gives

        m' C^{-1} m = a' D_l^{-1} a + w' S^{-1} w,   w = c - B_l D_l^{-1} a,
        S = E - B D^{-1} B',

    so only ``S`` (``q_r + p`` square) is dense: a one-factor model with thousands of levels
    costs ``O(n p^2)``.
    """

    def __init__(self, fit: Any):
        structure = fit.structure
        objective = fit.objective_function
        theta, psi = objective.split(fit.opt.final_theta)
        A = objective.residual.cross_products(psi)
        terms = structure.terms
        self.templates = structure.templates(theta)
        t1, T1 = terms[0], self.templates[0]
        self.p1 = p1 = t1.ncols
        self.q1 = q1 = t1.nranef
        self.qr = qr = int(sum(t.nranef for t in terms[1:]))
        self.p = p = len(fit.design.x_names)
        if qr + p > DENSE_MAX_COLUMNS:
            raise ModelSpecificationError(
                f"this needs a dense factor over the random effects of the grouping factors "
                f"after the first and the fixed effects, {qr + p} columns, more than "
                f"{DENSE_MAX_COLUMNS}; not computed for a model this size"
            )
        self.rest_offsets = np.concatenate([[0], np.cumsum([t.nranef for t in terms[1:]])])
        D = np.swapaxes(T1, 0, 1)[None] @ A.z1tz1 @ T1[None] + np.eye(p1)[None]
        self.Dinv = np.linalg.inv(D)
        Bx = (A.xytz1[:p] @ T1).reshape(p, q1)
        if qr:
            Lr = sp.block_diag(
                [
                    sp.kron(sp.identity(t.nlevels, format="csr"), sp.csr_matrix(T))
                    for t, T in zip(terms[1:], self.templates[1:], strict=True)
                ],
                format="csr",
            )
            L1 = sp.kron(sp.identity(t1.nlevels, format="csr"), sp.csr_matrix(T1), format="csr")
            Br = Lr.T @ sp.csr_matrix(A.zrtz1) @ L1
            B = sp.vstack([Br, sp.csr_matrix(Bx)], format="csr")
            zrtzr = A.zrtzr.toarray() if sp.issparse(A.zrtzr) else np.asarray(A.zrtzr)
            Lrd = Lr.toarray()
            E = np.empty((qr + p, qr + p))
            E[:qr, :qr] = Lrd.T @ zrtzr @ Lrd + np.eye(qr)
            E[:qr, qr:] = Lrd.T @ A.xytzr[:p].T
            E[qr:, :qr] = E[:qr, qr:].T
            E[qr:, qr:] = A.xytxy[:p, :p]
        else:
            B = sp.csr_matrix(Bx)
            E = np.array(A.xytxy[:p, :p], dtype=np.float64)
        Dbd = _block_diagonal(self.Dinv)
        BD = B @ Dbd
        S = E - np.asarray((BD @ B.T).todense())
        self.B = B.tocsc()
        self.LS = np.linalg.cholesky(S)

    def quadratic(self, level: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        """``m_i' C^{-1} m_i`` for rows with term-1 level ``level`` (-1: none, ``a`` unused),
        term-1 part ``a`` (n, p1) and the rest ``c`` (n, q_r + p)."""
        n = level.shape[0]
        seen = level >= 0
        v = np.zeros_like(a)
        v[seen] = np.einsum("ijk,ik->ij", self.Dinv[level[seen]], a[seen])
        first = np.einsum("ij,ij->i", a, v)
        rows = (np.where(seen, level, 0)[:, None] * self.p1 + np.arange(self.p1)).ravel()
        cols = np.repeat(np.arange(n), self.p1)
        V = sp.csc_matrix((v.ravel(), (rows, cols)), shape=(self.q1, n))
        w = c.T - (self.B @ V).toarray()
        y = sla.solve_triangular(self.LS, w, lower=True, check_finite=False)
        return first + np.einsum("ij,ij->j", y, y)

    def row_parts(
        self, structure: Any, X: np.ndarray, per_term: list, scale: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(level, a, c)`` of rows: ``a = z1' T1`` at the term-1 level, ``c = [z_k' T_k at
        each other term's level; x]``, times ``scale`` (the whitening); levels -1 (unseen)
        contribute nothing."""
        n = X.shape[0]
        refs1, z1 = per_term[0]
        level = np.asarray(refs1, dtype=np.int64)
        a = np.asarray(z1, dtype=np.float64) @ self.templates[0]
        a[level < 0] = 0.0
        c = np.zeros((n, self.qr + self.p))
        idx = np.arange(n)
        for k, (term, (refs, z)) in enumerate(zip(structure.terms[1:], per_term[1:], strict=True)):
            refs = np.asarray(refs, dtype=np.int64)
            ok = refs >= 0
            zl = np.asarray(z, dtype=np.float64) @ self.templates[k + 1]
            base = self.rest_offsets[k] + refs * term.ncols
            for j in range(term.ncols):
                c[idx[ok], base[ok] + j] = zl[ok, j]
        c[:, self.qr :] = X
        if scale is not None:
            a = a * scale[:, None]
            c = c * scale[:, None]
        return level, a, c

    def quadratic_rows(
        self, structure: Any, X: np.ndarray, per_term: list, scale: np.ndarray | None = None
    ) -> np.ndarray:
        """:meth:`quadratic` of rows given as for :meth:`row_parts`, in chunks."""
        n = X.shape[0]
        out = np.empty(n)
        step = max(1, 1_000_000 // max(self.qr + self.p, 1))
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            part = [(np.asarray(r)[r0:r1], np.asarray(z)[r0:r1]) for r, z in per_term]
            level, a, c = self.row_parts(
                structure, X[r0:r1], part, None if scale is None else scale[r0:r1]
            )
            out[r0:r1] = self.quadratic(level, a, c)
        return out


def _block_diagonal(blocks: np.ndarray) -> sp.csr_matrix:
    l, p, _ = blocks.shape
    base = (np.arange(l) * p)[:, None, None]
    rows = np.broadcast_to(base + np.arange(p)[None, :, None], blocks.shape)
    cols = np.broadcast_to(base + np.arange(p)[None, None, :], blocks.shape)
    return sp.csr_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(l * p, l * p))


def _new_rows(fit: Any, newdata: pd.DataFrame, re: bool = True):
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
    if not re:  # the grouping columns are not needed (as predict(re=False))
        return X, offset, []
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
    # Not yet checked against nlme with a residual correlation or variance function (and
    # a prediction interval would need the new rows' variance-function values).
    refuse_repeated(fit, "se_fit and prediction intervals", "use predict(newdata) for the values")
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
        X, offset, per_term = _new_rows(fit, newdata, re)
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
        equations = MixedModelEquations(fit)
        structure = fit.structure
        for k, (refs, z) in enumerate(per_term):
            refs = np.asarray(refs)
            z = np.asarray(z, dtype=np.float64)
            seen = refs >= 0
            b = fit.estimates.b[k]
            est[seen] += np.einsum("ij,ij->i", z[seen], b[refs[seen]])
            if not seen.all():
                T = equations.templates[k]
                u = z[~seen]
                extra[~seen] += np.einsum("ij,jk,ik->i", u, sigma2 * (T @ T.T), u)
        var = sigma2 * equations.quadratic_rows(structure, X, per_term)
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
        X, offset, _ = _new_rows(fit, newdata, re=False)
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
