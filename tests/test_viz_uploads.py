"""viz.uploads: what the app accepts from a user, and the one-line reasons it refuses."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hiclip.errors import HiCLIPError
from viz.uploads import validate_caption, validate_image_bytes


def _png(size=(20, 10), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color=0).save(buffer, format="PNG")
    return buffer.getvalue()


def test_valid_images_become_rgb():
    image = validate_image_bytes(_png(mode="RGBA"), "a.png")
    assert image.mode == "RGB" and image.size == (20, 10)
    assert validate_image_bytes(_png(mode="L")).mode == "RGB"


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (None, "empty"),
    (b"this is not an image at all", "not a readable image"),
    (_png()[:40], "not a readable image"),          # truncated PNG
])
def test_bad_bytes_are_refused(data, message):
    with pytest.raises(HiCLIPError, match=message):
        validate_image_bytes(data, "upload.png")


def test_limits_on_bytes_and_pixels():
    data = _png((300, 300))
    with pytest.raises(HiCLIPError, match="too large .limit 0 MB"):
        validate_image_bytes(data, "big.png", max_bytes=len(data) - 1)
    with pytest.raises(HiCLIPError, match="300x300 pixels is too large"):
        validate_image_bytes(data, "big.png", max_pixels=300 * 300 - 1)
    assert np.asarray(validate_image_bytes(data, max_pixels=300 * 300)).shape == (300, 300, 3)


def test_captions():
    assert validate_caption("  a red square ") == "a red square"
    for empty in ("", "   ", None):
        with pytest.raises(HiCLIPError, match="caption is empty"):
            validate_caption(empty)
    with pytest.raises(HiCLIPError, match="3 words .limit 2"):
        validate_caption("a b c", max_words=2)
