"""Instance-id mask maps: PNG files whose pixel values are instance ids (0 = background)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hiclip.errors import HiCLIPError


def _error(path: object, where: str | None, message: str) -> HiCLIPError:
    return HiCLIPError(f"{where}: mask {path}: {message}" if where else f"{path}: {message}")


def mask_to_ids(image: Image.Image) -> np.ndarray:
    """(H, W) int32 instance ids from a decoded mask image.

    Single-channel modes (``L``, ``P``, ``I;16``, ``I``, ``1``) are read as ids. Colour masks
    (``RGB``/``RGBA``) map each distinct colour to an id, black to 0, ids numbered in order of
    the colour's packed value (R + 256 G + 65536 B), so the numbering is stable.
    """
    mode = image.mode
    if mode in ("L", "P", "1", "I", "I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image).astype(np.int32)
    if mode in ("RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB")).astype(np.int64)
        packed = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        values, inverse = np.unique(packed, return_inverse=True)
        ids = inverse.reshape(packed.shape).astype(np.int32)
        if values[0] != 0:  # no black pixel: every colour is an instance
            ids += 1
        return ids
    raise HiCLIPError(f"unsupported mask mode {mode} (use a single-channel PNG of instance ids)")


def load_mask(path: str | Path, expected_size: tuple[int, int] | None = None,
              where: str | None = None) -> np.ndarray:
    """Read an instance-id PNG.

    Parameters
    ----------
    path : path of the mask image
    expected_size : (width, height) of the image the mask belongs to, or None to skip the check
    where : the record that refers to the mask, shown in errors

    Returns
    -------
    (H, W) int32 array, 0 = background, 1..K instances.

    Raises
    ------
    HiCLIPError
        Missing, empty or unreadable file, unsupported mode, or a size other than ``expected_size``.
    """
    path = Path(path)
    if not path.is_file():
        raise _error(path, where, "file not found")
    if path.stat().st_size == 0:
        raise _error(path, where, "empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            if expected_size is not None and tuple(image.size) != tuple(expected_size):
                raise _error(path, where, f"mask is {image.size[0]}x{image.size[1]} but the image is "
                                          f"{expected_size[0]}x{expected_size[1]}")
            image.load()
            try:
                return mask_to_ids(image)
            except HiCLIPError as error:
                raise _error(path, where, str(error)) from None
    except UnidentifiedImageError:
        raise _error(path, where, "not a readable image") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise _error(path, where, f"truncated or corrupt mask ({error})") from None


def mask_size(path: str | Path, where: str | None = None) -> tuple[int, int]:
    """(width, height) of a mask file from its header."""
    path = Path(path)
    if not path.is_file():
        raise _error(path, where, "file not found")
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise _error(path, where, "not a readable image") from None
