"""Pass 2's running sum of chunk blocks (BlockSum) equals the blocks of all rows at once."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mixedmodels.covariance import group_terms
from mixedmodels.design.model_design import RandomEffectsTerm
from mixedmodels.linalg.cross_products import compute_cross_products
from mixedmodels.models.chunked import BlockSum


def _term(rng, n, group, nlevels, ncols):
    refs = rng.integers(0, nlevels, n)
    z = np.column_stack([np.ones(n)] + [rng.normal(size=n) for _ in range(ncols - 1)])
    names = ("(Intercept)", *tuple(f"x{j}" for j in range(1, ncols)))
    levels = tuple(f"{group}{i}" for i in range(nlevels))
    return RandomEffectsTerm(group, levels, refs.astype(np.int64), z, names)


def _dense(M):
    return M.toarray() if sp.issparse(M) else M


@pytest.mark.parametrize("nchunks", [1, 2, 3, 7])
@pytest.mark.parametrize("sparse_rest", [False, True])
def test_block_sum_equals_blocks_of_all_rows(nchunks, sparse_rest):
    rng = np.random.default_rng(nchunks)
    n = 700
    terms = group_terms((_term(rng, n, "u", 60, 2), _term(rng, n, "i", 9, 1)))
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.normal(size=n)
    whole = compute_cross_products(terms, X, y, sparse_rest=sparse_rest)
    total = BlockSum()
    total.add(None)  # a chunk without complete rows
    for rows in np.array_split(np.arange(n), nchunks):
        total.add(
            compute_cross_products(
                terms,
                X[rows],
                y[rows],
                refs=[t.refs[rows] for t in terms],
                zs=[t.z[rows] for t in terms],
                sparse_rest=sparse_rest,
            )
        )
    got = total.result()
    assert got.nobs == n
    for name in ("z1tz1", "zrtz1", "zrtzr", "xytz1", "xytzr", "xytxy"):
        np.testing.assert_allclose(
            _dense(getattr(got, name)), _dense(getattr(whole, name)), rtol=1e-12, atol=1e-12
        )
    assert got.zrtz1.has_canonical_format
    assert BlockSum().result() is None


@pytest.mark.parametrize("nchunks", [1, 3, 7])
def test_local_chunks_sum_to_the_same_bits(nchunks):
    """Chunks whose term-1 blocks cover only their own levels (pass 2's local form) sum to
    exactly the blocks of chunks over all levels: each level adds the same numbers."""
    from mixedmodels.models.chunked import LocalCrossProducts

    rng = np.random.default_rng(10 + nchunks)
    n = 900
    terms = group_terms((_term(rng, n, "u", 80, 2), _term(rng, n, "i", 11, 1)))
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.normal(size=n)
    full, local = BlockSum(), BlockSum()
    order = np.argsort(terms[0].refs, kind="stable")  # chunks of (mostly) distinct levels
    for rows in np.array_split(order, nchunks):
        refs = [t.refs[rows] for t in terms]
        zs = [t.z[rows] for t in terms]
        full.add(compute_cross_products(terms, X[rows], y[rows], refs=refs, zs=zs))
        present, renumbered = np.unique(refs[0], return_inverse=True)
        blocks = compute_cross_products(
            terms,
            X[rows],
            y[rows],
            refs=[renumbered, *refs[1:]],
            zs=zs,
            nlevels1=present.shape[0],
        )
        local.add(LocalCrossProducts(present, terms[0].nlevels, blocks))
    a, b = full.result(), local.result()
    for name in ("z1tz1", "zrtzr", "xytz1", "xytzr", "xytxy"):
        np.testing.assert_array_equal(_dense(getattr(b, name)), _dense(getattr(a, name)))
    assert b.zrtz1.has_canonical_format
    np.testing.assert_array_equal(b.zrtz1.indptr, a.zrtz1.indptr)
    np.testing.assert_array_equal(b.zrtz1.indices, a.zrtz1.indices)
    np.testing.assert_array_equal(b.zrtz1.data, a.zrtz1.data)
    assert b.nobs == a.nobs == n
