"""Factors: decide which columns are factors, find their levels and code rows, vectorised.

R conventions: levels are sorted (numbers numerically, strings in C-locale order,
which is Python's ``sorted()``), a pandas Categorical keeps its category order,
unused levels are dropped, and numeric level labels print like R (``175``, not
``175.0``; ``0.5``).  Logical columns have the levels ``FALSE`` and ``TRUE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from mixedmodels.errors import DataError


def format_level(value: object) -> str:
    """Return the label R prints for a factor level value."""
    if isinstance(value, bool | np.bool_):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        f = float(value)
        if f.is_integer() and abs(f) < 1e15:
            return str(int(f))
        if np.isinf(f):
            return "Inf" if f > 0 else "-Inf"
        return format(f, ".15g")
    return str(value)


def is_factor_dtype(series: pd.Series | np.ndarray | pd.api.extensions.ExtensionArray) -> bool:
    """Whether a bare column is a factor: strings, objects, booleans and Categoricals are.

    ``series`` is a column as a Series or as its array (only its dtype is read).
    """
    dtype = series.dtype
    if isinstance(dtype, np.dtype):
        # pandas' answer for NumPy dtypes without its dtype machinery (cold after the
        # benchmark's gc.collect(), it costs more than the check): integers, unsigned,
        # floats and complex are numbers; booleans, objects, strings, datetimes and
        # timedeltas are not (pandas counts timedelta64 as datetime-like, not numeric).
        return dtype.kind not in "iufc"
    if isinstance(dtype, pd.CategoricalDtype | pd.StringDtype):  # strings: factors
        return True
    if pd.api.types.is_bool_dtype(dtype):
        return True
    return not pd.api.types.is_numeric_dtype(dtype)


def is_numeric_dtype(series: pd.Series | np.ndarray | pd.api.extensions.ExtensionArray) -> bool:
    """Whether a column can be used in arithmetic (numbers or booleans, not Categoricals).

    ``series`` is a column as a Series or as its array (only its dtype is read).
    """
    dtype = series.dtype
    if isinstance(dtype, np.dtype):  # as pandas answers, without its dtype machinery
        return dtype.kind in "biufc"
    if isinstance(dtype, pd.CategoricalDtype | pd.StringDtype):
        return False
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


@dataclass(frozen=True)
class FactorLevels:
    """Levels of one factor as found in the fitting data, and its reference level.

    Attributes
    ----------
    column
        The data column (for messages).
    levels
        Level labels in model order.
    reference
        Index into ``levels`` of the treatment-contrast reference level.
    contrast
        ``"treatment"`` (R's ``contr.treatment`` with base ``reference``), ``"sum"``
        (``contr.sum``) or ``"helmert"`` (``contr.helmert``). Kept with the levels, so
        that prediction codes new rows with the fitted contrast matrix.
    """

    column: str
    levels: tuple[str, ...]
    reference: int = 0
    contrast: str = "treatment"

    @property
    def nlevels(self) -> int:
        return len(self.levels)

    @cached_property
    def _lookup(self) -> dict[str, int]:
        """Label -> index, built once: a streamed fit encodes every chunk with the same
        levels (1e6 users: a 1e6-entry dict per chunk and term was a third of pass 2)."""
        return {label: i for i, label in enumerate(self.levels)}

    @cached_property
    def _integer_table(self) -> tuple[int, np.ndarray] | None:
        """``(lo, table)`` with ``table[v - lo]`` the index of the level labelled ``str(v)``
        (-2: no such level) when every label is an integer's canonical text over a range
        at most a few times the levels' count, else None; built once per factor."""
        values = []
        for label in self.levels:
            try:
                v = int(label)
            except ValueError:
                return None
            if str(v) != label:  # "007", "+1", " 1": not the text an integer prints as
                return None
            values.append(v)
        if not values:
            return None
        ints = np.array(values, dtype=object)
        lo, hi = min(values), max(values)
        if hi - lo + 1 > 4 * len(values) + 1024 or lo < -(2**62) or hi > 2**62:
            return None
        table = np.full(hi - lo + 1, -2, dtype=np.int64)
        table[(ints - lo).astype(np.int64)] = np.arange(len(values), dtype=np.int64)
        return lo, table

    def _encode_integers(self, series) -> np.ndarray | None:
        """:meth:`encode` for an integer column and integer labels: one gather from
        :attr:`_integer_table` (no labels per chunk: pass 2 of 1e7 rows with 1e6 users
        spent ~5 s of CPU formatting and looking up the chunks' labels); else None."""
        values = column_array(series)
        if not (isinstance(values.dtype, np.dtype) and values.dtype.kind in "iu"):
            return None
        found = self._integer_table
        if found is None:
            return None
        lo, table = found
        if values.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        vmin = int(np.minimum.reduce(values))
        vmax = int(np.maximum.reduce(values))
        if vmin >= lo and vmax - lo < table.shape[0]:
            offset = values.astype(np.int64) - lo if lo else values.astype(np.int64)
            return table[offset]
        # Some values outside the levels' range: unseen (-2), as the general path says.
        v = values.astype(np.int64) if vmax <= 2**62 else None
        if v is None:
            return None
        inside = (v >= lo) & (v - lo < table.shape[0])
        out = np.full(v.shape[0], -2, dtype=np.int64)
        out[inside] = table[v[inside] - lo]
        return out

    def __getstate__(self) -> dict:
        # The lookups are rebuilt where they are used: not shipped to Dask workers with the
        # plan.
        state = dict(self.__dict__)
        state.pop("_lookup", None)
        state.pop("_integer_table", None)
        return state

    def contrast_matrix(self) -> np.ndarray:
        """Return the (levels, levels - 1) contrast matrix, as R's ``contr.*`` functions.

        Notes
        -----
        ``contr.treatment``: the identity without the reference level's column.
        ``contr.sum``: the identity on the first k-1 levels, the last level coded -1 in
        every column. ``contr.helmert``: column j (1-based) is -1 for levels 1..j, j for
        level j+1 and 0 after it (R's ``contr.helmert`` documentation).
        """
        k = self.nlevels
        if self.contrast == "sum":
            return np.vstack([np.eye(k - 1), -np.ones((1, k - 1))])
        if self.contrast == "helmert":
            out = np.zeros((k, k - 1))
            for j in range(1, k):
                out[:j, j - 1] = -1.0
                out[j, j - 1] = float(j)
            return out
        return np.delete(np.eye(k), self.reference, axis=1)

    def contrast_names(self) -> list[str]:
        """Return the suffixes R gives the contrast columns.

        Treatment contrasts: the levels but the reference; sum and Helmert contrasts:
        ``1, 2, ...``, as R names the unnamed columns of ``contr.sum``/``contr.helmert``.
        """
        if self.contrast == "treatment":
            return [lev for i, lev in enumerate(self.levels) if i != self.reference]
        return [str(j) for j in range(1, self.nlevels)]

    def encode(self, series: pd.Series) -> np.ndarray:
        """Return int64 level indices of ``series``: -1 for missing values, -2 for unseen levels."""
        fast = self._encode_integers(series)
        if fast is not None:
            return fast
        codes, labels = _factorize_labels(series, sort=False)
        lookup = self._lookup
        mapping = np.array([lookup.get(label, -2) for label in labels] + [-1], dtype=np.int64)
        # codes == -1 (missing) index the trailing -1 entry.
        return mapping[codes]


def column_array(series: pd.Series | np.ndarray | pd.api.extensions.ExtensionArray):
    """The array behind a column: an ndarray for NumPy dtypes, else its ExtensionArray."""
    if isinstance(series, pd.Series):
        return series.to_numpy() if isinstance(series.dtype, np.dtype) else series.array
    return series


def _factorize_sorted_fast(
    series: pd.Series | np.ndarray | pd.api.extensions.ExtensionArray,
) -> tuple[np.ndarray, list[str]] | None:
    """Sorted factorisation of plain numeric, boolean and string columns, or None.

    ``pd.factorize(series, sort=True)`` costs ~0.05 ms on a numeric column and ~0.15 ms
    on a pyarrow-backed string column of a few hundred rows, a tenth of a small model's
    whole fit. The paths below give the same codes and labels at every size: integers
    over a short range are ranked directly (no hashing, no sort); other numbers are
    factorised unsorted (a hash table, O(n)) and the few uniques sorted numerically, as
    by pandas; Arrow strings are dictionary-encoded by Arrow itself (no Python string per
    row) and their few uniques sorted by code point, which is Arrow's UTF-8 byte order and
    Python's ``sorted``. Object columns (possibly of mixed types, which pandas sorts its
    own way) and float columns with NaN return None and keep the general path. A short
    Arrow string column without nulls is coded in Python (:func:`_small_arrow_strings`).

    ``series`` is a Series or the column's array (:func:`column_array`): the design reads
    arrays, which saves building a Series per column.
    """
    values = column_array(series)
    dtype = values.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        if dtype.kind in "iu":
            key = None
            if values.shape[0] <= _SHORT_INTEGERS:
                # Keyed by the values themselves (dtype and bytes: equal keys are equal
                # columns, whatever array holds them), so a column changed in place is a
                # new key, never a stale answer.
                key = (dtype.str, values.tobytes())
                known = _INTEGER_CODES.get(key)
                if known is not None:
                    return known[0], list(known[1])
            ranked = _rank_short_range(values)
            if ranked is not None:
                if key is not None:
                    codes, labels = ranked
                    codes.setflags(write=False)  # every caller gets this array
                    if len(_INTEGER_CODES) >= _INTEGER_CODES_MAX:
                        _forget_oldest(_INTEGER_CODES)
                    _INTEGER_CODES[key] = (codes, tuple(labels))
                return ranked
        if dtype.kind == "f" and np.isnan(values).any():
            return None
        codes, uniques = pd.factorize(values, sort=False)
        order = np.argsort(uniques, kind="stable")
        if dtype.kind in "iu":
            # Python ints print as R does; format_level would give the same text, slower.
            labels = [str(u) for u in uniques[order].tolist()]
        else:
            labels = [format_level(u) for u in uniques[order]]
        return _remap(codes, order), labels
    if isinstance(dtype, pd.StringDtype):
        if dtype.storage == "pyarrow":
            chunked = values.__arrow_array__()  # the column's own Arrow data, not a copy
            known = _ARROW_CODES.get(id(chunked))
            if known is not None and known[0] is chunked:
                return known[1], list(known[2])
            small = _small_arrow_strings(chunked)
            if small is not None:
                return _remember_arrow_codes(chunked, *small)
            codes, raw = _arrow_dictionary(chunked)
        else:
            codes, uniques = pd.factorize(values.to_numpy(dtype=object), sort=False)
            raw = [str(u) for u in uniques.tolist()]
        order = sorted(range(len(raw)), key=raw.__getitem__)
        return _remap(codes, np.asarray(order, dtype=np.intp)), [raw[i] for i in order]
    return None


_INT64_MAX = int(np.iinfo(np.int64).max)


def _rank_short_range(values: np.ndarray) -> tuple[np.ndarray, list[str]] | None:
    """Codes and labels of integers whose range is at most a few times their count (level
    numbers, subject ids): each value's rank among the values present, read from a
    cumulative count over the range; None for wider ranges (a hash table then).

    Each NumPy call costs ~1-2 us on a column of a few hundred rows, more than its
    arithmetic, so the calls are few: over a short range the counts are int64 from the
    start (a cumulative sum of booleans casts them first, ~2 us more) and summed by
    ``add.accumulate`` (no keyword handling); a long range keeps a byte per value. The
    labels of a set of values seen before come from :data:`_INTEGER_LABELS` (``str`` of
    each level: ~3 us for 20 levels).
    """
    if values.shape[0] == 0:
        return None
    lo = int(np.minimum.reduce(values))
    hi = int(np.maximum.reduce(values))
    if hi - lo + 1 > 4 * values.shape[0] + 1024 or hi > _INT64_MAX:
        return None
    span = hi - lo + 1
    # In int64: a narrow dtype would wrap around (int8: 5 - (-128) is not 133).
    if lo:
        offset = np.subtract(values, lo, dtype=np.int64)
    else:
        offset = np.asarray(values, dtype=np.int64)
    if span > _SHORT_COUNTS:  # a long range: a byte per value, not eight
        present_mask = np.zeros(span, dtype=bool)
        present_mask[offset] = True
        rank = present_mask.cumsum(dtype=np.int64)
        where = present_mask.nonzero()[0]
    else:
        present = np.zeros(span, dtype=np.int64)
        present[offset] = 1
        rank = np.add.accumulate(present)
        where = present.nonzero()[0]
    # rank[v] = number of values present at or below v; minus one is the 0-based code.
    codes = rank[offset]
    codes -= 1
    if where.shape[0] > _INTEGER_LABELS_LEVELS:  # many levels: not held
        return codes, [str(v + lo) for v in where.tolist()]
    key = (lo, where.tobytes())
    labels = _INTEGER_LABELS.get(key)
    if labels is None:
        labels = tuple([str(v + lo) for v in where.tolist()])
        if len(_INTEGER_LABELS) >= _INTEGER_LABELS_MAX:
            _forget_oldest(_INTEGER_LABELS)
        _INTEGER_LABELS[key] = labels
    return codes, list(labels)


#: Labels of the integer levels present, a pure function of the values present: ``(lowest
#: value, positions present above it as bytes) -> labels``, oldest first. A refit, a
#: bootstrap or a simulation codes the same subject ids on every design.
_INTEGER_LABELS: dict[tuple[int, bytes], tuple[str, ...]] = {}
_INTEGER_LABELS_MAX = 64
#: Ranges up to which presence is counted in int64 (at most 512 kB), beyond in booleans.
_SHORT_COUNTS = 65536
#: Levels up to which the labels are kept (64 entries of at most ~0.3 MB each).
_INTEGER_LABELS_LEVELS = 4096


#: Sorted factorisations of short integer columns, by their values: ``(dtype, bytes) ->
#: (read-only codes, labels)``, oldest first. Hashing a few hundred rows' bytes costs a
#: third of ranking them again (sleepstudy's Subject, ratpup's litter: ~10 us a design).
_INTEGER_CODES: dict[tuple[str, bytes], tuple[np.ndarray, tuple[str, ...]]] = {}
_INTEGER_CODES_MAX = 64
#: Rows up to which an integer column's factorisation is kept (16 kB of bytes per key).
_SHORT_INTEGERS = 2048

#: Rows up to which an Arrow string column is coded by a Python dict (see below).
_SMALL_STRINGS = 4096

#: Sorted factorisations of short Arrow string columns (see :func:`_remember_arrow_codes`):
#: ``id(chunked) -> (chunked, read-only codes, labels)``, oldest first.
_ARROW_CODES: dict[int, tuple[object, np.ndarray, tuple[str, ...]]] = {}
#: Columns remembered at most (each at most ``_SMALL_STRINGS`` rows: a few MB in all).
_ARROW_CODES_MAX = 64


def _remember_arrow_codes(
    chunked, codes: np.ndarray, labels: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Keep the sorted factorisation of a short Arrow string column for its next use.

    Arrow arrays are immutable: pandas never writes into a column's ChunkedArray but
    replaces it (``df.loc[i, col] = v``, ``df[col] = ...``, ``.str`` methods, ``replace``
    and ``fillna`` in place all give the column a new one), so the same ChunkedArray
    object holds the same strings, and a factorisation found for it stays right. The
    entry holds the ChunkedArray itself, so its ``id`` cannot be reused by another object
    while the entry lives; the codes are read-only, so no caller can change what the
    next one reads. Refitting a model to the same DataFrame (many formulas, a bootstrap
    by :func:`~mixedmodels.lmer` calls) then skips reading the strings into Python:
    ~0.05-0.1 ms per column after a ``gc.collect()``, of a 1.5-3 ms small-model fit.
    """
    codes.setflags(write=False)
    if len(_ARROW_CODES) >= _ARROW_CODES_MAX:
        _forget_oldest(_ARROW_CODES)
    _ARROW_CODES[id(chunked)] = (chunked, codes, tuple(labels))
    return codes, labels


def _forget_oldest(cache: dict) -> None:
    """Drop the oldest entry of a bounded cache (dicts keep insertion order).

    Another thread may change the dict between ``iter`` and ``next`` (two designs built
    at once): then nothing is dropped this time, which only lets the cache hold one
    entry more until the next insertion.
    """
    try:
        del cache[next(iter(cache))]
    except (RuntimeError, KeyError, StopIteration):
        pass


def _small_arrow_strings(chunked) -> tuple[np.ndarray, list[str]] | None:
    """Codes and sorted labels of a short Arrow string column without nulls, by Python's
    set, sort and dict; None for longer columns or columns with nulls.

    Arrow's ``dictionary_encode`` is a compute-kernel dispatch whose first call after a
    ``gc.collect()`` costs ~0.2 ms, more than reading a few hundred strings into Python and
    coding them here (~0.1 ms cold, ~15 us warm); past a few thousand rows the per-row
    Python work loses to Arrow's kernel. Python sorts strings by code point, which is
    Arrow's UTF-8 byte order, as the general path sorts them.
    """
    if chunked.null_count or len(chunked) > _SMALL_STRINGS:
        return None
    texts = chunked.to_pylist()
    labels = sorted(set(texts))
    lookup = dict(zip(labels, range(len(labels)), strict=True))
    codes = np.fromiter(map(lookup.__getitem__, texts), dtype=np.int64, count=len(texts))
    return codes, labels


def _arrow_dictionary(chunked) -> tuple[np.ndarray, list[str]]:
    """Codes (-1 for missing values) and unsorted labels of a pyarrow-backed string
    column (its Arrow ChunkedArray), by Arrow's dictionary encoding."""
    import pyarrow.compute as pc  # pandas' Arrow strings imply pyarrow is installed

    encoded = pc.dictionary_encode(chunked)
    if encoded.num_chunks == 1:
        encoded = encoded.chunk(0)
    else:  # every chunk has its own dictionary: one shared dictionary first
        encoded = encoded.unify_dictionaries().combine_chunks()
    indices = encoded.indices
    if indices.null_count:  # missing values have no index: -1, as pandas' sentinel
        indices = pc.fill_null(indices, -1)
    codes = np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    return codes, encoded.dictionary.to_pylist()


def _remap(codes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Codes into the uniques -> codes into the sorted uniques ``uniques[order]``; -1 stays."""
    remap = np.empty(len(order) + 1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    remap[-1] = -1  # missing values (code -1) index the last slot
    return remap[np.asarray(codes, dtype=np.int64)]


def _factorize_labels(series: pd.Series, *, sort: bool) -> tuple[np.ndarray, list[str]]:
    """Return (codes with -1 for missing, labels of the uniques) for any column."""
    if sort:
        fast = _factorize_sorted_fast(series)
        if fast is not None:
            return fast
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = np.asarray(series.cat.codes, dtype=np.int64)
        categories = list(series.cat.categories)
        if sort:  # drop unused categories, keeping the category order
            used = np.bincount(codes[codes >= 0], minlength=len(categories)) > 0
            if not used.all():
                remap = np.cumsum(used) - 1
                codes = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
                categories = [c for c, u in zip(categories, used, strict=True) if u]
        return codes, [format_level(c) for c in categories]
    try:
        codes, uniques = pd.factorize(series, sort=sort, use_na_sentinel=True)
    except TypeError:  # mixed types that do not compare: order by label instead
        codes, uniques = pd.factorize(series, sort=False, use_na_sentinel=True)
        labels = [format_level(u) for u in uniques]
        order = sorted(range(len(labels)), key=labels.__getitem__)
        remap = np.empty(len(order), dtype=np.int64)
        remap[order] = np.arange(len(order))
        codes = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
        return np.asarray(codes, dtype=np.int64), [labels[i] for i in order]
    return np.asarray(codes, dtype=np.int64), [format_level(u) for u in uniques]


def fit_factor(
    series: pd.Series, column: str, reference: str | None = None, contrast: str = "treatment"
) -> tuple[FactorLevels, np.ndarray]:
    """Find the levels of a complete (no missing values) column and code its rows.

    Parameters
    ----------
    series
        The column, already restricted to the rows used.
    column
        Its name, for error messages.
    reference
        Label of the reference level, or None for the first level.
    contrast
        The contrast coding (see :class:`FactorLevels`).

    Returns
    -------
    (FactorLevels, codes)
        ``codes`` are int64 indices into the levels.
    """
    codes, labels = _factorize_labels(series, sort=True)
    return factor_levels(labels, column, reference, contrast), codes


def factorize_sorted(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes (int64, -1 for missing values) and labels of the sorted levels of a column:
    what :func:`fit_factor` reads, for callers that code one column more than one way."""
    return _factorize_labels(series, sort=True)


def factor_levels(
    labels: list[str],
    column: str,
    reference: str | None = None,
    contrast: str = "treatment",
) -> FactorLevels:
    """The levels of :func:`fit_factor` from the column's :func:`factorize_sorted`.

    A pure function of its arguments, so the levels of the same labels (a refit, the next
    design of a simulation) are the object made the first time (:data:`_LEVELS`): no
    duplicate check nor dataclass again, and the caches keyed on levels find it at once.
    """
    key = (column, tuple(labels), reference, contrast)
    found = _LEVELS.get(key)
    if found is not None:
        return found
    if len(set(labels)) != len(labels):
        raise DataError(
            f"column '{column}' has distinct values that print the same ({labels[:10]}); "
            "convert it to strings first"
        )
    ref_index = 0
    if reference is not None:
        if reference not in labels:
            shown = ", ".join(repr(x) for x in labels[:20]) + (" ..." if len(labels) > 20 else "")
            raise DataError(
                f"reference level {reference!r} is not a level of column '{column}'; "
                f"its levels are: {shown}"
            )
        ref_index = labels.index(reference)
    levels = FactorLevels(column, key[1], ref_index, contrast)
    if levels.nlevels <= _LEVELS_MAX_LEVELS:  # a factor of many levels: not held
        if len(_LEVELS) >= _LEVELS_MAX:
            _forget_oldest(_LEVELS)
        _LEVELS[key] = levels
    return levels


#: Levels made by :func:`factor_levels`: ``(column, labels, reference, contrast) ->
#: FactorLevels``, oldest first (immutable: every design may share them).
_LEVELS: dict[tuple, FactorLevels] = {}
_LEVELS_MAX = 256
_LEVELS_MAX_LEVELS = 4096
