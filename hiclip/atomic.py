"""Output files that are either complete or absent, and output folders checked before the work.

Every writer of the project (predictions, reports, figures, datasets, checkpoints) goes through
these helpers, so that

* two runs writing the same output never share a temporary file: each temporary has a unique
  name (``.<name>.tmp-<random>``) in the target's folder, and the finished file replaces the
  target with one ``os.replace``, which is atomic on POSIX file systems;
* a run that fails (an exception, a full disk) leaves the previous target untouched and removes
  its own temporary;
* a full disk, a read-only folder or a missing permission is one line naming the path
  (:class:`~hiclip.errors.HiCLIPError`), found *before* the work starts by :func:`check_writable`;
* a temporary left by a killed writer is recognised and removed by :func:`remove_stale`: its name
  carries the host and process id of its writer (``.<name>.tmp-<host>_<pid>-<random>``), so a
  temporary that a live process is still writing is never touched.

Folders (checkpoints, datasets) get the same treatment from :func:`atomic_dir`.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from hiclip.errors import HiCLIPError

TEMP_MARK = ".tmp-"
# Temporaries of unknown owner (another host, or named before owners were recorded) are stale
# only once this old: long enough for any single write to finish.
STALE_AFTER_S = 3600.0
_OWNER = re.compile(re.escape(TEMP_MARK) + r"(?:(?P<host>[A-Za-z0-9]+)_)?(?P<pid>\d+)-")


def temp_prefix(path: Path) -> str:
    """Name prefix of the temporaries :func:`atomic_path` makes for ``path``."""
    return f".{path.name}{TEMP_MARK}"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def owned_prefix(path: Path) -> str:
    """:func:`temp_prefix` plus this process's host and pid: the prefix of our temporaries."""
    return f"{temp_prefix(path)}{_host()}_{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return True
    return True


def is_stale(temporary: Path, max_age_s: float = STALE_AFTER_S) -> bool:
    """True when no live process can still be writing ``temporary``.

    Its writer is known from the name when it ran on this host: stale once that process has
    exited. Otherwise (another host, an older name without an owner) it is stale once its
    modification time is more than ``max_age_s`` old.
    """
    match = _OWNER.search(temporary.name)
    if match is not None and match.group("host") == _host():
        return not _pid_alive(int(match.group("pid")))
    try:
        age = time.time() - temporary.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > max_age_s


def remove_stale(folder: str | Path, name: str | None = None,
                 max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete the temporaries in ``folder`` (of ``name``, or of any file) that :func:`is_stale`
    finds abandoned; returns what was removed. Live writers' temporaries are left alone."""
    removed = []
    for path in stale_temporaries(folder, name):
        if not is_stale(path, max_age_s):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


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


_ERRNO_IN_TEXT = re.compile(r"os error (\d+)|Os \{ code: (\d+)|\[Errno (\d+)\]")


def as_os_error(error: BaseException) -> OSError | None:
    """The ``OSError`` behind ``error``: itself, or one rebuilt from the errno that libraries
    such as safetensors and tokenizers (Rust) put in their messages; None when there is none."""
    if isinstance(error, OSError):
        return error
    match = _ERRNO_IN_TEXT.search(str(error))
    if match is None:
        return None
    code = int(next(g for g in match.groups() if g))
    return OSError(code, os.strerror(code))


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
        fd, name = tempfile.mkstemp(prefix=owned_prefix(target), dir=target.parent)
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


@contextmanager
def atomic_dir(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a unique temporary folder beside ``path``; on success it takes the place of ``path``.

    An existing ``path`` is moved aside first and removed once the new folder is in place, so a
    reader sees the old folder or the new one, never a mix (there is one instant, between two
    renames, when ``path`` is absent). If the block raises, the temporary is removed and ``path``
    is left as it was. ``OSError`` becomes a one-line ``HiCLIPError``. ``fsync`` flushes every
    file first (a checkpoint; not worth it for thousands of regenerable files).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=owned_prefix(target), dir=target.parent))
        tmp.chmod(0o755)
    except OSError as error:
        raise os_error(target, error) from None
    try:
        yield tmp
        for file in tmp.rglob("*") if fsync else ():
            if file.is_file() and not file.is_symlink():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
        replace_dir(tmp, target)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise os_error(target, error) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(source: Path, target: Path) -> None:
    """Rename the folder ``source`` to ``target``, moving an existing ``target`` aside first."""
    if target.exists() or target.is_symlink():
        trash = Path(tempfile.mkdtemp(prefix=owned_prefix(target) + "old-",
                                      dir=target.parent))
        os.replace(target, trash / target.name)
        os.replace(source, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(source, target)
    _fsync_dir(target.parent)


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
