"""Write a file all at once or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: str | bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; refuse to overwrite unless ``force``.

    The data go to a temporary file in the same directory, which is flushed to
    disk and then renamed onto ``path`` (``os.replace``), so readers see either
    the old file or the complete new one, and a failure leaves no partial file.

    Parameters
    ----------
    path
        Destination file. Its directory must exist.
    data
        Text (written as UTF-8) or bytes.
    force
        Overwrite ``path`` if it exists. Without it an existing file is left
        untouched and ``FileExistsError`` is raised.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``force`` is false.
    FileNotFoundError
        The directory of ``path`` does not exist.
    IsADirectoryError
        ``path`` is a directory.
    PermissionError
        The directory is not writable.
    OSError
        Any other failure (disk full, ...); the message names the file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "fit.json"
    >>> write_atomic(out, '{"nobs": 322}').read_text()
    '{"nobs": 322}'
    """
    if isinstance(data, str):
        payload = data.encode("utf-8")
    elif isinstance(data, bytes | bytearray | memoryview):
        payload = bytes(data)
    else:
        raise TypeError(f"write_atomic writes str or bytes, not {type(data).__name__}")

    target = Path(os.path.expanduser(os.fspath(path)))
    shown = os.fspath(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(
            f"cannot write '{shown}': directory '{directory}' does not exist; create it first"
        )
    if target.is_dir():
        raise IsADirectoryError(
            f"cannot write '{shown}': it is a directory; give a file name inside it"
        )
    if target.exists() and not force:
        raise FileExistsError(f"'{shown}' already exists; use --force (force=True) to overwrite it")

    try:
        fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    except PermissionError:
        raise PermissionError(
            f"cannot write '{shown}': directory '{directory}' is not writable; "
            "choose another output path"
        ) from None
    except OSError as exc:
        raise OSError(f"cannot write '{shown}': {exc.strerror or exc}") from None

    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, _mode_for(target))
        _move_into_place(temp, target, shown, force)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            error = type(exc)(f"cannot write '{shown}': {exc.strerror or exc}")
            error.errno = exc.errno
            raise error from exc
        raise
    return target


def _move_into_place(temp: Path, target: Path, shown: str, force: bool) -> None:
    if force:
        os.replace(temp, target)
        return
    # A hard link fails if the target appeared since the check above, so a file
    # created concurrently is never clobbered; fall back where links are missing.
    try:
        os.link(temp, target)
    except FileExistsError:
        raise FileExistsError(
            f"'{shown}' already exists; use --force (force=True) to overwrite it"
        ) from None
    except OSError:
        if target.exists():
            raise FileExistsError(
                f"'{shown}' already exists; use --force (force=True) to overwrite it"
            ) from None
        os.replace(temp, target)
        return
    temp.unlink()


def _mode_for(target: Path) -> int:
    """Keep the mode of a file being replaced; new files get 0o666 less the umask."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
