"""Span conventions (induction.spans), bracket F1 and baselines (induction.tree_scoring), CLI."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import nltk
import numpy as np
import pytest

from hiclip.cli import main
from hiclip.data.trees import TreeRecord, parse_bracket_string, read_trees
from hiclip.errors import HiCLIPError, SkipReport
from induction.spans import (
    STANDARD,
    VGNSL,
    constituent_intervals,
    get_convention,
    is_punctuation_word,
    keep_mask,
    project_spans,
    spans_to_tree,
    tree_spans,
)
from induction.tree_scoring import (
    balanced_spans,
    baseline_spans,
    left_branching_spans,
    random_shift_reduce_spans,
    random_split_spans,
    right_branching_spans,
    score_baseline,
    score_span_sets,
    score_trees,
    sentence_prf,
)

CHAIRMAN = ("(S (NP-SBJ (NNP Mr.) (NNP Vinken)) (VP (VBZ is) (NP-PRD (NP (NN chairman)) "
            "(PP (IN of) (NP (NNP Elsevier))))) (. .))")
TRACE = ("(S (S-TPC-1 (NP-SBJ (DT The) (NN deal)) (VP (VBD fell) (ADVP (RB apart)))) (, ,) "
         "(NP-SBJ (PRP he)) (VP (VBD said) (SBAR (-NONE- 0) (S (-NONE- *T*-1)))) (. .))")
DOG = "(S (NP (DT the) (NN dog)) (VP (VBD chased) (NP (DT a) (NN cat))))"


def record(text: str, source: str = "gold.txt", line: int = 1) -> TreeRecord:
    tree = parse_bracket_string(text)
    from hiclip.data.trees import leaf_tags

    return TreeRecord(tree=tree, tokens=tree.leaves(), source=source, line=line, tags=leaf_tags(tree))


def pred(text: str, source: str = "pred.txt", line: int = 1) -> TreeRecord:
    tree = parse_bracket_string(text)
    return TreeRecord(tree=tree, tokens=tree.leaves(), source=source, line=line)


def gold_spans(text: str, convention) -> set:
    r = record(text)
    return set(tree_spans(r.tree, convention, tags=r.tags))


# ----------------------------------------------------------------------------- conventions


def test_standard_drops_punctuation_and_whole_span():
    # kept: Mr. Vinken is chairman of Elsevier (the "." goes); S = (0, 6) is the whole sentence
    assert gold_spans(CHAIRMAN, "standard") == {(0, 2), (2, 6), (3, 6), (4, 6)}


def test_vgnsl_keeps_punctuation_and_whole_span():
    assert gold_spans(CHAIRMAN, "vgnsl") == {(0, 2), (2, 6), (3, 6), (4, 6), (0, 7)}


def test_empty_elements_and_constituents_left_empty():
    # kept: The deal fell apart he said; SBAR holds only -NONE- and vanishes, so VP "said" is
    # a single word; S-TPC (0,4), NP (0,2), VP (2,4) remain.
    assert gold_spans(TRACE, "standard") == {(0, 4), (0, 2), (2, 4)}
    # vgnsl keeps the comma and the full stop but never the empty elements
    assert gold_spans(TRACE, "vgnsl") == {(0, 4), (0, 2), (2, 4), (0, 8)}


def test_unary_chains_collapse():
    assert gold_spans("(S (NP (NP (NP (DT the) (NN dog)))) (VP (VBZ barks) (ADVP (RB loudly))))",
                      "standard") == {(0, 2), (2, 4)}
    # removing quotes makes the inner S cover the whole sentence: it is the whole span, discarded
    quoted = "(S (`` ``) (S (NP (PRP We)) (VP (VBP win) (NP (NNS games)))) ('' ''))"
    assert gold_spans(quoted, "standard") == {(1, 3)}
    assert gold_spans(quoted, "vgnsl") == {(1, 4), (2, 4), (0, 5)}


def test_currency_tags_dropped_like_compound_pcfg():
    # compound-pcfg keeps only PRPN's word tags: $ and # go with the punctuation
    text = "(S (NP (NP ($ $) (CD 5) (CD million)) (PP (IN in) (NP (NNS sales)))) (. .))"
    assert gold_spans(text, "standard") == {(0, 2), (2, 4)}


def test_word_rule_without_tags():
    tree = parse_bracket_string("( ( a dog ) , ( runs fast ) . )")
    assert set(tree_spans(tree, "standard")) == {(0, 2), (2, 4)}
    assert set(tree_spans(tree, "vgnsl")) == {(0, 2), (3, 5), (0, 6)}
    assert is_punctuation_word("...") and is_punctuation_word("-LRB-") and is_punctuation_word("$")
    assert not is_punctuation_word("bat.") and not is_punctuation_word("&") and not is_punctuation_word("'s")


def test_keep_mask_and_projection():
    keep = keep_mask(["a", "-", "b", "."], ["DT", "HYPH", "NN", "."], STANDARD)
    assert keep.tolist() == [True, False, True, False]
    assert keep_mask(["a", "."], ["DT", "."], VGNSL).tolist() == [True, True]
    # a constituent over [1, 3) keeps only token 2 -> single word, gone
    assert project_spans([(0, 4), (1, 3), (0, 3)], keep) == {(0, 2)}
    assert constituent_intervals(nltk.Tree("S", ["a", nltk.Tree("X", ["b", "c"])])) == [(0, 3), (1, 3)]


def test_unknown_convention():
    with pytest.raises(HiCLIPError, match="unknown span convention"):
        get_convention("evalb")


def test_spans_to_tree_round_trip():
    tokens = list("abcde")
    spans = {(0, 5), (0, 2), (2, 5), (3, 5)}
    tree = spans_to_tree(tokens, spans)
    assert tree.leaves() == tokens
    assert set(tree_spans(tree, "vgnsl")) == spans
    with pytest.raises(ValueError, match="cross"):
        spans_to_tree(tokens, {(0, 3), (2, 4)})


# ----------------------------------------------------------------------------- sentence / corpus F1


def test_sentence_f1_empty_gold_policies():
    assert sentence_prf(0, 0, 0, "prpn") == (1.0, 1.0, 1.0)
    assert sentence_prf(2, 0, 0, "prpn")[2] == 0.0
    assert sentence_prf(0, 3, 0, "prpn")[2] == 0.0
    assert sentence_prf(0, 0, 0, "skip") is None and sentence_prf(2, 0, 0, "skip") is None
    p, r, f = sentence_prf(3, 2, 1)
    assert (p, r) == (1 / 3, 1 / 2) and f == pytest.approx(0.4)


def test_sentence_level_vs_corpus_level():
    # A: 2 of 3 right (F1 2/3); B: 0 of 1 (F1 0). Sentence mean 1/3; corpus 2/4 = 1/2.
    report = score_span_sets([({(0, 2), (2, 4), (1, 4)}, {(0, 2), (2, 4), (0, 3)}, 5),
                              ({(0, 2)}, {(1, 3)}, 4)], "standard")
    assert report.sentence_f1 == pytest.approx(100 / 3)
    assert report.corpus_f1 == pytest.approx(50.0)
    assert report.precision == pytest.approx(50.0) and report.recall == pytest.approx(50.0)
    assert report.pred_spans_per_sentence == 2.0 and report.gold_spans_per_sentence == 2.0


def test_short_sentences_and_empty_gold_in_average():
    golds = [record("(S (NP (NNP Yes)) (. .))"), record("(S (NP (NNS Dogs)) (VP (VBP bark)))"),
             record("(NP (DT the) (JJ big) (NN dog))"), record(DOG)]
    preds = [pred("(S Yes .)"), pred("(S Dogs bark)"), pred("(S the (X big dog))"), pred("(S the (X dog (X chased (X a cat))))")]
    report = score_trees(preds, golds, "standard")
    # length 1: out of the average; length 2: both empty -> 100; flat gold + 1 predicted span -> 0;
    # DOG: gold {(0,2),(2,5),(3,5)}, right-branching {(1,5),(2,5),(3,5)} -> 2/3
    assert report.n_scored == 4 and report.n_short == 1 and report.n_sentence_f1 == 3
    assert [s.f1 for s in report.sentences][0] is None
    assert report.sentence_f1 == pytest.approx((100 + 0 + 200 / 3) / 3)
    skip = score_trees(preds, golds, "standard", empty_gold="skip")
    assert skip.n_sentence_f1 == 1 and skip.sentence_f1 == pytest.approx(200 / 3)
    assert skip.corpus_f1 == report.corpus_f1  # the policy only affects the sentence average


def test_prediction_reduced_to_kept_tokens():
    gold = record("(S (NP (DT The) (NN dog)) (VP (VBD barked)) (. .))")
    # over all surface tokens: (1,4) -> (1,3); (2,4) -> single word; whole span discarded
    wrong = score_trees([pred("(S (X The (X dog (X barked .))))")], [gold], "standard")
    right = score_trees([pred("(S (X (X The dog) barked) .)")], [gold], "standard")
    assert wrong.sentence_f1 == 0.0 and wrong.pred_spans_per_sentence == 1.0
    assert right.sentence_f1 == 100.0
    # predictions over the kept tokens only, or lower-cased, align too
    kept = score_trees([pred("(S (X the dog) barked)")], [gold], "standard")
    assert kept.sentence_f1 == 100.0


def test_prediction_over_surface_tokens_of_a_treebank_tree():
    gold = record(TRACE)
    surface = "The deal fell apart , he said .".split()
    tree = spans_to_tree(surface, {(0, 4), (0, 2), (2, 4)})
    report = score_trees([TreeRecord(tree, surface, "pred.txt", 1)], [gold], "standard")
    assert report.sentence_f1 == 100.0 and report.n_scored == 1
    # "he said" over the surface tokens (5, 7) is the kept span (4, 6): a wrong guess, not the whole
    tree = spans_to_tree(surface, {(0, 4), (0, 2), (2, 4), (5, 7)})
    report = score_trees([TreeRecord(tree, surface, "pred.txt", 1)], [gold], "standard")
    assert report.precision == 75.0 and report.recall == 100.0


def test_flat_prediction_has_high_precision_and_few_spans():
    gold = record(DOG)
    flat = score_trees([pred("(S the dog (X chased a cat))")], [gold], "standard")
    assert flat.precision == 100.0 and flat.recall == pytest.approx(100 / 3)
    assert flat.pred_spans_per_sentence == 1.0 and flat.gold_spans_per_sentence == 3.0


def test_vgnsl_whole_span_counts():
    gold = record("(NP (NP (DT a) (NN dog)) (VP (VBG running)) (. .))")
    report = score_trees([pred("(S (X a dog) (X running .))")], [gold], "vgnsl")
    # gold {(0,2),(0,4)}; pred {(0,2),(2,4),(0,4)}: 2 of 3 precise, 2 of 2 recalled
    assert report.precision == pytest.approx(200 / 3) and report.recall == 100.0
    assert report.corpus_f1 == pytest.approx(80.0)
    assert report.to_dict()["convention"] == "vgnsl"


def test_length_buckets():
    golds = [record(DOG), record("(S (NP (DT a) (NN b)) (VP (VB c)))")]
    report = score_baseline(golds, "standard", "right")
    names = {b.name: b.n for b in report.by_length}
    assert names == {"2-5": 2}
    # right-branching without the whole span: 3 spans over 5 words, 1 over 3
    assert report.by_length[0].pred_spans_per_sentence == 2.0


# ----------------------------------------------------------------------------- mismatches


def test_token_mismatch_names_line_and_skip_counts():
    golds = [record(DOG, line=1), record("(S (DT a) (NN cat))", line=2), record("(S (DT a) (NN dog))", line=3)]
    preds = [pred("(S the (X dog (X chased (X a cat))))", line=1), pred("(S a bat)", line=2),
             pred("(S a dog)", line=3)]
    with pytest.raises(HiCLIPError, match=r"pred\.txt:2: sentence 2 does not match gold gold\.txt:2 "
                                          r"\(token 2: 'bat' vs 'cat'\)"):
        score_trees(preds, golds, "standard")
    report = score_trees(preds, golds, "standard", mismatch=SkipReport("skip"))
    assert report.n_scored == 2 and report.n_skipped == 1 and report.skipped == {"token mismatch": 1}
    assert report.to_dict()["n_skipped"] == 1


def test_different_counts_is_an_error():
    with pytest.raises(HiCLIPError, match="2 predicted sentences .* but 1 gold sentences"):
        score_trees([pred("(S a b)"), pred("(S a b)")], [record("(S (DT a) (NN b))")], "standard")


def test_placeholders_are_counted_not_scored():
    bad = TreeRecord(tree=None, tokens=["x"], source="gold.txt", line=2, problem="gold.txt:2: bad", reason="malformed tree")
    report = score_trees([pred("(S a b)"), pred("(S x)")], [record("(S (DT a) (NN b))"), bad], "vgnsl")
    assert report.n_scored == 1 and report.skipped == {"malformed tree": 1}


# ----------------------------------------------------------------------------- baselines


def test_baseline_trees_small():
    assert left_branching_spans(4) == {(0, 2), (0, 3), (0, 4)}
    assert right_branching_spans(4) == {(0, 4), (1, 4), (2, 4)}
    assert balanced_spans(4) == {(0, 4), (0, 2), (2, 4)}
    assert balanced_spans(5) == {(0, 5), (0, 3), (0, 2), (3, 5)}
    assert left_branching_spans(1) == set() == balanced_spans(1)


@pytest.mark.parametrize("make", [random_split_spans, random_shift_reduce_spans])
def test_random_trees_are_binary_and_seeded(make):
    for n in range(1, 12):
        spans = make(n, np.random.default_rng(n))
        assert len(spans) == max(n - 1, 0)
        if n >= 2:
            assert (0, n) in spans
            tree = spans_to_tree([str(i) for i in range(n)], spans)  # raises if spans cross
            assert all(len(node) == 2 for node in tree.subtrees())
    assert make(9, np.random.default_rng(3)) == make(9, np.random.default_rng(3))


def test_random_split_is_uniform_over_split_points():
    rng = np.random.default_rng(0)
    counts = Counter()
    for _ in range(3000):
        spans = random_split_spans(4, rng)
        left = max((b for a, b in spans if a == 0 and b < 4), default=None)
        counts[left if left is not None else 1] += 1  # no (0, k<4) span: split after word 1
    assert all(abs(counts[k] / 3000 - 1 / 3) < 0.04 for k in (1, 2, 3))


def test_baselines_on_a_hand_tree():
    golds = [record(DOG)]  # gold {(0,2),(2,5),(3,5)}
    assert score_baseline(golds, "standard", "right").sentence_f1 == pytest.approx(200 / 3)
    assert score_baseline(golds, "standard", "left").sentence_f1 == pytest.approx(100 / 3)
    assert score_baseline(golds, "standard", "balanced").sentence_f1 == pytest.approx(200 / 3)
    # vgnsl: every binary tree also gets the whole span right
    assert score_baseline(golds, "vgnsl", "right").corpus_f1 == pytest.approx(75.0)
    rand = score_baseline(golds, "standard", "random", seeds=4)
    assert rand.seeds == [0, 1, 2, 3] and set(rand.std) >= {"sentence_f1", "corpus_f1"}
    assert 0.0 <= rand.sentence_f1 <= 100.0
    with pytest.raises(HiCLIPError, match="unknown baseline"):
        baseline_spans("middle", 3)


# ----------------------------------------------------------------------------- CLI


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_json_end_to_end(tmp_path, capsys):
    gold = _write(tmp_path / "gold.txt", DOG + "\n" + "(S (NP (DT The) (NN dog)) (VP (VBD barked)) (. .))\n")
    rows = [{"id": "a", "split": "test", "text": [
        {"caption_index": 0, "tokens": "the dog chased a cat".split(), "tree": "(S (X the dog) (X chased (X a cat)))"}]},
        {"id": "b", "split": "test", "text": [
            {"caption_index": 0, "tokens": "the dog barked .".split(), "tree": "(S (X (X the dog) barked) .)"}]}]
    preds = _write(tmp_path / "pred.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    code = main(["score", "trees", "--gold", str(gold), "--pred", str(preds), "--convention", "standard", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["convention"] == "standard" and out["n_scored"] == 2 and out["n_skipped"] == 0
    assert out["sentence_f1"] == pytest.approx(100.0) and out["corpus_f1"] == pytest.approx(100.0)
    assert set(out["baselines"]) == {"left", "right", "balanced", "random"}
    assert out["spans"]["gold_per_sentence"] == 2.0 and out["by_length"][0]["bucket"] == "2-5"


def test_cli_text_and_errors(tmp_path, capsys):
    gold = _write(tmp_path / "gold.txt", DOG + "\n(S (DT a) (NN cat))\n")
    code = main(["score", "trees", "--gold", str(gold), "--baseline", "random", "--seeds", "3",
                 "--convention", "vgnsl"])
    text = capsys.readouterr().out
    assert code == 0 and "convention     vgnsl" in text and "seeds 0..2" in text and "corpus F1" in text
    plain = _write(tmp_path / "pred.txt", "( the dog ( chased ( a cat ) ) )\n( a bat )\n")
    code = main(["score", "trees", "--gold", str(gold), "--pred", str(plain), "--convention", "standard"])
    err = capsys.readouterr().err
    assert code == 2 and "error: " in err and "pred.txt:2" in err and "gold.txt:2" in err
    code = main(["score", "trees", "--gold", str(gold), "--pred", str(plain), "--convention", "standard",
                 "--on-mismatch", "skip", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["n_scored"] == 1 and out["skipped"] == {"token mismatch": 1}
    broken = _write(tmp_path / "broken.txt", DOG + "\n(S (DT a) (NN cat)\n")
    code = main(["score", "trees", "--gold", str(broken), "--baseline", "left", "--convention", "standard"])
    assert code == 2 and "broken.txt:2" in capsys.readouterr().err
    code = main(["score", "trees", "--gold", str(broken), "--baseline", "left", "--convention", "standard",
                 "--on-error", "skip", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["n_skipped"] == 1 and out["skipped"] == {"malformed tree": 1}


# ----------------------------------------------------------------------------- real data


def test_vgnsl_convention_reproduces_vgnsl_reference_trees(shared_data):
    path = shared_data / "coco_tiny" / "joint_coco_vgnsl_overlap.json"
    if not path.exists():
        pytest.skip("VG-NSL join file not present")
    labeled = read_trees(path, split="test", tree_key="benepar_en2_tree")
    reference = read_trees(path, split="test")
    assert len(labeled) == len(reference) == 80
    for a, b in zip(labeled, reference):
        assert tree_spans(a.tree, "vgnsl", tags=a.tags) == tree_spans(b.tree, "vgnsl")
    report = score_trees(labeled, reference, "vgnsl")
    assert report.corpus_f1 == 100.0 and report.n_scored == 80


def test_real_ptb_right_branching_near_literature(shared_data):
    folder = shared_data / "ptb_sample" / "treebank" / "combined"
    if not folder.is_dir():
        pytest.skip("PTB sample not present")
    golds = read_trees(folder)
    assert len(golds) == 3914
    right = score_baseline(golds, "standard", "right")
    left = score_baseline(golds, "standard", "left")
    # published WSJ test (section 23) right-branching sentence F1: 39.5; this is sections 00-01
    assert 35.0 < right.sentence_f1 < 45.0 and left.sentence_f1 < 15.0
    assert right.n_scored == 3914


def test_cli_split_filters_predictions_against_a_whole_gold_file(tmp_path, capsys):
    gold = _write(tmp_path / "gold.txt", DOG + "\n")
    rows = [{"id": "a", "split": "train", "text": [{"tokens": ["x", "y"], "tree": "(S x y)"}]},
            {"id": "b", "split": "test", "text": [{"tokens": "the dog chased a cat".split(),
                                                   "tree": "(S (X the dog) (X chased (X a cat)))"}]}]
    preds = _write(tmp_path / "pred.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    code = main(["score", "trees", "--gold", str(gold), "--pred", str(preds), "--split", "test",
                 "--convention", "standard", "--json", "--no-baselines"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["n_scored"] == 1 and out["sentence_f1"] == 100.0 and "baselines" not in out
    code = main(["score", "trees", "--gold", str(gold), "--pred", str(preds), "--convention", "standard"])
    assert code == 2 and "2 predicted sentences" in capsys.readouterr().err
    code = main(["score", "trees", "--gold", str(gold), "--baseline", "left", "--split", "test",
                 "--convention", "standard"])
    assert code == 2 and "--split test applies to" in capsys.readouterr().err


def test_no_spans_at_all_is_undefined_not_zero(tmp_path, capsys):
    # two-word sentences under standard: no gold span and no predicted span anywhere
    golds = [record("(S (NP (NNS Dogs)) (VP (VBP bark)))"), record("(S (NP (NNS Cats)) (VP (VBP purr)))")]
    preds = [pred("(S Dogs bark)"), pred("(S Cats purr)")]
    report = score_trees(preds, golds, "standard")
    assert report.corpus_f1 is None and report.precision is None and report.recall is None
    assert report.sentence_f1 == 100.0  # PRPN rule: empty gold and empty prediction score 1
    skip = score_trees(preds, golds, "standard", empty_gold="skip")
    assert skip.sentence_f1 is None and skip.n_sentence_f1 == 0
    assert skip.to_dict()["sentence_f1"] is None and skip.to_dict()["corpus_f1"] is None
    # one side empty is defined: nothing predicted against gold spans gives F1 0
    some = score_trees([pred("(S the dog chased a cat)")], [record(DOG)], "standard")
    assert some.corpus_f1 == 0.0 and some.precision == 0.0 and some.recall == 0.0
    gold = _write(tmp_path / "gold.txt", "(S (NP (NNS Dogs)) (VP (VBP bark)))\n")
    code = main(["score", "trees", "--gold", str(gold), "--baseline", "random", "--convention", "standard",
                 "--empty-gold", "skip", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["corpus_f1"] is None and out["sentence_f1"] is None and out["recall"] is None
    code = main(["score", "trees", "--gold", str(gold), "--baseline", "right", "--convention", "standard"])
    text = capsys.readouterr().out
    assert code == 0 and "corpus F1      undefined" in text


def test_empty_prediction_file_is_one_clear_line(tmp_path, capsys):
    gold = _write(tmp_path / "gold.txt", DOG + "\n")
    empty = _write(tmp_path / "empty.jsonl", "")
    code = main(["score", "trees", "--gold", str(gold), "--pred", str(empty), "--convention", "standard"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("empty.jsonl: no predictions or manifest records (the file is empty)")
    assert "empty.jsonl:1" not in err and len(err.splitlines()) == 1
    blank = _write(tmp_path / "blank.jsonl", "\n\n")
    code = main(["score", "trees", "--gold", str(gold), "--pred", str(blank), "--convention", "standard"])
    err = capsys.readouterr().err
    assert code == 2 and "blank.jsonl: no predictions or manifest records (the file holds only blank lines)" in err
