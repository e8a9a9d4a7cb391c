"""Sources of chunks for data that do not fit in memory, and a progress bar.

A fit over any number of rows reads the data twice, one chunk at a time (see
:mod:`mixedmodels.models.streamed`). This module only reads: a glob, directory, file or list
of Parquet files (read with pyarrow, one record batch at a time), a DuckDB query
(:func:`mixedmodels.io.duckdb_source.duckdb_query`), and pandas DataFrames (one, split into
chunks, or a list of them). Dask DataFrames are recognised here and reduced on their cluster
by :mod:`mixedmodels.models.dask_fit`.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from mixedmodels.errors import DataError, InputFileError

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "ChunkSource",
    "FrameChunks",
    "ParquetFiles",
    "Progress",
    "chunk_rows_or_default",
    "is_dask_collection",
    "is_streamed_source",
    "open_source",
    "prefetched",
]

#: Rows per chunk unless told otherwise: ~100 MB of working memory for a few columns.
DEFAULT_CHUNK_ROWS = 500_000

_GLOB_CHARS = frozenset("*?[")
_PARQUET_ENDINGS = (".parquet", ".pq")


# ---------------------------------------------------------------------------------------------
# Sources of chunks
# ---------------------------------------------------------------------------------------------
@runtime_checkable
class ChunkSource(Protocol):
    """Anything that can hand out its rows as DataFrames, as often as asked, in one order."""

    name: str

    def check(self, columns: Sequence[str]) -> None:
        """Fail early (before reading rows) if ``columns`` cannot be read."""

    def total_rows(self) -> int | None:
        """Number of rows if known without reading them, for the progress bar."""

    def chunks(
        self, columns: Sequence[str] | None, chunk_rows: int
    ) -> Iterator[tuple[str, pd.DataFrame]]:
        """Yield ``(where, frame)``: a description for messages and the rows."""


class FrameChunks:
    """pandas DataFrames as a source: one DataFrame cut into chunks, or a list of them.

    Parameters
    ----------
    frames
        A DataFrame (split into ``chunk_rows`` pieces) or a sequence of DataFrames (used as
        given, each one chunk).
    """

    def __init__(self, frames: pd.DataFrame | Sequence[pd.DataFrame], name: str = "DataFrame"):
        self.frames = frames
        self.name = name

    def check(self, columns: Sequence[str]) -> None:
        pass

    def total_rows(self) -> int | None:
        if isinstance(self.frames, pd.DataFrame):
            return len(self.frames)
        return sum(len(f) for f in self.frames)

    def chunks(self, columns, chunk_rows):
        if isinstance(self.frames, pd.DataFrame):
            frame = self.frames
            for start in range(0, max(len(frame), 1), chunk_rows):
                part = frame.iloc[start : start + chunk_rows]
                yield (f"rows {start}-{start + len(part) - 1}", _select(part, columns))
        else:
            for i, frame in enumerate(self.frames):
                if not isinstance(frame, pd.DataFrame):
                    raise DataError(f"chunk {i} is a {type(frame).__name__}, not a DataFrame")
                yield (f"chunk {i} of {len(self.frames)}", _select(frame, columns))


def _select(frame: pd.DataFrame, columns: Sequence[str] | None) -> pd.DataFrame:
    if columns is None:
        return frame
    # Missing columns are reported by the design layer with a helpful message.
    return frame[[c for c in columns if c in frame.columns]]


class ParquetFiles:
    """Parquet files read one record batch at a time with pyarrow.

    Parameters
    ----------
    paths
        A file, a directory (every ``*.parquet``/``*.pq`` below it), a glob pattern
        (``"events/*.parquet"``, ``"data/**/*.parquet"``) or a list of files. Files are
        read in sorted order.
    """

    def __init__(self, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]):
        if isinstance(paths, str | os.PathLike):
            text = os.path.expanduser(os.fspath(paths))
            self.name = text
            if _GLOB_CHARS & set(text):
                files = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
                if not files:
                    raise InputFileError(f"no files match '{text}'; check the pattern and folder")
            elif os.path.isdir(text):
                files = sorted(
                    str(p)
                    for p in Path(text).rglob("*")
                    if p.is_file() and p.suffix.lower() in _PARQUET_ENDINGS
                )
                if not files:
                    raise InputFileError(f"the folder '{text}' holds no .parquet files")
            elif os.path.isfile(text):
                files = [text]
            else:
                raise InputFileError(f"'{text}' does not exist; check the path")
        else:
            files = [os.fspath(p) for p in paths]
            if not files:
                raise InputFileError("the list of Parquet files is empty")
            self.name = f"{len(files)} Parquet files"
        self.files = files
        self._rows: int | None = None

    def _where(self, i: int) -> str:
        return f"'{self.files[i]}' (file {i + 1} of {len(self.files)})"

    def _open(self, i: int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.files[i])
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InputFileError(
                f"{self._where(i)} is not a readable Parquet file ({_first_line(exc)}); check "
                "that it was written completely, or remove it from the inputs"
            ) from None

    def check(self, columns: Sequence[str]) -> None:
        """Open every file's footer: unreadable files, missing columns and type clashes."""
        seen: dict[str, tuple[str, Any, int]] = {}
        total = 0
        for i in range(len(self.files)):
            with self._open(i) as parquet:
                schema = parquet.schema_arrow
                total += parquet.metadata.num_rows
            for column in columns:
                index = schema.get_field_index(column)
                if index < 0:
                    raise DataError(
                        f"column '{column}' used in the formula is not in {self._where(i)}; "
                        f"that file has the columns {', '.join(schema.names[:10])}"
                    )
                arrow_type = schema.field(index).type
                kind = _arrow_kind(arrow_type)
                first = seen.get(column)
                if first is None or first[0] == "empty":
                    seen[column] = (kind, arrow_type, i)
                elif kind not in ("empty", first[0]):
                    raise DataError(
                        f"column '{column}' is {first[1]} in {self._where(first[2])} but "
                        f"{arrow_type} in {self._where(i)}; all files must give the column the "
                        "same type: fix or re-export the odd file"
                    )
        self._rows = total

    def total_rows(self) -> int | None:
        return self._rows

    def chunks(self, columns, chunk_rows):
        import pyarrow as pa

        for i in range(len(self.files)):
            with self._open(i) as parquet:
                names = parquet.schema_arrow.names
                wanted = None if columns is None else [c for c in columns if c in names]
                start = 0
                batches = parquet.iter_batches(batch_size=chunk_rows, columns=wanted)
                while True:
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    except (pa.ArrowException, OSError, ValueError) as exc:
                        raise InputFileError(
                            f"{self._where(i)} cannot be read after row {start} "
                            f"({_first_line(exc)}); it is damaged: re-export it or remove it"
                        ) from None
                    end = start + batch.num_rows
                    yield (f"{self._where(i)}, rows {start}-{end - 1}", batch.to_pandas())
                    start = end


def _arrow_kind(arrow_type: Any) -> str:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        return "categorical"
    if pa.types.is_boolean(arrow_type):
        return "logical"
    if (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
    ):
        return "number"
    if pa.types.is_null(arrow_type):
        return "empty"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text"
    return str(arrow_type)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_streamed_source(data: Any) -> bool:
    """Whether ``lmer`` should stream ``data`` rather than read it into memory.

    True for a glob pattern, a folder holding Parquet files, a list of files, a DuckDB query, a Dask
    DataFrame, a list of DataFrames, or any :class:`ChunkSource`. A single file or a
    DataFrame is read into memory (pass ``chunk_rows`` to stream it).
    """
    if isinstance(data, pd.DataFrame):
        # First: the runtime Protocol check below looks up attributes by name, so a frame
        # with columns called "check" or "chunks" would pass it (and it is slow).
        return False
    if is_dask_collection(data) or isinstance(data, ChunkSource):
        return True
    if isinstance(data, str | os.PathLike):
        text = os.path.expanduser(os.fspath(data))
        if os.path.isdir(text):
            # A folder of Parquet files streams; anything else is read_data's to explain.
            return any(
                p.suffix.lower() in _PARQUET_ENDINGS for p in Path(text).rglob("*") if p.is_file()
            )
        return bool(_GLOB_CHARS & set(text))
    if isinstance(data, list | tuple) and data:
        return all(isinstance(d, str | os.PathLike) for d in data) or all(
            isinstance(d, pd.DataFrame) for d in data
        )
    return False


def is_dask_collection(data: Any) -> bool:
    return type(data).__module__.startswith("dask.") and hasattr(data, "to_delayed")


def open_source(source: Any) -> ChunkSource:
    """Turn what the user passed into a :class:`ChunkSource`."""
    if isinstance(source, ChunkSource):
        return source
    if isinstance(source, pd.DataFrame):
        return FrameChunks(source)
    if (
        isinstance(source, list | tuple)
        and source
        and all(isinstance(d, pd.DataFrame) for d in source)
    ):
        return FrameChunks(list(source), name=f"{len(source)} DataFrames")
    if isinstance(source, str | os.PathLike) or (
        isinstance(source, list | tuple) and all(isinstance(d, str | os.PathLike) for d in source)
    ):
        files = ParquetFiles(source)
        for f in files.files:
            if not f.lower().endswith(_PARQUET_ENDINGS):
                raise InputFileError(
                    f"'{f}' is not a Parquet file; streamed fits read .parquet files (for CSV, "
                    f"use mixedmodels.duckdb_query(\"SELECT * FROM '{f}'\"))"
                )
        return files
    raise DataError(
        "streamed data must be Parquet files (a path, folder, glob or list), a DuckDB query, "
        f"a Dask DataFrame or pandas DataFrames, not {type(source).__name__}"
    )


# ---------------------------------------------------------------------------------------------
# Progress on stderr
# ---------------------------------------------------------------------------------------------
class Progress:
    """A progress bar on stderr: rich's if installed, else one plain line.

    Parameters
    ----------
    description
        What is being done ("pass 1/2: levels").
    total
        Expected number of rows, if known.
    enabled
        False: print nothing.
    unit
        What is counted.
    """

    def __init__(
        self, description: str, total: int | None, enabled: bool = True, unit: str = "rows"
    ):
        self.description = description
        self.total = total
        self.enabled = enabled
        self.unit = unit
        self.done = 0
        self._rich = None
        self._last = 0.0
        self._start = time.perf_counter()
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )
        except ImportError:
            self._rich = None
        else:
            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._rich.start()
            self._task = self._rich.add_task(description, total=total)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self, description: str) -> None:
        """Say what is being done from now on (e.g. a count the bar does not show)."""
        self.description = description
        if self.enabled and self._rich is not None:
            self._rich.update(self._task, description=description)

    def advance(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, advance=rows)
            return
        now = time.perf_counter()
        if now - self._last >= 0.5:
            self._last = now
            self._line(end="\r" if sys.stderr.isatty() else "\n")

    def _line(self, end: str) -> None:
        of = f"/{self.total:,}" if self.total else ""
        elapsed = time.perf_counter() - self._start
        sys.stderr.write(f"{self.description}: {self.done:,}{of} {self.unit}, {elapsed:.1f} s{end}")
        sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            if self.total is None:
                self._rich.update(self._task, total=self.done)
            self._rich.stop()
            self._rich = None
            self.enabled = False
            return
        self._line(end="\n")
        self.enabled = False


def chunk_rows_or_default(chunk_rows: int | None) -> int:
    """Rows per chunk: ``chunk_rows`` checked, or :data:`DEFAULT_CHUNK_ROWS`."""
    if chunk_rows is None:
        return DEFAULT_CHUNK_ROWS
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int | np.integer):
        raise DataError(f"chunk_rows must be a whole number, not {chunk_rows!r}")
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be at least 1, not {chunk_rows}")
    return int(chunk_rows)


def prefetched(chunks: Iterator[Any], source: Any) -> Iterator[Any]:
    """``chunks`` with the next one read ahead in a thread while the caller works on the
    current one (Parquet files only: pyarrow's reading and decoding release the GIL, so it
    runs on the other core; a DuckDB connection is kept to the thread that opened it).

    At most one chunk waits (memory: one chunk more). An error while reading is raised
    here, in the caller, at the chunk where it happened. The thread ends with the
    iteration (or when the caller stops early): none outlives a pass, so a process forked
    afterwards has no reader to wait for.
    """
    if not isinstance(source, ParquetFiles):
        yield from chunks
        return
    import queue
    import threading

    box: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def read() -> None:
        try:
            for item in chunks:
                while not stop.is_set():
                    try:
                        box.put((None, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put((None, done))
        except BaseException as exc:  # handed to the caller
            box.put((exc, None))

    reader = threading.Thread(target=read, name="mixedmodels-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            exc, item = box.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting to put, then let it end
            try:
                box.get_nowait()
            except queue.Empty:
                pass
            reader.join(timeout=0.05)
