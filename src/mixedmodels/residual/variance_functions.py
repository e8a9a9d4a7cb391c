"""Residual variance functions (nlme's varFunc): ``sd_i = sigma w_i(psi)``, row by row.

Each gives ``log w_i`` for all rows at its parameters (Pinheiro & Bates 2000, sec. 5.2):

=================  ================================  =============================
spec               ``w_i``                            parameter (natural = psi)
=================  ================================  =============================
``power(x)``       ``|x_i|^delta``                    ``delta`` (unbounded)
``power(fitted)``  ``|mu_i|^delta``, mu held fixed    ``delta``
``exp(x)``         ``exp(exp_t x_i)``                 ``exp_t`` (unbounded)
``ident(x)``       ``ratio_k`` for level k of x       ``log ratio_k`` (k > first)
=================  ================================  =============================

Internally the covariate is centred (``log|x|`` for power, ``x`` for exp, by its mean
``c``): the same family of distributions, with ``sigma_internal = sigma e^{delta c}``, but
well scaled for the optimiser (Orthodont's fitted values of ~25 to the power 0.8 would make
sigma 13 times smaller and the relative random-effect SDs 13 times larger).
:meth:`log_scale` gives ``-delta c``, what turns the internal sigma into nlme's.

``power(fitted)`` is nlme's fixed point: the fitted values are a covariate held fixed
while the likelihood is maximised and updated between fits (see
:meth:`mixedmodels.models.lmm.LinearMixedModel.fit`); :meth:`with_covariate` gives the
function at new fitted values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixedmodels.errors import DataError


class PowerVariance:
    """nlme's ``varPower(form = ~ x)``: ``w_i = |x_i|^delta``."""

    kind = "power"
    names = ("delta",)

    def __init__(self, covariate: np.ndarray, name: str):
        covariate = np.asarray(covariate, dtype=np.float64)
        if not np.all(np.abs(covariate) > 0):
            where = "the fitted values contain" if name == "fitted" else f"column {name!r} contains"
            raise DataError(
                f"power({name}): {where} 0, where |x|^delta is 0 or infinite; "
                "shift the covariate or use exp() instead"
            )
        self.name = name
        self.covariate = covariate
        log_abs = np.log(np.abs(covariate))
        self.centre = float(np.mean(log_abs))
        self._log_abs = log_abs - self.centre

    @property
    def on_fitted(self) -> bool:
        return self.name == "fitted"

    def with_covariate(self, covariate: np.ndarray) -> PowerVariance:
        return PowerVariance(covariate, self.name)

    def initial(self) -> np.ndarray:
        return np.zeros(1)

    def log_w(self, psi: np.ndarray) -> np.ndarray:
        return psi[0] * self._log_abs

    def log_scale(self, psi: np.ndarray) -> float:
        """``log(sigma_nlme / sigma_internal) = -delta c``."""
        return -float(psi[0]) * self.centre

    def report(self, psi: np.ndarray, sigma: float) -> dict[str, Any]:
        return {"delta": float(psi[0])}

    def describe(self, psi: np.ndarray) -> tuple[str, list[tuple[str, float]]]:
        return (f"Variance function: power of {self.name}", [("delta", float(psi[0]))])


class ExpVariance:
    """nlme's ``varExp(form = ~ x)``: ``w_i = exp(exp_t x_i)``."""

    kind = "exp"
    names = ("exp_t",)

    def __init__(self, covariate: np.ndarray, name: str):
        self.name = name
        self.covariate = np.asarray(covariate, dtype=np.float64)
        self.centre = float(np.mean(self.covariate))
        self._centred = self.covariate - self.centre

    @property
    def on_fitted(self) -> bool:
        return self.name == "fitted"

    def with_covariate(self, covariate: np.ndarray) -> ExpVariance:
        return ExpVariance(covariate, self.name)

    def initial(self) -> np.ndarray:
        return np.zeros(1)

    def log_w(self, psi: np.ndarray) -> np.ndarray:
        return psi[0] * self._centred

    def log_scale(self, psi: np.ndarray) -> float:
        """``log(sigma_nlme / sigma_internal) = -exp_t c``."""
        return -float(psi[0]) * self.centre

    def report(self, psi: np.ndarray, sigma: float) -> dict[str, Any]:
        return {"exp_t": float(psi[0])}

    def describe(self, psi: np.ndarray) -> tuple[str, list[tuple[str, float]]]:
        return (f"Variance function: exponential of {self.name}", [("expon", float(psi[0]))])


class IdentVariance:
    """nlme's ``varIdent(form = ~ 1 | x)``: an SD ratio per level, 1 for the first."""

    kind = "ident"
    on_fitted = False

    def __init__(self, codes: np.ndarray, labels: tuple[str, ...], name: str):
        self.codes = np.asarray(codes, dtype=np.int64)
        self.labels = labels
        self.name = name
        self.names = tuple(f"log sd ratio {name}={lab}" for lab in labels[1:])

    def initial(self) -> np.ndarray:
        return np.zeros(len(self.labels) - 1)

    def log_ratios(self, psi: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.asarray(psi, dtype=np.float64)])

    def log_w(self, psi: np.ndarray) -> np.ndarray:
        return self.log_ratios(psi)[self.codes]

    def log_scale(self, psi: np.ndarray) -> float:
        return 0.0

    def report(self, psi: np.ndarray, sigma: float) -> dict[str, Any]:
        ratios = np.exp(self.log_ratios(psi))
        return {
            "sd_by_level": {
                lab: float(sigma * r) for lab, r in zip(self.labels, ratios, strict=True)
            }
        }

    def describe(self, psi: np.ndarray) -> tuple[str, list[tuple[str, float]]]:
        ratios = np.exp(self.log_ratios(psi))
        return (
            f"Variance function: different SD per level of {self.name} (ratios)",
            [(lab, float(r)) for lab, r in zip(self.labels, ratios, strict=True)],
        )
