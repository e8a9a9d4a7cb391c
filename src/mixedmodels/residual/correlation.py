"""Within-group residual correlation structures (nlme's corStruct), batched by group size.

Each structure maps unconstrained parameters ``psi`` to the correlation matrices ``R_g`` of
a batch of groups of equal size ``s`` (an array ``(G, s, s)``), from what it knows of each
row: its time (``ar1``, ``car1``) or its level of the time factor (``us``). Natural
parameters (Pinheiro & Bates 2000, sec. 5.3):

=========  =====================================  ==========================================
spec       correlation of rows i != j of group g  parameterisation
=========  =====================================  ==========================================
``cs``     ``rho``                                rho = lo + (1 - lo) expit(psi),
                                                  lo = -1/(s_max - 1) (positive definite)
``ar1``    ``phi^|t_i - t_j|``, integer t         phi = tanh(psi) in (-1, 1)
``car1``   ``phi^|t_i - t_j|``, real t            phi = expit(psi) in (0, 1)
``us``     ``C[k_i, k_j]``, k = level of t        C = D^-1/2 B B' D^-1/2, B unit lower
                                                  triangular with the psi below the
                                                  diagonal (always positive definite)
=========  =====================================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, logit


@dataclass(frozen=True, eq=False)
class Batch:
    """Groups with the same number of rows ``s``: their rows and what the structure reads.

    Attributes
    ----------
    rows
        int64 (G, s): row numbers of each group.
    time
        float64 (G, s): the time of each row (ar1/car1; None otherwise).
    level
        int64 (G, s): the level of the time factor of each row (us; None otherwise).
    shared
        Every group of the batch has the same correlation matrix (the same times relative
        to the first, or the same levels): one factorisation serves them all.
    """

    rows: np.ndarray
    time: np.ndarray | None = None
    level: np.ndarray | None = None
    shared: bool = False

    @property
    def size(self) -> int:
        return self.rows.shape[1]

    @property
    def first(self) -> Batch:
        """The batch of its first group alone (whose matrix a shared batch uses)."""
        return Batch(
            rows=self.rows[:1],
            time=None if self.time is None else self.time[:1],
            level=None if self.level is None else self.level[:1],
        )


class CompoundSymmetry:
    """nlme's ``corCompSymm``: one correlation ``rho`` between any two rows of a group."""

    kind = "cs"
    title = "Compound symmetry"
    names = ("rho",)

    def __init__(self, max_size: int):
        self.lo = -1.0 / (max_size - 1)

    def natural(self, psi: np.ndarray) -> float:
        return float(self.lo + (1.0 - self.lo) * expit(psi[0]))

    def initial(self) -> np.ndarray:
        # rho = 0, nlme's start
        return np.array([float(logit(-self.lo / (1.0 - self.lo)))])

    def matrices(self, psi: np.ndarray, batch: Batch) -> np.ndarray:
        G, s = batch.rows.shape
        R = np.full((G, s, s), self.natural(psi))
        R[:, np.arange(s), np.arange(s)] = 1.0
        return R

    def report(self, psi: np.ndarray) -> dict[str, Any]:
        return {"rho": self.natural(psi)}

    def describe(self, psi: np.ndarray) -> list[tuple[str, float]]:
        return [("Rho", self.natural(psi))]


class _PowerOfDistance:
    """``phi^|t_i - t_j|``: AR(1) (integer t) and continuous-time AR(1)."""

    names = ("phi",)

    def natural(self, psi: np.ndarray) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def initial(self) -> np.ndarray:
        return np.array([self.start])

    def matrices(self, psi: np.ndarray, batch: Batch) -> np.ndarray:
        phi = self.natural(psi)
        d = np.abs(batch.time[:, :, None] - batch.time[:, None, :])
        if self.kind == "ar1":
            d = np.rint(d).astype(np.int64)  # phi may be negative: integer powers only
        return np.power(phi, d)

    def report(self, psi: np.ndarray) -> dict[str, Any]:
        return {"phi": self.natural(psi)}

    def describe(self, psi: np.ndarray) -> list[tuple[str, float]]:
        return [("Phi", self.natural(psi))]


class AR1(_PowerOfDistance):
    """nlme's ``corAR1(form = ~ t | g)``: ``phi^|t_i - t_j|`` for integer times (gaps allowed)."""

    kind = "ar1"
    title = "AR(1)"
    start = 0.0  # phi = 0, nlme's start

    def natural(self, psi: np.ndarray) -> float:
        return float(np.tanh(psi[0]))


class CAR1(_PowerOfDistance):
    """nlme's ``corCAR1(form = ~ t | g)``: ``phi^|t_i - t_j|`` for real times, phi in (0, 1)."""

    kind = "car1"
    title = "Continuous AR(1)"
    start = float(logit(0.2))  # nlme's start: phi = 0.2

    def natural(self, psi: np.ndarray) -> float:
        return float(expit(psi[0]))


class Unstructured:
    """nlme's ``corSymm(form = ~ t | g)``: a free correlation per pair of levels of t.

    The residual SD per level (``varIdent(~ 1 | t)``) is a variance function the repeated
    structure adds (:mod:`mixedmodels.residual.repeated`).
    """

    kind = "us"
    title = "General correlation (unstructured)"

    def __init__(self, levels: tuple[str, ...]):
        self.levels = levels
        K = len(levels)
        self._rows, self._cols = np.tril_indices(K, -1)
        self.names = tuple(
            f"corr({levels[j]},{levels[i]})" for i, j in zip(self._rows, self._cols, strict=True)
        )

    def initial(self) -> np.ndarray:
        return np.zeros(len(self.names))

    def matrix(self, psi: np.ndarray) -> np.ndarray:
        K = len(self.levels)
        B = np.eye(K)
        B[self._rows, self._cols] = psi
        B /= np.sqrt(np.sum(B * B, axis=1))[:, None]
        C = B @ B.T
        C[np.arange(K), np.arange(K)] = 1.0
        return C

    def matrices(self, psi: np.ndarray, batch: Batch) -> np.ndarray:
        C = self.matrix(psi)
        k = batch.level
        return C[k[:, :, None], k[:, None, :]]

    def report(self, psi: np.ndarray) -> dict[str, Any]:
        return {"corr": self.matrix(psi).tolist(), "levels": list(self.levels)}

    def describe(self, psi: np.ndarray) -> list[tuple[str, float]]:
        C = self.matrix(psi)
        return [
            (f"corr({self.levels[j]},{self.levels[i]})", float(C[i, j]))
            for i, j in zip(self._rows, self._cols, strict=True)
        ]
