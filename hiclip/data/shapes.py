"""The synthetic shapes dataset: scenes with a real part/object/group hierarchy and exact gold.

Each sample is generated from its own seed ``(seed, index)``, so the output does not depend on
the number of workers, and the same seed gives byte-identical images, masks and manifest.

Layout of a generated folder::

    manifest.jsonl            one record per sample (docs/DESIGN.md), in index order
    images/000012.png         RGB image
    masks/000012_part.png     instance ids (uint8 PNG, 0 = background) per level
    masks/000012_object.png
    masks/000012_group.png
    {split}_caps.txt          one caption per line (all captions of the split, manifest order)
    {split}_trees.txt         the gold tree of each of those captions
    {split}_ids.txt           the sample id of each of those captions
    dataset.json              the generator configuration
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hiclip.data.shapes_grammar import describe
from hiclip.data.shapes_meaning import holds
from hiclip.data.shapes_negatives import negative_captions
from hiclip.data.shapes_png import write_png
from hiclip.data.shapes_render import Rendering, render
from hiclip.data.shapes_scene import SceneLimits, Scene, sample_scene, scene_facts, size_class
from hiclip.errors import HiCLIPError

LEVELS = ("part", "object", "group")
SPLITS = ("train", "val", "test")
GENERATOR_VERSION = 1


@dataclass
class ShapesConfig:
    """Options of ``hiclip data shapes``."""

    n: int = 2000
    seed: int = 0
    image_size: int = 64
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
    negatives: int = 3
    captions_per_image: int = 2
    min_words: int = 3
    max_words: int = 20
    max_groups: int = 3
    # zlib levels of the PNG files. Noisy images barely compress (level 1 saves ~10% of the bytes
    # for ~10x the encoding time); masks compress ~17x at level 1.
    image_compress_level: int = 0
    mask_compress_level: int = 1
    limits: SceneLimits = field(default_factory=SceneLimits)

    def validate(self) -> None:
        if self.n < 1:
            raise HiCLIPError(f"--n must be at least 1, got {self.n}")
        if self.image_size < 32 or self.image_size % 8:
            raise HiCLIPError(f"--image-size must be a multiple of 8 and at least 32, got {self.image_size}")
        if len(self.splits) != 3 or any(f < 0 for f in self.splits) or abs(sum(self.splits) - 1) > 1e-6:
            raise HiCLIPError(f"--splits must be three non-negative fractions summing to 1, got {self.splits}")
        if self.negatives < 0 or self.captions_per_image < 1:
            raise HiCLIPError("--negatives must be >= 0 and --captions >= 1")
        if not 1 <= self.max_groups <= 3:
            raise HiCLIPError(f"--max-groups must be 1, 2 or 3, got {self.max_groups}")
        if not 1 <= self.min_words <= self.max_words:
            raise HiCLIPError("need 1 <= min_words <= max_words")


def split_names(n: int, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """The split of each of ``n`` samples: a seeded shuffle cut at the given fractions."""
    order = np.random.default_rng([seed, 0x5B17]).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    names = np.empty(n, dtype=object)
    names[order[:n_train]] = "train"
    names[order[n_train:n_train + n_val]] = "val"
    names[order[n_train + n_val:]] = "test"
    return list(names)


@dataclass
class GeneratedSample:
    record: dict
    rendering: Rendering


def _region_ids(scene: Scene, r: Rendering) -> list[tuple[int, tuple[int, ...], tuple[int, ...]]]:
    """(group id, object ids, part ids of real parts) for each group, from the rendering."""
    out = []
    for gi in range(1, len(scene.groups) + 1):
        oids = tuple(o + 1 for o, g in enumerate(r.object_group) if g == gi)
        pids = tuple(p + 1 for p, (o, kind) in enumerate(r.part_info) if o in oids and kind != "body")
        out.append((gi, oids, pids))
    return out


def _labels(scene: Scene, r: Rendering) -> dict:
    areas = np.bincount(r.group.ravel(), minlength=len(scene.groups) + 1)[1:]
    main = scene.groups[int(np.argmax(areas))]
    return {
        "shape": main.look.shape,
        "colour": main.look.colour,
        "texture": main.look.texture,
        "count": sum(g.count for g in scene.groups),
        "groups": len(scene.groups),
    }


def _regions(scene: Scene, r: Rendering, limits: SceneLimits) -> dict:
    groups = []
    for gi, g in enumerate(scene.groups, start=1):
        look = g.look
        groups.append({
            "id": gi, "shape": look.shape, "colour": look.colour, "tone": look.tone,
            "texture": look.texture, "size": size_class(look.size, scene.size, limits),
            "count": g.count, "arrangement": g.arrangement, "bbox": list(g.bbox),
        })
    boxes = [box for g in scene.groups for box in g.boxes]
    objects = [{"id": o + 1, "group": gi, "bbox": list(boxes[o])} for o, gi in enumerate(r.object_group)]
    parts = []
    for p, (oid, kind) in enumerate(r.part_info, start=1):
        look = scene.groups[r.object_group[oid - 1] - 1].look
        colour = look.colour if kind == "body" or look.part is None else look.part.colour
        parts.append({"id": p, "object": oid, "kind": kind, "colour": colour})
    return {"group": groups, "object": objects, "part": parts}


def generate_sample(index: int, split: str, config: ShapesConfig) -> GeneratedSample:
    """Sample, render and describe scene ``index``; the record's paths are relative."""
    rng = np.random.default_rng([config.seed, index])
    decisions = random.Random(int(rng.integers(2 ** 62)))  # scalar choices: cheaper than numpy draws
    scene = sample_scene(decisions, config.image_size, config.limits, config.max_groups)
    rendering = render(scene, rng)
    facts = scene_facts(scene, _region_ids(scene, rendering), config.limits)
    seeds = [decisions.getrandbits(62) for _ in range(config.captions_per_image)]
    captions = []
    for seed in seeds:
        caption = describe(facts, seed, config.min_words, config.max_words)
        if not holds(caption.meaning, facts):  # the grammar must only say true things
            raise AssertionError(f"sample {index}: caption {caption.text!r} is false of its scene")
        captions.append(caption)
    texts = [c.text for c in captions]
    negatives = negative_captions(facts, seeds, [c.meaning for c in captions], set(texts), config.negatives,
                                  decisions, config.min_words, config.max_words)
    stem = f"{index:06d}"
    record = {
        "id": f"shapes-{stem}",
        "split": split,
        "image": f"images/{stem}.png",
        "width": config.image_size,
        "height": config.image_size,
        "captions": texts,
        "tokens": [c.tokens for c in captions],
        "trees": [c.tree for c in captions],
        "masks": {level: f"masks/{stem}_{level}.png" for level in LEVELS},
        "phrases": [c.phrases for c in captions],
        "negatives": negatives,
        "labels": _labels(scene, rendering),
        "regions": _regions(scene, rendering, config.limits),
    }
    return GeneratedSample(record, rendering)


class _Written(NamedTuple):
    """A written sample: its manifest line and what the split text files need from it."""

    line: str
    split: str
    id: str
    captions: list[str]
    trees: list[str]


def _write_chunk(args: tuple[list[int], list[str], ShapesConfig, str]) -> list[_Written]:
    """Generate and write samples ``indices``; returns their manifest lines and texts."""
    indices, splits, config, out = args
    written = []
    for index, split in zip(indices, splits):
        sample = generate_sample(index, split, config)
        rec, r = sample.record, sample.rendering
        write_png(r.image, os.path.join(out, rec["image"]), config.image_compress_level)
        for level in LEVELS:
            write_png(getattr(r, level), os.path.join(out, rec["masks"][level]), config.mask_compress_level)
        written.append(_Written(json.dumps(rec, ensure_ascii=False), split, rec["id"], rec["captions"], rec["trees"]))
    return written


@dataclass
class GenerationReport:
    out: Path
    n: int
    seconds: float
    split_counts: dict[str, int]

    @property
    def samples_per_second(self) -> float:
        return self.n / max(self.seconds, 1e-9)


# What a generated folder holds (the old copies are replaced by --overwrite); the manifest last.
_OUTPUTS = ("images", "masks", "*_caps.txt", "*_trees.txt", "*_ids.txt", "dataset.json", "manifest.jsonl")


def _check_output(out: Path, overwrite: bool) -> None:
    if (out / "manifest.jsonl").exists():
        if not overwrite:
            raise HiCLIPError(f"{out}: already holds a dataset (manifest.jsonl); pass --overwrite to replace it")
    elif out.exists() and not out.is_dir():
        raise HiCLIPError(f"{out}: exists and is not a folder")


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished dataset ``tmp`` to ``out``: one rename when ``out`` is absent or empty;
    otherwise entry by entry, the old generator files moved aside first, the manifest last."""
    try:
        if not out.exists() or (out.is_dir() and not any(out.iterdir())):
            os.rename(tmp, out)
            return
    except OSError:  # another run put something there meanwhile
        pass
    _check_output(out, overwrite)
    from hiclip.atomic import owned_prefix

    trash = Path(tempfile.mkdtemp(prefix=owned_prefix(out) + "old-", dir=out.parent))
    try:
        for pattern in _OUTPUTS:
            for old in sorted(out.glob(pattern)):
                os.replace(old, trash / old.name)
        for pattern in _OUTPUTS:
            for new in sorted(tmp.glob(pattern)):
                os.replace(new, out / new.name)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def generate_dataset(out: str | Path, config: ShapesConfig, workers: int = 1, overwrite: bool = False,
                     chunk_size: int = 64) -> GenerationReport:
    """Write the synthetic dataset described by ``config`` to the folder ``out``.

    The files are written to a temporary folder of this run beside ``out`` and moved into place
    at the end, so an interrupted run leaves ``out`` as it was, and two runs writing the same
    ``out`` never mix their images and manifests.
    """
    from hiclip.atomic import check_writable, os_error, owned_prefix

    config.validate()
    out = Path(out)
    _check_output(out, overwrite)
    check_writable(out.parent, folder=True)
    start = time.perf_counter()
    splits = split_names(config.n, config.splits, config.seed)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=owned_prefix(out), dir=out.parent))
        tmp.chmod(0o755)
    except OSError as error:
        raise os_error(out, error) from None
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        chunks = [(list(range(a, min(a + chunk_size, config.n))), splits[a:a + chunk_size], config, str(tmp))
                  for a in range(0, config.n, chunk_size)]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(_write_chunk, chunks))
        else:
            results = [_write_chunk(c) for c in chunks]
        written = [sample for chunk in results for sample in chunk]
        _write_text(tmp / "manifest.jsonl", [sample.line for sample in written])
        _write_split_texts(tmp, written)
        meta = {"generator": "hiclip.data.shapes", "version": GENERATOR_VERSION, "config": asdict(config)}
        _write_text(tmp / "dataset.json", [json.dumps(meta, indent=2)])
        _install(tmp, out, overwrite)
    except OSError as error:
        raise os_error(out, error) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    counts = {name: splits.count(name) for name in SPLITS}
    return GenerationReport(out, config.n, seconds, counts)


def _write_text(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)


def _write_split_texts(out: Path, written: list[_Written]) -> None:
    """``{split}_caps.txt`` / ``_trees.txt`` / ``_ids.txt``: text-only views of each split."""
    by_split: dict[str, tuple[list[str], list[str], list[str]]] = {}
    for sample in written:
        caps, trees, ids = by_split.setdefault(sample.split, ([], [], []))
        caps.extend(sample.captions)
        trees.extend(sample.trees)
        ids.extend([sample.id] * len(sample.captions))
    for split, (caps, trees, ids) in by_split.items():
        _write_text(out / f"{split}_caps.txt", caps)
        _write_text(out / f"{split}_trees.txt", trees)
        _write_text(out / f"{split}_ids.txt", ids)
