"""viz.gold: the per-sample scores the app and the notebook show."""
from __future__ import annotations

import nltk
import numpy as np
import pytest

from hiclip.errors import HiCLIPError
from viz import gold

GOLD = "(S (NP (DT a) (NN dog)) (VP (VBZ chases) (NP (DT the) (NN cat))) (. .))"


def test_tree_score_conventions():
    pred = nltk.Tree.fromstring("(S (X (X a dog) (X chases (X the cat))) .)")
    vgnsl = gold.tree_score(pred, GOLD, "vgnsl")
    # gold spans (vgnsl): (0,6) (0,2) (2,5) (3,5); predicted: (0,6) (0,5) (0,2) (2,5) (3,5)
    assert (vgnsl.n_gold, vgnsl.n_pred, vgnsl.n_match) == (4, 5, 4)
    assert vgnsl.recall == pytest.approx(100.0) and vgnsl.precision == pytest.approx(80.0)
    standard = gold.tree_score(pred, GOLD, "standard")
    # punctuation dropped by its gold tag, whole sentence (0,5) not counted: (0,2) (2,5) (3,5)
    assert standard.convention == "standard" and standard.f1 == pytest.approx(100.0)
    assert gold.tree_score(nltk.Tree.fromstring("(S A Dog chases the cat .)"), GOLD).recall == 25.0
    with pytest.raises(HiCLIPError, match="differ"):
        gold.tree_score(nltk.Tree.fromstring("(S a cat chases the dog .)"), GOLD)


def test_group_scores_on_a_wide_mask_use_the_centre_square():
    mask = np.zeros((4, 8), dtype=np.int32)
    mask[:, :4], mask[:, 4:] = 1, 2                 # left / right halves of a wide image
    groups = np.array([[0, 1], [0, 1]])              # the model saw the centre 4x4 square
    scores = gold.group_scores(groups, mask)
    assert scores.miou == pytest.approx(1.0) and scores.ari == pytest.approx(1.0)
    by_layer = gold.group_scores_by_layer(np.stack([np.zeros((2, 2), int), groups]), mask)
    assert [s.n_segments for s in by_layer] == [1, 2]
    assert gold.mask_levels(["part", "extra", "object", "group"]) == ["group", "object", "part", "extra"]
