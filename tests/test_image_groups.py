"""Per-layer patch groups, segment trees, single linkage and pixel label maps."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, is_valid_linkage

from hiclip.errors import HiCLIPError
from induction.image_groups import (
    groups_at_threshold,
    layer_groups,
    layer_thresholds,
    load_label_map_png,
    relabel_raster,
    save_label_map_png,
    segment_tree,
    single_linkage,
    snap_to_superpixels,
    tree_from_json,
    tree_to_json,
    upsample_labels,
)


def links_from_labels(labels: np.ndarray, inside: float = 0.9, across: float = 0.1):
    """Links that are ``inside`` within a segment of ``labels`` and ``across`` between segments."""
    h = np.where(labels[:, 1:] == labels[:, :-1], inside, across)
    v = np.where(labels[1:, :] == labels[:-1, :], inside, across)
    return h, v


def test_relabel_raster_orders_by_first_appearance():
    labels = np.array([[7, 7, -2], [3, 7, -2]])
    np.testing.assert_array_equal(relabel_raster(labels), [[0, 0, 1], [2, 0, 1]])


def test_groups_at_threshold_hand_made_grid():
    # 3 x 3 grid; h joins (r,c)-(r,c+1), v joins (r,c)-(r+1,c)
    h = np.array([[0.9, 0.1],
                  [0.2, 0.8],
                  [0.5, 0.5]])
    v = np.array([[0.1, 0.1, 0.7],
                  [0.6, 0.1, 0.1]])
    labels = groups_at_threshold(h, v, 0.5)
    # row 0: {0,1} {2}; 2 joins 5 (v 0.7); 4-5 (h 0.8); 3 joins 6 (v 0.6); row 2 all joined
    np.testing.assert_array_equal(labels, [[0, 0, 1], [2, 1, 1], [2, 2, 2]])
    # link equal to tau joins (>=), just above does not
    assert groups_at_threshold(h, v, 0.5)[2].tolist() == [2, 2, 2]
    assert groups_at_threshold(h, v, 0.51)[2].tolist() == [2, 3, 4]


def test_groups_recover_planted_segments():
    truth = np.array([[0, 0, 1, 1],
                      [0, 2, 2, 1],
                      [3, 2, 2, 1]])
    h, v = links_from_labels(truth)
    np.testing.assert_array_equal(groups_at_threshold(h, v, 0.5), truth)
    assert groups_at_threshold(h, v, 0.05).max() == 0  # everything joined
    assert groups_at_threshold(h, v, 0.95).max() == truth.size - 1  # nothing joined


def test_single_row_and_single_patch_grids():
    assert groups_at_threshold(np.array([[0.9, 0.1]]), np.zeros((0, 3)), 0.5).tolist() == [[0, 0, 1]]
    assert groups_at_threshold(np.zeros((1, 0)), np.zeros((0, 1)), 0.5).tolist() == [[0]]


def test_bad_link_shapes_are_user_errors():
    with pytest.raises(HiCLIPError, match="one grid"):
        groups_at_threshold(np.zeros((3, 2)), np.zeros((2, 4)), 0.5)
    with pytest.raises(HiCLIPError, match="shapes"):
        layer_groups(np.zeros((3, 2)), np.zeros((2, 3)), 0.5)
    with pytest.raises(HiCLIPError, match="NaN"):
        groups_at_threshold(np.full((2, 1), np.nan), np.zeros((1, 2)), 0.5)


def monotone_links(seed: int = 0, layers: int = 4, grid: tuple[int, int] = (6, 5)):
    """Random links in (0, 1] that never weaken with depth (the hierarchical constraint)."""
    rng = np.random.default_rng(seed)
    gh, gw = grid
    h = np.zeros((layers, gh, gw - 1))
    v = np.zeros((layers, gh - 1, gw))
    prev_h, prev_v = np.zeros((gh, gw - 1)), np.zeros((gh - 1, gw))
    for layer in range(layers):
        prev_h = prev_h + (1 - prev_h) * rng.random(prev_h.shape) * 0.6
        prev_v = prev_v + (1 - prev_v) * rng.random(prev_v.shape) * 0.6
        h[layer], v[layer] = prev_h, prev_v
    return h, v


def test_layer_groups_coarsen_with_depth_and_match_single_layer():
    h, v = monotone_links()
    groups = layer_groups(h, v, 0.5)
    assert groups.shape == (4, 6, 5)
    counts = [g.max() + 1 for g in groups]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    for layer in range(4):
        np.testing.assert_array_equal(groups[layer], groups_at_threshold(h[layer], v[layer], 0.5))


def test_quantile_thresholds_are_per_layer():
    h, v = monotone_links()
    taus = layer_thresholds(h, v, 0.5, quantile=True)
    all_links = [np.concatenate([h[l].ravel(), v[l].ravel()]) for l in range(4)]
    np.testing.assert_allclose(taus, [np.median(x) for x in all_links])
    # without nesting, each layer joins about half its own links
    flat = layer_groups(h, v, 0.5, quantile=True, nested=False)
    for layer in range(4):
        np.testing.assert_array_equal(flat[layer], groups_at_threshold(h[layer], v[layer], taus[layer]))
    with pytest.raises(HiCLIPError, match="quantile"):
        layer_thresholds(h, v, 1.5, quantile=True)


def test_nested_option_makes_any_input_a_tree():
    h, v = monotone_links()
    h_bad, v_bad = h[::-1].copy(), v[::-1].copy()  # links that weaken with depth
    with pytest.raises(HiCLIPError, match="not nested"):
        segment_tree(layer_groups(h_bad, v_bad, 0.5, nested=False))
    tree = segment_tree(layer_groups(h_bad, v_bad, 0.5, nested=True))
    assert tree.graph["root"] == 0


def test_segment_tree_structure_hand_made():
    layers = np.array([
        [[0, 0, 1, 2]],   # layer 0: {0,1} {2} {3}
        [[0, 0, 1, 1]],   # layer 1: {0,1} {2,3}
    ])
    tree = segment_tree(layers)
    # top layer has 2 groups -> an added root of layer L = 2
    assert tree.nodes[0] == {"layer": 2, "patches": [0, 1, 2, 3]}
    assert sorted(tree.successors(0)) == [1, 2]
    assert tree.nodes[1] == {"layer": 1, "patches": [0, 1]}
    assert tree.nodes[2] == {"layer": 1, "patches": [2, 3]}
    assert list(tree.successors(1)) == [3]  # unary chain: {0,1} survives layer 0 unchanged
    assert tree.nodes[3] == {"layer": 0, "patches": [0, 1]}
    assert sorted(tree.nodes[c]["patches"][0] for c in tree.successors(2)) == [2, 3]
    assert tree.number_of_nodes() == 6


def test_segment_tree_no_added_root_when_top_is_one_group():
    tree = segment_tree(np.array([[0, 1, 1], [0, 0, 0]]))
    assert tree.nodes[0] == {"layer": 1, "patches": [0, 1, 2]}
    assert tree.number_of_nodes() == 3


def test_segment_tree_leaves_partition_patches_and_children_nest():
    h, v = monotone_links(seed=3)
    groups = layer_groups(h, v, 0.6)
    tree = segment_tree(groups)
    leaves = [n for n in tree if tree.out_degree(n) == 0]
    assert all(tree.nodes[n]["layer"] == 0 for n in leaves)
    assert sorted(p for n in leaves for p in tree.nodes[n]["patches"]) == list(range(30))
    assert len(leaves) == groups[0].max() + 1
    for parent, child in tree.edges:
        assert set(tree.nodes[child]["patches"]) <= set(tree.nodes[parent]["patches"])
        assert tree.nodes[child]["layer"] == tree.nodes[parent]["layer"] - 1


def test_tree_json_round_trip_and_validation():
    h, v = monotone_links(seed=1)
    tree = segment_tree(layer_groups(h, v, 0.5))
    obj = json.loads(json.dumps(tree_to_json(tree)))
    assert obj["nodes"][0]["parent"] is None
    back = tree_from_json(obj, n_patches=30)
    assert sorted(back.edges) == sorted(tree.edges)
    assert all(back.nodes[n] == tree.nodes[n] for n in tree)

    bad = json.loads(json.dumps(obj))
    bad["nodes"][1]["parent"] = 999
    with pytest.raises(HiCLIPError, match="unknown parent"):
        tree_from_json(bad)
    bad = json.loads(json.dumps(obj))
    bad["nodes"][1]["parent"] = None
    with pytest.raises(HiCLIPError, match="one root"):
        tree_from_json(bad)
    leaf = max(n["id"] for n in obj["nodes"])
    bad = json.loads(json.dumps(obj))
    bad["nodes"][leaf]["patches"].append(10_000)
    with pytest.raises(HiCLIPError, match="outside its parent"):
        tree_from_json(bad)
    with pytest.raises(HiCLIPError, match="cover"):
        tree_from_json(obj, n_patches=31)


def test_single_linkage_hand_made_order_and_cuts():
    # 1 x 4 grid, two layers; summed affinity of the 3 links: 1.5, 0.3, 1.1
    h = np.array([[[0.7, 0.1, 0.5]], [[0.8, 0.2, 0.6]]])
    v = np.zeros((2, 0, 4))
    dendro = single_linkage(h, v)
    np.testing.assert_array_equal(dendro.edges, [[0, 1], [2, 3], [1, 2]])
    np.testing.assert_allclose(dendro.affinity, [1.5, 1.1, 0.3])
    assert dendro.cut(4).tolist() == [[0, 1, 2, 3]]
    assert dendro.cut(3).tolist() == [[0, 0, 1, 2]]
    assert dendro.cut(2).tolist() == [[0, 0, 1, 1]]
    assert dendro.cut(1).tolist() == [[0, 0, 0, 0]]
    # weights change the order: only layer 0 counts -> 0.7, 0.1, 0.5 (same order here)
    weighted = single_linkage(h, v, weights=[1.0, 0.0])
    np.testing.assert_allclose(weighted.affinity, [0.7, 0.5, 0.1])
    with pytest.raises(HiCLIPError, match="weight"):
        single_linkage(h, v, weights=[1.0])


def test_single_linkage_matches_planted_segments_and_scipy():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 1]])
    h, v = links_from_labels(truth)
    dendro = single_linkage(np.stack([h, h]), np.stack([v, v]))
    np.testing.assert_array_equal(dendro.cut(3), truth)
    z = dendro.linkage_matrix()
    assert is_valid_linkage(z) and z.shape == (11, 4) and z[-1, 3] == 12
    flat = fcluster(z, t=3, criterion="maxclust").reshape(truth.shape)
    np.testing.assert_array_equal(relabel_raster(flat), truth)


def test_upsample_exact_and_non_multiple_sizes():
    grid = np.array([[0, 1], [2, 3]])
    up = upsample_labels(grid, (4, 6))
    np.testing.assert_array_equal(up, [[0, 0, 0, 1, 1, 1]] * 2 + [[2, 2, 2, 3, 3, 3]] * 2)
    odd = upsample_labels(np.arange(8)[None, :].repeat(8, 0), (60, 61))
    assert odd.shape == (60, 61)
    widths = np.bincount(odd[0])
    assert widths.sum() == 61 and widths.min() >= 7 and widths.max() <= 8
    # a 3-pixel image over a 2-patch grid: pixel centres 0.5, 1.5, 2.5 of 3 -> patches 0, 1, 1
    assert upsample_labels(np.array([[5, 9]]), (1, 3)).tolist() == [[5, 9, 9]]
    with pytest.raises(HiCLIPError):
        upsample_labels(np.zeros(4, dtype=int), (4, 4))


def test_snap_to_superpixels_majority_vote():
    label_map = np.zeros((4, 6), dtype=int)
    label_map[:, 2:] = 1          # group 1 covers columns 2..5
    superpixels = np.zeros((4, 6), dtype=int)
    superpixels[:, 3:] = 1        # superpixel 0 = columns 0..2 (2/3 group 0), 1 = columns 3..5
    image = np.zeros((4, 6, 3))
    snapped = snap_to_superpixels(label_map, image, superpixels=superpixels)
    np.testing.assert_array_equal(snapped, superpixels)


def test_snap_to_superpixels_follows_image_edges():
    # a two-colour image whose edge is at column 20; coarse groups split at column 16
    image = np.zeros((32, 32, 3))
    image[:, 20:] = 1.0
    coarse = np.zeros((32, 32), dtype=int)
    coarse[:, 16:] = 1
    snapped = snap_to_superpixels(coarse, image, n_segments=16, compactness=1.0)
    assert snapped.max() == 1
    assert (snapped[:, 20:] == 1).all() and (snapped[:, :12] == 0).all()


def test_label_map_png_round_trip(tmp_path):
    labels = np.array([[0, 1, 70000 - 5000], [3, 2, 1]])
    path = tmp_path / "sub" / "labels.png"
    save_label_map_png(labels, path)
    np.testing.assert_array_equal(load_label_map_png(path), labels)
    with pytest.raises(HiCLIPError, match="65535"):
        save_label_map_png(np.array([[70000]]), tmp_path / "x.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(HiCLIPError, match="broken.png"):
        load_label_map_png(tmp_path / "broken.png")
