"""A minimal PNG writer for the generator's 8-bit images and instance-id masks.

Pillow's encoder spends most of its time on per-call setup and on choosing a row filter; for a
64 x 64 mask that is ~0.15 ms against ~0.02 ms for the zlib stream itself. The files written
here are plain PNG (IHDR, one IDAT, IEND; filter type 0 on every row, no interlacing) and decode
to exactly the same pixels and the same Pillow modes (``L`` for masks, ``RGB`` for images) as
the files Pillow wrote before. For the generator's masks they are also smaller than Pillow's
adaptively filtered ones at the same zlib level.
"""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
_COLOUR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (greyscale, truecolour)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(array: np.ndarray, compress_level: int) -> bytes:
    """PNG bytes of a uint8 ``(H, W)`` (greyscale) or ``(H, W, 3)`` (RGB) array.

    ``compress_level`` is zlib's level, 0 (stored) to 9. The output depends only on the pixels
    and the level, so the same array gives the same bytes.
    """
    if array.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels, got {array.dtype}")
    channels = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else 0)
    if channels not in _COLOUR_TYPES or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"encode_png needs an (H, W) or (H, W, 3) array, got shape {array.shape}")
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0-9, got {compress_level}")
    height, width = array.shape[:2]
    rows = np.empty((height, 1 + width * channels), np.uint8)
    rows[:, 0] = 0  # filter type "None" for every scanline
    rows[:, 1:] = array.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join((_SIGNATURE, _chunk(b"IHDR", header),
                     _chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level)), _IEND))


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)


def write_png(array: np.ndarray, path: str, compress_level: int) -> None:
    """Write ``array`` (see ``encode_png``) to the file ``path``.

    Plain ``os.open``/``os.write``: ``open(path, "wb")`` builds a buffered file object and asks
    whether the file is a terminal, ~20 us more per file, and a sample writes four.
    """
    data = memoryview(encode_png(array, compress_level))
    fd = os.open(path, _CREATE, 0o666)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
