"""The Python libraries that are timed in-process, one adapter each.

An adapter turns (model, DataFrame) into a zero-argument ``fit`` callable, which is what
gets timed (formula parsing, design matrices and optimisation all included), and reads
the REML criterion (-2 x REML log-likelihood) from the fitted result afterwards.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from models import Model


@dataclass(frozen=True)
class Contestant:
    key: str
    label: str
    module: str
    distribution: str
    prepare: Callable[[Model, pd.DataFrame], Callable[[], Any]]
    criterion: Callable[[Any], float]
    converged: Callable[[Any], bool | None]
    skip: Callable[[Model], str | None] = lambda model: None
    #: Extra facts about a fit worth recording (synthetic designs), or None.
    details: Callable[[Any], dict] | None = None

    def missing(self) -> str | None:
        """Why the library cannot be used here, or None."""
        try:
            importlib.import_module(self.module)
        except Exception as exc:  # an ImportError, or a broken install
            return f"not installed ({type(exc).__name__}: {exc})"
        return None

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            module = importlib.import_module(self.module)
            return str(getattr(module, "__version__", "?"))

    def outcome(self, model: Model, frame: pd.DataFrame, result: Any) -> dict:
        """What the worker records about a fit besides its time."""
        return {"criterion": self.criterion(result), "converged": self.converged(result)}


# -- this project ----------------------------------------------------------------------
def _prepare_ours(model: Model, frame: pd.DataFrame) -> Callable[[], Any]:
    import mixedmodels as mm

    def fit() -> Any:
        result = mm.lmer(model.formula, frame, reml=True)
        # Our results compute the factor at the optimum, beta-hat, b and the criterion on
        # first use; the other libraries return them computed, so the timed call asks for
        # them too (conditional variances stay out, as in lme4's lmer()).
        _ = result.estimates, result.reml_criterion
        return result

    return fit


def _details_ours(fit: Any) -> dict:
    """Evaluations, theta and the estimates (compared with the truth by render.py)."""
    vc = fit.varcorr
    return {
        "evaluations": int(fit.opt.evaluations),
        "theta": [float(t) for t in fit.opt.final_theta],
        "fixef": {str(k): float(v) for k, v in fit.fixef.items()},
        "se": {str(k): float(v) for k, v in fit.se.items()},
        "varcorr": [
            {k: (None if v != v else v) for k, v in r.items()}  # NaN -> null for JSON
            for r in vc.to_dict(orient="records")
        ],
        "sigma": float(fit.sigma),
    }


OURS = Contestant(
    key="ours",
    label="mixedmodels",
    module="mixedmodels",
    distribution="mixedmodels",
    prepare=_prepare_ours,
    criterion=lambda fit: float(fit.reml_criterion),
    converged=lambda fit: bool(fit.converged),
    details=_details_ours,
)


# -- statsmodels MixedLM ---------------------------------------------------------------
GROUP_COLUMN = "_bench_group"


def _prepare_statsmodels(model: Model, frame: pd.DataFrame) -> Callable[[], Any]:
    import statsmodels.formula.api as smf

    spec = model.statsmodels
    if spec is None:  # guarded by _skip_statsmodels
        raise ValueError(f"statsmodels cannot express {model.key}")
    frame = frame.copy()
    if spec.groups:
        frame[GROUP_COLUMN] = frame[list(spec.groups)].astype(str).agg(":".join, axis=1)
    else:
        frame[GROUP_COLUMN] = 1

    def fit() -> Any:
        mlm = smf.mixedlm(
            spec.formula,
            frame,
            groups=GROUP_COLUMN,
            re_formula=spec.re_formula,
            vc_formula=spec.vc_formula,
            use_sparse=spec.use_sparse,
        )
        with warnings.catch_warnings():
            # Convergence warnings are recorded by the worker from the result instead.
            warnings.simplefilter("ignore")
            return mlm.fit(reml=True)

    return fit


def _skip_statsmodels(model: Model) -> str | None:
    if model.statsmodels is None:
        return "cannot express"
    return None


STATSMODELS = Contestant(
    key="statsmodels",
    label="statsmodels",
    module="statsmodels.formula.api",
    distribution="statsmodels",
    prepare=_prepare_statsmodels,
    criterion=lambda fit: -2.0 * float(fit.llf),
    converged=lambda fit: bool(fit.converged),
    skip=_skip_statsmodels,
)


# -- mixedlm (PyPI; Rust backend, lme4-like API) ----------------------------------------
def _prepare_mixedlm(model: Model, frame: pd.DataFrame) -> Callable[[], Any]:
    import mixedlm

    return lambda: mixedlm.lmer(model.formula, frame, REML=True)


def _mixedlm_criterion(fit: Any) -> float:
    value = fit.REMLcrit
    return float(value() if callable(value) else value)


MIXEDLM = Contestant(
    key="mixedlm",
    label="mixedlm (PyPI)",
    module="mixedlm",
    distribution="mixedlm",
    prepare=_prepare_mixedlm,
    criterion=_mixedlm_criterion,
    converged=lambda fit: None,
)


# -- lme-python (PyPI; Rust backend) ----------------------------------------------------
def _prepare_lme_python(model: Model, frame: pd.DataFrame) -> Callable[[], Any]:
    import lme_python

    return lambda: lme_python.lmer(model.formula, frame, reml=True)


LME_PYTHON = Contestant(
    key="lme_python",
    label="lme-python (PyPI)",
    module="lme_python",
    distribution="lme-python",
    prepare=_prepare_lme_python,
    criterion=lambda fit: float(fit.reml_criterion),
    converged=lambda fit: fit.converged,
)


def _prepare_lme_python_polars(model: Model, frame: pd.DataFrame) -> Callable[[], Any]:
    """lme-python as its documentation feeds it: a polars DataFrame (converted once, outside
    the timing)."""
    import lme_python
    import polars as pl

    native = pl.from_pandas(frame)
    return lambda: lme_python.lmer(model.formula, native, reml=True)


LME_PYTHON_POLARS = Contestant(
    key="lme_python_polars",
    label="lme-python (PyPI), polars input",
    module="lme_python",
    distribution="lme-python",
    prepare=_prepare_lme_python_polars,
    criterion=lambda fit: float(fit.reml_criterion),
    converged=lambda fit: fit.converged,
)


CONTESTANTS: tuple[Contestant, ...] = (OURS, STATSMODELS, MIXEDLM, LME_PYTHON)
#: Timed by native_inputs.py only (the page's main tables give every library pandas).
EXTRA_CONTESTANTS: tuple[Contestant, ...] = (LME_PYTHON_POLARS,)
BY_KEY = {c.key: c for c in (*CONTESTANTS, *EXTRA_CONTESTANTS)}
