"""Checks on what a user hands the app: an uploaded image and a typed caption.

Every problem is a :class:`~hiclip.errors.HiCLIPError` with a one-line message, which the app
shows with ``st.error`` before carrying on.
"""
from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from hiclip.data.text_checks import TextLimits
from hiclip.errors import HiCLIPError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024      # 10 MB
MAX_UPLOAD_PIXELS = 4096 * 4096          # ~16.8 megapixels
MAX_CAPTION_WORDS = 64
MAX_CAPTION_CHARS = TextLimits().max_chars   # the limit manifests have
MAX_WORD_CHARS = 64                      # longer than any English word; a 10,000-character "word" is refused
IMAGE_TYPES = ("png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff")


def validate_image_bytes(data: bytes | None, name: str = "upload",
                         max_bytes: int = MAX_UPLOAD_BYTES,
                         max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """Decode an uploaded file into an RGB ``PIL.Image``, or raise ``HiCLIPError``.

    Refuses empty files, files over ``max_bytes``, files PIL cannot read as an image, and
    images over ``max_pixels`` (checked from the header, before the pixels are decoded, so a
    decompression bomb is never expanded).
    """
    if not data:
        raise HiCLIPError(f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise HiCLIPError(
            f"{name}: {len(data) / 1e6:.1f} MB is too large (limit {max_bytes / 1e6:.0f} MB)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise HiCLIPError(
                    f"{name}: {width}x{height} pixels is too large (limit {max_pixels:,} pixels)"
                )
            image.load()
    except HiCLIPError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:
        raise HiCLIPError(f"{name}: not a readable image ({type(error).__name__})") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise HiCLIPError(f"{name}: not a readable image ({error})") from None
    if width < 1 or height < 1:
        raise HiCLIPError(f"{name}: the image has no pixels")
    return image.convert("RGB")


def validate_caption(caption: str | None, max_words: int = MAX_CAPTION_WORDS,
                     max_chars: int = MAX_CAPTION_CHARS, max_word_chars: int = MAX_WORD_CHARS) -> str:
    """A caption stripped of surrounding space; raise ``HiCLIPError`` if empty, or too long in
    characters, in words, or in the characters of one word."""
    caption = (caption or "").strip()
    if not caption:
        raise HiCLIPError("the caption is empty: type a sentence describing the image")
    if len(caption) > max_chars:
        raise HiCLIPError(f"the caption has {len(caption):,} characters (limit {max_chars:,})")
    words = caption.split()
    if len(words) > max_words:
        raise HiCLIPError(f"the caption has {len(words)} words (limit {max_words})")
    longest = max(words, key=len)
    if len(longest) > max_word_chars:
        raise HiCLIPError(f"the caption's word {longest[:20]!r}... has {len(longest):,} characters "
                          f"(limit {max_word_chars} per word)")
    return caption
