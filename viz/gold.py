"""Gold trees and mask levels as the pictures, the app and the notebook need them.

Scores of one sample are not computed here: they come from the scoring library, by the path a
whole corpus takes (``induction.tree_evaluation.score_tree_pair`` for a tree,
``induction.group_evaluation.evaluate_image`` for an image's groups), so the app shows exactly
the numbers ``hiclip score`` computes for that sample.
"""
from __future__ import annotations

from collections.abc import Sequence

import nltk

from hiclip.data.trees import parse_bracket_string


def parse_gold(tree: str | nltk.Tree) -> nltk.Tree:
    """A gold tree from a bracket string (labelled or unlabelled) or an ``nltk.Tree``."""
    return tree if isinstance(tree, nltk.Tree) else parse_bracket_string(tree)


def mask_levels(available: Sequence[str]) -> list[str]:
    """Mask levels in coarse-to-fine display order (known ones first, then the rest)."""
    order = ["scene", "group", "object", "part"]
    known = [level for level in order if level in available]
    return known + sorted(level for level in available if level not in order)
