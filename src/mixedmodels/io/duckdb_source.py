"""A DuckDB query as a streamed data source: the query runs once per pass, in record batches.

DuckDB (``pip install mixedmodels[duckdb]``) reads Parquet, CSV and JSON files, filters
and joins them, and hands the result over in Arrow record batches, so a query over files
larger than memory can be fitted::

    fit = mm.lmer("y ~ x + (1 | user)",
                  mm.duckdb_query("SELECT * FROM 'big.parquet' WHERE country = 'DE'"))

The query runs once per pass over the data; each pass projects it on the columns the
formula uses. The blocks of the fit are sums over rows, so the row order does not change
the fit; :func:`~mixedmodels.results.streamed.sample_residuals` depends on it (DuckDB keeps
the insertion order unless told otherwise; add ``ORDER BY`` for a fixed order).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd

from mixedmodels.errors import DataError, InputFileError

__all__ = ["DuckDBQuery", "duckdb_query"]


def _duckdb():
    try:
        import duckdb
    except ImportError:
        raise InputFileError(
            "DuckDB queries need the duckdb package: python3 -m pip install 'mixedmodels[duckdb]'"
        ) from None
    return duckdb


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBQuery:
    """A SQL query whose result is read in chunks (see :func:`duckdb_query`)."""

    def __init__(
        self,
        sql: str,
        *,
        database: str | os.PathLike[str] = ":memory:",
        params: Sequence[Any] | dict[str, Any] | None = None,
        connection: Any = None,
    ):
        if not isinstance(sql, str) or not sql.strip():
            raise DataError("the DuckDB query is empty; pass SQL such as \"SELECT * FROM 'f.csv'\"")
        self.sql = sql.strip().rstrip(";")
        self.database = os.fspath(database)
        self.params = params
        self.connection = connection
        self.name = f"duckdb: {self.sql if len(self.sql) <= 60 else self.sql[:57] + '...'}"

    def _connect(self):
        """A connection for one pass, and whether it is ours to close."""
        duckdb = _duckdb()
        if self.connection is not None:
            # The user's connection: registered DataFrames and temporary views are visible
            # on it (not on a cursor); it stays open.
            return self.connection, False
        return duckdb.connect(self.database, read_only=self.database != ":memory:"), True

    def _relation(self, con, sql: str):
        duckdb = _duckdb()
        try:
            return con.sql(sql, params=self.params)
        except duckdb.Error as exc:
            raise InputFileError(f"the DuckDB query failed: {_first_line(exc)}") from None

    def check(self, columns: Sequence[str]) -> None:
        """Run the query's binder (no rows read): missing columns fail here."""
        con, owned = self._connect()
        try:
            available = list(self._relation(con, self.sql).columns)
        finally:
            if owned:
                con.close()
        for column in columns:
            if column not in available:
                shown = ", ".join(repr(c) for c in available[:10])
                raise DataError(
                    f"column '{column}' used in the formula is not in the result of the DuckDB "
                    f"query; it has the columns {shown}"
                )

    def total_rows(self) -> int | None:
        return None

    def chunks(
        self, columns: Sequence[str] | None, chunk_rows: int
    ) -> Iterator[tuple[str, pd.DataFrame]]:
        duckdb = _duckdb()
        sql = self.sql
        if columns is not None:
            sql = f"SELECT {', '.join(_quote(c) for c in columns)} FROM ({self.sql}) AS mm_source"
        con, owned = self._connect()
        try:
            reader = self._relation(con, sql).to_arrow_reader(chunk_rows)
            start = 0
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except duckdb.Error as exc:
                    raise InputFileError(
                        f"the DuckDB query failed after {start} rows: {_first_line(exc)}"
                    ) from None
                end = start + batch.num_rows
                yield (f"query rows {start}-{end - 1}", batch.to_pandas())
                start = end
        finally:
            if owned:
                con.close()


def duckdb_query(
    sql: str,
    *,
    database: str | os.PathLike[str] = ":memory:",
    params: Sequence[Any] | dict[str, Any] | None = None,
    connection: Any = None,
) -> DuckDBQuery:
    """A DuckDB query to fit a model to, read in chunks (nothing runs until the fit).

    Parameters
    ----------
    sql
        The query, e.g. ``"SELECT * FROM 'events/*.parquet' WHERE country = 'DE'"``.
    database
        A DuckDB database file (opened read-only), or ``":memory:"`` for queries over files.
    params
        Values of ``?``/``$name`` placeholders.
    connection
        An open DuckDB connection to run the query on (its tables and registered
        DataFrames are visible); it is left open.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> q = mm.duckdb_query("SELECT * FROM 'events.parquet' WHERE country = 'DE'")  # doctest: +SKIP
    >>> fit = mm.lmer("y ~ x + (1 | user)", q)  # doctest: +SKIP
    """
    return DuckDBQuery(sql, database=database, params=params, connection=connection)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
