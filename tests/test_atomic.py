"""hiclip.atomic: complete-or-absent outputs, unique temporaries, writability checked first."""
from __future__ import annotations

import errno
import os
import threading

import pytest

from hiclip.atomic import (
    atomic_open,
    atomic_path,
    atomic_write_text,
    check_writable,
    os_error,
    stale_temporaries,
)
from hiclip.errors import HiCLIPError


def test_write_replaces_the_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert stale_temporaries(tmp_path) == []


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert stale_temporaries(tmp_path) == []


def test_concurrent_writers_get_distinct_temporaries(tmp_path):
    target = tmp_path / "same.jsonl"
    seen = []
    barrier = threading.Barrier(2)

    def write(text):
        with atomic_path(target) as tmp:
            seen.append(tmp)
            barrier.wait()
            tmp.write_text(text)

    threads = [threading.Thread(target=write, args=(t,)) for t in ("a" * 1000, "b" * 1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 2
    assert target.read_text() in ("a" * 1000, "b" * 1000)  # one whole file, never a mix


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_folder_is_one_line_before_work(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(HiCLIPError, match="permission denied"):
            check_writable(folder / "pred.jsonl")
    finally:
        folder.chmod(0o755)


def test_disk_errors_read_as_one_line():
    error = os_error("/x/out.jsonl", OSError(errno.ENOSPC, "No space left on device"))
    assert str(error) == "/x/out.jsonl: cannot write (no space left on the device)"
    assert "\n" not in str(os_error("/x", OSError(errno.EROFS, "Read-only file system")))


def test_check_writable_refuses_a_folder_as_file(tmp_path):
    with pytest.raises(HiCLIPError, match="is a folder"):
        check_writable(tmp_path)
    check_writable(tmp_path / "new" / "deeper" / "file.json")
    assert (tmp_path / "new" / "deeper").is_dir()
