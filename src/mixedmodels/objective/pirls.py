"""The GLMM criterion: PIRLS for the conditional modes, then the Laplace or AGQ deviance.

For a generalized linear mixed model with spherical random effects ``u ~ N(0, I)``,
``b = Lambda(theta) u`` and linear predictor ``eta = offset + X beta + Z b``, the
conditional modes ``u~`` minimise the penalised deviance

    pdev(u) = sum_i d_i(y_i, mu_i(u)) + ||u||^2,

``d_i`` the deviance residuals of the family. Penalised iteratively reweighted least
squares (PIRLS; Bates et al. 2015, sec. 5; Bates, *lme4: Mixed-effects modeling with R*,
ch. 6) finds ``u~`` by Gauss-Newton steps, each a penalised weighted least-squares problem
with working weights ``w_i = a_i (dmu/deta)^2 / V(mu_i)`` (``a_i`` the prior weights) and
working response ``z_i = eta_i - o_i + (y_i - mu_i) / (dmu/deta)``: exactly the blocked
system of a linear mixed model with row weights (:class:`.linalg.blocked.BlockedSystem`;
only the values change from step to step). A step that does not lower ``pdev`` is halved,
as lme4 does.

At the modes the Laplace approximation of the deviance (-2 log-likelihood) is

    -2 l(theta, beta) ~ sum_i -2 log p(y_i | mu_i) + ||u~||^2 + log |L_Z|^2,

``L_Z L_Z' = Lambda' Z' W Z Lambda + I`` (lme4's ``devfun`` for ``nAGQ = 1``;
``-2 log p`` with R's ``family$aic`` conventions, normalising constants included). With
one scalar random-effects term the integral factors over the groups and adaptive
Gauss-Hermite quadrature (Pinheiro & Bates 1995, J. Comput. Graph. Stat. 4:12-35) replaces
each group's Laplace factor by a ``k``-point rule centred at the mode with the scale of
the conditional SD; lme4 evaluates it with deviance residuals, so its value omits the
saturated log-likelihood, a constant (:meth:`PirlsDeviance.saturated`).

``nAGQ = 0`` (lme4's fast first stage): ``beta`` joins ``u`` inside PIRLS (the working
system with ``X``), and only ``theta`` is optimised.

**Rows.** Everything PIRLS does with the data goes through a small interface,
:class:`PirlsRows`, whose unit is one *pass* over the rows at given coefficients
(:class:`Coefficients`: ``beta`` and ``b`` per term): the sum of the deviance residuals
and the blocks of ``[Z (X) z]' W [Z (X) z]`` at the working weights and response there
(:meth:`PirlsRows.evaluate`), plus a few other sums (the blocks at the modes in the layout
results read, per-group deviances for quadrature, the start, the saturated constant).
Each PIRLS iteration is one pass: the pass at a candidate point gives both its penalised
deviance and the blocks of the next step, so a rejected step-halving candidate costs one
pass and nothing else does. :class:`MemoryRows` holds the rows in memory (it keeps the
linear predictor and means of recent passes, and sets up the blocks' sparsity once);
:class:`ChunkedRows` sums the same per-chunk computation over chunks that are read again
for every pass (streamed data) or reduced on a cluster (Dask): the PIRLS loop is written
once, for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from typing import Any, NamedTuple, Protocol

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.special import expit as _expit

from mixedmodels.covariance import CovarianceStructure, GroupedTerm
from mixedmodels.errors import ConvergenceError
from mixedmodels.family.links import EPS as _EPS
from mixedmodels.linalg.blocked import BlockedFactor, BlockedSystem
from mixedmodels.linalg.cross_products import (
    CrossProductPlan,
    CrossProducts,
    compute_cross_products,
)
from mixedmodels.linalg.solution import Estimates, estimate, solve_l22_transposed

__all__ = [
    "ChunkedRows",
    "Coefficients",
    "GlmmResponse",
    "GradientPieces",
    "MemoryRows",
    "PassSums",
    "PirlsDeviance",
    "PirlsRows",
    "PirlsState",
    "RowsPass",
    "nb_moment_sums",
    "pearson_chisq",
]

#: PIRLS stops when no conditional mode moved by more than this (times 1 + |u|): the
#: Laplace value is then exact to far below what a finite-difference Hessian needs.
MODE_TOLERANCE = 1e-12
#: Iterations and step halvings of one PIRLS run.
MAX_ITERATIONS = 100
MAX_HALVINGS = 30


def _relative_move(
    du: np.ndarray, u: np.ndarray, dbeta: np.ndarray | None, beta: np.ndarray
) -> float:
    """PIRLS's convergence measure: the step in the modes (and beta, when it is estimated
    inside PIRLS) relative to their size. ndarray methods: ``np.max``'s dispatch costs
    more than the reduction on few levels."""
    moved = float(np.abs(du).max(initial=0.0)) / (1.0 + float(np.abs(u).max(initial=0.0)))
    if dbeta is not None:
        moved = max(
            moved,
            float(np.abs(dbeta).max(initial=0.0)) / (1.0 + float(np.abs(beta).max(initial=0.0))),
        )
    return moved


def _relative_move_norm2(
    du: np.ndarray, u: np.ndarray, dbeta: np.ndarray | None, beta: np.ndarray
) -> float:
    """:func:`_relative_move` from dot products: ``||du||_2 / (1 + rms(u))`` (and beta's),
    never below the max-norm measure (``||du||_2 >= max |du|``, ``rms(u) <= max |u|``), so
    PIRLS stops no earlier; two BLAS dots where the max-norm takes four reductions
    through numpy's Python wrappers (the one-scalar-term loop on small data)."""
    moved = np.sqrt(du.dot(du)) / (1.0 + np.sqrt(u.dot(u) / max(u.shape[0], 1)))
    if dbeta is not None:
        moved = max(
            moved,
            np.sqrt(dbeta.dot(dbeta)) / (1.0 + np.sqrt(beta.dot(beta) / max(beta.shape[0], 1))),
        )
    return float(moved)


#: Below this relative move, PIRLS steps that stop shrinking the move are at the rounding floor
#: of the solve: with an ill-conditioned X (uncentred covariates such as a year and a height,
#: grouseticks) the modes and beta jitter by ~1e-10 of their size from one step to the next,
#: so :data:`MODE_TOLERANCE` can never be met. The penalised deviance is stationary there
#: (its error is quadratic in the move: ~1e-20), so the value is as exact as it can be.
_FLOOR_MOVE = 1e-8
#: Steps below :data:`_FLOOR_MOVE` without halving the smallest move seen, before stopping.
_FLOOR_STALLS = 3


def _stalled(floor: list[float], moved: float) -> bool:
    """Whether PIRLS has reached its rounding floor (see :data:`_FLOOR_MOVE`).

    ``floor`` is the run's ``[smallest move below the floor, steps since it halved]``,
    started as ``[inf, 0]``; called only for moves below :data:`_FLOOR_MOVE`.
    """
    if moved < 0.5 * floor[0]:
        floor[0], floor[1] = moved, 0.0
        return False
    floor[1] += 1.0
    return floor[1] >= _FLOOR_STALLS


def _damped_step(
    evaluate: Callable[[np.ndarray, np.ndarray], tuple[Any, ...]],
    u: np.ndarray,
    du: np.ndarray,
    beta: np.ndarray,
    dbeta: np.ndarray | None,
    pdev: float,
) -> tuple[np.ndarray, np.ndarray, tuple[Any, ...]]:
    """The PIRLS step ``(du, dbeta)``, halved until the penalised deviance does not rise.

    ``evaluate(u, beta)`` returns a tuple whose last entry is the penalised deviance there;
    returns the new ``u``, ``beta`` and that tuple. A rise by rounding alone (~1e-13 of the
    deviance, once the modes are nearly there) is no reason to halve.
    """
    step = 1.0
    for _ in range(MAX_HALVINGS):
        u_try = u + step * du
        beta_try = beta + step * dbeta if dbeta is not None else beta
        trial = evaluate(u_try, beta_try)
        if trial[-1] <= pdev + 1e-12 * (abs(pdev) + 1.0):
            return u_try, beta_try, trial
        step *= 0.5
    raise ConvergenceError(
        "PIRLS step-halvings failed to reduce the penalised deviance; the model "
        "may be overparameterised or the data separated: simplify the model"
    )


def _not_converged() -> ConvergenceError:
    return ConvergenceError(
        f"PIRLS did not converge in {MAX_ITERATIONS} iterations; the model may be "
        "overparameterised or the data separated: simplify the model"
    )


#: Up to this many entries, PIRLS forms ``Zr'Z1`` dense.
_DENSE_REST_FIRST = 1 << 15
#: ``dw/deta`` of the working weights for canonical links, ``(prior, mu) -> array``: ``w =
#: a V(mu)`` there, so ``dw/deta = a V'(mu) V(mu)``.
_CANONICAL_W_PRIME: dict[tuple[str, str], Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ("binomial", "logit"): lambda a, mu: a * mu * (1.0 - mu) * (1.0 - 2.0 * mu),
    ("poisson", "log"): lambda a, mu: a * mu,
}
#: ``d^2 w / d eta^2`` of the working weights for canonical links, ``(prior, mu) -> array``
#: (logit: ``a V (1 - 6 V)``, ``V = mu (1 - mu)``; log: ``a mu``).
_CANONICAL_W_SECOND: dict[tuple[str, str], Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ("binomial", "logit"): lambda a, mu: a * (mu * (1.0 - mu)) * (1.0 - 6.0 * mu * (1.0 - mu)),
    ("poisson", "log"): lambda a, mu: a * mu,
}
#: Several scalar terms take the dense path of :meth:`PirlsDeviance._pirls_scalar_terms`
#: up to this many rest-block columns (its Schur complement is factored dense).
_SCALAR_REST_MAX = 1000


def _binomial_logit_working(
    eta: np.ndarray, mu: np.ndarray, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    # dmu/deta = mu (1 - mu) = V(mu) (bounded below by eps, as the link and the variance
    # are), so w = a (dmu/deta)^2 / V = a dmu/deta.
    mu_eta = np.maximum(mu * (1.0 - mu), _EPS)
    return mu_eta, prior * mu_eta


def _poisson_log_working(
    eta: np.ndarray, mu: np.ndarray, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    # dmu/deta = mu = V(mu) (mu is already bounded below by eps), so w = a mu.
    return mu, prior * mu


def _logit_inverse(eta: np.ndarray) -> np.ndarray:
    # LogitLink.inverse's bounds, without its per-call error-state context (the fast PIRLS
    # paths run under one) and np.clip's wrapper; 1 / (1 + exp(-eta)) as one ufunc (four
    # numpy calls fewer: on small data a pass is mostly calls, not arithmetic).
    mu = _expit(eta)
    np.maximum(mu, _EPS, out=mu)
    return np.minimum(mu, 1.0 - _EPS, out=mu)


def _log_inverse(eta: np.ndarray) -> np.ndarray:
    # LogLink.inverse's, as _logit_inverse.
    return np.maximum(np.exp(eta), _EPS)


#: Inverse links the fast PIRLS paths call directly (others: ``link.inverse``).
_FAST_INVERSE = {"logit": _logit_inverse, "log": _log_inverse}


#: ``(dmu/deta, w)`` from ``(eta, mu, prior)`` for canonical links, where ``dmu/deta =
#: V(mu)`` spares the link's derivative and the variance function (the values agree with
#: theirs to rounding); other families use :func:`_working_weights`' general form.
_CANONICAL_WORKING = {
    ("binomial", "logit"): _binomial_logit_working,
    ("poisson", "log"): _poisson_log_working,
}


def _working_weights(family: Any) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """``(eta, mu, prior) -> (dmu/deta, w)``, ``w = a (dmu/deta)^2 / V(mu)``, for ``family``."""
    key = (getattr(family, "name", ""), family.link.name)
    if key in _CANONICAL_WORKING:
        return _CANONICAL_WORKING[key]
    link_mu_eta, variance = family.link.mu_eta, family.variance

    def working(eta: np.ndarray, mu: np.ndarray, prior: np.ndarray):
        mu_eta = link_mu_eta(eta)
        return mu_eta, prior * (mu_eta * mu_eta) / variance(mu)

    return working


#: The analytic beta-gradient holds the rest block's rows times term 1's columns dense (and
#: ships them to every chunk): up to this many entries.
_GRADIENT_DENSE_MAX = 4_000_000
#: The start predictor is used from this many rows on.
_PREDICT_MIN_ROWS = 200
#: ... and with one random-effects term in memory and a canonical link from this many:
#: PIRLS' per-level iterations there cost less than a prediction (~0.5 iterations saved
#: per run) up to a few thousand rows (Contraception's 1934 rows: 20% less time without).
_PREDICT_MIN_ROWS_ONE_TERM = 5000
#: The start predictor keeps at most this many floats of past modes (it is off when fewer
#: than two points fit).
_HISTORY_FLOATS = 4_000_000


@dataclass(frozen=True, eq=False)
class GlmmResponse:
    """The response side of a GLMM: what PIRLS reweights.

    Attributes
    ----------
    y
        Response as the family sees it (0/1, proportion of successes, counts).
    weights
        Prior weights times binomial trials (R's ``weights`` after ``family$initialize``).
    trials
        Binomial trials per row, or None (0/1 data, counts).
    offset
        Known part of the linear predictor per row (zeros without an offset).
    family
        A :class:`mixedmodels.family.Family`.
    """

    y: np.ndarray
    weights: np.ndarray
    trials: np.ndarray | None
    offset: np.ndarray
    family: object

    def with_family(self, family: object) -> GlmmResponse:
        return GlmmResponse(self.y, self.weights, self.trials, self.offset, family)


class Coefficients(NamedTuple):
    """Where the rows are evaluated: ``eta = offset + X beta + sum_k Z_k b_k``.

    Small (``p`` plus the number of random effects): a pass over chunks on a cluster
    ships it to every worker. (A named tuple: PIRLS makes one per pass.)

    Attributes
    ----------
    beta
        (p,) fixed effects.
    b
        Random effects per term in engine order, each (levels, ncols) (``b``, not ``u``).
    """

    beta: np.ndarray
    b: tuple[np.ndarray, ...]


class RowsPass:
    """One pass over the rows at some :class:`Coefficients`.

    Attributes
    ----------
    coefficients
        Where the pass was made.
    deviance
        ``sum_i d_i(y_i, mu_i)``, the deviance residuals summed over the rows.
    eta, mu
        Linear predictor (offset included) and means per row, or None (chunked rows).

    Notes
    -----
    :attr:`blocks` are the blocks of ``A = [Z (X) z]' W [Z (X) z]`` at the working weights
    ``W`` and working response ``z`` of this point. In memory they are formed when first
    read (a rejected step-halving candidate never forms them); a chunked pass forms them
    with the deviance, in the same pass over the data.
    """

    __slots__ = ("_blocks", "_make_blocks", "coefficients", "deviance", "eta", "mu")

    def __init__(
        self,
        coefficients: Coefficients,
        deviance: float,
        blocks: CrossProducts | None = None,
        make_blocks: Callable[[], CrossProducts] | None = None,
        eta: np.ndarray | None = None,
        mu: np.ndarray | None = None,
    ):
        self.coefficients = coefficients
        self.deviance = deviance
        self._blocks = blocks
        self._make_blocks = make_blocks
        self.eta = eta
        self.mu = mu

    @property
    def blocks(self) -> CrossProducts:
        """The weighted blocks at this point (formed on first access in memory)."""
        if self._blocks is None:
            if self._make_blocks is None:
                raise ValueError("this pass was made without its blocks")
            self._blocks = self._make_blocks()
            self._make_blocks = None
        return self._blocks


class PirlsRows(Protocol):
    """What PIRLS and the GLMM criterion need from the rows; every method is one pass.

    The family is an argument of every call (the negative binomial's theta changes
    during a fit); ``coefficients`` say where the rows are evaluated. Sums over rows are
    returned, never per-row values (except :class:`MemoryRows`' ``eta``/``mu``).
    """

    nobs: int
    p: int

    def evaluate(self, family: Any, coefficients: Coefficients, *, with_x: bool) -> RowsPass:
        """The deviance at ``coefficients`` and the working blocks there (with ``X`` if
        ``with_x``: nAGQ = 0's PIRLS over beta and u)."""
        ...

    def cross_products(self, family: Any, coefficients: Coefficients) -> CrossProducts:
        """The working blocks with ``X`` in :func:`compute_cross_products`' layout."""
        ...

    def level_deviances(
        self, family: Any, coefficients: Coefficients, b_nodes: np.ndarray
    ) -> np.ndarray:
        """Per level of the single scalar term, the deviance with its ``b`` replaced by
        each row of ``b_nodes`` (k, levels): a (levels, k) array (quadrature)."""
        ...

    def minus_twice_loglik(self, family: Any, coefficients: Coefficients) -> float:
        """``sum -2 log p(y | mu)`` at ``coefficients``."""
        ...

    def sums(
        self, statistic: Callable[..., np.ndarray], family: Any, coefficients: Coefficients
    ) -> np.ndarray:
        """``statistic(family, y, mu, weights)`` summed over chunks (it sums over rows)."""
        ...

    def initial_beta(self, family: Any) -> np.ndarray:
        """beta of a weighted least-squares fit of the working response at the family's
        starting means (``glm.fit``'s first iteration)."""
        ...

    def saturated(self, family: Any) -> float:
        """``sum (-2 log p(y | mu) - d(y, mu))``, which does not depend on ``mu``."""
        ...

    def integral_binomial_weights(self) -> bool:
        """Whether every prior weight per trial is a whole number (see
        :meth:`PirlsDeviance.saturated`)."""
        ...

    def beta_gradient_sums(
        self, family: Any, coefficients: Coefficients, pieces: GradientPieces
    ) -> np.ndarray:
        """The row sums of the beta-gradient's first pass (:meth:`GradientPieces.sums`)."""
        ...

    def beta_gradient_correction(
        self, family: Any, coefficients: Coefficients, pieces: GradientPieces, y: np.ndarray
    ) -> np.ndarray:
        """``X' W Z Lambda y`` (:meth:`GradientPieces.correction`)."""
        ...

    def theta_gradient_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        pieces: GradientPieces,
        u: np.ndarray,
        y: np.ndarray,
    ) -> np.ndarray:
        """The row sums of the theta-gradient (:meth:`GradientPieces.theta_row_sums`)."""
        ...

    def scalar_slope_level_sums(self, family: Any, coefficients: Coefficients) -> np.ndarray:
        """Per level of the one scalar term: ``sum z^3 w'`` (the nAGQ = 0 slope's first pass)."""
        ...

    def scalar_slope_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        lam: float,
        u: np.ndarray,
        y_modes: np.ndarray,
        inv_m: np.ndarray,
    ) -> np.ndarray:
        """The nAGQ = 0 slope's row sums with one scalar term (its second pass)."""
        ...

    def scalar_hessian_level_sums(
        self, family: Any, coefficients: Coefficients, lam: float
    ) -> np.ndarray:
        """The closed-form beta-Hessian's first pass (one scalar term)."""
        ...

    def scalar_hessian_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        lam: float,
        CM: np.ndarray,
        w3M2: np.ndarray,
        inv_m: np.ndarray,
    ) -> np.ndarray:
        """The closed-form beta-Hessian's second pass (one scalar term)."""
        ...

    def scalar_theta_level_sums(self, family: Any, coefficients: Coefficients) -> np.ndarray:
        """The closed-form Hessian's first pass (one scalar term)."""
        ...

    def scalar_theta_hessian_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        lam: float,
        d_beta: np.ndarray,
        e_level: np.ndarray,
        inv_m: np.ndarray,
        w3M2: np.ndarray,
    ) -> np.ndarray:
        """The closed-form Hessian's second pass (one scalar term)."""
        ...

    def agq_level_sums(self, family: Any, coefficients: Coefficients, nlevels: int) -> np.ndarray:
        """Per level of the one scalar term, at the modes (canonical link): ``sum w z^2``,
        ``sum w' z^3``, ``sum z q``, then ``sum z w x_j`` and ``sum z^2 w' x_j`` for each
        column of X; ``(3 + 2 p, levels)`` (:meth:`PirlsDeviance.agq_gradient`)."""
        ...

    def agq_node_sums(
        self, family: Any, beta: np.ndarray, b_nodes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per level and node (``b_nodes``: ``(levels, K)``), ``sum d_i`` and ``sum z_i
        d'_i`` at the nodes."""
        ...

    def agq_x_sums(
        self, family: Any, beta: np.ndarray, b_nodes: np.ndarray, pi: np.ndarray
    ) -> np.ndarray:
        """``X'a`` with ``a_i = sum_k pi_{l(i)k} d'_i`` at the nodes."""
        ...


def nb_moment_sums(family: Any, y: np.ndarray, mu: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[sum mu^2, sum((y - mu)^2 - mu)]``: the moment start of the negative binomial's
    theta (:meth:`PirlsRows.sums`)."""
    return np.array([float(np.sum(mu * mu)), float(np.sum((y - mu) ** 2 - mu))])


def pearson_chisq(family: Any, y: np.ndarray, mu: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[sum (y - mu)^2 w / V(mu)]``: the Pearson statistic (:meth:`PirlsRows.sums`)."""
    raw = y - mu
    return np.array([float(np.sum(raw * raw * weights / np.asarray(family.variance(mu))))])


def _column_or_none(z: np.ndarray) -> np.ndarray | None:
    """None for a column of ones (a random intercept: products with it are skipped)."""
    return None if bool(np.all(z == 1.0)) else z


#: Rows per slice of the one-scalar-term passes (gradient, slope, closed-form Hessians,
#: final blocks, saturated constant): their row temporaries (up to ~4p + 12 row vectors,
#: and as many bin indices: ~35 MB for p = 2) then take a slice's memory instead of
#: several times the data's (a 1e6-row fit's Hessian pass allocated 360 MB at once);
#: smaller data are one slice. The closed-form Hessian of the 1e6-row binary fit costs
#: 0.25 s at 2^17 rows a slice, 0.38 s at 2^15 and 0.47 s at 2^13 (0.30 s unsliced); the
#: fit's peak RSS is the same at 2^15 and 2^17.
_SLICE_ROWS = 1 << 17


class _RowSlice(NamedTuple):
    """Consecutive rows of a :class:`MemoryRows` (views) with the linear predictor and the
    means there; ``z`` is the one scalar term's column (None for an intercept)."""

    X: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    refs: np.ndarray
    z: np.ndarray | None
    eta: np.ndarray
    mu: np.ndarray

    def part(self, rows: slice) -> _RowSlice:
        """The rows ``rows`` of these."""
        z = self.z
        return _RowSlice(
            self.X[rows],
            self.y[rows],
            self.weights[rows],
            self.refs[rows],
            None if z is None else z[rows],
            self.eta[rows],
            self.mu[rows],
        )


class MemoryRows:
    """The rows of a GLMM in memory.

    Parameters
    ----------
    terms
        Grouped random-effects terms in engine order; their ``refs`` and ``z`` are these
        rows' (a chunk's terms carry the chunk's rows and the levels of all rows).
    X
        (n, p) fixed-effects columns.
    y, weights, trials, offset
        As :class:`GlmmResponse`'s (``trials`` may be None).

    Notes
    -----
    The sparsity of the working blocks is found once (a
    :class:`~mixedmodels.linalg.cross_products.CrossProductPlan` per ``with_x``); the
    ``y``-only part of the deviance once per family; ``offset + X beta`` once per beta;
    and the last pass is kept (PIRLS ends on the pass of its accepted point), so that the
    final system and the loglik read its linear predictor and means without forming them
    again.
    """

    def __init__(
        self,
        terms: tuple[GroupedTerm, ...],
        X: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray,
        trials: np.ndarray | None,
        offset: np.ndarray,
    ):
        self.terms = terms
        self.X = np.asarray(X, dtype=np.float64)
        self.nobs, self.p = self.X.shape
        self.y = y
        self.weights = weights
        self.trials = trials
        self.offset = offset
        self._reset_workspace()

    def _reset_workspace(self) -> None:
        # Per term: level per row, the z column (scalar terms; None for a column of ones)
        # or matrix, and which.
        self._term_rows = [
            (t.refs, _column_or_none(t.z[:, 0]) if t.ncols == 1 else t.z, t.ncols == 1)
            for t in self.terms
        ]
        self._plans: dict[bool, CrossProductPlan] = {}
        self._deviance_function: tuple[object, Callable[[np.ndarray], float]] | None = None
        self._fixed: tuple[np.ndarray, np.ndarray] | None = None
        self._last: RowsPass | None = None
        self._x_levels: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The workspace (plans, closures, recent passes) is rebuilt where the rows land.
        keep = ("terms", "X", "nobs", "p", "y", "weights", "trials", "offset")
        return {name: self.__dict__[name] for name in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_workspace()

    # -- pieces ---------------------------------------------------------------------------
    def _plan(self, with_x: bool) -> CrossProductPlan:
        if with_x not in self._plans:
            X = self.X if with_x else np.empty((self.nobs, 0))
            t1 = self.terms[0]
            qr = sum(t.nranef for t in self.terms[1:])
            # A small Zr'Z1 is cheapest dense; a large one (an observation-level term 1
            # has one column per row) stays sparse. The choice depends on the levels
            # only, so that the blocks of chunks of rows add up.
            dense = qr * t1.nranef <= _DENSE_REST_FIRST
            self._plans[with_x] = CrossProductPlan(self.terms, X, dense_rest_first=dense)
        return self._plans[with_x]

    def _fixed_part(self, beta: np.ndarray) -> np.ndarray:
        """``offset + X beta``, kept for the last beta object: PIRLS without X passes the
        same array (its own copy, never changed in place) at every step."""
        cached = self._fixed
        if cached is not None and cached[0] is beta:
            return cached[1]
        fixed = self.offset + self.X @ beta
        self._fixed = (beta, fixed)
        return fixed

    def _random_part(self, b: tuple[np.ndarray, ...]) -> np.ndarray:
        """``Z b`` per row (a new array)."""
        out = None
        for (refs, z, scalar), bk in zip(self._term_rows, b):  # noqa: B905 (hot path)
            if scalar:
                # take() on the column is ~4x faster than the 2-D fancy index bk[refs, 0];
                # a random intercept's z is all ones (the product is exact: skipped).
                part = bk[:, 0].take(refs)
                if z is not None:
                    part *= z
            else:
                part = np.einsum("ij,ij->i", z, bk[refs])
            if out is None:
                out = part
            else:
                out += part
        assert out is not None
        return out

    def _deviance(self, family: Any) -> Callable[[np.ndarray], float]:
        cached = self._deviance_function
        if cached is None or cached[0] is not family:
            cached = self._deviance_function = (
                family,
                family.deviance_function(self.y, self.weights),
            )
        return cached[1]

    def _working(self, family: Any, eta: np.ndarray, mu: np.ndarray, base: np.ndarray):
        """Working weights and working response (``eta - base`` plus the linearised residual)."""
        mu_eta = family.link.mu_eta(eta)
        w = self.weights * (mu_eta * mu_eta) / family.variance(mu)
        z = (eta - base) + (self.y - mu) / mu_eta
        return w, z

    def _eta_mu(self, family: Any, coefficients: Coefficients) -> tuple[np.ndarray, np.ndarray]:
        last = self._last
        if last is not None and last.coefficients is coefficients:
            return last.eta, last.mu  # type: ignore[return-value]
        eta = self._fixed_part(coefficients.beta) + self._random_part(coefficients.b)
        return eta, family.link.inverse(eta)

    def eta_mu(self, family: Any, coefficients: Coefficients) -> tuple[np.ndarray, np.ndarray]:
        """The linear predictor (offset included) and the means per row."""
        return self._eta_mu(family, coefficients)

    # -- passes ---------------------------------------------------------------------------
    def evaluate(self, family: Any, coefficients: Coefficients, *, with_x: bool) -> RowsPass:
        # PIRLS' inner loop: the helpers are written out (a pass on small data costs
        # tens of microseconds, so Python calls show).
        beta, b = coefficients
        cached = self._fixed
        if cached is not None and cached[0] is beta:
            fixed = cached[1]
        else:
            fixed = self._fixed_part(beta)
        eta = self._random_part(b)
        eta += fixed
        mu = family.link.inverse(eta)
        deviance_function = self._deviance_function
        if deviance_function is None or deviance_function[0] is not family:
            deviance_function = (family, self._deviance(family))
        deviance = deviance_function[1](mu)
        base = self.offset if with_x else fixed

        def blocks() -> CrossProducts:
            w, z = self._working(family, eta, mu, base)
            return self._plan(with_x)(w, z, log_weights=False)

        done = RowsPass(coefficients, deviance, None, blocks, eta, mu)
        self._last = done
        return done

    def cross_products(self, family: Any, coefficients: Coefficients) -> CrossProducts:
        eta, mu = self._eta_mu(family, coefficients)
        w, z = self._working(family, eta, mu, self.offset)
        return compute_cross_products(self.terms, self.X, z, weights=w)

    def level_deviances(
        self, family: Any, coefficients: Coefficients, b_nodes: np.ndarray
    ) -> np.ndarray:
        term = self.terms[0]
        refs, z = term.refs, term.z[:, 0]
        fixed = self._fixed_part(coefficients.beta)
        k, nlevels = b_nodes.shape[0], term.nlevels
        # All nodes in one (k, rows) array: one call of the link and the family per pass
        # (25 nodes on a small data set cost 25 calls' overhead otherwise), then one
        # bincount over (node, level) bins, each summed over the rows in order as before.
        mu = family.link.inverse(fixed[None, :] + z[None, :] * b_nodes[:, refs])
        dev = family.deviance_residuals(self.y, mu, self.weights)
        bins = (np.arange(k)[:, None] * nlevels + refs[None, :]).ravel()
        sums = np.bincount(bins, weights=dev.ravel(), minlength=k * nlevels)
        return sums.reshape(k, nlevels).T.copy()

    def minus_twice_loglik(self, family: Any, coefficients: Coefficients) -> float:
        _, mu = self._eta_mu(family, coefficients)
        return float(family.minus_twice_loglik(self.y, mu, self.weights, self.trials))

    def sums(
        self, statistic: Callable[..., np.ndarray], family: Any, coefficients: Coefficients
    ) -> np.ndarray:
        _, mu = self._eta_mu(family, coefficients)
        return np.asarray(statistic(family, self.y, mu, self.weights), dtype=np.float64)

    def _start_rows(self, family: Any) -> tuple[np.ndarray, np.ndarray]:
        """``sqrt(w) X`` and ``sqrt(w) z`` at the family's starting means."""
        mu = family.initial_mu(self.y, self.weights, self.trials)
        eta = family.link.link(mu)
        w, z = self._working(family, eta, mu, self.offset)
        sw = np.sqrt(w)
        return self.X * sw[:, None], z * sw

    def initial_beta(self, family: Any) -> np.ndarray:
        Xw, zw = self._start_rows(family)
        beta, *_ = np.linalg.lstsq(Xw, zw, rcond=None)
        return beta

    def start_r(self, family: Any) -> np.ndarray:
        """R of a QR decomposition of ``sqrt(w) [X z]`` at the starting means (a chunk's
        share of :meth:`initial_beta`; R factors of chunks stack)."""
        Xw, zw = self._start_rows(family)
        return np.linalg.qr(np.column_stack([Xw, zw]), mode="r")

    def saturated(self, family: Any) -> float:
        # At the starting means, where both terms are moderate (no cancellation); row by
        # row, so in slices of _SLICE_ROWS rows (the family's temporaries are ~10 row
        # vectors; one slice, the same sum, for smaller data).
        total = 0.0
        for start in range(0, max(self.nobs, 1), _SLICE_ROWS):
            rows = slice(start, start + _SLICE_ROWS)
            y, weights = self.y[rows], self.weights[rows]
            trials = None if self.trials is None else self.trials[rows]
            at = family.initial_mu(y, weights, trials)
            unit = family.unit_minus_twice_loglik(y, at, weights, trials)
            total += float(np.sum(unit - family.deviance_residuals(y, at, weights)))
        return total

    def beta_gradient_sums(
        self, family: Any, coefficients: Coefficients, pieces: GradientPieces
    ) -> np.ndarray:
        eta, mu = self._eta_mu(family, coefficients)
        return pieces.sums(self, family, eta, mu)

    def beta_gradient_correction(
        self, family: Any, coefficients: Coefficients, pieces: GradientPieces, y: np.ndarray
    ) -> np.ndarray:
        eta, mu = self._eta_mu(family, coefficients)
        return pieces.correction(self, family, eta, mu, y)

    def theta_gradient_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        pieces: GradientPieces,
        u: np.ndarray,
        y: np.ndarray,
    ) -> np.ndarray:
        eta, mu = self._eta_mu(family, coefficients)
        return pieces.theta_row_sums(self, family, eta, mu, u, y)

    def _agq_rows(self) -> tuple[np.ndarray, np.ndarray]:
        refs, z, _ = self._term_rows[0]
        return refs, (np.ones(self.nobs) if z is None else z)

    def agq_level_sums(self, family: Any, coefficients: Coefficients, nlevels: int) -> np.ndarray:
        refs, z = self._agq_rows()
        prior = self.weights
        eta, mu = self._eta_mu(family, coefficients)
        _, w = _working_weights(family)(eta, mu, prior)
        w_prime = _CANONICAL_W_PRIME[(family.name, family.link.name)](prior, mu)
        q = -prior * (self.y - mu)
        z2 = z * z
        columns = [w * z2, w_prime * z2 * z, q * z]
        wz, wpz2 = w * z, w_prime * z2
        columns += [wz * self.X[:, j] for j in range(self.p)]
        columns += [wpz2 * self.X[:, j] for j in range(self.p)]
        bins = (np.arange(len(columns))[:, None] * nlevels + refs[None, :]).ravel()
        out = np.bincount(bins, weights=np.concatenate(columns), minlength=len(columns) * nlevels)
        return out.reshape(len(columns), nlevels)

    def _agq_nodes(
        self, family: Any, beta: np.ndarray, b_nodes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``refs``, ``z`` and the means at every node, ``(K, n)``."""
        refs, z = self._agq_rows()
        eta = self._fixed_part(beta)[None, :] + z[None, :] * b_nodes[refs].T
        inverse = _FAST_INVERSE.get(family.link.name, family.link.inverse)
        with np.errstate(over="ignore"):
            return refs, z, inverse(eta)

    def agq_node_sums(
        self, family: Any, beta: np.ndarray, b_nodes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        refs, z, mu = self._agq_nodes(family, beta, b_nodes)
        nlevels, k = b_nodes.shape
        dev = family.deviance_residuals(self.y, mu, self.weights)
        d_prime_z = -2.0 * self.weights * (self.y - mu) * z
        bins = (np.arange(k)[:, None] * nlevels + refs[None, :]).ravel()
        both = np.bincount(
            np.concatenate([bins, bins + k * nlevels]),
            weights=np.concatenate([dev.ravel(), d_prime_z.ravel()]),
            minlength=2 * k * nlevels,
        ).reshape(2, k, nlevels)
        return both[0].T.copy(), both[1].T.copy()

    def agq_x_sums(
        self, family: Any, beta: np.ndarray, b_nodes: np.ndarray, pi: np.ndarray
    ) -> np.ndarray:
        refs, _, mu = self._agq_nodes(family, beta, b_nodes)
        d_prime = -2.0 * self.weights * (self.y - mu)
        a = np.einsum("ik,ki->i", pi[refs], d_prime)
        return self.X.T @ a

    # -- one scalar term: sums over slices of rows ----------------------------------------
    def _slices(
        self,
        family: Any,
        coefficients: Coefficients,
        eta_mu: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> list[_RowSlice]:
        """The rows at ``coefficients`` with their linear predictor and means (``eta_mu``,
        else the last pass's, else formed) in slices of at most :data:`_SLICE_ROWS` rows;
        up to that many rows, one slice of the arrays themselves."""
        refs, z, _ = self._term_rows[0]
        eta, mu = self._eta_mu(family, coefficients) if eta_mu is None else eta_mu
        whole = _RowSlice(self.X, self.y, self.weights, refs, z, eta, mu)
        n = self.nobs
        if n <= _SLICE_ROWS:
            return [whole]
        return [whole.part(slice(start, start + _SLICE_ROWS)) for start in range(0, n, _SLICE_ROWS)]

    def _sum_slices(
        self,
        kernel: Callable[..., None],
        size: int,
        family: Any,
        coefficients: Coefficients,
        *args: Any,
        eta_mu: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """``kernel(rows, family, out, *args)``, which adds sums over ``rows`` into the
        stacked ``out`` (``size`` floats), over the slices of :meth:`_slices`: a
        one-scalar-term pass then holds a slice's row temporaries, not a multiple of the
        data's.

        Level sums are added by ``np.add.at`` (in row order, as ``bincount`` sums: the same
        bits, sliced or not); the ``X'v`` products are BLAS sums per slice (data of more
        than :data:`_SLICE_ROWS` rows: rounding-level differences from one product)."""
        out = np.zeros(size)
        for part in self._slices(family, coefficients, eta_mu):
            kernel(part, family, out, *args)
        return out

    def _level_bins(self, refs: np.ndarray, k: int) -> np.ndarray:
        """Bins ``j * levels + refs[i]`` of the entries of a ``(k, rows)`` array, for one
        sum per level and row of that array. Kept for ``k = p`` and all rows (then at most
        :data:`_SLICE_ROWS` of them: larger data are summed in slices)."""
        whole = k == self.p and refs is self._term_rows[0][0]
        if whole and self._x_levels is not None:
            return self._x_levels
        bins = (np.arange(k)[:, None] * self.terms[0].nlevels + refs[None, :]).ravel()
        if whole:
            self._x_levels = bins
        return bins

    def scalar_slope_level_sums(self, family: Any, coefficients: Coefficients) -> np.ndarray:
        """Per level of the one scalar term, ``sum_{i in l} z_i^3 dw_i/deta_i`` (canonical
        link) at ``coefficients``: how the level's ``M_l`` moves with its mode."""
        nlevels = self.terms[0].nlevels
        return self._sum_slices(self._slope_level_kernel, nlevels, family, coefficients)

    def _slope_level_kernel(self, rows: _RowSlice, family: Any, out: np.ndarray) -> None:
        z = rows.z
        w_prime = _CANONICAL_W_PRIME[(family.name, family.link.name)](rows.weights, rows.mu)
        if z is not None:
            w_prime = w_prime * (z * z * z)
        np.add.at(out, rows.refs, w_prime)

    def scalar_slope_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        lam: float,
        u: np.ndarray,
        y_modes: np.ndarray,
        inv_m: np.ndarray,
    ) -> np.ndarray:
        """The row sums of the nAGQ = 0 slope with one scalar term (canonical link), at
        the joint modes ``coefficients`` (``b = lam u``), stacked: ``X'(2 q + r)`` (p),
        ``q'(z (2 u - y_modes)[l]) + e'r`` (1), ``t`` (levels), ``X'W e`` (p); see
        :meth:`PirlsDeviance._fast_gradient_one_scalar` for the symbols."""
        size = 2 * self.p + 1 + u.shape[0]
        return self._sum_slices(
            self._slope_kernel, size, family, coefficients, lam, u, y_modes, inv_m
        )

    def _slope_kernel(
        self,
        rows: _RowSlice,
        family: Any,
        out: np.ndarray,
        lam: float,
        u: np.ndarray,
        y_modes: np.ndarray,
        inv_m: np.ndarray,
    ) -> None:
        refs, z, prior, mu = rows.refs, rows.z, rows.weights, rows.mu
        family_key = (family.name, family.link.name)
        _, w = _working_weights(family)(rows.eta, mu, prior)
        w_prime = _CANONICAL_W_PRIME[family_key](prior, mu)
        q = -prior * (rows.y - mu)  # (d dev / d eta) / 2
        a2 = lam * lam if z is None else lam * lam * (z * z)
        # r = s - w a y_l with s = a^2 w' / M_l
        r = a2 * w_prime * inv_m.take(refs) - (w * lam if z is None else w * lam * z) * (
            y_modes.take(refs)
        )
        e = u.take(refs)
        qz = q
        if z is not None:
            e *= z
            qz = q * z
        we = w * e
        X = rows.X
        p = self.p
        out[:p] += X.T @ (2.0 * q + r)
        out[p] += float(qz @ (2.0 * u - y_modes).take(refs)) + float(e @ r)
        t = out[p + 1 : p + 1 + u.shape[0]]
        np.add.at(t, refs, qz + lam * (we if z is None else we * z))
        if p:
            out[-p:] += X.T @ we

    def scalar_gradient_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        lam: float,
        u: np.ndarray,
        inv_m: np.ndarray,
        eta_mu: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """The row sums of the Laplace gradient with one scalar term (canonical link) at the
        modes ``coefficients`` (``b = lam u``, ``inv_m = 1 / M``), stacked: ``X'(2 q + r)``
        (p) and ``q'(z (2 u - y)[l]) + (z u[l])'r`` (1); see
        :meth:`PirlsDeviance._laplace_gradient_one_scalar` for the symbols. One pass over
        data of at most :data:`_SLICE_ROWS` rows, else two over slices (``y`` first);
        ``eta_mu`` as :meth:`_slices`'."""
        slices = self._slices(family, coefficients, eta_mu)
        out = np.zeros(self.p + 1)
        if len(slices) == 1:
            self._gradient_kernel(slices[0], family, out, lam, u, inv_m, None)
            return out
        y_modes = np.zeros(inv_m.shape[0])
        for part in slices:
            self._gradient_kernel(part, family, y_modes, lam, u, inv_m, False)
        y_modes *= inv_m
        for part in slices:
            self._gradient_kernel(part, family, out, lam, u, inv_m, y_modes)
        return out

    def _gradient_kernel(
        self,
        rows: _RowSlice,
        family: Any,
        out: np.ndarray,
        lam: float,
        u: np.ndarray,
        inv_m: np.ndarray,
        y_modes: np.ndarray | bool | None,
    ) -> None:
        """:meth:`scalar_gradient_sums` on ``rows``; with ``y_modes`` False the level sums
        ``sum_{i in l} s_i a_i`` (``y`` times ``M``) instead, None: ``y`` from these rows
        (all of them)."""
        refs, z, prior, mu = rows.refs, rows.z, rows.weights, rows.mu
        w_prime = _CANONICAL_W_PRIME[(family.name, family.link.name)](prior, mu)
        a = lam if z is None else lam * z  # a random intercept's z is all ones
        s = (a * a) * inv_m.take(refs) * w_prime
        if y_modes is False:
            np.add.at(out, refs, s * a)
            return
        if y_modes is None:
            y_modes = np.bincount(refs, weights=s * a, minlength=inv_m.shape[0]) * inv_m
        assert isinstance(y_modes, np.ndarray)
        _, w = _working_weights(family)(rows.eta, mu, prior)
        q = -prior * (rows.y - mu)  # (d dev / d eta) / 2
        r = s - (w * a) * y_modes.take(refs)
        p = self.p
        out[:p] += rows.X.T @ (2.0 * q + r)
        e = u.take(refs)
        qz = q
        if z is not None:
            e *= z
            qz = q * z
        out[p] += float(qz @ (2.0 * u - y_modes).take(refs)) + float(e @ r)

    def scalar_level_x_sums(
        self, family: Any, coefficients: Coefficients, eta_mu: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """With one scalar term, at ``coefficients`` whose linear predictor and means are
        ``eta_mu``, stacked: ``sum_{i in l} w_i z_i x_i`` (p x levels) and ``X'WX`` (p x p)."""
        size = self.p * (self.terms[0].nlevels + self.p)
        return self._sum_slices(self._level_x_kernel, size, family, coefficients, eta_mu=eta_mu)

    def _level_x_kernel(self, rows: _RowSlice, family: Any, out: np.ndarray) -> None:
        X, z = rows.X, rows.z
        _, w = _working_weights(family)(rows.eta, rows.mu, rows.weights)
        wz = w if z is None else w * z
        pl = self.p * self.terms[0].nlevels
        np.add.at(out[:pl], self._level_bins(rows.refs, self.p), (X * wz[:, None]).T.ravel())
        out[pl:] += ((X * w[:, None]).T @ X).ravel()

    def scalar_hessian_level_sums(
        self, family: Any, coefficients: Coefficients, lam: float
    ) -> np.ndarray:
        """The first pass of :meth:`PirlsDeviance.laplace_beta_hessian`, stacked: ``C_l =
        sum_{i in l} a_i w_i x_i`` (p x levels), ``sum_{i in l} a_i^3 w'_i`` (levels) and
        ``X'WX`` (p x p), ``a_i = lam z_i``."""
        p = self.p
        size = (p + 1) * self.terms[0].nlevels + p * p
        return self._sum_slices(self._hessian_level_kernel, size, family, coefficients, lam)

    def _hessian_level_kernel(
        self, rows: _RowSlice, family: Any, out: np.ndarray, lam: float
    ) -> None:
        refs, z = rows.refs, rows.z
        nlevels, p = self.terms[0].nlevels, self.p
        _, w = _working_weights(family)(rows.eta, rows.mu, rows.weights)
        w1 = _CANONICAL_W_PRIME[(family.name, family.link.name)](rows.weights, rows.mu)
        a = lam if z is None else lam * z
        X = rows.X
        aw = a * w
        pl = p * nlevels
        np.add.at(out[:pl], self._level_bins(refs, p), (X.T * aw).ravel())
        np.add.at(out[pl : pl + nlevels], refs, (a * a * a) * w1)
        out[pl + nlevels :] += ((X.T * w) @ X).ravel()

    def scalar_hessian_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        lam: float,
        CM: np.ndarray,
        w3M2: np.ndarray,
        inv_m: np.ndarray,
    ) -> np.ndarray:
        """The second pass of :meth:`PirlsDeviance.laplace_beta_hessian`, stacked: ``sum
        c_i G_i G_i'`` (p x p) and ``A_l = sum_{i in l} a_i^2 w'_i G_i`` (p x levels), given
        ``C_l / M_l`` (``CM``, levels x p), ``w3_l / M_l^2`` and ``1 / M_l``."""
        p = self.p
        size = p * p + p * self.terms[0].nlevels
        return self._sum_slices(
            self._hessian_kernel, size, family, coefficients, lam, CM.T, w3M2, inv_m
        )

    def _hessian_kernel(
        self,
        rows: _RowSlice,
        family: Any,
        out: np.ndarray,
        lam: float,
        CMt: np.ndarray,
        w3M2: np.ndarray,
        inv_m: np.ndarray,
    ) -> None:
        refs, z, prior, mu = rows.refs, rows.z, rows.weights, rows.mu
        p = self.p
        key = (family.name, family.link.name)
        w1 = _CANONICAL_W_PRIME[key](prior, mu)
        w2 = _CANONICAL_W_SECOND[key](prior, mu)
        a = np.full(refs.shape[0], lam) if z is None else lam * z
        Gt = rows.X.T - a * CMt[:, refs]  # (p, n): d eta_i / d beta
        a2 = a * a
        c = (a2 * w2) * inv_m.take(refs) - (a * w1) * w3M2.take(refs)
        out[: p * p] += ((Gt * c) @ Gt.T).ravel()
        np.add.at(out[p * p :], self._level_bins(refs, p), (Gt * (a2 * w1)).ravel())

    def scalar_theta_level_sums(self, family: Any, coefficients: Coefficients) -> np.ndarray:
        """The first pass of :meth:`PirlsDeviance.laplace_hessian_one_scalar`, per level of
        the one scalar term, stacked: ``sum w z x`` (p x levels), ``sum z q``, ``sum z^3
        w'``; then ``X'WX`` (p x p)."""
        p = self.p
        size = (p + 2) * self.terms[0].nlevels + p * p
        return self._sum_slices(self._theta_level_kernel, size, family, coefficients)

    def _theta_level_kernel(self, rows: _RowSlice, family: Any, out: np.ndarray) -> None:
        refs, z, prior, mu = rows.refs, rows.z, rows.weights, rows.mu
        nlevels, p = self.terms[0].nlevels, self.p
        _, w = _working_weights(family)(rows.eta, mu, prior)
        w1 = _CANONICAL_W_PRIME[(family.name, family.link.name)](prior, mu)
        q = -prior * (rows.y - mu)
        wz, zq, z3w1 = (w, q, w1) if z is None else (w * z, z * q, (z * z * z) * w1)
        X = rows.X
        pl = p * nlevels
        np.add.at(out[:pl], self._level_bins(refs, p), (X.T * wz).ravel())
        np.add.at(out[pl : pl + nlevels], refs, zq)
        np.add.at(out[pl + nlevels : pl + 2 * nlevels], refs, z3w1)
        out[pl + 2 * nlevels :] += ((X.T * w) @ X).ravel()

    def scalar_theta_hessian_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        lam: float,
        d_beta: np.ndarray,
        e_level: np.ndarray,
        inv_m: np.ndarray,
        w3M2: np.ndarray,
    ) -> np.ndarray:
        """The second pass of :meth:`PirlsDeviance.laplace_hessian_one_scalar`: with
        ``G_i = x_i + lam z_i d_beta_l`` and ``E_i = z_i e_level_l``, per level ``sum z w E,
        sum z w' E^2, sum z^2 w' E, sum z^2 w'' E^2`` (4 x levels), then ``sum z w G, sum z
        w' E G, sum z^2 w' G, sum z^2 w'' E G`` (4 x p x levels), then ``X'(w E)`` (p) and
        ``sum c_i G_i G_i'`` (p x p; ``inv_m = 1 / M``, ``w3M2 = (sum z^3 w')_l / M_l^2``)."""
        p = self.p
        size = 4 * (p + 1) * self.terms[0].nlevels + p + p * p
        return self._sum_slices(
            self._theta_hessian_kernel,
            size,
            family,
            coefficients,
            lam,
            d_beta.T,
            e_level,
            inv_m,
            w3M2,
        )

    def _theta_hessian_kernel(
        self,
        rows: _RowSlice,
        family: Any,
        out: np.ndarray,
        lam: float,
        d_beta_t: np.ndarray,
        e_level: np.ndarray,
        inv_m: np.ndarray,
        w3M2: np.ndarray,
    ) -> None:
        refs, z, prior, mu = rows.refs, rows.z, rows.weights, rows.mu
        nlevels, p = self.terms[0].nlevels, self.p
        key = (family.name, family.link.name)
        _, w = _working_weights(family)(rows.eta, mu, prior)
        w1 = _CANONICAL_W_PRIME[key](prior, mu)
        w2 = _CANONICAL_W_SECOND[key](prior, mu)
        zz = np.ones(refs.shape[0]) if z is None else z
        E = zz * e_level.take(refs)
        Gt = rows.X.T + (lam * zz) * d_beta_t[:, refs]  # (p, n)
        zw, zw1E, z2w1, z2w2E = zz * w, zz * w1 * E, zz * zz * w1, zz * zz * w2 * E
        scalars = np.stack([zw * E, zw1E * E, z2w1 * E, z2w2E * E])
        vectors = np.stack([Gt * zw, Gt * zw1E, Gt * z2w1, Gt * z2w2E])  # (4, p, n)
        l4, l4p = 4 * nlevels, 4 * p * nlevels
        np.add.at(out[:l4], self._level_bins(refs, 4), scalars.ravel())
        np.add.at(out[l4 : l4 + l4p], self._level_bins(refs, 4 * p), vectors.ravel())
        # The beta block's sum c_i G_i G_i' (laplace_beta_hessian's Notes): c_i = a_i^2 w''_i
        # / M_l - a_i w'_i (sum_l a^3 w') / M_l^2, from z^2 w'' / M and z w' (z^3 w')_l / M^2.
        c = (lam * lam) * (zz * zz * w2 * inv_m.take(refs)) - (lam**4) * (zz * w1 * w3M2.take(refs))
        out[l4 + l4p : l4 + l4p + p] += rows.X.T @ (w * E)
        out[l4 + l4p + p :] += ((Gt * c) @ Gt.T).ravel()

    def integral_binomial_weights(self) -> bool:
        w = self.weights if self.trials is None else self.weights / np.maximum(self.trials, 1.0)
        return not bool(np.any(w != np.round(w)))


# ---------------------------------------------------------------------------------------------
# Rows in chunks
# ---------------------------------------------------------------------------------------------
#: ``reduce(function, args, combine)``: ``function(chunk_rows, *args)`` on every chunk's
#: :class:`MemoryRows`, the results combined pairwise by ``combine`` (None: no chunk).
Reduce = Callable[[Callable[..., Any], tuple[Any, ...], Callable[[Any, Any], Any]], Any]


@dataclass(frozen=True, eq=False)
class PassSums:
    """A chunk's share of a pass (:meth:`PirlsRows.evaluate`): deviance and blocks; the
    shares of disjoint rows add up (``+``), the blocks' sparsity kept whatever the values,
    so that a system set up on one pass takes the next through ``with_values``."""

    deviance: float
    blocks: CrossProducts

    def __add__(self, other: PassSums) -> PassSums:
        return PassSums(self.deviance + other.deviance, _add_blocks(self.blocks, other.blocks))


def _add_blocks(a: CrossProducts, b: CrossProducts) -> CrossProducts:
    def add(x, y):
        if x is None:
            return None
        if sp.issparse(x):
            return _add_sparse(x, y)
        return x + y

    return CrossProducts(
        z1tz1=a.z1tz1 + b.z1tz1,
        zrtz1=add(a.zrtz1, b.zrtz1),
        zrtzr=add(a.zrtzr, b.zrtzr),
        xytz1=a.xytz1 + b.xytz1,
        xytzr=add(a.xytzr, b.xytzr),
        xytxy=a.xytxy + b.xytxy,
        nobs=a.nobs + b.nobs,
        sum_log_weights=a.sum_log_weights + b.sum_log_weights,
    )


def _add_sparse(a: sp.spmatrix, b: sp.spmatrix) -> sp.csr_matrix:
    """CSR sum on the union of both patterns, explicit zeros kept (scipy's ``a + b``
    drops entries that sum to zero, which would change the pattern with the weights)."""
    a, b = a.tocoo(), b.tocoo()
    total = sp.coo_matrix(
        (
            np.concatenate([a.data, b.data]),
            (np.concatenate([a.row, b.row]), np.concatenate([a.col, b.col])),
        ),
        shape=a.shape,
    ).tocsr()  # sums duplicates, keeps zeros
    total.sort_indices()
    return total


def _chunk_evaluate(
    rows: MemoryRows, family: Any, coefficients: Coefficients, with_x: bool
) -> PassSums:
    # A step-halving candidate far off overflows; its non-finite deviance rejects it. A
    # chunk's sums may meet the overflow differently from the sums over all rows (0 * inf
    # inside a dot product, where the whole sum is inf - inf), so floating-point warnings
    # are not raised here: the value decides, as it does in memory.
    with np.errstate(all="ignore"):
        done = rows.evaluate(family, coefficients, with_x=with_x)
        return PassSums(done.deviance, done.blocks)


def _chunk_cross_products(rows: MemoryRows, family: Any, coefficients: Coefficients):
    return rows.cross_products(family, coefficients)


def _chunk_level_deviances(rows: MemoryRows, family: Any, coefficients: Coefficients, nodes):
    return rows.level_deviances(family, coefficients, nodes)


def _chunk_minus_twice_loglik(rows: MemoryRows, family: Any, coefficients: Coefficients):
    return rows.minus_twice_loglik(family, coefficients)


def _chunk_sums(rows: MemoryRows, statistic: Any, family: Any, coefficients: Coefficients):
    return rows.sums(statistic, family, coefficients)


def _chunk_start_r(rows: MemoryRows, family: Any) -> np.ndarray:
    return rows.start_r(family)


def _chunk_saturated(rows: MemoryRows, family: Any) -> float:
    return rows.saturated(family)


def _chunk_integral(rows: MemoryRows) -> bool:
    return rows.integral_binomial_weights()


def _chunk_gradient_sums(rows: MemoryRows, family: Any, coefficients: Coefficients, pieces):
    return rows.beta_gradient_sums(family, coefficients, pieces)


def _chunk_gradient_correction(
    rows: MemoryRows, family: Any, coefficients: Coefficients, pieces, y
):
    return rows.beta_gradient_correction(family, coefficients, pieces, y)


def _chunk_theta_gradient(
    rows: MemoryRows, family: Any, coefficients: Coefficients, pieces, u, y
) -> np.ndarray:
    return rows.theta_gradient_sums(family, coefficients, pieces, u, y)


def _chunk_agq_level_sums(rows: MemoryRows, family: Any, coefficients: Coefficients, nlevels):
    return rows.agq_level_sums(family, coefficients, nlevels)


def _chunk_agq_node_sums(rows: MemoryRows, family: Any, beta, b_nodes):
    return rows.agq_node_sums(family, beta, b_nodes)


def _chunk_agq_x_sums(rows: MemoryRows, family: Any, beta, b_nodes, pi):
    return rows.agq_x_sums(family, beta, b_nodes, pi)


def _chunk_scalar_slope_level_sums(rows: MemoryRows, family: Any, coefficients: Coefficients):
    return rows.scalar_slope_level_sums(family, coefficients)


def _chunk_scalar_slope_sums(
    rows: MemoryRows, family: Any, coefficients: Coefficients, lam, u, y_modes, inv_m
):
    return rows.scalar_slope_sums(family, coefficients, lam, u, y_modes, inv_m)


def _chunk_scalar_hessian_level_sums(rows: MemoryRows, family: Any, coefficients, lam):
    return rows.scalar_hessian_level_sums(family, coefficients, lam)


def _chunk_scalar_hessian_sums(rows: MemoryRows, family: Any, coefficients, lam, CM, w3M2, inv_m):
    return rows.scalar_hessian_sums(family, coefficients, lam, CM, w3M2, inv_m)


def _chunk_scalar_theta_level_sums(rows: MemoryRows, family: Any, coefficients):
    return rows.scalar_theta_level_sums(family, coefficients)


def _chunk_scalar_theta_hessian_sums(
    rows: MemoryRows, family: Any, coefficients, lam, d_beta, e_level, inv_m, w3M2
):
    return rows.scalar_theta_hessian_sums(family, coefficients, lam, d_beta, e_level, inv_m, w3M2)


def _add_pairs(a: tuple, b: tuple) -> tuple:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _add(a: Any, b: Any) -> Any:
    return a + b


def _both(a: bool, b: bool) -> bool:
    return bool(a and b)


def _stack_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """R of the rows of both (tall-skinny QR)."""
    return np.linalg.qr(np.vstack([a, b]), mode="r")


class ChunkedRows:
    """Rows that are never in memory at once: every method is one pass over the chunks.

    Parameters
    ----------
    reduce
        ``reduce(function, args, combine)`` calls ``function(rows, *args)`` on the
        :class:`MemoryRows` of every chunk and combines the results pairwise with
        ``combine`` (module-level functions, so that a cluster can ship them); it returns
        None if no chunk has rows. The streamed fit reads the chunks again for each call;
        the Dask fit maps over partitions and reduces in a tree.
    nobs, p
        Rows summed and fixed-effects columns.
    on_pass
        Called after every pass (progress display).

    Notes
    -----
    Every result is a sum over chunks, so it equals the in-memory one up to the order of
    the additions (~1e-15 relative). ``passes`` counts the passes made.

    One convention is not a sum over rows: R's binomial log-likelihood takes each row's
    number of trials as ``m`` if any row has more than one trial, else its prior weight;
    a chunk decides for its own rows. The two agree for whole-number prior weights (a row
    with one trial and ``y`` in {0, 1} gives the same value either way); they can differ
    only for ``cbind`` counts with fractional prior weights and a chunk in which no row
    has more than one trial.
    """

    def __init__(
        self,
        reduce: Reduce,
        nobs: int,
        p: int,
        on_pass: Callable[[], None] | None = None,
    ):
        self._reduce_function = reduce
        self.nobs = int(nobs)
        self.p = int(p)
        self.on_pass = on_pass
        self.passes = 0

    def _reduce(self, function: Callable[..., Any], args: tuple[Any, ...], combine) -> Any:
        out = self._reduce_function(function, args, combine)
        self.passes += 1
        if self.on_pass is not None:
            self.on_pass()
        if out is None:
            raise ConvergenceError("no chunk has rows to fit; the data changed between passes")
        return out

    def evaluate(self, family: Any, coefficients: Coefficients, *, with_x: bool) -> RowsPass:
        total = self._reduce(_chunk_evaluate, (family, coefficients, with_x), _add)
        return RowsPass(coefficients, total.deviance, blocks=total.blocks)

    def cross_products(self, family: Any, coefficients: Coefficients) -> CrossProducts:
        return self._reduce(_chunk_cross_products, (family, coefficients), _add)

    def level_deviances(
        self, family: Any, coefficients: Coefficients, b_nodes: np.ndarray
    ) -> np.ndarray:
        return self._reduce(_chunk_level_deviances, (family, coefficients, b_nodes), _add)

    def minus_twice_loglik(self, family: Any, coefficients: Coefficients) -> float:
        return float(self._reduce(_chunk_minus_twice_loglik, (family, coefficients), _add))

    def sums(
        self, statistic: Callable[..., np.ndarray], family: Any, coefficients: Coefficients
    ) -> np.ndarray:
        return self._reduce(_chunk_sums, (statistic, family, coefficients), _add)

    def initial_beta(self, family: Any) -> np.ndarray:
        R = self._reduce(_chunk_start_r, (family,), _stack_r)
        p = self.p
        if R.shape[0] < p:
            raise ConvergenceError("fewer rows than fixed effects: the start is not defined")
        return sla.solve_triangular(R[:p, :p], R[:p, p]) if p else np.zeros(0)

    def saturated(self, family: Any) -> float:
        return float(self._reduce(_chunk_saturated, (family,), _add))

    def beta_gradient_sums(
        self, family: Any, coefficients: Coefficients, pieces: GradientPieces
    ) -> np.ndarray:
        return self._reduce(_chunk_gradient_sums, (family, coefficients, pieces), _add)

    def beta_gradient_correction(
        self, family: Any, coefficients: Coefficients, pieces: GradientPieces, y: np.ndarray
    ) -> np.ndarray:
        return self._reduce(_chunk_gradient_correction, (family, coefficients, pieces, y), _add)

    def theta_gradient_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        pieces: GradientPieces,
        u: np.ndarray,
        y: np.ndarray,
    ) -> np.ndarray:
        return self._reduce(_chunk_theta_gradient, (family, coefficients, pieces, u, y), _add)

    def agq_level_sums(self, family: Any, coefficients: Coefficients, nlevels: int) -> np.ndarray:
        return self._reduce(_chunk_agq_level_sums, (family, coefficients, nlevels), _add)

    def agq_node_sums(
        self, family: Any, beta: np.ndarray, b_nodes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._reduce(_chunk_agq_node_sums, (family, beta, b_nodes), _add_pairs)

    def agq_x_sums(
        self, family: Any, beta: np.ndarray, b_nodes: np.ndarray, pi: np.ndarray
    ) -> np.ndarray:
        return self._reduce(_chunk_agq_x_sums, (family, beta, b_nodes, pi), _add)

    def scalar_slope_level_sums(self, family: Any, coefficients: Coefficients) -> np.ndarray:
        return self._reduce(_chunk_scalar_slope_level_sums, (family, coefficients), _add)

    def scalar_slope_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        lam: float,
        u: np.ndarray,
        y_modes: np.ndarray,
        inv_m: np.ndarray,
    ) -> np.ndarray:
        args = (family, coefficients, lam, u, y_modes, inv_m)
        return self._reduce(_chunk_scalar_slope_sums, args, _add)

    def scalar_hessian_level_sums(
        self, family: Any, coefficients: Coefficients, lam: float
    ) -> np.ndarray:
        args = (family, coefficients, lam)
        return self._reduce(_chunk_scalar_hessian_level_sums, args, _add)

    def scalar_hessian_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        lam: float,
        CM: np.ndarray,
        w3M2: np.ndarray,
        inv_m: np.ndarray,
    ) -> np.ndarray:
        args = (family, coefficients, lam, CM, w3M2, inv_m)
        return self._reduce(_chunk_scalar_hessian_sums, args, _add)

    def scalar_theta_level_sums(self, family: Any, coefficients: Coefficients) -> np.ndarray:
        return self._reduce(_chunk_scalar_theta_level_sums, (family, coefficients), _add)

    def scalar_theta_hessian_sums(
        self,
        family: Any,
        coefficients: Coefficients,
        lam: float,
        d_beta: np.ndarray,
        e_level: np.ndarray,
        inv_m: np.ndarray,
        w3M2: np.ndarray,
    ) -> np.ndarray:
        args = (family, coefficients, lam, d_beta, e_level, inv_m, w3M2)
        return self._reduce(_chunk_scalar_theta_hessian_sums, args, _add)

    def integral_binomial_weights(self) -> bool:
        return bool(self._reduce(_chunk_integral, (), _both))


# ---------------------------------------------------------------------------------------------
# PIRLS and the criterion
# ---------------------------------------------------------------------------------------------
def _one_scalar_blocks(
    rows: MemoryRows,
    family: Any,
    with_x: bool,
    beta: np.ndarray,
    eta: np.ndarray,
    mu: np.ndarray,
) -> CrossProducts:
    """The working blocks at the modes of a one-scalar-term PIRLS run
    (:meth:`PirlsDeviance._pirls_one_scalar`) from its ``eta`` and ``mu``: the working
    weights and response of its last iteration, formed by the same operations (the same
    bits)."""
    mu_eta, w = _working_weights(family)(eta, mu, rows.weights)
    if with_x:
        r = rows.y - mu
        r /= mu_eta
        r += eta
        r -= rows.offset
    else:
        r = (eta - rows._fixed_part(beta)) + (rows.y - mu) / mu_eta
    return rows._plan(with_x)(w, r, log_weights=False)


@dataclass(frozen=True, eq=False)
class PirlsState:
    """Where PIRLS converged at one (theta, beta).

    Attributes
    ----------
    u
        Spherical conditional modes, flat in engine order (term by term, level-major).
    beta
        The fixed effects (estimated inside PIRLS for nAGQ = 0, else as given).
    coefficients
        ``beta`` and ``b = Lambda u`` per term: where the rows are evaluated.
    eta, mu
        Linear predictor (offset included) and conditional mean per row; None when the
        rows are in chunks.
    rows_pass
        The pass at the modes; its :attr:`RowsPass.blocks` are the working blocks there
        (those of the last factorisation), formed when first read.
    logdet
        ``log |L_Z|^2`` at those weights.
    aic_terms
        ``sum -2 log p(y | mu)``.
    deviance
        ``sum`` of the squared deviance residuals.
    iterations
        PIRLS iterations used.
    level_weights
        With one scalar random-effects term, ``sum_{i in l} w_i z_i^2`` per level at the
        modes (the diagonal of ``Z1'WZ1``), when PIRLS had it at hand; else None.
    scalar_blocks
        With scalar terms only, ``(D, C, S[, solve_S])`` of
        :meth:`GradientPieces.from_scalar_terms` at the modes when PIRLS formed them dense
        (``C``, ``S`` None for one term; ``solve_S`` a solver with PIRLS' factor of ``S``);
        else None.
    rxtrx
        ``R_X'R_X`` at the modes, when PIRLS estimated beta on a fast path; else None.
    level_x
        With one scalar term and beta estimated inside PIRLS, ``C``: the ``(p, levels)``
        sums ``lambda sum_{i in l} w_i z_i x_i`` at the modes (``Lambda'Z'WX``
        transposed); else None.
    theta
        Where PIRLS ran, when the one-scalar-term path kept it (its next run predicts the
        modes from here); else None.
    """

    u: np.ndarray
    beta: np.ndarray
    coefficients: Coefficients
    eta: np.ndarray | None
    mu: np.ndarray | None
    rows_pass: RowsPass
    logdet: float
    aic_terms: float
    deviance: float
    iterations: int
    level_weights: np.ndarray | None = None
    scalar_blocks: tuple[Any, ...] | None = None
    rxtrx: np.ndarray | None = None
    level_x: np.ndarray | None = None
    theta: np.ndarray | None = None

    @property
    def blocks(self) -> CrossProducts:
        """The working blocks at the modes."""
        return self.rows_pass.blocks

    @property
    def term1_weights(self) -> np.ndarray:
        """``sum_{i in l} w_i z_i^2`` per level of a single scalar term at the modes."""
        if self.level_weights is not None:
            return self.level_weights
        return self.blocks.z1tz1[:, 0, 0]

    @property
    def penalty(self) -> float:
        return float(self.u @ self.u)

    @property
    def laplace(self) -> float:
        """The Laplace approximation of -2 log L at this point."""
        return self.aic_terms + self.penalty + self.logdet


def _modes(system: BlockedSystem, f: BlockedFactor) -> tuple[np.ndarray, np.ndarray]:
    """The solution of a PIRLS step: the modes ``u`` (flat, engine order) and, for the
    system with ``X``, beta.

    The steps of :func:`mixedmodels.linalg.solution.estimate` that give them (the same
    operations), without ``Var(beta)`` and the result object a step does not read: back
    substitution through ``R_X``, the rest block's ``L22``, then term 1 level by level.
    """
    p = system.p
    LXX = f.LXX
    if p:
        beta = sla.solve_triangular(LXX[:p, :p], LXX[p, :p], lower=True, trans="T")
        coef = np.concatenate([-beta, [1.0]])
    else:
        beta = np.zeros(0)
        coef = np.ones(1)
    T1 = f.templates[0]
    terms = system.structure.terms
    t1 = terms[0]
    A = system.A
    scalar = t1.ncols == 1
    if scalar:
        LX1 = A.xytz1[:, :, 0].T * T1[0, 0] / f.L11[:, 0, :]  # (l1, p + 1)
        v1 = LX1 @ coef
    else:
        Q = np.einsum("cla,ab->lbc", A.xytz1, T1)
        v1 = np.linalg.solve(f.L11, Q) @ coef  # (l1, p1)
    if f.L22 is None:
        u2 = np.zeros(0)
    else:
        u2 = solve_l22_transposed(f, coef @ f.LX2)
        b2 = np.empty_like(u2)
        offs = system.rest_offsets
        for k, term in enumerate(terms[1:], start=1):
            s, e = offs[k - 1], offs[k]
            b2[s:e] = (u2[s:e].reshape(term.nlevels, term.ncols) @ f.templates[k].T).ravel()
        zr1 = A.zrtz1
        if sp.issparse(zr1):
            # Zr'Z1' b2 from the CSR arrays (a transposed sparse matrix costs more).
            rows = np.repeat(b2, np.diff(zr1.indptr))
            back = np.bincount(zr1.indices, weights=zr1.data * rows, minlength=zr1.shape[1])
        else:
            back = zr1.T @ b2
        w = back.reshape(t1.nlevels, t1.ncols) @ T1
        if scalar:
            v1 = v1 - w[:, 0] / f.L11[:, 0, 0]
        else:
            v1 = v1 - np.linalg.solve(f.L11, w[:, :, None])[:, :, 0]
    if scalar:
        u1 = v1 / f.L11[:, 0, 0]
    else:
        u1 = np.linalg.solve(np.swapaxes(f.L11, 1, 2), v1[:, :, None])[:, :, 0]
    return np.concatenate([u1.ravel(), u2]), beta


class _ModePredictor:
    """Predicts the conditional modes (and, for nAGQ = 0, beta) at a new point from the
    modes already found at nearby points: a start for PIRLS.

    The modes are a smooth function of the optimiser's parameters, so an affine fit
    through the points evaluated last predicts them to second order in the distance; an
    optimiser's later points and a finite-difference stencil are close together, where
    PIRLS from that start needs one iteration fewer than from the last point's modes
    (its first step would only have recovered the first-order change). The prediction is
    only a start: PIRLS still runs to :data:`MODE_TOLERANCE`, and the caller keeps the
    last modes when they give the lower penalised deviance.

    Notes
    -----
    With ``D`` the differences of the stored points from the nearest one (columns scaled
    by their spread) and ``U`` those of their modes, the slopes ``J`` are the
    minimum-norm least-squares solution of ``D J = U``: in directions the points do not
    span (fewer points than parameters, or points that coincide) the slope is zero, so the
    prediction falls back to the nearest point's modes rather than extrapolating noise.
    """

    def __init__(self, nparams: int, size: int, nobs: int, min_rows: int = _PREDICT_MIN_ROWS):
        # On few rows a PIRLS iteration costs less than a prediction: no predictor there.
        on = nobs >= min_rows
        self.capacity = min(2 * nparams + 4, _HISTORY_FLOATS // max(size, 1)) if on else 0
        self.points: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def add(self, x: np.ndarray, value: np.ndarray) -> None:
        if self.capacity < 2:
            return
        self.points.append(x)
        self.values.append(value)
        if len(self.points) > self.capacity:
            del self.points[0], self.values[0]

    def predict(self, x: np.ndarray) -> np.ndarray | None:
        m = len(self.points)
        if m == 0:
            return None
        X = np.array(self.points)
        if X.shape[1] != x.shape[0]:
            return None
        spread = X.max(axis=0) - X.min(axis=0)
        spread = np.maximum(spread, np.abs(x - X[-1]))
        scale = np.where(spread > 0.0, spread, 1.0)
        dist = np.sum(((X - x) / scale) ** 2, axis=1)
        near = int(np.argmin(dist))
        if dist[near] == 0.0 or m == 1:
            return self.values[near].copy()
        others = [i for i in range(m) if i != near]
        D = (X[others] - X[near]) / scale
        # The prediction is a combination of the stored modes: weights
        # c = d' pinv(D) on their differences (a small pseudo-inverse, not a
        # least-squares solve with one right-hand side per mode).
        c = np.linalg.pinv(D, rcond=1e-8).T @ ((x - X[near]) / scale)
        out = self.values[near] * (1.0 - c.sum())
        for ci, i in zip(c.tolist(), others, strict=True):
            out += ci * self.values[i]
        return out


_POTRF, _POTRS, _POSV = sla.get_lapack_funcs(("potrf", "potrs", "posv"), dtype=np.float64)


def _solve_spd(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``A^{-1} b`` for a small symmetric positive definite ``A`` (``R_X'R_X``) by LAPACK's
    dposv directly (numpy's solve costs more in checks than in arithmetic at p ~ 10); an
    ``A`` that is not positive definite goes to LU, which raises if it is singular."""
    _, x, info = _POSV(A, b, lower=1)
    if info:
        return np.linalg.solve(A, b)
    return x


def _factor_rest(S: np.ndarray, n2: int) -> tuple[float, Callable[[np.ndarray], np.ndarray]]:
    """``log |S|`` and a solver for ``S`` (symmetric positive definite) whose leading
    ``n2 x n2`` block is diagonal (``n2 = 0``: no such block).

    Notes
    -----
    With ``S = [[diag(d), B'], [B, S_3]]``: ``log |S| = sum log d + log |S_3 - B diag(d)^{-1}
    B'|``, and ``S x = r`` gives ``x_3 = (S_3 - B d^{-1} B')^{-1} (r_3 - B d^{-1} r_2)``, ``x_2
    = (r_2 - B' x_3) / d``: the rest terms' second level of block elimination, as the
    blocked engine's diagonal blocks (a factor nested in the next, e.g. broods in
    locations, leaves its block of ``S`` diagonal). Only the remaining block is factored
    dense.
    """
    if n2:
        d = np.diag(S)[:n2].copy()
        B = S[n2:, :n2]
        BD = B / d
        S3 = S[n2:, n2:] - BD @ B.T
    else:
        S3 = S
    m = S3.shape[0]
    if m:
        # LAPACK's dpotrf/dpotrs directly: on blocks this small the wrappers' checks
        # (numpy's, scipy's cho_solve) cost more than the arithmetic.
        L3, info = _POTRF(S3, lower=1, clean=0)
        if info:
            raise np.linalg.LinAlgError("the rest block of PIRLS' system is not positive definite")
        logdet = 2.0 * float(np.sum(np.log(L3.diagonal())))
    else:
        L3, logdet = S3, 0.0
    if n2:
        logdet += float(np.sum(np.log(d)))

    def solve3(r: np.ndarray) -> np.ndarray:
        if not m:
            return r
        x, info = _POTRS(L3, r, lower=1)
        if info:
            raise np.linalg.LinAlgError("dpotrs failed on PIRLS' rest block")
        return x

    def solve(r: np.ndarray) -> np.ndarray:
        if not n2:
            return solve3(r)
        r2, r3 = r[:n2], r[n2:]
        x3 = solve3(r3 - BD @ r2)
        x2 = (r2 - B.T @ x3) / (d if r.ndim == 1 else d[:, None])
        return np.concatenate([x2, x3])

    return logdet, solve


class _ScalarTermsPlan:
    """Where each row's products land for :meth:`PirlsDeviance._pirls_scalar_terms`.

    Terms in engine order, all scalar; the rest terms' levels are numbered one after the
    other (``offset_k + level``), as the blocked engine numbers them.
    """

    def __init__(self, terms: tuple[GroupedTerm, ...]):
        t1 = terms[0]
        self.refs1 = t1.refs
        self.z1 = _column_or_none(t1.z[:, 0])
        self.l1 = t1.nlevels
        offs = np.cumsum([0] + [t.nlevels for t in terms[1:]])
        self.qr = int(offs[-1])
        #: per rest term: its rest-block column per row, and z (None: ones)
        self.rest = [
            (offs[k - 1] + t.refs, _column_or_none(t.z[:, 0])) for k, t in enumerate(terms[1:], 1)
        ]
        #: Zr'Z1 as a dense (q_r, l1) array: row i of rest term k lands at col_k * l1 + refs1.
        self.cross_index = [col * self.l1 + self.refs1 for col, _ in self.rest]
        #: Zr'Zr: within a term the diagonal (col * (q_r + 1)); between terms a < b both
        #: (col_a, col_b) and (col_b, col_a).
        qr = self.qr
        self.rest_pairs: list[tuple[int, int, np.ndarray]] = []
        for a, (col_a, _) in enumerate(self.rest):
            for b in range(a, len(self.rest)):
                col_b = self.rest[b][0]
                if a == b:
                    self.rest_pairs.append((a, b, col_a * (qr + 1)))
                else:
                    keys = np.concatenate([col_a * qr + col_b, col_b * qr + col_a])
                    self.rest_pairs.append((a, b, keys))
        self._x: tuple[np.ndarray, np.ndarray] | None = None
        # C D^{-1} C' (D term 1's diagonal) sums, per term-1 level, the products of C's
        # entries in that level's column: with few entries per column (an observation-
        # level term 1, nested factors) those pairs are far fewer than the q_r^2 l1
        # products of the dense form, and C is kept as its nonzeros ("slots").
        n = self.refs1.shape[0]
        keys = np.concatenate(self.cross_index)
        slots, inverse = np.unique(keys, return_inverse=True)
        slot_l = slots % self.l1
        counts = np.bincount(slot_l, minlength=self.l1)
        npairs = int(counts @ counts)
        self.sparse = self.qr * self.l1 > _DENSE_REST_FIRST or 10 * npairs < qr * qr * self.l1
        self.diagonal_lead = 0
        if not self.sparse:
            return
        self.nnz = slots.shape[0]
        #: per rest term: the slot of C each row adds to
        self.slot_index = [inverse[k * n : (k + 1) * n] for k in range(len(self.rest))]
        self.slot_r, self.slot_l = slots // self.l1, slot_l
        # Every ordered pair (a, b) of slots in the same level, a == b included.
        order = np.argsort(slot_l, kind="stable")
        size = counts[slot_l[order]]
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])[slot_l[order]]
        within = np.arange(npairs) - np.repeat(np.cumsum(size) - size, size)
        self.pair_a = np.repeat(order, size)
        self.pair_b = order[np.repeat(first, size) + within]
        self.pair_key = self.slot_r[self.pair_a] * qr + self.slot_r[self.pair_b]
        # np.unique sorted the slots by (rest column, level): C's CSR order.
        self.slot_indptr = np.concatenate([[0], np.cumsum(np.bincount(self.slot_r, minlength=qr))])
        # Rest term 2's block of S = M_r - C D^{-1} C' is diagonal when no term-1 level
        # meets two of its levels (nested factors, an observation-level term 1).
        n2 = terms[1].nlevels
        ra, rb = self.slot_r[self.pair_a], self.slot_r[self.pair_b]
        within = (ra < n2) & (rb < n2) & (ra != rb)
        self.diagonal_lead = 0 if bool(np.any(within)) else n2
        # S's pattern (M_r's entries and C D^{-1} C''s) as compact slots: its sums then
        # take bincounts over those few slots, not over all q_r^2 entries.
        all_keys = np.concatenate([keys for _, _, keys in self.rest_pairs] + [self.pair_key])
        pattern, compact = np.unique(all_keys, return_inverse=True)
        self.ns = pattern.shape[0]
        self.s_row, self.s_col = pattern // qr, pattern % qr
        sizes = np.cumsum([0] + [keys.shape[0] for _, _, keys in self.rest_pairs])
        self.rest_pairs_s = [compact[a:b] for a, b in pairwise(sizes.tolist())]
        self.pair_s = compact[sizes[-1] :]

    def x_columns(self, X: np.ndarray) -> np.ndarray:
        """``X'`` as contiguous rows (one per column of X), kept for the same ``X``."""
        if self._x is None or self._x[0] is not X:
            self._x = (X, np.ascontiguousarray(X.T))
        return self._x[1]


class GradientPieces:
    """What the analytic beta-gradient needs beyond the rows, from the blocks at the modes.

    With ``M = Lambda'Z'WZ Lambda + I`` in blocks (term 1's block diagonal ``M_1``, the
    rest ``M_r``, ``C = Lambda_r'Z_r'WZ_1 Lambda_1``): ``M_1^{-1}`` per level, ``E = C
    M_1^{-1}``, ``S^{-1} = (M_r - E C')^{-1}``, ``F' = E'S^{-1}`` and the level blocks of
    ``E'S^{-1}E``. Two passes over the rows use them (:meth:`sums`, :meth:`correction`),
    in memory or chunk by chunk; :meth:`solve` solves with ``M`` in between. See
    :meth:`PirlsDeviance.laplace_beta_gradient`.
    """

    def __init__(
        self, terms: tuple[GroupedTerm, ...], templates: list[np.ndarray], blocks: CrossProducts
    ):
        self.templates = templates
        t1, T1 = terms[0], templates[0]
        l1, p1 = t1.nlevels, t1.ncols
        self.l1, self.p1, self.q1 = l1, p1, l1 * p1
        M1 = np.swapaxes(T1, 0, 1)[None] @ blocks.z1tz1 @ T1[None] + np.eye(p1)[None]
        self.M1inv = np.linalg.inv(M1)
        self.qr = qr = sum(t.nranef for t in terms[1:])
        if not qr:
            return
        q1 = self.q1

        def lam(term: GroupedTerm, T: np.ndarray) -> sp.csr_matrix:
            return sp.kron(sp.identity(term.nlevels, format="csr"), sp.csr_matrix(T), "csr")

        Lam1 = lam(t1, T1)
        LamR = sp.block_diag(
            [lam(t, T) for t, T in zip(terms[1:], templates[1:], strict=True)], format="csr"
        )
        zr1 = sp.csr_matrix(blocks.zrtz1)
        self.C = C = (LamR.T @ zr1 @ Lam1).tocsr()
        zrr = blocks.zrtzr
        Mr = LamR.T @ (zrr if sp.issparse(zrr) else np.asarray(zrr)) @ LamR
        Mr = (Mr.toarray() if sp.issparse(Mr) else np.asarray(Mr)) + np.eye(qr)
        blk = np.arange(q1).reshape(l1, p1)
        M1inv_sparse = sp.csr_matrix(
            (
                self.M1inv.ravel(),
                (np.repeat(blk, p1, axis=1).ravel(), np.tile(blk, (1, p1)).ravel()),
            ),
            shape=(q1, q1),
        )
        self.E = E = (C @ M1inv_sparse).tocoo()
        Ls = sla.cho_factor(Mr - (E @ C.T).toarray(), lower=True, check_finite=False)
        self.Sinv = Sinv = sla.cho_solve(Ls, np.eye(qr), check_finite=False)
        self.Ft = Ft = np.asarray(E.T @ Sinv)  # (q1, qr)
        EF = np.zeros(q1 * p1)
        for d in range(p1):
            EF += np.bincount(
                E.col * p1 + d,
                weights=E.data * Ft[(E.col // p1) * p1 + d, E.row],
                minlength=q1 * p1,
            )
        self.EF = EF.reshape(l1, p1, p1)

    @classmethod
    def from_scalar_terms(
        cls,
        templates: list[np.ndarray],
        D: np.ndarray,
        C: np.ndarray | tuple | None = None,
        S: np.ndarray | None = None,
        solve_S: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> GradientPieces:
        """The pieces for scalar terms from the dense blocks PIRLS factored at the modes.

        ``D`` is term 1's diagonal ``M_1`` (per level), ``C`` the ``(q_r, l1)``
        ``Lambda_r'Z_r'WZ_1 Lambda_1`` (dense, or sparse as CSR's ``(data, indices,
        indptr, shape)``) and ``S`` the Schur complement
        ``M_r - C M_1^{-1} C'`` (None for one term): the same pieces as :meth:`__init__`
        forms from the blocks, without forming Lambda or sparse products of blocks (``E = C
        M_1^{-1}`` scales C's columns; the level blocks of ``E'S^{-1}E`` are ``sum_r E_rl
        F'_lr``).
        """
        self = cls.__new__(cls)
        self.templates = templates
        l1 = D.shape[0]
        self.l1, self.p1, self.q1 = l1, 1, l1
        self.M1inv = (1.0 / D)[:, None, None]
        self.qr = 0 if C is None else (C[3] if isinstance(C, tuple) else C.shape)[0]
        if C is None or S is None:
            return self
        # With PIRLS' factor of S (a diagonal leading block eliminated first, the rest by
        # Cholesky) the inverse costs far less than an LU inversion of the whole of S.
        self.Sinv = Sinv = np.linalg.inv(S) if solve_S is None else solve_S(np.eye(self.qr))
        if isinstance(C, tuple):
            data, indices, indptr, shape = C
            self.C = sp.csr_matrix((data, indices, indptr), shape=shape)
            E = sp.csr_matrix((data.copy(), indices, indptr), shape=shape)
            E.data /= D[E.indices]  # CSR: indices are the columns (term-1 levels)
            self.E = E
            self.Ft = Ft = np.asarray(E.T @ Sinv)  # (l1, q_r)
            rows = np.repeat(np.arange(E.shape[0]), np.diff(E.indptr))
            EF = np.bincount(E.indices, weights=E.data * Ft[E.indices, rows], minlength=l1)
        else:
            self.C = C
            self.E = E = C / D
            self.Ft = Ft = E.T @ Sinv
            EF = np.einsum("rl,lr->l", E, Ft)
        self.EF = EF[:, None, None]
        return self

    def _rows(self, rows: MemoryRows):
        """``x_i = Lambda'z_i`` of ``rows``: term 1's part (n, p1) and the rest's (index,
        value) pairs per column."""
        terms = rows.terms
        a = terms[0].z @ self.templates[0]
        r_idx, r_val = [], []
        start = 0
        for term, T in zip(terms[1:], self.templates[1:], strict=True):
            vals = term.z @ T
            for j in range(term.ncols):
                r_idx.append(start + term.refs * term.ncols + j)
                r_val.append(vals[:, j])
            start += term.nranef
        return a, r_idx, r_val

    def sums(self, rows: MemoryRows, family: Any, eta: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """``[X'(d dev/d eta + s), Lambda'Z's]`` over ``rows``, ``s_i = h_i dw_i/deta_i``."""
        prior = rows.weights
        mu_eta = family.link.mu_eta(eta)
        var = family.variance(mu)
        w_prime = _CANONICAL_W_PRIME[(family.name, family.link.name)](prior, mu)
        ddev = -2.0 * prior * (rows.y - mu) * mu_eta / var
        a, r_idx, r_val = self._rows(rows)
        refs1 = rows.terms[0].refs
        p1, l1 = self.p1, self.l1
        h = np.einsum("ic,icd,id->i", a, self.M1inv[refs1], a)
        if self.qr:
            # (E a_i - b_i)' S^{-1} (E a_i - b_i) by parts, gathered per row.
            Ft, Sinv = self.Ft, self.Sinv
            cols1 = refs1 * p1
            h += np.einsum("ic,icd,id->i", a, self.EF[refs1], a)
            for ia, (ra, va) in enumerate(zip(r_idx, r_val, strict=True)):
                for c in range(p1):
                    h -= 2.0 * va * a[:, c] * Ft[cols1 + c, ra]
                h += va * va * Sinv[ra, ra]
                for rb, vb in zip(r_idx[ia + 1 :], r_val[ia + 1 :], strict=True):
                    h += 2.0 * va * vb * Sinv[ra, rb]
        s = h * w_prime
        # Kept for the theta-gradient (:meth:`theta_gradient`), which reads the same rows.
        self._row_parts = (eta, ddev, s)
        out = np.empty(rows.p + self.q1 + self.qr)
        out[: rows.p] = rows.X.T @ (ddev + s)
        t1v = out[rows.p : rows.p + self.q1].reshape(l1, p1)
        for c in range(p1):
            t1v[:, c] = np.bincount(refs1, weights=s * a[:, c], minlength=l1)
        tr = out[rows.p + self.q1 :]
        tr[:] = 0.0
        for ra, va in zip(r_idx, r_val, strict=True):
            tr += np.bincount(ra, weights=s * va, minlength=self.qr)
        return out

    def solve(self, t: np.ndarray) -> np.ndarray:
        """``M^{-1} t`` (blocks: ``y_r = S^{-1}(t_r - E t_1)``, ``y_1 = M_1^{-1}(t_1 - C'y_r)``)."""
        l1, p1, q1 = self.l1, self.p1, self.q1
        t1 = t[:q1]
        y1 = np.einsum("lcd,ld->lc", self.M1inv, t1.reshape(l1, p1))
        if not self.qr:
            return y1.ravel()
        yr = self.Sinv @ (t[q1:] - self.E @ t1)
        y1 = y1 - np.einsum("lcd,ld->lc", self.M1inv, (self.C.T @ yr).reshape(l1, p1))
        return np.concatenate([y1.ravel(), yr])

    def correction(
        self, rows: MemoryRows, family: Any, eta: np.ndarray, mu: np.ndarray, y: np.ndarray
    ) -> np.ndarray:
        """``X' W Z Lambda y`` over ``rows``."""
        mu_eta = family.link.mu_eta(eta)
        w = rows.weights * (mu_eta * mu_eta) / family.variance(mu)
        a, r_idx, r_val = self._rows(rows)
        refs1 = rows.terms[0].refs
        y1 = y[: self.q1].reshape(self.l1, self.p1)
        xy = np.einsum("ic,ic->i", a, y1[refs1])
        yr = y[self.q1 :]
        for ra, va in zip(r_idx, r_val, strict=True):
            xy += va * yr[ra]
        self._row_w_xy = (eta, w, xy)
        return rows.X.T @ (w * xy)

    def inverse_diagonal(self) -> np.ndarray:
        """The diagonal of ``M^{-1}`` (scalar terms: term 1's ``1/D_l`` plus the level
        blocks of ``E'S^{-1}E``, then the diagonal of ``S^{-1}``)."""
        first = self.M1inv[:, 0, 0]
        if not self.qr:
            return first.copy()
        return np.concatenate([first + self.EF[:, 0, 0], np.diag(self.Sinv)])

    def theta_row_sums(
        self,
        rows: MemoryRows,
        family: Any,
        eta: np.ndarray,
        mu: np.ndarray,
        u: np.ndarray,
        y: np.ndarray,
    ) -> np.ndarray:
        """The row sums of the theta-gradient over ``rows`` (scalar terms only): per term
        ``k``, ``sum_i q_i z_ik (2 u_k - y_k)[l_k(i)] + e_ki (s_i - w_i (Z Lambda y)_i)``
        with ``e_k = Z_k u_k`` and ``q = (d dev / d eta) / 2`` (see
        :meth:`PirlsDeviance.laplace_gradient`). Reads the per-row parts that :meth:`sums`
        and :meth:`correction` kept at this ``eta`` (rows in memory), or forms them (a
        chunk)."""
        parts, w_xy = getattr(self, "_row_parts", None), getattr(self, "_row_w_xy", None)
        if parts is None or parts[0] is not eta:
            self.sums(rows, family, eta, mu)
            parts = self._row_parts
        if w_xy is None or w_xy[0] is not eta:
            self.correction(rows, family, eta, mu, y)
            w_xy = self._row_w_xy
        q = 0.5 * parts[1]
        r = parts[2] - w_xy[1] * w_xy[2]
        out = np.empty(len(rows.terms))
        start = 0
        for k, (refs, z, _) in enumerate(rows._term_rows):
            stop = start + rows.terms[k].nlevels
            qz = q if z is None else q * z
            e = u[start:stop].take(refs)
            if z is not None:
                e *= z
            out[k] = float(qz @ (2.0 * u[start:stop] - y[start:stop]).take(refs)) + float(e @ r)
            start = stop
        return out

    def theta_direct(self, theta: np.ndarray, sizes: list[int]) -> np.ndarray:
        """``d log|M| / d lambda_k`` at fixed weights (scalar terms):
        ``2 tr(M^{-1} Lambda Z'WZ E_k) = 2 sum_{j in k} (1 - (M^{-1})_jj) / lambda_k``
        (``Lambda Z'WZ Lambda = M - I``); 0 at ``lambda_k = 0``, where the deviance is even
        in ``lambda_k``. ``sizes``: the levels of each term."""
        minv = self.inverse_diagonal()
        out = np.zeros(theta.shape[0])
        start = 0
        for k, size in enumerate(sizes):
            stop = start + size
            lam = float(theta[k])
            if lam != 0.0:
                out[k] = 2.0 * float(np.sum(1.0 - minv[start:stop])) / lam
            start = stop
        return out


class PirlsDeviance:
    """The GLMM deviance as a function of (theta, beta), or of theta with beta inside PIRLS.

    Parameters
    ----------
    structure
        The covariance parameterisation (terms in engine order, with their rows).
    X
        (n, p) fixed-effects columns.
    response
        The response, weights, offset and family (:class:`GlmmResponse`).
    nagq
        1 for the Laplace approximation, k > 1 for k-point adaptive Gauss-Hermite
        quadrature (one scalar random-effects term only).

    Notes
    -----
    Each evaluation starts PIRLS from the modes of the previous one (``u`` changes little
    between an optimiser's points); PIRLS is run to convergence, so the value does not
    depend on the start beyond rounding. :meth:`on_rows` builds the criterion on any
    :class:`PirlsRows` (chunks of rows).
    """

    def __init__(
        self,
        structure: CovarianceStructure,
        X: np.ndarray,
        response: GlmmResponse,
        nagq: int = 1,
    ):
        rows = MemoryRows(
            structure.terms, X, response.y, response.weights, response.trials, response.offset
        )
        self._setup(structure, rows, response.family, nagq)

    @classmethod
    def on_rows(
        cls, structure: CovarianceStructure, rows: PirlsRows, family: Any, nagq: int = 1
    ) -> PirlsDeviance:
        """The criterion on ``rows`` (e.g. :class:`ChunkedRows`) for ``family``."""
        self = cls.__new__(cls)
        self._setup(structure, rows, family, nagq)
        return self

    def _setup(
        self, structure: CovarianceStructure, rows: PirlsRows, family: Any, nagq: int
    ) -> None:
        self.structure = structure
        self.terms = structure.terms
        self.rows = rows
        self.family = family
        self.nagq = int(nagq)
        self.n, self.p = rows.nobs, rows.p
        self.ntheta = structure.ntheta
        self.q = sum(t.nranef for t in self.terms)
        stops = np.cumsum([t.nranef for t in self.terms]).tolist()
        self._term_slices = [
            (stop - t.nranef, stop, (t.nlevels, t.ncols), t.ncols == 1)
            for t, stop in zip(self.terms, stops, strict=True)
        ]
        self._systems: dict[bool, BlockedSystem] = {}
        self._u = np.zeros(self.q)
        # A canonical link's PIRLS is Newton's method (2-3 iterations a run); others take
        # Fisher scoring's linear steps (grouseticks' negative binomial: ~11), where a
        # predicted start saves several iterations, not a fraction of one.
        one_term = isinstance(rows, MemoryRows) and len(self.terms) == 1
        newton = bool(getattr(family, "canonical", False))
        min_rows = _PREDICT_MIN_ROWS_ONE_TERM if one_term and newton else _PREDICT_MIN_ROWS
        self._predictors = {
            False: _ModePredictor(self.ntheta + self.p + 1, self.q, self.n, min_rows),
            True: _ModePredictor(self.ntheta + 1, self.q + self.p, self.n, min_rows),
        }
        self._beta0: np.ndarray | None = None
        self._saturated: tuple[object, float] | None = None
        self._rounded_binomial: bool | None = None
        self.evaluations = 0
        # One scalar term with the rows in memory: a PIRLS step is a Newton step per level
        # (and a p x p solve for beta inside), with no blocked system (_pirls_one_scalar).
        self._xr_workspace: tuple[np.ndarray, np.ndarray | None] | None = None
        self._recent: list[tuple[Any, tuple[Any, ...], PirlsState]] = []
        self._one_term_scalar = len(self.terms) == 1 and self.terms[0].ncols == 1
        self._one_scalar = isinstance(rows, MemoryRows) and self._one_term_scalar
        # One vector-valued term (e.g. (urban | district)): PIRLS by small per-level
        # systems (_pirls_one_term).
        self._one_vector = (
            isinstance(rows, MemoryRows) and len(self.terms) == 1 and self.terms[0].ncols > 1
        )
        self._x_columns: np.ndarray | None = None
        # Several scalar terms (crossed or nested) whose rest block is small enough to
        # factor dense: PIRLS with a dense Schur complement (_pirls_scalar_terms), again
        # without the general blocked system.
        self._scalar_terms: _ScalarTermsPlan | None = None
        if (
            isinstance(rows, MemoryRows)
            and len(self.terms) > 1
            and all(t.ncols == 1 for t in self.terms)
        ):
            qr = self.q - self.terms[0].nranef
            if qr <= _SCALAR_REST_MAX:
                self._scalar_terms = _ScalarTermsPlan(self.terms)
        #: PIRLS' stopping rule (see :data:`MODE_TOLERANCE`).
        self.mode_tolerance = MODE_TOLERANCE
        if self.nagq > 1:
            if len(self.terms) != 1 or self.terms[0].ncols != 1:
                raise ValueError("adaptive Gauss-Hermite quadrature needs one scalar term")
            nodes, weights = np.polynomial.hermite_e.hermegauss(self.nagq)
            self._nodes = nodes
            self._log_node_weights = np.log(weights / weights.sum())

    def set_family(self, family: object) -> None:
        """Use ``family`` from now on (the negative binomial's theta as it is optimised)."""
        self.family = family

    # -- pieces ---------------------------------------------------------------------------
    def _system(self, with_x: bool, A: CrossProducts) -> BlockedSystem:
        system = self._systems.get(with_x)
        system = (
            BlockedSystem(self.structure, A, single_use=True)
            if system is None
            else system.with_values(A)
        )
        self._systems[with_x] = system
        return system

    def coefficients(
        self, beta: np.ndarray, u: np.ndarray, templates: list[np.ndarray]
    ) -> Coefficients:
        """``beta`` and ``b = Lambda u`` per term (each (levels, ncols))."""
        return Coefficients(beta, self._b(u, [T.T for T in templates]))

    def _b(self, u: np.ndarray, transposed: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        """``b = Lambda u`` per term, from the templates' transposes."""
        # A scalar term's b is u times its one template entry (what the 1 x 1 product
        # gives, without a matrix product per term and pass).
        return tuple(
            [
                u[start:stop].reshape(shape) * Tt[0, 0]
                if scalar
                else u[start:stop].reshape(shape) @ Tt
                for (start, stop, shape, scalar), Tt in zip(  # noqa: B905 (hot path)
                    self._term_slices, transposed
                )
            ]
        )

    def _pass(
        self, beta: np.ndarray, u: np.ndarray, transposed: list[np.ndarray], with_x: bool
    ) -> tuple[RowsPass, float]:
        """One pass at ``(beta, u)`` (``transposed``: the templates' transposes): the pass
        and its penalised deviance."""
        done = self.rows.evaluate(
            self.family, Coefficients(beta, self._b(u, transposed)), with_x=with_x
        )
        return done, done.deviance + float(u @ u)

    def _where(self, theta: np.ndarray, beta: np.ndarray | None) -> np.ndarray:
        """The point the modes depend on: theta, beta (unless PIRLS estimates it) and the
        negative binomial's theta (0 for other families)."""
        extra = getattr(self.family, "theta", None)
        tail = [0.0 if extra is None else float(extra)]
        if beta is None:
            return np.concatenate([theta, tail])
        return np.concatenate([theta, np.asarray(beta, dtype=np.float64), tail])

    # -- PIRLS ----------------------------------------------------------------------------
    def pirls(
        self, theta: np.ndarray, beta: np.ndarray | None, u0: np.ndarray | None = None
    ) -> PirlsState:
        """Run PIRLS at ``theta``: for the modes at fixed ``beta``, or (``beta=None``) for the
        modes and beta together (nAGQ = 0). Each iteration is one pass over the rows.

        The states of the last two runs without a start ``u0`` are kept: the same point
        asked again (the Newton stage's Hessian at its last point, the result at the
        optimum) gets the same state back, which a run from those modes would reproduce
        (its first step is below the stopping rule) at the cost of a pass and a step.
        """
        if u0 is not None:
            return self._pirls_run(theta, beta, u0)
        theta = np.asarray(theta, dtype=np.float64)
        family = self.family
        key = (
            self.mode_tolerance,
            theta.tobytes(),
            None if beta is None else np.asarray(beta, dtype=np.float64).tobytes(),
        )
        recent = self._recent
        for seen_family, seen, state in recent:
            # The family by identity (the negative binomial's changes with its theta).
            if seen_family is family and seen == key:
                return state
        state = self._pirls_run(theta, beta, None)
        recent.insert(0, (family, key, state))
        del recent[2:]
        return state

    def keep_state_at(self, theta: np.ndarray, beta: np.ndarray, state: PirlsState) -> None:
        """Answer :meth:`pirls` at ``(theta, beta)`` with ``state`` from now on (under the
        current stopping rule): the joint modes of a run with beta inside at ``theta``
        (``state``, whose beta is ``beta``) are the modes at that fixed beta too, the same
        equations (the two-stage fit's stage 2 starts there)."""
        key = (
            self.mode_tolerance,
            np.asarray(theta, dtype=np.float64).tobytes(),
            np.asarray(beta, dtype=np.float64).tobytes(),
        )
        self._recent.insert(0, (self.family, key, state))
        del self._recent[2:]

    def _pirls_run(
        self, theta: np.ndarray, beta: np.ndarray | None, u0: np.ndarray | None
    ) -> PirlsState:
        """:meth:`pirls` itself."""
        # The fast paths' inverse links may overflow exp (a mean of 0 or 1, then bounded,
        # as the links do): one error-state context per run, not one per pass. A start
        # predicted far off may also give an infinite mean and 0 * inf in the deviance
        # (invalid): PIRLS sees the non-finite value and starts again from the last modes.
        if self._one_scalar:
            with np.errstate(over="ignore", invalid="ignore"):
                return self._pirls_one_scalar(theta, beta, u0)
        if self._one_vector:
            with np.errstate(over="ignore", invalid="ignore"):
                return self._pirls_one_term(theta, beta, u0)
        if self._scalar_terms is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                return self._pirls_scalar_terms(theta, beta, u0)
        theta = np.asarray(theta, dtype=np.float64)
        transposed = [T.T for T in self.structure.templates(theta)]
        with_x = beta is None
        u = (self._u if u0 is None else np.asarray(u0, dtype=np.float64)).copy()
        if with_x:
            beta_cur = self._beta0
            if beta_cur is None:
                beta_cur = self.rows.initial_beta(self.family)
        else:
            # A copy: the rows recognise it as the same beta at every step (by identity).
            beta_cur = np.array(beta, dtype=np.float64)
        where = self._where(theta, beta)
        guess = self._predictors[with_x].predict(where) if u0 is None else None
        if guess is not None:
            u = guess[: self.q]
            if with_x:
                beta_cur = guess[self.q :]
        current, pdev = self._pass(beta_cur, u, transposed, with_x)
        if not np.isfinite(pdev) and guess is not None:  # a prediction far off: the last modes
            u = self._u.copy()
            if with_x:
                beta_cur = self._beta0 if self._beta0 is not None else beta_cur
            current, pdev = self._pass(beta_cur, u, transposed, with_x)
        if not np.isfinite(pdev):  # a start far off (e.g. a warm start from a wild point)
            u = np.zeros(self.q)
            current, pdev = self._pass(beta_cur, u, transposed, with_x)
        iterations = 0
        floor = [np.inf, 0.0]  # the rounding-floor rule's state (_stalled)
        for iterations in range(1, MAX_ITERATIONS + 1):  # noqa: B007 (read after the loop)
            system = self._system(with_x, current.blocks)
            factor = system.factor(theta)
            u_new, beta_new = _modes(system, factor)
            du = u_new - u
            dbeta = beta_new - beta_cur if with_x else None
            moved = _relative_move(du, u, dbeta, beta_cur)
            if moved < self.mode_tolerance or (moved < _FLOOR_MOVE and _stalled(floor, moved)):
                # At the modes: the factor is the one at these very weights, so the
                # Laplace terms below are consistent (the step left is ~1e-10).
                break
            u, beta_cur, (current, pdev) = _damped_step(
                lambda u_, beta_: self._pass(beta_, u_, transposed, with_x),
                u,
                du,
                beta_cur,
                dbeta,
                pdev,
            )
        else:
            raise _not_converged()
        self._u = u
        if with_x:
            self._beta0 = beta_cur
        self._predictors[with_x].add(where, np.concatenate([u, beta_cur]) if with_x else u)
        deviance = float(pdev - u @ u)
        p = self.p
        RX = factor.LXX[:p, :p]  # R_X' (beta inside: the system with X)
        return PirlsState(
            u=u,
            beta=beta_cur,
            coefficients=current.coefficients,
            eta=current.eta,
            mu=current.mu,
            rows_pass=current,
            logdet=float(factor.logdet_z),
            aic_terms=self._minus_twice_loglik(current.coefficients, deviance),
            deviance=deviance,
            iterations=iterations,
            rxtrx=RX @ RX.T if with_x else None,
        )

    def _pirls_one_scalar(
        self, theta: np.ndarray, beta: np.ndarray | None, u0: np.ndarray | None
    ) -> PirlsState:
        """:meth:`pirls` for one scalar random-effects term with the rows in memory.

        Notes
        -----
        With ``b_l = lambda u_l``, row ``i`` in level ``l(i)``, working weights ``w`` and
        working response ``r`` (``eta`` less the part held fixed, plus ``(y - mu) /
        (dmu/deta)``), ``L_Z`` is diagonal, ``L_l^2 = M_l = lambda^2 sum_{i in l} w_i z_i^2
        + 1``, so ``log |L_Z|^2 = sum_l log M_l``, and the penalised weighted least-squares
        step of PIRLS is, at fixed beta, one division per level:

            u_l <- c_l / M_l,   c_l = lambda sum_{i in l} w_i z_i r_i;

        with beta inside (nAGQ = 0; ``r`` then excludes only the offset), with ``C`` the
        ``(p, levels)`` sums ``lambda sum_{i in l} w_i z_i x_i``, beta solves the Schur
        complement ``(X'WX - C M^{-1} C') beta = X'Wr - C M^{-1} c`` (``R_X'R_X``) and
        ``u_l <- (c_l - C_l' beta) / M_l``. That is what the blocked system gives for this
        structure (Bates et al. 2015, sec. 5), as a few ``bincount`` sums per iteration;
        the start, the step halving and the stopping rule are :meth:`pirls`' (the value
        agrees to rounding).
        """
        theta = np.asarray(theta, dtype=np.float64)
        rows = self.rows
        assert isinstance(rows, MemoryRows)
        family = self.family
        link = family.link
        inverse = _FAST_INVERSE.get(link.name, link.inverse)
        working = _working_weights(family)
        refs, z, _ = rows._term_rows[0]  # z: None for a random intercept
        nlevels, p = self.q, self.p
        lam = float(theta[0])  # the 1 x 1 template of the one scalar term
        y, prior, offset, X = rows.y, rows.weights, rows.offset, rows.X
        with_x = beta is None
        if with_x:
            beta_cur = self._beta0
            if beta_cur is None:
                beta_cur = rows.initial_beta(family)
            # [X r]' row by row (r, the working response, is written into the last row at
            # each step), and the bins j * levels + refs[i] of its entries: one product and
            # one bincount give both C and c. Above _SLICE_ROWS rows a bincount per row of
            # [X r]' (the same sums, in the same order) spares the bins' (p + 1) n integers.
            workspace = self._xr_workspace
            if workspace is None:
                xr = np.empty((p + 1, rows.nobs))
                xr[:p] = X.T
                bins = None
                if rows.nobs <= _SLICE_ROWS:
                    bins = (np.arange(p + 1)[:, None] * nlevels + refs[None, :]).ravel()
                workspace = self._xr_workspace = (xr, bins)
            xr, xr_bins = workspace
            lam2 = lam * lam
        else:
            # A copy: the rows recognise it as the same beta at every step (by identity).
            beta_cur = np.array(beta, dtype=np.float64)
        predictor = self._predictors[with_x]
        where = self._where(theta, beta) if predictor.capacity >= 2 else None
        u = (self._u if u0 is None else np.asarray(u0, dtype=np.float64)).copy()
        guess = predictor.predict(where) if u0 is None and where is not None else None
        if guess is not None:
            u = guess[:nlevels]
            if with_x:
                beta_cur = guess[nlevels:]
        elif u0 is None and not with_x and (family.name, link.name) in _CANONICAL_WORKING:
            predicted = self._predict_one_scalar(lam, beta_cur, working)
            if predicted is not None:
                guess = u = predicted

        def at(u: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
            # As MemoryRows.evaluate: z b[refs] first, then the fixed part (same rounding).
            fixed = rows._fixed_part(beta)
            eta = (u * lam).take(refs)
            if z is not None:
                eta *= z
            eta += fixed
            mu = inverse(eta)
            return fixed, eta, mu, deviance_of(mu) + float(u @ u)

        deviance_of = rows._deviance(family)
        fixed, eta, mu, pdev = at(u, beta_cur)
        if not np.isfinite(pdev) and guess is not None:  # a prediction far off: the last modes
            u = self._u.copy()
            if with_x and self._beta0 is not None:
                beta_cur = self._beta0
            fixed, eta, mu, pdev = at(u, beta_cur)
        if not np.isfinite(pdev):  # a start far off (e.g. a warm start from a wild point)
            u = np.zeros(nlevels)
            fixed, eta, mu, pdev = at(u, beta_cur)
        RXtRX = C = None  # with beta inside only
        tolerance = self.mode_tolerance
        iterations = 0
        dbeta = None  # beta estimated inside PIRLS (with_x) only
        # At fixed beta with a canonical link, w / (dmu/deta) is the prior weight a, so
        # the step c / M - u, c_l = lambda sum_{i in l} w_i z_i r_i, is (lambda s - u) / M
        # with s_l = sum_{i in l} a_i z_i (y_i - mu_i) (the lambda^2 u Z'WZ part of c
        # cancels against M u): three numpy calls fewer a step, and no cancellation.
        canonical_step = not with_x and (family.name, link.name) in _CANONICAL_WORKING
        r = None  # the working response (the blocks read it; formed here if not below)
        # Newton's PIRLS (canonical link) converges quadratically: the stricter, cheaper
        # measure costs no iteration there; Fisher scoring's linear steps keep the
        # max-norm rule (a stricter one would add iterations).
        canonical = (family.name, link.name) in _CANONICAL_WORKING
        relative_move = _relative_move_norm2 if canonical else _relative_move
        floor = [np.inf, 0.0]  # the rounding-floor rule's state (_stalled)
        for iterations in range(1, MAX_ITERATIONS + 1):  # noqa: B007 (read after the loop)
            mu_eta, w = working(eta, mu, prior)
            wz = w if z is None else w * z
            level_weights = np.bincount(refs, weights=w if z is None else wz * z, minlength=nlevels)
            M = (lam * lam) * level_weights + 1.0
            if canonical_step:
                residual = prior * (y - mu) if z is None else prior * (y - mu) * z
                s = np.bincount(refs, weights=residual, minlength=nlevels)
                du = (lam * s - u) / M
                moved = _relative_move_norm2(du, u, None, beta_cur)
                if moved < tolerance or (moved < _FLOOR_MOVE and _stalled(floor, moved)):
                    break
                u, beta_cur, (fixed, eta, mu, pdev) = _damped_step(at, u, du, beta_cur, None, pdev)
                continue
            if with_x:
                # S[j, l] = sum_{i in l} w_i z_i [x_i, r_i]_j: C = lambda S[:p], c = lambda
                # S[p]; R_X'R_X = X'WX - C M^{-1} C' and its right side X'Wr - C M^{-1} c,
                # then u = (c - C'beta) / M, as in the Notes, with the lambdas gathered.
                r = xr[p]
                np.subtract(y, mu, out=r)
                r /= mu_eta
                r += eta
                r -= offset
                if xr_bins is not None:
                    wxr = xr * wz
                    S = np.bincount(xr_bins, weights=wxr.ravel(), minlength=(p + 1) * nlevels)
                    S = S.reshape(p + 1, nlevels)
                    XtWXr = (wxr[:p] if z is None else xr[:p] * w) @ xr.T  # [X'WX, X'Wr]
                else:  # the same sums a row of [X r]' at a time (no (p + 1) n temporary)
                    S = np.empty((p + 1, nlevels))
                    for j in range(p + 1):
                        S[j] = np.bincount(refs, weights=xr[j] * wz, minlength=nlevels)
                    XtWXr = (xr[:p] * w) @ xr.T
                SM = S / M
                Q = SM[:p] @ S.T
                RXtRX = XtWXr[:, :p] - lam2 * Q[:, :p]
                beta_new = _solve_spd(RXtRX, XtWXr[:, p] - lam2 * Q[:, p])
                du = lam * (SM[p] - beta_new @ SM[:p]) - u
                dbeta = beta_new - beta_cur
            else:
                r = (eta - fixed) + (y - mu) / mu_eta
                c = lam * np.bincount(refs, weights=wz * r, minlength=nlevels)
                du = c / M - u
            moved = relative_move(du, u, dbeta, beta_cur)
            if moved < tolerance or (moved < _FLOOR_MOVE and _stalled(floor, moved)):
                break
            u, beta_cur, (fixed, eta, mu, pdev) = _damped_step(at, u, du, beta_cur, dbeta, pdev)
        else:
            raise _not_converged()
        self._u = u
        if with_x:
            self._beta0 = beta_cur
        if where is not None:
            predictor.add(where, np.concatenate([u, beta_cur]) if with_x else u)
        deviance = float(pdev - u @ u)
        coefficients = Coefficients(beta_cur, ((u * lam)[:, None],))
        if with_x:
            C = lam * S[:p]
        # The blocks from the state's own eta and mu (a closure here would keep this run's
        # weights, working response and fixed part: four row vectors per kept state).
        blocks = partial(_one_scalar_blocks, rows, family, with_x, beta_cur, eta, mu)
        done = RowsPass(coefficients, deviance, None, blocks, eta, mu)
        rows._last = done  # later sums at these coefficients read its eta and mu
        return PirlsState(
            u=u,
            beta=beta_cur,
            coefficients=coefficients,
            eta=eta,
            mu=mu,
            rows_pass=done,
            logdet=float(np.log(M).sum()),
            aic_terms=self._minus_twice_loglik(coefficients, deviance),
            deviance=deviance,
            iterations=iterations,
            level_weights=level_weights,
            scalar_blocks=(M, None, None),
            rxtrx=RXtRX,
            level_x=C,
            theta=theta,
        )

    def _predict_one_scalar(
        self, lam: float, beta: np.ndarray, working: Callable[..., Any]
    ) -> np.ndarray | None:
        """The modes at ``(lam, beta)`` to first order from the last run's (one scalar
        term, a canonical link, beta fixed): a start ``O(step^2)`` from the modes where the
        last modes are ``O(step)`` away, which saves Newton's first PIRLS iteration on the
        short steps of a Newton stage and its difference quotients. None when there is no
        such run (or it was at ``lam = 0``).

        Notes
        -----
        The modes solve ``g_l = lambda sum_{i in l} z_i q_i + u_l = 0`` (``q`` half the
        deviance's derivative in ``eta``), whose derivative in ``u_l`` is ``M_l``; in
        ``lambda`` it is ``sum z_i q_i + lambda u_l sum w_i z_i^2 = u_l (M_l - 2) /
        lambda`` at the modes, and in beta ``C_l = lambda sum w_i z_i x_i``. So ``u(lam +
        d, beta + b) ~ u - (u (M - 2) d / lambda + C b) / M`` (implicit function theorem).
        """
        if not self._recent:
            return None
        prev = self._recent[0][2]
        if prev.theta is None or prev.u is not self._u or prev.scalar_blocks is None:
            return None
        lam_prev = float(prev.theta[0])
        if lam_prev == 0.0 or prev.mu is None:
            return None
        rows = self.rows
        assert isinstance(rows, MemoryRows)
        refs, z, _ = rows._term_rows[0]
        u, M = prev.u, prev.scalar_blocks[0]
        shift = u * ((M - 2.0) * ((lam - lam_prev) / lam_prev))
        db = beta - prev.beta
        if db.any():
            _, w = working(prev.eta, prev.mu, rows.weights)
            wx = w * (rows.X @ db)
            if z is not None:
                wx *= z
            shift += lam_prev * np.bincount(refs, weights=wx, minlength=M.shape[0])
        return u - shift / M

    def _pirls_one_term(
        self, theta: np.ndarray, beta: np.ndarray | None, u0: np.ndarray | None
    ) -> PirlsState:
        """:meth:`pirls` for one vector-valued random-effects term, rows in memory.

        Notes
        -----
        With the template ``T`` (``b_l = T u_l``), ``x_i = T'z_i`` and working weights
        ``w`` and response ``r``, ``L_Z`` is block diagonal with ``L_l L_l' = M_l =
        sum_{i in l} w_i x_i x_i' + I`` (``p_1 x p_1``), so ``log |L_Z|^2 = sum_l log |M_l|``
        and, at fixed beta, ``u_l = M_l^{-1} c_l``, ``c_l = sum_{i in l} w_i x_i r_i``.
        With beta inside (nAGQ = 0), ``G_l = sum_{i in l} w_i x_i X_i'`` (``X_i`` row
        ``i`` of ``X``) joins: ``R_X'R_X = X'WX - sum_l G_l'M_l^{-1}G_l``, ``beta =
        (R_X'R_X)^{-1} (X'Wr - sum_l G_l'M_l^{-1}c_l)`` and ``u_l = M_l^{-1}(c_l - G_l
        beta)``: the blocked
        system's factor and solution for this structure (Bates et al. 2015, sec. 3 and 5),
        as ``bincount`` sums and batched ``p_1 x p_1`` solves. The start, the step halving
        and the stopping rule are :meth:`pirls`' (the value agrees to rounding).
        """
        theta = np.asarray(theta, dtype=np.float64)
        rows = self.rows
        assert isinstance(rows, MemoryRows)
        family = self.family
        link = family.link
        inverse = _FAST_INVERSE.get(link.name, link.inverse)
        working = _working_weights(family)
        term = self.terms[0]
        refs, Z = term.refs, term.z
        nlevels, p1 = term.nlevels, term.ncols
        q, p = self.q, self.p
        T = self.structure.templates(theta)[0]
        Tt = T.T
        xs = Z @ T  # (n, p1): row i is x_i' = z_i'T
        xcols = [np.ascontiguousarray(xs[:, a]) for a in range(p1)]
        y, prior, offset = rows.y, rows.weights, rows.offset
        with_x = beta is None
        if with_x:
            beta_cur = self._beta0
            if beta_cur is None:
                beta_cur = rows.initial_beta(family)
            if self._x_columns is None:
                self._x_columns = np.ascontiguousarray(rows.X.T)
            XT = self._x_columns
        else:
            # A copy: the rows recognise it as the same beta at every step (by identity).
            beta_cur = np.array(beta, dtype=np.float64)
        deviance_of = rows._deviance(family)
        predictor = self._predictors[with_x]
        where = self._where(theta, beta) if predictor.capacity >= 2 else None
        u = (self._u if u0 is None else np.asarray(u0, dtype=np.float64)).copy()
        guess = predictor.predict(where) if u0 is None and where is not None else None
        if guess is not None:
            u = guess[:q]
            if with_x:
                beta_cur = guess[q:]
        eye = np.eye(p1)

        def at(u: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
            # As MemoryRows.evaluate: z_i'b_l first, then the fixed part (same rounding).
            fixed = rows._fixed_part(beta)
            eta = np.einsum("ij,ij->i", Z, (u.reshape(nlevels, p1) @ Tt)[refs])
            eta += fixed
            mu = inverse(eta)
            return fixed, eta, mu, deviance_of(mu) + float(u @ u)

        fixed, eta, mu, pdev = at(u, beta_cur)
        if not np.isfinite(pdev) and guess is not None:  # a prediction far off: the last modes
            u = self._u.copy()
            if with_x and self._beta0 is not None:
                beta_cur = self._beta0
            fixed, eta, mu, pdev = at(u, beta_cur)
        if not np.isfinite(pdev):  # a start far off (e.g. a warm start from a wild point)
            u = np.zeros(q)
            fixed, eta, mu, pdev = at(u, beta_cur)
        RXtRX = None  # with beta inside only
        tolerance = self.mode_tolerance
        iterations = 0
        dbeta = None  # beta estimated inside PIRLS (with_x) only
        floor = [np.inf, 0.0]  # the rounding-floor rule's state (_stalled)
        for iterations in range(1, MAX_ITERATIONS + 1):  # noqa: B007 (read after the loop)
            mu_eta, w = working(eta, mu, prior)
            r = (eta - (offset if with_x else fixed)) + (y - mu) / mu_eta
            wr = w * r
            M = np.empty((nlevels, p1, p1))
            c = np.empty((nlevels, p1))
            for a in range(p1):
                wxa = w * xcols[a]
                c[:, a] = np.bincount(refs, weights=wxa * r, minlength=nlevels)
                for b in range(a, p1):
                    v = np.bincount(refs, weights=wxa * xcols[b], minlength=nlevels)
                    M[:, a, b] = v
                    M[:, b, a] = v
            M += eye
            L = np.linalg.cholesky(M)  # M_l = L_l L_l': log |M_l| and positive definiteness
            if with_x:
                G = np.empty((nlevels, p1, p))
                for a in range(p1):
                    wxa = w * xcols[a]
                    for j in range(p):
                        G[:, a, j] = np.bincount(refs, weights=wxa * XT[j], minlength=nlevels)
                # M_l^{-1} [G_l, c_l] for every level in one batched solve.
                solved = np.linalg.solve(M, np.concatenate([G, c[:, :, None]], axis=2))
                RXtRX = (XT * w) @ XT.T - np.einsum("lap,laq->pq", G, solved[:, :, :p])
                beta_new = _solve_spd(RXtRX, XT @ wr - np.einsum("lap,la->p", G, solved[:, :, p]))
                u_new = solved[:, :, p] - solved[:, :, :p] @ beta_new
                dbeta = beta_new - beta_cur
            else:
                u_new = np.linalg.solve(M, c[:, :, None])[:, :, 0]
            du = u_new.ravel() - u
            moved = _relative_move(du, u, dbeta, beta_cur)
            if moved < tolerance or (moved < _FLOOR_MOVE and _stalled(floor, moved)):
                break
            u, beta_cur, (fixed, eta, mu, pdev) = _damped_step(at, u, du, beta_cur, dbeta, pdev)
        else:
            raise _not_converged()
        self._u = u
        if with_x:
            self._beta0 = beta_cur
        if where is not None:
            predictor.add(where, np.concatenate([u, beta_cur]) if with_x else u)
        deviance = float(pdev - u @ u)
        coefficients = Coefficients(beta_cur, (u.reshape(nlevels, p1) @ Tt,))

        def blocks() -> CrossProducts:
            return rows._plan(with_x)(w, r, log_weights=False)

        done = RowsPass(coefficients, deviance, None, blocks, eta, mu)
        rows._last = done  # later sums at these coefficients read its eta and mu
        return PirlsState(
            u=u,
            beta=beta_cur,
            coefficients=coefficients,
            eta=eta,
            mu=mu,
            rows_pass=done,
            logdet=2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)))),
            aic_terms=self._minus_twice_loglik(coefficients, deviance),
            deviance=deviance,
            iterations=iterations,
            rxtrx=RXtRX,
        )

    def _pirls_scalar_terms(
        self, theta: np.ndarray, beta: np.ndarray | None, u0: np.ndarray | None
    ) -> PirlsState:
        """:meth:`pirls` for several scalar terms, rows in memory, with the rest block
        small enough to factor dense.

        Notes
        -----
        With ``lambda_k`` the scale of term ``k``, ``x_ik = lambda_k z_ik`` and working
        weights ``w`` and response ``r``, ``M = Lambda'Z'WZ Lambda + I`` has term 1's block
        diagonal, ``D_l = sum_{i in l} w_i x_i1^2 + 1``, the dense rest block ``M_r``
        (diagonal within a term, cross counts between terms) and ``C = Lambda_r'Z_r'WZ_1
        Lambda_1`` (``q_r x l1``). With ``c = Lambda'Z'Wr`` in the same blocks,

            S = M_r - C D^{-1} C',            log |L_Z|^2 = sum_l log D_l + log |S|,
            u_r = S^{-1} (c_r - C D^{-1} c_1),  u_1 = D^{-1} (c_1 - C' u_r):

        With beta inside (nAGQ = 0; ``r`` then excludes only the offset), ``G_1 =
        Lambda_1'Z_1'WX``, ``G_r = Lambda_r'Z_r'WX`` and ``X'WX`` join; eliminating ``u_1``
        and then ``u_r``,

            S_rx = G_r - C D^{-1} G_1,   S_xx = X'WX - G_1'D^{-1}G_1,
            R_X'R_X = S_xx - S_rx'S^{-1}S_rx,
            beta = (R_X'R_X)^{-1} (X'Wr - G_1'D^{-1}c_1 - S_rx'S^{-1}(c_r - C D^{-1}c_1)),

        then ``u_r = S^{-1}(c_r - C D^{-1}c_1 - S_rx beta)`` and ``u_1 = D^{-1}(c_1 - C'u_r
        - G_1 beta)``. This is the blocked system's Cholesky factor and solution for this
        structure (Bates et al. 2015, sec. 3 and 5), from ``bincount`` sums and one dense
        ``q_r x q_r`` factorisation per iteration. The start, the step halving and the
        stopping rule are :meth:`pirls`' (the value agrees to rounding).
        """
        theta = np.asarray(theta, dtype=np.float64)
        rows = self.rows
        assert isinstance(rows, MemoryRows)
        plan = self._scalar_terms
        assert plan is not None
        family = self.family
        link = family.link
        inverse = _FAST_INVERSE.get(link.name, link.inverse)
        working = _working_weights(family)
        lams = theta.tolist()  # each scalar term's 1 x 1 template is its theta
        lam1 = lams[0]
        refs1, z1, l1, qr = plan.refs1, plan.z1, plan.l1, plan.qr
        q, p = self.q, self.p
        y, prior, offset = rows.y, rows.weights, rows.offset
        with_x = beta is None
        if with_x:
            beta_cur = self._beta0
            if beta_cur is None:
                beta_cur = rows.initial_beta(family)
            XT = plan.x_columns(rows.X)
        else:
            # A copy: the rows recognise it as the same beta at every step (by identity).
            beta_cur = np.array(beta, dtype=np.float64)
        deviance_of = rows._deviance(family)
        predictor = self._predictors[with_x]
        where = self._where(theta, beta) if predictor.capacity >= 2 else None
        u = (self._u if u0 is None else np.asarray(u0, dtype=np.float64)).copy()
        guess = predictor.predict(where) if u0 is None and where is not None else None
        if guess is not None:
            u = guess[:q]
            if with_x:
                beta_cur = guess[q:]
        rest = plan.rest
        cols = [col for col, _ in rest]
        zs = [z for _, z in rest]
        lam_r = np.concatenate(
            [np.full(t.nlevels, lam) for t, lam in zip(self.terms[1:], lams[1:], strict=True)]
        )
        # x_ik = lambda_k z_ik (a scalar for a random intercept), and the pair products.
        x1 = lam1 if z1 is None else lam1 * z1
        sparse = plan.sparse
        if sparse:
            nnz, slot_r, slot_l = plan.nnz, plan.slot_r, plan.slot_l
        xr = [lam if z is None else lam * z for lam, z in zip(lams[1:], zs, strict=True)]
        if sparse:
            ns, s_row, s_col = plan.ns, plan.s_row, plan.s_col
            rest_keys = plan.rest_pairs_s
        else:
            rest_keys = [keys for _, _, keys in plan.rest_pairs]
        pairs = [
            (keys, xr[a] * xr[b], a != b)
            for (a, b, _), keys in zip(plan.rest_pairs, rest_keys, strict=True)
        ]

        def at(u: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
            # As MemoryRows._random_part: term by term, then the fixed part.
            fixed = rows._fixed_part(beta)
            eta = (u[:l1] * lam1).take(refs1)
            if z1 is not None:
                eta *= z1
            b_r = u[l1:] * lam_r
            for col, z in zip(cols, zs):  # noqa: B905 (hot path)
                part = b_r.take(col)
                if z is not None:
                    part *= z
                eta += part
            eta += fixed
            mu = inverse(eta)
            return fixed, eta, mu, deviance_of(mu) + float(u @ u)

        fixed, eta, mu, pdev = at(u, beta_cur)
        if not np.isfinite(pdev) and guess is not None:  # a prediction far off: the last modes
            u = self._u.copy()
            if with_x and self._beta0 is not None:
                beta_cur = self._beta0
            fixed, eta, mu, pdev = at(u, beta_cur)
        if not np.isfinite(pdev):  # a start far off (e.g. a warm start from a wild point)
            u = np.zeros(q)
            fixed, eta, mu, pdev = at(u, beta_cur)
        RXtRX = None  # with beta inside only
        tolerance = self.mode_tolerance
        iterations = 0
        dbeta = None  # beta estimated inside PIRLS (with_x) only
        floor = [np.inf, 0.0]  # the rounding-floor rule's state (_stalled)
        for iterations in range(1, MAX_ITERATIONS + 1):  # noqa: B007 (read after the loop)
            mu_eta, w = working(eta, mu, prior)
            r = (eta - (offset if with_x else fixed)) + (y - mu) / mu_eta
            wr = w * r
            wx1 = w * x1
            D = np.bincount(refs1, weights=wx1 * x1, minlength=l1) + 1.0
            c1 = np.bincount(refs1, weights=wr * x1, minlength=l1)
            c_r = np.zeros(qr)
            for col, x in zip(cols, xr):  # noqa: B905 (hot path)
                c_r += np.bincount(col, weights=wr * x, minlength=qr)
            if sparse:
                Cv = np.zeros(nnz)  # C's nonzeros, and C D^{-1}'s
                for index, x in zip(plan.slot_index, xr):  # noqa: B905 (hot path)
                    Cv += np.bincount(index, weights=wx1 * x, minlength=nnz)
                CvD = Cv / D[slot_l]
            else:
                C = np.zeros(qr * l1)
                for index, x in zip(plan.cross_index, xr):  # noqa: B905 (hot path)
                    C += np.bincount(index, weights=wx1 * x, minlength=qr * l1)
                C = C.reshape(qr, l1)
                CD = C / D
            if sparse:
                # S's nonzeros summed in its compact pattern, then placed dense.
                Sv = -np.bincount(
                    plan.pair_s, weights=CvD[plan.pair_a] * Cv[plan.pair_b], minlength=ns
                )
                for keys, xx, both in pairs:
                    v = w * xx
                    Sv += np.bincount(
                        keys, weights=np.concatenate([v, v]) if both else v, minlength=ns
                    )
                S = np.zeros((qr, qr))
                S[s_row, s_col] = Sv
                rhs_r = c_r - np.bincount(slot_r, weights=CvD * c1[slot_l], minlength=qr)
            else:
                Mr = np.zeros(qr * qr)
                for keys, xx, both in pairs:
                    v = w * xx
                    Mr += np.bincount(
                        keys, weights=np.concatenate([v, v]) if both else v, minlength=qr * qr
                    )
                S = Mr.reshape(qr, qr) - CD @ C.T
                rhs_r = c_r - CD @ c1
            S[np.diag_indices(qr)] += 1.0
            logdet_S, solve_S = _factor_rest(S, plan.diagonal_lead)
            if with_x:
                G1 = np.empty((l1, p))
                Gr = np.zeros((qr, p))
                for j in range(p):
                    G1[:, j] = np.bincount(refs1, weights=wx1 * XT[j], minlength=l1)
                    wxj = w * XT[j]
                    for col, x in zip(cols, xr):  # noqa: B905 (hot path)
                        Gr[:, j] += np.bincount(col, weights=wxj * x, minlength=qr)
                G1D = G1 / D[:, None]
                if sparse:
                    S_rx = Gr
                    for j in range(p):
                        S_rx[:, j] -= np.bincount(slot_r, weights=CvD * G1[slot_l, j], minlength=qr)
                else:
                    S_rx = Gr - CD @ G1
                S_xx = (XT * w) @ XT.T - G1.T @ G1D
                solved = solve_S(np.column_stack([S_rx, rhs_r]))  # S^{-1} [S_rx, rhs_r]
                RXtRX = S_xx - S_rx.T @ solved[:, :p]
                beta_new = _solve_spd(RXtRX, XT @ wr - G1D.T @ c1 - S_rx.T @ solved[:, p])
                u_r = solved[:, p] - solved[:, :p] @ beta_new
                u_1 = c1 - G1 @ beta_new
                dbeta = beta_new - beta_cur
            else:
                u_r = solve_S(rhs_r)
                u_1 = c1.copy()
            if sparse:
                u_1 -= np.bincount(slot_l, weights=Cv * u_r[slot_r], minlength=l1)
            else:
                u_1 -= u_r @ C
            u_1 /= D
            du = np.concatenate([u_1, u_r]) - u
            moved = _relative_move(du, u, dbeta, beta_cur)
            if moved < tolerance or (moved < _FLOOR_MOVE and _stalled(floor, moved)):
                break
            u, beta_cur, (fixed, eta, mu, pdev) = _damped_step(at, u, du, beta_cur, dbeta, pdev)
        else:
            raise _not_converged()
        self._u = u
        if with_x:
            self._beta0 = beta_cur
        if where is not None:
            predictor.add(where, np.concatenate([u, beta_cur]) if with_x else u)
        deviance = float(pdev - u @ u)
        b = [(u[:l1] * lam1)[:, None]]
        start = l1
        for t, lam in zip(self.terms[1:], lams[1:], strict=True):
            b.append((u[start : start + t.nlevels] * lam)[:, None])
            start += t.nlevels
        coefficients = Coefficients(beta_cur, tuple(b))

        def blocks() -> CrossProducts:
            return rows._plan(with_x)(w, r, log_weights=False)

        done = RowsPass(coefficients, deviance, None, blocks, eta, mu)
        rows._last = done  # later sums at these coefficients read its eta and mu
        logdet = float(np.sum(np.log(D))) + logdet_S
        if sparse:
            # Formed as a matrix only if the gradient reads it (scipy's constructor costs
            # more than a PIRLS iteration on small data).
            C = (Cv, plan.slot_l, plan.slot_indptr, (qr, l1))
        return PirlsState(
            u=u,
            beta=beta_cur,
            coefficients=coefficients,
            eta=eta,
            mu=mu,
            rows_pass=done,
            logdet=logdet,
            aic_terms=self._minus_twice_loglik(coefficients, deviance),
            deviance=deviance,
            iterations=iterations,
            scalar_blocks=(D, C, S, solve_S),
            rxtrx=RXtRX,
        )

    # -- the analytic beta-gradient -------------------------------------------------------
    def has_beta_gradient(self) -> bool:
        """Whether :meth:`laplace_beta_gradient` applies: the Laplace criterion, a canonical
        link (binomial-logit, Poisson-log: the PIRLS system is then the
        exact Hessian of the penalised deviance, which the derivative of the modes needs),
        the deviance differing from -2 log p by a constant, and the rest block's rows
        times term 1's columns few enough to hold dense."""
        family = self.family
        canonical = (getattr(family, "name", ""), family.link.name) in _CANONICAL_W_PRIME
        if self.nagq > 1 or not canonical:
            return False
        if self._rounded_binomial is None:
            self._rounded_binomial = (
                family.name == "binomial" and not self.rows.integral_binomial_weights()
            )
        if self._rounded_binomial:
            return False
        q1 = self.terms[0].nranef
        qr = self.q - q1
        return qr * max(q1, 1) <= _GRADIENT_DENSE_MAX

    def laplace_beta_gradient(
        self, theta: np.ndarray, beta: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """The Laplace deviance at ``(theta, beta)`` and its gradient over ``beta``.

        Notes
        -----
        With ``D(beta) = pdev(u~(beta), beta) + log|M|``, ``M = Lambda'Z'WZ Lambda + I`` at
        the modes ``u~``, and ``x_i = Lambda'z_i``:

        * ``pdev``: ``u~`` minimises it, so only its partial derivative counts (the
          envelope theorem): ``X' (d dev_i / d eta_i)``, ``-2 X' a (y - mu)`` for a
          canonical link;
        * ``log|M|``: ``d log|M| / d w_i = h_i = x_i' M^{-1} x_i``, and ``w_i`` moves with
          ``eta_i``, which moves with beta directly and through the modes,
          ``d u~ / d beta = -M^{-1} Lambda'Z'WX`` (implicit function theorem; ``M`` is the
          Hessian of pdev / 2 in ``u`` for a canonical link). With ``s_i = h_i dw_i/deta_i``
          and ``y = M^{-1} Lambda'Z's``: ``X's - X'W Z Lambda y``.

        ``M`` is handled in blocks, term 1's block diagonal ``M_1`` (per level) and the
        rest dense: ``S = M_r - C M_1^{-1} C'`` (``C = Lambda_r'Z_r'WZ_1 Lambda_1``),
        ``h_i = a_i'M_1^{-1}a_i + (C M_1^{-1} a_i - b_i)' S^{-1} (C M_1^{-1} a_i - b_i)``
        with ``a_i``, ``b_i`` the term-1 and rest parts of ``x_i``. Bates et al. 2015 (JSS
        67(1)) sec. 5 for the Laplace criterion.
        """
        state = self.pirls(theta, beta)
        templates = self.structure.templates(theta)
        if state.scalar_blocks is not None:
            pieces = GradientPieces.from_scalar_terms(templates, *state.scalar_blocks)
        else:
            pieces = GradientPieces(self.terms, templates, state.blocks)
        coefficients, family = state.coefficients, self.family
        first = self.rows.beta_gradient_sums(family, coefficients, pieces)
        p = self.p
        y = pieces.solve(first[p:])
        grad = first[:p] - self.rows.beta_gradient_correction(family, coefficients, pieces, y)
        return state.laplace, grad

    def has_theta_gradient(self) -> bool:
        """Whether :meth:`laplace_gradient` applies: :meth:`has_beta_gradient` and scalar
        random-effects terms only."""
        return all(t.ncols == 1 for t in self.terms) and self.has_beta_gradient()

    def laplace_gradient(self, theta: np.ndarray, beta: np.ndarray) -> tuple[float, np.ndarray]:
        """The Laplace deviance at ``(theta, beta)`` and its gradient over ``[theta, beta]``
        (scalar random-effects terms, a canonical link: :meth:`has_theta_gradient`).

        Notes
        -----
        ``D = pdev(u~, theta, beta) + log|M|`` with ``M = Lambda'Z'WZ Lambda + I`` and
        ``Lambda`` diagonal, ``lambda_k`` on term ``k``'s levels. For ``lambda_k``:

        * ``pdev``: by the envelope theorem only its partial derivative at fixed ``u``,
          ``2 q'Z_k u_k`` with ``q = (d dev / d eta) / 2`` (``-a (y - mu)`` for a
          canonical link);
        * ``log|M|`` through ``Lambda`` at fixed weights:
          ``2 tr(M^{-1} Lambda Z'WZ E_k) = 2 sum_{j in k} (1 - (M^{-1})_jj) / lambda_k``
          (``E_k`` selects term ``k``; ``Lambda Z'WZ Lambda = M - I``);
        * ``log|M|`` through the weights: ``sum_i s_i d eta_i / d lambda_k`` with ``s_i =
          h_i dw_i/deta_i`` (:meth:`laplace_beta_gradient`) and ``d eta / d lambda_k =
          Z_k u_k + Z Lambda d u~ / d lambda_k``, where the modes move by
          ``d u~ / d lambda_k = -M^{-1} (E_k Z'q + Lambda Z'W Z_k u_k)`` (implicit
          function theorem on ``Lambda Z'q + u = 0``; ``M`` is its Jacobian for a
          canonical link). With ``y = M^{-1} Lambda Z's`` (the beta-gradient's) that is
          ``s'Z_k u_k - y_k'Z_k'q - y'Lambda Z'W Z_k u_k``.

        Bates et al. 2015 (JSS 67(1)) sec. 5 for the criterion; the beta part is
        :meth:`laplace_beta_gradient`'s.
        """
        if self._one_scalar:
            return self._laplace_gradient_one_scalar(np.asarray(theta, dtype=np.float64), beta)
        state, _, grad = self._laplace_gradient(theta, beta)
        return state.laplace, grad

    def _laplace_gradient_one_scalar(
        self, theta: np.ndarray, beta: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """:meth:`laplace_gradient` for one scalar term with the rows in memory.

        Notes
        -----
        ``M`` is diagonal, ``M_l = lambda^2 sum_{i in l} w_i z_i^2 + 1`` (PIRLS' own), and
        with ``a_i = lambda z_i`` the general pieces reduce to row vectors and one
        ``bincount``: ``h_i = a_i^2 / M_l(i)``, ``s_i = h_i dw_i/deta_i``, ``y_l =
        (sum_{i in l} s_i a_i) / M_l``, ``r_i = s_i - w_i a_i y_l(i)``; then

            dD/dbeta   = X'(2 q + r),
            dD/dlambda = q'(z (2 u - y)[l]) + (z u[l])'r + 2 sum_l (1 - 1/M_l) / lambda,

        ``q = -a (y - mu)`` (canonical link). The same sums as the general route (which
        spends most of a small fit's gradient on its per-term, per-block layout), to
        rounding.
        """
        state = self.pirls(theta, beta)
        rows = self.rows
        assert isinstance(rows, MemoryRows)
        family = self.family
        lam = float(theta[0])
        M = state.scalar_blocks[0]
        inv_m = 1.0 / M
        sums = rows.scalar_gradient_sums(
            family, state.coefficients, lam, state.u, inv_m, (state.eta, state.mu)
        )
        grad = np.empty(1 + self.p)
        grad[1:] = sums[: self.p]
        g_lam = float(sums[self.p])
        if lam != 0.0:  # 0 at the bound, where the deviance is even in lambda
            g_lam += 2.0 * float((1.0 - inv_m).sum()) / lam
        grad[0] = g_lam
        return state.laplace, grad

    def laplace_beta_hessian(self, theta: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """The Hessian of the Laplace deviance over beta at fixed theta, in closed form
        (one scalar term, a canonical link: :meth:`has_theta_gradient`; rows in memory or in
        chunks, two passes).

        Notes
        -----
        With ``a_i = lambda z_i``, ``M_l = sum_{i in l} a_i^2 w_i + 1`` and ``C_l = sum_{i in
        l} a_i w_i x_i``, the modes move by ``du_l/dbeta = -C_l / M_l``, so the linear
        predictor by ``G_i = x_i - a_i C_l(i) / M_l(i)``. The penalised deviance contributes
        ``2 sum w_i x_i G_i' = 2 R_X'R_X`` (envelope theorem). ``log M_l`` has gradient
        ``A_l / M_l``, ``A_l = sum a_i^2 w'_i G_i``; differentiating again, with the modes'
        second derivative ``d^2u_l/dbeta^2 = -B_l / M_l``, ``B_l = sum a_i w'_i G_i G_i'``
        (the mode equation ``sum a_i q_i + u_l = 0`` twice),

            d^2 log M_l = sum_{i in l} c_i G_i G_i' - A_l A_l' / M_l^2,
            c_i = a_i^2 w''_i / M_l - a_i w'_i (sum_{j in l} a_j^3 w'_j) / M_l^2,

        ``w'``, ``w''`` the derivatives of the working weights in ``eta``. Exact where
        forward differences of the gradient carry ``O(h)`` truncation, and no evaluation:
        the Newton stage's Hessians then cost only their theta column.
        """
        theta = np.asarray(theta, dtype=np.float64)
        state = self.pirls(theta, beta)
        rows, family, p = self.rows, self.family, self.p
        lam = float(theta[0])
        M = lam * lam * state.term1_weights + 1.0
        nlevels = M.shape[0]
        inv_m = 1.0 / M
        coefficients = state.coefficients
        first = rows.scalar_hessian_level_sums(family, coefficients, lam)
        # (levels, p) in C order, as the products below have always read it.
        C = np.ascontiguousarray(first[: p * nlevels].reshape(p, nlevels).T)
        w3 = first[p * nlevels : (p + 1) * nlevels]
        xwx = first[(p + 1) * nlevels :].reshape(p, p)
        second = rows.scalar_hessian_sums(
            family, coefficients, lam, C * inv_m[:, None], w3 * inv_m * inv_m, inv_m
        )
        GcG = second[: p * p].reshape(p, p)
        A = np.ascontiguousarray(second[p * p :].reshape(p, nlevels).T)
        rxtrx = xwx - (C * inv_m[:, None]).T @ C
        H = 2.0 * rxtrx + GcG - (A * (inv_m * inv_m)[:, None]).T @ A
        return 0.5 * (H + H.T)

    def laplace_hessian_one_scalar(self, theta: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """The Hessian of the Laplace deviance over ``[lambda, beta]`` in closed form (one
        scalar term, a canonical link: :meth:`has_theta_gradient`; rows in memory or in
        chunks, two passes).

        Notes
        -----
        The beta block is :meth:`laplace_beta_hessian`'s (from the same two passes). For
        ``lambda``, with ``a_i =
        lambda z_i``, ``lw_l = sum_{i in l} w_i z_i^2`` and ``M_l = lambda^2 lw_l + 1``:
        the modes move by ``v_l = du_l/dlambda = -t_l / M_l``, ``t_l = sum z q + lambda u_l
        lw_l``, and ``D_l = du_l/dbeta = -lambda (sum w z x) / M_l``, so the linear
        predictor by ``E_i = z_i (u_l + lambda v_l)`` and ``G_i = x_i + a_i D_l``. Their
        second derivatives follow from the mode equation ``lambda sum z q + u_l = 0``
        differentiated twice:

            v'_l = -(2 sum z w E + lambda sum z w' E^2 + 2 lambda lw_l v_l) / M_l,
            dv_l/dbeta = -(sum z w G + lambda sum z w' E G + lambda lw_l D_l) / M_l.

        The penalised deviance's part (envelope theorem: its gradient is ``2 sum q z u_l``
        in lambda, ``2 X'q`` in beta) gives ``2 sum_l (u_l sum z w E + v_l sum z q)`` and
        ``2 X'(w E)``; ``log M_l``, with ``N_l = dM_l/dlambda = 2 lambda lw_l + lambda^2
        sum z^2 w' E`` and ``A_l = dM_l/dbeta = lambda^2 sum z^2 w' G``, gives ``N'_l / M_l
        - N_l^2 / M_l^2`` and ``(dN_l/dbeta) / M_l - N_l A_l / M_l^2`` with

            N'_l = 2 lw_l + 4 lambda sum z^2 w' E + lambda^2 sum z^2 w'' E^2
                   + lambda^2 (2 v_l + lambda v'_l) sum z^3 w',
            dN_l/dbeta = 2 lambda sum z^2 w' G + lambda^2 (sum z^2 w'' E G
                   + (D_l + lambda dv_l/dbeta) sum z^3 w').
        """
        theta = np.asarray(theta, dtype=np.float64)
        state = self.pirls(theta, beta)
        rows, family, p = self.rows, self.family, self.p
        lam = float(theta[0])
        lw = state.term1_weights
        M = lam * lam * lw + 1.0
        L = M.shape[0]
        inv_m = 1.0 / M
        u = state.u
        coefficients = state.coefficients
        first = rows.scalar_theta_level_sums(family, coefficients)
        wzx = np.ascontiguousarray(first[: p * L].reshape(p, L).T)  # (L, p), C order
        zq = first[p * L : (p + 1) * L]
        w3 = first[(p + 1) * L : (p + 2) * L]
        xwx = first[(p + 2) * L :].reshape(p, p)
        d_beta = -lam * wzx * inv_m[:, None]  # (L, p)
        v = -(zq + lam * u * lw) * inv_m
        second = rows.scalar_theta_hessian_sums(
            family, coefficients, lam, d_beta, u + lam * v, inv_m, w3 * inv_m * inv_m
        )
        S1, S2, S3, S4 = second[: 4 * L].reshape(4, L)
        V = second[4 * L : 4 * L + 4 * p * L].reshape(4, p, L)
        V1, V2, V3, V4 = (V[k].T for k in range(4))  # (L, p) each
        xwe = second[4 * L + 4 * p * L : 4 * L + 4 * p * L + p]
        GcG = second[4 * L + 4 * p * L + p :].reshape(p, p)
        v_prime = -(2.0 * S1 + lam * S2 + 2.0 * lam * lw * v) * inv_m
        N = 2.0 * lam * lw + lam * lam * S3
        N_prime = (
            2.0 * lw + 4.0 * lam * S3 + lam * lam * S4 + lam * lam * (2.0 * v + lam * v_prime) * w3
        )
        h_ll = 2.0 * float(u @ S1 + v @ zq) + float(np.sum(N_prime * inv_m - (N * inv_m) ** 2))
        dv_beta = -(V1 + lam * V2 + (lam * lw)[:, None] * d_beta) * inv_m[:, None]
        A = lam * lam * V3
        dN_beta = 2.0 * lam * V3 + lam * lam * (V4 + w3[:, None] * (d_beta + lam * dv_beta))
        h_lb = (
            2.0 * xwe
            + (dN_beta * inv_m[:, None]).sum(axis=0)
            - ((N * inv_m * inv_m)[:, None] * A).sum(axis=0)
        )
        H = np.empty((p + 1, p + 1))
        H[0, 0] = h_ll
        H[0, 1:] = H[1:, 0] = h_lb
        # The beta block as laplace_beta_hessian: 2 R_X'R_X + sum c G G' - sum A A' / M^2
        # (C = lambda sum w z x = -M d_beta).
        rxtrx = xwx - (lam * lam) * (wzx * inv_m[:, None]).T @ wzx
        H_beta = 2.0 * rxtrx + GcG - (A * (inv_m * inv_m)[:, None]).T @ A
        H[1:, 1:] = 0.5 * (H_beta + H_beta.T)
        return H

    def _laplace_gradient(
        self, theta: np.ndarray, beta: np.ndarray
    ) -> tuple[PirlsState, GradientPieces, np.ndarray]:
        """:meth:`laplace_gradient`'s state, gradient pieces and gradient."""
        theta = np.asarray(theta, dtype=np.float64)
        state = self.pirls(theta, beta)
        templates = self.structure.templates(theta)
        if state.scalar_blocks is not None:
            pieces = GradientPieces.from_scalar_terms(templates, *state.scalar_blocks)
        else:
            pieces = GradientPieces(self.terms, templates, state.blocks)
        coefficients, family, rows = state.coefficients, self.family, self.rows
        first = rows.beta_gradient_sums(family, coefficients, pieces)
        p = self.p
        y = pieces.solve(first[p:])
        grad_beta = first[:p] - rows.beta_gradient_correction(family, coefficients, pieces, y)
        grad_theta = rows.theta_gradient_sums(family, coefficients, pieces, state.u, y)
        grad_theta += pieces.theta_direct(theta, [t.nranef for t in self.terms])
        return state, pieces, np.concatenate([grad_theta, grad_beta])

    def has_fast_gradient(self) -> bool:
        """Whether :meth:`fast_gradient` applies: :meth:`has_theta_gradient` with the rows
        in memory and a PIRLS fast path (which gives ``R_X'R_X``), or one scalar term (rows
        in memory or in chunks: :meth:`_fast_gradient_one_scalar`)."""
        return (
            (isinstance(self.rows, MemoryRows) or self._one_term_scalar)
            and (self._one_term_scalar or self._scalar_terms is not None)
            and self.has_theta_gradient()
        )

    def fast_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The nAGQ = 0 criterion (:meth:`fast`) and its gradient over theta.

        Notes
        -----
        ``D_0(theta) = D(theta, beta~(theta))`` with ``(u~, beta~)`` the joint modes of
        the penalised deviance, so ``dD_0/dtheta_k = dD/dtheta_k + (dD/dbeta)'
        dbeta~/dtheta_k`` (:meth:`laplace_gradient` at ``beta~`` gives both partial
        derivatives). The joint modes solve ``[Lambda Z'q + u; X'q] = 0``; its Jacobian
        over ``(u, beta)`` is the PIRLS system with ``X``, ``[[M, K], [K', X'WX]]``,
        ``K = Lambda Z'WX``, and its derivative over ``lambda_k`` is ``[t_k; X'W e_k]``
        with ``e_k = Z_k u_k`` and ``t_k = E_k Z'q + Lambda Z'W e_k``. Eliminating ``u``
        (implicit function theorem),

            dbeta~/dtheta_k = -(R_X'R_X)^{-1} (X'W e_k - K' M^{-1} t_k),

        ``R_X'R_X = X'WX - K'M^{-1}K`` (PIRLS' own, from its last iteration).
        """
        theta = np.asarray(theta, dtype=np.float64)
        joint = self.pirls(theta, None)
        rxtrx = joint.rxtrx
        if self._one_term_scalar and rxtrx is not None:
            return joint.laplace, self._fast_gradient_one_scalar(theta, joint)
        if rxtrx is None:
            raise ValueError("fast_gradient needs a PIRLS fast path (has_fast_gradient)")
        beta = joint.beta
        value = joint.laplace
        # The joint modes are the modes at their beta held fixed (the same equations): the
        # partial derivatives read this state instead of a second PIRLS run (grouseticks
        # nAGQ = 0: 44 -> 23 runs a fit).
        self.keep_state_at(theta, beta, joint)
        state, pieces, grad = self._laplace_gradient(theta, beta)
        nt = self.ntheta
        grad_theta, grad_beta = grad[:nt], grad[nt:]
        rows = self.rows
        assert isinstance(rows, MemoryRows)
        eta, mu = state.eta, state.mu
        _, w = _working_weights(self.family)(eta, mu, rows.weights)
        q = -rows.weights * (rows.y - mu)  # (d dev / d eta) / 2, canonical links
        u = state.u
        lams = [float(v) for v in theta]
        sizes = [t.nranef for t in self.terms]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        term_rows = rows._term_rows
        X = rows.X
        dbeta = np.empty((self.p, nt))
        for k in range(nt):
            refs_k, z_k, _ = term_rows[k]
            e = u[starts[k] : starts[k + 1]].take(refs_k)
            if z_k is not None:
                e = e * z_k
            we = w * e
            t = np.empty(self.q)
            for m, (refs_m, z_m, _) in enumerate(term_rows):
                wz = we if z_m is None else we * z_m
                t[starts[m] : starts[m + 1]] = lams[m] * np.bincount(
                    refs_m, weights=wz, minlength=sizes[m]
                )
            qz = q if z_k is None else q * z_k
            t[starts[k] : starts[k + 1]] += np.bincount(refs_k, weights=qz, minlength=sizes[k])
            v = pieces.solve(t)
            zv = np.zeros(self.n)
            for m, (refs_m, z_m, _) in enumerate(term_rows):
                part = (lams[m] * v[starts[m] : starts[m + 1]]).take(refs_m)
                zv += part if z_m is None else part * z_m
            dbeta[:, k] = -_solve_spd(rxtrx, X.T @ (we - w * zv))
        return value, grad_theta + grad_beta @ dbeta

    def _fast_gradient_one_scalar(self, theta: np.ndarray, joint: PirlsState) -> np.ndarray:
        """:meth:`fast_gradient` for one scalar term, from the joint modes' own state (no
        second PIRLS run at fixed beta: its modes are these); rows in memory or in chunks
        (two passes).

        Notes
        -----
        ``M`` is diagonal, ``M_l = lambda^2 sum_{i in l} w_i z_i^2 + 1``; with ``a_i =
        lambda z_i``, ``s_i = a_i^2 w'_i / M_l(i)``, ``y_l = (sum_{i in l} s_i a_i) / M_l``
        (pass 1: ``lambda^3 sum z^3 w' / M_l^2``) and ``r_i = s_i - w_i a_i y_l(i)``, the
        partial derivatives of :meth:`_laplace_gradient_one_scalar` are

            dD/dbeta   = X'(2 q + r),
            dD/dlambda = q'(z (2 u - y)[l]) + (z u[l])'r + 2 sum_l (1 - 1/M_l) / lambda.

        The joint modes move by (implicit function theorem on ``[Lambda Z'q + u; X'q] =
        0``, as :meth:`fast_gradient`) ``dbeta~/dlambda = -(R_X'R_X)^{-1} (X'W e - C (t /
        M))`` with ``e_i = z_i u_l(i)``, ``t_l = sum_{i in l} z_i (q_i + lambda w_i e_i)``
        and ``C = Lambda'Z'WX`` transposed (``(p, levels)``); then ``dD_0/dlambda =
        dD/dlambda + (dD/dbeta)' dbeta~/dlambda``.
        """
        rows, family, p = self.rows, self.family, self.p
        lam = float(theta[0])
        M = lam * lam * joint.term1_weights + 1.0
        inv_m = 1.0 / M
        C = joint.level_x
        if C is None:  # the blocked system's (chunks): X'WZ at the modes
            C = lam * joint.blocks.xytz1[:p, :, 0]
        coefficients = joint.coefficients
        w3 = rows.scalar_slope_level_sums(family, coefficients)
        y_modes = (lam * lam * lam) * w3 * (inv_m * inv_m)
        sums = rows.scalar_slope_sums(family, coefficients, lam, joint.u, y_modes, inv_m)
        nlevels = M.shape[0]
        grad_beta = sums[:p]
        g_lam = float(sums[p])
        if lam != 0.0:  # 0 at the bound, where the deviance is even in lambda
            g_lam += 2.0 * float((1.0 - inv_m).sum()) / lam
        t = sums[p + 1 : p + 1 + nlevels]
        dbeta = _solve_spd(joint.rxtrx, C @ (t * inv_m) - sums[p + 1 + nlevels :])
        return np.array([g_lam + float(grad_beta @ dbeta)])

    def has_agq_gradient(self) -> bool:
        """Whether :meth:`agq_gradient` applies: adaptive Gauss-Hermite quadrature (one
        scalar term) and a canonical link."""
        family = self.family
        canonical = (getattr(family, "name", ""), family.link.name) in _CANONICAL_W_PRIME
        return self.nagq > 1 and canonical

    def agq_gradient(self, theta: np.ndarray, beta: np.ndarray) -> tuple[float, np.ndarray]:
        """The AGQ deviance at ``(theta, beta)`` (:meth:`quadrature`) and its gradient over
        ``[theta, beta]``, one scalar term and a canonical link.

        Notes
        -----
        Level ``l``'s term is ``T_l = log M_l - 2 log sum_k omega_k exp(-F_lk / 2)`` with
        ``F_lk = sum_{i in l} d_i(eta_ik) + v_lk^2 - x_k^2``, nodes ``v_lk = u_l + x_k
        s_l``, ``s_l = M_l^{-1/2}``, ``eta_ik = o_i + x_i'beta + lambda z_i v_lk``. With
        ``pi_lk`` the normalised weights ``omega_k exp(-F_lk/2)``,

            dT_l/dp = (dM_l/dp) / M_l + sum_k pi_lk dF_lk/dp,
            dF_lk/dp = sum_i d'_ik d eta_ik/dp + 2 v_lk dv_lk/dp,
            dv_lk/dp = du_l/dp + x_k ds_l/dp,   ds_l/dp = -(1/2) M_l^{-3/2} dM_l/dp.

        The mode moves by ``du_l/dp = -(d g_l/dp) / M_l`` (``g_l = lambda sum z_i q_i + u_l
        = 0``, ``q = d'/2``; ``M_l`` is its derivative in ``u_l`` for a canonical link), and
        ``M_l = lambda^2 sum w_i z_i^2 + 1`` moves with the weights at the mode:
        ``dM_l/dp = lambda^2 sum z_i^2 w'_i d eta_i/dp`` plus ``2 lambda sum w_i z_i^2`` for
        ``p = lambda``. Pinheiro & Bates (1995) for the rule; lme4 evaluates it with
        deviance residuals, as here.
        """
        theta = np.asarray(theta, dtype=np.float64)
        beta = np.asarray(beta, dtype=np.float64)
        rows, family = self.rows, self.family
        state = self.pirls(theta, beta)
        lam = float(theta[0])
        L, p = self.q, self.p
        # Pass 1, at the modes: per level sum w z^2, sum w' z^3, sum z q, sum z w x', sum
        # z^2 w' x'.
        sums = rows.agq_level_sums(family, state.coefficients, L)
        W2, W3p, Zq = sums[0], sums[1], sums[2]
        B1, B2 = sums[3 : 3 + p].T, sums[3 + p :].T
        u = state.u
        M = lam * lam * W2 + 1.0
        s = 1.0 / np.sqrt(M)
        du_lam = -(Zq + lam * u * W2) / M
        dM_lam = 2.0 * lam * W2 + lam * lam * (u + lam * du_lam) * W3p
        ds_lam = -0.5 * s / M * dM_lam
        du_beta = -lam * B1 / M[:, None]
        dM_beta = lam * lam * (B2 + lam * W3p[:, None] * du_beta)
        ds_beta = -0.5 * (s / M)[:, None] * dM_beta
        nodes = self._nodes
        v = u[:, None] + s[:, None] * nodes[None, :]  # (L, K)
        # Pass 2, at the nodes: per level and node sum d_i and sum z_i d'_i.
        dev_lk, dz_lk = rows.agq_node_sums(family, beta, lam * v)
        F = dev_lk + v * v - (nodes * nodes)[None, :]
        terms = -0.5 * F + self._log_node_weights[None, :]
        top = terms.max(axis=1)
        weights_lk = np.exp(terms - top[:, None])
        total = weights_lk.sum(axis=1)
        value = float(np.sum(np.log(M) - 2.0 * (top + np.log(total))))
        pi = weights_lk / total[:, None]
        c = lam * dz_lk + 2.0 * v  # dF_lk / dv_lk
        pc = np.sum(pi * c, axis=1)
        pcx = (pi * c) @ nodes
        # Pass 3: X' a, a_i = sum_k pi_{l(i)k} d'_ik.
        grad_beta = rows.agq_x_sums(family, beta, lam * v, pi)
        grad_beta += (dM_beta / M[:, None]).sum(axis=0) + pc @ du_beta + pcx @ ds_beta
        grad_lam = float(np.sum(dM_lam / M))
        grad_lam += float(np.sum(pi * v * dz_lk)) + float(pc @ du_lam + pcx @ ds_lam)
        return value, np.concatenate([[grad_lam], grad_beta])

    # -- criteria -------------------------------------------------------------------------
    def fast(self, theta: np.ndarray) -> float:
        """nAGQ = 0: the Laplace deviance at theta with beta and u from PIRLS."""
        self.evaluations += 1
        try:
            return self.pirls(theta, None).laplace
        except (ConvergenceError, np.linalg.LinAlgError, FloatingPointError):
            return np.inf

    def __call__(self, params: np.ndarray) -> float:
        """The Laplace (nagq = 1) or AGQ deviance at ``params = [theta, beta]``."""
        self.evaluations += 1
        params = np.asarray(params, dtype=np.float64)
        theta, beta = params[: self.ntheta], params[self.ntheta :]
        try:
            state = self.pirls(theta, beta)
        except (ConvergenceError, np.linalg.LinAlgError, FloatingPointError):
            return np.inf
        if self.nagq <= 1:
            return state.laplace
        return self.quadrature(theta, state)

    def state(self, params: np.ndarray) -> PirlsState:
        """PIRLS at ``params = [theta, beta]`` (the modes at the optimum, for results)."""
        params = np.asarray(params, dtype=np.float64)
        return self.pirls(params[: self.ntheta], params[self.ntheta :])

    def quadrature(self, theta: np.ndarray, state: PirlsState) -> float:
        """The AGQ deviance (lme4's: from deviance residuals) around the modes of ``state``.

        Notes
        -----
        Group ``l``'s conditional precision of its mode is ``M_l = lambda^2 sum_{i in l}
        w_i z_i^2 + 1``, read from the blocks at the modes (``Z1'WZ1``); one more pass gives
        each group's deviance at the ``k`` shifted modes ``u_l + x_k / sqrt(M_l)``.
        """
        lam = float(theta[0])
        M = lam * lam * state.term1_weights + 1.0
        sd = 1.0 / np.sqrt(M)
        nodes = self._nodes
        shifted = state.u[None, :] + nodes[:, None] * sd[None, :]  # (k, levels)
        dev = self.rows.level_deviances(self.family, state.coefficients, lam * shifted)
        terms = (dev + (shifted * shifted).T - (nodes * nodes)[None, :]) * -0.5
        terms += self._log_node_weights[None, :]
        top = terms.max(axis=1)
        log_sum = top + np.log(np.exp(terms - top[:, None]).sum(axis=1))
        return float(np.sum(np.log(M) - 2.0 * log_sum))

    def _minus_twice_loglik(self, coefficients: Coefficients, deviance: float) -> float:
        """``sum -2 log p(y | mu)``: the deviance residuals plus the saturated constant
        (no log-density per evaluation), except where R's binomial log-likelihood rounds
        ``m y`` (non-integer prior weights), which makes the difference depend on mu."""
        if self._rounded_binomial is None:
            self._rounded_binomial = (
                getattr(self.family, "name", "") == "binomial"
                and not self.rows.integral_binomial_weights()
            )
        if self._rounded_binomial:
            return self.rows.minus_twice_loglik(self.family, coefficients)
        return deviance + self.saturated()

    def saturated(self, mu: np.ndarray | None = None) -> float:
        """``sum (-2 log p(y | mu) - d(y, mu))``: -2 times the saturated log-likelihood.

        It does not depend on ``mu`` (only on y, the weights and the family), so it is
        computed once per family, at the family's starting means, where both terms are
        moderate (no cancellation). It is the constant by which lme4's AGQ deviance
        (deviance residuals) differs from -2 log L. ``mu`` is accepted for callers that
        have one at hand and ignored.
        """
        family = self.family
        cached = self._saturated
        if cached is not None and cached[0] is family:
            return cached[1]
        value = self.rows.saturated(family)
        self._saturated = (family, value)
        return value

    def final_one_scalar(
        self, theta: np.ndarray, state: PirlsState
    ) -> tuple[np.ndarray, np.ndarray]:
        """What :meth:`final_system` gives a fit with one scalar term in memory, from
        PIRLS' per-level blocks: ``(R_X'R_X)^{-1}`` (``Var(beta)`` at fixed theta, unit
        scale) and the conditional variances of ``b``, ``(levels, 1, 1)``.

        Notes
        -----
        ``M_l = lambda^2 sum_{i in l} w_i z_i^2 + 1`` is diagonal, so with ``C`` the
        ``(p, levels)`` sums ``lambda sum_{i in l} w_i z_i x_i``, ``R_X'R_X = X'WX - C
        M^{-1} C'`` (the Schur complement the blocked factor forms) and ``Var(b_l | y) =
        lambda^2 / M_l`` (lme4's ``condVar``, beta held fixed). The same matrices as the
        blocked system's, to rounding, without building and factoring it.
        """
        rows = self.rows
        assert isinstance(rows, MemoryRows) and state.scalar_blocks is not None
        lam = float(theta[0])
        M = state.scalar_blocks[0]
        nlevels, p = M.shape[0], self.p
        sums = rows.scalar_level_x_sums(self.family, state.coefficients, (state.eta, state.mu))
        C = lam * sums[: p * nlevels].reshape(p, nlevels)
        rxtrx = sums[p * nlevels :].reshape(p, p) - (C / M) @ C.T
        vcov = np.linalg.inv(rxtrx)
        return 0.5 * (vcov + vcov.T), ((lam * lam) / M)[:, None, None]

    def final_system(
        self, theta: np.ndarray, state: PirlsState
    ) -> tuple[BlockedSystem, BlockedFactor, Estimates]:
        """The weighted system with ``X`` at the modes: ``Var(beta)`` at fixed theta (lme4's
        ``vcov(use.hessian = FALSE)``) and the conditional variances of the modes."""
        theta = np.asarray(theta, dtype=np.float64)
        # The blocks in the layout every reader of a system expects (sparse Zr'Z1).
        A = self.rows.cross_products(self.family, state.coefficients)
        system = BlockedSystem(self.structure, A)
        factor = system.factor(theta)
        return system, factor, estimate(system, factor, reml=False)
