"""Seeded synthetic designs with known true values, simulated on demand (no data files).

Two designs of 1e6 rows from issue 8 ("speed") and one from issue 14 (GLMMs):

* ``crossed``: ``y ~ x + (1|a) + (1|b)``, ``a`` with 100,000 levels and ``b`` with 10,000,
  each row's levels drawn at random (every level appears equally often: ``a`` 10 times,
  ``b`` 100 times, in a random order independent of each other and of ``x``);
* ``slope``: ``y ~ x + (1 + x | g)`` with 100,000 groups of 10 rows each, random order,
  correlated random intercepts and slopes;
* ``binary``: ``y ~ x + (1 | g)`` for a 0/1 response (logit link), 100,000 groups of 10
  rows each, random order (the GLMM benchmark fits it with ``family="binomial"``).

The same seed gives the same DataFrame on every machine (numpy's PCG64 stream is
stable across versions), so every contestant, in every process, fits identical data.
Levels are strings (``"a00042"``) so that every library sees categorical factors.

    python benchmarks/synthetic.py crossed      # simulate and print a summary
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Design:
    """One simulated design: its size, its seed and the true parameter values."""

    key: str
    formula: str
    nrows: int
    seed: int
    truth: dict[str, float]
    describe: str


CROSSED = Design(
    key="crossed",
    formula="y ~ x + (1|a) + (1|b)",
    nrows=1_000_000,
    seed=20260801,
    truth={
        "(Intercept)": 1.0,
        "x": 0.5,
        "sd_a": 0.6,
        "sd_b": 0.4,
        "sigma": 1.0,
        "levels_a": 100_000,
        "levels_b": 10_000,
    },
    describe="1e6 rows; crossed random intercepts, a: 1e5 levels (10 rows each), "
    "b: 1e4 levels (100 rows each), assigned at random",
)

SLOPE = Design(
    key="slope",
    formula="y ~ x + (1 + x | g)",
    nrows=1_000_000,
    seed=20260802,
    truth={
        "(Intercept)": 1.0,
        "x": 0.5,
        "sd_intercept": 0.5,
        "sd_x": 0.2,
        "corr": 0.3,
        "sigma": 1.0,
        "groups": 100_000,
    },
    describe="1e6 rows; correlated random intercept and slope, g: 1e5 groups of 10 rows, "
    "assigned at random",
)

BINARY = Design(
    key="binary",
    formula="y ~ x + (1 | g)",
    nrows=1_000_000,
    seed=20260803,
    truth={
        "(Intercept)": -0.5,
        "x": 1.0,
        "sd_g": 0.8,
        "groups": 100_000,
    },
    describe="1e6 rows; binary response, logit link, random intercept g: 1e5 groups of 10 "
    "rows, assigned at random",
)

DESIGNS = {d.key: d for d in (CROSSED, SLOPE, BINARY)}


def _labels(prefix: str, codes: np.ndarray, nlevels: int) -> np.ndarray:
    """Zero-padded string labels, so that sorted order is numeric order in every library."""
    width = len(str(nlevels - 1))
    names = np.array([f"{prefix}{i:0{width}d}" for i in range(nlevels)], dtype=object)
    return names[codes]


def _balanced_levels(rng: np.random.Generator, nlevels: int, nrows: int) -> np.ndarray:
    """Level per row: every level ``nrows / nlevels`` times, in random order."""
    return rng.permutation(np.repeat(np.arange(nlevels), nrows // nlevels))


def simulate(key: str, scale: float = 1.0) -> pd.DataFrame:
    """The DataFrame of design ``key`` (``"crossed"``, ``"slope"``, ``"binary"``); same seed,
    same rows.

    ``scale`` shrinks the rows and every level count by that factor (same rows per level):
    ``scale=0.01`` is the warm-up fit of the benchmark, the same formula on 10,000 rows.
    """
    design = DESIGNS[key]
    t = dict(design.truth)
    for name in ("levels_a", "levels_b", "groups"):
        if name in t:
            t[name] = max(round(t[name] * scale), 2)
    rng = np.random.default_rng(design.seed)
    n = round(design.nrows * scale)
    x = rng.normal(size=n)
    if key == "crossed":
        la, lb = int(t["levels_a"]), int(t["levels_b"])
        a = _balanced_levels(rng, la, n)
        b = _balanced_levels(rng, lb, n)
        ua = t["sd_a"] * rng.normal(size=la)
        ub = t["sd_b"] * rng.normal(size=lb)
        eps = t["sigma"] * rng.normal(size=n)
        y = t["(Intercept)"] + t["x"] * x + ua[a] + ub[b] + eps
        return pd.DataFrame({"y": y, "x": x, "a": _labels("a", a, la), "b": _labels("b", b, lb)})
    if key == "slope":
        ng = int(t["groups"])
        g = _balanced_levels(rng, ng, n)
        sd = np.array([t["sd_intercept"], t["sd_x"]])
        cov = np.array([[1.0, t["corr"]], [t["corr"], 1.0]]) * np.outer(sd, sd)
        u = rng.normal(size=(ng, 2)) @ np.linalg.cholesky(cov).T
        eps = t["sigma"] * rng.normal(size=n)
        y = t["(Intercept)"] + t["x"] * x + u[g, 0] + u[g, 1] * x + eps
        return pd.DataFrame({"y": y, "x": x, "g": _labels("g", g, ng)})
    if key == "binary":
        ng = int(t["groups"])
        g = _balanced_levels(rng, ng, n)
        u = t["sd_g"] * rng.normal(size=ng)
        eta = t["(Intercept)"] + t["x"] * x + u[g]
        # Bernoulli draws by inversion: y = 1 when a uniform falls below the probability.
        y = (rng.random(size=n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int64)
        return pd.DataFrame({"y": y, "x": x, "g": _labels("g", g, ng)})
    raise KeyError(key)


if __name__ == "__main__":
    for name in sys.argv[1:] or list(DESIGNS):
        frame = simulate(name)
        print(name, DESIGNS[name].formula, frame.shape)
        print(frame.head())
        print(frame.nunique())
