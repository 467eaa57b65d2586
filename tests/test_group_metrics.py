"""Class-agnostic group metrics against hand-computed values and scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from hiclip.errors import HiCLIPError
from induction.group_metrics import (
    GroupScores,
    achievable_segmentation_accuracy,
    adjusted_rand_index,
    best_match_miou,
    boundary_map,
    boundary_recall,
    contingency,
    foreground_ari,
    mean_scores,
    score_segmentation,
    under_segmentation_error,
)

# 2 x 4 maps. gt: background (0) on the left half, object 1 top right, object 2 bottom right.
GT = np.array([[0, 0, 1, 1],
               [0, 0, 2, 2]])
# pred: segment 5 = left half + pixel (0,2); segment 6 = (0,3); segment 7 = bottom right.
PRED = np.array([[5, 5, 5, 6],
                 [5, 5, 7, 7]])


def test_contingency_table():
    table, gt_values = contingency(PRED, GT)
    np.testing.assert_array_equal(gt_values, [0, 1, 2])
    np.testing.assert_array_equal(table, [[4, 0, 0], [1, 1, 0], [0, 0, 2]])
    # labels far apart and negative go through the same table
    table2, _ = contingency(PRED * 10**9 - 7, GT)
    np.testing.assert_array_equal(table2, table)


def test_best_match_miou_hand_computed():
    # object 1 (2 px): IoU with 5 = 1/(2+5-1) = 1/6, with 6 = 1/2 -> 1/2; object 2: 1
    assert best_match_miou(PRED, GT) == pytest.approx((0.5 + 1.0) / 2)


def test_use_and_asa_hand_computed():
    # USE: rows bg [4,0,0], o1 [1,1,0], o2 [0,0,2]; |S| = 5, 1, 2
    # sum min(c, |S|-c): bg: min(4,1)=1; o1: min(1,4)=1 + min(1,0)=0; o2: 0 -> 2 / 8
    assert under_segmentation_error(PRED, GT) == pytest.approx(2 / 8)
    # ASA: column maxima 4 + 1 + 2 = 7 of 8
    assert achievable_segmentation_accuracy(PRED, GT) == pytest.approx(7 / 8)


def test_ari_hand_computed():
    # pair counts over 8 pixels (unordered): same-in-both = C(4,2)+C(2,2) = 7,
    # same gt: C(4,2)+1+1 = 8, same pred: C(5,2)+C(2,2) = 11, total C(8,2) = 28
    expected_index, mean = 7, 8 * 11 / 28
    expected = (expected_index - mean) / ((8 + 11) / 2 - mean)
    assert adjusted_rand_index(PRED, GT) == pytest.approx(expected)
    # foreground: pixels (0,2),(0,3),(1,2),(1,3) with gt 1,1,2,2 and pred 5,6,7,7
    # same-in-both 1, same gt 2, same pred 1, total 6
    fg_expected = (1 - 2 * 1 / 6) / ((2 + 1) / 2 - 2 * 1 / 6)
    assert foreground_ari(PRED, GT) == pytest.approx(fg_expected)


def test_boundary_map_and_recall_hand_made():
    gt = np.zeros((1, 8), dtype=int)
    gt[0, 4:] = 1
    np.testing.assert_array_equal(boundary_map(gt)[0], [0, 0, 0, 1, 1, 0, 0, 0])
    pred_near = np.zeros((1, 8), dtype=int)
    pred_near[0, 7:] = 1      # predicted edge pixels 6, 7: 2 px from gt pixel 4, 3 px from 3
    assert boundary_recall(pred_near, gt, tolerance=2) == pytest.approx(0.5)
    assert boundary_recall(pred_near, gt, tolerance=3) == pytest.approx(1.0)
    assert boundary_recall(gt, gt) == 1.0
    assert boundary_recall(np.zeros_like(gt), gt) == 0.0   # no predicted boundary at all
    assert math.isnan(boundary_recall(gt, np.zeros_like(gt)))  # gt has no boundary


@pytest.mark.parametrize("seed", range(6))
def test_ari_equals_sklearn_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    gt = rng.integers(0, int(rng.integers(1, 6)), size=shape)
    pred = rng.integers(0, int(rng.integers(1, 30)), size=shape)
    if seed % 2:  # blocky maps give ARIs far from 0
        pred = np.where(rng.random(shape) < 0.8, gt, pred)
    assert adjusted_rand_index(pred, gt) == pytest.approx(adjusted_rand_score(gt.ravel(), pred.ravel()))
    fg = gt > 0
    if fg.any():
        assert foreground_ari(pred, gt) == pytest.approx(adjusted_rand_score(gt[fg], pred[fg]))


def test_edge_cases_match_sklearn_conventions():
    one = np.zeros((3, 3), dtype=int)
    singletons = np.arange(9).reshape(3, 3)
    assert adjusted_rand_index(one, one) == 1.0
    assert adjusted_rand_index(singletons, singletons) == 1.0
    assert adjusted_rand_index(singletons, one) == adjusted_rand_score(one.ravel(), singletons.ravel()) == 0.0


def test_pred_equals_gt_is_perfect():
    gt = np.array([[0, 1, 1], [2, 2, 0], [3, 3, 3]])
    s = score_segmentation(gt + 10, gt)
    assert (s.miou, s.ari, s.fg_ari, s.boundary_recall, s.use, s.asa) == (1.0, 1.0, 1.0, 1.0, 0.0, 1.0)
    assert (s.n_segments, s.n_gt_segments) == (4, 3)


def test_all_background_and_single_segment():
    bg = np.zeros((4, 4), dtype=int)
    s = score_segmentation(np.arange(16).reshape(4, 4), bg)
    assert math.isnan(s.miou) and math.isnan(s.fg_ari) and math.isnan(s.boundary_recall)
    assert s.n_gt_segments == 0 and s.n_segments == 16
    assert s.asa == 1.0 and s.use == 0.0   # singletons never straddle a gt edge
    gt = np.zeros((4, 4), dtype=int)
    gt[1:3, 1:3] = 1
    single = score_segmentation(np.zeros((4, 4), dtype=int), gt)
    assert single.miou == pytest.approx(4 / 16)
    assert single.ari == 0.0 and single.fg_ari == 1.0   # fg ARI: one fg segment, one prediction
    assert single.asa == pytest.approx(12 / 16)
    assert single.use == pytest.approx((4 + 4) / 16)   # min(12, 4) + min(4, 12)
    assert single.boundary_recall == 0.0


def test_foreground_ari_rewards_over_segmentation_but_ari_does_not():
    gt = np.zeros((8, 8), dtype=int)
    gt[2:6, 2:6] = 1
    pred = gt.copy()
    pred[gt == 0] = np.arange(2, 50)  # shatter the background into singletons
    s = score_segmentation(pred, gt)
    assert s.fg_ari == 1.0 and s.ari < 0.2 and s.n_segments == 49


def test_score_segmentation_agrees_with_single_metrics_and_mean_skips_nan():
    rng = np.random.default_rng(7)
    gt = rng.integers(0, 4, size=(12, 10))
    pred = rng.integers(0, 6, size=(12, 10))
    s = score_segmentation(pred, gt)
    assert s.miou == best_match_miou(pred, gt)
    assert s.ari == adjusted_rand_index(pred, gt)
    assert s.use == under_segmentation_error(pred, gt)
    a = GroupScores(0.5, 0.2, float("nan"), 1.0, 0.1, 0.9, 4, 2)
    b = GroupScores(1.0, 0.4, 0.6, 0.0, 0.3, 0.7, 6, 0)
    m = mean_scores([a, b])
    assert m["miou"] == 0.75 and m["fg_ari"] == 0.6 and m["n_segments"] == 5 and m["n_images"] == 2
    assert set(s.as_dict()) == set(m) - {"n_images"}


def test_mismatched_or_bad_inputs_are_user_errors():
    with pytest.raises(HiCLIPError, match="differ in shape"):
        score_segmentation(np.zeros((2, 2), dtype=int), np.zeros((2, 3), dtype=int))
    with pytest.raises(HiCLIPError, match="integer"):
        score_segmentation(np.zeros((2, 2)), np.zeros((2, 2), dtype=int))
