"""The sd/cor parameterisation of the variance components (lme4's ``Cv_to_Sv`` names).

Profiles (:mod:`.profile`) and bootstrap replicates (:mod:`.bootstrap`) report variance
parameters as standard deviations and correlations (``sd_<term>|<group>``,
``cor_<term2>.<term1>|<group>``), ``sigma``, and the residual SD ratios of a varIdent fit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _corr_cholesky(R: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor of a correlation matrix, allowing the semidefinite edge (|r| = 1)."""
    m = R.shape[0]
    if m == 1:
        return np.ones((1, 1))
    if m == 2:
        r = R[1, 0]
        if abs(r) > 1.0:
            return None
        return np.array([[1.0, 0.0], [r, math.sqrt(max(0.0, 1.0 - r * r))]])
    try:
        return np.linalg.cholesky(R)
    except np.linalg.LinAlgError:
        return None


class SdCorParameters:
    """The map between ``(theta, sigma)`` and ``phi = (sd's and correlations, sigma)``.

    ``phi`` has one entry per theta entry (a standard deviation where theta has a diagonal
    template entry, a correlation where it has an off-diagonal one, in theta's order) and
    ``sigma`` last: lme4's ``Cv_to_Sv`` ordering and ``sd_`` / ``cor_`` names.
    """

    def __init__(self, structure: Any):
        self.structure = structure
        self.ntheta = structure.ntheta
        names = []
        kinds = []
        for k, term in enumerate(structure.terms):
            for i, j in zip(structure.rows[k], structure.cols[k], strict=True):
                cn = term.column_names
                if i == j:
                    names.append(f"sd_{cn[i]}|{term.group}")
                    kinds.append("sd")
                else:
                    names.append(f"cor_{cn[i]}.{cn[j]}|{term.group}")
                    kinds.append("cor")
        self.names = [*names, "sigma"]
        self.kinds = [*kinds, "sigma"]

    def to_phi(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        s = self.structure
        out = np.empty(self.ntheta + 1)
        for k, T in enumerate(s.templates(np.asarray(theta, float))):
            S = T @ T.T
            d = np.sqrt(np.diag(S))
            vals = []
            for i, j in zip(s.rows[k], s.cols[k], strict=True):
                if i == j:
                    vals.append(sigma * d[i])
                else:
                    den = d[i] * d[j]
                    vals.append(S[i, j] / den if den > 0 else 0.0)
            out[s.offsets[k] : s.offsets[k + 1]] = vals
        out[-1] = sigma
        return out

    def to_theta(self, phi: np.ndarray) -> np.ndarray | None:
        """theta for ``phi`` (None where the correlations are not positive semidefinite)."""
        s = self.structure
        sigma = phi[-1]
        theta = np.empty(self.ntheta)
        for k, term in enumerate(s.terms):
            seg = phi[s.offsets[k] : s.offsets[k + 1]]
            rows, cols = s.rows[k], s.cols[k]
            p = term.ncols
            sd = np.zeros(p)
            R = np.eye(p)
            for v, i, j in zip(seg, rows, cols, strict=True):
                if i == j:
                    sd[i] = v
                else:
                    R[i, j] = R[j, i] = v
            T = np.zeros((p, p))
            for start, stop in term.blocks:
                Lr = _corr_cholesky(R[start:stop, start:stop])
                if Lr is None:
                    return None
                T[start:stop, start:stop] = sd[start:stop, None] * Lr / sigma
            theta[s.offsets[k] : s.offsets[k + 1]] = T[rows, cols]
        return theta


def residual_ratio_names(strata: Any) -> list[str]:
    """Names of the residual SD ratios of the non-reference groups (nlme's varIdent)."""
    return [f"sdratio_{label}|{strata.column}" for label in strata.labels[1:]]
