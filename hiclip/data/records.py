"""Turning one raw record (from any reader) into a checked ``Sample``.

Shared by every reader so that all formats apply the same checks: caption text, token and tree
alignment, phrase spans, image and mask files. A problem with one caption drops that caption
(with its tokens, tree and phrases, so nothing shifts); a problem with the image drops the sample.
Under the ``raise`` policy the first problem is an error naming the file and line.

Image and mask paths must stay inside the record's ``root`` (the dataset folder, or the image
root the user named): ``../`` components, absolute paths and symlinks are followed first, so a
manifest cannot make a reader open ``/etc/passwd`` or a file elsewhere on the machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hiclip.data.images import image_size, load_image
from hiclip.data.masks import mask_size
from hiclip.data.sample import MaskSource, Phrase, Sample
from hiclip.data.text_checks import InputProblem, TextLimits, check_alignment, check_caption
from hiclip.errors import HiCLIPError, SkipReport

CHECK_LEVELS = ("none", "exists", "header", "full")


@dataclass
class ReadOptions:
    """How thoroughly readers check their input.

    ``check_images``: ``"none"``; ``"exists"`` (files present and non-empty); ``"header"`` (the
    default: also read each image header, confirming or filling width/height); ``"full"`` (also
    decode every image and read every mask header, so truncated files and mask-size mismatches
    are caught while opening rather than while training). ``image_root``: see :class:`DataRoot`.
    """

    limits: TextLimits = field(default_factory=TextLimits)
    check_images: str = "header"
    check_trees: bool = True
    # The folder relative image and mask paths start from and every file must stay in
    # (default: the dataset's own folder); see DataRoot.
    image_root: str | None = None

    def __post_init__(self) -> None:
        if self.check_images not in CHECK_LEVELS:
            raise HiCLIPError(f"check_images must be one of {', '.join(CHECK_LEVELS)}, got {self.check_images!r}")


@dataclass
class RawRecord:
    """Fields as a reader found them; ``origin`` is ``"file:line"`` for messages."""

    id: str
    image: str  # absolute path, or "shard::member"
    captions: list[Any]
    origin: str
    tokens: list[Any] | None = None
    trees: list[Any] | None = None
    phrases: list[Any] | None = None
    split: str | None = None
    masks: dict[str, MaskSource] = field(default_factory=dict)
    negatives: list[str] = field(default_factory=list)
    labels: dict[str, Any] = field(default_factory=dict)
    width: int | None = None
    height: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    image_loader: Any = None
    image_display: str | None = None  # how to name the image in messages (default: ``image``)
    root: "DataRoot | None" = None  # image and mask files must resolve inside it


@dataclass(frozen=True)
class DataRoot:
    """The folder a dataset's files must stay in; ``given`` when the user named it (image_root)."""

    path: Path
    given: bool = False
    # realpath of each folder seen, so a file costs one lstat rather than one per path component
    _folders: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, default: Path, image_root: str | Path | None) -> "DataRoot":
        """``image_root`` when given, else ``default`` (the dataset's own folder)."""
        if image_root is not None:
            return cls(Path(os.path.realpath(image_root)), True)
        return cls(Path(os.path.realpath(default)))

    def resolve(self, path: str | Path) -> str:
        """``os.path.realpath(path)``, with the folders' resolutions cached."""
        folder, name = os.path.split(os.path.abspath(path))
        if name in ("", ".", "..") or os.path.islink(path):
            return os.path.realpath(path)
        real = self._folders.get(folder)
        if real is None:
            real = self._folders[folder] = os.path.realpath(folder)
        return os.path.join(real, name)

    def contains(self, path: str | Path) -> bool:
        """True when ``path``, with ``..``, absolute parts and symlinks resolved, is inside."""
        real = self.resolve(path)
        root = str(self.path)
        return real == root or real.startswith(root.rstrip(os.sep) + os.sep)

    def check(self, path: str | Path, what: str) -> None:
        """Raise ``InputProblem("path outside the dataset")`` unless ``path`` is inside."""
        if not self.contains(path):
            hint = ("" if self.given else "; to read files from another folder, name it with "
                    "image_root= / --image-root / $HICLIP_IMAGE_ROOT")
            raise InputProblem("path outside the dataset",
                               f"{what} resolves to {self.resolve(path)}, outside "
                               f"{'the image root' if self.given else 'the dataset folder'} {self.path}{hint}")


def _fail(origin: str, message: str) -> HiCLIPError:
    return HiCLIPError(f"{origin}: {message}")


def _phrases(raw: Any, index: int, n_words: int, levels: set[str] | None) -> list[Phrase]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InputProblem("malformed phrases", f"phrases of caption {index + 1} are not a list")
    out = []
    for entry in raw:
        try:
            start, end = entry["span"]
            level = entry["level"]
            ids = tuple(int(i) for i in entry["mask_ids"])
            ok = isinstance(start, int) and isinstance(end, int) and isinstance(level, str)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise InputProblem("malformed phrases", f"phrase {entry!r} of caption {index + 1} needs "
                                                    "span [start, end], level and mask_ids")
        if not 0 <= start < end <= n_words:
            raise InputProblem("phrase out of range", f"phrase span [{start}, {end}] of caption {index + 1} "
                                                      f"is outside its {n_words} words")
        if levels is not None and level not in levels:
            raise InputProblem("phrase out of range", f"phrase of caption {index + 1} refers to mask level "
                                                      f"{level!r}, which the record does not have")
        out.append(Phrase((start, end), level, ids))
    return out


def _aligned(name: str, values: list[Any] | None, n: int) -> list[Any] | None:
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != n:
        got = len(values) if isinstance(values, list) else type(values).__name__
        raise InputProblem("malformed record", f"'{name}' must be a list with one entry per caption ({n}), got {got}")
    return values


def _check_files(rec: RawRecord, options: ReadOptions) -> tuple[int | None, int | None]:
    """Check the image (and masks at level ``full``); returns the image's (width, height)."""
    level = options.check_images
    name = rec.image_display or rec.image
    width, height = rec.width, rec.height
    if level == "none":
        return width, height
    if rec.image_loader is None:
        path = Path(rec.image)
        if not path.is_file():
            raise InputProblem("missing image", f"image {name}: file not found")
        if path.stat().st_size == 0:
            raise InputProblem("empty image", f"image {name}: empty file (0 bytes)")
    for lvl, source in rec.masks.items():
        if not callable(source) and not Path(source).is_file():
            raise InputProblem("missing mask", f"{lvl} mask {source}: file not found")
    if level == "exists":
        return width, height
    try:
        source = rec.image_loader() if rec.image_loader is not None else rec.image
        if level == "full":
            size = load_image(source, name=name).size
        else:
            size = image_size(source, name=name)
    except HiCLIPError as error:
        raise InputProblem("corrupt image", f"image {error}") from None
    if (width is not None and width != size[0]) or (height is not None and height != size[1]):
        raise InputProblem("size mismatch", f"image {name} is {size[0]}x{size[1]} but the record says "
                                            f"{width}x{height}")
    if level == "full":
        for lvl, source in rec.masks.items():
            if callable(source):
                continue
            try:
                msize = mask_size(source)
            except HiCLIPError as error:
                raise InputProblem("corrupt mask", f"{lvl} mask {error}") from None
            if msize != size:
                raise InputProblem("mask size mismatch", f"{lvl} mask {source} is {msize[0]}x{msize[1]} "
                                                          f"but the image is {size[0]}x{size[1]}")
    return size


def _check_paths(rec: RawRecord) -> None:
    if rec.root is None:
        return
    if rec.image_loader is None:
        rec.root.check(rec.image, f"image {rec.image_display or rec.image}")
    for level, source in rec.masks.items():
        if not callable(source):
            rec.root.check(source, f"{level} mask {source}")


def build_sample(rec: RawRecord, options: ReadOptions, report: SkipReport) -> Sample | None:
    """Check ``rec`` and return its ``Sample``; None if it was skipped (counted in ``report``)."""
    n = len(rec.captions)
    try:
        _check_paths(rec)
        tokens = _aligned("tokens", rec.tokens, n)
        trees = _aligned("trees", rec.trees, n)
        phrases = _aligned("phrases", rec.phrases, n)
    except InputProblem as problem:
        report.handle(HiCLIPError(problem.located(rec.origin)), problem.reason)
        return None
    levels = set(rec.masks) | {"scene"} if rec.masks else None
    kept_captions: list[str] = []
    kept_tokens: list[list[str]] = []
    kept_trees: list[str | None] = []
    kept_phrases: list[list[Phrase]] = []
    for i, raw in enumerate(rec.captions):
        try:
            caption = check_caption(raw, i, options.limits)
            tree = trees[i] if trees is not None else None
            words, tree = check_alignment(caption, i, tokens[i] if tokens is not None else None,
                                          tree if options.check_trees else None)
            if not options.check_trees and trees is not None:
                tree = trees[i]
            spans = _phrases(phrases[i] if phrases is not None else None, i, len(words), levels)
        except InputProblem as problem:
            report.handle(HiCLIPError(problem.located(rec.origin)), problem.reason)
            continue
        kept_captions.append(caption)
        kept_tokens.append(words)
        kept_trees.append(tree)
        kept_phrases.append(spans)
    if not kept_captions:
        if n == 0:
            report.handle(_fail(rec.origin, "record has no captions"), "no captions")
        else:
            report.handle(_fail(rec.origin, "no valid caption left"), "sample without valid captions")
        return None
    try:
        width, height = _check_files(rec, options)
    except InputProblem as problem:
        report.handle(HiCLIPError(problem.located(rec.origin)), problem.reason)
        return None
    return Sample(
        id=rec.id, image=rec.image, captions=kept_captions, tokens=kept_tokens, trees=kept_trees,
        split=rec.split, masks=dict(rec.masks), phrases=kept_phrases, negatives=list(rec.negatives),
        labels=dict(rec.labels), width=width, height=height, origin=rec.origin, extra=dict(rec.extra),
        image_loader=rec.image_loader,
    )
