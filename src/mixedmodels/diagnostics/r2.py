"""Marginal and conditional R² of a linear mixed model (Nakagawa, Johnson & Schielzeth 2017).

With ``eta_i = x_i' beta-hat`` the fixed-effects prediction of row ``i``, ``z_ki`` row ``i``
of the model matrix of random-effects term ``k`` and ``Sigma_k`` that term's estimated
covariance matrix,

    var_fixed    = sum_i (eta_i - mean(eta))^2 / (n - 1)
    var_random   = (1/n) sum_i sum_k z_ki' Sigma_k z_ki      (= mean of diag(Z Sigma Z'))
    var_residual = sigma^2
    R²_marginal    = var_fixed / (var_fixed + var_random + var_residual)
    R²_conditional = (var_fixed + var_random) / (var_fixed + var_random + var_residual)

(Nakagawa, Johnson & Schielzeth 2017, J. R. Soc. Interface 14: 20170213; random slopes
enter through the mean of ``z_i' Sigma z_i`` as Johnson 2014, Methods Ecol. Evol. 5: 944,
proposed and the 2017 paper adopts). These are the numbers R's
``performance::r2_nakagawa`` reports for a Gaussian ``lmer`` fit, ``n - 1`` in
``var_fixed`` included (R's ``var``).

Both sums need only cross products, so they are computed the same way for fits with rows in
memory and for fits from streamed data (precomputed ``[Z X y]'[Z X y]``):

    sum_i z_ki' Sigma_k z_ki = trace(Sigma_k S_k),   S_k = sum_i z_ki z_ki'
                                                     (the sum over levels of the diagonal
                                                      blocks of Z_k'Z_k)
    sum_i (eta_i - mean)^2  = beta' X'X beta - (1'X beta)^2 / n

``1'X`` is read from the intercept column of ``X'X`` or, without a fixed intercept, from
``X'Z`` of a random intercept term (``Z`` then holds a column of ones).

With residual variances by group (``residual_groups=``) ``var_residual`` is the mean over
rows of each row's residual variance, ``sum_i sigma_{s(i)}^2 / n``: the residual variance of
a row drawn at random from the data. That choice is ours (performance does not cover nlme's
``varIdent``); it reduces to ``sigma^2`` with one residual variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import ModelSpecificationError, refuse_generalized, refuse_repeated

__all__ = ["R2Result", "r2"]


@dataclass(frozen=True)
class R2Result:
    """Marginal and conditional R² and the three variances they are made of.

    Attributes
    ----------
    marginal
        ``var_fixed / total``: the share of variance explained by the fixed effects.
    conditional
        ``(var_fixed + var_random) / total``: fixed and random effects together.
    var_fixed
        Variance of the fixed-effects predictions ``X beta-hat`` (``n - 1`` divisor).
    var_random
        Mean over rows of ``z_i' Sigma z_i`` summed over random-effects terms.
    var_residual
        Residual variance (the mean over rows with residual variances by group).
    """

    marginal: float
    conditional: float
    var_fixed: float
    var_random: float
    var_residual: float

    def to_dict(self) -> dict[str, float]:
        return {
            "r2_marginal": self.marginal,
            "r2_conditional": self.conditional,
            "var_fixed": self.var_fixed,
            "var_random": self.var_random,
            "var_residual": self.var_residual,
        }


def _zz_sums_from_rows(fit: Any) -> list[np.ndarray]:
    return [term.z.T @ term.z for term in fit.structure.terms]


def _level_diagonal_block_sum(block: Any, p: int) -> np.ndarray:
    """Sum over levels of the ``p x p`` diagonal blocks of a level-major (l p x l p) block."""
    out = np.empty((p, p))
    for a in range(p):
        for b in range(a, p):
            diag = block.diagonal(b - a) if sp.issparse(block) else np.diagonal(block, b - a)
            out[a, b] = out[b, a] = float(np.asarray(diag)[a::p].sum())
    return out


def _zz_sums_from_cross_products(fit: Any) -> list[np.ndarray]:
    cp = fit.model.cross_products
    terms = fit.structure.terms
    sums = [cp.z1tz1.sum(axis=0)]
    offset = 0
    for term in terms[1:]:
        width = term.nlevels * term.ncols
        block = cp.zrtzr[offset : offset + width, offset : offset + width]
        sums.append(_level_diagonal_block_sum(block, term.ncols))
        offset += width
    return sums


def _column_sums_of_x(fit: Any) -> np.ndarray:
    """``1'X`` from the cross products (exact: a column of ones in X or in some Z)."""
    cp = fit.model.cross_products
    p = len(fit.estimates.beta)
    names = list(fit.design.x_names)
    if "(Intercept)" in names:
        return cp.xytxy[names.index("(Intercept)"), :p].copy()
    offset = 0
    for k, term in enumerate(fit.structure.terms):
        if "(Intercept)" in term.column_names:
            j = term.column_names.index("(Intercept)")
            if k == 0:
                return cp.xytz1[:p, :, j].sum(axis=1)
            cols = offset + np.arange(term.nlevels) * term.ncols + j
            return cp.xytzr[:p, cols].sum(axis=1)
        if k > 0:
            offset += term.nlevels * term.ncols
    raise ModelSpecificationError(
        "r2 of a fit from streamed data needs an intercept (fixed or random) to get the mean "
        "of X beta from the cross products; refit in memory or add an intercept"
    )


def _var_fixed(fit: Any) -> float:
    beta = np.asarray(fit.estimates.beta, dtype=float)
    n = fit.nobs
    if fit.model.has_rows:
        return float(np.var(fit.design.X @ beta, ddof=1))
    p = len(beta)
    xtx = fit.model.cross_products.xytxy[:p, :p]
    total = float(_column_sums_of_x(fit) @ beta)
    ss = float(beta @ xtx @ beta) - total * total / n
    return max(ss, 0.0) / (n - 1)


def _var_residual(fit: Any) -> float:
    # With prior weights sigma^2 is the residual variance of a row of weight 1: the choice
    # made here (no weighted reference from performance::r2_nakagawa checks it).
    if fit.residual_strata is None:
        return float(fit.sigma**2)
    return float(np.mean(fit.residual_sd_by_row**2))


def r2(fit: Any) -> R2Result:
    """Marginal and conditional R² of Nakagawa, Johnson & Schielzeth (2017).

    Parameters
    ----------
    fit
        A fitted linear mixed model (:class:`~mixedmodels.results.LinearMixedModelResult`),
        with rows in memory or from streamed data.

    Returns
    -------
    R2Result
        ``marginal``, ``conditional``, ``var_fixed``, ``var_random``, ``var_residual``.

    Notes
    -----
    See the module docstring for the formulas; random slopes enter exactly through
    ``mean_i z_i' Sigma z_i`` as in ``performance::r2_nakagawa``. Reference: Nakagawa S,
    Johnson PCD, Schielzeth H (2017), The coefficient of determination R² and intra-class
    correlation coefficient from generalized linear mixed-effects models revisited and
    expanded, J. R. Soc. Interface 14: 20170213.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("Reaction ~ Days + (Days | Subject)", "sleepstudy")
    >>> round(fit.r2().conditional, 4)
    0.7992
    """
    refuse_generalized(
        fit,
        "R-squared (Nakagawa)",
        "report the variance components (fit.varcorr) and the fixed effects",
    )
    refuse_repeated(
        fit,
        "R-squared (Nakagawa)",
        "report fit.structure_params and the variance components (fit.varcorr)",
    )
    n = fit.nobs
    sums = _zz_sums_from_rows(fit) if fit.model.has_rows else _zz_sums_from_cross_products(fit)
    s2 = float(fit.sigma**2)
    templates = fit.structure.templates(fit.opt.final_theta[: fit.structure.ntheta])
    var_random = 0.0
    for T, S in zip(templates, sums, strict=True):
        sigma_k = s2 * (T @ T.T)
        var_random += float(np.sum(sigma_k * S)) / n
    var_fixed = _var_fixed(fit)
    var_residual = _var_residual(fit)
    total = var_fixed + var_random + var_residual
    return R2Result(
        marginal=var_fixed / total,
        conditional=(var_fixed + var_random) / total,
        var_fixed=var_fixed,
        var_random=var_random,
        var_residual=var_residual,
    )
