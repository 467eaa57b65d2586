"""Checkpoint folders: exact round trip, tied weights, clear errors on mismatch."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import hiclip
from hiclip.checkpoint import read_config, read_extra
from hiclip.errors import HiCLIPError

from model_sizes import TWO_LAYER  # tests/model_sizes.py

torch.set_num_threads(1)

CAPTIONS = ["a red square", "two green triangles left of a circle", "a star"]


@pytest.fixture(scope="module")
def tokenizer() -> hiclip.HiCLIPTokenizer:
    return hiclip.HiCLIPTokenizer.train_word_level(CAPTIONS)


def make(tokenizer, hierarchy: bool = True, **overrides) -> hiclip.HiCLIP:
    torch.manual_seed(0)
    model = hiclip.create_model("hiclip-tiny", hierarchy=hierarchy, vocab_size=tokenizer.vocab_size,
                                **{**TWO_LAYER, **overrides})
    with torch.no_grad():  # move away from the initial values so the round trip is meaningful
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def outputs(model: hiclip.HiCLIP, tokenizer: hiclip.HiCLIPTokenizer) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    images = torch.randn(3, 3, 16, 16) if model.vision is not None else None
    batch = tokenizer(CAPTIONS)
    with torch.no_grad():
        out = model(images, batch.input_ids, batch.attention_mask)
        out["mlm"] = model.text.mlm_logits(model.text.forward_tokens(batch.input_ids, batch.attention_mask))
        if images is not None:
            out["h"] = model.encode_image(images, return_affinities=True).h_links
    return out


@pytest.mark.parametrize("hierarchy,vision", [(True, True), (False, True), (True, False)])
def test_round_trip_is_exact(tmp_path, tokenizer, hierarchy: bool, vision: bool) -> None:
    extra = {} if vision else {"vision": None}
    model = make(tokenizer, hierarchy, **extra)
    folder = hiclip.save(model, tokenizer, tmp_path / "ckpt", extra={"step": 7, "data": "shapes"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    loaded, tok = hiclip.load(folder)
    assert loaded.config == model.config and not loaded.training
    assert tok.vocab_size == tokenizer.vocab_size and tok.context_length == 16
    expected, got = outputs(model, tokenizer), outputs(loaded, tok)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert read_extra(folder) == {"step": 7, "data": "shapes"}
    assert read_config(folder / "config.json").hierarchy is hierarchy
    assert json.loads((folder / "config.json").read_text())["model"]["hierarchy"] is hierarchy


def test_tied_weights_stored_once(tmp_path, tokenizer) -> None:
    model = make(tokenizer)
    tied = torch.nn.Linear(32, tokenizer.vocab_size, bias=False)
    tied.weight = model.text.token_embedding.weight  # a tied decoder, as a fine-tuning head would add
    model.text.tied_decoder = tied
    folder = hiclip.save(model, tokenizer, tmp_path / "tied")
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
        aliases = json.loads(handle.metadata()["aliases"])
    assert "text.tied_decoder.weight" not in keys and aliases == {"text.tied_decoder.weight": "text.token_embedding.weight"}
    # the folder's config has no tied decoder, so loading reports the alias as unexpected
    with pytest.raises(HiCLIPError, match=r"unexpected keys \['text.tied_decoder.weight'\]"):
        hiclip.load(folder)


def test_mismatched_config_names_file_and_keys(tmp_path, tokenizer) -> None:
    folder = hiclip.save(make(tokenizer), tokenizer, tmp_path / "ckpt")
    config_path = folder / "config.json"
    data = json.loads(config_path.read_text())
    data["model"]["text"]["layers"] = 3
    config_path.write_text(json.dumps(data))
    with pytest.raises(HiCLIPError, match=r"model.safetensors: does not match config.json: missing keys \['text.blocks.2"):
        hiclip.load(folder)
    data["model"]["text"]["layers"] = 2
    data["model"]["embed_dim"] = 24
    config_path.write_text(json.dumps(data))
    with pytest.raises(HiCLIPError, match=r"shape mismatch .*text.text_projection.weight \(16, 32\) vs \(24, 32\)"):
        hiclip.load(folder)
    data["model"]["embed_dim"] = 16
    data["model"]["hierarchy"] = False
    config_path.write_text(json.dumps(data))
    with pytest.raises(HiCLIPError, match=r"unexpected keys \['text.affinities.0"):
        hiclip.load(folder)
    data["model"]["text"]["widht"] = 3
    config_path.write_text(json.dumps(data))
    with pytest.raises(HiCLIPError, match="config.json: model: text: unknown key"):
        hiclip.load(folder)


def test_missing_and_corrupt_files(tmp_path, tokenizer) -> None:
    with pytest.raises(HiCLIPError, match="checkpoint folder not found"):
        hiclip.load(tmp_path / "nowhere")
    folder = hiclip.save(make(tokenizer), tokenizer, tmp_path / "ckpt")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(HiCLIPError, match="missing tokenizer.json"):
        hiclip.load(folder)
    folder = hiclip.save(make(tokenizer), tokenizer, tmp_path / "ckpt2")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(HiCLIPError, match="model.safetensors: unreadable"):
        hiclip.load(folder)
    (folder / "config.json").write_text("{\n  \"format\": hiclip\n}")
    with pytest.raises(HiCLIPError, match=r"config.json:2: invalid JSON"):
        hiclip.load(folder)


def test_save_checks_vocabulary_and_extra(tmp_path, tokenizer) -> None:
    other = hiclip.HiCLIPTokenizer.train_word_level(["entirely different words here"])
    with pytest.raises(HiCLIPError, match="vocab_size"):
        hiclip.save(make(tokenizer), other, tmp_path / "x")
    with pytest.raises(HiCLIPError, match="JSON"):
        hiclip.save(make(tokenizer), tokenizer, tmp_path / "y", extra={"bad": object()})
