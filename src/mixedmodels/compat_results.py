"""statsmodels' ``MixedLMResults``, computed from a mixedmodels fit.

:mod:`mixedmodels.compat` maps a ``smf.mixedlm`` call onto an lme4 formula and fits it with
mixedmodels; this module presents that fit with statsmodels' attribute names, layouts and
meanings (statsmodels 0.14/0.15, ``statsmodels.regression.mixed_linear_model``):

* column names as patsy makes them (``Intercept``, ``C(treatment)[T.High]``), in patsy's
  column order: terms without numeric variables first, then one bucket per set of numeric
  variables in order of first appearance, each sorted by interaction order;
* ``params`` = fixed effects, then the lower triangle (row by row) of the random-effects
  covariance divided by the residual variance (``"Group Var"``, ``"Group x Days Cov"``,
  ``"Days Var"``), then the variance components divided by the residual variance, sorted by
  name (``"sex Var"``);
* ``cov_params()`` = the inverse of minus the Hessian of statsmodels' profile log-likelihood
  (residual variance profiled out) with respect to those parameters, the fixed effects
  included as free parameters; ``bse``, ``tvalues``, ``pvalues`` (normal) and ``conf_int``
  follow from it as in statsmodels.

statsmodels computes that Hessian analytically; here it is a central-difference Hessian of
the same log-likelihood, written in the Woodbury form (``V = I + Z Psi Z'``, with ``q`` the
number of random effects)::

    log|V|       = log|I_q + Psi Z'Z|
    r' V^-1 r    = r'r - (Z'r)' W (Z'r),      W = (I_q + Psi Z'Z)^-1 Psi
    X' V^-1 X    = X'X - (Z'X)' W (Z'X)
    REML: l = -(n-p)/2 log(r'V^-1 r) - 1/2 log|V| - 1/2 log|X'V^-1 X|
              - (n-p)/2 (1 + log(2 pi) - log(n-p))
    ML:   l = -n/2 log(r'V^-1 r) - 1/2 log|V| - n/2 (1 + log(2 pi) - log n)

(Lindstrom & Bates 1988, JASA 83: 1014; statsmodels' ``MixedLM.loglike`` with
``profile_fe=False``). Dense ``q x q`` algebra: meant for tutorial-sized data (thousands of
random effects at most), which is what readers of a statsmodels tutorial fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import ModelSpecificationError

__all__ = ["MixedLMModel", "MixedLMResults", "MixedLMSummary", "patsy_column_order"]


@dataclass(frozen=True)
class Component:
    """One statsmodels random-effects part and the random term of the lme4 formula it became.

    Attributes
    ----------
    kind
        ``"re"`` (the ``re_formula`` effects) or ``"vc"`` (one ``vc_formula`` entry).
    name
        The vc name (the dict key); the group name for ``"re"``.
    member
        Index of the random term in the lme4 formula (design order).
    text
        For ``"vc"``: the variable as written (``"C(sex)"``), for statsmodels' column names.
    is_factor
        For ``"vc"``: one effect per level of a factor within each group.
    """

    kind: str
    name: str
    member: int
    text: str = ""
    is_factor: bool = False


def _patsy_factor_name(name: str) -> str:
    """patsy's spelling of a factor: one space after each comma (``C(sex, Treatment('M'))``)."""
    return re.sub(r"\s*,\s*", ", ", name.strip())


def patsy_column_order(plan: Any, factors: dict[str, Any]) -> tuple[list[str], list[int]]:
    """patsy's names of a design plan's columns and patsy's order of them.

    Parameters
    ----------
    plan
        A :class:`mixedmodels.design.build.MatrixPlan` (engine column order: R's).
    factors
        The design's factor levels, by variable name.

    Returns
    -------
    names
        patsy name of each engine column (engine order).
    order
        Engine column indices in patsy's order.
    """
    names: list[str] = []
    r_names: list[str] = []
    term_columns: list[list[int]] = []
    keys: list[tuple[frozenset[str], int]] = []
    if plan.intercept:
        names.append("Intercept")
        r_names.append("(Intercept)")
        term_columns.append([0])
        keys.append((frozenset(), 0))
    for term in plan.terms:
        block: list[str] = []
        r_block: list[str] = []
        numeric: set[str] = set()
        for i, (var, coding) in enumerate(zip(term.variables, term.codings, strict=True)):
            if coding == "numeric":
                vb, rb = [_patsy_factor_name(var.name)], [var.name]
                numeric.add(var.name)
            else:
                levels = factors[var.name]
                kept = [
                    lev
                    for j, lev in enumerate(levels.levels)
                    if coding == "full" or j != levels.reference
                ]
                fmt = "{}[T.{}]" if coding == "contrast" else "{}[{}]"
                vb = [fmt.format(_patsy_factor_name(var.name), lev) for lev in kept]
                rb = [var.label + lev for lev in kept]
            if i == 0:
                block, r_block = vb, rb
            else:  # the first variable varies fastest, in patsy as in the engine
                block = [f"{a}:{b}" for b in vb for a in block]
                r_block = [f"{a}:{b}" for b in rb for a in r_block]
        start = len(names)
        names.extend(block)
        r_names.extend(r_block)
        term_columns.append(list(range(start, len(names))))
        keys.append((frozenset(numeric), len(term.variables)))
    if tuple(r_names) != tuple(plan.column_names):
        raise ModelSpecificationError(
            "cannot name the design's columns as patsy does for this formula; use "
            "mixedmodels.lmer and its R-style names instead"
        )
    bucket_order: list[frozenset[str]] = []
    for bucket, _ in keys:
        if bucket not in bucket_order:
            bucket_order.append(bucket)
    if frozenset() in bucket_order:
        bucket_order.remove(frozenset())
        bucket_order.insert(0, frozenset())
    order: list[int] = []
    for bucket in bucket_order:
        members = [t for t, (b, _) in enumerate(keys) if b == bucket]
        members.sort(key=lambda t: keys[t][1])  # stable: formula order within a degree
        for t in members:
            order.extend(term_columns[t])
    return names, order


class MixedLMModel:
    """statsmodels' ``MixedLM`` model attributes of a compat fit (``result.model``).

    Attributes
    ----------
    endog, exog
        Response and fixed-effects matrix (numpy arrays, patsy column order).
    exog_names, endog_name, endog_names
        patsy column names; the response name.
    groups
        The group of each row (numpy array), ``group_labels`` the sorted distinct groups.
    exog_re_names
        Names of the ``re_formula`` columns (``"Intercept"`` replaced by the group name).
    formula, lme4_formula
        The statsmodels formula and the lme4 formula that was fitted.
    """

    def __init__(self, **kw: Any):
        self.__dict__.update(kw)

    @property
    def nobs(self) -> int:
        return int(self.endog.shape[0])

    @property
    def n_groups(self) -> int:
        return len(self.group_labels)

    def __repr__(self) -> str:
        return f"<mixedmodels.compat MixedLM: lmer({self.lme4_formula!r})>"


class _ProfileLikelihood:
    """statsmodels' log-likelihood in its own parameters, from the cross products of [Z X y]."""

    def __init__(
        self,
        fit: Any,
        components: list[Component],
        X: np.ndarray,
        k_re: int,
        re_perm: list[int],
    ):
        terms = fit.structure.terms
        y = np.asarray(fit.design.y, dtype=float)
        n = y.shape[0]
        rows, cols, vals = [], [], []
        self.offsets: list[int] = []
        q = 0
        for term in terms:
            self.offsets.append(q)
            for j in range(term.ncols):
                rows.append(np.arange(n))
                cols.append(q + term.refs * term.ncols + j)
                vals.append(term.z[:, j])
            q += term.nlevels * term.ncols
        Z = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, q)
        )
        self.terms = terms
        self.q = q
        self.G = (Z.T @ Z).toarray()
        self.ZX = np.asarray(Z.T @ X)
        self.Zy = np.asarray(Z.T @ y).ravel()
        self.XX = X.T @ X
        self.Xy = X.T @ y
        self.yy = float(y @ y)
        self.n, self.p = X.shape
        self.k_re = k_re
        self.re_perm = re_perm
        self.reml = bool(fit.reml)
        # where each component sits: (term index, start, stop) of its block
        self.slots = []
        for comp in components:
            for k, term in enumerate(terms):
                if comp.member in term.members:
                    start, stop = term.blocks[term.members.index(comp.member)]
                    self.slots.append((k, start, stop))
                    break
            else:  # pragma: no cover - every component is a random term of the formula
                raise ValueError(f"random term {comp.member} not found")
        self.n_re_comps = 1 if k_re else 0

    def psi(self, cov_re: np.ndarray, vcomp: np.ndarray) -> np.ndarray:
        """Relative covariance of all random effects (q x q), level-major per term."""
        templates = [np.zeros((t.ncols, t.ncols)) for t in self.terms]
        values = []
        if self.k_re:  # back from patsy's order to the engine's
            engine = np.zeros_like(cov_re)
            engine[np.ix_(self.re_perm, self.re_perm)] = cov_re
            values.append(engine)
        values += [np.array([[v]]) for v in vcomp]
        for (k, start, stop), value in zip(self.slots, values, strict=True):
            templates[k][start:stop, start:stop] = value
        blocks = [
            sp.kron(sp.identity(t.nlevels), sp.csr_matrix(s))
            for t, s in zip(self.terms, templates, strict=True)
        ]
        return sp.block_diag(blocks).toarray()

    def unpack(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p, k = self.p, self.k_re
        k2 = k * (k + 1) // 2
        beta = params[:p]
        cov_re = np.zeros((k, k))
        if k:
            il = np.tril_indices(k)
            cov_re[il] = params[p : p + k2]
            cov_re = cov_re + np.tril(cov_re, -1).T
        return beta, cov_re, params[p + k2 :]

    def _gls(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float, float]:
        """``X'V^-1 X``, ``X'V^-1 y``, ``y'V^-1 y``, ``log|V|`` and ``log|X'V^-1 X|``."""
        p = self.p
        _, cov_re, vcomp = self.unpack(np.concatenate([np.zeros(p), theta]))
        Psi = self.psi(cov_re, vcomp)
        M = np.eye(self.q) + Psi @ self.G
        sign, logdet_v = np.linalg.slogdet(M)
        if sign <= 0:
            return np.zeros((p, p)), np.zeros(p), np.nan, np.nan, np.nan
        W = np.linalg.solve(M, Psi)
        WZX = W @ self.ZX
        A = self.XX - self.ZX.T @ WZX
        b = self.Xy - WZX.T @ self.Zy
        c = self.yy - float(self.Zy @ W @ self.Zy)
        _, logdet_x = np.linalg.slogdet(A)
        return A, b, c, float(logdet_v), float(logdet_x)

    def _split(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(params, dtype=float)
        return x[: self.p], x[self.p :]

    def loglike(self, params: np.ndarray) -> float:
        beta, theta = self._split(params)
        A, b, c, logdet_v, logdet_x = self._gls(theta)
        if not np.isfinite(c):
            return -np.inf
        qf = c - 2.0 * float(b @ beta) + float(beta @ A @ beta)
        n, p = self.n, self.p
        if self.reml:
            m = n - p
            return float(
                -m / 2 * np.log(qf)
                - logdet_v / 2
                - logdet_x / 2
                - m / 2 * (1 + np.log(2 * np.pi) - np.log(m))
            )
        return float(
            -n / 2 * np.log(qf) - logdet_v / 2 - n / 2 * (1 + np.log(2 * np.pi) - np.log(n))
        )

    def _beta_gradient(self, beta: np.ndarray, theta: np.ndarray) -> np.ndarray:
        A, b, c, _, _ = self._gls(theta)
        qf = c - 2.0 * float(b @ beta) + float(beta @ A @ beta)
        m = self.n - self.p if self.reml else self.n
        return -m * (A @ beta - b) / qf

    def hessian(self, params: np.ndarray) -> np.ndarray:
        """Hessian in (beta, covariance parameters).

        The beta block is exact: ``l`` depends on beta only through the quadratic
        ``qf(beta) = c - 2 b'beta + beta'A beta``, so ``d2l/dbeta2 = -m (A/qf - 2 g g'/qf^2)``
        with ``g = A beta - b`` and ``m`` = n - p (REML) or n. The covariance block (second
        differences of ``l``) and the cross block (first differences of the exact beta
        gradient) are central differences with one Richardson step (error O(h^4)).
        """
        beta, theta = self._split(params)
        p, r = beta.shape[0], theta.shape[0]
        A, b, c, _, _ = self._gls(theta)
        qf = c - 2.0 * float(b @ beta) + float(beta @ A @ beta)
        g = A @ beta - b
        m = self.n - p if self.reml else self.n
        H = np.empty((p + r, p + r))
        H[:p, :p] = -m * (A / qf - 2.0 * np.outer(g, g) / qf**2)
        # Steps of 1% (Richardson's O(h^4) truncation is then ~1e-8 relative): at 0.1% the
        # rounding of l (eps |l| / h^2) dominated, and a near-flat direction's standard error
        # moved by 1e-3 relative when the optimum moved by 4e-11 (ratpup, re_formula
        # "1 + C(sex)": 0.15404 or 0.15391 for 0.154040 at 1% and 3%).
        h = 1e-2 * np.maximum(np.abs(theta), 0.05)

        def f(t: np.ndarray) -> float:
            return self.loglike(np.concatenate([beta, t]))

        def second(i: int, j: int, scale: float) -> float:
            ei = np.zeros(r)
            ej = np.zeros(r)
            ei[i] = h[i] * scale
            ej[j] = h[j] * scale
            if i == j:
                return (f(theta + ei) - 2 * f(theta) + f(theta - ei)) / (ei[i] ** 2)
            return (
                f(theta + ei + ej) - f(theta + ei - ej) - f(theta - ei + ej) + f(theta - ei - ej)
            ) / (4 * ei[i] * ej[j])

        def cross(i: int, scale: float) -> np.ndarray:
            ei = np.zeros(r)
            ei[i] = h[i] * scale
            up = self._beta_gradient(beta, theta + ei)
            down = self._beta_gradient(beta, theta - ei)
            return (up - down) / (2 * ei[i])

        for i in range(r):
            col = (4 * cross(i, 0.5) - cross(i, 1.0)) / 3
            H[:p, p + i] = H[p + i, :p] = col
            for j in range(i + 1):
                v = (4 * second(i, j, 0.5) - second(i, j, 1.0)) / 3
                H[p + i, p + j] = H[p + j, p + i] = v
        return H


class MixedLMSummary:
    """statsmodels' ``summary2.Summary`` layout: ``tables[0]`` fit facts, ``tables[1]`` estimates.

    ``tables[1]`` holds numbers (statsmodels holds formatted strings); the variance rows are
    on the data scale with their standard errors, and no z, p or interval (as statsmodels).
    """

    def __init__(self, info: pd.DataFrame, coefs: pd.DataFrame, title: str, notes: list[str]):
        self.tables = [info, coefs]
        self.title = title
        self.notes = notes

    def as_text(self) -> str:
        info = self.tables[0].to_string(header=False, index=False)
        coefs = self.tables[1].to_string(float_format=lambda v: f"{v:.3f}", na_rep="")
        width = max(len(line) for line in (info + "\n" + coefs).splitlines())
        rule = "=" * width
        parts = [self.title.center(width), rule, info, rule, coefs, rule, *self.notes]
        return "\n".join(parts)

    def as_html(self) -> str:
        return self.tables[0].to_html(header=False, index=False) + self.tables[1].to_html(
            na_rep="", float_format=lambda v: f"{v:.3f}"
        )

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        return self.as_text()

    def _repr_html_(self) -> str:
        return self.as_html()


class MixedLMResults:
    """A mixedmodels fit with statsmodels' ``MixedLMResults`` attributes and meanings.

    Attributes
    ----------
    params, fe_params, bse, bse_fe, bse_re, tvalues, pvalues
        As statsmodels (see the module docstring); pandas Series indexed by statsmodels'
        parameter names (numpy arrays for ``bse_fe``/``bse_re``).
    llf, scale, converged, method, nobs
        REML (or ML) log-likelihood, residual variance, convergence, ``"REML"``/``"ML"``.
    cov_re, cov_re_unscaled, vcomp
        Random-effects covariance (DataFrame named as statsmodels), divided by ``scale``,
        and the variance components (array, sorted by name).
    fittedvalues, resid
        ``X beta + Z b`` and ``y`` minus it (Series on the data's index).
    random_effects
        ``{group: Series}`` of conditional modes, named as statsmodels.
    model
        :class:`MixedLMModel`: ``exog``, ``endog``, ``groups``, ``exog_names``, ...
    mixedmodels_result
        The :class:`~mixedmodels.results.LinearMixedModelResult` behind it all; attributes
        that statsmodels does not have (``fixef``, ``varcorr``, ``anova``...) are looked up
        there.
    """

    def __init__(
        self,
        fit: Any,
        *,
        components: list[Component],
        group_name: str,
        group_values: np.ndarray,
        formula: str,
        lme4_formula: str,
    ):
        self.mixedmodels_result = fit
        design = fit.design
        spec = design.spec
        # fixed effects in patsy's names and order
        all_names, order = patsy_column_order(spec.fixed, spec.factors)
        kept = list(spec.kept_columns)
        position = {c: i for i, c in enumerate(kept)}
        perm = [position[c] for c in order if c in position]
        exog_names = [all_names[c] for c in order if c in position]
        X = np.asarray(design.X)[:, perm]
        beta = np.asarray(fit.estimates.beta)[perm]

        re_comp = [c for c in components if c.kind == "re"]
        vc_comps = sorted((c for c in components if c.kind == "vc"), key=lambda c: c.name)
        comps = re_comp + vc_comps
        terms = fit.structure.terms
        sigma2 = float(fit.sigma**2)
        templates = fit.structure.templates(fit.theta)

        def block_of(comp: Component) -> tuple[int, int, int]:
            for k, term in enumerate(terms):
                if comp.member in term.members:
                    start, stop = term.blocks[term.members.index(comp.member)]
                    return k, start, stop
            raise ValueError(f"random term {comp.member} not found")  # pragma: no cover

        # re_formula columns: patsy names and order within the re block
        k_re = 0
        re_names: list[str] = []
        re_perm: list[int] = []
        cov_re_unscaled = np.zeros((0, 0))
        if re_comp:
            k, start, stop = block_of(re_comp[0])
            plan = spec.random[re_comp[0].member].matrix
            rnames, rorder = patsy_column_order(plan, spec.factors)
            rkept = list(spec.random[re_comp[0].member].columns)
            rpos = {c: i for i, c in enumerate(rkept)}
            re_perm = [rpos[c] for c in rorder if c in rpos]
            re_names = [rnames[c].replace("Intercept", group_name) for c in rorder if c in rpos]
            T = templates[k]
            rel = (T @ T.T)[start:stop, start:stop]
            cov_re_unscaled = rel[np.ix_(re_perm, re_perm)]
            k_re = len(re_names)
        vc_unscaled = []
        for comp in vc_comps:
            k, start, _ = block_of(comp)
            T = templates[k]
            vc_unscaled.append(float((T @ T.T)[start, start]))
        vcomp_unscaled = np.asarray(vc_unscaled)

        param_names = list(exog_names)
        packed = []
        for i in range(k_re):
            for j in range(i + 1):
                packed.append(cov_re_unscaled[i, j])
                if i == j:
                    param_names.append(f"{re_names[i]} Var")
                else:
                    param_names.append(f"{re_names[j]} x {re_names[i]} Cov")
        param_names += [f"{c.name} Var" for c in vc_comps]
        values = np.concatenate([beta, np.asarray(packed, dtype=float), vcomp_unscaled])

        self._likelihood = _ProfileLikelihood(fit, comps, X, k_re, re_perm)
        self.params = pd.Series(values, index=param_names)
        self.fe_params = pd.Series(beta, index=exog_names)
        p = len(exog_names)
        self.llf = float(fit.loglik)
        self.scale = sigma2
        self.converged = bool(fit.converged)
        self.method = "REML" if fit.reml else "ML"
        self.reml = bool(fit.reml)
        self.cov_re_unscaled = cov_re_unscaled
        self.cov_re = pd.DataFrame(sigma2 * cov_re_unscaled, index=re_names, columns=re_names)
        self.vcomp = sigma2 * vcomp_unscaled
        self.k_fe, self.k_re, self.k_vc = p, k_re, len(vc_comps)
        self.k_re2 = k_re * (k_re + 1) // 2
        self.nobs = int(fit.nobs)
        self.df_resid = self.nobs - int(np.linalg.matrix_rank(X))
        index = design.row_index
        self.fittedvalues = pd.Series(fit.fitted.to_numpy(), index=index)
        self.resid = pd.Series(fit.resid.to_numpy(), index=index)

        group_labels = sorted(pd.unique(group_values).tolist())
        self.model = MixedLMModel(
            endog=np.asarray(design.y, dtype=float),
            exog=X,
            exog_names=exog_names,
            endog_name=design.response_name,
            endog_names=design.response_name,
            groups=np.asarray(group_values),
            group_labels=group_labels,
            group_name=group_name,
            exog_re_names=re_names,
            formula=formula,
            lme4_formula=lme4_formula,
            k_fe=p,
            k_re=k_re,
            k_vc=len(vc_comps),
            reml=bool(fit.reml),
        )
        self.random_effects = self._random_effects(
            fit, re_comp, vc_comps, re_perm, re_names, group_values, block_of
        )

    def _random_effects(
        self, fit, re_comp, vc_comps, re_perm, re_names, group_values, block_of
    ) -> dict[Any, pd.Series]:
        terms = fit.structure.terms
        b = fit.estimates.b
        groups = np.asarray(group_values)
        labels = self.model.group_labels
        rows_of = {g: np.flatnonzero(groups == g) for g in labels}
        out: dict[Any, pd.Series] = {}
        for g in labels:
            rows = rows_of[g]
            vals: list[float] = []
            names: list[str] = list(re_names)
            if re_comp:
                k, start, stop = block_of(re_comp[0])
                level = terms[k].refs[rows[0]]
                vals.extend(b[k][level, start:stop][re_perm])
            for comp in vc_comps:
                k, start, _ = block_of(comp)
                term = terms[k]
                if comp.is_factor:
                    # one effect per level of the factor present in the group, patsy's
                    # order (sorted levels), named "<name>[<text>[<level>]]"
                    refs = term.refs[rows]
                    seen: dict[str, int] = {}
                    for r in refs:
                        label = term.levels[r].rsplit(":", 1)[-1]
                        seen.setdefault(label, int(r))
                    grouping = fit.design.spec.random[comp.member].grouping
                    rank = {lev: i for i, lev in enumerate(grouping.components[-1].levels)}
                    for label in sorted(seen, key=lambda lev: rank.get(lev, len(rank))):
                        names.append(f"{comp.name}[{comp.text}[{label}]]")
                        vals.append(float(b[k][seen[label], start]))
                else:
                    level = term.refs[rows[0]]
                    names.append(f"{comp.name}[{comp.text}]")
                    vals.append(float(b[k][level, start]))
            out[g] = pd.Series(np.asarray(vals, dtype=float), index=names)
        return out

    # -- standard errors: on first use (the Hessian costs O(q^3) per evaluation) ----------
    @cached_property
    def _cov_params(self) -> pd.DataFrame:
        names = self.params.index
        hess = self._likelihood.hessian(self.params.to_numpy())
        return pd.DataFrame(np.linalg.inv(-hess), index=names, columns=names)

    @cached_property
    def bse(self) -> pd.Series:
        """Standard errors of all parameters (fixed effects and variance parameters)."""
        return pd.Series(np.sqrt(np.diag(self._cov_params.to_numpy())), index=self.params.index)

    @property
    def bse_fe(self) -> np.ndarray:
        return self.bse.to_numpy()[: self.k_fe]

    @property
    def bse_re(self) -> np.ndarray:
        """Standard errors of the variance parameters on the data scale (``sqrt(scale) bse``)."""
        return np.sqrt(self.scale) * self.bse.to_numpy()[self.k_fe :]

    @property
    def tvalues(self) -> pd.Series:
        return self.params / self.bse

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided normal p-values of ``tvalues`` (statsmodels' MixedLM uses z)."""
        from scipy.special import ndtr

        z = np.abs(self.tvalues.to_numpy())
        return pd.Series(2.0 * ndtr(-z), index=self.params.index)

    # -- statsmodels' methods ------------------------------------------------------------
    def cov_params(self) -> pd.DataFrame:
        """Inverse of minus the Hessian of the profile log-likelihood (statsmodels' meaning)."""
        return self._cov_params.copy()

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Normal (Wald) intervals ``params -/+ z_(1-alpha/2) bse``; columns 0 and 1."""
        from scipy.special import ndtri

        z = float(ndtri(1.0 - alpha / 2.0))
        return pd.DataFrame(
            {0: self.params - z * self.bse, 1: self.params + z * self.bse},
            index=self.params.index,
        )

    @property
    def aic(self) -> float:
        """nan for REML fits (as statsmodels); -2 llf + 2 df for ML fits."""
        if self.reml:
            return float("nan")
        return -2 * self.llf + 2 * (self.k_fe + self.k_re2 + self.k_vc + 1)

    @property
    def bic(self) -> float:
        if self.reml:
            return float("nan")
        df = self.k_fe + self.k_re2 + self.k_vc + 1
        return -2 * self.llf + np.log(self.nobs) * df

    def summary(self, alpha: float = 0.05) -> MixedLMSummary:
        """statsmodels' summary: fit facts, then estimates with SEs, z, p and intervals."""
        sizes = pd.Series(self.model.groups).value_counts()
        info = pd.DataFrame(
            [
                ["Model:", "MixedLM", "Dependent Variable:", self.model.endog_name],
                ["No. Observations:", str(self.nobs), "Method:", self.method],
                ["No. Groups:", str(len(sizes)), "Scale:", f"{self.scale:.4f}"],
                ["Min. group size:", str(sizes.min()), "Log-Likelihood:", f"{self.llf:.4f}"],
                [
                    "Max. group size:",
                    str(sizes.max()),
                    "Converged:",
                    "Yes" if self.converged else "No",
                ],
                ["Mean group size:", f"{sizes.mean():.1f}", "", ""],
            ]
        )
        p = self.k_fe
        ci = self.conf_int(alpha)
        lo, hi = f"[{alpha / 2:g}", f"{1 - alpha / 2:g}]"
        fe = pd.DataFrame(
            {
                "Coef.": self.params.iloc[:p],
                "Std.Err.": self.bse.iloc[:p],
                "z": self.tvalues.iloc[:p],
                "P>|z|": self.pvalues.iloc[:p],
                lo: ci[0].iloc[:p],
                hi: ci[1].iloc[:p],
            }
        )
        re_rows = pd.DataFrame(
            {
                "Coef.": self.scale * self.params.iloc[p:],
                "Std.Err.": pd.Series(self.bse_re, index=self.params.index[p:]),
            }
        )
        coefs = pd.concat([fe, re_rows]) if len(re_rows) else fe
        notes = [f"Fitted by mixedmodels as lmer({self.model.lme4_formula!r})."]
        return MixedLMSummary(info, coefs, "Mixed Linear Model Regression Results", notes)

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found above: mixedmodels' own attributes.
        if name.startswith("_") or name in ("mixedmodels_result", "bse", "params"):
            raise AttributeError(name)
        return getattr(self.mixedmodels_result, name)

    def __repr__(self) -> str:
        return f"<mixedmodels.compat MixedLMResults: lmer({self.model.lme4_formula!r})>"
