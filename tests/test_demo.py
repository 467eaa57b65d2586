"""hiclip demo end to end on two small checkpoints (the shipped ones are checked when present)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import hiclip
from hiclip.cli import main
from hiclip.commands.demo import MODELS, read_recipe
from hiclip.data import open_dataset
from hiclip.paths import REPO_ROOT


@pytest.fixture(scope="module")
def small_checkpoints(tmp_path_factory) -> Path:
    """Random-init twins with a recipe naming a 30-sample dataset (the pipeline, not the numbers)."""
    root = tmp_path_factory.mktemp("demo")
    data = {"n": 30, "seed": 5, "image_size": 64}
    assert main(["data", "shapes", "--out", str(root / "data"), "--n", "30", "--seed", "5"]) == 0
    dataset = open_dataset(root / "data")
    tokenizer = hiclip.HiCLIPTokenizer.train_word_level([c for s in dataset for c in s.captions])
    common = ["train", "--config", "shapes-demo", "--data", "{data}", "--out", "{out}", "--no-progress",
              "--threads", "1", "--max-steps", "2", "--set", "batch_size=8", "--set", "val_max_samples=8"]
    recipe = {"data": data, "train": {"hiclip-tiny-shapes": common,
                                      "clip-tiny-shapes": common + ["--no-hierarchy"]}}
    for label, name in MODELS:
        model = hiclip.create_model("hiclip-tiny", hierarchy=label == "HiCLIP", vocab_size=tokenizer.vocab_size)
        folder = hiclip.save(model, tokenizer, root / "checkpoints" / name)
        (folder / "recipe.json").write_text(json.dumps(recipe))
    return root / "checkpoints"


def test_demo_writes_report_with_every_system(small_checkpoints, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--checkpoints", str(small_checkpoints), "--out", str(out), "--no-app"]) == 0
    report = (out / "report.md").read_text()
    for name in ("HiCLIP", "CLIP", "right-branching", "left-branching", "balanced", "random",
                 "slic", "felzenszwalb", "rag", "grid", "Rsum"):
        assert name in report, name
    findings = report.split("## Findings", 1)[1].split("## Trees", 1)[0]
    assert "**Text, HiCLIP.**" in findings and "**Images, HiCLIP.**" in findings and "**Retrieval" in findings
    assert "| slic (at HiCLIP's #seg) |  | " in report               # baselines have no layer
    assert "## Image groups at the ground truth's granularity" in report
    assert "| HiCLIP: single linkage |" in report and "| CLIP: layer cut |" in report
    assert "| ceiling: majority label per patch, 8x8 grid (8 px) |" in report
    assert "**Images at the gt granularity.**" in findings and "Edge AUC" in report
    granularity = json.loads((out / "hiclip-tiny-shapes" / "scores.json").read_text())["groups"]["sections"][
        "gt_granularity"]
    felzenszwalb = [r for r in granularity["rows"] if r["method"] == "felzenszwalb"]
    assert felzenszwalb and "felzenszwalb" not in {r["method"] for r in granularity["ari_over_k"]}
    assert "grid" in {r["method"] for r in granularity["ari_over_k"]}   # the demo runs only the grid over k
    assert "*Figure 1. " in report and "![text_f1_models](figures/quantitative/text_f1_models.png)" in report
    index = json.loads((out / "figures" / "figures.json").read_text())
    table = json.loads((out / "hiclip-tiny-shapes" / "scores.json").read_text())["trees"]["tree_transformer/standard"]
    assert index["quantitative"]["numbers"]["text_f1_models"]["systems"]["HiCLIP Tree-Transformer parser"][
        "value"] == table["sentence_f1"]                                   # the figure is the table
    scores = json.loads((out / "hiclip-tiny-shapes" / "scores.json").read_text())
    assert set(scores["trees"]) == {"tree_transformer/standard", "tree_transformer/vgnsl",
                                    "binary/standard", "binary/vgnsl"}
    assert scores["trees"]["binary/vgnsl"]["convention"] == "vgnsl"
    assert scores["retrieval"]["retrieval"]["rsum"] >= 0
    assert any(out.joinpath("figures").rglob("*.png"))
    assert "report written" in capsys.readouterr().out


def test_demo_train_retrains_both_twins_with_the_recipe(small_checkpoints, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--checkpoints", str(small_checkpoints), "--out", str(out), "--no-app", "--train"]) == 0
    for label, name in MODELS:
        model, _ = hiclip.load(out / "checkpoints" / name)
        assert model.config.hierarchy == (label == "HiCLIP")
        assert read_recipe(out / "checkpoints" / name)["train"][name][0] == "train"
        assert json.loads((out / "train" / name / "params.json").read_text())["total_steps"] == 2
    assert str(out / "checkpoints") in (out / "report.md").read_text()


def test_missing_recipe_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "hiclip-tiny-shapes").mkdir()
    assert main(["demo", "--checkpoints", str(tmp_path), "--out", str(tmp_path / "o"), "--no-app"]) == 2
    assert "recipe.json" in capsys.readouterr().err


@pytest.mark.parametrize("name", [name for _, name in MODELS])
def test_shipped_checkpoint_loads_and_records_its_recipe(name):
    folder = REPO_ROOT / "checkpoints" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not shipped in this checkout")
    model, tokenizer = hiclip.load(folder)
    recipe = read_recipe(folder)
    assert model.config.hierarchy == (name == "hiclip-tiny-shapes")
    assert {"data", "train"} <= set(recipe)
    assert tokenizer.vocab_size == model.config.text.vocab_size
