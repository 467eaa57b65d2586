"""Shared by the fault and training tests: the small shapes dataset, the tiny training recipe they
run, and a training stopped at a given step."""
from __future__ import annotations

import json
from pathlib import Path

from model_sizes import SHAPES_32


def shapes_60(folder: Path) -> Path:
    """60 synthetic shapes samples at 32 px (48 train, 6 val, 6 test) in ``folder``."""
    from hiclip.data.shapes import ShapesConfig, generate_dataset

    generate_dataset(folder, ShapesConfig(n=60, seed=1, image_size=32), workers=1)
    return folder


def tiny_recipe(data: Path, *extra: str):
    """``shapes-tiny`` shrunk to seconds: the SHAPES_32 model, batches of 8, one view, one epoch
    (6 steps on :func:`shapes_60`), no validation; ``extra`` are more ``key=value`` overrides."""
    from hiclip.train.config import load_config

    return load_config("shapes-tiny", [
        f"data={data}", f"model_overrides={json.dumps(SHAPES_32)}", "batch_size=8", "epochs=1",
        "log_every=1", "progress=false", "optim.warmup_steps=2", "image_views=1",
        "loss.simsiam_weight=0", "val_split=null", *extra])


class Interrupt(Exception):
    """Raised by :func:`train_until`'s hook: the run stops as a killed one would, mid-run."""


def train_until(config, out: Path, step: int) -> None:
    """Run ``hiclip.train.loop.train`` and stop it once ``step`` is logged."""
    import pytest

    from hiclip.train.loop import TrainHooks, train

    def stop(at: int, record: dict) -> None:
        if at == step:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config, out, hooks=TrainHooks(on_step=stop))
