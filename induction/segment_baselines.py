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
from typing import Callable, Literal

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


def _rgb_and_target(image: np.ndarray, n_segments: int) -> tuple[np.ndarray, int]:
    """The (H, W, 3) float image and ``n_segments`` clipped to ``[1, H * W]``."""
    rgb = _as_float_rgb(image)
    return rgb, int(max(1, min(n_segments, rgb.shape[0] * rgb.shape[1])))


def _count(labels: np.ndarray) -> int:
    return int(np.unique(labels).size)


def _search_for_count(
    segment: Callable[[float], np.ndarray],
    k: int,
    *,
    kind: Literal["integer", "log"],
    bounds: tuple[float, float],
    increasing: bool,
    max_tries: int,
    tolerance: float,
) -> np.ndarray:
    """Search a scalar parameter until ``segment(parameter)`` has about ``k`` segments.

    The segment count is taken to be monotone in the parameter: it grows with it when
    ``increasing``, else it falls. A bracket, initially ``bounds``, shrinks after each run
    towards the side that brings the count to ``k``. ``kind`` sets the tries:

    ``"integer"``
        Integer parameters in ``bounds`` (inclusive), for a count roughly proportional to the
        parameter (``increasing``) or to its inverse. The first try is ``k``; each next is the
        last scaled by ``k / count`` (``count / k`` when not ``increasing``), the factor clipped
        to ``[1/4, 4]``, or the geometric mean of the bracket when that falls outside it; both
        rounded and clipped into the bracket. A tried parameter leaves the bracket.
    ``"log"``
        Bisection on ``log(parameter)`` over ``bounds`` (both ``> 0``): each try is the
        bracket's geometric midpoint, which becomes the bracket's new lower or upper end.

    The search stops after ``max_tries`` runs, as soon as ``|count - k| <= floor(tolerance *
    k)``, when the bracket is empty, or when a try would repeat an earlier one.

    Parameters
    ----------
    segment : callable
        ``segment(parameter) -> labels``, labels an int array of shape (height, width); called
        with an ``int`` for ``"integer"``, a ``float`` for ``"log"``.
    k : int
        Target number of segments, ``>= 1``.
    kind : {"integer", "log"}
    bounds : tuple of float
        ``(lowest, highest)`` parameter.
    increasing : bool
        Whether the count grows with the parameter.
    max_tries : int
        Number of ``segment`` calls at most, ``>= 1``.
    tolerance : float

    Returns
    -------
    ndarray, shape (height, width)
        The labels of the run whose count is closest to ``k`` (the earliest among ties), as
        ``segment`` returned them.
    """
    integer = kind == "integer"
    if integer:
        low, high = bounds
        step = 1  # a tried integer leaves the bracket; a log midpoint becomes its new end
    else:
        low, high = math.log(bounds[0]), math.log(bounds[1])
        step = 0
    best, best_err = None, None
    tried: set[float] = set()
    request = float(k)
    for _ in range(max_tries):
        point = int(np.clip(round(request), low, high)) if integer else 0.5 * (low + high)
        if point in tried:
            break
        tried.add(point)
        labels = segment(point if integer else math.exp(point))
        got = _count(labels)
        if best_err is None or abs(got - k) < best_err:
            best, best_err = labels, abs(got - k)
        if abs(got - k) <= int(tolerance * k):
            break
        if (got < k) == increasing:  # the target lies above the point
            low = max(low, point + step)
        else:
            high = min(high, point - step)
        if low > high:
            break
        if integer:
            # proportional step, damped to at most x4, kept inside the bracket
            ratio = k / max(got, 1) if increasing else got / k
            request = point * float(np.clip(ratio, 0.25, 4.0))
            if not low <= request <= high:
                request = math.sqrt(low * high)
    assert best is not None
    return best


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
        The SLIC run whose count came closest to ``k`` (the earliest among ties), relabelled
        ``0 .. m-1`` in raster order.
    """
    from skimage.segmentation import slic

    rgb, k = _rgb_and_target(image, n_segments)

    def segment(asked: float) -> np.ndarray:
        return slic(rgb, n_segments=int(asked), compactness=compactness, start_label=0,
                    channel_axis=-1)

    bounds = (1, rgb.shape[0] * rgb.shape[1])  # n_segments from 1 to one per pixel
    best = _search_for_count(segment, k, kind="integer", bounds=bounds, increasing=True,
                             max_tries=max_tries, tolerance=tolerance)
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
        The Felzenszwalb run whose count came closest to ``k`` (the earliest among ties),
        relabelled ``0 .. m-1`` in raster order.
    """
    from skimage.segmentation import felzenszwalb

    rgb, k = _rgb_and_target(image, n_segments)
    min_size = max(1, rgb.shape[0] * rgb.shape[1] // (4 * k))

    def segment(scale: float) -> np.ndarray:
        return felzenszwalb(rgb, scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1)

    best = _search_for_count(segment, k, kind="log", bounds=(1e-3, 1e5), increasing=False,
                             max_tries=max_tries, tolerance=tolerance)
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

    rgb, k = _rgb_and_target(image, n_segments)
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
