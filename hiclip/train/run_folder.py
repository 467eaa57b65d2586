"""The run folder (open_clip style) and atomic checkpoints.

``<out>/``
  ``params.json``   resolved config, command line, versions, git commit, world size
  ``out.log``       the log (also printed)
  ``metrics.jsonl`` one JSON object per logged step / validation
  ``checkpoints/step_N/`` (or ``epoch_K/``): ``config.json``, ``model.safetensors``,
                    ``tokenizer.json`` (``hiclip.save``: loadable by ``hiclip.load``) and
                    ``training_state.pt`` (optimizer, schedule, RNG states, data position, queue,
                    training-only heads; tensors and plain values only, read with weights_only)
  ``checkpoints/latest`` a symlink to the newest complete checkpoint, replaced atomically
  ``final/``        the exported final model (``hiclip.save``)
A checkpoint is written to a temporary folder and renamed into place, so a kill at any moment
leaves either the old or the new checkpoint, never a partial one.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hiclip.errors import HiCLIPError

STATE_FILE = "training_state.pt"
LATEST = "latest"


def git_commit(root: Path) -> str | None:
    """The commit of the source tree (with ``-dirty`` when it has changes), or None."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import importlib.metadata

    import numpy

    try:
        hiclip_version = importlib.metadata.version("hiclip")
    except importlib.metadata.PackageNotFoundError:
        hiclip_version = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "hiclip": str(hiclip_version),
            "platform": platform.platform()}


def write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


class RunFolder:
    """Owns ``<out>``: logging, metrics and checkpoints. Only rank 0 writes (``writer=False``
    elsewhere makes every method a no-op apart from reading)."""

    def __init__(self, root: str | Path, writer: bool = True) -> None:
        self.root = Path(root)
        self.writer = writer
        self.checkpoints = self.root / "checkpoints"
        self.metrics_path = self.root / "metrics.jsonl"
        self.logger = logging.getLogger(f"hiclip.train.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        if writer:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(self.root / "out.log")
            handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(message)s"))
            self.logger.addHandler(handler)
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(console)

    def close(self) -> None:
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)

    # -- records -------------------------------------------------------------------------
    def write_params(self, config: dict[str, Any], argv: list[str], extra: dict[str, Any]) -> None:
        if not self.writer:
            return
        repo = Path(__file__).resolve().parent.parent.parent
        payload = {"config": config, "command": argv, "versions": versions(),
                   "git_commit": git_commit(repo), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                   **extra}
        write_json_atomic(self.root / "params.json", payload)

    def log(self, message: str, level: int = logging.INFO) -> None:
        if self.writer:
            self.logger.log(level, message)

    def warn(self, message: str) -> None:
        self.log(message, logging.WARNING)

    def metrics(self, record: dict[str, Any]) -> None:
        if not self.writer:
            return
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """On resume: drop records logged after ``after_step`` by the interrupted run."""
        if not self.writer or not self.metrics_path.is_file():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= after_step]
        tmp = self.metrics_path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.metrics_path)

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self, name: str, model: torch.nn.Module, tokenizer: Any,
                        state: dict[str, Any], keep: int = 0) -> Path:
        """Write ``checkpoints/<name>`` atomically and point ``latest`` at it."""
        if not self.writer:
            return self.checkpoints / name
        from hiclip import save as export_model

        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=self.checkpoints))
        tmp.chmod(0o755)
        export_model(model, tokenizer, tmp)
        torch.save(state, tmp / STATE_FILE)
        _fsync_tree(tmp)
        final = self.checkpoints / name
        if final.exists():  # re-saved after a resume: move the old one aside first
            trash = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=self.checkpoints))
            os.replace(final, trash / name)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        link_tmp = self.checkpoints / f".{LATEST}.tmp-{os.getpid()}"
        if link_tmp.is_symlink() or link_tmp.exists():
            link_tmp.unlink()
        os.symlink(name, link_tmp)
        os.replace(link_tmp, self.checkpoints / LATEST)
        if keep > 0:
            self._prune(keep, protect=name)
        return final

    def _prune(self, keep: int, protect: str) -> None:
        """Keep the ``keep`` newest complete checkpoints (by modification time)."""
        done = [p for p in self.checkpoints.iterdir()
                if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
                and (p / STATE_FILE).is_file()]
        done.sort(key=lambda p: (p.stat().st_mtime, p.name))
        for old in done[:-keep]:
            if old.name != protect:
                shutil.rmtree(old, ignore_errors=True)
        for stale in self.checkpoints.glob(".*.tmp-*"):  # leftovers of killed writes
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)

    def export_final(self, model: torch.nn.Module, tokenizer: Any) -> Path:
        """``<out>/final``: the model for ``hiclip.load`` / ``hiclip induce`` / ``hiclip eval``."""
        final = self.root / "final"
        if not self.writer:
            return final
        from hiclip import save as export_model

        tmp = Path(tempfile.mkdtemp(prefix=".final.tmp-", dir=self.root))
        tmp.chmod(0o755)
        export_model(model, tokenizer, tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def resolve_resume(spec: str, out: str | Path | None) -> Path:
    """``latest`` -> ``<out>/checkpoints/latest``; a run folder -> its latest checkpoint; a
    checkpoint folder -> itself. Errors when it does not hold a training state."""
    if spec == "latest":
        if out is None:
            raise HiCLIPError("--resume latest needs --out (the run folder to resume)")
        path = Path(out) / "checkpoints" / LATEST
    else:
        path = Path(spec)
        if (path / "checkpoints" / LATEST).exists():
            path = path / "checkpoints" / LATEST
    if not path.exists():
        raise HiCLIPError(f"nothing to resume: {path} does not exist")
    path = path.resolve()
    if not (path / STATE_FILE).is_file():
        raise HiCLIPError(f"{path} holds no {STATE_FILE}: not a training checkpoint")
    return path


def load_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
