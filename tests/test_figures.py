"""viz.figures and ``hiclip figures``: the numbers drawn are ``hiclip score``'s, by construction."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from hiclip.cli import main  # noqa: E402
from hiclip.errors import HiCLIPError  # noqa: E402
from viz import demo_assets, figures  # noqa: E402


class _Sample:
    def __init__(self, i: int, groups: int = 1, count: int = 1, words: int = 3):
        self.id = f"s{i}"
        self.labels = {"groups": groups, "count": count}
        self.captions = [" ".join(["w"] * words)]


def test_choose_samples():
    data = [_Sample(i) for i in range(10)]
    assert [s.id for s in figures.choose_samples(data, ids=["s3", "s1"])] == ["s3", "s1"]
    a = [s.id for s in figures.choose_samples(data, n=3, seed=7)]
    assert a == [s.id for s in figures.choose_samples(data, n=3, seed=7)] and len(set(a)) == 3
    assert len(figures.choose_samples(data, n=50)) == 10
    with pytest.raises(HiCLIPError, match="unknown sample id"):
        figures.choose_samples(data, ids=["nope"])


def test_informative_samples_show_several_objects_and_long_captions():
    data = [_Sample(i) for i in range(12)] + [_Sample(12, 3, 6, 15), _Sample(13, 2, 4, 12),
                                               _Sample(14, 3, 5, 9)]
    chosen = figures.choose_samples(data, n=3, seed=0, informative=True)
    assert sorted(s.id for s in chosen) == ["s12", "s13", "s14"]     # the top quarter holds only them


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "viz-assets"
    checkpoint = demo_assets.tiny_checkpoint(root / "checkpoints" / "tiny-a")
    data = demo_assets.shapes_dataset(root / "shapes")
    return checkpoint, data


def _score(argv: list[str], capsys) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_figures_numbers_equal_hiclip_score(assets, tmp_path, capsys):
    """The same predictions through ``hiclip score`` and through ``hiclip figures`` (from the
    prediction file, and from the checkpoint induced in memory) give the same numbers."""
    checkpoint, data = assets
    pred = tmp_path / "pred.jsonl"
    assert main(["induce", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(pred)]) == 0
    capsys.readouterr()
    manifest = str(data / "manifest.jsonl")
    trees = {(parser, convention): _score(["score", "trees", "--gold", manifest, "--pred", str(pred),
                                           "--tree-key", parser, "--convention", convention, "--json"], capsys)
             for parser in ("tree_transformer", "binary") for convention in ("standard", "vgnsl")}
    groups = _score(["score", "groups", "--pred", str(pred), "--data", str(data), "--level", "all",
                     "--baselines", "none", "--json"], capsys)

    for convention in ("standard", "vgnsl"):
        out = tmp_path / f"figs-{convention}"
        assert main(["figures", "--checkpoint", str(checkpoint), "--pred", f"file={pred}", "--data", str(data),
                     "--out", str(out), "--no-samples", "--convention", convention]) == 0
        index = json.loads((out / "figures.json").read_text())
        numbers = index["quantitative"]["numbers"]
        metric = "sentence_f1" if convention == "standard" else "corpus_f1"
        models = numbers["text_f1_models"]
        assert models["metric"] == metric and models["convention"] == convention
        system = "HiCLIP (tiny-a)"
        for name in (system, "file"):
            for parser, label in (("tree_transformer", "Tree-Transformer parser"), ("binary", "binary lowest-link")):
                entry = models["systems"][f"{name} {label}"]
                score = trees[(parser, convention)]
                assert entry["value"] == pytest.approx(score[metric], abs=1e-9)
                assert entry["n"] == (score["n_sentence_f1"] if metric == "sentence_f1" else score["n_scored"])
                assert entry["parameters"]["convention"] == convention
        for baseline in trees[("tree_transformer", convention)]["baselines"].values():
            drawn = models["baselines"][baseline["prediction"]]
            assert drawn["value"] == pytest.approx(baseline[metric], abs=1e-9)
        # the parser started at the top layer is the table's Tree-Transformer number
        for name in (system, "file"):
            top = numbers["text_f1_by_layer"]["series"][name][-1]
            assert top["value"] == pytest.approx(trees[("tree_transformer", convention)][metric], abs=1e-9)
        # groups: every layer's mIoU and ARI against the object masks, as hiclip score groups
        for stem, key in (("image_miou_by_layer", "miou"), ("image_ari_by_layer", "ari")):
            drawn = numbers[stem]
            assert drawn["gt_level"] == "object" and drawn["best_layer"][system] == groups["best_level"]["object"]
            for name in (system, "file"):
                for layer, entry in zip(drawn["x"], drawn["series"][name]):
                    row = next(r for r in groups["rows"] if r["gt_level"] == "object"
                               and r["method"] == "model" and r["level"] == layer)
                    assert entry["value"] == row[key] and entry["n"] == row["n_images"]
        capsys.readouterr()


def test_hiclip_figures_end_to_end(assets, tmp_path, capsys):
    checkpoint, data = assets
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 4.0 / s, "lr": 1e-3 * s}) + "\n" for s in range(1, 6)))
    out = tmp_path / "figs"
    code = main(["figures", "--checkpoint", str(checkpoint), "--compare", f"twin={checkpoint}",
                 "--data", str(data), "--out", str(out), "--informative", "2", "--run", str(run)])
    assert code == 0, capsys.readouterr().err
    index = json.loads((out / "figures.json").read_text())
    assert index["systems"] == ["HiCLIP (tiny-a)", "twin"] and index["convention"] == "standard"
    assert len(index["samples"]) == 2
    sample = next(iter(index["samples"].values()))
    assert set(sample) == {"text_links", "text_layers", "tree_vs_gold", "tree_vs_gold_svg",
                           "image_groups", "image_links", "segment_tree"}
    assert set(index["sample_captions"]) >= set(sample) - {"tree_vs_gold_svg"}
    quantitative = index["quantitative"]
    assert set(quantitative["files"]) == {"text_f1_by_layer", "text_f1_by_threshold", "text_f1_models",
                                          "image_miou_by_layer", "image_ari_by_layer"}
    assert set(quantitative["captions"]) == set(quantitative["files"])
    by_layer = quantitative["numbers"]["text_f1_by_layer"]
    assert by_layer["x"] == [0, 1, 2, 3] and set(by_layer["series"]) == {"HiCLIP (tiny-a)", "twin"}
    assert by_layer["series"]["twin"] == by_layer["series"]["HiCLIP (tiny-a)"]   # the same checkpoint
    files = [p for d in (sample, quantitative["files"]) for p in d.values()] + [index["training_curves"]]
    for path in files:
        data_bytes = open(path, "rb").read()
        assert data_bytes[:4] in (b"\x89PNG", b"<svg", b"<?xm"), path
    assert not [p for p in out.rglob(".*tmp-*")]                      # every file written atomically
    assert "figures.json" in capsys.readouterr().out


def test_hiclip_figures_errors(assets, tmp_path, capsys):
    checkpoint, data = assets
    code = main(["figures", "--checkpoint", str(tmp_path / "missing"), "--data", str(data),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "not a folder" in capsys.readouterr().err
    code = main(["figures", "--checkpoint", str(checkpoint), "--data", str(data),
                 "--out", str(tmp_path / "o"), "--samples", "nope", "--no-quantitative"])
    assert code == 2 and "unknown sample id(s): nope" in capsys.readouterr().err
    code = main(["figures", "--data", str(data), "--out", str(tmp_path / "o")])
    assert code == 2 and "at least one system" in capsys.readouterr().err
