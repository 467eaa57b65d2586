"""Masked image modelling (SimMIM, method.md 4): masking, pixel targets, the vision tower's
masked forward, the loss, and that the objective is exactly the old one when it is off."""
from __future__ import annotations

import pytest
import torch

from hiclip.errors import HiCLIPError
from hiclip.factory import create_model
from hiclip.tokenizer import HiCLIPTokenizer
from hiclip.train.config import LossConfig, load_config
from hiclip.train.losses import MaskedImageHead, mask_patches, mim_loss, patchify
from hiclip.train.objectives import Objective, TrainBatch
from fault_helpers import train_until
from model_sizes import TWO_LAYER

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mask_patches_exact_count_and_per_sample_seed() -> None:
    seeds = torch.tensor([3, 4, 3])
    mask = mask_patches(seeds, 16, 0.6)
    assert mask.shape == (3, 16) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [10, 10, 10]  # round(0.6 * 16)
    assert torch.equal(mask[0], mask[2]) and not torch.equal(mask[0], mask[1])
    assert torch.equal(mask_patches(torch.tensor([4]), 16, 0.6)[0], mask[1])  # batch-independent
    assert mask_patches(seeds, 4, 0.99).sum(1).tolist() == [3, 3, 3]  # never every patch
    assert mask_patches(seeds, 4, 0.01).sum(1).tolist() == [1, 1, 1]  # never none


def test_patchify_follows_the_patch_embedding_order() -> None:
    images = torch.randn(2, 3, 16, 16)
    patches = patchify(images, 4)
    assert patches.shape == (2, 16, 48)
    # patch (r, c) = (1, 2) is index 1 * 4 + 2, its pixel (y, x) channel k at (y * 4 + x) * 3 + k
    assert patches[1, 6, (3 * 4 + 1) * 3 + 2] == images[1, 2, 4 + 3, 8 + 1]
    conv = torch.nn.Conv2d(3, 5, 4, 4, bias=False)
    weight = conv.weight.permute(0, 2, 3, 1).reshape(5, 48)  # (out, y, x, channel)
    expected = conv(images).flatten(2).transpose(1, 2)
    assert torch.allclose(patches @ weight.T, expected, atol=1e-5)
    normed = patchify(images, 4, normalize=True)
    assert torch.allclose(normed.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(normed.std(-1, unbiased=False), torch.ones(2, 16), atol=1e-3)


def test_mim_loss_counts_masked_patches_only() -> None:
    predicted, target = torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [5.0, -5.0], [2.0, 0.0]]])
    mask = torch.tensor([[True, False, True]])
    assert mim_loss(predicted, target, mask).item() == pytest.approx((1 + 1 + 2 + 0) / 4)
    none = mim_loss(predicted.requires_grad_(), target, torch.zeros(1, 3, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad


def _model():
    torch.manual_seed(0)
    return create_model("hiclip-tiny", **TWO_LAYER, vocab_size=40)


def test_forward_patches_masks_at_the_input_and_stops_at_the_layer() -> None:
    vision = _model().vision
    images = torch.randn(2, 3, 16, 16)
    states = vision.forward_patches(images)
    assert states.shape == (2, 16, 32)
    assert torch.equal(states, vision._run(images, False)[0][:, 1:])  # unmasked = the usual forward
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, 5] = True
    token = torch.randn(32)
    masked = vision.forward_patches(images, mask, token)
    assert torch.equal(masked[1], states[1]) and not torch.allclose(masked[0], states[0])
    first = vision.forward_patches(images, layer=0)
    assert not torch.allclose(first, states)
    assert torch.equal(vision.forward_patches(images, layer=-1), states)


def _batch(seed: int = 0) -> TrainBatch:
    tok = HiCLIPTokenizer.train_word_level(["a red square", "two blue circles", "a green cross"])
    text = tok(["a red square", "two blue circles", "a green cross", "a red cross"], context_length=16)
    generator = torch.Generator().manual_seed(seed)
    return TrainBatch(text=text, seeds=torch.arange(4), images=[torch.randn(4, 3, 16, 16, generator=generator)])


def test_off_is_the_old_objective() -> None:
    batch = _batch()
    off = Objective(_model(), LossConfig())
    explicit = Objective(_model(), LossConfig(mim_weight=0.0, mim_mask_ratio=0.3, mim_layer=0))
    assert off.mim is None and "mim" not in off.heads_state()
    assert set(off.state_dict()) == set(explicit.state_dict())
    total, terms, _ = off(batch)
    again, _, _ = explicit(batch)
    assert set(terms) == {"clip"} and torch.equal(total, again)


def test_on_adds_a_head_outside_the_model_and_the_term() -> None:
    objective = Objective(_model(), LossConfig(mim_weight=2.0))
    assert objective.mim is not None and "mim" in objective.heads_state()
    assert not any("mask_token" in name for name in objective.model.state_dict())  # exported model unchanged
    total, terms, _ = objective(_batch())
    assert set(terms) == {"clip", "mim"}
    assert total.item() == pytest.approx(terms["clip"].item() + 2.0 * terms["mim"].item(), rel=1e-5)
    total.backward()
    assert objective.mim.mask_token.grad is not None and objective.mim.mask_token.grad.abs().sum() > 0
    assert objective.model.vision.conv1.weight.grad.abs().sum() > 0


def test_mim_term_decreases_on_a_tiny_overfit() -> None:
    objective = Objective(_model(), LossConfig(clip_weight=0.0, mim_weight=1.0))
    batch = _batch()
    optimizer = torch.optim.AdamW(objective.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        total, terms, _ = objective(batch)
        total.backward()
        optimizer.step()
        losses.append(terms["mim"].item())
    assert losses[-1] < 0.6 * losses[0]


def test_config_checks() -> None:
    with pytest.raises(HiCLIPError, match="mim_mask_ratio must be in"):
        load_config("shapes-demo", ["data=x", "loss.mim_mask_ratio=1.0"])
    with pytest.raises(HiCLIPError, match="mim_weight must be >= 0"):
        load_config("shapes-demo", ["data=x", "loss.mim_weight=-1"])
    with pytest.raises(HiCLIPError, match="outside the vision tower's 2 layers"):
        Objective(_model(), LossConfig(mim_weight=1.0, mim_layer=2))
    assert load_config("shapes-demo", ["data=x", "loss.mim_weight=1.0"]).loss.mim_weight == 1.0
    assert MaskedImageHead(32, 4)(torch.zeros(2, 5, 32)).shape == (2, 5, 48)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from hiclip.data.shapes import ShapesConfig, generate_dataset

    out = tmp_path_factory.mktemp("shapes") / "data"
    generate_dataset(out, ShapesConfig(n=60, seed=1, image_size=32), workers=1)
    return out


def test_training_with_mim_logs_the_term_and_resumes_exactly(shapes, tmp_path) -> None:
    import json

    from safetensors.torch import load_file

    from hiclip.train.loop import train
    from model_sizes import SHAPES_32

    def config():
        return load_config("shapes-tiny", [
            f"data={shapes}", f"model_overrides={json.dumps(SHAPES_32)}", "batch_size=8", "epochs=1",
            "log_every=1", "progress=false", "optim.warmup_steps=2", "val_split=null",
            "checkpoint_every=2", "loss.mim_weight=0.5", "loss.mim_layer=0"])

    reference = train(config(), tmp_path / "ref")
    logged = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_mim"] > 0 for r in logged if "loss" in r)

    train_until(config(), tmp_path / "cut", 3)
    resumed = train(config(), tmp_path / "cut", resume="latest")
    expected = load_file(str(reference.final / "model.safetensors"))
    got = load_file(str(resumed.final / "model.safetensors"))
    assert set(expected) == set(got) and not any("mask_token" in name for name in got)
    for name, value in expected.items():
        assert torch.equal(value, got[name]), name
    heads = [torch.load(run / "checkpoints" / "latest" / "training_state.pt", weights_only=True)["heads"]["mim"]
             for run in (tmp_path / "ref", tmp_path / "cut")]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
