"""Tree readers (hiclip.data.trees): every format, locations in errors, counted skips."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hiclip.data.trees import (
    TreeRecord,
    detect_format,
    is_unlabeled_style,
    leaf_tags,
    parse_bracket_string,
    read_manifest_trees,
    read_ptb,
    read_token_lines,
    read_tree_lines,
    read_trees,
    read_vgnsl_json,
    tokens_match,
    tree_to_string,
)
from hiclip.errors import HiCLIPError, SkipReport

MRG = """
( (S
    (NP-SBJ (NNP Mr.) (NNP Vinken) )
    (VP (VBZ is)
      (NP-PRD (NN chairman) ))
    (. .) ))
( (S
    (NP-SBJ (-NONE- *-1) )
    (VP (VBD said) )
    (. .) ))
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- bracket strings


def test_labeled_string_keeps_tags_and_strips_wrapper():
    tree = parse_bracket_string("( (S (NP (DT the) (NN dog)) (VP (VBZ barks)) (. .)) )")
    assert tree.label() == "S"
    assert tree.leaves() == ["the", "dog", "barks", "."]
    assert leaf_tags(tree) == ["DT", "NN", "VBZ", "."]


def test_unlabeled_vgnsl_string():
    text = "( ( A large wooden pole ) ( with ( ( a green street sign ) ( hanging ( from it ) ) ) ) . )"
    assert is_unlabeled_style(text)
    tree = parse_bracket_string(text)
    assert tree.leaves() == "A large wooden pole with a green street sign hanging from it .".split()
    assert leaf_tags(tree) is None  # bare words: no pre-terminals
    assert tree[0].leaves() == ["A", "large", "wooden", "pole"]


def test_labeled_nodes_with_direct_words_and_escapes_round_trip():
    tree = parse_bracket_string("(S (X a man) (X riding (X a horse)))")
    assert tree.leaves() == ["a", "man", "riding", "a", "horse"]
    assert leaf_tags(tree) is None
    brackets = parse_bracket_string("(S (PRN (-LRB- -LRB-) (NN x) (-RRB- -RRB-)))")
    assert brackets.leaves() == ["-LRB-", "x", "-RRB-"] and tokens_match(brackets.leaves(), ["(", "x", ")"])
    text = tree_to_string(parse_bracket_string("(S (X a (Y b c)) d)"))
    assert text == "(S (X a (Y b c)) d)"


@pytest.mark.parametrize("text, fragment", [
    ("(S (NP a) b", "never closed"),
    ("(S a))", "unmatched ')'"),
    ("a (S b)", "outside any brackets"),
    ("(S (NP) b)", "has no words"),
    ("(S a) (S b)", "expected one tree, found 2"),
])
def test_malformed_strings(text, fragment):
    with pytest.raises(HiCLIPError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_bracket_string(text)


def test_tokens_match_ignores_case_and_bracket_escapes():
    assert tokens_match(["-LRB-", "A", "dog"], ["(", "a", "DOG"])
    assert not tokens_match(["a", "dog"], ["a", "cat"])
    assert not tokens_match(["a"], ["a", "b"])


# ----------------------------------------------------------------------------- PTB


def test_read_ptb_file_and_folder(tmp_path):
    folder = tmp_path / "tb"
    (folder / "sub").mkdir(parents=True)
    write(folder / "b.mrg", MRG)
    write(folder / "sub" / "a.mrg", "( (NP (DT a) (NN b)) )\n")
    records = read_ptb(folder)
    # sorted by path: b.mrg comes before sub/a.mrg
    assert [r.tokens for r in records] == [["Mr.", "Vinken", "is", "chairman", "."],
                                           ["*-1", "said", "."], ["a", "b"]]
    assert records[0].line == 2 and records[1].line == 7 and records[0].tree.label() == "S"
    assert records[1].tags == ["-NONE-", "VBD", "."]
    assert records[1].surface_tokens() == ["said", "."]
    assert records[0].where.endswith("b.mrg:2")


def test_read_ptb_malformed_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.mrg", "( (S (NP (DT a) (NN b)) )\n( (S\n  (VP (VB c) )\n")
    with pytest.raises(HiCLIPError, match=r"bad\.mrg:1: unbalanced brackets"):
        read_ptb(path)
    path = write(tmp_path / "bad2.mrg", "( (S (NP (DT a)) ))\n\n  (X b) )\n")
    with pytest.raises(HiCLIPError, match=r"bad2\.mrg:3: unmatched"):
        read_ptb(path)


def test_read_ptb_empty_folder(tmp_path):
    with pytest.raises(HiCLIPError, match="no .mrg files"):
        read_ptb(tmp_path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(HiCLIPError, match="no such file"):
        read_trees(tmp_path / "nope.txt")


# ----------------------------------------------------------------------------- one tree per line


def test_lines_with_token_file_mismatch_raises_with_line(tmp_path):
    trees = write(tmp_path / "t.txt", "(S (NP (DT a) (NN dog)) (VP (VBZ runs)))\n"
                                      "(S (NP (DT the) (NN bat)) (. .) (: ,))\n")
    caps = write(tmp_path / "c.txt", "a dog runs\nthe bat. ,\n")
    with pytest.raises(HiCLIPError, match=r"t\.txt:2: tree leaves differ from .*c\.txt:2"):
        read_tree_lines(trees, tokens_path=caps)


def test_lines_mismatch_skip_keeps_order(tmp_path):
    trees = write(tmp_path / "t.txt", "(S (DT a) (NN dog))\n(S (DT the) (NN bat) (. .))\n(S (DT one) (NN cat))\n")
    caps = write(tmp_path / "c.txt", "a dog\nthe bat.\none cat\n")
    report = SkipReport("skip")
    records = read_tree_lines(trees, tokens_path=caps, report=report)
    assert [r.ok for r in records] == [True, False, True]
    assert records[1].reason == "leaves differ from tokens" and "t.txt:2" in records[1].problem
    assert report.reasons == {"leaves differ from tokens": 1}


def test_lines_count_mismatch_and_blank_and_malformed(tmp_path):
    trees = write(tmp_path / "t.txt", "(S (DT a) (NN dog))\n\n(S (DT a) (NN dog)\n")
    with pytest.raises(HiCLIPError, match="3 lines but token file"):
        read_tree_lines(trees, tokens_path=write(tmp_path / "c.txt", "a dog\n"))
    with pytest.raises(HiCLIPError, match=r"t\.txt:2: blank line"):
        read_tree_lines(trees)
    report = SkipReport("skip")
    records = read_tree_lines(trees, report=report)
    assert [r.ok for r in records] == [True, False, False]
    assert report.reasons == {"blank tree line": 1, "malformed tree": 1}
    assert "t.txt:3" in records[2].problem


def test_unlabeled_lines_and_plain_tokens(tmp_path):
    trees = write(tmp_path / "u.txt", "( ( a man ) ( riding ( a horse ) ) )\n( two dogs )\n")
    records = read_trees(trees)
    assert detect_format(trees) == "unlabeled"
    assert records[0].tokens == ["a", "man", "riding", "a", "horse"] and records[0].tags is None
    plain = write(tmp_path / "p.txt", "a man riding a horse\n  two dogs \n")
    assert detect_format(plain) == "plain"
    lines = read_token_lines(plain)
    assert [x.tokens for x in lines] == [["a", "man", "riding", "a", "horse"], ["two", "dogs"]]
    assert lines[1].line == 2
    with pytest.raises(HiCLIPError, match="plain sentences"):
        read_trees(plain)


# ----------------------------------------------------------------------------- JSON formats


def test_manifest_trees_split_filter_and_flattening(tmp_path):
    rows = [
        {"id": "a", "split": "train", "image": "a.png", "captions": ["x y"], "trees": ["(S (X x) (X y))"]},
        {"id": "b", "split": "test", "image": "b.png", "captions": ["a red square", "two dogs"],
         "tokens": [["a", "red", "square"], ["two", "dogs"]],
         "trees": ["(NP (DT a) (JJ red) (NN square))", "(NP (CD two) (NNS dogs))"]},
        {"id": "c", "split": "test", "image": "c.png", "captions": ["one cat"], "trees": ["(NP (CD one) (NN cat))"]},
    ]
    path = write(tmp_path / "manifest.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    assert detect_format(tmp_path) == "manifest"
    records = read_trees(tmp_path, split="test")
    assert [r.tokens for r in records] == [["a", "red", "square"], ["two", "dogs"], ["one", "cat"]]
    assert [(r.line, r.item) for r in records] == [(2, "caption 0"), (2, "caption 1"), (3, "caption 0")]
    assert records[0].tags == ["DT", "JJ", "NN"]
    assert len(read_manifest_trees(path)) == 4


def test_manifest_problems(tmp_path):
    rows = [{"id": "a", "image": "a.png", "captions": ["x y"]}]
    path = write(tmp_path / "manifest.jsonl", json.dumps(rows[0]) + "\n")
    with pytest.raises(HiCLIPError, match=r"manifest\.jsonl:1: record 'a' has no 'trees'"):
        read_manifest_trees(path)
    row = {"id": "a", "image": "a.png", "captions": ["x y", "p q"], "trees": ["(S (X x) (X z))", None]}
    write(path, json.dumps(row) + "\n")
    with pytest.raises(HiCLIPError, match=r"manifest\.jsonl:1: caption 0: tree leaves differ"):
        read_manifest_trees(path)
    report = SkipReport("skip")
    records = read_manifest_trees(path, report=report)
    assert not records[0].ok and not records[1].ok
    assert report.reasons == {"leaves differ from tokens": 1, "no tree": 1}
    write(path, "{not json\n")
    with pytest.raises(HiCLIPError, match=r"manifest\.jsonl:1: invalid JSON"):
        read_manifest_trees(path)


def test_prediction_jsonl_is_detected_but_read_by_its_own_reader(tmp_path):
    row = {"id": "s1", "text": [{"tokens": ["a", "b"], "tree": "(S a b)"}], "image": None}
    path = write(tmp_path / "pred.jsonl", json.dumps(row) + "\n")
    assert detect_format(path) == "predictions"
    with pytest.raises(HiCLIPError, match="induction.tree_evaluation.read_tree_records"):
        read_trees(path)


def test_manifest_record_without_trees_is_a_counted_skip(tmp_path):
    rows = [{"id": "a", "image": "a.png", "captions": ["x y"], "trees": ["(S x y)"]},
            {"id": "b", "image": "b.png", "captions": ["p q", "r s"]}]
    path = write(tmp_path / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(HiCLIPError, match=r"manifest\.jsonl:2: record 'b' has no 'trees'"):
        read_manifest_trees(path)
    report = SkipReport("skip")
    records = read_manifest_trees(path, report=report)
    assert [r.ok for r in records] == [True, False, False]     # one placeholder per caption: no shift
    assert report.reasons == {"no tree": 2}


def test_vgnsl_json_fixture(tmp_path):
    data = [{"image_id": 7, "vgnsl_parsed_captions": [
        {"vgnsl_split": "test", "caption_tokenized": "a dog runs .",
         "benepar_en2_tree": "(S (NP (DT a) (NN dog)) (VP (VBZ runs)) (. .))",
         "vgnsl_gold_unlabeled_tree": "( ( a dog ) runs . )"},
        {"vgnsl_split": "dev", "caption_tokenized": "two cats",
         "benepar_en2_tree": "(NP (CD two) (NNS cats))"}]}]
    path = write(tmp_path / "joint.json", json.dumps(data))
    assert detect_format(path) == "vgnsl-json"
    gold = read_vgnsl_json(path, split="test")
    assert len(gold) == 1 and gold[0].tokens == ["a", "dog", "runs", "."] and gold[0].tags is None
    labeled = read_vgnsl_json(path, tree_key="benepar_en2_tree")
    assert [r.tokens for r in labeled] == [["a", "dog", "runs", "."], ["two", "cats"]]
    with pytest.raises(HiCLIPError, match="no 'vgnsl_gold_unlabeled_tree'.*--split test"):
        read_vgnsl_json(path)


def test_split_rejected_for_formats_without_splits(tmp_path):
    path = write(tmp_path / "t.mrg", MRG)
    with pytest.raises(HiCLIPError, match="--split applies"):
        read_trees(path, split="test")


# ----------------------------------------------------------------------------- real data


def test_real_ptb_file(shared_data):
    path = shared_data / "ptb_sample" / "treebank" / "combined" / "wsj_0001.mrg"
    if not path.exists():
        pytest.skip("PTB sample not present")
    records = read_trees(path)
    assert len(records) == 2
    assert records[0].tokens[:3] == ["Pierre", "Vinken", ","] and records[0].tree.label() == "S"
    assert all(isinstance(r, TreeRecord) and r.tags is not None for r in records)


def test_real_dev_trees_line_546_reported(shared_data):
    folder = shared_data / "coco_captions_parsed"
    if not (folder / "dev_trees.txt").exists():
        pytest.skip("COCO caption parses not present")
    with pytest.raises(HiCLIPError, match=r"dev_trees\.txt:546: tree leaves differ .*dev_caps\.txt:546"):
        read_trees(folder / "dev_trees.txt", tokens_path=folder / "dev_caps.txt")
    report = SkipReport("skip")
    records = read_trees(folder / "dev_trees.txt", tokens_path=folder / "dev_caps.txt", report=report)
    assert len(records) == 5000 and report.total == 1 and not records[545].ok
    assert all(r.ok for i, r in enumerate(records) if i != 545)


def test_real_vgnsl_json(shared_data):
    path = shared_data / "coco_tiny" / "joint_coco_vgnsl_overlap.json"
    if not path.exists():
        pytest.skip("VG-NSL join file not present")
    gold = read_trees(path, split="test")
    assert len(gold) == 80 and all(r.ok for r in gold)
    assert len(read_trees(path, tree_key="benepar_en2_tree")) == 130
