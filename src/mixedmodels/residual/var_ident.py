"""Residual variances that differ by group (nlme's ``varIdent``), from cross products.

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

from mixedmodels.covariance import CovarianceStructure
from mixedmodels.design.factors import format_level
from mixedmodels.errors import DataError
from mixedmodels.linalg.cross_products import StratifiedCrossProducts
from mixedmodels.objective.profiled_deviance import ProfiledDeviance


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


class StratifiedDeviance:
    """The deviance over ``(theta, rho)``, rho being log SD ratios of the non-reference strata.

    Parameters
    ----------
    structure
        Covariance parameterisation of the random effects.
    cross_products
        The strata's cross-product blocks.
    reml
        REML or ML.
    """

    def __init__(
        self, structure: CovarianceStructure, cross_products: StratifiedCrossProducts, reml: bool
    ):
        self.structure = structure
        self.cross_products = cross_products
        self.reml = bool(reml)
        self.counts = cross_products.counts.astype(np.float64)
        self.nstrata = len(cross_products.strata)
        self.base = ProfiledDeviance(
            structure, cross_products.combine(np.ones(self.nstrata)), reml=reml
        )

    @property
    def ntheta(self) -> int:
        return self.structure.ntheta

    def at(self, rho: np.ndarray) -> ProfiledDeviance:
        """The profiled deviance in theta for fixed SD ratios ``exp(rho)``."""
        log_delta = np.concatenate([[0.0], np.asarray(rho, dtype=np.float64)])
        weights = np.exp(-2.0 * log_delta)
        offset = 2.0 * float(self.counts @ log_delta)
        return self.base.with_cross_products(self.cross_products.combine(weights), offset)

    def __call__(self, params: np.ndarray) -> float:
        params = np.asarray(params, dtype=np.float64)
        return self.at(params[self.ntheta :])(params[: self.ntheta])

    def lower_bounds(self) -> np.ndarray:
        return np.concatenate([self.structure.lower_bounds(), np.full(self.nstrata - 1, -np.inf)])

    def initial_values(self) -> np.ndarray:
        return np.concatenate([self.structure.initial_theta(), np.zeros(self.nstrata - 1)])
