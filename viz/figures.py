"""The paper's figures from a checkpoint and a dataset (``hiclip figures`` and the notebook).

Qualitative, per chosen sample (``samples/<id>/``):
  ``text_links``     per-layer word links as bars, merged groups shaded (HiCLIP Figure 2 style)
  ``text_layers``    the constituents merged by each layer, one tree per layer
  ``tree_vs_gold``   induced vs gold tree, shared constituents green (also as ``.svg``)
  ``image_groups``   group overlays at each layer
  ``image_links``    h/v link heatmaps and links drawn on patch boundaries
  ``segment_tree``   the segment hierarchy with segment thumbnails
Quantitative (``quantitative/``):
  ``text_f1_by_layer``       F1 of the Tree-Transformer parser started at each layer, per model
  ``text_f1_by_threshold``   F1 against the per-layer quantile threshold, per model
  ``text_f1_models``         every model (both parsers) and the trivial baselines as bars
  ``image_miou_by_layer`` / ``image_ari_by_layer``   groups against masks, per layer, per model
``training_curves`` from a run folder's ``metrics.jsonl``. ``figures.json`` lists every file and
the numbers behind each plot.

Models are checkpoints (``hiclip.load``) or prediction JSONL files (``hiclip induce``), so
HiCLIP, its vanilla-CLIP twin and any other system can be drawn on the same axes.
"""
from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from hiclip.data.trees import TreeRecord, leaf_tags
from hiclip.errors import HiCLIPError, SkipReport
from induction import image_groups, text_trees, tree_scoring
from induction.affinities import image_links, text_links
from viz import analysis, gold, images, links, plots, trees
from viz.save import save_figure

HEADLINE = {"vgnsl": "corpus_f1", "standard": "sentence_f1"}
DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class CaptionLinks:
    """One caption's words and links, with its gold tree when the dataset has one."""

    sample_id: str
    caption_index: int
    words: list[str]
    links: np.ndarray          # (L, n-1) float64
    gold: str | None = None    # PTB bracket string


@dataclass
class ImageLinks:
    """One image's grid links, with its masks (level -> (height, width) int ids)."""

    sample_id: str
    h: np.ndarray              # (L, H, W-1)
    v: np.ndarray              # (L, H-1, W)
    masks: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ModelLinks:
    """Everything the quantitative plots need from one model."""

    name: str
    text: list[CaptionLinks]
    image: list[ImageLinks]


# ----------------------------------------------------------------------------- samples


def choose_samples(dataset: Sequence, ids: Sequence[str] | None = None, n: int | None = None,
                   seed: int = 0) -> list:
    """Samples by id (in the order given; unknown ids are an error) or ``n`` at random (seeded)."""
    samples = list(dataset)
    if ids:
        by_id = {s.id: s for s in samples}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise HiCLIPError(f"unknown sample id(s): {', '.join(missing)} "
                              f"(the dataset has {len(samples)} samples, e.g. {samples[0].id if samples else '-'})")
        return [by_id[i] for i in ids]
    n = min(n if n is not None else 4, len(samples))
    return random.Random(seed).sample(samples, n)


def _sample_masks(sample) -> dict[str, np.ndarray]:
    out = {}
    for level in gold.mask_levels(list(sample.masks)):
        try:
            out[level] = sample.load_mask(level)
        except HiCLIPError:
            continue
    return out


# ----------------------------------------------------------------------------- model links


def model_links(model, tokenizer, samples: Sequence, name: str, max_captions: int | None = 500,
                max_images: int | None = 200, batch_size: int = 32) -> ModelLinks:
    """Run a checkpoint over ``samples``: links of every caption (up to ``max_captions``) and
    every image (up to ``max_images``), paired with the gold trees and masks."""
    captions = [(s, k, c) for s in samples for k, c in enumerate(s.captions) if c.strip()]
    if max_captions is not None:
        captions = captions[:max_captions]
    results = text_links(model, tokenizer, [c for _, _, c in captions], batch_size)
    text = [CaptionLinks(s.id, k, words, arr, s.trees[k] if k < len(s.trees) else None)
            for (s, k, _), (words, arr) in zip(captions, results)]
    image: list[ImageLinks] = []
    if model.config.vision is not None:
        chosen = list(samples)[:max_images] if max_images is not None else list(samples)
        pil = [s.open_image() for s in chosen]
        for s, (h, v) in zip(chosen, image_links(model, pil, batch_size)):
            image.append(ImageLinks(s.id, h, v, _sample_masks(s)))
    return ModelLinks(name, text, image)


def prediction_links(path: str | Path, samples: Sequence, name: str | None = None) -> ModelLinks:
    """Read links from a prediction JSONL (``hiclip induce``) and pair them with ``samples``'
    gold trees and masks by sample id and caption index (records of unknown ids are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise HiCLIPError(f"{path}: prediction file not found")
    by_id = {s.id: s for s in samples}
    text: list[CaptionLinks] = []
    image: list[ImageLinks] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise HiCLIPError(f"{path}:{number}: not JSON ({error.msg})") from None
        sample = by_id.get(record.get("id"))
        if sample is None:
            continue
        for k, entry in enumerate(record.get("text") or []):
            index = int(entry.get("caption_index", k))
            arr = np.asarray(entry.get("links") or [], dtype=np.float64)
            words = [str(t) for t in entry.get("tokens") or []]
            if arr.ndim != 2 or arr.shape[1] != max(len(words) - 1, 0):
                raise HiCLIPError(f"{path}:{number}: text {k} links of shape {arr.shape} do not fit "
                                  f"{len(words)} tokens")
            gold_tree = sample.trees[index] if index < len(sample.trees) else None
            text.append(CaptionLinks(sample.id, index, words, arr, gold_tree))
        img = record.get("image")
        if img and img.get("h_links") is not None:
            h = np.asarray(img["h_links"], dtype=np.float64)
            v = np.asarray(img["v_links"], dtype=np.float64)
            image.append(ImageLinks(sample.id, h, v, _sample_masks(sample)))
    return ModelLinks(name or path.stem, text, image)


# ----------------------------------------------------------------------------- scores


def _records(items: Sequence[CaptionLinks], parse) -> tuple[list[TreeRecord], list[TreeRecord]]:
    """Predicted and gold ``TreeRecord`` pairs for the captions with a gold tree."""
    preds, golds = [], []
    for item in items:
        if not item.gold or len(item.words) < 1:
            continue
        gold_tree = gold.parse_gold(item.gold)
        tree = parse(item)
        where = f"{item.sample_id} caption {item.caption_index}"
        preds.append(TreeRecord(tree, list(tree.leaves()), "prediction", None, None, where))
        golds.append(TreeRecord(gold_tree, list(gold_tree.leaves()), "gold", None,
                                leaf_tags(gold_tree), where))
    return preds, golds


def _f1(items: Sequence[CaptionLinks], parse, convention: str) -> float:
    preds, golds = _records(items, parse)
    if not golds:
        return float("nan")
    report = tree_scoring.score_trees(preds, golds, convention, mismatch=SkipReport("skip"))
    return float(getattr(report, HEADLINE[convention]))


def _parse_tt(item: CaptionLinks, start_layer: int | None = None, thresholds=None):
    if len(item.words) < 2:
        return text_trees.InducedTree(0, item.words, {}).tree
    kwargs = {"start_layer": start_layer}
    if thresholds is not None:
        kwargs["thresholds"] = thresholds
    if start_layer is not None:
        kwargs["min_layer"] = min(text_trees.DEFAULT_MIN_LAYER, start_layer)
    return text_trees.tree_transformer_parse(item.links, item.words, **kwargs).tree


def _parse_binary(item: CaptionLinks):
    if len(item.words) < 2:
        return text_trees.InducedTree(0, item.words, {}).tree
    return text_trees.lowest_link_parse(item.links, item.words).tree


def has_gold_trees(items: Sequence[CaptionLinks]) -> bool:
    return any(item.gold for item in items)


def f1_by_layer(items: Sequence[CaptionLinks], convention: str = "vgnsl") -> list[float]:
    """F1 (percent, the convention's headline number) of the Tree-Transformer parser started at
    each layer ``l`` (it reads only layers ``<= l``)."""
    n_layers = min((item.links.shape[0] for item in items), default=0)
    return [_f1(items, lambda it, l=layer: _parse_tt(it, l), convention) for layer in range(n_layers)]


def f1_by_threshold(items: Sequence[CaptionLinks], quantiles: Sequence[float] = DEFAULT_QUANTILES,
                    convention: str = "vgnsl", gap: float = 0.1) -> list[float]:
    """F1 of the Tree-Transformer parser with per-layer corpus quantile thresholds: break at
    quantile ``q``, descend at ``q - gap``."""
    arrays = [item.links for item in items if item.links.shape[1] > 0]
    if not arrays:
        return [float("nan")] * len(quantiles)
    out = []
    for q in quantiles:
        thresholds = text_trees.quantile_thresholds(arrays, q, max(0.0, q - gap))
        out.append(_f1(items, lambda it, t=thresholds: _parse_tt(it, None, t), convention))
    return out


def parser_f1(items: Sequence[CaptionLinks], convention: str = "vgnsl") -> dict[str, float]:
    """F1 of both parsers with their default settings."""
    return {"tree_transformer": _f1(items, _parse_tt, convention),
            "binary": _f1(items, _parse_binary, convention)}


def baseline_f1(items: Sequence[CaptionLinks], convention: str = "vgnsl", seeds: int = 5
                ) -> dict[str, float]:
    """Left/right-branching, balanced and random (mean over seeds) on the same sentences."""
    _, golds = _records(items, lambda it: trees.as_tree("(S " + " ".join(it.words) + ")"))
    if not golds:
        return {}
    out = {}
    for name in tree_scoring.BASELINES:
        report = tree_scoring.score_baseline(golds, convention, name, seeds=seeds)
        out[name] = float(getattr(report, HEADLINE[convention]))
    return out


def image_scores_by_layer(items: Sequence[ImageLinks], tau: float = 0.6, quantile: bool = False,
                          level: str | None = None) -> dict[str, list[float]]:
    """Mean over images of mIoU, ARI, foreground ARI and segment count at each layer.

    ``level`` is the mask level (default: ``object`` if present, else the first available).
    Images without that mask level are skipped; ``{}`` when none has it.
    """
    scored: list[list] = []
    for item in items:
        if not item.masks:
            continue
        chosen = level or ("object" if "object" in item.masks else next(iter(item.masks)))
        if chosen not in item.masks:
            continue
        groups = image_groups.layer_groups(item.h, item.v, tau, quantile=quantile)
        scored.append(gold.group_scores_by_layer(groups, item.masks[chosen]))
    if not scored:
        return {}
    n_layers = min(len(s) for s in scored)
    out: dict[str, list[float]] = {}
    for key, attr in (("mIoU", "miou"), ("ARI", "ari"), ("fg ARI", "fg_ari"), ("segments", "n_segments")):
        out[key] = [float(np.nanmean([getattr(s[l], attr) for s in scored])) for l in range(n_layers)]
    return out


# ----------------------------------------------------------------------------- qualitative


def sample_figures(model, tokenizer, sample, out: str | Path, fmt: str = "png",
                   text_tau: float = 0.8, image_tau: float = 0.6, quantile: bool = False,
                   caption_index: int = 0) -> dict[str, str]:
    """The qualitative figures of one sample in ``out`` (created); returns ``{name: path}``."""
    out = Path(out)
    written: dict[str, str] = {}

    def save(name: str, picture, ext: str = fmt) -> None:
        written[name if ext == fmt else f"{name}_{ext}"] = str(save_figure(picture, out / f"{name}.{ext}"))

    caption = sample.captions[caption_index]
    text = analysis.analyse_text(model, tokenizer, caption)
    threshold, q = (None, text_tau) if quantile else (text_tau, None)
    if len(text.words) > 1:
        save("text_links", links.link_bars_figure(text.words, text.links, threshold=threshold,
                                                  quantile=q, title=caption))
        layer_trees = [text.merged_at(layer, threshold, q) for layer in range(text.n_layers)]
        save("text_layers", trees.trees_grid_figure(
            layer_trees, [f"merged by layer {layer}" for layer in range(text.n_layers)], ncols=2))
        induced = text.parse("tree_transformer").tree
        gold_text = sample.trees[caption_index] if caption_index < len(sample.trees) else None
        if gold_text:
            gold_tree = gold.parse_gold(gold_text)
            try:
                save("tree_vs_gold", trees.tree_pair_figure(induced, gold_tree))
                save("tree_vs_gold", trees.tree_pair_svg(induced, gold_tree), "svg")
            except ValueError:
                save("tree", trees.tree_figure(induced, title="induced tree"))
        else:
            save("tree", trees.tree_figure(induced, title="induced tree"))
            save("tree", trees.tree_svg(induced), "svg")
    if model.config.vision is not None:
        image = analysis.analyse_image(model, sample.open_image())
        groups = image.groups(image_tau, quantile)
        save("image_groups", images.groups_across_layers_figure(image.view, groups, title=sample.id))
        save("image_links", links.link_heatmaps_figure(image.h, image.v, image=image.view))
        save("segment_tree", images.segment_tree_figure(image_groups.segment_tree(groups),
                                                        image=image.view, grid=image.grid))
    return written


# ----------------------------------------------------------------------------- quantitative


def quantitative_figures(models: Sequence[ModelLinks], out: str | Path, fmt: str = "png",
                         convention: str = "vgnsl", image_tau: float = 0.6,
                         quantiles: Sequence[float] = DEFAULT_QUANTILES) -> dict:
    """Score plots comparing ``models``; returns ``{"files": {...}, "numbers": {...}}``.

    Text plots need gold trees, image plots masks; each is left out (and said so in
    ``numbers["skipped"]``) when the data has none.
    """
    out = Path(out)
    files: dict[str, str] = {}
    numbers: dict = {"convention": convention, "metric": HEADLINE[convention], "skipped": []}
    with_gold = [m for m in models if has_gold_trees(m.text)]
    if with_gold:
        by_layer = {m.name: f1_by_layer(m.text, convention) for m in with_gold}
        n = min(len(v) for v in by_layer.values())
        by_layer = {k: v[:n] for k, v in by_layer.items()}
        baselines = baseline_f1(with_gold[0].text, convention)
        by_threshold = {m.name: f1_by_threshold(m.text, quantiles, convention) for m in with_gold}
        bars = {f"{m.name} {p}": v for m in with_gold for p, v in parser_f1(m.text, convention).items()}
        numbers.update(f1_by_layer=by_layer, f1_by_threshold={"quantiles": list(quantiles), **by_threshold},
                       parsers=bars, baselines=baselines)
        ylabel = f"{HEADLINE[convention].replace('_', ' ')} ({convention})"
        files["text_f1_by_layer"] = str(save_figure(plots.f1_by_layer_figure(
            by_layer, baselines, ylabel=ylabel, title="Tree-Transformer parser started at each layer"),
            out / f"text_f1_by_layer.{fmt}"))
        files["text_f1_by_threshold"] = str(save_figure(plots.f1_by_threshold_figure(
            quantiles, by_threshold, baselines, ylabel=ylabel, xlabel="break threshold (per-layer quantile)",
            title="threshold sweep"), out / f"text_f1_by_threshold.{fmt}"))
        files["text_f1_models"] = str(save_figure(plots.scores_bar_figure(
            {**bars, **baselines}, ylabel=ylabel, highlight=list(bars), title="models and baselines"),
            out / f"text_f1_models.{fmt}"))
    else:
        numbers["skipped"].append("text F1: no gold trees in the data")
    with_masks = {m.name: image_scores_by_layer(m.image, image_tau) for m in models if m.image}
    with_masks = {k: v for k, v in with_masks.items() if v}
    if with_masks:
        numbers["image_by_layer"] = with_masks
        n = min(len(v["mIoU"]) for v in with_masks.values())
        for key, stem in (("mIoU", "image_miou_by_layer"), ("ARI", "image_ari_by_layer")):
            curves = {name: v[key][:n] for name, v in with_masks.items()}
            files[stem] = str(save_figure(plots.f1_by_layer_figure(
                curves, ylabel=key, title=f"groups (link threshold {image_tau}) against masks"),
                out / f"{stem}.{fmt}"))
    else:
        numbers["skipped"].append("image scores: no image links with masks")
    return {"files": files, "numbers": numbers}


def training_figure(run: str | Path, out: str | Path, fmt: str = "png") -> str:
    """Training curves of a run folder's ``metrics.jsonl``; returns the path written."""
    records = plots.read_metrics(run)
    fig = plots.training_curves_figure(records, title=f"training: {Path(run).name}")
    return str(save_figure(fig, Path(out) / f"training_curves.{fmt}"))


def write_index(index: Mapping, out: str | Path) -> Path:
    """``figures.json``: the files written and the numbers behind the plots."""
    from hiclip.atomic import atomic_write_text

    path = atomic_write_text(Path(out) / "figures.json", json.dumps(_json_ready(index), indent=2) + "\n")
    plt.close("all")
    return path


def _json_ready(value):
    """Numbers as plain floats, NaN as null (strict JSON), containers recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
