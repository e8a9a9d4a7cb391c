"""polars and pyarrow tables as pandas DataFrames, reading only the columns a model uses.

A polars ``DataFrame`` or ``LazyFrame`` (collected after the selection, so a lazy query
reads only those columns) and a pyarrow ``Table`` or ``RecordBatch`` are accepted wherever
a pandas DataFrame is. Only the requested columns are converted (the formula's, the
weights', the residual groups'); if one of them is missing, every column is converted so
that the design's error can list what the data have. Strings become string columns; a
polars ``Categorical`` is read as strings (its levels sorted, as R's ``factor()``), a
polars ``Enum`` and an Arrow dictionary as a pandas categorical in their declared order
(as ``pandas.read_parquet`` reads a dictionary column); nulls become NaN/None: the design
stage then drops those rows exactly as it drops NaN in a pandas frame. Neither library is
imported unless such an object is passed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["as_pandas", "is_arrow_like"]


def _library(data: Any) -> str | None:
    module = type(data).__module__
    if module.startswith("polars"):
        return "polars"
    if module.startswith("pyarrow"):
        return "pyarrow"
    return None


def is_arrow_like(data: Any) -> bool:
    """Whether ``data`` is a polars DataFrame/LazyFrame or a pyarrow Table/RecordBatch."""
    library = _library(data)
    if library == "polars":
        import polars as pl

        return isinstance(data, pl.DataFrame | pl.LazyFrame)
    if library == "pyarrow":
        import pyarrow as pa

        return isinstance(data, pa.Table | pa.RecordBatch)
    return False


def as_pandas(data: Any, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """``data`` (polars or pyarrow) as a pandas DataFrame of ``columns`` (default: all).

    Examples
    --------
    >>> import polars as pl
    >>> as_pandas(pl.DataFrame({"y": [1.0, None], "g": ["a", "b"], "x": [1, 2]}), ["y", "g"])
         y  g
    0  1.0  a
    1  NaN  b
    """
    library = _library(data)
    wanted = None if columns is None else list(dict.fromkeys(columns))
    if library == "polars":
        import polars as pl

        if isinstance(data, pl.LazyFrame):
            names = data.collect_schema().names()
            if wanted is not None and set(wanted) <= set(names):
                data = data.select(wanted)
            data = data.collect()
        elif wanted is not None and set(wanted) <= set(data.columns):
            data = data.select(wanted)
        # A polars Categorical's order is that of first appearance (a string cache), not
        # a declared one: its levels sort as strings do (R's factor()). An Enum declares
        # its order, which is kept (a pandas ordered categorical's levels).
        data = data.with_columns(pl.col(pl.Categorical).cast(pl.String))
        return data.to_pandas()
    if library == "pyarrow":
        if wanted is not None and set(wanted) <= set(data.schema.names):
            data = data.select(wanted)
        # Plain numpy/object columns (not Arrow-backed): what read_data gives for a CSV.
        return data.to_pandas()
    raise TypeError(f"not a polars or pyarrow table: {type(data).__name__}")
