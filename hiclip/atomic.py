"""Output files that are either complete or absent, and output folders checked before the work.

Every writer of the project (predictions, reports, figures, datasets, checkpoints) goes through
these helpers, so that

* two runs writing the same output never share a temporary file: each temporary has a unique
  name (``.<name>.tmp-<random>``) in the target's folder, and the finished file replaces the
  target with one ``os.replace``, which is atomic on POSIX file systems;
* a run that fails (an exception, a full disk) leaves the previous target untouched and removes
  its own temporary;
* a full disk, a read-only folder or a missing permission is one line naming the path
  (:class:`~hiclip.errors.HiCLIPError`), found *before* the work starts by :func:`check_writable`.
"""
from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from hiclip.errors import HiCLIPError

TEMP_MARK = ".tmp-"


def temp_prefix(path: Path) -> str:
    """Name prefix of the temporaries :func:`atomic_path` makes for ``path``."""
    return f".{path.name}{TEMP_MARK}"


def os_error(path: object, error: OSError, action: str = "cannot write") -> HiCLIPError:
    """A one-line error for an ``OSError`` met while writing ``path`` (full disk, read-only...)."""
    reason = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
    }.get(error.errno or -1, error.strerror or str(error))
    return HiCLIPError(f"{path}: {action} ({reason})")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; on success it replaces ``path``.

    The caller writes the temporary however it likes (``save_file``, ``Image.save``,
    ``torch.save``...). If the block raises, the temporary is removed and ``path`` is left as
    it was. ``OSError`` (full disk, read-only folder) becomes a one-line ``HiCLIPError``.

    Parameters
    ----------
    path : str or Path
        The final file. Its folder is created if needed.
    fsync : bool
        Flush the temporary and the folder to disk, so a crash never leaves a renamed but empty file.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=temp_prefix(target), dir=target.parent)
    except OSError as error:
        raise os_error(target, error) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        if fsync:
            _fsync_dir(target.parent)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise os_error(target, error) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """``open()`` for writing, through :func:`atomic_path` (``mode`` ``"w"`` or ``"wb"``)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode {mode!r} is not 'w' or 'wb'")
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``Path(path)``."""
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def check_writable(path: str | Path, folder: bool = False) -> None:
    """Fail now, in one line, if ``path`` could not be written later.

    Creates the folder (``path`` itself with ``folder=True``, else its parent) and writes and
    removes a small probe file in it, so a read-only folder, a missing permission or a full disk
    is found before any work is done.

    Raises
    ------
    HiCLIPError
        Naming the path and the reason.
    """
    target = Path(path)
    where = target if folder else target.parent
    if not folder and target.is_dir():
        raise HiCLIPError(f"{target}: is a folder, expected a file path")
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".write-check{TEMP_MARK}", dir=where)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as error:
        raise os_error(where, error) from None


def stale_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Temporaries left in ``folder`` by interrupted atomic writes (of ``name``, or of any file)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    prefix = temp_prefix(Path(name)) if name is not None else None
    return sorted(p for p in root.iterdir()
                  if (p.name.startswith(prefix) if prefix else (p.name.startswith(".") and TEMP_MARK in p.name)))
