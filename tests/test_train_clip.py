"""Image-text training end to end on a tiny synthetic shapes dataset and a tiny model: every
HiDeCLIP objective, exact resume of all training state, ``hiclip eval``, and start-up errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hiclip.cli import main as cli
from hiclip.errors import HiCLIPError
from hiclip.train.config import load_config
from hiclip.train.loop import TrainHooks, train
from model_sizes import SHAPES_32


pytestmark = pytest.mark.usefixtures("one_thread")

TINY = json.dumps(SHAPES_32)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    from hiclip.data.shapes import ShapesConfig, generate_dataset

    out = tmp_path_factory.mktemp("shapes") / "data"
    generate_dataset(out, ShapesConfig(n=60, seed=1, image_size=32), workers=1)
    return out


def _config(shapes: Path, *extra: str):
    return load_config("shapes-tiny", [
        f"data={shapes}", f"model_overrides={TINY}", "batch_size=8", "epochs=1", "log_every=1",
        "progress=false", "optim.warmup_steps=2", "loss.nn_weight=0.2", "loss.queue_size=16",
        "loss.multiview=true", "loss.simsiam_hidden=16", "loss.simsiam_dim=8",
        "loss.simsiam_predictor_hidden=4", "val_max_samples=12", *extra])


def test_all_objectives_train_resume_exactly_and_evaluate(shapes, tmp_path) -> None:
    steps = 48 // 8  # 60 samples, 80% train
    reference = train(_config(shapes, "checkpoint_every=2"), tmp_path / "ref")
    assert reference.steps == steps and reference.skipped_steps == 0
    records = [json.loads(l) for l in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss" in r]
    assert {"loss_clip", "loss_mlm", "loss_simsiam", "loss_nn", "lr", "samples_per_s"} <= set(logged[-1])
    assert logged[0]["loss_nn"] == 0.0 and logged[-1]["loss_nn"] > 0  # queue fills after step 1
    assert any("val_rsum" in r for r in records)

    class Interrupt(Exception):
        pass

    def stop_at_5(step: int, record: dict) -> None:
        if step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(_config(shapes, "checkpoint_every=2"), tmp_path / "cut", hooks=TrainHooks(on_step=stop_at_5))
    assert (tmp_path / "cut" / "checkpoints" / "latest").resolve().name == "step_4"
    resumed = train(_config(shapes, "checkpoint_every=2"), tmp_path / "cut", resume="latest")
    assert resumed.steps == steps
    assert "resumed from" in (tmp_path / "cut" / "out.log").read_text()
    assert "different config" not in (tmp_path / "cut" / "out.log").read_text()
    expected = load_file(str(reference.final / "model.safetensors"))
    got = load_file(str(resumed.final / "model.safetensors"))
    for name, value in expected.items():
        assert torch.equal(value, got[name]), name
    state_ref = torch.load(tmp_path / "ref" / "checkpoints" / "latest" / "training_state.pt",
                           weights_only=True)
    state_cut = torch.load(tmp_path / "cut" / "checkpoints" / "latest" / "training_state.pt",
                           weights_only=True)
    assert torch.equal(state_ref["heads"]["queue"]["features"], state_cut["heads"]["queue"]["features"])

    out = tmp_path / "results.json"
    assert cli(["eval", "--checkpoint", str(reference.final), "--data", str(shapes),
                "--split", "test", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["model"]["hierarchy"] is True and results["n_images"] == 6
    retrieval = results["retrieval"]
    assert 0 <= retrieval["rsum"] <= 600 and retrieval["n_captions"] == 12
    assert {"shape", "colour", "mean_top1"} <= set(results["zeroshot"])
    assert results["zeroshot"]["colour"]["n_classes"] >= 2


def test_bf16_accumulation_and_checkpointing_options_run(shapes, tmp_path) -> None:
    result = train(_config(shapes, "precision=bf16", "accum_steps=2", "grad_checkpointing=true",
                           "hierarchy=false", "max_steps=2", "val_split=null", "tensorboard=true"),
                   tmp_path / "r")
    assert result.steps == 2 and result.skipped_steps == 0
    assert math.isfinite(result.last_metrics["loss"])
    assert list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))
    import hiclip

    model, _ = hiclip.load(result.final)
    assert model.config.hierarchy is False


def test_mlm_warmup_trains_the_text_tower_alone_then_everything(shapes, tmp_path) -> None:
    import hiclip

    base = ["loss.nn_weight=0", "loss.multiview=false", "loss.simsiam_weight=0", "image_views=1",
            "val_split=null", "loss.mlm_warmup_steps=3"]
    warm = train(_config(shapes, *base, "max_steps=3"), tmp_path / "warm")
    records = [json.loads(l) for l in (tmp_path / "warm" / "metrics.jsonl").read_text().splitlines()]
    assert all({k for k in r if k.startswith("loss_")} == {"loss_mlm"} for r in records if "loss" in r)
    # the same start with a negligible learning rate stands in for the initial weights
    initial = train(_config(shapes, *base, "max_steps=1", "optim.lr=1e-12"), tmp_path / "initial")
    start, _ = hiclip.load(initial.final)
    model, _ = hiclip.load(warm.final)
    for name, value in start.vision.state_dict().items():
        assert torch.equal(value, model.vision.state_dict()[name]), name
    assert torch.equal(start.logit_scale, model.logit_scale)
    assert (start.text.token_embedding.weight - model.text.token_embedding.weight).abs().max() > 1e-4
    after = train(_config(shapes, *base, "max_steps=5"), tmp_path / "after")
    records = [json.loads(l) for l in (tmp_path / "after" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_clip", "loss_mlm"} <= set(records[-1])  # steps 4-5 run every term


def test_per_tower_clipping_clips_each_tower_to_the_limit() -> None:
    from hiclip.factory import create_model
    from hiclip.train.config import LossConfig
    from hiclip.train.loop import _clip
    from hiclip.train.objectives import Objective

    objective = Objective(create_model("hiclip-tiny", **json.loads(TINY), vocab_size=50),
                          LossConfig())
    for name, p in objective.named_parameters():
        p.grad = torch.full_like(p, 10.0 if name.startswith("model.text.") else 1e-3)

    def norm(prefix: str) -> float:
        grads = [p.grad for n, p in objective.named_parameters() if n.startswith(prefix)]
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))

    vision_before = norm("model.vision.")
    total = _clip(objective, 1.0, per_tower=True)
    assert total > 100
    assert norm("model.text.") == pytest.approx(1.0, rel=1e-4)
    assert norm("model.vision.") == pytest.approx(vision_before)  # below the limit: untouched
    for name, p in objective.named_parameters():
        p.grad = torch.full_like(p, 10.0 if name.startswith("model.text.") else 1e-3)
    _clip(objective, 1.0)  # global: the text tower's gradient shrinks the vision tower's too
    assert norm("model.vision.") < vision_before / 50


@pytest.mark.parametrize("extra, message", [
    (["model=hiclip-huge"], "unknown model 'hiclip-huge'"),
    (["data=/no/such/folder"], "training data /no/such/folder not found"),
    (["batch_size=64"], "batch_size 64 is larger than the training set"),
])
def test_bad_configuration_fails_at_start(shapes, tmp_path, extra, message) -> None:
    with pytest.raises(HiCLIPError, match=message):
        train(_config(shapes, *extra), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_world_size_must_divide_the_batch(shapes, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(HiCLIPError, match="batch_size 8 is not divisible by world size 3"):
        train(_config(shapes), tmp_path / "run")


def test_cli_reports_config_errors_in_one_line(shapes, tmp_path, capsys) -> None:
    code = cli(["train", "--config", "shapes-tiny", "--data", str(shapes), "--out",
                str(tmp_path / "x"), "--set", "optim.lr_typo=1"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key 'optim.lr_typo'") and "\n" not in err
    assert cli(["train", "--config", "shapes-tiny", "--data", str(tmp_path / "none"),
                "--out", str(tmp_path / "y")]) == 2
    assert "not found" in capsys.readouterr().err
