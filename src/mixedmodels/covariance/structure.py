"""Relative covariance factors: the map theta -> Lambda_theta and back to variances.

For grouping factor ``k`` with ``p_k`` columns, the random effects of one level are
``b = Lambda_k u`` with ``u ~ N(0, sigma^2 I)``, so ``Var(b) = sigma^2 T_k T_k'`` where
``T_k`` is a lower-triangular ``p_k x p_k`` template (Bates et al. 2015, JSS 67(1), eq. 4-5).
``theta`` holds the free entries of the templates, column by column (lme4's order).

Terms on the same grouping factor (as produced by ``||``) are merged into one factor
whose template has a block-diagonal pattern of free entries: the engine then sees one
block-diagonal term instead of several crossed ones, and theta keeps lme4's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from mixedmodels.design.model_design import RandomEffectsTerm, hold_read_only


@dataclass(frozen=True, eq=False)
class GroupedTerm:
    """Random-effects terms that share one grouping factor, merged for the engine.

    Attributes
    ----------
    group
        Grouping factor name (``"litter"``).
    levels
        Level labels; ``refs`` index them.
    refs
        int64 (n,) level of each row.
    z
        float64 (n, p) concatenated columns of the merged terms.
    column_names
        Names of the columns of ``z``.
    blocks
        Column index ranges ``(start, stop)`` of the original terms; correlations are free
        only inside a block.
    members
        Indices (in the design's formula order) of the original terms, one per block.
    """

    group: str
    levels: tuple[str, ...]
    refs: np.ndarray
    z: np.ndarray
    column_names: tuple[str, ...]
    blocks: tuple[tuple[int, int], ...]
    members: tuple[int, ...] = ()

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
        return self.nlevels * self.ncols

    def free_entries(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the free entries of the template, column-major.

        Column-major order within each block reproduces lme4's theta order.
        """
        return _block_entries(self.blocks)


def _block_entries(blocks: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the free entries of a block pattern (new arrays)."""
    rows: list[int] = []
    cols: list[int] = []
    for start, stop in blocks:
        for j in range(start, stop):
            for i in range(j, stop):
                rows.append(i)
                cols.append(j)
    return np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)


def _grouped(members: list[RandomEffectsTerm], indices: list[int]) -> GroupedTerm:
    """The GroupedTerm of the terms ``members`` on one grouping factor (``indices``: their
    places in the formula), their columns side by side in formula order."""
    first = members[0]
    for other in members[1:]:
        if other.levels != first.levels or not np.array_equal(other.refs, first.refs):
            raise ValueError(f"terms on grouping factor {first.group!r} disagree on its levels")
    blocks = []
    start = 0
    for m in members:
        blocks.append((start, start + m.ncols))
        start += m.ncols
    names = tuple(name for m in members for name in m.column_names)
    z = first.z if len(members) == 1 else np.hstack([m.z for m in members])
    return GroupedTerm(
        group=first.group,
        levels=first.levels,
        refs=np.asarray(first.refs, dtype=np.int64),
        z=np.ascontiguousarray(z, dtype=np.float64),
        column_names=names,
        blocks=tuple(blocks),
        members=tuple(indices),
    )


def group_terms(terms: tuple[RandomEffectsTerm, ...]) -> tuple[GroupedTerm, ...]:
    """Merge terms on the same grouping factor and sort by number of levels, largest first.

    Sorting by decreasing number of levels is lme4's order (and MixedModels.jl's): the
    largest factor gets the block-diagonal first block of L, which keeps fill-in small.
    The sort is stable, so factors with equal numbers of levels keep formula order.
    """
    if len(terms) == 1:
        # One term (most models): nothing to merge or sort.
        return (_grouped([terms[0]], [0]),)
    groups = [term.group for term in terms]
    if len(set(groups)) == len(groups):
        # Every term on its own factor ((1 | plate) + (1 | sample)): nothing to merge; the
        # same GroupedTerms as the general path below, without its dictionaries (~2 us a
        # term), in the same stable order.
        single = [_grouped([term], [i]) for i, term in enumerate(terms)]
        single.sort(key=lambda g: -g.nlevels)
        return tuple(single)
    merged: dict[str, list[RandomEffectsTerm]] = {}
    member_index: dict[str, list[int]] = {}
    for i, term in enumerate(terms):
        merged.setdefault(term.group, []).append(term)
        member_index.setdefault(term.group, []).append(i)
    grouped = [_grouped(members, member_index[group]) for group, members in merged.items()]
    order = sorted(range(len(grouped)), key=lambda i: -grouped[i].nlevels)
    return tuple(grouped[i] for i in order)


def _free_entries(blocks: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`GroupedTerm.free_entries` of a block pattern, read-only, made once per pattern.

    A pure function of ``blocks``: every structure with the same pattern (every fit of a
    model) reads the same two read-only arrays instead of building them from lists.
    """
    found = _FREE_ENTRIES.get(blocks)
    if found is None:
        found = _block_entries(blocks)
        for entries in found:
            entries.setflags(write=False)
        if len(_FREE_ENTRIES) >= 256:
            _FREE_ENTRIES.clear()
        _FREE_ENTRIES[blocks] = found
    return found


#: Free entries by block pattern (``((0, 2),)`` for ``(1 + x | g)``).
_FREE_ENTRIES: dict[tuple[tuple[int, int], ...], tuple[np.ndarray, np.ndarray]] = {}


@dataclass(frozen=True, eq=False)
class CovarianceStructure:
    """The parameterisation theta of all relative covariance templates.

    Attributes
    ----------
    terms
        Grouped terms in engine order (largest number of levels first).
    offsets
        ``offsets[k]:offsets[k+1]`` is the slice of theta belonging to term ``k``.
    """

    terms: tuple[GroupedTerm, ...]
    offsets: tuple[int, ...]
    rows: tuple[np.ndarray, ...]
    cols: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        for entries in (*self.rows, *self.cols):
            entries.setflags(write=False)  # read-only (shared by structures of one pattern)

    @classmethod
    def from_terms(cls, terms: tuple[GroupedTerm, ...]) -> CovarianceStructure:
        rows, cols, offsets = [], [], [0]
        for term in terms:
            r, c = _free_entries(term.blocks)
            rows.append(r)
            cols.append(c)
            offsets.append(offsets[-1] + len(r))
        return cls(terms=terms, offsets=tuple(offsets), rows=tuple(rows), cols=tuple(cols))

    @property
    def ntheta(self) -> int:
        return self.offsets[-1]

    @cached_property
    def nranef(self) -> int:
        """``q``: random effects of all terms (the columns of ``Z``)."""
        return sum(t.nranef for t in self.terms)

    @cached_property
    def all_scalar(self) -> bool:
        """Whether every template is ``1 x 1`` (one column per term)."""
        return all(t.ncols == 1 for t in self.terms)

    def lower_bounds(self) -> np.ndarray:
        """0 for diagonal template entries (standard deviations), -inf off the diagonal."""
        if self.all_scalar:
            return np.zeros(self.ntheta)  # every entry is a diagonal
        return np.concatenate(
            [np.where(r == c, 0.0, -np.inf) for r, c in zip(self.rows, self.cols, strict=True)]
        )

    def initial_theta(self) -> np.ndarray:
        """lme4's start: identity templates (1 on the diagonal, 0 elsewhere)."""
        return np.concatenate(
            [np.where(r == c, 1.0, 0.0) for r, c in zip(self.rows, self.cols, strict=True)]
        )

    def templates(self, theta: np.ndarray) -> list[np.ndarray]:
        """Lower-triangular templates T_k(theta), one ``p_k x p_k`` array per term."""
        out = []
        for k, term in enumerate(self.terms):
            t = np.zeros((term.ncols, term.ncols))
            t[self.rows[k], self.cols[k]] = theta[self.offsets[k] : self.offsets[k + 1]]
            out.append(t)
        return out

    def theta_names(self) -> list[str]:
        """lme4-style names ``group.term`` (diagonal) and ``group.term2.term1`` (off-diagonal)."""
        names = []
        for k, term in enumerate(self.terms):
            for i, j in zip(self.rows[k], self.cols[k], strict=True):
                if i == j:
                    names.append(f"{term.group}.{term.column_names[i]}")
                else:
                    names.append(f"{term.group}.{term.column_names[i]}.{term.column_names[j]}")
        return names

    def theta_labels(self) -> list[str]:
        """Readable names of the theta entries, for messages: ``group: term`` on the diagonal.

        Off-diagonal entries read ``group: row term, column term`` (the template entry
        that couples them). A term named twice on one factor (``(1 | g) + (1 | g)``, which
        lme4 fits as two blocks) is told apart by ``[term m]``, its place among the
        factor's terms in the formula.
        """
        labels = []
        for k, term in enumerate(self.terms):
            names = list(term.column_names)
            repeated = {n for n in names if names.count(n) > 1}
            for b, (start, stop) in enumerate(term.blocks):
                for c in range(start, stop):
                    if names[c] in repeated:
                        names[c] = f"{names[c]} [term {b + 1}]"
            for i, j in zip(self.rows[k], self.cols[k], strict=True):
                pair = names[i] if i == j else f"{names[i]}, {names[j]}"
                labels.append(f"{term.group}: {pair}")
        return labels

    def theta_blocks(self) -> np.ndarray:
        """int64 (ntheta,): which covariance block (one ``(...| g)`` term) each entry is in.

        A diagonal entry on its bound leaves the rest of its block without a unique value
        (with ``T[0, 0] = 0`` only ``T[1, 0]^2 + T[1, 1]^2`` is seen): checks that need an
        interior optimum skip the whole block.
        """
        out = np.zeros(self.ntheta, dtype=np.int64)
        block = 0
        for k, term in enumerate(self.terms):
            entries = out[self.offsets[k] : self.offsets[k + 1]]
            for start, stop in term.blocks:
                entries[(self.cols[k] >= start) & (self.cols[k] < stop)] = block
                block += 1
        return out

    def is_singular(self, theta: np.ndarray, tol: float = 1e-4) -> bool:
        """lme4's isSingular: a diagonal template entry below ``tol`` means a boundary fit."""
        lower = self.lower_bounds()
        on_diag = np.isfinite(lower)
        return bool(np.any(np.abs(theta[on_diag]) < tol))
