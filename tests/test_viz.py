"""viz/ on plain arrays and trees: what is drawn where, and the files it writes."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import nltk  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from hiclip.errors import HiCLIPError  # noqa: E402
from induction.image_groups import tree_from_json, upsample_labels  # noqa: E402
from induction.thresholds import NO_LINKS  # noqa: E402
from viz import images, links, trees  # noqa: E402
from viz.save import save_figure  # noqa: E402

PRED = "(S (X (X a red) square) (X to (X the left)))"
GOLD = "(S (NP (DT a) (JJ red) (NN square)) (PP (TO to) (NP (DT the) (NN left))))"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------------------- trees


def test_node_spans_and_match():
    spans = dict(trees.node_spans(nltk.Tree.fromstring(PRED)))
    assert spans == {(): (0, 6), (0,): (0, 3), (0, 0): (0, 2), (1,): (3, 6), (1, 1): (4, 6)}
    match = trees.match_spans(PRED, GOLD)
    assert match.matched == {(0, 6), (0, 3), (3, 6), (4, 6)}
    assert match.only_pred == {(0, 2)}
    assert match.only_gold == set()
    assert len(match.matched) == 4 and len(match.only_pred) == 1 and not match.only_gold
    with pytest.raises(ValueError, match="different numbers of words"):
        trees.match_spans("(S a b)", "(S a b c)")


def _svg_texts(svg: str) -> list[tuple[str, str]]:
    """(text, fill colour from the style attribute) of every <text> element."""
    root = ET.fromstring(svg)
    out = []
    for el in root.iter():
        if el.tag.endswith("text") and el.text:
            style = el.get("style", "") + ";" + el.get("fill", "")
            out.append((el.text, style))
    return out


def test_tree_svg_colours_matched_and_unmatched_nodes():
    svg = trees.tree_svg(PRED, trees.constituent_spans(nltk.Tree.fromstring(GOLD)))
    texts = _svg_texts(svg)
    words = [t for t, _ in texts]
    for word in "a red square to the left".split():
        assert word in words
    green = [t for t, style in texts if trees.MATCHED in style]
    red = [t for t, style in texts if trees.UNMATCHED in style]
    assert len(green) == 4 and len(red) == 1      # (0,6), (0,3), (3,6), (4,6) shared; (0,2) not


def test_tree_pair_svg_is_one_document_with_both_captions_and_a_legend():
    svg = trees.tree_pair_svg(PRED, GOLD, ("induced: F1 88.9", "gold"))
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    words = [t for t, _ in _svg_texts(svg)]
    assert "induced: F1 88.9" in words and f"gold  ({trees.LEGEND})" in words
    assert words.count("square") == 2


def test_unlabelled_tree_draws_dots():
    svg = trees.tree_svg(nltk.Tree("", [nltk.Tree("", ["a", "b"]), "c"]))
    assert [t for t, _ in _svg_texts(svg)].count("\u2022") == 2


def test_tree_pair_figure_colours_labels_and_legend():
    fig = trees.tree_pair_figure(PRED, GOLD, ("induced", "gold"))
    top, bottom = fig.axes
    top_colours = [t.get_color() for t in top.texts if t.get_text() in ("S", "X")]
    assert top_colours.count(trees.MATCHED) == 4 and top_colours.count(trees.UNMATCHED) == 1
    assert top.get_title() == "induced"
    assert [t.get_text() for t in bottom.texts].count("NP") == 2
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["constituent the other tree has too", "constituent the other tree lacks"]


def test_long_trees_scale_to_page_width():
    words = " ".join(f"w{i}" for i in range(40))
    flat = f"(S {words})"
    fig = trees.tree_pair_figure(flat, flat)
    assert fig.get_size_inches()[0] <= trees.MAX_FIGURE_WIDTH
    assert fig.axes[0].texts[-1].get_fontsize() < 10
    grid = trees.trees_grid_figure([flat, flat, flat], ncols=2)
    assert grid.get_size_inches()[0] <= trees.MAX_FIGURE_WIDTH and len(grid.axes) == 3


def test_trees_grid_figure_lays_out_all_trees():
    fig = trees.trees_grid_figure([PRED, GOLD, PRED], titles=["a", "b", "c"], ncols=2)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == ["a", "b", "c"] and len(fig.axes) == 4


# ----------------------------------------------------------------------------- links


def test_word_groups_and_thresholds():
    assert links.word_groups(np.array([0.9, 0.2, 0.7, 0.8]), 0.5) == [(0, 2), (2, 5)]
    assert links.word_groups(np.array([]), 0.5) == [(0, 1)]
    values = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    assert links.layer_thresholds(values, quantile=0.5) == pytest.approx([0.25, 0.65])
    assert links.layer_thresholds(values, threshold=[0.3, 0.9]) == pytest.approx([0.3, 0.9])
    assert links.layer_thresholds(values) == pytest.approx([0.5, 0.5])


def test_one_threshold_helper_with_one_answer_when_there_are_no_links():
    from induction.image_groups import layer_thresholds as image_thresholds
    from induction.text_trees import quantile_thresholds

    one_word = np.zeros((3, 0))
    assert links.layer_thresholds(one_word, quantile=0.5).tolist() == [NO_LINKS] * 3
    assert image_thresholds(np.zeros((3, 1, 0)), np.zeros((3, 0, 1)), 0.5, quantile=True).tolist() == [NO_LINKS] * 3
    both = quantile_thresholds([one_word], 0.5, 0.4)
    assert both.split.tolist() == both.descend.tolist() == [NO_LINKS] * 3


def test_link_bars_figure_draws_one_row_per_layer_with_the_link_heights():
    words = ["a", "red", "square", "to"]
    values = np.array([[0.2, 0.6, 0.1], [0.5, 0.8, 0.3], [0.7, 0.9, 0.6]])
    fig = links.link_bars_figure(words, values, threshold=0.55)
    assert len(fig.axes) == 5 and fig.axes[-1].get_ylabel() == "link"      # words, 3 layers, colour bar
    assert all(any(t.get_text() == " threshold 0.55" for t in ax.texts) for ax in fig.axes[1:4])
    for row, ax in zip(values, fig.axes[1:4]):
        heights = [p.get_height() for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)]
        assert heights == pytest.approx(list(row))
    # groups above threshold: layer 0 -> {a}{red square}{to}; layer 2 -> one group
    boxes = [p for p in fig.axes[1].patches if isinstance(p, matplotlib.patches.FancyBboxPatch)]
    assert len(boxes) == 3
    boxes = [p for p in fig.axes[3].patches if isinstance(p, matplotlib.patches.FancyBboxPatch)]
    assert len(boxes) == 1
    with pytest.raises(ValueError, match="need 3 links"):
        links.link_bars_figure(words, values[:, :2])


def test_link_grid_and_boundary_segments():
    h = np.array([[0.1], [0.2]])          # 2 x 1: rows of 2 patches
    v = np.array([[0.3, 0.4]])            # 1 x 2
    grid = links.link_grid(h, v)
    assert grid.shape == (3, 3)
    assert grid[0, 1] == 0.1 and grid[2, 1] == 0.2 and grid[1, 0] == 0.3 and grid[1, 2] == 0.4
    assert np.isnan(grid[0, 0]) and np.isnan(grid[1, 1])
    segments, values = links.boundary_segments(h, v, height=10, width=20)
    assert values.tolist() == [0.1, 0.2, 0.3, 0.4]
    assert segments[0].tolist() == [[10, 0], [10, 5]]      # between (0,0) and (0,1)
    assert segments[2].tolist() == [[0, 5], [10, 5]]       # between (0,0) and (1,0)


def test_link_heatmaps_figure_checks_shapes_and_draws_every_layer():
    rng = np.random.default_rng(0)
    h, v = rng.uniform(size=(3, 4, 3)), rng.uniform(size=(3, 3, 4))
    fig = links.link_heatmaps_figure(h, v, layers=[0, 2], image=rng.uniform(size=(32, 32, 3)))
    titles = [ax.get_title() for ax in fig.axes]
    assert "layer 0" in titles and "layer 2" in titles and "layer 1" not in titles
    with pytest.raises(ValueError, match="same"):
        links.link_heatmaps_figure(h, v[:, :2])


# ----------------------------------------------------------------------------- images


def test_canonical_labels_and_stable_colours():
    fine = np.array([[5, 5, 7], [9, 9, 7]])
    coarse = np.array([[1, 1, 1], [0, 0, 1]])      # {5,7} merged, 9 alone
    assert images.canonical_labels(fine).tolist() == [[0, 0, 2], [3, 3, 2]]
    c_fine, c_coarse = images.label_colours(fine), images.label_colours(coarse)
    assert c_fine.shape == (2, 3, 3)
    # the merged group keeps the colour of its first patch; the untouched group keeps its own
    assert np.allclose(c_coarse[0, 2], c_fine[0, 0])
    assert np.allclose(c_coarse[1, 0], c_fine[1, 0])
    assert not np.allclose(c_fine[0, 0], c_fine[0, 2])


def test_image_to_float_and_upsample():
    assert images.image_to_float(np.full((2, 2, 3), 255, np.uint8)).max() == 1.0
    assert images.image_to_float(np.full((2, 2), 0.5)).shape == (2, 2, 3)
    assert images.image_to_float(np.zeros((2, 2, 4), np.uint16)).shape == (2, 2, 3)
    up = upsample_labels(np.array([[0, 1], [2, 3]]), (4, 6))       # the one mapping, as scoring
    assert up.shape == (4, 6) and up[0, 0] == 0 and up[0, 5] == 1 and up[3, 0] == 2


def test_group_overlay_marks_boundaries_between_groups():
    image = np.zeros((8, 8, 3), np.uint8)
    labels = np.array([[0, 1], [0, 1]])            # left half / right half
    out = images.group_overlay(image, labels, boundary_colour=(1.0, 1.0, 1.0))
    assert out.shape == (8, 8, 3) and out.min() >= 0.0 and out.max() <= 1.0
    white = np.all(out == 1.0, axis=2)
    assert white[:, 3].all() or white[:, 4].all()  # the boundary column
    assert not white[:, 0].any() and not white[:, 7].any()
    flat = images.group_overlay(image, labels.reshape(-1), grid=(2, 2))
    assert np.allclose(flat, out)


def test_groups_across_layers_figure_titles_count_groups():
    groups = np.array([[0, 1, 2, 3], [0, 0, 1, 1], [0, 0, 0, 0]])
    fig = images.groups_across_layers_figure(np.zeros((8, 8, 3)), groups)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["image", "layer 0: 4 groups", "layer 1: 2 groups", "layer 2: 1 group"]


def _toy_segment_tree() -> nx.DiGraph:
    # layer 2: {0,1,2,3}; layer 1: {0,1},{2,3}; layer 0: {0},{1},{2,3} (unary {2,3})
    records = [
        {"id": 0, "parent": None, "layer": 2, "patches": [0, 1, 2, 3]},
        {"id": 1, "parent": 0, "layer": 1, "patches": [0, 1]},
        {"id": 2, "parent": 0, "layer": 1, "patches": [2, 3]},
        {"id": 3, "parent": 1, "layer": 0, "patches": [0]},
        {"id": 4, "parent": 1, "layer": 0, "patches": [1]},
        {"id": 5, "parent": 2, "layer": 0, "patches": [2, 3]},
    ]
    return tree_from_json({"nodes": records}, n_patches=4)


def test_segment_tree_collapse_layout_and_restrict():
    tree = _toy_segment_tree()
    assert set(tree.edges) == {(0, 1), (0, 2), (1, 3), (1, 4), (2, 5)}
    collapsed = images.collapse_unary(tree)
    assert 2 not in collapsed and collapsed.has_edge(0, 5)
    assert collapsed.nodes[5]["top_layer"] == 1
    pos = images.hierarchy_layout(collapsed)
    assert pos[3][0] < pos[4][0] < pos[5][0]
    assert pos[1] == (0.5, 1.0) and pos[0][1] == 2.0
    top = images.restrict_layers(tree, 1)
    assert set(top.nodes) == {0, 1, 2}
    assert images.auto_min_layer(tree, max_nodes=3) == 1
    assert images.auto_min_layer(tree, max_nodes=10) == 0


def test_segment_tree_figure_with_and_without_thumbnails():
    tree = _toy_segment_tree()
    fig = images.segment_tree_figure(tree, image=np.zeros((8, 8, 3)), grid=(2, 2), min_layer=0)
    assert len(fig.axes[0].artists) == 5          # collapsed: 5 segments as thumbnails
    fig = images.segment_tree_figure(tree, min_layer=0)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1", "1", "2", "2", "4"]
    thumb = images.segment_thumbnail(np.zeros((8, 8, 3)), [0], (2, 2), size=4)
    assert thumb.shape == (4, 4, 3)
    assert thumb[0, 0].max() == 0.0                               # inside the segment: the image
    assert np.allclose(thumb[1, 1], images.SEGMENT_OUTLINE)       # its edge: outlined
    assert np.allclose(thumb[3, 3], 0.7)                          # outside: faded towards white
    whole = images.segment_thumbnail(np.zeros((8, 8, 3)), [0, 1, 2, 3], (2, 2), size=4)
    assert whole.max() == 0.0                                      # the root has no outline


# ----------------------------------------------------------------------------- save


@pytest.mark.parametrize("ext, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_save_figure_formats(tmp_path, ext, magic):
    fig = trees.tree_figure(PRED)
    path = save_figure(fig, tmp_path / "sub" / f"tree{ext}")
    assert path.read_bytes().startswith(magic)


def test_save_svg_string_and_arrays(tmp_path):
    svg_path = save_figure(trees.tree_svg(PRED), tmp_path / "t.svg")
    assert ET.parse(svg_path).getroot().tag.endswith("svg")
    with pytest.raises(HiCLIPError, match="only be saved as .svg"):
        save_figure(trees.tree_svg(PRED), tmp_path / "t.png")
    with pytest.raises(HiCLIPError, match="unsupported figure format"):
        save_figure(trees.tree_figure(PRED), tmp_path / "t.jpg")
    image = np.zeros((6, 5, 3), np.uint8)
    image[2, 3] = (255, 0, 0)
    png = save_figure(image, tmp_path / "a.png")
    assert np.array_equal(np.asarray(Image.open(png)), image)
    assert save_figure(image, tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")


def test_merge_tree_builds_constituents_layer_by_layer():
    words = "a red square to left".split()
    values = np.array([[0.9, 0.2, 0.7, 0.1], [0.9, 0.6, 0.8, 0.3], [0.95, 0.7, 0.9, 0.6]])
    assert str(links.merge_tree(words, values, 0, threshold=0.55)) == "(... (L0 a red) (L0 square to) left)"
    assert str(links.merge_tree(words, values, 1, threshold=0.55)) == \
        "(... (L1 (L0 a red) (L0 square to)) left)"
    full = links.merge_tree(words, values, threshold=0.55)
    assert str(full) == "(L2 (L1 (L0 a red) (L0 square to)) left)"
    assert full.leaves() == words
    # a join made at one layer is kept even if a later layer's link dips under its threshold
    dip = np.array([[0.9, 0.1], [0.4, 0.1]])
    assert str(links.merge_tree(["x", "y", "z"], dip, 1, threshold=0.5)) == "(... (L0 x y) z)"
    with pytest.raises(ValueError, match="outside"):
        links.merge_tree(words, values, 3)


def test_responsive_svg_keeps_a_valid_document():
    for svg in (trees.tree_svg(PRED), trees.tree_pair_svg(PRED, GOLD)):
        out = trees.responsive_svg(svg)
        root = ET.fromstring(out)
        assert "max-width: 100%" in root.get("style") and root.get("viewBox")
        assert out.count("<svg") == svg.count("<svg")


def test_segment_tree_figure_names_an_added_root():
    groups = np.array([[0, 1, 2, 3], [0, 0, 1, 1]])     # two groups at the top layer
    from induction.image_groups import segment_tree

    fig = images.segment_tree_figure(segment_tree(groups), min_layer=0)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["layer 0", "layer 1", "whole image"]
