"""Trees from link affinities (induction.text_trees) on hand-made link arrays."""
from __future__ import annotations

import time

import numpy as np
import pytest

from hiclip.data.trees import TreeRecord, parse_bracket_string, tokens_match
from hiclip.errors import HiCLIPError
from induction.text_trees import (
    absolute_thresholds,
    induce_trees,
    lowest_link_parse,
    quantile_thresholds,
    tree_transformer_parse,
)
from induction.tree_scoring import score_trees


def accumulate(step_links: np.ndarray) -> np.ndarray:
    """Per-layer links a~ -> constrained links a^l = a^{l-1} + (1 - a^{l-1}) a~^l (method.md 1)."""
    out = np.zeros_like(step_links)
    prev = np.zeros(step_links.shape[1])
    for layer, a in enumerate(step_links):
        prev = prev + (1 - prev) * a
        out[layer] = prev
    return out


def test_two_level_structure_recovered_exactly():
    words = "a man rides the old horse".split()
    # gaps: a-man, man-rides, rides-the, the-old, old-horse
    # top layer splits subject | predicate; "rides the old horse" has all links > 0.7, so it is
    # parsed one layer lower, where "rides" | "the old horse" splits, then "the" | "old horse"
    links = np.array([
        [0.20, 0.05, 0.10, 0.20, 0.30],
        [0.60, 0.10, 0.40, 0.60, 0.80],
        [0.90, 0.30, 0.75, 0.90, 0.97],
        [0.99, 0.40, 0.95, 0.97, 0.99],
    ])
    result = tree_transformer_parse(links, words, min_layer=0)
    assert result.bracket == "(S (X a man) (X rides (X the (X old horse))))"
    assert result.spans == frozenset({(0, 6), (0, 2), (2, 6), (3, 6), (4, 6)})
    assert result.tree.leaves() == words
    assert result.algorithm == {"name": "tree_transformer", "start_layer": 3, "min_layer": 0,
                                "layer_index": "0-based", "thresholds": "absolute",
                                "break_threshold": 0.8, "descend_threshold": 0.7}


def test_groups_within_groups():
    words = list("abcdef")
    # top: weakest d-e splits (a b c d) | (e f); left side's links all > 0.7 -> one layer lower,
    # where b-c is weak: (a b) (c d)
    links = np.array([[0.95, 0.50, 0.95, 0.30, 0.95],
                      [0.99, 0.75, 0.99, 0.40, 0.99]])
    result = tree_transformer_parse(links, words, min_layer=0)
    assert result.bracket == "(S (X (X a b) (X c d)) (X e f))"


def test_strong_span_goes_down_a_layer_or_stays_flat_at_the_minimum():
    links = np.array([[0.50, 0.20], [0.90, 0.85]])
    # top: weakest 0.85 > 0.8 -> layer 0, where b-c (0.2) is weakest
    assert tree_transformer_parse(links, list("abc"), min_layer=0).bracket == "(S (X a b) c)"
    # with the minimum at the top layer the span is emitted flat
    flat = tree_transformer_parse(links, list("abc"), min_layer=1)
    assert flat.bracket == "(S a b c)" and flat.spans == frozenset({(0, 3)})
    # a higher break threshold splits at the top layer already
    assert tree_transformer_parse(links, list("abc"), min_layer=1, break_threshold=0.9).bracket == "(S (X a b) c)"


def test_descend_threshold_decides_the_layer_of_each_side():
    links = np.array([[0.10, 0.60, 0.20],
                      [0.30, 0.65, 0.75]])
    # top splits after word 0; side "1 2 3" has min link 0.65 <= 0.7: parsed at the same layer,
    # where 1-2 (0.65) is weakest
    assert tree_transformer_parse(links, min_layer=0).bracket == "(S 0 (X 1 (X 2 3)))"
    # with descend threshold 0.6 the side goes one layer lower, where 2-3 (0.2) is weakest
    assert tree_transformer_parse(links, min_layer=0, descend_threshold=0.6).bracket == "(S 0 (X (X 1 2) 3))"


def test_start_and_min_layer_handling():
    links = accumulate(np.full((3, 3), 0.3))
    # default start = top layer (2), default min layer 2 -> at most the top layer is used
    result = tree_transformer_parse(links)
    assert result.algorithm["start_layer"] == 2 and result.algorithm["min_layer"] == 2
    # a 2-layer model: the default minimum layer 2 is clamped to the top layer (1)
    two = tree_transformer_parse(links[:2])
    assert two.algorithm["min_layer"] == 1
    with pytest.raises(HiCLIPError, match="start layer 5 outside"):
        tree_transformer_parse(links, start_layer=5)


def test_quantile_thresholds_per_layer():
    rng = np.random.default_rng(0)
    corpus = [accumulate(rng.uniform(0.05, 0.6, size=(4, n - 1))) for n in (3, 6, 9, 12)]
    th = quantile_thresholds(corpus, 0.5, 0.3)
    pooled = np.concatenate(corpus, axis=1)
    assert np.allclose(th.split, np.quantile(pooled, 0.5, axis=1))
    assert np.allclose(th.descend, np.quantile(pooled, 0.3, axis=1))
    assert np.all(np.diff(th.split) >= 0)  # links saturate with depth, so do the thresholds
    assert th.params["thresholds"] == "quantile" and len(th.params["break_threshold_per_layer"]) == 4
    trees = induce_trees(corpus, quantiles=(0.5, 0.3))
    assert [t.bracket for t in trees] == [tree_transformer_parse(c, thresholds=th).bracket for c in corpus]
    per_sentence = induce_trees(corpus, quantiles=(0.5, 0.3), quantile_scope="sentence")
    assert per_sentence[0].algorithm["scope"] == "sentence"
    with pytest.raises(HiCLIPError, match="quantile must be in"):
        quantile_thresholds(corpus, 1.5, 0.3)


def test_quantile_thresholds_still_split_saturated_links():
    # every link is above 0.8 at every layer: absolute thresholds give one flat span at the
    # minimum layer; the per-layer median still finds the weak gap
    links = np.array([[0.90, 0.81, 0.90, 0.95], [0.97, 0.85, 0.96, 0.99]])
    assert tree_transformer_parse(links, min_layer=0).bracket == "(S 0 1 2 3 4)"
    th = quantile_thresholds([links], 0.5, 0.5, scope="sentence")
    assert tree_transformer_parse(links, min_layer=0, thresholds=th).bracket == "(S (X 0 1) (X 2 (X 3 4)))"


def test_binary_lowest_summed_link():
    links = np.array([[0.10, 0.50], [0.90, 0.60]])  # sums 1.0, 1.1: the first gap merges last
    result = lowest_link_parse(links, list("abc"))
    assert result.bracket == "(S a (X b c))" and result.algorithm["name"] == "binary"
    # the top layer alone would have split at the second gap
    assert tree_transformer_parse(links, list("abc"), min_layer=0).bracket == "(S (X a b) c)"
    ties = lowest_link_parse(np.full((2, 3), 0.5), list("abcd"))
    assert ties.bracket == "(S a (X b (X c d)))"  # ties go to the leftmost gap


def test_single_word_and_escaping():
    one = tree_transformer_parse(np.zeros((3, 0)), ["dog"])
    assert one.bracket == "(S dog)" and one.spans == frozenset() and one.tree.leaves() == ["dog"]
    assert lowest_link_parse(np.zeros((2, 0)), ["dog"]).bracket == "(S dog)"
    words = ["a", "(", "b", ")"]
    result = lowest_link_parse(np.array([[0.9, 0.2, 0.9]]), words)
    assert result.bracket == "(S (X a -LRB-) (X b -RRB-))"
    assert tokens_match(parse_bracket_string(result.bracket).leaves(), words)


@pytest.mark.parametrize("links, tokens, message", [
    (np.ones(3), None, "shape"),
    (np.ones((2, 2)), ["a", "b"], "2 tokens but links for 3 words"),
    (np.array([[0.5, 1.5]]), None, "in \\(0, 1\\]"),
    (np.array([[0.5, np.nan]]), None, "finite"),
])
def test_bad_links(links, tokens, message):
    with pytest.raises(HiCLIPError, match=message):
        tree_transformer_parse(links, tokens)


def test_absolute_thresholds_record():
    th = absolute_thresholds(3, 0.75, 0.6)
    assert th.split.tolist() == [0.75] * 3 and th.params["descend_threshold"] == 0.6


def test_induced_trees_score_against_gold():
    words = "the dog chased a cat".split()
    links = np.array([[0.9, 0.1, 0.3, 0.9], [0.95, 0.2, 0.85, 0.97]])
    induced = tree_transformer_parse(links, words, min_layer=0)
    assert induced.bracket == "(S (X the dog) (X chased (X a cat)))"
    pred = TreeRecord(parse_bracket_string(induced.bracket), words, "pred.jsonl", 1)
    gold_tree = parse_bracket_string("(S (NP (DT the) (NN dog)) (VP (VBD chased) (NP (DT a) (NN cat))))")
    gold = TreeRecord(gold_tree, gold_tree.leaves(), "gold.txt", 1, tags=["DT", "NN", "VBD", "DT", "NN"])
    assert score_trees([pred], [gold], "standard").sentence_f1 == 100.0


def test_parses_are_nested_trees_on_random_links():
    """Properties every Tree-Transformer parse has: leaves in order, nested spans, whole span."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(2, 20))
        links = accumulate(rng.uniform(0.05, 0.7, size=(6, n - 1)))
        result = tree_transformer_parse(links)
        assert result.tree.leaves() == [str(i) for i in range(n)]
        assert (0, n) in result.spans
        spans = sorted(result.spans)
        for a, b in spans:
            for c, d in spans:
                assert b <= c or d <= a or (a <= c and d <= b) or (c <= a and b <= d)


def test_five_thousand_captions_quickly():
    rng = np.random.default_rng(0)
    corpus = [accumulate(rng.uniform(0.05, 0.6, size=(12, int(n) - 1))) for n in rng.integers(2, 20, 5000)]
    start = time.perf_counter()
    trees = induce_trees(corpus)
    binary = induce_trees(corpus, algorithm="binary")
    elapsed = time.perf_counter() - start
    assert len(trees) == len(binary) == 5000
    assert elapsed < 15.0, f"5,000 captions took {elapsed:.1f}s"  # about 1 s on an idle core
