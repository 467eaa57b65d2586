"""Image-only segmentation baselines at a matched number of segments (method.md 6).

Every baseline takes an image and a target number of segments ``k`` and returns a label map
with about ``k`` segments, searching its own parameter so that group scores compare methods at
the same granularity (ASA and boundary recall rise with the number of segments, so an unmatched
comparison says little):

``grid``
    A regular grid of ``r x c`` cells, ``r * c`` as close to ``k`` as possible and cells as
    square as possible. Exact whenever ``k`` factors well.
``slic``
    ``skimage.segmentation.slic`` (Achanta et al. 2012), compactness 10; its ``n_segments``
    argument is adjusted (multiplicatively, up to 8 tries) until the result has ``k`` segments,
    keeping the closest.
``felzenszwalb``
    ``skimage.segmentation.felzenszwalb`` (Felzenszwalb & Huttenlocher 2004), sigma 0.8,
    ``min_size = max(1, area // (4 k))``; ``scale`` found by bisection on a log scale
    (the count falls as ``scale`` grows), keeping the closest.
``rag``
    Region-adjacency-graph merging: a SLIC over-segmentation (about ``4 k`` superpixels), then
    ``skimage.graph.rag_mean_color`` and ``skimage.graph.cut_threshold``, which merges every
    pair of adjacent regions whose mean colours are closer than a threshold. The threshold is
    chosen among the graph's edge weights so the cut leaves the count closest to ``k``.

All return labels ``0 .. m-1`` in raster order; none is random (SLIC and Felzenszwalb are
deterministic), so no seed is needed. "About k": the data-driven methods cannot always hit
``k`` exactly (connectivity enforcement, ties), so report the achieved number of segments.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hiclip.errors import HiCLIPError
from induction.image_groups import relabel_raster, upsample_labels

__all__ = [
    "BASELINES",
    "baseline_segments",
    "felzenszwalb_segments",
    "grid_segments",
    "rag_segments",
    "slic_segments",
]


def _as_float_rgb(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) float64 image in [0, 1] from uint8/float RGB, RGBA or greyscale input."""
    from skimage.util import img_as_float

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
        raise HiCLIPError(f"an image must be (H, W, 3) or (H, W); got shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype == np.uint8 or np.issubdtype(image.dtype, np.floating):
        return img_as_float(image).astype(np.float64, copy=False)
    raise HiCLIPError(f"an image must be uint8 or float in [0, 1]; got {image.dtype}")


def _count(labels: np.ndarray) -> int:
    return int(np.unique(labels).size)


def grid_segments(image: np.ndarray, n_segments: int) -> np.ndarray:
    """A regular grid of about ``n_segments`` cells, as square as possible.

    Chooses ``r`` rows and ``c`` columns (``r <= height``, ``c <= width``) minimising
    ``|r c - k|``, then ``|log(cell aspect ratio)|``. Row ``y`` is in cell row
    ``floor(y r / height)``.

    Parameters
    ----------
    image : ndarray, shape (height, width, ...)
        Only its size is used.
    n_segments : int

    Returns
    -------
    ndarray of int64, shape (height, width)
    """
    height, width = np.asarray(image).shape[:2]
    k = int(max(1, min(n_segments, height * width)))
    best: tuple[float, float, int, int] | None = None
    for rows in range(1, min(k, height) + 1):
        for cols in {max(1, k // rows), min(width, -(-k // rows))}:
            cols = min(cols, width)
            aspect = abs(math.log((height / rows) / (width / cols)))
            key = (abs(rows * cols - k), aspect, rows, cols)
            if best is None or key < best:
                best = key
    assert best is not None
    rows, cols = best[2], best[3]
    cell_row = (np.arange(height) * rows) // height
    cell_col = (np.arange(width) * cols) // width
    return (cell_row[:, None] * cols + cell_col[None, :]).astype(np.int64)


def slic_segments(
    image: np.ndarray,
    n_segments: int,
    compactness: float = 10.0,
    max_tries: int = 8,
    tolerance: float = 0.02,
) -> np.ndarray:
    """SLIC superpixels with ``n_segments`` adjusted until the result has about ``k``.

    Parameters
    ----------
    image : ndarray, shape (height, width, 3)
        uint8 or float in ``[0, 1]``.
    n_segments : int
        Target number ``k`` of segments.
    compactness : float
    max_tries : int
        Number of SLIC runs at most.
    tolerance : float
        Stop as soon as the count is within ``floor(tolerance * k)`` of ``k`` (exact below 50).

    Returns
    -------
    ndarray of int64, shape (height, width)
    """
    from skimage.segmentation import slic

    rgb = _as_float_rgb(image)
    k = int(max(1, min(n_segments, rgb.shape[0] * rgb.shape[1])))
    area = rgb.shape[0] * rgb.shape[1]
    best, best_err = None, None
    tried: set[int] = set()
    low, high = 1, area  # requests known to give too few / too many segments
    request = float(k)
    for _ in range(max_tries):
        asked = int(np.clip(round(request), low, high))
        if asked in tried:
            break
        tried.add(asked)
        labels = slic(rgb, n_segments=asked, compactness=compactness, start_label=0,
                      channel_axis=-1)
        got = _count(labels)
        if best_err is None or abs(got - k) < best_err:
            best, best_err = labels, abs(got - k)
        if abs(got - k) <= int(tolerance * k):
            break
        if got < k:
            low = max(low, asked + 1)
        else:
            high = min(high, asked - 1)
        if low > high:
            break
        # proportional step, damped to at most x4, kept inside the bracket
        request = asked * float(np.clip(k / max(got, 1), 0.25, 4.0))
        if not low <= request <= high:
            request = math.sqrt(low * high)
    assert best is not None
    return relabel_raster(best)


def felzenszwalb_segments(
    image: np.ndarray,
    n_segments: int,
    sigma: float = 0.8,
    max_tries: int = 14,
    tolerance: float = 0.02,
) -> np.ndarray:
    """Felzenszwalb-Huttenlocher segments with ``scale`` bisected to reach about ``k``.

    Parameters
    ----------
    image : ndarray, shape (height, width, 3)
    n_segments : int
        Target number ``k`` of segments.
    sigma : float
        Gaussian pre-smoothing.
    max_tries : int
        Bisection steps on ``log(scale)`` over ``[1e-3, 1e5]``.
    tolerance : float
        Stop as soon as the count is within ``floor(tolerance * k)`` of ``k`` (exact below 50).

    Returns
    -------
    ndarray of int64, shape (height, width)
    """
    from skimage.segmentation import felzenszwalb

    rgb = _as_float_rgb(image)
    area = rgb.shape[0] * rgb.shape[1]
    k = int(max(1, min(n_segments, area)))
    min_size = max(1, area // (4 * k))
    lo, hi = math.log(1e-3), math.log(1e5)
    best, best_err = None, None
    for _ in range(max_tries):
        mid = 0.5 * (lo + hi)
        labels = felzenszwalb(rgb, scale=math.exp(mid), sigma=sigma, min_size=min_size,
                              channel_axis=-1)
        got = _count(labels)
        if best_err is None or abs(got - k) < best_err:
            best, best_err = labels, abs(got - k)
        if abs(got - k) <= int(tolerance * k):
            break
        if got > k:  # too many segments: larger scale
            lo = mid
        else:
            hi = mid
    assert best is not None
    return relabel_raster(best)


def rag_segments(
    image: np.ndarray, n_segments: int, oversegment: int = 4, compactness: float = 10.0
) -> np.ndarray:
    """Merge a SLIC over-segmentation on its mean-colour RAG down to about ``k`` regions.

    Parameters
    ----------
    image : ndarray, shape (height, width, 3)
    n_segments : int
        Target number ``k`` of segments.
    oversegment : int
        The SLIC start has about ``oversegment * k`` superpixels.
    compactness : float
        SLIC compactness of the start.

    Returns
    -------
    ndarray of int64, shape (height, width)
        If the start already has ``<= k`` regions, it is returned unmerged.
    """
    from skimage import graph

    rgb = _as_float_rgb(image)
    k = int(max(1, min(n_segments, rgb.shape[0] * rgb.shape[1])))
    start = slic_segments(rgb, oversegment * k, compactness=compactness, max_tries=2)
    n_start = _count(start)
    if n_start <= k:
        return start
    rag = graph.rag_mean_color(rgb, start)
    edges = np.array([(a, b, d["weight"]) for a, b, d in rag.edges(data=True)], dtype=np.float64)
    if edges.size == 0:
        return start
    weights = np.unique(edges[:, 2])

    def count_after(thresh: float) -> int:  # cut_threshold joins edges with weight < thresh
        keep = edges[edges[:, 2] < thresh]
        adjacency = coo_matrix(
            (np.ones(len(keep)), (keep[:, 0].astype(int), keep[:, 1].astype(int))),
            shape=(n_start, n_start),
        )
        return int(connected_components(adjacency, directed=False)[0])

    # candidate thresholds: just above each edge weight (merge up to and including it)
    candidates = np.concatenate([[weights[0]], np.nextafter(weights, np.inf)])
    lo, hi = 0, candidates.size - 1  # count_after is non-increasing along candidates
    while lo < hi:
        mid = (lo + hi) // 2
        if count_after(candidates[mid]) > k:
            lo = mid + 1
        else:
            hi = mid
    options = [i for i in (lo - 1, lo) if 0 <= i < candidates.size]
    chosen = min(options, key=lambda i: (abs(count_after(candidates[i]) - k), -i))
    merged = graph.cut_threshold(start, rag, float(candidates[chosen]), in_place=False)
    return relabel_raster(merged)


BASELINES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "grid": grid_segments,
    "slic": slic_segments,
    "felzenszwalb": felzenszwalb_segments,
    "rag": rag_segments,
}
"""Baseline name -> ``f(image, n_segments) -> labels``."""


def baseline_segments(
    image: np.ndarray, method: str, n_segments: int, max_side: int | None = None
) -> np.ndarray:
    """Segment ``image`` into about ``n_segments`` regions with a named baseline.

    Parameters
    ----------
    image : ndarray, shape (height, width, 3) or (height, width)
        uint8, or float in ``[0, 1]``.
    method : {"grid", "slic", "felzenszwalb", "rag"}
    n_segments : int
        Target number of segments, ``>= 1`` (clipped to the number of pixels).
    max_side : int, optional
        When the image's longer side exceeds it, segment a copy resized (anti-aliased) so the
        longer side is ``max_side``, then map the labels back by nearest upsampling. The
        searches run several segmentations, which at COCO size (640 x 480) take seconds each.

    Returns
    -------
    labels : ndarray of int64, shape (height, width)
        Labels ``0 .. m-1`` in raster order; ``m`` is as close to ``n_segments`` as the
        method's search reached.
    """
    if method not in BASELINES:
        raise HiCLIPError(f"unknown baseline {method!r}; choose from {', '.join(BASELINES)}")
    if int(n_segments) < 1:
        raise HiCLIPError(f"the number of segments must be >= 1; got {n_segments}")
    image = np.asarray(image)
    height, width = image.shape[:2]
    if max_side is None or max(height, width) <= max_side or method == "grid":
        return BASELINES[method](image, int(n_segments))
    from skimage.transform import resize

    scale = max_side / max(height, width)
    small_size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = resize(_as_float_rgb(image), small_size + (3,), order=1, anti_aliasing=True)
    labels = BASELINES[method](small, int(n_segments))
    return relabel_raster(upsample_labels(labels, (height, width)))
