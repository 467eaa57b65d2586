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
