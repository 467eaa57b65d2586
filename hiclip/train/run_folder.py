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
leaves either the old or the new checkpoint, never a partial one. The temporaries of killed
writes are removed when the run folder is opened again (``hiclip.atomic.remove_stale``: only
those whose writer is no longer running). ``--resume latest`` takes the newest checkpoint that
is intact (its training state loads and its weights match their checksum) and logs every newer
one it had to skip, and why.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import pickle
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hiclip.atomic import (
    atomic_dir,
    atomic_path,
    atomic_write_text,
    check_writable,
    os_error,
    owned_prefix,
    remove_stale,
)
from hiclip.errors import HiCLIPError

STATE_FILE = "training_state.pt"
# sha256 of STATE_FILE, written beside it: torch's zip reader does not notice flipped bytes in a
# tensor's data, so damage to the optimiser moments would otherwise resume silently.
STATE_SUM_FILE = "training_state.sha256"
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
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


# Messages about a resume (checkpoints skipped as damaged), found before the run folder's log
# exists; the RunFolder of that run writes them to its log when it opens.
_pending_notes: dict[str, list[str]] = {}


class _RaisingFileHandler(logging.FileHandler):
    """``out.log`` handler that turns a failed write (full disk) into one line, not logging's
    own traceback on stderr."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            raise os_error(self.baseFilename, error) from None
        super().handleError(record)


_logger_numbers = itertools.count()


class RunFolder:
    """Owns ``<out>``: logging, metrics and checkpoints. Only rank 0 writes (``writer=False``
    elsewhere makes every method a no-op apart from reading)."""

    def __init__(self, root: str | Path, writer: bool = True) -> None:
        self.root = Path(root)
        self.writer = writer
        self.checkpoints = self.root / "checkpoints"
        self.metrics_path = self.root / "metrics.jsonl"
        # A fresh name each time: a name made from id(self) can be reused once an earlier folder is
        # garbage-collected, and loggers live forever, so its old handlers (on a closed stream) came back.
        self.logger = logging.getLogger(f"hiclip.train.run{next(_logger_numbers)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        if writer:
            # Leftovers of killed writes go first: they may be what fills the disk.
            removed = remove_stale(self.checkpoints) + remove_stale(self.root)
            check_writable(self.root, folder=True)
            try:
                self.checkpoints.mkdir(parents=True, exist_ok=True)
                handler = _RaisingFileHandler(self.root / "out.log")
            except OSError as error:
                raise os_error(self.root / "out.log", error) from None
            handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(message)s"))
            self.logger.addHandler(handler)
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(console)
            for note in _pending_notes.pop(str(self.root.resolve()), []):
                self.warn(note)
            for stale in removed:
                self.log(f"removed {stale.relative_to(self.root)}, left by an interrupted write")

    def close(self) -> None:
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)
        logging.Logger.manager.loggerDict.pop(self.logger.name, None)

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
        try:
            with self.metrics_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:
            raise os_error(self.metrics_path, error) from None

    def truncate_metrics(self, after_step: int) -> None:
        """On resume: drop records logged after ``after_step`` by the interrupted run."""
        if not self.writer or not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if line.strip() and json.loads(line).get("step", 0) <= after_step:
                    kept.append(line)
            except json.JSONDecodeError:  # the last line of a run killed mid-write
                continue
        atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self, name: str, model: torch.nn.Module, tokenizer: Any,
                        state: dict[str, Any], keep: int = 0) -> Path:
        """Write ``checkpoints/<name>`` atomically and point ``latest`` at it."""
        if not self.writer:
            return self.checkpoints / name
        from hiclip import save as export_model

        final = self.checkpoints / name
        # A re-saved name (after a resume) replaces the old folder in one rename.
        with atomic_dir(final) as tmp:
            export_model(model, tokenizer, tmp)
            save_state(state, tmp / STATE_FILE)
            (tmp / STATE_SUM_FILE).write_text(_sha256(tmp / STATE_FILE) + "\n")
        link_tmp = self.checkpoints / f"{owned_prefix(Path(LATEST))}link"
        try:
            if link_tmp.is_symlink() or link_tmp.exists():
                link_tmp.unlink()
            os.symlink(name, link_tmp)
            os.replace(link_tmp, self.checkpoints / LATEST)
        except OSError as error:
            raise os_error(self.checkpoints / LATEST, error) from None
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
        remove_stale(self.checkpoints)  # leftovers of killed writes, never a live writer's

    def export_final(self, model: torch.nn.Module, tokenizer: Any) -> Path:
        """``<out>/final``: the model for ``hiclip.load`` / ``hiclip induce`` / ``hiclip eval``."""
        final = self.root / "final"
        if not self.writer:
            return final
        from hiclip import save as export_model

        with atomic_dir(final) as tmp:
            export_model(model, tokenizer, tmp)
        return final


def save_state(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` of a training state, atomically; a full disk is one line."""
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as error:  # torch's zip writer reports a failed write without errno
            free = shutil.disk_usage(path.parent).free
            reason = ("no space left on the device" if free < (1 << 20)
                      else str(error).strip().splitlines()[-1])
            raise HiCLIPError(f"{path}: cannot write ({reason})") from None


def resolve_resume(spec: str, out: str | Path | None) -> Path:
    """The checkpoint to resume from.

    ``latest`` (``<out>``'s checkpoints) or a run folder: its newest *intact* checkpoint, the
    one ``checkpoints/latest`` names first, then the others from the newest; every newer one
    skipped as damaged is reported in the run's log. A checkpoint folder: itself, which must be
    intact. The training state is loaded here (and kept for :func:`load_state`).
    """
    if spec == "latest":
        if out is None:
            raise HiCLIPError("--resume latest needs --out (the run folder to resume)")
        run = Path(out)
    elif (Path(spec) / "checkpoints").is_dir():
        run = Path(spec)
    else:
        path = Path(spec)
        if not path.exists():
            raise HiCLIPError(f"nothing to resume: {path} does not exist")
        path = path.resolve()
        if not (path / STATE_FILE).is_file():
            raise HiCLIPError(f"{path} holds no {STATE_FILE}: not a training checkpoint")
        problem = _damage(path)
        if problem is not None:
            raise HiCLIPError(f"cannot resume from {path}: {problem}")
        return path
    candidates = _resume_candidates(run / "checkpoints")
    if not candidates:
        raise HiCLIPError(f"nothing to resume: {run / 'checkpoints'} holds no checkpoint")
    skipped = []
    for path in candidates:
        problem = _damage(path)
        if problem is None:
            if skipped:
                notes = _pending_notes.setdefault(str(Path(out or run).resolve()), [])
                notes += [f"resume: skipped checkpoint {name}: {why}" for name, why in skipped]
                notes.append(f"resume: using {path.name}, the newest intact checkpoint")
            return path
        skipped.append((path.name, problem))
    raise HiCLIPError(f"nothing to resume: every checkpoint in {run / 'checkpoints'} is damaged "
                      f"({'; '.join(f'{n}: {w}' for n, w in skipped)})")


def _resume_candidates(folder: Path) -> list[Path]:
    """Checkpoint folders, newest first, the target of ``latest`` leading."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir()
             if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
             and (p / STATE_FILE).is_file()]
    found.sort(key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    latest = folder / LATEST
    if latest.is_symlink() and latest.resolve() in [p.resolve() for p in found]:
        target = latest.resolve()
        found = [target] + [p for p in found if p.resolve() != target]
    return [p.resolve() for p in found]


_loaded_states: dict[str, dict[str, Any]] = {}


def _damage(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (None: it is intact). Its state stays loaded."""
    from hiclip.checkpoint import verify_weights

    try:
        state = _read_state(checkpoint / STATE_FILE)
        verify_weights(checkpoint)
    except HiCLIPError as error:
        return str(error)
    _loaded_states[str(checkpoint)] = state
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_state_sum(path: Path) -> None:
    """Compare ``path`` with its recorded sha256 (checkpoints written before the sum have none)."""
    recorded = path.parent / STATE_SUM_FILE
    if not recorded.is_file():
        return
    expected = recorded.read_text(encoding="utf-8", errors="replace").strip()
    if _sha256(path) != expected:
        raise HiCLIPError(f"{path}: damaged (its sha256 differs from the one recorded in {STATE_SUM_FILE})")


def _read_state(path: Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only``, then the recorded sha256; refusals and damage are one line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = str(error).split("\n")
        culprit = next((line.strip() for line in detail if "GLOBAL" in line or "Unsupported" in line), "")
        raise HiCLIPError(f"{path}: refused: it holds pickled Python objects, not only tensors and "
                          f"plain values, so it was not written by hiclip train; loading it could run "
                          f"code{f' ({culprit})' if culprit else ''}") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HiCLIPError(f"{path}: damaged (truncated or corrupt: {first})") from None
    if not isinstance(state, dict):
        raise HiCLIPError(f"{path}: not a training state (a {type(state).__name__}, not a dict)")
    try:
        _check_state_sum(path)
    except OSError as error:
        raise os_error(path, error) from None
    return state


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The training state of ``checkpoint`` (the copy :func:`resolve_resume` read, if any)."""
    state = _loaded_states.pop(str(checkpoint), None)
    return state if state is not None else _read_state(checkpoint / STATE_FILE)
