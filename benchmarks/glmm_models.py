"""The GLMM benchmark models (issue 14): each library's spelling of one lme4 model.

Every contestant fits the same pandas DataFrame. ``factors`` lists the columns that are
turned into strings before anyone sees the data: numeric codes that are factors in lme4's
fit (cbpp ``period``, grouseticks ``YEAR``) and the grouping columns, as `mixedlm`'s own
dataset loaders give them. Each library gets the formula it documents for the model: ours
and lme4 the reference spelling, `mixedlm` ``successes / trials`` for a grouped binomial
response and ``I(age**2)``, `lme-python` a proportion column with the trials as weights.

The yardstick for every log-likelihood is the lme4 reference fit of the same model in
``tests/reference/glmm/`` (tightly converged, PIRLS converged; see README.md there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import synthetic
from scipy.special import gammaln, xlogy

REPO = Path(__file__).resolve().parent.parent
REFERENCE_DIR = REPO / "tests" / "reference" / "glmm"
# lme4's nAGQ = 0 fits of the models whose Laplace fit lme-python stops at (its README).
NAGQ0_REFERENCE_DIR = REPO / "tests" / "reference" / "glmm_nagq0"


@dataclass(frozen=True)
class GlmmModel:
    """One GLMM, as every contestant is asked to fit it.

    Attributes
    ----------
    formula
        Our spelling (``mm.glmer``).
    r_formula
        lme4's spelling (``glmer`` / ``glmer.nb``), as in the reference file.
    mixedlm_formula, lme_python_formula
        The peers' spellings where they differ from ``r_formula``.
    trials
        ``(successes, trials)`` columns of a grouped binomial response (cbpp), else None.
    numeric_dummies
        ``(name, column, level)``: 0/1 columns made for lme-python, which wants a numeric
        column in a random-effects term ("Column 'urban' must be numeric"); the model it
        then fits is the same.
    reference
        Name of the lme4 reference file (``tests/reference/glmm/<name>.json``).
    synthetic
        Key of a design simulated by ``synthetic.py`` (then ``dataset`` is "synthetic").
    """

    key: str
    dataset: str
    formula: str
    family: str
    r_formula: str
    nagq: int = 1
    factors: tuple[str, ...] = ()
    mixedlm_formula: str | None = None
    lme_python_formula: str | None = None
    trials: tuple[str, str] | None = None
    numeric_dummies: tuple[tuple[str, str, str], ...] = ()
    reference: str | None = None
    synthetic: str | None = None
    large: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    def spelling(self, library: str) -> str:
        """The formula ``library`` ("ours", "lme4", "mixedlm", "lme_python") is given."""
        if library == "ours":
            return self.formula
        if library == "mixedlm" and self.mixedlm_formula:
            return self.mixedlm_formula
        if library == "lme_python" and self.lme_python_formula:
            return self.lme_python_formula
        return self.r_formula


CBPP = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
CBPP_R = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
CONTRACEPTION = "use ~ age + I(age^2) + urban + livch + (1|district)"
VERBAGG = "r2 ~ Anger + Gender + btype + situ + (1|id) + (1|item)"

MODELS: tuple[GlmmModel, ...] = (
    GlmmModel(
        key="cbpp_laplace",
        dataset="cbpp",
        formula=CBPP,
        family="binomial",
        r_formula=CBPP_R,
        factors=("herd", "period"),
        mixedlm_formula="incidence / size ~ period + (1 | herd)",
        lme_python_formula="incidence_prop ~ period + (1 | herd)",
        trials=("incidence", "size"),
        reference="cbpp_laplace",
    ),
    GlmmModel(
        key="cbpp_agq25",
        dataset="cbpp",
        formula=CBPP,
        family="binomial",
        r_formula=CBPP_R,
        nagq=25,
        factors=("herd", "period"),
        mixedlm_formula="incidence / size ~ period + (1 | herd)",
        lme_python_formula="incidence_prop ~ period + (1 | herd)",
        trials=("incidence", "size"),
        reference="cbpp_agq25",
    ),
    GlmmModel(
        key="contraception_laplace",
        dataset="Contraception",
        formula=CONTRACEPTION,
        family="binomial",
        r_formula=CONTRACEPTION,
        factors=("district",),
        mixedlm_formula=CONTRACEPTION.replace("I(age^2)", "I(age**2)"),
        reference="contraception_laplace",
    ),
    GlmmModel(
        key="contraception_slope",
        dataset="Contraception",
        formula=CONTRACEPTION.replace("(1|district)", "(urban|district)"),
        family="binomial",
        r_formula=CONTRACEPTION.replace("(1|district)", "(urban|district)"),
        factors=("district",),
        mixedlm_formula=CONTRACEPTION.replace("I(age^2)", "I(age**2)").replace(
            "(1|district)", "(urban|district)"
        ),
        lme_python_formula="use ~ age + I(age^2) + urbanY + livch + (urbanY|district)",
        numeric_dummies=(("urbanY", "urban", "Y"),),
        reference="contraception_slope",
    ),
    GlmmModel(
        key="grouseticks_poisson",
        dataset="grouseticks",
        formula="TICKS ~ C(YEAR) + cHEIGHT + (1|BROOD) + (1|INDEX) + (1|LOCATION)",
        family="poisson",
        r_formula="TICKS ~ YEAR + cHEIGHT + (1|BROOD) + (1|INDEX) + (1|LOCATION)",
        factors=("YEAR", "BROOD", "INDEX", "LOCATION"),
        reference="grouseticks_poisson",
    ),
    GlmmModel(
        key="grouseticks_nb",
        dataset="grouseticks",
        formula="TICKS ~ C(YEAR) + cHEIGHT + (1|LOCATION)",
        family="negative-binomial",
        r_formula="TICKS ~ YEAR + cHEIGHT + (1|LOCATION)",
        factors=("YEAR", "LOCATION"),
        reference="grouseticks_nb",
    ),
    GlmmModel(
        key="verbagg",
        dataset="VerbAgg",
        formula=VERBAGG,
        family="binomial",
        r_formula=VERBAGG,
        factors=("id",),
        reference="verbagg",
    ),
    GlmmModel(
        key="verbagg_nagq0",
        dataset="VerbAgg",
        formula=VERBAGG,
        family="binomial",
        r_formula=VERBAGG,
        nagq=0,
        factors=("id",),
        reference="verbagg_nagq0",
    ),
    # Issue 14's large design: every contestant in a process of its own under the
    # supervisor's fit-time and memory caps (run.py --synthetic-timeout, --memory-cap-gb).
    GlmmModel(
        key="synthetic_binary",
        dataset="synthetic",
        formula=synthetic.BINARY.formula,
        family="binomial",
        r_formula=synthetic.BINARY.formula,
        synthetic="binary",
        large=True,
        notes=(synthetic.BINARY.describe,),
    ),
)

# nAGQ = 0 versions of the small models, each after its Laplace fit: lme-python's Laplace
# fits return these estimates (tests/reference/glmm_nagq0/README.md), so they are the
# like-for-like timing against it.
_NAGQ0_OF = ("cbpp_laplace", "contraception_laplace", "contraception_slope", "grouseticks_poisson")


def _nagq0(model: GlmmModel) -> GlmmModel:
    key = model.key.removesuffix("_laplace") + "_nagq0"
    return replace(model, key=key, nagq=0, reference=key)


MODELS = tuple(
    m for model in MODELS for m in ((model, _nagq0(model)) if model.key in _NAGQ0_OF else (model,))
)

BY_KEY = {m.key: m for m in MODELS}

# Issue 14's targets, read by the page: VerbAgg against mixedlm and lme4, and the models
# on which we should beat every peer.
TARGETS = {
    "verbagg": {"mixedlm": 0.5, "lme4": 0.1},
    "faster_than_every_peer": (
        "cbpp_laplace",
        "cbpp_agq25",
        "grouseticks_poisson",
        "grouseticks_nb",
        "contraception_laplace",
        "contraception_slope",
    ),
}


def load_frame(model: GlmmModel, scale: float = 1.0) -> pd.DataFrame:
    """The DataFrame every contestant fits, factor columns already turned into strings.

    ``scale`` applies to the synthetic design only (its warm-up fits a 1% version).
    """
    if model.synthetic is not None:
        return synthetic.simulate(model.synthetic, scale)
    import mixedmodels as mm

    frame = mm.load_dataset(model.dataset).copy()
    for column in model.factors:
        frame[column] = frame[column].astype(str)
    return frame


@cache
def reference(model: GlmmModel) -> dict[str, Any] | None:
    """The lme4 reference file of ``model`` (None for the synthetic design)."""
    if model.reference is None:
        return None
    path = REFERENCE_DIR / f"{model.reference}.json"
    if not path.exists():
        path = NAGQ0_REFERENCE_DIR / f"{model.reference}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def reference_loglik(model: GlmmModel) -> float | None:
    """lme4's log-likelihood at its tight optimum, on the full (marginal) scale.

    For nAGQ > 1, lme4's ``logLik`` leaves out the saturated log-likelihood; the
    reference file's ``logLik_marginal`` adds it back, which is the scale every
    contestant is compared on.
    """
    ref = reference(model)
    if ref is None:
        return None
    if model.nagq > 1:
        return float(ref["logLik_marginal"])
    return float(ref["logLik"])


def saturated_loglik(model: GlmmModel, frame: pd.DataFrame) -> float:
    """Log-likelihood of the saturated model (each row's mean at its own response).

    lme4's AGQ log-likelihood and lme-python's log-likelihoods are computed from deviance
    residuals and leave this constant out; adding it puts them on the full scale.
    Binomial 0/1 responses give 0.
    """
    if model.family == "binomial":
        if model.trials is None:
            return 0.0
        k = frame[model.trials[0]].to_numpy(dtype=float)
        n = frame[model.trials[1]].to_numpy(dtype=float)
        p = k / n
        log_choose = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
        return float(np.sum(log_choose + xlogy(k, p) + xlogy(n - k, 1 - p)))
    if model.family == "poisson":
        y = frame[model.r_formula.split("~")[0].strip()].to_numpy(dtype=float)
        return float(np.sum(xlogy(y, y) - y - gammaln(y + 1)))
    raise ValueError(f"no saturated log-likelihood for family {model.family!r}")
