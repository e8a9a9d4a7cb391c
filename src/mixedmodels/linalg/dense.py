"""The dense system of a small model: ``Omega(theta)``, its factor, gradient terms, estimates.

For a small model (``m = q + p + 1`` up to
:data:`mixedmodels.models.engine.DENSE_MAX`) the blocked system of :mod:`.blocked` costs
more in Python bookkeeping than in arithmetic. Here the whole

    Omega(theta) = D' A D + diag(I_q, 0),   D = blockdiag(Lambda, I),

with ``A = [Z X y]'[Z X y]``, is one dense ``m x m`` matrix and ``Omega = U'U`` one LAPACK
call; ``L = U'`` is the factor of Bates et al. (2015, sec. 3) with its blocks side by side,
so the log determinants and ``r^2`` of the criterion (eqs. 34 and 41) are read off the
diagonal of ``U``.

Gradient. With ``K = A D`` and ``E_i = dD / d theta_i`` (ones where ``Lambda`` holds
``theta_i``):

    d log|Omega| / d theta_i = tr(Omega^{-1} (E_i' K + K' E_i)) = 2 sum_(r,c) P[r, c],
    d log r^2    / d theta_i = -d log [Omega^{-1}]_mm = 2 r^2 sum_(r,c) P[r, m] u[c],

summed over the positions ``(r, c)`` of ``theta_i`` in ``D``, where ``P = K Omega^{-1}``
(one solve; on larger systems only its needed entries, read from ``Omega^{-1}``),
``u = Omega^{-1} e_m`` and ``r^2 = 1 / [Omega^{-1}]_mm`` (the penalised RSS).
REML is ``l_ZX + (n - p) log r^2 = log|Omega| + (n - p - 1) log r^2``; ML is
``l_Z + n log r^2`` with ``d l_Z = 2 sum P_Z[r, c]``, ``P_Z = K_ZZ Omega_ZZ^{-1}``. Unlike
the blocked formula this needs no template inverse; entries of a template with a
(near-)zero diagonal are still reported as NaN, so that both engines hand the convergence
check the same cases (a boundary optimum is checked by finite differences).

Estimates (sec. 3.4-3.6): ``R_X beta = r_Xy``, ``L_Z' u = c_u - L_XZ' beta``, ``b = Lambda u``,
each one triangular solve with a block of ``U``.

References: Bates, Maechler, Bolker & Walker (2015), JSS 67(1); the derivative of a log
determinant and of an inverse's entry: Magnus & Neudecker, Matrix Differential Calculus,
ch. 8.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.linalg.lapack import dpotrf as _dpotrf
from scipy.linalg.lapack import dpotri as _dpotri
from scipy.linalg.lapack import dpotrs as _dpotrs
from scipy.linalg.lapack import dsyev as _dsyev
from scipy.linalg.lapack import dtrtrs as _dtrtrs

from mixedmodels.covariance import CovarianceStructure
from mixedmodels.linalg.cross_products import CrossProducts
from mixedmodels.linalg.solution import Estimates

#: A template diagonal below this (relative to the template's largest entry, and absolute)
#: counts as singular; the same rule as :mod:`.gradient`.
_SINGULAR_DIAGONAL = 1e-6
#: Up to this order of Omega the gradient solves with ``K'`` for all of ``P``; above, it
#: reads the entries it needs from ``Omega^{-1}`` (a third of the flops, more index
#: bookkeeping). Measured on one thread (AMD EPYC, CPU time, warm): the solve costs less
#: at every order a small model has (sleepstudy (Days|Subject), m = 39: 21 against 29 us;
#: Orthodont, m = 59: 42 against 54 us; random matrices, m = 100: 115 against 138 us;
#: equal at ~160), so it serves every dense model (``DENSE_MAX``).
_SOLVE_MAX = 96
#: Scalar terms' Hessian by the interior formulas while every ``theta_i^2 a_i`` (``a_i``:
#: the term's smallest ``A[c, c]``) is at least this: ``1 - G_cc`` then keeps all but
#: ``eps / 1e-4`` of its relative accuracy (see DenseSystem._scalar_interior_derivatives).
_INTERIOR_MIN = 1e-4
#: Unbalanced one-term designs with at most this many levels have a
#: :meth:`DenseSystem.one_term_spectrum`: its eigendecomposition costs about as much as one
#: evaluation of the criterion's derivatives in the level-sum form at ~30 levels (65 us,
#: one thread), and each evaluation from it a fifth of one (10 us, ratpup's 27 litters).
SPECTRAL_MAX_LEVELS = 32
#: From this many levels on, a model with one scalar term is evaluated in closed form
#: (:meth:`DenseSystem._one_term_log_diagonal`).
_ONE_TERM_MIN = 24


def cross_products_from_rows(
    structure: CovarianceStructure,
    X: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """``A = M'WM`` for the dense ``M = [Z X y]`` (columns: terms in engine order, level-major)
    and row weights ``W`` (the identity by default)."""
    n, p = X.shape
    terms = structure.terms
    q = structure.nranef
    m = q + p + 1
    if len(terms) == 1 and terms[0].ncols == 1 and n * m * m > _WHOLE_PRODUCT_FLOPS:
        return _one_term_cross_products(terms[0], X, y, weights)
    M = np.zeros((n, m))
    if structure.all_scalar:
        # Scalar terms: one entry per row and term, written through flat positions
        # (row * m + column) without the 2-d broadcast indices.
        flat = M.reshape(-1)
        base = np.arange(0, n * m, m)
        start = 0
        for term in terms:
            flat[base + (term.refs + start)] = term.z[:, 0]
            start += term.nranef
    else:
        rows = np.arange(n)[:, None]
        start = 0
        for term in terms:
            cols = start + term.refs[:, None] * term.ncols + np.arange(term.ncols)
            M[rows, cols] = term.z
            start += term.nranef
    M[:, q : q + p] = X
    M[:, -1] = y
    if weights is None:
        return M.T @ M
    return (M * weights[:, None]).T @ M


def cross_products_from_blocks(structure: CovarianceStructure, A: CrossProducts) -> np.ndarray:
    """``A`` as one symmetric dense array, from the blocked cross products."""
    p = A.xytxy.shape[0] - 1
    l1, p1 = A.z1tz1.shape[0], A.z1tz1.shape[1]
    q1 = l1 * p1
    q = structure.nranef
    W = np.zeros((q + p + 1, q + p + 1))
    first = np.arange(l1)[:, None, None] * p1
    W[first + np.arange(p1)[None, :, None], first + np.arange(p1)[None, None, :]] = A.z1tz1
    xz1 = A.xytz1.reshape(p + 1, q1)
    W[q:, :q1] = xz1
    W[:q1, q:] = xz1.T
    W[q:, q:] = A.xytxy
    if q > q1:
        zr1 = A.zrtz1.toarray()
        W[q1:q, :q1] = zr1
        W[:q1, q1:q] = zr1.T
        W[q1:q, q1:q] = A.zrtzr.toarray() if sp.issparse(A.zrtzr) else A.zrtzr
        W[q:, q1:q] = A.xytzr
        W[q1:q, q:] = A.xytzr.T
    return W


#: One scalar term's ``A`` is the product of the whole ``[Z X y]`` up to this many flops
#: (``n m^2``): fewer NumPy calls than its blocks (Dyestuff 12 for 16 us, sleepstudy 16 for
#: 24, ratpup 31 for 40); past it the blocks (Cake, 1.1e6 flops: a third of the work).
_WHOLE_PRODUCT_FLOPS = 1 << 19
#: Up to this many entries (rows x levels), one scalar term's ``[X y]'Z`` is a product with
#: the dense indicator (fewer NumPy calls); beyond, a bincount (see _one_term_cross_products).
_INDICATOR_PRODUCT_MAX = 4096


def _one_term_cross_products(
    term, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None
) -> np.ndarray:
    """:func:`cross_products_from_rows` for one scalar term, by blocks: ``Z'WZ`` is the
    diagonal ``n_l = sum w z^2`` over each level (a bincount), ``[X y]'WZ`` one product with
    the ``n x q`` indicator columns and ``[X y]'W[X y]`` another; ``(p + 1)(q + p + 1) n``
    flops where the product of the whole ``[Z X y]`` costs ``(q + p + 1)^2 n`` (Cake:
    a third)."""
    n, p = X.shape
    q = term.nranef
    m = q + p + 1
    Xy = np.empty((n, p + 1))
    Xy[:, :p] = X
    Xy[:, p] = y
    z = term.z[:, 0]
    left = (Xy * weights[:, None]).T if weights is not None else Xy.T
    wz = z if weights is None else z * weights
    if n * q <= _INDICATOR_PRODUCT_MAX:
        Z = np.zeros((n, q))
        Z[np.arange(n), term.refs] = z
        S = left @ Z
    else:
        # The level sums of [X y] w z by one bincount over (column, level) pairs: the
        # n x q indicator would cost n q entries to write and n q (p + 1) flops to multiply
        # (at n = 5,000 and q = 300: 24 ms, where the bincount takes 0.1 ms).
        wzXy = left * z  # (p + 1) x n
        cells = term.refs + q * np.arange(p + 1)[:, None]
        S = np.bincount(cells.ravel(), weights=wzXy.ravel(), minlength=q * (p + 1))
        S = S.reshape(p + 1, q)
    W = np.zeros((m, m))
    W[q:, :q] = S
    W[:q, q:] = S.T
    W[q:, q:] = left @ Xy
    W.ravel()[: q * (m + 1) : m + 1] = np.bincount(term.refs, weights=wz * z, minlength=q)
    return W


def _scaled_inverse(R: np.ndarray, sigma2: float) -> np.ndarray:
    """``sigma2 (R'R)^{-1}`` from the upper factor ``R``, exactly symmetric.

    By dpotrs, which the fit has already run (Newton steps, gradient): dtrtri, np.triu and
    a product would be code touched only here, each paid cold after a collection. potrs
    reads R's upper triangle alone; its result is symmetrised, as ``R^{-1} R^{-T}`` was.
    """
    inv, _ = _dpotrs(R, read_only_identity(R.shape[0]), lower=0)  # potrs copies the read-only I
    inv += inv.T
    inv *= 0.5 * sigma2
    return inv


def _upper_gather(cols: np.ndarray, order: int, rows: int) -> np.ndarray:
    """Flat Fortran-order indices that read column ``c`` of a symmetric ``order x order``
    matrix held in its upper triangle, rows ``0 .. rows - 1``, for each ``c`` in ``cols``:
    entry ``(t, c)`` is stored at ``(min(t, c), max(t, c))``. Shape ``(len(cols), rows)``;
    columns past ``order`` (none are asked for) are not valid."""
    t = np.arange(rows)[None, :]
    c = np.asarray(cols)[:, None]
    return np.minimum(t, c) + order * np.maximum(t, c)


#: Identity matrices by order (Fortran-ordered, read-only), for ``Omega^{-1}`` by potrs.
_IDENTITIES: dict[int, np.ndarray] = {}


class OneTermSpectrum(NamedTuple):
    """:meth:`DenseSystem.one_term_spectrum`: Python floats, for loops that cost less than
    NumPy calls on a few dozen entries."""

    eigenvalues: list[float]  # lambda_i of Z'MZ (ascending, rounding's negatives at 0)
    c_squared: list[float]  # (v_i' Z'My)^2
    rss: float  # y'My
    log_det_xtx: float  # log|X'X|
    n_l: list[float]  # Z'Z's diagonal


def project_out_fixed_effects(W: np.ndarray, p: int) -> tuple[np.ndarray, float] | None:
    """``A - A_(.X) (X'X)^{-1} A_(X.)`` and ``log|X'X|``, for the dense ``A = [Z X y]'[Z X y]``
    with ``p`` fixed-effect columns; None where ``X'X`` is not positive definite.

    With ``M = I - X (X'X)^{-1} X'`` the result's ``Z`` and ``y`` blocks are ``Z'MZ``,
    ``Z'My`` and ``y'My`` (its ``X`` rows and columns are zero to rounding): the quadratic
    forms of the moment start and the one-term criterion's spectral form (REML's error
    contrasts, Harville 1977). One ``p x p`` factorisation and one solve.
    """
    q = W.shape[0] - p - 1
    if not p:
        return W, 0.0
    U, info = _dpotrf(W[q : q + p, q : q + p], lower=0, clean=0)
    if info != 0:
        return None
    F, info = _dpotrs(U, W[q : q + p], lower=0)  # (X'X)^{-1} [X'Z X'X X'y]
    if info != 0:  # pragma: no cover - potrs fails only on invalid arguments
        return None
    logdet = 2.0 * float(np.add.reduce(np.log(U.diagonal())))
    return W - W[:, q : q + p] @ F, logdet


def read_only_identity(m: int) -> np.ndarray:
    """The ``m x m`` identity, made once per order (a fit asks for one or two)."""
    eye = _IDENTITIES.get(m)
    if eye is None:
        eye = np.zeros((m, m), order="F")
        eye.ravel(order="F")[:: m + 1] = 1.0
        eye.setflags(write=False)
        _IDENTITIES[m] = eye
    return eye


class DenseSystem:
    """The dense ``Omega(theta)`` of a small model, factored, with gradient terms and estimates.

    The same log determinants and ``r^2`` as :class:`.blocked.BlockedSystem` (to rounding),
    with the gradient of a criterion built from them (:meth:`value_terms_and_gradient`) and
    the estimates at a point (:meth:`estimates`) from one factorisation each.

    Parameters
    ----------
    structure
        The covariance parameterisation (terms in engine order).
    W
        ``[Z X y]'[Z X y]``, dense and symmetric (:func:`cross_products_from_rows` or
        :func:`cross_products_from_blocks`).
    n
        Number of observations.
    """

    memoize = False  # an evaluation costs less than remembering it

    def __init__(self, structure: CovarianceStructure, W: np.ndarray, n: int):
        self.structure = structure
        self.n = int(n)
        terms = structure.terms
        q = structure.nranef
        m = W.shape[0]
        self.p = m - q - 1
        self._q, self._m, self._W = q, m, W
        #: How many of :meth:`log_diagonal`'s logs belong to ``L_Z``.
        self.nz_logs = q
        # Per term: its columns' span in Omega, the positions (r, c) in D of every template
        # entry on every level with its theta index, and its columns of A as
        # (m levels, p_k) for the batched template products.
        self._spans: list[tuple[int, int]] = []
        self._w_columns = []
        self._scalar = structure.all_scalar
        # 1 x 1 templates with one theta each (not gls's null term, which has none)
        one_each = self._scalar and structure.ntheta == len(terms)
        if one_each:
            # theta k sits on the diagonal of D over term k's columns (positions (c, c));
            # set up without the general per-entry index arithmetic (a cold path per fit).
            self._src = np.empty(q, dtype=np.intp)
            start = 0
            for k, term in enumerate(terms):
                stop = start + term.nlevels
                self._src[start:stop] = k
                self._spans.append((start, stop))
                start = stop
            self._rows = self._cols = np.arange(q)
        else:
            rows, cols, src = [], [], []
            start = 0
            for k, term in enumerate(terms):
                stop = start + term.nranef
                first = start + np.arange(term.nlevels)[:, None] * term.ncols
                rows.append((first + structure.rows[k]).ravel())
                cols.append((first + structure.cols[k]).ravel())
                entries = np.arange(structure.offsets[k], structure.offsets[k + 1])
                # np.tile(entries, nlevels) without its Python wrapper (a cold path per fit)
                src.append(entries[np.arange(entries.shape[0] * term.nlevels) % entries.shape[0]])
                self._spans.append((start, stop))
                if not self._scalar:  # the template products of _omega (not for a diagonal D)
                    self._w_columns.append(
                        np.ascontiguousarray(W[:, start:stop]).reshape(-1, term.ncols)
                    )
                start = stop
            self._rows = np.concatenate(rows)
            self._cols = np.concatenate(cols)
            self._src = np.concatenate(src)
        # diag(I_q, 0) as a whole matrix, and D's diagonal before theta is written into it:
        # adding a matrix and copying an array cost less than an indexed add and np.ones
        # (~1 us of a 5 us evaluation on Dyestuff), with the same numbers.
        self._identity_q = np.zeros((m, m))
        self._identity_q.ravel()[: q * (m + 1) : m + 1] = 1.0
        self._ones = np.empty(m)  # filled, not np.ones: no Python-level wrapper
        self._ones.fill(1.0)
        # Flat C-order positions of P[r, c] and P[r, m] (and of P_Z[r, c]), made on the
        # first gradient by a solve (see _positions).
        self._at: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # Larger systems: where the gradient reads column c of Omega^{-1} (order m; REML)
        # or of Omega_ZZ^{-1} (order q; ML) from their upper triangles (see
        # _upper_gather), made on first use: a fit needs one of them.
        self._g_at: np.ndarray | None = None
        self._gz_at: np.ndarray | None = None
        # One scalar term: Omega_ZZ = I + theta^2 diag(n_l) is diagonal, so the optimiser's
        # evaluations eliminate it in closed form and factor only the (p + 1) x (p + 1)
        # Schur complement (see _one_term_log_diagonal): O(q p^2) work where the whole
        # factorisation costs O(m^3).
        self._one_term: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if len(terms) == 1 and self._scalar and structure.ntheta == 1 and q >= _ONE_TERM_MIN:
            S = np.ascontiguousarray(W[q:, :q])  # [X y]'Z, (p + 1) x q
            self._one_term = (W.diagonal()[:q].copy(), S, np.ascontiguousarray(W[q:, q:]))
            self.nz_logs = 0  # log|L_Z|^2 comes whole, before the logs
        self._by_theta: np.ndarray | None = None  # made on the first Hessian
        self._pair_cache: dict[int, tuple[np.ndarray, ...]] = {}  # ... and its gathers
        self._interior: tuple[np.ndarray, np.ndarray, list[float], np.ndarray] | None = None
        self._projection: tuple[tuple[np.ndarray, float] | None] | None = None
        self._spectrum: tuple[OneTermSpectrum | None] | None = None
        # (start, stop, theta indices of the diagonal) of each template, for the singular test.
        if one_each:
            self._templates = [(k, k + 1, [k]) for k in range(len(terms))]
        else:
            self._templates = []
            for k, (s, e) in enumerate(
                zip(structure.offsets[:-1], structure.offsets[1:], strict=True)
            ):
                on_diag = (structure.rows[k] == structure.cols[k]).tolist()
                self._templates.append((s, e, [s + i for i, d in enumerate(on_diag) if d]))

    @classmethod
    def from_cross_products(cls, structure: CovarianceStructure, A: CrossProducts) -> DenseSystem:
        """The dense system from blocked cross products (streamed or reduced on a cluster)."""
        return cls(structure, cross_products_from_blocks(structure, A), int(A.nobs))

    def with_values(self, W: np.ndarray) -> DenseSystem:
        """The same system for a new dense ``A`` of the same model (reweighted rows)."""
        return DenseSystem(self.structure, W, self.n)

    @property
    def scalar_terms(self) -> bool:
        """Whether every term is scalar (one column, one theta each)."""
        return self._scalar and self.structure.ntheta == len(self.structure.terms)

    def scalar_indicator(self) -> np.ndarray:
        """The ``q x K`` indicator of each ``Z`` column's term (scalar terms: term k is
        theta k); made on first use."""
        if self._interior is None:
            self._interior_setup()
        return self._interior[0]  # type: ignore[index]

    @property
    def W(self) -> np.ndarray:
        """The dense ``A = [Z X y]'[Z X y]``."""
        return self._W

    def fixed_effects_projection(self) -> tuple[np.ndarray, float] | None:
        """:func:`project_out_fixed_effects` of ``A``, computed once (the moment start and
        the one-term derivatives both read it)."""
        if self._projection is None:
            self._projection = (project_out_fixed_effects(self._W, self.p),)
        return self._projection[0]

    def one_term_spectrum(self) -> OneTermSpectrum | None:
        """The spectrum of the projected ``C = Z'MZ`` of a model with one scalar term on an
        unbalanced design of at most :data:`SPECTRAL_MAX_LEVELS` levels, computed once; None
        for other models, a balanced design (whose closed form needs no ``q x q`` work),
        ``X'X`` not positive definite or an eigensolver failure.

        With ``C = V diag(lambda) V'`` and ``c = V' Z'My``, REML's error contrasts (Harville
        1977) make the criterion's terms sums over the levels:
        ``log|L_Z|^2 + log|R_X|^2 = log|X'X| + sum log(1 + t^2 lambda_i)`` and
        ``r^2 = y'My - t^2 sum c_i^2 / (1 + t^2 lambda_i)``; ML's ``log|L_Z|^2`` is
        ``sum log(1 + t^2 n_l)``.
        """
        if self._spectrum is None:
            self._spectrum = (self._make_one_term_spectrum(),)
        return self._spectrum[0]

    def _make_one_term_spectrum(self) -> OneTermSpectrum | None:
        structure, q = self.structure, self._q
        terms = structure.terms
        if not (len(terms) == 1 and self._scalar and structure.ntheta == 1):
            return None
        if not 0 < q <= SPECTRAL_MAX_LEVELS:
            return None
        n_l = self._W.diagonal()[:q]
        if float(np.maximum.reduce(n_l)) == float(np.minimum.reduce(n_l)):
            return None
        projection = self.fixed_effects_projection()
        if projection is None:
            return None
        P, log_xx = projection
        lam, V, info = _dsyev(P[:q, :q])
        if info != 0:
            return None
        c = P[:q, -1] @ V
        # C is positive semidefinite: a negative eigenvalue is rounding (the levels a
        # level-wise covariate such as litter size or treatment absorbs).
        np.maximum(lam, 0.0, out=lam)
        return OneTermSpectrum(
            lam.tolist(), (c * c).tolist(), float(P[-1, -1]), log_xx, n_l.tolist()
        )

    @property
    def spans(self) -> list[tuple[int, int]]:
        """Each term's columns in ``A`` (start, stop)."""
        return self._spans

    # -- Omega and its factor -------------------------------------------------------------
    def _omega(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``K = A D`` and ``Omega = D' K + diag(I_q, 0)`` (C-ordered)."""
        if self._scalar:  # D is diagonal
            d = self._ones.copy()
            d[self._rows] = theta[self._src]
            K = self._W * d
            omega = K * d[:, None]
        else:
            # D is block diagonal with one template per level: K = A D and Omega = K'D
            # (Omega is symmetric) act on each term's columns as one (m levels x p_k) by
            # (p_k x p_k) product: O(m q p_k) flops where products with D cost O(m^3).
            m = self._m
            templates = self.structure.templates(theta)
            K = self._W.copy()
            for (s, e), T, Wz in zip(self._spans, templates, self._w_columns, strict=True):
                K[:, s:e] = (Wz @ T).reshape(m, e - s)
            omega = K.T.copy()
            for (s, e), T in zip(self._spans, templates, strict=True):
                cols = np.ascontiguousarray(omega[:, s:e]).reshape(-1, T.shape[0])
                omega[:, s:e] = (cols @ T).reshape(m, e - s)
        omega += self._identity_q
        return K, omega

    def _factor(self, theta: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """``U`` with ``Omega = U'U`` (Fortran-ordered; None if not positive definite) and K."""
        K, omega = self._omega(np.asarray(theta, dtype=np.float64))
        # omega is C-ordered and symmetric: its transpose is the same matrix in Fortran
        # order, factored in place (no copy).
        U, info = _dpotrf(omega.T, lower=0, clean=0, overwrite_a=1)
        return (U if info == 0 else None), K

    def _log_terms(self, diag: np.ndarray) -> tuple[float, float, float]:
        logs = np.log(diag[:-1])
        q = self._q
        # np.add.reduce: ndarray.sum's reduction without its Python-level wrapper
        add = np.add.reduce
        return 2.0 * float(add(logs[:q])), 2.0 * float(add(logs[q:])), float(diag[-1]) ** 2

    def log_diagonal(self, theta: np.ndarray) -> tuple[float, np.ndarray, float] | None:
        """What the criterion reads at ``theta``: 0 (no separately eliminated block), the
        logs of the diagonal of ``U`` but the last (the first :attr:`nz_logs` belong to
        ``L_Z``) and ``r^2``; None if Omega is not positive definite. One scalar term of
        many levels: ``log|L_Z|^2`` first and the logs of the rest of the factor
        (:meth:`_one_term_log_diagonal`)."""
        if self._one_term is not None:
            return self._one_term_log_diagonal(float(theta[0]))
        theta = np.asarray(theta, dtype=np.float64)
        if self._scalar:
            # _omega's numbers for a diagonal D, without K (the gradient's, not read here)
            # and without two call layers: the optimiser's hot path, a few us per call.
            d = self._ones.copy()
            d[self._rows] = theta[self._src]
            omega = self._W * d
            omega *= d[:, None]
            omega += self._identity_q
        else:
            omega = self._omega(theta)[1]
        U, info = _dpotrf(omega.T, lower=0, clean=0, overwrite_a=1)
        if info != 0:
            return None
        diag = U.diagonal()
        return 0.0, np.log(diag[:-1]), float(diag[-1]) ** 2

    def _one_term_log_diagonal(self, t: float) -> tuple[float, np.ndarray, float] | None:
        """:meth:`log_diagonal` of a model with one scalar term, by its Schur complement.

        With ``N = diag(n_l)`` (``n_l = sum z^2`` over level ``l``) and ``S = [X y]'Z``,
        ``Omega = [[I + t^2 N, t S'], [t S, G]]``, ``G = [X y]'[X y]``: its ``L_Z`` is
        ``diag(sqrt(1 + t^2 n_l))``, so ``log|L_Z|^2 = sum log(1 + t^2 n_l)``, and the rest
        of the factor is that of ``G - S diag(t^2 / (1 + t^2 n_l)) S'`` (Bates et al. 2015,
        sec. 3.5, with a diagonal ``L_Z``).
        """
        n_l, S, G = self._one_term  # type: ignore[misc]
        t2 = t * t
        d = n_l * t2
        d += 1.0
        schur = G - (S * (t2 / d)) @ S.T
        # schur is symmetric: its transpose is the same matrix in Fortran order.
        U, info = _dpotrf(schur.T, lower=0, clean=0, overwrite_a=1)
        if info != 0:
            return None
        diag = U.diagonal()
        return float(np.add.reduce(np.log(d))), np.log(diag[:-1]), float(diag[-1]) ** 2

    def log_terms(self, theta: np.ndarray) -> tuple[float, float, float] | None:
        """``log|L_Z|^2``, ``log|R_X|^2`` and ``r^2`` at ``theta`` (None if Omega is not
        positive definite)."""
        U, _ = self._factor(theta)
        return None if U is None else self._log_terms(U.diagonal())

    # -- gradient ---------------------------------------------------------------------------
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

    def log_terms_and_gradient(
        self, theta: np.ndarray, logdet: str, logr2_weight: float, singular_nan: bool = True
    ) -> tuple[tuple[float, float, float] | None, np.ndarray]:
        """The log terms and the gradient of ``l + w log r^2`` at ``theta``, one factorisation.

        ``l`` is ``log|L_Z|^2 + log|R_X|^2`` (``logdet="zx"``, the REML criterion's) or
        ``log|L_Z|^2`` (``"z"``, ML's) and ``w`` is ``logr2_weight``: every profiled
        criterion is such a sum plus constants (see the module docstring for the formulas).
        None and NaN where Omega is not positive definite.

        Only the entries ``P[r, c]`` at the positions of theta in ``D`` and the column
        ``P[r, m]`` are needed: small systems solve for all of ``P``
        (:meth:`_p_entries_by_solve`), larger ones read them from ``Omega^{-1}``
        (:meth:`_p_entries_by_inverse`).

        For ``"zx"`` the first log term holds all of ``l`` and the second is 0: REML needs
        only their sum, and summed in one reduction, as :meth:`log_diagonal` serves the
        optimiser, the criterion from here equals the optimiser's to the last bit (two
        partial sums can differ from it in the last place).
        """
        theta = np.asarray(theta, dtype=np.float64)
        U, K = self._factor(theta)
        if U is None:
            return None, np.full(self.structure.ntheta, np.nan)
        diag = U.diagonal()
        if self._one_term is not None:
            # The optimiser's closed form (not this factor's diagonal), so that both give
            # the same criterion to the last bit.
            found = self._one_term_log_diagonal(float(theta[0]))
            if found is None:  # pragma: no cover - Omega was factored just above
                return None, np.full(self.structure.ntheta, np.nan)
            terms = (found[0], 2.0 * float(np.add.reduce(found[1])), found[2])
            r2 = terms[2]
        elif logdet == "zx":
            r2 = float(diag[-1]) ** 2
            terms = (2.0 * float(np.add.reduce(np.log(diag[:-1]))), 0.0, r2)
        else:
            terms = self._log_terms(diag)
            r2 = terms[2]
        if self._m <= _SOLVE_MAX:
            p_rc, last, pz = self._p_entries_by_solve(U, K, logdet == "z")
        else:
            p_rc, last, pz = self._p_entries_by_inverse(U, K, logdet == "z")
        if logdet == "zx":
            # 2 sum P[r, c] is d log|Omega| = d (l_ZX + log r^2).
            vals = p_rc + ((logr2_weight - 1.0) * r2) * last
        else:
            vals = pz + (logr2_weight * r2) * last
        grad = 2.0 * np.bincount(self._src, weights=vals, minlength=self.structure.ntheta)
        # NaN on singular templates unless asked (see log_terms_gradient_and_hessian).
        singular = self._singular_entries(theta) if singular_nan else None
        if singular:
            grad[singular] = np.nan
        return terms, grad

    def _p_entries_by_solve(
        self, U: np.ndarray, K: np.ndarray, ml: bool
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        """``P[r, c]`` (REML) or ``P_Z[r, c]`` (``ml``), and ``P[r, m] u[c]``, per position
        (None for the one not needed), from ``P`` itself: one solve with ``K'`` (the least
        work below ``_SOLVE_MAX``)."""
        q = self._q
        # P' = Omega^{-1} K' (K.T is Fortran-ordered: no copy); read in Fortran order it is
        # P itself, C-ordered. u = Omega^{-1} e_m = U^{-1} e_m / U_mm.
        Pt, _ = _dpotrs(U, K.T, lower=0)
        P = Pt.ravel(order="F")
        e_m = np.zeros(self._m)
        e_m[-1] = 1.0 / U[-1, -1]
        u, _ = _dtrtrs(U, e_m, lower=0)
        at = self._at
        if at is None:
            m, rows, cols = self._m, self._rows, self._cols
            at = self._at = (rows * m + cols, rows * m + (m - 1), rows * q + cols)
        last = P[at[1]] * u[self._cols]
        if ml:
            PZt, _ = _dpotrs(np.asfortranarray(U[:q, :q]), np.asfortranarray(K[:q, :q].T), lower=0)
            return None, last, PZt.ravel(order="F")[at[2]]
        return P[at[0]], last, None

    def _p_entries_by_inverse(
        self, U: np.ndarray, K: np.ndarray, ml: bool
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        """What :meth:`_p_entries_by_solve` gives, without forming ``P = K Omega^{-1}``.

        Only the entries at the positions of theta in ``D`` and the column ``P[r, m]`` are
        needed: ``Omega^{-1}`` from the factor (LAPACK ``potri``, a third of the work of
        solving with ``K'``), each needed entry one row of ``K`` times one of its columns,
        and ``u = Omega^{-1} e_m`` its last column. ``U`` is overwritten.
        """
        q = self._q
        Kr = K[self._rows]  # the rows r of every position, (positions, m)
        p_rc = pz = None
        if ml:
            # P_Z = K_ZZ Omega_ZZ^{-1}, and U_ZZ is the factor of Omega_ZZ (a copy: U is
            # overwritten next).
            if self._gz_at is None:
                self._gz_at = _upper_gather(self._cols, q, q)
            GZ, _ = _dpotri(U[:q, :q], lower=0)
            pz = np.einsum("ij,ij->i", Kr[:, :q], GZ.ravel(order="F")[self._gz_at])
        G, _ = _dpotri(U, lower=0, overwrite_c=1)  # the upper triangle of Omega^{-1}
        u = G[:, -1]  # Omega^{-1} e_m: the last column lies in the upper triangle
        if not ml:
            if self._g_at is None:
                self._g_at = _upper_gather(self._cols, self._m, self._m)
            p_rc = np.einsum("ij,ij->i", Kr, G.ravel(order="F")[self._g_at])
        return p_rc, (Kr @ u) * u[self._cols], pz

    # -- Hessian ----------------------------------------------------------------------------
    def _indicator(self) -> np.ndarray:
        """The theta indicator of the Hessian's sums (made on first use): columns by theta
        (``m x k``) for 1 x 1 templates, where ``D`` is diagonal (``r = c``) and every
        position is a column of ``Omega``; else positions by theta."""
        S = self._by_theta
        if S is None:
            k = self.structure.ntheta
            if self._scalar:
                S = np.zeros((self._m, k))
                S[self._cols, self._src] = 1.0
            else:
                npos = self._rows.shape[0]
                S = np.zeros((npos, k))
                S[np.arange(npos), self._src] = 1.0
            self._by_theta = S
        return S

    def _pairs(
        self, order: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What the Hessian of vector templates gathers, made once per order of ``Omega``'s
        blocks it reads (``m``: REML; ``q``: ML's ``ZZ`` blocks): the flat C-order positions
        of ``(r, c')``, ``(c, c')`` and ``(r, r')`` over all pairs of template positions,
        ``A[r, r']`` itself (constant) and the flat positions ``(c, i)`` of ``a``
        (``m x k``: each position's column and theta index)."""
        cache = self._pair_cache.get(order)
        if cache is None:
            r, c = self._rows, self._cols
            k = self.structure.ntheta
            at_rr = r[:, None] * order + r
            cache = (
                r[:, None] * order + c,
                c[:, None] * order + c,
                at_rr,
                self._W.take(r[:, None] * self._m + r),
                c * k + self._src,
            )
            self._pair_cache[order] = cache
        return cache

    def log_terms_gradient_and_hessian(
        self, theta: np.ndarray, logdet: str, logr2_weight: float, singular_nan: bool = True
    ) -> tuple[tuple[float, float, float] | None, np.ndarray, np.ndarray]:
        """:meth:`log_terms_and_gradient` and the exact Hessian of ``l + w log r^2``.

        ``D`` is linear in theta, so with ``Omega_i = E_i' K + K' E_i`` and
        ``Omega_ij = E_i' A E_j + E_j' A E_i``, ``G = Omega^{-1}``, ``P = K G``,
        ``u = G e_m``, ``[G]_mm = 1 / r^2`` and ``a_i = Omega_i u``:

            d log|Omega|   = 2 sum P[r, c],
            d^2 log|Omega| = tr(G Omega_ij) - tr(G Omega_i G Omega_j)
                           = 2 sum (G[c, c'] B[r, r'] - P[r, c'] P[r', c]),
                                                                 B = A - K G K',
            d log r^2      = r^2 u' a_i = g_i,
            d^2 log r^2    = r^2 (u' Omega_ij u - 2 a_i' G a_j) + g_i g_j,
                                       u' Omega_ij u = 2 sum u[c] A[r, r'] u[c'],

        sums over the positions ``(r, c)`` of ``theta_i`` and ``(r', c')`` of ``theta_j`` in
        ``D`` (the derivatives of a log determinant and of an inverse's entry: Magnus &
        Neudecker, Matrix Differential Calculus, ch. 8). ML's ``l_Z = log|Omega_ZZ|`` takes
        the first two with the ``ZZ`` blocks of ``A``, ``K`` and ``Omega``. Sums over pairs
        of positions are ``S' M S`` with ``M`` the ``(positions x positions)`` matrix of the
        summands and ``S`` the positions-by-theta indicator; with 1 x 1 templates (``r =
        c``) ``M`` is a whole ``m x m`` matrix and ``S`` its columns-by-theta indicator.
        ``G``, ``P`` and ``B`` cost two ``m x m`` products more than the gradient; the
        Hessian is exact where differences of the gradient take one gradient per parameter
        and are ~1e-5 relative.

        Entries of a template with a (near-)zero diagonal are NaN in the gradient and in
        their rows and columns of the Hessian (as :meth:`log_terms_and_gradient`), unless
        ``singular_nan`` is False: the formulas hold on the boundary too (``Omega`` stays
        positive definite), and a bound-constrained Newton method needs them there.
        """
        theta = np.asarray(theta, dtype=np.float64)
        k = self.structure.ntheta
        U, K = self._factor(theta)
        if U is None:
            return None, np.full(k, np.nan), np.full((k, k), np.nan)
        q = self._q
        diag = U.diagonal()
        r2 = float(diag[-1]) ** 2
        if self._one_term is not None:
            found = self._one_term_log_diagonal(float(theta[0]))
            if found is None:  # pragma: no cover - Omega was factored just above
                return None, np.full(k, np.nan), np.full((k, k), np.nan)
            terms = (found[0], 2.0 * float(np.add.reduce(found[1])), found[2])
        elif logdet == "zx":
            terms = (2.0 * float(np.add.reduce(np.log(diag[:-1]))), 0.0, r2)
        else:
            terms = self._log_terms(diag)
        A = self._W
        G, _ = _dpotrs(U, read_only_identity(self._m), lower=0)  # Omega^{-1}, whole and symmetric
        if self._one_term is None and self.scalar_terms:
            found2 = self._scalar_interior_derivatives(theta, U, G, r2, logdet, logr2_weight)
            if found2 is not None:
                grad, H = found2
                if singular_nan:
                    self._nan_singular(theta, grad, H)
                return terms, grad, H
        P = K @ G
        u = G[-1]  # G e_m (G is symmetric)
        Ku = P[:, -1]
        if logdet == "zx":
            weight = logr2_weight - 1.0  # log|Omega| = l_ZX + log r^2
            Gd, Pd, Kd, Ad = G, P, K, A
        else:
            weight = logr2_weight
            Kd = K[:q, :q]
            Gd, _ = _dpotrs(U[:q, :q], read_only_identity(q), lower=0)
            Pd = Kd @ Gd
            Ad = A[:q, :q]
        wr2 = weight * r2
        S = self._indicator()
        if self._scalar:
            Sd = S if logdet == "zx" else S[:q]
            M = Gd * (Ad - Pd @ Kd.T)
            M -= Pd * Pd.T
            g_det = Pd.diagonal() @ Sd
            uS = u[:, None] * S
            a = Ku[:, None] * S
            a += K.T @ uS
            H = Sd.T @ M @ Sd + wr2 * (uS.T @ A @ uS)
        else:
            # Sums over pairs of positions: the matrices' entries at (c, c'), (r, r') and
            # (r, c') gathered for every pair, each by one take() of flat positions made
            # once (two fancy indexings each would copy a row block first).
            r, c = self._rows, self._cols
            at_rc, at_cc, at_rr, A_rr, at_a = self._pairs(Gd.shape[0])
            B = Ad - Pd @ Kd.T
            P_rc = Pd.take(at_rc)
            M = Gd.take(at_cc)
            M *= B.take(at_rr)
            M -= P_rc * P_rc.T
            uc = u[c]
            M += (wr2 * uc)[:, None] * A_rr * uc
            g_det = P_rc.diagonal() @ S
            uS = uc[:, None] * S
            # a_i = sum over theta_i's positions of e_c (K u)[r] + K[r, :]' u[c]: the first
            # sum by one bincount over the flat positions (c, i) of a (np.add.at's order).
            a = np.bincount(at_a, weights=Ku[r], minlength=self._m * k).reshape(self._m, k)
            a += K[r].T @ uS
            H = S.T @ M @ S
        g_r = r2 * (u @ a)
        H -= wr2 * (a.T @ G @ a)
        H *= 2.0
        H += weight * np.multiply.outer(g_r, g_r)
        grad = 2.0 * g_det + weight * g_r
        H += H.T
        H *= 0.5
        if singular_nan:
            self._nan_singular(theta, grad, H)
        return terms, grad, H

    def _nan_singular(self, theta: np.ndarray, grad: np.ndarray, H: np.ndarray) -> None:
        """NaN in the gradient and Hessian entries of the singular parameters at ``theta``
        (:meth:`_singular_entries`), in place."""
        singular = self._singular_entries(theta)
        if singular:
            grad[singular] = np.nan
            H[singular, :] = np.nan
            H[:, singular] = np.nan

    def _scalar_interior_derivatives(
        self,
        theta: np.ndarray,
        U: np.ndarray,
        G: np.ndarray,
        r2: float,
        logdet: str,
        logr2_weight: float,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The gradient and Hessian of :meth:`log_terms_gradient_and_hessian` for scalar terms
        (one theta each) with every ``theta_i^2 a_i`` above :data:`_INTERIOR_MIN` (``a_i``:
        the smallest ``A[c, c]`` of the term's columns); None elsewhere (the general
        formulas then serve, the boundary included).

        With ``D = diag(d)`` invertible, ``D A D = Omega - J`` (``J = diag(I_q, 0)``) turns the
        products with ``K = A D`` into entries of ``G = Omega^{-1}``: with ``Theta`` the
        diagonal of ``D`` over the ``Z`` columns and ``R = I - G_ZZ``,

            P_ZZ = (K G)_ZZ = Theta^{-1} R,      B_ZZ = (A - K G K')_ZZ = Theta^{-1} R Theta^{-1}
            (A - A (A + Phi)^{-1} A = Phi - Phi (A + Phi)^{-1} Phi, Phi = D^{-1} J D^{-1}),
            (K u)_c = -u_c / theta_c on Z columns (D A D u = e_m - J u),

        so the summands ``G B - P P'`` of the log determinant's Hessian are
        ``(2 G_ZZ - I) R / (theta_c theta_c')``, its gradient ``sum (1 - G_cc) / theta_c``,
        and ``a_i = Omega_i u = E_i K u + D A E_i u`` needs one product with ``A`` (``k``
        columns) instead of the ``m x m`` products ``K G`` and ``P K'``. ML's ``l_Z`` takes
        the same with ``G`` replaced by ``Omega_ZZ^{-1}``. The subtraction ``1 - G_cc`` loses
        ``eps / (theta_c^2 a_c)`` relative: hence the floor.
        """
        setup = self._interior
        if setup is None:
            setup = self._interior_setup()
        Sz, Wz, amin, eye_q = setup
        t = theta.tolist()
        for ti, ai in zip(t, amin, strict=True):
            if not ti * ti * ai >= _INTERIOR_MIN:
                return None
        q = self._q
        inv_t = np.array([1.0 / ti for ti in t])
        u = G[-1]  # G e_m (G is symmetric)
        if logdet == "zx":
            weight = logr2_weight - 1.0  # log|Omega| = l_ZX + log r^2
            Gz = G[:q, :q]
        else:
            weight = logr2_weight
            Gz, _ = _dpotrs(U[:q, :q], read_only_identity(q), lower=0)
        R = eye_q - Gz
        Q = Gz - R
        Q *= R  # (2 G_ZZ - I) R
        scale = np.multiply.outer(inv_t, inv_t)
        Hdet = Sz.T @ Q @ Sz
        Hdet *= scale
        g_det = (R.diagonal() @ Sz) * inv_t
        uz = u[:q, None] * Sz  # u on each term's columns, (q x k)
        Au = Wz @ uz  # A E_i u, (m x k)
        d = self._ones.copy()
        d[self._rows] = theta[self._src]
        a = Au * d[:, None]  # D A E_i u
        a[:q] -= uz * inv_t  # + E_i K u
        g_r = r2 * (u @ a)
        wr2 = weight * r2
        H = uz.T @ Au[:q]  # (E_i u)' A (E_j u): u' Omega_ij u / 2
        H -= a.T @ (G @ a)
        H *= wr2
        H += Hdet
        H *= 2.0
        H += weight * np.multiply.outer(g_r, g_r)
        grad = 2.0 * g_det + weight * g_r
        H += H.T
        H *= 0.5
        return grad, H

    def _interior_setup(self) -> tuple[np.ndarray, np.ndarray, list[float], np.ndarray]:
        """What :meth:`_scalar_interior_derivatives` reuses: the ``Z`` columns' indicator by
        theta (``q x k``), ``A``'s ``Z`` columns (``m x q``), each term's smallest ``A[c, c]``
        and ``I_q``; made on first use."""
        q = self._q
        Sz = np.ascontiguousarray(self._indicator()[:q])
        Wz = np.ascontiguousarray(self._W[:, :q])
        diag = self._W.diagonal()
        amin = [float(diag[s:e].min()) for s, e in self._spans]
        eye_q = np.zeros((q, q))
        eye_q.ravel()[:: q + 1] = 1.0
        self._interior = (Sz, Wz, amin, eye_q)
        return self._interior

    # -- estimates ------------------------------------------------------------
    def estimates(
        self, theta: np.ndarray, dof: float
    ) -> tuple[Estimates, tuple[float, float, float]]:
        """beta-hat, sigma-hat, Var(beta-hat) and the conditional modes at theta, and the log
        terms there; ``sigma^2 = r^2 / dof`` (``n - p`` for REML, ``n`` for ML)."""
        theta = np.asarray(theta, dtype=np.float64)
        terms0 = self.structure.terms
        if len(terms0) == 1 and self._scalar and self.structure.ntheta == 1:
            return self._one_term_estimates(float(theta[0]), dof)
        U, _ = self._factor(theta)
        if U is None:
            raise np.linalg.LinAlgError("Omega is not positive definite at theta")
        q, p, m = self._q, self.p, self._m
        terms = self._log_terms(U.diagonal())
        sigma2 = terms[2] / dof
        if p:
            R = np.asfortranarray(U[q : q + p, q : q + p])  # R_X (upper)
            beta, _ = _dtrtrs(R, U[q : q + p, m - 1], lower=0)
            vcov = _scaled_inverse(R, sigma2)
        else:
            beta, vcov = np.zeros(0), np.zeros((0, 0))
        rhs = U[:q, m - 1] - U[:q, q : q + p] @ beta
        u, _ = _dtrtrs(np.asfortranarray(U[:q, :q]), rhs, lower=0)
        us, bs = [], []
        grouped = self.structure.terms
        if self._scalar and self.structure.ntheta == len(grouped):
            # b = Lambda u with 1 x 1 templates: each mode times its term's theta (the
            # products of the template product below, without building the templates).
            for term, (s, e), t in zip(grouped, self._spans, theta, strict=True):
                uk = u[s:e].reshape(term.nlevels, 1)
                us.append(uk)
                bs.append(uk * t)
        else:
            templates = self.structure.templates(theta)
            for term, (s, e), T in zip(grouped, self._spans, templates, strict=True):
                uk = u[s:e].reshape(term.nlevels, term.ncols)
                us.append(uk)
                bs.append(uk @ T.T)
        est = Estimates(
            beta=np.asarray(beta),
            sigma=math.sqrt(sigma2),
            vcov_beta=vcov,
            b=tuple(bs),
            u=tuple(us),
        )
        return est, terms

    def _one_term_estimates(
        self, t: float, dof: float
    ) -> tuple[Estimates, tuple[float, float, float]]:
        """:meth:`estimates` of a model with one scalar term, from the ``(p + 1)`` square
        Schur complement (see :meth:`_one_term_log_diagonal`).

        With ``d_l = 1 + t^2 n_l``, the factor's first block is ``diag(sqrt(d_l))`` and its
        block beside it ``diag(1 / sqrt(d_l)) t S'``, so ``L_Z' u = c_u - L_XZ' beta``
        (Bates et al. 2015, eq. 36) is ``u_l = t (S_yl - S_Xl' beta) / d_l``, ``b = t u``;
        ``R_X``, ``r_Xy`` and ``r`` are the factor of ``C = G - S diag(t^2 / d) S'``.
        """
        q, p = self._q, self.p
        W = self._W
        n_l = W.diagonal()[:q]
        S = W[q:, :q]
        t2 = t * t
        d = n_l * t2
        d += 1.0
        C = W[q:, q:] - (S * (t2 / d)) @ S.T
        # C is symmetric: its transpose is the same matrix in Fortran order.
        U, info = _dpotrf(C.T, lower=0, clean=0, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError("Omega is not positive definite at theta")
        diag = U.diagonal()
        # np.add.reduce: ndarray.sum's Python-level wrapper costs more than these sums.
        logs = np.log(diag[:p])
        terms = (
            float(np.add.reduce(np.log(d))),
            2.0 * float(np.add.reduce(logs)),
            float(diag[p]) ** 2,
        )
        sigma2 = terms[2] / dof
        if p:
            R = U[:p, :p]
            beta, _ = _dtrtrs(R, U[:p, p], lower=0)
            vcov = _scaled_inverse(R, sigma2)
            resid = S[p] - beta @ S[:p]
        else:
            beta, vcov = np.zeros(0), np.zeros((0, 0))
            resid = S[p].copy()
        u = (t * resid / d).reshape(q, 1)
        est = Estimates(
            beta=np.asarray(beta), sigma=math.sqrt(sigma2), vcov_beta=vcov, b=(u * t,), u=(u,)
        )
        return est, terms
