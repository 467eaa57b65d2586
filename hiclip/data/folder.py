"""Image folders: ``<name>.png|jpg|...`` with ``<name>.txt`` captions and optional masks and trees.

Layout (``images/`` and ``captions/`` subfolders are optional; split subfolders ``train/``,
``val/``, ``test/`` are optional and set ``Sample.split``)::

    root/[split/][images/]<name>.jpg
    root/[split/][captions/]<name>.txt       one caption per non-blank line
    root/[split/][captions/]<name>.trees     optional: one PTB tree per caption line
    root/[split/]masks/<name>.png            optional: instance ids -> level "object"
    root/[split/]masks/<name>_<level>.png    optional: e.g. <name>_part.png -> level "part"

Files must resolve inside ``root`` (a symlink out of it is refused), or inside
``ReadOptions.image_root`` when one is given.
"""
from __future__ import annotations

from pathlib import Path

from hiclip.data.images import IMAGE_EXTENSIONS
from hiclip.data.records import DataRoot, RawRecord, ReadOptions, build_sample
from hiclip.data.sample import Sample
from hiclip.data.text_checks import InputProblem
from hiclip.data.text_files import caption_lines
from hiclip.errors import HiCLIPError, SkipReport

SPLIT_FOLDERS = ("train", "val", "test")


def _images(folder: Path) -> list[Path]:
    base = folder / "images" if (folder / "images").is_dir() else folder
    return sorted(p for p in base.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _companion(folder: Path, image: Path, suffix: str) -> Path:
    """``<name><suffix>`` beside the image, else in ``captions/``."""
    beside = image.with_suffix(suffix)
    if beside.is_file():
        return beside
    return folder / "captions" / (image.stem + suffix)


def _masks(folder: Path, stem: str) -> dict[str, Path]:
    masks_dir = folder / "masks"
    if not masks_dir.is_dir():
        return {}
    out: dict[str, Path] = {}
    plain = masks_dir / f"{stem}.png"
    if plain.is_file():
        out["object"] = plain
    for path in sorted(masks_dir.glob(f"{stem}_*.png")):
        out[path.stem[len(stem) + 1:]] = path
    return out


def read_folder(root: str | Path, split: str | None = None, options: ReadOptions | None = None,
                report: SkipReport | None = None) -> list[Sample]:
    """Read an image folder (see the module docstring) into samples, sorted by file name."""
    root = Path(root)
    options = options or ReadOptions()
    report = report if report is not None else SkipReport()
    if not root.is_dir():
        raise HiCLIPError(f"{root}: not a folder")
    split_dirs = [(name, root / name) for name in SPLIT_FOLDERS if (root / name).is_dir()]
    folders = split_dirs or [(None, root)]
    if split is not None:
        folders = [(name, f) for name, f in folders if name == split]
        if not folders:
            raise HiCLIPError(f"{root}: no split folder {split!r} (expected train/, val/ or test/)")
    samples: list[Sample] = []
    found_images = False
    for split_name, folder in folders:
        for image in _images(folder):
            found_images = True
            sample = _read_one(root, folder, image, split_name, options, report)
            if sample is not None:
                samples.append(sample)
    if not found_images:
        raise HiCLIPError(f"{root}: no images found (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return samples


def _read_one(root: Path, folder: Path, image: Path, split: str | None, options: ReadOptions,
              report: SkipReport) -> Sample | None:
    name = str(image.relative_to(root))
    caption_file = _companion(folder, image, ".txt")
    origin = str(caption_file)
    try:
        if not caption_file.is_file():
            raise InputProblem("missing caption", f"image {name} has no caption file {caption_file.name}")
        captions = caption_lines(caption_file.read_bytes(), str(caption_file))
        trees = None
        tree_file = _companion(folder, image, ".trees")
        if tree_file.is_file():
            trees = caption_lines(tree_file.read_bytes(), str(tree_file))
            if len(trees) != len(captions):
                raise InputProblem("malformed record", f"{len(trees)} trees for {len(captions)} captions",
                                   path=tree_file)
    except InputProblem as problem:
        report.handle(HiCLIPError(problem.located(origin)), problem.reason)
        return None
    stem = image.stem
    sid = f"{split}/{stem}" if split else stem
    rec = RawRecord(id=sid, image=str(image), image_display=name, captions=captions, origin=origin,
                    trees=trees, split=split, masks=dict(_masks(folder, stem)),
                    root=DataRoot.of(root, options.image_root))
    return build_sample(rec, options, report)
