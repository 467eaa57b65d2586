"""The prior gate (``affinity.prior_gate``): closed it is exactly the model without the prior,
open it is method.md's attention, in between the mix; its gradient, its config and old configs."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import hiclip
from hiclip.attention import HierarchicalAttention, gated_prior, prior_gate_value, tree_prior
from hiclip.config import AffinityConfig, HiCLIPConfig, TextConfig, VisionConfig
from hiclip.interop.hf_clip import add_fresh_hierarchy
from hiclip.model import HiCLIP

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


def _vanilla(causal: bool) -> HiCLIP:
    torch.manual_seed(0)
    config = HiCLIPConfig(hierarchy=False, embed_dim=32,
                          text=TextConfig(vocab_size=50, context_length=12, width=32, layers=3, heads=4, causal=causal),
                          vision=VisionConfig(image_size=32, patch_size=8, width=32, layers=3, heads=4))
    return HiCLIP(config).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(5, 50, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False  # a padded caption
    return torch.randn(3, 3, 32, 32), ids, mask


def _features(model: HiCLIP) -> tuple[torch.Tensor, torch.Tensor]:
    images, ids, mask = _inputs()
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(ids, mask)


@pytest.mark.parametrize("causal", [True, False])
def test_closed_gates_are_exactly_the_model_without_the_prior(causal: bool) -> None:
    vanilla = _vanilla(causal)
    gated = add_fresh_hierarchy(vanilla).eval()
    ungated = add_fresh_hierarchy(vanilla, prior_gate=False).eval()
    assert gated.config.affinity.prior_gate and not ungated.config.affinity.prior_gate
    assert gated.text.prior_gates() == [0.0, 0.0, 0.0] == gated.vision.prior_gates()
    for ours, theirs, full in zip(_features(gated), _features(vanilla), _features(ungated)):
        assert torch.equal(ours, theirs)  # bit for bit, image and text
        assert not torch.allclose(full, theirs, atol=1e-3)  # the fresh prior without gates does change them
    # the links (induction) are not gated: the same as without gates
    images, ids, mask = _inputs()
    with torch.no_grad():
        links = gated.encode_image(images, return_affinities=True), ungated.encode_image(images, return_affinities=True)
        words = (gated.encode_text(ids, mask, return_affinities=True),
                 ungated.encode_text(ids, mask, return_affinities=True))
    assert torch.equal(links[0].h_links, links[1].h_links) and torch.equal(links[0].v_links, links[1].v_links)
    assert torch.equal(words[0].links, words[1].links)


def test_open_gates_are_the_prior_and_half_open_the_mix() -> None:
    vanilla = _vanilla(causal=True)
    gated, ungated = add_fresh_hierarchy(vanilla).eval(), add_fresh_hierarchy(vanilla, prior_gate=False).eval()
    with torch.no_grad():
        for tower in (gated.text, gated.vision):
            tower.prior_gate.fill_(1.0)
    for ours, theirs in zip(_features(gated), _features(ungated)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # one layer against the formula (1 - a) P + a (P * C), written out
    torch.manual_seed(3)
    attn = HierarchicalAttention(16, 2).eval()
    x, prior = torch.randn(2, 6, 16), tree_prior(torch.rand(2, 5))
    alpha = torch.tensor(0.3)
    with torch.no_grad():
        q, k, v = attn.in_proj(x).view(2, 6, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
        p = (q @ k.transpose(-1, -2) / 8**0.5).softmax(-1)
        mixed = (1 - alpha) * p + alpha * p * prior[:, None]
        expected = attn.out_proj((mixed @ v).transpose(1, 2).reshape(2, 6, 16))
        out, weights = attn(x, prior=prior, gate=alpha, need_weights=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(weights, mixed.mean(1), rtol=0, atol=1e-7)
    torch.testing.assert_close(gated_prior(prior, alpha), 0.7 + 0.3 * prior)


def test_closed_gate_gradient_is_not_zero() -> None:
    model = add_fresh_hierarchy(_vanilla(causal=True)).train()
    images, ids, mask = _inputs()
    out = model(images, ids, mask)
    (out["image_features"] @ out["text_features"].T).diagonal().sum().backward()
    for tower in (model.text, model.vision):
        grad = tower.prior_gate.grad
        assert grad is not None and grad[:-1].abs().min() > 0  # every layer but the last
        # the last layer's prior is 1 on the pooled row (EOT / CLS), so the features cannot see its gate
        assert grad[-1] == 0
        # while the gates are closed the links do not reach the features (they will once a gate opens)
        assert tower.affinities[0].q.weight.grad.abs().sum() == 0


def test_gate_is_clamped_with_a_straight_through_gradient() -> None:
    raw = torch.tensor([-0.5, 0.0, 0.4, 1.5], requires_grad=True)
    value = prior_gate_value(raw)
    assert value.tolist() == [0.0, 0.0, pytest.approx(0.4), 1.0]
    (value * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert raw.grad.tolist() == [1.0, 2.0, 3.0, 4.0]  # a gate pushed below 0 can reopen


def test_gate_with_renormalized_rows_starts_close() -> None:
    vanilla = _vanilla(causal=False)
    renorm = replace(vanilla.config, affinity=AffinityConfig(renormalize=True))
    model = HiCLIP(renorm)
    model.load_state_dict(vanilla.state_dict())
    gated = add_fresh_hierarchy(model.eval()).eval()
    for ours, theirs in zip(_features(gated), _features(vanilla)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)  # P / sum(P) - P: rounding only


def test_config_round_trip_and_old_configs(tmp_path) -> None:
    config = replace(HiCLIPConfig(), affinity=AffinityConfig(prior_gate=True))
    assert HiCLIPConfig.from_dict(json.loads(config.to_json())) == config
    config.to_json(tmp_path / "c.json")
    assert HiCLIPConfig.from_json(tmp_path / "c.json").affinity.prior_gate
    old = HiCLIPConfig().to_dict()
    del old["affinity"]["prior_gate"]  # a config written before the gate existed
    assert HiCLIPConfig.from_dict(old) == HiCLIPConfig() and not HiCLIPConfig.from_dict(old).affinity.prior_gate
    # off by default: no parameter, the same state dict as before; without the hierarchy the option does nothing
    torch.manual_seed(0)
    default = HiCLIP(HiCLIPConfig()).state_dict()
    assert not any("prior_gate" in k for k in default)
    torch.manual_seed(0)
    vanilla_gated = HiCLIP(replace(HiCLIPConfig(hierarchy=False), affinity=AffinityConfig(prior_gate=True)))
    assert vanilla_gated.text.prior_gate is None and vanilla_gated.vision.prior_gate is None


@pytest.mark.parametrize("name", ["hiclip-tiny-shapes", "clip-tiny-shapes", "tree-transformer-coco-captions"])
def test_shipped_checkpoints_have_no_gate(name: str) -> None:
    saved = json.loads((SHIPPED / name / "config.json").read_text())["model"]
    assert "prior_gate" not in saved["affinity"]
    model, _ = hiclip.load(SHIPPED / name)
    assert not model.config.affinity.prior_gate
    assert not any("prior_gate" in k for k in model.state_dict())


def test_gates_survive_save_and_load(tmp_path) -> None:
    from hiclip.checkpoint import save
    from hiclip.tokenizer import HiCLIPTokenizer

    tokenizer = HiCLIPTokenizer.train_word_level(["a red square", "two blue circles"])
    config = HiCLIPConfig(embed_dim=32, text=TextConfig(vocab_size=tokenizer.vocab_size, width=32, layers=2, heads=2),
                          vision=VisionConfig(image_size=32, width=32, layers=2, heads=2),
                          affinity=AffinityConfig(prior_gate=True))
    model = HiCLIP(config)
    with torch.no_grad():
        model.text.prior_gate.copy_(torch.tensor([0.25, -0.1]))
    save(model, tokenizer, tmp_path / "ckpt")
    loaded, _ = hiclip.load(tmp_path / "ckpt")
    assert loaded.config.affinity.prior_gate
    assert loaded.text.prior_gates() == [0.25, 0.0] and loaded.vision.prior_gates() == [0.0, 0.0]


def test_gate_learning_rate_scale() -> None:
    from hiclip.train.config import OptimConfig
    from hiclip.train.optim import WarmupCosine, build_optimizer, parameter_groups

    model = add_fresh_hierarchy(_vanilla(causal=False))
    named = list(model.named_parameters())
    assert len(parameter_groups(named, 0.1)) == 2  # by default the gates are one more 1-D parameter, not decayed
    assert "text.prior_gate" in parameter_groups(named, 0.1)[1]["names"]
    optimizer = build_optimizer(named, OptimConfig(lr=1e-3, warmup_steps=0, prior_gate_lr_scale=10.0))
    gates = optimizer.param_groups[2]
    assert gates["names"] == ["text.prior_gate", "vision.prior_gate"] and gates["weight_decay"] == 0.0
    WarmupCosine(optimizer, 10, 0, 1e-3)
    assert gates["lr"] == pytest.approx(1e-2) and optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize("causal", [True, False])
def test_half_open_gates_give_the_same_model_on_the_fused_path(causal: bool, monkeypatch) -> None:
    """A gated prior layer leaves the fused prior attention for the explicit mix, with the fused
    links and priors: the same features and gradients as the reference path."""
    model = add_fresh_hierarchy(_vanilla(causal)).train()
    with torch.no_grad():
        for tower in (model.text, model.vision):
            tower.prior_gate.copy_(torch.tensor([0.3, 0.6, 0.9]))
    images, ids, mask = _inputs()
    results = []
    for choice in ("reference", "fused"):
        monkeypatch.setenv("HICLIP_ATTENTION", choice)
        model.zero_grad(set_to_none=True)
        out = model(images, ids, mask)
        (out["image_features"] @ out["text_features"].T).diagonal().sum().backward()
        results.append((out["image_features"].detach(), out["text_features"].detach(),
                        model.text.prior_gate.grad.clone(), model.vision.prior_gate.grad.clone()))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
