"""read_data: every kind of source, and one clear InputFileError per broken input."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from mixedmodels.datasets import dataset_names, load_dataset
from mixedmodels.errors import DataError, InputFileError
from mixedmodels.io import SUPPORTED_EXTENSIONS, read_data, readers

EXPECTED = pd.DataFrame({"y": [1.5, 2.5, 3.0], "g": ["a", "b", "a"], "x": [1, 2, 3]})


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# ----------------------------------------------------------------- sources that work


def test_dataframe_is_returned_as_is():
    frame = pd.DataFrame({"a": [1]})
    assert read_data(frame) is frame


@pytest.mark.parametrize("name", ["ratpup", "SleepStudy", "dyestuff2"])
def test_embedded_dataset_names(name):
    pd.testing.assert_frame_equal(read_data(name), load_dataset(name))


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("comma.csv", "y,g,x\n1.5,a,1\n2.5,b,2\n3.0,a,3\n"),
        ("tab.tsv", "y\tg\tx\n1.5\ta\t1\n2.5\tb\t2\n3.0\ta\t3\n"),
        ("tab_in.csv", "y\tg\tx\n1.5\ta\t1\n2.5\tb\t2\n3.0\ta\t3\n"),
        ("semicolon.txt", "y;g;x\n1.5;a;1\n2.5;b;2\n3.0;a;3\n"),
        ("decimal_comma.csv", "y;g;x\n1,5;a;1\n2,5;b;2\n3,0;a;3\n"),
        ("crlf.csv", "y,g,x\r\n1.5,a,1\r\n2.5,b,2\r\n3.0,a,3\r\n"),
        ("bom.csv", "\ufeffy,g,x\n1.5,a,1\n2.5,b,2\n3.0,a,3\n"),
        ("UPPER.CSV", "y,g,x\n1.5,a,1\n2.5,b,2\n3.0,a,3\n"),
        ("quoted.csv", 'y,g,x\n1.5,"a",1\n2.5,"b",2\n3.0,"a",3\n'),
        (
            "records.json",
            '[{"y":1.5,"g":"a","x":1},{"y":2.5,"g":"b","x":2},{"y":3.0,"g":"a","x":3}]',
        ),
        ("columns.json", '{"y":[1.5,2.5,3.0],"g":["a","b","a"],"x":[1,2,3]}'),
    ],
)
def test_text_formats(tmp_path, filename, content):
    frame = read_data(write(tmp_path / filename, content))
    pd.testing.assert_frame_equal(frame, EXPECTED, check_dtype=False)
    assert pd.api.types.is_float_dtype(frame["y"])
    assert pd.api.types.is_integer_dtype(frame["x"])


def test_quoted_delimiters_inside_values(tmp_path):
    path = write(tmp_path / "q.csv", 'name,score\n"Smith, J",1\n"Doe; A",2\n')
    frame = read_data(path)
    assert list(frame["name"]) == ["Smith, J", "Doe; A"]


def test_single_column_file(tmp_path):
    frame = read_data(write(tmp_path / "one.csv", "y\n1\n2\n"))
    assert list(frame.columns) == ["y"]
    assert list(frame["y"]) == [1, 2]


def test_short_rows_are_filled_with_missing_values(tmp_path):
    # As R's read.csv does: the model layer drops incomplete rows and reports them.
    frame = read_data(write(tmp_path / "short.csv", "a,b\n1,2\n3\n"))
    assert frame.shape == (2, 2)
    assert frame["b"].isna().sum() == 1


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    EXPECTED.to_parquet(path)
    pd.testing.assert_frame_equal(read_data(path), EXPECTED, check_dtype=False)


def test_path_objects_and_strings_agree(tmp_path):
    path = write(tmp_path / "d.csv", "y,g,x\n1.5,a,1\n2.5,b,2\n3.0,a,3\n")
    pd.testing.assert_frame_equal(read_data(path), read_data(str(path)))


def test_home_directory_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path / "d.csv", "a\n1\n")
    assert read_data("~/d.csv").shape == (1, 1)


def test_file_named_like_a_dataset_with_a_path_is_read_as_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "ratpup.csv", "a\n1\n")
    assert read_data("ratpup.csv").shape == (1, 1)
    assert read_data("./ratpup.csv").shape == (1, 1)
    assert read_data("ratpup").shape == (322, 6)


def test_input_is_opened_read_only_and_left_unchanged(tmp_path):
    path = write(tmp_path / "ro.csv", "y,g,x\n1.5,a,1\n2.5,b,2\n3.0,a,3\n")
    before = path.read_bytes()
    os.chmod(path, 0o444)
    stamp = path.stat().st_mtime_ns
    try:
        read_data(path)
        assert path.read_bytes() == before
        assert path.stat().st_mtime_ns == stamp
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ro.csv"]
    finally:
        os.chmod(path, 0o644)


def test_supported_extensions_listed():
    assert set(SUPPORTED_EXTENSIONS) == {
        ".csv",
        ".tsv",
        ".txt",
        ".parquet",
        ".pq",
        ".json",
        ".csv.gz",
        ".tsv.gz",
        ".txt.gz",
    }


# ----------------------------------------------------------------- errors


def error_for(source) -> str:
    with pytest.raises(InputFileError) as info:
        read_data(source)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "missing.csv"
    message = error_for(path)
    assert "file not found" in message
    assert str(path) in message


def test_missing_file_that_looks_like_a_name_lists_datasets():
    message = error_for("nosuchthing")
    assert "no file or embedded dataset named 'nosuchthing'" in message
    for name in dataset_names():
        assert name in message


def test_misspelt_dataset_name_gets_a_suggestion():
    assert "did you mean the dataset 'ratpup'" in error_for("ratpub")


def test_missing_dataset_csv_suggests_bare_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "write just 'sleepstudy'" in error_for("sleepstudy.csv")


def test_directory(tmp_path):
    message = error_for(tmp_path)
    assert "is a directory" in message
    assert str(tmp_path) in message


def test_permission_denied(tmp_path, monkeypatch):
    path = write(tmp_path / "secret.csv", "a\n1\n")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    # Root can read anything, so simulate the refusal where the file is opened.
    monkeypatch.setattr(readers, "open", refuse, raising=False)
    message = error_for(path)
    assert "permission denied" in message
    assert str(path) in message
    assert "chmod" in message


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads unreadable files"
)
def test_permission_denied_for_real(tmp_path):
    path = write(tmp_path / "secret.csv", "a\n1\n")
    os.chmod(path, 0)
    try:
        assert "permission denied" in error_for(path)
    finally:
        os.chmod(path, 0o644)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_empty_file(tmp_path, suffix):
    path = write(tmp_path / f"empty{suffix}", b"")
    message = error_for(path)
    assert "is empty" in message
    assert str(path) in message


def test_blank_lines_only(tmp_path):
    assert "only blank lines" in error_for(write(tmp_path / "blank.csv", "\n\n  \n"))


def test_header_only(tmp_path):
    path = write(tmp_path / "header.csv", "weight,litter\n")
    message = error_for(path)
    assert "no data rows" in message
    assert "weight, litter" in message


def test_header_only_parquet(tmp_path):
    path = tmp_path / "header.parquet"
    EXPECTED.iloc[:0].to_parquet(path)
    assert "no data rows" in error_for(path)


def test_not_utf8_reports_offset_and_line(tmp_path):
    content = b"name,city\nA,Berlin\nB,Z" + b"\xfcrich\n"
    path = write(tmp_path / "latin1.csv", content)
    message = error_for(path)
    offset = content.index(b"\xfc")
    assert "not UTF-8" in message
    assert f"byte offset {offset}" in message
    assert "line 3" in message
    assert "0xfc" in message
    assert "UTF-8" in message and "re-save" in message


def test_not_utf8_offset_across_chunks(tmp_path, monkeypatch):
    # A multi-byte character split between two reads must not confuse the offset.
    monkeypatch.setattr(readers, "_CHUNK_BYTES", 4)
    content = "a,b\nü,2\n".encode() + b"\xff\n"
    path = write(tmp_path / "split.csv", content)
    message = error_for(path)
    offset = content.index(b"\xff")
    assert f"byte offset {offset}" in message
    assert "line 3" in message


def test_truncated_utf8_at_end_of_file(tmp_path):
    content = b"a\nx\xc3"
    message = error_for(write(tmp_path / "trunc.csv", content))
    assert "byte offset 3" in message


@pytest.mark.parametrize(
    ("content", "advice"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\xff", "Excel"),
        (b"\xff\xfea\x00,\x00b\x00", "UTF-16"),
        (b"\x1f\x8b\x08\x00\xff\xff", "gzip"),
        (b"PAR1\x15\x04\xff\xff", "Parquet"),
    ],
)
def test_binary_file_with_text_ending_is_recognised(tmp_path, content, advice):
    assert advice in error_for(write(tmp_path / "data.csv", content))


def test_duplicated_column_names(tmp_path):
    path = write(tmp_path / "dup.csv", "y,x,y\n1,2,3\n")
    message = error_for(path)
    assert "duplicated column names" in message
    assert "'y' is column 1 and column 3" in message


def test_duplicated_column_names_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table([pa.array([1]), pa.array([2])], names=["a", "a"])
    path = tmp_path / "dup.parquet"
    pq.write_table(table, path)
    assert "duplicated column names" in error_for(path)


@pytest.mark.parametrize("filename", ["book.xlsx", "data.sav", "noending"])
def test_unsupported_extension(tmp_path, filename):
    path = write(tmp_path / filename, "a,b\n1,2\n")
    message = error_for(path)
    assert "unsupported file type" in message
    assert ".csv" in message and ".parquet" in message


def test_corrupted_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    EXPECTED.to_parquet(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    message = error_for(path)
    assert "not a readable Parquet file" in message
    assert str(path) in message


def test_text_saved_as_parquet(tmp_path):
    assert "not a readable Parquet file" in error_for(write(tmp_path / "x.parquet", "a,b\n1,2\n"))


def test_parquet_without_pyarrow(tmp_path, monkeypatch):
    import builtins

    path = tmp_path / "d.parquet"
    EXPECTED.to_parquet(path)
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    assert "pip install pyarrow" in error_for(path)


@pytest.mark.parametrize(
    ("content", "line", "fields", "width"),
    [
        ("a,b,c\n1,2,3\n4,5,6,7\n", 3, 4, 3),
        ("a,b,c\n1,2,3,4\n5,6,7\n", 2, 4, 3),  # pandas only warns for the first row
        ('a,b\n"x,y",1\n2,3\n"p",4,5\n', 4, 3, 2),
    ],
)
def test_ragged_rows_report_the_line(tmp_path, content, line, fields, width):
    message = error_for(write(tmp_path / "ragged.csv", content))
    assert f"line {line} has {fields} fields but the header has {width}" in message


def test_unterminated_quote(tmp_path):
    message = error_for(write(tmp_path / "quote.csv", 'a,b\n1,2\n3,"oops\n4,5\n'))
    assert "unterminated quoted value" in message
    assert "line 3" in message


@pytest.mark.parametrize("content", ["not json at all", '{"a": 1}', "[1, 2"])
def test_invalid_json(tmp_path, content):
    assert "is not a JSON table" in error_for(write(tmp_path / "bad.json", content))


@pytest.mark.parametrize("source", ["", "   "])
def test_empty_source_string(source):
    assert "no data given" in error_for(source)


def test_wrong_source_type():
    with pytest.raises(DataError, match="DataFrame, a file path or an embedded dataset"):
        read_data(42)


def test_errors_are_data_errors(tmp_path):
    with pytest.raises(DataError):
        read_data(tmp_path / "missing.csv")


# ----------------------------------------------------------------- gzip-compressed text

GZIP_CASES = [
    ("comma.csv.gz", "y,g,x\n1.5,a,1\n2.5,b,2\n3.0,a,3\n"),
    ("tab.tsv.gz", "y\tg\tx\n1.5\ta\t1\n2.5\tb\t2\n3.0\ta\t3\n"),
    ("semicolon.txt.gz", "y;g;x\n1.5;a;1\n2.5;b;2\n3.0;a;3\n"),
    ("decimal_comma.csv.gz", "y;g;x\n1,5;a;1\n2,5;b;2\n3,0;a;3\n"),
    ("bom_crlf.CSV.GZ", "\ufeffy,g,x\r\n1.5,a,1\r\n2.5,b,2\r\n3.0,a,3\r\n"),
]


@pytest.mark.parametrize(("filename", "content"), GZIP_CASES)
def test_gzip_text_reads_as_the_plain_file(tmp_path, filename, content):
    import gzip

    path = write(tmp_path / filename, gzip.compress(content.encode("utf-8")))
    plain = write(tmp_path / filename[: -len(".gz")], content)
    pd.testing.assert_frame_equal(read_data(path), read_data(plain))
    pd.testing.assert_frame_equal(read_data(path), EXPECTED, check_dtype=False)


def test_repository_insteval_gzip_reads():
    frame = read_data(Path(__file__).resolve().parents[1] / "data" / "InstEval.csv.gz")
    assert frame.shape == (73421, 7)


def _ratpup_gzip() -> bytes:
    import gzip

    return gzip.compress(load_dataset("ratpup").to_csv(index=False).encode("utf-8"))


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda data: data[: len(data) // 2], "is a damaged gzip file"),
        (lambda data: data[:20] + b"\x00" * 50 + data[70:], "is a damaged gzip file"),
        (lambda data: b"y,x\n1,2\n", "has the ending .gz but is not gzip-compressed"),
        (lambda data: __import__("gzip").compress(b""), "is empty once decompressed"),
        (lambda data: __import__("gzip").compress(b"y,x\n"), "no data rows"),
        (lambda data: __import__("gzip").compress(b"y,x\n\xe9,1\n"), "is not UTF-8"),
    ],
)
def test_broken_gzip_is_one_line_error_naming_the_file(tmp_path, make, fragment):
    path = write(tmp_path / "broken.csv.gz", make(_ratpup_gzip()))
    with pytest.raises(InputFileError) as info:
        read_data(path)
    message = str(info.value)
    assert fragment in message
    assert "broken.csv.gz" in message
    assert "\n" not in message


def test_gzip_of_an_unsupported_kind_is_refused(tmp_path):
    path = write(tmp_path / "data.parquet.gz", b"\x1f\x8b\x08\x00")
    with pytest.raises(InputFileError, match=r"unsupported file type \('.parquet.gz'\)"):
        read_data(path)
