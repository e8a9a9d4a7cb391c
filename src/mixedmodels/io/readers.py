"""Read a data source (DataFrame, embedded dataset name or file) into a DataFrame.

Every problem with an input file becomes one :class:`InputFileError` whose
message names the file, says what is wrong and what to do about it, so the
command-line tool can print it on one line. Files are only ever opened for
reading.

Text files may be gzip-compressed (``.csv.gz``, ``.tsv.gz``, ``.txt.gz``, as R's
``read.csv`` reads them): they are decompressed on the fly and read exactly as the
plain file (same delimiter detection, decimal comma, UTF-8 checks and messages).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import re
import stat
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mixedmodels.datasets import dataset_names, find_dataset, load_dataset
from mixedmodels.errors import DataError, InputFileError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SUPPORTED_EXTENSIONS", "read_data"]

#: File-name endings ``read_data`` understands (lower case) and the reader used.
SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".csv": "text",
    ".tsv": "text",
    ".txt": "text",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".csv.gz": "text",
    ".tsv.gz": "text",
    ".txt.gz": "text",
}

_GZIP_MAGIC = b"\x1f\x8b"

# Delimiters tried when sniffing a text file, in order of preference on a tie.
_DELIMITERS = (",", "\t", ";")
_SAMPLE_BYTES = 64 * 1024
_CHUNK_BYTES = 1 << 20

# Leading bytes of formats people save with the wrong ending, and what to do.
_MAGIC = (
    (b"PAR1", "looks like a Parquet file; give it the ending .parquet"),
    (b"PK\x03\x04", "looks like an Excel workbook or zip archive; export the sheet as CSV (UTF-8)"),
    (
        b"\x1f\x8b",
        "looks gzip-compressed; give it the ending .csv.gz (or decompress it with gunzip)",
    ),
    (b"\xd0\xcf\x11\xe0", "looks like an old Excel (.xls) file; export the sheet as CSV (UTF-8)"),
    (b"\xff\xfe", "looks like UTF-16 text; re-save it as UTF-8"),
    (b"\xfe\xff", "looks like UTF-16 text; re-save it as UTF-8"),
)


def read_data(source: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    """Return the data in ``source`` as a DataFrame.

    Parameters
    ----------
    source
        A pandas DataFrame (returned unchanged), a polars DataFrame or LazyFrame or a
        pyarrow Table (converted, see :mod:`mixedmodels.io.frames`), the name of an embedded dataset
        (``"ratpup"``, ``"sleepstudy"``, ... case-insensitive), or the path of a
        ``.csv``, ``.tsv`` or ``.txt`` file (UTF-8; delimiter comma, tab or
        semicolon, detected from the file; also gzip-compressed as ``.csv.gz``,
        ``.tsv.gz``, ``.txt.gz``), a ``.parquet``/``.pq`` file (needs
        pyarrow) or a ``.json`` table. A bare word without a path separator or
        file ending is looked up as a dataset name first.

    Returns
    -------
    pandas.DataFrame
        Column types as pandas infers them; nothing is recoded here.

    Raises
    ------
    InputFileError
        The file is missing, a directory, unreadable, empty, has a header but no
        rows, is not UTF-8, has duplicated column names or ragged rows, has an
        unsupported ending, or is a damaged Parquet/JSON/gzip file.
    DataError
        ``source`` is of a type that cannot hold data.

    Examples
    --------
    >>> read_data("ratpup").shape
    (322, 6)
    """
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return source
    from mixedmodels.io.frames import as_pandas, is_arrow_like

    if is_arrow_like(source):
        return as_pandas(source)
    if isinstance(source, str):
        if not source.strip():
            raise InputFileError(
                "no data given: pass a file path or an embedded dataset name "
                f"({', '.join(dataset_names())})"
            )
        if _looks_like_name(source) and find_dataset(source) is not None:
            return load_dataset(source)
        return _read_path(Path(os.path.expanduser(source)), source)
    if isinstance(source, os.PathLike):
        path = Path(os.fsdecode(os.fspath(source)))
        return _read_path(path, str(path))
    raise DataError(
        "data must be a pandas DataFrame, a file path or an embedded dataset name, "
        f"not {type(source).__name__}"
    )


def _looks_like_name(text: str) -> bool:
    """Tell whether ``text`` could be a dataset name rather than a path."""
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return not any(sep in text for sep in seps) and Path(text).suffix == ""


def _supported_list() -> str:
    # The compressed endings are left out of the list in messages: they are the plain
    # endings plus .gz, and the messages are catalogued verbatim in docs/errors.md.
    return ", ".join(e for e in SUPPORTED_EXTENSIONS if not e.endswith(".gz"))


def _read_path(path: Path, shown: str) -> pd.DataFrame:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputFileError(_not_found_message(path, shown)) from None
    except PermissionError:
        raise InputFileError(
            f"cannot access '{shown}': permission denied on a directory in its path; "
            "check the directories' permissions or copy the file somewhere readable"
        ) from None
    except OSError as exc:
        raise InputFileError(f"cannot access '{shown}': {exc.strerror or exc}") from None

    if stat.S_ISDIR(info.st_mode):
        raise InputFileError(
            f"'{shown}' is a directory, not a data file; give the path of a data file "
            f"({_supported_list()})"
        )
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(
            f"'{shown}' is not a regular file; save the data to a file "
            f"({_supported_list()}) and pass its path"
        )
    kind = SUPPORTED_EXTENSIONS.get(_ending(path))
    if kind is None:
        ending = f"'{_ending(path)}'" if path.suffix else "no ending"
        raise InputFileError(
            f"cannot read '{shown}': unsupported file type ({ending}); use one of "
            f"{_supported_list()} (export spreadsheets as CSV UTF-8)"
        )
    head = _read_head(path, shown)
    if info.st_size == 0 or not head:
        raise InputFileError(f"'{shown}' is empty (0 bytes); check that it was saved completely")
    if _is_gzip(path):
        return _read_gzip_text(path, shown, head)

    if kind == "parquet":
        frame = _read_parquet(path, shown)
    else:
        _check_utf8(path, shown, head)
        frame = _read_text(path, shown) if kind == "text" else _read_json(path, shown)

    _check_frame(frame, shown)
    return frame


def _ending(path: Path) -> str:
    """The file ending that decides the reader: ``.csv``, or ``.csv.gz`` for compressed text."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return Path(path.stem).suffix.lower() + suffix
    return suffix


def _is_gzip(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


@contextmanager
def _open_bytes(path: Path) -> Iterator[IO[bytes]]:
    """Open ``path`` for reading bytes, decompressing a ``.gz`` file on the fly."""
    if _is_gzip(path):
        with gzip.open(path, "rb") as handle:
            yield handle
    else:
        with open(path, "rb") as handle:
            yield handle


def _read_gzip_text(path: Path, shown: str, head: bytes) -> pd.DataFrame:
    """Read a gzip-compressed text file as the plain file would be read."""
    if not head.startswith(_GZIP_MAGIC):
        plain = Path(path.stem).name
        raise InputFileError(
            f"'{shown}' has the ending .gz but is not gzip-compressed; rename it to '{plain}'"
        )
    try:
        with _open_bytes(path) as handle:
            inner_head = handle.read(8)
        if not inner_head:
            raise InputFileError(
                f"'{shown}' is empty once decompressed; check that it was saved completely"
            )
        _check_utf8(path, shown, inner_head)
        frame = _read_text(path, shown)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputFileError(
            f"'{shown}' is a damaged gzip file ({_first_line(exc)}); download or compress it "
            f"again (gzip -t '{shown}' tests it)"
        ) from None
    _check_frame(frame, shown)
    return frame


def _not_found_message(path: Path, shown: str) -> str:
    names = ", ".join(dataset_names())
    if _looks_like_name(shown):
        import difflib

        close = difflib.get_close_matches(
            shown.lower(), [n.lower() for n in dataset_names()], n=1, cutoff=0.6
        )
        hint = ""
        if close:
            hint = f" (did you mean the dataset '{find_dataset(close[0]).name}'?)"  # type: ignore[union-attr]
        return (
            f"no file or embedded dataset named '{shown}'{hint}; give a path to a data file "
            f"({_supported_list()}) or one of the embedded datasets: {names}"
        )
    hint = ""
    if find_dataset(path.stem) is not None and path.suffix.lower() == ".csv":
        hint = f"; for the embedded dataset write just '{find_dataset(path.stem).name}'"  # type: ignore[union-attr]
    return (
        f"file not found: '{shown}'; check the path (relative paths start at '{os.getcwd()}'){hint}"
    )


def _read_head(path: Path, shown: str) -> bytes:
    """Open the file read-only and return its first bytes (also checks permission)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8)
    except PermissionError:
        raise InputFileError(
            f"permission denied reading '{shown}'; make it readable (chmod u+r '{shown}') "
            "or copy it somewhere you can read"
        ) from None
    except OSError as exc:
        raise InputFileError(f"cannot read '{shown}': {exc.strerror or exc}") from None


def _check_utf8(path: Path, shown: str, head: bytes) -> None:
    """Raise if the file is not valid UTF-8, saying at which byte and line."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    fed = 0  # bytes of the file passed to the decoder so far
    newlines = 0  # newlines in those bytes
    with _open_bytes(path) as handle:
        while True:
            chunk = handle.read(_CHUNK_BYTES)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, not chunk)
            except UnicodeDecodeError as exc:
                # exc.start counts from the start of (pending bytes + chunk).
                offset = fed - pending + exc.start
                line = 1 + newlines + chunk[: max(0, offset - fed)].count(b"\n")
                bad = exc.object[exc.start]
                raise InputFileError(_not_utf8_message(shown, head, offset, line, bad)) from None
            if not chunk:
                return
            fed += len(chunk)
            newlines += chunk.count(b"\n")


def _not_utf8_message(shown: str, head: bytes, offset: int, line: int, bad: int) -> str:
    for magic, advice in _MAGIC:
        if head.startswith(magic):
            return f"cannot read '{shown}' as text: it {advice}"
    return (
        f"'{shown}' is not UTF-8 text: invalid byte 0x{bad:02x} at byte offset {offset} "
        f"(line {line}); re-save the file as UTF-8 (e.g. 'CSV UTF-8' in Excel, or "
        f"iconv -f latin1 -t utf-8)"
    )


def _read_sample(path: Path) -> str:
    """Return the first 64 KiB of a UTF-8 file, extended to the end of its line."""
    with _open_bytes(path) as handle:
        raw = handle.read(_SAMPLE_BYTES)
        raw += handle.readline()
    # The sample can end inside a multi-byte character: decode what is whole.
    return codecs.getincrementaldecoder("utf-8-sig")("strict").decode(raw, False)


def _records(sample: str, delimiter: str, limit: int = 50) -> list[list[str]]:
    rows = []
    for row in csv.reader(io.StringIO(sample), delimiter=delimiter):
        if row:
            rows.append(row)
        if len(rows) >= limit:
            break
    return rows


def _sniff_delimiter(sample: str, default: str) -> str:
    """Pick the delimiter that splits the header and the rows below it most consistently."""
    best: tuple[float, int, int] | None = None
    chosen = default
    order = (default, *(d for d in _DELIMITERS if d != default))
    for rank, delimiter in enumerate(order):
        rows = _records(sample, delimiter)
        width = len(rows[0]) if rows else 0
        if width < 2:
            continue
        body = rows[1:] or rows
        agree = sum(len(row) == width for row in body) / len(body)
        score = (agree, width, -rank)
        if best is None or score > best:
            best, chosen = score, delimiter
    return chosen


_COMMA_NUMBER = re.compile(r"^\s*[-+]?\d*,\d+\s*$")
_POINT_NUMBER = re.compile(r"^\s*[-+]?\d*\.\d+\s*$")


def _guess_decimal(rows: list[list[str]], delimiter: str) -> str:
    """Use a decimal comma for semicolon files whose numbers are written 1,5 (never 1.5)."""
    if delimiter != ";":
        return "."
    fields = [field for row in rows[1:] for field in row]
    if any(_COMMA_NUMBER.match(f) for f in fields) and not any(
        _POINT_NUMBER.match(f) for f in fields
    ):
        return ","
    return "."


def _check_header(header: list[str], shown: str) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name in seen:
            raise InputFileError(
                f"'{shown}' has duplicated column names: '{name}' is column {seen[name]} "
                f"and column {position}; rename them so every column name is unique"
            )
        seen[name] = position


def _read_text(path: Path, shown: str) -> pd.DataFrame:
    import pandas as pd

    sample = _read_sample(path)
    if not sample.strip():
        raise InputFileError(f"'{shown}' contains only blank lines; it holds no data")
    default = "\t" if _ending(path).startswith(".tsv") else ","
    delimiter = _sniff_delimiter(sample, default)
    rows = _records(sample, delimiter)
    _check_header(rows[0], shown)
    decimal = _guess_decimal(rows, delimiter)

    with _open_bytes(path) as handle, warnings.catch_warnings():
        # pandas only warns (and drops values) when the first row is longer than the header.
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(
                handle, sep=delimiter, decimal=decimal, encoding="utf-8-sig", index_col=False
            )
        except pd.errors.EmptyDataError:
            raise InputFileError(f"'{shown}' holds no columns or data") from None
        except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
            raise InputFileError(_parser_message(path, shown, delimiter, str(exc))) from None
        except ValueError as exc:
            raise InputFileError(f"cannot parse '{shown}' as a table: {_first_line(exc)}") from None


def _parser_message(path: Path, shown: str, delimiter: str, message: str) -> str:
    name = {",": "comma", "\t": "tab", ";": "semicolon"}[delimiter]
    ragged = _first_ragged_line(path, delimiter)
    if ragged is not None:
        line, width, fields = ragged
        return (
            f"'{shown}' line {line} has {fields} fields but the header has {width} "
            f"({name}-separated); quote values that contain a {name} or fix the "
            "missing or extra separator"
        )
    unterminated = re.search(r"EOF inside string starting at row (\d+)", message)
    if unterminated:
        return (
            f"'{shown}' has an unterminated quoted value starting on line "
            f'{int(unterminated.group(1)) + 1}; add the closing quote (")'
        )
    return f"cannot parse '{shown}' as {name}-separated text: {message.strip()}"


def _first_ragged_line(path: Path, delimiter: str) -> tuple[int, int, int] | None:
    """Return (line, header width, fields) of the first row longer than the header."""
    with (
        _open_bytes(path) as raw,
        io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle,
    ):
        reader = csv.reader(handle, delimiter=delimiter)
        width = None
        try:
            for row in reader:
                if not row:
                    continue
                if width is None:
                    width = len(row)
                elif len(row) > width:
                    return reader.line_num, width, len(row)
        except csv.Error:
            return None
    return None


def _read_parquet(path: Path, shown: str) -> pd.DataFrame:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputFileError(
            f"reading '{shown}' needs pyarrow: python3 -m pip install pyarrow"
        ) from None
    try:
        with pq.ParquetFile(path) as parquet:
            _check_header(list(parquet.schema_arrow.names), shown)
            table = parquet.read()
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, InputFileError):
            raise
        raise InputFileError(
            f"'{shown}' is not a readable Parquet file ({_first_line(exc)}); check that it was "
            "written completely, or export the data again"
        ) from None
    return table.to_pandas()


def _read_json(path: Path, shown: str) -> pd.DataFrame:
    import pandas as pd

    try:
        with open(path, encoding="utf-8-sig") as handle:
            return pd.read_json(handle)
    except ValueError as exc:
        raise InputFileError(
            f"'{shown}' is not a JSON table ({_first_line(exc)}); write it as a list of "
            'records [{"column": value, ...}, ...] or as {"column": [values, ...], ...}'
        ) from None


def _check_frame(frame: pd.DataFrame, shown: str) -> None:
    duplicated = frame.columns[frame.columns.duplicated()]
    if len(duplicated):
        _check_header([str(c) for c in frame.columns], shown)
    if frame.shape[1] == 0:
        raise InputFileError(f"'{shown}' holds no columns")
    if frame.shape[0] == 0:
        columns = ", ".join(str(c) for c in frame.columns[:10])
        more = ", ..." if frame.shape[1] > 10 else ""
        raise InputFileError(
            f"'{shown}' has column names ({columns}{more}) but no data rows; "
            "add the data below the header"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
