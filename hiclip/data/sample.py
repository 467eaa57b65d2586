"""The records every reader produces: ``Sample`` (one image and its captions) and ``Dataset``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

import numpy as np
from PIL import Image

from hiclip.errors import HiCLIPError, SkipReport

# A mask level is a PNG path or a function computing the (H, W) instance-id map on demand.
MaskSource = Union[Path, Callable[[], np.ndarray]]


@dataclass(frozen=True)
class Phrase:
    """Caption words ``span = (start, end)`` (end exclusive) denote masks ``mask_ids`` of ``level``."""

    span: tuple[int, int]
    level: str
    mask_ids: tuple[int, ...]


@dataclass
class Sample:
    """One image with its captions and whatever gold the source provides.

    Attributes
    ----------
    id : str
    image : str
        Absolute path of the image file, or ``"<shard>::<member>"`` for a WebDataset member.
    captions : list of str
    tokens : list of list of str
        Whitespace tokens of each caption (always equal to ``caption.split()``).
    trees : list of (str or None)
        Gold PTB bracket string per caption, None where the source has none.
    split : str or None
    masks : dict
        Level name (``"part"``, ``"object"``, ``"group"``, ``"crowd"``...) -> PNG path or loader.
    phrases : list of list of Phrase
        Per caption, the phrases aligned to mask ids (empty lists when unknown).
    negatives : list of str
        Hard negative captions (false of the image).
    labels : dict
        Class labels for zero-shot evaluation (e.g. ``shape``, ``colour``, ``count``).
    width, height : int or None
        Image size in pixels, when known without decoding.
    origin : str
        Where the record came from (``"manifest.jsonl:12"``), for error messages.
    extra : dict
        Fields of the source record this schema does not name (e.g. ``regions``).
    """

    id: str
    image: str
    captions: list[str]
    tokens: list[list[str]]
    trees: list[str | None]
    split: str | None = None
    masks: dict[str, MaskSource] = field(default_factory=dict)
    phrases: list[list[Phrase]] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    labels: dict[str, Any] = field(default_factory=dict)
    width: int | None = None
    height: int | None = None
    origin: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    image_loader: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    def open_image(self, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
        """The image as an RGB PIL image (see ``hiclip.data.images.load_image``)."""
        from hiclip.data.images import load_image

        source = self.image_loader() if self.image_loader is not None else self.image
        return load_image(source, name=self.image, where=self.origin, background=background)

    def load_mask(self, level: str) -> np.ndarray:
        """(H, W) int32 instance ids of ``level`` (0 = background), checked against the image size.

        ``"scene"`` is the union of all instances (1 = foreground) when not stored explicitly.
        """
        from hiclip.data.masks import load_mask

        size = (self.width, self.height) if self.width and self.height else None
        if level == "scene" and "scene" not in self.masks:
            for finer in ("group", "object", "part"):
                if finer in self.masks:
                    return (self.load_mask(finer) > 0).astype(np.int32)
        if level not in self.masks:
            known = ", ".join(sorted(self.masks)) or "none"
            raise HiCLIPError(f"{self.origin or self.id}: no mask level {level!r} (has: {known})")
        source = self.masks[level]
        if callable(source):
            mask = np.asarray(source(), dtype=np.int32)
            if size is not None and mask.shape != (size[1], size[0]):
                raise HiCLIPError(f"{self.origin or self.id}: {level} mask is {mask.shape[1]}x{mask.shape[0]}, "
                                  f"image is {size[0]}x{size[1]}")
            return mask
        return load_mask(source, size, where=self.origin)


@dataclass
class Dataset(Sequence[Sample]):
    """Samples read by ``open_dataset``, in source order, with the skips made while reading."""

    samples: list[Sample]
    source: str
    kind: str
    skips: SkipReport = field(default_factory=SkipReport)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return Dataset(self.samples[index], self.source, self.kind, self.skips)
        return self.samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def splits(self) -> list[str]:
        """Split names present, in first-seen order."""
        seen: dict[str, None] = {}
        for s in self.samples:
            if s.split is not None:
                seen.setdefault(s.split, None)
        return list(seen)

    def split(self, name: str) -> "Dataset":
        """The samples of split ``name`` (error if there are none)."""
        chosen = [s for s in self.samples if s.split == name]
        if not chosen:
            have = ", ".join(self.splits) or "none"
            raise HiCLIPError(f"{self.source}: no samples in split {name!r} (splits: {have})")
        return Dataset(chosen, self.source, self.kind, self.skips)

    def captions(self) -> list[str]:
        """All captions, flattened in sample order (the order gold trees are scored in)."""
        return [c for s in self.samples for c in s.captions]

    def trees(self) -> list[str | None]:
        """The gold tree of every caption, flattened in the same order as ``captions()``."""
        return [t for s in self.samples for t in s.trees]
