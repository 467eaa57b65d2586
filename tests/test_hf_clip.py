"""import-clip / export-hf against transformers' own CLIPModel and CLIPTokenizer, built locally.

Equivalence to 1e-5 (text and image features, logits), the exact round trips, the tokenizer's
word ids, the fresh hierarchy, and the one-line errors for bad folders.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import hiclip
from clip_folders import TEXTS, make_clip_folder
from hiclip.cli import main
from hiclip.errors import HiCLIPError
from hiclip.interop.hf_clip import add_fresh_hierarchy, export_hf, import_clip, import_clip_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

LONG = " ".join(["a red square"] * 12)  # 36 words: truncated at the context length (16)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_clip_folder(tmp_path_factory.mktemp("hf") / "clip")


@pytest.fixture(scope="module")
def reference(folder):
    from transformers import AutoTokenizer, CLIPModel

    return CLIPModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _features(output) -> torch.Tensor:
    return getattr(output, "pooler_output", output)  # a dataclass in transformers 5, a tensor before


def _hf_ids(tok, texts: list[str]) -> dict[str, torch.Tensor]:
    return tok(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")


def test_tokenizer_matches_clip_tokenizer(folder, reference) -> None:
    imported = import_clip(folder)
    tok = imported.tokenizer
    assert tok.kind == "clip" and tok.vocab_size == len(reference[1])
    assert (tok.sot_token_id, tok.eot_token_id) == (reference[1].bos_token_id, reference[1].eos_token_id)
    assert tok.pad_token_id == tok.eot_token_id == tok.unk_token_id and tok.mask_token_id is None
    texts = [*TEXTS, LONG]
    ours, theirs = tok(texts, overflow="truncate"), _hf_ids(reference[1], texts)  # as CLIPTokenizer(truncation=True)
    assert torch.equal(ours.input_ids, theirs["input_ids"])
    assert torch.equal(ours.attention_mask, theirs["attention_mask"].bool())
    assert tok.regular_id_range == (0, tok.sot_token_id)


def test_word_ids_follow_the_whitespace_words(folder) -> None:
    tok = import_clip(folder).tokenizer
    with pytest.raises(HiCLIPError, match="over the limit of 16"):
        tok([LONG])  # nothing is cut unless asked
    batch = tok(["A photo of a   DOG, isn't it?", ["two", "triangles"], LONG], overflow="truncate")
    words = batch.words
    assert words[0] == ["a", "photo", "of", "a", "dog,", "isn't", "it?"] and batch.n_words[0] == 7
    pieces = [tok.id_to_token(i) for i in batch.input_ids[0].tolist()]
    by_word: dict[int, list[str]] = {}
    for piece, word in zip(pieces, batch.word_ids[0].tolist()):
        by_word.setdefault(word, []).append(piece)
    assert by_word[4] == ["dog</w>", ",</w>"]  # one word, two CLIP pre-tokens
    assert "".join(by_word[5]).replace("</w>", "") == "isn't" and len(by_word[5]) > 1
    assert batch.word_ids[1].tolist()[: int(batch.attention_mask[1].sum())][-1] == -1
    assert max(batch.word_ids[1].tolist()) == 1 and batch.words[1] == ["two", "triangles"]
    # truncation keeps CLIP's first 14 pieces (here 14 whole words)
    assert batch.attention_mask[2].all() and batch.n_words[2] == 14 == len(batch.words[2])
    cut = tok(["a " * 12 + "triangles"], overflow="truncate")  # 12 words, then one of 8 pieces cut after its first 2
    assert cut.input_ids.shape == (1, 16) and cut.n_words.tolist() == [12] and len(cut.words[0]) == 12
    assert cut.word_ids[0, 13:].tolist() == [-1, -1, -1]  # the cut word's pieces belong to no word, then EOT
    assert tok.decode(tok(["a red square"]).input_ids[0]) == "a red square"


def test_tokenizer_errors(folder) -> None:
    tok = import_clip(folder).tokenizer
    with pytest.raises(HiCLIPError, match="special token '<\\|endoftext\\|>'"):
        tok(["a <|endoftext|> b"])
    with pytest.raises(HiCLIPError, match="pass a list"):
        tok("a red square")


def test_features_equal_transformers(folder, reference) -> None:
    imported = import_clip(folder)
    model, tok = imported.model, imported.tokenizer
    clip, clip_tok = reference
    assert model.config.text.causal and not model.config.hierarchy and not model.config.text.mlm_head
    texts = [*TEXTS, LONG]
    batch = tok(texts, overflow="truncate")
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours_text = model.encode_text(batch.input_ids, batch.attention_mask, word_ids=batch.word_ids)
        theirs_text = _features(clip.get_text_features(**_hf_ids(clip_tok, texts)))
        ours_image = model.encode_image(images, normalize=False)
        theirs_image = _features(clip.get_image_features(pixel_values=images))
        torch.testing.assert_close(ours_text, theirs_text, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours_image, theirs_image, rtol=0, atol=1e-5)
        out = model(images[:2], batch.input_ids[:2], batch.attention_mask[:2])
        hf_out = clip(input_ids=batch.input_ids[:2], attention_mask=batch.attention_mask[:2].long(),
                      pixel_values=images[:2])
        logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
        torch.testing.assert_close(logits, hf_out.logits_per_image, rtol=0, atol=1e-4)
    assert torch.equal(model.logit_scale.detach(), clip.logit_scale.detach())


def test_slow_tokenizer_files_and_bin_weights(tmp_path, folder, reference) -> None:
    source = make_clip_folder(tmp_path / "slow", slow_tokenizer_files=True)
    weights = source / "model.safetensors"
    from safetensors.torch import load_file

    torch.save(load_file(str(weights)), source / "pytorch_model.bin")
    weights.unlink()
    a, b = import_clip(source), import_clip(folder)
    for name, tensor in b.model.state_dict().items():
        assert torch.equal(tensor, a.model.state_dict()[name]), name
    texts = [*TEXTS, LONG]
    assert torch.equal(a.tokenizer(texts, overflow="truncate").input_ids, b.tokenizer(texts, overflow="truncate").input_ids)


def test_import_export_round_trip_is_exact(tmp_path, folder) -> None:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    checkpoint = tmp_path / "ckpt"
    assert main(["import-clip", "--from", str(folder), "--out", str(checkpoint)]) == 0
    model, tok = hiclip.load(checkpoint)
    assert tok.kind == "clip" and model.config.text.causal
    assert tok.special_token_ids == import_clip(folder).tokenizer.special_token_ids  # the roles survive saving
    assert main(["export-hf", str(checkpoint), "--out", str(tmp_path / "back")]) == 0
    before, after = load_file(str(folder / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    before = {k: v for k, v in before.items() if not k.endswith("position_ids")}
    assert before.keys() == after.keys()
    for key, tensor in before.items():
        assert tensor.dtype == after[key].dtype and torch.equal(tensor, after[key]), key
    assert json.loads((folder / "config.json").read_text()) == json.loads((tmp_path / "back" / "config.json").read_text())
    texts = [*TEXTS, LONG]
    one, two = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(tmp_path / "back")
    assert one(texts, truncation=True, max_length=16)["input_ids"] == two(texts, truncation=True, max_length=16)["input_ids"]
    assert json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())["tokenizer_class"] == "CLIPTokenizer"
    vocab = json.loads((tmp_path / "back" / "vocab.json").read_text())
    assert len(vocab) == tok.vocab_size and (tmp_path / "back" / "merges.txt").read_text().startswith("#version")


def test_half_precision_source_round_trips_in_its_dtype(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    source = make_clip_folder(tmp_path / "fp16")
    weights = source / "model.safetensors"
    save_file({k: v.half() for k, v in load_file(str(weights)).items()}, str(weights), metadata={"format": "pt"})
    import_clip_checkpoint(source, tmp_path / "ckpt")
    export_hf(tmp_path / "ckpt", tmp_path / "back")
    before, after = load_file(str(weights)), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert all(after[k].dtype == torch.float16 and torch.equal(v, after[k]) for k, v in before.items())


def test_export_of_a_word_level_model_works_in_transformers(tmp_path) -> None:
    """A hiclip-trained vanilla model with a causal text tower: transformers computes its features."""
    from transformers import AutoTokenizer, CLIPModel

    texts = ["a red square", "two blue circles above the green square", "a zebra"]
    tok = hiclip.HiCLIPTokenizer.train_word_level(texts[:2], context_length=12)
    torch.manual_seed(0)
    model = hiclip.create_model("hiclip-tiny", hierarchy=False, vocab_size=tok.vocab_size,
                                text={"causal": True, "context_length": 12, "width": 32, "heads": 2, "layers": 2},
                                vision={"image_size": 32, "width": 32, "heads": 2, "layers": 2}, embed_dim=16).eval()
    hiclip.save(model, tok, tmp_path / "ckpt")
    report = export_hf(tmp_path / "ckpt", tmp_path / "hf")
    assert report.swapped_ids == (2, tok.vocab_size - 1)
    clip, clip_tok = CLIPModel.from_pretrained(tmp_path / "hf").eval(), AutoTokenizer.from_pretrained(tmp_path / "hf")
    hf_batch = clip_tok(texts, padding=True, return_tensors="pt")
    batch = tok(texts, overflow="truncate")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(_features(clip.get_text_features(**hf_batch)),
                                   model.encode_text(batch.input_ids, batch.attention_mask), rtol=0, atol=1e-5)
        torch.testing.assert_close(_features(clip.get_image_features(pixel_values=images)),
                                   model.encode_image(images), rtol=0, atol=1e-5)
    again = import_clip(tmp_path / "hf")  # and back: the same features (the vocabulary has 2 <-> V-1 swapped)
    assert again.tokenizer.mask_token_id is not None and again.tokenizer.regular_id_range[0] == 5
    with torch.no_grad():
        new = again.tokenizer(texts)
        torch.testing.assert_close(again.model.encode_text(new.input_ids, new.attention_mask),
                                   model.encode_text(batch.input_ids, batch.attention_mask), rtol=0, atol=1e-6)


def test_bidirectional_tower_is_exported_only_when_asked_and_comes_back(tmp_path) -> None:
    tok = hiclip.HiCLIPTokenizer.train_word_level(["a red square"], context_length=8)
    model = hiclip.create_model("hiclip-tiny", hierarchy=False, vocab_size=tok.vocab_size,
                                text={"width": 32, "heads": 2, "layers": 1, "context_length": 8},
                                vision={"image_size": 16, "width": 32, "heads": 2, "layers": 1}).eval()
    hiclip.save(model, tok, tmp_path / "ckpt")
    with pytest.raises(HiCLIPError, match="bidirectional.*--allow-bidirectional"):
        export_hf(tmp_path / "ckpt", tmp_path / "hf")
    report = export_hf(tmp_path / "ckpt", tmp_path / "hf", allow_bidirectional=True)
    assert any("bidirectional" in note for note in report.warnings)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["hiclip"] == {"text_causal": False}
    again = import_clip(tmp_path / "hf")
    assert not again.model.config.text.causal
    batch, new = tok(["a red square"]), again.tokenizer(["a red square"])
    with torch.no_grad():
        torch.testing.assert_close(again.model.encode_text(new.input_ids, new.attention_mask),
                                   model.encode_text(batch.input_ids, batch.attention_mask), rtol=0, atol=1e-6)


def test_export_refuses_what_clipmodel_cannot_express(tmp_path, capsys) -> None:
    tok = hiclip.HiCLIPTokenizer.train_word_level(["a red square"], context_length=8)
    small = {"text": {"width": 32, "heads": 2, "layers": 1, "context_length": 8, "causal": True},
             "vision": {"image_size": 16, "width": 32, "heads": 2, "layers": 1}}
    hiclip.save(hiclip.create_model("hiclip-tiny", vocab_size=tok.vocab_size, **small), tok, tmp_path / "hi")
    assert main(["export-hf", str(tmp_path / "hi"), "--out", str(tmp_path / "x")]) == 2
    assert "hierarchy-aware attention" in capsys.readouterr().err
    text_only = hiclip.create_model("hiclip-tiny", hierarchy=False, vocab_size=tok.vocab_size,
                                    text=small["text"], vision=None)
    hiclip.save(text_only, tok, tmp_path / "text")
    assert main(["export-hf", str(tmp_path / "text"), "--out", str(tmp_path / "y")]) == 2
    assert "text-only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y" / "config.json").exists()


def test_fresh_hierarchy_starts_near_the_imported_model(folder) -> None:
    imported = import_clip(folder)
    model, tok = imported.model, imported.tokenizer
    hierarchy = import_clip(folder, hierarchy=True, prior_gate=False).model  # the prior in full from step 0
    assert not hierarchy.config.affinity.prior_gate and hierarchy.text.prior_gate is None
    assert hierarchy.config.hierarchy and len(hierarchy.text.affinities) == 2
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, hierarchy.state_dict()[name]), name
    batch = tok(TEXTS, overflow="truncate")
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        text = hierarchy.encode_text(batch.input_ids, batch.attention_mask, word_ids=batch.word_ids,
                                     return_affinities=True)
        grid = hierarchy.encode_image(images, return_affinities=True)
    n = int(batch.n_words[0])
    first = text.links[0, 0, : n - 1]
    assert n > 3
    torch.testing.assert_close(first[1:-1], torch.full_like(first[1:-1], 0.5), atol=1e-3, rtol=0)  # uniform start
    ends = first[[0, -1]]  # the first and last words have one neighbour each: p = 1 on their side
    torch.testing.assert_close(ends, torch.full_like(ends, 0.5**0.5), atol=1e-3, rtol=0)
    assert grid.h_links.shape == (4, 2, 4, 3)
    # the fresh key projection is zero but learns: it gets a gradient at once
    hierarchy.train()
    out = hierarchy(images, batch.input_ids, batch.attention_mask, batch.word_ids)
    (out["image_features"] @ out["text_features"].T).trace().backward()
    assert hierarchy.text.affinities[0].k.weight.grad.abs().sum() > 0
    assert hierarchy.vision.affinities[0].k.weight.grad.abs().sum() > 0
    with pytest.raises(HiCLIPError, match="prior_layers needs the hierarchy"):
        import_clip(folder, prior_layers=[1])
    only_last = import_clip(folder, hierarchy=True, prior_layers=[1]).model
    assert only_last.config.text.prior_layers == [1] == only_last.config.vision.prior_layers
    assert add_fresh_hierarchy(model, [0]).config.text.prior_layers == [0]


def test_gated_hierarchy_is_exactly_the_imported_clip(folder, reference, tmp_path, capsys) -> None:
    """The default --hierarchy closes the prior gates: the features are the CLIP's, bit for bit."""
    plain = import_clip(folder)
    gated = import_clip(folder, hierarchy=True)
    model, tok = gated.model, gated.tokenizer
    assert model.config.hierarchy and model.config.affinity.prior_gate
    assert gated.extra["imported"]["hierarchy"]["prior_gate"] is True
    batch = tok([*TEXTS, LONG], overflow="truncate")  # CLIP cuts; the parity asks for it
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.encode_text(batch.input_ids, batch.attention_mask, word_ids=batch.word_ids),
                           plain.model.encode_text(batch.input_ids, batch.attention_mask, word_ids=batch.word_ids))
        assert torch.equal(model.encode_image(images), plain.model.encode_image(images))
        clip, clip_tok = reference
        hf = _hf_ids(clip_tok, [*TEXTS, LONG])
        torch.testing.assert_close(model.encode_text(batch.input_ids, batch.attention_mask),
                                   _features(clip.get_text_features(**hf)), rtol=0, atol=1e-5)
        torch.testing.assert_close(model.encode_image(images), _features(clip.get_image_features(pixel_values=images)),
                                   rtol=0, atol=1e-5)
    assert main(["import-clip", "--from", str(folder), "--out", str(tmp_path / "g"), "--hierarchy"]) == 0
    assert json.loads(capsys.readouterr().out)["prior_gate"] is True
    assert hiclip.load(tmp_path / "g")[0].text.prior_gates() == [0.0, 0.0]
    assert main(["import-clip", "--from", str(folder), "--out", str(tmp_path / "u"), "--hierarchy",
                 "--no-prior-gate"]) == 0
    assert json.loads(capsys.readouterr().out)["prior_gate"] is False
    assert not hiclip.load(tmp_path / "u")[0].config.affinity.prior_gate
    assert main(["import-clip", "--from", str(folder), "--out", str(tmp_path / "x"), "--no-prior-gate"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs the hierarchy" in err and "\n" not in err and not (tmp_path / "x").exists()


def _bad(tmp_path: Path, folder: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_folders_are_one_line_errors(tmp_path, folder, capsys) -> None:
    from transformers import CLIPTextConfig, CLIPVisionConfig

    def run(source: Path) -> str:
        return _error(["import-clip", "--from", str(source), "--out", str(tmp_path / "out")], capsys)

    assert "not a folder" in run(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json" in run(empty)
    bert = _bad(tmp_path, folder, "bert")
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    assert "model_type 'bert' is not a CLIP model" in run(bert)
    text_only = _bad(tmp_path, folder, "text_only")
    CLIPTextConfig(hidden_size=32, num_attention_heads=4).save_pretrained(text_only)
    assert "text-only CLIP config" in run(text_only)
    vision_only = _bad(tmp_path, folder, "vision_only")
    CLIPVisionConfig(hidden_size=32, num_attention_heads=4).save_pretrained(vision_only)
    assert "vision-only CLIP config" in run(vision_only)
    no_tokenizer = _bad(tmp_path, folder, "no_tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    assert "no tokenizer" in run(no_tokenizer)
    shapes = _bad(tmp_path, folder, "shapes")
    config = json.loads((shapes / "config.json").read_text())
    config["text_config"]["hidden_size"] = 48
    (shapes / "config.json").write_text(json.dumps(config))
    message = run(shapes)
    assert "shapes differ from config.json" in message and "text_model.embeddings.token_embedding.weight" in message
    no_weights = _bad(tmp_path, folder, "no_weights")
    (no_weights / "model.safetensors").unlink()
    assert "no weights" in run(no_weights)
    pickled = _bad(tmp_path, folder, "pickled")
    (pickled / "model.safetensors").unlink()
    torch.save({"weights": Unpicklable()}, pickled / "pytorch_model.bin")
    assert "refused by torch.load(weights_only=True)" in run(pickled)
    corrupt = _bad(tmp_path, folder, "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"not safetensors")
    assert "unreadable safetensors" in run(corrupt)
    assert not (tmp_path / "out" / "config.json").exists()


class Unpicklable:
    """Any class: ``weights_only`` loading refuses to rebuild it."""


def test_export_refuses_a_text_tower_without_a_learned_position_table(tmp_path):
    from hiclip.interop.hf_clip import export_hf

    tokenizer = hiclip.HiCLIPTokenizer.train_word_level(["a red square"], context_length=None)
    model = hiclip.create_model("hiclip-tiny", hierarchy=False, vocab_size=tokenizer.vocab_size,
                                text={"positions": "sinusoidal", "causal": True})
    folder = hiclip.save(model, tokenizer, tmp_path / "ck")
    with pytest.raises(HiCLIPError, match="sinusoidal positions; a CLIPModel has a learned position table only"):
        export_hf(folder, tmp_path / "hf")
