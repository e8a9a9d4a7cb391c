"""A model fitted from cross products summed over chunks equals the in-memory fit."""

from __future__ import annotations

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.covariance import group_terms
from mixedmodels.errors import ModelSpecificationError
from mixedmodels.linalg.cross_products import compute_cross_products

FORMULA = "diameter ~ 1 + (1 | plate) + (1 | sample)"


def test_chunked_cross_products_give_the_same_fit():
    design = mm.build_design(FORMULA, mm.load_dataset("penicillin"))
    whole = mm.LinearMixedModel(design).fit()
    terms = group_terms(design.re_terms)
    total = None
    for rows in np.array_split(np.arange(design.nobs), 5):
        part = compute_cross_products(
            terms,
            design.X[rows],
            design.y[rows],
            refs=[t.refs[rows] for t in terms],
            zs=[t.z[rows] for t in terms],
        )
        total = part if total is None else total + part
    streamed = mm.LinearMixedModel(design, cross_products=total).fit()
    assert streamed.nobs == whole.nobs
    assert streamed.objective == pytest.approx(whole.objective, rel=1e-12)
    np.testing.assert_allclose(streamed.theta, whole.theta, rtol=1e-8)
    np.testing.assert_allclose(streamed.fixef, whole.fixef, rtol=1e-10)
    np.testing.assert_allclose(
        streamed.ranef["plate"].to_numpy(), whole.ranef["plate"].to_numpy(), rtol=1e-7
    )
    assert "Random effects" in str(streamed.summary())
    with pytest.raises(ModelSpecificationError, match="predict"):
        _ = streamed.fitted
