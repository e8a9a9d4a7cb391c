"""The linear predictor of new rows, shared by the LMM and GLMM results.

Both results predict the same way: the design's spec rebuilds X, the offset and each
random-effects term's ``(refs, z)`` for the new rows (with the fitting data's levels,
contrasts and transforms), and the conditional modes are added where a row's level was
seen in fitting. A level not seen gets zero random effects, as lme4's
``predict(..., allow.new.levels = TRUE)``: its prediction is the population-level one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.errors import DataError, ModelSpecificationError


def linear_predictor(
    design: Any,
    terms: Sequence[Any],
    beta: np.ndarray,
    b: Sequence[np.ndarray],
    newdata: pd.DataFrame,
    *,
    re: bool = True,
    allow_new_levels: bool = True,
) -> np.ndarray:
    """Return ``X beta + offset (+ Z b)`` for the rows of ``newdata``.

    Parameters
    ----------
    design
        The fitted :class:`~mixedmodels.design.model_design.ModelDesign`; its ``spec``
        rebuilds the columns.
    terms
        The grouped random-effects terms in engine order (``structure.terms``).
    beta
        Fixed effects in the order of ``design.x_names``.
    b
        Conditional modes per term, each ``(levels, ncols)``, in the order of ``terms``.
    newdata
        Rows with the formula's predictor and grouping columns (no response needed).
    re
        Add the random effects (conditional prediction); False gives ``X beta + offset``.
    allow_new_levels
        Give levels not seen in fitting zero random effects (default, as lme4's
        ``allow.new.levels = TRUE``); False raises instead.

    Returns
    -------
    numpy.ndarray
        One value per row of ``newdata``.

    Raises
    ------
    DataError
        If a needed column is absent, a factor has an unseen level, or (with
        ``allow_new_levels=False``) a grouping level was not seen in fitting.
    ModelSpecificationError
        If the design keeps no spec to rebuild columns from.
    """
    spec = design.spec
    if spec is None:
        raise ModelSpecificationError(
            "this fit keeps no formula specification to rebuild columns for new data; "
            "predict(newdata) needs a fit from a formula"
        )
    eta = spec.fixed_matrix(newdata) @ np.asarray(beta)
    offset_values = getattr(spec, "offset_values", None)
    if offset_values is not None:
        offset = offset_values(newdata)  # the formula's offset() terms on the new rows
        if offset is not None:
            eta = eta + np.asarray(offset, dtype=np.float64)
    if not re:
        return eta
    rows = spec.random_effects_rows(newdata)
    for term, modes in zip(terms, b, strict=True):
        for (start, stop), member in zip(term.blocks, term.members, strict=True):
            refs, z = rows[member]
            refs = np.asarray(refs)
            seen = refs >= 0
            if not allow_new_levels and not seen.all():
                first = int(np.flatnonzero(~seen)[0])
                raise DataError(
                    f"row {newdata.index[first]!r} of the new data has a level of "
                    f"{term.group!r} not seen in fitting (or a missing one); use "
                    "allow_new_levels=True to predict it at the population level"
                )
            contrib = np.zeros(len(eta))
            contrib[seen] = np.einsum("ij,ij->i", z[seen], modes[refs[seen], start:stop])
            eta = eta + contrib
    return eta


def pandas_rows(newdata: Any) -> Any:
    """New rows as a pandas DataFrame: a polars DataFrame/LazyFrame or a pyarrow Table is
    converted (:mod:`mixedmodels.io.frames`); anything else is returned as it is."""
    from mixedmodels.io.frames import as_pandas, is_arrow_like

    return as_pandas(newdata) if is_arrow_like(newdata) else newdata
