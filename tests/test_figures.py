"""viz.figures on hand-made links (exact numbers) and ``hiclip figures`` end to end."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hiclip.cli import main  # noqa: E402
from hiclip.errors import HiCLIPError  # noqa: E402
from viz import demo_assets, figures  # noqa: E402

GOLD = "(S (NP (DT a) (NN b)) (VP (VB c) (NN d)))"


def _item(links, gold=GOLD, words="a b c d") -> figures.CaptionLinks:
    return figures.CaptionLinks("s0", 0, words.split(), np.asarray(links, dtype=float), gold)


def test_text_scores_on_known_links():
    # every layer: a-b and c-d strongly linked, b-c weakly: the gold bracketing
    good = _item([[0.9, 0.1, 0.9]] * 3)
    assert figures.f1_by_layer([good]) == pytest.approx([100.0, 100.0, 100.0])
    assert figures.parser_f1([good]) == pytest.approx({"tree_transformer": 100.0, "binary": 100.0})
    # strong b-c, weak a-b and c-d: binary splits at a|b then c|d -> (a (b c) d)-like, not gold
    bad = _item([[0.1, 0.9, 0.2]] * 3)
    assert figures.parser_f1([bad])["binary"] < 100.0
    base = figures.baseline_f1([good])
    # gold spans {(0,4),(0,2),(2,4)}; right-branching {(0,4),(1,4),(2,4)}: 2 of 3 match
    assert base["right"] == pytest.approx(200 / 3)
    assert base["left"] == pytest.approx(200 / 3)
    assert base["balanced"] == pytest.approx(100.0)
    sweep = figures.f1_by_threshold([good, bad], quantiles=(0.3, 0.6))
    assert len(sweep) == 2 and all(0 <= v <= 100 for v in sweep)
    assert np.isnan(figures.f1_by_layer([_item([[0.5, 0.5, 0.5]], gold=None)])[0])


def test_image_scores_on_known_links():
    # 2x2 patches over a 4x4 mask split into left / right halves
    mask = np.zeros((4, 4), dtype=np.int32)
    mask[:, :2], mask[:, 2:] = 1, 2
    h = np.array([[[0.1], [0.1]], [[0.1], [0.1]]])          # (L=2, H=2, W-1=1): across halves
    v = np.array([[[0.1, 0.1]], [[0.9, 0.9]]])              # (L=2, H-1=1, W=2): within halves
    item = figures.ImageLinks("s0", h, v, {"object": mask})
    scores = figures.image_scores_by_layer([item], tau=0.5)
    assert scores["segments"] == [4.0, 2.0]
    assert scores["mIoU"] == pytest.approx([0.5, 1.0])
    assert scores["ARI"][1] == pytest.approx(1.0)
    assert figures.image_scores_by_layer([figures.ImageLinks("s1", h, v, {})]) == {}


def test_choose_samples():
    class S:
        def __init__(self, i):
            self.id = f"s{i}"
    data = [S(i) for i in range(10)]
    assert [s.id for s in figures.choose_samples(data, ids=["s3", "s1"])] == ["s3", "s1"]
    a = [s.id for s in figures.choose_samples(data, n=3, seed=7)]
    assert a == [s.id for s in figures.choose_samples(data, n=3, seed=7)] and len(set(a)) == 3
    assert len(figures.choose_samples(data, n=50)) == 10
    with pytest.raises(HiCLIPError, match="unknown sample id"):
        figures.choose_samples(data, ids=["nope"])


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "viz-assets"
    checkpoint = demo_assets.tiny_checkpoint(root / "checkpoints" / "tiny-a")
    data = demo_assets.shapes_dataset(root / "shapes")
    return checkpoint, data


def test_hiclip_figures_end_to_end(assets, tmp_path, capsys):
    checkpoint, data = assets
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 4.0 / s, "lr": 1e-3 * s}) + "\n" for s in range(1, 6)))
    # the same checkpoint through `hiclip induce`: its prediction JSONL must score the same
    pred = tmp_path / "pred.jsonl"
    assert main(["induce", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(pred),
                 "--limit", "6"]) == 0
    out = tmp_path / "figs"
    code = main(["figures", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out),
                 "--samples", "shapes-000002", "--run", str(run), "--pred", f"induced={pred}",
                 "--max-captions", "12", "--max-images", "6"])     # 6 samples, 2 captions each
    assert code == 0, capsys.readouterr().err
    index = json.loads((out / "figures.json").read_text())
    sample = index["samples"]["shapes-000002"]
    assert set(sample) == {"text_links", "text_layers", "tree_vs_gold", "tree_vs_gold_svg",
                           "image_groups", "image_links", "segment_tree"}
    quantitative = index["quantitative"]
    assert set(quantitative["files"]) == {"text_f1_by_layer", "text_f1_by_threshold", "text_f1_models",
                                          "image_miou_by_layer", "image_ari_by_layer"}
    numbers = quantitative["numbers"]
    ours, induced = "HiCLIP (tiny-a)", "induced"
    assert set(numbers["f1_by_layer"]) == {ours, induced}
    assert len(numbers["f1_by_layer"][ours]) == 4
    assert numbers["f1_by_layer"][induced] == pytest.approx(numbers["f1_by_layer"][ours], abs=1e-6)
    assert numbers["parsers"][f"{induced} binary"] == pytest.approx(numbers["parsers"][f"{ours} binary"])
    assert numbers["image_by_layer"][induced]["mIoU"] == pytest.approx(
        numbers["image_by_layer"][ours]["mIoU"], abs=1e-3)
    assert set(numbers["baselines"]) == {"left", "right", "balanced", "random"}
    files = [p for d in (sample, quantitative["files"]) for p in d.values()] + [index["training_curves"]]
    for path in files:
        data_bytes = open(path, "rb").read()
        assert data_bytes[:4] in (b"\x89PNG", b"<svg", b"<?xm"), path
    assert "figures.json" in capsys.readouterr().out


def test_hiclip_figures_errors(assets, tmp_path, capsys):
    checkpoint, data = assets
    code = main(["figures", "--checkpoint", str(tmp_path / "missing"), "--data", str(data),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "not a folder" in capsys.readouterr().err
    code = main(["figures", "--checkpoint", str(checkpoint), "--data", str(data),
                 "--out", str(tmp_path / "o"), "--samples", "nope", "--no-quantitative"])
    assert code == 2 and "unknown sample id(s): nope" in capsys.readouterr().err
