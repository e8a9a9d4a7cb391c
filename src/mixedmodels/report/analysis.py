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

DEFAULT_DATA = "ratpup"


@dataclass(frozen=True)
class ModelSpec:
    """One model of an analysis: its formula, a label, and the residual variance structure.

    ``residual_groups`` and ``residual_pooling`` are passed to :func:`mixedmodels.lmer`
    (nlme's ``varIdent``); ``title`` names the model where it comes from (a book's model
    number); ``explanation`` says in one sentence what the model is.
    """

    formula: str
    label: str = ""
    title: str = ""
    explanation: str = ""
    residual_groups: str | None = None
    residual_pooling: dict[str, list[str]] | None = None

    def lmer_kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.residual_groups is not None:
            out["residual_groups"] = self.residual_groups
        if self.residual_pooling is not None:
            out["residual_pooling"] = self.residual_pooling
        return out


@dataclass(frozen=True)
class ComparisonSpec:
    """A likelihood-ratio test between two models of the analysis (by label)."""

    first: str
    second: str
    hypothesis: str = ""
    question: str = ""


# The rat-pup tutorial (statsmodels, Male the reference sex as in the book), then the path of
# West, Welch & Galecki (2014), Linear Mixed Models, 2nd ed., ch. 3.
_M = "C(sex, ref='Male')"
DEFAULT_MODELS = (
    ModelSpec(
        f"weight ~ treatment * {_M} + litsize + (1 | litter)",
        "M1",
        "Model 3.1",
        "The tutorial's first model and the book's Model 3.1: treatment, sex (Male the "
        "reference, as in the book), their interaction and litter size, with a random "
        "intercept per litter.",
    ),
    ModelSpec(
        f"weight ~ treatment + {_M} + litsize + (1 | litter)",
        "M2",
        "",
        "The tutorial's second model: M1 without the treatment × sex interaction. The "
        "tutorial checks its assumptions, and so does this report.",
    ),
    ModelSpec(
        f"weight ~ treatment + {_M} + litsize + (1 | litter:sex)",
        "M3",
        "",
        "The tutorial's statsmodels model with vc_formula={'sex': '0 + C(sex)'} and no "
        "re_formula: statsmodels then drops the litter intercept, so this is one random "
        "intercept per sex within each litter, (1 | litter:sex) in lme4 terms (the pups of "
        "one sex in one litter share an effect; the two sexes of a litter are independent).",
    ),
    ModelSpec(
        f"weight ~ treatment + {_M} + litsize + (1 + {_M} | litter)",
        "M4",
        "",
        "The tutorial's model with re_formula='1 + C(sex)': a random intercept and a random "
        "sex effect per litter, correlated.",
    ),
    ModelSpec(
        f"weight ~ treatment * {_M} + litsize + (1 | litter)",
        "M5",
        "Model 3.2A",
        "The book's Model 3.2A: Model 3.1 with a residual variance for each treatment group "
        "(nlme's varIdent(form = ~1 | treatment)).",
        residual_groups="treatment",
    ),
    ModelSpec(
        f"weight ~ treatment * {_M} + litsize + (1 | litter)",
        "M6",
        "Model 3.2B",
        "The book's Model 3.2B: one residual variance for the control group and one shared by "
        "the High and Low dose groups.",
        residual_groups="treatment",
        residual_pooling={"High/Low": ["High", "Low"]},
    ),
    ModelSpec(
        f"weight ~ treatment + {_M} + litsize + (1 | litter)",
        "M7",
        "Model 3.3",
        "The book's Model 3.3 (its final model): Model 3.2B without the treatment × sex "
        "interaction.",
        residual_groups="treatment",
        residual_pooling={"High/Low": ["High", "Low"]},
    ),
)
DEFAULT_COMPARISONS = (
    ComparisonSpec("lm:M1", "M1", "H3.1", "Is there variance between litters?"),
    ComparisonSpec("M1", "M2", "", "Is the treatment × sex interaction needed?"),
    ComparisonSpec("M2", "M3", "", "Litter intercept or litter-by-sex intercept?"),
    ComparisonSpec("M2", "M4", "", "Does the sex effect vary between litters?"),
    ComparisonSpec("M1", "M5", "H3.2", "Does the residual variance differ by treatment?"),
    ComparisonSpec("M6", "M5", "H3.3", "Can High and Low share a residual variance?"),
    ComparisonSpec(
        "M1",
        "M6",
        "H3.4",
        "Is the pooled residual variance model (3.2B) better than one residual variance (3.1)?",
    ),
    ComparisonSpec("M7", "M6", "H3.5", "Is the treatment × sex interaction needed (Model 3.2B)?"),
)
#: Kept for callers of the first layout: the default formulas in order.
DEFAULT_FORMULAS = tuple(m.formula for m in DEFAULT_MODELS)
DEFAULT_DESCRIBE_BY = ("treatment", "sex")
# The tutorial checks M2's assumptions (M1 vs M2 finds no evidence of an interaction).
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
    #: Where the model comes from (``Model 3.2A``) and what it is, in one sentence.
    title: str = ""
    explanation: str = ""
    #: :class:`~mixedmodels.diagnostics.r2.R2Result`, or None (reason in ``notes``).
    r2: Any = None
    #: Profile-likelihood intervals of the variance parameters (``estimate, lower, upper``)
    #: or None; ``vc_ci_method`` says which intervals were computed, or why none.
    vc_ci: pd.DataFrame | None = None
    vc_ci_method: str = ""
    #: ``(factor, MarginalMeans)`` for each factor of the fixed effects.
    emmeans: list[tuple[str, Any]] = field(default_factory=list)
    residual_groups: str | None = None

    @property
    def residual_structure(self) -> str:
        """``one`` or ``by treatment`` or ``by treatment (High/Low pooled)``."""
        rg = self.residual_groups
        if rg is None:
            return "one"
        strata = self.fit.varcorr.loc[self.fit.varcorr["group"] == "Residual", "term"]
        pooled = [str(t).split("=", 1)[1] for t in strata if "/" in str(t).split("=", 1)[-1]]
        return f"by {rg}" + (f" ({', '.join(pooled)} pooled)" if pooled else "")

    @property
    def name(self) -> str:
        """``M5 (Model 3.2A)`` or ``M2``."""
        return f"{self.label} ({self.title})" if self.title else self.label

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
    #: A name for the test (``H3.2`` in the book) and the question it answers.
    hypothesis: str = ""
    question: str = ""


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
    #: True for the default rat-pup run (the tutorial and West et al.'s path).
    ratpup_path: bool = False
    #: ``(time, group)`` when the data are longitudinal: a numeric predictor of the models
    #: that varies within the groups of the first grouping factor; None otherwise.
    trajectory: tuple[str, str] | None = None
    #: What made the report: versions, command, date, data checksum (``provenance()``).
    provenance: dict[str, str] = field(default_factory=dict)

    def model(self, label: str) -> ModelAnalysis | None:
        return next((m for m in self.models if m.label == label), None)


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


def _coef_table(fit: Any, notes: list[str], level: float = 0.95) -> pd.DataFrame:
    """Fixed effects with Satterthwaite df and Wald t intervals (``lower``, ``upper``)."""
    from scipy import stats

    try:
        from ..inference.wald import coef_table

        out = coef_table(fit, ddf="satterthwaite")
    except (MixedModelsError, ValueError, np.linalg.LinAlgError) as exc:
        notes.append(f"Satterthwaite df not available ({exc}); p-values from the normal")
        out = fit.coef_table()
    out = out.copy()
    df = out["df"].to_numpy(dtype=float) if "df" in out else np.full(len(out), np.inf)
    df = np.where(np.isfinite(df) & (df > 0), df, np.inf)
    q = stats.t.ppf(0.5 + level / 2, df)
    out["lower"] = out["estimate"] - q * out["se"]
    out["upper"] = out["estimate"] + q * out["se"]
    return out


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
    formulas: Sequence[str | ModelSpec] | None = None,
    *,
    describe_by: Sequence[str] | str | None = None,
    diagnose: int = -1,
    reml: bool = True,
    alpha: float = 0.05,
    progress: ProgressCallback | None = None,
    command: str | None = None,
    comparisons: Sequence[ComparisonSpec] | None = None,
) -> Analysis:
    """Compute everything the report shows; see :func:`mixedmodels.report.analyze`."""
    from ..api import lmer
    from ..io import read_data

    step = progress or (lambda _text: None)
    data_name = data if isinstance(data, str) else "data"
    step(f"reading {data_name}")
    frame = read_data(data)
    ratpup_path = False
    if formulas is None or len(formulas) == 0:
        if isinstance(data, str) and data.lower() == DEFAULT_DATA:
            formulas = list(DEFAULT_MODELS)
            comparisons = list(DEFAULT_COMPARISONS) if comparisons is None else comparisons
            ratpup_path = True
            if diagnose == -1:
                diagnose = DEFAULT_DIAGNOSE
            if describe_by is None:
                describe_by = list(DEFAULT_DESCRIBE_BY)
        else:
            raise ModelSpecificationError(
                "give at least one model formula (--formula 'y ~ x + (1 | g)'); only the "
                "embedded 'ratpup' data have a default sequence of models"
            )
    specs = [
        f if isinstance(f, ModelSpec) else ModelSpec(str(f), f"M{k}")
        for k, f in enumerate(formulas, start=1)
    ]
    specs = [
        s if s.label else ModelSpec(**{**s.__dict__, "label": f"M{k}"})
        for k, s in enumerate(specs, start=1)
    ]
    if isinstance(describe_by, str):
        describe_by = describe_by.split(",")
    by = _check_describe_by(frame, describe_by or [])
    if not -len(specs) <= diagnose < len(specs):
        raise ValueError(f"diagnose={diagnose} but there are {len(specs)} formulas")

    models: list[ModelAnalysis] = []
    for spec in specs:
        label, formula = spec.label, spec.formula
        step(f"fitting {label}: {formula}")
        kwargs = spec.lmer_kwargs()
        fit, messages = _fit_quietly(lambda f=formula, kw=kwargs: lmer(f, frame, reml=reml, **kw))
        notes: list[str] = []
        step(f"testing {label}: Satterthwaite t and F tests, intervals, R², marginal means")
        m = ModelAnalysis(label, formula, fit, _coef_table(fit, notes), warnings=messages)
        m.title, m.explanation = spec.title, spec.explanation
        m.residual_groups = spec.residual_groups
        m.anova = _anova(fit, notes)
        if m.random_intercept_only and spec.residual_groups is None:
            m.icc = _icc(fit, notes)
        if fit.reml:
            m.ml_fit, _ = _fit_quietly(lambda f=fit: f.model.fit(reml=False, start=f.theta))
        else:
            m.ml_fit = fit
        m.r2 = _r2(fit, notes)
        m.vc_ci, m.vc_ci_method = _variance_intervals(fit)
        m.notes = notes
        models.append(m)

    response = models[0].fit.design.response_name
    groups: list[str] = []
    for m in models:
        for g in m.fit.ranef:
            if g not in groups:
                groups.append(g)

    if comparisons is None:
        comparisons = [ComparisonSpec(a.label, b.label) for a, b in itertools.pairwise(models)]
    done = []
    for c in comparisons:
        step(f"comparing {c.first} and {c.second}")
        done.append(_compare_spec(c, models, frame, reml))

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
    for m in {id(x): x for x in (target, models[-1])}.values():
        step(f"marginal means of {m.label}")
        m.emmeans = _emmeans(m.fit, frame, m.notes)
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
        comparisons=done,
        diagnosed=target,
        tests=tests,
        variables=variables,
        summaries=summaries,
        hierarchy=hierarchy,
        alpha=alpha,
        influence=influence,
        ratpup_path=ratpup_path,
        trajectory=_trajectory(frame, target.fit),
        provenance=provenance(data, frame, command),
    )


def _r2(fit: Any, notes: list[str]) -> Any:
    try:
        return fit.r2()
    except (MixedModelsError, ValueError, np.linalg.LinAlgError) as exc:
        notes.append(f"R² not available: {exc}")
        return None


#: Profile intervals of the variance parameters only for models this small (each profile
#: point is a refit; past these sizes the report says so and gives none).
PROFILE_MAX_ROWS = 20_000
PROFILE_MAX_PARAMS = 6


def _variance_intervals(fit: Any) -> tuple[pd.DataFrame | None, str]:
    """Profile-likelihood intervals of the variance parameters, or None and why not."""
    nvar = len(fit.theta) + 1
    if fit.nobs > PROFILE_MAX_ROWS or nvar > PROFILE_MAX_PARAMS:
        return None, (
            f"no intervals for the variance parameters in the report ({fit.nobs} rows, {nvar} "
            "parameters: profiling would take long); run fit.confint(method='profile') or "
            "'bootstrap'"
        )
    try:
        ci, _ = _fit_quietly(lambda: fit.confint(method="profile", parm="theta_"))
    except (MixedModelsError, ValueError, np.linalg.LinAlgError, RuntimeError) as exc:
        return None, f"profile intervals of the variance parameters not available: {exc}"
    return ci, "profile likelihood (lme4's confint(method = 'profile'))"


def _emmeans(fit: Any, frame: pd.DataFrame, notes: list[str]) -> list[tuple[str, Any]]:
    """Marginal means and pairwise contrasts of each factor of the fixed effects."""
    out = []
    for var in fixed_factors(fit, frame):
        try:
            out.append((var, fit.emmeans(var, data=frame)))
        except (MixedModelsError, ValueError, KeyError, np.linalg.LinAlgError) as exc:
            notes.append(f"marginal means of {var} not available: {exc}")
    return out


def fixed_factors(fit: Any, frame: pd.DataFrame) -> list[str]:
    """The data columns that enter the fixed effects as factors (in the design's order)."""
    from ..inference.emmeans import _factor_variables

    try:
        return [v for v in _factor_variables(fit) if v in frame.columns]
    except (MixedModelsError, ValueError, AttributeError):
        return []


def _trajectory(frame: pd.DataFrame, fit: Any) -> tuple[str, str] | None:
    """A numeric fixed-effects predictor that varies within the groups of the first
    grouping factor, at 3 to 30 distinct values (a time axis), with that factor."""
    group = next(iter(fit.ngroups), None)
    if group is None or group not in frame.columns:
        return None
    cols = [str(c) for c in fit.fixef.index]
    cols += fixed_factors(fit, frame)  # a numeric time coded as a factor, C(Days)
    for var in frame.columns:
        s = frame[var]
        if var == group or not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        if var not in cols and not any(var in c.split(":") for c in cols):
            continue
        if not 3 <= s.nunique() <= 30:
            continue
        within = frame.groupby(group, observed=True)[var].nunique()
        if (within > 1).mean() >= 0.5:
            return var, group
    return None


def provenance(data: Any, frame: pd.DataFrame, command: str | None) -> dict[str, str]:
    """Versions, the command, the date and the data's SHA-256, as the report prints them."""
    import datetime
    import hashlib
    import os
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    versions = [f"mixedmodels {__version__}", f"Python {platform.python_version()}"]
    for pkg in ("numpy", "scipy", "pandas", "matplotlib"):
        try:
            versions.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:  # pragma: no cover - dependencies
            pass
    if isinstance(data, str | os.PathLike) and os.path.isfile(data):
        with open(data, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        what = f"SHA-256 of the file {os.fspath(data)}"
    else:
        csv = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
        digest = hashlib.sha256(csv).hexdigest()
        what = "SHA-256 of the data as read, written as CSV (pandas to_csv, no index, UTF-8)"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return {
        "software": ", ".join(versions),
        "command": command or "",
        "date": now,
        "data_sha256": digest,
        "data_sha256_of": what,
    }


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
    return _compare_fits(a.fit, b.fit, a.label, b.label)


def _compare_fits(fa: Any, fb: Any, la: str, lb: str) -> Comparison:
    from ..inference.lrt import compare

    try:
        result, _ = _fit_quietly(lambda: compare(fa, fb, names=[la, lb]))
        return Comparison(la, lb, result=result)
    except MixedModelsError as exc:
        return Comparison(la, lb, refused=str(exc))


def without_random_terms(formula: str) -> str:
    """``y ~ x + (1 | g)`` -> ``y ~ x``: drop the top-level ``( ... | ... )`` terms."""
    lhs, rhs = formula.split("~", 1)
    pieces, depth, cur = [], 0, ""
    for ch in rhs:
        if ch == "+" and depth == 0:
            pieces.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    pieces.append(cur)
    kept = [p.strip() for p in pieces if not (p.strip().startswith("(") and "|" in p)]
    return f"{lhs.strip()} ~ {' + '.join(kept) or '1'}"


def _compare_spec(
    c: ComparisonSpec, models: list[ModelAnalysis], frame: pd.DataFrame, reml: bool
) -> Comparison:
    """The test ``c`` asks for; ``lm:M1`` is M1's fixed effects without random effects."""
    from dataclasses import replace

    by_label = {m.label: m for m in models}
    fits = []
    labels = []
    for label in (c.first, c.second):
        if label.startswith("lm:"):
            base = by_label[label[3:]]
            from ..inference.linear_model import lm

            fixed = without_random_terms(base.formula)

            fits.append(lm(fixed, frame, reml=reml and base.fit.reml))
            labels.append(f"{base.label} without random effects")
        else:
            fits.append(by_label[label].fit)
            labels.append(label)
    out = _compare_fits(fits[0], fits[1], labels[0], labels[1])
    return replace(out, hypothesis=c.hypothesis, question=c.question)


def _residual_tests(frame: pd.DataFrame, fit: Any, by: list[str], groups: list[str]) -> list[Any]:
    from ..diagnostics.residual_tests import levene, residual_groups, shapiro_wilk, white_test

    tests = [shapiro_wilk(fit)]
    if len(fit.fixef) > 1:  # White's test needs a covariate besides the intercept
        try:
            tests.append(white_test(fit))
        except (ValueError, ZeroDivisionError):
            pass  # no intercept in X, or no variation to regress on: not defined
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
                "residual variance": m.residual_structure,
                "method": "REML" if f.reml else "ML",
                "npar": f.nparams,
                "logLik": f.loglik,
                "AIC": f.aic,
                "BIC": f.bic,
                "AIC (ML)": ml.aic if ml is not None else np.nan,
                "BIC (ML)": ml.bic if ml is not None else np.nan,
                "sigma": f.sigma,
                "R2 marginal": m.r2.marginal if m.r2 is not None else np.nan,
                "R2 conditional": m.r2.conditional if m.r2 is not None else np.nan,
                "singular": "yes" if f.singular else "no",
            }
        )
    df = pd.DataFrame(rows, index=pd.Index([m.label for m in models], name="model"))
    return Table(
        "Fit statistics",
        df,
        notes=(
            "AIC/BIC of REML fits compare only models with the same fixed effects; the ML "
            "columns compare any of them (smaller is better). R2: Nakagawa, Johnson & "
            "Schielzeth (2017).",
        ),
        digits=6,
    )


def comparison_table(
    comparisons: list[Comparison], title: str = "Likelihood-ratio tests of neighbouring models"
) -> Table | None:
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
                    "hypothesis": c.hypothesis,
                    "question": c.question,
                    "AIC": "",
                    "BIC": "",
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
        aic = c.result.table["AIC"]
        bic = c.result.table["BIC"]
        rows.append(
            {
                "hypothesis": c.hypothesis,
                "question": c.question,
                "AIC": " vs ".join(f"{v:.2f}" for v in aic.loc[[c.first, c.second]]),
                "BIC": " vs ".join(f"{v:.2f}" for v in bic.loc[[c.first, c.second]]),
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
    df = pd.DataFrame(rows, index=index)
    for col in ("hypothesis", "question"):
        if not df[col].astype(bool).any():
            df = df.drop(columns=col)
    notes.insert(
        0,
        "AIC and BIC of the two models on the likelihood the test compares (column "
        "criterion); p from the chi-bar-square mixture where a variance is tested on the "
        "boundary (column reference), else chi-square.",
    )
    return Table(
        title,
        df,
        notes=tuple(notes),
        pvalue_columns=("p", "p (naive chi2)"),
    )
