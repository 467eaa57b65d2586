"""Per-layer link scores: bars under the words (text) and heatmaps on the patch grid (image).

Text links are an array ``links`` of shape ``(L, n-1)`` (float, in (0, 1]): ``links[l, k]`` is the
layer-``l`` affinity between word ``k`` and word ``k+1`` (method.md 1, 5). Image links are
``h`` of shape ``(L, H, W-1)`` (patch ``(r, c)`` to ``(r, c+1)``) and ``v`` of shape
``(L, H-1, W)`` (patch ``(r, c)`` to ``(r+1, c)``).

Because links only strengthen with depth, one threshold read on every layer shows the words
merging into ever larger constituents, as in HiCLIP's Figure 2.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import nltk
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from induction.thresholds import layer_thresholds as per_layer_thresholds

LINK_CMAP = "viridis"
MAX_WIDTH = 11.0  # inches: page width at save_figure's 150 dpi


def _check_text_links(links: np.ndarray, n_words: int | None = None) -> np.ndarray:
    links = np.asarray(links, dtype=float)
    if links.ndim == 1:
        links = links[None, :]
    if links.ndim != 2:
        raise ValueError(f"text links must have shape (L, n-1), got {links.shape}")
    if n_words is not None and links.shape[1] != n_words - 1:
        raise ValueError(f"{n_words} words need {n_words - 1} links per layer, got {links.shape[1]}")
    return links


def layer_thresholds(links: np.ndarray, threshold: float | Sequence[float] | None = None,
                     quantile: float | None = None) -> np.ndarray:
    """One threshold per layer, shape ``(L,)`` (``induction.thresholds.layer_thresholds``).

    ``threshold`` is absolute (a float for every layer, or one per layer); ``quantile`` instead
    takes that quantile of each layer's links (over the words of this sentence), which follows
    the saturation of links with depth. With neither, 0.5 on every layer.
    """
    links = _check_text_links(links) if np.ndim(links) <= 2 else np.asarray(links, float)
    flat = links.reshape(links.shape[0], -1)
    if quantile is not None:
        if threshold is not None:
            raise ValueError("give either threshold or quantile, not both")
        return per_layer_thresholds(flat, quantile, quantile=True)
    return per_layer_thresholds(flat, 0.5 if threshold is None else threshold)


def word_groups(links_at_layer: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Runs of adjacent words joined by links ``>= threshold``: ``[(start, end), ...]`` (end exclusive).

    ``links_at_layer`` has shape ``(n-1,)``; the result covers all ``n`` words in order.
    """
    links_at_layer = np.asarray(links_at_layer, dtype=float).reshape(-1)
    groups, start = [], 0
    for k, value in enumerate(links_at_layer):
        if value < threshold:
            groups.append((start, k + 1))
            start = k + 1
    groups.append((start, len(links_at_layer) + 1))
    return groups


def merge_tree(words: Sequence[str], links: np.ndarray, layer: int | None = None,
               threshold: float | Sequence[float] | None = None,
               quantile: float | None = None) -> nltk.Tree:
    """The constituents merged by layer ``layer``: a tree built bottom-up from the link groups.

    At each layer ``k <= layer`` adjacent words whose link is ``>= threshold[k]`` are joined
    (a join, once made, is kept at every deeper layer, so the layers nest); every group that
    appears at layer ``k`` joining two or more earlier units becomes a node labelled ``"L{k}"``.
    Units not yet joined at ``layer`` hang from a root labelled ``"..."``. ``layer`` defaults to
    the last layer. Words are the leaves, in order.
    """
    words = list(words)
    links = _check_text_links(links, len(words))
    last = links.shape[0] - 1 if layer is None else int(layer)
    if not 0 <= last < links.shape[0]:
        raise ValueError(f"layer {layer} outside 0..{links.shape[0] - 1}")
    thresholds = layer_thresholds(links, threshold, quantile)
    joined = np.logical_or.accumulate(links >= thresholds[:, None], axis=0)
    # units: (start, end, subtree or word)
    units: list[tuple[int, int, nltk.Tree | str]] = [(i, i + 1, w) for i, w in enumerate(words)]
    for k in range(last + 1):
        merged: list[tuple[int, int, nltk.Tree | str]] = []
        for start, end in word_groups(joined[k].astype(float), 0.5):
            inside = [u for u in units if start <= u[0] and u[1] <= end]
            if len(inside) == 1:
                merged.append(inside[0])
            else:
                merged.append((start, end, nltk.Tree(f"L{k}", [u[2] for u in inside])))
        units = merged
    if len(units) == 1 and isinstance(units[0][2], nltk.Tree):
        return units[0][2]
    return nltk.Tree("...", [u[2] for u in units])


def link_bars_figure(words: Sequence[str], links: np.ndarray,
                     threshold: float | Sequence[float] | None = None,
                     quantile: float | None = None, layers: Sequence[int] | None = None,
                     title: str | None = None) -> Figure:
    """Words on top, one row per layer beneath: a bar per word gap, the merged groups shaded.

    Bar height and colour are the link score (colour bar on the right); the dashed line, labelled
    with its value, is that layer's threshold; grey rounded boxes are the groups of adjacent words
    linked above it, so the rows read as the constituents merging layer by layer. ``layers``
    picks rows (default all, layer 0 on top).
    """
    words = list(words)
    links = _check_text_links(links, len(words))
    thresholds = layer_thresholds(links, threshold, quantile)
    rows = list(range(links.shape[0])) if layers is None else list(layers)
    n = len(words)
    cmap = plt.get_cmap(LINK_CMAP)
    natural = max(4.0, 0.85 * n + 1.5)
    width = min(MAX_WIDTH, natural)  # long captions: a smaller font, not a wider figure
    font = max(6.0, 10.0 * width / natural)
    fig, axes = plt.subplots(len(rows) + 1, 1, squeeze=False, sharex=True,
                             figsize=(width, 0.75 * (len(rows) + 1) + 0.6),
                             gridspec_kw={"height_ratios": [0.6] + [1.0] * len(rows)})
    axes = axes[:, 0]
    top = axes[0]
    for i, word in enumerate(words):
        top.text(i, 0.3, word, ha="center", va="center", fontsize=font)
    top.set_ylim(0, 1)
    top.axis("off")
    if title:
        top.set_title(title, fontsize=11)
    gaps = np.arange(n - 1) + 0.5
    for ax, layer in zip(axes[1:], rows):
        values, tau = links[layer], thresholds[layer]
        for start, end in word_groups(values, tau):
            ax.add_patch(FancyBboxPatch((start - 0.42, 0.02), end - start - 0.16, 0.96,
                                        boxstyle="round,pad=0.0,rounding_size=0.12",
                                        facecolor="#e6e6e6", edgecolor="#9a9a9a", linewidth=0.8,
                                        zorder=0))
        ax.bar(gaps, values, width=0.35, color=cmap(values), edgecolor="black", linewidth=0.4,
               zorder=2)
        ax.axhline(tau, color="#d73027", linestyle="--", linewidth=0.8, zorder=3)
        ax.text(n - 0.45, tau, f" threshold {tau:.2f}", color="#d73027", fontsize=7, va="center",
                ha="left", clip_on=False)
        ax.set_ylim(0, 1.0)
        ax.set_yticks([0, 1])
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel(f"layer {layer}", rotation=0, ha="right", va="center", fontsize=9)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[-1].set_xticks(range(n))
    axes[-1].set_xticklabels(words, rotation=45, ha="right", fontsize=font - 1)
    axes[-1].set_xlim(-0.6, n - 0.4)
    fig.tight_layout(h_pad=0.2, rect=(0, 0, 0.86, 1))
    colour_bar = fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap=cmap),
                              ax=list(axes[1:]), fraction=0.025, pad=0.09)
    colour_bar.set_label("link", fontsize=8)
    colour_bar.ax.tick_params(labelsize=7)
    return fig


def _check_grid_links(h: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, v = np.asarray(h, dtype=float), np.asarray(v, dtype=float)
    if h.ndim == 2:
        h, v = h[None], v[None]
    if h.ndim != 3 or v.ndim != 3:
        raise ValueError(f"grid links must be h (L,H,W-1) and v (L,H-1,W), got {h.shape}, {v.shape}")
    n_layers, rows, cols_minus = h.shape
    if v.shape != (n_layers, rows - 1, cols_minus + 1):
        raise ValueError(f"h {h.shape} and v {v.shape} do not describe the same (L, H, W) grid")
    return h, v


def link_grid(h_layer: np.ndarray, v_layer: np.ndarray) -> np.ndarray:
    """Both link directions of one layer in one ``(2H-1, 2W-1)`` float array.

    Cell ``(2r, 2c)`` is patch ``(r, c)`` (NaN), ``(2r, 2c+1)`` the link to its right neighbour,
    ``(2r+1, 2c)`` the link to the patch below, odd/odd cells NaN: an image of the grid graph.
    """
    h_layer, v_layer = np.asarray(h_layer, float), np.asarray(v_layer, float)
    rows, cols = h_layer.shape[0], h_layer.shape[1] + 1
    grid = np.full((2 * rows - 1, 2 * cols - 1), np.nan)
    grid[0::2, 1::2] = h_layer
    grid[1::2, 0::2] = v_layer
    return grid


def boundary_segments(h_layer: np.ndarray, v_layer: np.ndarray, height: float, width: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The patch boundary crossed by each link, in image coordinates.

    Returns ``segments`` (K, 2, 2) float (``[[x0, y0], [x1, y1]]`` per link; K = all h then all v
    links, row-major) and ``values`` (K,) the link scores, for an image ``height`` x ``width``.
    """
    h_layer, v_layer = np.asarray(h_layer, float), np.asarray(v_layer, float)
    rows, cols = h_layer.shape[0], h_layer.shape[1] + 1
    ph, pw = height / rows, width / cols
    r, c = np.meshgrid(np.arange(rows), np.arange(cols - 1), indexing="ij")
    x = (c + 1) * pw
    h_seg = np.stack([np.stack([x, r * ph], -1), np.stack([x, (r + 1) * ph], -1)], -2)
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols), indexing="ij")
    y = (r + 1) * ph
    v_seg = np.stack([np.stack([c * pw, y], -1), np.stack([(c + 1) * pw, y], -1)], -2)
    segments = np.concatenate([h_seg.reshape(-1, 2, 2), v_seg.reshape(-1, 2, 2)])
    values = np.concatenate([h_layer.reshape(-1), v_layer.reshape(-1)])
    return segments, values


def link_heatmaps_figure(h: np.ndarray, v: np.ndarray, layers: Sequence[int] | None = None,
                         image: np.ndarray | None = None, title: str | None = None) -> Figure:
    """Heatmaps of the horizontal and vertical links on the patch grid, one column per layer.

    Rows: ``h`` links (H x W-1), ``v`` links (H-1 x W), and the links drawn on the patch
    boundaries they cross (over ``image`` ``(S, S, 3)`` when given): a weak link is a thick,
    dark boundary, a strong one a thin bright line, so the segments show as enclosed regions.
    """
    h, v = _check_grid_links(h, v)
    cols = list(range(h.shape[0])) if layers is None else list(layers)
    n_rows = 3
    fig, axes = plt.subplots(n_rows, len(cols), squeeze=False,
                             figsize=(2.1 * len(cols) + 0.8, 2.1 * n_rows + 0.4))
    cmap = plt.get_cmap(LINK_CMAP)
    grid_rows, grid_cols = h.shape[1], h.shape[2] + 1
    if image is not None:
        image = np.asarray(image)
        height, width = image.shape[:2]
    else:
        height, width = grid_rows, grid_cols
    mappable = None
    for j, layer in enumerate(cols):
        mappable = axes[0, j].imshow(h[layer], cmap=LINK_CMAP, vmin=0, vmax=1,
                                     interpolation="nearest")
        axes[1, j].imshow(v[layer], cmap=LINK_CMAP, vmin=0, vmax=1, interpolation="nearest")
        ax = axes[2, j]
        if image is not None:
            ax.imshow(image, alpha=0.55)
        else:
            ax.imshow(np.ones((grid_rows, grid_cols)), cmap="gray", vmin=0, vmax=1,
                      extent=(0, width, height, 0))
        segments, values = boundary_segments(h[layer], v[layer], height, width)
        ax.add_collection(LineCollection(segments, colors=cmap(values),
                                         linewidths=0.4 + 3.0 * (1.0 - values)))
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        axes[0, j].set_title(f"layer {layer}", fontsize=10)
        for i in range(n_rows):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    axes[0, 0].set_ylabel("h links", fontsize=9)
    axes[1, 0].set_ylabel("v links", fontsize=9)
    axes[2, 0].set_ylabel("on boundaries", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    if mappable is not None:
        fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.6, label="link")
    return fig
