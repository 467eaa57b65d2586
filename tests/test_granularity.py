"""Scores at the gt granularity (induction.granularity): partitions cut at each gt level's
segments + 1, ARI averaged over a k range, the patch-grid ceiling and the edge-AUC probe, through
the library and ``hiclip score groups``."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hiclip import cli
from hiclip.errors import HiCLIPError
from induction.granularity import (
    COLOUR,
    COLOUR_LINKAGE,
    LAYER_CUT,
    LINKS,
    SINGLE_LINKAGE,
    edge_auc,
    grid_ceiling,
    gt_k,
    nearest_layer,
)
from induction.group_metrics import adjusted_rand_index
from induction.image_groups import single_linkage, upsample_labels
from test_group_metrics import args_for, layered_links, score, toy  # noqa: F401  (toy is a fixture)


def section(result: dict) -> dict:
    return result["sections"]["gt_granularity"]


def row(rows: list[dict], **where) -> dict:
    found = [r for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, rows)
    return found[0]


def test_gt_k_and_nearest_layer() -> None:
    assert gt_k(np.array([[0, 0], [3, 7]])) == 3
    assert gt_k(np.array([[2, 2], [3, 3]])) == 3  # k = segments + 1 even without background pixels
    assert nearest_layer([4, 3, 1], 2) == 1      # |3-2| = |1-2|: the lower layer
    assert nearest_layer([26, 9, 1], 4) == 2


def test_grid_ceiling_takes_each_patch_majority() -> None:
    mask = np.array([[1, 1, 1, 0],
                     [1, 1, 0, 0],
                     [0, 0, 2, 2],
                     [0, 0, 2, 0]])
    expected = np.array([[1, 1, 0, 0],
                         [1, 1, 0, 0],
                         [0, 0, 2, 2],
                         [0, 0, 2, 2]])
    assert np.array_equal(grid_ceiling(mask, (2, 2)), expected)
    assert np.array_equal(grid_ceiling(mask, (4, 4)), mask)   # one pixel per patch: exact
    tie = np.array([[1, 2], [1, 2]])
    assert np.array_equal(grid_ceiling(tie, (1, 1)), np.ones((2, 2), int))  # ties: the lower label


def test_edge_auc() -> None:
    assert edge_auc(np.array([3.0, 2.0, 1.0, 0.0]), np.array([True, True, False, False])) == 1.0
    assert edge_auc(np.array([0.0, 1.0]), np.array([True, False])) == 0.0
    assert edge_auc(np.ones(4), np.array([True, False, True, False])) == 0.5   # ties count half
    assert edge_auc(np.array([2.0, 1.0, 1.0]), np.array([True, True, False])) == 0.75
    assert np.isnan(edge_auc(np.ones(2), np.array([True, True])))


def test_partitions_at_the_gt_granularity(toy) -> None:  # noqa: F811
    pred, data, _ = toy
    result = score(args_for(pred, data, "--baselines", "grid,slic"))
    part = section(result)
    assert part["k_range"] == [2, 16]
    # object gt: 2 objects + background = 3 segments; part gt: 3 parts + background = 4
    for gt_level, k in (("object", 3), ("part", 4), ("group", 2)):
        linkage = row(part["rows"], gt_level=gt_level, method=SINGLE_LINKAGE)
        assert linkage["n_segments"] == k and linkage["n_gt_segments"] == k - 1 and linkage["n_images"] == 3
        assert row(part["rows"], gt_level=gt_level, method="grid")["n_segments"] == k
        assert row(part["rows"], gt_level=gt_level, method=COLOUR_LINKAGE)["n_segments"] == k
        assert row(part["rows"], gt_level=gt_level, method="slic")["n_images"] == 3
    for gt_level in ("object", "part"):   # the planted levels are found exactly
        linkage = row(part["rows"], gt_level=gt_level, method=SINGLE_LINKAGE)
        assert (linkage["ari"], linkage["fg_ari"], linkage["miou"]) == (1.0, 1.0, 1.0)
    # the toy's parts have flat, distinct colours on the patch grid: colour linkage finds them
    assert row(part["rows"], gt_level="part", method=COLOUR_LINKAGE)["ari"] == 1.0
    # the layer cut: layers have 4, 3 and 1 groups
    assert row(part["rows"], gt_level="object", method=LAYER_CUT)["n_segments"] == 3
    assert row(part["rows"], gt_level="part", method=LAYER_CUT)["n_segments"] == 4
    assert row(part["rows"], gt_level="group", method=LAYER_CUT)["n_segments"] == 3  # tie 3/1: lower layer
    json.dumps(result, allow_nan=False)


def test_ari_averaged_over_k(toy) -> None:  # noqa: F811
    pred, data, _ = toy
    part = section(score(args_for(pred, data, "--baselines", "grid,slic", "--k-range-baselines", "grid",
                                  "--k-range", "2", "6")))
    h, v = layered_links()
    tree = single_linkage(h, v)
    from PIL import Image

    mask = np.asarray(Image.open(data / "masks" / "0_object.png")).astype(np.int64)
    expected = np.mean([adjusted_rand_index(upsample_labels(tree.cut(k), mask.shape, centre_crop=True), mask)
                        for k in range(2, 7)])
    got = row(part["ari_over_k"], gt_level="object", method=SINGLE_LINKAGE)
    assert (got["k_min"], got["k_max"], got["n_images"]) == (2, 6, 3)
    assert got["mean_ari"] == pytest.approx(expected, abs=1e-6)
    methods = {r["method"] for r in part["ari_over_k"]}
    assert methods == {SINGLE_LINKAGE, LAYER_CUT, COLOUR_LINKAGE, "grid"}  # slic only at the gt ks


def test_ceiling_and_edge_probe_on_the_toy(toy) -> None:  # noqa: F811
    pred, data, _ = toy
    part = section(score(args_for(pred, data, "--baselines", "none")))
    model_grid = row(part["ceiling"], gt_level="part", grid=[4, 4])
    assert model_grid["patch_px"] == 8 and model_grid["ari"] == 1.0   # the masks follow the 8-px patches
    assert row(part["ceiling"], gt_level="part", grid=[8, 8])["patch_px"] == 4
    links = row(part["edge_auc"], gt_level="object", method=LINKS)
    # a 4x4 grid has 12 horizontal + 12 vertical neighbour pairs, in each of the 3 images
    assert links["n_same"] + links["n_boundary"] == 24 * 3
    assert links["auc"] == 1.0          # within-object links exceed every boundary link
    colour = row(part["edge_auc"], gt_level="object", method=COLOUR)
    assert 0.0 <= colour["auc"] < 1.0   # the two parts of object 1 differ in colour


def test_cli_table_json_and_switches(toy, capsys) -> None:  # noqa: F811
    pred, data, _ = toy
    assert cli.main(["score", "groups", "--pred", str(pred), "--data", str(data), "--baselines", "grid"]) == 0
    table = capsys.readouterr().out
    assert "at the gt granularity" in table and "ARI@k2-16" in table and "ceiling: 4x4 grid (8 px)" in table
    assert "edge AUC, model links (summed over layers): 1.000" in table
    assert cli.main(["score", "groups", "--pred", str(pred), "--data", str(data), "--baselines", "grid",
                     "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert set(section(parsed)) >= {"k", "k_range", "rows", "ari_over_k", "ceiling", "edge_auc", "definitions"}
    assert parsed["parameters"]["granularity"] == {"k_range": [2, 16], "k_range_baselines": ["grid"]}
    assert cli.main(["score", "groups", "--pred", str(pred), "--data", str(data), "--baselines", "grid",
                     "--json", "--no-granularity"]) == 0
    assert "sections" not in json.loads(capsys.readouterr().out)
    with pytest.raises(HiCLIPError, match="k-range baseline"):
        score(args_for(pred, data, "--baselines", "grid", "--k-range-baselines", "slic"))
    with pytest.raises(HiCLIPError, match="k range must satisfy"):
        score(args_for(pred, data, "--k-range", "5", "3"))


def test_single_linkage_needs_links(toy, tmp_path) -> None:  # noqa: F811
    from test_group_metrics import write_predictions

    pred, data, ids = toy
    no_links = tmp_path / "groups_only.jsonl"
    write_predictions(no_links, ids, h_links=None, v_links=None)
    part = section(score(args_for(no_links, data, "--baselines", "none")))
    assert {r["method"] for r in part["rows"]} == {LAYER_CUT, COLOUR_LINKAGE}
    assert any("no links" in reason for reason in part["skipped"])
    assert {r["method"] for r in part["edge_auc"]} == {COLOUR}


def test_snapped_single_linkage_is_scored_with_snapping(toy) -> None:  # noqa: F811
    from induction.granularity import SNAPPED_LINKAGE

    pred, data, _ = toy
    part = section(score(args_for(pred, data, "--baselines", "none", "--snap-superpixels",
                                  "--superpixels", "30", "--k-range", "2", "4")))
    snapped = row(part["rows"], gt_level="object", method=SNAPPED_LINKAGE)
    # the toy's colour edges follow the patch grid, so snapping keeps the exact object cut
    assert snapped["ari"] == pytest.approx(1.0) and snapped["n_images"] == 3
    assert row(part["ari_over_k"], gt_level="object", method=SNAPPED_LINKAGE)["k_max"] == 4
