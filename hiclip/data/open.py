"""``open_dataset(spec)``: one entry point for every supported dataset format.

``spec`` may be
- a folder with ``manifest.jsonl``, or a ``.jsonl`` manifest file;
- a ``.csv`` / ``.tsv`` file (open_clip convention: ``filepath`` and ``title`` columns);
- a COCO root (a folder with ``annotations/captions_*.json``, or the ``annotations`` folder itself);
- a WebDataset shard, shard pattern (``shards/train-{000..009}.tar``) or folder of ``.tar`` shards;
- an image folder: ``<name>.png|jpg`` with ``<name>.txt`` captions and optional ``masks/<name>.png``.
``format=`` forces one of ``manifest``, ``csv``, ``coco``, ``webdataset``, ``folder``.
"""
from __future__ import annotations

import os
from pathlib import Path

from hiclip.data.csv_reader import CsvOptions
from hiclip.data.manifest import read_manifest
from hiclip.data.records import ReadOptions
from hiclip.data.sample import Dataset
from hiclip.data.text_checks import TextLimits
from hiclip.errors import HiCLIPError, SkipReport

FORMATS = ("manifest", "csv", "coco", "webdataset", "folder")
IMAGE_ROOT_ENV = "HICLIP_IMAGE_ROOT"
__all__ = ["FORMATS", "IMAGE_ROOT_ENV", "CsvOptions", "detect_format", "open_dataset"]


def detect_format(spec: str | Path) -> str:
    """Guess the format of ``spec`` (see the module docstring); error if nothing fits."""
    text = str(spec)
    path = Path(text)
    if ("{" in text and ".tar" in text) or (any(ch in text for ch in "*?[") and text.endswith(".tar")):
        return "webdataset"
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return "manifest"
        if suffix in (".csv", ".tsv"):
            return "csv"
        if suffix == ".tar":
            return "webdataset"
        if suffix == ".json" and path.name.startswith("captions_"):
            return "coco"
        raise HiCLIPError(f"{path}: cannot tell the dataset format from the file name "
                          "(expected .jsonl, .csv, .tsv, .tar or a COCO captions_*.json)")
    if path.is_dir():
        if (path / "manifest.jsonl").is_file():
            return "manifest"
        if any((path / "annotations").glob("captions_*.json")) or any(path.glob("captions_*.json")):
            return "coco"
        if any(path.glob("*.tar")):
            return "webdataset"
        return "folder"
    raise HiCLIPError(f"{spec}: no such file or folder")


def open_dataset(spec: str | Path, split: str | None = None, on_error: str = "raise", *,
                 format: str | None = None, limits: TextLimits | None = None, check_images: str = "header",
                 check_trees: bool = True, csv: CsvOptions | None = None,
                 image_root: str | Path | None = None) -> Dataset:
    """Read any supported dataset into ``Sample`` records.

    Parameters
    ----------
    spec : path or shard pattern (see the module docstring)
    split : keep one split (``train``/``val``/``test``; COCO accepts ``val`` or ``val2017``)
    on_error : ``"raise"`` (first problem is a one-line ``HiCLIPError`` naming file and line)
        or ``"skip"`` (problems are counted in ``dataset.skips``; ``dataset.skips.summary()``)
    format : force a format instead of detecting it
    limits : longest caption accepted (words, characters)
    check_images : ``"none"``, ``"exists"``, ``"header"`` (default) or ``"full"`` (decode all
        images and check mask sizes up front)
    check_trees : check that gold tree leaves equal the caption words (needs nltk)
    csv : column options for CSV/TSV files
    image_root : the folder image and mask paths are relative to and must stay inside. By
        default that is ``$HICLIP_IMAGE_ROOT`` when set (so every command and the app can be
        pointed at images kept elsewhere), else the dataset's own folder (the manifest's or CSV's
        folder, the COCO root, the image folder), and a path leading out of it (``../``,
        absolute, a symlink) is an error naming the line, or a counted skip. For COCO it is the
        folder holding ``<split>/``.

    Returns
    -------
    Dataset
    """
    report = SkipReport(on_error)
    if image_root is None:
        image_root = os.environ.get(IMAGE_ROOT_ENV) or None
    options = ReadOptions(limits or TextLimits(), check_images, check_trees,
                          None if image_root is None else str(image_root))
    if image_root is not None and not Path(image_root).is_dir():
        raise HiCLIPError(f"image root {image_root}: not a folder")
    kind = format or detect_format(spec)
    if kind not in FORMATS:
        raise HiCLIPError(f"unknown dataset format {kind!r}: use one of {', '.join(FORMATS)}")
    path = Path(str(spec))
    if kind == "manifest":
        manifest = path / "manifest.jsonl" if path.is_dir() else path
        samples = read_manifest(manifest, split, options, report)
    elif kind == "csv":
        from hiclip.data.csv_reader import read_csv

        samples = read_csv(path, csv or CsvOptions(), split, options, report)
    elif kind == "coco":
        from hiclip.data.coco import read_coco

        samples = read_coco(path, split, options, report)
    elif kind == "webdataset":
        from hiclip.data.webdataset_reader import read_webdataset

        samples = read_webdataset(str(spec), split, options, report)
    else:
        from hiclip.data.folder import read_folder

        samples = read_folder(path, split, options, report)
    dataset = Dataset(samples, str(spec), kind, report)
    if not samples:
        detail = f" ({report.summary()})" if report.total else ""
        where = f" in split {split!r}" if split else ""
        raise HiCLIPError(f"{spec}: no usable samples{where}{detail}")
    return dataset
