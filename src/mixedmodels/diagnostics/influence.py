"""Influence of groups and observations on a linear mixed-model fit.

**Groups: leave-one-group-out refits.** For each level ``g`` of a grouping factor the model
is refitted without the rows of ``g``. Every block of ``A = [Z X y]' W [Z X y]`` is a sum
over rows, so the reduced model's blocks are the fit's blocks minus those of the group's
rows (``A - A_g``; ``O(n_g)`` work, no parsing and no pass over the other rows). The
levels of ``g`` keep their random-effects columns with no rows: their diagonal block of
``Lambda'Z'Z Lambda + I`` is then ``I``, which adds nothing to the criterion, so the
reduced criterion is exactly that of the model fitted to the data without ``g`` (as
lme4's ``influence.merMod`` refits it). The refit minimises the model's own objective
(:class:`~mixedmodels.objective.model_objective.LinearMixedObjective`, theta and the
residual structure's parameters) from the fit's optimum, with the Newton finish of the fit
where the analytic gradient exists. From the refits (``b`` the fit's fixed effects,
``b_(g)`` the refit's, ``V`` the fit's ``vcov``, ``p`` the number of fixed effects):

    dfbeta_g   = b_(g) - b                              (lme4's dfbeta sign)
    dfbetas_g  = dfbeta_g / se(b_(g))                   (lme4 / influence.ME: the refit's SEs)
    cooks_d_g  = dfbeta_g' V^{-1} dfbeta_g / p          (influence.ME's Cook's distance)

lme4's ``cooks.distance(influence(fit))`` multiplies by ``(G - p) / G`` (``G`` groups);
``influence.ME`` and HLMdiag's deletion form do not, and neither do we. The usual cut-off
``4 / G`` (Van der Meer, Te Grotenhuis & Pelzer 2010, influence.ME) flags groups.

**Observations.** With ``M = S [Z Lambda  X]`` the rows whitened by the residual structure
(``S = diag(sqrt(w_i) / delta_i)``: prior weights, residual SD ratios) and
``C = M'M + diag(I_q, 0)``, the conditional fitted values are ``y-hat = S^{-1} H S y`` with
``H = M C^{-1} M'``; the hat values are ``h_i = m_i' C^{-1} m_i`` (lme4's ``hatvalues``).
The scaled (Pearson) residual is ``r_i sqrt(w_i) / (sigma delta_i)`` (lme4's summary), the
studentized one ``scaled_i / sqrt(1 - h_i)`` (lme4's ``rstudent``) and the one-step Cook's
distance ``scaled_i^2 h_i / ((1 - h_i)^2 p)`` (lme4's ``cooks.distance``).

Only residual structures that scale rows (one residual variance with prior weights;
``residual_groups=``) are handled; others are refused rather than ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ModelSpecificationError
from ..inference.parameters import SdCorParameters, residual_ratio_names
from ..inference.prediction import MixedModelEquations
from ..linalg.blas_threads import blas_threads_for
from ..linalg.cross_products import (
    CrossProducts,
    StratifiedCrossProducts,
    compute_cross_products,
)
from ..linalg.solution import estimate
from ..objective.gradient import deviance_gradient
from ..objective.model_objective import LinearMixedObjective
from ..optimize import (
    OptimizerOptions,
    cholesky_or_none,
    gradient_is_small,
    minimize_with_restart,
    newton_finish,
    polish,
)
from ..residual.structures import Homoscedastic, VarIdent
from ..tables import Report, Table

# Warm starts begin next to the optimum: a small first trust region, early BOBYQA stop, and
# the Newton finish (as the fit does) completes the optimum to ~1e-10.
_WARM = OptimizerOptions(ftol_rel=1e-7, ftol_abs=1e-5, xtol_abs=1e-4, initial_step=0.1)
_TIGHT = OptimizerOptions()
_TIGHT_WARM = OptimizerOptions(initial_step=0.1)


@dataclass(frozen=True, eq=False)
class Influence:
    """Influence diagnostics of a fit (see the module docstring for the definitions).

    Attributes
    ----------
    group
        The grouping factor whose levels were left out.
    groups
        One row per level: ``nobs``, ``cooks_distance``, ``max_abs_dfbetas`` (the largest
        scaled change of any fixed effect), ``influential`` (``cooks_distance > 4 / G``),
        ``converged``; sorted as the levels.
    dfbeta, dfbetas
        Levels x fixed effects: the change ``b_(g) - b`` and the same divided by the
        refit's standard errors.
    fixef_deleted, se_deleted
        Levels x fixed effects: the refits' estimates and standard errors.
    varpar_deleted, varpar_change
        Levels x variance parameters (``sd_...``, ``cor_...``, ``sigma`` and residual SD
        ratios, named as :func:`~mixedmodels.inference.profile.confint` names them): the
        refits' values and their change from the fit.
    observations
        One row per observation (the data's row index): ``group`` (its level), ``resid``,
        ``scaled_resid``, ``hat``, ``studentized_resid``, ``cooks_distance``.
    cutoff
        ``4 / G``, the conventional cut-off for Cook's distance of a group.
    notes
        What was done or could not be done.
    """

    group: str
    groups: pd.DataFrame
    dfbeta: pd.DataFrame
    dfbetas: pd.DataFrame
    fixef_deleted: pd.DataFrame
    se_deleted: pd.DataFrame
    varpar_deleted: pd.DataFrame
    varpar_change: pd.DataFrame
    observations: pd.DataFrame
    cutoff: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def top_groups(self, k: int = 5) -> pd.DataFrame:
        """The ``k`` levels with the largest Cook's distance."""
        return self.groups.sort_values("cooks_distance", ascending=False).head(k)

    def top_observations(self, k: int = 5, by: str = "scaled_resid") -> pd.DataFrame:
        """The ``k`` observations with the largest ``|by|`` (default: scaled residual)."""
        order = self.observations[by].abs().sort_values(ascending=False).index[:k]
        return self.observations.loc[order]

    def summary(self, k: int = 5) -> Report:
        """The most influential groups and the largest scaled residuals, as a report."""
        g = self.top_groups(k)
        gt = pd.DataFrame(
            {
                self.group: g.index.astype(str),
                "nobs": g["nobs"].to_numpy(),
                "Cook's D": g["cooks_distance"].to_numpy(),
                "max |DFBETAS|": g["max_abs_dfbetas"].to_numpy(),
            }
        )
        o = self.top_observations(k)
        ot = pd.DataFrame(
            {
                "row": o.index.astype(str),
                self.group: o["group"].astype(str).to_numpy(),
                "scaled resid": o["scaled_resid"].to_numpy(),
                "studentized": o["studentized_resid"].to_numpy(),
                "hat": o["hat"].to_numpy(),
            }
        )
        flagged = int(self.groups["influential"].sum())
        return Report(
            title=f"Influence of the levels of {self.group} (leave-one-group-out refits)",
            lines=(
                f"{len(self.groups)} levels; {flagged} with Cook's distance above "
                f"4/G = {self.cutoff:.3g}",
            ),
            tables=(
                Table(f"Largest Cook's distances ({self.group} left out):", gt, show_index=False),
                Table("Largest scaled residuals:", ot, show_index=False),
            ),
            footer=self.notes,
        )

    def __repr__(self) -> str:
        top = self.top_groups(1)
        return (
            f"<Influence of {len(self.groups)} levels of {self.group!r}: largest Cook's "
            f"distance {top['cooks_distance'].iloc[0]:.4g} ({top.index[0]})>"
        )

    def _repr_html_(self) -> str:
        return self.summary().to_html()

    def plot(self, kind: str = "cooks"):
        """Cook's distance by level (``kind="cooks"``) or an index plot of the scaled
        residuals (``kind="residuals"``); a matplotlib Figure."""
        from ..plots import influence as figures

        if kind == "cooks":
            return figures.cooks_distance(self)
        if kind == "residuals":
            return figures.residual_index(self)
        raise ValueError(f"kind must be 'cooks' or 'residuals', not {kind!r}")


# -- the reduced model ------------------------------------------------------------------------
def _values_at(pattern: sp.csr_matrix, part: sp.spmatrix) -> np.ndarray | None:
    """The entries of ``part`` at the positions of ``pattern``, aligned with
    ``pattern.data``; None if ``part`` has an entry outside the pattern (a sum over all
    rows that cancelled to 0 and was dropped from it)."""
    ncols = pattern.shape[1]
    rows = np.repeat(np.arange(pattern.shape[0], dtype=np.int64), np.diff(pattern.indptr))
    keys = rows * ncols + pattern.indices
    coo = sp.coo_matrix(part)
    out = np.zeros(pattern.data.shape[0])
    if coo.nnz:
        query = coo.row.astype(np.int64) * ncols + coo.col
        pos = np.minimum(np.searchsorted(keys, query), max(keys.shape[0] - 1, 0))
        if keys.shape[0] == 0 or np.any(keys[pos] != query):
            return None
        np.add.at(out, pos, coo.data)
    return out


def _subtract(A: CrossProducts, B: CrossProducts) -> CrossProducts:
    """``A - B`` on ``A``'s sparsity pattern (``B``: the blocks of a subset of A's rows), so
    that the result has the same structure as ``A`` (entries that become 0 stay stored)."""

    def minus(a, b):
        if a is None:
            return None
        if sp.issparse(a):
            values = _values_at(a, b)
            if values is None:  # a new pattern; the reduced model gets its own system
                out = (a - b).tocsr()
                out.sort_indices()
                return out
            return sp.csr_matrix((a.data - values, a.indices, a.indptr), shape=a.shape)
        return a - (b.toarray() if sp.issparse(b) else b)

    return CrossProducts(
        z1tz1=A.z1tz1 - B.z1tz1,
        zrtz1=minus(A.zrtz1, B.zrtz1),
        zrtzr=minus(A.zrtzr, B.zrtzr),
        xytz1=A.xytz1 - B.xytz1,
        xytzr=minus(A.xytzr, B.xytzr),
        xytxy=A.xytxy - B.xytxy,
        nobs=A.nobs - B.nobs,
        sum_log_weights=A.sum_log_weights - B.sum_log_weights,
    )


class _Rows:
    """The rows of a fit as the engine sees them (response less the offset)."""

    def __init__(self, fit: Any):
        model = fit.model
        self.terms = fit.structure.terms
        self.X = fit.design.X
        self.y = model.y
        self.weights = model.weights

    def blocks(self, rows: np.ndarray, like: CrossProducts) -> CrossProducts:
        w = None if self.weights is None else self.weights[rows]
        return compute_cross_products(
            self.terms,
            self.X[rows],
            self.y[rows],
            weights=w,
            refs=[t.refs[rows] for t in self.terms],
            zs=[t.z[rows] for t in self.terms],
            sparse_rest=None if like.zrtzr is None else sp.issparse(like.zrtzr),
        )


def _reduced_residual(residual: Any, data: _Rows, rows: np.ndarray) -> Any:
    """The residual structure of the model without ``rows`` (None: not estimable)."""
    if isinstance(residual, Homoscedastic):
        A = residual.A
        reduced = _subtract(A, data.blocks(rows, A))
        return Homoscedastic(reduced, -float(reduced.sum_log_weights))
    if isinstance(residual, VarIdent):
        codes = residual.strata.codes[rows]
        parts = []
        for s, A in enumerate(residual.blocks.strata):
            mine = rows[codes == s]
            parts.append(_subtract(A, data.blocks(mine, A)) if mine.size else A)
        counts = np.array([a.nobs for a in parts], dtype=np.int64)
        if np.any(counts == 0):
            return None  # a residual stratum with no rows left: its SD ratio is not estimable
        blocks = StratifiedCrossProducts(strata=tuple(parts), counts=counts)
        jac = -float(sum(a.sum_log_weights for a in parts))
        return VarIdent(residual.strata, blocks, jac)
    raise ModelSpecificationError(  # pragma: no cover - guarded by _check
        f"influence() cannot leave rows out of the residual structure {type(residual).__name__}"
    )


def _check(fit: Any) -> None:
    if hasattr(fit, "family"):
        raise ModelSpecificationError(
            "influence() covers linear mixed models; for a GLMM refit without each group by "
            "hand (glmer on the subset) or check simulated residuals (mm.simulated_residuals)"
        )
    model = getattr(fit, "model", None)
    if model is None or not hasattr(fit, "structure"):
        raise ModelSpecificationError("influence() needs a linear mixed-model fit (mm.lmer)")
    if not model.has_rows:
        raise ModelSpecificationError(
            "influence() refits without each group's rows, and this fit was made from "
            "streamed chunks without keeping them; fit an in-memory sample instead"
        )
    residual = fit.objective_function.residual
    if not isinstance(residual, Homoscedastic | VarIdent):
        raise ModelSpecificationError(
            f"influence() does not handle the residual structure {type(residual).__name__} "
            "yet (only prior weights and residual_groups=); it refuses rather than ignore it"
        )


@dataclass(frozen=True)
class _Refit:
    params: np.ndarray
    beta: np.ndarray
    se: np.ndarray
    sigma: float
    converged: bool


def _refit(fit: Any, residual: Any, start: np.ndarray) -> _Refit:
    """Minimise the reduced model's objective from the fit's optimum (warm start)."""
    structure = fit.structure
    objective = LinearMixedObjective(structure, residual, fit.reml)
    lower = objective.lower_bounds()
    ntheta = structure.ntheta
    if objective.has_residual_parameters:
        summary = minimize_with_restart(objective, start, lower, _TIGHT_WARM, ntheta)
        converged = bool(summary.converged)
    else:
        summary = minimize_with_restart(objective, start, lower, _WARM, ntheta, finish_with=_TIGHT)
        dev = objective.deviance_at(np.zeros(0))
        summary, _, _ = newton_finish(objective, deviance_gradient(dev), summary)
        if not gradient_is_small(summary):
            summary = polish(objective, summary.final_theta, lower, _TIGHT)
            summary, _, _ = newton_finish(objective, deviance_gradient(dev), summary)
        converged = bool(summary.converged) and gradient_is_small(summary)
    theta, psi = objective.split(summary.final_theta)
    dev = objective.factored_at(psi)
    est = estimate(dev.system, dev.factor(theta), fit.reml)
    return _Refit(
        summary.final_theta.copy(),
        np.array(est.beta),
        np.sqrt(np.diag(est.vcov_beta)),
        float(est.sigma),
        converged,
    )


def _varpar(fit: Any, params: np.ndarray, sigma: float) -> np.ndarray:
    sc = SdCorParameters(fit.structure)
    theta = params[: fit.structure.ntheta]
    out = sc.to_phi(theta, sigma)
    psi = params[fit.structure.ntheta :]
    return np.concatenate([out, np.exp(psi)]) if psi.size else out


def _varpar_names(fit: Any) -> list[str]:
    names = list(SdCorParameters(fit.structure).names)
    if fit.residual_strata is not None:
        names += residual_ratio_names(fit.residual_strata)
    return names


# -- observations -------------------------------------------------------------------------------
def _row_scale(fit: Any) -> np.ndarray:
    """``sqrt(w_i) / delta_i``: what whitens row ``i`` (1 without weights or strata)."""
    scale = np.ones(fit.nobs)
    if fit.model.weights is not None:
        scale = scale * np.sqrt(fit.model.weights)
    if fit.residual_strata is not None:
        scale = scale / fit.residual_sd_ratio.to_numpy()[fit.residual_strata.codes]
    return scale


def hat_values(fit: Any) -> np.ndarray:
    """Diagonal of the conditional hat matrix (lme4's ``hatvalues``; module docstring):
    ``h_i = m_i' C^{-1} m_i`` for the whitened rows ``m_i``, from
    :class:`~mixedmodels.inference.prediction.MixedModelEquations` (term 1 eliminated level
    by level; refused when the rest is too large to factor densely)."""
    _check(fit)
    equations = MixedModelEquations(fit)
    per_term = [(t.refs, t.z) for t in fit.structure.terms]
    return equations.quadratic_rows(fit.structure, fit.design.X, per_term, _row_scale(fit))


def _observations(fit: Any, group_term: Any) -> tuple[pd.DataFrame, list[str]]:
    notes: list[str] = []
    resid = fit.resid.to_numpy()
    scale = _row_scale(fit)
    scaled = resid * scale / fit.sigma
    p = len(fit.fixef)
    try:
        h = hat_values(fit)
    except ModelSpecificationError as exc:
        notes.append(str(exc))
        h = np.full(resid.shape[0], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        student = scaled / np.sqrt(1.0 - h)
        cooks = scaled**2 * h / ((1.0 - h) ** 2 * p)
    levels = np.asarray(group_term.levels, dtype=object)[group_term.refs]
    frame = pd.DataFrame(
        {
            "group": levels,
            "resid": resid,
            "scaled_resid": scaled,
            "hat": h,
            "studentized_resid": student,
            "cooks_distance": cooks,
        },
        index=fit.design.row_index,
    )
    return frame, notes


# -- public ----------------------------------------------------------------------------------------
def _single_threaded_blas(fit: Any):
    """The BLAS threads for the many small solves of the refits (:func:`blas_threads_for`,
    the fit's rule): one thread unless the rest block is large."""
    return blas_threads_for(sum(t.nranef for t in fit.structure.terms[1:]))


def influence(fit: Any, group: str | None = None) -> Influence:
    """Leave-one-group-out influence and per-observation diagnostics of a linear mixed model.

    Parameters
    ----------
    fit
        A linear mixed-model fit (in memory; prior weights and ``residual_groups=`` are
        handled through the model's objective).
    group
        The grouping factor whose levels are left out one at a time (default: the one with
        most levels, the first in the engine's order).

    Returns
    -------
    Influence

    Notes
    -----
    Definitions in the module docstring; they follow lme4's ``influence.merMod``,
    ``hatvalues`` and ``rstudent`` and influence.ME's Cook's distance (Nieuwenhuis, Te
    Grotenhuis & Pelzer 2012, R Journal 4(2)). Each refit starts from the fit's optimum and
    costs a few dozen evaluations of the criterion on blocks whose size does not depend on
    the number of rows.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> infl = fit.influence()
    >>> infl.top_groups(1).index[0]
    '9'
    """
    _check(fit)
    with _single_threaded_blas(fit):
        return _influence(fit, group)


def _influence(fit: Any, group: str | None) -> Influence:
    structure = fit.structure
    names = [t.group for t in structure.terms]
    if group is None:
        group = names[0]
    if group not in names:
        raise ModelSpecificationError(
            f"group must be a grouping factor of the model ({', '.join(names)}), not {group!r}"
        )
    term = structure.terms[names.index(group)]
    data = _Rows(fit)
    residual = fit.objective_function.residual
    start = fit.opt.final_theta.copy()
    beta = fit.fixef.to_numpy()
    V = fit.vcov.to_numpy()
    Vinv = np.linalg.inv(V)
    p = beta.shape[0]
    x_names = list(fit.fixef.index)
    vp_names = _varpar_names(fit)
    vp_full = _varpar(fit, start, fit.sigma)
    order = np.argsort(term.refs, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(term.refs, minlength=term.nlevels))])
    G = term.nlevels
    fixef_del = np.full((G, p), np.nan)
    se_del = np.full((G, p), np.nan)
    vp_del = np.full((G, len(vp_names)), np.nan)
    converged = np.zeros(G, dtype=bool)
    nobs = np.diff(bounds)
    notes: list[str] = []
    for g in range(G):
        rows = np.sort(order[bounds[g] : bounds[g + 1]])
        reduced = _reduced_residual(residual, data, rows)
        why = None
        if reduced is None:
            why = "a residual-variance group has no rows left"
        else:
            A = reduced.cross_products(np.zeros(len(reduced.names)))
            if A.nobs <= p or cholesky_or_none(A.xytxy[:p, :p]) is None:
                why = "the fixed effects are not estimable without it"
        if why is not None:
            notes.append(f"{group} {term.levels[g]}: not refitted ({why})")
            continue
        r = _refit(fit, reduced, start)
        fixef_del[g] = r.beta
        se_del[g] = r.se
        vp_del[g] = _varpar(fit, r.params, r.sigma)
        converged[g] = r.converged
    if not converged[np.isfinite(fixef_del[:, 0])].all():
        bad = [
            term.levels[g] for g in range(G) if np.isfinite(fixef_del[g, 0]) and not converged[g]
        ]
        notes.append(f"refits whose convergence is doubtful (left out): {', '.join(bad)}")
    idx = pd.Index(list(term.levels), name=group)
    dfbeta = fixef_del - beta
    dfbetas = dfbeta / se_del
    cooks = np.einsum("gi,ij,gj->g", dfbeta, Vinv, dfbeta) / p
    cutoff = 4.0 / G
    groups = pd.DataFrame(
        {
            "nobs": nobs,
            "cooks_distance": cooks,
            # NaN for a level not refitted (no all-NaN warning from nanmax)
            "max_abs_dfbetas": pd.DataFrame(np.abs(dfbetas)).max(axis=1).to_numpy(),
            "influential": cooks > cutoff,
            "converged": converged,
        },
        index=idx,
    )
    observations, obs_notes = _observations(fit, term)
    notes.extend(obs_notes)
    return Influence(
        group=group,
        groups=groups,
        dfbeta=pd.DataFrame(dfbeta, index=idx, columns=x_names),
        dfbetas=pd.DataFrame(dfbetas, index=idx, columns=x_names),
        fixef_deleted=pd.DataFrame(fixef_del, index=idx, columns=x_names),
        se_deleted=pd.DataFrame(se_del, index=idx, columns=x_names),
        varpar_deleted=pd.DataFrame(vp_del, index=idx, columns=vp_names),
        varpar_change=pd.DataFrame(vp_del - vp_full, index=idx, columns=vp_names),
        observations=observations,
        cutoff=cutoff,
        notes=tuple(notes),
    )
