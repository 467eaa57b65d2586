"""The paper's figures, drawn from prediction records and their evaluations (``hiclip figures``,
``hiclip demo``, the notebook).

A figure never computes a score of its own. Every plotted number comes from the evaluation that
the tables report (:func:`induction.evaluation.evaluate_system`: the same function, convention,
parameters and sentences as ``hiclip score trees`` / ``hiclip score groups``), or, for the curves
no table has, from the same function on the same records re-parsed from their stored links
(:func:`induction.evaluation.evaluate_tree_variants`). ``figures.json`` records, for each number,
its metric, convention, parameters and n.

Qualitative, per chosen sample (``samples/<id>/``), from the sample's prediction record:
  ``text_links``     per-layer word links as bars, merged groups shaded, threshold line labelled
  ``text_layers``    the constituents merged by each layer, one tree per layer
  ``tree_vs_gold``   the scored tree against the gold tree, shared constituents green (also ``.svg``)
  ``image_groups``   the scored groups at each layer, over the image the model saw
  ``image_links``    h/v link heatmaps and links drawn on patch boundaries, with a colour bar
  ``segment_tree``   the segment hierarchy with segment thumbnails
Quantitative (``quantitative/``):
  ``text_f1_models``         every system (both parsers) and the trivial baselines: the table's numbers
  ``text_f1_by_layer``       F1 of the Tree-Transformer parser started at each layer, per system
  ``text_f1_by_threshold``   F1 against the per-layer quantile threshold, per system
  ``image_miou_by_layer`` / ``image_ari_by_layer``   the table's groups against masks at every layer
``training_curves`` from a run folder's ``metrics.jsonl``.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from hiclip.atomic import atomic_write_text
from hiclip.data.trees import TreeRecord
from hiclip.errors import HiCLIPError
from induction.evaluation import PARSER_NAMES, SystemEvaluation, evaluate_tree_variants
from induction.predictions import PredictionRecord
from induction.tree_evaluation import TreeEvaluation, TreeScoreOptions, score_tree_pair
from viz import gold, images, links, plots, trees
from viz.save import save_figure

DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
QUANTILE_GAP = 0.1  # the descend quantile sits this far below the break quantile
METRIC_LABELS = {"sentence_f1": "sentence F1", "corpus_f1": "corpus F1", "miou": "mIoU", "ari": "ARI"}


# ----------------------------------------------------------------------------- samples


def _n_labelled(sample, key: str) -> int:
    value = (sample.labels or {}).get(key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def informativeness(sample) -> tuple[int, int, int]:
    """How much a sample shows: (groups, objects, words of its longest caption), from its labels
    (the synthetic shapes record ``groups`` and ``count``) and captions."""
    words = max((len(c.split()) for c in sample.captions), default=0)
    return _n_labelled(sample, "groups"), _n_labelled(sample, "count"), words


def choose_samples(dataset: Sequence, ids: Sequence[str] | None = None, n: int | None = None,
                   seed: int = 0, informative: bool = False) -> list:
    """Samples by id (in the order given; unknown ids are an error), or ``n`` drawn with ``seed``:
    at random, or with ``informative`` among the quarter of the samples that show the most
    (several groups and objects, long captions: :func:`informativeness`), in dataset order."""
    samples = list(dataset)
    if ids:
        by_id = {s.id: s for s in samples}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise HiCLIPError(f"unknown sample id(s): {', '.join(missing)} "
                              f"(the dataset has {len(samples)} samples, e.g. {samples[0].id if samples else '-'})")
        return [by_id[i] for i in ids]
    n = min(n if n is not None else 4, len(samples))
    if not informative:
        return random.Random(seed).sample(samples, n)
    ranked = sorted(range(len(samples)), key=lambda i: informativeness(samples[i]), reverse=True)
    pool = ranked[:max(n, len(samples) // 4)]
    return [samples[i] for i in sorted(random.Random(seed).sample(pool, n))]


def longest_caption(record: PredictionRecord) -> int:
    """Position in ``record.text`` of the caption with the most words (the first of ties)."""
    lengths = [len(c.tokens) for c in record.text]
    return int(np.argmax(lengths)) if lengths else 0


# ----------------------------------------------------------------------------- qualitative


FIGURE_CAPTIONS = {
    "text_links": "Word links of the caption at every layer (layer 0 on top): a bar is the link between "
                  "two neighbouring words, the dashed line the threshold, grey boxes the groups of words "
                  "linked above it, i.e. the constituents merged by that layer.",
    "text_layers": "The constituents merged by each layer: node L<k> is joined at layer k; '...' holds what is "
                   "not merged yet.",
    "tree_vs_gold": "The induced tree that was scored (top) against the gold tree (bottom); constituents "
                    "the two share are green, the others red. The scores are this sentence's, under the "
                    "report's convention.",
    "tree": "The induced tree that was scored (the data has no gold tree for it).",
    "image_groups": "The patch groups that were scored, at every layer, over the image as the model saw it "
                    "(centre crop): links at or above the threshold join neighbouring patches.",
    "image_links": "Horizontal and vertical patch links at every layer, and the same links drawn on the "
                   "patch boundaries they cross (thick and dark = weak = a boundary).",
    "segment_tree": "The segment tree: one node per segment, drawn at the lowest layer where it exists; "
                    "children are the segments it merges.",
}


def sample_figures(record: PredictionRecord, sample, out: str | Path, fmt: str = "png",
                   text_tau: float = 0.8, caption: int | None = None, parser: str = "tree_transformer",
                   convention: str = "standard") -> dict[str, str]:
    """The qualitative figures of one sample from its prediction record; returns ``{name: path}``.

    ``caption`` is the position in ``record.text`` (default: the longest caption); the tree shown
    is ``parser``'s (the one the tables score under that name), scored under ``convention``.
    ``text_tau`` only draws: which word groups the link bars and the per-layer trees shade.
    """
    out = Path(out)
    written: dict[str, str] = {}

    def save(name: str, picture, ext: str = fmt) -> None:
        written[name if ext == fmt else f"{name}_{ext}"] = str(save_figure(picture, out / f"{name}.{ext}"))

    if record.text:
        entry = record.text[longest_caption(record) if caption is None else caption]
        words = entry.tokens
        title = " ".join(words)
        if len(words) > 1 and entry.links is not None:
            save("text_links", links.link_bars_figure(words, entry.links, threshold=text_tau, title=title))
            layer_trees = [links.merge_tree(words, entry.links, layer, text_tau) for layer in range(entry.n_layers)]
            save("text_layers", trees.trees_grid_figure(
                layer_trees, [f"merged by layer {layer}" for layer in range(entry.n_layers)], ncols=2))
        bracket = entry.tree_for(parser) or entry.tree
        gold_text = sample.trees[entry.caption_index] if entry.caption_index < len(sample.trees) else None
        if bracket and len(words) > 1:
            induced = gold.parse_gold(bracket)
            shown = False
            if gold_text:
                gold_tree = gold.parse_gold(gold_text)
                try:
                    score = score_tree_pair(induced, gold_tree, convention)
                except HiCLIPError:
                    score = None
                if score is not None:
                    label = f"{PARSER_NAMES.get(parser, parser)}: " + trees.score_label(score, convention)
                    save("tree_vs_gold", trees.tree_pair_figure(induced, gold_tree, (label, "gold")))
                    save("tree_vs_gold", trees.tree_pair_svg(induced, gold_tree, (label, "gold")), "svg")
                    shown = True
            if not shown:
                save("tree", trees.tree_figure(induced, title=f"induced tree ({PARSER_NAMES.get(parser, parser)})"))
                save("tree", trees.tree_svg(induced), "svg")
    image = record.image
    if image is not None and image.groups is not None:
        from viz.analysis import display_view

        view = display_view(sample.open_image())
        tau = (image.group_params or {}).get("tau")
        save("image_groups", images.groups_across_layers_figure(
            view, image.groups, title=f"{sample.id}: groups at link threshold {tau}" if tau is not None else sample.id))
        if image.has_links:
            save("image_links", links.link_heatmaps_figure(image.h_links, image.v_links, image=view))
        tree = image.tree()
        if tree is not None:
            save("segment_tree", images.segment_tree_figure(tree, image=view, grid=image.grid))
    return written


# ----------------------------------------------------------------------------- quantitative


@dataclass
class Number:
    """One plotted number and what it means (one entry of ``figures.json``)."""

    value: float | None
    metric: str
    n: int
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        value = None if self.value is None or not np.isfinite(self.value) else float(self.value)
        return {"value": value, "metric": self.metric, "n": int(self.n), "parameters": self.parameters}


def tree_number(evaluation: TreeEvaluation, metric: str | None = None) -> Number:
    """The headline (or ``metric``) of a tree evaluation, with its n and parameters."""
    report = evaluation.report
    metric = metric or evaluation.options.headline
    n = report.n_sentence_f1 if metric == "sentence_f1" else report.n_scored
    return Number(float(getattr(report, metric)), metric, n, evaluation.parameters())


def baseline_numbers(evaluation: TreeEvaluation, metric: str | None = None) -> dict[str, Number]:
    metric = metric or evaluation.options.headline
    out = {}
    for name, report in evaluation.baselines.items():
        n = report.n_sentence_f1 if metric == "sentence_f1" else report.n_scored
        params = {**evaluation.parameters(), "baseline": name}
        out[report.prediction] = Number(float(getattr(report, metric)), metric, n, params)
    return out


def start_layer_variants(n_layers: int) -> dict[int, Any]:
    """Tree-Transformer parser options starting at each layer (default thresholds; the minimum
    layer is clamped to the start layer by the parser itself)."""
    from induction.induce import TreeOptions

    return {layer: TreeOptions(start_layer=layer) for layer in range(n_layers)}


def quantile_variants(quantiles: Sequence[float]) -> dict[float, Any]:
    """Tree-Transformer parser options with per-layer corpus quantile thresholds: break at ``q``,
    descend at ``q - QUANTILE_GAP``."""
    from induction.induce import TreeOptions

    return {q: TreeOptions(quantiles=(q, max(0.0, q - QUANTILE_GAP)), quantile_scope="corpus") for q in quantiles}


def _text_layers(system: SystemEvaluation) -> int:
    return min((c.n_layers or 0 for _, c in system.predictions.captions()), default=0)


QUANTITATIVE_CAPTIONS = {
    "text_f1_models": "Every system with both parsers, and the trivial baselines on the same sentences: "
                      "the numbers of the tree table, under the {convention} convention ({metric}).",
    "text_f1_by_layer": "{Metric} ({convention}) of the Tree-Transformer parser started at each layer (it reads "
                        "only layers up to the start); the rightmost point is the table's number. Dotted: the "
                        "baselines.",
    "text_f1_by_threshold": "{Metric} ({convention}) of the Tree-Transformer parser with per-layer quantile "
                            "thresholds (break at q, descend at q - 0.1) instead of the absolute 0.8 / 0.7.",
    "image_miou_by_layer": "Best-match mIoU of each system's groups against the {gt_level} masks at every layer; "
                           "the ringed point is the best layer, the number in the group table.",
    "image_ari_by_layer": "ARI (background one cluster) of each system's groups against the {gt_level} masks at "
                          "every layer; the ringed point is at the best layer by mIoU, as in the group table.",
}


def quantitative_figures(systems: Sequence[SystemEvaluation], golds: Sequence[TreeRecord] | None,
                         out: str | Path, fmt: str = "png", convention: str = "standard",
                         gt_level: str | None = None, quantiles: Sequence[float] = DEFAULT_QUANTILES,
                         tree_options: TreeScoreOptions | None = None,
                         progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score plots comparing ``systems``; returns ``{"files", "captions", "numbers", "skipped"}``.

    ``convention`` picks the tree evaluations (and, for the re-parsed curves, the scoring); the
    group plots use ``gt_level`` (default ``object`` when present, else the first level).
    Text plots need gold trees, image plots masks; each is left out, and said so in ``skipped``.
    ``progress(name)`` is called before each figure.
    """
    out = Path(out)
    files: dict[str, str] = {}
    captions: dict[str, str] = {}
    numbers: dict[str, Any] = {}
    skipped: list[str] = []
    step = progress or (lambda name: None)
    with_trees = [s for s in systems if ("tree_transformer", convention) in s.trees]
    with_links: list[SystemEvaluation] = []
    if with_trees and golds is not None:
        template = with_trees[0].trees[("tree_transformer", convention)]
        metric = template.options.headline
        label = f"{METRIC_LABELS[metric]} ({convention})"
        options = tree_options or template.options
        step("text_f1_models")
        bars = {f"{s.name} {PARSER_NAMES[p]}": tree_number(e) for s in with_trees
                for (p, c), e in s.trees.items() if c == convention}
        base = baseline_numbers(template)
        numbers["text_f1_models"] = {"convention": convention, "metric": metric, "unit": "percent",
                                     "systems": {k: v.to_dict() for k, v in bars.items()},
                                     "baselines": {k: v.to_dict() for k, v in base.items()}}
        files["text_f1_models"] = str(save_figure(plots.scores_bar_figure(
            {**{k: v.value for k, v in bars.items()}, **{k: v.value for k, v in base.items()}},
            ylabel=label, highlight=list(bars), title="systems and baselines on the same sentences"),
            out / f"text_f1_models.{fmt}"))
        baseline_values = {k: v.value for k, v in base.items()}
        # the curves re-parse stored links: systems whose predictions came without links have none
        with_links = [s for s in with_trees if _text_layers(s) > 0]
        skipped.extend(f"text F1 curves of {s.name}: its captions carry no links" for s in with_trees
                       if s not in with_links)
    if with_links:
        step("text_f1_by_layer")
        n_layers = min(_text_layers(s) for s in with_links)
        by_layer = {s.name: evaluate_tree_variants(s.predictions, golds, options, start_layer_variants(n_layers))
                    for s in with_links}
        numbers["text_f1_by_layer"] = {"convention": convention, "metric": metric, "x": list(range(n_layers)),
                                       "x_label": "start layer (0-based)", "unit": "percent",
                                       "series": {name: [tree_number(e).to_dict() for e in curve.values()]
                                                  for name, curve in by_layer.items()}}
        files["text_f1_by_layer"] = str(save_figure(plots.f1_by_layer_figure(
            {name: [tree_number(e).value for e in curve.values()] for name, curve in by_layer.items()},
            baseline_values, ylabel=label, title="Tree-Transformer parser started at each layer",
            xlabel="start layer"), out / f"text_f1_by_layer.{fmt}"))
        step("text_f1_by_threshold")
        by_threshold = {s.name: evaluate_tree_variants(s.predictions, golds, options, quantile_variants(quantiles))
                        for s in with_links}
        numbers["text_f1_by_threshold"] = {"convention": convention, "metric": metric, "x": list(quantiles),
                                           "x_label": "break quantile", "unit": "percent",
                                           "series": {name: [tree_number(e).to_dict() for e in curve.values()]
                                                      for name, curve in by_threshold.items()}}
        files["text_f1_by_threshold"] = str(save_figure(plots.f1_by_threshold_figure(
            list(quantiles), {name: [tree_number(e).value for e in curve.values()]
                              for name, curve in by_threshold.items()},
            baseline_values, ylabel=label, xlabel="break threshold (per-layer quantile of the links)",
            title="threshold sweep"), out / f"text_f1_by_threshold.{fmt}"))
    if with_trees and golds is not None:
        for stem in ("text_f1_models", "text_f1_by_layer", "text_f1_by_threshold"):
            if stem in files:
                captions[stem] = QUANTITATIVE_CAPTIONS[stem].format(
                    convention=convention, metric=METRIC_LABELS[metric], Metric=METRIC_LABELS[metric].capitalize())
    else:
        skipped.append("text F1: no gold trees in the data" if golds is None else "text F1: no caption predictions")
    with_groups = [s for s in systems if s.groups is not None]
    if with_groups:
        level = gt_level or ("object" if "object" in with_groups[0].groups.gt_levels
                             else next(iter(with_groups[0].groups.gt_levels)))
        layers = with_groups[0].groups.layers
        for metric, stem in (("miou", "image_miou_by_layer"), ("ari", "image_ari_by_layer")):
            step(stem)
            series, best = {}, {}
            for s in with_groups:
                evaluation = s.groups
                rows = [evaluation.row(level, "model", layer) for layer in layers]
                if any(r is None for r in rows):
                    raise HiCLIPError(f"{s.name}: the group evaluation has no row per layer "
                                      "(evaluate with GroupEvalOptions(level='all'))")
                series[s.name] = [Number(getattr(r, metric), metric, r.n_images,
                                         {**evaluation.options.parameters(), "gt_level": level, "layer": r.layer})
                                  for r in rows]
                best[s.name] = evaluation.best_level[level]
            numbers[stem] = {"metric": metric, "gt_level": level, "x": list(layers), "x_label": "layer",
                             "best_layer": best,
                             "series": {k: [n.to_dict() for n in v] for k, v in series.items()}}
            files[stem] = str(save_figure(plots.f1_by_layer_figure(
                {k: [n.value for n in v] for k, v in series.items()}, layers=layers,
                ylabel=METRIC_LABELS[metric], marks=best,
                title=f"groups against {level} masks (link threshold "
                      f"{_group_tau(with_groups[0])})"), out / f"{stem}.{fmt}"))
            captions[stem] = QUANTITATIVE_CAPTIONS[stem].format(gt_level=level)
    else:
        skipped.append("image scores: no image predictions with masks")
    return {"files": files, "captions": captions, "numbers": numbers, "skipped": skipped}


def _group_tau(system: SystemEvaluation) -> Any:
    params = next((image.group_params for _, image in system.predictions.images() if image.group_params), None)
    return (params or {}).get("tau", "as stored")


def draw_figures(systems: Sequence[SystemEvaluation], samples: Sequence, out: str | Path, *,
                 golds: Sequence[TreeRecord] | None = None, sample_ids: Sequence[str] | None = None,
                 n_samples: int = 3, seed: int = 0, informative: bool = True, run: str | Path | None = None,
                 fmt: str = "png", convention: str = "standard", text_tau: float = 0.8,
                 quantitative: bool = True, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every figure: per-sample ones from the first system's records, the quantitative ones from
    all systems' evaluations, training curves of ``run``; returns the ``figures.json`` index
    (written to ``out``)."""
    out = Path(out)
    step = progress or (lambda name: None)
    first = systems[0]
    records = {r.id: r for r in first.predictions.records}
    pool = [s for s in samples if s.id in records]
    chosen = choose_samples(pool, sample_ids, n_samples, seed, informative) if sample_ids or n_samples else []
    index: dict[str, Any] = {"systems": [s.name for s in systems], "convention": convention,
                             "samples_from": first.name, "samples": {}, "sample_captions": FIGURE_CAPTIONS,
                             "sample_text": {}}
    for sample in chosen:
        step(f"sample {sample.id}")
        record = records[sample.id]
        if record.text:
            index["sample_text"][sample.id] = " ".join(record.text[longest_caption(record)].tokens)
        index["samples"][sample.id] = sample_figures(records[sample.id], sample, out / "samples" / sample.id, fmt,
                                                     text_tau, convention=convention)
    if quantitative:
        index["quantitative"] = quantitative_figures(systems, golds, out / "quantitative", fmt, convention,
                                                     progress=step)
    if run is not None:
        step("training curves")
        index["training_curves"] = training_figure(run, out, fmt)
    index["index"] = str(write_index(index, out))
    return index


def training_figure(run: str | Path, out: str | Path, fmt: str = "png") -> str:
    """Training curves of a run folder's ``metrics.jsonl``; returns the path written."""
    records = plots.read_metrics(run)
    fig = plots.training_curves_figure(records, title=f"training: {Path(run).name}")
    return str(save_figure(fig, Path(out) / f"training_curves.{fmt}"))


def write_index(index: Mapping, out: str | Path) -> Path:
    """``figures.json``: the files written and the numbers behind the plots (written atomically)."""
    path = atomic_write_text(Path(out) / "figures.json", json.dumps(json_ready(index), indent=2) + "\n")
    plt.close("all")
    return path


def json_ready(value):
    """Numbers as plain floats, NaN as null (strict JSON), containers recursively."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
