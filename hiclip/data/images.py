"""Decoding images robustly: any PIL mode to RGB, and one-line errors for bad files.

Modes: ``L``/``1``/``P``/``CMYK``/``YCbCr`` convert directly; ``LA``/``PA``/``RGBA`` and
palette or grey images with a transparency key are alpha-composited onto ``background``;
16-bit ``I;16*`` and ``I`` are scaled from 0..65535 to 0..255 (PIL's own conversion would clip);
``F`` is clipped to 0..255 like PIL does.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hiclip.errors import HiCLIPError

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def _error(name: object, where: str | None, message: str) -> HiCLIPError:
    return HiCLIPError(f"{where}: image {name}: {message}" if where else f"{name}: {message}")


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    v = np.clip(values.astype(np.int64), 0, 65535)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert a decoded PIL image of any supported mode to ``RGB``.

    Parameters
    ----------
    image : PIL.Image.Image
    background : (3,) ints in 0..255
        Colour that transparent pixels are composited onto.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _SIXTEEN_BIT or mode == "I":
        grey = _scale_16bit(np.asarray(image))
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, tuple(background))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise HiCLIPError(f"cannot convert image mode {mode} to RGB: {error}") from None


def _open(source: str | Path | bytes, name: object, where: str | None) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise _error(name, where, "empty image data (0 bytes)")
        stream: object = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise _error(name, where, "file not found" if not path.exists() else "not a file")
        if path.stat().st_size == 0:
            raise _error(name, where, "empty file (0 bytes)")
        stream = path
    try:
        return Image.open(stream)  # type: ignore[arg-type]
    except UnidentifiedImageError:
        raise _error(name, where, "not a readable image (unknown format or corrupt header)") from None
    except Image.DecompressionBombError as error:
        raise _error(name, where, f"refused as a decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise _error(name, where, f"cannot open: {error}") from None


def load_image(source: str | Path | bytes, name: object | None = None, where: str | None = None,
               background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Decode an image file (or its bytes) fully and return it as RGB.

    Parameters
    ----------
    source : path or bytes
    name : shown in errors (defaults to ``source`` for paths)
    where : the record that refers to the image (``"manifest.jsonl:3"``), shown in errors
    background : colour transparent pixels are composited onto

    Raises
    ------
    HiCLIPError
        Missing, empty, unreadable, truncated or corrupt files, in one line.
    """
    name = name if name is not None else ("<bytes>" if isinstance(source, (bytes, bytearray)) else source)
    image = _open(source, name, where)
    try:
        image.load()
    except Image.DecompressionBombError as error:
        raise _error(name, where, f"refused as a decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise _error(name, where, f"truncated or corrupt image data ({error})") from None
    try:
        return to_rgb(image, background)
    except HiCLIPError as error:
        raise _error(name, where, str(error)) from None


def image_size(source: str | Path | bytes, name: object | None = None, where: str | None = None) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    name = name if name is not None else source
    with _open(source, name, where) as image:
        return image.size


def is_image_file(path: str | os.PathLike) -> bool:
    """True for file names with a common image extension."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
