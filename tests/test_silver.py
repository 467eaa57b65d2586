"""Silver trees (induction.silver): dependency -> constituency conversion, spaCy, benepar adapter."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from hiclip.cli import main
from hiclip.data.trees import TokenLine, TreeRecord, tree_to_string
from hiclip.errors import HiCLIPError
from induction.silver import BeneparParser, dependency_to_constituency, make_silver_parser, projectivize, silver_records
from induction.spans import tree_spans


def test_each_head_with_its_dependents_is_a_constituent():
    # "the big dog chased a cat": det/amod -> dog, dog <- chased -> cat, a -> cat
    tokens = "the big dog chased a cat".split()
    heads = [2, 2, 3, 3, 5, 3]
    tags = ["DT", "JJ", "NN", "VBD", "DT", "NN"]
    tree = dependency_to_constituency(tokens, heads, tags, ["det", "amod", "nsubj", "ROOT", "det", "dobj"])
    assert tree_to_string(tree) == "(ROOT (NSUBJ (DT the) (JJ big) (NN dog)) (VBD chased) (DOBJ (DT a) (NN cat)))"
    assert tree.leaves() == tokens
    assert set(tree_spans(tree, "vgnsl", tags=tags)) == {(0, 3), (4, 6), (0, 6)}


def test_roots_as_minus_one_and_several_roots():
    tree = dependency_to_constituency(["a", "dog", ".", "b", "cat"], [1, -1, 1, 4, 4])
    assert tree_to_string(tree) == "(S (X a dog .) (X b cat))"
    assert dependency_to_constituency(["yes"], [0], ["UH"]).leaves() == ["yes"]


def test_projectivize_lifts_crossing_arcs():
    # the arc 3 -> 1 spans word 2, the root, which 3 does not dominate: 1 is lifted to 3's head
    heads = [2, 3, -1, 2]
    fixed = projectivize(heads)
    assert fixed == [2, 2, -1, 2]
    tree = dependency_to_constituency(list("abcd"), heads)
    assert tree.leaves() == list("abcd")
    for d, h in enumerate(fixed):
        if h >= 0:
            lo, hi = sorted((h, d))
            for k in range(lo + 1, hi):  # every word under an arc is dominated by its head
                ancestors, anc = set(), fixed[k]
                while anc >= 0:
                    ancestors.add(anc)
                    anc = fixed[anc]
                assert h in ancestors
    with pytest.raises(HiCLIPError, match="cycle"):
        projectivize([1, 0])


def test_random_dependency_trees_keep_word_order():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        order = rng.permutation(n)
        heads = [-1] * n
        for k in range(1, n):
            heads[order[k]] = int(order[rng.integers(0, k)])
        tokens = [f"w{i}" for i in range(n)]
        assert dependency_to_constituency(tokens, heads, ["NN"] * n).leaves() == tokens


def test_bad_dependency_input():
    with pytest.raises(HiCLIPError, match="empty sentence"):
        dependency_to_constituency([], [])
    with pytest.raises(HiCLIPError, match="2 tokens but 1 heads"):
        dependency_to_constituency(["a", "b"], [0])


def test_benepar_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "benepar", None)  # import benepar -> ImportError
    with pytest.raises(HiCLIPError, match="benepar is not installed: pip install"):
        BeneparParser()


def test_benepar_missing_model_is_a_clear_error(monkeypatch):
    fake = types.ModuleType("benepar")

    class Parser:
        def __init__(self, name):
            raise LookupError(f"Can't find {name}\nmore text")

    fake.Parser = Parser
    monkeypatch.setitem(sys.modules, "benepar", fake)
    with pytest.raises(HiCLIPError, match=r"benepar model 'benepar_en3' is not available .*benepar\.download"):
        make_silver_parser("benepar")


def test_benepar_adapter_parses_with_a_model(monkeypatch):
    import nltk

    fake = types.ModuleType("benepar")

    class InputSentence:
        def __init__(self, words):
            self.words = words

    class Parser:
        def __init__(self, name):
            self.name = name

        def parse(self, sentence):
            return nltk.Tree("TOP", [nltk.Tree("NP", [nltk.Tree("DT", [sentence.words[0]]),
                                                      nltk.Tree("NN", [sentence.words[1]])])])

    fake.Parser, fake.InputSentence = Parser, InputSentence
    monkeypatch.setitem(sys.modules, "benepar", fake)
    records = silver_records(make_silver_parser("benepar"), [["a", "dog"]])
    assert tree_to_string(records[0].tree) == "(NP (DT a) (NN dog))" and records[0].tags == ["DT", "NN"]


def test_spacy_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy -> ImportError
    with pytest.raises(HiCLIPError, match="silver trees need spaCy: pip install"):
        make_silver_parser("spacy", "model_for_missing_spacy_test")


def test_spacy_model_missing_is_a_clear_error():
    pytest.importorskip("spacy")
    with pytest.raises(HiCLIPError, match="spaCy model 'no_such_spacy_model_xyz' is not installed"):
        make_silver_parser("spacy", "no_such_spacy_model_xyz")


def test_unknown_silver_parser():
    with pytest.raises(HiCLIPError, match="unknown silver parser"):
        make_silver_parser("stanza")


@pytest.fixture(scope="module")
def spacy_parser():
    pytest.importorskip("spacy")
    try:
        return make_silver_parser("spacy")
    except HiCLIPError as error:
        pytest.skip(str(error))


def test_spacy_silver_trees_keep_tokens(spacy_parser):
    sentences = [["A", "man", "riding", "a", "horse", "."], ["a", "dog", "catches", "a", "frisbee", "in",
                                                              "the", "park"], ["bat.", ","]]
    records = silver_records(spacy_parser, sentences)
    for rec, toks in zip(records, sentences):
        assert rec.ok and rec.tokens == toks and rec.tags is not None and len(rec.tags) == len(toks)
    assert records[0].tags[-1] == "."  # punctuation tag, dropped by the standard convention
    spans = tree_spans(records[0].tree, "standard", tags=records[0].tags)
    assert all(b - a >= 2 and (a, b) != (0, 5) for a, b in spans)


def test_silver_records_keep_order_for_empty_and_skipped(spacy_parser):
    bad = TreeRecord(tree=None, tokens=["x"], source="p.jsonl", line=2, problem="p.jsonl:2: bad", reason="no tree")
    items = [TokenLine(["a", "cat"], "caps.txt", 1), bad, [], ["two", "dogs", "run"]]
    records = silver_records(spacy_parser, items)
    assert [r.ok for r in records] == [True, False, False, True]
    assert records[0].line == 1 and records[0].source.startswith("silver:spacy (caps.txt")
    assert records[2].reason == "empty sentence"


def test_cli_silver_against_predictions(spacy_parser, tmp_path, capsys):
    rows = [{"id": "a", "text": [{"tokens": "a man riding a horse".split(),
                                  "tree": "(S (X a man) (X riding (X a horse)))"}]},
            {"id": "b", "text": [{"tokens": "two dogs play".split(), "tree": "(S (X two dogs) play)"}]}]
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    code = main(["score", "trees", "--pred", str(pred), "--silver", "--convention", "vgnsl", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["n_scored"] == 2 and out["convention"] == "vgnsl"
    assert "silver trees (spacy parser)" in out["gold"] and 0.0 <= out["corpus_f1"] <= 100.0
    caps = tmp_path / "caps.txt"
    caps.write_text("a man riding a horse\ntwo dogs play\n", encoding="utf-8")
    code = main(["score", "trees", "--gold", str(caps), "--silver", "--baseline", "right",
                 "--convention", "standard", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["n_scored"] == 2
    code = main(["score", "trees", "--gold", str(caps), "--baseline", "right", "--convention", "standard"])
    assert code == 2 and "add --silver" in capsys.readouterr().err
