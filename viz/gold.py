"""Scores of one sample's induced hierarchies against its gold (tree, masks), for display.

Thin wrappers over ``induction.spans`` / ``induction.tree_scoring`` (trees) and
``induction.group_metrics`` (groups) so the app and the notebook show exactly the numbers the
scoring commands would compute for that sample.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nltk
import numpy as np

from hiclip.data.trees import leaf_tags, normalize_token, parse_bracket_string
from hiclip.errors import HiCLIPError
from induction import group_metrics, image_groups, spans, tree_scoring


@dataclass(frozen=True)
class TreeScore:
    """Sentence-level bracket scores (percent) under a named convention."""

    convention: str
    precision: float | None
    recall: float | None
    f1: float | None
    n_pred: int
    n_gold: int
    n_match: int

    def as_dict(self) -> dict:
        return {"convention": self.convention, "precision": self.precision, "recall": self.recall,
                "f1": self.f1, "predicted spans": self.n_pred, "gold spans": self.n_gold,
                "matched": self.n_match}


def parse_gold(tree: str | nltk.Tree) -> nltk.Tree:
    """A gold tree from a bracket string (labelled or unlabelled) or an ``nltk.Tree``."""
    return tree if isinstance(tree, nltk.Tree) else parse_bracket_string(tree)


def tree_score(pred: nltk.Tree, gold: str | nltk.Tree, convention: str = "vgnsl") -> TreeScore:
    """Score ``pred`` against ``gold`` for one sentence (same words, compared case-insensitively).

    Punctuation decisions follow the gold tree's POS tags where it has them, as in
    ``hiclip score trees``. Raises ``HiCLIPError`` if the words differ.
    """
    gold_tree = parse_gold(gold)
    pred_words, gold_words = pred.leaves(), gold_tree.leaves()
    if [normalize_token(w) for w in pred_words] != [normalize_token(w) for w in gold_words]:
        raise HiCLIPError(
            f"the gold tree's words ({' '.join(gold_words)}) differ from the caption's "
            f"({' '.join(pred_words)})")
    conv = spans.get_convention(convention)
    keep = spans.keep_mask(gold_words, leaf_tags(gold_tree), conv)
    pred_spans = spans.tree_spans(pred, conv, keep=keep)
    gold_spans = spans.tree_spans(gold_tree, conv, keep=keep)
    s = tree_scoring.score_sentence(frozenset(pred_spans), frozenset(gold_spans),
                                    int(keep.sum()), conv)
    return TreeScore(conv.name, s.precision, s.recall, s.f1, s.n_pred, s.n_gold, s.n_match)


def group_scores(patch_labels: np.ndarray, mask: np.ndarray) -> group_metrics.GroupScores:
    """Scores of one layer's patch groups ``(H, W)`` against a pixel mask ``(height, width)``.

    As ``hiclip score groups`` does: the patch grid is mapped onto the centre square the model
    saw (``upsample_labels(..., centre_crop=True)``; pixels outside it take the nearest border
    patch) and scored against the whole mask.
    """
    mask = np.asarray(mask)
    pixels = image_groups.upsample_labels(np.asarray(patch_labels), mask.shape[:2], centre_crop=True)
    return group_metrics.score_segmentation(pixels, mask)


def group_scores_by_layer(groups: np.ndarray, mask: np.ndarray) -> list[group_metrics.GroupScores]:
    """:func:`group_scores` for each layer of ``groups`` ``(L, H, W)``."""
    return [group_scores(layer, mask) for layer in np.asarray(groups)]


def mask_levels(available: Sequence[str]) -> list[str]:
    """Mask levels in coarse-to-fine display order (known ones first, then the rest)."""
    order = ["scene", "group", "object", "part"]
    known = [level for level in order if level in available]
    return known + sorted(level for level in available if level not in order)
