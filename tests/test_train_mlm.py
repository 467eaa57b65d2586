"""Text-only MLM training end to end (the Tree-Transformer setting), the non-finite guard, and
exact resume after SIGKILL (a real subprocess killed mid-epoch)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hiclip.errors import HiCLIPError
from hiclip.train.config import load_config
from hiclip.train.loop import TrainHooks, train


pytestmark = pytest.mark.usefixtures("one_thread")

TINY_TEXT = '{"text": {"layers": 2, "width": 32, "heads": 2, "context_length": 16}}'


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(0)
    adjectives = ["red", "green", "blue", "small", "big", "striped"]
    nouns = ["square", "circle", "star", "box", "cross"]
    relations = ["left of", "right of", "above", "below", "next to"]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("".join(
        f"a {rng.choice(adjectives)} {rng.choice(nouns)} {rng.choice(relations)} "
        f"the {rng.choice(adjectives)} {rng.choice(nouns)}\n" for _ in range(400)))
    return path


def _config(corpus: Path, *extra: str):
    return load_config("captions-mlm", [f"text_corpus={corpus}", f"model_overrides={TINY_TEXT}",
                                        "batch_size=16", "epochs=2", "log_every=4",
                                        "progress=false", "optim.warmup_steps=5",
                                        "optim.lr=0.003", *extra])


def test_mlm_training_learns_and_exports_a_text_only_model(corpus, tmp_path) -> None:
    import hiclip

    result = train(_config(corpus), tmp_path / "run")
    assert result.steps == 2 * (392 // 16)  # every 50th sentence is held out for validation
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_mlm_loss" in r]
    assert len(val) == 2 and val[-1]["val_mlm_loss"] < val[0]["val_mlm_loss"] + 0.5
    train_losses = [r["loss_mlm"] for r in records if "loss_mlm" in r]
    assert train_losses[-1] < train_losses[0] - 0.3
    model, tokenizer = hiclip.load(result.final)
    assert model.vision is None and model.config.hierarchy
    assert tokenizer.token_to_id("square") is not None
    params = json.loads((tmp_path / "run" / "params.json").read_text())
    assert params["config"]["mode"] == "mlm" and params["versions"]["torch"] == torch.__version__
    assert (tmp_path / "run" / "checkpoints" / "latest").resolve().name == "epoch_2"


def test_non_finite_losses_are_skipped_then_stop_the_run(corpus, tmp_path) -> None:
    def nan_once(step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if step == 2 else loss

    result = train(_config(corpus, "max_steps=6", "max_nonfinite=2"), tmp_path / "a",
                   hooks=TrainHooks(transform_loss=nan_once))
    assert result.steps == 6 and result.skipped_steps == 1
    import hiclip

    model, _ = hiclip.load(result.final)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert "non-finite" in (tmp_path / "a" / "out.log").read_text()

    def nan_from_3(step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss + float("inf") if step >= 3 else loss

    with pytest.raises(HiCLIPError, match="3 consecutive non-finite losses at step 5"):
        train(_config(corpus, "max_steps=20", "max_nonfinite=3"), tmp_path / "b",
              hooks=TrainHooks(transform_loss=nan_from_3))


def _hiclip(*args: str) -> list[str]:
    return [sys.executable, "-m", "hiclip.cli", "train", *args]


# ``hiclip train`` with a 0.25 s sleep after every step (a TrainHooks hook, not a config key), so the
# run can be killed mid-epoch however fast the machine is.
SLOW_TRAIN = """
import sys, time
from hiclip.train import loop
from hiclip.cli import main
train = loop.train
loop.train = lambda *a, **k: train(*a, **k, hooks=loop.TrainHooks(after_step=lambda step: time.sleep(0.25)))
sys.exit(main(sys.argv[1:]))
"""


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.timeout(400)
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(corpus, tmp_path) -> None:
    overrides = [f"model_overrides={TINY_TEXT}", "batch_size=16", "epochs=2", "checkpoint_every=4",
                 "log_every=2", "keep_checkpoints=3"]
    common = ["--config", "captions-mlm", "--text-corpus", str(corpus), "--threads", "1",
              "--no-progress", *[arg for item in overrides for arg in ("--set", item)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The uninterrupted reference runs in this process (one thread, like the subprocesses).
    reference = train(load_config("captions-mlm", overrides, text_corpus=str(corpus),
                                  progress=False), tmp_path / "reference")
    assert reference.steps == 48

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", SLOW_TRAIN, "train", *common, "--out", str(killed)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # wait for the second checkpoint (step 8 of 48)
            if latest.exists() and latest.resolve().name == "step_8":
                break
            assert process.poll() is None, "training ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("second checkpoint never appeared")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "final").exists()
    steps_before = [json.loads(l)["step"] for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert max(steps_before) < 48

    subprocess.run([*_hiclip("--out", str(killed), "--resume", "latest", "--threads", "1", "--no-progress")],
                   check=True, env=env, capture_output=True, timeout=300)
    expected, got = _weights(reference.final), _weights(killed / "final")
    assert set(expected) == set(got)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    steps = [json.loads(l)["step"] for l in (killed / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] == 48


def _long_corpus(corpus: Path, tmp_path: Path) -> Path:
    lines = corpus.read_text().splitlines()
    lines[6] = " ".join(["square"] * 40)  # line 7: 42 tokens with SOT and EOT
    path = tmp_path / "long.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_corpus_over_the_learned_limit_is_refused_with_file_line(corpus, tmp_path) -> None:
    from hiclip.train.data import build_training_data
    from hiclip.train.distributed import DistEnv

    path = _long_corpus(corpus, tmp_path)
    with pytest.raises(HiCLIPError, match=rf"{path}:7: 42 tokens with SOT and EOT, over the model's limit of 16"):
        build_training_data(_config(path), DistEnv())
    data = build_training_data(_config(path, "on_error=skip"), DistEnv())
    assert len(data.train) + len(data.val.lines) == 399
    assert data.take_notes() == [f"skipped 1 sentence(s) over the model's limit of 16 tokens, e.g. {path}:7"]


def test_sinusoidal_model_trains_on_long_sentences_whole(corpus, tmp_path) -> None:
    from hiclip.train.data import build_training_data
    from hiclip.train.distributed import DistEnv

    path = _long_corpus(corpus, tmp_path)
    sinusoidal = '{"text": {"layers": 2, "width": 32, "heads": 2, "context_length": 16, "positions": "sinusoidal"}}'
    config = _config(path, f"model_overrides={sinusoidal}", "epochs=1")
    data = build_training_data(config, DistEnv())
    assert data.context_length is None and data.tokenizer.context_length is None
    assert len(data.train) + len(data.val.lines) == 400 and not data.take_notes()
    result = train(config, tmp_path / "run")
    assert result.steps == 392 // 16
