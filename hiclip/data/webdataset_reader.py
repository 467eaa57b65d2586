"""WebDataset shards: tar files whose members ``<key>.<ext>`` group into samples.

Per key: an image (``jpg``/``jpeg``/``png``/``webp``/...), captions in ``txt`` (one per
non-blank line), optionally ``json`` with manifest fields (``id``, ``split``, ``captions``,
``tokens``, ``trees``, ``phrases``, ``negatives``, ``labels``) and masks ``<level>.png``
(e.g. ``object.png``). ``spec`` is a shard, a brace pattern (``train-{000..009}.tar``), a glob,
or a folder of ``.tar`` files.

``read_webdataset`` indexes the shards (member offsets only) for random access; images are read
lazily. ``iter_webdataset`` streams with the ``webdataset`` library (shards split across nodes
and DataLoader workers) for training at scale.
"""
from __future__ import annotations

import glob
import json
import re
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from hiclip.data.masks import mask_to_ids
from hiclip.data.records import RawRecord, ReadOptions, build_sample
from hiclip.data.sample import Sample
from hiclip.data.text_checks import InputProblem
from hiclip.data.text_files import caption_lines
from hiclip.errors import HiCLIPError, SkipReport

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "tif", "tiff")
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's own key/extension rule
_MASK_EXT = re.compile(r"^([a-z0-9_]+)\.png$")


def expand_shards(spec: str) -> list[str]:
    """Shard paths of a file, folder, brace pattern or glob, in a stable order."""
    from braceexpand import braceexpand

    path = Path(spec)
    if path.is_dir():
        shards = sorted(str(p) for p in path.glob("*.tar"))
    else:
        shards = []
        for item in braceexpand(spec):
            shards.extend(sorted(glob.glob(item)) if any(ch in item for ch in "*?[") else [item])
    if not shards:
        raise HiCLIPError(f"{spec}: no WebDataset shards found")
    for shard in shards:
        if not Path(shard).is_file():
            raise HiCLIPError(f"{shard}: shard not found")
    return shards


def _offset_reader(shard: str, offset: int, size: int) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(shard, "rb") as f:
            f.seek(offset)
            return f.read(size)
    return read


def _index_shard(shard: str, report: SkipReport) -> list[tuple[str, dict[str, tuple[str, Callable[[], bytes]]]]]:
    """[(key, {ext: (member name, reader)})] in tar order; compressed shards are read into memory."""
    with open(shard, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    groups: dict[str, dict[str, tuple[str, Callable[[], bytes]]]] = {}
    try:
        with tarfile.open(shard, "r:gz" if compressed else "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                match = _KEY_EXT.match(member.name)
                if match is None:
                    continue
                key, ext = match.group(1), match.group(2).lower()
                if compressed:
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    reader: Callable[[], bytes] = (lambda d=data: d)
                else:
                    reader = _offset_reader(shard, member.offset_data, member.size)
                groups.setdefault(key, {})[ext] = (member.name, reader)
    except (tarfile.TarError, OSError, EOFError) as error:
        detail = " ".join(str(error).split())
        report.handle(HiCLIPError(f"{shard}: not a readable tar file ({detail})"), "corrupt shard")
    return list(groups.items())


def _mask_loader(read: Callable[[], bytes], name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import io

        from PIL import Image

        try:
            with Image.open(io.BytesIO(read())) as image:
                image.load()
                return mask_to_ids(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise HiCLIPError(f"{name}: unreadable mask ({error})") from None
    return load


def _record(shard: str, key: str, members: dict[str, tuple[str, Callable[[], bytes]]]) -> RawRecord:
    origin = f"{shard}::{key}"
    image_ext = next((ext for ext in IMAGE_KEYS if ext in members), None)
    if image_ext is None:
        raise InputProblem("missing image", f"sample {key!r} has no image member ({'/'.join(IMAGE_KEYS)})")
    meta: dict[str, Any] = {}
    if "json" in members:
        name, read = members["json"]
        try:
            meta = json.loads(read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputProblem("malformed JSON", f"{name}: malformed JSON ({error})") from None
        if not isinstance(meta, dict):
            raise InputProblem("malformed JSON", f"{name}: must hold a JSON object")
    if "txt" in members:
        name, read = members["txt"]
        captions: list[Any] = caption_lines(read(), f"{shard}::{name}")
    elif "captions" in meta:
        captions = meta["captions"]
    else:
        raise InputProblem("missing caption", f"sample {key!r} has no txt member")
    image_name, image_read = members[image_ext]
    masks: dict[str, Any] = {}
    for ext, (name, read) in members.items():
        match = _MASK_EXT.match(ext)
        if match and ext != image_ext:
            masks[match.group(1)] = _mask_loader(read, f"{shard}::{name}")
    return RawRecord(
        id=str(meta.get("id", key)), image=f"{shard}::{image_name}", captions=captions, origin=origin,
        tokens=meta.get("tokens"), trees=meta.get("trees"), phrases=meta.get("phrases"),
        split=meta.get("split"), masks=masks, negatives=list(meta.get("negatives", [])),
        labels=dict(meta.get("labels", {})), image_loader=image_read,
    )


def read_webdataset(spec: str, split: str | None = None, options: ReadOptions | None = None,
                    report: SkipReport | None = None) -> list[Sample]:
    """Index WebDataset shards into samples with lazily read images (see the module docstring)."""
    options = options or ReadOptions()
    report = report if report is not None else SkipReport()
    samples: list[Sample] = []
    for shard in expand_shards(spec):
        for key, members in _index_shard(shard, report):
            try:
                rec = _record(shard, key, members)
            except InputProblem as problem:
                report.handle(HiCLIPError(problem.located(f"{shard}::{key}")), problem.reason)
                continue
            if split is not None and rec.split != split:
                continue
            sample = build_sample(rec, options, report)
            if sample is not None:
                samples.append(sample)
    return samples


def iter_webdataset(spec: str, options: ReadOptions | None = None, report: SkipReport | None = None,
                    shuffle_shards: bool = False, seed: int = 0) -> Iterator[Sample]:
    """Stream samples with the ``webdataset`` library; each DataLoader worker reads its own shards.

    Bad samples are handled like everywhere else (error, or counted skip under ``report``); a
    shard that cannot be read is an error under the raise policy and is skipped otherwise.
    """
    import webdataset as wds

    options = options or ReadOptions(check_images="none")
    report = report if report is not None else SkipReport()

    def on_error(error: Exception) -> bool:
        report.handle(HiCLIPError(f"{spec}: unreadable shard data ({error})"), "corrupt shard")
        return True  # continue with the next sample

    stream = wds.WebDataset(expand_shards(spec), shardshuffle=shuffle_shards, seed=seed, handler=on_error,
                            nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker,
                            empty_check=False)
    for raw in stream:
        key, url = raw["__key__"], raw["__url__"]
        members = {ext: (f"{key}.{ext}", (lambda v=value: v)) for ext, value in raw.items()
                   if not ext.startswith("__") and isinstance(value, bytes)}
        try:
            rec = _record(url, key, members)
        except InputProblem as problem:
            report.handle(HiCLIPError(problem.located(f"{url}::{key}")), problem.reason)
            continue
        sample = build_sample(rec, options, report)
        if sample is not None:
            yield sample
