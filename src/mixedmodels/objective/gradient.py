"""The analytic gradient of the profiled deviance with respect to theta.

With ``Omega(theta) = D' A D + diag(I_q, 0)``, ``D = blockdiag(Lambda, I)`` and ``A`` the
cross products of ``[Z X y]`` (see :mod:`.deviance`), the deviance is built from the log
determinants of three leading blocks of ``Omega``: ``l_Z`` (random effects), ``l_ZX``
(plus the fixed effects) and ``l_all`` (plus y), since ``log r^2 = l_all - l_ZX``:

    ML:   d = l_Z  + n       log r^2 + const
    REML: d = l_ZX + (n - p) log r^2 + const

For a leading block ``S`` containing Z, ``d l_S / d theta_i = tr(Omega_S^{-1} dOmega_S)``
and ``Omega_S^{-1} D_S' A_SS D_S = I - Omega_S^{-1} J_S`` (``J_S`` = the identity on Z),
so with ``E_i = dLambda / d theta_i``

    d l_S / d theta_i = 2 tr((I_q - [Omega_S^{-1}]_ZZ) Lambda^{-1} E_i).

``E_i`` is the template entry ``(r, c)`` of one term repeated on every level, so only the
sum over that term's levels of the diagonal blocks of ``[Omega_S^{-1}]_ZZ`` is needed:

* ``[Omega_Z^{-1}]_ZZ = (L_Z L_Z')^{-1}``: per level of term 1 ``M_l^{-1} + G_l' G_l``
  (as in :func:`.solution.conditional_variances`), summed as ``tr(S^{-1} H_a H_b')``
  without forming ``G``; for the other terms the diagonal blocks of
  ``S^{-1} = (L22 L22')^{-1}``;
* ``[Omega_ZX^{-1}]_ZZ`` and ``[Omega^{-1}]_ZZ`` add ``Y_X Y_X'`` and ``y_y y_y'``, where the
  columns ``Y`` are the rows of ``L^{-1}`` for X and y restricted to Z (p + 1 triangular
  solves through the blocked factor).

Writing ``E_i = D F_i`` needs only the template of ``theta_i``'s own term invertible
(``D`` is block diagonal). Where a template has a zero diagonal (a boundary, singular
optimum) the entries of that term are returned as NaN; the other terms' entries are
exact. The cost is one factorisation,
one inverse of the rest block (``q_r^3 / 3`` flops) and sparse products with the pattern
of ``Zr'Z1``; no step touches the rows of the data.

References: Bates, Maechler, Bolker & Walker (2015), JSS 67(1), sec. 3 (the factor and the
deviance); the trace identity for ``d log det`` is standard (e.g. Magnus & Neudecker,
Matrix Differential Calculus, ch. 8).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg.lapack import dpotrf as _dpotrf
from scipy.linalg.lapack import dpotrs as _dpotrs
from scipy.linalg.lapack import dsyev as _dsyev
from scipy.linalg.lapack import dtrtri as _dtrtri

from mixedmodels.linalg.blocked import BlockedFactor
from mixedmodels.linalg.choice import dense_system, prefers_dense
from mixedmodels.linalg.dense import read_only_identity
from mixedmodels.linalg.dense_rest import (
    balanced_scalar_crossed,
    balanced_traces,
    rest_inverse_diagonal,
)
from mixedmodels.linalg.solution import (
    block_diagonal_sparse,
    rest_inverse_in_place,
    rest_inverse_lower,
    rest_lambda_sparse,
    solve_l22_transposed,
)
from mixedmodels.objective.profiled_deviance import ProfiledDeviance

_LOG_2PI = math.log(2.0 * math.pi)
#: The powers 1, 2, 3 of OneTermDerivatives' level weights, as a column (broadcast).
_POWERS = np.array([[1.0], [2.0], [3.0]])
# A template diagonal below this (relative to the template's largest entry, and absolute)
# is treated as singular: Lambda^{-1} would amplify rounding beyond use.
_SINGULAR_DIAGONAL = 1e-6
# Up to this many entries of Zr'Z1 the term-1 trace uses dense products (no sparse
# bookkeeping, which costs more than the arithmetic on small models).
_DENSE_LIMIT = 1 << 18


def _symmetric(upper: np.ndarray) -> np.ndarray:
    """A symmetric copy of a (small) matrix from its upper triangle."""
    out = np.triu(upper)
    return out + np.triu(out, 1).T


def _lower_inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of a small non-singular lower-triangular matrix (LAPACK trtri, no checks)."""
    inv, info = _dtrtri(T, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError("singular triangular matrix")
    return np.tril(inv)


def _level_sums(Y: np.ndarray) -> np.ndarray:
    """``sum_l Y_l Y_l'`` for a stack (l, b, j): (b, b).

    As one matrix product ``Z Z'`` with ``Z = [Y_1 ... Y_l]`` (b, l j): BLAS, where einsum's
    generic loop over 1e6 levels took 8x longer (23 ms against 3 ms at 1e5 levels)."""
    b = Y.shape[1]
    Z = np.ascontiguousarray(np.swapaxes(Y, 0, 1)).reshape(b, -1)
    return Z @ Z.T


#: The large path's rest block may have at most this many columns for its gradient to count
#: as cheap (its inverse, ``q_r^3 / 3`` flops, is then below one evaluation's level work).
_CHEAP_REST_MAX = 2048


def _large_path(dev: ProfiledDeviance) -> bool:
    """Whether ``dev`` factors through the level-by-level rank update (a term 1 with several
    columns and a rest block, too large for the dense update) with a small rest block."""
    from mixedmodels.linalg.rank_update import LevelBlockUpdate

    system = getattr(dev, "system", None)
    pattern = getattr(system, "pattern", None)
    if not isinstance(pattern, LevelBlockUpdate):
        return False
    return int(system.rest_offsets[-1]) <= _CHEAP_REST_MAX


#: With a wider rest block than this, the large path's gradient takes Newton steps below
#: this relative size from the criterion's value alone (see ``value_step_max``).
_DEAR_VALUE_STEP = 1e-7
#: The same bound on the large path (``LevelBlockUpdate``), where a gradient costs ~1.6
#: evaluations.
_LARGE_VALUE_STEP = 1e-7
#: Remembered points used for the finish's Hessian lie at most this far from the optimum
#: (relative; BOBYQA's early stop leaves only two or three points within 2e-3, and the
#: secant updates refresh what the farther points' third derivatives cost) ...
_REMEMBERED_RADIUS = 1e-2
#: ... and their equations' condition number (each scaled to its size) stays below this.
_REMEMBERED_COND = 100.0


#: A gradient's inverse of a wide rest block (LAPACK potri: trtri and lauum, ``n^3 / 3``
#: flops each), in factorisations (``n^3 / 3``): measured 2.0-2.2 on 1e4 and 2.5e3 rest
#: columns (one thread).
_POTRI_FACTORISATIONS = 2.0
#: BOBYQA's evaluations (early stop) per theta on a wide rest block, measured: 13 at k = 2
#: (an unbalanced scalar term 1), 21-25 at k = 3 (three scalar terms), 26-54 at k = 4
#: (the grid's model in miniature; 32-37 on its 1e4-item cells); the finish adds ~4
#: gradients.
_BOBYQA_PER_THETA = 7.0
#: Values and gradients of the Newton steps from the moment start with a quasi-Newton
#: Hessian (the last a value alone), measured 5-12 (k = 3 and 4).
_NEWTON_STEPS = 8


def wide_newton_pays(k: int, inverse: float) -> bool:
    """Whether Newton steps from the start (:mod:`mixedmodels.optimize.wide_rest`) cost
    fewer factorisations than BOBYQA and the finish on a wide dense rest block, for ``k``
    theta and a gradient whose inverse costs ``inverse`` factorisations.

    Newton: the value and gradient at the start, the value Hessian (at most
    ``k (k + 1) / 2`` values), ``_NEWTON_STEPS`` values and gradients; BOBYQA: ``~7 k``
    values and the finish's ~4 values and gradients. At ``inverse = 2`` this holds from
    ``k = 4`` on: k = 3, 34 against 33 by these counts, measured on 12 fits of three
    scalar terms 517 against 532 factorisation-equivalents (Newton 6 of 12, each within
    10% either way, and 5 for each fallback); k = 4, 38 against 40, measured 2338
    against 2411 on 30 fits (16 by Newton: 483 against 655) and 29 against 42 at 2e5
    rows (2e4 users, 2500 items).
    """
    gradient = 1.0 + inverse
    newton = gradient + k * (k + 1) / 2 + _NEWTON_STEPS * gradient
    bobyqa = _BOBYQA_PER_THETA * k + 4.0 * gradient
    return newton < bobyqa


def _dear_rest(dev: ProfiledDeviance) -> bool:
    """Whether ``dev`` is blocked with a dense rest block wider than ``_CHEAP_REST_MAX``
    (a crossed design's 1e4 levels): its gradient's inverse costs about two factorisations,
    and every factorisation is a large dense Cholesky."""
    system = getattr(dev, "system", None)
    offsets = getattr(system, "rest_offsets", None)
    if offsets is None or getattr(system, "uses_dense_update", True):
        return False
    return int(offsets[-1]) > _CHEAP_REST_MAX


#: Levels per slice of the large path's 2 x 2 closed forms (bounds their temporaries).
_LEVEL_SLICE = 1 << 15


def _y1_sums_2x2(
    T1: np.ndarray, Minv: np.ndarray, acc: np.ndarray, p: int
) -> tuple[np.ndarray, np.ndarray]:
    """``sum_l Y_l Y_l'`` over the X columns and over y of ``Y_l = -M_l^{-1} T1' acc_l`` for
    2 x 2 blocks, with ``acc`` level-last ``(p + 1, 2, l)``: entry by entry over the levels
    (numpy's batched products of 1e6 stacked blocks cost ~0.1 s each). Operands are made
    contiguous first: strided ones broadcast over ``p + 1`` rows cost 3x more."""
    t00, t10, t11 = float(T1[0, 0]), float(T1[1, 0]), float(T1[1, 1])
    nlev = acc.shape[2]
    out = np.zeros((2, 3))  # [X rows, y row] x [00, 01, 11]
    # In slices of levels: temporaries of a few MB (in cache) instead of eight arrays of
    # (p + 1) x 1e6 doubles at once (the large path's peak memory is a gradient's).
    for l0 in range(0, nlev, _LEVEL_SLICE):
        sl = slice(l0, min(l0 + _LEVEL_SLICE, nlev))
        i00, i10, i11 = (np.ascontiguousarray(Minv[sl, r, c]) for r, c in ((0, 0), (1, 0), (1, 1)))
        a0, a1 = acc[:, 0, sl], acc[:, 1, sl]
        b0 = t00 * a0 + t10 * a1  # T1' acc, (p + 1, levels) each
        b1 = t11 * a1
        y0 = i00 * b0 + i10 * b1  # -Y_l (the sign cancels in the products)
        y1 = i10 * b0 + i11 * b1
        for r, rows in enumerate((slice(0, p), slice(p, p + 1))):
            u, v = y0[rows].ravel(), y1[rows].ravel()
            out[r] += (float(np.dot(u, u)), float(np.dot(u, v)), float(np.dot(v, v)))

    def sums(r: int) -> np.ndarray:
        return np.array([[out[r, 0], out[r, 1]], [out[r, 1], out[r, 2]]])

    return sums(0), sums(1)


def _trace_2x2(T1: np.ndarray, Minv: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``sum_l (T1 M_l^{-1})' K_l (T1 M_l^{-1})`` for 2 x 2 blocks, entry by entry over the
    levels (numpy's batched products on 1e6 stacked 2 x 2 blocks cost ~0.1 s each; these
    are a few whole-array products of 1e6 numbers)."""
    t00, t10, t11 = float(T1[0, 0]), float(T1[1, 0]), float(T1[1, 1])
    i00, i10, i11 = Minv[:, 0, 0], Minv[:, 1, 0], Minv[:, 1, 1]
    # TM = T1 M^{-1}: rows c, columns a.
    tm00, tm01 = t00 * i00, t00 * i10
    tm10 = t10 * i00 + t11 * i10
    tm11 = t10 * i10 + t11 * i11
    k00, k10, k11 = K[:, 0, 0], K[:, 1, 0], K[:, 1, 1]
    # KT = K TM, then out[a, b] = sum_l sum_c TM[c, a] KT[c, b].
    kt00 = k00 * tm00 + k10 * tm10
    kt01 = k00 * tm01 + k10 * tm11
    kt10 = k10 * tm00 + k11 * tm10
    kt11 = k10 * tm01 + k11 * tm11
    o00 = float(np.dot(tm00, kt00) + np.dot(tm10, kt10))
    o01 = float(np.dot(tm00, kt01) + np.dot(tm10, kt11))
    o10 = float(np.dot(tm01, kt00) + np.dot(tm11, kt10))
    o11 = float(np.dot(tm01, kt01) + np.dot(tm11, kt11))
    return np.array([[o00, o01], [o10, o11]])


class ProfiledDevianceGradient:
    """The gradient of a :class:`.deviance.ProfiledDeviance` with respect to theta.

    Built once per deviance (it keeps a dense copy of ``Zr'Z1`` when that is small);
    calling it with theta returns the (ntheta,) gradient in the deviance's own order.

    Entries of a term whose template has a (near-)zero diagonal are NaN: the formula
    needs that template's inverse.

    Examples
    --------
    >>> grad = ProfiledDevianceGradient(dev)     # doctest: +SKIP
    >>> grad(theta_hat)                           # ~0 at an interior optimum  # doctest: +SKIP
    """

    cheap = False  # an inverse of the rest block per call: several evaluations' worth
    #: Whether the Newton finish may refresh its Hessian by secant (BFGS) updates from the
    #: gradients it already has, instead of new finite differences (the large path).
    secant_updates = False
    #: Newton steps below this relative size are taken without a new gradient
    #: (``optimize.finish.VALUE_STEP_MAX`` unless the rest block is dense and wide).
    value_step_max = 1e-8
    #: ``(theta, f, g) -> H or None``: the Newton finish's Hessian from deviance values the
    #: optimiser has already computed near theta (set for a wide dense rest block only).
    hessian_from_values = None
    #: ``n_l`` of a balanced scalar term 1 whose gradient traces come from ``diag(S^{-1})``
    #: (:mod:`mixedmodels.linalg.dense_rest`; a wide rest block only), else None.
    _balanced_n1: float | None = None
    #: Whether the fit may start with Newton steps from its start values: the finish's
    #: steps with BFGS updates on the large path (``optimize.finish.newton_secant_first``,
    #: where ``cheap`` is set), :mod:`mixedmodels.optimize.wide_rest` for a wide dense rest
    #: block, where each factorisation is dear.
    newton_from_start = False

    def __init__(self, dev: ProfiledDeviance):
        self.dev = dev
        A = dev.A
        terms = dev.structure.terms
        self._rest = len(terms) > 1
        if _large_path(dev):
            # A small rest block under many term-1 levels with several columns (1e6 users
            # with slopes, 500 items): the rest block's inverse costs nothing and the
            # gradient's passes over the levels cost about two evaluations, so the finish's
            # Hessian from k gradients (2k evaluations' worth) beats k (k + 1) / 2 deviance
            # values, and it is accurate enough for the convergence check to reuse.
            self.cheap = True
            self.secant_updates = True
            # ... and the same steps from the start beat BOBYQA's ~20 evaluations before
            # them (optimize.finish.newton_secant_first; BOBYQA if they fail).
            self.newton_from_start = True
            # A gradient costs ~1.6 evaluations here: a step below 1e-7 is taken from the
            # value alone (as for a wide dense rest block): with the BFGS Hessian's error
            # (a few %) that leaves ~1e-9 of theta and saves a factorisation and a gradient.
            self.value_step_max = _LARGE_VALUE_STEP
        elif _dear_rest(dev):
            # A dense rest block of 10,000 columns (crossed factors): each gradient inverts
            # it in place (potri, ~2.2 factorisations on top of its own), so a Newton step
            # below 1e-7 is taken from the value alone. With the Hessian's relative error
            # (~1e-3 from new values; ~2% measured for the remembered one after a BFGS
            # update at 1e6 rows) that leaves at most a few 1e-9 of theta, inside the
            # 1e-8 the fit is reproducible to, and saves one factorisation and one
            # inverse (at 1e6 rows, 1e5 x 1e4 levels: ~30 s of a ~200 s fit). (At 1e-6
            # the same fit moved theta by 1.8e-8: too far.)
            self.value_step_max = _DEAR_VALUE_STEP
            self.hessian_from_values = self._remembered_hessian
            self.secant_updates = True  # refreshes a remembered Hessian (only that one)
            # A balanced scalar term 1 and one scalar rest term: both traces from the
            # diagonal of S^{-1} (trtri alone, ~1 factorisation, instead of potri's ~2).
            self._balanced_n1 = balanced_scalar_crossed(dev.system)
            if self._balanced_n1 is not None:
                self._n_rest = dev.A.zrtzr_diagonal()
                # With a gradient that cheap the fit takes Newton steps from its start
                # (optimize/wide_rest.py). With potri's (unbalanced term 1) they cost more
                # than BOBYQA and the finish: 3e5 rows, 10% of them dropped, 10
                # factorisations and 6 inverses against 13 and 3 (6.3 s against 5.6 s).
                self.newton_from_start = True
            elif wide_newton_pays(dev.structure.ntheta, _POTRI_FACTORISATIONS):
                # ... but with more parameters (a vector term 1: (1 + x | user) + (1 | item))
                # BOBYQA's evaluations grow with them (~7 per theta) and Newton steps pay
                # even at potri's price: 2e5 rows x 2e4 users x 2500 items, 15
                # factorisations and 7 inverses against 34 and 4.
                self.newton_from_start = True
        self._zr1 = None
        if self._rest:
            qr, q1 = A.zrtz1.shape
            if qr * q1 <= _DENSE_LIMIT:
                self._zr1 = A.zrtz1.toarray().reshape(qr, terms[0].nlevels, terms[0].ncols)
        #: Term 1's level forms by triangular solves with the factor (the rank update's
        #: "blas" layout, scalar rest terms) instead of products with the inverse.
        pattern = getattr(getattr(dev, "system", None), "pattern", None)
        self._forms_from_factor = bool(
            self._rest
            and self._zr1 is None
            and getattr(pattern, "forms_from_factor", False)
            and all(t.ncols == 1 for t in terms[1:])
        )
        self.evaluations = 0

    def _remembered_hessian(self, x: np.ndarray, f0: float, g: np.ndarray) -> np.ndarray | None:
        """The Hessian at ``x`` fitted to the deviance values remembered near it.

        BOBYQA's last points lie within its final trust region, a few 1e-4 from ``x``, and
        the deviance remembers its recent values by theta. With the gradient ``g`` known,
        each point ``x + d`` gives one linear equation ``f(x + d) - f0 - g'd = d'Hd / 2``
        (error ``O(|d|^3)``); ``k (k + 1) / 2`` well-placed points determine ``H``. On a
        crossed design with a 1e4 x 1e4 rest block that replaces the finish's 3 new
        factorisations (~30 s at 1e6 rows). Points farther than ``_REMEMBERED_RADIUS``
        (relative, the finite-difference Hessian's own step), equations that are nearly
        dependent or a fit that is not positive definite give None: the caller then
        takes the differences as before.
        """
        memo = getattr(self.dev, "_memo", None)
        k = x.shape[0]
        need = k * (k + 1) // 2
        if not memo or len(memo) < need:
            return None
        scale = np.maximum(1.0, np.abs(x))
        near = []
        for key, value in memo.items():
            t = np.frombuffer(key, dtype=np.float64)
            if t.shape != x.shape or not np.isfinite(value):
                continue
            d = t - x
            size = float(np.max(np.abs(d) / scale))
            if 0.0 < size <= _REMEMBERED_RADIUS:
                near.append((size, d, value))
        if len(near) < need:
            return None
        near.sort(key=lambda item: item[0])
        near = near[: 2 * need]
        iu = np.triu_indices(k)
        rows, rhs = [], []
        for _, d, value in near:
            outer = np.outer(d, d)
            # Unknowns H_ij (i <= j): d'Hd / 2 = sum_i H_ii d_i^2 / 2 + sum_{i<j} H_ij d_i d_j.
            mono = np.where(iu[0] == iu[1], 0.5, 1.0) * outer[iu]
            w = 1.0 / float(d @ d)  # every equation relative to its size
            rows.append(mono * w)
            rhs.append((value - f0 - float(g @ d)) * w)
        M, b = np.array(rows), np.array(rhs)
        if np.linalg.cond(M) > _REMEMBERED_COND:
            return None
        h = np.linalg.lstsq(M, b, rcond=None)[0]
        H = np.empty((k, k))
        H[iu] = h
        H[iu[1], iu[0]] = h
        try:
            np.linalg.cholesky(H)
        except np.linalg.LinAlgError:
            return None
        return H

    def _rest_blocks(self):
        """(term, start, stop) of each rest term in the rest block."""
        offs = self.dev.system.rest_offsets
        for k, term in enumerate(self.dev.structure.terms[1:], start=1):
            yield k, term, int(offs[k - 1]), int(offs[k])

    def _lambda_rows(self, Y: np.ndarray, templates: list[np.ndarray], trans: bool):
        """``Lambda_r Y`` (or ``Lambda_r' Y``) for an array whose first axis is the rest block."""
        out = np.empty_like(Y)
        for k, term, s, e in self._rest_blocks():
            T = templates[k].T if trans else templates[k]
            blk = Y[s:e].reshape(term.nlevels, term.ncols, -1)
            out[s:e] = np.einsum("ab,lbx->lax", T, blk).reshape(out[s:e].shape)
        return out

    def _rest_scale(self, f: BlockedFactor) -> np.ndarray:
        """The diagonal of ``Lambda_r`` (rest terms with one column each)."""
        rest = self.dev.structure.terms[1:]
        return np.concatenate(
            [np.full(t.nlevels, f.templates[k][0, 0]) for k, t in enumerate(rest, 1)]
        )

    def _term1_trace(
        self, f: BlockedFactor, Sinv: np.ndarray, K: np.ndarray | None = None
    ) -> np.ndarray:
        """``sum_l G_l' G_l`` for term 1 as ``tr(S^{-1} H_a H_b')``, ``H = Lambda_r' A_r1 BD``.

        ``K``: the level forms ``C_l' Sigma C_l`` when already known (see ``_gradient``)."""
        dev = self.dev
        p1 = dev.structure.terms[0].ncols
        pattern = getattr(dev.system, "pattern", None)
        rest = dev.structure.terms[1:]
        if (
            p1 == 2
            and self._zr1 is None
            and pattern is not None
            and all(t.ncols == 1 for t in rest)
        ):
            TM = None  # the 2 x 2 closed form below forms what it needs
        else:
            TM = f.templates[0][None] @ f.M11inv  # (l1, p1, p1): T1 M_l^{-1}
        if self._zr1 is not None:
            K = self._lambda_rows(self._zr1, f.templates, trans=True)
            H = np.einsum("rlb,lba->rla", K, TM)
            SH = (_symmetric(Sinv) @ H.reshape(H.shape[0], -1)).reshape(H.shape)
            return np.einsum("rla,rlb->ab", H, SH)
        if pattern is not None and all(t.ncols == 1 for t in rest):
            # tr(S^{-1} H_a H_b') = sum_l (TM_l' K_l TM_l)[a, b] with K_l = C_l' Sigma C_l,
            # Sigma = Lambda_r S^{-1} Lambda_r' (diagonal Lambda_r): one pass over the
            # rank update's pairs instead of sparse products H_a H_b'.
            if K is None:
                d = self._rest_scale(f)
                rows, cols = pattern.rows, pattern.cols
                sigma = Sinv[cols, rows] * d[rows] * d[cols]  # S^{-1}: upper triangle valid
                K = pattern.level_forms(sigma)
            if p1 == 2:
                return _trace_2x2(f.templates[0], f.M11inv, K)
            # sum_l TM_l' (K_l TM_l): a batched product, then one (p1, l p1) x (l p1, p1)
            # product (einsum's three-operand loop cost 17x more on 1e5 levels).
            KT = np.matmul(K, TM)
            n = TM.shape[0] * p1
            return TM.reshape(n, p1).T @ KT.reshape(n, p1)
        BD = block_diagonal_sparse(TM)
        H = (rest_lambda_sparse(dev.system, f.templates).T @ (dev.A.zrtz1 @ BD)).tocsc()
        cols = [H[:, a::p1].tocsr() for a in range(p1)]
        # H_a H_b' has ~10% fill on crossed designs (1e7 entries for 1e4 rest levels):
        # formed in slices of rows, so its index arrays never exist whole.
        qr = H.shape[0]
        step = max(256, -(-qr // 16))
        gg = np.empty((p1, p1))
        for a in range(p1):
            for b in range(a + 1):
                right = cols[b].T.tocsc()
                total = 0.0
                for r0 in range(0, qr, step):
                    HH = (cols[a][r0 : r0 + step] @ right).tocoo()
                    rows = HH.row + r0
                    lo, hi = np.minimum(rows, HH.col), np.maximum(rows, HH.col)
                    total += float(np.dot(HH.data, Sinv[lo, hi]))
                gg[a, b] = gg[b, a] = total
        return gg

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The deviance and its gradient at ``theta`` from one factorisation.

        The value is ``inf`` (and the gradient NaN) where a block is not positive definite.
        """
        try:
            f, owned = self.dev.owned_factor(np.asarray(theta, dtype=np.float64))
        except np.linalg.LinAlgError:
            return float("inf"), np.full(self.dev.structure.ntheta, np.nan)
        value = float(self.dev.objective(f))
        return value, self._gradient(np.asarray(theta, dtype=np.float64), f, owned)

    def __call__(self, theta: np.ndarray, factor: BlockedFactor | None = None) -> np.ndarray:
        """Gradient at ``theta`` (``factor``: ``dev.factor(theta)`` when already computed;
        it is left intact)."""
        theta = np.asarray(theta, dtype=np.float64)
        if factor is not None:
            return self._gradient(theta, factor, owned=False)
        f, owned = self.dev.owned_factor(theta)
        return self._gradient(theta, f, owned)

    def of_owned_factor(self, theta: np.ndarray, f: BlockedFactor, owned: bool) -> np.ndarray:
        """Gradient from ``(f, owned) = dev.owned_factor(theta)`` that the caller has read
        first; an ``owned`` factor is consumed, as in :meth:`value_and_gradient` (no second
        copy of a large rest block)."""
        return self._gradient(np.asarray(theta, dtype=np.float64), f, owned)

    def _gradient(self, theta: np.ndarray, f: BlockedFactor, owned: bool) -> np.ndarray:
        """The gradient from the factor at ``theta``; an ``owned`` factor is consumed (the
        rest block is inverted in its own storage: on 10,000 rest levels that saves an
        800 MB array)."""
        dev = self.dev
        self.evaluations += 1
        templates = f.templates
        inverses: list[np.ndarray | None] = []
        for T in templates:
            d = np.abs(np.diag(T))
            singular = np.min(d) <= _SINGULAR_DIAGONAL * max(1.0, float(np.max(np.abs(T))))
            inverses.append(None if singular else _lower_inverse(T))
        A, p = dev.A, dev.p
        structure = dev.structure

        # Rows of L^{-1} for the X and y columns, restricted to the random effects, by
        # back-substitution through L' block by block: Y_Xy = L_XX^{-T},
        # Y_r = L22^{-T}(-L_X2' Y_Xy), Y_1 = -M^{-1} T1' (A_1r Lambda_r Y_r + A_1,Xy Y_Xy).
        Yxy = _lower_inverse(f.LXX).T
        c, l, a = A.xytz1.shape
        pattern = getattr(dev.system, "pattern", None)
        if self._rest and a == 2 and self._zr1 is None and hasattr(pattern, "transpose_times"):
            # The large path with 2 x 2 blocks: Y_1 in closed form, level-last.
            Yr = solve_l22_transposed(f, -(f.LX2.T @ Yxy))
            lamY = self._lambda_rows(Yr, templates, trans=False)
            # (j, a, l): every entry of a level-last array contiguous for the closed form;
            # formed per column a (no second (j, l, a) array at once).
            acc = np.empty((Yxy.shape[1], a, l))
            for col in range(a):
                acc[:, col, :] = Yxy.T @ A.xytz1[:, :, col]
            pattern.transpose_times(lamY, into=acc)
            xsum0, ysum0 = _y1_sums_2x2(templates[0], f.M11inv, acc, p)
        else:
            acc = np.ascontiguousarray(
                (Yxy.T @ A.xytz1.reshape(c, l * a)).reshape(-1, l, a).transpose(1, 2, 0)
            )
            if self._rest:
                Yr = solve_l22_transposed(f, -(f.LX2.T @ Yxy))
                lamY = self._lambda_rows(Yr, templates, trans=False)
                if self._zr1 is not None:
                    acc += np.einsum("rla,rj->laj", self._zr1, lamY)
                elif hasattr(pattern, "transpose_times"):
                    acc += pattern.transpose_times(lamY)  # C read level by level
                else:
                    acc += (A.zrtz1.T @ lamY).reshape(acc.shape)
            Y1 = -(f.M11inv @ (templates[0].T[None] @ acc))
            xsum0, ysum0 = _level_sums(Y1[:, :, :p]), _level_sums(Y1[:, :, p:])

        # Per term: sum over levels of the diagonal blocks of V = (L_Z L_Z')^{-1}, of
        # Y_X Y_X' and of y_y y_y'.
        vsum = [f.M11inv.sum(axis=0)]
        xsum = [xsum0]
        ysum = [ysum0]
        if self._rest and self._balanced_n1 is not None:
            # A wide rest block under a balanced scalar term 1: both traces from
            # diag(S^{-1}) (an owned factor is overwritten by L^{-1}).
            diag = rest_inverse_diagonal(dev.system, f, owned)
            t1, tr = float(templates[0][0, 0]), float(templates[1][0, 0])
            g1, g2 = balanced_traces(diag, self._n_rest, t1, tr, self._balanced_n1)
            vsum[0] = vsum[0] + g1
            vsum.append(np.array([[g2]]))
            p_rows = Yr.reshape(-1, 1, p + 1)
            xsum.append(_level_sums(p_rows[:, :, :p]))
            ysum.append(_level_sums(p_rows[:, :, p:]))
        elif self._rest:
            # S^{-1}, valid in its upper triangle; an owned factor is overwritten by it.
            K1 = None
            if self._forms_from_factor and f.L is not None:
                # Term 1's level forms from the factor itself (dense products with the
                # "blas" layout: a triangular solve per chunk, half the flops of the
                # product with S^{-1}), before the inverse overwrites an owned factor.
                K1 = pattern.level_forms_factor(f.L.T, self._rest_scale(f))
            if owned and f.L is not None:
                Sinv = rest_inverse_in_place(dev.system, f).T
            else:
                Sinv = rest_inverse_lower(f).T
            vsum[0] = vsum[0] + self._term1_trace(f, Sinv, K1)
            for _, term, s, e in self._rest_blocks():
                b = term.ncols
                if b == 1:
                    vsum.append(np.array([[np.trace(Sinv[s:e, s:e])]]))
                else:
                    # The levels' diagonal blocks, from the upper triangle.
                    lev = s + np.arange(term.nlevels)[:, None, None] * b
                    rows = lev + np.arange(b)[None, :, None]
                    cols = lev + np.arange(b)[None, None, :]
                    blocks = Sinv[np.minimum(rows, cols), np.maximum(rows, cols)]
                    vsum.append(blocks.sum(axis=0))
                Yk = Yr[s:e].reshape(term.nlevels, b, p + 1)
                xsum.append(_level_sums(Yk[:, :, :p]))
                ysum.append(_level_sums(Yk[:, :, p:]))

        weight = (dev.n - p) if dev.reml else dev.n
        grad = np.empty(structure.ntheta)
        for k, term in enumerate(structure.terms):
            s, e = structure.offsets[k], structure.offsets[k + 1]
            if inverses[k] is None:
                grad[s:e] = np.nan
                continue
            # 2 tr((I - V_S) T^{-1} E_rc) is entry (c, r) of 2 (l I - sum V_S) T^{-1}; the
            # leading blocks differ by the X and y rows: d(l_ZX - l_Z) and d log r^2.
            total = (term.nlevels * np.eye(term.ncols) - vsum[k]) - weight * ysum[k]
            if dev.reml:
                total = total - xsum[k]
            total = 2.0 * (total @ inverses[k])
            grad[s:e] = total[structure.cols[k], structure.rows[k]]
        return grad


class DenseDevianceGradient:
    """The gradient of a :class:`ProfiledDeviance` over a dense system, for the Newton finish.

    ``cheap``: one gradient costs about one evaluation (one factorisation and a solve), so
    the finish may build its Hessian from gradients.

    Call it with theta for the gradient; :meth:`value_and_gradient` gives both from one
    factorisation (the interface of :class:`ProfiledDevianceGradient`).
    """

    cheap = True

    def __init__(self, dev: ProfiledDeviance):
        self.dev = dev
        self.evaluations = 0

    def value_and_gradient(
        self, theta: np.ndarray, singular_nan: bool = True
    ) -> tuple[float, np.ndarray]:
        self.evaluations += 1
        return self.dev.value_and_gradient(theta, singular_nan)

    def value_gradient_and_hessian(
        self, theta: np.ndarray, singular_nan: bool = True
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """The criterion, its gradient and its exact Hessian from one factorisation (about
        the work of two gradients, where differences of the gradient take one per
        parameter and are ~1e-5 relative). ``singular_nan``: NaN for the entries of a
        template with a (near-)zero diagonal (the default, as the gradient), or the
        derivatives there too (a bound-constrained Newton method's)."""
        self.evaluations += 1
        return self.dev.value_gradient_and_hessian(theta, singular_nan)

    def singular_entries(self, theta: np.ndarray) -> list[int]:
        """The theta indices that :meth:`value_gradient_and_hessian` reports as NaN."""
        return self.dev.system._singular_entries(np.asarray(theta, dtype=np.float64))

    def hessian(self, theta: np.ndarray, g: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """The exact Hessian at ``theta`` and the factorisations it cost (the interface of
        :func:`~mixedmodels.optimize.finish.newton_first`)."""
        return self.value_gradient_and_hessian(theta)[2], 1

    def __call__(self, theta: np.ndarray, factor: object | None = None) -> np.ndarray:
        """Gradient at ``theta`` (``factor`` is accepted for interface parity and unused)."""
        return self.value_and_gradient(theta)[1]


def profiled_deviance_gradient(
    dev: ProfiledDeviance, theta: np.ndarray, factor: BlockedFactor | None = None
) -> np.ndarray:
    """Gradient of ``dev(theta)`` with respect to theta (see :class:`ProfiledDevianceGradient`).

    One-off convenience; build a :class:`ProfiledDevianceGradient` to evaluate it often.
    """
    return ProfiledDevianceGradient(dev)(theta, factor)


def deviance_gradient(dev: ProfiledDeviance) -> ProfiledDevianceGradient | DenseDevianceGradient:
    """The exact gradient of ``dev`` in the form that costs least for its size.

    Dense systems, and small models (:func:`~mixedmodels.linalg.choice.prefers_dense`) get
    the dense formula of :mod:`mixedmodels.linalg.dense` (one ``m x m`` factorisation and
    solve, a few dozen microseconds); larger ones the blocked
    :class:`ProfiledDevianceGradient`.
    """
    if dev.is_dense:
        return DenseDevianceGradient(dev)
    if prefers_dense(dev.structure, dev.p):
        dense = dense_system(dev.structure, A=dev.A)
        return DenseDevianceGradient(ProfiledDeviance(dense, dev.reml, dev.constant))
    return ProfiledDevianceGradient(dev)


class OneTermDerivatives:
    """Value, gradient and Hessian of the criterion of a model with one scalar term, in
    closed form from a ``(p + 1) x (p + 1)`` factorisation.

    With ``n_l = sum z^2`` over level ``l``, ``S = [X y]'Z`` and ``G = [X y]'[X y]``, the
    term's block of ``Omega`` is ``I + t^2 N`` (diagonal), so ``log|L_Z|^2 = a(t) =
    sum log(1 + t^2 n_l)`` and the rest of the factor is that of the Schur complement

        C(t) = G - S diag(w) S',   w_l = t^2 / (1 + t^2 n_l)

    (Bates et al. 2015, sec. 3.5, with a diagonal ``L_Z``). ``log|C| = log|R_X|^2 + log r^2``
    and ``log r^2 = -log [C^{-1}]_mm``, so

        REML: d = a + log|C| + (n - p - 1) log r^2 + const,
        ML:   d = a + n log r^2 + const,

    and with ``C' = -S diag(w') S'``, ``C'' = -S diag(w'') S'``,
    ``w' = 2t / (1 + t^2 n)^2``, ``w'' = (2 - 6 t^2 n) / (1 + t^2 n)^3``,
    ``v = C^{-1} e_m`` and ``rho = v_m = 1 / r^2``:

        d log|C|   = tr(C^{-1} C'),
        d^2 log|C| = tr(C^{-1} C'') - tr(C^{-1} C' C^{-1} C'),
        d log r^2   = v'C'v / rho,
        d^2 log r^2 = (v'C''v - 2 v'C'C^{-1}C'v) / rho + (d log r^2)^2

    (derivatives of a log determinant and of an inverse's entry: Magnus & Neudecker,
    Matrix Differential Calculus, ch. 8). Every trace is a sum over levels of
    ``S_l' C^{-1} S_k`` (``q x q``): no ``m x m`` matrix is formed, and the exact Hessian
    lets the fit take Newton steps from the start (:func:`.optimize.finish.newton_first`).

    The value is computed with the operations of the dense system's one-term closed form
    (:meth:`~mixedmodels.linalg.dense.DenseSystem.log_diagonal`), so it equals the
    optimiser's criterion to the last bit where that form is used.

    Examples
    --------
    >>> d = OneTermDerivatives(dense_dev)            # doctest: +SKIP
    >>> f, g, H = d.value_gradient_hessian(np.array([0.8]))  # doctest: +SKIP
    """

    cheap = True

    def __init__(self, dev: ProfiledDeviance):
        system = dev.system
        W = system.W
        p = int(system.p)
        q = W.shape[0] - p - 1
        self._n_l = W.diagonal()[:q].copy()
        S = W[q:, :q]
        self._G = W[q:, q:]
        self._balanced = _balanced_spectrum(self._n_l, S, self._G)
        self._spectral = None if self._balanced is not None else system.one_term_spectrum()
        if self._balanced is None and self._spectral is None:
            self._level_sum_form(S, p)
        self._reml = dev.reml
        self._dof = float(dev.dof)
        self._n = float(dev.n)
        self._constant = dev.constant
        self.evaluations = 0
        self._last: tuple[float, np.ndarray] | None = None

    def _level_sum_form(self, S: np.ndarray, p: int) -> None:
        """The constants of the general (level-sum) form, which a balanced design does not
        need: per level ``[vec(S_l S_l'), n_l]`` and the powers of ``1 / (1 + t^2 n_l)``."""
        q = S.shape[1]
        m = p + 1
        self._shape = (m, m)
        self._k = m * m
        self._outer = np.empty((q, m * m + 1))
        self._outer[:, : m * m] = (S.T[:, :, None] * S.T[:, None, :]).reshape(q, m * m)
        self._outer[:, -1] = self._n_l
        self._eye = read_only_identity(m)  # read-only: potrs copies it

    def value_gradient_hessian(self, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """The criterion, its (1,) gradient and (1, 1) Hessian at ``theta`` (``inf`` and NaN
        where the Schur complement is not positive definite)."""
        # Written for few NumPy calls: on a small model each costs more than its
        # arithmetic (1-3 us). Every sum over levels is one product of per-level weights
        # with the rows ``[vec(S_l S_l'), 1]`` (_outer): the Schur complement's
        # ``S diag(w) S'``, ``C1 = S diag(w') S'`` and ``C2 = S diag(w'') S'`` (C' = -C1,
        # C'' = -C2) and the sums of a' and a'' come from one matrix product.
        self.evaluations += 1
        t = float(theta[0])
        if self._balanced is not None:
            return self._balanced_vgh(t)
        if self._spectral is not None:
            return self._spectral_vgh(t)
        t2 = t * t
        k, shape = self._k, self._shape
        x = self._n_l * t2
        x += 1.0
        inv = 1.0 / x  # 1 / (1 + t^2 n_l)
        # F[j - 1] = sum_l inv_l^j [vec(S_l S_l'), n_l], j = 1, 2, 3: every weight below is
        # a combination of these (t^2 n_l inv_l = 1 - inv_l), so one power and one
        # product give the Schur complement (w = t^2 inv), C1 (w' = 2t inv^2),
        # C2 (w'' = (2 - 6 t^2 n) inv^3 = 8 inv^3 - 6 inv^2), a' = 2t sum n inv and
        # a'' = sum 2n (1 - t^2 n) inv^2 = 4 sum n inv^2 - 2 sum n inv.
        F = (inv**_POWERS) @ self._outer
        schur = self._G - (F[0, :k] * t2).reshape(shape)
        # schur is symmetric: its transpose is the same matrix in Fortran order.
        U, info = _dpotrf(schur.T, lower=0, clean=0, overwrite_a=1)
        if info != 0:
            return math.inf, np.full(1, np.nan), np.full((1, 1), np.nan)
        diag = U.diagonal()
        pwrss = float(diag[-1]) ** 2
        a = float(np.add.reduce(np.log(x)))
        dof = self._dof
        if self._reml:
            logdet = a + 2.0 * float(np.add.reduce(np.log(diag[:-1])))
        else:
            logdet = a
        value = logdet + dof * (1.0 + _LOG_2PI + math.log(pwrss / dof)) + self._constant
        Ci, _ = _dpotrs(U, self._eye, lower=0)  # C^{-1}, whole (symmetric)
        Fm = F[:, :k].reshape(3, *shape)
        v = Ci[:, -1]  # C^{-1} e_m
        rho = float(v[-1])
        Fv = Fm @ v
        vfv = Fv @ v
        # C1 = 2t F_2, C2 = 8 F_3 - 6 F_2 (as matrices); C' = -C1, C'' = -C2.
        r1 = -2.0 * t * float(vfv[1]) / rho  # d log r^2 = -v'C1 v / rho
        cross = float(Fv[1] @ Ci @ Fv[1])  # v'F_2 C^{-1} F_2 v
        r2 = (6.0 * float(vfv[1]) - 8.0 * float(vfv[2]) - 8.0 * t2 * cross) / rho + r1 * r1
        a1 = 2.0 * t * float(F[0, k])
        a2 = 4.0 * float(F[1, k]) - 2.0 * float(F[0, k])
        if self._reml:
            traces = F[:, :k] @ Ci.ravel(order="K")  # tr(C^{-1} F_j)
            Q = Ci @ Fm[1]
            c1 = -2.0 * t * float(traces[1])
            c2 = 6.0 * float(traces[1]) - 8.0 * float(traces[2])
            c2 -= 4.0 * t2 * float(np.vdot(Q, Q.T))
            g = a1 + c1 + (dof - 1.0) * r1
            H = a2 + c2 + (dof - 1.0) * r2
        else:
            g = a1 + self._n * r1
            H = a2 + self._n * r2
        return value, np.array([g]), np.array([[H]])

    def _balanced_vgh(self, t: float) -> tuple[float, np.ndarray, np.ndarray]:
        """:meth:`value_gradient_hessian` where every level has the same ``n_l = n``.

        Then ``w`` is one number and ``C(t) = G - w B``, ``B = S S'``. With ``G = L L'`` and
        ``L^{-1} B L^{-T} = V diag(lambda) V'`` (once per model), ``log|C| = log|G| +
        sum log(1 - w lambda_i)`` and ``[C^{-1}]_mm = rho = sum z_i^2 / (1 - w lambda_i)``,
        ``z = V' L^{-1} e_m``: the criterion and its derivatives in ``w`` are sums of
        ``p + 1`` terms, and ``d/dt = w' d/dw``, ``d^2/dt^2 = w'' d/dw + w'^2 d^2/dw^2``.
        Plain Python floats: a few microseconds, where NumPy calls would cost more.
        """
        lam, z2, n, q, log_g = self._balanced  # type: ignore[misc]
        t2 = t * t
        x = t2 * n
        d = 1.0 + x
        w = t2 / d
        w1 = 2.0 * t / (d * d)
        w2 = (2.0 - 6.0 * x) / (d * d * d)
        lc, lc1, lc2 = log_g, 0.0, 0.0
        rho, rho1, rho2 = 0.0, 0.0, 0.0
        for li, zi in zip(lam, z2, strict=True):
            e = 1.0 - w * li
            if e <= 0.0:
                return math.inf, np.full(1, np.nan), np.full((1, 1), np.nan)
            f = li / e
            lc += math.log(e)
            lc1 -= f
            lc2 -= f * f
            r = zi / e
            rho += r
            rho1 += r * f
            rho2 += 2.0 * r * f * f
        if rho <= 0.0:
            return math.inf, np.full(1, np.nan), np.full((1, 1), np.nan)
        # log r^2 = -log rho and its w-derivatives
        lr = -math.log(rho)
        lr1 = -rho1 / rho
        lr2 = -rho2 / rho + lr1 * lr1
        dof = self._dof
        if self._reml:
            # log|L_Z|^2 + log|R_X|^2 + dof log r^2 = a + log|C| + (dof - 1) log r^2
            rest, rest1, rest2 = (
                lc + (dof - 1.0) * lr,
                lc1 + (dof - 1.0) * lr1,
                lc2 + (dof - 1.0) * lr2,
            )
        else:
            rest, rest1, rest2 = self._n * lr, self._n * lr1, self._n * lr2
        a = q * math.log(d)
        value = a + rest + dof * (1.0 + _LOG_2PI - math.log(dof)) + self._constant
        g = q * 2.0 * t * n / d + w1 * rest1
        H = q * 2.0 * n * (1.0 - x) / (d * d) + w2 * rest1 + w1 * w1 * rest2
        return value, np.array([g]), np.array([[H]])

    def _spectral_vgh(self, t: float) -> tuple[float, np.ndarray, np.ndarray]:
        """:meth:`value_gradient_hessian` of an unbalanced design with few levels, from the
        spectrum of the projected ``C = Z'MZ`` (``M = I - X (X'X)^{-1} X'``).

        With ``C = V diag(lambda) V'`` (once per model), ``c = V' Z'My`` and
        ``u_i = 1 / (1 + t^2 lambda_i)``, REML's error contrasts (Harville 1977) give

            log|L_Z|^2 + log|R_X|^2 = log|X'X| + sum log(1 + t^2 lambda_i),
            r^2 = y'My - t^2 sum c_i^2 u_i,

        and ML's ``log|L_Z|^2 = sum log(1 + t^2 n_l)``: every term and its two derivatives
        in ``t`` is a sum over the ``q`` levels, on Python floats (a few microseconds for a
        few dozen levels, where the level-sum form costs ~25 NumPy calls).
        """
        lam, c2, rss, log_xx, n_l = self._spectral  # type: ignore[misc]
        # (the spectrum: DenseSystem.one_term_spectrum)
        t2 = t * t
        s1 = s2 = 0.0  # sum lambda u, sum (lambda u)^2
        r0 = r1 = r2 = 0.0  # sum c^2 u, sum c^2 u^2, sum c^2 lambda u^3
        logs = 1.0  # product of the (1 + t^2 lambda), logged once per block of terms
        lc = 0.0
        for li, ci in zip(lam, c2, strict=True):
            e = 1.0 + t2 * li
            u = 1.0 / e
            lu = li * u
            s1 += lu
            s2 += lu * lu
            cu = ci * u
            r0 += cu
            cuu = cu * u
            r1 += cuu
            r2 += cuu * lu
            logs *= e
            if logs > 1e280:
                lc += math.log(logs)
                logs = 1.0
        lc += math.log(logs)
        pwrss = rss - t2 * r0
        if not pwrss > 0.0:
            return math.inf, np.full(1, np.nan), np.full((1, 1), np.nan)
        # r^2 and its t-derivatives: d(t^2 u)/dt = 2t u^2, d^2(t^2 u)/dt^2 = 2u^2 - 8t^2 lambda u^3
        lr1 = -2.0 * t * r1 / pwrss
        lr2 = -(2.0 * r1 - 8.0 * t2 * r2) / pwrss - lr1 * lr1
        dof = self._dof
        if self._reml:
            logdet, d1, d2 = log_xx + lc, 2.0 * t * s1, 2.0 * s1 - 4.0 * t2 * s2
        else:
            a1 = a2 = 0.0
            logs, logdet = 1.0, 0.0
            for nl in n_l:
                e = 1.0 + t2 * nl
                nu = nl / e
                a1 += nu
                a2 += nu * nu
                logs *= e
                if logs > 1e280:
                    logdet += math.log(logs)
                    logs = 1.0
            logdet += math.log(logs)
            d1, d2 = 2.0 * t * a1, 2.0 * a1 - 4.0 * t2 * a2
        value = logdet + dof * (1.0 + _LOG_2PI + math.log(pwrss / dof)) + self._constant
        g = d1 + dof * lr1
        H = d2 + dof * lr2
        return value, np.array([g]), np.array([[H]])

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The criterion and its gradient (the interface of :class:`DenseDevianceGradient`);
        the Hessian from the same factorisation is kept for :meth:`hessian`."""
        value, g, H = self.value_gradient_hessian(theta)
        self._last = (float(theta[0]), H)
        return value, g

    def hessian(self, theta: np.ndarray, g: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """The Hessian at ``theta`` and the factorisations it cost: none where it is the last
        point :meth:`value_and_gradient` saw (the interface of
        :func:`~mixedmodels.optimize.finish.newton_first`)."""
        last = self._last
        if last is not None and last[0] == float(theta[0]):
            return last[1], 0
        return self.value_gradient_hessian(theta)[2], 1

    def __call__(self, theta: np.ndarray, factor: object | None = None) -> np.ndarray:
        """Gradient at ``theta`` (``factor`` is accepted for interface parity and unused)."""
        return self.value_gradient_hessian(theta)[1]


def _balanced_spectrum(
    n_l: np.ndarray, S: np.ndarray, G: np.ndarray
) -> tuple[list[float], list[float], float, int, float] | None:
    """What :meth:`OneTermDerivatives._balanced_vgh` needs where every level has the same
    ``n_l`` (a balanced design): the eigenvalues ``lambda`` of ``L^{-1} S S' L^{-T}``
    (``G = L L'``), the squares of ``z = V' L^{-1} e_m``, ``n``, the number of levels and
    ``log|G|``; None for an unbalanced design or a ``G`` that is not positive definite."""
    q = n_l.shape[0]
    if q == 0 or float(np.maximum.reduce(n_l)) != float(np.minimum.reduce(n_l)):
        return None
    if float(n_l[0]) <= 0.0:
        return None
    L, info = _dpotrf(G, lower=1, clean=1)
    if info != 0:
        return None
    # clean=1 zeroed L's upper triangle, which dtrtri leaves as it is: Li is triangular.
    Li, info = _dtrtri(L, lower=1)
    if info != 0:
        return None
    B = Li @ S
    lam, V, info = _dsyev(B @ B.T)
    if info != 0:
        return None
    z = V[-1] / L[-1, -1]
    log_g = 2.0 * float(np.add.reduce(np.log(L.diagonal())))
    return lam.tolist(), (z * z).tolist(), float(n_l[0]), q, log_g
