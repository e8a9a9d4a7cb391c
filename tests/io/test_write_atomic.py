"""write_atomic: all or nothing, no clobbering without force, clear errors."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from mixedmodels.io import write_atomic, writers


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_writes_text_as_utf8(tmp_path):
    path = tmp_path / "out.txt"
    assert write_atomic(path, "σ² = 1\n") == path
    assert path.read_bytes() == "σ² = 1\n".encode()
    assert leftovers(tmp_path) == []


def test_writes_bytes(tmp_path):
    path = tmp_path / "out.bin"
    write_atomic(str(path), b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"


def test_new_file_gets_default_permissions(tmp_path):
    path = tmp_path / "out.txt"
    write_atomic(path, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(FileExistsError) as info:
        write_atomic(path, "new")
    assert str(path) in str(info.value)
    assert "--force" in str(info.value)
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_force_overwrites_and_keeps_mode(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    os.chmod(path, 0o640)
    write_atomic(path, "new", force=True)
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        write_atomic(tmp_path / "no" / "out.txt", "x")


def test_target_is_a_directory(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        write_atomic(tmp_path / "sub", "x", force=True)


def test_directory_not_writable(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    # Root may write anywhere: simulate the refusal where the temp file is made.
    monkeypatch.setattr(writers.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as info:
        write_atomic(tmp_path / "out.txt", "x")
    assert "is not writable" in str(info.value)
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_directory_not_writable_for_real(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        with pytest.raises(PermissionError, match="is not writable"):
            write_atomic(locked / "out.txt", "x")
    finally:
        os.chmod(locked, 0o755)


def test_failure_while_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers.os, "fsync", disk_full)
    with pytest.raises(OSError) as info:
        write_atomic(path, "new", force=True)
    assert info.value.errno == errno.ENOSPC
    assert "No space left on device" in str(info.value)
    assert str(path) in str(info.value)
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_file_created_concurrently_is_not_clobbered(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    real_link = os.link

    def racing_link(src, dst):
        path.write_text("theirs")  # another process wins the race
        return real_link(src, dst)

    monkeypatch.setattr(writers.os, "link", racing_link)
    with pytest.raises(FileExistsError):
        write_atomic(path, "ours")
    assert path.read_text() == "theirs"
    assert leftovers(tmp_path) == []


def test_works_without_hard_links(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(writers.os, "link", no_links)
    path = tmp_path / "out.txt"
    write_atomic(path, "x")
    assert path.read_text() == "x"
    assert leftovers(tmp_path) == []


def test_relative_path_in_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_atomic("out.txt", "x")
    assert (tmp_path / "out.txt").read_text() == "x"


def test_rejects_other_data_types(tmp_path):
    with pytest.raises(TypeError, match="str or bytes"):
        write_atomic(tmp_path / "out.txt", 3)
