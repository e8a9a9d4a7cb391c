"""The whole analysis in one call: describe the data, fit a sequence of models, compare
neighbours, check the assumptions of the last one, and say what it all means.

The steps are those of the rat-pup analysis in West, Welch & Galecki (2014), *Linear Mixed
Models*, 2nd ed., ch. 3, each done with the package's own tools: ``describe`` for the data,
``lmer`` for the fits, ``inference`` (Satterthwaite t and F tests, likelihood-ratio tests
with chi-bar-square p-values on the boundary), ``diagnostics`` (ICC, residual tests) and
``plots``.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import describe as desc
from ..errors import DataError, MixedModelsError, ModelSpecificationError
from ..tables import Table

__all__ = [
    "DEFAULT_DESCRIBE_BY",
    "DEFAULT_FORMULAS",
    "Analysis",
    "ModelAnalysis",
    "run_analysis",
]

# West, Welch & Galecki (2014), ch. 3: Model 3.1 (with the interaction), the reduced mean
# structure, and the random sex effect per litter (their sec. 3.10 step on random slopes).
DEFAULT_DATA = "ratpup"
DEFAULT_FORMULAS = (
    "weight ~ treatment * sex + litsize + (1 | litter)",
    "weight ~ treatment + sex + litsize + (1 | litter)",
    "weight ~ treatment + sex + litsize + (1 + sex | litter)",
)
DEFAULT_DESCRIBE_BY = ("treatment", "sex")
# The default sequence's comparisons select M2 (no interaction, random intercept: the
# book's mean structure); M3's random sex effect is nearly singular. Diagnose M2.
DEFAULT_DIAGNOSE = 1

ProgressCallback = Callable[[str], None]


@dataclass
class ModelAnalysis:
    """One model of the sequence and what was computed from it.

    Attributes
    ----------
    label
        ``M1``, ``M2``, ...
    formula
        The formula as given.
    fit
        The REML (or ML) fit.
    coef
        Fixed effects ``estimate, se, df, t, p`` (Satterthwaite df).
    anova
        Type III F tests of the fixed-effects terms (Satterthwaite), or None.
    icc
        :class:`~mixedmodels.diagnostics.icc.ICCResult` for random-intercept models, or None.
    ml_fit
        The ML refit (for information criteria comparable across fixed effects).
    warnings
        Messages of the warnings the fit raised (singular fit, convergence).
    notes
        Anything that could not be computed, and why.
    """

    label: str
    formula: str
    fit: Any
    coef: pd.DataFrame
    anova: pd.DataFrame | None = None
    icc: Any = None
    ml_fit: Any = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def random_intercept_only(self) -> bool:
        vc = self.fit.varcorr
        terms = vc.loc[(vc["group"] != "Residual") & vc["term2"].isna(), "term"]
        return bool(len(terms)) and bool((terms == "(Intercept)").all())

    @property
    def correlations(self) -> pd.DataFrame:
        vc = self.fit.varcorr
        rows = vc[vc["term2"].notna()]
        return rows[["group", "term", "term2", "corr"]].reset_index(drop=True)

    @property
    def interaction_tests(self) -> pd.DataFrame | None:
        if self.anova is None:
            return None
        rows = self.anova[[":" in str(t) for t in self.anova.index]]
        return rows if len(rows) else None


@dataclass
class Comparison:
    """The likelihood-ratio test of two neighbouring models, or why there is none."""

    first: str
    second: str
    result: Any = None
    refused: str = ""


@dataclass
class Analysis:
    """Everything the report shows, as data."""

    data: pd.DataFrame
    data_name: str
    response: str
    describe_by: list[str]
    groups: list[str]
    models: list[ModelAnalysis]
    comparisons: list[Comparison]
    diagnosed: ModelAnalysis
    tests: list[Any]
    variables: pd.DataFrame
    summaries: list[tuple[str, pd.DataFrame]]
    hierarchy: list[dict[str, Any]]
    alpha: float = 0.05
    #: :class:`~mixedmodels.diagnostics.influence.Influence` of the diagnosed model's first
    #: grouping factor (None when it could not be computed; the reason is in its notes).
    influence: Any = None


def _fit_quietly(fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    from ..errors import MixedModelsWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MixedModelsWarning)
        out = fn()
    messages = []
    for w in caught:
        if issubclass(w.category, MixedModelsWarning):
            text = str(w.message)
            if text not in messages:
                messages.append(text)
        else:  # not ours: pass it on unchanged
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return out, messages


def _coef_table(fit: Any, notes: list[str]) -> pd.DataFrame:
    try:
        from ..inference.wald import coef_table

        return coef_table(fit, ddf="satterthwaite")
    except (MixedModelsError, ValueError, np.linalg.LinAlgError) as exc:
        notes.append(f"Satterthwaite df not available ({exc}); p-values from the normal")
        return fit.coef_table()


def _anova(fit: Any, notes: list[str]) -> pd.DataFrame | None:
    try:
        from ..inference.anova import anova

        return anova(fit, type=3, ddf="satterthwaite")
    except (MixedModelsError, ValueError, np.linalg.LinAlgError) as exc:
        notes.append(f"F tests of the terms not available: {exc}")
        return None


def _icc(fit: Any, notes: list[str]) -> Any:
    try:
        from ..diagnostics.icc import icc
    except ImportError:  # pragma: no cover - shipped with the package
        return None
    try:
        return icc(fit)
    except (MixedModelsError, ValueError) as exc:
        notes.append(f"ICC not available: {exc}")
        return None


def _check_describe_by(data: pd.DataFrame, describe_by: Sequence[str]) -> list[str]:
    cols = [c.strip() for c in describe_by if c and c.strip()]
    desc.check_columns(data, cols, "--describe-by")
    return cols


def run_analysis(
    data: Any = DEFAULT_DATA,
    formulas: Sequence[str] | None = None,
    *,
    describe_by: Sequence[str] | str | None = None,
    diagnose: int = -1,
    reml: bool = True,
    alpha: float = 0.05,
    progress: ProgressCallback | None = None,
) -> Analysis:
    """Compute everything the report shows; see :func:`mixedmodels.report.analyze`."""
    from ..api import lmer
    from ..io import read_data

    step = progress or (lambda _text: None)
    data_name = data if isinstance(data, str) else "data"
    step(f"reading {data_name}")
    frame = read_data(data)
    if formulas is None or len(formulas) == 0:
        if isinstance(data, str) and data.lower() == DEFAULT_DATA:
            formulas = list(DEFAULT_FORMULAS)
            if diagnose == -1:
                diagnose = DEFAULT_DIAGNOSE
            if describe_by is None:
                describe_by = list(DEFAULT_DESCRIBE_BY)
        else:
            raise ModelSpecificationError(
                "give at least one model formula (--formula 'y ~ x + (1 | g)'); only the "
                "embedded 'ratpup' data have a default sequence of models"
            )
    formulas = [str(f) for f in formulas]
    if isinstance(describe_by, str):
        describe_by = describe_by.split(",")
    by = _check_describe_by(frame, describe_by or [])
    if not -len(formulas) <= diagnose < len(formulas):
        raise ValueError(f"diagnose={diagnose} but there are {len(formulas)} formulas")

    models: list[ModelAnalysis] = []
    for k, formula in enumerate(formulas, start=1):
        label = f"M{k}"
        step(f"fitting {label}: {formula}")
        fit, messages = _fit_quietly(lambda f=formula: lmer(f, frame, reml=reml))
        notes: list[str] = []
        step(f"testing {label}: Satterthwaite t and F tests")
        m = ModelAnalysis(label, formula, fit, _coef_table(fit, notes), warnings=messages)
        m.anova = _anova(fit, notes)
        if m.random_intercept_only:
            m.icc = _icc(fit, notes)
        if fit.reml:
            m.ml_fit, _ = _fit_quietly(lambda f=fit: f.model.fit(reml=False, start=f.theta))
        else:
            m.ml_fit = fit
        m.notes = notes
        models.append(m)

    response = models[0].fit.design.response_name
    groups: list[str] = []
    for m in models:
        for g in m.fit.ranef:
            if g not in groups:
                groups.append(g)

    comparisons = []
    for a, b in itertools.pairwise(models):
        step(f"comparing {a.label} and {b.label}")
        comparisons.append(_compare(a, b))

    step("describing the data")
    variables = desc.variables(frame)
    summaries: list[tuple[str, pd.DataFrame]] = []
    if response in frame.columns:
        summaries.append(("all rows", desc.summary_by(frame, response)))
        for col in by:
            summaries.append((col, desc.summary_by(frame, response, col)))
        if len(by) > 1:
            summaries.append((" × ".join(by), desc.summary_by(frame, response, by)))
    hierarchy = [desc.hierarchy(frame, g) for g in groups if g in frame.columns]

    target = models[diagnose]
    step(f"checking the assumptions of {target.label}")
    tests = _residual_tests(frame, target.fit, by, groups)
    step(f"leaving out each group of {target.label} (influence)")
    influence = _influence(target)
    return Analysis(
        data=frame,
        data_name=data_name,
        response=response,
        describe_by=by,
        groups=groups,
        models=models,
        comparisons=comparisons,
        diagnosed=target,
        tests=tests,
        variables=variables,
        summaries=summaries,
        hierarchy=hierarchy,
        alpha=alpha,
        influence=influence,
    )


#: The report leaves out each group only up to this many groups (one refit each); past it
#: the user runs ``fit.influence()`` when wanted.
INFLUENCE_MAX_GROUPS = 500


def _influence(m: ModelAnalysis) -> Any:
    """Leave-one-group-out influence of the diagnosed model, or None (reason in its notes)."""
    levels = next(iter(m.fit.ngroups.values()))
    if levels > INFLUENCE_MAX_GROUPS:
        m.notes.append(
            f"influence not computed in the report: {levels} groups would take {levels} "
            "refits; run fit.influence() for it"
        )
        return None
    try:
        infl, _ = _fit_quietly(lambda: m.fit.influence())
    except (MixedModelsError, np.linalg.LinAlgError, ValueError) as exc:
        m.notes.append(f"influence not computed: {exc}")
        return None
    return infl


def _compare(a: ModelAnalysis, b: ModelAnalysis) -> Comparison:
    from ..inference.lrt import compare

    try:
        result, _ = _fit_quietly(lambda: compare(a.fit, b.fit, names=[a.label, b.label]))
        return Comparison(a.label, b.label, result=result)
    except MixedModelsError as exc:
        return Comparison(a.label, b.label, refused=str(exc))


def _residual_tests(frame: pd.DataFrame, fit: Any, by: list[str], groups: list[str]) -> list[Any]:
    from ..diagnostics.residual_tests import levene, residual_groups, shapiro_wilk, white_test

    tests = [shapiro_wilk(fit)]
    try:
        tests.append(white_test(fit))
    except ValueError:
        pass  # no intercept in X: White's test is not defined
    across = [[c] for c in by]
    if len(by) > 1:
        across.append(list(by))
    across += [[g] for g in groups if g in frame.columns]
    for cols in across:
        labels = residual_groups(frame, fit, cols)
        if labels.nunique() < 2:
            continue
        try:
            t = levene(fit, labels.to_numpy())
        except (DataError, ValueError):
            continue
        tests.append(_with_name(t, f"{t.name} across {' × '.join(cols)}"))
    return tests


def _with_name(test: Any, name: str) -> Any:
    from dataclasses import replace

    return replace(test, name=name)


# --------------------------------------------------------------------------- tables
def fit_statistics(models: list[ModelAnalysis]) -> Table:
    """One row per model: criterion, logLik, AIC and BIC (own method and ML), groups."""
    rows = []
    for m in models:
        f, ml = m.fit, m.ml_fit
        rows.append(
            {
                "formula": m.formula,
                "method": "REML" if f.reml else "ML",
                "npar": f.nparams,
                "logLik": f.loglik,
                "AIC": f.aic,
                "BIC": f.bic,
                "AIC (ML)": ml.aic if ml is not None else np.nan,
                "BIC (ML)": ml.bic if ml is not None else np.nan,
                "sigma": f.sigma,
                "singular": "yes" if f.singular else "no",
            }
        )
    df = pd.DataFrame(rows, index=pd.Index([m.label for m in models], name="model"))
    return Table(
        "Fit statistics",
        df,
        notes=(
            "AIC/BIC of REML fits compare only models with the same fixed effects; the ML "
            "columns compare any of them (smaller is better).",
        ),
        digits=6,
    )


def comparison_table(comparisons: list[Comparison]) -> Table | None:
    """One row per neighbouring pair: the LRT, or the reason there is none."""
    if not comparisons:
        return None
    rows = []
    notes: list[str] = []
    for c in comparisons:
        name = f"{c.first} vs {c.second}"
        if c.result is None:
            rows.append(
                {
                    "criterion": "",
                    "Chisq": np.nan,
                    "Df": np.nan,
                    "p": np.nan,
                    "reference": "not tested",
                    "p (naive chi2)": np.nan,
                }
            )
            notes.append(f"{name}: not tested: {c.refused}")
            continue
        r = c.result.table.iloc[1]
        rows.append(
            {
                "criterion": c.result.criterion,
                "Chisq": r["Chisq"],
                "Df": r["Df"],
                "p": r["Pr(>Chisq)"],
                "reference": r["Reference"],
                "p (naive chi2)": r["Pr(naive)"],
            }
        )
        notes.extend(f"{name}: {n}" for n in c.result.notes)
    index = pd.Index([f"{c.first} vs {c.second}" for c in comparisons], name="test")
    return Table(
        "Likelihood-ratio tests of neighbouring models",
        pd.DataFrame(rows, index=index),
        notes=tuple(notes),
        pvalue_columns=("p", "p (naive chi2)"),
    )
