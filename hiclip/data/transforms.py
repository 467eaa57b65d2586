"""Image pipeline with PIL and torch: load, resize, crop, to tensor, normalise, and the augmented
views HiDeCLIP needs (random resized crop, horizontal flip, colour jitter, greyscale, blur).

Every transform is a small callable ``t(x, generator=None)``. Random ones draw from ``generator``
(a ``torch.Generator``) when given, else from torch's global generator, so a caller that seeds
either gets the same augmentation every time. Geometric transforms take PIL images; colour
transforms take (3, H, W) float tensors in [0, 1]; ``ToTensor`` converts between the two.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hiclip.data.images import load_image, to_rgb

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "AugmentConfig", "CenterCrop", "ColorJitter", "Compose", "GaussianBlur",
    "Normalize", "RandomGrayscale", "RandomHorizontalFlip", "RandomResizedCrop", "Resize", "ToTensor",
    "denormalize", "eval_transform", "load_image", "to_rgb", "train_transform", "view_transform",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Generator = torch.Generator | None


def _rand(generator: Generator) -> float:
    return float(torch.rand((), generator=generator))


def _uniform(generator: Generator, low: float, high: float) -> float:
    return low + (high - low) * _rand(generator)


@dataclass
class Compose:
    """Apply ``transforms`` in order, passing the same generator to each."""

    transforms: Sequence[Callable[..., Any]]

    def __call__(self, x: Any, generator: Generator = None) -> Any:
        for t in self.transforms:
            x = t(x, generator=generator)
        return x


# Longest side of a resized image, in multiples of the shorter side (see Resize).
MAX_ASPECT = 8


def _central_band(src: int, full: int, size: int, limit: int) -> tuple[int, float, float]:
    """(output length, box start, box end in source pixels) of the central part of a resize of
    ``src`` pixels to ``full`` that keeps at most ``limit`` pixels, centred where a central
    crop of ``size`` of the full resize would lie."""
    if full <= limit:
        return full, 0.0, float(src)
    margin = (limit - size) // 2
    start = (full - size) // 2 - margin
    length = size + 2 * margin
    return length, start * src / full, (start + length) * src / full


@dataclass
class Resize:
    """Resize a PIL image so its shorter side is ``size`` (bicubic), keeping the aspect ratio.

    Memory is bounded by construction: the longer side of the result is at most
    ``size * max_aspect`` pixels. For a more elongated image (a 200000 x 1 strip would otherwise
    become 12.8 million x 64 pixels) only the central band of that length is resampled, straight
    from the matching box of the source, so a following ``CenterCrop(size)`` sees the same centre.
    Images up to ``max_aspect`` : 1 are resized exactly as before.
    """

    size: int
    max_aspect: int = MAX_ASPECT

    def __call__(self, image: Image.Image, generator: Generator = None) -> Image.Image:
        w, h = image.size
        limit = self.size * self.max_aspect
        if min(w, h) == self.size and max(w, h) <= limit:
            return image
        scale = self.size / min(w, h)
        new = (max(self.size, round(w * scale)), max(self.size, round(h * scale)))
        if max(new) <= limit:
            return image.resize(new, Image.BICUBIC)
        out_w, left, right = _central_band(w, new[0], self.size, limit)
        out_h, top, bottom = _central_band(h, new[1], self.size, limit)
        return image.resize((out_w, out_h), Image.BICUBIC, box=(left, top, right, bottom))


@dataclass
class CenterCrop:
    """Crop the central ``size`` x ``size`` square of a PIL image."""

    size: int

    def __call__(self, image: Image.Image, generator: Generator = None) -> Image.Image:
        w, h = image.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))


@dataclass
class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` and aspect ratio in ``ratio``, resize to ``size``.

    The torchvision algorithm: ten tries at a crop that fits, else a central crop.
    """

    size: int
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def box(self, width: int, height: int, generator: Generator = None) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the crop."""
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * _uniform(generator, *self.scale)
            aspect = math.exp(_uniform(generator, log_lo, log_hi))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left = int(_rand(generator) * (width - w + 1))
                top = int(_rand(generator) * (height - h + 1))
                return left, top, left + w, top + h
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side

    def __call__(self, image: Image.Image, generator: Generator = None) -> Image.Image:
        box = self.box(*image.size, generator=generator)
        return image.resize((self.size, self.size), Image.BICUBIC, box=box)


@dataclass
class RandomHorizontalFlip:
    """Mirror a PIL image with probability ``p``. Captions that say left/right become false."""

    p: float = 0.5

    def __call__(self, image: Image.Image, generator: Generator = None) -> Image.Image:
        if self.p > 0 and _rand(generator) < self.p:
            return image.transpose(Image.FLIP_LEFT_RIGHT)
        return image


@dataclass
class ToTensor:
    """PIL image -> (3, H, W) float32 tensor in [0, 1] (converted to RGB first)."""

    def __call__(self, image: Image.Image, generator: Generator = None) -> torch.Tensor:
        array = np.asarray(to_rgb(image), dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


@dataclass
class Normalize:
    """(x - mean) / std per channel; CLIP's statistics by default."""

    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __call__(self, tensor: torch.Tensor, generator: Generator = None) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=tensor.dtype).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype).view(3, 1, 1)
        return (tensor - mean) / std


def denormalize(tensor: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """Undo ``Normalize``: (..., 3, H, W) -> values in [0, 1] (clamped)."""
    shape = (3, 1, 1)
    m = torch.tensor(mean, dtype=tensor.dtype).view(shape)
    s = torch.tensor(std, dtype=tensor.dtype).view(shape)
    return (tensor * s + m).clamp(0, 1)


_LUMA = (0.299, 0.587, 0.114)


def _grey(t: torch.Tensor) -> torch.Tensor:
    """(1, H, W) luminance of a (3, H, W) image."""
    return (t[0] * _LUMA[0] + t[1] * _LUMA[1] + t[2] * _LUMA[2]).unsqueeze(0)


_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = np.linalg.inv(_TO_YIQ)


def _rotate_hue(t: torch.Tensor, turns: float) -> torch.Tensor:
    """Rotate hue by ``turns`` of a full circle in YIQ space (a linear map, cheap and smooth)."""
    angle = 2 * math.pi * turns
    c, s = math.cos(angle), math.sin(angle)
    rotate = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    matrix = torch.from_numpy(_FROM_YIQ @ rotate @ _TO_YIQ).to(t.dtype)
    return (matrix @ t.reshape(3, -1)).reshape(t.shape)


@dataclass
class ColorJitter:
    """Random brightness, contrast, saturation (factors in [1 - x, 1 + x]) and hue (turns in
    [-hue, hue]) in random order, applied with probability ``p`` to a (3, H, W) tensor in [0, 1]."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    p: float = 0.8

    def __call__(self, t: torch.Tensor, generator: Generator = None) -> torch.Tensor:
        if _rand(generator) >= self.p:
            return t
        order = torch.randperm(4, generator=generator).tolist()
        for k in order:
            if k == 0 and self.brightness > 0:
                t = t * _uniform(generator, 1 - self.brightness, 1 + self.brightness)
            elif k == 1 and self.contrast > 0:
                factor = _uniform(generator, 1 - self.contrast, 1 + self.contrast)
                t = (t - _grey(t).mean()) * factor + _grey(t).mean()
            elif k == 2 and self.saturation > 0:
                factor = _uniform(generator, 1 - self.saturation, 1 + self.saturation)
                grey = _grey(t)
                t = (t - grey) * factor + grey
            elif k == 3 and self.hue > 0:
                t = _rotate_hue(t, _uniform(generator, -self.hue, self.hue))
            t = t.clamp(0, 1)
        return t


@dataclass
class RandomGrayscale:
    """Replace a (3, H, W) tensor by its luminance (3 equal channels) with probability ``p``."""

    p: float = 0.2

    def __call__(self, t: torch.Tensor, generator: Generator = None) -> torch.Tensor:
        if _rand(generator) < self.p:
            return _grey(t).expand(3, -1, -1).clone()
        return t


@dataclass
class GaussianBlur:
    """Blur a (3, H, W) tensor with sigma in ``sigma`` (pixels), with probability ``p``."""

    sigma: tuple[float, float] = (0.1, 2.0)
    p: float = 0.5

    def __call__(self, t: torch.Tensor, generator: Generator = None) -> torch.Tensor:
        if _rand(generator) >= self.p:
            return t
        sigma = _uniform(generator, *self.sigma)
        radius = min(max(1, math.ceil(3 * sigma)), (min(t.shape[-2:]) - 1) // 2)
        if radius < 1:
            return t
        x = torch.arange(-radius, radius + 1, dtype=t.dtype)
        kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
        kernel = (kernel / kernel.sum()).tolist()
        # Separable blur as a weighted sum of shifted copies: much faster than conv2d at this size.
        h, w = t.shape[-2:]
        img = F.pad(t.unsqueeze(0), (radius, radius, radius, radius), mode="reflect").squeeze(0)
        rows = sum(k * img[:, :, j:j + w] for j, k in enumerate(kernel))
        return sum(k * rows[:, j:j + h, :] for j, k in enumerate(kernel))


@dataclass
class AugmentConfig:
    """HiDeCLIP / SimSiam view augmentation.

    ``hflip`` is 0 by default: the synthetic captions say "to the left of", which a mirror
    image would make false. Use 0.5 for data whose captions carry no left/right.
    """

    scale: tuple[float, float] = (0.5, 1.0)
    hflip: float = 0.0
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.5


def eval_transform(image_size: int) -> Compose:
    """Deterministic: shorter side to ``image_size``, central crop, tensor, CLIP normalisation."""
    return Compose([Resize(image_size), CenterCrop(image_size), ToTensor(), Normalize()])


def train_transform(image_size: int, augment: AugmentConfig | None = None) -> Compose:
    """An augmented training view (see ``AugmentConfig``), normalised like ``eval_transform``."""
    a = augment or AugmentConfig()
    return Compose([
        RandomResizedCrop(image_size, a.scale),
        RandomHorizontalFlip(a.hflip),
        ToTensor(),
        ColorJitter(a.brightness, a.contrast, a.saturation, a.hue, a.jitter_p),
        RandomGrayscale(a.grayscale_p),
        GaussianBlur(a.blur_sigma, a.blur_p),
        Normalize(),
    ])


view_transform = train_transform
