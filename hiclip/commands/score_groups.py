"""``hiclip score groups``: predicted image groups against segmentation masks (method.md 6).

For every prediction record (``image.groups`` with ``image.grid``, or ``image.label_maps``
PNGs, or, with ``--tau``, groups recomputed from ``image.h_links``/``image.v_links``), each
predicted level (layer 0 = lowest) is upsampled to the mask size and scored against every
ground-truth level the dataset has (synthetic shapes: part, object, group; COCO: object)
with best-match mIoU, ARI, foreground ARI, boundary recall at 2 px, under-segmentation error,
achievable segmentation accuracy and the number of segments (``induction.group_metrics``).
Ground truth is read with ``hiclip.data.open_dataset``; samples without masks are counted and
left out.

The *best level* is, per ground-truth level, the predicted level with the highest mean
best-match mIoU over images (ties: the lower level); the snapped variant
(``--snap-superpixels``) picks its own, baselines follow the model's. Baselines
(``--baselines``) run per image at the number of segments the model predicted for that image
at that level (at the best level with ``--level best``; at every level with ``--level all``).
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hiclip.errors import HiCLIPError, located
from induction.group_metrics import GroupScores, mean_scores, score_segmentation
from induction.image_groups import (
    layer_groups,
    load_label_map_png,
    snap_to_superpixels,
    upsample_labels,
)
from induction.segment_baselines import BASELINES, baseline_segments

NOT_A_LEVEL = ("crowd",)  # mask levels left out unless asked for by --gt-level
MODEL = "model"
SNAPPED = "model+superpixels"
METRICS = ("miou", "ari", "fg_ari", "boundary_recall", "use", "asa", "n_segments", "n_gt_segments")
HEADERS = ("mIoU", "ARI", "FG-ARI", "BR@2px", "USE", "ASA", "#seg", "#gt")
DEFINITIONS = {
    "miou": "best-match mIoU: each gt segment (label > 0) matched to the predicted segment of "
            "highest IoU, averaged over gt segments, then over images",
    "ari": "adjusted Rand index over all pixels (background is one gt cluster)",
    "fg_ari": "adjusted Rand index over pixels with gt > 0 only; rewards over-segmentation, "
              "read it with ari and n_segments",
    "boundary_recall": "fraction of gt boundary pixels within 2 px of a predicted boundary",
    "use": "under-segmentation error, Neubert & Protzel 2012 (corrected); lower is better",
    "asa": "achievable segmentation accuracy (Liu et al. 2011)",
    "n_segments": "predicted segments per image",
    "n_gt_segments": "gt segments (label > 0) per image",
    "best": "per gt level, the predicted level with the highest mean mIoU (ties: lower level); "
            "model+superpixels picks its own, baselines follow the model's",
    "baselines": "run per image at the model's number of segments at that level, on the image "
                 "resized to --baseline-size px on the longer side, labels upsampled back",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, help="prediction JSONL (hiclip induce)")
    parser.add_argument("--data", required=True,
                        help="dataset: a folder with manifest.jsonl, or any spec hiclip.data reads")
    parser.add_argument("--split", default=None, help="score only this split (default: all)")
    parser.add_argument("--level", choices=("best", "all"), default="best",
                        help="report the best predicted level only, or every level plus the best")
    parser.add_argument("--gt-level", nargs="+", default=None, metavar="LEVEL",
                        help="ground-truth mask levels to score against (default: all present "
                             "except COCO's 'crowd' regions, which are not a segmentation level)")
    parser.add_argument("--baselines", default="grid,slic,felzenszwalb,rag",
                        help=f"comma-separated from {','.join(BASELINES)}; '' or 'none' for none")
    parser.add_argument("--baseline-size", type=int, default=256, metavar="PX",
                        help="run baselines on a copy with the longer side at most PX, labels "
                             "upsampled back (default 256; 0 = full size)")
    parser.add_argument("--snap-superpixels", action="store_true",
                        help="also score the groups snapped to SLIC superpixels")
    parser.add_argument("--superpixels", type=int, default=100,
                        help="SLIC n_segments for --snap-superpixels (default 100)")
    parser.add_argument("--compactness", type=float, default=10.0,
                        help="SLIC compactness for --snap-superpixels (default 10)")
    parser.add_argument("--tau", type=float, default=None,
                        help="recompute groups from the records' h_links/v_links at this threshold")
    parser.add_argument("--quantile", action="store_true",
                        help="with --tau: a per-layer quantile of the links, not an absolute value")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


# ---------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------
@dataclass
class PredictedGroups:
    """One record's predicted levels: ``levels[i]`` (a patch grid when ``patch_level[i]``, else a
    pixel map) holds the groups of model layer ``layers[i]`` (0 = lowest)."""

    id: str
    line: int
    levels: list[np.ndarray]
    patch_level: list[bool]
    layers: list[int]


def _array(value: Any, what: str, path: Path, line: int, dtype: type) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise located(path, line, f"image.{what} is not a rectangular numeric array") from None
    return array


def _grid(image: dict[str, Any], path: Path, line: int) -> tuple[int, int]:
    grid = image.get("grid")
    if (not isinstance(grid, list) or len(grid) != 2
            or not all(isinstance(g, int) and g >= 1 for g in grid)):
        raise located(path, line, f"image.grid must be [H, W] with positive integers; got {grid!r}")
    return grid[0], grid[1]


def _levels_from_record(image: dict[str, Any], path: Path, line: int,
                        tau: float | None, quantile: bool
                        ) -> tuple[list[np.ndarray], list[bool], list[int]]:
    if tau is not None:
        if "h_links" not in image or "v_links" not in image:
            raise located(path, line, "--tau needs image.h_links and image.v_links in every record")
        grid_h, grid_w = _grid(image, path, line)
        h = _array(image["h_links"], "h_links", path, line, np.float64)
        v = _array(image["v_links"], "v_links", path, line, np.float64)
        if (h.ndim != 3 or v.ndim != 3 or h.shape[1:] != (grid_h, grid_w - 1)
                or v.shape[1:] != (grid_h - 1, grid_w) or h.shape[0] != v.shape[0]):
            raise located(path, line, f"h_links {h.shape} / v_links {v.shape} do not match "
                                      f"image.grid [{grid_h}, {grid_w}] as (L,H,W-1)/(L,H-1,W)")
        try:
            groups = layer_groups(h, v, tau, quantile=quantile)
        except HiCLIPError as error:
            raise located(path, line, str(error)) from None
        return list(groups), [True] * len(groups), list(range(len(groups)))
    if image.get("groups") is not None:
        grid_h, grid_w = _grid(image, path, line)
        groups = _array(image["groups"], "groups", path, line, np.float64)
        if groups.ndim != 2 or groups.shape[1] != grid_h * grid_w or groups.shape[0] < 1:
            raise located(path, line, f"image.groups has shape {groups.shape}; expected "
                                      f"(L, {grid_h * grid_w}) for grid [{grid_h}, {grid_w}]")
        if not np.all(groups == np.round(groups)):
            raise located(path, line, "image.groups must hold integer labels")
        levels = [row.astype(np.int64).reshape(grid_h, grid_w) for row in groups]
        return levels, [True] * len(levels), list(range(len(levels)))
    maps = image.get("label_maps")
    if isinstance(maps, dict) and maps:
        try:
            keys = sorted(maps, key=int)
        except ValueError:
            raise located(path, line, f"image.label_maps keys must be layer numbers; got {sorted(maps)}") from None
        grid = image.get("grid")
        levels, patch = [], []
        for key in keys:
            png = path.parent / str(maps[key])
            if not png.is_file():
                raise located(path, line, f"label map {png} for layer {key} not found")
            array = load_label_map_png(png)
            levels.append(array)
            patch.append(isinstance(grid, list) and list(array.shape) == grid)
        return levels, patch, [int(k) for k in keys]
    raise located(path, line, "record has no image.groups or image.label_maps (use --tau to "
                              "group image.h_links/v_links)")


def read_predictions(path: Path, split: str | None, tau: float | None = None,
                     quantile: bool = False) -> list[PredictedGroups]:
    """Read the image part of a prediction JSONL; records of other splits are left out.

    Raises
    ------
    HiCLIPError
        Naming ``path`` and the 1-based line: invalid JSON, missing or duplicate ids, records
        without image predictions, malformed groups, or predicted layers that differ from the
        first record's.
    """
    if not path.is_file():
        raise HiCLIPError(f"{path}: prediction file not found")
    records: list[PredictedGroups] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                raise located(path, line_no, f"invalid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise located(path, line_no, "record needs a string 'id'")
            if split is not None and record.get("split", split) != split:
                continue
            sample_id = record["id"]
            if sample_id in seen:
                raise located(path, line_no, f"id {sample_id!r} repeats line {seen[sample_id]}")
            seen[sample_id] = line_no
            image = record.get("image")
            if not isinstance(image, dict):
                raise located(path, line_no, f"record {sample_id!r} has no image predictions "
                                             "(image is null: a text-only model or dataset?)")
            levels, patch, layers = _levels_from_record(image, path, line_no, tau, quantile)
            if records and layers != records[0].layers:
                raise located(path, line_no, f"predicted layers {layers}; line "
                                             f"{records[0].line} has {records[0].layers}")
            records.append(PredictedGroups(sample_id, line_no, levels, patch, layers))
    if not records:
        where = f" in split {split!r}" if split is not None else ""
        raise HiCLIPError(f"{path}: no prediction records{where}")
    return records


# ---------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------
@dataclass
class GroundTruth:
    """What scoring needs of one dataset sample (a ``hiclip.data.Sample``); loaders run lazily."""

    id: str
    size: tuple[int, int] | None                # (height, width) when the reader knows it
    masks: dict[str, Callable[[], np.ndarray]]  # level -> (height, width) int labels, 0 = bg
    image: Callable[[], np.ndarray]             # (height, width, 3) uint8


def open_ground_truth(data: str, split: str | None) -> dict[str, GroundTruth]:
    """The samples of ``data`` (any spec ``hiclip.data.open_dataset`` reads) by id."""
    from hiclip.data import open_dataset

    dataset = open_dataset(data, split=split, check_trees=False)
    out: dict[str, GroundTruth] = {}
    for sample in dataset:
        size = (sample.height, sample.width) if sample.width and sample.height else None
        masks = {level: partial(sample.load_mask, level) for level in sample.masks}
        out[sample.id] = GroundTruth(sample.id, size, masks,
                                     lambda sample=sample: np.asarray(sample.open_image()))
    return out


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
@dataclass
class _Collected:
    """Per (gt level, method, predicted level): per-image scores; model k per (image, level)."""

    scores: dict[tuple[str, str, int], list[GroupScores]] = field(default_factory=dict)
    model_k: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, gt_level: str, method: str, level: int, score: GroupScores) -> None:
        self.scores.setdefault((gt_level, method, level), []).append(score)


def _pixel_map(pred: PredictedGroups, index: int, size: tuple[int, int], path: Path) -> np.ndarray:
    array = pred.levels[index]
    if pred.patch_level[index]:
        # The model saw the centre square of the image (hiclip.data.transforms.eval_transform).
        return upsample_labels(array, size, centre_crop=True)
    if array.shape != size:
        raise located(path, pred.line, f"label map of level {pred.layers[index]} is {array.shape[1]}x"
                                       f"{array.shape[0]} (WxH); the masks of {pred.id!r} are "
                                       f"{size[1]}x{size[0]}")
    return array


def _best_level(collected: _Collected, gt_level: str, method: str, layers: list[int]) -> int | None:
    means = []
    for level in layers:
        scores = collected.scores.get((gt_level, method, level), [])
        value = mean_scores(scores)["miou"] if scores else float("nan")
        means.append(-math.inf if math.isnan(value) else value)
    if all(m == -math.inf for m in means):
        return None
    return layers[int(np.argmax(means))]


def score(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole scoring; return the JSON-ready result (see module docstring)."""
    baselines = [b.strip() for b in (args.baselines or "").split(",") if b.strip()]
    if baselines == ["none"]:
        baselines = []
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise HiCLIPError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    if args.baseline_size < 0:
        raise HiCLIPError(f"--baseline-size must be >= 0; got {args.baseline_size}")
    if args.quantile and args.tau is None:
        raise HiCLIPError("--quantile needs --tau")
    preds = read_predictions(args.pred, args.split, args.tau, args.quantile)
    truth = open_ground_truth(args.data, args.split)
    layers = preds[0].layers

    missing = [p for p in preds if p.id not in truth]
    if missing:
        where = f" split {args.split!r} of" if args.split else ""
        raise located(args.pred, missing[0].line,
                      f"id {missing[0].id!r} is not in{where} {args.data} "
                      f"({len(missing)} of {len(preds)} records unmatched)")

    available = sorted({level for p in preds for level in truth[p.id].masks})
    gt_levels = args.gt_level or [g for g in available if g not in NOT_A_LEVEL] or available
    absent = [g for g in gt_levels if g not in available]
    if absent:
        raise HiCLIPError(f"{args.data}: no masks of level(s) {', '.join(absent)}; "
                          f"the dataset has {', '.join(available) or 'no masks'}")
    if not gt_levels:
        raise HiCLIPError(f"{args.data}: the samples have no segmentation masks to score against")

    methods = [MODEL] + ([SNAPPED] if args.snap_superpixels else [])
    collected = _Collected()
    kept: list[tuple[PredictedGroups, GroundTruth, dict[str, np.ndarray]]] = []
    without_masks = 0
    for pred in preds:
        gt = truth[pred.id]
        masks = _load_masks(gt, [g for g in gt_levels if g in gt.masks])
        if not masks:
            without_masks += 1
            continue
        size = next(iter(masks.values())).shape
        maps = {layer: _pixel_map(pred, i, size, args.pred) for i, layer in enumerate(layers)}
        for layer, pixel_map in maps.items():
            collected.model_k[(pred.id, layer)] = int(np.unique(pixel_map).size)
        snapped = {}
        if args.snap_superpixels:
            image = _image(gt, size)
            snapped = {layer: snap_to_superpixels(m, image, args.superpixels, args.compactness)
                       for layer, m in maps.items()}
        for g, mask in masks.items():
            for level in layers:
                collected.add(g, MODEL, level, score_segmentation(maps[level], mask))
                if snapped:
                    collected.add(g, SNAPPED, level, score_segmentation(snapped[level], mask))
        kept.append((pred, gt, masks))

    best = {(g, m): _best_level(collected, g, m, layers) for g in gt_levels for m in methods}
    baseline_levels = {g: (list(layers) if args.level == "all"
                           else [lvl for lvl in [best[(g, MODEL)]] if lvl is not None])
                       for g in gt_levels}
    if baselines:
        _score_baselines(kept, baselines, baseline_levels, collected, args.baseline_size or None)

    rows: list[dict[str, Any]] = []
    for g in gt_levels:
        for method in methods + baselines:
            chosen = best[(g, MODEL if method in BASELINES else method)]
            levels: list[int | str] = list(layers) if args.level == "all" else []
            if chosen is not None:
                levels.append("best")
            for level in levels:
                layer = chosen if level == "best" else level
                scores = collected.scores.get((g, method, layer), [])
                if not scores:
                    continue
                means = mean_scores(scores)
                row: dict[str, Any] = {"gt_level": g, "method": method, "level": level,
                                       "layer": layer, "n_images": int(means.pop("n_images"))}
                row.update({k: _clean(v) for k, v in means.items()})
                rows.append(row)
    return {
        "command": "score groups",
        "pred": str(args.pred),
        "data": str(args.data),
        "split": args.split,
        "n_records": len(preds),
        "n_without_masks": without_masks,
        "n_levels": len(layers),
        "layers": layers,
        "gt_levels": {g: int(sum(1 for _, _, m in kept if g in m)) for g in gt_levels},
        "best_level": {g: best[(g, MODEL)] for g in gt_levels},
        "methods": methods + baselines,
        "baseline_size": args.baseline_size or None,
        "definitions": DEFINITIONS,
        "rows": rows,
    }


def _clean(value: float) -> float | None:
    """JSON has no NaN: undefined means become null."""
    return None if math.isnan(value) else round(float(value), 6)


def _load_masks(gt: GroundTruth, levels: list[str]) -> dict[str, np.ndarray]:
    """The sample's masks of ``levels`` as int64 maps, all of one size (the image's, if known)."""
    masks: dict[str, np.ndarray] = {}
    for level in levels:
        mask = np.asarray(gt.masks[level]())
        expected = gt.size or next((m.shape for m in masks.values()), mask.shape)
        if mask.ndim != 2 or mask.shape != expected:
            raise HiCLIPError(f"sample {gt.id!r}: {level} mask has shape {mask.shape}, "
                              f"expected {tuple(expected)} (height, width)")
        masks[level] = mask.astype(np.int64)
    return masks


def _image(gt: GroundTruth, size: tuple[int, ...]) -> np.ndarray:
    """The sample's RGB image, checked to be the size of its masks."""
    image = np.asarray(gt.image())
    if image.shape[:2] != tuple(size):
        raise HiCLIPError(f"sample {gt.id!r}: image is {image.shape[1]}x{image.shape[0]} "
                          f"(WxH), its masks {size[1]}x{size[0]}")
    return image


def _score_baselines(
    kept: list[tuple[PredictedGroups, GroundTruth, dict[str, np.ndarray]]],
    baselines: list[str],
    baseline_levels: dict[str, list[int]],
    collected: _Collected,
    max_side: int | None,
) -> None:
    """Score every baseline at the model's per-image number of segments of each needed level."""
    for pred, gt, masks in kept:
        wanted = sorted({lvl for g in masks for lvl in baseline_levels[g]})
        if not wanted:
            continue
        image = _image(gt, next(iter(masks.values())).shape)
        for method in baselines:
            cache: dict[int, np.ndarray] = {}
            for level in wanted:
                k = collected.model_k[(pred.id, level)]
                if k not in cache:
                    cache[k] = baseline_segments(image, method, k, max_side=max_side)
                for g, mask in masks.items():
                    if level in baseline_levels[g]:
                        collected.add(g, method, level, score_segmentation(cache[k], mask))


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def format_table(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`score`'s result."""
    split = f" (split {result['split']})" if result["split"] else ""
    lines = [
        f"image groups: {result['pred']} against {result['data']}{split}",
        f"{result['n_records']} prediction records"
        + (f" ({result['n_without_masks']} without masks, not scored)" if result["n_without_masks"] else "")
        + f", predicted levels = model layers "
        f"{','.join(map(str, result['layers']))} (0 = lowest); best = level with the highest mean mIoU per gt level;",
        "baselines at the model's number of segments per image and level. FG-ARI ignores "
        "background and rewards over-segmentation: read it with ARI and #seg. USE: lower is better.",
    ]
    for g, n_images in result["gt_levels"].items():
        lines.append("")
        best = result["best_level"][g]
        lines.append(f"ground truth: {g} masks ({n_images} images)"
                     + (f", best model level {best}" if best is not None else ", no foreground"))
        header = f"{'method':<20} {'level':<8}" + "".join(f"{h:>8}" for h in HEADERS)
        lines.append(header)
        lines.append("-" * len(header))
        for row in result["rows"]:
            if row["gt_level"] != g:
                continue
            level = f"best={row['layer']}" if row["level"] == "best" else str(row["level"])
            cells = []
            for metric in METRICS:
                value = row[metric]
                cells.append(f"{'-':>8}" if value is None else
                             (f"{value:>8.1f}" if metric.startswith("n_") else f"{value:>8.3f}"))
            lines.append(f"{row['method']:<20} {level:<8}" + "".join(cells))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    result = score(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    return 0
