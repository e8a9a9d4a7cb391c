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
system of a linear mixed model with row weights (:class:`.linalg.blocked.BlockedSystem`,
rows set up once in a :class:`.linalg.cross_products.CrossProductPlan`; only the values
change). A step that does not lower ``pdev`` is halved, as lme4 does.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixedmodels.covariance import CovarianceStructure
from mixedmodels.errors import ConvergenceError
from mixedmodels.linalg.blocked import BlockedFactor, BlockedSystem
from mixedmodels.linalg.cross_products import CrossProductPlan, compute_cross_products
from mixedmodels.linalg.solution import Estimates, estimate

#: PIRLS stops when no conditional mode moved by more than this (times 1 + |u|): the
#: Laplace value is then exact to far below what a finite-difference Hessian needs.
MODE_TOLERANCE = 1e-12
#: Iterations and step halvings of one PIRLS run.
MAX_ITERATIONS = 100
MAX_HALVINGS = 30
#: Up to this many entries, PIRLS forms ``Zr'Z1`` dense.
_DENSE_REST_FIRST = 1 << 15


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


@dataclass(frozen=True, eq=False)
class PirlsState:
    """Where PIRLS converged at one (theta, beta).

    Attributes
    ----------
    u
        Spherical conditional modes, flat in engine order (term by term, level-major).
    beta
        The fixed effects (estimated inside PIRLS for nAGQ = 0, else as given).
    eta, mu
        Linear predictor (offset included) and conditional mean per row.
    weights
        PIRLS working weights at ``mu``.
    logdet
        ``log |L_Z|^2`` at those weights.
    aic_terms
        ``sum -2 log p(y | mu)``.
    deviance
        ``sum`` of the squared deviance residuals.
    iterations
        PIRLS iterations used.
    """

    u: np.ndarray
    beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    weights: np.ndarray
    logdet: float
    aic_terms: float
    deviance: float
    iterations: int

    @property
    def penalty(self) -> float:
        return float(self.u @ self.u)

    @property
    def laplace(self) -> float:
        """The Laplace approximation of -2 log L at this point."""
        return self.aic_terms + self.penalty + self.logdet


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
    depend on the start beyond rounding.
    """

    def __init__(
        self,
        structure: CovarianceStructure,
        X: np.ndarray,
        response: GlmmResponse,
        nagq: int = 1,
    ):
        self.structure = structure
        self.terms = structure.terms
        self.X = np.asarray(X, dtype=np.float64)
        self.response = response
        self.family = response.family
        self.nagq = int(nagq)
        self.n, self.p = self.X.shape
        self.ntheta = structure.ntheta
        self.q = sum(t.nranef for t in self.terms)
        self._plans: dict[bool, CrossProductPlan] = {}
        self._systems: dict[bool, BlockedSystem] = {}
        self._u = np.zeros(self.q)
        self._saturated: tuple[object, float] | None = None
        self._rounded_binomial: bool | None = None
        self._deviance_function: tuple[object, object] | None = None
        self.evaluations = 0
        if self.nagq > 1:
            if len(self.terms) != 1 or self.terms[0].ncols != 1:
                raise ValueError("adaptive Gauss-Hermite quadrature needs one scalar term")
            nodes, weights = np.polynomial.hermite_e.hermegauss(self.nagq)
            self._nodes = nodes
            self._log_node_weights = np.log(weights / weights.sum())

    def set_family(self, family: object) -> None:
        """Use ``family`` from now on (the negative binomial's theta as it is optimised)."""
        self.family = family
        self.response = self.response.with_family(family)

    # -- pieces ---------------------------------------------------------------------------
    def _plan(self, with_x: bool) -> CrossProductPlan:
        if with_x not in self._plans:
            X = self.X if with_x else np.empty((self.n, 0))
            t1 = self.terms[0]
            qr = self.q - t1.nranef
            # A small Zr'Z1 is cheapest dense; a large one (an observation-level term 1
            # has one column per row) stays sparse.
            dense = qr * t1.nranef <= _DENSE_REST_FIRST
            self._plans[with_x] = CrossProductPlan(self.terms, X, dense_rest_first=dense)
        return self._plans[with_x]

    def _system(self, with_x: bool, w: np.ndarray, z: np.ndarray) -> BlockedSystem:
        A = self._plan(with_x)(w, z, log_weights=False)
        system = self._systems.get(with_x)
        system = (
            BlockedSystem(self.structure, A, single_use=True)
            if system is None
            else system.with_values(A)
        )
        self._systems[with_x] = system
        return system

    def random_part(self, u: np.ndarray, templates: list[np.ndarray]) -> np.ndarray:
        """``Z Lambda u`` per row."""
        out = np.zeros(self.n)
        start = 0
        for term, T in zip(self.terms, templates, strict=True):
            stop = start + term.nranef
            b = u[start:stop].reshape(term.nlevels, term.ncols) @ T.T
            if term.ncols == 1:
                out += term.z[:, 0] * b[term.refs, 0]
            else:
                out += np.einsum("ij,ij->i", term.z, b[term.refs])
            start = stop
        return out

    def _mu_and_pdev(self, eta: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, float]:
        mu = self.family.link.inverse(eta)
        deviance = self._deviance_function
        if deviance is None or deviance[0] is not self.family:
            r = self.response
            deviance = self._deviance_function = (
                self.family,
                self.family.deviance_function(r.y, r.weights),
            )
        return mu, deviance[1](mu) + float(u @ u)

    def _working(self, eta: np.ndarray, mu: np.ndarray, base: np.ndarray):
        """Working weights and working response (``eta - base`` plus the linearised residual)."""
        r = self.response
        mu_eta = self.family.link.mu_eta(eta)
        w = r.weights * (mu_eta * mu_eta) / self.family.variance(mu)
        z = (eta - base) + (r.y - mu) / mu_eta
        return w, z

    # -- PIRLS ----------------------------------------------------------------------------
    def pirls(
        self, theta: np.ndarray, beta: np.ndarray | None, u0: np.ndarray | None = None
    ) -> PirlsState:
        """Run PIRLS at ``theta``: for the modes at fixed ``beta``, or (``beta=None``) for the
        modes and beta together (nAGQ = 0)."""
        theta = np.asarray(theta, dtype=np.float64)
        r = self.response
        templates = self.structure.templates(theta)
        with_x = beta is None
        u = (self._u if u0 is None else np.asarray(u0, dtype=np.float64)).copy()
        if with_x:
            beta_cur = getattr(self, "_beta0", None)
            if beta_cur is None:
                beta_cur = self._initial_beta()
            fixed = r.offset + self.X @ beta_cur
        else:
            beta_cur = np.asarray(beta, dtype=np.float64)
            fixed = r.offset + self.X @ beta_cur
        eta = fixed + self.random_part(u, templates)
        mu, pdev = self._mu_and_pdev(eta, u)
        if not np.isfinite(pdev):  # a start far off (e.g. a warm start from a wild point)
            u = np.zeros(self.q)
            eta = fixed.copy()
            mu, pdev = self._mu_and_pdev(eta, u)
        iterations = 0
        for iterations in range(1, MAX_ITERATIONS + 1):  # noqa: B007 (read after the loop)
            base = r.offset if with_x else fixed
            w, z = self._working(eta, mu, base)
            factor = self._system(with_x, w, z).factor(theta)
            est = estimate(self._systems[with_x], factor, reml=False)
            du = np.concatenate([a.ravel() for a in est.u]) - u
            dbeta = est.beta - beta_cur if with_x else None
            moved = float(np.max(np.abs(du), initial=0.0)) / (
                1.0 + float(np.max(np.abs(u), initial=0.0))
            )
            if with_x:
                moved = max(
                    moved, float(np.max(np.abs(dbeta))) / (1.0 + float(np.max(np.abs(beta_cur))))
                )
            if moved < MODE_TOLERANCE:
                # At the modes: the factor is the one at these very weights, so the
                # Laplace terms below are consistent (the step left is ~1e-10).
                break
            step = 1.0
            for _ in range(MAX_HALVINGS):
                u_try = u + step * du
                if with_x:
                    beta_try = beta_cur + step * dbeta
                    fixed_try = r.offset + self.X @ beta_try
                else:
                    beta_try, fixed_try = beta_cur, fixed
                eta_try = fixed_try + self.random_part(u_try, templates)
                mu_try, pdev_try = self._mu_and_pdev(eta_try, u_try)
                # A step may raise the penalised deviance by rounding alone (~1e-13 of
                # it) once the modes are nearly there: that is no reason to halve.
                if pdev_try <= pdev + 1e-12 * (abs(pdev) + 1.0):
                    break
                step *= 0.5
            else:
                raise ConvergenceError(
                    "PIRLS step-halvings failed to reduce the penalised deviance; the model "
                    "may be overparameterised or the data separated: simplify the model"
                )
            u, beta_cur, fixed, eta, mu, pdev = (
                u_try,
                beta_try,
                fixed_try,
                eta_try,
                mu_try,
                pdev_try,
            )
        else:
            raise ConvergenceError(
                f"PIRLS did not converge in {MAX_ITERATIONS} iterations; the model may be "
                "overparameterised or the data separated: simplify the model"
            )
        self._u = u
        if with_x:
            self._beta0 = beta_cur
        return PirlsState(
            u=u,
            beta=beta_cur,
            eta=eta,
            mu=mu,
            weights=w,
            logdet=float(factor.logdet_z),
            aic_terms=self._minus_twice_loglik(mu, float(pdev - u @ u)),
            deviance=float(pdev - u @ u),
            iterations=iterations,
        )

    def _initial_beta(self) -> np.ndarray:
        """beta from one weighted least-squares fit of the GLM's working response at the
        family's starting mu (R's ``mustart``), as ``glm.fit``'s first iteration."""
        r = self.response
        mu = self.family.initial_mu(r.y, r.weights, r.trials)
        eta = self.family.link.link(mu)
        w, z = self._working(eta, mu, r.offset)
        sw = np.sqrt(w)
        beta, *_ = np.linalg.lstsq(self.X * sw[:, None], z * sw, rcond=None)
        return beta

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
        """The AGQ deviance (lme4's: from deviance residuals) around the modes of ``state``."""
        r = self.response
        term = self.terms[0]
        refs, z = term.refs, term.z[:, 0]
        lam = float(theta[0])
        nl = term.nlevels
        M = lam * lam * np.bincount(refs, weights=state.weights * z * z, minlength=nl) + 1.0
        sd = 1.0 / np.sqrt(M)
        fixed = state.eta - lam * z * state.u[refs]
        terms = np.empty((nl, self.nagq))
        for k, node in enumerate(self._nodes):
            uk = state.u + node * sd
            mu = self.family.link.inverse(fixed + lam * z * uk[refs])
            dev = self.family.deviance_residuals(r.y, mu, r.weights)
            terms[:, k] = (
                np.bincount(refs, weights=dev, minlength=nl) + uk * uk - node * node
            ) * -0.5 + self._log_node_weights[k]
        top = terms.max(axis=1)
        log_sum = top + np.log(np.exp(terms - top[:, None]).sum(axis=1))
        return float(np.sum(np.log(M) - 2.0 * log_sum))

    def _minus_twice_loglik(self, mu: np.ndarray, deviance: float) -> float:
        """``sum -2 log p(y | mu)``: the deviance residuals plus the saturated constant
        (no log-density per evaluation), except where R's binomial log-likelihood rounds
        ``m y`` (non-integer prior weights), which makes the difference depend on mu."""
        r = self.response
        if self._rounded_binomial is None:
            w = r.weights if r.trials is None else r.weights / np.maximum(r.trials, 1.0)
            self._rounded_binomial = getattr(self.family, "name", "") == "binomial" and bool(
                np.any(w != np.round(w))
            )
        if self._rounded_binomial:
            return float(self.family.minus_twice_loglik(r.y, mu, r.weights, r.trials))
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
        r = self.response
        at = family.initial_mu(r.y, r.weights, r.trials)
        unit = family.unit_minus_twice_loglik(r.y, at, r.weights, r.trials)
        value = float(np.sum(unit - family.deviance_residuals(r.y, at, r.weights)))
        self._saturated = (family, value)
        return value

    def final_system(
        self, theta: np.ndarray, state: PirlsState
    ) -> tuple[BlockedSystem, BlockedFactor, Estimates]:
        """The weighted system with ``X`` at the modes: ``Var(beta)`` at fixed theta (lme4's
        ``vcov(use.hessian = FALSE)``) and the conditional variances of the modes."""
        r = self.response
        theta = np.asarray(theta, dtype=np.float64)
        w, z = self._working(state.eta, state.mu, r.offset)
        # The blocks in the layout every reader of a system expects (sparse Zr'Z1).
        A = compute_cross_products(self.terms, self.X, z, weights=w)
        system = BlockedSystem(self.structure, A)
        factor = system.factor(theta)
        return system, factor, estimate(system, factor, reml=False)
