"""The linear mixed model: design -> cross products -> the model's objective -> fit.

lme4's four public stages (``lFormula`` -> ``mkLmerDevfun`` -> ``optimizeLmer`` ->
``mkMerMod``) appear as ``build_design`` (design/), :class:`LinearMixedModel` (cross
products, the residual structure and the objective), :meth:`LinearMixedModel.fit`
(optimisation, finish and checks) and :class:`~mixedmodels.results.LinearMixedModelResult`
(immutable results). Which system evaluates the criterion is asked of
:mod:`mixedmodels.linalg.choice`; the criterion itself is :mod:`mixedmodels.objective`'s.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from mixedmodels.covariance import CovarianceStructure, GroupedTerm, group_terms
from mixedmodels.design.model_design import ModelDesign
from mixedmodels.errors import (
    ConvergenceWarning,
    DataError,
    ModelSpecificationError,
    SingularFitWarning,
)
from mixedmodels.linalg.blas_threads import blas_threads_for
from mixedmodels.linalg.blocked import BlockedSystem
from mixedmodels.linalg.choice import (
    dense_system,
    evaluates_dense,
    prefers_dense,
    rows_product_fits,
)
from mixedmodels.linalg.cross_products import (
    CrossProducts,
    compute_cross_products,
    compute_stratified_cross_products,
    response_products,
    with_response_products,
)
from mixedmodels.objective.gradient import (
    DenseDevianceGradient,
    OneTermDerivatives,
    ProfiledDevianceGradient,
)
from mixedmodels.objective.model_objective import LinearMixedObjective
from mixedmodels.objective.profiled_deviance import ProfiledDeviance
from mixedmodels.optimize import (
    OptimizerOptions,
    OptSummary,
    check_convergence,
    cholesky_or_none,
    gradient_differences,
    gradient_is_small,
    minimize_with_restart,
    newton_finish,
    newton_first,
    polish,
    snap_to_bounds,
)
from mixedmodels.optimize.bounded_newton import bounded_newton, template_columns
from mixedmodels.optimize.finish import newton_secant_first
from mixedmodels.optimize.wide_rest import newton_from_start
from mixedmodels.residual.repeated import RepeatedResidual, build_repeated
from mixedmodels.residual.specs import (
    CorrelationSpec,
    VarianceSpec,
    parse_correlation,
    parse_variance,
)
from mixedmodels.residual.structures import Homoscedastic, VarIdent, weights_log_jacobian
from mixedmodels.residual.var_ident import ResidualStrata
from mixedmodels.results import LinearMixedModelResult


class LinearMixedModel:
    """A linear mixed model ready to fit: cross products formed once, objective built once.

    Parameters
    ----------
    design
        The numeric design (see :func:`mixedmodels.design.build_design`). Its prior
        ``weights`` (residual variance ``sigma^2 / w_i``, as lme4's ``weights=``) and
        ``offset`` (added to the linear predictor with coefficient 1) are used when set.
    reml
        Fit by REML (default, as lme4) or ML.
    formula
        The formula text, for display.
    data_name
        What the data were called, for display.
    residual_strata
        Rows whose residual variances differ (nlme's ``varIdent``); None for one residual
        variance.
    cross_products
        Blocks of [Z X y]'[Z X y] computed elsewhere (streamed in chunks, or reduced on a
        cluster; weighted, with ``sum log w_i``, and with the offset taken from y already).
        Then ``design`` need not hold any rows: only its names, levels and spec are used,
        and results that need rows (fitted values, residuals) are unavailable.
    correlation, variance
        Repeated-measures residuals (:mod:`mixedmodels.residual.repeated`): a correlation
        within groups (``"ar1(visit | Subject)"``, ``cs``, ``car1``, ``us``) and a variance
        function (``"power(fitted)"``, ``power(x)``, ``exp(x)``, ``ident(x)``), as nlme's
        ``correlation=`` and ``weights=``. With either, the formula may have no random-effects
        term (nlme's ``gls``).
    structure_frame
        The data columns those specs name, one row per row of the design.
    """

    def __init__(
        self,
        design: ModelDesign,
        *,
        reml: bool = True,
        formula: str | None = None,
        data_name: str | None = None,
        residual_strata: ResidualStrata | None = None,
        cross_products: CrossProducts | None = None,
        correlation: str | CorrelationSpec | None = None,
        variance: str | VarianceSpec | None = None,
        structure_frame: Any = None,
    ):
        self.design = design
        self.correlation = parse_correlation(correlation)
        self.variance = parse_variance(variance)
        repeated = self.correlation is not None or self.variance is not None
        #: A model without random effects (nlme's gls): the engine sees one null term.
        self.gls = repeated and not design.re_terms
        self.residual_strata = residual_strata
        self.reml = bool(reml)
        self.formula = formula
        self.data_name = data_name
        p = design.X.shape[1]
        n = design.nobs if cross_products is None else int(cross_products.nobs)
        self.nobs = n
        self.has_rows = cross_products is None
        if not design.re_terms and not repeated:
            raise ModelSpecificationError(
                "the formula has no random-effects term such as (1 | group); "
                "add one, give a residual correlation= or variance= (a gls model), "
                "or fit an ordinary linear model instead"
            )
        if n <= p:
            raise ModelSpecificationError(
                f"{n} observations but {p} fixed-effect coefficients: the model cannot be "
                "estimated; use fewer fixed-effect terms"
            )
        for term in design.re_terms:
            if term.nranef >= n:
                raise ModelSpecificationError(
                    f"number of observations ({n}) <= number of random effects ({term.nranef}) "
                    f"for term ({' + '.join(term.column_names)} | {term.group}); the "
                    "random-effects variances and the residual variance are not identifiable: "
                    "simplify the random-effects structure"
                )
        self.terms = _null_terms(n) if self.gls else group_terms(design.re_terms)
        self.structure = CovarianceStructure.from_terms(self.terms)
        self.weights = getattr(design, "weights", None)
        self.offset = getattr(design, "offset", None)
        # The response the engine sees: the offset is a known part of the linear predictor.
        self.y = design.y if self.offset is None or not self.has_rows else design.y - self.offset
        has_zero = self.weights is not None and not np.all(self.weights > 0)
        if has_zero or not math.isfinite(
            0.0 if cross_products is None else cross_products.sum_log_weights
        ):
            raise ModelSpecificationError(
                "some prior weights are 0: such rows carry no information but would count in "
                "n; drop them before fitting (e.g. data[data['w'] > 0])"
            )
        self.log_jacobian = (
            weights_log_jacobian(self.weights)
            if cross_products is None
            else -float(cross_products.sum_log_weights)
        )
        self._deviances: dict[bool, ProfiledDeviance] = {}
        self._dense: dict[bool, ProfiledDeviance] = {}
        self._objectives: dict[bool, LinearMixedObjective] = {}
        self._cross_products: CrossProducts | None = None
        self._residual: Homoscedastic | VarIdent | RepeatedResidual | None = None
        self.repeated: RepeatedResidual | None = None
        if repeated and (cross_products is not None or residual_strata is not None):
            raise ModelSpecificationError(
                "a residual correlation or variance function cannot be combined with "
                + (
                    "precomputed (streamed) cross products"
                    if cross_products is not None
                    else "residual_groups; write the groups as variance='ident(column)'"
                )
            )
        if repeated and self.weights is not None:
            raise ModelSpecificationError(
                "prior weights cannot be combined with a residual correlation or variance "
                "function yet; drop weights= or the structure"
            )
        if repeated:
            if structure_frame is None:
                raise ValueError("a residual structure needs structure_frame (its data columns)")
            self.repeated = build_repeated(
                structure_frame,
                self.correlation,
                self.variance,
                self.terms,
                design.X,
                self.y,
                fitted=np.ones(n),  # power(fitted): replaced by each fit's fitted values
            )
            self._residual = self.repeated
        elif cross_products is not None:
            if residual_strata is not None:
                raise ModelSpecificationError(
                    "residual variances by group are not available for precomputed cross products"
                )
            self._cross_products = cross_products
        elif residual_strata is not None:
            if residual_strata.codes.shape[0] != n:
                raise ValueError("residual strata must have one code per row of the design")
            blocks = compute_stratified_cross_products(
                self.terms,
                design.X,
                self.y,
                residual_strata.codes,
                residual_strata.nstrata,
                weights=self.weights,
            )
            self._residual = VarIdent(residual_strata, blocks, self.log_jacobian)
            # The equal-variance sum: what the homoscedastic model would use.
            self._cross_products = blocks.combine(np.ones(residual_strata.nstrata))
        # Otherwise the blocks are computed on first use: a small model is fitted in dense
        # form (see _fit) and needs them only for what follows the fit (KR, profiles...).

    @property
    def cross_products(self) -> CrossProducts:
        """The blocks of ``[Z X y]' W [Z X y]`` (:mod:`.linalg.cross_products`), formed once
        (``W``: the prior weights; y less the offset)."""
        if self._cross_products is None:
            self._cross_products = compute_cross_products(
                self.terms, self.design.X, self.y, weights=self.weights
            )
        return self._cross_products

    @property
    def residual_structure(self) -> Homoscedastic | VarIdent:
        """How ``Var(e)`` departs from ``sigma^2 I`` (:mod:`mixedmodels.residual.structures`)."""
        if self._residual is None:
            self._residual = Homoscedastic(lambda: self.cross_products, self.log_jacobian)
        return self._residual

    @property
    def rest_size(self) -> int:
        """``q_r``: random effects of the terms after the first (the dense rest block)."""
        return sum(t.nranef for t in self.terms[1:])

    def is_small(self) -> bool:
        """Fitted in dense form (:mod:`mixedmodels.linalg.dense`): a small model (by its sizes
        alone, :func:`~mixedmodels.linalg.choice.prefers_dense`) with one residual variance."""
        p = self.design.X.shape[1]
        return not self.has_residual_structure and prefers_dense(self.structure, p)

    @property
    def has_residual_structure(self) -> bool:
        """Whether the residual structure has parameters (varIdent strata, correlation or
        variance function): then the criterion is over theta and those."""
        return self.residual_strata is not None or self.repeated is not None

    def dense_deviance(self, reml: bool | None = None) -> ProfiledDeviance:
        """The profiled deviance of a small model over its dense system; built once."""
        key = self.reml if reml is None else bool(reml)
        if key not in self._dense:
            other = self._dense.get(not key)
            derived = self._derived_system("_dense", key)
            if derived is not None:
                self._dense[key] = derived
            elif other is not None:
                self._dense[key] = other.with_reml(key)
            else:
                p = self.design.X.shape[1]
                if (
                    self._cross_products is None
                    and self.has_rows
                    and rows_product_fits(self.structure, self.nobs, p)
                ):
                    system = dense_system(
                        self.structure, X=self.design.X, y=self.y, weights=self.weights
                    )
                else:
                    system = dense_system(self.structure, A=self.cross_products)
                self._dense[key] = ProfiledDeviance(system, key, self.log_jacobian)
        return self._dense[key]

    def deviance_function(self, reml: bool | None = None) -> ProfiledDeviance:
        """The blocked profiled deviance (REML or ML) as a function of theta, for one residual
        variance; built once and cached."""
        if self.repeated is not None:
            raise ModelSpecificationError(
                "this model has a residual correlation or variance function: its criterion "
                "depends on their parameters too; use model.objective(reml) (theta, then them)"
            )
        if self.has_residual_structure:
            raise ModelSpecificationError(
                "this model has residual variances by group: its criterion depends on their "
                "ratios too; use model.objective(reml) (theta and the log SD ratios)"
            )
        key = self.reml if reml is None else bool(reml)
        if key not in self._deviances:
            other = self._deviances.get(not key)
            derived = self._derived_system("_deviances", key)
            if derived is not None:
                self._deviances[key] = derived
            elif other is not None:
                self._deviances[key] = other.with_reml(key)
            else:
                system = BlockedSystem(self.structure, self.cross_products)
                self._deviances[key] = ProfiledDeviance(system, key, self.log_jacobian)
        return self._deviances[key]

    def evaluation_deviance(self, reml: bool) -> ProfiledDeviance:
        """The deviance the optimiser evaluates (one residual variance): dense when every
        template is 1 x 1 in a small model, else blocked (the blocked engine's closed-form
        level blocks cost less for vector templates; see ``linalg.choice``)."""
        if self.is_small() and evaluates_dense(self.structure):
            return self.dense_deviance(reml)
        return self.deviance_function(reml)

    def objective(self, reml: bool | None = None) -> LinearMixedObjective:
        """The model's criterion over all its parameters (theta, then the residual
        structure's), as :class:`~mixedmodels.objective.model_objective.LinearMixedObjective`."""
        key = self.reml if reml is None else bool(reml)
        if key not in self._objectives:
            fixed = blocked = None
            if not self.has_residual_structure:
                fixed = self.evaluation_deviance(key)

                def blocked(reml: bool = key) -> ProfiledDeviance:
                    return self.deviance_function(reml)

            self._objectives[key] = LinearMixedObjective(
                self.structure, self.residual_structure, key, fixed, blocked
            )
        return self._objectives[key]

    def _check_not_exact(self, reml: bool) -> None:
        """Refuse a response that the fixed effects reproduce exactly (OLS RSS ~ 0).

        ``[X y]'W[X y]`` is read from what the fit builds anyway: the trailing block of the
        dense ``A`` of a small model (built for its fit), else the blocks' ``xytxy``.
        """
        if self._cross_products is None and self.is_small():
            W = self.dense_deviance(reml).system.W
            q = W.shape[0] - self.design.X.shape[1] - 1
            A = W[q:, q:]
        else:
            A = self.cross_products.xytxy
        C = cholesky_or_none(np.asarray(A))
        r = 0.0 if C is None else C[-1, -1]
        if r * r <= 1e-20 * max(float(A[-1, -1]), 1e-300):
            raise DataError(
                "the fixed effects reproduce the response exactly (residual sum of squares "
                "~0), so no variance can be estimated; check that the response is not "
                "computed from the predictors"
            )

    def fit(
        self,
        *,
        reml: bool | None = None,
        start: np.ndarray | None = None,
        options: OptimizerOptions | None = None,
    ) -> LinearMixedModelResult:
        """Optimise theta and return immutable results.

        Parameters
        ----------
        reml
            Override the model's REML flag for this fit (e.g. ML refits for LRTs).
        start
            Starting theta (default: lme4's identity templates, with scalar terms at a
            method-of-moments estimate).
        options
            Optimiser tolerances.
        """
        use_reml = self.reml if reml is None else bool(reml)
        with blas_threads_for(self.rest_size):
            self._check_not_exact(use_reml)
            return self._fit(use_reml, start, options)

    def _fit(
        self,
        use_reml: bool,
        start: np.ndarray | None,
        options: OptimizerOptions | None,
        start_steps: np.ndarray | None = None,
    ) -> LinearMixedModelResult:
        precomputed: dict[str, Any] = {}
        objective = None  # one residual variance: the result builds it if asked
        if self.repeated is not None and self.repeated.on_fitted:
            return self._fit_fixed_point(use_reml, start, options)
        if not self.has_residual_structure:
            # Small models: the gradient and the estimates in dense form (linalg/dense.py);
            # the optimiser's evaluations too when every template is 1 x 1, or when Newton
            # steps (below) take them: they need a value only now and then, and the blocked
            # system would cost more to build (its cross products and set-up, ~100 us cold)
            # than it saves. BOBYQA with vector templates evaluates the blocked engine
            # (its closed-form level blocks cost less per value). Large models: blocked.
            early = options is None
            small = self.is_small()
            if small and (early or evaluates_dense(self.structure)):
                dev = dense = self.dense_deviance(use_reml)
            else:
                dev = self.evaluation_deviance(use_reml)
                # Built after the blocks (if any), so that its A is assembled from them
                # rather than formed from the rows a second time.
                dense = self.dense_deviance(use_reml) if small else None
            lower = self.structure.lower_bounds()
            steps = None
            if start is None:
                # Scalar terms start at a moment estimate: on large data that halves the
                # evaluations (see objective/start.py).
                x0, steps = dev.moment_start((options or _DEFAULT_OPTIONS).initial_step)
            else:
                x0 = np.asarray(start, float)
                steps = start_steps
            # Newton steps on the analytic gradient finish an interior optimum to ~1e-10,
            # so BOBYQA may stop earlier (20-50% fewer evaluations). A boundary optimum
            # cannot be finished that way: its restart (see minimize_with_restart) runs to
            # the tight tolerances. Options the caller passes are used as given.
            tight = _DEFAULT_OPTIONS if early else None
            first = _BEFORE_NEWTON if early else options
            if dense is not None:
                gradient = _dense_gradient(dense)
            else:
                gradient = ProfiledDevianceGradient(dev)
            found = None
            kept = None
            if early and isinstance(gradient, OneTermDerivatives):
                # Newton steps from the start where the derivatives are cheap (one scalar
                # term: in closed form, with the Hessian); BOBYQA where they cannot (an
                # optimum on the boundary, a start far from convex). Models with more
                # parameters stay with BOBYQA: their Hessian from dense gradients costs
                # k gradients of 3-5 evaluations each, and measured warm (2 cores, AMD
                # EPYC) Newton-first was 15% faster on sleepstudy (Days|Subject), even on
                # Orthodont, 10-13% slower on Pastes and Penicillin and 30% slower on
                # ratpup (1 + sex|litter) (a flat direction: linear convergence).
                kept = _EstimatesAt(dense)
                found = newton_first(
                    dev,
                    gradient.value_and_gradient,
                    _newton_hessian(gradient),
                    x0,
                    lower,
                    final=kept,
                )
            elif early and isinstance(gradient, DenseDevianceGradient):
                # Small models with several parameters: projected Newton steps on the
                # exact Hessian from the moment start (bounds included: a template
                # diagonal on 0 is held there or certified by its curvature); BOBYQA
                # below where they cannot certify an optimum.
                kept = _EstimatesAt(dense)
                found = bounded_newton(
                    dev,
                    _exact_derivatives(gradient),
                    x0,
                    lower,
                    gradient.singular_entries,
                    _template_columns(self.structure),
                    _exact_gradient(gradient),
                    _even_entries(self.structure),
                    final=kept,
                )
            elif early and getattr(gradient, "newton_from_start", False):
                if gradient.cheap:
                    # The large path (1e6 users with slopes, their items): the finish's
                    # Newton steps with BFGS updates from the start (newton_secant_first).
                    found = newton_secant_first(dev, gradient, x0, lower)
                else:
                    # A wide dense rest block (issue 18): Newton steps from the moment
                    # start take fewer of its dear factorisations than BOBYQA and the
                    # finish.
                    found = newton_from_start(
                        dev,
                        gradient,
                        x0,
                        lower,
                        gradient.value_step_max,
                        blocks=self.structure.theta_blocks(),
                    )
            if found is not None:
                summary = self._finish_and_check(
                    dev, found.summary, gradient=gradient, finished=found.hessian
                )
            else:
                # BOBYQA (where Newton steps could not certify an optimum) on the system
                # that evaluates fastest.
                dev = self.evaluation_deviance(use_reml)
                summary = self._finish_and_check(
                    dev,
                    minimize_with_restart(
                        dev, x0, lower, first, self.structure.ntheta, steps, finish_with=tight
                    ),
                    gradient=gradient,
                )
            if found is None and early and not gradient_is_small(summary):
                # The early stop left a point the Newton finish could not complete (a step
                # would cross a bound: an optimum close to the boundary). Run BOBYQA to
                # the tight tolerances from there, then finish again. (Newton steps from
                # the start end at a point their exact derivatives certify; on the
                # boundary the check's gradient from differences is not theirs.)
                again = polish(dev, summary.final_theta, lower, tight)
                again, used = snap_to_bounds(dev, again, np.isfinite(lower))
                again = replace(again, evaluations=summary.evaluations + again.evaluations + used)
                summary = self._finish_and_check(dev, again, gradient=gradient)
            # A dense fit's estimates come from its factor at the optimum; the blocked
            # deviance and the cross-product blocks are built only if a result asks.
            at_optimum = None if dev is dense else dev
            if dense is not None:
                found_there = None if kept is None else kept.at(summary.final_theta)
                if found_there is None:
                    found_there = dense.estimates(summary.final_theta)
                estimates, value = found_there
                precomputed = {"estimates": estimates, "objective": value}
        else:
            objective = self.objective(use_reml)
            return self._fit_objective(objective, use_reml, start, options)
        return self._result(objective, at_optimum, summary, use_reml, precomputed)

    def _fit_objective(
        self,
        objective: LinearMixedObjective,
        use_reml: bool,
        start: np.ndarray | None,
        options: OptimizerOptions | None,
        quiet: bool = False,
    ) -> LinearMixedModelResult:
        """Optimise a criterion over theta and residual parameters (BOBYQA from the start)."""
        x0 = objective.initial_values()
        if start is not None:
            # theta alone (e.g. a REML fit's theta for an ML refit) or all parameters
            start = np.asarray(start, float)
            x0[: start.shape[0]] = start
        lower = objective.lower_bounds()
        first = minimize_with_restart(objective, x0, lower, options, self.structure.ntheta)
        if self.repeated is not None:
            # No analytic gradient finishes these optima (correlation and variance-function
            # parameters), and their criteria are flat along some directions (a random
            # intercept against a positive correlation): a second BOBYQA from the optimum,
            # with a small trust region, takes the last 1e-6 of the log-likelihood that the
            # fixed effects (1e-4 against nlme) need; repeated while it still gains.
            for _ in range(_POLISH_MAX):
                again = polish(objective, first.final_theta, lower, options or OptimizerOptions())
                gain = first.final_objective - again.final_objective
                best = again if gain > 0 else first
                first = replace(best, evaluations=first.evaluations + again.evaluations)
                if gain < 1e-10 * max(1.0, abs(first.final_objective)):
                    break
            if not quiet:
                k = first.final_theta.shape[0]
                first = _newton_by_differences(objective, first, lower, 3 if k <= 8 else 1)
        summary = self._finish_and_check(objective, first)
        at_optimum = objective.factored_at(objective.split(summary.final_theta)[1])
        return self._result(objective, at_optimum, summary, use_reml, {}, quiet=quiet)

    def _result(self, objective, at_optimum, summary, use_reml, precomputed, quiet=False):
        result = LinearMixedModelResult(
            model=self,
            objective_function=objective,
            deviance_function=at_optimum,
            opt=summary,
            reml=use_reml,
            **precomputed,
        )

        if quiet:
            return result
        for msg in summary.messages:
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        if result.singular:
            warnings.warn(
                "boundary (singular) fit: a random-effect variance is estimated as 0 or a "
                "correlation as +-1; consider simplifying the random-effects structure",
                SingularFitWarning,
                stacklevel=3,
            )
        return result

    # --- A new response: refit and the parametric bootstrap. ------------------------------
    def with_response(self, y: np.ndarray) -> LinearMixedModel:
        """The same model for a new response ``y`` (one value per row of the design).

        Nothing symbolic is done again: no formula, no design, no system set-up. Only the
        ``y`` row of the cross products changes (``Z'Wy``, ``X'Wy``, ``y'Wy``, one pass over
        the rows); the systems built so far take the new values (``with_values``). With
        residual variances by group the blocks of each group are formed again.
        """
        if not self.has_rows:
            raise ModelSpecificationError(
                "this model was fitted from precomputed cross products (streamed data) "
                "without its rows, so it cannot be refitted to a new response"
            )
        if self.repeated is not None:
            # Its residual structure whitens the rows group by group: a new response needs
            # the structure's own blocks, which with_response does not form yet.
            raise ModelSpecificationError(
                "refits to a new response (refit, simulate, power, bootstrap) are not "
                "available for fits with a residual correlation or variance function yet; "
                "fit the new data with mm.lmer(..., correlation=, variance=)"
            )
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (self.nobs,):
            raise DataError(
                f"the new response has shape {y.shape}, but the model has {self.nobs} rows; "
                "pass one value per row used in the fit (fit.nobs)"
            )
        if not np.all(np.isfinite(y)):
            raise DataError("the new response has missing or infinite values")
        new = object.__new__(LinearMixedModel)
        new.__dict__.update(self.__dict__)
        new.design = replace(self.design, y=y)
        new.y = y if self.offset is None else y - self.offset
        new._objectives = {}
        new._residual = None
        if self.residual_strata is not None:
            strata = self.residual_strata
            blocks = compute_stratified_cross_products(
                self.terms, self.design.X, new.y, strata.codes, strata.nstrata, self.weights
            )
            new._residual = VarIdent(strata, blocks, self.log_jacobian)
            new._cross_products = blocks.combine(np.ones(strata.nstrata))
            new._deviances, new._dense = {}, {}
            return new
        v = response_products(self.terms, self.design.X, new.y, self.weights)
        new._cross_products = None
        if self._cross_products is not None:
            new._cross_products = with_response_products(self._cross_products, v)
        # The systems take the new values when first asked for (a bootstrap refit needs
        # one of them, a full refit both).
        new._dense, new._deviances = {}, {}
        # Any model of the chain of refits has the same systems: keep the first (no chain
        # of parents grows in a loop of refits of refits).
        source = self.__dict__.get("_response_source")
        new._response_source = (self if source is None else source[0], v)
        return new

    def _derived_system(self, cache: str, key: bool) -> ProfiledDeviance | None:
        """A deviance of :meth:`with_response`'s source model on this model's response."""
        source = self.__dict__.get("_response_source")
        if source is None:
            return None
        parent, v = source
        if cache == "_dense":
            dev = parent.dense_deviance(key)
            W = dev.system.W.copy()
            W[-1, :] = v
            W[:, -1] = v
            return ProfiledDeviance(dev.system.with_values(W), key, dev.constant)
        dev = parent.deviance_function(key)
        if self._cross_products is None:
            self._cross_products = with_response_products(parent.cross_products, v)
        # Only the y row and column differ from the parent's blocks: a small dense system
        # re-forms just those (a bootstrap refit's whole set-up).
        system = dev.system.with_response(self._cross_products)
        return ProfiledDeviance(system, key, dev.constant)

    def refit(
        self, y: np.ndarray, *, start: np.ndarray | None = None, reml: bool | None = None
    ) -> LinearMixedModelResult:
        """Fit the model to a new response, from ``start`` (e.g. the first fit's optimum).

        :meth:`with_response`, then the fit of :meth:`fit` from ``start`` with a first trust
        region a tenth of each parameter's size (a refit's optimum is usually near: 40
        rather than 60 evaluations on sleepstudy), finished by the same Newton steps and
        checked the same way; the optimum is the one :meth:`fit` finds on the new data.
        """
        model = self.with_response(y)
        use_reml = self.reml if reml is None else bool(reml)
        steps = None
        if start is not None and self.residual_strata is None:
            start = np.asarray(start, float)
            steps = _NEARBY_STEP * np.maximum(np.abs(start), _NEARBY_STEP)
        with blas_threads_for(self.rest_size):
            model._check_not_exact(use_reml)
            return model._fit(use_reml, start, None, steps)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (worker processes of a bootstrap or a power simulation): systems and
        objectives are rebuilt on first use; the design's spec for new data (which holds
        mapping proxies) is left behind, so a model in a worker refits but cannot predict."""
        state = self.__dict__.copy()
        state["design"] = replace(self.design, spec=None)
        state.update(_deviances={}, _dense={}, _objectives={}, _response_source=None)
        if isinstance(state.get("_residual"), Homoscedastic):
            state["_residual"] = None
        return state

    def _fit_fixed_point(
        self, use_reml: bool, start: np.ndarray | None, options: OptimizerOptions | None
    ) -> LinearMixedModelResult:
        """nlme's fit of a variance function of the fitted values (``power(fitted)``).

        The fitted values are a covariate held fixed while the criterion is optimised and
        updated between optimisations until neither they nor the parameters change: the
        estimate is that fixed point, as nlme's (not the maximiser of the likelihood with
        the fitted values recomputed at every delta). The first fitted values come from the
        model without that variance function.
        """
        base = self.repeated
        assert base is not None
        kept = [v for v in base.variances if not v.on_fitted]
        nfitted = (
            len(base.names)
            - sum(len(v.names) for v in kept)
            - (0 if base.correlation is None else len(base.correlation.names))
        )
        first = base._with(variances=kept)
        result = self._fit_objective(
            LinearMixedObjective(self.structure, first, use_reml), use_reml, start, options, True
        )
        params = np.concatenate([result.opt.final_theta, np.zeros(nfitted)])
        mu = result.fitted.to_numpy()
        for _ in range(_FIXED_POINT_MAX):
            objective = LinearMixedObjective(self.structure, base.with_fitted(mu), use_reml)
            result = self._fit_objective(objective, use_reml, params, options, True)
            new_params = result.opt.final_theta
            new_mu = result.fitted.to_numpy()
            step = np.max(np.abs(new_params - params) / (1.0 + np.abs(params)), initial=0.0)
            moved = np.max(np.abs(new_mu - mu) / (1.0 + np.abs(mu)))
            params, mu = new_params, new_mu
            if step < _FIXED_POINT_TOL and moved < _FIXED_POINT_TOL:
                break
        else:
            warnings.warn(
                f"the variance function of the fitted values did not settle in "
                f"{_FIXED_POINT_MAX} refits (last relative change {max(step, moved):.2g}); "
                "the estimates may not be nlme's fixed point",
                ConvergenceWarning,
                stacklevel=3,
            )
        # The last fit, reported with its warnings.
        return self._fit_objective(objective, use_reml, params, options)

    # --- Convergence: the finish moves the optimum, the check only judges it. -------------
    def _finish_and_check(
        self, objective, summary: OptSummary, gradient=None, finished: np.ndarray | None = None
    ) -> OptSummary:
        """Newton finish (given an analytic gradient), then lme4's ``checkConv``.

        The check reuses the finish's Hessian; its messages name theta entries as
        ``group: term`` and the residual log SD ratios as ``residual: log SD ratio High``.
        ``finished``: the Hessian of an optimum that Newton steps already found
        (:func:`~mixedmodels.optimize.finish.newton_first`; exact or from gradients), which
        needs no further finish.
        """
        hessian, accurate = None, False
        if finished is not None:
            hessian, accurate = finished, True
        elif gradient is not None:
            summary, hessian, accurate = newton_finish(objective, gradient, summary)
        extra = summary.final_theta.shape[0] - self.structure.ntheta

        # Names and blocks are asked for only when the check needs them (a message, a
        # boundary): a clean fit does not pay for them.
        def names() -> list[str]:
            labels = self.structure.theta_labels()
            if extra and self.residual_strata is not None:  # one per non-reference stratum
                strata = self.residual_strata
                labels += [f"residual: log SD ratio {label}" for label in strata.labels[1:]]
            elif extra:
                labels += [f"residual: {name}" for name in objective.residual.names]
            return labels

        def blocks() -> np.ndarray:
            b = self.structure.theta_blocks()
            return np.concatenate([b, np.max(b, initial=-1) + 1 + np.arange(extra)])

        return check_convergence(
            objective,
            summary,
            hessian=hessian,
            hessian_accurate=accurate,
            gradient=gradient,
            names=names,
            blocks=blocks,
        )


# Polishing BOBYQA runs of repeated-measures optima (each only while it gains; see _fit_objective).
_POLISH_MAX = 4
# Refits of a variance function of the fitted values before giving up on the fixed point.
_FIXED_POINT_MAX = 100
# ... and the relative change of parameters and fitted values at which it has settled
_FIXED_POINT_TOL = 1e-6


def _newton_by_differences(
    objective, summary: OptSummary, lower: np.ndarray, steps: int
) -> OptSummary:
    """Newton steps on finite-difference derivatives, kept while they lower the criterion.

    What the analytic-gradient Newton finish does for theta alone, for criteria without an
    analytic gradient (residual correlation and variance-function parameters): BOBYQA stops
    where the trust region has shrunk, which on a large, flat criterion can leave the
    scaled gradient of lme4's convergence check just above its tolerance. Each step costs
    k (k + 3) / 2 evaluations (k parameters): ``steps`` of them at most.
    """
    from mixedmodels.optimize.check import _derivatives

    x, f, used = summary.final_theta.copy(), summary.final_objective, 0
    for _ in range(steps):
        g, hessian = _derivatives(objective, x, f, lower)
        idx = np.arange(x.shape[0])
        H = hessian(idx)
        used += x.shape[0] * (x.shape[0] + 3) // 2
        C = cholesky_or_none(H)
        if C is None or not np.all(np.isfinite(g)):
            break
        step = np.linalg.solve(H, g)
        trial = np.maximum(x - step, lower)
        ft = objective(trial)
        used += 1
        if not ft < f:
            break
        x, f = trial, ft
        if np.max(np.abs(step)) < 1e-7:
            break
    used += summary.evaluations
    return replace(summary, final_theta=x, final_objective=f, evaluations=used)


class _EstimatesAt:
    """The dense criterion that keeps the estimates of the last point it was asked for.

    Newton steps take their last value at the optimum (:func:`~mixedmodels.optimize.
    bounded_newton.bounded_newton`'s ``final``); the estimates there come from the same
    factorisation (:meth:`~mixedmodels.linalg.dense.DenseSystem.estimates`: a few
    triangular solves more), which the fit would otherwise repeat.
    """

    def __init__(self, dense: ProfiledDeviance):
        self._dense = dense
        self._point: np.ndarray | None = None
        self._found: tuple[Any, float] | None = None

    def __call__(self, theta: np.ndarray) -> float:
        """The criterion at ``theta`` (``inf`` where Omega is not positive definite)."""
        try:
            found = self._dense.estimates(theta)
        except np.linalg.LinAlgError:
            return math.inf
        self._point, self._found = np.array(theta, dtype=np.float64), found
        return found[1]

    def at(self, theta: np.ndarray) -> tuple[Any, float] | None:
        """The estimates and criterion kept for ``theta`` (None if it was not the last)."""
        point = self._point
        # (The few entries compared as Python floats: np.array_equal's wrapper costs more.)
        if point is None or point.shape != theta.shape or point.tolist() != theta.tolist():
            return None
        return self._found


def _dense_gradient(dense: ProfiledDeviance) -> DenseDevianceGradient | OneTermDerivatives:
    """The analytic gradient of a small model's criterion: in closed form with its Hessian
    for one scalar term (:class:`~mixedmodels.objective.gradient.OneTermDerivatives`, a
    ``(p + 1) x (p + 1)`` factorisation), else from the dense factor."""
    terms = dense.structure.terms
    if len(terms) == 1 and terms[0].ncols == 1 and dense.structure.ntheta == 1:
        return OneTermDerivatives(dense)
    return DenseDevianceGradient(dense)


def _newton_hessian(gradient: DenseDevianceGradient | OneTermDerivatives):
    """``hessian(x, g)`` for :func:`~mixedmodels.optimize.finish.newton_first`: exact where
    the gradient object gives it, else from differences of the gradient."""
    exact = getattr(gradient, "hessian", None)
    return exact if exact is not None else gradient_differences(gradient)


def _exact_derivatives(gradient: DenseDevianceGradient):
    """``derivatives(x) -> (f, g, H)`` for :func:`~mixedmodels.optimize.bounded_newton.
    bounded_newton`: the exact ones, finite on the boundary too."""

    def derivatives(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        return gradient.value_gradient_and_hessian(x, singular_nan=False)

    return derivatives


def _template_columns(structure: CovarianceStructure) -> list[np.ndarray]:
    """:func:`~mixedmodels.optimize.bounded_newton.template_columns` of the structure (none
    without a vector-valued term: no call for scalar terms)."""
    if structure.all_scalar:
        return []
    return template_columns(structure.rows, structure.cols, structure.offsets)


def _even_entries(structure: CovarianceStructure) -> np.ndarray | None:
    """The theta entries of vector-valued terms that the criterion sees only through their
    square (a diagonal with nothing below it in its template column: the last one), for
    :func:`~mixedmodels.optimize.bounded_newton.bounded_newton`; None without such terms.

    On Python lists: a template has a handful of entries, where NumPy calls per entry
    would cost more (a cold path per fit)."""
    if structure.all_scalar:
        return None
    even = np.zeros(structure.ntheta, dtype=bool)
    offsets = [int(o) for o in structure.offsets]
    for k, term in enumerate(structure.terms):
        if term.ncols == 1:
            continue
        r, c = structure.rows[k].tolist(), structure.cols[k].tolist()
        below = {cj for ri, cj in zip(r, c, strict=True) if ri > cj}  # columns with entries below
        for j, (rj, cj) in enumerate(zip(r, c, strict=True)):
            if rj == cj and cj not in below:
                even[offsets[k] + j] = True
    return even


def _exact_gradient(gradient: DenseDevianceGradient):
    """``value_and_gradient(x) -> (f, g)`` for :func:`~mixedmodels.optimize.bounded_newton.
    bounded_newton`: finite on the boundary too."""

    def value_and_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        return gradient.value_and_gradient(x, singular_nan=False)

    return value_and_gradient


def _null_terms(n: int) -> tuple[GroupedTerm, ...]:
    """The engine's one term of a model without random effects (nlme's gls): one level, a
    zero column and no parameters, so ``Lambda = 0`` and the criterion is gls's."""
    return (
        GroupedTerm(
            group="(no random effects)",
            levels=("(all)",),
            refs=np.zeros(n, dtype=np.int64),
            z=np.zeros((n, 1)),
            column_names=("(none)",),
            blocks=(),
        ),
    )


# BOBYQA's tolerances when Newton steps finish the optimum (see LinearMixedModel._fit).
_BEFORE_NEWTON = OptimizerOptions(ftol_rel=1e-7, ftol_abs=1e-5, xtol_abs=1e-4)
# The defaults (frozen, so one instance serves every fit).
_DEFAULT_OPTIONS = OptimizerOptions()
# A refit's first BOBYQA trust region, relative to each start value (see refit).
_NEARBY_STEP = 0.1
