"""Likelihood-ratio tests between nested models, as lme4's ``anova()`` but explicit about it.

:func:`compare` orders the models by number of parameters and tests each against the
previous one. The rules it applies, and reports in ``notes``:

1. All models must be fitted to the same observations (same ``nobs`` and response).
2. Neighbours must be nested: the fixed-effects columns of the smaller model lie in the
   column space of the larger one's, and for every grouping factor of the smaller model the
   larger one has the same factor, with random-effect columns spanning the smaller model's
   and a covariance pattern that contains it.
3. Criterion: REML log-likelihoods only compare models with the same fixed effects; models
   whose fixed effects differ are refitted by ML first (as lme4's ``anova`` does). Models
   with the same fixed effects, all fitted by REML, are compared by REML.
4. Boundary: when the larger model adds exactly one random-effect variance (a column added
   to a random term, or a new random term), the null value lies on the boundary of the
   parameter space and the statistic is asymptotically the chi-bar-square mixture
   ``0.5 chi2(df - 1) + 0.5 chi2(df)`` (Self & Liang 1987; Stram & Lee 1994; West, Welch &
   Galecki 2014, sec. 2.6.2.2). The naive ``chi2(df)`` p-value is shown beside it.

A model without random effects (:class:`~.linear_model.LinearModelResult`) can be the
smaller model: its REML log-likelihood is R's ``logLik(lm, REML = TRUE)``.

GLMM fits (:class:`~mixedmodels.results.glmm.GeneralizedLinearMixedModelResult`) are
compared by the same rules, with their ``objective`` = -2 x lme4's ``logLik`` (ML: Laplace
or quadrature); all models must have the same family and link, and either all or none use
quadrature (nAGQ > 1), whose log-likelihood lme4 computes without the saturated part. A
GLM without random effects can be the null of a variance test if it offers the same names
as a GLMM result (``design``, ``reml`` False, ``objective``, ``nparams``, ``aic``, ``bic``,
``family``, ``link``, ``nagq``) and no ``structure``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import errors
from ..errors import MixedModelsError
from ..tables import Report, Table
from .distributions import chi2_sf
from .linear_model import LinearModelResult

if hasattr(errors, "ModelComparisonError"):
    ModelComparisonError = errors.ModelComparisonError
else:

    class ModelComparisonError(MixedModelsError, ValueError):  # type: ignore[no-redef]
        """Models that cannot be compared by a likelihood-ratio test (not nested, other data)."""


_SPAN_TOL = 1e-8


# -- describing a fit -----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _GroupInfo:
    refs: np.ndarray
    z: np.ndarray
    column_names: tuple[str, ...]
    blocks: tuple[tuple[int, int], ...]


@dataclass(frozen=True, eq=False)
class _ModelInfo:
    name: str
    fit: Any
    X: np.ndarray
    y: np.ndarray
    groups: dict[str, _GroupInfo] = field(default_factory=dict)
    # Residual-variance strata (column name, stratum of each row), None for one variance.
    strata: tuple[str, np.ndarray] | None = None
    # Repeated-measures residuals: (correlation spec, variance spec), each None if absent.
    repeated: tuple[Any, Any] = (None, None)

    @property
    def is_mixed(self) -> bool:
        return not isinstance(self.fit, LinearModelResult)

    @property
    def nvariances(self) -> int:
        return sum(g.z.shape[1] for g in self.groups.values())


def _describe(fit: Any, name: str) -> _ModelInfo:
    if isinstance(fit, LinearModelResult):
        return _ModelInfo(name, fit, fit.design.X, fit.design.y, {})
    glm_like = hasattr(fit, "link") and not hasattr(fit, "structure")
    if not hasattr(fit, "design") or not (hasattr(fit, "structure") or glm_like):
        raise TypeError(
            f"cannot compare {type(fit).__name__!r}: pass results of mm.lmer(...), "
            "mm.glmer(...) or of mixedmodels.inference.linear_model.lm(...)"
        )
    terms = () if glm_like else getattr(fit, "re_terms", fit.structure.terms)
    groups = {t.group: _GroupInfo(np.asarray(t.refs), t.z, t.column_names, t.blocks) for t in terms}
    found = getattr(fit, "residual_strata", None)
    strata = None if found is None else (found.column, np.asarray(found.codes))
    model = getattr(fit, "model", None)
    repeated = (getattr(model, "correlation", None), getattr(model, "variance", None))
    return _ModelInfo(name, fit, fit.design.X, fit.design.y, groups, strata, repeated)


def _row_values(fit: Any, what: str) -> np.ndarray | None:
    """A fit's prior weights, offset or binomial trials per row (None when it has none)."""
    model = getattr(fit, "model", None)
    if model is not None:
        return getattr(model, what, None)
    return getattr(getattr(fit, "design", None), what, None)  # GLMM results keep no model


def _family_of(fit: Any) -> tuple[str, str, bool]:
    """(family, link, quadrature) of a fit; linear (mixed) models are Gaussian, identity."""
    family = getattr(fit, "family", None)
    if family is None:
        return "gaussian", "identity", False
    return str(family), str(fit.link), int(getattr(fit, "nagq", 1)) > 1


def _check_same_family(infos: list[_ModelInfo]) -> None:
    """Refuse likelihoods of different response distributions or incomparable AGQ values."""
    first = infos[0]
    family, link, quadrature = _family_of(first.fit)
    for info in infos[1:]:
        other, other_link, other_quadrature = _family_of(info.fit)
        if (other, other_link) != (family, link):
            raise ModelComparisonError(
                f"{first.name!r} is a {family} ({link}) model and {info.name!r} a {other} "
                f"({other_link}) model: likelihoods of different response distributions "
                "cannot be compared by a likelihood-ratio test; fit both with the same family "
                "and link"
            )
        if other_quadrature != quadrature:
            raise ModelComparisonError(
                f"{first.name!r} and {info.name!r} mix adaptive quadrature (nAGQ > 1) and the "
                "Laplace approximation: lme4's quadrature log-likelihood leaves out the "
                "saturated log-likelihood, so the two are not comparable; fit both with the "
                "same nAGQ"
            )


def _residual_fraction(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares ``C`` with ``A ~ B C`` and the largest relative column residual."""
    if A.shape[1] == 0:
        return np.zeros((B.shape[1], 0)), 0.0
    if B.shape[1] == 0:
        return np.zeros((0, A.shape[1])), 1.0
    C, *_ = np.linalg.lstsq(B, A, rcond=None)
    resid = A - B @ C
    scale = np.maximum(np.linalg.norm(A, axis=0), 1e-300)
    return C, float(np.max(np.linalg.norm(resid, axis=0) / scale))


def in_column_space(A: np.ndarray, B: np.ndarray, tol: float = _SPAN_TOL) -> bool:
    """Whether every column of ``A`` lies in the column space of ``B``."""
    return _residual_fraction(A, B)[1] <= tol


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if np.array_equal(a, b):
        return True
    # Same grouping up to relabelling: the pairs (a_i, b_i) define a bijection.
    pairs = np.unique(np.stack([a, b]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def _block_of(blocks: tuple[tuple[int, int], ...], j: int) -> int:
    for k, (s, e) in enumerate(blocks):
        if s <= j < e:
            return k
    raise IndexError(j)  # pragma: no cover - blocks cover every column


def random_effects_nested(small: _ModelInfo, big: _ModelInfo) -> str | None:
    """None if the random-effects structure of ``small`` is contained in ``big``'s, else why not.

    For each grouping factor ``g`` of ``small`` there must be ``C`` with ``Z_small,g = Z_big,g C``;
    then every covariance ``S`` allowed in ``small`` maps to ``C S C'`` in ``big``, which must
    respect ``big``'s zero pattern (uncorrelated blocks from ``||``): for columns ``i, j`` of
    ``big`` in different blocks, ``C[i, a] C[j, b] = 0`` whenever ``S[a, b]`` is free.
    """
    for gname, g0 in small.groups.items():
        g1 = big.groups.get(gname)
        if g1 is None:
            return f"grouping factor {gname!r} of {small.name!r} is not in {big.name!r}"
        if not _same_partition(g0.refs, g1.refs):
            return (
                f"grouping factor {gname!r} has different levels in {small.name!r} and {big.name!r}"
            )
        C, frac = _residual_fraction(g0.z, g1.z)
        if frac > _SPAN_TOL:
            return (
                f"the random effects ({' + '.join(g0.column_names)} | {gname}) of {small.name!r} "
                f"are not spanned by ({' + '.join(g1.column_names)} | {gname}) of {big.name!r}"
            )
        C = np.where(np.abs(C) < 1e-10, 0.0, C)
        for s, e in g0.blocks:
            Cb = C[:, s:e]
            for i in range(Cb.shape[0]):
                for j in range(i + 1, Cb.shape[0]):
                    if _block_of(g1.blocks, i) == _block_of(g1.blocks, j):
                        continue
                    if np.any(np.outer(Cb[i], Cb[j]) != 0):
                        return (
                            f"{big.name!r} forces a zero covariance between "
                            f"{g1.column_names[i]} and {g1.column_names[j]} | {gname} that "
                            f"{small.name!r} estimates"
                        )
    return None


def residual_variances_nested(small: _ModelInfo, big: _ModelInfo) -> str | None:
    """None if ``small``'s residual variances are a special case of ``big``'s, else why not.

    One residual variance is a special case of any strata; strata are nested when every
    stratum of ``big`` lies inside one stratum of ``small`` (``small`` pools ``big``'s
    strata, as West et al.'s Model 3.2B pools 3.2A's Low and High dose groups).
    """
    if small.strata is None:
        return None
    column, codes = small.strata
    if big.strata is None:
        return (
            f"{small.name!r} has residual variances by {column!r} but {big.name!r} has one "
            "residual variance"
        )
    big_column, big_codes = big.strata
    if codes.shape != big_codes.shape:
        return "the residual strata are defined on different rows"
    pairs = np.unique(np.stack([big_codes, codes]), axis=1)
    if pairs.shape[1] != np.unique(big_codes).shape[0]:
        return (
            f"the residual strata of {small.name!r} (by {column!r}) do not pool those of "
            f"{big.name!r} (by {big_column!r}): a stratum of {big.name!r} spans several of "
            f"{small.name!r}'s"
        )
    return None


def residual_structures_nested(small: _ModelInfo, big: _ModelInfo) -> str | None:
    """None if ``small``'s residual correlation and variance function are special cases of
    ``big``'s, else why not.

    Independence is a special case of every correlation; compound symmetry, AR(1) and
    continuous AR(1) over the visits are special cases of the unstructured ``us`` on the
    same grouping (equal SDs, constrained correlations); otherwise the structures must be
    the same. A variance function is nested only in the same one (none is in all).
    """
    (c0, v0), (c1, v1) = small.repeated, big.repeated
    if c0 is not None:
        if c1 is None or c1.group != c0.group:
            return f"the residual correlation {c0} of {small.name!r} is not in {big.name!r}"
        if c0 != c1 and not (c1.kind == "us" and c0.kind in ("cs", "ar1", "car1")):
            return (
                f"the residual correlations {c0} of {small.name!r} and {c1} of {big.name!r} "
                "are not nested (compare them by AIC/BIC)"
            )
        if c0.kind in ("ar1", "car1") and c1.kind == "us" and c0.time != c1.time:
            return f"{c0} and {c1} use different time columns"
    if v0 is not None and v0 != v1:
        return f"the variance function {v0} of {small.name!r} is not in {big.name!r}"
    if big.repeated != (None, None) and small.strata is not None:
        return "residual variances by group and a repeated structure cannot be compared"
    return None


def _nesting_problem(small: _ModelInfo, big: _ModelInfo) -> str | None:
    if not in_column_space(small.X, big.X):
        return (
            f"the fixed effects of {small.name!r} are not contained in those of {big.name!r} "
            "(a fixed-effect column is outside the larger model's column space)"
        )
    return (
        random_effects_nested(small, big)
        or residual_variances_nested(small, big)
        or residual_structures_nested(small, big)
    )


# -- p-values -------------------------------------------------------------------------------
def chisq_sf(x: float, df: int) -> float:
    """Upper tail of chi2(df), with chi2(0) the point mass at 0."""
    if df <= 0:
        return 1.0 if x <= 0 else 0.0
    return float(chi2_sf(max(x, 0.0), df))


def chibar_pvalue(chisq: float, df: int) -> float:
    """p-value from the mixture ``0.5 chi2(df - 1) + 0.5 chi2(df)`` (one variance on the boundary).

    Notes
    -----
    Testing one variance (and its ``df - 1`` covariances with variances already in the model)
    at zero puts the null value on the boundary; the likelihood-ratio statistic is then
    asymptotically a 50:50 mixture of ``chi2(df - 1)`` and ``chi2(df)`` (Self & Liang 1987,
    JASA 82, case 5; Stram & Lee 1994, Biometrics 50).

    Examples
    --------
    >>> round(chibar_pvalue(3.84, 1), 4)
    0.025
    """
    return 0.5 * chisq_sf(chisq, df - 1) + 0.5 * chisq_sf(chisq, df)


def _mixture_label(df: int) -> str:
    return f"0.5*chisq({df - 1}) + 0.5*chisq({df})"


# -- the comparison -------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ModelComparison:
    """Likelihood-ratio tests between nested models (lme4's ``anova`` table, with notes).

    Attributes
    ----------
    table
        One row per model in order of ``npar``: ``npar, AIC, BIC, logLik, deviance`` and, for
        every model after the first, ``Chisq, Df, Pr(>Chisq)`` against the previous row, the
        naive ``chi2(Df)`` p-value ``Pr(naive)`` and the reference distribution ``Reference``.
        ``deviance`` is -2 x the log-likelihood used (the REML criterion for REML comparisons).
    criterion
        ``"ML"`` or ``"REML"``.
    notes
        The rules applied, in words.
    fits
        The fits compared, in table order (ML refits where the rules required them).
    """

    table: pd.DataFrame
    criterion: str
    notes: tuple[str, ...]
    fits: tuple[Any, ...]

    @property
    def names(self) -> list[str]:
        return list(self.table.index)

    @property
    def pvalues(self) -> pd.Series:
        return self.table["Pr(>Chisq)"]

    def summary(self) -> Report:
        shown = self.table.copy()
        return Report(
            title=f"Likelihood-ratio tests ({self.criterion})",
            tables=(
                Table(
                    "",
                    shown,
                    pvalue_columns=("Pr(>Chisq)", "Pr(naive)"),
                    digits=6,
                ),
            ),
            footer=tuple(f"Note: {n}" for n in self.notes),
        )

    def __str__(self) -> str:
        return self.summary().to_text()

    def _repr_html_(self) -> str:
        return self.summary().to_html()

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types: ``{"criterion", "models": [...], "notes": [...]}``."""

        def num(x):
            if x is None or isinstance(x, str):
                return x
            x = float(x)
            return x if math.isfinite(x) else None

        rows = []
        for name, r in self.table.iterrows():
            rows.append({"model": name, **{k: num(v) for k, v in r.items()}})
        return {"criterion": self.criterion, "models": rows, "notes": list(self.notes)}


def _default_names(fits: tuple[Any, ...]) -> list[str]:
    names = []
    for i, f in enumerate(fits, start=1):
        form = getattr(f, "formula", None)
        names.append(form if form else f"model {i}")
    if len(set(names)) < len(names):
        names = [
            f"model {i}: {n}" if not n.startswith("model ") else n for i, n in enumerate(names, 1)
        ]
    return names


def _refit_ml(fit: Any) -> Any:
    if isinstance(fit, LinearModelResult):
        return fit.refit(reml=False)
    return fit.model.fit(reml=False, start=fit.theta)


def compare(
    *fits: Any,
    boundary: bool | None = None,
    refit: bool | None = None,
    names: list[str] | tuple[str, ...] | None = None,
) -> ModelComparison:
    """Compare nested models by likelihood-ratio tests, in order of number of parameters.

    Parameters
    ----------
    *fits
        Two or more results of :func:`mixedmodels.lmer` (or
        :func:`mixedmodels.inference.linear_model.lm` for "no random effects"), fitted to the
        same data.
    boundary
        None (default): use the chi-bar-square mixture ``0.5 chi2(df-1) + 0.5 chi2(df)`` when
        the larger model adds exactly one random-effect variance and the fixed effects are the
        same. True: use the mixture for every test. False: never (naive ``chi2(df)``).
    refit
        None (default): refit by ML when the fixed effects differ or the fits mix REML and ML;
        otherwise keep REML. True: always compare ML fits. False: never refit (REML fits with
        different fixed effects are then refused).
    names
        Row labels (default: the formulas).

    Returns
    -------
    ModelComparison

    Raises
    ------
    ModelComparisonError
        For fewer than two models, different data, non-nested neighbours, or (``refit=False``)
        REML fits with different fixed effects.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> from mixedmodels.inference.lrt import compare
    >>> m0 = mm.lmer("Reaction ~ Days + (1 | Subject)", "sleepstudy", reml=False)
    >>> m1 = mm.lmer("Reaction ~ Days + (Days | Subject)", "sleepstudy", reml=False)
    >>> round(float(compare(m0, m1).table["Chisq"].iloc[1]), 4)
    42.1393
    """
    if len(fits) < 2:
        raise ModelComparisonError("compare needs at least two fitted models")
    if names is None:
        names = _default_names(fits)
    elif len(names) != len(fits):
        raise ModelComparisonError(f"{len(names)} names given for {len(fits)} models")
    infos = [_describe(f, str(n)) for f, n in zip(fits, names, strict=True)]

    # 1. Same data.
    first = infos[0]
    for info in infos[1:]:
        if info.y.shape != first.y.shape:
            raise ModelComparisonError(
                f"{first.name!r} uses {first.y.shape[0]} observations but {info.name!r} uses "
                f"{info.y.shape[0]}: likelihoods of different data cannot be compared; drop the "
                "rows with missing values in any variable of either model before fitting both"
            )
        if not np.array_equal(info.y, first.y):
            raise ModelComparisonError(
                f"{first.name!r} and {info.name!r} have different responses: likelihoods of "
                "different data (or a transformed response) cannot be compared"
            )
        for what in ("weights", "offset", "trials"):
            mine, theirs = _row_values(info.fit, what), _row_values(first.fit, what)
            if (mine is None) != (theirs is None) or (
                mine is not None and not np.array_equal(mine, theirs)
            ):
                raise ModelComparisonError(
                    f"{first.name!r} and {info.name!r} have different {what}: their "
                    f"likelihoods are of different models of the rows; fit both with the same "
                    f"{what}"
                )

    _check_same_family(infos)

    notes: list[str] = []
    family, _, quadrature = _family_of(first.fit)
    if family != "gaussian":
        method = "adaptive Gauss-Hermite quadrature" if quadrature else "Laplace approximation"
        notes.append(f"{family} GLMMs: log-likelihoods by the {method}, as lme4's logLik")
    # 3. Criterion.
    reml_flags = [bool(i.fit.reml) for i in infos]
    same_fixed = all(
        in_column_space(i.X, first.X) and in_column_space(first.X, i.X) for i in infos[1:]
    )
    if refit is True:
        use_reml = False
    elif all(reml_flags) and same_fixed:
        use_reml = True
    elif refit is False:
        if any(reml_flags):
            why = "their fixed effects differ" if not same_fixed else "some were fitted by ML"
            raise ModelComparisonError(
                f"REML fits cannot be compared here because {why}; use refit=None to refit by "
                "ML, or fit all models by ML"
            )
        use_reml = False
    else:
        use_reml = False
    if use_reml:
        notes.append(
            "same fixed effects, all fitted by REML: compared by REML log-likelihoods "
            "(deviance column = REML criterion)"
        )
        if any(not i.is_mixed for i in infos):
            notes.append(
                "REML log-likelihood of the model without random effects as R's "
                "logLik(lm, REML = TRUE)"
            )
    else:
        refitted = [i.name for i in infos if i.fit.reml]
        if refitted:
            reason = (
                "the fixed effects differ"
                if not same_fixed
                else "the fits mix REML and ML"
                if refit is None
                else "refit=True"
            )
            notes.append(
                f"refitted with ML (instead of REML) because {reason}: " + ", ".join(refitted)
            )
        else:
            notes.append("all models fitted by ML: compared by ML log-likelihoods")
        infos = [_describe(_refit_ml(i.fit), i.name) if i.fit.reml else i for i in infos]

    # Order by number of parameters (stable).
    order = sorted(range(len(infos)), key=lambda k: infos[k].fit.nparams)
    infos = [infos[k] for k in order]

    # 2. Nesting of neighbours; 4. statistics.
    rows = []
    used_mixture = False
    for k, info in enumerate(infos):
        fit = info.fit
        obj = float(fit.objective)
        row: dict[str, Any] = {
            "npar": int(fit.nparams),
            "AIC": float(fit.aic),
            "BIC": float(fit.bic),
            "logLik": -0.5 * obj,
            "deviance": obj,
            "Chisq": np.nan,
            "Df": np.nan,
            "Pr(>Chisq)": np.nan,
            "Pr(naive)": np.nan,
            "Reference": "",
        }
        if k > 0:
            prev = infos[k - 1]
            problem = _nesting_problem(prev, info)
            if problem is not None:
                raise ModelComparisonError(
                    f"models {prev.name!r} and {info.name!r} are not nested ({problem}); a "
                    "likelihood-ratio test needs nested models: compare AIC/BIC instead"
                )
            df = int(fit.nparams - prev.fit.nparams)
            chisq = float(prev.fit.objective) - obj
            naive = chisq_sf(chisq, df) if df > 0 else np.nan
            added_var = info.nvariances - prev.nvariances
            fixed_equal = in_column_space(info.X, prev.X)
            mixture = False
            if df > 0:
                if boundary is True:
                    mixture = True
                elif boundary is None and added_var == 1 and fixed_equal:
                    mixture = True
            if mixture:
                used_mixture = True
                p = chibar_pvalue(chisq, df)
                row["Reference"] = _mixture_label(df)
            else:
                p = naive
                row["Reference"] = f"chisq({df})" if df > 0 else ""
            if boundary is None and added_var > 1:
                notes.append(
                    f"{info.name!r} adds {added_var} variances to {prev.name!r}: the null "
                    "distribution is not a simple 50:50 mixture; the naive chi2 p-value shown is "
                    "conservative (consider bootstrap_compare)"
                )
            elif boundary is None and added_var == 1 and not fixed_equal:
                notes.append(
                    f"{info.name!r} differs from {prev.name!r} in fixed effects and adds a "
                    "variance: naive chi2 p-value shown"
                )
            if df == 0:
                notes.append(
                    f"{prev.name!r} and {info.name!r} have the same number of parameters: no test"
                )
            row.update({"Chisq": chisq, "Df": df, "Pr(>Chisq)": p, "Pr(naive)": naive})
        rows.append(row)
    if used_mixture:
        notes.append(
            "a variance tested at 0 lies on the boundary of the parameter space: p-values from "
            "the chi-bar-square mixture in 'Reference' (Self & Liang 1987; Stram & Lee 1994; "
            "West et al. 2014, ch. 2); 'Pr(naive)' is the chi2(Df) p-value"
        )
    if boundary is True:
        notes.append("boundary=True: mixture p-values used for every test")
    elif boundary is False:
        notes.append("boundary=False: naive chi2(Df) p-values (conservative for variances)")
    table = pd.DataFrame(rows, index=pd.Index([i.name for i in infos], name="model"))
    table["npar"] = table["npar"].astype(int)
    return ModelComparison(
        table=table,
        criterion="REML" if use_reml else "ML",
        notes=tuple(notes),
        fits=tuple(i.fit for i in infos),
    )


def lrt(fit0: Any, fit1: Any, **kwargs: Any) -> ModelComparison:
    """Likelihood-ratio test of ``fit0`` (smaller) against ``fit1``; see :func:`compare`."""
    return compare(fit0, fit1, **kwargs)
