"""hiclip induce: prediction JSONL from a checkpoint, for HiCLIP and its vanilla twin, images and text."""
from __future__ import annotations

import json
from pathlib import Path

import nltk
import numpy as np
import pytest

import hiclip
from hiclip.cli import main
from hiclip.data import open_dataset
from induction.image_groups import load_label_map_png, tree_from_json, upsample_labels


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("induce")
    assert main(["data", "shapes", "--out", str(root / "shapes"), "--n", "20", "--seed", "3"]) == 0
    dataset = open_dataset(root / "shapes")
    tokenizer = hiclip.HiCLIPTokenizer.train_word_level([c for s in dataset for c in s.captions])
    paths = {"data": root / "shapes", "root": root}
    for name, hierarchy in (("hiclip", True), ("clip", False)):
        model = hiclip.create_model("hiclip-tiny", hierarchy=hierarchy, vocab_size=tokenizer.vocab_size)
        paths[name] = hiclip.save(model, tokenizer, root / name)
    return paths


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("model", ["hiclip", "clip"])
def test_induce_dataset_records(setup, model, tmp_path):
    out = tmp_path / "pred.jsonl"
    assert main(["induce", "--checkpoint", str(setup[model]), "--data", str(setup["data"]),
                 "--out", str(out), "--label-maps", "--batch-size", "7"]) == 0
    records = _records(out)
    samples = open_dataset(setup["data"]).samples
    assert [r["id"] for r in records] == [s.id for s in samples]
    n_layers = 4
    for record, sample in zip(records, samples):
        assert record["model"]["hierarchy"] == (model == "hiclip")
        assert record["model"]["affinity_source"] == ("prior" if model == "hiclip" else "attention")
        assert len(record["text"]) == len(sample.captions)
        for entry, tokens in zip(record["text"], sample.tokens):
            assert entry["tokens"] == tokens
            links = np.asarray(entry["links"])
            assert links.shape == (n_layers, len(tokens) - 1)
            assert np.all(np.diff(links, axis=0) >= -1e-5) and np.all(links > 0) and np.all(links <= 1)
            for bracket in [entry["tree"], *entry["trees"].values()]:
                assert nltk.Tree.fromstring(bracket).leaves() == tokens
            assert set(entry["trees"]) == {"tree_transformer", "binary"}
        image = record["image"]
        grid_h, grid_w = image["grid"]
        assert np.asarray(image["h_links"]).shape == (n_layers, grid_h, grid_w - 1)
        assert np.asarray(image["v_links"]).shape == (n_layers, grid_h - 1, grid_w)
        groups = np.asarray(image["groups"])
        assert groups.shape == (n_layers, grid_h * grid_w)
        # Links never weaken, so every group of a layer lies inside one group of the next.
        for layer in range(n_layers - 1):
            for g in np.unique(groups[layer]):
                assert len(np.unique(groups[layer + 1][groups[layer] == g])) == 1
        tree = tree_from_json(image["segment_tree"], grid_h * grid_w)
        assert tree.number_of_nodes() >= 1
        label = load_label_map_png(out.parent / image["label_maps"]["0"])
        assert label.shape == (sample.height, sample.width)


def test_induce_text_file_and_scores(setup, tmp_path):
    sentences = tmp_path / "caps.txt"
    sentences.write_text("a red square\nthere is a big blue circle next to two green triangles\n")
    out = tmp_path / "pred.jsonl"
    assert main(["induce", "--checkpoint", str(setup["hiclip"]), "--data", str(sentences),
                 "--out", str(out), "--algorithm", "binary"]) == 0
    records = _records(out)
    assert [r["text"][0]["tokens"] for r in records] == [line.split() for line in sentences.read_text().splitlines()]
    assert all(r["image"] is None for r in records)
    assert records[0]["text"][0]["algorithm"]["name"] == "binary"
    # A binary tree over n words has n - 1 constituents.
    tree = nltk.Tree.fromstring(records[1]["text"][0]["tree"])
    assert len(list(tree.subtrees())) == len(tree.leaves()) - 1


def test_induce_text_file_empty_line_is_located_error(setup, tmp_path, capsys):
    sentences = tmp_path / "caps.txt"
    sentences.write_text("a red square\n\nblue circle\n")
    assert main(["induce", "--checkpoint", str(setup["hiclip"]), "--data", str(sentences),
                 "--out", str(tmp_path / "p.jsonl")]) == 2
    assert f"{sentences}:2" in capsys.readouterr().err


def test_patch_labels_follow_the_centre_crop():
    labels = np.arange(4).reshape(2, 2)
    pixels = upsample_labels(labels, (4, 6), centre_crop=True)
    # Columns 1-2 lie on the left patch column, 3-4 on the right; the margins take the border patch.
    assert pixels.shape == (4, 6)
    assert pixels[0].tolist() == [0, 0, 0, 1, 1, 1]
    assert pixels[3].tolist() == [2, 2, 2, 3, 3, 3]


LENGTHS = (3, 31, 40, 77, 200)


def _long_sentences(path: Path) -> list[list[str]]:
    words = "a red square next to two green triangles above the blue circle".split()
    sentences = [[words[i % len(words)] for i in range(n)] for n in LENGTHS]
    path.write_text("".join(" ".join(s) + "\n" for s in sentences))
    return sentences


@pytest.fixture(scope="module")
def sinusoidal(setup) -> Path:
    model, tokenizer = hiclip.load(setup["hiclip"])
    long_model = hiclip.create_model("hiclip-tiny", vocab_size=tokenizer.vocab_size,
                                     text={"positions": "sinusoidal"})
    unlimited = hiclip.HiCLIPTokenizer.from_file(setup["hiclip"] / "tokenizer.json", context_length=None)
    return hiclip.save(long_model, unlimited, setup["root"] / "sinusoidal")


def test_learned_positions_refuse_long_sentences_with_file_line_and_limit(setup, tmp_path, capsys):
    caps = tmp_path / "caps.txt"
    _long_sentences(caps)
    out = tmp_path / "p.jsonl"
    assert main(["induce", "--checkpoint", str(setup["hiclip"]), "--data", str(caps), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {caps}:2: 33 tokens with SOT and EOT, over the model's limit of 32 "
                   "(its learned positions' context length)")
    assert not out.exists()


def test_learned_positions_skip_and_count_long_sentences(setup, tmp_path, capsys):
    caps = tmp_path / "caps.txt"
    sentences = _long_sentences(caps)
    out = tmp_path / "p.jsonl"
    assert main(["induce", "--checkpoint", str(setup["hiclip"]), "--data", str(caps), "--out", str(out),
                 "--on-error", "skip"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["skips"] == "skipped 4 (over the model's length limit: 4)"
    records = _records(out)
    assert [r["id"] for r in records] == ["1"] and records[0]["text"][0]["tokens"] == sentences[0]
    assert summary["sentences"] == 1 and summary["words"] == 3


def test_sinusoidal_positions_induce_every_sentence_whole(setup, sinusoidal, tmp_path, capsys):
    caps = tmp_path / "caps.txt"
    sentences = _long_sentences(caps)
    out = tmp_path / "p.jsonl"
    assert main(["induce", "--checkpoint", str(sinusoidal), "--data", str(caps), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["skips"] == "skipped 0" and summary["words"] == sum(LENGTHS)
    records = _records(out)
    assert [r["id"] for r in records] == ["1", "2", "3", "4", "5"]
    for record, words in zip(records, sentences):
        entry = record["text"][0]
        assert entry["tokens"] == words and entry["n_tokens"] == len(words) + 2
        assert np.asarray(entry["links"]).shape == (4, len(words) - 1)
        for bracket in [entry["tree"], *entry["trees"].values()]:
            assert nltk.Tree.fromstring(bracket).leaves() == words


def test_long_caption_in_a_dataset_names_its_manifest_line(setup, tmp_path, capsys):
    import shutil

    data = tmp_path / "shapes"
    shutil.copytree(setup["data"], data)
    lines = (data / "manifest.jsonl").read_text().splitlines()
    record = json.loads(lines[2])
    record["captions"][0] = " ".join(["square"] * 40)
    if "tokens" in record:
        record["tokens"][0] = record["captions"][0].split()
    if record.get("trees"):
        record["trees"][0] = "(S " + " ".join(["(NN square)"] * 40) + ")"
    lines[2] = json.dumps(record)
    (data / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "p.jsonl"
    args = ["induce", "--checkpoint", str(setup["hiclip"]), "--data", str(data), "--out", str(out), "--no-images"]
    assert main(args) == 2
    assert "manifest.jsonl:3: caption 0: 42 tokens with SOT and EOT, over the model's limit of 32" in capsys.readouterr().err
    assert main([*args, "--on-error", "skip"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "captions skipped 1 (over the model's length limit: 1)" in summary["skips"]
    records = _records(out)
    assert [c["caption_index"] for c in records[2]["text"]] == list(range(1, len(record["captions"])))


def test_tokenize_treebank_splits_punctuation_and_counts_unknown_words(setup, tmp_path, capsys):
    caps = tmp_path / "raw.txt"
    caps.write_text("A red square, next to two zebras.\n")
    out = tmp_path / "p.jsonl"
    assert main(["induce", "--checkpoint", str(setup["hiclip"]), "--data", str(caps), "--out", str(out)]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert _records(out)[0]["text"][0]["tokens"] == ["A", "red", "square,", "next", "to", "two", "zebras."]
    vocabulary = hiclip.load(setup["hiclip"])[1]
    raw_unknown = [w for w in "a red square, next to two zebras.".split() if vocabulary.token_to_id(w) is None]
    assert {"square,", "zebras."} <= set(raw_unknown)  # punctuation glued on: outside the vocabulary
    assert plain["unknown_words"] == len(raw_unknown) and plain["tokenize"] == "whitespace"
    assert main(["induce", "--checkpoint", str(setup["hiclip"]), "--data", str(caps), "--out", str(out),
                 "--tokenize", "treebank"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    entry = _records(out)[0]["text"][0]
    assert entry["tokens"] == ["a", "red", "square", ",", "next", "to", "two", "zebras", "."]
    unknown = [w for w in entry["tokens"] if vocabulary.token_to_id(w) is None]
    assert entry["n_unknown"] == len(unknown) and summary["unknown_words"] == len(unknown)
    assert summary["sentences_with_unknown"] == (1 if unknown else 0)
    assert _records(out)[0]["model"]["trees"]["tokenize"] == "treebank"


def test_checkpoint_recommended_trees_are_the_default(setup, tmp_path, capsys):
    import shutil

    from hiclip.checkpoint import update_extra
    from hiclip.errors import HiCLIPError
    from induction.induce import RECOMMENDED_TREES_KEY, recommended_tree_options

    folder = tmp_path / "ck"
    shutil.copytree(setup["hiclip"], folder)
    update_extra(folder, {RECOMMENDED_TREES_KEY: {"algorithm": "tree_transformer", "min_layer": 1,
                                                  "break_threshold": 0.9, "descend_threshold": 0.6,
                                                  "chosen_on": "a test"}})
    hiclip.load(folder)  # the weights' checksum still holds
    caps = tmp_path / "caps.txt"
    caps.write_text("there is a big blue circle next to two green triangles\n")
    out = tmp_path / "p.jsonl"
    assert main(["induce", "--checkpoint", str(folder), "--data", str(caps), "--out", str(out)]) == 0
    record = _records(out)[0]
    algorithm = record["text"][0]["algorithm"]
    assert (algorithm["min_layer"], algorithm["break_threshold"], algorithm["descend_threshold"]) == (1, 0.9, 0.6)
    assert record["model"]["trees"]["source"] == "checkpoint (extra.recommended_trees)"
    assert "checkpoint (extra.recommended_trees)" in json.loads(capsys.readouterr().out.splitlines()[-1])["tree"]
    assert main(["induce", "--checkpoint", str(folder), "--data", str(caps), "--out", str(out),
                 "--break-threshold", "0.8"]) == 0
    record = _records(out)[0]
    assert record["text"][0]["algorithm"]["break_threshold"] == 0.8
    assert record["model"]["trees"]["source"] == "checkpoint (extra.recommended_trees), overridden by --break-threshold"
    with pytest.raises(HiCLIPError, match="unknown key"):
        recommended_tree_options({RECOMMENDED_TREES_KEY: {"parser": "binary"}}, "x/config.json")
