"""The profiled deviance and its gradient for small models, from one dense factorisation.

For a small model (``m = q + p + 1`` up to a few dozen) the blocked gradient of
:mod:`.gradient` costs more in Python bookkeeping than in arithmetic. Here the whole
``Omega(theta) = D' A D + diag(I_q, 0)`` (``D = blockdiag(Lambda, I)``, ``A`` the cross
products of ``[Z X y]``) is one dense ``m x m`` matrix, and with ``K = A D``,
``Omega = U'U`` and ``E_i = dD / d theta_i`` (ones where ``Lambda`` holds ``theta_i``):

    d log|Omega| / d theta_i = tr(Omega^{-1} (E_i' K + K' E_i)) = 2 sum_(r,c) P[r, c],
    d log r^2    / d theta_i = -d log [Omega^{-1}]_mm = 2 r^2 sum_(r,c) P[r, m] u[c],

summed over the positions ``(r, c)`` of ``theta_i`` in ``D``, where ``P = K Omega^{-1}``,
``u = Omega^{-1} e_m`` and ``r^2 = 1 / [Omega^{-1}]_mm`` (the penalised RSS). The
deviance (Bates et al. 2015, eqs. 34 and 41) combines the log determinants of leading
blocks: REML ``l_ZX + (n - p) log r^2 = log|Omega| + (n - p - 1) log r^2``; ML
``l_Z + n log r^2``, where ``d l_Z = 2 sum P_Z[r, c]`` with ``P_Z = K_ZZ Omega_ZZ^{-1}``.

Unlike the blocked formula this needs no template inverse; entries of a template with a
(near-)zero diagonal are still reported as NaN, so that both paths agree on where the
convergence check must fall back to finite differences (a boundary optimum).

References: Bates, Maechler, Bolker & Walker (2015), JSS 67(1), sec. 3; the derivative
of a log determinant and of an inverse's entry: Magnus & Neudecker, Matrix Differential
Calculus, ch. 8.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.linalg.lapack import dpotrf as _dpotrf
from scipy.linalg.lapack import dpotrs as _dpotrs
from scipy.linalg.lapack import dtrtrs as _dtrtrs

from .deviance import ProfiledDeviance

#: Largest ``q + p + 1`` for which the dense gradient is used (past it the blocked one,
#: which exploits the block-diagonal first term, costs less).
DENSE_GRADIENT_MAX = 96

#: A template diagonal below this (relative to the template's largest entry, and absolute)
#: counts as singular; the same rule as :mod:`.gradient`.
_SINGULAR_DIAGONAL = 1e-6
_LOG_2PI = math.log(2.0 * math.pi)


def dense_size(dev: ProfiledDeviance) -> int:
    """``q + p + 1``: the order of the dense ``Omega`` for this deviance."""
    A = dev.A
    q = dev.structure.terms[0].nranef + (0 if A.zrtzr is None else A.zrtzr.shape[0])
    return q + dev.p + 1


def _dense_cross_products(dev: ProfiledDeviance, q1: int, q: int) -> np.ndarray:
    """``A = [Z X y]'[Z X y]`` as one symmetric dense array (columns Z1, Zr, X, y)."""
    A, p = dev.A, dev.p
    m = q + p + 1
    W = np.zeros((m, m))
    l1, p1 = A.z1tz1.shape[0], A.z1tz1.shape[1]
    first = np.arange(l1)[:, None, None] * p1
    rows = first + np.arange(p1)[None, :, None]
    cols = first + np.arange(p1)[None, None, :]
    W[rows, cols] = A.z1tz1
    W[q:, :q1] = A.xytz1.reshape(p + 1, q1)
    W[q:, q:] = A.xytxy
    if q > q1:
        W[q1:q, :q1] = A.zrtz1.toarray()
        W[q1:q, q1:q] = A.zrtzr.toarray() if sp.issparse(A.zrtzr) else A.zrtzr
        W[q:, q1:q] = A.xytzr
    lower = np.tril(W)
    return lower + np.tril(lower, -1).T


class DenseDevianceGradient:
    """Value and gradient of a small :class:`.deviance.ProfiledDeviance` in dense form.

    The same interface as :class:`.gradient.ProfiledDevianceGradient` (call it with theta
    for the gradient; :meth:`value_and_gradient` for both), for models with
    ``q + p + 1 <= DENSE_GRADIENT_MAX``.

    Parameters
    ----------
    dev
        The deviance whose gradient is wanted (REML or ML, its ``offset`` included).
    """

    def __init__(self, dev: ProfiledDeviance):
        self.dev = dev
        structure = dev.structure
        terms = structure.terms
        q1 = terms[0].nranef
        q = q1 + sum(t.nranef for t in terms[1:])
        m = q + dev.p + 1
        self._q, self._m = q, m
        self._W = _dense_cross_products(dev, q1, q)
        # Positions (r, c) in D of every template entry on every level, and its theta index.
        rows, cols, src = [], [], []
        start = 0
        for k, term in enumerate(terms):
            first = start + np.arange(term.nlevels)[:, None] * term.ncols
            rows.append((first + structure.rows[k]).ravel())
            cols.append((first + structure.cols[k]).ravel())
            entries = np.arange(structure.offsets[k], structure.offsets[k + 1])
            src.append(np.tile(entries, term.nlevels))
            start += term.nranef
        self._rows = np.concatenate(rows)
        self._cols = np.concatenate(cols)
        self._src = np.concatenate(src)
        self._scalar = all(t.ncols == 1 for t in terms)
        self._flat = self._rows * m + self._cols
        self._D0 = np.diag(np.r_[np.zeros(q), np.ones(m - q)])
        self._diag_q = np.arange(q) * (m + 1)
        # Flat C-order positions of P[r, c] and P[r, m] (and P_Z[r, c]).
        self._at_rc = self._rows * m + self._cols
        self._at_rm = self._rows * m + (m - 1)
        self._at_rc_z = self._rows * q + self._cols
        # (start, stop, theta indices of the diagonal) of each template, for the singular test.
        self._templates = [
            (s, e, (s + np.flatnonzero(r == c)).tolist())
            for s, e, r, c in zip(
                structure.offsets[:-1],
                structure.offsets[1:],
                structure.rows,
                structure.cols,
                strict=True,
            )
        ]
        self._e_m = np.zeros(m)
        self._e_m[-1] = 1.0
        self.evaluations = 0

    def _omega(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``K = A D`` and ``Omega = D' K + diag(I_q, 0)``."""
        if self._scalar:  # D is diagonal
            d = np.ones(self._m)
            d[self._rows] = theta[self._src]
            K = self._W * d
            omega = K * d[:, None]
        else:
            D = self._D0.copy()
            D.ravel()[self._flat] = theta[self._src]
            K = self._W @ D
            omega = D.T @ K
        omega.ravel()[self._diag_q] += 1.0
        return K, omega

    def _singular_entries(self, theta: np.ndarray) -> list[int]:
        """theta indices of the templates with a (near-)zero diagonal (plain Python: a few
        numbers, where numpy calls would cost more than the rest of the gradient)."""
        values = theta.tolist()
        bad: list[int] = []
        for s, e, diag in self._templates:
            limit = _SINGULAR_DIAGONAL * max(1.0, max(abs(v) for v in values[s:e]))
            if min(abs(values[i]) for i in diag) <= limit:
                bad.extend(range(s, e))
        return bad

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The deviance and its gradient at ``theta`` (``inf`` and NaN if not positive definite)."""
        self.evaluations += 1
        dev = self.dev
        theta = np.asarray(theta, dtype=np.float64)
        K, omega = self._omega(theta)
        # omega is C-ordered and symmetric: its transpose is the same matrix in Fortran
        # order, factored in place as U'U (no copy).
        U, info = _dpotrf(omega.T, lower=0, clean=0, overwrite_a=1)
        if info != 0:
            return math.inf, np.full(dev.structure.ntheta, np.nan)
        diag = U.diagonal()
        q, n, p = self._q, dev.n, dev.p
        logs = np.log(diag[:-1])
        r2 = float(diag[-1]) ** 2
        l_z = 2.0 * float(logs[:q].sum())
        if dev.reml:
            nmp = n - p
            value = l_z + 2.0 * float(logs[q:].sum()) + nmp * (1.0 + _LOG_2PI + math.log(r2 / nmp))
        else:
            value = l_z + n * (1.0 + _LOG_2PI + math.log(r2 / n))
        value += dev.offset
        # P' = Omega^{-1} K' (K is C-ordered, so K.T is Fortran-ordered: no copy), and
        # u = Omega^{-1} e_m = U^{-1} e_m / U_mm.
        Pt, info = _dpotrs(U, K.T, lower=0)
        Ptf = Pt.ravel(order="F")  # Pt is Fortran-ordered: this is P itself, C-ordered
        v, _ = _dtrtrs(U, self._e_m, lower=0)
        u = v / diag[-1]
        rows_m = Ptf[self._at_rm] * u[self._cols]  # P[r, m] u[c] per position
        if dev.reml:
            vals = Ptf[self._at_rc] + ((n - p - 1) * r2) * rows_m
        else:
            UZ = np.asfortranarray(U[:q, :q])
            PZt, _ = _dpotrs(UZ, np.asfortranarray(K[:q, :q].T), lower=0)
            vals = PZt.ravel(order="F")[self._at_rc_z] + (n * r2) * rows_m
        grad = 2.0 * np.bincount(self._src, weights=vals, minlength=dev.structure.ntheta)
        singular = self._singular_entries(theta)
        if singular:
            grad[singular] = np.nan
        return value, grad

    def __call__(self, theta: np.ndarray, factor: object | None = None) -> np.ndarray:
        """Gradient at ``theta`` (``factor`` is accepted for interface parity and unused)."""
        return self.value_and_gradient(theta)[1]
