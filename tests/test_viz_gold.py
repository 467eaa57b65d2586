"""One sample's scores (the app, the notebook, the sample figures): the corpus scorer's path."""
from __future__ import annotations

import nltk
import numpy as np
import pytest

from hiclip.errors import HiCLIPError
from induction.group_evaluation import evaluate_image
from induction.predictions import ImagePrediction
from induction.tree_evaluation import score_tree_pair
from viz import gold

GOLD = "(S (NP (DT a) (NN dog)) (VP (VBZ chases) (NP (DT the) (NN cat))) (. .))"


def test_tree_pair_scores_follow_the_convention():
    pred = nltk.Tree.fromstring("(S (X (X a dog) (X chases (X the cat))) .)")
    vgnsl = score_tree_pair(pred, GOLD, "vgnsl")
    # gold spans (vgnsl): (0,6) (0,2) (2,5) (3,5); predicted: (0,6) (0,5) (0,2) (2,5) (3,5)
    assert (vgnsl.n_gold, vgnsl.n_pred, vgnsl.n_match) == (4, 5, 4)
    assert vgnsl.recall == pytest.approx(100.0) and vgnsl.precision == pytest.approx(80.0)
    standard = score_tree_pair(pred, GOLD, "standard")
    # punctuation dropped by its gold tag, whole sentence (0,5) not counted: (0,2) (2,5) (3,5)
    assert standard.f1 == pytest.approx(100.0)
    assert score_tree_pair(nltk.Tree.fromstring("(S A Dog chases the cat .)"), GOLD, "vgnsl").recall == 25.0
    with pytest.raises(HiCLIPError, match="differ"):
        score_tree_pair(nltk.Tree.fromstring("(S a cat chases the dog .)"), GOLD)


def test_image_scores_on_a_wide_mask_use_the_centre_square():
    mask = np.zeros((4, 8), dtype=np.int32)
    mask[:, :4], mask[:, 4:] = 1, 2                 # left / right halves of a wide image
    groups = np.stack([np.zeros((2, 2), int), np.array([[0, 1], [0, 1]])])   # the model saw the centre
    evaluation = evaluate_image(ImagePrediction((2, 2), groups=groups), {"object": mask})
    top = evaluation.row("object", "model", 1)
    assert top.miou == pytest.approx(1.0) and top.ari == pytest.approx(1.0)
    assert [evaluation.row("object", "model", layer).n_segments for layer in (0, 1)] == [1, 2]
    assert evaluation.best_level == {"object": 1}
    assert gold.mask_levels(["part", "extra", "object", "group"]) == ["group", "object", "part", "extra"]
