"""Run a checkpoint over data and write the prediction JSONL (docs/DESIGN.md, method.md 5).

Per sample: for each caption its words, per-layer word links and induced trees (the primary one
under ``tree``, every algorithm under ``trees``); for the image its per-layer patch links, the
patch groups of every layer, the segment tree, and optionally label maps at image resolution
(snapped to SLIC superpixels on request) saved as PNG. Works for any model that gives links:
HiCLIP's affinity modules, or attention maps of a model with the hierarchy off.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hiclip.errors import HiCLIPError
from induction import image_groups, text_trees
from induction.affinities import image_links, text_links


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


@dataclass
class InduceOptions:
    trees: TreeOptions = field(default_factory=TreeOptions)
    groups: GroupOptions = field(default_factory=GroupOptions)
    batch_size: int = 64
    text: bool = True
    images: bool = True


def _round(array: np.ndarray) -> list:
    # 5 decimals keep the file small; links saturate near 1 so absolute precision is what matters.
    return np.round(np.asarray(array, dtype=np.float64), 5).tolist()


def model_info(model, checkpoint: str | None) -> dict[str, Any]:
    hierarchy = bool(model.config.hierarchy)
    return {"checkpoint": checkpoint, "name": model.config.name, "hierarchy": hierarchy,
            "affinity_source": "prior" if hierarchy else "attention"}


def _text_entries(links: list[tuple[list[str], np.ndarray]], options: TreeOptions,
                  caption_index: list[int]) -> list[dict[str, Any]]:
    tokens = [words for words, _ in links]
    arrays = [array for _, array in links]
    by_algorithm = {name: options.induce(arrays, tokens, name) for name in text_trees.ALGORITHMS}
    if options.algorithm not in by_algorithm:
        raise HiCLIPError(f"unknown tree algorithm {options.algorithm!r}: use "
                          f"{' or '.join(text_trees.ALGORITHMS)}")
    entries = []
    for i, (words, array) in enumerate(links):
        primary = by_algorithm[options.algorithm][i]
        entries.append({
            "caption_index": caption_index[i],
            "tokens": words,
            "links": _round(array),
            "tree": primary.bracket,
            "algorithm": primary.algorithm,
            "trees": {name: trees[i].bracket for name, trees in by_algorithm.items()},
        })
    return entries


def _image_entry(h: np.ndarray, v: np.ndarray, options: GroupOptions, image=None, sample_id: str = "",
                 label_dir: Path | None = None) -> dict[str, Any]:
    layers = image_groups.layer_groups(h, v, options.tau, quantile=options.quantile)
    n_layers, grid_h, grid_w = layers.shape
    tree = image_groups.segment_tree(layers)
    entry: dict[str, Any] = {
        "grid": [grid_h, grid_w],
        "h_links": _round(h),
        "v_links": _round(v),
        "groups": layers.reshape(n_layers, -1).tolist(),
        "group_params": {"tau": options.tau, "quantile": options.quantile},
        "segment_tree": image_groups.tree_to_json(tree),
    }
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
            maps[str(layer)] = str(path.relative_to(label_dir.parent))
        entry["label_maps"] = maps
        entry["label_map_params"] = {"snap_superpixels": options.snap_superpixels,
                                     "n_superpixels": options.n_superpixels,
                                     "compactness": options.compactness}
    return entry


def induce_sentences(model, tokenizer, sentences: Sequence[Sequence[str]], options: InduceOptions,
                     checkpoint: str | None = None, progress=None) -> Iterator[dict[str, Any]]:
    """Records for a text-only input (one sentence per record, ``image`` null)."""
    links = text_links(model, tokenizer, sentences, options.batch_size, progress)
    entries = _text_entries(links, options.trees, [0] * len(links))
    info = model_info(model, checkpoint)
    for i, entry in enumerate(entries):
        yield {"id": str(i + 1), "split": None, "text": [entry], "image": None, "model": info}


def induce_samples(model, tokenizer, samples: Sequence, options: InduceOptions,
                   checkpoint: str | None = None, label_dir: Path | None = None,
                   progress=None) -> Iterator[dict[str, Any]]:
    """Records for dataset samples (``hiclip.data.Sample``), in order.

    Text is induced for all captions first (corpus-level quantile thresholds need every sentence),
    then images are processed in batches and records are yielded as they complete.
    """
    info = model_info(model, checkpoint)
    use_text = options.text
    use_images = options.images and model.config.vision is not None
    text_by_sample: list[list[dict[str, Any]]] = [[] for _ in samples]
    if use_text:
        owners = [(i, c) for i, sample in enumerate(samples) for c in range(len(sample.captions))]
        sentences = [samples[i].tokens[c] if samples[i].tokens else samples[i].captions[c].split()
                     for i, c in owners]
        links = text_links(model, tokenizer, sentences, options.batch_size)
        entries = _text_entries(links, options.trees, [c for _, c in owners])
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
                image_entry = _image_entry(h, v, options.groups, images[offset], sample.id, label_dir)
            yield {"id": sample.id, "split": sample.split, "text": text_by_sample[start + offset],
                   "image": image_entry, "model": info}
        if progress is not None:
            progress(len(chunk))


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write records atomically (a temporary of this run only, then rename); returns how many
    were written."""
    from hiclip.atomic import atomic_open

    count = 0
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
            count += 1
    return count


def options_dict(options: InduceOptions) -> dict[str, Any]:
    return asdict(options)
