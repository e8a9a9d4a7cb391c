"""Starting values of theta from the cross products: moment estimates, two-stage templates.

lme4 starts every template at the identity. Here scalar terms start at a one-way ANOVA
moment estimate and the first vector template at the two-stage (per-level OLS) estimate
(Laird & Ware 1982), both read from the blocks of ``A``: on large data that halves the
optimiser's evaluations, and no step touches the rows.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg.lapack import dpotrf as _dpotrf
from scipy.linalg.lapack import dpotrs as _dpotrs

from mixedmodels.covariance import CovarianceStructure
from mixedmodels.linalg.blocked import _DENSE_UPDATE_LIMIT, BlockedSystem
from mixedmodels.linalg.choice import prefers_dense
from mixedmodels.linalg.dense import (
    DenseSystem,
    OneTermSpectrum,
    cross_products_from_blocks,
    project_out_fixed_effects,
)

_MOMENT_PASSES = 8  # fixed-point passes of moment_components


def ols_from_cross_products(xytxy: np.ndarray, n: int) -> tuple[np.ndarray, float] | None:
    """OLS ``beta`` and residual variance ``s^2`` from ``[X y]'[X y]`` (None if X'X is singular)."""
    p = xytxy.shape[0] - 1
    if not p:
        return np.zeros(0), float(xytxy[0, 0]) / n
    # Cholesky with LAPACK's dpotrf and dpotrs: X'X is symmetric positive definite for
    # the full-rank X a design keeps, and the fit runs these two routines anyway (every
    # evaluation, the Newton steps), where an LU solve (np.linalg.solve or dgesv) is code
    # touched only here, paid cold (~30 us) after a collection. Not positive definite
    # (numerically singular X'X): None, lme4's start.
    U, info = _dpotrf(xytxy[:p, :p], lower=0, clean=0)
    if info != 0:
        return None
    beta, info = _dpotrs(U, xytxy[:p, p], lower=0)
    if info != 0:  # pragma: no cover - potrs fails only on invalid arguments
        return None
    return beta, float(xytxy[p, p] - beta @ xytxy[:p, p]) / (n - p)


def moment_components(
    stats: list[tuple[int, float, int, float]], s2: float, n: int, own_level: bool = False
) -> tuple[list[tuple[int, float, float]], float]:
    """Variance components of scalar terms by moments, and the residual variance.

    For term ``k`` with ``L`` levels seen, ``N = sum_l n_l`` and ``between = sum_l s_l^2 / n_l``
    (``s_l``: OLS residuals summed over level ``l``, ``n_l = sum z^2``):
    ``E[between] ~ L sigma^2 + N sigma_k^2``, where ``sigma^2`` is the residual variance net
    of every component. Starting from the OLS residual variance ``s2`` (which still holds
    them all), ``sigma^2 = s2 - sum_k sigma_k^2 N_k / n`` and the components are updated in
    turn a few times (a fixed point; crossed designs need it: one pass puts Penicillin's
    plate SD at 0.2 for 1.5). ``own_level``: the first pass divides by ``N - L`` (the large
    models' start, see :func:`blocked_moment_start`).

    ``stats`` holds ``(k, between, L, N)``; returns ``[(k, sigma_k^2, N)]`` and ``sigma^2``.
    """
    sigma2 = s2
    components: list[tuple[int, float, float]] = []
    for step in range(_MOMENT_PASSES):
        components = []
        for k, between, nseen, N in stats:
            first_own = step == 0 and own_level and N > nseen
            denominator = N - nseen if first_own else N
            components.append((k, max(between - nseen * sigma2, 0.0) / denominator, N))
        updated = max(s2 - sum(v * N / n for _, v, N in components), 0.1 * s2)
        converged = abs(updated - sigma2) <= 1e-6 * s2
        sigma2 = updated
        if converged:
            break
    return components, sigma2


def moment_theta(
    structure: CovarianceStructure,
    level_sums: list[tuple[int, np.ndarray, np.ndarray]],
    beta: np.ndarray,
    s2: float,
    n: int,
    own_level: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """lme4's start with scalar terms at their moment estimate, and which entries hold one.

    ``level_sums`` holds, per scalar term ``k``, ``[X y]'z`` summed by level (``(p + 1, L)``)
    and ``n_l = sum z^2`` by level: the OLS residuals summed by level are
    ``s_l = y_l - beta' X_l``. The components come from :func:`moment_components`; an
    estimate of 0 keeps lme4's start of 1 (BOBYQA started on the bound stops short of it).
    """
    theta = structure.initial_theta()
    estimated = np.zeros(theta.shape[0], dtype=bool)
    p = beta.shape[0]
    stats = []
    for k, XyZ, nl in level_sums:
        sums = XyZ[p] - beta @ XyZ[:p]
        N = float(nl.sum())
        if N <= 0.0:  # a column of zeros: keep lme4's start
            continue
        # n_l = sum z^2 >= 0, so the levels seen are the nonzero ones; when all are (the
        # usual case) the masks would copy the arrays as they are: the same sum.
        nseen = int(np.count_nonzero(nl))
        if nseen < nl.shape[0]:
            seen = nl > 0
            sums, nl = sums[seen], nl[seen]
        stats.append((k, float(np.add.reduce(sums**2 / nl, axis=None)), nseen, N))
    components, resid = moment_components(stats, s2, n, own_level)
    for k, v, _ in components:
        value = math.sqrt(v / resid) if resid > 0 else math.nan
        if math.isfinite(value) and value > 0.0:
            theta[structure.offsets[k]] = min(value, 10.0)
            estimated[structure.offsets[k]] = True
    return theta, estimated


def blocked_moment_start(system: BlockedSystem, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Starting theta and initial BOBYQA steps: lme4's start, scalar terms at a moment estimate.

    For a scalar term with column ``z``, the OLS residuals summed by level,
    ``s_l = sum_(i in l) z_i r_i``, have ``E[sum_l s_l^2 / n_l] ~ L sigma^2 + N sigma_k^2``
    (``n_l = sum_(i in l) z_i^2``, ``N = sum_l n_l``, ``L`` levels: one-way random-effects
    ANOVA, ignoring the other terms and the fixed-effects projection); ``sigma^2`` is
    the OLS residual variance less the estimated components. Crude, but it needs only
    the cross products. On small data the estimate is rough, so the step stays.

    On large models (the sparse update path) each evaluation is a dense factorisation
    and the start matters more. There ``sigma^2`` above is taken as the whole OLS
    residual variance ``s^2`` (which still holds the term's own variance):
    ``E[sum_l s_l^2 / n_l] ~ L s^2 + (N - L) sigma_k^2``, so the estimate divides by
    ``N - L``, not ``N`` (with 10 rows per level the latter is 10% low in variance).
    It lands near the optimum, and the estimated entries start with a tenth of the
    initial ``step``. Crossed random intercepts (1e5 rows, 1e4 x 1e3 levels, six
    designs): 225 -> 133 BOBYQA evaluations in all, each design fewer; InstEval 35 ->
    29 and 22 -> 21; the same optimum (deviance within 1e-12 relative).

    Returns
    -------
    theta0, steps
        The start and the initial step of each entry.
    """
    structure = system.structure
    if structure.all_scalar and prefers_dense(structure, system.p):
        # A small model: the dense start's estimate (the same model starts alike in
        # either form), from the blocks assembled into the dense A.
        S = scalar_indicator(structure)
        W = cross_products_from_blocks(structure, system.A)
        found = quadratic_moment_theta(W, system.n, system.p, S)
        if found is not None:
            return found, _moment_steps(found, found > 0.0, step)
    theta, estimated = _blocked_moment_theta(system, own_level=not system.uses_dense_update)
    if system.uses_dense_update:
        # Small data: the steps of the dense start (the same model fitted in either form
        # starts alike) ...
        steps = _moment_steps(theta, estimated, step)
    else:
        steps = np.where(estimated, 0.1 * step, step)
    if system.structure.terms[0].ncols > 1:
        # ... but the two-stage template lands close on small data too.
        stop = system.t1_index[2]
        steps[:stop] = np.where(estimated[:stop], 0.1 * step, step)
    return theta, steps


def _blocked_moment_theta(
    system: BlockedSystem, own_level: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The start of :func:`blocked_moment_start` and which entries hold an estimate.

    ``own_level``: divide by ``N - L`` (the large-model estimate, see there).
    """
    structure, A, n = system.structure, system.A, system.n
    theta = structure.initial_theta()
    estimated = np.zeros(theta.shape[0], dtype=bool)
    ols = ols_from_cross_products(A.xytxy, n)
    if ols is None:
        return theta, estimated
    beta, s2 = ols
    level_sums = []
    rest_diagonal = A.zrtzr_diagonal() if (len(system.structure.terms) > 1) else None
    for k, term in enumerate(structure.terms):
        if term.ncols != 1:
            continue
        if k == 0:
            level_sums.append((k, A.xytz1[:, :, 0], A.z1tz1[:, 0, 0]))
        else:
            s, e = system.rest_offsets[k - 1], system.rest_offsets[k]
            level_sums.append((k, A.xytzr[:, s:e], rest_diagonal[s:e]))
    theta, estimated = moment_theta(structure, level_sums, beta, s2, n, own_level)
    if structure.terms[0].ncols > 1 and s2 > 0:
        template = _two_stage_template(A.z1tz1, A.xytz1, n, system.t1_index, beta, s2)
        if template is not None:
            rows, cols, stop = system.t1_index
            theta[:stop] = template[rows, cols]
            estimated[:stop] = True
    return theta, estimated


def _two_stage_template(
    ztz: np.ndarray,
    xytz1: np.ndarray,
    n: int,
    t1_index: tuple[np.ndarray, np.ndarray, int],
    beta: np.ndarray,
    s2: float,
) -> np.ndarray | None:
    """A start for term 1's vector template: the two-stage (per-level OLS) estimate.

    Per level, regress the OLS residuals ``r`` on the term's columns:
    ``b_l = (Z_l'Z_l)^{-1} Z_l' r``. The residual variance within levels is
    ``sigma^2 = (r'r - sum_l b_l' Z_l' r) / (n - p - L p_1)``, and the spread of the
    ``b_l`` less their average sampling variance ``sigma^2 (Z_l'Z_l)^{-1}`` estimates
    ``Var(b)`` (the two-stage idea of Laird & Ware 1982); its Cholesky factor over
    ``sigma`` is the relative template. Levels whose ``Z_l'Z_l`` is singular are left
    out; None when too few remain, or the estimate is not positive definite (lme4's
    identity start is kept then). Entries the template fixes at 0 (``||``) stay 0.
    ``s2`` is the OLS residual variance (``r'r / (n - p)``).

    ``ztz``: the levels' ``Z_l'Z_l`` (``(l1, p1, p1)``); ``xytz1``: ``[X y]'Z_1`` by level
    (``(p + 1, l1, p1)``); ``n`` rows; ``t1_index``: the template's entries (rows, columns
    and their count in theta), as :attr:`~mixedmodels.linalg.blocked.BlockedSystem.t1_index`.
    """
    p = xytz1.shape[0] - 1
    p1 = ztz.shape[1]
    # beta' [X'Z_l] for every level: np.tensordot's own product, (1, p) x (p, l1 p1), without
    # its Python layers (the same dot, so the same bits).
    xtz = xytz1[:p]
    ztr = xytz1[p] - np.dot(beta.reshape(1, p), xtz.reshape(p, -1)).reshape(xtz.shape[1:])
    if p1 == 2:
        # The common case (intercept and slope) in closed form: np.linalg's det and inv
        # on stacks of 2 x 2 blocks are code touched only here, paid cold after a
        # collection (~50 us of a 3 ms fit); the same numbers to rounding. Written on
        # the columns (no stacked 2 x 2 products: each NumPy call costs more than its
        # arithmetic here), and without the masks when every block is invertible.
        a, b, d = ztz[:, 0, 0], ztz[:, 0, 1], ztz[:, 1, 1]
        det = a * d - b * b
        det_ok = det > 1e-10 * (a * d)
        nok = int(np.count_nonzero(det_ok))
        dof = n - p - nok * p1
        if nok <= p1 + 1 or dof <= 0:
            return None
        if nok < det.shape[0]:
            a, b, d, det, ztr = a[det_ok], b[det_ok], d[det_ok], det[det_ok], ztr[det_ok]
        inv_det = 1.0 / det
        i00, i11, i01 = d * inv_det, a * inv_det, -b * inv_det
        z0, z1 = ztr[:, 0], ztr[:, 1]
        b = np.empty((nok, 2))  # per-level coefficients (Z_l'Z_l)^{-1} Z_l'r
        b[:, 0] = i00 * z0 + i01 * z1
        b[:, 1] = i01 * z0 + i11 * z1
        mean_inv = np.empty((2, 2))
        mean_inv[0, 0] = float(np.add.reduce(i00)) / nok
        mean_inv[1, 1] = float(np.add.reduce(i11)) / nok
        mean_inv[0, 1] = mean_inv[1, 0] = float(np.add.reduce(i01)) / nok
    else:
        det_ok = np.linalg.det(ztz) > 1e-10 * np.prod(np.diagonal(ztz, axis1=1, axis2=2), axis=1)
        nok = int(det_ok.sum())
        dof = n - p - nok * p1
        if nok <= p1 + 1 or dof <= 0:
            return None
        inv = np.linalg.inv(ztz[det_ok])
        ztr = ztr[det_ok]
        b = (inv @ ztr[:, :, None])[:, :, 0]
        mean_inv = np.add.reduce(inv, axis=0) / nok
    sigma2 = (s2 * (n - p) - float(np.vdot(b, ztr))) / dof
    if not sigma2 > 0:
        return None
    # np.add.reduce / count: ndarray.mean's own arithmetic, without its Python-level wrapper
    centred = b - np.add.reduce(b, axis=0) / nok
    cov = centred.T @ centred / (nok - 1) - sigma2 * mean_inv
    rows, cols, _ = t1_index
    if rows.shape[0] < p1 * (p1 + 1) // 2:  # entries the template fixes at 0 (||)
        free = np.zeros((p1, p1), dtype=bool)
        free[rows, cols] = True
        cov = np.where(free | free.T, cov, 0.0)
    # dpotrf, as the fit's other factorisations (np.linalg.cholesky's wrapper and NumPy's
    # own LAPACK copy would be code touched only here, cold after a collection); the same
    # factor to the last bit on these small matrices, zeros above the diagonal.
    T, info = _dpotrf(cov / sigma2, lower=1, clean=1)
    if info != 0:
        return None
    return np.minimum(T, 10.0) if np.logical_and.reduce(np.isfinite(T), axis=None) else None


def dense_moment_start(system: DenseSystem, step: float) -> tuple[np.ndarray, np.ndarray]:
    """lme4's start with scalar terms at a one-way ANOVA moment estimate, and the steps
    (30% of each estimate; ``step`` elsewhere).

    The estimate of :func:`blocked_moment_start` (its small-model
    form), read from the dense ``A``: for a scalar term with column ``z``, the OLS
    residuals summed by level ``s_l`` give ``sigma_k^2 ~ (sum_l s_l^2 / n_l - L s^2) / N``.
    """
    structure, W, n = system.structure, system.W, system.n
    q = W.shape[0] - system.p - 1
    if system.scalar_terms:
        one = len(structure.terms) == 1
        spectrum = system.one_term_spectrum() if one else None
        if spectrum is not None:
            t = spectral_moment_theta(spectrum, n - system.p)
            if t is not None:
                return np.array([t]), np.array([max(0.3 * t, 0.1 * step)])
        found = quadratic_moment_theta(
            W,
            n,
            system.p,
            None if one else system.scalar_indicator(),
            system.fixed_effects_projection(),
        )
        if found is not None:
            # Every estimate is positive here: _moment_steps' steps on Python floats.
            return found, np.array([max(0.3 * t, 0.1 * step) for t in found.tolist()])
    elif structure.terms[0].ncols > 1:
        return _dense_vector_start(system, step)
    ols = ols_from_cross_products(W[q:, q:], n)
    if ols is None:
        steps = np.empty(structure.ntheta)  # np.full without its Python-level wrapper
        steps.fill(float(step))
        return structure.initial_theta(), steps
    diagonal = W.diagonal()
    level_sums = [
        (k, W[q:, s:e], diagonal[s:e])
        for k, (term, (s, e)) in enumerate(zip(structure.terms, system.spans, strict=True))
        if term.ncols == 1
    ]
    theta, estimated = moment_theta(structure, level_sums, *ols, n)
    return theta, _moment_steps(theta, estimated, step)


def _dense_vector_start(system: DenseSystem, step: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`blocked_moment_start` of a small model whose first term is vector-valued, read
    from the dense ``A``: the same estimates (the two-stage template of term 1, the one-way
    moment estimate of scalar terms) and steps, so that the model starts alike in either
    form without its blocked system being built.

    Term 1's columns lead ``A``, level-major: its ``Z_l'Z_l`` are the ``p1 x p1`` blocks on
    the diagonal of ``A[:q1, :q1]`` and ``[X y]'Z_1`` is ``A[q:, :q1]``; a scalar rest term's
    level sums and ``n_l`` are its columns of ``A[q:]`` and of the diagonal.
    """
    structure, W, n, p = system.structure, system.W, system.n, system.p
    m = W.shape[0]
    q = m - p - 1
    terms = structure.terms
    t1 = terms[0]
    l1, p1 = t1.nlevels, t1.ncols
    q1 = l1 * p1
    # The blocked system's choice of estimate (own_level) follows its update's form, which
    # its sizes decide (blocked.py: a dense update up to m_r = 128 and 2^16 entries).
    m_r = q - q1 + p + 1
    dense_update = m_r <= 128 and m_r * m_r * l1 * (p1 * (p1 + 1) // 2) <= _DENSE_UPDATE_LIMIT
    theta = structure.initial_theta()
    estimated = np.zeros(theta.shape[0], dtype=bool)
    ols = ols_from_cross_products(W[q:, q:], n)
    if ols is not None:
        beta, s2 = ols
        diagonal = W.diagonal()
        level_sums = [
            (k, W[q:, s:e], diagonal[s:e])
            for k, (term, (s, e)) in enumerate(zip(terms, system.spans, strict=True))
            if term.ncols == 1
        ]
        theta, estimated = moment_theta(structure, level_sums, beta, s2, n, not dense_update)
        if s2 > 0:
            levels = np.arange(l1)
            ztz = W[:q1, :q1].reshape(l1, p1, l1, p1)[levels, :, levels, :]
            xytz1 = W[q:, :q1].reshape(p + 1, l1, p1)
            t1_index = (structure.rows[0], structure.cols[0], int(structure.offsets[1]))
            template = _two_stage_template(ztz, xytz1, n, t1_index, beta, s2)
            if template is not None:
                rows, cols, stop = t1_index
                theta[:stop] = template[rows, cols]
                estimated[:stop] = True
    if dense_update:
        steps = _moment_steps(theta, estimated, step)
    else:
        steps = np.where(estimated, 0.1 * step, step)
    stop = int(structure.offsets[1])
    steps[:stop] = np.where(estimated[:stop], 0.1 * step, step)
    return theta, steps


def quadratic_moment_theta(
    W: np.ndarray,
    n: int,
    p: int,
    S: np.ndarray | None,
    projection: tuple[np.ndarray, float] | None = None,
) -> np.ndarray | None:
    """theta of scalar terms from unbiased quadratic-form (ANOVA-type) moment equations.

    ``W`` is the dense ``A = [Z X y]'[Z X y]`` of ``n`` rows and ``p`` fixed effects, ``S``
    the ``q x K`` indicator of each ``Z`` column's term (term k holds theta k; None for a
    single term, whose sums run over all ``q`` levels). With
    ``M = I - X (X'X)^{-1} X'``, ``C = Z'MZ`` and ``s = Z'My`` (both read from ``A`` after
    one ``p x p`` solve, or from ``projection`` where the caller has it:
    :func:`.linalg.dense.project_out_fixed_effects`), ``n_l = A[l, l]`` and
    ``V = sigma^2 I + sum_j sigma_j^2 Z_j Z_j'``, the quadratic forms

        SS_k = sum_(l in k) s_l^2 / n_l,     RSS = y'My

    have expectations (``E[y'By] = tr(B V)`` for ``My``, whose mean is 0)

        E[SS_k] = sigma^2 sum_(l in k) C_ll / n_l
                  + sum_j sigma_j^2 sum_(l in k, l' in j) C_ll'^2 / n_l,
        E[RSS]  = sigma^2 (n - p) + sum_j sigma_j^2 sum_(l in j) C_ll,

    ``K + 1`` linear equations in ``sigma^2`` and the ``K`` components (Searle, Casella &
    McCulloch, Variance Components, 1992, ch. 5: the quadratic forms of Henderson's
    methods, here with their exact expectations). On balanced data (Dyestuff, Penicillin,
    Pastes, Cake) these are the ANOVA estimates, which are REML's optimum when positive:
    the Newton steps then start at the optimum. Unbalanced data get an unbiased estimate,
    closer than the one-way estimate of :func:`moment_theta`, which ignores the fixed
    effects' projection and the other terms (Penicillin: plate 1.27 for 1.54).

    None (the caller falls back on :func:`moment_theta`) where a level has ``n_l = 0``,
    ``X'X`` is not positive definite, the equations are singular, or an estimate is not
    positive (a boundary optimum, which the one-way start handles as before).
    """
    m = W.shape[0]
    q = m - p - 1
    nl = W.diagonal()[:q]
    if not float(np.minimum.reduce(nl)) > 0.0:  # (no ndarray.min wrapper)
        return None
    # C, s and y'My are blocks of A - A_(.X) (X'X)^{-1} A_(X.) (Z'MZ, Z'My, y'My).
    if projection is None:
        projection = project_out_fixed_effects(W, p)
        if projection is None:
            return None
    Cfull = projection[0]
    inv_n = 1.0 / nl
    C = Cfull[:q, :q]
    diagC = C.diagonal()
    zy = Cfull[:q, -1]
    # Rows (C_ll / n_l, C_ll, s_l^2 / n_l), summed by term below; filled in place (np.stack
    # is a Python-level wrapper costing more than the sums on a small model).
    Q = np.empty((3, q))
    np.multiply(diagC, inv_n, out=Q[0])
    Q[1] = diagC
    np.multiply(zy, zy, out=Q[2])
    Q[2] *= inv_n
    CC = C * C
    if S is None:
        # One term: the sums over its levels, T = sum_l sum_l' C_ll'^2 / n_l.
        rows = [[x] for x in np.add.reduce(Q, axis=1).tolist()]
        tk = [[float(inv_n @ np.add.reduce(CC, axis=1))]]
    else:
        CC *= inv_n[:, None]
        rows = (Q @ S).tolist()  # (3 x K)
        tk = (S.T @ CC @ S).tolist()  # sum_(l in k, l' in j) C_ll'^2 / n_l
    k = len(rows[0])
    # Unknowns (sigma^2, sigma_1^2, ..., sigma_K^2): the residual equation first.
    M = [[float(n - p)] + rows[1]] + [[rows[0][i]] + tk[i] for i in range(k)]
    rhs = [float(Cfull[-1, -1])] + rows[2]
    v = _solve_small(M, rhs)
    if v is None or not all(x > 0.0 for x in v):
        return None
    values = [min(math.sqrt(x / v[0]), 10.0) for x in v[1:]]
    if not all(math.isfinite(x) for x in values):
        return None
    return np.array(values)


def spectral_moment_theta(spectrum: OneTermSpectrum, dof: float) -> float | None:
    """theta of one scalar term from two moment equations in the spectrum of ``C = Z'MZ``
    (:meth:`.linalg.dense.DenseSystem.one_term_spectrum`).

    With ``s = Z'My``, ``Var(s) = sigma^2 C + sigma_1^2 C^2`` and ``E[y'My] = sigma^2 (n - p)
    + sigma_1^2 tr C``, so the between-level form ``s'C^+ s = sum c_i^2 / lambda_i`` (over
    the ``k`` positive eigenvalues) and the residual form give

        E[s'C^+ s] = sigma^2 k + sigma_1^2 tr C,   E[y'My] = sigma^2 (n - p) + sigma_1^2 tr C,

    Henderson's method 3 for one component (Searle, Casella & McCulloch 1992, sec. 5.5):
    ``sigma^2`` from their difference. A few dozen Python operations where the level-sum
    form (:func:`quadratic_moment_theta`) costs ~40 us; its Newton steps then cost 10 us
    each. None where an estimate is not positive (the general start decides).
    """
    lam = spectrum.eigenvalues
    cut = 1e-9 * lam[-1]  # ascending: rounding's zeros of the absorbed levels below
    k = 0
    trace = between = 0.0
    for li, ci in zip(lam, spectrum.c_squared, strict=True):
        if li > cut:
            k += 1
            trace += li
            between += ci / li
    if not (k and dof > k and trace > 0.0):
        return None
    sigma2 = (spectrum.rss - between) / (dof - k)
    sigma2_1 = (between - sigma2 * k) / trace
    if not (sigma2 > 0.0 and sigma2_1 > 0.0):
        return None
    t = min(math.sqrt(sigma2_1 / sigma2), 10.0)
    return t if math.isfinite(t) else None


def scalar_indicator(structure: CovarianceStructure) -> np.ndarray:
    """The ``q x K`` indicator of each ``Z`` column's term, for scalar terms in engine order
    (term k holds theta k)."""
    sizes = [t.nranef for t in structure.terms]
    S = np.zeros((sum(sizes), len(sizes)))
    start = 0
    for k, size in enumerate(sizes):
        S[start : start + size, k] = 1.0
        start += size
    return S


def _solve_small(M: list[list[float]], rhs: list[float]) -> list[float] | None:
    """``M^{-1} rhs`` for a handful of unknowns by Gaussian elimination with partial
    pivoting, on Python floats (numpy's solve is code touched only here, cold after a
    collection); None if ``M`` is singular to working precision."""
    k = len(rhs)
    scale = max([abs(x) for row in M for x in row])
    if not scale > 0.0 or not math.isfinite(scale):
        return None
    if k == 2:
        # One term (sigma^2 and its component): the same elimination, unrolled.
        (a0, b0), (a1, b1) = M
        r0, r1 = rhs
        if abs(a1) > abs(a0):
            a0, b0, r0, a1, b1, r1 = a1, b1, r1, a0, b0, r0
        if not abs(a0) > 1e-13 * scale:
            return None
        f = a1 / a0
        if f:
            b1 -= f * b0
            r1 -= f * r0
        if not abs(b1) > 1e-13 * scale:
            return None
        x1 = r1 / b1
        return [(r0 - b0 * x1) / a0, x1]
    a = [[*row, b] for row, b in zip(M, rhs, strict=True)]
    for c in range(k):
        # partial pivoting: the row with the largest entry in column c
        r, big = c, abs(a[c][c])
        for i in range(c + 1, k):
            if abs(a[i][c]) > big:
                r, big = i, abs(a[i][c])
        if not big > 1e-13 * scale:
            return None
        a[c], a[r] = a[r], a[c]
        pivot = a[c]
        for i in range(c + 1, k):
            f = a[i][c] / pivot[c]
            if f:
                row = a[i]
                for j in range(c, k + 1):
                    row[j] -= f * pivot[j]
    x = [0.0] * k
    for i in range(k - 1, -1, -1):
        row = a[i]
        known = 0.0
        for j in range(i + 1, k):
            known += row[j] * x[j]
        x[i] = (row[k] - known) / row[i]
    return x


def _moment_steps(theta: np.ndarray, estimated: np.ndarray, step: float) -> np.ndarray:
    """BOBYQA's first steps on small data: 30% of each moment estimate (at least a tenth
    of ``step``), ``step`` for entries without one (lme4's start).

    A moment estimate lands within a few tens of percent of the optimum: a trust region
    of that size saves BOBYQA some of its shrinking steps. Over 106 REML and ML fits (the
    reference models, 40 simulated one- and two-factor designs with SDs 0 to 10): 8% fewer
    evaluations, the same optima and warnings.
    """
    return np.where(estimated, np.maximum(0.3 * np.abs(theta), 0.1 * step), step)


def moment_start(system: BlockedSystem | DenseSystem, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Starting theta and initial BOBYQA steps for either kind of system."""
    if isinstance(system, DenseSystem):
        return dense_moment_start(system, step)
    return blocked_moment_start(system, step)
