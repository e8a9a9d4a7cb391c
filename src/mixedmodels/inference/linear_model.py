"""Ordinary least squares with R's ``logLik.lm`` conventions, for "mixed vs no random effects".

A likelihood-ratio test of a random-effects variance needs the log-likelihood of the same
model without random effects. R computes it with ``logLik(lm(...))`` (ML) or
``logLik(lm(...), REML = TRUE)``; with ``X = QR`` and ``RSS = ||y - X beta||^2``,

    ML:   -2 l   = n (1 + log(2 pi RSS / n))
    REML: -2 l_R = (n - p)(1 + log(2 pi RSS / (n - p))) + log|R|^2

which are the mixed-model criteria of Bates et al. (2015, JSS 67(1), eqs. 34 and 41) at
``theta = 0`` (``L_Z = I``, ``R_X = R``). The number of parameters is ``p + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg as sla

from ..design.model_design import ModelDesign

_LOG_2PI = math.log(2.0 * math.pi)


def ols_criterion(rss: float, logdet_xtx: float, n: int, p: int, reml: bool) -> float:
    """Return -2 x the (REML) log-likelihood of a linear model with residual sum of squares ``rss``.

    Parameters
    ----------
    rss
        Residual sum of squares at the least-squares estimate.
    logdet_xtx
        ``log|X'X|`` (used by REML only).
    n, p
        Number of observations and of columns of X.
    reml
        REML criterion (``logLik(lm, REML=TRUE)``) or ML deviance.
    """
    if reml:
        nmp = n - p
        return nmp * (1.0 + _LOG_2PI + math.log(rss / nmp)) + logdet_xtx
    return n * (1.0 + _LOG_2PI + math.log(rss / n))


@dataclass(frozen=True, eq=False)
class LinearModelResult:
    """A fitted linear model ``y = X beta + e`` (no random effects).

    Attributes
    ----------
    design
        The design (``re_terms`` is ignored).
    reml
        Whether ``loglik`` is the REML log-likelihood (as ``logLik(lm, REML=TRUE)``).
    formula
        Formula text, for display.

    Examples
    --------
    >>> from mixedmodels.inference.linear_model import lm
    >>> fit = lm("weight ~ treatment + sex + litsize", "ratpup", reml=True)
    >>> round(fit.loglik, 4)
    -243.741
    """

    design: ModelDesign
    reml: bool = False
    formula: str | None = None

    @cached_property
    def _qr(self) -> tuple[np.ndarray, np.ndarray, float]:
        X = self.design.X
        y = self.design.y
        beta, *_ = np.linalg.lstsq(X, y, rcond=None)
        resid = y - X @ beta
        return beta, resid, float(resid @ resid)

    @property
    def nobs(self) -> int:
        return self.design.nobs

    @property
    def nparams(self) -> int:
        """Fixed effects plus sigma (R's ``attr(logLik(lm), "df")``)."""
        return self.design.X.shape[1] + 1

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self._qr[0], index=list(self.design.x_names), name="estimate")

    @property
    def rss(self) -> float:
        return self._qr[2]

    @cached_property
    def logdet_xtx(self) -> float:
        """``log|X'X| = log|R|^2``."""
        X = self.design.X
        if X.shape[1] == 0:
            return 0.0
        R = sla.qr(X, mode="r")[0][: X.shape[1]]
        return float(2.0 * np.sum(np.log(np.abs(np.diag(R)))))

    @property
    def sigma(self) -> float:
        """Residual SD: ``sqrt(RSS / (n - p))`` for REML fits, ``sqrt(RSS / n)`` for ML fits."""
        n, p = self.design.X.shape
        return math.sqrt(self.rss / (n - p if self.reml else n))

    @property
    def objective(self) -> float:
        """-2 x log-likelihood (REML or ML, matching ``reml``)."""
        n, p = self.design.X.shape
        return ols_criterion(self.rss, self.logdet_xtx, n, p, self.reml)

    @property
    def loglik(self) -> float:
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2.0 * self.nparams

    @property
    def bic(self) -> float:
        return self.objective + math.log(self.nobs) * self.nparams

    @property
    def theta(self) -> np.ndarray:
        return np.zeros(0)

    def refit(self, *, reml: bool) -> LinearModelResult:
        """The same model with the other criterion (closed form: nothing to optimise)."""
        return LinearModelResult(self.design, reml=bool(reml), formula=self.formula)

    def __repr__(self) -> str:
        return (
            f"<LinearModelResult {self.formula!r}: {'REML' if self.reml else 'ML'}, "
            f"nobs={self.nobs}, loglik={self.loglik:.4f}>"
        )


def fit_linear_model(
    design: ModelDesign, *, reml: bool = False, formula: str | None = None
) -> LinearModelResult:
    """Fit ``y = X beta + e`` by least squares (random-effects terms of ``design`` are ignored)."""
    return LinearModelResult(design, reml=bool(reml), formula=formula)


def lm(formula: str, data: Any, *, reml: bool = False) -> LinearModelResult:
    """Fit a linear model without random effects, with R's ``logLik.lm`` conventions.

    Parameters
    ----------
    formula
        Fixed-effects formula, e.g. ``"weight ~ treatment * sex + litsize"``. Random-effects
        terms ``(... | g)``, if present, are ignored, so the formula of a mixed model gives its
        "no random effects" counterpart.
    data
        DataFrame, file path or embedded dataset name.
    reml
        Report the REML log-likelihood (``logLik(lm, REML=TRUE)``) instead of the ML one.
    """
    from ..design import build_design
    from ..io import read_data

    frame = read_data(data)
    design = build_design(formula, frame)
    return LinearModelResult(design, reml=bool(reml), formula=formula)
