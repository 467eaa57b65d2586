"""Write any picture of this package to disk, the format chosen by the file extension."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from hiclip.atomic import atomic_path
from hiclip.errors import HiCLIPError

FORMATS = (".png", ".svg", ".pdf")


def save_figure(picture: Figure | str | np.ndarray, path: str | Path, dpi: int = 150,
                close: bool = True) -> Path:
    """Save a matplotlib figure, an SVG string or an RGB image array to ``path``.

    * ``Figure``: ``.png``, ``.svg`` or ``.pdf`` through matplotlib (tight bounding box); the
      figure is closed afterwards unless ``close=False``.
    * SVG string (as returned by :func:`viz.trees.tree_svg`): ``.svg`` only, written as is.
      For PNG/PDF draw the tree with :func:`viz.trees.tree_figure` instead (no SVG rasteriser
      is a dependency of this project).
    * image array ``(S, S', 3)`` uint8 or float in [0, 1]: ``.png`` directly, ``.svg``/``.pdf``
      embedded in a figure.

    Parent folders are created; the file appears complete or not at all. Returns the path written.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise HiCLIPError(f"{path}: unsupported figure format {ext!r}; use one of {', '.join(FORMATS)}")
    if isinstance(picture, str):
        if not picture.lstrip().startswith(("<svg", "<?xml")):
            raise HiCLIPError(f"{path}: the string to save is not an SVG document")
        if ext != ".svg":
            raise HiCLIPError(
                f"{path}: an SVG string can only be saved as .svg; draw it with matplotlib "
                "(e.g. viz.trees.tree_figure) for PNG or PDF"
            )
    elif not isinstance(picture, (Figure, np.ndarray)):
        raise TypeError(f"cannot save a {type(picture).__name__}: expected Figure, SVG str or ndarray")
    fmt = ext[1:]
    # Written to a unique temporary and renamed (hiclip.atomic): a file is complete or absent.
    with atomic_path(path, fsync=False) as tmp:
        if isinstance(picture, Figure):
            picture.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt)
            if close:
                plt.close(picture)
        elif isinstance(picture, str):
            tmp.write_text(picture, encoding="utf-8")
        else:
            from viz.images import image_to_float

            rgb = image_to_float(picture)
            if ext == ".png":
                Image.fromarray((rgb * 255).round().astype(np.uint8)).save(tmp, format="PNG")
            else:
                height, width = rgb.shape[:2]
                fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
                ax = fig.add_axes((0, 0, 1, 1))
                ax.imshow(rgb)
                ax.axis("off")
                fig.savefig(tmp, dpi=100, format=fmt)
                plt.close(fig)
    return path
