"""The response distributions of GLMMs: binomial, Poisson and negative binomial (NB2).

A family holds a link (:mod:`.links`) and gives what PIRLS and the Laplace criterion need
per row: the variance function, the deviance residuals, ``-2 log p(y | mu)`` and lme4's
start values. Every formula follows R's family objects (``stats::binomial``,
``stats::poisson``, ``MASS::negative.binomial``), which is what ``lme4::glmer`` and
``glmer.nb`` evaluate (lme4's ``glmFamily.cpp`` re-implements the same formulas in C++).

Conventions shared by every method, as in R:

* ``weights`` are the weights the family sees: the prior weights, times the number of
  trials for a binomial ``cbind(successes, failures)`` response (R's binomial
  ``initialize`` does ``weights <- weights * n``). ``None`` means all ones.
* a binomial ``y`` is the proportion of successes (0/1 for binary data) and ``trials``
  the number of trials per row (``None``: a 0/1 response, or proportions whose weights
  are the numbers of trials, R's ``glm(y ~ x, weights = n)`` idiom).
* per-row values are returned as float64 arrays of the rows' shape; the sums are floats.

References
----------
McCullagh, P. & Nelder, J. A. (1989). *Generalized Linear Models*, 2nd ed., ch. 2 and 6.
Venables, W. N. & Ripley, B. D. (2002). *Modern Applied Statistics with S*, 4th ed.,
sec. 7.4 (the negative binomial with known theta, ``MASS::negative.binomial``).
Bates, D., Maechler, M., Bolker, B. & Walker, S. (2015). Fitting linear mixed-effects
models using lme4. *J. Stat. Softw.* 67(1).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from mixedmodels.errors import DataError, FamilyError, ResponseWarning

from .links import EPS, Link, make_link

__all__ = [
    "FAMILIES",
    "Binomial",
    "Family",
    "NegativeBinomial",
    "Poisson",
    "binomial",
    "make_family",
    "negative_binomial",
    "poisson",
]

#: R's tolerance for "not an integer" (``R_nonint`` in dpq.h): |x - round(x)| > 1e-7 max(1, |x|).
_NONINT_TOL = 1e-7


def _as_float(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _weights(weights: ArrayLike | None, like: np.ndarray) -> np.ndarray:
    if weights is None:
        return np.ones_like(like)
    return np.broadcast_to(_as_float(weights), like.shape)


def _quiet() -> np.errstate:
    """Silence NumPy's floating-point warnings: the values (inf, nan) say what happened."""
    return np.errstate(divide="ignore", invalid="ignore", over="ignore")


def _y_log_y_over_mu(y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """``y log(y / mu)``, taken as 0 where ``y == 0`` (R's ``y_log_y`` in family.c)."""
    return special.xlogy(y, y / mu)


def _non_integer(x: np.ndarray) -> np.ndarray:
    return np.abs(x - np.rint(x)) > _NONINT_TOL * np.maximum(1.0, np.abs(x))


def _first_values(x: np.ndarray, mask: np.ndarray, k: int = 3) -> str:
    return ", ".join(f"{v:.6g}" for v in x[mask][:k])


@dataclass(frozen=True, repr=False)
class Family:
    """A response distribution with its link: immutable, equal when link and theta are equal.

    Attributes
    ----------
    name
        The family's name as the command line spells it: ``"binomial"``, ``"poisson"``
        or ``"negative-binomial"``.
    link
        The :class:`~mixedmodels.family.links.Link`.
    theta
        The negative binomial's dispersion parameter (``var = mu + mu^2 / theta``; R's
        ``theta``, glmmTMB's ``sigma``), or None: always None for the other families,
        and for a negative binomial whose theta is still to be estimated.
    """

    link: Link
    theta: float | None = None

    name: ClassVar[str] = ""
    #: R's name of the canonical link, or None if no allowed link is canonical.
    canonical_link: ClassVar[str | None] = None
    #: Names of the links this family accepts; the first is the default.
    allowed_links: ClassVar[tuple[str, ...]] = ()
    #: Whether the family has a dispersion parameter theta.
    has_theta: ClassVar[bool] = False

    def __post_init__(self) -> None:
        link = make_link(self.link)
        if link.name not in self.allowed_links:
            raise FamilyError(
                f"link '{link.name}' is not available for the {self.name} family; "
                f"allowed: {', '.join(self.allowed_links)}"
            )
        object.__setattr__(self, "link", link)
        if self.theta is not None:
            if not self.has_theta:
                raise FamilyError(
                    f"theta applies only to the negative binomial family, not to {self.name}"
                )
            object.__setattr__(self, "theta", _check_theta(self.theta))

    @property
    def canonical(self) -> bool:
        """Whether the link is the family's canonical link (then the observed and the
        expected information agree, and PIRLS's weights are exact Newton weights)."""
        return self.canonical_link is not None and self.link.name == self.canonical_link

    @property
    def r_name(self) -> str:
        """The family as lme4's summary prints it: ``binomial``, ``Negative Binomial(3.2)``."""
        return self.name

    def __repr__(self) -> str:
        return f"{self.name.replace('-', '_')}(link={self.link.name!r})"

    # -- per-row functions ------------------------------------------------------------------
    def variance(self, mu: ArrayLike) -> np.ndarray:
        """Return the variance function ``V(mu)``: ``Var(y_i) = phi V(mu_i) / w_i``."""
        raise NotImplementedError

    def deviance_function(
        self, y: ArrayLike, weights: ArrayLike | None
    ) -> Callable[[np.ndarray], float]:
        """The deviance ``sum_i d_i(y_i, mu_i)`` of fixed data as a function of ``mu``.

        PIRLS evaluates it at every step for the same ``y``: what depends on ``y`` alone
        is computed here once, and each call costs a log or two per row. Equal to the sum
        of :meth:`deviance_residuals` up to rounding (~1e-15 of the sum of its terms).
        """
        yv = _as_float(y)
        w = _weights(weights, yv)
        return lambda mu: float(np.sum(self.deviance_residuals(yv, mu, w)))

    def deviance_residuals(
        self, y: ArrayLike, mu: ArrayLike, weights: ArrayLike | None
    ) -> np.ndarray:
        """Return each row's squared deviance residual times its weight (R's ``dev.resids``).

        The unit deviance is ``d_i = 2 w_i (log p(y_i | mu = y_i) - log p(y_i | mu_i))``:
        twice the log-likelihood ratio of the saturated model, never negative (values that
        round below zero are set to 0). ``y log(y / mu)`` is 0 at ``y = 0``. Its sum is
        lme4's ``deviance()`` of a GLMM.
        """
        raise NotImplementedError

    def unit_minus_twice_loglik(
        self,
        y: ArrayLike,
        mu: ArrayLike,
        weights: ArrayLike | None,
        trials: ArrayLike | None,
    ) -> np.ndarray:
        """Return ``-2 log p(y_i | mu_i)`` per row, as R's ``family$aic`` sums it."""
        raise NotImplementedError

    def minus_twice_loglik(
        self,
        y: ArrayLike,
        mu: ArrayLike,
        weights: ArrayLike | None,
        trials: ArrayLike | None,
    ) -> float:
        """Return ``-2 log p(y | mu) = sum_i -2 log p(y_i | mu_i)``.

        This is R's ``family$aic(y, n, mu, wt, dev)`` for the binomial and the Poisson
        (whose ``aic`` adds no parameter count) and ``MASS::negative.binomial(theta)$aic``;
        lme4's Laplace deviance adds it to ``log|L|^2 + |u|^2``.
        """
        return float(np.sum(self.unit_minus_twice_loglik(y, mu, weights, trials)))

    def initial_mu(
        self, y: ArrayLike, weights: ArrayLike | None, trials: ArrayLike | None
    ) -> np.ndarray:
        """Return R's start values ``mustart`` (the family's ``initialize`` expression)."""
        raise NotImplementedError

    def random(self, rng: np.random.Generator, mu: ArrayLike, weights: ArrayLike) -> np.ndarray:
        """One response per row drawn at means ``mu`` (R's ``family$simulate``), on the
        scale the family fits (a binomial proportion out of the prior weights)."""
        raise NotImplementedError

    def valid_mu(self, mu: ArrayLike) -> bool:
        """Whether every mean is in the family's range (R's ``validmu``)."""
        m = _as_float(mu)
        return bool(np.all(np.isfinite(m)) and np.all(m > 0))

    def with_theta(self, theta: float) -> Family:
        """Return the negative binomial with dispersion ``theta``; other families refuse."""
        raise FamilyError(
            f"the {self.name} family has no theta; only the negative binomial has one"
        )

    def check_response(self, y: ArrayLike, trials: ArrayLike | None) -> None:
        """Refuse a response the family cannot model, in one line naming the fix.

        Raises
        ------
        DataError
            For non-finite values, or values outside the family's support.

        Warns
        -----
        ResponseWarning
            For non-integer counts, where R warns too.
        """
        values = _as_float(y)
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataError(
                f"the {self.name} response has {int(bad.sum())} non-finite value(s); "
                "drop those rows or fix the data"
            )


@dataclass(frozen=True, repr=False)
class Binomial(Family):
    """The binomial family: ``m_i y_i ~ Binomial(m_i, mu_i)``, ``y_i`` a proportion.

    Notes
    -----
    ``V(mu) = mu (1 - mu)``, bounded below by ``eps`` as lme4's C++ does (R's is not);
    deviance residual ``2 w (y log(y/mu) + (1 - y) log((1 - y)/(1 - mu)))``.

    ``-2 log p`` follows R's ``binomial()$aic``: ``m_i`` is the number of trials if any
    row has more than one, else the weight ``w_i`` (so proportions with weights = numbers
    of trials are binomial counts too); the row's term is
    ``-2 (w_i / m_i) log dbinom(round(m_i y_i), round(m_i), mu_i)``, and 0 where
    ``m_i = 0``.

    Start values (R's ``initialize``): ``mu = (n_i y_i + 1/2) / (n_i + 1)`` with ``n_i``
    the trials of a ``cbind`` response, or the weights when ``trials`` is None.

    Examples
    --------
    >>> fam = binomial()
    >>> fam.canonical, fam.variance([0.5]).tolist()
    (True, [0.25])
    """

    name: ClassVar[str] = "binomial"
    canonical_link: ClassVar[str | None] = "logit"
    allowed_links: ClassVar[tuple[str, ...]] = ("logit", "probit", "cloglog", "cauchit", "log")

    def variance(self, mu: ArrayLike) -> np.ndarray:
        m = _as_float(mu)
        return np.maximum(m * (1.0 - m), EPS)

    def deviance_function(
        self, y: ArrayLike, weights: ArrayLike | None
    ) -> Callable[[np.ndarray], float]:
        # d = 2 w [y log y + (1-y) log(1-y)] - 2 w [y log mu + (1-y) log(1-mu)]: the first
        # part once; mu is clamped inside (0, 1), so the logs are finite.
        yv = _as_float(y)
        w = _weights(weights, yv)
        wy, wn = w * yv, w * (1.0 - yv)
        saturated = 2.0 * float(
            np.sum(w * (special.xlogy(yv, yv) + special.xlogy(1.0 - yv, 1.0 - yv)))
        )

        def deviance(mu: np.ndarray) -> float:
            return saturated - 2.0 * float(wy @ np.log(mu) + wn @ np.log1p(-mu))

        return deviance

    def deviance_residuals(
        self, y: ArrayLike, mu: ArrayLike, weights: ArrayLike | None
    ) -> np.ndarray:
        yv, m = _as_float(y), _as_float(mu)
        w = _weights(weights, yv)
        with _quiet():
            unit = _y_log_y_over_mu(yv, m) + _y_log_y_over_mu(1.0 - yv, 1.0 - m)
            return np.maximum(2.0 * w * unit, 0.0)

    def unit_minus_twice_loglik(
        self,
        y: ArrayLike,
        mu: ArrayLike,
        weights: ArrayLike | None,
        trials: ArrayLike | None,
    ) -> np.ndarray:
        yv, p = _as_float(y), _as_float(mu)
        w = _weights(weights, yv)
        n = _weights(trials, yv)
        m = n if bool(np.any(n > 1)) else w
        successes = np.rint(m * yv)
        size = np.rint(m)
        with _quiet():
            logp = _binomial_logpmf(successes, size, p)
            share = np.where(m > 0, w / m, 0.0)
            return np.where(share > 0, -2.0 * share * logp, 0.0)

    def random(self, rng: np.random.Generator, mu: ArrayLike, weights: ArrayLike) -> np.ndarray:
        # R's binomial()$simulate: successes out of the prior weights (the trials of a
        # cbind response, or of a proportion given weights = trials), as proportions.
        w = _as_float(weights)
        m = np.rint(w)
        if np.any(np.abs(w - m) > 1e-8 * np.maximum(1.0, w)):
            raise FamilyError(
                "cannot simulate binomial responses with non-integer prior weights (as R); "
                "give the numbers of trials as weights, or use cbind(successes, failures)"
            )
        trials = m.astype(np.int64)
        return rng.binomial(trials, _as_float(mu)) / np.maximum(trials, 1)

    def initial_mu(
        self, y: ArrayLike, weights: ArrayLike | None, trials: ArrayLike | None
    ) -> np.ndarray:
        yv = _as_float(y)
        n = _weights(trials if trials is not None else weights, yv)
        return (n * yv + 0.5) / (n + 1.0)

    def valid_mu(self, mu: ArrayLike) -> bool:
        m = _as_float(mu)
        return bool(np.all(np.isfinite(m)) and np.all((m > 0) & (m < 1)))

    def check_response(self, y: ArrayLike, trials: ArrayLike | None) -> None:
        super().check_response(y, trials)
        values = _as_float(y)
        outside = (values < 0) | (values > 1)
        if outside.any():
            raise DataError(
                f"the binomial response has {int(outside.sum())} value(s) outside [0, 1] "
                f"(e.g. {_first_values(values, outside)}); give 0/1 values, proportions "
                "with weights = numbers of trials, or cbind(successes, failures)"
            )
        if trials is not None:
            successes = values * _as_float(trials)
            # R's binomial initialize: "non-integer counts in a binomial glm!" (tolerance 1e-3)
            odd = np.abs(successes - np.rint(successes)) > 1e-3
            if odd.any():
                warnings.warn(
                    f"the binomial response has {int(odd.sum())} non-integer number(s) of "
                    f"successes (e.g. {_first_values(successes, odd)}); the log-likelihood "
                    "rounds them, as R does",
                    ResponseWarning,
                    stacklevel=2,
                )


def _binomial_logpmf(k: np.ndarray, size: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``log dbinom(k, size, p)``: log C(size, k) + k log p + (size - k) log(1 - p).

    ``-inf`` where ``k`` is outside ``0..size``; ``xlogy``/``xlog1py`` make ``0 log 0 = 0``
    (so ``p`` of 0 or 1 is fine where it is the only possible outcome).
    """
    inside = (k >= 0) & (k <= size)
    ks = np.where(inside, k, 0.0)
    sizes = np.where(inside, size, 0.0)
    log_choose = (
        special.gammaln(sizes + 1.0) - special.gammaln(ks + 1.0) - special.gammaln(sizes - ks + 1.0)
    )
    value = log_choose + special.xlogy(ks, p) + special.xlog1py(sizes - ks, -p)
    return np.where(inside, value, -np.inf)


@dataclass(frozen=True, repr=False)
class Poisson(Family):
    """The Poisson family: ``y_i ~ Poisson(mu_i)``.

    Notes
    -----
    ``V(mu) = mu``; deviance residual ``2 w (y log(y/mu) - (y - mu))`` (``2 w mu`` at
    ``y = 0``); ``-2 log p = -2 w (y log mu - mu - log y!)`` (R's ``poisson()$aic``, with
    ``log y! = lgamma(y + 1)``). Start values ``mu = y + 0.1``.

    For non-integer ``y`` R's ``dpois`` gives ``-inf`` (lme4 then reports
    ``logLik = -Inf``); here ``lgamma(y + 1)`` extends ``log y!`` continuously, and
    :meth:`check_response` warns.
    """

    name: ClassVar[str] = "poisson"
    canonical_link: ClassVar[str | None] = "log"
    allowed_links: ClassVar[tuple[str, ...]] = ("log", "identity", "sqrt")

    def variance(self, mu: ArrayLike) -> np.ndarray:
        return _as_float(mu).copy()

    def deviance_function(
        self, y: ArrayLike, weights: ArrayLike | None
    ) -> Callable[[np.ndarray], float]:
        # d = 2 w [y log y - y] - 2 w y log mu + 2 w mu
        yv = _as_float(y)
        w = _weights(weights, yv)
        wy = w * yv
        constant = 2.0 * float(np.sum(w * special.xlogy(yv, yv) - wy))

        def deviance(mu: np.ndarray) -> float:
            return constant - 2.0 * float(wy @ np.log(mu)) + 2.0 * float(w @ mu)

        return deviance

    def deviance_residuals(
        self, y: ArrayLike, mu: ArrayLike, weights: ArrayLike | None
    ) -> np.ndarray:
        yv, m = _as_float(y), _as_float(mu)
        w = _weights(weights, yv)
        with _quiet():
            return np.maximum(2.0 * w * (_y_log_y_over_mu(yv, m) - (yv - m)), 0.0)

    def unit_minus_twice_loglik(
        self,
        y: ArrayLike,
        mu: ArrayLike,
        weights: ArrayLike | None,
        trials: ArrayLike | None,
    ) -> np.ndarray:
        yv, m = _as_float(y), _as_float(mu)
        w = _weights(weights, yv)
        with _quiet():
            logp = special.xlogy(yv, m) - m - special.gammaln(yv + 1.0)
            return np.where(w != 0, -2.0 * w * logp, 0.0)

    def random(self, rng: np.random.Generator, mu: ArrayLike, weights: ArrayLike) -> np.ndarray:
        return rng.poisson(_as_float(mu)).astype(np.float64)

    def initial_mu(
        self, y: ArrayLike, weights: ArrayLike | None, trials: ArrayLike | None
    ) -> np.ndarray:
        return _as_float(y) + 0.1

    def check_response(self, y: ArrayLike, trials: ArrayLike | None) -> None:
        _check_counts(self, y)


def _check_counts(family: Family, y: ArrayLike) -> None:
    Family.check_response(family, y, None)
    values = _as_float(y)
    negative = values < 0
    if negative.any():
        raise DataError(
            f"the {family.name} response has {int(negative.sum())} negative value(s) "
            f"(e.g. {_first_values(values, negative)}); counts must be 0 or more — "
            "check the column, or use an LMM (mm.lmer) for a response that can be negative"
        )
    odd = _non_integer(values)
    if odd.any():
        warnings.warn(
            f"the {family.name} response has {int(odd.sum())} non-integer value(s) (e.g. "
            f"{_first_values(values, odd)}); R's glmer reports logLik = -Inf for such data, "
            "here log(y!) is extended by lgamma(y + 1) — round the counts if they are counts",
            ResponseWarning,
            stacklevel=3,
        )


@dataclass(frozen=True, repr=False)
class NegativeBinomial(Family):
    """The negative binomial family NB2: ``Var(y_i) = mu_i + mu_i^2 / theta``.

    ``theta`` is the dispersion parameter (``MASS::negative.binomial(theta)``; lme4's
    ``glmer.nb`` estimates it); the Poisson is the limit ``theta -> inf``. None of its
    links is canonical for PIRLS (the canonical link ``log(mu / (mu + theta))`` is not
    offered, as in lme4), so ``canonical`` is False.

    Notes
    -----
    ``V(mu) = mu + mu^2 / theta``; deviance residual
    ``2 w (y log(y/mu) - (y + theta) log((y + theta)/(mu + theta)))``;
    ``-2 log p = 2 w ((y + theta) log(mu + theta) - y log mu + lgamma(y + 1)
    - theta log theta + lgamma(theta) - lgamma(theta + y))``
    (``MASS::negative.binomial(theta)$aic``), evaluated as
    ``-2 w (theta log(theta/(mu + theta)) + y log(mu/(mu + theta)) - log(y + theta)
    - log B(theta, y + 1))``, the same value without the cancellation of the large
    ``lgamma`` terms when theta is large (``B`` the beta function). Start values
    ``mu = y + (y == 0) / 6``.
    """

    name: ClassVar[str] = "negative-binomial"
    canonical_link: ClassVar[str | None] = None
    allowed_links: ClassVar[tuple[str, ...]] = ("log", "identity", "sqrt")
    has_theta: ClassVar[bool] = True

    @property
    def r_name(self) -> str:
        if self.theta is None:
            return "Negative Binomial"
        return f"Negative Binomial({self.theta:.4g})"

    def __repr__(self) -> str:
        return f"negative_binomial(theta={self.theta!r}, link={self.link.name!r})"

    def with_theta(self, theta: float) -> NegativeBinomial:
        return NegativeBinomial(self.link, theta)

    def _require_theta(self) -> float:
        if self.theta is None:
            raise FamilyError(
                "the negative binomial's theta is not set; give it, e.g. "
                "negative_binomial(theta=2.0), or use family.with_theta(theta)"
            )
        return self.theta

    def variance(self, mu: ArrayLike) -> np.ndarray:
        theta = self._require_theta()
        m = _as_float(mu)
        return m + m * m / theta

    def deviance_function(
        self, y: ArrayLike, weights: ArrayLike | None
    ) -> Callable[[np.ndarray], float]:
        # d = 2 w [y log y - (y + t) log(y + t)] - 2 w y log mu + 2 w (y + t) log(mu + t)
        theta = self._require_theta()
        yv = _as_float(y)
        w = _weights(weights, yv)
        wy, wyt = w * yv, w * (yv + theta)
        constant = 2.0 * float(np.sum(w * special.xlogy(yv, yv) - wyt * np.log(yv + theta)))

        def deviance(mu: np.ndarray) -> float:
            return constant - 2.0 * float(wy @ np.log(mu)) + 2.0 * float(wyt @ np.log(mu + theta))

        return deviance

    def deviance_residuals(
        self, y: ArrayLike, mu: ArrayLike, weights: ArrayLike | None
    ) -> np.ndarray:
        theta = self._require_theta()
        yv, m = _as_float(y), _as_float(mu)
        w = _weights(weights, yv)
        # (y + theta) log((y + theta)/(mu + theta)) = (y + theta) log1p((y - mu)/(mu + theta))
        with _quiet():
            tail = (yv + theta) * np.log1p((yv - m) / (m + theta))
            return np.maximum(2.0 * w * (_y_log_y_over_mu(yv, m) - tail), 0.0)

    def unit_minus_twice_loglik(
        self,
        y: ArrayLike,
        mu: ArrayLike,
        weights: ArrayLike | None,
        trials: ArrayLike | None,
    ) -> np.ndarray:
        theta = self._require_theta()
        yv, m = _as_float(y), _as_float(mu)
        w = _weights(weights, yv)
        with _quiet():
            # lgamma(y + theta) - lgamma(theta) - log y! = -log(y + theta) - log B(theta, y + 1)
            log_coef = -np.log(yv + theta) - special.betaln(theta, yv + 1.0)
            logp = (
                log_coef
                - theta * np.log1p(m / theta)
                + special.xlogy(yv, m)
                - special.xlogy(yv, m + theta)
            )
            return np.where(w != 0, -2.0 * w * logp, 0.0)

    def random(self, rng: np.random.Generator, mu: ArrayLike, weights: ArrayLike) -> np.ndarray:
        size = self._require_theta()
        m = _as_float(mu)
        return rng.negative_binomial(size, size / (size + m)).astype(np.float64)

    def initial_mu(
        self, y: ArrayLike, weights: ArrayLike | None, trials: ArrayLike | None
    ) -> np.ndarray:
        yv = _as_float(y)
        return yv + (yv == 0) / 6.0

    def check_response(self, y: ArrayLike, trials: ArrayLike | None) -> None:
        _check_counts(self, y)


def _check_theta(theta: object) -> float:
    try:
        value = float(theta)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise FamilyError(
            f"theta of the negative binomial must be a positive number, not {theta!r}"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise FamilyError(
            f"theta of the negative binomial must be a positive finite number, got {value:g} "
            "(var = mu + mu^2/theta; a very large theta is the Poisson family)"
        )
    return value


#: Family classes by the name the command line uses.
FAMILIES: dict[str, type[Family]] = {
    "binomial": Binomial,
    "poisson": Poisson,
    "negative-binomial": NegativeBinomial,
}

#: Other spellings of the family names (compared after lower-casing and stripping).
_ALIASES = {
    "negative_binomial": "negative-binomial",
    "negative binomial": "negative-binomial",
    "negativebinomial": "negative-binomial",
    "nbinom": "negative-binomial",
    "negbin": "negative-binomial",
}


def make_family(
    family: str | Family, link: str | Link | None = None, *, theta: float | None = None
) -> Family:
    """Return the family named ``family`` with ``link`` (its canonical or default link if None).

    Parameters
    ----------
    family
        ``"binomial"``, ``"poisson"`` or ``"negative-binomial"`` (also
        ``"negative_binomial"``, ``"nbinom"``, ``"negbin"``), case-insensitive; or a
        :class:`Family`, returned as is unless ``link`` or ``theta`` change it.
    link
        R's name of the link or a :class:`Link`. Allowed: binomial ``logit`` (default),
        ``probit``, ``cloglog``, ``cauchit``, ``log``; Poisson and negative binomial
        ``log`` (default), ``identity``, ``sqrt``.
    theta
        The negative binomial's dispersion (``var = mu + mu^2 / theta``); None leaves it
        to be estimated. Refused for the other families.

    Returns
    -------
    Family

    Raises
    ------
    FamilyError
        For an unknown family, a link the family does not allow, or a theta that is not a
        positive finite number or does not apply; the message lists what is allowed.

    Examples
    --------
    >>> make_family("binomial", "probit")
    binomial(link='probit')
    >>> make_family("NBinom", theta=2).variance([2.0]).tolist()
    [4.0]
    """
    if isinstance(family, Family):
        result = family
        if link is not None and make_link(link) != family.link:
            result = type(family)(make_link(link), family.theta)  # type: ignore[call-arg]
        if theta is not None:
            result = result.with_theta(theta)
        return result
    if not isinstance(family, str):
        raise FamilyError(
            f"family must be a name such as 'binomial' or a Family, not {type(family).__name__}"
        )
    key = family.strip().lower()
    key = _ALIASES.get(key, key)
    cls = FAMILIES.get(key)
    if cls is None:
        hint = (
            " (a Gaussian model is a linear mixed model: use mm.lmer)"
            if key in ("gaussian", "normal")
            else ""
        )
        raise FamilyError(f"unknown family '{family}'{hint}; allowed: {', '.join(FAMILIES)}")
    chosen = make_link(cls.allowed_links[0] if link is None else link)
    if cls is NegativeBinomial:
        return NegativeBinomial(chosen, theta)
    if theta is not None:
        raise FamilyError(f"theta applies only to the negative binomial family, not to {cls.name}")
    return cls(chosen)


def binomial(link: str | Link = "logit") -> Binomial:
    """Return the binomial family (R's ``binomial(link = "logit")``).

    Examples
    --------
    >>> binomial("cloglog").link.name
    'cloglog'
    """
    return Binomial(make_link(link))


def poisson(link: str | Link = "log") -> Poisson:
    """Return the Poisson family (R's ``poisson(link = "log")``).

    Examples
    --------
    >>> poisson().canonical
    True
    """
    return Poisson(make_link(link))


def negative_binomial(theta: float | None = None, link: str | Link = "log") -> NegativeBinomial:
    """Return the negative binomial family NB2 (``MASS::negative.binomial(theta)``).

    Parameters
    ----------
    theta
        Dispersion, ``var = mu + mu^2 / theta``; None to have it estimated (lme4's
        ``glmer.nb``).
    link
        ``"log"`` (default), ``"identity"`` or ``"sqrt"``.

    Examples
    --------
    >>> negative_binomial(2.5)
    negative_binomial(theta=2.5, link='log')
    """
    return NegativeBinomial(make_link(link), theta)
