"""Repeated-measures residuals: a correlation within groups and a variance function.

Model (Pinheiro & Bates 2000, ch. 5; nlme's ``lme``/``gls`` with ``correlation=`` and
``weights=``): the residuals of group ``g`` (a subject) are

    e_g ~ N(0, sigma^2 V_g),   V_g = W_g R_g W_g,

``R_g`` a correlation matrix (:mod:`.correlation`), ``W_g = diag(w_i)`` the variance
function's multipliers (:mod:`.variance_functions`); groups are independent. With the
lower Cholesky factor ``V_g = L_g L_g'``, the rows ``L_g^-1 [Z X y]_g`` follow an ordinary
LMM with residual variance ``sigma^2 I``, so at residual parameters ``psi``

    A(psi) = sum_g [Z X y]_g' V_g^-1 [Z X y]_g,      J(psi) = sum_g log|V_g|,

and the criterion is ``d_profiled(theta; A(psi)) + J(psi)`` (ML and REML alike). The
whitened ``Z`` keeps its sparsity (each whitened row stays in its level of every
random-effects factor) only when every group lies inside one level of each random-effects
grouping factor: nlme's requirement that the correlation be nested in the random effects,
checked by :func:`build_repeated`.

Groups are processed in batches of equal size (one batched Cholesky and solve per size),
so thousands of subjects cost a few numpy calls per evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.linalg import solve_triangular

from mixedmodels.design.factors import format_level
from mixedmodels.errors import DataError, ModelSpecificationError
from mixedmodels.linalg.cross_products import CrossProducts, compute_cross_products
from mixedmodels.residual.correlation import (
    AR1,
    CAR1,
    Batch,
    CompoundSymmetry,
    Unstructured,
)
from mixedmodels.residual.specs import CorrelationSpec, VarianceSpec
from mixedmodels.residual.var_ident import _level_sort_key
from mixedmodels.residual.variance_functions import ExpVariance, IdentVariance, PowerVariance


class RepeatedResidual:
    """``Var(e_g) = sigma^2 W_g R_g W_g`` within groups: parameters, ``A(psi)``, log-Jacobian.

    Parameters
    ----------
    terms
        The grouped random-effects terms (engine order); their ``refs`` stay valid for the
        whitened rows (nesting checked by :func:`build_repeated`).
    X, y
        Fixed-effects matrix and response (less any offset).
    correlation
        A structure of :mod:`.correlation`, or None (variance function only).
    batches
        The groups by size (:class:`~.correlation.Batch`); empty without a correlation.
    variances
        Variance functions whose multipliers multiply (``us`` adds its SD per level).
    group
        The correlation grouping column (for display), its number of levels.
    """

    def __init__(
        self,
        terms: tuple,
        X: np.ndarray,
        y: np.ndarray,
        correlation: Any,
        batches: Sequence[Batch],
        variances: Sequence[Any],
        group: tuple[str, int] | None = None,
        xy: np.ndarray | None = None,
    ):
        self.terms = terms
        self.correlation = correlation
        self.batches = tuple(batches)
        self.variances = tuple(variances)
        self.group = group
        self._zs = [t.z for t in terms]
        self._refs = [t.refs for t in terms]
        self._zwidth = sum(z.shape[1] for z in self._zs)
        if xy is None:
            xy = np.column_stack([X, y])
        self._C = np.ascontiguousarray(np.column_stack([*self._zs, xy]))
        # The rows in batch order (groups of one size contiguous, a group's rows together):
        # each evaluation then reads and writes contiguous (G, s, m) blocks, no gathers.
        # Cross products are sums over rows, so the order does not change them.
        if correlation is None:
            self._perm = None
            self._Cp = self._C
            self._refs_p = self._refs
            self._spans: list[tuple[int, int, Batch]] = []
        else:
            self._perm = np.concatenate([b.rows.ravel() for b in self.batches])
            self._Cp = np.ascontiguousarray(self._C[self._perm])
            self._refs_p = [np.ascontiguousarray(np.asarray(r)[self._perm]) for r in self._refs]
            self._spans = []
            start = 0
            for b in self.batches:
                self._spans.append((start, start + b.rows.size, b))
                start += b.rows.size
        sizes = [len(correlation.names) if correlation is not None else 0]
        sizes += [len(v.names) for v in self.variances]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.names = (
            *(correlation.names if correlation is not None else ()),
            *(name for v in self.variances for name in v.names),
        )
        self._cache: tuple[bytes, np.ndarray, float] | None = None

    @property
    def nobs(self) -> int:
        return self._C.shape[0]

    @property
    def on_fitted(self) -> bool:
        """Whether a variance function's covariate is the fitted values (a fixed point)."""
        return any(v.on_fitted for v in self.variances)

    def with_fitted(self, mu: np.ndarray) -> RepeatedResidual:
        """The structure with the fitted-value covariates set to ``mu``."""
        variances = [v.with_covariate(mu) if v.on_fitted else v for v in self.variances]
        return self._with(variances=variances)

    def _with(self, variances=None, xy=None) -> RepeatedResidual:
        """The same structure with other variance functions or ``[X y]`` columns."""
        return RepeatedResidual(
            self.terms,
            None,
            None,
            self.correlation,
            self.batches,
            self.variances if variances is None else variances,
            self.group,
            xy=self._C[:, self._zwidth :] if xy is None else xy,
        )

    # -- parameters ------------------------------------------------------------------------
    def initial(self) -> np.ndarray:
        """nlme's starts (independence, equal SDs), except for ``us``: the correlations and
        SD ratios of the least-squares residuals by level (pairwise complete), which saves
        BOBYQA most of its evaluations over the K(K+1)/2 - 1 parameters."""
        parts = [self.correlation.initial()] if self.correlation is not None else []
        parts += [v.initial() for v in self.variances]
        out = np.concatenate(parts) if parts else np.zeros(0)
        if isinstance(self.correlation, Unstructured):
            start = self._unstructured_start()
            if start is not None:
                out[: start.shape[0]] = start
        return out

    def _unstructured_start(self) -> np.ndarray | None:
        """Unconstrained ``us`` parameters (correlations, then log SD ratios) of the
        correlation matrix and SDs of the least-squares residuals; None if unusable."""
        X, y = self._C[:, self._zwidth : -1], self._C[:, -1]
        r = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
        K = len(self.correlation.levels)
        E = np.full((sum(b.rows.shape[0] for b in self.batches), K), np.nan)
        first = 0
        for b in self.batches:
            G = b.rows.shape[0]
            E[np.arange(first, first + G)[:, None], b.level] = r[b.rows]
            first += G
        frame = pd.DataFrame(E)
        C = frame.corr(min_periods=3).to_numpy()
        sd = frame.std().to_numpy()
        if not (np.all(np.isfinite(C)) and np.all(np.isfinite(sd)) and np.all(sd > 0)):
            return None
        try:
            L = np.linalg.cholesky(C)
        except np.linalg.LinAlgError:
            return None
        rows, cols = np.tril_indices(K, -1)
        return np.concatenate([L[rows, cols] / L[rows, rows], np.log(sd[1:] / sd[0])])

    def lower(self) -> np.ndarray:
        return np.full(len(self.names), -np.inf)

    def split(self, psi: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(correlation's psi, [each variance function's psi])``."""
        psi = np.asarray(psi, dtype=np.float64)
        o = self._offsets
        return psi[o[0] : o[1]], [psi[o[k + 1] : o[k + 2]] for k in range(len(self.variances))]

    def log_w(self, psi: np.ndarray) -> np.ndarray:
        """``log w_i`` of every row (0 without a variance function)."""
        _, parts = self.split(psi)
        out = np.zeros(self.nobs)
        for v, p in zip(self.variances, parts, strict=True):
            out += v.log_w(p)
        return out

    def sigma_scale(self, psi: np.ndarray) -> float:
        """``sigma_nlme / sigma_internal``: the variance functions' covariates are centred
        inside (:mod:`.variance_functions`); reported SDs use nlme's scale."""
        _, parts = self.split(psi)
        return float(
            np.exp(sum(v.log_scale(p) for v, p in zip(self.variances, parts, strict=True)))
        )

    # -- the whitening -----------------------------------------------------------------------
    def whiten(self, psi: np.ndarray) -> tuple[np.ndarray, float]:
        """``L_g^-1 [Z X y]_g`` for every group, in batch order (see ``__init__``), and
        ``sum log|V_g|``.

        Raises ``numpy.linalg.LinAlgError`` where some ``V_g`` is not positive definite.
        """
        psi = np.asarray(psi, dtype=np.float64)
        key = psi.tobytes()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        lw = self.log_w(psi)
        if not np.all(np.isfinite(lw)):
            raise np.linalg.LinAlgError("variance function not finite")
        logdet = 2.0 * float(np.sum(lw))  # log|W|^2; the correlations add log|R_g|
        if self._perm is not None:
            lw = lw[self._perm]
        w = np.exp(lw)
        if self.correlation is None:
            Cw = self._Cp / w[:, None]
        else:
            pc, _ = self.split(psi)
            Cw = np.empty_like(self._Cp)
            m = Cw.shape[1]
            for start, stop, batch in self._spans:
                G, s = batch.rows.shape
                if s == 1:
                    Cw[start:stop] = self._Cp[start:stop] / w[start:stop, None]
                    continue
                # V = W R W, so L_V = W L_R and L_V^-1 M = L_R^-1 (W^-1 M)
                scaled = (self._Cp[start:stop] / w[start:stop, None]).reshape(G, s, m)
                if batch.shared:  # one R for all groups: one factor, one triangular solve
                    Lr = np.linalg.cholesky(self.correlation.matrices(pc, batch.first)[0])
                    logdet += 2.0 * G * float(np.sum(np.log(np.diagonal(Lr))))
                    # (an s x s inverse, broadcast over the groups: a BLAS solve on these
                    # shapes costs more, and starts threads, for the few flops it does)
                    Li = solve_triangular(Lr, np.eye(s), lower=True, check_finite=False)
                    Cw[start:stop] = np.matmul(Li, scaled).reshape(-1, m)
                    continue
                Lr = np.linalg.cholesky(self.correlation.matrices(pc, batch))
                logdet += 2.0 * float(np.sum(np.log(np.diagonal(Lr, axis1=1, axis2=2))))
                Cw[start:stop] = _forward_solve(Lr, scaled).reshape(G * s, m)
        self._cache = (key, Cw, logdet)
        return Cw, logdet

    def cross_products(self, psi: np.ndarray) -> CrossProducts:
        """The blocks of ``A(psi)`` (whitened rows; same sparsity for every psi)."""
        Cw, _ = self.whiten(psi)
        zs, start = [], 0
        for z in self._zs:
            zs.append(Cw[:, start : start + z.shape[1]])
            start += z.shape[1]
        Xw = Cw[:, self._zwidth : -1]
        yw = np.ascontiguousarray(Cw[:, -1])
        return compute_cross_products(self.terms, Xw, yw, refs=self._refs_p, zs=zs)

    def log_jacobian(self, psi: np.ndarray) -> float:
        """``sum_g log|V_g|``: the deviance's term for the whitening."""
        return self.whiten(psi)[1]

    def with_xy_transform(self, M: np.ndarray) -> RepeatedResidual:
        """The same structure for the ``[X y]`` columns mapped by ``M`` (``[X y] M'``)."""
        xy = self._C[:, self._zwidth :]
        return self._with(xy=xy @ np.asarray(M).T)

    # -- reporting ---------------------------------------------------------------------------
    def report(self, psi: np.ndarray, sigma: float) -> dict[str, Any]:
        """``structure_params`` on the natural scale (names as the issue spells them);
        ``sigma`` on nlme's scale (:meth:`sigma_scale`)."""
        pc, parts = self.split(psi)
        out: dict[str, Any] = {}
        if self.correlation is not None:
            out.update(self.correlation.report(pc))
        for v, p in zip(self.variances, parts, strict=True):
            out.update(v.report(p, sigma))
        out["sigma"] = float(sigma)
        return out

    def sd_by_row(self, psi: np.ndarray, sigma: float) -> np.ndarray:
        """The residual SD of every row, ``sigma w_i`` (sigma on nlme's scale)."""
        return sigma / self.sigma_scale(psi) * np.exp(self.log_w(psi))

    def row_covariance_blocks(self, psi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(rows, V)`` per batch (``V``: (G, s, s), relative to sigma^2), for tests and
        simulation; without a correlation one batch of single rows."""
        w = np.exp(self.log_w(psi))
        if self.correlation is None:
            rows = np.arange(self.nobs)[:, None]
            return [(rows, (w * w)[:, None, None])]
        pc, _ = self.split(psi)
        out = []
        for batch in self.batches:
            R = np.ones((batch.rows.shape[0], 1, 1))
            if batch.size > 1:
                R = self.correlation.matrices(pc, batch)
            wb = w[batch.rows]
            out.append((batch.rows, R * wb[:, :, None] * wb[:, None, :]))
        return out


#: Up to this group size the batched triangular solve is a loop over the rows of a group
#: (each step vectorised over the groups); LAPACK's batched LU costs more for small blocks.
_LOOP_SOLVE_MAX = 24


def _forward_solve(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``L^-1 B`` for a batch of lower-triangular ``L`` (G, s, s) and ``B`` (G, s, m)."""
    s = L.shape[1]
    if s > _LOOP_SOLVE_MAX:
        return np.linalg.solve(L, B)
    out = np.empty_like(B)
    for i in range(s):
        acc = B[:, i, :]
        if i:
            acc = acc - np.einsum("gj,gjm->gm", L[:, i, :i], out[:, :i, :])
        out[:, i, :] = acc / L[:, i, i, None]
    return out


def _codes(values: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    """Level of each row (levels as R prints them, sorted numerically or as text)."""
    codes, uniques = pd.factorize(values, sort=False)
    labels = [format_level(v) for v in uniques]
    levels = tuple(sorted(set(labels), key=_level_sort_key))
    index = {lab: i for i, lab in enumerate(levels)}
    recode = np.array([index[lab] for lab in labels], dtype=np.int64)
    return recode[codes], levels


def _numeric(frame: pd.DataFrame, column: str, what: str, fix: str) -> np.ndarray:
    values = frame[column]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise DataError(f"{what}: column {column!r} is not numeric; {fix}")
    out = values.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise DataError(f"{what}: column {column!r} has infinite values; drop those rows")
    return out


def structure_columns(
    correlation: CorrelationSpec | None, variance: VarianceSpec | None
) -> list[str]:
    """The data columns the specs use (rows missing any of them are dropped)."""
    cols: list[str] = []
    if correlation is not None:
        cols.append(correlation.group)
        if correlation.time is not None:
            cols.append(correlation.time)
    if variance is not None and not variance.on_fitted:
        cols.append(variance.covariate)
    return list(dict.fromkeys(cols))


def build_repeated(
    frame: pd.DataFrame,
    correlation: CorrelationSpec | None,
    variance: VarianceSpec | None,
    terms: tuple,
    X: np.ndarray,
    y: np.ndarray,
    fitted: np.ndarray | None = None,
) -> RepeatedResidual:
    """The repeated structure of the rows in ``frame`` (aligned with ``X`` and ``y``).

    Raises
    ------
    DataError
        A column that is missing or of the wrong kind, a time repeated within a group,
        non-integer times for ``ar1``, groups that all have one observation, or groups
        that cross a random-effects grouping factor.
    """
    for col in structure_columns(correlation, variance):
        if col not in frame.columns:
            raise DataError(f"column {col!r} of the residual structure is not in the data")
    corr = None
    batches: list[Batch] = []
    variances: list[Any] = []
    group = None
    if correlation is not None:
        corr, batches, group, extra = _correlation(frame, correlation, terms)
        variances.extend(extra)
    if variance is not None:
        variances.append(_variance(frame, variance, fitted, correlation))
    return RepeatedResidual(terms, X, y, corr, batches, variances, group)


def _correlation(frame: pd.DataFrame, spec: CorrelationSpec, terms: tuple):
    g, glevels = _codes(frame[spec.group])
    sizes = np.bincount(g, minlength=len(glevels))
    if sizes.max() < 2:
        raise DataError(
            f"{spec}: every level of {spec.group!r} has one observation, so there is no "
            "within-group correlation to estimate; check the grouping column"
        )
    # nlme's nesting: each correlation group inside one level of every random-effects factor
    order = np.argsort(g, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for term in terms:
        refs = np.asarray(term.refs)[order]
        first = np.repeat(refs[starts[sizes > 0]], sizes[sizes > 0])
        if np.any(refs != first):
            raise DataError(
                f"{spec}: groups of {spec.group!r} cross levels of the random-effects factor "
                f"{term.group!r}; the correlation groups must be nested in every grouping "
                f"factor (use the innermost factor, e.g. {spec.kind}(... | {term.group}))"
            )
    time = level = None
    extra: list[Any] = []
    if spec.kind in ("ar1", "car1"):
        fix = "give a numeric time (e.g. a visit number), or use us(...) for visits as levels"
        time = _numeric(frame, spec.time, spec.kind, fix)
        if spec.kind == "ar1" and not np.all(time == np.rint(time)):
            raise DataError(
                f"ar1: column {spec.time!r} has non-integer times; AR(1) needs integer "
                "occasions (gaps allowed): use car1(...) for continuous time"
            )
        key = time
    elif spec.kind == "us":
        level, tlevels = _codes(frame[spec.time])
        if len(tlevels) < 2:
            raise DataError(f"us: column {spec.time!r} has one level; nothing to correlate")
        key = level.astype(np.float64)
    else:
        key = None
    if key is not None:
        pairs = pd.DataFrame({"g": g, "t": key})
        dup = pairs.duplicated()
        if dup.any():
            i = int(np.nonzero(dup.to_numpy())[0][0])
            raise DataError(
                f"{spec}: time {format_level(frame[spec.time].iloc[i])} occurs twice in "
                f"level {glevels[g[i]]!r} of {spec.group!r}; each time may occur once per group "
                "(check for duplicated rows or use a finer time column)"
            )
    if spec.kind == "cs":
        corr: Any = CompoundSymmetry(int(sizes.max()))
    elif spec.kind == "ar1":
        corr = AR1()
    elif spec.kind == "car1":
        corr = CAR1()
    else:
        corr = Unstructured(tlevels)
        extra.append(IdentVariance(level, tlevels, spec.time))
    batches = []
    for s in np.unique(sizes[sizes > 0]):
        gs = np.nonzero(sizes == s)[0]
        rows = order[starts[gs][:, None] + np.arange(s)[None, :]]
        if key is not None:  # a group's rows in time order: equal patterns compare equal
            rows = np.take_along_axis(rows, np.argsort(key[rows], axis=1, kind="stable"), 1)
        batches.extend(_split_by_pattern(rows, key, time, level))
    return corr, batches, (spec.group, len(glevels)), extra


#: Above this many distinct time patterns among groups of one size, the groups are
#: factored one by one in a batch (irregular times); below, once per pattern.
_SHARED_PATTERNS_MAX = 64


def _split_by_pattern(rows, key, time, level) -> list[Batch]:
    """One batch per pattern of times (relative to the first) or levels when there are few
    (balanced designs: one Cholesky factor for all subjects), else one batch of the size."""

    def batch(r, shared):
        return Batch(
            rows=r,
            time=None if time is None else time[r],
            level=None if level is None else level[r],
            shared=shared,
        )

    if key is None:  # compound symmetry: the size alone gives the matrix
        return [batch(rows, True)]
    pattern = key[rows] - (key[rows][:, :1] if level is None else 0.0)
    unique, inverse = np.unique(pattern, axis=0, return_inverse=True)
    if unique.shape[0] > _SHARED_PATTERNS_MAX:
        return [batch(rows, False)]
    inverse = np.asarray(inverse).ravel()
    return [batch(rows[inverse == k], True) for k in range(unique.shape[0])]


def _variance(
    frame: pd.DataFrame,
    spec: VarianceSpec,
    fitted: np.ndarray | None,
    correlation: CorrelationSpec | None,
):
    if spec.kind == "ident":
        if correlation is not None and correlation.kind == "us":
            raise ModelSpecificationError(
                "us(...) already has an SD per time level; drop variance='ident(...)' or use "
                "another correlation structure"
            )
        codes, labels = _codes(frame[spec.covariate])
        if len(labels) < 2:
            raise DataError(
                f"ident({spec.covariate}): the column has a single level; nothing to compare"
            )
        return IdentVariance(codes, labels, spec.covariate)
    if spec.on_fitted:
        if fitted is None:
            raise ValueError("fitted values are needed for a variance function of fitted")
        x = fitted
    else:
        x = _numeric(
            frame,
            spec.covariate,
            f"{spec.kind}({spec.covariate})",
            "a variance covariate must be numeric (use ident() for groups)",
        )
    if spec.kind == "power":
        return PowerVariance(x, spec.covariate)
    return ExpVariance(x, spec.covariate)
