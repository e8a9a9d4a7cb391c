"""Residual variances that differ by group (nlme's ``varIdent``): which rows share one.

Model: ``Var(e_i) = sigma^2 delta_g(i)^2`` with ``delta = 1`` for the reference stratum.
For fixed ``delta`` the rows scaled by ``1 / delta_g(i)`` follow the homoscedastic model,
whose cross products are ``sum_g A_g / delta_g^2``; the likelihood of the original rows adds
the Jacobian ``sum_i log delta_g(i)``, so

    d(theta, delta) = d_scaled(theta) + 2 sum_g n_g log delta_g     (ML and REML alike)

(Pinheiro & Bates 2000, sec. 5.2; West, Welch & Galecki 2014, ch. 3, Models 3.2A/3.2B).
``rho_g = log delta_g`` for the non-reference strata is optimised jointly with theta; sigma
is profiled out as before, so each evaluation costs one weighted sum of the strata's blocks
and one factorisation: the data rows are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mixedmodels.design.factors import format_level
from mixedmodels.errors import DataError


@dataclass(frozen=True, eq=False)
class ResidualStrata:
    """Which rows share a residual variance.

    Attributes
    ----------
    column
        The data column that defines the strata.
    labels
        Stratum labels; ``labels[0]`` is the reference (its ``delta`` is 1).
    codes
        int64 (n,) stratum of each row.
    members
        For each stratum, the levels of ``column`` pooled into it.
    """

    column: str
    labels: tuple[str, ...]
    codes: np.ndarray
    members: tuple[tuple[str, ...], ...]

    @property
    def nstrata(self) -> int:
        return len(self.labels)

    def counts(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=self.nstrata)


def residual_strata(
    values: pd.Series,
    column: str,
    pooling: Mapping[str, Sequence[object]] | None = None,
    reference: str | None = None,
) -> ResidualStrata:
    """Strata from a column, with optional pooling of its levels.

    Parameters
    ----------
    values
        The column's values for the rows used in the fit (no missing values).
    column
        Its name, for messages.
    pooling
        ``{new_label: [level, level, ...]}``: levels pooled into one stratum (e.g. the
        book's Model 3.2B: ``{"High/Low": ["High", "Low"]}``); levels not named keep their
        own stratum.
    reference
        The stratum whose ``delta`` is 1 (default: the first label in sorted order).

    Raises
    ------
    DataError
        Unknown level names in ``pooling``, a level pooled twice, a stratum with fewer than
        two observations, or only one stratum.
    """
    labels_of_rows = np.array([format_level(v) for v in values.to_numpy()], dtype=object)
    levels = sorted(set(labels_of_rows), key=_level_sort_key)
    mapping = {lv: lv for lv in levels}
    pooled_members: dict[str, list[str]] = {}
    if pooling:
        seen: dict[str, str] = {}
        for new_label, olds in pooling.items():
            if isinstance(olds, (str, bytes)):
                raise DataError(
                    f"residual pooling for {new_label!r} must list levels of {column!r}, e.g. "
                    f"{{{new_label!r}: [{olds!r}, ...]}}"
                )
            for old in olds:
                key = format_level(old)
                if key not in mapping:
                    raise DataError(
                        f"residual pooling names level {key!r}, which column {column!r} does not "
                        f"have; its levels are: {', '.join(levels)}"
                    )
                if key in seen:
                    raise DataError(
                        f"level {key!r} of {column!r} is pooled twice (into {seen[key]!r} and "
                        f"{new_label!r}); name each level once"
                    )
                seen[key] = str(new_label)
                mapping[key] = str(new_label)
                pooled_members.setdefault(str(new_label), []).append(key)
    strata_labels = sorted(set(mapping.values()), key=_level_sort_key)
    if reference is not None:
        if reference not in strata_labels:
            raise DataError(
                f"residual reference {reference!r} is not a stratum of {column!r}; strata: "
                f"{', '.join(strata_labels)}"
            )
        strata_labels.remove(reference)
        strata_labels.insert(0, reference)
    if len(strata_labels) < 2:
        raise DataError(
            f"residual groups column {column!r} has a single stratum; a residual variance per "
            "group needs at least two groups"
        )
    index = {lab: i for i, lab in enumerate(strata_labels)}
    codes = np.array([index[mapping[v]] for v in labels_of_rows], dtype=np.int64)
    counts = np.bincount(codes, minlength=len(strata_labels))
    small = [lab for lab, c in zip(strata_labels, counts, strict=True) if c < 2]
    if small:
        raise DataError(
            f"residual group(s) {', '.join(map(repr, small))} of column {column!r} have fewer "
            "than two observations, so their residual variance cannot be estimated; pool them "
            "with another group (residual_pooling) or drop those rows"
        )
    members = tuple(tuple(pooled_members.get(lab, [lab])) for lab in strata_labels)
    return ResidualStrata(column=column, labels=tuple(strata_labels), codes=codes, members=members)


def _level_sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)
