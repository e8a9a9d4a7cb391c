"""Fit data that do not fit in memory: two passes over chunks, then optimise on the blocks.

The profiled deviance needs only the blocks of ``A = [Z X y]'[Z X y]`` (Bates et al.
2015, JSS 67(1), sec. 3), and every block is a sum over rows. So a fit over any number of
rows reads the data twice, one chunk at a time:

1. pass 1 summarises each chunk (:func:`~mixedmodels.design.levels_spec.summarize_chunk`):
   factor and grouping-factor levels (the union over chunks), row counts, ``scale()``
   moments, column types; the merged summary fixes the design of all rows;
2. pass 2 forms each chunk's blocks with those levels and columns
   (:func:`~mixedmodels.linalg.cross_products.compute_cross_products`) and adds them up.

The optimiser then works on the summed blocks, whose size does not depend on the number of
rows: the fit equals the in-memory fit up to rounding. Memory is bounded by one chunk plus
the blocks. Results that need the rows (fitted values, residuals) are written back out
chunk by chunk (:func:`write_predictions`); diagnostics that need all residuals use a
uniform random sample (:func:`sample_residuals`).

Sources: a glob, directory, file or list of Parquet files (read with pyarrow, one record
batch at a time), a DuckDB query (:func:`mixedmodels.io.duckdb_source.duckdb_query`),
pandas DataFrames (one, split into chunks, or a list of them), and Dask DataFrames
(:mod:`mixedmodels.io.dask_backend`).
"""

from __future__ import annotations

import glob
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from mixedmodels.errors import DataError, InputFileError, ModelSpecificationError

if TYPE_CHECKING:  # pragma: no cover
    from mixedmodels.covariance import GroupedTerm
    from mixedmodels.design.levels_spec import ChunkSummary, StreamedDesign
    from mixedmodels.design.model_design import ModelDesign
    from mixedmodels.linalg.cross_products import CrossProducts
    from mixedmodels.optimize import OptimizerOptions
    from mixedmodels.results import LinearMixedModelResult

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "ChunkSource",
    "FrameChunks",
    "ParquetFiles",
    "StreamedCrossProducts",
    "is_streamed_source",
    "lmer_streamed",
    "open_source",
    "sample_residuals",
    "streamed_cross_products",
    "write_predictions",
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
    if _is_dask_collection(data) or isinstance(data, ChunkSource):
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


def _is_dask_collection(data: Any) -> bool:
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


# ---------------------------------------------------------------------------------------------
# The two passes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ChunkPlan:
    """What pass 2 needs to form one chunk's blocks (small; shipped to Dask workers)."""

    design: StreamedDesign
    terms: tuple[GroupedTerm, ...]

    def cross_products(self, data: pd.DataFrame, where: str) -> CrossProducts | None:
        """The blocks of this chunk's complete rows (None if it has none)."""
        from mixedmodels.linalg.cross_products import compute_cross_products

        rows_used = self.design.complete(data)
        if len(rows_used) == 0:
            return None
        try:
            X, y, rows = self.design.chunk_arrays(rows_used)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        refs = [rows[t.members[0]][0] for t in self.terms]
        zs = [
            rows[t.members[0]][1]
            if len(t.members) == 1
            else np.hstack([rows[m][1] for m in t.members])
            for t in self.terms
        ]
        return compute_cross_products(self.terms, X, y, refs=refs, zs=zs)

    def r_factor(self, data: pd.DataFrame) -> np.ndarray | None:
        """R of a QR decomposition of this chunk's X (for a rank decision too close to call)."""
        rows_used = self.design.complete(data)
        if len(rows_used) == 0:
            return None
        return np.linalg.qr(self.design.spec.fixed_matrix(rows_used), mode="r")


def add_cross_products(a: CrossProducts | None, b: CrossProducts | None) -> CrossProducts | None:
    """Sum of two chunks' blocks; None stands for a chunk without complete rows."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def stack_r(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """R of the rows of both (tall-skinny QR): R of [R_a; R_b]."""
    if a is None:
        return b
    if b is None:
        return a
    return np.linalg.qr(np.vstack([a, b]), mode="r")


def plan_from_summary(formula: Any, summary: ChunkSummary) -> ChunkPlan:
    """Build the all-rows design from the merged pass-1 summary, and the pass-2 plan."""
    from mixedmodels.covariance import group_terms
    from mixedmodels.design.levels_spec import design_from_summary

    design = design_from_summary(formula, summary)
    return ChunkPlan(design=design, terms=group_terms(design.re_terms))


def finish(
    plan: ChunkPlan, total: CrossProducts | None, r_factor: Any
) -> tuple[ModelDesign, CrossProducts]:
    """Decide the rank of X, drop dependent columns from the blocks; return design and blocks.

    ``r_factor`` is a callable giving R of all of X; it is called only when the decision
    from ``X'X`` is too close to call.
    """
    from mixedmodels.design.levels_spec import (
        independent_columns_from_gram,
        independent_columns_from_r,
    )
    from mixedmodels.linalg.cross_products import CrossProducts

    if total is None or total.nobs != plan.design.nobs:
        got = 0 if total is None else total.nobs
        raise DataError(
            f"the first pass over the data found {plan.design.nobs} complete rows but the "
            f"second {got}; the data changed between passes — fit again"
        )
    p = plan.design.nfixed
    kept, ambiguous = independent_columns_from_gram(total.xytxy[:p, :p])
    if ambiguous:
        kept = independent_columns_from_r(r_factor())
    design = plan.design.model_design(kept)
    if len(kept) < p:
        idx = [*kept, p]
        total = CrossProducts(
            z1tz1=total.z1tz1,
            zrtz1=total.zrtz1,
            zrtzr=total.zrtzr,
            xytz1=total.xytz1[idx],
            xytzr=None if total.xytzr is None else total.xytzr[idx],
            xytxy=total.xytxy[np.ix_(idx, idx)],
            nobs=total.nobs,
        )
    return design, total


@dataclass(frozen=True, eq=False)
class StreamedCrossProducts:
    """The outcome of the two passes: a row-free design and the summed blocks.

    Attributes
    ----------
    design
        Names, levels and spec of the design of all rows (no rows).
    cross_products
        The blocks of A summed over chunks.
    nrows
        Rows read (complete or not).
    nchunks
        Chunks read per pass.
    seconds
        Wall time of each pass: ``{"pass1": ..., "pass2": ...}``.
    """

    design: ModelDesign
    cross_products: CrossProducts
    nrows: int
    nchunks: int
    seconds: dict[str, float] = field(default_factory=dict)


def streamed_cross_products(
    formula: str,
    source: Any,
    *,
    chunk_rows: int | None = None,
    progress: bool = True,
) -> StreamedCrossProducts:
    """Read ``source`` twice, chunk by chunk, and return the design and the blocks of A.

    Parameters
    ----------
    formula
        lme4 formula text.
    source
        Parquet file(s) (path, folder, glob or list), a DuckDB query, pandas DataFrame(s)
        or any :class:`ChunkSource`.
    chunk_rows
        Rows per chunk (default :data:`DEFAULT_CHUNK_ROWS`); memory grows with it.
    progress
        Show a progress bar on stderr.

    Raises
    ------
    InputFileError
        A file cannot be opened or read (its name is in the message).
    DataError
        Columns missing or of different types in different chunks, unusable data.
    """
    from mixedmodels.design.levels_spec import ChunkSummary, summarize_chunk
    from mixedmodels.formula import parse_formula

    rows_per_chunk = _chunk_rows(chunk_rows)
    parsed = parse_formula(formula)
    if parsed.response is None:
        raise DataError(
            "the formula has no response; write 'response ~ predictors', e.g. 'y ~ x + (1 | g)'"
        )
    src = open_source(source)
    columns = list(parsed.columns_used())
    src.check(columns)

    t0 = time.perf_counter()
    summary = ChunkSummary()
    nchunks = 0
    with Progress("pass 1/2: levels", src.total_rows(), progress) as bar:
        for where, frame in src.chunks(columns, rows_per_chunk):
            summary = summary.merge(summarize_chunk(parsed, frame, where))
            nchunks += 1
            bar.advance(len(frame))
    plan = plan_from_summary(parsed, summary)
    t1 = time.perf_counter()

    total = None
    with Progress("pass 2/2: cross products", summary.nrows, progress) as bar:
        for where, frame in src.chunks(columns, rows_per_chunk):
            total = add_cross_products(total, plan.cross_products(frame, where))
            bar.advance(len(frame))
    t2 = time.perf_counter()

    def r_factor() -> np.ndarray:
        R = None
        with Progress("extra pass: rank of X", summary.nrows, progress) as bar:
            for _, frame in src.chunks(columns, rows_per_chunk):
                R = stack_r(R, plan.r_factor(frame))
                bar.advance(len(frame))
        assert R is not None
        return R

    design, blocks = finish(plan, total, r_factor)
    return StreamedCrossProducts(
        design=design,
        cross_products=blocks,
        nrows=summary.nrows,
        nchunks=nchunks,
        seconds={"pass1": t1 - t0, "pass2": t2 - t1},
    )


def _chunk_rows(chunk_rows: int | None) -> int:
    if chunk_rows is None:
        return DEFAULT_CHUNK_ROWS
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int | np.integer):
        raise DataError(f"chunk_rows must be a whole number, not {chunk_rows!r}")
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be at least 1, not {chunk_rows}")
    return int(chunk_rows)


def lmer_streamed(
    formula: str,
    source: Any,
    *,
    reml: bool = True,
    chunk_rows: int | None = None,
    progress: bool = True,
    start: np.ndarray | None = None,
    control: OptimizerOptions | None = None,
) -> LinearMixedModelResult:
    """Fit a linear mixed model to data read in chunks (or reduced on a Dask cluster).

    The fit equals ``lmer(formula, all_rows_in_memory)`` up to rounding; memory holds one
    chunk and the cross-product blocks. Fitted values and residuals are not kept: write
    them with :func:`write_predictions`, sample them with :func:`sample_residuals`.

    Parameters
    ----------
    formula
        lme4 syntax, e.g. ``"y ~ x + treatment + (1 + x | user)"``.
    source
        ``"events/*.parquet"`` (a glob), a folder or list of Parquet files, a
        :func:`~mixedmodels.io.duckdb_source.duckdb_query`, a Dask DataFrame (fitted on its
        cluster, see :func:`~mixedmodels.io.dask_backend.lmer_dask`) or pandas DataFrames.
    reml
        REML (default) or ML.
    chunk_rows
        Rows per chunk (default :data:`DEFAULT_CHUNK_ROWS`). Ignored for Dask.
    progress
        Show progress bars on stderr.
    start, control
        Starting theta and optimiser options, as for ``lmer``.

    Examples
    --------
    >>> import mixedmodels as mm  # doctest: +SKIP
    >>> fit = lmer_streamed("y ~ x + f + (1 + x | g)", "events/*.parquet")  # doctest: +SKIP
    """
    from mixedmodels.model import LinearMixedModel

    if _is_dask_collection(source):
        from .dask_backend import lmer_dask

        return lmer_dask(
            formula, source, reml=reml, progress=progress, start=start, control=control
        )
    result = streamed_cross_products(formula, source, chunk_rows=chunk_rows, progress=progress)
    name = getattr(open_source(source), "name", None) if not isinstance(source, str) else source
    model = LinearMixedModel(
        result.design,
        reml=reml,
        formula=formula,
        data_name=name,
        cross_products=result.cross_products,
    )
    return model.fit(start=start, options=control)


# ---------------------------------------------------------------------------------------------
# After the fit: predictions chunk by chunk, and a sample of residuals
# ---------------------------------------------------------------------------------------------
def chunk_predictions(fit: LinearMixedModelResult, data: pd.DataFrame) -> pd.DataFrame:
    """Conditional fitted values and residuals of one chunk (NaN for rows not fitted)."""
    from mixedmodels.design.levels_spec import complete_rows, response_values

    spec = fit.design.spec
    if spec is None:
        raise ModelSpecificationError("this fit has no design spec to predict with")
    keep = complete_rows(spec.formula, data)
    fitted = np.full(len(data), np.nan)
    resid = np.full(len(data), np.nan)
    if keep.any():
        used = data.loc[keep]
        pred = fit.predict(used).to_numpy()
        fitted[keep] = pred
        resid[keep] = response_values(spec, used) - pred
    return pd.DataFrame({"fitted": fitted, "resid": resid}, index=data.index)


def write_predictions(
    fit: LinearMixedModelResult,
    source: Any,
    out_path: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    chunk_rows: int | None = None,
    progress: bool = True,
) -> int:
    """Write the source's rows with fitted values and residuals to one Parquet file.

    Rows are read and written chunk by chunk, in the source's order; rows the fit did not
    use (a missing value in a used column) get NaN. The file appears all at once (written
    under a temporary name, then renamed) or not at all.

    Parameters
    ----------
    fit
        A fit of this source (streamed or in memory).
    source
        The data the model was fitted to (any streamed source; not Dask).
    out_path
        The Parquet file to write.
    columns
        Source columns to copy next to ``fitted`` and ``resid`` (default: all).
    chunk_rows, progress
        As for :func:`lmer_streamed`.

    Returns
    -------
    int
        Number of rows written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = open_source(source)
    rows_per_chunk = _chunk_rows(chunk_rows)
    out = Path(os.fspath(out_path))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    needed = None if columns is None else list(dict.fromkeys([*columns, *_formula_columns(fit)]))
    writer = None
    written = 0
    try:
        with Progress("writing predictions", src.total_rows(), progress) as bar:
            for _, frame in src.chunks(needed, rows_per_chunk):
                pred = chunk_predictions(fit, frame)
                kept = frame if columns is None else frame[list(columns)]
                table = pa.Table.from_pandas(pd.concat([kept, pred], axis=1), preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                elif table.schema != writer.schema:
                    table = table.cast(writer.schema)
                writer.write_table(table)
                written += len(frame)
                bar.advance(len(frame))
        if writer is None:
            raise DataError("the source has no rows to write")
        writer.close()
        writer = None
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return written


def _formula_columns(fit: LinearMixedModelResult) -> list[str]:
    return list(fit.design.spec.formula.columns_used())


def sample_residuals(
    fit: LinearMixedModelResult,
    source: Any,
    n: int = 5000,
    *,
    seed: int = 0,
    chunk_rows: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """A uniform random sample (without replacement) of the fitted rows' residuals.

    For diagnostics that need all residuals (Shapiro-Wilk, Q-Q plots), which on millions
    of rows are both slow and over-powered: Shapiro-Wilk is defined for at most 5000
    values. Each row gets a uniform random key from ``numpy.random.default_rng(seed)``, in
    source order, and the ``n`` fitted rows with the smallest keys are kept; so the sample
    depends on the seed and the row order, not on the chunk size.

    Parameters
    ----------
    fit
        A fit of this source.
    source
        The data the model was fitted to.
    n
        Sample size (all fitted rows if fewer).
    seed
        Seed of the random keys.

    Returns
    -------
    pandas.DataFrame
        ``row`` (0-based position in the source), ``fitted``, ``resid``, sorted by row.

    Examples
    --------
    >>> sample = sample_residuals(fit, "events/*.parquet")  # doctest: +SKIP
    >>> mm.diagnostics.shapiro_wilk(sample["resid"])  # doctest: +SKIP
    """
    if n < 1:
        raise DataError(f"the sample size n must be at least 1, not {n}")
    src = open_source(source)
    rng = np.random.default_rng(seed)
    rows_per_chunk = _chunk_rows(chunk_rows)
    from mixedmodels.design.levels_spec import complete_rows

    formula = fit.design.spec.formula
    keys = np.empty(0)
    rows = np.empty(0, dtype=np.int64)
    fitted = np.empty(0)
    resid = np.empty(0)
    offset = 0
    with Progress("sampling residuals", src.total_rows(), progress) as bar:
        for _, frame in src.chunks(_formula_columns(fit), rows_per_chunk):
            chunk_keys = rng.random(len(frame))
            candidates = np.flatnonzero(complete_rows(formula, frame))
            all_keys = np.concatenate([keys, chunk_keys[candidates]])
            if len(all_keys) > n:
                best = np.argpartition(all_keys, n - 1)[:n]
            else:
                best = np.arange(len(all_keys))
            old = best[best < len(keys)]
            new = candidates[best[best >= len(keys)] - len(keys)]
            pred = chunk_predictions(fit, frame.iloc[new])
            keys = np.concatenate([keys[old], chunk_keys[new]])
            rows = np.concatenate([rows[old], offset + new])
            fitted = np.concatenate([fitted[old], pred["fitted"].to_numpy()])
            resid = np.concatenate([resid[old], pred["resid"].to_numpy()])
            offset += len(frame)
            bar.advance(len(frame))
    order = np.argsort(rows)
    return pd.DataFrame({"row": rows[order], "fitted": fitted[order], "resid": resid[order]})
