"""The app (issue 17.7): stopping ``hiclip app`` by its PID stops the server (a real process on
a free port), and typed captions are limited in characters, in words and per word."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hiclip.errors import HiCLIPError
from viz import demo_assets
from viz.uploads import MAX_CAPTION_CHARS, MAX_WORD_CHARS, validate_caption

REPO = Path(__file__).resolve().parent.parent


def test_captions_are_limited_in_characters_words_and_per_word():
    with pytest.raises(HiCLIPError, match=r"^the caption has 10,000 characters \(limit 1,000\)$"):
        validate_caption("a" * 10_000)  # one 10,000-character word
    with pytest.raises(HiCLIPError, match=r"^the caption's word 'aaaaaaaaaaaaaaaaaaaa'\.\.\. has 100 "
                                          r"characters \(limit 64 per word\)$"):
        validate_caption("a red " + "a" * 100)
    long_caption = "b" * 60 + (" " + "b" * 59) * 16 + "x"  # 17 words of 60 characters
    with pytest.raises(HiCLIPError, match=f"has {len(long_caption):,} characters \\(limit {MAX_CAPTION_CHARS:,}\\)"):
        validate_caption(long_caption)
    with pytest.raises(HiCLIPError, match="65 words"):
        validate_caption(" ".join(["red"] * 65))
    assert validate_caption(" a " + "b" * MAX_WORD_CHARS) == "a " + "b" * MAX_WORD_CHARS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
            return response.read().strip() == b"ok"
    except OSError:
        return False


def _processes_on(port: int) -> list[int]:
    """PIDs whose command line serves ``port`` (the app and any child it left)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"streamlit" in b" ".join(command) and str(port).encode() in command:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="looks for left-over servers in /proc")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_app_by_pid_stops_the_server(tmp_path, stop):
    checkpoints = tmp_path / "checkpoints"
    demo_assets.tiny_checkpoint(checkpoints / "tiny")
    port = _free_port()
    env = dict(os.environ, HICLIP_DATA=str(tmp_path / "no-real-data"), TMPDIR=str(tmp_path))
    process = subprocess.Popen(
        [sys.executable, "-m", "hiclip.cli", "app", "--checkpoints", str(checkpoints),
         "--data", str(tmp_path / "none"), "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not _serving(port):
            assert process.poll() is None, f"the app exited with {process.returncode}"
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.5)
        os.kill(process.pid, stop)  # the PID the user started, not its process group
        process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while (_serving(port) or _processes_on(port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _serving(port) and _processes_on(port) == []
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in _processes_on(port):
            os.kill(pid, signal.SIGKILL)
