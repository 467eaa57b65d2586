"""``hiclip score trees``: bracket F1 of predicted (or baseline) trees against references.

Examples::

    hiclip score trees --gold $HICLIP_DATA/ptb_sample/treebank/combined --baseline right --convention standard
    hiclip score trees --gold $HICLIP_DATA/coco_captions_parsed/dev_trees.txt --baseline random --convention vgnsl
    hiclip score trees --gold data/shapes --split test --pred runs/x/predictions.jsonl --convention vgnsl --json
    hiclip score trees --pred runs/x/predictions.jsonl --silver --convention standard
    hiclip score trees --gold $HICLIP_DATA/ptb_sample/treebank/combined --baseline right --convention evalb

With ``--pred`` the four trivial baselines are scored on the very same sentences and printed
alongside (``--no-baselines`` turns that off). The work is ``induction.tree_evaluation``;
conventions and metrics: ``induction.spans``, ``induction.tree_scoring`` and ``induction.evalb``.
"""
from __future__ import annotations

import argparse
import json
import sys

from hiclip.data.trees import FORMATS
from induction.evalb import EVALB
from induction.spans import CONVENTIONS
from induction.tree_scoring import BASELINES, EMPTY_GOLD_POLICIES, RANDOM_SCHEMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hiclip score trees``."""
    parser.description = ("Bracket F1 under a named convention: unlabeled sentence- and corpus-level F1 "
                          "(standard, vgnsl), or EVALB's bracket counts (evalb, labeled with --labeled).")
    parser.add_argument("--gold", help="reference trees: .mrg file or folder, one tree per line, VG-NSL "
                                       "unlabeled trees, the VG-NSL join .json, or a dataset manifest; with "
                                       "--silver, any file of sentences (plain text too)")
    parser.add_argument("--gold-format", choices=("auto",) + FORMATS, default="auto",
                        help="format of --gold (default: detected from name and content)")
    parser.add_argument("--gold-tokens", help="token file (one sentence per line) to check one-tree-per-line "
                                              "gold leaves against, e.g. dev_caps.txt for dev_trees.txt")
    parser.add_argument("--gold-tree-key", help="field of the VG-NSL join .json to read (default "
                                                "vgnsl_gold_unlabeled_tree; or benepar_en2_tree)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pred", help="predicted trees: a prediction JSONL (hiclip induce) or any gold format")
    source.add_argument("--baseline", choices=BASELINES, help="score a trivial baseline instead of predictions")
    parser.add_argument("--pred-format", choices=("auto",) + FORMATS, default="auto", help="format of --pred")
    parser.add_argument("--tree-key", help="take each prediction's tree from trees[KEY] (e.g. binary) "
                                           "instead of tree")
    parser.add_argument("--convention", choices=(*CONVENTIONS, EVALB), required=True,
                        help="standard: Kim et al. 2019 (punctuation dropped, trivial spans discarded, "
                             "sentence F1); vgnsl: Shi et al. 2019 (whole-caption span counted, corpus F1); "
                             "evalb: what the C EVALB counts with COLLINS.prm (every bracket as a multiset, "
                             "bracket F1; unlabeled unless --labeled)")
    parser.add_argument("--labeled", action="store_true",
                        help="with --convention evalb: labeled bracketing (COLLINS.prm's LABELED 1, "
                             "ADVP = PRT); the default is LABELED 0, since predicted trees carry no labels")
    parser.add_argument("--split", help="only records of this split (manifest, prediction JSONL, VG-NSL .json)")
    parser.add_argument("--silver", nargs="?", const="spacy", choices=("spacy", "benepar"),
                        help="use silver trees as gold: parse the sentences of --gold (or, without --gold, "
                             "of --pred) with spaCy (default) or benepar")
    parser.add_argument("--silver-model", help="spaCy model package or benepar model name")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 averaged by the random baseline (5)")
    parser.add_argument("--random-scheme", choices=RANDOM_SCHEMES, default="split",
                        help="random binary trees: uniform split points (default) or compound-pcfg's "
                             "shift-reduce coin flips")
    parser.add_argument("--empty-gold", choices=EMPTY_GOLD_POLICIES, default="prpn",
                        help="sentence F1 of a sentence with no gold spans: prpn = 1 if the prediction has "
                             "none either, else 0 (default); skip = leave out a sentence whose gold or predicted set is empty "
                             "(compound-pcfg's early eval.py)")
    parser.add_argument("--max-length", type=int, help="only sentences of at most this many tokens "
                                                       "(after the convention drops tokens)")
    parser.add_argument("--on-mismatch", choices=("raise", "skip"), default="raise",
                        help="a sentence whose tokens differ between pred and gold (or gold leaves and "
                             "--gold-tokens): stop with an error (default) or skip and count it")
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                        help="a malformed line or a caption without a tree: stop (default) or skip and count")
    parser.add_argument("--no-baselines", action="store_true",
                        help="with --pred, do not score the trivial baselines on the same sentences")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _fmt(value: str) -> str | None:
    return None if value == "auto" else value


def run(args: argparse.Namespace) -> int:
    """Score and print; returns 0 (errors are raised as HiCLIPError)."""
    from induction.tree_evaluation import TreeInputs, TreeScoreOptions, evaluate_tree_files

    inputs = TreeInputs(gold=args.gold, gold_format=_fmt(args.gold_format), gold_tokens=args.gold_tokens,
                        gold_tree_key=args.gold_tree_key, pred=args.pred, pred_format=_fmt(args.pred_format),
                        tree_key=args.tree_key, split=args.split, silver=args.silver,
                        silver_model=args.silver_model, on_error=args.on_error, on_mismatch=args.on_mismatch)
    options = TreeScoreOptions(convention=args.convention, empty_gold=args.empty_gold, seeds=args.seeds,
                               random_scheme=args.random_scheme, max_length=args.max_length,
                               on_mismatch=args.on_mismatch, baselines=not args.no_baselines,
                               labeled=args.labeled)
    evaluation = evaluate_tree_files(inputs, options, args.baseline)
    if args.json:
        json.dump(evaluation.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(evaluation.format())
    return 0
