"""Link functions ``eta = g(mu)`` of the GLMM families, clamped as lme4's glmer clamps them.

A link maps the mean ``mu`` of the response to the linear predictor ``eta``; PIRLS needs
its inverse ``mu = g^{-1}(eta)`` and the derivative ``d mu / d eta`` (McCullagh & Nelder
1989, *Generalized Linear Models*, 2nd ed., sec. 2.2 and 2.5).

Clamping. Far out in the tails ``g^{-1}`` rounds to exactly 0 or 1 (or ``exp`` to 0), and
a probability of 0 or 1 makes the log-likelihood infinite and a PIRLS weight zero. R
guards against this in ``make.link`` (``family.R``/``family.c``) and lme4 in its own C++
(``glmFamily.cpp``, which is what ``glmer``'s PIRLS evaluates). Here, with
``eps = DBL_EPSILON = 2^-52``:

* the binomial links (logit, probit, cloglog, cauchit) keep ``mu`` in ``[eps, 1 - eps]``
  and ``d mu / d eta >= eps``. For logit and cloglog that is lme4's rule exactly (checked
  against lme4 1.1-31's ``glmResp``); R's ``make.link("logit")`` instead thresholds at
  ``|eta| > 30``, which differs only where ``mu < 1e-13``. For probit and cauchit it is
  R's ``make.link`` rule to rounding (lme4 leaves ``pnorm`` unclamped below, so ``mu``
  and ``d mu / d eta`` reach 0 for ``eta < -38``);
* the log link gives ``max(exp(eta), eps)`` for both ``mu`` and ``d mu / d eta``, as R and
  lme4 do;
* identity, sqrt and inverse are not clamped (as in R).

``link`` itself is never clamped: ``link(0)`` is ``-inf`` for logit, as in R.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from mixedmodels.errors import FamilyError

__all__ = [
    "EPS",
    "LINKS",
    "CauchitLink",
    "CloglogLink",
    "IdentityLink",
    "InverseLink",
    "Link",
    "LogLink",
    "LogitLink",
    "ProbitLink",
    "SqrtLink",
    "make_link",
]

#: DBL_EPSILON, the bound R and lme4 clamp probabilities and derivatives with.
EPS = float(np.finfo(np.float64).eps)

#: exp(700) is finite; R's cloglog ``mu.eta`` caps eta there so that exp(eta) cannot overflow.
_EXP_CAP = 700.0


def _as_float(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _clamp_probability(p: np.ndarray) -> np.ndarray:
    return np.clip(p, EPS, 1.0 - EPS)


@dataclass(frozen=True)
class Link:
    """A link function ``eta = g(mu)``: immutable; two links are equal when they are the same.

    Subclasses give ``name`` and the three functions. Every function takes an array (or
    a number) and returns a float64 array of the same shape.

    Attributes
    ----------
    name
        R's name of the link: ``"logit"``, ``"probit"``, ``"cloglog"``, ``"cauchit"``,
        ``"log"``, ``"identity"``, ``"sqrt"`` or ``"inverse"``.
    """

    name: ClassVar[str] = ""

    def link(self, mu: ArrayLike) -> np.ndarray:
        """Return ``eta = g(mu)``."""
        raise NotImplementedError

    def inverse(self, eta: ArrayLike) -> np.ndarray:
        """Return ``mu = g^{-1}(eta)`` (clamped as the module docstring says)."""
        raise NotImplementedError

    def mu_eta(self, eta: ArrayLike) -> np.ndarray:
        """Return ``d mu / d eta`` at ``eta`` (clamped as the module docstring says)."""
        raise NotImplementedError

    def valid_eta(self, eta: ArrayLike) -> bool:
        """Whether every ``eta`` lies in the domain of the inverse link.

        R's ``valideta`` accepts any ``eta`` for most links; here NaN and infinite values
        are refused for every link too, as no finite log-likelihood follows from them
        (PIRLS halves its step until ``eta`` is valid).
        """
        return bool(np.all(np.isfinite(_as_float(eta))))

    def __repr__(self) -> str:
        return f"Link({self.name!r})"


@dataclass(frozen=True, repr=False)
class LogitLink(Link):
    """The logit link ``eta = log(mu / (1 - mu))``, canonical for the binomial.

    Notes
    -----
    ``mu = 1 / (1 + exp(-eta))`` clamped to ``[eps, 1 - eps]``;
    ``d mu / d eta = mu (1 - mu)``, computed as ``exp(-|eta|) / (1 + exp(-|eta|))^2``
    (the logistic density, without cancellation) and bounded below by ``eps``.

    Examples
    --------
    >>> LogitLink().inverse([0.0, 40.0]).tolist()
    [0.5, 0.9999999999999998]
    """

    name: ClassVar[str] = "logit"

    def link(self, mu: ArrayLike) -> np.ndarray:
        return special.logit(_as_float(mu))

    def inverse(self, eta: ArrayLike) -> np.ndarray:
        # 1 / (1 + exp(-eta)) has no cancellation anywhere (exp overflows to inf, giving
        # 0, then clamped) and costs a third of scipy's expit.
        with np.errstate(over="ignore"):
            mu = np.asarray(1.0 / (1.0 + np.exp(-_as_float(eta))))
        return np.clip(mu, EPS, 1.0 - EPS, out=mu) if mu.ndim else np.clip(mu, EPS, 1.0 - EPS)

    def mu_eta(self, eta: ArrayLike) -> np.ndarray:
        e = np.exp(-np.abs(_as_float(eta)))
        return np.maximum(e / (1.0 + e) ** 2, EPS)


@dataclass(frozen=True, repr=False)
class ProbitLink(Link):
    """The probit link ``eta = Phi^{-1}(mu)``, Phi the standard normal distribution function.

    Notes
    -----
    ``mu = Phi(eta)`` clamped to ``[eps, 1 - eps]``; ``d mu / d eta = phi(eta)``, the
    standard normal density, bounded below by ``eps`` (R's ``make.link("probit")``).
    """

    name: ClassVar[str] = "probit"

    def link(self, mu: ArrayLike) -> np.ndarray:
        return special.ndtri(_as_float(mu))

    def inverse(self, eta: ArrayLike) -> np.ndarray:
        return _clamp_probability(special.ndtr(_as_float(eta)))

    def mu_eta(self, eta: ArrayLike) -> np.ndarray:
        x = _as_float(eta)
        with np.errstate(over="ignore"):  # x^2 = inf far out: the density is 0, then eps
            return np.maximum(np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi), EPS)


@dataclass(frozen=True, repr=False)
class CloglogLink(Link):
    """The complementary log-log link ``eta = log(-log(1 - mu))``.

    Notes
    -----
    ``mu = 1 - exp(-exp(eta))`` (computed as ``-expm1(-exp(eta))``) clamped to
    ``[eps, 1 - eps]``; ``d mu / d eta = exp(eta - exp(eta))`` with ``eta`` capped at 700
    (R's ``make.link("cloglog")``), bounded below by ``eps``.
    """

    name: ClassVar[str] = "cloglog"

    def link(self, mu: ArrayLike) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(-np.log1p(-_as_float(mu)))

    def inverse(self, eta: ArrayLike) -> np.ndarray:
        x = np.minimum(_as_float(eta), _EXP_CAP)
        return _clamp_probability(-np.expm1(-np.exp(x)))

    def mu_eta(self, eta: ArrayLike) -> np.ndarray:
        x = np.minimum(_as_float(eta), _EXP_CAP)
        return np.maximum(np.exp(x - np.exp(x)), EPS)


@dataclass(frozen=True, repr=False)
class CauchitLink(Link):
    """The cauchit link ``eta = F^{-1}(mu)``, F the standard Cauchy distribution function.

    Notes
    -----
    ``mu = F(eta) = 1/2 + atan(eta)/pi``, computed as ``atan(1/|eta|)/pi`` in the tail
    (``1 -`` that above 0, as R's ``pcauchy``) and clamped to ``[eps, 1 - eps]``;
    ``d mu / d eta = 1 / (pi (1 + eta^2))``, bounded below by ``eps``.
    """

    name: ClassVar[str] = "cauchit"

    def link(self, mu: ArrayLike) -> np.ndarray:
        return np.tan(np.pi * (_as_float(mu) - 0.5))

    def inverse(self, eta: ArrayLike) -> np.ndarray:
        x = _as_float(eta)
        # atan2(1, |x|) = atan(1/|x|) without dividing by zero; the tail probability is exact
        tail = np.arctan2(1.0, np.abs(x)) / np.pi
        return _clamp_probability(np.where(x > 0, 1.0 - tail, tail))

    def mu_eta(self, eta: ArrayLike) -> np.ndarray:
        x = _as_float(eta)
        with np.errstate(over="ignore"):  # x^2 = inf far out: the density is 0, then eps
            return np.maximum(1.0 / (np.pi * (1.0 + x * x)), EPS)


@dataclass(frozen=True, repr=False)
class LogLink(Link):
    """The log link ``eta = log(mu)``, canonical for the Poisson.

    Notes
    -----
    ``mu = d mu / d eta = max(exp(eta), eps)`` (R's ``make.link("log")`` and lme4).
    ``exp`` overflows to ``inf`` above ``eta = 709.78``, as in R.
    """

    name: ClassVar[str] = "log"

    def link(self, mu: ArrayLike) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(_as_float(mu))

    def inverse(self, eta: ArrayLike) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.maximum(np.exp(_as_float(eta)), EPS)

    def mu_eta(self, eta: ArrayLike) -> np.ndarray:
        return self.inverse(eta)


@dataclass(frozen=True, repr=False)
class IdentityLink(Link):
    """The identity link ``eta = mu``; ``d mu / d eta = 1``."""

    name: ClassVar[str] = "identity"

    def link(self, mu: ArrayLike) -> np.ndarray:
        return _as_float(mu).copy()

    def inverse(self, eta: ArrayLike) -> np.ndarray:
        return _as_float(eta).copy()

    def mu_eta(self, eta: ArrayLike) -> np.ndarray:
        return np.ones_like(_as_float(eta))


@dataclass(frozen=True, repr=False)
class SqrtLink(Link):
    """The square-root link ``eta = sqrt(mu)``: ``mu = eta^2``, ``d mu / d eta = 2 eta``.

    Only positive ``eta`` is valid (R's ``make.link("sqrt")``): ``eta`` and ``-eta`` give
    the same mean.
    """

    name: ClassVar[str] = "sqrt"

    def link(self, mu: ArrayLike) -> np.ndarray:
        return np.sqrt(_as_float(mu))

    def inverse(self, eta: ArrayLike) -> np.ndarray:
        x = _as_float(eta)
        with np.errstate(over="ignore"):
            return x * x

    def mu_eta(self, eta: ArrayLike) -> np.ndarray:
        return 2.0 * _as_float(eta)

    def valid_eta(self, eta: ArrayLike) -> bool:
        x = _as_float(eta)
        return bool(np.all(np.isfinite(x)) and np.all(x > 0))


@dataclass(frozen=True, repr=False)
class InverseLink(Link):
    """The inverse link ``eta = 1 / mu``: ``mu = 1 / eta``, ``d mu / d eta = -1 / eta^2``.

    Only non-zero ``eta`` is valid (R's ``make.link("inverse")``).
    """

    name: ClassVar[str] = "inverse"

    def link(self, mu: ArrayLike) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 1.0 / _as_float(mu)

    def inverse(self, eta: ArrayLike) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 1.0 / _as_float(eta)

    def mu_eta(self, eta: ArrayLike) -> np.ndarray:
        x = _as_float(eta)
        with np.errstate(divide="ignore", over="ignore"):
            return -1.0 / (x * x)

    def valid_eta(self, eta: ArrayLike) -> bool:
        x = _as_float(eta)
        return bool(np.all(np.isfinite(x)) and np.all(x != 0))


#: One instance per link, by R's name.
LINKS: dict[str, Link] = {
    link.name: link
    for link in (
        LogitLink(),
        ProbitLink(),
        CloglogLink(),
        CauchitLink(),
        LogLink(),
        IdentityLink(),
        SqrtLink(),
        InverseLink(),
    )
}


def make_link(link: str | Link) -> Link:
    """Return the link named ``link`` (case-insensitive), or ``link`` itself if it is one.

    Parameters
    ----------
    link
        R's name of a link (``"logit"``, ``"probit"``, ``"cloglog"``, ``"cauchit"``,
        ``"log"``, ``"identity"``, ``"sqrt"``, ``"inverse"``) or a :class:`Link`.

    Raises
    ------
    FamilyError
        For an unknown name; the message lists the known ones.

    Examples
    --------
    >>> make_link("Logit").name
    'logit'
    """
    if isinstance(link, Link):
        return link
    if not isinstance(link, str):
        raise FamilyError(
            f"a link must be given by name, e.g. 'logit', not {type(link).__name__}; "
            f"known links: {', '.join(LINKS)}"
        )
    found = LINKS.get(link.strip().lower())
    if found is None:
        raise FamilyError(f"unknown link '{link}'; known links: {', '.join(LINKS)}")
    return found
