"""The reference models fitted through the large-model path, against R's numbers.

Models with a large rest block (more than ``SPARSE_REST_MIN`` levels outside the first
term, e.g. 1e5 x 1e4 crossed random intercepts) store ``Zr'Zr`` sparse, factor through the
sparse rank-update pattern in a workspace handed over to the factor, and compute condVar
from ``(L22 L22')^{-1}`` at the pattern's positions. The small reference models are forced
onto that path here and must meet the same tolerances as on their own path
(``test_model_reference.check_model``): Penicillin's diagonal ``Zr'Zr`` (6 samples),
Pastes' nested casks, and the one-term models (no rest block).
"""

from __future__ import annotations

import pytest

import mixedmodels.linalg.cross_products as cross_products_module
import mixedmodels.objective.profiled_deviance as deviance_module
import test_model_reference as reference


@pytest.mark.parametrize("name", reference.SMALL)
def test_reference_model_on_the_large_path(name, monkeypatch):
    monkeypatch.setattr(cross_products_module, "SPARSE_REST_MIN", 0)
    monkeypatch.setattr(deviance_module, "_DENSE_UPDATE_LIMIT", -1)
    monkeypatch.setattr(reference, "_FITS", {})  # fit again, on this path
    reference.check_model(name)
    fit, _ = reference.fitted(name)
    dev = fit.deviance_function
    assert not dev._dense
    if len(fit.structure.terms) > 1:
        assert fit.model.cross_products.zrtzr.format == "csr"  # sparse storage
