"""A fitted result cannot be changed through what it returns (issue 13, item 6).

For four fits (sleepstudy ``(Days | Subject)``, ratpup with a residual variance per
treatment, Penicillin's crossed factors, and a fit streamed from a list of DataFrames),
every public attribute and zero-argument method result is taken, everything in it that
can be changed in place is changed (array entries, DataFrame and Series cells, dict and
list entries, also inside the result's dataclasses: Estimates, OptSummary, the design and
its terms), and what the result reports afterwards (``to_dict()``, ``str(summary())``,
fixef, vcov, varcorr, ranef, ...) must be what it reported before, to the bit.

GLMM results (built by hand at lme4's optimum for cbpp and Contraception, see
``tests/results/glmm_hand_fits.py``: they need no engine) are held to the same rule with
their own attribute list.

Hypothesis draws which results are mutated, in which order, and the value written.
Before the results were made immutable, writing into ``fit.varcorr`` changed
``fit.to_dict()`` and writing into ``fit.estimates.beta`` changed ``fit.fixef``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixedmodels as mm
from mixedmodels.errors import SingularFitWarning

# Public attributes and zero-argument methods of a result: what a user can take from it.
ATTRIBUTES = (
    "fixef",
    "vcov",
    "se",
    "varcorr",
    "ranef",
    "ranef_condsd",
    "ranef_condvar",
    "theta",
    "sigma",
    "ngroups",
    "residual_sd",
    "residual_sd_ratio",
    "estimates",
    "opt",
    "design",
    "structure",
    "fitted",
    "resid",
    "fitted_marginal",
    "resid_marginal",
    "residual_sd_by_row",
)
METHODS = (
    "coef_table",
    "anova",
    "to_dict",
    "summary",
    "ranef_table",
    "covariance_matrices",
    "predict",
)


def _fits() -> dict[str, mm.LinearMixedModelResult]:
    sleep = mm.load_dataset("sleepstudy")
    ratpup = mm.load_dataset("ratpup")
    penicillin = mm.load_dataset("penicillin")
    chunks = [sleep.iloc[i : i + 60].copy() for i in range(0, len(sleep), 60)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        return {
            "sleepstudy": mm.lmer("Reaction ~ Days + (Days | Subject)", sleep),
            "ratpup_var_ident": mm.lmer(
                "weight ~ treatment + sex + litsize + (1 | litter)",
                ratpup,
                residual_groups="treatment",
            ),
            "penicillin": mm.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", penicillin),
            "streamed": mm.lmer("Reaction ~ Days + (Days | Subject)", chunks, progress=False),
        }


FITS = _fits()


def _take(fit: mm.LinearMixedModelResult, name: str):
    """The attribute or method result ``name``; None where this fit has none (streamed)."""
    methods = GLMM_METHODS if isinstance(fit, mm.GeneralizedLinearMixedModelResult) else METHODS
    try:
        value = getattr(fit, name)
        return value() if name in methods else value
    except mm.errors.MixedModelsError:
        return None  # e.g. fitted values of a fit from precomputed cross products


def report(fit: mm.LinearMixedModelResult) -> dict:
    """Everything the result reports, as plain values (computed afresh)."""
    out = {"to_dict": fit.to_dict(), "summary": str(fit.summary())}
    for name in ATTRIBUTES + METHODS:
        if name in ("to_dict", "summary", "estimates", "opt", "design", "structure"):
            continue
        out[name] = _plain(_take(fit, name))
    est, opt, design = fit.estimates, fit.opt, fit.design
    out["estimates"] = _plain([est.beta, est.sigma, est.vcov_beta, list(est.b), list(est.u)])
    out["opt"] = _plain([opt.initial_theta, opt.final_theta, opt.lower, opt.gradient])
    out["opt_flags"] = (opt.converged, opt.messages, opt.final_objective, opt.evaluations)
    out["design"] = _plain([design.X, design.y, [(t.refs, t.z) for t in design.re_terms]])
    out["terms"] = _plain([(t.refs, t.z, t.levels) for t in fit.structure.terms])
    return out


def _plain(value):
    """A copy of ``value`` made of lists, floats and strings (NaN as the string 'nan')."""
    if value is None:
        return None
    if isinstance(value, pd.DataFrame):
        return {
            "index": _plain(list(value.index)),
            "columns": _plain(list(value.columns)),
            "values": _plain(value.to_numpy().tolist()),
        }
    if isinstance(value, pd.Series):
        return {"index": _plain(list(value.index)), "values": _plain(value.to_numpy().tolist())}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else float(value)
    if isinstance(value, int | bool | str | np.integer | np.bool_):
        return value.item() if isinstance(value, np.generic) else value
    return str(value)


def mutate(value, new: float, depth: int = 0) -> None:
    """Write ``new`` into everything in ``value`` that accepts it in place.

    Refusals (read-only arrays, frozen dataclasses, immutable pandas objects) are what
    immutability means, so they are ignored; whatever is accepted must not reach the
    result.
    """
    if depth > 4 or value is None:
        return
    if isinstance(value, np.ndarray):
        if value.size and value.dtype.kind in "fiub":
            try:
                value.flat[0] = new
                value[...] = new
            except (ValueError, TypeError):
                pass
        return
    if isinstance(value, pd.DataFrame):
        for j in range(value.shape[1]):
            if not value.shape[0]:
                break
            column = value.dtypes.iloc[j]
            if pd.api.types.is_integer_dtype(column):
                value.iloc[0, j] = round(new)
            elif pd.api.types.is_numeric_dtype(column):
                value.iloc[0, j] = new
            else:
                value.iloc[0, j] = "mutated"
            mutate(value.iloc[:, j].to_numpy(), new, depth + 1)
        return
    if isinstance(value, pd.Series):
        if len(value) and pd.api.types.is_numeric_dtype(value.dtype):
            value[:] = round(new) if pd.api.types.is_integer_dtype(value.dtype) else new
            mutate(value.to_numpy(), new, depth + 1)
        return
    if isinstance(value, dict):
        for key in list(value):
            mutate(value[key], new, depth + 1)
            value[key] = new
        value["added"] = new
        return
    if isinstance(value, list):
        for item in value:
            mutate(item, new, depth + 1)
        value[:] = [new] * len(value)
        return
    if isinstance(value, tuple):
        for item in value:
            mutate(item, new, depth + 1)
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            mutate(getattr(value, f.name), new, depth + 1)
        return
    # Other objects of the package (the summary's Report, the covariance structure):
    # reach their data through their attributes.
    if type(value).__module__.startswith("mixedmodels") and hasattr(value, "__dict__"):
        for item in list(vars(value).values()):
            mutate(item, new, depth + 1)


def assert_same(before: dict, after: dict) -> None:
    for key in before:
        assert after[key] == before[key], f"{key} changed after mutating what the result returned"


BEFORE = {name: report(fit) for name, fit in FITS.items()}

TAKEN = st.lists(st.sampled_from(ATTRIBUTES + METHODS), min_size=1, max_size=6, unique=True)


@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    fit_name=st.sampled_from(sorted(FITS)),
    names=TAKEN,
    new=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
)
def test_mutating_what_a_result_returns_changes_nothing(fit_name, names, new):
    fit = FITS[fit_name]
    for name in names:
        mutate(_take(fit, name), new)
    assert_same(BEFORE[fit_name], report(fit))


@pytest.mark.parametrize("fit_name", sorted(FITS))
def test_mutating_everything_at_once_changes_nothing(fit_name):
    fit = FITS[fit_name]
    for name in ATTRIBUTES + METHODS:
        mutate(_take(fit, name), 12345.0)
    assert_same(BEFORE[fit_name], report(fit))


def test_arrays_a_result_holds_are_read_only():
    fit = FITS["sleepstudy"]
    for array in (
        fit.estimates.beta,
        fit.estimates.vcov_beta,
        *fit.estimates.b,
        *fit.estimates.u,
        fit.opt.final_theta,
        fit.opt.initial_theta,
        fit.opt.lower,
        fit.opt.gradient,
        fit.design.X,
        fit.design.y,
        *fit.ranef_condvar.values(),
    ):
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0.0


# -- GLMM results ------------------------------------------------------------------------------
GLMM_ATTRIBUTES = (
    "fixef",
    "vcov",
    "vcov_rx",
    "se",
    "varcorr",
    "ranef",
    "ranef_condsd",
    "ranef_condvar",
    "theta",
    "ngroups",
    "design",
    "structure",
    "fitted",
    "resid",
    "linear_predictor",
    "prior_weights",
    "optimizer",
    "messages",
)
GLMM_METHODS = (
    "coef_table",
    "confint",
    "exp_fixef",
    "to_dict",
    "summary",
    "ranef_table",
    "covariance_matrices",
    "predict",
    "residuals",
    "overdispersion",
)


def _glmm_fits() -> dict[str, mm.GeneralizedLinearMixedModelResult]:
    # The builder lives beside the GLMM result tests (tests/ is not a package): load it by
    # path, under the name those tests import it by, so both share one module.
    module = sys.modules.get("glmm_hand_fits")
    if module is None:
        path = Path(__file__).resolve().parents[1] / "results" / "glmm_hand_fits.py"
        spec = importlib.util.spec_from_file_location("glmm_hand_fits", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["glmm_hand_fits"] = module
        spec.loader.exec_module(module)
    return {
        name: mm.GeneralizedLinearMixedModelResult(module.hand_fit(name))
        for name in ("cbpp_laplace", "contraception_slope")
    }


def glmm_report(fit: mm.GeneralizedLinearMixedModelResult) -> dict:
    """Everything a GLMM result reports, as plain values (computed afresh)."""
    out = {"to_dict": fit.to_dict(), "summary": str(fit.summary())}
    for name in GLMM_ATTRIBUTES + GLMM_METHODS:
        if name in ("to_dict", "summary", "design", "structure"):
            continue
        out[name] = _plain(_take(fit, name))
    out["residuals"] = _plain([fit.residuals(t) for t in ("pearson", "response", "working")])
    design = fit.design
    out["design"] = _plain([design.X, design.y, [(t.refs, t.z) for t in design.re_terms]])
    out["terms"] = _plain([(t.refs, t.z, t.levels) for t in fit.structure.terms])
    return out


GLMM_FITS = _glmm_fits()
GLMM_BEFORE = {name: glmm_report(fit) for name, fit in GLMM_FITS.items()}
GLMM_TAKEN = st.lists(
    st.sampled_from(GLMM_ATTRIBUTES + GLMM_METHODS), min_size=1, max_size=6, unique=True
)


@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    fit_name=st.sampled_from(sorted(GLMM_FITS)),
    names=GLMM_TAKEN,
    new=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
)
def test_mutating_what_a_glmm_result_returns_changes_nothing(fit_name, names, new):
    fit = GLMM_FITS[fit_name]
    for name in names:
        mutate(_take(fit, name), new)
    assert_same(GLMM_BEFORE[fit_name], glmm_report(fit))


@pytest.mark.parametrize("fit_name", sorted(GLMM_FITS))
def test_mutating_everything_a_glmm_result_returns_changes_nothing(fit_name):
    fit = GLMM_FITS[fit_name]
    for name in GLMM_ATTRIBUTES + GLMM_METHODS:
        mutate(_take(fit, name), 12345.0)
    assert_same(GLMM_BEFORE[fit_name], glmm_report(fit))


def test_returned_pandas_objects_are_fresh_and_writable():
    """A user may edit a returned table (add a column, round it) without touching the fit."""
    fit = FITS["sleepstudy"]
    table = fit.varcorr
    assert table is not fit.varcorr
    table.loc[0, "variance"] = 99.0
    assert fit.varcorr.loc[0, "variance"] != 99.0
    fixef = fit.fixef
    fixef.iloc[0] = 9.0
    assert fit.fixef.iloc[0] != 9.0
    assert fit.ranef["Subject"] is not fit.ranef["Subject"]
