"""Towers and model: shapes, affinities, padding, the vanilla twin and CLIP parity, factory."""
from __future__ import annotations

import math

import pytest
import torch

import hiclip
from hiclip.config import HiCLIPConfig
from hiclip.errors import HiCLIPError
from hiclip.factory import get_model_config, transformers_clip_config
from hiclip.model import HiCLIP, TextOutput, VisionOutput, word_level_links

torch.set_num_threads(1)

CAPTIONS = [
    "a red square",
    "two green triangles to the left of a blue circle",
    "A big yellow star",
]
SMALL = {
    "embed_dim": 16,
    "text": {"width": 32, "layers": 3, "heads": 2, "context_length": 16},
    "vision": {"image_size": 16, "patch_size": 4, "width": 32, "layers": 3, "heads": 2},
}
CLIP_VIT_B_32_PARAMS = 151_277_313  # transformers.CLIPModel, openai/clip-vit-base-patch32 layout


@pytest.fixture(scope="module")
def tokenizer() -> hiclip.HiCLIPTokenizer:
    return hiclip.HiCLIPTokenizer.train_word_level(CAPTIONS, context_length=16)


def small_model(tokenizer: hiclip.HiCLIPTokenizer, hierarchy: bool = True, seed: int = 0, **overrides) -> HiCLIP:
    torch.manual_seed(seed)
    settings = {**SMALL, **overrides}
    return hiclip.create_model("hiclip-tiny", hierarchy=hierarchy, vocab_size=tokenizer.vocab_size, **settings).eval()


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("hierarchy", [True, False])
def test_forward_outputs(tokenizer, hierarchy: bool) -> None:
    model = small_model(tokenizer, hierarchy)
    batch = tokenizer(CAPTIONS)
    images = torch.randn(3, 3, 16, 16)
    out = model(images, batch.input_ids, batch.attention_mask)
    assert out["image_features"].shape == (3, 16) and out["text_features"].shape == (3, 16)
    torch.testing.assert_close(out["image_features"].norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out["text_features"].norm(dim=-1), torch.ones(3))
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model(images, batch.input_ids, batch.attention_mask)["logit_scale"].item() == 100.0
    raw = model.encode_image(images)
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), model.encode_image(images, normalize=True))


@pytest.mark.parametrize("hierarchy", [True, False])
def test_affinities_shapes_ranges_and_monotone(tokenizer, hierarchy: bool) -> None:
    model = small_model(tokenizer, hierarchy)
    batch = tokenizer(CAPTIONS)
    with torch.no_grad():
        aff = model.encode_image(torch.randn(2, 3, 16, 16), return_affinities=True)
        text_aff = model.encode_text(batch.input_ids, batch.attention_mask, word_ids=batch.word_ids,
                                     return_affinities=True)
    assert isinstance(aff, VisionOutput) and isinstance(text_aff, TextOutput) and aff.attention is None
    assert aff.h_links.shape == (2, 3, 4, 3) and aff.v_links.shape == (2, 3, 3, 4)
    for links in (aff.h_links, aff.v_links):
        assert torch.all((links > 0) & (links <= 1))
        assert torch.all(links[:, 1:] >= links[:, :-1])
    links = text_aff.links
    assert links.shape == (3, 3, int(batch.n_words.max()) - 1)
    assert torch.equal(text_aff.n_words, batch.n_words)
    assert torch.all(links[:, 1:] >= links[:, :-1])
    for b, n in enumerate(batch.n_words.tolist()):
        assert torch.all((links[b, :, : n - 1] > 0) & (links[b, :, : n - 1] <= 1))
        assert torch.all(links[b, :, n - 1:] == 0)


@pytest.mark.parametrize("hierarchy", [True, False])
def test_padding_does_not_change_a_sentence(tokenizer, hierarchy: bool) -> None:
    model = small_model(tokenizer, hierarchy)
    alone = tokenizer(CAPTIONS[:1])
    padded = tokenizer(CAPTIONS)
    assert padded.input_ids.shape[1] > alone.input_ids.shape[1]
    with torch.no_grad():
        a1 = model.encode_text(alone.input_ids, alone.attention_mask, return_affinities=True)
        a2 = model.encode_text(padded.input_ids, padded.attention_mask, return_affinities=True)
        f1, f2 = a1.features, a2.features
    torch.testing.assert_close(f1[0], f2[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a1.links[0], a2.links[0, :, : a1.links.shape[-1]], rtol=1e-5, atol=1e-6)


def test_attention_never_reaches_padding_and_specials_are_unconstrained(tokenizer) -> None:
    model = small_model(tokenizer, hierarchy=True)
    batch = tokenizer(CAPTIONS)
    with torch.no_grad():
        output = model.encode_text(batch.input_ids, batch.attention_mask, return_attention=True)
        attn = output.attention
    assert output.links is None and output.features.shape[0] == attn.shape[0]
    valid = batch.attention_mask
    keys_pad = ~valid[:, None, None, :].expand_as(attn)
    assert torch.all(attn[keys_pad] == 0)
    masks = model.text.token_masks(batch.input_ids, batch.attention_mask)
    # SOT and EOT rows are plain softmax rows (C = 1 there), so they sum to one
    rows = attn.sum(-1)
    special_rows = masks["special"][:, None, :].expand_as(rows)
    torch.testing.assert_close(rows[special_rows], torch.ones(int(special_rows.sum())))


def test_word_level_links_use_boundary_pieces() -> None:
    token_links = torch.arange(1, 7, dtype=torch.float32).view(1, 1, 6) / 10  # gaps of 7 tokens
    word_ids = torch.tensor([[-1, 0, 1, 1, 2, -1, -1]])  # SOT w0 w1 w1' w2 EOT PAD
    out = word_level_links(token_links, word_ids)
    torch.testing.assert_close(out["links"], torch.tensor([[[0.2, 0.4]]]))
    assert out["n_words"].tolist() == [3]


def test_subword_gaps_are_never_break_points() -> None:
    texts = ["unbelievably colourful squares", "a square", "squares everywhere"] * 3
    tok = hiclip.HiCLIPTokenizer.train_bpe(texts, vocab_size=40, context_length=16)
    batch = tok(texts[:3], overflow="truncate")
    assert (batch.word_ids[0][1:-1] == 0).sum() > 1  # the first word is split into pieces
    model = small_model(tok, hierarchy=True)
    masks = model.text.token_masks(batch.input_ids, batch.attention_mask, batch.word_ids)
    same = (batch.word_ids[:, :-1] == batch.word_ids[:, 1:]) & (batch.word_ids[:, :-1] >= 0)
    assert torch.equal(masks["intra_word"], same)
    assert not torch.any(masks["boundary"] & masks["intra_word"])
    with torch.no_grad():
        aff = model.encode_text(batch.input_ids, batch.attention_mask, word_ids=batch.word_ids,
                                return_affinities=True)
        plain = model.encode_text(batch.input_ids, batch.attention_mask)
        grouped = model.encode_text(batch.input_ids, batch.attention_mask, word_ids=batch.word_ids)
    assert aff.links.shape == (3, 3, int(batch.n_words.max()) - 1)
    assert torch.equal(aff.n_words, batch.n_words)
    assert not torch.allclose(plain, grouped)  # word ids change the prior for subword tokens


def test_vanilla_twin_shares_weights_and_has_no_affinity_parameters(tokenizer) -> None:
    hier = small_model(tokenizer, hierarchy=True, seed=3)
    vanilla = small_model(tokenizer, hierarchy=False, seed=3)
    assert vanilla.text.affinities is None and vanilla.vision.affinities is None
    hier_state, vanilla_state = hier.state_dict(), vanilla.state_dict()
    extra = {k for k in hier_state if k not in vanilla_state}
    assert all(".affinities." in k for k in extra) and set(vanilla_state) <= set(hier_state)
    for key, value in vanilla_state.items():
        assert torch.equal(value, hier_state[key]), key
    # per layer and tower: LayerNorm (2d) + q projection with bias (d^2 + d) + k projection (d^2)
    d, layers = 32, 3
    assert n_params(hier) - n_params(vanilla) == 2 * layers * (2 * d + 2 * d * d + d)


def test_hierarchy_with_no_prior_layers_equals_vanilla(tokenizer) -> None:
    hier = small_model(tokenizer, hierarchy=True, seed=4,
                       text={**SMALL["text"], "prior_layers": []}, vision={**SMALL["vision"], "prior_layers": []})
    vanilla = small_model(tokenizer, hierarchy=False, seed=4)
    batch = tokenizer(CAPTIONS)
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        a = hier(images, batch.input_ids, batch.attention_mask)
        b = vanilla(images, batch.input_ids, batch.attention_mask)
    torch.testing.assert_close(a["image_features"], b["image_features"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a["text_features"], b["text_features"], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        c = small_model(tokenizer, hierarchy=True, seed=4)(images, batch.input_ids, batch.attention_mask)
    assert not torch.allclose(c["image_features"], b["image_features"])


def test_vanilla_matches_transformers_clip(tokenizer) -> None:
    from transformers import CLIPModel

    model = small_model(tokenizer, hierarchy=False)
    clip = CLIPModel(transformers_clip_config(model.config)).eval()
    mlm = n_params(model.text.mlm_transform) + model.text.mlm_bias.numel()
    assert n_params(model) - mlm == n_params(clip)
    # copy our vision weights into CLIP's vision tower: the image features must agree
    vm, ours = clip.vision_model, model.vision
    with torch.no_grad():
        vm.embeddings.class_embedding.copy_(ours.class_embedding)
        vm.embeddings.patch_embedding.weight.copy_(ours.conv1.weight)
        vm.embeddings.position_embedding.weight.copy_(ours.positional_embedding)
        vm.pre_layrnorm.load_state_dict(ours.ln_pre.state_dict())
        vm.post_layernorm.load_state_dict(ours.ln_post.state_dict())
        clip.visual_projection.weight.copy_(ours.proj.weight)
        for layer, block in zip(vm.encoder.layers, ours.blocks):
            qw, kw, vw = block.attn.in_proj.weight.chunk(3)
            qb, kb, vb = block.attn.in_proj.bias.chunk(3)
            for proj, w, b in ((layer.self_attn.q_proj, qw, qb), (layer.self_attn.k_proj, kw, kb),
                               (layer.self_attn.v_proj, vw, vb)):
                proj.weight.copy_(w)
                proj.bias.copy_(b)
            layer.self_attn.out_proj.load_state_dict(block.attn.out_proj.state_dict())
            layer.layer_norm1.load_state_dict(block.ln_1.state_dict())
            layer.layer_norm2.load_state_dict(block.ln_2.state_dict())
            layer.mlp.fc1.load_state_dict(block.mlp.fc1.state_dict())
            layer.mlp.fc2.load_state_dict(block.mlp.fc2.state_dict())
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = clip.visual_projection(vm(pixel_values=images).pooler_output)
        torch.testing.assert_close(model.encode_image(images), expected, rtol=1e-4, atol=1e-5)


def test_vit_b_32_has_clip_size() -> None:
    config = get_model_config("hiclip-vit-b-32", hierarchy=False)
    with torch.device("meta"):
        model = HiCLIP(config)
    mlm = n_params(model.text.mlm_transform) + model.text.mlm_bias.numel()
    assert n_params(model) - mlm == CLIP_VIT_B_32_PARAMS
    assert config.vision.grid == 7 and config.text.context_length == 77 and config.embed_dim == 512


def test_text_only_model(tokenizer) -> None:
    model = small_model(tokenizer, vision=None)
    assert model.vision is None and model.config.vision is None
    batch = tokenizer(CAPTIONS)
    out = model(None, batch.input_ids, batch.attention_mask)
    assert set(out) == {"text_features", "logit_scale"}
    with pytest.raises(HiCLIPError, match="text-only"):
        model.encode_image(torch.randn(1, 3, 16, 16))


def test_mlm_logits_tied_to_token_embedding(tokenizer) -> None:
    model = small_model(tokenizer)
    batch = tokenizer(CAPTIONS)
    states = model.text.forward_tokens(batch.input_ids, batch.attention_mask)
    assert states.shape == (3, batch.input_ids.shape[1], 32)
    logits = model.text.mlm_logits(states)
    assert logits.shape == (3, batch.input_ids.shape[1], tokenizer.vocab_size)
    expected = model.text.mlm_transform(states) @ model.text.token_embedding.weight.T + model.text.mlm_bias
    torch.testing.assert_close(logits, expected)
    logits[0, 1].sum().backward()
    assert model.text.token_embedding.weight.grad.abs().sum() > 0


def test_grad_checkpointing_gives_same_gradients(tokenizer) -> None:
    batch = tokenizer(CAPTIONS)
    images = torch.randn(3, 3, 16, 16)
    grads = []
    for enable in (False, True):
        model = small_model(tokenizer, seed=5).train()
        model.set_grad_checkpointing(enable)
        out = model(images, batch.input_ids, batch.attention_mask)
        (out["image_features"] @ out["text_features"].T).trace().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any(".affinities." in k for k in grads[0])
    for key in grads[0]:
        torch.testing.assert_close(grads[0][key], grads[1][key], rtol=1e-4, atol=1e-6)


def test_input_errors(tokenizer) -> None:
    model = small_model(tokenizer)
    with pytest.raises(HiCLIPError, match="images must be"):
        model.encode_image(torch.randn(1, 3, 32, 32))
    long = tokenizer(["a " * 40], context_length=30, overflow="truncate")
    with pytest.raises(HiCLIPError, match="context length"):
        model.encode_text(long.input_ids, long.attention_mask)
    with pytest.raises(HiCLIPError, match="vocabulary"):
        model.encode_text(torch.tensor([[1, 10_000, 2]]), torch.ones(1, 3, dtype=torch.bool))


def test_factory_names_and_errors() -> None:
    assert {"hiclip-tiny", "hiclip-small", "hiclip-vit-b-32"} <= set(hiclip.list_models())
    with pytest.raises(HiCLIPError, match="available: .*hiclip-tiny"):
        hiclip.create_model("hiclip-huge")
    with pytest.raises(HiCLIPError, match="unknown override"):
        get_model_config("hiclip-tiny", widht=3)
    with pytest.raises(HiCLIPError, match="divisible"):
        get_model_config("hiclip-tiny", text={"heads": 3})
    for name in hiclip.list_models():
        config = get_model_config(name, hierarchy=False, vocab_size=123)
        assert config.name == name and config.hierarchy is False and config.text.vocab_size == 123
        assert get_model_config(name).hierarchy is True


def test_config_json_round_trip(tmp_path) -> None:
    config = get_model_config("hiclip-small", hierarchy=False, vision=None, affinity={"combine": "max"})
    path = tmp_path / "c.json"
    config.to_json(path)
    again = HiCLIPConfig.from_json(path)
    assert again == config and again.vision is None and again.affinity.combine == "max"
    assert '"hierarchy": false' in path.read_text()
    data = config.to_dict()
    data["text"]["widht"] = 3
    with pytest.raises(HiCLIPError, match="unknown key"):
        HiCLIPConfig.from_dict(data)
    path.write_text("{\n  \"name\": \n}")
    with pytest.raises(HiCLIPError, match=r"c.json:\d+: invalid JSON"):
        HiCLIPConfig.from_json(path)
    with pytest.raises(HiCLIPError, match="combine"):
        get_model_config("hiclip-tiny", affinity={"combine": "sum"})
    assert math.isclose(get_model_config("hiclip-tiny").init_logit_scale, math.log(1 / 0.07))


def test_sinusoidal_positions_take_any_length(tokenizer) -> None:
    model = small_model(tokenizer, text={**SMALL["text"], "positions": "sinusoidal"})
    assert not any("positional" in name for name, _ in model.text.named_parameters())
    assert model.config.text.max_tokens is None
    from tokenizers import Tokenizer

    unlimited = hiclip.HiCLIPTokenizer(Tokenizer.from_str(tokenizer.to_json()), context_length=None)
    long = unlimited(["a red square " * 70])  # 212 tokens; the model's context_length is 16
    out = model.encode_text(long.input_ids, long.attention_mask, return_affinities=True)
    assert out.links.shape == (1, model.config.text.layers, 209) and torch.isfinite(out.links).all()
    # the encoding is fixed, so a word's state depends on where it is, not on the batch's length
    short = unlimited(["a red square"])
    states = model.text.forward_tokens(short.input_ids, short.attention_mask)
    padded = torch.cat([short.input_ids, torch.zeros(1, 5, dtype=torch.long)], 1)
    mask = torch.cat([short.attention_mask, torch.zeros(1, 5, dtype=torch.bool)], 1)
    assert torch.allclose(states, model.text.forward_tokens(padded, mask)[:, :5], atol=1e-5)
    table = model.text.position_encoding(7)
    assert table.shape == (7, 32) and torch.allclose(table[0, 1::2], torch.full((16,), 32 ** -0.5))
    none = small_model(tokenizer, text={**SMALL["text"], "positions": "none"})
    assert none.text.position_encoding(7) == 0.0


def test_learned_positions_stay_the_default_and_keep_their_limit(tokenizer) -> None:
    from hiclip.config import HiCLIPConfig, TextConfig

    old = small_model(tokenizer).config.to_dict()
    del old["text"]["positions"]  # a config written before the key existed
    config = HiCLIPConfig.from_dict(old)
    assert config.text.positions == "learned" and config.text.max_tokens == 16
    model = small_model(tokenizer)
    assert model.text.positional_embedding.shape == (16, 32)
    batch = tokenizer(["a red square"])
    expected = model.text.token_embedding(batch.input_ids) + model.text.positional_embedding[: batch.input_ids.shape[1]]
    assert torch.equal(model.text.token_embedding(batch.input_ids) + model.text.position_encoding(batch.input_ids.shape[1]),
                       expected)
    with pytest.raises(HiCLIPError, match="text.positions: 'rotary' is not one of"):
        TextConfig(positions="rotary")
