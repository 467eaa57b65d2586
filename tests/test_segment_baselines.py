"""Baselines reach about the requested number of segments and follow image structure."""
from __future__ import annotations

import numpy as np
import pytest

from hiclip.errors import HiCLIPError
from induction.group_metrics import score_segmentation
from induction.segment_baselines import BASELINES, baseline_segments, grid_segments


def blocks_image(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Four flat colour quadrants plus a little noise, and their gt labels 1..4."""
    rng = np.random.default_rng(0)
    half = size // 2
    gt = np.ones((size, size), dtype=int)
    gt[:half, half:] = 2
    gt[half:, :half] = 3
    gt[half:, half:] = 4
    colours = np.array([[0, 0, 0], [0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.9], [0.9, 0.9, 0.2]])
    image = np.clip(colours[gt] + rng.normal(0, 0.02, (size, size, 3)), 0, 1)
    return image, gt


@pytest.mark.parametrize(("k", "rows", "cols"), [(1, 1, 1), (4, 2, 2), (6, 2, 3), (16, 4, 4), (12, 3, 4)])
def test_grid_cells_count_and_shape(k, rows, cols):
    labels = grid_segments(np.zeros((24, 36)), k)
    assert labels.max() + 1 == k
    # cells are rectangular blocks: rows x cols layout
    assert len(np.unique(labels[:, 0])) == rows and len(np.unique(labels[0, :])) == cols


def test_grid_prefers_square_cells_for_wide_images():
    labels = grid_segments(np.zeros((20, 80)), 4)   # 1 x 4 cells are 20 x 20: square
    assert labels[0].tolist().count(0) == 20 and len(np.unique(labels[:, 0])) == 1


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_each_baseline_reaches_k_on_quadrants(method):
    image, gt = blocks_image()
    labels = baseline_segments(image, method, 4)
    assert labels.shape == gt.shape and labels.dtype == np.int64
    n = labels.max() + 1
    assert np.unique(labels).size == n            # labels 0..n-1
    assert abs(n - 4) <= 1
    # quadrants are exactly what every method should find at k = 4
    assert score_segmentation(labels, gt).miou > 0.85


@pytest.mark.parametrize("method", ["slic", "felzenszwalb", "rag"])
def test_data_driven_baselines_track_k_on_uint8_image(method):
    rng = np.random.default_rng(1)
    image = (rng.random((6, 6, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    for k in (3, 10):
        n = baseline_segments(image, method, k).max() + 1
        assert abs(n - k) <= max(2, k // 4), (method, k, n)


def test_greyscale_input_and_unknown_method():
    image, _ = blocks_image(16)
    assert baseline_segments(image.mean(axis=2), "slic", 2).shape == (16, 16)
    with pytest.raises(HiCLIPError, match="unknown baseline"):
        baseline_segments(image, "watershed", 4)
    with pytest.raises(HiCLIPError, match=">= 1"):
        baseline_segments(image, "grid", 0)
    with pytest.raises(HiCLIPError, match="image"):
        baseline_segments(np.zeros((4, 4, 2)), "slic", 2)


def test_max_side_segments_a_smaller_copy_at_full_size():
    image, gt = blocks_image(96)
    labels = baseline_segments(image, "felzenszwalb", 4, max_side=32)
    assert labels.shape == (96, 96) and abs(labels.max() + 1 - 4) <= 1
    assert score_segmentation(labels, gt).miou > 0.85
    # at or under the limit nothing changes
    np.testing.assert_array_equal(baseline_segments(image, "slic", 4, max_side=96),
                                  baseline_segments(image, "slic", 4))
