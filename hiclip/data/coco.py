"""COCO: ``annotations/captions_<split>.json`` (+ ``instances_<split>.json``) and ``<split>/`` images.

Every image becomes one sample with all of its captions (COCO has about five). When the
instances file exists, two mask levels are available, decoded on demand with pycocotools:
``object`` (non-crowd instances, ids 1..K in annotation order, larger instances painted first so
smaller ones stay visible) and ``crowd`` (``iscrowd`` regions, which are groups of objects that
COCO does not separate; scorers should treat them as ignore regions).
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hiclip.data.records import DataRoot, RawRecord, ReadOptions, build_sample
from hiclip.data.sample import Sample
from hiclip.errors import HiCLIPError, SkipReport


def _load_json(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise HiCLIPError(f"{path}: not valid UTF-8 (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise HiCLIPError(f"{path}:{error.lineno}: malformed JSON ({error.msg})") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise HiCLIPError(f"{path}: not a COCO annotation file (needs 'images' and 'annotations')")
    return data


def _segmentation_rle(segmentation: Any, height: int, width: int):
    """pycocotools' annToRLE: polygons, uncompressed RLE (crowd) or compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def instance_map(annotations: list[dict], height: int, width: int) -> np.ndarray:
    """(H, W) int32: annotation k (1-based, list order) where it is visible, 0 elsewhere.

    Larger instances are painted first so that smaller, overlapping ones stay visible.
    """
    from pycocotools import mask as mask_utils

    out = np.zeros((height, width), np.int32)
    order = sorted(range(len(annotations)), key=lambda k: -float(annotations[k].get("area", 0)))
    for k in order:
        rle = _segmentation_rle(annotations[k]["segmentation"], height, width)
        with warnings.catch_warnings():
            # pycocotools' own numpy-2 copy-keyword deprecation, not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            m = mask_utils.decode(rle)
        if m.ndim == 3:
            m = m.max(axis=2)
        out[m.astype(bool)] = k + 1
    return out


def _loader(annotations: list[dict], height: int, width: int) -> Callable[[], np.ndarray]:
    return lambda: instance_map(annotations, height, width)


def _split_name(stem: str) -> str:
    """``train2017`` -> ``train``."""
    return re.sub(r"\d+$", "", stem) or stem


def _caption_files(spec: Path) -> list[Path]:
    if spec.is_file():
        return [spec]
    for folder in (spec / "annotations", spec):
        files = sorted(folder.glob("captions_*.json"))
        if files:
            return files
    raise HiCLIPError(f"{spec}: no annotations/captions_*.json found (not a COCO root)")


def read_coco(spec: str | Path, split: str | None = None, options: ReadOptions | None = None,
              report: SkipReport | None = None) -> list[Sample]:
    """Read a COCO root (or one ``captions_*.json``) into samples, one per image."""
    spec = Path(spec)
    options = options or ReadOptions()
    report = report if report is not None else SkipReport()
    files = _caption_files(spec)
    samples: list[Sample] = []
    for captions_file in files:
        name = captions_file.stem[len("captions_"):]
        if split is not None and split not in (name, _split_name(name)):
            continue
        samples.extend(_read_split(captions_file, name, options, report))
    if split is not None and not any(split in (f.stem[9:], _split_name(f.stem[9:])) for f in files):
        have = ", ".join(f.stem[len("captions_"):] for f in files)
        raise HiCLIPError(f"{spec}: no COCO split {split!r} (have: {have})")
    return samples


def _read_split(captions_file: Path, name: str, options: ReadOptions, report: SkipReport) -> list[Sample]:
    data = _load_json(captions_file)
    annotation_dir = captions_file.parent
    coco_root = annotation_dir.parent if annotation_dir.name == "annotations" else annotation_dir
    root = DataRoot.of(coco_root, options.image_root)  # image_root: the folder holding <split>/
    image_dir = root.path / name if root.given else coco_root / name
    images = {img["id"]: img for img in data["images"]}
    captions: dict[int, list[str]] = {}
    for ann in data["annotations"]:
        image_id = ann.get("image_id")
        if image_id not in images:
            report.handle(HiCLIPError(f"{captions_file}: caption annotation {ann.get('id')} refers to unknown "
                                      f"image id {image_id}"), "unknown image id")
            continue
        captions.setdefault(image_id, []).append(ann.get("caption"))
    instances: dict[int, list[dict]] = {}
    crowds: dict[int, list[dict]] = {}
    categories: dict[int, str] = {}
    instances_file = annotation_dir / f"instances_{name}.json"
    has_instances = instances_file.is_file()
    if has_instances:
        inst = _load_json(instances_file)
        categories = {c["id"]: c["name"] for c in inst.get("categories", [])}
        for ann in inst["annotations"]:
            target = crowds if ann.get("iscrowd") else instances
            target.setdefault(ann["image_id"], []).append(ann)
    out: list[Sample] = []
    for image_id, img in images.items():
        origin = f"{captions_file} (image id {image_id})"
        if image_id not in captions:
            report.handle(HiCLIPError(f"{origin}: image has no captions"), "no captions")
            continue
        height, width = int(img["height"]), int(img["width"])
        masks: dict[str, Any] = {}
        extra: dict[str, Any] = {"coco_image_id": image_id, "file_name": img["file_name"]}
        labels: dict[str, Any] = {}
        if has_instances:
            objs = instances.get(image_id, [])
            masks["object"] = _loader(objs, height, width)
            if crowds.get(image_id):
                masks["crowd"] = _loader(crowds[image_id], height, width)
            extra["instances"] = [{"id": k + 1, "category": categories.get(a["category_id"], str(a["category_id"])),
                                   "annotation_id": a.get("id")} for k, a in enumerate(objs)]
            labels["categories"] = sorted({e["category"] for e in extra["instances"]})
            labels["count"] = len(objs)
        rec = RawRecord(
            id=str(image_id), image=str(image_dir / img["file_name"]), image_display=f"{name}/{img['file_name']}",
            captions=captions[image_id], origin=origin, split=_split_name(name), masks=masks,
            labels=labels, width=width, height=height, extra=extra, root=root,
        )
        sample = build_sample(rec, options, report)
        if sample is not None:
            out.append(sample)
    return out
