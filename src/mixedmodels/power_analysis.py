"""Power analysis by simulation (R's simr: ``powerSim``, ``powerCurve``, ``extend``).

From a fitted model (the pilot), with its fixed effects, variance components and residual
SD changed as asked (``fixef=``, ``varcorr=``, ``sigma=``) and its design extended (more
groups, more rows per group), responses are simulated with new random effects and new
residuals, the model is refitted to each (``LinearMixedModel.refit``: only the ``y`` row of
the cross products changes, and the optimiser starts from the true parameters), and the
test is applied. The power is the share of valid refits whose p-value is below ``alpha``,
with a Clopper-Pearson (exact binomial) interval, as simr reports.

The test
--------
* a coefficient name (``"treatmentHigh"``): a Wald t test of ``beta = 0`` with
  Kenward-Roger degrees of freedom (simr's default for ``lmer`` fits, through pbkrtest's
  ``KRmodcomp``; for a single coefficient the KR F equals the square of this t) on REML
  fits, Satterthwaite's on ML fits; ``method=`` chooses ``"satterthwaite"``,
  ``"kenward-roger"``, ``"z"`` (a normal reference, as mixedlm's ``powerSim``) or
  ``"lrt"`` (the likelihood-ratio test of dropping the column, ML refits);
* a term of the formula (``"treatment"``): the F test of all its columns (Type III), the
  same df methods;
* a linear hypothesis (``"treatmentHigh = treatmentLow"``): :meth:`test` of each refit;
* ``null="weight ~ sex + litsize + (1 | litter)"`` (or that formula as ``test=``): the
  likelihood-ratio test of the smaller model against the model (both refitted by ML;
  chi-square reference);
* a callable ``test(result) -> p-value`` (picklable for ``n_jobs > 1``).

Extending designs
-----------------
``groups={"litter": 40}`` gives 40 litters: the pilot's litters are taken in an order that
alternates between the combinations of the fixed-effect factors constant within a litter
(treatment here), so every smaller design keeps the pilot's mix, and larger designs copy
litters in that order under new labels (simr's ``extend(along=)`` copies in the data's
order, and its smaller designs take the first levels, which for data sorted by treatment
drops whole arms). ``within={"litter": 12}`` gives each litter 12 rows, its own rows
repeated in order (simr's ``extend(within=)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.design import build_design
from mixedmodels.errors import ModelSpecificationError, refuse_repeated
from mixedmodels.formula import parse_formula
from mixedmodels.inference.bootstrap import _replicates
from mixedmodels.models.lmm import LinearMixedModel

__all__ = ["PowerCurve", "PowerResult", "clopper_pearson", "extend_data", "power", "power_curve"]

_METHODS = {
    "kenward-roger": "kenward-roger",
    "kr": "kenward-roger",
    "satterthwaite": "satterthwaite",
    "z": "normal",
    "normal": "normal",
    "lrt": "lrt",
}


# -- results --------------------------------------------------------------------------
def clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of a proportion (Clopper & Pearson 1934; simr's
    ``binom.test`` interval)."""
    from scipy.stats import beta

    if n <= 0:
        return math.nan, math.nan
    a = (1.0 - level) / 2.0
    lower = 0.0 if successes == 0 else float(beta.ppf(a, successes, n - successes + 1))
    upper = 1.0 if successes == n else float(beta.ppf(1.0 - a, successes + 1, n - successes))
    return lower, upper


@dataclass(frozen=True, eq=False)
class PowerResult:
    """The power of one test on one design, estimated by simulation.

    Attributes
    ----------
    power
        Share of valid simulations with ``p < alpha``.
    lower, upper
        Clopper-Pearson interval of ``power`` at ``level``.
    successes, nsim, failures
        Significant simulations, valid ones, and refits that failed (left out).
    p_values
        One per simulation (NaN where the refit failed).
    test, method, alpha, level
        What was tested and how.
    settings
        The simulation's parameters and design (fixed effects, theta, sigma, nobs, groups).
    """

    power: float
    lower: float
    upper: float
    successes: int
    nsim: int
    failures: int
    p_values: np.ndarray
    test: str
    method: str
    alpha: float
    level: float
    settings: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        pct = 100.0 * self.power
        lines = [
            f"Power for {self.test} ({self.method}), alpha = {self.alpha:g}:",
            f"  {pct:.2f}% ({100 * self.lower:.2f}, {100 * self.upper:.2f})"
            f"  [{self.successes}/{self.nsim} significant; {100 * self.level:g}% "
            "Clopper-Pearson interval]",
        ]
        if self.failures:
            lines.append(f"  {self.failures} refits failed and were left out")
        groups = self.settings.get("ngroups")
        if groups:
            lines.append(
                f"  design: {self.settings.get('nobs')} rows; "
                + ", ".join(f"{g}: {n}" for g, n in groups.items())
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the CLI's ``--json``)."""
        return {
            "test": self.test,
            "method": self.method,
            "alpha": self.alpha,
            "power": self.power,
            "lower": self.lower,
            "upper": self.upper,
            "level": self.level,
            "successes": self.successes,
            "nsim": self.nsim,
            "failures": self.failures,
            "settings": _plain(self.settings),
        }


@dataclass(frozen=True, eq=False)
class PowerCurve:
    """Power along a design size (simr's ``powerCurve``): ``table`` has one row per size
    (``size, nobs, power, lower, upper, successes, nsim, failures``)."""

    along: str
    within: bool
    table: pd.DataFrame
    results: tuple[PowerResult, ...]

    def __str__(self) -> str:
        first = self.results[0]
        what = f"rows per {self.along}" if self.within else f"levels of {self.along}"
        lines = [f"Power for {first.test} ({first.method}) by number of {what}:"]
        for row in self.table.itertuples():
            lines.append(
                f"  {row.size:>5}: {100 * row.power:6.2f}% "
                f"({100 * row.lower:6.2f}, {100 * row.upper:6.2f})  nobs = {row.nobs}, "
                f"nsim = {row.nsim}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "along": self.along,
            "within": self.within,
            "points": [
                r.to_dict() | {"size": int(s)}
                for s, r in zip(self.table["size"], self.results, strict=True)
            ],
        }

    def plot(self, ax: Any = None, target: float | None = 0.8):
        """Power against size with its intervals (a matplotlib Figure)."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 4))
        else:
            fig = ax.figure
        t = self.table
        ax.errorbar(
            t["size"],
            t["power"],
            yerr=[t["power"] - t["lower"], t["upper"] - t["power"]],
            fmt="o-",
            capsize=3,
            color="C0",
        )
        if target is not None:
            ax.axhline(target, color="0.5", linestyle="--", linewidth=1)
        first = self.results[0]
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(
            f"rows per level of {self.along}" if self.within else f"levels of {self.along}"
        )
        ax.set_ylabel("power")
        ax.set_title(
            f"power for {first.test} (alpha = {first.alpha:g})\n{first.method}; "
            f"{int(t['nsim'].iloc[0])} simulations per point, "
            f"{100 * first.level:g}% Clopper-Pearson intervals",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
        return fig


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- designs ------------------------------------------------------------------------------
def _constant_factors(frame: pd.DataFrame, group: str, columns: Sequence[str]) -> list[str]:
    """The factor (non-numeric) columns that take one value within every level of ``group``
    (a between-group treatment; numeric covariates such as a litter size are left out)."""
    out = []
    for c in columns:
        if c == group or c in out or c not in frame.columns:
            continue
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]):
            continue
        counts = frame.groupby(group, sort=False)[c].nunique(dropna=False)
        if (counts <= 1).all():
            out.append(c)
    return out


def _group_order(frame: pd.DataFrame, group: str, fixed_columns: Sequence[str]) -> list[Any]:
    """The levels of ``group`` alternating between the combinations of the fixed-effect
    factors constant within a level (each combination in the data's order)."""
    levels = list(pd.unique(frame[group]))
    const = _constant_factors(frame, group, fixed_columns)
    if not const:
        return levels
    first = frame.drop_duplicates(group).set_index(group)[const]
    keys = [tuple(first.loc[lv]) for lv in levels]
    buckets: dict[tuple, list[Any]] = {}
    for lv, k in zip(levels, keys, strict=True):
        buckets.setdefault(k, []).append(lv)
    order: list[Any] = []
    queues = list(buckets.values())
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    return order


def extend_data(
    data: pd.DataFrame,
    formula: str,
    *,
    groups: Mapping[str, int] | None = None,
    within: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """A design with ``groups={g: n}`` levels of ``g`` and/or ``within={g: n}`` rows per
    level (simr's ``extend``; see the module docstring for the order levels are taken in).

    Rows are copied with all their columns (the response too: its values are replaced by
    the simulation). New levels get new labels: numbers after the largest for a numeric
    column, ``"<label>.<k>"`` for the k-th copy otherwise.
    """
    parsed = parse_formula(formula)
    fixed_cols = [c for v in parsed.fixed.variables for c in v.columns]
    frame = data.reset_index(drop=True)
    for g, n in (groups or {}).items():
        n = int(n)
        if g not in frame.columns:
            raise ModelSpecificationError(f"groups: {g!r} is not a column of the data")
        if n < 2:
            raise ModelSpecificationError(f"groups: {g} needs at least 2 levels, not {n}")
        order = _group_order(frame, g, fixed_cols)
        numeric = pd.api.types.is_numeric_dtype(frame[g])
        base = float(frame[g].max()) + 1.0 if numeric else None
        rows_of = {lv: idx for lv, idx in frame.groupby(g, sort=False).indices.items()}
        parts = []
        for i in range(n):
            lv = order[i % len(order)]
            part = frame.iloc[rows_of[lv]].copy()
            if i >= len(order):
                # numbers after the largest, or "<label>.<k>" for the k-th copy
                part[g] = base + (i - len(order)) if numeric else f"{lv}.{i // len(order)}"
            parts.append(part)
        frame = pd.concat(parts, ignore_index=True)
        if numeric and pd.api.types.is_integer_dtype(data[g]):
            frame[g] = frame[g].astype(data[g].dtype)
    for g, n in (within or {}).items():
        n = int(n)
        if g not in frame.columns:
            raise ModelSpecificationError(f"within: {g!r} is not a column of the data")
        if n < 1:
            raise ModelSpecificationError(f"within: {g} needs at least 1 row per level, not {n}")
        idx = []
        for rows in frame.groupby(g, sort=False).indices.values():
            idx.extend(rows[np.arange(n) % rows.shape[0]])
        frame = frame.iloc[np.asarray(idx)].reset_index(drop=True)
    return frame


# -- the simulation -----------------------------------------------------------------------
def _theta_for(
    structure, theta: np.ndarray, sigma: float, varcorr: Mapping[str, Any]
) -> np.ndarray:
    """theta with the covariance of the named grouping factors set (SD or matrix)."""
    theta = theta.copy()
    by_group = {t.group: k for k, t in enumerate(structure.terms)}
    for group, value in varcorr.items():
        if group not in by_group:
            raise ModelSpecificationError(
                f"varcorr: no grouping factor {group!r}; the model has {sorted(by_group)}"
            )
        k = by_group[group]
        term = structure.terms[k]
        cov = np.atleast_2d(np.asarray(value, dtype=float))
        if cov.shape == (1, 1):
            cov = cov**2  # a number is an SD
        if cov.shape != (term.ncols, term.ncols):
            raise ModelSpecificationError(
                f"varcorr[{group!r}]: give an SD for a scalar term or a {term.ncols} x "
                f"{term.ncols} covariance matrix over {list(term.column_names)}"
            )
        if not np.allclose(cov, cov.T):
            raise ModelSpecificationError(f"varcorr[{group!r}] is not symmetric")
        evals = np.linalg.eigvalsh(cov)
        if evals.min() < -1e-12 * max(1.0, evals.max()):
            raise ModelSpecificationError(f"varcorr[{group!r}] is not positive semi-definite")
        T = np.linalg.cholesky(cov + 1e-300 * np.eye(term.ncols)) / sigma
        lo, hi = structure.offsets[k], structure.offsets[k + 1]
        theta[lo:hi] = T[structure.rows[k], structure.cols[k]]
    return theta


class _Scenario:
    """Draws responses at the chosen parameters and tests each refit (picklable)."""

    def __init__(
        self,
        model: LinearMixedModel,
        beta: np.ndarray,
        theta: np.ndarray,
        sigma: float,
        scale: np.ndarray | None,
        start: np.ndarray,
        test: Any,
        method: str,
        null_model: LinearMixedModel | None,
    ):
        self.model = model
        design = model.design
        self.mean = design.X @ beta
        if model.offset is not None:
            self.mean = self.mean + model.offset
        self.sigma = float(sigma)
        self.scale = scale
        self.terms = [
            (T, t.refs, t.z, t.nlevels)
            for T, t in zip(model.structure.templates(theta), model.structure.terms, strict=True)
        ]
        self.start = start
        self.test = test
        self.method = method
        self.null_model = null_model

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        y = self.mean.copy()
        for T, refs, z, nlevels in self.terms:
            b = self.sigma * (rng.standard_normal((nlevels, T.shape[0])) @ T.T)
            y += np.einsum("ij,ij->i", z, b[refs])
        e = self.sigma * rng.standard_normal(y.shape[0])
        y += e if self.scale is None else e * self.scale
        return y

    def refit(self, y: np.ndarray) -> float:
        import warnings

        from mixedmodels.errors import ConvergenceWarning, SingularFitWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingularFitWarning)
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._p_value(y)

    def _p_value(self, y: np.ndarray) -> float:
        from scipy.special import chdtrc

        kind, what = self.test
        if kind == "lrt":
            full = self.model.refit(y, start=self.start, reml=False)
            small = self.null_model.refit(y, reml=False)
            stat = max(0.0, float(small.objective - full.objective))
            return float(chdtrc(what, stat))
        fit = self.model.refit(y, start=self.start)
        if kind == "callable":
            return float(what(fit))
        if kind == "term":
            table = fit.anova(type=3, ddf=self.method)
            return float(table.loc[what, "p"])
        L, rhs = what
        return float(fit.test(L, rhs, ddf=self.method).p)


def _identity(p: float) -> float:
    return p


def _resolve_test(
    test: Any, fit: Any, method: str | None, null: str | None
) -> tuple[Any, str, str]:
    """(the scenario's test, its label, the method named in results)."""
    names = list(fit.design.x_names)
    if method is not None and method.lower() not in _METHODS:
        raise ModelSpecificationError(
            f"unknown method {method!r}; use one of: kenward-roger, satterthwaite, z, lrt"
        )
    if null is not None:
        return ("lrt", None), f"LRT against {null}", "likelihood ratio (ML refits, chi-square)"
    default = "kenward-roger" if fit.reml else "satterthwaite"
    m = _METHODS[(method or default).lower()]
    label_method = {
        "kenward-roger": "Wald t, Kenward-Roger df",
        "satterthwaite": "Wald t, Satterthwaite df",
        "normal": "Wald z",
        "lrt": "likelihood ratio (ML refits, chi-square)",
    }[m]
    if test is None:
        rest = [n for n in names if n != "(Intercept)"]
        if not rest:
            raise ModelSpecificationError("the model has no fixed effect to test; pass test=")
        test = rest[0]
    if callable(test):
        return ("callable", test), getattr(test, "__name__", "test"), "user test"
    if not isinstance(test, str):
        raise ModelSpecificationError(
            "test must be a coefficient name, a term, a hypothesis string or a callable"
        )
    if test in names:
        if m == "lrt":
            return ("lrt-column", test), test, label_method
        L = np.zeros((1, len(names)))
        L[0, names.index(test)] = 1.0
        return ("wald", (L, np.zeros(1))), test, label_method
    if m == "lrt":
        raise ModelSpecificationError(
            f"method='lrt' tests one coefficient ({', '.join(names)}); for other "
            "hypotheses give the smaller model as null= (or as test=)"
        )
    if "=" in test:
        return ("wald", (test, None)), test, label_method
    terms = list(fit.anova(type=3).index)
    if test in terms:
        return ("term", test), test, label_method.replace("Wald t", "F")
    raise ModelSpecificationError(
        f"test {test!r} is neither a coefficient ({', '.join(names)}) nor a term "
        f"({', '.join(terms)}) nor a hypothesis such as '{names[-1]} = 0'"
    )


def _pilot_data(fit: Any, data: Any) -> pd.DataFrame:
    from mixedmodels.io import read_data

    if data is not None:
        return read_data(data)
    name = fit.model.data_name
    if name is None:
        raise ModelSpecificationError(
            "extending the design needs the pilot data: pass data=<the DataFrame you fitted>"
        )
    return read_data(name)


def _scenario(
    fit: Any,
    *,
    test: Any,
    method: str | None,
    null: str | None,
    fixef: Mapping[str, float] | None,
    varcorr: Mapping[str, Any] | None,
    sigma: float | None,
    groups: Mapping[str, int] | None,
    within: Mapping[str, int] | None,
    data: Any,
) -> tuple[_Scenario, str, str, dict[str, Any]]:
    if not hasattr(fit, "model") or not isinstance(fit.model, LinearMixedModel):
        raise ModelSpecificationError(
            "power analysis needs a linear mixed model fitted by mm.lmer (GLMMs: not yet)"
        )
    model: LinearMixedModel = fit.model
    if not model.has_rows:
        raise ModelSpecificationError(
            "power analysis simulates rows; this model was fitted from streamed chunks"
        )
    # Simulated residuals would be independent: refuse rather than count failed refits.
    refuse_repeated(fit, "power analysis", "simulate and fit by hand with mm.lmer for now")
    names = list(fit.design.x_names)
    beta = fit.fixef.to_numpy().copy()
    for name, value in (fixef or {}).items():
        if name not in names:
            raise ModelSpecificationError(f"fixef: no coefficient {name!r}; the model has {names}")
        beta[names.index(name)] = float(value)
    old_sigma = float(fit.sigma)
    new_sigma = old_sigma if sigma is None else float(sigma)
    if not new_sigma > 0:
        raise ModelSpecificationError(f"sigma must be positive, not {sigma}")
    # Changing sigma keeps the random-effect variances (simr's sigma<-): theta scales.
    theta = fit.theta * (old_sigma / new_sigma)
    theta = _theta_for(fit.structure, theta, new_sigma, varcorr or {})
    formula = model.formula
    if groups or within:
        if model.residual_strata is not None or model.weights is not None:
            raise ModelSpecificationError(
                "extended designs are not available for fits with residual groups or weights"
            )
        if formula is None:
            raise ModelSpecificationError("the fit does not know its formula; refit with mm.lmer")
        pilot = _pilot_data(fit, data)
        pilot = pilot.loc[fit.design.row_index]
        frame = extend_data(pilot, formula, groups=groups, within=within)
        design = build_design(formula, frame)
        model = LinearMixedModel(design, reml=fit.reml, formula=formula)
        if model.structure.ntheta != fit.structure.ntheta or list(design.x_names) != names:
            raise ModelSpecificationError(
                "the extended design has other fixed-effect columns or random-effect terms "
                "than the pilot (a level of a factor was lost); choose a larger size"
            )
    scale = None
    if model.residual_strata is not None:
        ratios = np.exp(np.concatenate([[0.0], fit.opt.final_theta[fit.structure.ntheta :]]))
        scale = ratios[model.residual_strata.codes]
    if model.weights is not None:
        scale = (np.ones(model.nobs) if scale is None else scale) / np.sqrt(model.weights)
    if isinstance(test, str) and "~" in test:  # a smaller model's formula: the LRT
        if null is not None:
            raise ModelSpecificationError("give the smaller model once: test= or null=")
        test, null = None, test
    resolved, label, method_label = _resolve_test(test, fit, method, null)
    null_model = None
    if resolved[0] == "lrt-column":
        column = resolved[1]
        keep = [j for j, n in enumerate(names) if n != column]
        from dataclasses import replace

        d = model.design
        reduced = replace(d, X=d.X[:, keep], x_names=tuple(names[j] for j in keep))
        null_model = LinearMixedModel(
            reduced, reml=False, formula=formula, residual_strata=model.residual_strata
        )
        resolved = ("lrt", 1)
        label = f"{column} (LRT)"
    elif resolved[0] == "lrt":
        d0 = _null_design(null, model, fit, data, groups, within)
        null_model = LinearMixedModel(
            d0, reml=False, formula=null, residual_strata=model.residual_strata
        )
        df = _nparams(model) - _nparams(null_model)
        if df < 1:
            raise ModelSpecificationError(
                f"null={null!r} has no fewer parameters than the model; it must be nested in it"
            )
        resolved = ("lrt", df)
    start = np.concatenate([theta, fit.opt.final_theta[fit.structure.ntheta :]])
    scenario = _Scenario(
        model,
        beta,
        theta,
        new_sigma,
        scale,
        start,
        resolved,
        _METHODS.get(
            (method or ("kenward-roger" if fit.reml else "satterthwaite")).lower(), "satterthwaite"
        ),
        null_model,
    )
    settings = {
        "fixef": dict(zip(names, beta.tolist(), strict=True)),
        "theta": theta.tolist(),
        "sigma": new_sigma,
        "nobs": model.nobs,
        "ngroups": {t.group: t.nlevels for t in model.structure.terms},
    }
    return scenario, label, method_label, settings


def _nparams(model: LinearMixedModel) -> int:
    extra = 0 if model.residual_strata is None else model.residual_strata.nstrata - 1
    return model.design.X.shape[1] + model.structure.ntheta + 1 + extra


def _null_design(null, model, fit, data, groups, within):
    if model is fit.model:
        if model.residual_strata is not None or model.weights is not None:
            raise ModelSpecificationError(
                "null= with residual groups or weights is not available yet; use a coefficient"
            )
        frame = _pilot_data(fit, data).loc[fit.design.row_index]
    else:
        frame = extend_data(
            _pilot_data(fit, data).loc[fit.design.row_index],
            fit.model.formula,
            groups=groups,
            within=within,
        )
    d0 = build_design(null, frame)
    if d0.nobs != model.nobs:
        raise ModelSpecificationError(
            "the null model uses other rows than the model (missing values in its columns)"
        )
    return d0


def power(
    fit: Any,
    test: Any = None,
    *,
    nsim: int = 1000,
    alpha: float = 0.05,
    seed: int | None = None,
    method: str | None = None,
    null: str | None = None,
    fixef: Mapping[str, float] | None = None,
    varcorr: Mapping[str, Any] | None = None,
    sigma: float | None = None,
    groups: Mapping[str, int] | None = None,
    within: Mapping[str, int] | None = None,
    data: Any = None,
    level: float = 0.95,
    n_jobs: int = 1,
    progress: bool | None = None,
) -> PowerResult:
    """Power of a test by simulation from a fitted model (simr's ``powerSim``).

    Parameters
    ----------
    fit
        The pilot: a linear mixed model fitted by :func:`mixedmodels.lmer`.
    test
        A coefficient (``"treatmentHigh"``), a term (``"treatment"``), a hypothesis
        (``"treatmentHigh = treatmentLow"``) or a callable ``test(result) -> p``; default
        the first coefficient after the intercept. See the module docstring.
    nsim
        Number of simulated data sets.
    alpha
        Significance level.
    seed
        Seed of the random streams (replicate ``i``: ``SeedSequence(seed).spawn(nsim)[i]``,
        so results do not depend on ``n_jobs``).
    method
        ``"kenward-roger"`` (default for REML fits, as simr), ``"satterthwaite"`` (default
        for ML fits), ``"z"`` or ``"lrt"``.
    null
        A smaller model's formula: the test is then the likelihood-ratio test against it.
    fixef, varcorr, sigma
        Parameters to simulate from instead of the pilot's: ``fixef={"treatmentHigh":
        -0.5}``; ``varcorr={"litter": 0.5}`` (an SD, or a covariance matrix for a vector
        term); ``sigma=0.4`` (the random-effect variances are kept).
    groups, within
        Extended designs: ``groups={"litter": 40}`` levels, ``within={"litter": 12}`` rows
        per level (needs ``data=`` unless the pilot was fitted to an embedded dataset).
    data
        The pilot's data (for extended designs and ``null=``).
    level
        Level of the Clopper-Pearson interval.
    n_jobs
        Worker processes.
    progress
        Progress on stderr (default: when stderr is a terminal).

    Returns
    -------
    PowerResult

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> res = mm.power(fit, "treatmentHigh", fixef={"treatmentHigh": -0.5}, nsim=20, seed=1)
    >>> 0.0 <= res.power <= 1.0
    True
    """
    if nsim < 1:
        raise ModelSpecificationError(f"nsim must be at least 1, not {nsim}")
    if not 0.0 < alpha < 1.0:
        raise ModelSpecificationError(f"alpha must be between 0 and 1, not {alpha}")
    scenario, label, method_label, settings = _scenario(
        fit,
        test=test,
        method=method,
        null=null,
        fixef=fixef,
        varcorr=varcorr,
        sigma=sigma,
        groups=groups,
        within=within,
        data=data,
    )
    return _run(
        scenario, label, method_label, settings, nsim, alpha, seed, level, n_jobs, progress, "power"
    )


def _run(scenario, label, method_label, settings, nsim, alpha, seed, level, n_jobs, progress, what):
    results = _replicates(scenario, [scenario], _identity, nsim, seed, n_jobs, progress, what)
    p = np.array([np.nan if isinstance(r, Exception) else float(r) for r in results])
    ok = np.isfinite(p)
    n = int(ok.sum())
    k = int((p[ok] < alpha).sum())
    lower, upper = clopper_pearson(k, n, level)
    return PowerResult(
        power=k / n if n else math.nan,
        lower=lower,
        upper=upper,
        successes=k,
        nsim=n,
        failures=int(nsim - n),
        p_values=p,
        test=label,
        method=method_label,
        alpha=alpha,
        level=level,
        settings=settings,
    )


def power_curve(
    fit: Any,
    test: Any = None,
    *,
    along: str,
    sizes: Sequence[int],
    within: bool = False,
    nsim: int = 1000,
    alpha: float = 0.05,
    seed: int | None = None,
    method: str | None = None,
    null: str | None = None,
    fixef: Mapping[str, float] | None = None,
    varcorr: Mapping[str, Any] | None = None,
    sigma: float | None = None,
    data: Any = None,
    level: float = 0.95,
    n_jobs: int = 1,
    progress: bool | None = None,
) -> PowerCurve:
    """Power at several design sizes (simr's ``powerCurve``).

    ``along`` names a grouping column: ``sizes`` are its numbers of levels, or with
    ``within=True`` the numbers of rows per level. Other arguments as :func:`power`; point
    ``j`` uses the seed ``[seed, j]``.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", "ratpup")
    >>> curve = mm.power_curve(fit, "treatmentHigh", along="litter", sizes=[10, 20],
    ...                        nsim=10, seed=1)
    >>> list(curve.table["size"])
    [10, 20]
    """
    if not sizes:
        raise ModelSpecificationError("sizes: give at least one size")
    results = []
    rows = []
    for j, size in enumerate(sizes):
        key = {along: int(size)}
        scenario, label, method_label, settings = _scenario(
            fit,
            test=test,
            method=method,
            null=null,
            fixef=fixef,
            varcorr=varcorr,
            sigma=sigma,
            groups=None if within else key,
            within=key if within else None,
            data=data,
        )
        point_seed = None if seed is None else [int(seed), j]
        res = _run(
            scenario,
            label,
            method_label,
            settings,
            nsim,
            alpha,
            point_seed,
            level,
            n_jobs,
            progress,
            f"power {along}={size}",
        )
        results.append(res)
        rows.append(
            {
                "size": int(size),
                "nobs": settings["nobs"],
                "power": res.power,
                "lower": res.lower,
                "upper": res.upper,
                "successes": res.successes,
                "nsim": res.nsim,
                "failures": res.failures,
            }
        )
    return PowerCurve(along, within, pd.DataFrame(rows), tuple(results))
