"""Where real evaluation data lives: ``$HICLIP_DATA``, default ``../shared/data`` beside the repo."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The folder with ``ptb_sample``, ``coco_captions_parsed`` and ``coco_tiny`` (may not exist)."""
    env = os.environ.get("HICLIP_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")
