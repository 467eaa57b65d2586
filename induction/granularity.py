"""Image partitions scored at the ground truth's granularity (method.md 6, "at the gt granularity").

The best-layer table lets each method pick the layer that suits it; here every method is cut into
exactly as many segments as each ground-truth level has, ``k = gt segments + 1`` (the background
is one segment), so methods are compared at one granularity:

``model single linkage``
    Single-linkage merging over the links summed across layers (method.md 5's continuous
    alternative, :func:`induction.image_groups.single_linkage`), cut at ``k``.
``model layer cut``
    The union-find layer (method.md 5) whose number of groups is nearest ``k`` (ties: the lower
    layer). Its count is whatever that layer has, so it is reported next to the scores.
``model single linkage+superpixels``
    (``snap_superpixels``) the single-linkage cut snapped to SLIC superpixels.
``colour single linkage``
    A no-learning partition on the model's patch grid: single linkage over minus the distance
    of neighbouring patches' RGB mean and std (the edge probe's colour affinity below), cut at
    ``k``: what the grid allows to a model that only compares patch colours.
baselines
    Every segmentation baseline (:mod:`induction.segment_baselines`) run at ``k``.

Besides the scores at ``k`` (ARI, FG-ARI, mIoU, boundary recall):

- a k-free hierarchy score, ARI averaged over ``k = k_min .. k_max`` (per image, then over
  images), one number per method and gt level;
- the patch-grid ceiling: each patch of the model's grid (and of a grid twice as fine) takes the
  majority gt label of its pixels, which is the best any partition on that grid can do;
- an edge probe: the AUC with which a link separates neighbouring patches of one gt segment
  (same majority label) from neighbours across a boundary, for the model's links summed over
  layers and for a no-learning baseline, the distance between the patches' colour mean and
  standard deviation (smaller distance = stronger link).

:func:`evaluate_granularity` is the report section ``gt_granularity`` that
``induction.group_evaluation.evaluate_groups`` adds when ``GroupEvalOptions.granularity`` is on, so
``hiclip score groups`` and the demo report show the same numbers from this one function.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.stats import rankdata

from hiclip.errors import HiCLIPError
from induction.group_metrics import GroupScores, adjusted_rand_index, mean_scores, score_segmentation
from induction.image_groups import grid_edges, single_linkage, snap_to_superpixels, upsample_labels
from induction.predictions import PredictionRecord
from induction.segment_baselines import baseline_segments

SECTION = "gt_granularity"
SINGLE_LINKAGE = "model single linkage"
LAYER_CUT = "model layer cut"
SNAPPED_LINKAGE = "model single linkage+superpixels"
COLOUR_LINKAGE = "colour single linkage"
LINKS = "model links (summed over layers)"
COLOUR = "colour mean+std distance"
SCORES = ("miou", "ari", "fg_ari", "boundary_recall", "n_segments", "n_gt_segments")
HEADERS = ("mIoU", "ARI", "FG-ARI", "BR@2px", "#seg", "#gt")
DEFINITIONS = {
    "k": "gt segments (label > 0) + 1 for the background, per image and gt level",
    SINGLE_LINKAGE: "single linkage over the links summed across layers, cut at k segments",
    LAYER_CUT: "the union-find layer whose number of groups is nearest k (ties: the lower layer)",
    SNAPPED_LINKAGE: "the single-linkage cut at k, each SLIC superpixel taking its majority group",
    COLOUR_LINKAGE: "no learning: single linkage on the model's patch grid over minus the distance of "
                    "neighbouring patches' RGB mean and std, cut at k",
    "baselines": "each baseline run at k on the image resized to baseline_size px on the longer side",
    "ari_over_k": "ARI of the partition at k, averaged over k = k_min..k_max, then over images",
    "ceiling": "each patch of the grid takes the majority gt label of its pixels (the best any "
               "partition on that grid can reach); the model's grid and one twice as fine",
    "edge_auc": "AUC separating 4-neighbour patch pairs with the same majority gt label (positive) "
                "from pairs across a boundary, pooled over images; links summed over layers, or "
                "minus the Euclidean distance of the patches' RGB mean and std (in [0, 1])",
}


class ScoredImage(Protocol):
    """What is read of one scored image (``induction.group_evaluation.ImageItem``)."""

    record: PredictionRecord
    masks: Mapping[str, np.ndarray]     # gt level -> (height, width) int64
    levels: Mapping[int, np.ndarray]    # model layer -> (height, width) labels

    @property
    def size(self) -> tuple[int, int]: ...

    def n_segments(self, level: int) -> int: ...

    def image(self) -> np.ndarray: ...


@dataclass
class GranularityOptions:
    """What the section computes (set from ``GroupEvalOptions``)."""

    baselines: tuple[str, ...] = ()
    baseline_size: int | None = 256
    k_range: tuple[int, int] = (2, 16)
    # baselines also scored over the whole k range (each k is one more run per image); None: all
    k_range_baselines: tuple[str, ...] | None = None
    snap_superpixels: bool = False
    superpixels: int = 100
    compactness: float = 10.0

    def check(self) -> None:
        low, high = self.k_range
        if not 2 <= low <= high:
            raise HiCLIPError(f"the k range must satisfy 2 <= k_min <= k_max; got {low}..{high}")
        unknown = [b for b in (self.k_range_baselines or ()) if b not in self.baselines]
        if unknown:
            raise HiCLIPError(f"k-range baseline(s) {', '.join(unknown)} are not among the baselines "
                              f"({', '.join(self.baselines) or 'none'})")

    def in_k_range(self, baseline: str) -> bool:
        return self.k_range_baselines is None or baseline in self.k_range_baselines


@dataclass
class GranularityRow:
    """Mean scores of one method cut at each image's gt k, against one gt level."""

    gt_level: str
    method: str
    n_images: int
    miou: float | None
    ari: float | None
    fg_ari: float | None
    boundary_recall: float | None
    n_segments: float | None
    n_gt_segments: float | None


@dataclass
class KFreeRow:
    """ARI averaged over ``k_min .. k_max`` (per image), then over images."""

    gt_level: str
    method: str
    k_min: int
    k_max: int
    n_images: int
    mean_ari: float | None


@dataclass
class CeilingRow:
    """The majority-label oracle on a patch grid."""

    gt_level: str
    grid: tuple[int, int]
    patch_px: float
    n_images: int
    miou: float | None
    ari: float | None
    fg_ari: float | None
    boundary_recall: float | None


@dataclass
class EdgeAUCRow:
    """How well an affinity separates same-segment neighbour patches from boundary pairs."""

    gt_level: str
    method: str
    auc: float | None
    n_same: int
    n_boundary: int


@dataclass
class GranularityResult:
    """The section's content; ``to_dict()`` is ``sections["gt_granularity"]`` of the JSON."""

    k_range: tuple[int, int]
    rows: list[GranularityRow] = field(default_factory=list)
    k_free: list[KFreeRow] = field(default_factory=list)
    ceiling: list[CeilingRow] = field(default_factory=list)
    edge_auc: list[EdgeAUCRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"k": DEFINITIONS["k"], "k_range": list(self.k_range), "definitions": DEFINITIONS,
                "rows": [asdict(r) for r in self.rows], "ari_over_k": [asdict(r) for r in self.k_free],
                "ceiling": [{**asdict(r), "grid": list(r.grid)} for r in self.ceiling],
                "edge_auc": [asdict(r) for r in self.edge_auc], "skipped": list(self.skipped)}


# ---------------------------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------------------------
def gt_k(mask: np.ndarray) -> int:
    """The number of segments of a gt level: its segments (labels > 0) plus the background."""
    labels = np.unique(mask)
    return int((labels > 0).sum()) + 1


def nearest_layer(counts: Sequence[int], k: int) -> int:
    """Index of the count nearest ``k`` (ties: the lowest index)."""
    return int(np.argmin([abs(int(c) - k) for c in counts]))


def cell_map(grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(height, width) flat index of the patch under each pixel, the model's view of the image
    (the centre square, :func:`induction.image_groups.upsample_labels`)."""
    return upsample_labels(np.arange(grid[0] * grid[1]).reshape(grid), size, centre_crop=True)


def majority_labels(mask: np.ndarray, cells: np.ndarray, n_cells: int) -> np.ndarray:
    """(n_cells,) the most frequent gt label of each cell's pixels (ties: the lowest label)."""
    values, codes = np.unique(mask.ravel(), return_inverse=True)
    table = np.bincount(cells.ravel() * values.size + codes.ravel(), minlength=n_cells * values.size)
    return values[table.reshape(n_cells, values.size).argmax(axis=1)]


def grid_ceiling(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The majority-label oracle: a (height, width) map where every pixel takes the majority gt
    label of the patch of ``grid`` it falls in."""
    cells = cell_map(grid, mask.shape)
    return majority_labels(mask, cells, grid[0] * grid[1])[cells]


def colour_affinity(image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Minus the Euclidean distance between neighbouring patches' RGB mean and std (in [0, 1]),
    in the order of ``np.concatenate([h.ravel(), v.ravel()])`` of (H, W-1) / (H-1, W) link arrays."""
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    pixels = pixels[..., :3] / (255.0 if np.issubdtype(np.asarray(image).dtype, np.integer) else 1.0)
    cells = cell_map(grid, pixels.shape[:2]).ravel()
    n = grid[0] * grid[1]
    count = np.bincount(cells, minlength=n).astype(np.float64)[:, None]
    flat = pixels.reshape(-1, 3)
    total = np.stack([np.bincount(cells, flat[:, c], minlength=n) for c in range(3)], 1)
    square = np.stack([np.bincount(cells, flat[:, c] ** 2, minlength=n) for c in range(3)], 1)
    mean = total / np.maximum(count, 1)
    std = np.sqrt(np.maximum(square / np.maximum(count, 1) - mean ** 2, 0.0))
    features = np.concatenate([mean, std], 1)
    src, dst = grid_edges(*grid)
    return -np.linalg.norm(features[src] - features[dst], axis=1)


def edge_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Mann-Whitney AUC of ``scores`` separating ``same`` (True) from the rest; ties count half.
    NaN when either class is empty."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[same].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class _Accumulator:
    at_k: dict[tuple[str, str], list[GroupScores]] = field(default_factory=dict)
    over_k: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    ceiling: dict[tuple[str, tuple[int, int]], list[GroupScores]] = field(default_factory=dict)
    pixels_per_patch: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    edges: dict[tuple[str, str], tuple[list[np.ndarray], list[np.ndarray]]] = field(default_factory=dict)


def _image_partitions(item: ScoredImage, options: GranularityOptions, ks_gt: set[int],
                      k_range: list[int], colour: np.ndarray | None) -> dict[str, dict[int, np.ndarray]]:
    """method -> k -> pixel labels, for the ks each method is scored at."""
    size = item.size
    wanted = sorted(ks_gt | set(k_range))
    out: dict[str, dict[int, np.ndarray]] = {}
    image = item.record.image
    if image is not None and image.has_links:
        tree = single_linkage(image.h_links, image.v_links)
        out[SINGLE_LINKAGE] = {k: upsample_labels(tree.cut(k), size, centre_crop=True) for k in wanted}
        if options.snap_superpixels:
            from skimage.segmentation import slic
            from skimage.util import img_as_float

            pixels = item.image()
            superpixels = slic(img_as_float(pixels), n_segments=options.superpixels,
                               compactness=options.compactness, start_label=0,
                               channel_axis=-1 if pixels.ndim == 3 else None)
            out[SNAPPED_LINKAGE] = {k: snap_to_superpixels(labels, pixels, superpixels=superpixels)
                                    for k, labels in out[SINGLE_LINKAGE].items()}
    if image is not None and colour is not None:
        grid = tuple(image.grid)
        n_h = grid[0] * (grid[1] - 1)
        tree = single_linkage(colour[:n_h].reshape(1, grid[0], grid[1] - 1),
                              colour[n_h:].reshape(1, grid[0] - 1, grid[1]))
        out[COLOUR_LINKAGE] = {k: upsample_labels(tree.cut(k), size, centre_crop=True) for k in wanted}
    layers = sorted(item.levels)
    if layers:
        counts = [item.n_segments(level) for level in layers]
        out[LAYER_CUT] = {k: item.levels[layers[nearest_layer(counts, k)]] for k in wanted}
    for name in options.baselines:
        ks = wanted if options.in_k_range(name) else sorted(ks_gt)
        out[name] = {k: baseline_segments(item.image(), name, k, max_side=options.baseline_size)
                     for k in ks}
    return out


def _score_image(item: ScoredImage, options: GranularityOptions, acc: _Accumulator) -> None:
    k_range = list(range(options.k_range[0], options.k_range[1] + 1))
    ks = {g: gt_k(mask) for g, mask in item.masks.items()}
    record = item.record.image
    grid = tuple(record.grid) if record is not None else None
    colour = colour_affinity(item.image(), grid) if grid is not None else None
    partitions = _image_partitions(item, options, set(ks.values()), k_range, colour)
    for g, mask in item.masks.items():
        for method, by_k in partitions.items():
            acc.at_k.setdefault((g, method), []).append(score_segmentation(by_k[ks[g]], mask))
            if all(k in by_k for k in k_range):
                acc.over_k.setdefault((g, method), []).append(
                    float(np.mean([adjusted_rand_index(by_k[k], mask) for k in k_range])))
    if grid is None or colour is None:
        return
    side = min(item.size)
    for oracle_grid in (grid, (2 * grid[0], 2 * grid[1])):
        acc.pixels_per_patch.setdefault(oracle_grid, []).append(side / oracle_grid[0])
        for g, mask in item.masks.items():
            acc.ceiling.setdefault((g, oracle_grid), []).append(
                score_segmentation(grid_ceiling(mask, oracle_grid), mask))
    src, dst = grid_edges(*grid)
    affinities: dict[str, np.ndarray] = {COLOUR: colour}
    if record.has_links:
        affinities[LINKS] = np.concatenate([record.h_links.sum(0).ravel(), record.v_links.sum(0).ravel()])
    cells = cell_map(grid, item.size)
    for g, mask in item.masks.items():
        majority = majority_labels(mask, cells, grid[0] * grid[1])
        same = majority[src] == majority[dst]
        for method, values in affinities.items():
            scores, labels = acc.edges.setdefault((g, method), ([], []))
            scores.append(values)
            labels.append(same)


def _clean(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


def evaluate_granularity(items: Sequence[ScoredImage], gt_levels: Sequence[str],
                         options: GranularityOptions) -> GranularityResult:
    """Score ``items`` (the images ``evaluate_groups`` scored) at each gt level's granularity."""
    options.check()
    acc = _Accumulator()
    for item in items:
        _score_image(item, options, acc)
    result = GranularityResult(k_range=tuple(options.k_range))
    methods = [SINGLE_LINKAGE, LAYER_CUT, SNAPPED_LINKAGE, COLOUR_LINKAGE, *options.baselines]
    if not any(item.record.image is not None and item.record.image.has_links for item in items):
        result.skipped.append(f"{SINGLE_LINKAGE}: the records have no links (image.h_links/v_links)")
    for g in gt_levels:
        for method in methods:
            found = acc.at_k.get((g, method))
            if found:
                means = mean_scores(found)
                result.rows.append(GranularityRow(g, method, int(means["n_images"]),
                                                  **{s: _clean(means[s]) for s in SCORES}))
            values = acc.over_k.get((g, method))
            if values:
                result.k_free.append(KFreeRow(g, method, options.k_range[0], options.k_range[1],
                                              len(values), _clean(float(np.mean(values)))))
        for (level, grid), found in acc.ceiling.items():
            if level == g:
                means = mean_scores(found)
                result.ceiling.append(CeilingRow(
                    g, grid, round(float(np.mean(acc.pixels_per_patch[grid])), 3), int(means["n_images"]),
                    **{s: _clean(means[s]) for s in ("miou", "ari", "fg_ari", "boundary_recall")}))
        for method in (LINKS, COLOUR):
            pooled = acc.edges.get((g, method))
            if pooled:
                scores, same = np.concatenate(pooled[0]), np.concatenate(pooled[1])
                result.edge_auc.append(EdgeAUCRow(g, method, _clean(edge_auc(scores, same)),
                                                  int(same.sum()), int((~same).sum())))
    return result


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------
def _cell(value: float | None, count: bool = False) -> str:
    if value is None:
        return f"{'-':>8}"
    return f"{value:>8.1f}" if count else f"{value:>8.3f}"


def format_granularity(section: dict[str, Any]) -> list[str]:
    """The text tables of one ``sections["gt_granularity"]`` dict (``hiclip score groups``)."""
    low, high = section["k_range"]
    lines = ["", f"at the gt granularity: every method cut at k = {section['k']}"]
    levels = list(dict.fromkeys([r["gt_level"] for r in section["rows"]]
                                + [r["gt_level"] for r in section["ceiling"]]))
    for g in levels:
        lines.append("")
        lines.append(f"ground truth: {g} masks, k = its segments + 1")
        header = f"{'method':<34}" + "".join(f"{h:>8}" for h in HEADERS) + f"{'ARI@k' + str(low) + '-' + str(high):>12}"
        lines.append(header)
        lines.append("-" * len(header))
        k_free = {r["method"]: r["mean_ari"] for r in section["ari_over_k"] if r["gt_level"] == g}
        for row in section["rows"]:
            if row["gt_level"] != g:
                continue
            cells = "".join(_cell(row[s], s.startswith("n_")) for s in SCORES)
            mean = k_free.get(row["method"])
            lines.append(f"{row['method']:<34}{cells}{'-' if mean is None else f'{mean:.3f}':>12}")
        for row in section["ceiling"]:
            if row["gt_level"] != g:
                continue
            name = f"ceiling: {row['grid'][0]}x{row['grid'][1]} grid ({row['patch_px']:g} px)"
            cells = "".join(_cell(row[s]) for s in ("miou", "ari", "fg_ari", "boundary_recall"))
            lines.append(f"{name:<34}{cells}")
        for row in section["edge_auc"]:
            if row["gt_level"] == g:
                auc = "-" if row["auc"] is None else f"{row['auc']:.3f}"
                lines.append(f"edge AUC, {row['method']}: {auc} ({row['n_same']} same-segment, "
                             f"{row['n_boundary']} boundary pairs)")
    for reason in section.get("skipped", []):
        lines.append(f"skipped: {reason}")
    return lines
