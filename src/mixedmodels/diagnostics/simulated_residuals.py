"""Simulation-based (DHARMa) residual checks of generalized linear mixed models.

Pearson and deviance residuals of a GLMM have no known distribution, so plots of them are
hard to read. DHARMa (Hartig, "DHARMa: residual diagnostics for hierarchical (multi-level /
mixed) regression models", R package, vignette) replaces them by *scaled residuals*: for
each row, the position of the observed response among responses simulated from the fitted
model. Under the model they are uniform on (0, 1) whatever the family, so one set of
checks serves binomial, Poisson and negative binomial fits alike:

- :meth:`SimulatedResiduals.test_uniformity`: Kolmogorov-Smirnov test against U(0, 1)
  (DHARMa's ``testUniformity``);
- :meth:`SimulatedResiduals.test_dispersion`: the spread of the data around the
  predictions against the spread of the simulations (``testDispersion``, ``type =
  "DHARMa"``);
- :meth:`SimulatedResiduals.test_zero_inflation`: observed zeros against simulated zeros
  (``testZeroInflation``);
- :meth:`SimulatedResiduals.test_outliers`: rows outside the simulation envelope
  (``testOutliers``).

The definitions follow DHARMa 0.5.x (``R/helper.R``: ``getQuantile``; ``R/tests.R``:
``testGeneric``, ``getP``, ``testDispersion``, ``testZeroInflation``, ``testOutliers``),
re-implemented here; where we differ it is said where.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, ModelSpecificationError

__all__ = ["SimulatedResiduals", "SimulationTest", "simulated_residuals"]

#: Families whose responses are integer-valued (counts, successes): DHARMa's list.
_INTEGER_FAMILIES = ("binomial", "poisson", "negative-binomial")
_SIMULATE_RE = ("conditional", "unconditional")
_ALTERNATIVES = {
    "two-sided": "two-sided",
    "two.sided": "two-sided",
    "greater": "greater",
    "less": "less",
}


# --------------------------------------------------------------------------- tests
@dataclass(frozen=True, eq=False)
class SimulationTest:
    """The result of one simulation-based residual test.

    Attributes
    ----------
    name
        The test, e.g. ``"DHARMa dispersion test"``.
    statistic
        The test statistic: the ratio observed / mean simulated for the dispersion and
        zero-inflation tests, Kolmogorov-Smirnov's D for uniformity, the number of
        outliers for the outlier test.
    pvalue
        Its p-value (``alternative``-sided).
    alternative
        ``"two-sided"``, ``"greater"`` or ``"less"``.
    observed
        The summary of the data (scaled variance, number of zeros, outlier frequency;
        D for uniformity).
    expected
        Its mean over the simulations (the expected outlier frequency; NaN for
        uniformity).
    simulated
        The summary of each simulated data set (read-only), or an empty array.
    null
        The null hypothesis in words.
    interpretation
        One line saying what the result means, at the ``alpha`` the test was run with.
    alpha
        The significance level of ``interpretation``.
    """

    name: str
    statistic: float
    pvalue: float
    alternative: str
    observed: float
    expected: float
    simulated: np.ndarray = field(repr=False)
    null: str
    interpretation: str
    alpha: float = 0.05

    def __post_init__(self) -> None:
        values = np.array(self.simulated, dtype=np.float64)
        values.setflags(write=False)
        object.__setattr__(self, "simulated", values)

    @property
    def ratio(self) -> float:
        """``observed / expected``: the statistic of the dispersion and zero-inflation tests,
        the outlier frequency over its expectation; NaN for uniformity."""
        return _ratio(self.observed, self.expected)

    def rejected(self, alpha: float | None = None) -> bool:
        """Whether the null hypothesis is rejected at ``alpha`` (default: the test's)."""
        level = self.alpha if alpha is None else alpha
        return bool(self.pvalue < level)

    def __str__(self) -> str:
        return self.interpretation

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types (non-finite numbers as None); no per-simulation values."""
        return {
            "test": self.name,
            "statistic": _num(self.statistic),
            "p": _num(self.pvalue),
            "alternative": self.alternative,
            "observed": _num(self.observed),
            "expected": _num(self.expected),
            "null": self.null,
            "interpretation": self.interpretation,
        }


# --------------------------------------------------------------------------- residuals
@dataclass(frozen=True, eq=False)
class SimulatedResiduals:
    """Scaled (quantile) residuals of a GLMM from responses simulated by the model.

    Made by :func:`simulated_residuals`; nothing in it changes (its arrays are read-only).

    Attributes
    ----------
    scaled
        One scaled residual per row, in [0, 1]: the share of simulated responses below the
        observed one, randomised over ties (PIT; see :func:`simulated_residuals`).
    observed
        The response as the tests see it: 0/1, counts, or for a binomial response with
        trials the number of successes (DHARMa's ``observedResponse``).
    simulated
        ``nobs x nsim`` simulated responses on the same scale.
    predicted
        The population-level predicted response ``g^{-1}(X beta + offset)``, without the
        random effects (DHARMa's ``fittedPredictedResponse``: ``predict(fit, type =
        "response", re.form = ~0)``); a probability for binomial fits.
    trials
        Binomial trials per row (``observed`` and ``simulated`` count successes), or None.
    row_index
        The labels of the rows the model used.
    family, link, formula
        What was fitted.
    nsim
        Number of simulated data sets.
    simulate_re
        ``"conditional"`` (responses drawn at the fitted conditional means) or
        ``"unconditional"`` (new random effects in each simulation).
    integer_response
        Whether the response is integer-valued (it picks the outlier test's default).
    seed
        The seed given, or None.
    """

    scaled: np.ndarray
    observed: np.ndarray
    simulated: np.ndarray
    predicted: np.ndarray
    trials: np.ndarray | None
    row_index: pd.Index
    family: str
    link: str
    formula: str | None
    nsim: int
    simulate_re: str
    integer_response: bool
    seed: int | None
    bootstrap_seed: int = field(repr=False, default=0)

    def __post_init__(self) -> None:
        for name in ("scaled", "observed", "simulated", "predicted", "trials"):
            value = getattr(self, name)
            if value is None:
                continue
            array = np.array(value, dtype=np.float64)
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    # -- views ---------------------------------------------------------------------------
    @property
    def nobs(self) -> int:
        """Number of rows."""
        return int(self.scaled.size)

    @property
    def residuals(self) -> pd.Series:
        """The scaled residuals as a Series indexed by the rows used (a fresh copy)."""
        return pd.Series(np.array(self.scaled), index=self.row_index, name="scaled_residual")

    @property
    def expected_response(self) -> np.ndarray:
        """The predicted response on the scale of :attr:`observed` (trials x probability)."""
        if self.trials is None:
            return np.array(self.predicted)
        return self.predicted * self.trials

    @property
    def binary(self) -> bool:
        """Whether every row is a single 0/1 trial (dispersion cannot show row by row)."""
        if self.family != "binomial":
            return False
        return self.trials is None or bool(np.all(self.trials == 1.0))

    def to_frame(self) -> pd.DataFrame:
        """``observed, predicted, scaled_residual`` per row (a fresh DataFrame)."""
        return pd.DataFrame(
            {
                "observed": np.array(self.observed),
                "predicted": np.array(self.predicted),
                "scaled_residual": np.array(self.scaled),
            },
            index=self.row_index,
        )

    # -- tests -----------------------------------------------------------------------------
    def test_uniformity(
        self, alternative: str = "two-sided", *, alpha: float = 0.05
    ) -> SimulationTest:
        """Kolmogorov-Smirnov test of the scaled residuals against U(0, 1).

        Parameters
        ----------
        alternative
            ``"two-sided"`` (default), ``"less"`` or ``"greater"`` (as ``ks.test``).
        alpha
            Level at which the interpretation calls the result significant.

        Returns
        -------
        SimulationTest
            ``statistic`` is D.

        Notes
        -----
        DHARMa's ``testUniformity``: ``ks.test(scaledResiduals, "punif")``. As R's
        ``ks.test``, the exact distribution of D is used below 100 rows without ties and
        the asymptotic one otherwise (scipy's ``kstest`` with that method).
        """
        from scipy import stats

        alt = _alternative(alternative)
        r = self.scaled
        exact = r.size < 100 and np.unique(r).size == r.size
        res = stats.kstest(r, "uniform", alternative=alt, method="exact" if exact else "asymp")
        d, p = float(res.statistic), float(res.pvalue)
        if p < alpha:
            text = (
                f"The scaled residuals are not uniform (KS D = {_fmt(d)}, {_p_words(p)}): the "
                "data do not follow the model's distribution; see the uniform Q-Q plot."
            )
        else:
            text = (
                f"The scaled residuals are consistent with uniform (KS D = {_fmt(d)}, "
                f"{_p_words(p)}): no overall misfit of the distribution."
            )
        return SimulationTest(
            name="Kolmogorov-Smirnov test of uniformity",
            statistic=d,
            pvalue=p,
            alternative=alt,
            observed=d,
            expected=math.nan,
            simulated=np.empty(0),
            null="the scaled residuals are uniform on (0, 1)",
            interpretation=text,
            alpha=alpha,
        )

    def test_dispersion(
        self, alternative: str = "two-sided", *, alpha: float = 0.05
    ) -> SimulationTest:
        """DHARMa's simulation-based dispersion test: observed spread over simulated spread.

        Parameters
        ----------
        alternative
            ``"two-sided"`` (default: over- and underdispersion), ``"greater"``
            (overdispersion only) or ``"less"``.
        alpha
            Level at which the interpretation calls the result significant.

        Returns
        -------
        SimulationTest
            ``statistic`` is the ratio of the observed to the mean simulated spread: above
            1 the data vary more than the model says (overdispersion), below 1 less.

        Notes
        -----
        DHARMa's ``testDispersion(type = "DHARMa")`` without refitting: with ``f`` the
        predicted response (:attr:`expected_response`), ``s^2`` the variance of all
        ``nobs x nsim`` simulated values and, for a response vector ``x``,
        ``spread(x) = var(x - f) / s^2``, the statistic is ``spread(y) /
        mean_k spread(y*_k)`` and the p-value DHARMa's ``getP``: two-sided
        ``min(1, 2 min(P(T* <= T), P(T* >= T)))`` over the simulations, one-sided
        ``P(T* >= T)`` (greater) or ``P(T* <= T)`` (less). For binomial responses with
        trials, ``f`` is the expected number of successes (trials x probability); DHARMa
        subtracts the probability from the count of successes, which only differs when a
        row has more than one trial. The test is most sensitive with conditional
        simulations (DHARMa >= 0.5.0 default; vignette, "Formal tests for
        over/underdispersion").
        """
        alt = _alternative(alternative)
        f = self.expected_response
        s2 = float(np.var(self.simulated, ddof=1))
        if not s2 > 0.0:
            raise DataError(
                "the dispersion test needs simulations that vary; all simulated responses are equal"
            )
        observed = float(np.var(self.observed - f, ddof=1)) / s2
        simulated = np.var(self.simulated - f[:, None], axis=0, ddof=1) / s2
        p = _simulation_p(simulated, observed, alt)
        expected = float(np.mean(simulated))
        ratio = _ratio(observed, expected)
        text = _dispersion_words(ratio, p, alpha, self)
        return SimulationTest(
            name="DHARMa dispersion test",
            statistic=ratio,
            pvalue=p,
            alternative=alt,
            observed=observed,
            expected=expected,
            simulated=simulated,
            null="the data vary as much as responses simulated from the model",
            interpretation=text,
            alpha=alpha,
        )

    def test_zero_inflation(
        self, alternative: str = "two-sided", *, alpha: float = 0.05
    ) -> SimulationTest:
        """DHARMa's zero-inflation test: observed zeros against zeros in the simulations.

        Parameters
        ----------
        alternative
            ``"two-sided"`` (default: too many or too few zeros), ``"greater"`` or
            ``"less"``.
        alpha
            Level at which the interpretation calls the result significant.

        Returns
        -------
        SimulationTest
            ``statistic`` is observed zeros / mean simulated zeros (> 1: more zeros than the
            model expects).

        Notes
        -----
        DHARMa's ``testZeroInflation``: ``testGeneric`` with the summary ``sum(x == 0)``,
        the ratio observed / mean simulated and the p-value of ``getP`` (see
        :meth:`test_dispersion`). For a binomial response, a zero is a row without
        successes. Overdispersion also makes zeros: a significant result says the model
        misses zeros, not that a zero-inflated model is right (Warton 2005,
        *Environmetrics* 16(3), cited by DHARMa).
        """
        alt = _alternative(alternative)
        observed = float(np.sum(self.observed == 0.0))
        simulated = np.sum(self.simulated == 0.0, axis=0).astype(np.float64)
        p = _simulation_p(simulated, observed, alt)
        expected = float(np.mean(simulated))
        ratio = _ratio(observed, expected)
        zeros = f"{int(observed)} zeros observed, {_fmt(expected)} expected"
        if p < alpha and observed > expected:
            text = (
                f"Zero inflation: more zeros than the model expects ({zeros}; ratio "
                f"{_fmt(ratio)}, {_p_words(p, self.nsim, alt)}): consider a zero-inflated "
                "model or a negative binomial; overdispersion also makes extra zeros."
            )
        elif p < alpha:
            text = (
                f"Fewer zeros than the model expects ({zeros}; ratio {_fmt(ratio)}, "
                f"{_p_words(p, self.nsim, alt)})."
            )
        else:
            text = (
                f"No zero inflation: {zeros} (ratio {_fmt(ratio)}, {_p_words(p, self.nsim, alt)})."
            )
        return SimulationTest(
            name="DHARMa zero-inflation test",
            statistic=ratio,
            pvalue=p,
            alternative=alt,
            observed=observed,
            expected=expected,
            simulated=simulated,
            null="the data have as many zeros as responses simulated from the model",
            interpretation=text,
            alpha=alpha,
        )

    def test_outliers(
        self,
        alternative: str = "two-sided",
        *,
        margin: str = "both",
        type: str = "default",
        nboot: int = 100,
        alpha: float = 0.05,
    ) -> SimulationTest:
        """DHARMa's outlier test: rows outside the range of their simulations.

        Parameters
        ----------
        alternative
            ``"two-sided"`` (default: too many or too few outliers), ``"greater"`` or
            ``"less"``.
        margin
            ``"both"`` (default), ``"upper"`` (observed above every simulation) or
            ``"lower"``.
        type
            ``"binomial"``, ``"bootstrap"`` or ``"default"``: the bootstrap for integer
            responses with at most 500 rows, else the binomial test (DHARMa's rule).
        nboot
            Bootstrap replicates (at most ``nsim``).
        alpha
            Level at which the interpretation calls the result significant.

        Returns
        -------
        SimulationTest
            ``statistic`` is the number of outliers; ``observed`` their frequency and
            ``expected`` the frequency expected under the model.

        Notes
        -----
        DHARMa's ``testOutliers``. *Binomial*: an outlier is a scaled residual below
        ``1 / (nsim + 1)`` or above ``1 - 1 / (nsim + 1)``; their number is tested against
        ``Binomial(nobs, 2 / (nsim + 1))`` (one margin: ``1 / (nsim + 1)``) by an exact
        binomial test (``binom.test``, here ``scipy.stats.binomtest``). For integer
        responses that expectation is only approximate. *Bootstrap*: outliers are the
        residuals equal to 0 or 1; the expected frequency comes from treating simulation
        ``i`` as the data and recomputing its scaled residuals against ``nsim``
        simulations drawn with replacement from the others, ``nboot`` times; the p-value
        is ``getP`` over those frequencies. Resampling uses a seed fixed when the residuals
        were made, so the same residuals always give the same p-value.
        """
        alt = _alternative(alternative)
        if margin not in ("both", "upper", "lower"):
            raise ValueError(f"margin must be 'both', 'upper' or 'lower', not {margin!r}")
        if type not in ("default", "bootstrap", "binomial"):
            raise ValueError(f"type must be 'default', 'bootstrap' or 'binomial', not {type!r}")
        if type == "default":
            type = "bootstrap" if self.integer_response and self.nobs <= 500 else "binomial"
        n, r = self.nobs, self.scaled
        if type == "binomial":
            from scipy import stats

            edge = 1.0 / (self.nsim + 1)
            count = _count_outliers(r < edge, r > 1.0 - edge, margin)
            rate = edge * (2 if margin == "both" else 1)
            p = float(stats.binomtest(int(count), n, rate, alternative=alt).pvalue)
            observed, expected, simulated = count / n, rate, np.empty(0)
            name = "DHARMa outlier test (exact binomial)"
        else:
            observed = _count_outliers(r == 0.0, r == 1.0, margin) / n
            simulated = self._bootstrap_outlier_rates(margin, nboot)
            expected = float(np.mean(simulated))
            p = _simulation_p(simulated, observed, alt)
            count = observed * n
            name = "DHARMa outlier test (bootstrap)"
        where = {"both": "outside", "upper": "above", "lower": "below"}[margin]
        what = (
            f"{round(count)} of {n} rows {where} the simulation range (expected "
            f"{_fmt(expected * n)})"
        )
        if p < alpha and observed > expected:
            text = f"Too many outliers: {what}, {_p_words(p)}; check these rows and the dispersion."
        elif p < alpha:
            text = (
                f"Fewer outliers than expected: {what}, {_p_words(p)}; a sign of underdispersion."
            )
        else:
            text = f"No excess of outliers: {what}, {_p_words(p)}."
        return SimulationTest(
            name=name,
            statistic=float(count),
            pvalue=p,
            alternative=alt,
            observed=float(observed),
            expected=float(expected),
            simulated=simulated,
            null="rows fall outside their simulations as often as the model implies",
            interpretation=text,
            alpha=alpha,
        )

    def _bootstrap_outlier_rates(self, margin: str, nboot: int) -> np.ndarray:
        nsim = self.nsim
        nboot = max(1, min(int(nboot), nsim))
        rng = np.random.default_rng(self.bootstrap_seed)
        sims = self.simulated
        others = np.arange(nsim)
        rates = np.empty(nboot)
        for i in range(nboot):
            pool = np.delete(others, i)
            chosen = sims[:, rng.choice(pool, size=nsim, replace=True)]
            res = pit_residuals(chosen, sims[:, i], rng)
            rates[i] = _count_outliers(res == 0.0, res == 1.0, margin) / res.size
        return rates

    def tests(self, *, alpha: float = 0.05) -> tuple[SimulationTest, ...]:
        """Uniformity, dispersion, zero-inflation and outlier tests, with DHARMa's defaults."""
        return (
            self.test_uniformity(alpha=alpha),
            self.test_dispersion(alpha=alpha),
            self.test_zero_inflation(alpha=alpha),
            self.test_outliers(alpha=alpha),
        )

    # -- presentation ------------------------------------------------------------------------
    def __str__(self) -> str:
        head = (
            f"Simulated (DHARMa) residuals of {self.formula or 'the model'}: {self.nobs} rows, "
            f"{self.nsim} {self.simulate_re} simulations ({self.family}, {self.link} link)"
        )
        q = np.quantile(self.scaled, [0.0, 0.25, 0.5, 0.75, 1.0])
        quart = "scaled residuals: " + "  ".join(
            f"{k} {v:.3f}" for k, v in zip(("min", "1Q", "median", "3Q", "max"), q, strict=True)
        )
        return "\n".join([head, quart, *(f"  {t.interpretation}" for t in self.tests())])

    def __repr__(self) -> str:
        return (
            f"<SimulatedResiduals {self.formula!r}: {self.family}, nobs={self.nobs}, "
            f"nsim={self.nsim}, {self.simulate_re}>"
        )

    def to_dict(self, *, residuals: bool = True) -> dict[str, Any]:
        """Plain Python types: settings, the four tests and (optionally) the residuals."""
        out: dict[str, Any] = {
            "formula": self.formula,
            "family": self.family,
            "link": self.link,
            "nobs": self.nobs,
            "nsim": self.nsim,
            "simulate_re": self.simulate_re,
            "integer_response": self.integer_response,
            "seed": self.seed,
            "tests": [t.to_dict() for t in self.tests()],
        }
        if residuals:
            out["scaled_residuals"] = [float(v) for v in self.scaled]
        return out


# --------------------------------------------------------------------------- construction
def simulated_residuals(
    fit: Any,
    nsim: int = 250,
    seed: int | None = None,
    integer_response: bool | None = None,
    *,
    simulate_re: str = "conditional",
) -> SimulatedResiduals:
    """Simulate from a fitted GLMM and compute DHARMa's scaled (quantile) residuals.

    Parameters
    ----------
    fit
        A fit of :func:`mixedmodels.glmer` (binomial, Poisson or negative binomial).
    nsim
        Number of simulated data sets (DHARMa's default 250; at least 2). More
        simulations give smoother residuals and finer p-values (the smallest two-sided
        p-value of a simulation test is ``2 / nsim``).
    seed
        Seed of the simulations and of the randomisation over ties; None draws a fresh
        one. The same seed gives the same residuals and tests.
    integer_response
        Whether the response is integer-valued; None decides by the family (all three
        are). As DHARMa's default PIT method randomises every tie between data and
        simulations, it does not change the residuals: it picks the outlier test
        (:meth:`SimulatedResiduals.test_outliers`).
    simulate_re
        ``"conditional"`` (default, as DHARMa >= 0.5.0): each simulation draws the response
        at the fitted conditional means ``mu = g^{-1}(X beta + offset + Z b)``, keeping
        the predicted random effects (lme4's ``simulate(re.form = NULL)``).
        ``"unconditional"``: each simulation draws new random effects first
        (``fit.simulate``, lme4's default ``re.form = NA``, DHARMa's default before 0.5.0).

    Returns
    -------
    SimulatedResiduals
        The scaled residuals, the simulations and the predictions, with the tests
        ``test_uniformity``, ``test_dispersion``, ``test_zero_inflation`` and
        ``test_outliers``.

    Raises
    ------
    ModelSpecificationError
        For a linear mixed model or any fit that is not a GLMM (with the checks to use
        instead), or prior weights the simulation cannot honour.

    Notes
    -----
    DHARMa's ``simulateResiduals(fit, n = nsim)`` with its default PIT method
    (``getQuantile``; Dunn & Smyth 1996, *J. Comput. Graph. Stat.* 5(3), randomised
    quantile residuals; Smith 1985). For row ``i`` with observed response ``y_i`` and
    simulated responses ``y*_ik``, ``k = 1..nsim``,

        lo_i = #{k: y*_ik < y_i} / nsim,    hi_i = #{k: y*_ik <= y_i} / nsim,

    and the scaled residual is ``lo_i`` when ``lo_i = hi_i`` (no tie) and a uniform draw
    between ``lo_i`` and ``hi_i`` otherwise. The randomisation spreads the probability of
    a discrete value over its interval, which makes the residuals of integer responses
    uniform under the model. A residual of 0 (1) means every simulation lies above
    (below) the observation. Responses are compared on DHARMa's scale: binomial
    ``cbind`` responses as numbers of successes.

    Why conditional by default: re-simulating the random effects adds their variance to
    every simulation, which hides overdispersion. On grouseticks, ``TICKS ~ C(YEAR) +
    cHEIGHT + (1 | LOCATION)`` (Poisson; Pearson chi2/df = 2.7) gives a dispersion ratio
    near 1 with unconditional simulations and about 1.3 (p < 0.01) with conditional ones.
    DHARMa 0.5.0 switched its default for the same reason (NEWS, vignette).

    Examples
    --------
    >>> import mixedmodels as mm
    >>> fit = mm.glmer("TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)", "grouseticks",
    ...                family="poisson")
    >>> res = mm.simulated_residuals(fit, seed=123)
    >>> res.test_dispersion().statistic > 1
    True
    """
    family = _check_glmm(fit)
    nsim = int(nsim)
    if nsim < 2:
        raise ValueError(f"nsim must be at least 2 (DHARMa's n > 1), not {nsim}")
    if simulate_re not in _SIMULATE_RE:
        raise ValueError(
            f"simulate_re must be 'conditional' or 'unconditional', not {simulate_re!r}"
        )
    if integer_response is None:
        integer_response = family in _INTEGER_FAMILIES
    sim_seed, pit_seed, boot_seed = _seeds(seed)

    design = fit.design
    trials = _trials(fit, family, simulate_re)
    y = np.asarray(design.y, dtype=np.float64)
    observed = np.rint(y * trials) if trials is not None else y
    if simulate_re == "conditional":
        sims = _draw_conditional(fit, family, trials, nsim, np.random.default_rng(sim_seed))
    else:
        sims = np.asarray(fit.simulate(nsim, seed=sim_seed), dtype=np.float64)
        if trials is not None:
            sims = np.rint(sims * trials[:, None])
    predicted = np.asarray(fit.predict(type="response", re=False), dtype=np.float64)
    scaled = pit_residuals(sims, observed, np.random.default_rng(pit_seed))
    return SimulatedResiduals(
        scaled=scaled,
        observed=observed,
        simulated=sims,
        predicted=predicted,
        trials=trials,
        row_index=design.row_index,
        family=family,
        link=str(fit.link),
        formula=getattr(fit, "formula", None),
        nsim=nsim,
        simulate_re=simulate_re,
        integer_response=bool(integer_response),
        seed=seed,
        bootstrap_seed=boot_seed,
    )


def pit_residuals(
    simulations: np.ndarray, observed: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Randomised PIT residuals of ``observed`` against the rows of ``simulations``.

    Parameters
    ----------
    simulations
        ``n x nsim`` simulated values.
    observed
        ``n`` observed values.
    rng
        Draws the uniform values that break ties.

    Returns
    -------
    numpy.ndarray
        ``lo + U (hi - lo)`` with ``lo`` the share of simulations below the observation
        and ``hi`` the share at or below it (``U ~ U(0, 1)``; no draw is used where
        ``lo = hi``). DHARMa's ``getQuantile(method = "PIT")``.
    """
    sims = np.asarray(simulations, dtype=np.float64)
    obs = np.asarray(observed, dtype=np.float64)[:, None]
    lower = np.mean(sims < obs, axis=1)
    upper = np.mean(sims <= obs, axis=1)
    u = rng.random(lower.size)
    return np.where(lower != upper, lower + u * (upper - lower), lower)


def _check_glmm(fit: Any) -> str:
    """The family name of a GLMM fit; a one-line refusal for anything else."""
    family = getattr(fit, "family", None)
    if not isinstance(family, str) or not hasattr(fit, "family_object"):
        if hasattr(fit, "sigma") and hasattr(fit, "resid"):
            raise ModelSpecificationError(
                "simulated (DHARMa) residuals are for GLMMs fitted by mm.glmer; for a linear "
                "mixed model use the normal-theory checks: mm.plots.qq(fit), "
                "mm.plots.residuals_vs_fitted(fit) and the tests in "
                "mixedmodels.diagnostics.residual_tests (shapiro_wilk, white_test, levene)"
            )
        raise ModelSpecificationError(
            f"simulated (DHARMa) residuals need a GLMM fitted by mm.glmer, not a "
            f"{type(fit).__name__}"
        )
    if family not in _INTEGER_FAMILIES:
        raise ModelSpecificationError(
            f"simulated residuals are implemented for the binomial, Poisson and negative "
            f"binomial families, not {family!r}"
        )
    return family


def _trials(fit: Any, family: str, simulate_re: str) -> np.ndarray | None:
    """Binomial trials per row (None for 0/1 rows and counts); refuse unusable weights."""
    design = fit.design
    weights = np.asarray(fit.prior_weights, dtype=np.float64)
    trials = getattr(design, "trials", None)
    if family != "binomial":
        if not np.all(weights == 1.0):
            raise ModelSpecificationError(
                f"simulated residuals need unit prior weights for a {family} fit (a weighted "
                "count has no distribution to simulate from); refit without weights"
            )
        return None
    if trials is not None:
        return np.rint(np.asarray(trials, dtype=np.float64))
    if np.all(weights == 1.0):
        return None
    # A proportion with the trials as prior weights (R's glmer(y/n ~ ..., weights = n)).
    if not np.allclose(weights, np.rint(weights)):
        raise ModelSpecificationError(
            "simulated residuals of a binomial fit need whole-number prior weights (the "
            "numbers of trials); write the response as cbind(successes, failures)"
        )
    if simulate_re == "unconditional":
        raise ModelSpecificationError(
            "simulate_re='unconditional' is not available for a binomial proportion with "
            "prior weights (fit.simulate draws 0/1 rows); use simulate_re='conditional' or "
            "write the response as cbind(successes, failures)"
        )
    return np.rint(weights)


def observation_level_groups(fit: Any) -> tuple[str, ...]:
    """Grouping factors with one level per row and one random-effects column (an OLRE).

    ``(1 | obs)`` with a factor that takes a different value in each row adds normal noise
    on the link scale to each row: a model of extra-binomial or extra-Poisson variation
    (Harrison 2014, *PeerJ* 2:e616), part of the response distribution rather than of the
    grouping structure.
    """
    n = int(fit.nobs)
    out = []
    for term in fit.structure.terms:
        refs = np.asarray(term.refs)
        if term.ncols == 1 and term.nlevels == n and np.unique(refs).size == n:
            out.append(str(term.group))
    return tuple(out)


def _draw_conditional(
    fit: Any, family: str, trials: np.ndarray | None, nsim: int, rng: np.random.Generator
) -> np.ndarray:
    """``nsim`` responses per row at the fitted conditional means (random effects kept).

    Observation-level random effects are drawn anew in each simulation (see
    :func:`simulated_residuals`); all other random effects stay at their conditional modes.
    """
    eta = np.array(fit.linear_predictor, dtype=np.float64)
    shape = (eta.size, nsim)
    redrawn = observation_level_groups(fit)
    if redrawn:
        covariances = fit.covariance_matrices()
        ranef = fit.ranef
        noise = np.zeros(shape)
        for term in fit.structure.terms:
            if term.group not in redrawn:
                continue
            z = np.asarray(term.z, dtype=np.float64)[:, 0]
            b = ranef[term.group].to_numpy()[:, 0]
            sd = math.sqrt(float(covariances[term.group][0][1][0, 0]))
            eta -= z * b[np.asarray(term.refs)]
            noise += (z * sd)[:, None] * rng.standard_normal(shape)
        means = np.asarray(fit.family_object.link.inverse(eta[:, None] + noise))
    else:
        mu = np.asarray(fit.fitted, dtype=np.float64)
        means = np.broadcast_to(mu[:, None], shape)
    if family == "binomial":
        m = np.ones(eta.size, dtype=np.int64) if trials is None else trials.astype(np.int64)
        draws = rng.binomial(np.broadcast_to(m[:, None], shape), means)
    elif family == "poisson":
        draws = rng.poisson(means)
    else:
        size = float(fit.nb_theta)
        draws = rng.negative_binomial(size, size / (size + means))
    return np.asarray(draws, dtype=np.float64)


def _seeds(seed: int | None) -> tuple[int, int, int]:
    """Independent seeds for the simulations, the tie-breaking draws and the bootstrap."""
    state = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint32)
    return int(state[0]), int(state[1]), int(state[2])


# --------------------------------------------------------------------------- helpers
def _alternative(alternative: str) -> str:
    alt = _ALTERNATIVES.get(str(alternative).lower())
    if alt is None:
        raise ValueError(
            f"alternative must be 'two-sided', 'greater' or 'less', not {alternative!r}"
        )
    return alt


def _simulation_p(simulated: np.ndarray, observed: float, alternative: str) -> float:
    """DHARMa's ``getP``: the share of simulated statistics at least as extreme."""
    below = float(np.mean(simulated <= observed))
    above = float(np.mean(simulated >= observed))
    if alternative == "greater":
        return above
    if alternative == "less":
        return below
    return min(1.0, 2.0 * min(below, above))


def _count_outliers(low: np.ndarray, high: np.ndarray, margin: str) -> float:
    if margin == "upper":
        return float(np.sum(high))
    if margin == "lower":
        return float(np.sum(low))
    return float(np.sum(low) + np.sum(high))


def _ratio(observed: float, expected: float) -> float:
    if expected == 0.0:
        return math.nan if observed == 0.0 else math.inf
    return observed / expected


def _dispersion_words(ratio: float, p: float, alpha: float, res: SimulatedResiduals) -> str:
    stat = f"the dispersion test ratio is {_fmt(ratio)} ({_p_words(p, res.nsim)})"
    if res.binary:
        return (
            f"For 0/1 responses {stat}, but dispersion cannot show row by row; aggregate "
            "the rows by group to test it."
        )
    if p >= alpha:
        return f"No over- or underdispersion: {stat}."
    if ratio > 1.0:
        if res.family == "negative-binomial":
            advice = (
                "the negative binomial's dispersion does not capture it: look for a "
                "missing predictor or zero inflation"
            )
        elif res.family == "poisson":
            advice = "consider an observation-level random effect or a negative binomial model"
        else:
            advice = "consider an observation-level random effect (1 | obs) or a missing predictor"
        return f"Overdispersion: {stat}: {advice}."
    return (
        f"Underdispersion: {stat}: the data vary less than the model says, which makes "
        "tests conservative; often a sign of overfitting (e.g. an observation-level "
        "random effect) or of zero inflation."
    )


def _p_words(p: float, nsim: int | None = None, alternative: str = "two-sided") -> str:
    """``p = 0.012``; a simulation p-value of 0 as ``p < 2/nsim`` (its resolution)."""
    if p == 0.0 and nsim:
        bound = (2.0 if alternative == "two-sided" else 1.0) / nsim
        return f"p < {bound:.2g}"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3g}"


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "NA" if math.isnan(x) else ("Inf" if x > 0 else "-Inf")
    return f"{x:.3g}"


def _num(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None
