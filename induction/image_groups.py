"""Image groups from per-layer patch links (method.md section 5, "Image groups").

A Group-Transformer layer ``l`` gives, for a grid of ``H x W`` patches in row-major order,
horizontal links ``h[l, r, c]`` joining patch ``(r, c)`` to ``(r, c + 1)`` and vertical links
``v[l, r, c]`` joining ``(r, c)`` to ``(r + 1, c)``, all in ``(0, 1]`` and non-decreasing over
layers. This module turns them into

* flat groups per layer: join every 4-connected pair whose link is at least a threshold and take
  connected components (:func:`groups_at_threshold`, :func:`layer_groups`);
* a segment tree over the layers (:func:`segment_tree`), serialised as the prediction-JSONL form
  ``{"nodes": [{"id", "parent", "layer", "patches"}]}`` (:func:`tree_to_json`,
  :func:`tree_from_json`);
* a continuous alternative, single-linkage merging in order of summed affinity
  (:func:`single_linkage` -> :class:`Dendrogram`);
* pixel label maps: nearest upsampling of the patch grid (:func:`upsample_labels`), snapping to
  SLIC superpixels (:func:`snap_to_superpixels`) and uint16 PNG input/output.

Label maps are integer arrays whose labels are ``0 .. K-1`` numbered in raster order of first
appearance (:func:`relabel_raster`), so equal partitions always give equal arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import networkx as nx
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hiclip.errors import HiCLIPError
from induction.thresholds import layer_thresholds as per_layer_thresholds

__all__ = [
    "Dendrogram",
    "grid_edges",
    "groups_at_threshold",
    "layer_groups",
    "layer_thresholds",
    "load_label_map_png",
    "relabel_raster",
    "save_label_map_png",
    "segment_tree",
    "single_linkage",
    "snap_to_superpixels",
    "tree_from_json",
    "tree_to_json",
    "upsample_labels",
]


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
def relabel_raster(labels: np.ndarray) -> np.ndarray:
    """Renumber labels ``0 .. K-1`` in raster (row-major) order of first appearance.

    Parameters
    ----------
    labels : ndarray of int, any shape
        Any integer labels (negative values allowed).

    Returns
    -------
    ndarray of int64, same shape
        The same partition with label ``k`` given to the ``k``-th distinct label met when
        reading ``labels.ravel()``.
    """
    labels = np.asarray(labels)
    flat = labels.ravel()
    if flat.size == 0:
        return np.zeros(labels.shape, dtype=np.int64)
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.ravel()].reshape(labels.shape)


def _check_links(h_links: np.ndarray, v_links: np.ndarray, layered: bool) -> tuple[int, int]:
    """Validate link shapes; return the patch grid ``(H, W)``."""
    nd = 3 if layered else 2
    what = "(L, H, W-1) and (L, H-1, W)" if layered else "(H, W-1) and (H-1, W)"
    if h_links.ndim != nd or v_links.ndim != nd:
        raise HiCLIPError(
            f"links must have shapes {what}; got h {h_links.shape} and v {v_links.shape}"
        )
    grid_h, grid_w = h_links.shape[-2], h_links.shape[-1] + 1
    if v_links.shape[-2:] != (grid_h - 1, grid_w) or (layered and h_links.shape[0] != v_links.shape[0]):
        raise HiCLIPError(
            f"links must have shapes {what}; got h {h_links.shape} and v {v_links.shape}, "
            f"which do not describe one grid"
        )
    if grid_h < 1 or grid_w < 1:
        raise HiCLIPError(f"empty patch grid: h {h_links.shape}, v {v_links.shape}")
    if np.isnan(h_links).any() or np.isnan(v_links).any():
        raise HiCLIPError("links contain NaN")
    return grid_h, grid_w


def grid_edges(grid_h: int, grid_w: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat patch indices of the endpoints of every grid edge, horizontal edges first.

    Returns ``(src, dst)``, each of length ``H*(W-1) + (H-1)*W``, in the order of
    ``np.concatenate([h.ravel(), v.ravel()])``.
    """
    index = np.arange(grid_h * grid_w).reshape(grid_h, grid_w)
    src = np.concatenate([index[:, :-1].ravel(), index[:-1, :].ravel()])
    dst = np.concatenate([index[:, 1:].ravel(), index[1:, :].ravel()])
    return src, dst


def _components(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Connected components of an undirected graph given by an edge list (int64 labels)."""
    graph = coo_matrix(
        (np.ones(src.size, dtype=np.int8), (src, dst)), shape=(n_nodes, n_nodes)
    ).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Flat groups
# ---------------------------------------------------------------------------------------------
def groups_at_threshold(h_links: np.ndarray, v_links: np.ndarray, tau: float) -> np.ndarray:
    """Patch groups of one layer: components of the links ``>= tau``.

    Parameters
    ----------
    h_links : ndarray of float, shape (H, W-1)
        Horizontal links, ``h_links[r, c]`` joins patch ``(r, c)`` and ``(r, c+1)``.
    v_links : ndarray of float, shape (H-1, W)
        Vertical links, ``v_links[r, c]`` joins patch ``(r, c)`` and ``(r+1, c)``.
    tau : float
        Join every 4-connected pair whose link is ``>= tau``.

    Returns
    -------
    labels : ndarray of int64, shape (H, W)
        Group labels ``0 .. K-1`` in raster order of first appearance.
    """
    h_links = np.asarray(h_links, dtype=np.float64)
    v_links = np.asarray(v_links, dtype=np.float64)
    _check_links(h_links, v_links, layered=False)
    return layer_groups(h_links[None], v_links[None], tau)[0]


def layer_thresholds(
    h_links: np.ndarray, v_links: np.ndarray, tau: float, quantile: bool = False
) -> np.ndarray:
    """The absolute threshold used at each layer.

    Parameters
    ----------
    h_links, v_links : ndarray of float, shapes (L, H, W-1) and (L, H-1, W)
    tau : float
        An absolute threshold, or with ``quantile=True`` a quantile in ``[0, 1]`` of each
        layer's links (all ``H*(W-1) + (H-1)*W`` of them). Links saturate with depth, so a
        quantile keeps the meaning of the threshold comparable across layers.
    quantile : bool

    Returns
    -------
    ndarray of float64, shape (L,)
        A single patch has no links: then every layer's quantile threshold is
        ``induction.thresholds.NO_LINKS`` (nothing to join either way).
    """
    n_layers = h_links.shape[0]
    links = np.concatenate([h_links.reshape(n_layers, -1), v_links.reshape(n_layers, -1)], axis=1)
    return per_layer_thresholds(links, tau, quantile)


def layer_groups(
    h_links: np.ndarray,
    v_links: np.ndarray,
    tau: float,
    quantile: bool = False,
    nested: bool = True,
) -> np.ndarray:
    """Patch groups at every layer.

    Parameters
    ----------
    h_links : ndarray of float, shape (L, H, W-1)
    v_links : ndarray of float, shape (L, H-1, W)
    tau : float
        Absolute link threshold, or a per-layer quantile of the links when ``quantile=True``
        (see :func:`layer_thresholds`).
    quantile : bool
        Interpret ``tau`` as a quantile per layer.
    nested : bool
        Keep a pair joined at every layer above the first one that joins it. With an absolute
        threshold and non-decreasing links (the model's guarantee) this changes nothing; with
        quantile thresholds (which rise with depth) or arbitrary input it makes the layers nest,
        as :func:`segment_tree` requires. ``False`` gives each layer's own components.

    Returns
    -------
    labels : ndarray of int64, shape (L, H, W)
        Per layer, group labels ``0 .. K_l - 1`` in raster order of first appearance.
        Layer 0 is the lowest (finest) layer.
    """
    h_links = np.asarray(h_links, dtype=np.float64)
    v_links = np.asarray(v_links, dtype=np.float64)
    grid_h, grid_w = _check_links(h_links, v_links, layered=True)
    n_layers = h_links.shape[0]
    n_patches = grid_h * grid_w
    thresholds = layer_thresholds(h_links, v_links, tau, quantile)
    links = np.concatenate(
        [h_links.reshape(n_layers, -1), v_links.reshape(n_layers, -1)], axis=1
    )  # (L, E) in grid_edges order
    joined = links >= thresholds[:, None]
    if nested:
        joined = np.logical_or.accumulate(joined, axis=0)
    src, dst = grid_edges(grid_h, grid_w)
    # One graph holding every layer, layer l's patches offset by l * N: one components call.
    layer_idx, edge_idx = np.nonzero(joined)
    offset = layer_idx * n_patches
    components = _components(n_layers * n_patches, src[edge_idx] + offset, dst[edge_idx] + offset)
    components = components.reshape(n_layers, grid_h, grid_w)
    return np.stack([relabel_raster(layer) for layer in components])


# ---------------------------------------------------------------------------------------------
# Segment tree
# ---------------------------------------------------------------------------------------------
def segment_tree(layer_labels: np.ndarray) -> nx.DiGraph:
    """The segment tree formed by nested per-layer groups.

    Parameters
    ----------
    layer_labels : ndarray of int, shape (L, H, W) or (L, N)
        Per-layer patch group labels, layer 0 lowest (finest); the groups of layer ``l+1`` must
        be unions of groups of layer ``l``.

    Returns
    -------
    tree : networkx.DiGraph
        One node per (layer, group), with attributes ``layer`` (int) and ``patches`` (sorted
        list of flat row-major patch indices); edges go parent -> child, from each group of
        layer ``l+1`` to the groups of layer ``l`` it contains. A group that survives a layer
        unchanged appears once per layer (a unary chain). The root is the single top-layer
        group, or, when the top layer has several groups, an added node of layer ``L`` covering
        every patch. ``tree.graph`` holds ``root`` (node id) and ``n_patches``. Node ids are
        ``0 .. n-1``, top-down (root 0), groups of a layer in label order.

    Raises
    ------
    HiCLIPError
        If a group of one layer is split across groups of the next one (the layers do not nest,
        e.g. links that weaken with depth and ``layer_groups(..., nested=False)``).
    """
    labels = np.asarray(layer_labels)
    if labels.ndim == 3:
        labels = labels.reshape(labels.shape[0], -1)
    if labels.ndim != 2 or labels.shape[0] < 1 or labels.shape[1] < 1:
        raise HiCLIPError(f"layer labels must have shape (L, H, W) or (L, N); got {np.shape(layer_labels)}")
    labels = np.stack([relabel_raster(layer) for layer in labels])
    n_layers, n_patches = labels.shape

    # parent_of[l][g] = group of layer l+1 containing group g of layer l
    parent_of: list[np.ndarray] = []
    for layer in range(n_layers - 1):
        child, parent = labels[layer], labels[layer + 1]
        n_child = int(child.max()) + 1
        pairs = np.unique(child * (int(parent.max()) + 1) + parent)
        pair_child = pairs // (int(parent.max()) + 1)
        if pairs.size != n_child:
            split = int(pair_child[np.flatnonzero(np.diff(pair_child) == 0)[0]])
            n_parts = int((pair_child == split).sum())
            raise HiCLIPError(
                f"groups are not nested: group {split} of layer {layer} is split across "
                f"{n_parts} groups of layer {layer + 1} (links must not weaken with depth)"
            )
        parent_of.append(pairs % (int(parent.max()) + 1))

    tree = nx.DiGraph(n_patches=n_patches)
    top_groups = int(labels[-1].max()) + 1
    next_id = 0
    if top_groups > 1:
        tree.add_node(0, layer=n_layers, patches=list(range(n_patches)))
        next_id = 1
    ids: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * n_layers
    for layer in range(n_layers - 1, -1, -1):
        n_groups = int(labels[layer].max()) + 1
        ids[layer] = np.arange(next_id, next_id + n_groups)
        next_id += n_groups
        order = np.argsort(labels[layer], kind="stable")
        bounds = np.searchsorted(labels[layer][order], np.arange(n_groups + 1))
        for group in range(n_groups):
            node = int(ids[layer][group])
            patches = np.sort(order[bounds[group] : bounds[group + 1]]).tolist()
            tree.add_node(node, layer=layer, patches=patches)
            if layer == n_layers - 1:
                if top_groups > 1:
                    tree.add_edge(0, node)
            else:
                tree.add_edge(int(ids[layer + 1][parent_of[layer][group]]), node)
    tree.graph["root"] = 0
    return tree


def tree_to_json(tree: nx.DiGraph) -> dict[str, list[dict[str, Any]]]:
    """Serialise a segment tree to ``{"nodes": [{"id", "parent", "layer", "patches"}]}``.

    Nodes are listed in ascending id; ``parent`` is ``None`` for the root.
    """
    nodes = []
    for node in sorted(tree.nodes):
        parents = list(tree.predecessors(node))
        nodes.append(
            {
                "id": int(node),
                "parent": int(parents[0]) if parents else None,
                "layer": int(tree.nodes[node]["layer"]),
                "patches": [int(p) for p in tree.nodes[node]["patches"]],
            }
        )
    return {"nodes": nodes}


def tree_from_json(obj: dict[str, Any], n_patches: int | None = None) -> nx.DiGraph:
    """Read a segment tree written by :func:`tree_to_json`, checking that it is one.

    Parameters
    ----------
    obj : dict
        ``{"nodes": [{"id": int, "parent": int | None, "layer": int, "patches": [int, ...]}]}``.
    n_patches : int, optional
        When given, the root must cover exactly ``range(n_patches)``.

    Raises
    ------
    HiCLIPError
        On missing keys, unknown parents, several roots or cycles, or a child whose patches are
        not contained in its parent's.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("nodes"), list):
        raise HiCLIPError('a segment tree must be an object {"nodes": [...]}')
    tree = nx.DiGraph()
    for k, node in enumerate(obj["nodes"]):
        if not isinstance(node, dict) or not {"id", "parent", "layer", "patches"} <= node.keys():
            raise HiCLIPError(f"segment tree node {k} needs keys id, parent, layer, patches")
        if node["id"] in tree:
            raise HiCLIPError(f"segment tree node id {node['id']} appears twice")
        tree.add_node(node["id"], layer=int(node["layer"]), patches=sorted(int(p) for p in node["patches"]))
    roots = []
    for node in obj["nodes"]:
        parent = node["parent"]
        if parent is None:
            roots.append(node["id"])
            continue
        if parent not in tree:
            raise HiCLIPError(f"segment tree node {node['id']} has unknown parent {parent}")
        if not set(tree.nodes[node["id"]]["patches"]) <= set(tree.nodes[parent]["patches"]):
            raise HiCLIPError(
                f"segment tree node {node['id']} has patches outside its parent {parent}"
            )
        tree.add_edge(parent, node["id"])
    if len(roots) != 1 or not nx.is_arborescence(tree):
        raise HiCLIPError(f"segment tree must have exactly one root and no cycles; roots {roots}")
    root = roots[0]
    if n_patches is not None and tree.nodes[root]["patches"] != list(range(n_patches)):
        raise HiCLIPError(f"segment tree root does not cover the {n_patches} patches")
    tree.graph["root"] = root
    tree.graph["n_patches"] = len(tree.nodes[root]["patches"])
    return tree


# ---------------------------------------------------------------------------------------------
# Single linkage over summed affinity
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dendrogram:
    """Single-linkage merges of a patch grid, strongest affinity first.

    Attributes
    ----------
    grid : tuple of int
        ``(H, W)``; patches are flat row-major indices ``0 .. H*W-1``.
    edges : ndarray of int64, shape (M, 2)
        The patch pairs whose link caused each merge, in merge order (a maximum spanning tree of
        the grid, ``M = H*W - 1``).
    affinity : ndarray of float64, shape (M,)
        The summed affinity of each merge, non-increasing.
    """

    grid: tuple[int, int]
    edges: np.ndarray
    affinity: np.ndarray

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def cut(self, n_segments: int) -> np.ndarray:
        """Labels after all but the last ``n_segments - 1`` merges.

        Parameters
        ----------
        n_segments : int
            Number of segments, clipped to ``[1, H*W]``.

        Returns
        -------
        ndarray of int64, shape (H, W)
            Labels ``0 .. n_segments-1`` in raster order of first appearance.
        """
        k = int(np.clip(n_segments, 1, self.n_patches))
        used = self.edges[: self.n_patches - k]
        labels = _components(self.n_patches, used[:, 0], used[:, 1])
        return relabel_raster(labels.reshape(self.grid))

    def linkage_matrix(self) -> np.ndarray:
        """The merges as a SciPy linkage matrix (for ``scipy.cluster.hierarchy.dendrogram``).

        Returns
        -------
        ndarray of float64, shape (H*W - 1, 4)
            Rows ``[cluster_a, cluster_b, distance, size]`` with SciPy's cluster numbering and
            ``distance = max(affinity) - affinity`` (non-decreasing, 0 for the first merge).
        """
        parent = np.arange(self.n_patches)
        cluster = np.arange(self.n_patches)  # SciPy cluster id held by each union-find root
        size = np.ones(self.n_patches, dtype=np.int64)

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        top = float(self.affinity.max()) if self.affinity.size else 0.0
        rows = np.zeros((self.edges.shape[0], 4))
        for m, (a, b) in enumerate(self.edges):
            ra, rb = find(int(a)), find(int(b))
            rows[m] = [min(cluster[ra], cluster[rb]), max(cluster[ra], cluster[rb]),
                       top - self.affinity[m], size[ra] + size[rb]]
            parent[rb] = ra
            size[ra] += size[rb]
            cluster[ra] = self.n_patches + m
        return rows


def single_linkage(
    h_links: np.ndarray, v_links: np.ndarray, weights: Sequence[float] | np.ndarray | None = None
) -> Dendrogram:
    """Single-linkage merging of patches in order of affinity summed over layers.

    Parameters
    ----------
    h_links : ndarray of float, shape (L, H, W-1)
    v_links : ndarray of float, shape (L, H-1, W)
    weights : sequence of float, length L, optional
        Per-layer weights of the sum (default all 1). The pair with the highest
        ``sum_l w_l * a^l`` merges first; ties are broken by edge order (horizontal links in
        raster order, then vertical links), so the result is deterministic.

    Returns
    -------
    Dendrogram
        ``H*W - 1`` merges (Kruskal's maximum spanning tree of the 4-connected grid).
    """
    h_links = np.asarray(h_links, dtype=np.float64)
    v_links = np.asarray(v_links, dtype=np.float64)
    grid_h, grid_w = _check_links(h_links, v_links, layered=True)
    n_layers = h_links.shape[0]
    w = np.ones(n_layers) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n_layers,):
        raise HiCLIPError(f"need one weight per layer ({n_layers}); got shape {w.shape}")
    score = np.tensordot(w, np.concatenate(
        [h_links.reshape(n_layers, -1), v_links.reshape(n_layers, -1)], axis=1), axes=1)
    src, dst = grid_edges(grid_h, grid_w)
    order = np.argsort(-score, kind="stable")
    parent = np.arange(grid_h * grid_w)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    kept: list[int] = []
    for e in order:
        ra, rb = find(int(src[e])), find(int(dst[e]))
        if ra != rb:
            parent[rb] = ra
            kept.append(int(e))
            if len(kept) == grid_h * grid_w - 1:
                break
    kept_idx = np.asarray(kept, dtype=np.int64)
    return Dendrogram(
        grid=(grid_h, grid_w),
        edges=np.stack([src[kept_idx], dst[kept_idx]], axis=1).astype(np.int64).reshape(-1, 2),
        affinity=score[kept_idx],
    )


# ---------------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------------
def upsample_labels(patch_labels: np.ndarray, size: tuple[int, int], centre_crop: bool = False) -> np.ndarray:
    """Nearest upsampling of a patch label grid to an image of ``size = (height, width)``.

    Each pixel takes the label of the patch under its centre. By default the patch grid covers
    the whole image (the image was resized, not cropped): pixel row ``y`` maps to patch row
    ``floor((y + 0.5) * H / height)``. Works for any size, multiple of the grid or not (e.g. 8
    patches over 60 pixels: rows of 7 or 8 pixels).

    With ``centre_crop=True`` the grid covers the centre square of side ``min(height, width)``,
    which is what the model saw through the evaluation transform (shorter side resized, centre
    crop); pixels outside that square (non-square images) take the nearest border patch.

    Parameters
    ----------
    patch_labels : ndarray of int, shape (H, W)
    size : (int, int)
        ``(height, width)`` of the image in pixels, each ``>= 1``.
    centre_crop : bool
        Map the grid onto the centre square instead of the whole image.

    Returns
    -------
    ndarray, shape (height, width), dtype of ``patch_labels``
    """
    patch_labels = np.asarray(patch_labels)
    if patch_labels.ndim != 2:
        raise HiCLIPError(f"patch labels must be 2-D (H, W); got shape {patch_labels.shape}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise HiCLIPError(f"image size must be positive; got {size}")
    grid_h, grid_w = patch_labels.shape
    if centre_crop:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        rows = np.clip(((2 * (np.arange(height) - top) + 1) * grid_h) // (2 * side), 0, grid_h - 1)
        cols = np.clip(((2 * (np.arange(width) - left) + 1) * grid_w) // (2 * side), 0, grid_w - 1)
    else:
        rows = np.minimum(((2 * np.arange(height) + 1) * grid_h) // (2 * height), grid_h - 1)
        cols = np.minimum(((2 * np.arange(width) + 1) * grid_w) // (2 * width), grid_w - 1)
    return patch_labels[rows[:, None], cols[None, :]]


def snap_to_superpixels(
    label_map: np.ndarray,
    image: np.ndarray,
    n_segments: int = 100,
    compactness: float = 10.0,
    superpixels: np.ndarray | None = None,
) -> np.ndarray:
    """Merged superpixel groups: each SLIC superpixel takes the group covering most of it.

    Parameters
    ----------
    label_map : ndarray of int, shape (height, width)
        Pixel group labels (e.g. from :func:`upsample_labels`).
    image : ndarray, shape (height, width, 3) or (height, width)
        The image, uint8 or float in ``[0, 1]``.
    n_segments : int
        SLIC's approximate number of superpixels.
    compactness : float
        SLIC's colour/space trade-off (higher: more square superpixels).
    superpixels : ndarray of int, shape (height, width), optional
        Precomputed superpixels; then ``n_segments`` and ``compactness`` are unused.

    Returns
    -------
    ndarray of int64, shape (height, width)
        Labels ``0 .. K-1`` in raster order. Ties go to the lowest group label. A group that
        wins no superpixel disappears, so ``K`` can be smaller than in ``label_map``.
    """
    from skimage.segmentation import slic
    from skimage.util import img_as_float

    label_map = np.asarray(label_map)
    image = np.asarray(image)
    if image.shape[:2] != label_map.shape:
        raise HiCLIPError(
            f"image {image.shape[:2]} and label map {label_map.shape} differ in size"
        )
    if superpixels is None:
        channel_axis = -1 if image.ndim == 3 else None
        superpixels = slic(img_as_float(image), n_segments=n_segments, compactness=compactness,
                           start_label=0, channel_axis=channel_axis)
    elif superpixels.shape != label_map.shape:
        raise HiCLIPError(f"superpixels {superpixels.shape} and label map {label_map.shape} differ")
    sp = relabel_raster(superpixels).ravel()
    groups = relabel_raster(label_map).ravel()
    n_groups = int(groups.max()) + 1
    table = np.bincount(sp * n_groups + groups, minlength=(int(sp.max()) + 1) * n_groups)
    winner = table.reshape(-1, n_groups).argmax(axis=1)
    return relabel_raster(winner[sp].reshape(label_map.shape))


def save_label_map_png(labels: np.ndarray, path: str | Path) -> None:
    """Write a label map as a 16-bit greyscale PNG.

    Parameters
    ----------
    labels : ndarray of int, shape (height, width)
        Values in ``[0, 65535]``.
    path : str or Path
        Destination; parent folders are created.
    """
    from PIL import Image

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise HiCLIPError(f"a label map must be 2-D; got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise HiCLIPError(f"label values must lie in [0, 65535] for a uint16 PNG: {path}")
    from hiclip.atomic import atomic_path

    with atomic_path(path, fsync=False) as tmp:  # complete or absent, like every output
        Image.fromarray(labels.astype(np.uint16)).save(tmp, format="PNG")


def load_label_map_png(path: str | Path) -> np.ndarray:
    """Read a label map PNG (8- or 16-bit greyscale) as an int64 array of shape (height, width)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError) as error:
        raise HiCLIPError(f"{path}: cannot read label map PNG ({error})") from None
    if array.ndim != 2:
        raise HiCLIPError(f"{path}: a label map must be single-channel; got shape {array.shape}")
    return array.astype(np.int64)
