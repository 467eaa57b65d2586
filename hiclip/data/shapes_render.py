"""Drawing a sampled scene with numpy: textured background, clutter, textured objects and parts.

Everything is pixel-exact (no anti-aliasing), so the instance masks are exactly the drawn regions.
Local shape and texture masks depend only on integer sizes and are cached.

The canvas is drawn channel-first, (3, S, S) float32, and transposed to (S, S, 3) uint8 at the
end: adding a colour or a pattern to every pixel of a channel-last array runs numpy's inner loop
over 3 values at a time, ~5x slower at 64 px. Each pixel gets the same float32 operations in the
same order either way, so the pixels are the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from skimage.draw import polygon2mask

from hiclip.data.shapes_scene import Look, Part, Scene
from hiclip.data.shapes_vocab import COLOURS


@dataclass
class Rendering:
    """A drawn scene.

    Attributes
    ----------
    image : (S, S, 3) uint8
    part, object, group : (S, S) uint8 instance ids, 0 = background. ``part`` is the finest
        partition of the foreground: each object's body (object minus its parts) and each part.
    part_info : list of (object id, kind) for part ids 1..P; kind is "body" or the part's kind.
    object_group : list of group ids for object ids 1..N.
    """

    image: np.ndarray
    part: np.ndarray
    object: np.ndarray
    group: np.ndarray
    part_info: list[tuple[int, str]]
    object_group: list[int]


def _grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] for an s x s box: (v rows, u columns)."""
    t = (np.arange(s) + 0.5) / s * 2 - 1
    return t[:, None], t[None, :]


@lru_cache(maxsize=4096)
def shape_mask(shape: str, s: int) -> np.ndarray:
    """Boolean (s, s) mask of ``shape`` filling an s x s box."""
    v, u = _grid(s)
    if shape == "square":
        m = np.ones((s, s), bool)
    elif shape == "circle":
        m = u ** 2 + v ** 2 <= 1.0
    elif shape == "diamond":
        m = np.abs(u) + np.abs(v) <= 1.0
    elif shape == "triangle":
        m = np.abs(u) <= (v + 1) / 2
    elif shape == "cross":
        m = (np.abs(u) <= 0.34) | (np.abs(v) <= 0.34)
    elif shape == "hexagon":
        m = (np.abs(v) <= 0.9) & (np.abs(u) * 0.9 + np.abs(v) * 0.52 <= 0.9)
    elif shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.5)
        cy = 0.1  # a five-pointed star's bounding box is lower than its centre
        rows = (cy + radii * np.sin(angles) * 1.05 + 1) / 2 * s - 0.5
        cols = (radii * np.cos(angles) + 1) / 2 * s - 0.5
        m = polygon2mask((s, s), np.stack([rows, cols], axis=1))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    m = np.ascontiguousarray(m)
    m.setflags(write=False)
    return m


@lru_cache(maxsize=4096)
def part_mask(shape: str, s: int, part: Part) -> np.ndarray:
    """Boolean (s, s) mask of ``part`` inside an object of ``shape`` (strictly inside its mask)."""
    body = shape_mask(shape, s)
    if part.kind == "border":
        width = max(2, round(0.12 * s))
        inner = ndimage.binary_erosion(body, iterations=width, border_value=0)
        m = body & ~inner
    elif part.kind == "band":
        lo, hi = round(0.38 * s), round(0.62 * s)
        band = np.zeros((s, s), bool)
        if part.orientation == "vertical":
            band[:, lo:hi] = True
        else:
            band[lo:hi, :] = True
        m = body & band
    elif part.kind == "inner":
        t = max(3, round(0.42 * s))
        inside = ndimage.binary_erosion(body, iterations=max(1, round(0.06 * s)), border_value=0)
        ys, xs = np.nonzero(inside)
        cy, cx = int(round(ys.mean())), int(round(xs.mean()))
        m = np.zeros((s, s), bool)
        y0, x0 = cy - t // 2, cx - t // 2
        ys0, xs0 = max(0, y0), max(0, x0)
        ys1, xs1 = min(s, y0 + t), min(s, x0 + t)
        m[ys0:ys1, xs0:xs1] = shape_mask(part.shape, t)[ys0 - y0:ys1 - y0, xs0 - x0:xs1 - x0]
        m &= inside
    else:
        raise ValueError(f"unknown part kind {part.kind!r}")
    m = np.ascontiguousarray(m)
    m.setflags(write=False)
    return m


@lru_cache(maxsize=1024)
def texture_pattern(texture: str, s: int, axis: int) -> np.ndarray | None:
    """Boolean (s, s) pattern: True pixels take the shade colour; None for untextured looks."""
    y, x = np.mgrid[0:s, 0:s]
    period = max(4, round(s / 5))
    if texture == "striped":
        coord = (y, x, x + y)[axis]
        return (coord // (period // 2)) % 2 == 1
    if texture == "dotted":
        r = max(1.0, period / 4)
        return ((y % period) - period / 2 + 0.5) ** 2 + ((x % period) - period / 2 + 0.5) ** 2 <= r * r
    if texture == "checkered":
        q = max(2, period // 2)
        return ((y // q) + (x // q)) % 2 == 1
    return None


def shade(colour: np.ndarray) -> np.ndarray:
    """A darker version of a light colour, a lighter version of a dark one."""
    if colour.mean() > 110:
        return colour * 0.55
    return colour + (255 - colour) * 0.5


@lru_cache(maxsize=64)
def _toned(look_colour_name: str, tone: str) -> np.ndarray:
    """Float32 RGB of a named colour in a tone, before jitter (read-only)."""
    c = np.array(COLOURS[look_colour_name], dtype=np.float32)
    if tone == "light":
        c = c + (255 - c) * 0.5
    elif tone == "dark":
        c = c * 0.5
    c.setflags(write=False)
    return c


def look_colour(look_colour_name: str, tone: str, rng: np.random.Generator) -> np.ndarray:
    """RGB float colour of a named colour in a tone, with a small jitter that keeps its name."""
    jittered = _toned(look_colour_name, tone) + rng.normal(0, 8, size=3).astype(np.float32)
    return np.minimum(np.maximum(jittered, 0), 255)  # np.clip's Python wrapper costs more at 3 values


@lru_cache(maxsize=16)
def _interpolation(k: int, size: int) -> np.ndarray:
    """(size, k) float32 linear interpolation weights from k to size samples (read-only)."""
    pos = np.linspace(0, k - 1, size)
    lo = np.floor(pos).astype(int).clip(0, k - 2)
    w = (pos - lo)[:, None]
    interp = np.zeros((size, k), np.float32)
    interp[np.arange(size), lo] = 1 - w[:, 0]
    interp[np.arange(size), lo + 1] = w[:, 0]
    interp.setflags(write=False)
    return interp


def _bilinear(coarse: np.ndarray, size: int) -> np.ndarray:
    """Upsample (k, k, C) to channel-first (C, size, size) by separable linear interpolation."""
    interp = _interpolation(coarse.shape[0], size)
    rows = np.tensordot(interp, coarse, axes=(1, 0))  # (size, k, C)
    return np.ascontiguousarray(np.tensordot(rows, interp, axes=(1, 1)).transpose(1, 0, 2))


@lru_cache(maxsize=8)
def _coords(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 (s, s) row and column index grids."""
    y, x = np.mgrid[0:s, 0:s].astype(np.float32)
    return y, x


def noise_field(rng: np.random.Generator, s: int) -> np.ndarray:
    """(3, s, s) float32 zero-mean unit-variance noise (the random bytes are read pixel by pixel).

    Uniform noise from raw random bytes: an order of magnitude cheaper than Gaussian draws and
    visually equivalent at this scale.
    """
    raw = np.frombuffer(rng.bytes(s * s * 3), dtype=np.uint8).reshape(s, s, 3).transpose(2, 0, 1)
    return (raw.astype(np.float32, order="C") - 127.5) * np.float32(1 / 73.9)


@lru_cache(maxsize=128)
def _stripes(s: int, period: int, axis: int) -> np.ndarray:
    """(s, s) float32 +-1 stripes of ``period`` pixels along rows, columns or a diagonal (read-only)."""
    y, x = _coords(s)
    coord = (y, x, x + y, x - y + s)[axis]
    out = np.floor(coord / (period // 2)) % 2 * 2 - 1
    out.setflags(write=False)
    return out


@lru_cache(maxsize=256)
def _checks(s: int, q: int, oy: int, ox: int) -> np.ndarray:
    """(s, s) float64 +-1 checkerboard of q-pixel cells offset by (oy, ox) (read-only).

    float64 as before caching: the offsets were numpy int64 draws, which promote the float32 grids.
    """
    y, x = _coords(s)
    cells = np.floor((y + np.int64(oy)) / q) + np.floor((x + np.int64(ox)) / q)
    out = cells % 2 * 2 - 1
    out.setflags(write=False)
    return out


def render_background(scene: Scene, rng: np.random.Generator, noise: np.ndarray) -> np.ndarray:
    """(3, S, S) float32 textured background with clutter; objects are drawn over it.

    ``noise`` is the image's (3, S, S) unit-variance noise field, shared with the objects.
    """
    s = scene.size
    scale = s / 64
    y, x = _coords(s)
    kind = scene.background
    pattern: np.ndarray | None = None  # (S, S) float32 luminance offset
    if kind == "striped":
        period = max(4, round(float(rng.uniform(5, 11)) * scale))
        pattern = _stripes(s, period, int(rng.integers(4))) * np.float32(rng.uniform(22, 42))
    elif kind == "checkered":
        q = max(3, round(float(rng.uniform(4, 8)) * scale))
        oy, ox = rng.integers(0, q, size=2)
        pattern = _checks(s, q, int(oy), int(ox)) * np.float32(rng.uniform(20, 38))
    elif kind == "gradient":
        angle = float(rng.uniform(0, 2 * np.pi))
        ramp = (np.float32(np.cos(angle)) * x + np.float32(np.sin(angle)) * y) / s
        pattern = (ramp - ramp.mean()) * np.float32(rng.uniform(60, 110))
    img = noise * np.float32(26.0 if kind == "noisy" else 10.0)
    img += np.asarray(scene.background_colour, np.float32)[:, None, None]
    if pattern is not None:
        img += pattern
    elif kind == "blotchy":
        img += _bilinear(rng.normal(0, 48, size=(5, 5, 3)).astype(np.float32), s)
    _clutter(img, rng, scale)
    return img


_PALETTE = np.array(list(COLOURS.values()), np.float32)
_STEPS = np.linspace(0, 1, 24, dtype=np.float32)[None, :]


def _clutter(img: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    """Short thin strokes and small specks in random colours, smaller than any object."""
    s = img.shape[1]
    n = int(int(rng.integers(3, 9)) * scale * scale)
    colours = _PALETTE[rng.integers(len(_PALETTE), size=n)]
    starts = rng.uniform(0, s, size=(n, 2)).astype(np.float32)
    lengths = rng.uniform(4, 10, size=n).astype(np.float32) * np.float32(scale)
    angles = rng.uniform(0, np.pi, size=n).astype(np.float32)
    specks = rng.random(n) < 0.4
    steps = _STEPS
    # A speck is a stroke of length ~scale drawn twice as thick, which keeps everything vectorised.
    lengths[specks] = np.float32(scale)
    t = steps * lengths[:, None]
    ys = np.minimum((starts[:, :1] + t * np.sin(angles)[:, None]).astype(np.int32), s - 2)
    xs = np.minimum((starts[:, 1:] + t * np.cos(angles)[:, None]).astype(np.int32), s - 1)
    img[:, ys, xs] = colours.T[:, :, None]  # later strokes overwrite earlier ones, per channel
    thick = specks.nonzero()[0]
    img[:, ys[thick] + 1, xs[thick]] = colours[thick].T[:, :, None]


def _paint_object(img: np.ndarray, look: Look, box: tuple[int, int, int, int], noise: np.ndarray,
                  colour: np.ndarray) -> np.ndarray:
    """Paint one object's textured body into the (3, S, S) ``img``; returns its local boolean mask."""
    y0, x0, y1, x1 = box
    mask = shape_mask(look.shape, look.size)
    values = noise[:, y0:y1, x0:x1][:, mask] * np.float32(40.0 if look.texture == "speckled" else 7.0)
    values += colour[:, None]
    pattern = texture_pattern(look.texture, look.size, look.stripe_axis)
    if pattern is not None:
        values[:, pattern[mask]] += (shade(colour) - colour)[:, None]
    img[:, y0:y1, x0:x1][:, mask] = values
    return mask


def render(scene: Scene, rng: np.random.Generator) -> Rendering:
    """Draw ``scene``: the image and its part / object / group instance maps."""
    s = scene.size
    noise = noise_field(rng, s)
    img = render_background(scene, rng, noise)
    part_map = np.zeros((s, s), np.uint8)
    object_map = np.zeros((s, s), np.uint8)
    group_map = np.zeros((s, s), np.uint8)
    part_info: list[tuple[int, str]] = []
    object_group: list[int] = []
    for gi, group in enumerate(scene.groups, start=1):
        look = group.look
        colour = look_colour(look.colour, look.tone, rng)
        part_colour = look_colour(look.part.colour, "", rng) if look.part else None
        for box in group.boxes:
            y0, x0, y1, x1 = box
            mask = _paint_object(img, look, box, noise, colour)
            object_group.append(gi)
            oid = len(object_group)
            object_map[y0:y1, x0:x1][mask] = oid
            group_map[y0:y1, x0:x1][mask] = gi
            part_info.append((oid, "body"))
            part_map[y0:y1, x0:x1][mask] = len(part_info)
            if look.part is not None:
                pm = part_mask(look.shape, look.size, look.part)
                region = img[:, y0:y1, x0:x1]
                region[:, pm] = part_colour[:, None] + noise[:, y0:y1, x0:x1][:, pm] * 7.0
                part_info.append((oid, look.part.kind))
                part_map[y0:y1, x0:x1][pm] = len(part_info)
    image = np.clip(img, 0, 255, out=img).transpose(1, 2, 0).astype(np.uint8, order="C")
    return Rendering(image, part_map, object_map, group_map, part_info, object_group)
