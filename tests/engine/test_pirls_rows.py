"""PIRLS on rows in chunks equals PIRLS on the rows in memory.

:class:`ChunkedRows` sums each chunk's :class:`MemoryRows` pass; the criterion on it must
give the in-memory values (deviance, fast deviance, quadrature, the final system, the
start) up to the order of the additions, and its summed blocks must keep one sparsity
pattern from pass to pass (a system set up on the first pass takes the later ones).
"""

from __future__ import annotations

from dataclasses import replace
from functools import reduce as fold
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mixedmodels.covariance import CovarianceStructure, group_terms
from mixedmodels.design import build_design
from mixedmodels.family import make_family
from mixedmodels.objective.pirls import (
    ChunkedRows,
    GlmmResponse,
    MemoryRows,
    PirlsDeviance,
    pearson_chisq,
)

DATA = Path(__file__).resolve().parents[1] / "data"

CASES = {
    # crossed scalar terms, dense Zr'Z1
    "verbagg": (
        "VerbAgg.csv",
        "r2 ~ Anger + Gender + btype + situ + (1|id) + (1|item)",
        "binomial",
    ),
    # a vector-valued term (p1 = 2)
    "contraception_slope": (
        "Contraception.csv",
        "use ~ age + I(age^2) + urban + livch + (urban|district)",
        "binomial",
    ),
    # an observation-level term 1: Zr'Z1 sparse
    "grouseticks": (
        "grouseticks.csv",
        "TICKS ~ factor(YEAR) + cHEIGHT + (1|BROOD) + (1|INDEX) + (1|LOCATION)",
        "poisson",
    ),
}


def _setup(name: str, nchunks: int = 3, seed: int = 0):
    file, formula, family_name = CASES[name]
    design = build_design(formula, pd.read_csv(DATA / file), observation_level_terms=True)
    terms = group_terms(design.re_terms)
    structure = CovarianceStructure.from_terms(terms)
    family = make_family(family_name)
    n = design.nobs
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 2.0, n).round()  # whole prior weights: the saturated shortcut holds
    offset = rng.uniform(-0.2, 0.2, n)
    response = GlmmResponse(design.y, w, None, offset, family)
    whole = PirlsDeviance(structure, design.X, response, nagq=1)
    order = rng.permutation(n)
    chunks = []
    for rows in np.array_split(order, nchunks):
        chunk_terms = tuple(replace(t, refs=t.refs[rows], z=t.z[rows]) for t in terms)
        chunks.append(
            MemoryRows(chunk_terms, design.X[rows], design.y[rows], w[rows], None, offset[rows])
        )

    def local_reduce(function, args, combine):
        return fold(combine, (function(rows, *args) for rows in chunks))

    chunked = ChunkedRows(local_reduce, n, design.X.shape[1])
    return structure, whole, PirlsDeviance.on_rows(structure, chunked, family, nagq=1), chunked


def _params(deviance, seed=1):
    """A point near the nAGQ = 0 optimum at a moderate theta (PIRLS converges there)."""
    rng = np.random.default_rng(seed)
    theta = 0.6 * deviance.structure.initial_theta() + 0.1
    beta = deviance.pirls(theta, None).beta
    return np.concatenate([theta, beta * (1.0 + 0.05 * rng.standard_normal(beta.size))])


@pytest.mark.parametrize("name", sorted(CASES))
def test_chunked_deviance_equals_in_memory(name):
    structure, whole, chunked, rows = _setup(name)
    for seed in (1, 2):
        params = _params(whole, seed)
        assert chunked(params) == pytest.approx(whole(params), rel=1e-11)
    theta = structure.initial_theta()
    assert chunked.fast(theta) == pytest.approx(whole.fast(theta), rel=1e-11)
    a, b = whole.pirls(theta, None), chunked.pirls(theta, None)
    np.testing.assert_allclose(b.beta, a.beta, rtol=1e-9, atol=1e-12)
    assert b.eta is None and b.mu is None
    assert rows.passes > 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_chunked_final_system_and_sums_equal_in_memory(name):
    structure, whole, chunked, _ = _setup(name)
    params = _params(whole)
    theta = params[: structure.ntheta]
    sa, sb = whole.state(params), chunked.state(params)
    _, fa, ea = whole.final_system(theta, sa)
    _, fb, eb = chunked.final_system(theta, sb)
    assert fb.logdet_z == pytest.approx(fa.logdet_z, rel=1e-11)
    np.testing.assert_allclose(eb.vcov_beta / eb.sigma**2, ea.vcov_beta / ea.sigma**2, rtol=1e-9)
    family = whole.family
    start_a, start_b = whole.rows.initial_beta(family), chunked.rows.initial_beta(family)
    np.testing.assert_allclose(start_b, start_a, rtol=1e-9, atol=1e-12)
    assert chunked.saturated() == pytest.approx(whole.saturated(), rel=1e-11, abs=1e-9)
    chisq = [
        d.rows.sums(pearson_chisq, family, s.coefficients) for d, s in ((whole, sa), (chunked, sb))
    ]
    np.testing.assert_allclose(chisq[1], chisq[0], rtol=1e-11)


def test_chunked_quadrature_equals_in_memory():
    file = "Contraception.csv"
    design = build_design(
        "use ~ age + I(age^2) + urban + livch + (1|district)",
        pd.read_csv(DATA / file),
        observation_level_terms=True,
    )
    terms = group_terms(design.re_terms)
    structure = CovarianceStructure.from_terms(terms)
    family = make_family("binomial")
    n = design.nobs
    ones, zeros = np.ones(n), np.zeros(n)
    whole = PirlsDeviance(
        structure, design.X, GlmmResponse(design.y, ones, None, zeros, family), 10
    )
    pieces = []
    for rows in np.array_split(np.arange(n), 4):
        t = tuple(replace(t, refs=t.refs[rows], z=t.z[rows]) for t in terms)
        pieces.append(MemoryRows(t, design.X[rows], design.y[rows], ones[rows], None, zeros[rows]))
    chunked_rows = ChunkedRows(
        lambda f, args, combine: fold(combine, (f(r, *args) for r in pieces)), n, design.X.shape[1]
    )
    chunked = PirlsDeviance.on_rows(structure, chunked_rows, family, nagq=10)
    params = np.concatenate([[0.5], 0.05 * np.linspace(-1.0, 1.0, design.X.shape[1])])
    assert chunked(params) == pytest.approx(whole(params), rel=1e-11)


def test_summed_sparse_blocks_keep_their_pattern():
    # grouseticks' Zr'Z1 is sparse; the summed blocks of every pass have the pattern of
    # the first (entries that cancel to zero stay), so the single-use system rebinds.
    structure, _, chunked, rows = _setup("grouseticks")
    theta = structure.initial_theta()
    beta = np.zeros(chunked.p)
    patterns = []
    for scale in (0.0, 1.0, 3.0):
        u = np.full(chunked.q, 0.1 * scale)
        done = rows.evaluate(
            chunked.family, chunked.coefficients(beta, u, structure.templates(theta)), with_x=False
        )
        assert sp.issparse(done.blocks.zrtz1)
        patterns.append((done.blocks.zrtz1.indptr.copy(), done.blocks.zrtz1.indices.copy()))
    for indptr, indices in patterns[1:]:
        np.testing.assert_array_equal(indptr, patterns[0][0])
        np.testing.assert_array_equal(indices, patterns[0][1])
