"""Predicted image groups against segmentation masks, over a whole dataset (method.md 6).

:func:`evaluate_groups` is what ``hiclip score groups``, ``hiclip demo``, ``hiclip figures``, the
notebook and the app report: it takes prediction records (:mod:`induction.predictions`), the
dataset with the masks and :class:`GroupEvalOptions`, and returns a :class:`GroupEvaluation`
whose :meth:`~GroupEvaluation.to_dict` is the ``--json`` output.

Each predicted level (layer 0 = lowest) of a record (``image.groups`` on ``image.grid``, or the
``image.label_maps`` PNGs, or with ``tau`` the groups recomputed from ``image.h_links`` /
``image.v_links``) is mapped to the mask size (a patch grid onto the centre square the model
saw, :func:`induction.image_groups.upsample_labels`) and scored against every ground-truth level
the dataset has (synthetic shapes: part, object, group; COCO: object) with best-match mIoU, ARI,
foreground ARI, boundary recall at 2 px, USE, ASA and the number of segments
(:mod:`induction.group_metrics`). Samples without masks are counted and left out.

Every dataset sample of the split that has masks must have a prediction, unless
``allow_missing`` is set; then the coverage (scored / with masks) is part of the result.

Partition sources. The model's own levels, the groups snapped to superpixels and every
segmentation baseline are :class:`PartitionSource` objects; a source gives, for one image, a label
map per level. An *independent* source picks its own best level (per gt level, the level of
highest mean mIoU over images, ties to the lower level); a *matched* source (the baselines) runs
after the model's best level is known and is scored at the model's levels, with the model's
number of segments of that image and level. ``evaluate_groups(..., extra_sources=...)`` adds
sources and ``sections=...`` adds report sections (a name and a function of the scored images
and the evaluation), without changes here. With ``granularity`` on (the default) the section
``gt_granularity`` (:mod:`induction.granularity`) scores every method cut at each gt level's
number of segments, which needs no best level.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hiclip.errors import HiCLIPError
from induction.granularity import SECTION as GRANULARITY, GranularityOptions, evaluate_granularity, format_granularity
from induction.group_metrics import GroupScores, mean_scores, score_segmentation
from induction.image_groups import layer_groups, load_label_map_png, snap_to_superpixels, upsample_labels
from induction.predictions import ImagePrediction, PredictionRecord, Predictions
from induction.segment_baselines import BASELINES, baseline_segments

NOT_A_LEVEL = ("crowd",)  # mask levels left out unless asked for by gt_levels
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
DEFAULT_BASELINES = ("grid", "slic", "felzenszwalb", "rag")

Progress = Callable[[str, int], Any]  # (description, total) -> object with update(n) and close()


@dataclass
class GroupEvalOptions:
    """How ``evaluate_groups`` scores (the options of ``hiclip score groups``).

    Attributes
    ----------
    split : str or None
        Score only this split of the predictions and the dataset.
    level : {"best", "all"}
        Report the best level only, or every level and the best.
    baseline_level : {"best", "all"} or None
        Where matched sources (the baselines) are scored; None: as ``level``. ``"best"`` with
        ``level="all"`` gives the model at every level and the baselines at its best one.
    gt_levels : list of str or None
        Mask levels to score against (default: all the dataset has, except COCO's ``crowd``).
    baselines : tuple of str
        Segmentation baselines (``induction.segment_baselines.BASELINES``), at the model's counts.
    baseline_size : int
        Baselines run on a copy whose longer side is at most this many pixels (0: full size).
    snap_superpixels : bool
        Also score the groups snapped to SLIC superpixels (``superpixels``, ``compactness``).
    tau, quantile : float or None, bool
        Regroup the records' links at this threshold (a per-layer quantile with ``quantile``)
        instead of reading their groups.
    allow_missing : bool
        Score a prediction file that covers only part of the dataset's samples with masks
        (the coverage is reported); by default that is an error.
    granularity : bool
        Add the section scored at the gt granularity (:mod:`induction.granularity`): every
        method cut at each gt level's number of segments, ARI averaged over ``k_range``, the
        patch-grid ceiling and the edge AUC probe.
    k_range : (int, int)
        The ks of the k-free hierarchy score (inclusive).
    k_range_baselines : tuple of str or None
        Baselines also run over the whole k range (one segmentation per k and image); None: all
        of ``baselines``. The others are scored at the gt ks only.
    """

    split: str | None = None
    level: str = "best"
    baseline_level: str | None = None
    gt_levels: list[str] | None = None
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    baseline_size: int = 256
    snap_superpixels: bool = False
    superpixels: int = 100
    compactness: float = 10.0
    tau: float | None = None
    quantile: bool = False
    allow_missing: bool = False
    granularity: bool = True
    k_range: tuple[int, int] = (2, 16)
    k_range_baselines: tuple[str, ...] | None = None

    def granularity_options(self) -> GranularityOptions:
        return GranularityOptions(self.baselines, self.baseline_size or None, tuple(self.k_range),
                                  self.k_range_baselines, self.snap_superpixels, self.superpixels,
                                  self.compactness)

    def check(self) -> None:
        """Raise ``HiCLIPError`` for options that cannot work."""
        if self.level not in ("best", "all") or self.baseline_level not in (None, "best", "all"):
            raise HiCLIPError(f"level and baseline_level must be 'best' or 'all'; got {self.level!r}, "
                              f"{self.baseline_level!r}")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise HiCLIPError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
        if self.baseline_size < 0:
            raise HiCLIPError(f"--baseline-size must be >= 0; got {self.baseline_size}")
        if self.quantile and self.tau is None:
            raise HiCLIPError("--quantile needs --tau")
        if self.granularity:
            self.granularity_options().check()

    def parameters(self) -> dict[str, Any]:
        """The options that decide the numbers, for reports and ``figures.json``."""
        return {"split": self.split, "level": self.level, "baseline_level": self.baseline_level or self.level,
                "levels": "layers (0 = lowest)", "best_level": DEFINITIONS["best"],
                "groups": ("from the records (image.groups or image.label_maps)" if self.tau is None
                           else {"tau": self.tau, "quantile": self.quantile}),
                "baselines": list(self.baselines), "baseline_size": self.baseline_size or None,
                "snap_superpixels": self.snap_superpixels,
                "granularity": ({"k_range": list(self.k_range),
                                 "k_range_baselines": list(self.baselines if self.k_range_baselines is None
                                                           else self.k_range_baselines)}
                                if self.granularity else None)}


def parse_baselines(text: str | None) -> tuple[str, ...]:
    """``"grid,slic"`` -> ``("grid", "slic")``; ``""`` or ``"none"`` -> ``()``."""
    names = tuple(b.strip() for b in (text or "").split(",") if b.strip())
    return () if names == ("none",) else names


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
    split: str | None = None


def ground_truth(samples: Iterable) -> dict[str, GroundTruth]:
    """:class:`GroundTruth` by id for ``hiclip.data.Sample`` objects."""
    out: dict[str, GroundTruth] = {}
    for sample in samples:
        size = (sample.height, sample.width) if sample.width and sample.height else None
        masks = {level: partial(sample.load_mask, level) for level in sample.masks}
        out[sample.id] = GroundTruth(sample.id, size, masks,
                                     lambda sample=sample: np.asarray(sample.open_image()), sample.split)
    return out


def open_ground_truth(data: str, split: str | None) -> dict[str, GroundTruth]:
    """The samples of ``data`` (any spec ``hiclip.data.open_dataset`` reads) by id."""
    from hiclip.data import open_dataset

    return ground_truth(open_dataset(data, split=split, check_trees=False))


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


# ---------------------------------------------------------------------------------------------
# Predicted levels of one record
# ---------------------------------------------------------------------------------------------
def predicted_levels(record: PredictionRecord, predictions: Predictions, size: tuple[int, int],
                     tau: float | None = None, quantile: bool = False) -> dict[int, np.ndarray]:
    """Each predicted level of ``record`` as a pixel label map of ``size = (height, width)``.

    Patch grids are mapped onto the centre square the model saw (the evaluation transform
    resizes the shorter side and crops the centre). Raises ``HiCLIPError`` naming the record's
    line when it has no usable groups or a label map of the wrong size.
    """
    image = record.image
    where = predictions.where(record)
    if image is None:
        raise HiCLIPError(f"{where}: record {record.id!r} has no image predictions "
                          "(image is null: a text-only model or dataset?)")
    if tau is not None:
        if not image.has_links:
            raise HiCLIPError(f"{where}: --tau needs image.h_links and image.v_links in every record")
        try:
            grids = layer_groups(image.h_links, image.v_links, tau, quantile=quantile)
        except HiCLIPError as error:
            raise HiCLIPError(f"{where}: {error}") from None
        return {layer: upsample_labels(g, size, centre_crop=True) for layer, g in enumerate(grids)}
    if image.groups is not None:
        return {layer: upsample_labels(g, size, centre_crop=True) for layer, g in enumerate(image.groups)}
    if image.label_maps:
        out = {}
        for layer, relative in sorted(image.label_maps.items()):
            png = predictions.label_map_path(relative)
            if not png.is_file():
                raise HiCLIPError(f"{where}: label map {png} not found")
            array = load_label_map_png(png)
            if list(array.shape) == list(image.grid):
                out[layer] = upsample_labels(array, size, centre_crop=True)
            elif array.shape != tuple(size):
                raise HiCLIPError(f"{where}: label map of level {layer} is {array.shape[1]}x{array.shape[0]} "
                                  f"(WxH); the masks of {record.id!r} are {size[1]}x{size[0]}")
            else:
                out[layer] = array
        return out
    raise HiCLIPError(f"{where}: record has no image.groups or image.label_maps (use --tau to "
                      "group image.h_links/v_links)")


# ---------------------------------------------------------------------------------------------
# Partition sources
# ---------------------------------------------------------------------------------------------
@dataclass
class ImageItem:
    """One scored image: its record, masks, and the model's levels at mask size."""

    record: PredictionRecord
    truth: GroundTruth
    masks: dict[str, np.ndarray]           # gt level -> (height, width) int64
    levels: dict[int, np.ndarray]          # model level -> (height, width) labels
    _pixels: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        return next(iter(self.masks.values())).shape  # type: ignore[return-value]

    def n_segments(self, level: int) -> int:
        """The model's number of segments at ``level`` (what matched baselines aim for)."""
        return int(np.unique(self.levels[level]).size)

    def image(self) -> np.ndarray:
        """The RGB image (read once), checked to be the size of the masks."""
        if self._pixels is None:
            pixels = np.asarray(self.truth.image())
            if pixels.shape[:2] != tuple(self.size):
                raise HiCLIPError(f"sample {self.truth.id!r}: image is {pixels.shape[1]}x{pixels.shape[0]} "
                                  f"(WxH), its masks {self.size[1]}x{self.size[0]}")
            self._pixels = pixels
        return self._pixels


class PartitionSource(Protocol):
    """A way of partitioning each image, scored like the model (module docstring).

    ``name`` names its rows; ``matched`` sources are scored after the model's best levels are
    known, at the model's levels (``levels`` lists the ones needed for this image).
    """

    name: str
    matched: bool

    def partitions(self, item: ImageItem, levels: Sequence[int]) -> dict[int, np.ndarray]:
        ...


@dataclass
class ModelSource:
    """The model's own groups."""

    name: str = MODEL
    matched: bool = False

    def partitions(self, item: ImageItem, levels: Sequence[int]) -> dict[int, np.ndarray]:
        return {level: item.levels[level] for level in levels}


@dataclass
class SnappedSource:
    """The model's groups snapped to SLIC superpixels ("merged superpixel groups")."""

    superpixels: int = 100
    compactness: float = 10.0
    name: str = SNAPPED
    matched: bool = False

    def partitions(self, item: ImageItem, levels: Sequence[int]) -> dict[int, np.ndarray]:
        image = item.image()
        return {level: snap_to_superpixels(item.levels[level], image, self.superpixels, self.compactness)
                for level in levels}


@dataclass
class BaselineSource:
    """A segmentation baseline run at the model's number of segments of each level."""

    name: str
    max_side: int | None = 256
    matched: bool = True

    def partitions(self, item: ImageItem, levels: Sequence[int]) -> dict[int, np.ndarray]:
        cache: dict[int, np.ndarray] = {}
        out = {}
        for level in levels:
            k = item.n_segments(level)
            if k not in cache:
                cache[k] = baseline_segments(item.image(), self.name, k, max_side=self.max_side)
            out[level] = cache[k]
        return out


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------
@dataclass
class GroupRow:
    """Mean scores of one source at one level against one gt level (``level`` is a layer or
    ``"best"``; ``layer`` the layer it stands for)."""

    gt_level: str
    method: str
    level: int | str
    layer: int
    n_images: int
    miou: float | None
    ari: float | None
    fg_ari: float | None
    boundary_recall: float | None
    use: float | None
    asa: float | None
    n_segments: float | None
    n_gt_segments: float | None

    @property
    def matched(self) -> bool:
        """Whether this row is a baseline scored at the model's level and number of segments."""
        return self.method not in (MODEL, SNAPPED)


@dataclass
class ReportSection:
    """An extra part of the report: ``compute(items, evaluation)`` returns a JSON-ready dict,
    stored under ``evaluation.sections[name]`` (and in ``to_dict()["sections"]``)."""

    name: str
    compute: Callable[[list[ImageItem], "GroupEvaluation"], dict[str, Any]]


@dataclass
class GroupEvaluation:
    """The result of :func:`evaluate_groups` (see ``to_dict`` for the JSON)."""

    pred: str
    data: str
    options: GroupEvalOptions
    n_records: int
    n_without_masks: int
    layers: list[int]
    gt_levels: dict[str, int]                  # gt level -> images scored against it
    best_level: dict[str, int | None]          # gt level -> the model's best layer
    methods: list[str]
    rows: list[GroupRow]
    coverage: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def row(self, gt_level: str, method: str = MODEL, level: int | str = "best") -> GroupRow | None:
        """The row of ``method`` at ``level`` against ``gt_level`` (None when it was not scored)."""
        return next((r for r in self.rows if r.gt_level == gt_level and r.method == method
                     and r.level == level), None)

    def by_layer(self, gt_level: str, method: str = MODEL, metric: str = "miou") -> list[float | None]:
        """``metric`` of ``method`` at every layer (needs ``level="all"``), in layer order."""
        values = []
        for layer in self.layers:
            row = self.row(gt_level, method, layer)
            values.append(None if row is None else getattr(row, metric))
        return values

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``hiclip score groups --json``."""
        out = {
            "command": "score groups",
            "pred": self.pred,
            "data": self.data,
            "split": self.options.split,
            "n_records": self.n_records,
            "n_without_masks": self.n_without_masks,
            "n_levels": len(self.layers),
            "layers": list(self.layers),
            "gt_levels": dict(self.gt_levels),
            "best_level": dict(self.best_level),
            "methods": list(self.methods),
            "baseline_size": self.options.baseline_size or None,
            "coverage": dict(self.coverage),
            "parameters": self.options.parameters(),
            "definitions": DEFINITIONS,
            "rows": [asdict(r) for r in self.rows],
        }
        if self.sections:
            out["sections"] = dict(self.sections)
        return out

    def format(self) -> str:
        """The human-readable table of ``hiclip score groups``."""
        split = f" (split {self.options.split})" if self.options.split else ""
        coverage = self.coverage
        lines = [
            f"image groups: {self.pred} against {self.data}{split}",
            f"{self.n_records} prediction records"
            + (f" ({self.n_without_masks} without masks, not scored)" if self.n_without_masks else "")
            + f", predicted levels = model layers "
            f"{','.join(map(str, self.layers))} (0 = lowest); best = level with the highest mean mIoU per gt level;",
            "baselines at the model's number of segments per image and level. FG-ARI ignores "
            "background and rewards over-segmentation: read it with ARI and #seg. USE: lower is better.",
        ]
        if coverage and coverage.get("n_missing"):
            lines.append(f"coverage: {coverage['n_scored']} of the {coverage['n_with_masks']} samples with masks "
                         f"({100 * coverage['fraction']:.1f}%); {coverage['n_missing']} have no prediction")
        for g, n_images in self.gt_levels.items():
            lines.append("")
            best = self.best_level[g]
            lines.append(f"ground truth: {g} masks ({n_images} images)"
                         + (f", best model level {best}" if best is not None else ", no foreground"))
            header = f"{'method':<20} {'level':<8}" + "".join(f"{h:>8}" for h in HEADERS)
            lines.append(header)
            lines.append("-" * len(header))
            for row in self.rows:
                if row.gt_level != g:
                    continue
                level = f"best={row.layer}" if row.level == "best" else str(row.level)
                cells = []
                for metric in METRICS:
                    value = getattr(row, metric)
                    cells.append(f"{'-':>8}" if value is None else
                                 (f"{value:>8.1f}" if metric.startswith("n_") else f"{value:>8.3f}"))
                lines.append(f"{row.method:<20} {level:<8}" + "".join(cells))
        if GRANULARITY in self.sections:
            lines += format_granularity(self.sections[GRANULARITY])
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def _clean(value: float) -> float | None:
    """JSON has no NaN: undefined means become null."""
    return None if math.isnan(value) else round(float(value), 6)


def _best_level(scores: dict[tuple[str, str, int], list[GroupScores]], gt_level: str, method: str,
                layers: list[int]) -> int | None:
    means = []
    for level in layers:
        found = scores.get((gt_level, method, level), [])
        value = mean_scores(found)["miou"] if found else float("nan")
        means.append(-math.inf if math.isnan(value) else value)
    if all(m == -math.inf for m in means):
        return None
    return layers[int(np.argmax(means))]


def _require_records(predictions: Predictions, options: GroupEvalOptions) -> None:
    if not predictions.records:
        where = f" in split {options.split!r}" if options.split is not None else ""
        raise HiCLIPError(f"{predictions.source}: no prediction records{where}")


def _tracker(progress: Progress | None, desc: str, total: int):
    return progress(desc, total) if progress is not None and total else None


def evaluate_groups(predictions: Predictions, truth: dict[str, GroundTruth], options: GroupEvalOptions,
                    data: str = "", extra_sources: Sequence[PartitionSource] = (),
                    sections: Sequence[ReportSection] = (), progress: Progress | None = None
                    ) -> GroupEvaluation:
    """Score every record's groups against the masks of ``truth`` (module docstring).

    Parameters
    ----------
    predictions : Predictions
        From :func:`induction.predictions.read_predictions` (with ``options.split``) or made in
        memory by :mod:`induction.induce`.
    truth : dict of str to GroundTruth
        The dataset samples of the split, by id (:func:`open_ground_truth`).
    options : GroupEvalOptions
    data : str
        How the dataset is named in the result.
    extra_sources : sequence of PartitionSource
        Scored after the built-in ones (independent sources pick their own best level).
    sections : sequence of ReportSection
        Extra report sections, computed last.
    progress : callable, optional
        ``progress(description, total)`` returns an object with ``update(n)`` and ``close()``
        (e.g. ``functools.partial(tqdm, ...)`` with ``desc`` and ``total``).

    Raises
    ------
    HiCLIPError
        Unknown ids, samples with masks but no prediction (unless ``allow_missing``), absent
        mask levels, malformed groups, label maps of the wrong size.
    """
    options.check()
    records = list(predictions.records)
    _require_records(predictions, options)
    for record in records:
        if record.image is None:
            raise HiCLIPError(f"{predictions.where(record)}: record {record.id!r} has no image predictions "
                              "(image is null: a text-only model or dataset?)")
    unknown = [r for r in records if r.id not in truth]
    if unknown:
        where = f" split {options.split!r} of" if options.split else ""
        raise HiCLIPError(f"{predictions.where(unknown[0])}: id {unknown[0].id!r} is not in{where} {data} "
                          f"({len(unknown)} of {len(records)} records unmatched)")
    predicted = {r.id for r in records}
    with_masks = [i for i, gt in truth.items() if gt.masks]
    missing = [i for i in with_masks if i not in predicted]
    coverage = {"n_with_masks": len(with_masks), "n_scored": len(with_masks) - len(missing),
                "n_missing": len(missing),
                "fraction": (len(with_masks) - len(missing)) / len(with_masks) if with_masks else None,
                "missing_examples": missing[:5]}
    if missing and not options.allow_missing:
        where = f"split {options.split!r} of " if options.split else ""
        splits = {r.split for r in records}
        hint = (f" (the predictions are all of split {next(iter(splits))!r}: pass --split {next(iter(splits))})"
                if options.split is None and len(splits) == 1 and None not in splits
                and all(truth[i].split != next(iter(splits)) for i in missing) else "")
        raise HiCLIPError(f"{predictions.source}: {len(missing)} of the {len(with_masks)} samples with masks in "
                          f"{where}{data} have no prediction (e.g. {missing[0]!r}){hint}; scoring a part would "
                          "not be comparable: predict all of them, or pass --allow-missing to score the "
                          "covered ones and report the coverage")

    available = sorted({level for r in records for level in truth[r.id].masks})
    gt_levels = options.gt_levels or [g for g in available if g not in NOT_A_LEVEL] or available
    absent = [g for g in gt_levels if g not in available]
    if absent:
        raise HiCLIPError(f"{data}: no masks of level(s) {', '.join(absent)}; "
                          f"the dataset has {', '.join(available) or 'no masks'}")
    if not gt_levels:
        raise HiCLIPError(f"{data}: the samples have no segmentation masks to score against")

    independent: list[PartitionSource] = [ModelSource()]
    if options.snap_superpixels:
        independent.append(SnappedSource(options.superpixels, options.compactness))
    matched: list[PartitionSource] = [BaselineSource(b, options.baseline_size or None) for b in options.baselines]
    for source in extra_sources:
        (matched if source.matched else independent).append(source)
    names = [s.name for s in independent + matched]
    if len(set(names)) != len(names):
        raise HiCLIPError(f"partition source names repeat: {names}")

    scores: dict[tuple[str, str, int], list[GroupScores]] = {}
    items: list[ImageItem] = []
    without_masks = 0
    layers: list[int] | None = None
    bar = _tracker(progress, "score groups", len(records))
    for record in records:
        gt = truth[record.id]
        masks = _load_masks(gt, [g for g in gt_levels if g in gt.masks])
        if not masks:
            without_masks += 1
        else:
            size = next(iter(masks.values())).shape
            levels = predicted_levels(record, predictions, size, options.tau, options.quantile)
            if layers is None:
                layers = sorted(levels)
            item = ImageItem(record, gt, masks, levels)
            for source in independent:
                for level, pixel_map in source.partitions(item, layers).items():
                    for g, mask in masks.items():
                        scores.setdefault((g, source.name, level), []).append(score_segmentation(pixel_map, mask))
            items.append(item)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    layers = layers or []

    best = {(g, s.name): _best_level(scores, g, s.name, layers) for g in gt_levels for s in independent}
    baseline_level = options.baseline_level or options.level
    needed = {g: (list(layers) if baseline_level == "all"
                  else [lvl for lvl in [best[(g, MODEL)]] if lvl is not None]) for g in gt_levels}
    if matched:
        bar = _tracker(progress, "baselines", len(items))
        for item in items:
            wanted = sorted({lvl for g in item.masks for lvl in needed[g]})
            if wanted:
                for source in matched:
                    for level, pixel_map in source.partitions(item, wanted).items():
                        for g, mask in item.masks.items():
                            if level in needed[g]:
                                scores.setdefault((g, source.name, level), []).append(
                                    score_segmentation(pixel_map, mask))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()

    rows: list[GroupRow] = []
    for g in gt_levels:
        for source in independent + matched:
            chosen = best[(g, MODEL if source.matched else source.name)]
            shown = baseline_level if source.matched else options.level
            levels_shown: list[int | str] = list(layers) if shown == "all" else []
            if chosen is not None:
                levels_shown.append("best")
            for level in levels_shown:
                layer = chosen if level == "best" else level
                found = scores.get((g, source.name, layer), [])
                if not found:
                    continue
                means = mean_scores(found)
                rows.append(GroupRow(g, source.name, level, int(layer), int(means.pop("n_images")),
                                     **{k: _clean(v) for k, v in means.items()}))
    if options.granularity:
        granularity = options.granularity_options()
        sections = (ReportSection(GRANULARITY, lambda scored, ev: evaluate_granularity(
            scored, list(ev.gt_levels), granularity).to_dict()), *sections)
    if len({s.name for s in sections}) != len(sections):
        raise HiCLIPError(f"report section names repeat: {[s.name for s in sections]}")
    evaluation = GroupEvaluation(
        pred=predictions.source, data=data, options=options, n_records=len(records),
        n_without_masks=without_masks, layers=list(layers),
        gt_levels={g: int(sum(1 for item in items if g in item.masks)) for g in gt_levels},
        best_level={g: best[(g, MODEL)] for g in gt_levels}, methods=names, rows=rows, coverage=coverage)
    for section in sections:
        evaluation.sections[section.name] = section.compute(items, evaluation)
    return evaluation


def evaluate_group_file(pred: str | Path, data: str, options: GroupEvalOptions,
                        progress: Progress | None = None, extra_sources: Sequence[PartitionSource] = (),
                        sections: Sequence[ReportSection] = ()) -> GroupEvaluation:
    """:func:`evaluate_groups` on a prediction JSONL and a dataset spec (``hiclip score groups``)."""
    from induction.predictions import read_predictions

    options.check()
    predictions = read_predictions(pred, options.split)
    _require_records(predictions, options)
    return evaluate_groups(predictions, open_ground_truth(data, options.split), options, str(data),
                           extra_sources, sections, progress)



def evaluate_image(image: ImagePrediction, masks: Mapping[str, np.ndarray], pixels: np.ndarray | None = None,
                   sample_id: str = "image", options: GroupEvalOptions | None = None) -> GroupEvaluation:
    """:func:`evaluate_groups` of one image's predicted groups against its ``masks`` (level ->
    (height, width) ids), every layer scored: the numbers ``hiclip score groups --level all``
    gives for that image alone (the app's metrics view). ``pixels`` is the RGB image, needed only
    by sources that read it (snapping, baselines)."""
    if not masks:
        raise HiCLIPError(f"{sample_id}: no masks to score against")
    shape = next(iter(masks.values())).shape[:2]
    truth = {sample_id: GroundTruth(sample_id, (int(shape[0]), int(shape[1])),
                                    {level: (lambda m=m: np.asarray(m)) for level, m in masks.items()},
                                    lambda: np.asarray(pixels) if pixels is not None else np.zeros(shape + (3,), np.uint8))}
    record = PredictionRecord(sample_id, None, [], image)
    options = options or GroupEvalOptions(level="all", baselines=(), granularity=False)
    return evaluate_groups(Predictions([record], sample_id), truth, options, sample_id)
