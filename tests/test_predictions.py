"""The prediction JSONL (induction.predictions): round trip, and every check of the one reader."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from hiclip.errors import HiCLIPError, SkipReport
from induction.image_groups import layer_groups, segment_tree, tree_to_json
from induction.predictions import (
    CaptionPrediction,
    ImagePrediction,
    ModelInfo,
    PredictionRecord,
    read_predictions,
    round_links,
    write_predictions,
)
from induction.tree_evaluation import prediction_tree_records, read_tree_records


def _image(seed: int = 0) -> ImagePrediction:
    rng = np.random.default_rng(seed)
    h = round_links(np.sort(rng.uniform(0.05, 1.0, (3, 2, 2)), axis=0))
    v = round_links(np.sort(rng.uniform(0.05, 1.0, (3, 1, 3)), axis=0))
    groups = layer_groups(h, v, 0.5)
    return ImagePrediction((2, 3), h, v, groups, {"tau": 0.5, "quantile": False},
                           tree_to_json(segment_tree(groups)))


def _record(sample_id: str = "s1", split: str | None = "test", seed: int = 0) -> PredictionRecord:
    links = round_links(np.array([[0.2, 0.9], [0.4, 0.95], [0.5, 0.97]]))
    caption = CaptionPrediction(0, ["a", "red", "cube"], links, "(S a (X red cube))",
                                {"name": "tree_transformer"}, {"tree_transformer": "(S a (X red cube))",
                                                               "binary": "(S a (X red cube))"},
                                n_tokens=5, n_unknown=1)
    return PredictionRecord(sample_id, split, [caption], _image(seed),
                            ModelInfo("ckpt", "hiclip-tiny", True, "prior", (2, 3)))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_write_then_read_gives_the_same_records(tmp_path):
    records = [_record("s1"), _record("s2", "train", seed=1)]
    path = tmp_path / "pred.jsonl"
    assert write_predictions(iter(records), path) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temporary left
    back = read_predictions(path)
    assert [r.id for r in back] == ["s1", "s2"] and [r.line for r in back] == [1, 2]
    for written, read in zip(records, back):
        assert read.to_json() == written.to_json()
        np.testing.assert_array_equal(read.text[0].links, written.text[0].links)
        np.testing.assert_array_equal(read.image.groups, written.image.groups)
    assert back.records[0].text[0].n_unknown == 1 and back.records[0].model.grid == (2, 3)
    assert back.records[0].image.tree().graph["n_patches"] == 6
    only = read_predictions(path, split="test")
    assert [r.id for r in only] == ["s1"] and only.n_other_splits == 1


def test_the_writer_leaves_an_earlier_file_untouched_when_it_fails(tmp_path):
    path = tmp_path / "pred.jsonl"
    write_predictions([_record("old")], path)

    def failing():
        yield _record("new")
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError):
        write_predictions(failing(), path)
    assert [r.id for r in read_predictions(path)] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.jsonl"]


BAD = [
    (lambda r: r.update(id=""), "non-empty string 'id'"),
    (lambda r: r["text"][0].update(tokens=[]), "tokens must be a non-empty list"),
    (lambda r: r["text"][0].update(caption_index=-1), "caption_index must be an integer >= 0"),
    (lambda r: r["text"][0].update(links=[[0.2], [0.3]]), r"links of shape \(2, 1\) do not fit 3 tokens"),
    (lambda r: r["text"][0].update(links=[[0.2, float("inf")]] * 3), "NaN or infinite"),
    (lambda r: r["text"][0].update(links=[[-0.2, 0.5]] * 3), r"must lie in \[0, 1\]"),
    (lambda r: r["text"][0].update(n_unknown=4), "n_unknown 4 exceeds the 3 words"),
    (lambda r: r["text"][0].update(n_tokens=True), "n_tokens must be an integer"),
    (lambda r: r["text"][0].update(trees={"binary": 3}), "trees must map algorithm names"),
    (lambda r: r["image"].update(grid=[2, 0]), "grid must be"),
    (lambda r: r["image"].update(grid=[3, 2]), r"do not match image.grid \[3, 2\]"),
    (lambda r: r["image"].pop("v_links"), "both h_links and v_links"),
    (lambda r: r["image"]["h_links"][0][0].__setitem__(0, 1.5), r"h_links must lie in \[0, 1\]"),
    (lambda r: r["image"]["h_links"][0][0].__setitem__(0, float("nan")), "NaN or infinite"),
    (lambda r: r["image"].update(groups=[[0, 1, 2]]), r"groups has shape \(1, 3\)"),
    (lambda r: r["image"].update(groups=[[0, 0, 0, 0, 0, -1]] * 3), "non-negative integer labels"),
    (lambda r: r["image"].update(groups=[[0] * 6] * 2), "groups has 2 layers, the links 3"),
    (lambda r: r["image"].update(segment_tree={"nodes": [{"id": 0, "parent": None, "layer": 3,
                                                          "patches": [0, 1]}]}), "segment_tree"),
    (lambda r: r["image"].update(label_maps={"0": "../../etc/x.png"}), "leaves the prediction file's folder"),
    (lambda r: r["image"].update(label_maps={"x": "a.png"}), "keys must be layer numbers"),
    (lambda r: r["model"].update(grid=[4, 4]), r"differs from the model's grid \[4, 4\]"),
]


@pytest.mark.parametrize("change, message", BAD)
def test_malformed_records_are_one_line_errors_naming_the_line(tmp_path, change, message):
    good = _record("s0").to_json()
    bad = copy.deepcopy(_record("s1").to_json())
    change(bad)
    path = _write_rows(tmp_path / "pred.jsonl", [good, bad])
    with pytest.raises(HiCLIPError, match=r"pred\.jsonl:2: .*" + message):
        read_predictions(path)


def test_records_of_one_file_must_agree(tmp_path):
    first = _record("a").to_json()
    repeated = _record("a").to_json()
    with pytest.raises(HiCLIPError, match=r"pred\.jsonl:2: id 'a' repeats line 1"):
        read_predictions(_write_rows(tmp_path / "pred.jsonl", [first, repeated]))
    other_grid = _record("b").to_json()
    other_grid["image"] = {"grid": [1, 2], "groups": [[0, 0]] * 3}
    other_grid["model"]["grid"] = None
    with pytest.raises(HiCLIPError, match=r"pred\.jsonl:2: image.grid \[1, 2\]; line 1 has \[2, 3\]"):
        read_predictions(_write_rows(tmp_path / "pred.jsonl", [first, other_grid]))
    fewer = _record("c").to_json()
    fewer["text"][0]["links"] = fewer["text"][0]["links"][:2]
    with pytest.raises(HiCLIPError, match="links have 2 layers; line 1 has 3"):
        read_predictions(_write_rows(tmp_path / "pred.jsonl", [first, fewer]))
    (tmp_path / "pred.jsonl").write_text("{oops\n")
    with pytest.raises(HiCLIPError, match=r"pred\.jsonl:1: invalid JSON"):
        read_predictions(tmp_path / "pred.jsonl")
    with pytest.raises(HiCLIPError, match="prediction file not found"):
        read_predictions(tmp_path / "missing.jsonl")


def test_tree_records_from_predictions_skip_or_stop(tmp_path):
    rows = [
        {"id": "s1", "split": "test", "text": [
            {"caption_index": 0, "tokens": ["a", "man", "rides"], "tree": "(S (X a man) rides)",
             "algorithm": {"name": "tree_transformer"}, "trees": {"binary": "(S a (X man rides))"}}],
         "image": None},
        {"id": "s2", "split": "train", "text": [{"tokens": ["b", "c"], "tree": "(S b c)"}]},
        {"id": "s3", "split": "test", "text": [{"tokens": ["a", "man"], "tree": "(S a dog)"}]},
    ]
    path = _write_rows(tmp_path / "pred.jsonl", rows)
    with pytest.raises(HiCLIPError, match=r"pred\.jsonl:3: text 0: tree leaves differ from its tokens"):
        read_tree_records(str(path))
    records = read_tree_records(str(path), report=SkipReport("skip"))
    assert [r.ok for r in records] == [True, True, False]
    assert records[0].meta["algorithm"] == {"name": "tree_transformer"} and records[0].tags is None
    predictions = read_predictions(path, split="test")
    binary = prediction_tree_records(predictions, "binary", SkipReport("skip"))
    assert binary[0].tree[1].leaves() == ["man", "rides"] and not binary[1].ok
    with pytest.raises(HiCLIPError, match=r"pred\.jsonl:3: text 0 has no trees\['binary'\]"):
        prediction_tree_records(predictions, "binary")
