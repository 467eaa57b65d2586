"""Run a checkpoint over data: prediction records for the JSONL (docs/DESIGN.md, method.md 5).

Per sample: for each caption its words, per-layer word links and induced trees (the primary one
under ``tree``, every algorithm under ``trees``); for the image its per-layer patch links, the
patch groups of every layer, the segment tree, and optionally label maps at image resolution
(snapped to SLIC superpixels on request) saved as PNG. Works for any model that gives links:
HiCLIP's affinity modules, or attention maps of a model with the hierarchy off. The records are
:mod:`induction.predictions` records, written by its one writer.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hiclip.errors import HiCLIPError, SkipReport
from hiclip.tokenizer import over_model_limit, split_words
from induction import image_groups, text_trees
from induction.affinities import SentenceLinks, image_links, over_limit, sentence_links
from induction.predictions import (
    CaptionPrediction,
    ImagePrediction,
    ModelInfo,
    PredictionRecord,
    Predictions,
    round_links,
)


@dataclass
class TreeOptions:
    """How word links become trees (``induction.text_trees``).

    ``algorithm`` is the primary tree written under ``tree``; all of ``ALGORITHMS`` are written
    under ``trees``. ``quantiles = (break_q, descend_q)`` switches the Tree-Transformer parser to
    per-layer quantile thresholds pooled over ``quantile_scope``.
    """

    algorithm: str = "tree_transformer"
    start_layer: int | None = None
    min_layer: int = text_trees.DEFAULT_MIN_LAYER
    break_threshold: float = text_trees.DEFAULT_BREAK_THRESHOLD
    descend_threshold: float = text_trees.DEFAULT_DESCEND_THRESHOLD
    quantiles: tuple[float, float] | None = None
    quantile_scope: str = "corpus"

    def induce(self, links: Sequence[np.ndarray], tokens: Sequence[Sequence[str]], algorithm: str
               ) -> list[text_trees.InducedTree]:
        return text_trees.induce_trees(links, tokens, algorithm, start_layer=self.start_layer,
                                       min_layer=self.min_layer, break_threshold=self.break_threshold,
                                       descend_threshold=self.descend_threshold, quantiles=self.quantiles,
                                       quantile_scope=self.quantile_scope)


@dataclass
class GroupOptions:
    """How patch links become groups (``induction.image_groups``).

    ``tau`` is an absolute link threshold, or a per-layer quantile with ``quantile=True``.
    ``label_maps`` writes every layer's groups at image resolution as 16-bit PNGs;
    ``snap_superpixels`` snaps them to SLIC superpixels first ("merged superpixel groups").
    """

    tau: float = 0.5
    quantile: bool = False
    label_maps: bool = False
    snap_superpixels: bool = False
    n_superpixels: int = 100
    compactness: float = 10.0


#: Key of a checkpoint's ``extra`` (``config.json``) holding its recommended :class:`TreeOptions`.
RECOMMENDED_TREES_KEY = "recommended_trees"


def recommended_tree_options(extra: dict[str, Any], where: str) -> TreeOptions | None:
    """The :class:`TreeOptions` a checkpoint recommends (``extra["recommended_trees"]``: the
    fields of :class:`TreeOptions`, plus free-text ``chosen_on``), or None when it names none."""
    entry = extra.get(RECOMMENDED_TREES_KEY)
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise HiCLIPError(f"{where}: extra.{RECOMMENDED_TREES_KEY} must be a JSON object")
    known = {f for f in TreeOptions.__dataclass_fields__}
    values = {k: v for k, v in entry.items() if k != "chosen_on"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise HiCLIPError(f"{where}: extra.{RECOMMENDED_TREES_KEY}: unknown key(s) {unknown}; "
                          f"expected a subset of {sorted(known)} and 'chosen_on'")
    if values.get("quantiles") is not None:
        values["quantiles"] = tuple(values["quantiles"])
    options = TreeOptions(**values)
    if options.algorithm not in text_trees.ALGORITHMS:
        raise HiCLIPError(f"{where}: extra.{RECOMMENDED_TREES_KEY}.algorithm {options.algorithm!r} is not "
                          f"one of {list(text_trees.ALGORITHMS)}")
    return options


@dataclass
class InduceOptions:
    """``words``: how a caption becomes words when the data gives no tokens (``split_words``:
    ``"whitespace"`` or ``"treebank"``)."""

    trees: TreeOptions = field(default_factory=TreeOptions)
    groups: GroupOptions = field(default_factory=GroupOptions)
    batch_size: int = 64
    text: bool = True
    images: bool = True
    words: str = "whitespace"


def model_info(model, checkpoint: str | None) -> ModelInfo:
    """What the records say about the model: checkpoint, name, hierarchy, link source, patch grid."""
    hierarchy = bool(model.config.hierarchy)
    vision = model.config.vision
    return ModelInfo(checkpoint, model.config.name, hierarchy, "prior" if hierarchy else "attention",
                     (vision.grid, vision.grid) if vision is not None else None)


def caption_predictions(links: Sequence[tuple[list[str], np.ndarray]] | Sequence[SentenceLinks],
                        options: TreeOptions, caption_index: Sequence[int]) -> list[CaptionPrediction]:
    """Every algorithm's trees for ``links`` (``[(words, (L, n-1) links)]``, or
    :class:`~induction.affinities.SentenceLinks`, whose token and unknown-word counts are kept),
    induced from the links as stored (:func:`induction.predictions.round_links`)."""
    counts = [(s.n_tokens, s.n_unknown) if isinstance(s, SentenceLinks) else (None, None) for s in links]
    links = [(s.words, s.links) if isinstance(s, SentenceLinks) else s for s in links]
    if options.algorithm not in text_trees.ALGORITHMS:
        raise HiCLIPError(f"unknown tree algorithm {options.algorithm!r}: use "
                          f"{' or '.join(text_trees.ALGORITHMS)}")
    tokens = [list(words) for words, _ in links]
    arrays = [round_links(array) for _, array in links]
    by_algorithm = {name: options.induce(arrays, tokens, name) for name in text_trees.ALGORITHMS}
    out = []
    for i, (words, array) in enumerate(zip(tokens, arrays)):
        primary = by_algorithm[options.algorithm][i]
        out.append(CaptionPrediction(int(caption_index[i]), words, array, primary.bracket, primary.algorithm,
                                     {name: trees[i].bracket for name, trees in by_algorithm.items()},
                                     *counts[i]))
    return out


def image_prediction(h: np.ndarray, v: np.ndarray, options: GroupOptions, image=None, sample_id: str = "",
                     label_dir: Path | None = None) -> ImagePrediction:
    """Groups of every layer and the segment tree from one image's links (rounded as stored);
    with ``options.label_maps`` also the label-map PNGs in ``label_dir``."""
    h, v = round_links(h), round_links(v)
    layers = image_groups.layer_groups(h, v, options.tau, quantile=options.quantile)
    n_layers, grid_h, grid_w = layers.shape
    tree = image_groups.segment_tree(layers)
    entry = ImagePrediction((grid_h, grid_w), h, v, layers,
                            {"tau": options.tau, "quantile": options.quantile},
                            image_groups.tree_to_json(tree))
    if options.label_maps and image is not None and label_dir is not None:
        pixels = np.asarray(image.convert("RGB"))
        maps = {}
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in sample_id)
        for layer in range(n_layers):
            label_map = image_groups.upsample_labels(layers[layer], (image.height, image.width), centre_crop=True)
            if options.snap_superpixels:
                label_map = image_groups.snap_to_superpixels(label_map, pixels, options.n_superpixels,
                                                             options.compactness)
            path = label_dir / f"{safe}_l{layer}.png"
            image_groups.save_label_map_png(label_map, path)
            maps[layer] = str(path.relative_to(label_dir.parent))
        entry.label_maps = maps
        entry.label_map_params = {"snap_superpixels": options.snap_superpixels,
                                  "n_superpixels": options.n_superpixels,
                                  "compactness": options.compactness}
    return entry


def drop_over_limit(model, tokenizer, sentences: Sequence[Sequence[str]], where: Sequence[str],
                    report: SkipReport) -> list[int]:
    """Indices of the sentences the model can take whole. One over the model's limit is an error
    naming ``where[i]`` (e.g. ``caps.txt:12``) and the limit, or under ``report``'s skip
    policy a skip counted as ``"over the model's length limit"``."""
    over = dict(over_limit(model, tokenizer, sentences))
    limit = model.config.text.max_tokens
    for i, n in over.items():
        report.handle(over_model_limit(where[i], n, limit), "over the model's length limit")
    return [i for i in range(len(sentences)) if i not in over]


def induce_sentences(model, tokenizer, sentences: Sequence[Sequence[str]], options: InduceOptions,
                     checkpoint: str | None = None, progress=None, ids: Sequence[str] | None = None,
                     info: ModelInfo | None = None) -> Iterator[PredictionRecord]:
    """Records for a text-only input (one sentence per record, ``image`` null); ``ids`` default
    to ``1, 2, ...`` (the line numbers of a file without gaps)."""
    links = sentence_links(model, tokenizer, sentences, options.batch_size, progress)
    entries = caption_predictions(links, options.trees, [0] * len(links))
    info = info or model_info(model, checkpoint)
    for i, entry in enumerate(entries):
        yield PredictionRecord(ids[i] if ids is not None else str(i + 1), None, [entry], None, info)


def caption_words(sample, caption: int, words: str = "whitespace") -> list[str]:
    """The words of a sample's caption: its tokens when the data gives them, else the caption
    split as ``words`` says (:func:`hiclip.tokenizer.split_words`)."""
    if sample.tokens and words == "whitespace":
        return list(sample.tokens[caption])
    return split_words(sample.captions[caption], words)


def induce_samples(model, tokenizer, samples: Sequence, options: InduceOptions,
                   checkpoint: str | None = None, label_dir: Path | None = None,
                   progress=None, text_progress=None, report: SkipReport | None = None,
                   info: ModelInfo | None = None) -> Iterator[PredictionRecord]:
    """Records for dataset samples (``hiclip.data.Sample``), in order.

    Text is induced for all captions first (corpus-level quantile thresholds need every sentence;
    ``text_progress(n)`` is called after each batch of captions), then images are processed in
    batches and records are yielded as they complete (``progress(n)`` after each batch).
    A caption over the model's length limit is an error naming the sample's origin, or under
    ``report``'s skip policy left out of its record and counted (:func:`drop_over_limit`).
    """
    info = info or model_info(model, checkpoint)
    use_text = options.text
    use_images = options.images and model.config.vision is not None
    text_by_sample: list[list[CaptionPrediction]] = [[] for _ in samples]
    if use_text:
        owners = [(i, c) for i, sample in enumerate(samples) for c in range(len(sample.captions))]
        sentences = [caption_words(samples[i], c, options.words) for i, c in owners]
        where = [f"{samples[i].origin or samples[i].id}: caption {c}" for i, c in owners]
        kept = drop_over_limit(model, tokenizer, sentences, where, report or SkipReport())
        owners, sentences = [owners[k] for k in kept], [sentences[k] for k in kept]
        links = sentence_links(model, tokenizer, sentences, options.batch_size, text_progress)
        entries = caption_predictions(links, options.trees, [c for _, c in owners])
        for (i, _), entry in zip(owners, entries):
            text_by_sample[i].append(entry)
    step = options.batch_size
    for start in range(0, len(samples), step):
        chunk = samples[start:start + step]
        images = [sample.open_image() for sample in chunk] if use_images else [None] * len(chunk)
        grids = image_links(model, images, options.batch_size) if use_images else [None] * len(chunk)
        for offset, sample in enumerate(chunk):
            image_entry = None
            if grids[offset] is not None:
                h, v = grids[offset]
                image_entry = image_prediction(h, v, options.groups, images[offset], sample.id, label_dir)
            yield PredictionRecord(sample.id, sample.split, text_by_sample[start + offset], image_entry, info)
        if progress is not None:
            progress(len(chunk))


def induce_predictions(model, tokenizer, samples: Sequence, options: InduceOptions | None = None,
                       checkpoint: str | None = None, source: str | None = None, progress=None,
                       text_progress=None) -> Predictions:
    """:func:`induce_samples` collected in memory: the records ``hiclip induce`` would write
    (without label-map PNGs), for scoring and drawing without a file."""
    records = list(induce_samples(model, tokenizer, samples, options or InduceOptions(), checkpoint, None,
                                  progress, text_progress))
    return Predictions(records, source or f"{checkpoint or model.config.name} (induced in memory)")


def reinduce_trees(predictions: Predictions, options: TreeOptions) -> Predictions:
    """The same records with their trees induced again from their stored links under ``options``
    (e.g. another start layer or quantile thresholds); captions without links are an error."""
    captions = list(predictions.captions())
    missing = [(r, c) for r, c in captions if c.links is None]
    if missing:
        record, _ = missing[0]
        raise HiCLIPError(f"{predictions.where(record)}: caption predictions without links cannot be "
                          f"parsed again ({len(missing)} of {len(captions)})")
    induced = iter(caption_predictions([(c.tokens, c.links) for _, c in captions], options,
                                       [c.caption_index for _, c in captions]))
    records = []
    for record in predictions.records:
        text = []
        for caption in record.text:
            new = next(induced)
            new.n_tokens, new.n_unknown = caption.n_tokens, caption.n_unknown
            text.append(new)
        records.append(replace(record, text=text))
    return replace(predictions, records=records)


def options_dict(options: InduceOptions) -> dict[str, Any]:
    return asdict(options)


@dataclass
class WordCounts:
    """What the run's captions held: for the summary line."""

    sentences: int = 0
    words: int = 0
    unknown_words: int = 0
    sentences_with_unknown: int = 0


def tally(records: Iterable[PredictionRecord], counts: WordCounts) -> Iterator[PredictionRecord]:
    """``records``, passed on one by one, counted into ``counts`` on the way."""
    for record in records:
        for caption in record.text:
            counts.sentences += 1
            counts.words += len(caption.tokens)
            counts.unknown_words += caption.n_unknown or 0
            counts.sentences_with_unknown += bool(caption.n_unknown)
        yield record
