"""Class-agnostic group metrics (hand-computed values, scikit-learn parity) and the
``hiclip score groups`` command end to end."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from hiclip import cli
from hiclip.commands import score_groups
from hiclip.errors import HiCLIPError
from induction.group_metrics import (
    GroupScores,
    achievable_segmentation_accuracy,
    adjusted_rand_index,
    best_match_miou,
    boundary_map,
    boundary_recall,
    contingency,
    foreground_ari,
    mean_scores,
    score_segmentation,
    under_segmentation_error,
)
from induction.group_evaluation import evaluate_group_file
from induction.image_groups import layer_groups, save_label_map_png

# 2 x 4 maps. gt: background (0) on the left half, object 1 top right, object 2 bottom right.
GT = np.array([[0, 0, 1, 1],
               [0, 0, 2, 2]])
# pred: segment 5 = left half + pixel (0,2); segment 6 = (0,3); segment 7 = bottom right.
PRED = np.array([[5, 5, 5, 6],
                 [5, 5, 7, 7]])


def test_contingency_table():
    table, gt_values = contingency(PRED, GT)
    np.testing.assert_array_equal(gt_values, [0, 1, 2])
    np.testing.assert_array_equal(table, [[4, 0, 0], [1, 1, 0], [0, 0, 2]])
    # labels far apart and negative go through the same table
    table2, _ = contingency(PRED * 10**9 - 7, GT)
    np.testing.assert_array_equal(table2, table)


def test_best_match_miou_hand_computed():
    # object 1 (2 px): IoU with 5 = 1/(2+5-1) = 1/6, with 6 = 1/2 -> 1/2; object 2: 1
    assert best_match_miou(PRED, GT) == pytest.approx((0.5 + 1.0) / 2)


def test_use_and_asa_hand_computed():
    # USE: rows bg [4,0,0], o1 [1,1,0], o2 [0,0,2]; |S| = 5, 1, 2
    # sum min(c, |S|-c): bg: min(4,1)=1; o1: min(1,4)=1 + min(1,0)=0; o2: 0 -> 2 / 8
    assert under_segmentation_error(PRED, GT) == pytest.approx(2 / 8)
    # ASA: column maxima 4 + 1 + 2 = 7 of 8
    assert achievable_segmentation_accuracy(PRED, GT) == pytest.approx(7 / 8)


def test_ari_hand_computed():
    # pair counts over 8 pixels (unordered): same-in-both = C(4,2)+C(2,2) = 7,
    # same gt: C(4,2)+1+1 = 8, same pred: C(5,2)+C(2,2) = 11, total C(8,2) = 28
    expected_index, mean = 7, 8 * 11 / 28
    expected = (expected_index - mean) / ((8 + 11) / 2 - mean)
    assert adjusted_rand_index(PRED, GT) == pytest.approx(expected)
    # foreground: pixels (0,2),(0,3),(1,2),(1,3) with gt 1,1,2,2 and pred 5,6,7,7
    # same-in-both 1, same gt 2, same pred 1, total 6
    fg_expected = (1 - 2 * 1 / 6) / ((2 + 1) / 2 - 2 * 1 / 6)
    assert foreground_ari(PRED, GT) == pytest.approx(fg_expected)


def test_boundary_map_and_recall_hand_made():
    gt = np.zeros((1, 8), dtype=int)
    gt[0, 4:] = 1
    np.testing.assert_array_equal(boundary_map(gt)[0], [0, 0, 0, 1, 1, 0, 0, 0])
    pred_near = np.zeros((1, 8), dtype=int)
    pred_near[0, 7:] = 1      # predicted edge pixels 6, 7: 2 px from gt pixel 4, 3 px from 3
    assert boundary_recall(pred_near, gt, tolerance=2) == pytest.approx(0.5)
    assert boundary_recall(pred_near, gt, tolerance=3) == pytest.approx(1.0)
    assert boundary_recall(gt, gt) == 1.0
    assert boundary_recall(np.zeros_like(gt), gt) == 0.0   # no predicted boundary at all
    assert math.isnan(boundary_recall(gt, np.zeros_like(gt)))  # gt has no boundary


@pytest.mark.parametrize("seed", range(6))
def test_ari_equals_sklearn_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    gt = rng.integers(0, int(rng.integers(1, 6)), size=shape)
    pred = rng.integers(0, int(rng.integers(1, 30)), size=shape)
    if seed % 2:  # blocky maps give ARIs far from 0
        pred = np.where(rng.random(shape) < 0.8, gt, pred)
    assert adjusted_rand_index(pred, gt) == pytest.approx(adjusted_rand_score(gt.ravel(), pred.ravel()))
    fg = gt > 0
    if fg.any():
        assert foreground_ari(pred, gt) == pytest.approx(adjusted_rand_score(gt[fg], pred[fg]))


def test_edge_cases_match_sklearn_conventions():
    one = np.zeros((3, 3), dtype=int)
    singletons = np.arange(9).reshape(3, 3)
    assert adjusted_rand_index(one, one) == 1.0
    assert adjusted_rand_index(singletons, singletons) == 1.0
    assert adjusted_rand_index(singletons, one) == adjusted_rand_score(one.ravel(), singletons.ravel()) == 0.0


def test_pred_equals_gt_is_perfect():
    gt = np.array([[0, 1, 1], [2, 2, 0], [3, 3, 3]])
    s = score_segmentation(gt + 10, gt)
    assert (s.miou, s.ari, s.fg_ari, s.boundary_recall, s.use, s.asa) == (1.0, 1.0, 1.0, 1.0, 0.0, 1.0)
    assert (s.n_segments, s.n_gt_segments) == (4, 3)


def test_all_background_and_single_segment():
    bg = np.zeros((4, 4), dtype=int)
    s = score_segmentation(np.arange(16).reshape(4, 4), bg)
    assert math.isnan(s.miou) and math.isnan(s.fg_ari) and math.isnan(s.boundary_recall)
    assert s.n_gt_segments == 0 and s.n_segments == 16
    assert s.asa == 1.0 and s.use == 0.0   # singletons never straddle a gt edge
    gt = np.zeros((4, 4), dtype=int)
    gt[1:3, 1:3] = 1
    single = score_segmentation(np.zeros((4, 4), dtype=int), gt)
    assert single.miou == pytest.approx(4 / 16)
    assert single.ari == 0.0 and single.fg_ari == 1.0   # fg ARI: one fg segment, one prediction
    assert single.asa == pytest.approx(12 / 16)
    assert single.use == pytest.approx((4 + 4) / 16)   # min(12, 4) + min(4, 12)
    assert single.boundary_recall == 0.0


def test_foreground_ari_rewards_over_segmentation_but_ari_does_not():
    gt = np.zeros((8, 8), dtype=int)
    gt[2:6, 2:6] = 1
    pred = gt.copy()
    pred[gt == 0] = np.arange(2, 50)  # shatter the background into singletons
    s = score_segmentation(pred, gt)
    assert s.fg_ari == 1.0 and s.ari < 0.2 and s.n_segments == 49


def test_score_segmentation_agrees_with_single_metrics_and_mean_skips_nan():
    rng = np.random.default_rng(7)
    gt = rng.integers(0, 4, size=(12, 10))
    pred = rng.integers(0, 6, size=(12, 10))
    s = score_segmentation(pred, gt)
    assert s.miou == best_match_miou(pred, gt)
    assert s.ari == adjusted_rand_index(pred, gt)
    assert s.use == under_segmentation_error(pred, gt)
    a = GroupScores(0.5, 0.2, float("nan"), 1.0, 0.1, 0.9, 4, 2)
    b = GroupScores(1.0, 0.4, 0.6, 0.0, 0.3, 0.7, 6, 0)
    m = mean_scores([a, b])
    assert m["miou"] == 0.75 and m["fg_ari"] == 0.6 and m["n_segments"] == 5 and m["n_images"] == 2
    assert set(s.as_dict()) == set(m) - {"n_images"}


def test_mismatched_or_bad_inputs_are_user_errors():
    with pytest.raises(HiCLIPError, match="differ in shape"):
        score_segmentation(np.zeros((2, 2), dtype=int), np.zeros((2, 3), dtype=int))
    with pytest.raises(HiCLIPError, match="integer"):
        score_segmentation(np.zeros((2, 2)), np.zeros((2, 2), dtype=int))


# ---------------------------------------------------------------------------------------------
# `hiclip score groups` end to end, on a dataset and predictions written here
# ---------------------------------------------------------------------------------------------
PATCH = 8  # pixels per patch side; images are 4 x 4 patches = 32 x 32 pixels
# patch-level gt: object 1 top-left 2x2 patches, object 2 top-right, background the lower half
OBJECT = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]])
PART = np.array([[1, 1, 3, 3], [2, 2, 3, 3], [0, 0, 0, 0], [0, 0, 0, 0]])  # object 1 in 2 parts
GROUP = (OBJECT > 0).astype(int)                                            # both objects, 1 group


def patch_links(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.where(labels[:, 1:] == labels[:, :-1], 0.9, 0.1)
    v = np.where(labels[1:, :] == labels[:-1, :], 0.9, 0.1)
    return h, v


def layered_links() -> tuple[np.ndarray, np.ndarray]:
    """3 layers: part-level groups, object-level groups, one group (links never weaken)."""
    per_layer = [patch_links(PART), patch_links(OBJECT), patch_links(np.zeros((4, 4), int))]
    h = np.maximum.accumulate(np.stack([p[0] for p in per_layer]), axis=0)
    v = np.maximum.accumulate(np.stack([p[1] for p in per_layer]), axis=0)
    return h, v


def pixels(patch_map: np.ndarray) -> np.ndarray:
    return np.kron(patch_map, np.ones((PATCH, PATCH), dtype=int))


def write_dataset(root: Path, n: int = 3) -> list[str]:
    """A manifest dataset per DESIGN.md with part/object/group masks; returns the ids."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    colours = np.array([[20, 20, 20], [220, 40, 40], [40, 200, 60], [40, 60, 220]], dtype=np.uint8)
    ids = []
    with (root / "manifest.jsonl").open("w") as handle:
        for i in range(n):
            sid = f"toy-{i:03d}"
            ids.append(sid)
            Image.fromarray(colours[pixels(PART)]).save(root / "images" / f"{i}.png")
            masks = {}
            for level, patch_map in (("part", PART), ("object", OBJECT), ("group", GROUP)):
                rel = f"masks/{i}_{level}.png"
                Image.fromarray(pixels(patch_map).astype(np.uint8)).save(root / rel)
                masks[level] = rel
            record = {"id": sid, "split": "test", "image": f"images/{i}.png", "width": 32,
                      "height": 32, "captions": ["two things"], "masks": masks}
            handle.write(json.dumps(record) + "\n")
    return ids


def write_predictions(path: Path, ids: list[str], **override) -> None:
    h, v = layered_links()
    groups = layer_groups(h, v, 0.5).reshape(3, -1)
    with path.open("w") as handle:
        for sid in ids:
            image = {"grid": [4, 4], "h_links": h.tolist(), "v_links": v.tolist(),
                     "groups": groups.tolist()}
            image.update(override)
            image = {k: val for k, val in image.items() if val is not None}
            handle.write(json.dumps({"id": sid, "split": "test", "text": [], "image": image,
                                     "model": {"checkpoint": "toy"}}) + "\n")


def args_for(pred: Path, data: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    score_groups.add_arguments(parser)
    return parser.parse_args(["--pred", str(pred), "--data", str(data), *extra])


def score(args: argparse.Namespace) -> dict:
    """What ``hiclip score groups --json`` prints for these arguments."""
    return evaluate_group_file(args.pred, args.data, score_groups.options_from_args(args)).to_dict()


@pytest.fixture
def toy(tmp_path):
    data = tmp_path / "data"
    ids = write_dataset(data)
    pred = tmp_path / "pred.jsonl"
    write_predictions(pred, ids)
    return pred, data, ids


def rows_of(result, **where):
    return [r for r in result["rows"] if all(r[k] == v for k, v in where.items())]


def test_command_finds_the_planted_levels(toy):
    pred, data, _ = toy
    result = score(args_for(pred, data, "--split", "test", "--baselines", "grid"))
    # group gt (both objects as one): every level's best IoU is 1/2, a tie -> the lowest level
    assert result["best_level"] == {"group": 0, "object": 1, "part": 0}
    best_object = rows_of(result, gt_level="object", method="model", level="best")[0]
    assert best_object["layer"] == 1 and best_object["n_images"] == 3
    assert (best_object["miou"], best_object["ari"], best_object["fg_ari"]) == (1.0, 1.0, 1.0)
    assert best_object["n_segments"] == 3 and best_object["n_gt_segments"] == 2
    best_part = rows_of(result, gt_level="part", method="model", level="best")[0]
    assert best_part["layer"] == 0 and best_part["miou"] == 1.0 and best_part["n_segments"] == 4
    # baselines matched to the model's per-image number of segments at the best level
    grid_object = rows_of(result, gt_level="object", method="grid", level="best")[0]
    assert grid_object["layer"] == 1 and grid_object["n_segments"] == 3
    assert grid_object["miou"] < 1.0
    # only best rows without --level all, and NaN-free JSON
    assert {r["level"] for r in result["rows"]} == {"best"}
    json.dumps(result, allow_nan=False)


def test_command_all_levels_and_every_baseline_and_snapping(toy):
    pred, data, _ = toy
    result = score(args_for(pred, data, "--level", "all", "--gt-level", "object",
                                         "--snap-superpixels", "--superpixels", "30"))
    assert set(result["gt_levels"]) == {"object"}
    assert result["methods"] == ["model", "model+superpixels", "grid", "slic", "felzenszwalb", "rag"]
    for method in result["methods"]:
        assert [r["level"] for r in rows_of(result, method=method)] == [0, 1, 2, "best"]
    top = rows_of(result, method="model", level=2)[0]
    assert top["n_segments"] == 1 and top["ari"] == 0.0 and top["asa"] == pytest.approx(0.5)
    # the image's colour edges follow the patch grid, so snapping keeps the object level exact
    snapped = rows_of(result, method="model+superpixels", level=1)[0]
    assert snapped["miou"] == pytest.approx(1.0)


def test_command_table_and_json_via_cli(toy, capsys):
    pred, data, _ = toy
    assert cli.main(["score", "groups", "--pred", str(pred), "--data", str(data),
                     "--baselines", "none"]) == 0
    table = capsys.readouterr().out
    assert "ground truth: object masks (3 images), best model level 1" in table
    assert "FG-ARI" in table and "best=1" in table and "USE" in table
    assert cli.main(["score", "groups", "--pred", str(pred), "--data", str(data),
                     "--baselines", "", "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["methods"] == ["model"] and parsed["n_levels"] == 3


def test_command_reads_label_map_pngs_and_recomputes_from_links(tmp_path, toy):
    pred, data, ids = toy
    h, v = layered_links()
    groups = layer_groups(h, v, 0.5)
    # pixel-level maps for layer 0 and 1, a patch-level map for layer 2
    save_label_map_png(pixels(groups[0]), tmp_path / "labels" / "l0.png")
    save_label_map_png(pixels(groups[1]), tmp_path / "labels" / "l1.png")
    save_label_map_png(groups[2], tmp_path / "labels" / "l2.png")
    maps = {"0": "labels/l0.png", "1": "labels/l1.png", "2": "labels/l2.png"}
    from_png = tmp_path / "png.jsonl"
    write_predictions(from_png, ids, groups=None, label_maps=maps)
    a = score(args_for(pred, data, "--baselines", "none", "--level", "all"))
    b = score(args_for(from_png, data, "--baselines", "none", "--level", "all"))
    assert a["rows"] == b["rows"]
    # levels keep their layer numbers when only some layers were saved
    upper = tmp_path / "upper.jsonl"
    write_predictions(upper, ids, groups=None, label_maps={"1": maps["1"], "2": maps["2"]})
    u = score(args_for(upper, data, "--baselines", "none", "--gt-level", "object"))
    assert u["layers"] == [1, 2] and u["best_level"] == {"object": 1}
    lines = upper.read_text().splitlines()
    lines[2] = lines[2].replace('"1": "labels/l1.png", ', "")
    upper.write_text("\n".join(lines) + "\n")
    with pytest.raises(HiCLIPError, match=r"upper.jsonl:3: predicted layers \[2\]; line 1 has \[1, 2\]"):
        score(args_for(upper, data, "--baselines", "none"))
    # --tau regroups the stored links: 0.95 joins nothing -> 16 segments at every level
    c = score(args_for(pred, data, "--baselines", "none", "--tau", "0.95"))
    assert rows_of(c, gt_level="object")[0]["n_segments"] == 16


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda lines: lines[:1] + [lines[1].replace('"toy-001"', '"nope"')],
         r"pred.jsonl:2: id 'nope' is not in"),
        (lambda lines: lines + [lines[0]], r"pred.jsonl:4: id 'toy-000' repeats line 1"),
        (lambda lines: lines[:2] + ["{not json"], r"pred.jsonl:3: invalid JSON"),
        (lambda lines: [lines[0].replace('"grid": [4, 4]', '"grid": [4, 5]')] + lines[1:],
         r"pred.jsonl:1: h_links \(3, 4, 3\) / v_links \(3, 3, 4\) do not match image.grid \[4, 5\]"),
        (lambda lines: [lines[0].replace('"image": {', '"image": null, "x": {')] + lines[1:],
         r"pred.jsonl:1: record 'toy-000' has no image predictions"),
    ],
)
def test_command_mismatches_name_the_jsonl_line(toy, mutate, message):
    pred, data, _ = toy
    lines = pred.read_text().splitlines()
    pred.write_text("\n".join(mutate(lines)) + "\n")
    with pytest.raises(HiCLIPError, match=message):
        score(args_for(pred, data, "--baselines", "none"))


def test_partial_predictions_are_an_error_unless_allowed_then_coverage_is_reported(toy, capsys):
    pred, data, ids = toy
    write_predictions(pred, ids[:2])                      # 2 of the 3 samples with masks
    with pytest.raises(HiCLIPError, match=r"pred.jsonl: 1 of the 3 samples with masks .* have no "
                                          r"prediction \(e.g. 'toy-002'\).*--allow-missing"):
        score(args_for(pred, data, "--baselines", "none"))
    result = score(args_for(pred, data, "--baselines", "none", "--allow-missing"))
    assert result["coverage"] == {"n_with_masks": 3, "n_scored": 2, "n_missing": 1,
                                  "fraction": pytest.approx(2 / 3), "missing_examples": ["toy-002"]}
    assert rows_of(result, gt_level="object")[0]["n_images"] == 2
    assert cli.main(["score", "groups", "--pred", str(pred), "--data", str(data), "--baselines", "none",
                     "--allow-missing"]) == 0
    assert "coverage: 2 of the 3 samples with masks (66.7%); 1 have no prediction" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda image: image["h_links"][0][0].__setitem__(0, float("inf")), "h_links holds NaN or infinite"),
        (lambda image: image["v_links"][1][0].__setitem__(2, -0.5), r"v_links must lie in \[0, 1\]"),
        (lambda image: image.update(grid=[2, 8]), r"do not match image.grid \[2, 8\]"),
    ],
)
def test_inconsistent_grids_and_out_of_range_links_are_errors(toy, change, message):
    pred, data, _ = toy
    rows = [json.loads(line) for line in pred.read_text().splitlines()]
    change(rows[1]["image"])
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(HiCLIPError, match="pred.jsonl:2: .*" + message):
        score(args_for(pred, data, "--baselines", "none"))


def test_a_grid_that_disagrees_with_the_model_is_an_error(toy):
    pred, data, _ = toy
    rows = [json.loads(line) for line in pred.read_text().splitlines()]
    rows[0]["model"]["grid"] = [8, 8]
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(HiCLIPError, match=r"pred.jsonl:1: image.grid \[4, 4\] differs from the model's grid"):
        score(args_for(pred, data, "--baselines", "none"))


def test_the_group_library_takes_extra_partition_sources_and_report_sections(toy):
    """What issue 14's granularity scoring plugs in: a source at matched counts, another of its own,
    and a report section computed from the scored images."""
    from induction.group_evaluation import GroupEvalOptions, ReportSection, evaluate_groups, open_ground_truth
    from induction.predictions import read_predictions

    pred, data, _ = toy

    class OneSegment:
        name, matched = "one segment", False

        def partitions(self, item, levels):
            return {level: np.zeros(item.size, dtype=np.int64) for level in levels}

    class Halves:
        name, matched = "halves", True

        def partitions(self, item, levels):
            out = {}
            for level in levels:
                labels = np.zeros(item.size, dtype=np.int64)
                labels[:, item.size[1] // 2:] = 1 if item.n_segments(level) > 1 else 0
                out[level] = labels
            return out

    section = ReportSection("mean segments", lambda items, ev: {
        "model": float(np.mean([item.n_segments(ev.best_level["object"]) for item in items]))})
    evaluation = evaluate_groups(read_predictions(pred), open_ground_truth(str(data), None),
                                 GroupEvalOptions(baselines=(), granularity=False), str(data),
                                 extra_sources=[OneSegment(), Halves()],
                                 sections=[section])
    assert evaluation.methods == ["model", "one segment", "halves"]
    one = evaluation.row("object", "one segment", "best")
    assert one.n_segments == 1 and one.layer == 0                     # its own best level (all tie)
    halves = evaluation.row("object", "halves", "best")
    assert halves.matched and halves.layer == evaluation.best_level["object"] == 1   # at the model's level
    assert evaluation.to_dict()["sections"] == {"mean segments": {"model": 3.0}}


def test_command_size_and_option_errors(tmp_path, toy, capsys):
    pred, data, ids = toy
    save_label_map_png(np.zeros((10, 10), dtype=int), tmp_path / "labels" / "odd.png")
    bad = tmp_path / "bad.jsonl"
    write_predictions(bad, ids, groups=None, label_maps={"0": "labels/odd.png"})
    with pytest.raises(HiCLIPError, match=r"bad.jsonl:1: label map of level 0 is 10x10 .* 32x32"):
        score(args_for(bad, data, "--baselines", "none"))
    with pytest.raises(HiCLIPError, match="no masks of level"):
        score(args_for(pred, data, "--gt-level", "instance"))
    with pytest.raises(HiCLIPError, match="unknown baseline"):
        score(args_for(pred, data, "--baselines", "grid,watershed"))
    with pytest.raises(HiCLIPError, match="no prediction records in split 'train'"):
        score(args_for(pred, data, "--split", "train"))
    # through the CLI: one line on stderr, exit status 2, no traceback
    assert cli.main(["score", "groups", "--pred", str(bad), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def block_majority(mask: np.ndarray, grid: int) -> np.ndarray:
    """(grid, grid) patch labels: the most common mask label in each block."""
    size = mask.shape[0] // grid
    blocks = mask.reshape(grid, size, grid, size).transpose(0, 2, 1, 3).reshape(grid, grid, -1)
    return np.array([[np.bincount(b).argmax() for b in row] for row in blocks])


def test_command_on_generated_shapes_oracle_beats_grid(tmp_path):
    """Oracle links from the generator's own masks (8 x 8 patches) are scored end to end."""
    from hiclip.data import open_dataset
    from hiclip.data.shapes import ShapesConfig, generate_dataset

    generate_dataset(tmp_path / "shapes", ShapesConfig(n=6, seed=3, image_size=64))
    pred = tmp_path / "oracle.jsonl"
    with pred.open("w") as handle:
        for sample in open_dataset(tmp_path / "shapes", check_trees=False):
            per_level = [patch_links(block_majority(sample.load_mask(level), 8))
                         for level in ("part", "object", "group")]
            per_level.append(patch_links(np.zeros((8, 8), dtype=int)))
            h = np.maximum.accumulate(np.stack([p[0] for p in per_level]), axis=0)
            v = np.maximum.accumulate(np.stack([p[1] for p in per_level]), axis=0)
            image = {"grid": [8, 8], "h_links": h.tolist(), "v_links": v.tolist()}
            handle.write(json.dumps({"id": sample.id, "split": sample.split, "image": image}) + "\n")
    result = score(args_for(pred, tmp_path / "shapes", "--tau", "0.5",
                                         "--baselines", "grid"))
    assert set(result["gt_levels"]) == {"part", "object", "group"}
    assert result["layers"] == [0, 1, 2, 3]
    model = rows_of(result, gt_level="object", method="model")[0]
    grid = rows_of(result, gt_level="object", method="grid")[0]
    assert model["layer"] in (0, 1) and model["n_images"] == 6
    assert model["miou"] > grid["miou"] + 0.1 and model["ari"] > grid["ari"]


def test_command_on_real_coco_tiny(shared_data, tmp_path):
    """Random monotone links on a 14 x 14 grid over 640 x 4xx COCO images (not multiples)."""
    from hiclip.data import open_dataset

    coco = shared_data / "coco_tiny" / "tiny_coco"
    samples = [s for s in open_dataset(coco, split="val", check_trees=False) if "object" in s.masks][:4]
    rng = np.random.default_rng(0)
    pred = tmp_path / "coco.jsonl"
    with pred.open("w") as handle:
        for s in samples:
            h = np.cumsum(rng.random((2, 14, 13)) * 0.4, axis=0).clip(0, 1)
            v = np.cumsum(rng.random((2, 13, 14)) * 0.4, axis=0).clip(0, 1)
            image = {"grid": [14, 14], "h_links": h.tolist(), "v_links": v.tolist()}
            handle.write(json.dumps({"id": s.id, "split": s.split, "image": image}) + "\n")
    result = score(args_for(pred, coco, "--split", "val", "--tau", "0.5", "--allow-missing",
                            "--baselines", "grid,felzenszwalb", "--baseline-size", "96"))
    assert result["coverage"]["n_scored"] == 4 and result["coverage"]["n_missing"] > 0
    assert list(result["gt_levels"]) == ["object"]          # 'crowd' only when asked for
    assert result["gt_levels"]["object"] == 4
    model = rows_of(result, method="model")[0]
    felz = rows_of(result, method="felzenszwalb")[0]
    assert 0.0 <= model["miou"] <= 1.0 and model["n_gt_segments"] > 0
    assert abs(felz["n_segments"] - model["n_segments"]) <= 0.25 * model["n_segments"] + 2


@pytest.mark.parametrize("tolerance", [0, 1, 1.5, 2, 3, 7.5])
def test_boundary_recall_equals_distance_transform_definition(tolerance):
    from scipy.ndimage import distance_transform_edt

    rng = np.random.default_rng(int(tolerance * 10))
    gt = np.kron(rng.integers(0, 3, (5, 6)), np.ones((7, 5), dtype=int))
    pred = np.kron(rng.integers(0, 4, (6, 5)), np.ones((6, 6), dtype=int))[:35, :30]
    distance = distance_transform_edt(~boundary_map(pred))
    expected = (distance[boundary_map(gt)] <= tolerance).mean()
    assert boundary_recall(pred, gt, tolerance) == pytest.approx(expected)
