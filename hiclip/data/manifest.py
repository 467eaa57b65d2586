"""Reading ``manifest.jsonl`` (the schema in docs/DESIGN.md) into ``Sample`` records.

Paths in a record are relative to the manifest's folder, and must stay inside it (``..``,
absolute paths and symlinks are resolved first); ``ReadOptions.image_root`` names another folder
for both. Only ``id``, ``image`` and ``captions`` are required. Fields the schema does not name are kept in
``Sample.extra``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hiclip.data.records import DataRoot, RawRecord, ReadOptions, build_sample
from hiclip.data.sample import Sample
from hiclip.errors import HiCLIPError, SkipReport

KNOWN_FIELDS = {"id", "split", "image", "width", "height", "captions", "tokens", "trees", "masks",
                "phrases", "negatives", "labels"}


def _bad(path: Path, line: int, message: str) -> HiCLIPError:
    return HiCLIPError(f"{path}:{line}: {message}")


def _optional(record: dict, key: str, kind: type, what: str) -> Any:
    value = record.get(key)
    if value is not None and not isinstance(value, kind):
        raise ValueError(f"'{key}' must be {what}")
    return value


def _record(path: Path, line: int, record: Any, root: DataRoot | None = None) -> RawRecord:
    """Structural checks of one parsed JSON line; raises ValueError with a one-line reason."""
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    for key in ("id", "image", "captions"):
        if key not in record:
            raise ValueError(f"missing required field '{key}'")
    sid, image, captions = record["id"], record["image"], record["captions"]
    if not isinstance(sid, (str, int)) or isinstance(sid, bool) or str(sid) == "":
        raise ValueError("'id' must be a non-empty string")
    if not isinstance(image, str) or not image:
        raise ValueError("'image' must be a non-empty path string")
    if not isinstance(captions, list):
        raise ValueError("'captions' must be a list of strings")
    for key in ("width", "height"):
        value = record.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(f"'{key}' must be a positive integer")
    masks = _optional(record, "masks", dict, "an object mapping level names to PNG paths") or {}
    if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in masks.items()):
        raise ValueError("'masks' must map level names to PNG paths")
    negatives = _optional(record, "negatives", list, "a list of strings") or []
    if not all(isinstance(n, str) for n in negatives):
        raise ValueError("'negatives' must be a list of strings")
    split = _optional(record, "split", str, "a string")
    base = root.path if root is not None and root.given else path.parent
    return RawRecord(
        id=str(sid),
        image=str(base / image),
        image_display=image,
        captions=captions,
        origin=f"{path}:{line}",
        tokens=record.get("tokens"),
        trees=record.get("trees"),
        phrases=record.get("phrases"),
        split=split,
        masks={level: base / p for level, p in masks.items()},
        negatives=negatives,
        labels=_optional(record, "labels", dict, "an object") or {},
        width=record.get("width"),
        height=record.get("height"),
        extra={k: v for k, v in record.items() if k not in KNOWN_FIELDS},
        root=root,
    )


def read_manifest(path: str | Path, split: str | None = None, options: ReadOptions | None = None,
                  report: SkipReport | None = None) -> list[Sample]:
    """Read a ``manifest.jsonl`` file.

    Parameters
    ----------
    path : the manifest file
    split : keep only records whose ``split`` equals this (None keeps all)
    options : text limits and how thoroughly to check files
    report : where skips are counted; its policy decides between raising and skipping

    Raises
    ------
    HiCLIPError
        Naming ``path:line`` for malformed JSON, non-UTF-8 lines, missing fields, duplicate ids,
        bad captions, token/tree mismatches and bad image or mask files (under the raise policy).
    """
    path = Path(path)
    options = options or ReadOptions()
    report = report if report is not None else SkipReport()
    if not path.is_file():
        raise HiCLIPError(f"{path}: manifest not found")
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    root = DataRoot.of(path.parent, options.image_root)
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                report.handle(_bad(path, line_no, f"not valid UTF-8 (byte {error.start})"), "non-UTF-8 line")
                continue
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as error:
                report.handle(_bad(path, line_no, f"malformed JSON ({error.msg} at column {error.colno})"),
                              "malformed JSON")
                continue
            try:
                rec = _record(path, line_no, parsed, root)
            except ValueError as error:
                report.handle(_bad(path, line_no, str(error)), "malformed record")
                continue
            if split is not None and rec.split != split:
                continue
            if rec.id in seen:
                report.handle(_bad(path, line_no, f"duplicate id {rec.id!r} (first on line {seen[rec.id]})"),
                              "duplicate id")
                continue
            seen[rec.id] = line_no
            sample = build_sample(rec, options, report)
            if sample is not None:
                samples.append(sample)
    return samples
