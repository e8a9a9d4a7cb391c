"""The numeric design of a mixed model: y, X and the random-effects terms (and binomial trials).

This is the contract between ``design/`` (which builds it from a formula and a
DataFrame) and the engine (``linalg/``, ``deviance.py``), which only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class RandomEffectsTerm:
    """One random-effects term ``(z | group)``: a small model matrix per row and a level per row.

    Z for this term is never stored as an n x (levels * ncols) matrix: row ``i`` of Z has the
    entries ``z[i, :]`` in the columns of level ``refs[i]`` (Bates et al. 2015, sec. 2.3).

    Attributes
    ----------
    group
        Grouping factor name as lme4 prints it: ``"litter"``, ``"cask:batch"``.
    levels
        Level labels, in the order ``refs`` indexes them (lme4's order: sorted; for an
        interaction ``a:b`` the labels are ``"a_level:b_level"`` with ``a`` varying slowest).
    refs
        int64 array (n,), the level index of each row.
    z
        float64 array (n, ncols), the term's model matrix (``(Intercept)`` column of ones first).
    column_names
        R-style names of the columns of ``z``: ``"(Intercept)"``, ``"Days"``, ``"sexMale"``.
    """

    group: str
    levels: tuple[str, ...]
    refs: np.ndarray
    z: np.ndarray
    column_names: tuple[str, ...]

    def __post_init__(self) -> None:
        hold_read_only(self, "refs", "z")

    @property
    def nlevels(self) -> int:
        return len(self.levels)

    @property
    def ncols(self) -> int:
        return self.z.shape[1]

    @property
    def nranef(self) -> int:
        """Number of random effects of this term: levels x columns."""
        return self.nlevels * self.ncols


@dataclass(frozen=True, eq=False)
class ModelDesign:
    """Everything the engine needs, and what results need to label it.

    Attributes
    ----------
    y
        float64 (n,) response.
    X
        float64 (n, p) fixed-effects matrix, full column rank (rank-deficient columns removed).
    x_names
        R-style column names of ``X`` (``"(Intercept)"``, ``"treatmentHigh"``,
        ``"treatmentHigh:sexMale"``).
    re_terms
        Random-effects terms in formula order (``||`` already split into one term per column,
        ``/`` already expanded). The engine re-orders them by number of levels.
    response_name
        Name of the response as written in the formula.
    dropped_columns
        Names of X columns dropped for rank deficiency.
    n_dropped_rows
        Rows dropped because a used column was missing.
    row_index
        Index labels (of the input DataFrame) of the rows used, in order.
    spec
        Whatever ``design/`` needs to rebuild X and Z columns for new data (``predict``);
        opaque here. A formula design's spec also gives the offset of new data
        (``spec.offset_values(newdata)``).
    offset
        float64 (n,) sum of the formula's ``offset(expr)`` terms, aligned with ``y``, or
        None when the formula has none. lme4's meaning: the linear predictor is
        ``offset + X beta + Z b``, so the engine fits ``y - offset``; it is not a column
        of ``X``.
    weights
        float64 (n,) prior weights, aligned with ``y``, or None (all ones). lme4's
        meaning: row i has residual variance ``sigma^2 / weights[i]``. Finite,
        non-negative, with a positive sum (checked by ``build_design``). For a binomial
        ``cbind`` response these stay the prior weights: the family's weights are
        ``weights * trials`` (R's binomial ``initialize``).
    trials
        float64 (n,) number of binomial trials per row, read-only, or None. Set only for a
        ``cbind(successes, failures)`` response built with ``binomial_response=True``:
        ``trials = successes + failures`` (whole numbers >= 0) and ``y`` the proportion of
        successes, ``successes / trials`` (0 where ``trials`` is 0, as R). None for every
        other response (0/1 data: one trial per row).
    """

    y: np.ndarray
    X: np.ndarray
    x_names: tuple[str, ...]
    re_terms: tuple[RandomEffectsTerm, ...]
    response_name: str
    dropped_columns: tuple[str, ...] = ()
    n_dropped_rows: int = 0
    row_index: Any = None
    spec: Any = field(default=None, repr=False)
    offset: np.ndarray | None = field(default=None, repr=False)
    weights: np.ndarray | None = field(default=None, repr=False)
    trials: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        hold_read_only(self, "y", "X", "trials")

    @property
    def nobs(self) -> int:
        return int(self.y.shape[0])


def hold_read_only(obj: Any, *names: str) -> None:
    """Hold read-only views of the arrays ``names`` of a frozen dataclass.

    A view costs nothing and leaves the caller's array as it was; no one can write into
    the data through the design (results hand these arrays out: issue 13, item 6).
    """
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, np.ndarray) and value.flags.writeable:
            view = value.view()
            view.setflags(write=False)
            object.__setattr__(obj, name, view)
