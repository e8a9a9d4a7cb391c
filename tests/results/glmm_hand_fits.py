"""GLMM fits built by hand from lme4's reference numbers, without the GLMM engine.

A :class:`~mixedmodels.results.glmm_fit.GlmmFit` takes theta, beta, the two fixed-effects
covariances, logLik, deviance and the parameter count from a reference file in
``tests/reference/glmm`` (lme4 1.1-31), and computes what lme4 computes at those
parameters: the conditional modes (Fisher scoring on the penalised log-likelihood, per
level of the single grouping factor), their conditional covariances ``T (T'Z'WZT + I)^-1 T'``
with the PIRLS weights ``W``, eta and mu. The result class is then tested on this fit; the
modes and fitted values are checked against the file's ``blups`` and ``fitted_first10`` so
that the fixture itself is known to be lme4's optimum.

The families here are small stand-ins with the interface ``mixedmodels.family`` provides
(``name``, ``link.name/link/inverse/mu_eta``, ``variance``, ``deviance_residuals``,
``theta``): the result class needs nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logit, xlogy

from mixedmodels.covariance.structure import CovarianceStructure, group_terms
from mixedmodels.design import build_design
from mixedmodels.results.glmm_fit import GlmmFit

TESTS = Path(__file__).resolve().parents[1]
DATA = TESTS / "data"
REFERENCE = TESTS / "reference" / "glmm"


# -- stand-in families ---------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    name: str

    def link(self, mu: np.ndarray) -> np.ndarray:
        return {"logit": logit, "log": np.log}[self.name](mu)

    def inverse(self, eta: np.ndarray) -> np.ndarray:
        return {"logit": expit, "log": np.exp}[self.name](np.asarray(eta, dtype=float))

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        mu = self.inverse(eta)
        return mu * (1.0 - mu) if self.name == "logit" else mu


@dataclass(frozen=True)
class Family:
    name: str
    link: Link
    theta: float | None = None

    def variance(self, mu: np.ndarray) -> np.ndarray:
        if self.name == "binomial":
            return mu * (1.0 - mu)
        if self.name == "poisson":
            return mu
        return mu + mu * mu / self.theta

    def deviance_residuals(self, y: np.ndarray, mu: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Squared deviance residuals times the weights, per row (R's ``dev.resids``)."""
        if self.name == "binomial":
            unit = xlogy(y, y / mu) + xlogy(1.0 - y, (1.0 - y) / (1.0 - mu))
        elif self.name == "poisson":
            unit = xlogy(y, y / mu) - (y - mu)
        else:
            t = self.theta
            unit = xlogy(y, y / mu) - (y + t) * np.log((y + t) / (mu + t))
        return 2.0 * weights * unit


def binomial(link: str = "logit") -> Family:
    return Family("binomial", Link(link))


# -- the models ------------------------------------------------------------------------------
@dataclass(frozen=True)
class HandModel:
    csv: str
    formula: str  # our formula, with a numeric response the design can build today
    shown_formula: str  # what a user of glmer would have written
    weights: str | None = None
    prepare: Any = None


MODELS = {
    # cbind(incidence, size - incidence): the proportion with the trials as prior weights
    # is the same likelihood (the family sees y = incidence / size, weights = size).
    "cbpp_laplace": HandModel(
        "cbpp.csv",
        "incidence_rate ~ C(period) + (1 | herd)",
        "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
        weights="size",
        prepare=lambda d: d.assign(incidence_rate=d["incidence"] / d["size"]),
    ),
    "contraception_laplace": HandModel(
        "Contraception.csv",
        "use ~ age + I(age^2) + urban + livch + (1 | district)",
        "use ~ age + I(age^2) + urban + livch + (1 | district)",
    ),
    "contraception_slope": HandModel(
        "Contraception.csv",
        "use ~ age + I(age^2) + urban + livch + (urban | district)",
        "use ~ age + I(age^2) + urban + livch + (urban | district)",
    ),
    # The null of lrt_cbpp_period.json (its null_fit: no vcov, no deviance in the file).
    "cbpp_period_null": HandModel(
        "cbpp.csv",
        "incidence_rate ~ 1 + (1 | herd)",
        "cbind(incidence, size - incidence) ~ 1 + (1 | herd)",
        weights="size",
        prepare=lambda d: d.assign(incidence_rate=d["incidence"] / d["size"]),
    ),
    "grouseticks_nb": HandModel(
        "grouseticks.csv",
        "TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)",
        "TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)",
    ),
}


def reference(name: str) -> dict[str, Any]:
    if name == "cbpp_period_null":
        return _lrt_null_reference("lrt_cbpp_period")
    return json.loads((REFERENCE / f"{name}.json").read_text())


def _lrt_null_reference(lrt: str) -> dict[str, Any]:
    """The fields hand_fit reads, for the null fit of an LRT file (no vcov, no deviance)."""
    test = json.loads((REFERENCE / f"{lrt}.json").read_text())
    null = test["null_fit"]
    p = len(null["fixef"])
    return {
        "family": test["family"],
        "link": test["link"],
        "nAGQ": test["nAGQ"],
        "theta": {"values": list(null["theta"].values())},
        "fixed_effects": [{"name": k, "estimate": v} for k, v in null["fixef"].items()],
        "vcov_fixed": {"matrix": np.eye(p).tolist()},  # not in the file; not used by LRTs
        "vcov_fixed_rx": {"matrix": np.eye(p).tolist()},
        "logLik": test["logLik_null"],
        "logLik_marginal": test["logLik_null"],
        "deviance": None,  # computed from the modes
        "logLik_df": test["df_null"],
        "isSingular": False,
    }


def data(name: str) -> pd.DataFrame:
    model = MODELS[name]
    frame = pd.read_csv(DATA / model.csv)
    return model.prepare(frame) if model.prepare else frame


def family_of(ref: dict[str, Any]) -> Family:
    if ref["family"] == "negative-binomial":
        return Family("negative-binomial", Link(ref["link"]), theta=float(ref["nb_theta"]))
    return Family(ref["family"], Link(ref["link"]))


def conditional_modes(
    design, structure, theta, beta, family, prior_weights
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Modes ``b``, their conditional covariances and eta, for one grouping factor.

    Maximises ``sum_i loglik_i(eta_i) - |u|^2 / 2`` with ``b = T u`` by Fisher scoring
    (its fixed point is the mode for any link); the information at the mode,
    ``T'Z'WZT + I``, is lme4's ``L L'`` block of that level.
    """
    (term,) = structure.terms
    (T,) = structure.templates(theta)
    nlev, p = term.nlevels, term.ncols
    refs, z = np.asarray(term.refs), np.asarray(term.z)
    fixed = design.X @ beta + (0.0 if design.offset is None else design.offset)
    u = np.zeros((nlev, p))
    y = np.asarray(design.y)
    for _ in range(200):
        b = u @ T.T
        eta = fixed + np.einsum("ij,ij->i", z, b[refs])
        mu = family.link.inverse(eta)
        d = family.link.mu_eta(eta)
        v = family.variance(mu)
        score = prior_weights * (y - mu) * d / v
        weight = prior_weights * d * d / v
        zt = z @ T  # rows of Z T
        grad = np.zeros((nlev, p))
        np.add.at(grad, refs, zt * score[:, None])
        info = np.zeros((nlev, p, p))
        np.add.at(info, refs, weight[:, None, None] * zt[:, :, None] * zt[:, None, :])
        info += np.eye(p)
        step = np.linalg.solve(info, (grad - u)[..., None])[..., 0]
        u = u + step
        if np.max(np.abs(step)) < 1e-14:
            break
    b = u @ T.T
    eta = fixed + np.einsum("ij,ij->i", z, b[refs])
    condvar = T @ np.linalg.inv(info) @ T.T
    return b, condvar, eta


def hand_fit(name: str, **changes: Any) -> GlmmFit:
    """The GlmmFit of reference model ``name`` (fields overridden by ``changes``)."""
    model, ref = MODELS[name], reference(name)
    frame = data(name)
    design = build_design(model.formula, frame, weights=model.weights)
    structure = CovarianceStructure.from_terms(group_terms(design.re_terms))
    family = family_of(ref)
    theta = np.asarray(ref["theta"]["values"], dtype=float)
    names = [fe["name"] for fe in ref["fixed_effects"]]
    assert list(design.x_names) == names, (design.x_names, names)
    beta = np.asarray([fe["estimate"] for fe in ref["fixed_effects"]])
    prior_weights = np.ones(design.nobs) if design.weights is None else np.array(design.weights)
    b, condvar, eta = conditional_modes(design, structure, theta, beta, family, prior_weights)
    fields: dict[str, Any] = {
        "design": design,
        "family": family,
        "terms": structure.terms,
        "structure": structure,
        "nagq": int(ref["nAGQ"]),
        "theta": theta,
        "beta": beta,
        "vcov_beta": np.asarray(ref["vcov_fixed"]["matrix"]),
        "vcov_beta_rx": np.asarray(ref["vcov_fixed_rx"]["matrix"]),
        "b": (b,),
        "b_condvar": (condvar,),
        "eta": eta,
        "mu": family.link.inverse(eta),
        "prior_weights": prior_weights,
        "loglik": float(ref["logLik"]),
        "loglik_marginal": float(ref["logLik_marginal"]),
        "deviance": (
            float(
                np.sum(family.deviance_residuals(design.y, family.link.inverse(eta), prior_weights))
            )
            if ref["deviance"] is None
            else float(ref["deviance"])
        ),
        "nparams": int(ref["logLik_df"]),
        "converged": True,
        "singular": bool(ref["isSingular"]),
        "messages": (),
        "optimizer": {"evaluations": 97, "stages": ["nagq0", "laplace"]},
        "formula": model.shown_formula,
        "data_name": Path(model.csv).stem,
        "offset": design.offset,
    }
    fields.update(changes)
    return GlmmFit(**fields)
