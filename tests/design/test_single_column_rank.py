"""The one-column rank decision (an intercept-only X) by one dot product equals the
sequential decision it replaces, on ordinary, tiny and zero columns."""

from __future__ import annotations

import numpy as np
import pytest

from mixedmodels.design.build import _independent_columns, _sequential_pivots


def _reference(X: np.ndarray) -> tuple[int, ...]:
    """Keep-earlier decision on the unit-scaled column (what the general path computes)."""
    norm = float(np.sqrt(np.einsum("ij,ij->j", X, X))[0])
    if not norm > 0:
        return ()
    kept, _ = _sequential_pivots(np.array([[1.0]]), 1e-14, margin=100.0)
    return tuple(kept)


@pytest.mark.parametrize(
    "column",
    [
        np.ones(30),
        np.arange(12.0) - 5.5,
        np.full(7, 1e-160),  # x'x underflows to 0: dropped, as the norm says
        np.full(7, 1e-150),  # tiny but representable x'x: kept
        np.zeros(9),
        np.r_[np.zeros(8), 3.0],
        np.full(4, 1e150),  # large but finite x'x
    ],
)
def test_single_column_decision(column):
    X = column.reshape(-1, 1)
    assert _independent_columns(X) == _reference(X)
    assert _independent_columns(np.asfortranarray(X)) == _reference(X)
