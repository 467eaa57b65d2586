"""The evalb convention (induction.evalb): hand-counted cases, the CLI, and the C EVALB itself.

The last tests build EVALB from ``../shared/tools/evalb`` (``HICLIP_EVALB`` overrides) with ``cc``
in a temporary folder, and check that ``hiclip score trees --convention evalb`` gives EVALB's
matched, gold and test bracket counts exactly, sentence by sentence, on the PTB sample: for the
left-, right-branching and balanced baselines, for the trees the shipped
``checkpoints/tree-transformer-coco-captions`` induces on the sample sentences of at most 30 words
(its context of 32 tokens holds 30 words and its two markers), and, labeled and unlabeled, for a
perturbed copy of the gold trees (brackets flattened, duplicated and relabeled, ADVP <-> PRT).
They skip, naming the reason, without a C compiler, the EVALB source or the PTB sample.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nltk
import pytest

from hiclip.cli import main
from hiclip.data.trees import TreeRecord, escape_leaf, leaf_tags, parse_bracket_string, read_trees, tree_to_string
from hiclip.errors import HiCLIPError
from hiclip.paths import data_root
from induction.evalb import (
    COLLINS,
    EvalbParams,
    baseline_brackets,
    count_crossing,
    evalb_brackets,
    evalb_keep,
    match_brackets,
    pair_evalb,
    parse_prm,
    score_evalb_baseline,
    score_evalb_paired,
    trim_label,
)
from induction.spans import spans_to_tree
from induction.tree_evaluation import TreeInputs, TreeScoreOptions, evaluate_tree_files

ROOT = Path(__file__).resolve().parents[1]
LABELED = EvalbParams(labeled=True)


def record(text: str, source: str = "gold.txt", line: int = 1) -> TreeRecord:
    tree = parse_bracket_string(text)
    return TreeRecord(tree, tree.leaves(), source, line, leaf_tags(tree))


def pred(text: str, source: str = "pred.txt", line: int = 1) -> TreeRecord:
    tree = parse_bracket_string(text)
    return TreeRecord(tree, tree.leaves(), source, line)


def brackets(text: str, params: EvalbParams = COLLINS) -> list:
    r = record(text)
    return evalb_brackets(r.tree, evalb_keep(r, params), params)


# ----------------------------------------------------------------------------- hand counts


def test_every_bracket_counts_as_a_multiset():
    # whole sentence, single-word NP, the unary S -> VP chain twice, punctuation deleted
    tree = "(S (NP-SBJ (PRP He)) (VP (VBD left) (ADVP (RB early))) (. .))"
    assert brackets(tree) == [(0, 3, "S"), (0, 1, "NP"), (1, 3, "VP"), (2, 3, "ADVP")]
    unary = "(S (S (NP (PRP he)) (VP (VBD left))) (, ,))"
    assert brackets(unary) == [(0, 2, "S"), (0, 2, "S"), (0, 1, "NP"), (1, 2, "VP")]


def test_deletions_follow_collins_prm():
    # -NONE- deleted with its word; the SBAR/S left with no word vanish; -LRB- $ # are words
    trace = "(S (NP (-LRB- -LRB-) (NN x) (-RRB- -RRB-)) (VP (VBD said) (SBAR (-NONE- 0) (S (-NONE- *T*-1)))) (: ;))"
    r = record(trace)
    assert evalb_keep(r, COLLINS).tolist() == [True, True, True, True, False, False, False]
    assert brackets(trace) == [(0, 4, "S"), (0, 3, "NP"), (3, 4, "VP")]
    money = "(NP (QP ($ $) (CD 5)) (`` ``) (NN cash) ('' ''))"
    assert brackets(money) == [(0, 3, "NP"), (0, 2, "QP")]
    assert trim_label("NP-SBJ-1") == "NP" and trim_label("NP=2") == "NP" and trim_label("PRT|ADVP") == "PRT|ADVP"
    # a non-terminal labeled TOP loses its bracket but keeps its children
    assert brackets("(S (TOP (NN a) (NN b)) (NN c))") == [(0, 3, "S")]


def test_matching_labels_duplicates_and_equivalence():
    gold = [(0, 4, "S"), (0, 4, "S"), (1, 3, "ADVP"), (0, 1, "NP")]
    test = [(0, 4, "S"), (1, 3, "PRT"), (0, 1, "VP"), (0, 1, "NP"), (0, 1, "NP")]
    assert match_brackets(gold, test, COLLINS) == 3          # spans only: (0,4) once, (1,3), (0,1)
    assert match_brackets(gold, test, LABELED) == 3          # S once, ADVP = PRT, NP once
    assert match_brackets(gold, [(1, 3, "NP")], LABELED) == 0
    # crossing: test brackets crossing some gold bracket, counted once each
    assert count_crossing([(0, 2, "X"), (2, 4, "X")], [(1, 3, "X"), (1, 4, "X"), (0, 4, "X")]) == 2


def test_sentences_summaries_and_undefined_scores():
    golds = [record("(S (NP (DT the) (NN dog)) (VP (VBD barked)) (. .))"), record("(S (. .))")]
    preds = [pred("(S (X the dog) barked .)"), pred("(S .)")]
    report = score_evalb_paired(pair_evalb(preds, golds, COLLINS))
    first, second = report.sentences
    # gold S(0,3) NP(0,2) VP(2,3); test S(0,3) X(0,2); the second sentence has no word left: skip
    assert (first.status, first.matched, first.gold, first.test, first.length) == (0, 2, 3, 2, 4)
    assert second.status == 2 and report.all.n_skip == 1 and report.all.n_valid == 1
    assert report.all.recall == pytest.approx(200 / 3) and report.all.precision == 100.0
    assert report.all.complete_match == 0.0 and report.all.average_crossing == 0.0
    only_skips = score_evalb_paired(pair_evalb(preds[1:], golds[1:], COLLINS))
    assert only_skips.all.f1 is None and only_skips.all.recall is None and only_skips.all.complete_match is None
    right = score_evalb_baseline(pair_evalb(None, golds, COLLINS), "right")
    assert right.sentences[0].test == 2 and right.sentences[0].matched == 1  # (0,3) and (1,3)
    assert baseline_brackets("left", 1) == [(0, 1, "X")]
    with pytest.raises(HiCLIPError, match="not 'random'"):
        baseline_brackets("random", 3)


def test_parse_prm():
    text = "# comment\nLABELED 0\nDELETE_LABEL TOP\nDELETE_LABEL_FOR_LENGTH -NONE-\nEQ_LABEL ADVP PRT\nCUTOFF_LEN 20\n"
    assert parse_prm(text) == EvalbParams(False, ("TOP",), ("-NONE-",), (("ADVP", "PRT"),), 20)
    with pytest.raises(HiCLIPError, match="x.prm:2: unknown EVALB parameter 'FOO'"):
        parse_prm("LABELED 1\nFOO 3\n", "x.prm")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_evalb(tmp_path, capsys):
    gold = _write(tmp_path / "gold.txt", "(S (NP (DT the) (NN dog)) (VP (VBD barked)) (. .))\n")
    rows = [{"id": "a", "text": [{"tokens": "the dog barked .".split(), "tree": "(S (X the dog) barked .)"}]}]
    preds = _write(tmp_path / "pred.jsonl", json.dumps(rows[0]) + "\n")
    code = main(["score", "trees", "--gold", str(gold), "--pred", str(preds), "--convention", "evalb", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["brackets"] == {"matched": 2, "gold": 3, "test": 2} and out["labeled"] is False
    assert set(out["baselines"]) == {"left", "right", "balanced"} and out["len<=40"]["n_valid"] == 1
    code = main(["score", "trees", "--gold", str(gold), "--pred", str(preds), "--convention", "evalb", "--labeled"])
    text = capsys.readouterr().out
    assert code == 0 and "LABELED 1" in text and "Brackets matched / gold / test = 1 / 3 / 2" in text
    code = main(["score", "trees", "--gold", str(gold), "--baseline", "random", "--convention", "evalb"])
    assert code == 2 and "not 'random'" in capsys.readouterr().err
    code = main(["score", "trees", "--gold", str(gold), "--baseline", "left", "--convention", "standard", "--labeled"])
    assert code == 2 and "--labeled applies to --convention evalb only" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the C EVALB


@pytest.fixture(scope="module")
def evalb(tmp_path_factory) -> Path:
    """EVALB compiled from the shared source into a temporary folder (never into the repo)."""
    source = Path(os.environ.get("HICLIP_EVALB", data_root().parent / "tools" / "evalb"))
    if not (source / "evalb.c").is_file():
        pytest.skip(f"EVALB source not found at {source} (set HICLIP_EVALB)")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc) to build EVALB with")
    folder = tmp_path_factory.mktemp("evalb")
    shutil.copy(source / "evalb.c", folder / "evalb.c")
    shutil.copy(source / "COLLINS.prm", folder / "COLLINS.prm")
    built = subprocess.run([compiler, "-O2", "-w", "-o", str(folder / "evalb"), str(folder / "evalb.c")],
                           capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"EVALB did not build with {compiler}: {built.stderr.strip()[:200]}")
    prm = (folder / "COLLINS.prm").read_text()
    _write(folder / "COLLINS-unlabeled.prm", re.sub(r"^LABELED\s+1", "LABELED 0", prm, flags=re.M))
    return folder


@pytest.fixture(scope="module")
def ptb(shared_data_module) -> list[TreeRecord]:
    return read_trees(shared_data_module)


@pytest.fixture(scope="module")
def shared_data_module() -> Path:
    folder = data_root() / "ptb_sample" / "treebank" / "combined"
    if not folder.is_dir():
        pytest.skip(f"PTB sample not found at {folder} (set HICLIP_DATA)")
    return folder


_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d)\s+[\d.]+\s+[\d.]+\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+[\d.]+$")


def run_evalb(folder: Path, gold: Path, test: Path, labeled: bool) -> tuple[list[tuple], dict[str, dict[str, str]]]:
    """EVALB's per-sentence ``(status, length, matched, gold, test, crossing)`` and summaries."""
    prm = folder / ("COLLINS.prm" if labeled else "COLLINS-unlabeled.prm")
    done = subprocess.run([str(folder / "evalb"), "-p", str(prm), str(gold), str(test)],
                          capture_output=True, text=True, check=True)
    rows, summaries, block = [], {}, None
    for line in done.stdout.splitlines():
        if (m := _ROW.match(line)) and block is None:
            _, length, status, matched, n_gold, n_test, crossing, _words = m.groups()
            rows.append((int(status), int(length), int(matched), int(n_gold), int(n_test), int(crossing)))
        elif line.startswith("-- "):
            block = line.strip("- ")
            summaries[block] = {}
        elif block and "=" in line:
            key, value = line.split("=")
            summaries[block][key.strip()] = value.strip()
    return rows, summaries


def _gold_line(r: TreeRecord) -> str:
    return f"(TOP {tree_to_string(r.tree)})"


def _test_line(tree: nltk.Tree, words: list[str], tags: list[str]) -> str:
    """A predicted tree as EVALB reads it: every word under a pre-terminal carrying the gold tag."""
    position = iter(range(len(words)))

    def fmt(node, root: bool = False) -> str:
        if isinstance(node, str) or (len(node) == 1 and isinstance(node[0], str) and not root):
            i = next(position)
            return f"({tags[i]} {escape_leaf(words[i])})"
        return "(" + " ".join([node.label()] + [fmt(c) for c in node]) + ")"

    return fmt(tree, root=True)


def assert_same_counts(ours, rows: list[tuple], summaries: dict) -> None:
    mine = [(s.status, s.length, s.matched, s.gold, s.test, s.crossing) for s in ours.sentences]
    assert len(mine) == len(rows)
    assert [i for i, (a, b) in enumerate(zip(mine, rows)) if a != b][:5] == []
    for title, summary in (("All", ours.all), ("len<=40", ours.short)):
        theirs = summaries[title]
        assert int(theirs["Number of Valid sentence"]) == summary.n_valid
        for key, value in (("Bracketing Recall", summary.recall), ("Bracketing Precision", summary.precision),
                           ("Bracketing FMeasure", summary.f1), ("Complete match", summary.complete_match),
                           ("Average crossing", summary.average_crossing), ("No crossing", summary.no_crossing_rate),
                           ("2 or less crossing", summary.two_or_less_crossing_rate)):
            assert theirs[key] == f"{value:.2f}", (title, key)


def test_collins_prm_is_what_the_defaults_say(evalb):
    assert parse_prm((evalb / "COLLINS.prm").read_text()) == EvalbParams(labeled=True)


@pytest.mark.parametrize("name", ["left", "right", "balanced"])
def test_baselines_reproduce_evalb(evalb, ptb, shared_data_module, tmp_path, name):
    gold = _write(tmp_path / "gold.txt", "".join(_gold_line(r) + "\n" for r in ptb))
    lines = []
    for r in ptb:
        kept = [(w, t) for w, t in zip(r.tokens, r.tags) if t not in COLLINS.delete_labels]
        spans = [(s, e) for s, e, _ in baseline_brackets(name, len(kept))]
        tree = spans_to_tree([w for w, _ in kept], spans, root_label="X")
        lines.append(_test_line(tree, [w for w, _ in kept], [t for _, t in kept]))
    test = _write(tmp_path / "test.txt", "\n".join(lines) + "\n")
    rows, summaries = run_evalb(evalb, gold, test, labeled=False)
    ours = evaluate_tree_files(TreeInputs(gold=str(shared_data_module)), TreeScoreOptions(convention="evalb"), name)
    assert ours.report.all.n_sentences == len(ptb) == 3914 and ours.report.all.n_error == 0
    assert_same_counts(ours.report, rows, summaries)


def test_shipped_model_trees_reproduce_evalb(evalb, ptb, tmp_path, capsys):
    checkpoint = ROOT / "checkpoints" / "tree-transformer-coco-captions"
    if not (checkpoint / "model.safetensors").is_file():
        pytest.skip(f"shipped model not found at {checkpoint}")
    chosen = [r for r in ptb if len(r.surface_tokens()) <= 30][:400]
    gold = _write(tmp_path / "gold.txt", "".join(_gold_line(r) + "\n" for r in chosen))
    sentences = _write(tmp_path / "sentences.txt", "".join(" ".join(r.surface_tokens()) + "\n" for r in chosen))
    out = tmp_path / "pred.jsonl"
    assert main(["induce", "--checkpoint", str(checkpoint), "--data", str(sentences), "--out", str(out),
                 "--no-images", "--device", "cpu"]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    lines = []
    for r, rec in zip(chosen, records):
        tree = parse_bracket_string(rec["text"][0]["tree"])
        tags = [t for t in r.tags if t != "-NONE-"]
        lines.append(_test_line(tree, r.surface_tokens(), tags))
    test = _write(tmp_path / "test.txt", "\n".join(lines) + "\n")
    for labeled in (False, True):
        rows, summaries = run_evalb(evalb, gold, test, labeled)
        flag = ["--labeled"] if labeled else []
        assert main(["score", "trees", "--gold", str(gold), "--pred", str(out), "--convention", "evalb",
                     "--json", *flag]) == 0
        totals = json.loads(capsys.readouterr().out)
        valid = [row for row in rows if row[0] == 0]
        assert len(valid) == len(chosen) and totals["all"]["n_valid"] == len(chosen)
        assert tuple(totals["brackets"].values()) == tuple(sum(row[k] for row in valid) for k in (2, 3, 4))
        ours = evaluate_tree_files(TreeInputs(gold=str(gold), pred=str(out)),
                                   TreeScoreOptions(convention="evalb", labeled=labeled, baselines=False))
        assert_same_counts(ours.report, rows, summaries)


def _perturb(tree: nltk.Tree) -> nltk.Tree:
    """A labeled 'prediction' derived from a gold tree: every 5th bracket flattened, every 11th
    doubled, every 7th relabeled (ADVP <-> PRT, else FOO); function tags kept on some."""
    counter = iter(range(10**9))

    def walk(node: nltk.Tree, root: bool = False) -> list:
        if len(node) == 1 and isinstance(node[0], str):
            return [node.copy(deep=True)]
        k = next(counter)
        children = [c for child in node for c in walk(child)]
        label = node.label() if k % 3 else trim_label(node.label())
        if k % 7 == 2:
            label = {"ADVP": "PRT", "PRT": "ADVP"}.get(trim_label(label), "FOO")
        if not root and k % 5 == 1:
            return children
        made = nltk.Tree(label, children)
        return [nltk.Tree(label, [made])] if k % 11 == 3 else [made]

    return walk(tree, root=True)[0]


def test_labeled_perturbed_gold_reproduces_evalb(evalb, ptb, tmp_path):
    gold = _write(tmp_path / "gold.txt", "".join(_gold_line(r) + "\n" for r in ptb))
    test = _write(tmp_path / "test.txt", "".join(f"(TOP {tree_to_string(_perturb(r.tree))})\n" for r in ptb))
    for labeled in (True, False):
        rows, summaries = run_evalb(evalb, gold, test, labeled)
        ours = evaluate_tree_files(TreeInputs(gold=str(gold), pred=str(test), pred_format="lines"),
                                   TreeScoreOptions(convention="evalb", labeled=labeled, baselines=False))
        assert ours.report.all.n_error == 0 and 0 < ours.report.all.matched < ours.report.all.gold
        assert_same_counts(ours.report, rows, summaries)
