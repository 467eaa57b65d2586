"""Stand-ins used until trained checkpoints and generated data exist.

* :func:`tiny_checkpoint` writes an untrained ``hiclip-tiny`` model with a word-level tokenizer
  (``hiclip.save`` format, loadable by ``hiclip.load``);
* :func:`shapes_dataset` generates a small synthetic shapes dataset (``hiclip data shapes``);
* :func:`checkpoint_folders` lists the checkpoints of a folder (subfolders with ``config.json``).

Both writers are idempotent: an existing complete result is reused.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from hiclip.paths import REPO_ROOT

#: Words every stand-in tokenizer knows, so typed captions about shapes are in vocabulary.
BASE_WORDS = (
    "a an the one two three four of and with to on in at left right above below next that has is "
    "there are red green blue yellow purple orange brown grey gray black white pink small large "
    "big tiny square squares circle circles triangle triangles cross crosses plus star stars "
    "ring rings diamond diamonds solid striped dotted outlined shape shapes man woman dog cat "
    "riding horse sitting table street picture photo"
)


def default_checkpoints_dir() -> Path:
    """``$HICLIP_CHECKPOINTS`` or the repository's ``checkpoints/`` folder."""
    env = os.environ.get("HICLIP_CHECKPOINTS")
    return Path(env) if env else REPO_ROOT / "checkpoints"


def scratch_dir() -> Path:
    """A per-user folder under the system temp dir for generated stand-ins."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = Path(tempfile.gettempdir()) / f"hiclip-app-{uid}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_folders(root: str | Path) -> dict[str, Path]:
    """``{name: folder}`` of every checkpoint under ``root``: the folder itself if it holds
    ``config.json``, else its subfolders (one level, sorted by name) that do."""
    root = Path(root)
    if (root / "config.json").is_file():
        return {root.name: root}
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir())
            if p.is_dir() and (p / "config.json").is_file()}


def _complete_checkpoint(folder: Path) -> bool:
    return all((folder / name).is_file()
               for name in ("config.json", "model.safetensors", "tokenizer.json"))


def tiny_checkpoint(folder: str | Path, texts: Iterable[str] = (), seed: int = 0,
                    hierarchy: bool = True) -> Path:
    """An untrained ``hiclip-tiny`` checkpoint in ``folder`` (created once, then reused).

    The word-level tokenizer is trained on :data:`BASE_WORDS` plus ``texts``; weights are the
    seeded random initialisation. Written to a sibling temp folder and renamed into place, so
    two processes creating it at once never leave a partial checkpoint.
    """
    import torch

    import hiclip

    folder = Path(folder)
    if _complete_checkpoint(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = hiclip.HiCLIPTokenizer.train_word_level([BASE_WORDS, *texts])
    model = hiclip.create_model("hiclip-tiny", hierarchy=hierarchy, vocab_size=tokenizer.vocab_size)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        hiclip.save(model, tokenizer, tmp, extra={"note": "untrained random initialisation (stand-in)"})
        try:
            tmp.rename(folder)
        except OSError:
            if not _complete_checkpoint(folder):   # lost a race to a complete one: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def shapes_dataset(folder: str | Path, n: int = 16, seed: int = 0) -> Path:
    """A synthetic shapes dataset of ``n`` samples in ``folder`` (generated once, then reused)."""
    from hiclip.data.shapes import ShapesConfig, generate_dataset

    folder = Path(folder)
    if (folder / "manifest.jsonl").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        generate_dataset(tmp / "data", ShapesConfig(n=n, seed=seed))
        try:
            (tmp / "data").rename(folder)
        except OSError:
            if not (folder / "manifest.jsonl").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
