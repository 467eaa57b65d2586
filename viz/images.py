"""Image groups on the picture: coloured overlays with boundaries, and the segment tree.

Groups are integer label maps, either per patch (``(H, W)`` grid, or flat ``(H*W,)`` with the
grid given) or per pixel (``(S, S)``); any label values work. Colours are chosen per group from
the group's first patch in row-major order, so a group keeps its colour when it absorbs later
patches on the next layer: merges read as colour spreading across the image.

A segment tree is a ``networkx.DiGraph`` with edges parent -> child and node attributes
``layer`` (int) and ``patches`` (sequence of flat patch indices, row-major on the grid); the root
is the whole image (``induction.image_groups.segment_tree``; a prediction record's
``ImagePrediction.tree()`` reads its stored form, checked, with ``tree_from_json``). Patch labels
are mapped to pixels by ``induction.image_groups.upsample_labels``, the mapping scoring uses.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from skimage.segmentation import mark_boundaries

from induction.image_groups import upsample_labels

_GOLDEN = 0.618033988749895
SEGMENT_OUTLINE = (0.84, 0.15, 0.16)
MAX_WIDTH = 11.0  # inches: page width at save_figure's 150 dpi


def image_to_float(image: np.ndarray) -> np.ndarray:
    """An RGB image as float64 ``(S, S', 3)`` in [0, 1].

    Accepts integer images (uint8 0..255, uint16 0..65535), float images in [0, 1] (clipped),
    greyscale ``(S, S')`` and RGBA.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[-1] == 4:
        image = image[..., :3]
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float64) / float(np.iinfo(image.dtype).max)
    return np.clip(image.astype(np.float64), 0.0, 1.0)


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel so each group is named by its first element in row-major order (same shape, int64)."""
    labels = np.asarray(labels)
    flat = labels.reshape(-1)
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    return first[inverse].reshape(labels.shape).astype(np.int64)


def label_colours(labels: np.ndarray) -> np.ndarray:
    """An RGB colour per element of ``labels`` (shape ``labels.shape + (3,)``, float in [0, 1]).

    The hue of a group follows its canonical label (golden-ratio spacing), so colours are
    stable across layers and distinct for neighbouring indices.
    """
    import colorsys

    canon = canonical_labels(labels)
    values = np.unique(canon)
    table = {int(v): colorsys.hsv_to_rgb((v * _GOLDEN) % 1.0, 0.75, 0.95) for v in values}
    lookup = np.array([table[int(v)] for v in values])
    return lookup[np.searchsorted(values, canon)]


def as_label_grid(groups: np.ndarray, grid: tuple[int, int] | None = None) -> np.ndarray:
    """A 2-D label map from ``(H, W)`` or flat ``(H*W,)`` labels (flat ones need ``grid``)."""
    groups = np.asarray(groups)
    if groups.ndim == 2:
        return groups
    if groups.ndim == 1:
        if grid is None:
            side = int(round(np.sqrt(groups.size)))
            if side * side != groups.size:
                raise ValueError(f"{groups.size} flat labels: give grid=(H, W)")
            grid = (side, side)
        return groups.reshape(grid)
    raise ValueError(f"labels must be (H, W) or flat, got shape {groups.shape}")


def group_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45,
                  grid: tuple[int, int] | None = None,
                  boundary_colour: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """The image with each group tinted in its colour and group boundaries drawn.

    ``image`` is ``(S, S', 3)``; ``labels`` per patch (``(H, W)`` / flat with ``grid``) or per
    pixel. Returns float64 ``(S, S', 3)`` in [0, 1].
    """
    rgb = image_to_float(image)
    label_map = as_label_grid(labels, grid)
    if label_map.shape != rgb.shape[:2]:
        label_map = upsample_labels(label_map, rgb.shape[:2])
    tinted = (1.0 - alpha) * rgb + alpha * label_colours(label_map)
    return mark_boundaries(tinted, canonical_labels(label_map), color=boundary_colour,
                           mode="inner")


def groups_across_layers_figure(image: np.ndarray, groups: np.ndarray,
                                layers: Sequence[int] | None = None,
                                grid: tuple[int, int] | None = None,
                                title: str | None = None, alpha: float = 0.45) -> Figure:
    """The image, then its group overlay at each chosen layer, in one row.

    ``groups`` has shape ``(L, H*W)`` or ``(L, H, W)`` (patch labels per layer).
    Each panel's title gives the layer and its number of groups.
    """
    groups = np.asarray(groups)
    cols = list(range(groups.shape[0])) if layers is None else list(layers)
    fig, axes = plt.subplots(1, len(cols) + 1, figsize=(2.2 * (len(cols) + 1), 2.6))
    axes[0].imshow(image_to_float(image))
    axes[0].set_title("image", fontsize=10)
    for ax, layer in zip(axes[1:], cols):
        labels = as_label_grid(groups[layer], grid)
        ax.imshow(group_overlay(image, labels, alpha=alpha))
        count = len(np.unique(labels))
        ax.set_title(f"layer {layer}: {count} group{'s' if count != 1 else ''}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- segment tree


def collapse_unary(tree: nx.DiGraph) -> nx.DiGraph:
    """Drop nodes whose only child covers the same patches (a segment unchanged over layers).

    The child is kept (it carries the lowest layer at which the segment exists) and attaches to
    the removed node's parent; the highest such layer is kept as ``top_layer``.
    """
    out = tree.copy()
    for node in list(nx.topological_sort(tree)):
        if node not in out:
            continue
        children = list(out.successors(node))
        if len(children) == 1:
            child = children[0]
            if len(out.nodes[child]["patches"]) == len(out.nodes[node]["patches"]):
                parents = list(out.predecessors(node))
                top = out.nodes[node].get("top_layer", out.nodes[node]["layer"])
                out.nodes[child]["top_layer"] = max(top, out.nodes[child].get("top_layer", 0))
                out.remove_node(node)
                for p in parents:
                    out.add_edge(p, child)
    return out


def hierarchy_layout(tree: nx.DiGraph) -> dict:
    """Positions ``{node: (x, y)}``: y is the node's layer, x places leaves in DFS order and
    each parent at the mean of its children (no crossings)."""
    roots = [n for n in tree.nodes if tree.in_degree(n) == 0]
    pos: dict = {}
    next_x = [0.0]

    def place(node) -> float:
        children = sorted(tree.successors(node),
                          key=lambda c: min(tree.nodes[c]["patches"], default=0))
        if not children:
            x = next_x[0]
            next_x[0] += 1.0
        else:
            x = float(np.mean([place(c) for c in children]))
        pos[node] = (x, float(tree.nodes[node]["layer"]))
        return x

    for root in sorted(roots, key=lambda r: min(tree.nodes[r]["patches"], default=0)):
        place(root)
    return pos


def segment_thumbnail(image: np.ndarray, patches: Sequence[int], grid: tuple[int, int],
                      size: int = 48) -> np.ndarray:
    """The image with everything outside ``patches`` faded towards white and the segment
    outlined, ``(size, size, 3)`` float in [0, 1]."""
    rgb = image_to_float(image)
    mask = np.zeros(grid[0] * grid[1], dtype=bool)
    mask[np.asarray(list(patches), dtype=int)] = True
    pixel_mask = upsample_labels(mask.reshape(grid), rgb.shape[:2])
    faded = np.where(pixel_mask[..., None], rgb, 0.3 * rgb + 0.7)
    rows = (np.arange(size) * rgb.shape[0]) // size
    cols = (np.arange(size) * rgb.shape[1]) // size
    small, small_mask = faded[rows[:, None], cols[None, :]], pixel_mask[rows[:, None], cols[None, :]]
    if small_mask.all():
        return small
    return mark_boundaries(small, small_mask.astype(np.int64), color=SEGMENT_OUTLINE, mode="inner")


def restrict_layers(tree: nx.DiGraph, min_layer: int) -> nx.DiGraph:
    """The part of a (per-layer, uncollapsed) segment tree at layers ``>= min_layer``.

    With one node per group and layer (as :func:`induction.image_groups.segment_tree` builds
    it), the groups of ``min_layer`` become the leaves.
    """
    keep = [n for n in tree.nodes if tree.nodes[n]["layer"] >= min_layer]
    return tree.subgraph(keep).copy()


def auto_min_layer(tree: nx.DiGraph, max_nodes: int) -> int:
    """The lowest layer from which the collapsed tree has at most ``max_nodes`` nodes."""
    layers = sorted({tree.nodes[n]["layer"] for n in tree.nodes})
    for layer in layers:
        if collapse_unary(restrict_layers(tree, layer)).number_of_nodes() <= max_nodes:
            return layer
    return layers[-1]


def segment_tree_figure(tree: nx.DiGraph, image: np.ndarray | None = None,
                        grid: tuple[int, int] | None = None, collapse: bool = True,
                        min_layer: int | None = None, max_nodes: int = 40,
                        title: str | None = None) -> Figure:
    """The segment tree drawn by layer (root on top), leaves ordered left to right.

    Nodes below ``min_layer`` are left out; by default the lowest layer that keeps at most
    ``max_nodes`` segments (the first layers are often all single patches). With ``collapse``
    a segment unchanged over several layers is one node, drawn at its lowest layer. With
    ``image`` and ``grid`` each node shows its segment as a thumbnail, else a dot sized and
    labelled by its number of patches.
    """
    if tree.number_of_nodes() == 0:
        raise ValueError("empty segment tree")
    if min_layer is None:
        min_layer = auto_min_layer(tree, max_nodes)
    shown = restrict_layers(tree, min_layer)
    shown = collapse_unary(shown) if collapse else shown
    pos = hierarchy_layout(shown)
    n_leaves = sum(1 for n in shown if shown.out_degree(n) == 0)
    layers = sorted({shown.nodes[n]["layer"] for n in shown})
    natural = max(4.0, 0.75 * n_leaves + 1.5)
    width = min(MAX_WIDTH, natural)  # many leaves: smaller thumbnails, not a wider figure
    fig, ax = plt.subplots(figsize=(width, 1.1 * len(layers) + 1.5))
    for parent, child in shown.edges:
        (x0, y0), (x1, y1) = pos[parent], pos[child]
        ax.plot([x0, x1], [y0, y1], color="#999999", linewidth=1.0, zorder=1)
    thumbs = image is not None and grid is not None
    for node, (x, y) in pos.items():
        patches = shown.nodes[node]["patches"]
        if thumbs:
            box = OffsetImage(segment_thumbnail(image, patches, grid), zoom=0.9 * width / natural)
            ax.add_artist(AnnotationBbox(box, (x, y), frameon=True, pad=0.1, zorder=3))
        else:
            ax.scatter([x], [y], s=40 + 8 * len(patches), color="#4575b4", zorder=3)
            ax.text(x, y, str(len(patches)), ha="center", va="center", fontsize=7,
                    color="white", zorder=4)
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(layers) - 0.8, max(layers) + 0.8)
    roots = [n for n in shown if shown.in_degree(n) == 0]
    others = [shown.nodes[n]["layer"] for n in shown if n not in roots]
    # segment_tree adds a root one layer above the top when the top layer has several groups
    added_root = (len(roots) == 1 and others and shown.nodes[roots[0]]["layer"] > max(others))
    ax.set_yticks(layers)
    ax.set_yticklabels(["whole image" if added_root and l == layers[-1] else f"layer {l}"
                        for l in layers])
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or f"segment tree ({shown.number_of_nodes()} segments, "
                          f"layers >= {min_layer})", fontsize=11)
    fig.tight_layout()
    return fig
