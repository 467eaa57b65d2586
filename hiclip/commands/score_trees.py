"""``hiclip score trees``: unlabeled bracket F1 of predicted (or baseline) trees against references.

Examples::

    hiclip score trees --gold $HICLIP_DATA/ptb_sample/treebank/combined --baseline right --convention standard
    hiclip score trees --gold $HICLIP_DATA/coco_captions_parsed/dev_trees.txt --baseline random --convention vgnsl
    hiclip score trees --gold data/shapes --split test --pred runs/x/predictions.jsonl --convention vgnsl --json
    hiclip score trees --pred runs/x/predictions.jsonl --silver --convention standard

With ``--pred`` the four trivial baselines are scored on the very same sentences and printed
alongside (``--no-baselines`` turns that off). Conventions and metrics: ``induction.spans`` and
``induction.tree_scoring``.
"""
from __future__ import annotations

import argparse
import json
import sys

from hiclip.data.trees import FORMATS, SPLIT_FORMATS, TreeRecord, detect_format, read_token_lines, read_trees
from hiclip.errors import HiCLIPError, SkipReport
from induction.spans import CONVENTIONS, get_convention
from induction.tree_scoring import (
    BASELINES,
    EMPTY_GOLD_POLICIES,
    RANDOM_SCHEMES,
    ScoreReport,
    format_report,
    pair_trees,
    score_baseline_paired,
    score_paired,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hiclip score trees``."""
    parser.description = "Unlabeled bracket F1 (sentence- and corpus-level) under a named convention."
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
    parser.add_argument("--convention", choices=tuple(CONVENTIONS), required=True,
                        help="standard: Kim et al. 2019 (punctuation dropped, trivial spans discarded, "
                             "sentence F1); vgnsl: Shi et al. 2019 (whole-caption span counted, corpus F1)")
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
                             "none either, else 0 (default); skip = leave it out (compound-pcfg eval.py)")
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


def _read(path: str, fmt: str | None, args: argparse.Namespace, tree_key: str | None,
          tokens_path: str | None, report: SkipReport) -> list[TreeRecord]:
    """Read trees; ``--split`` filters the formats whose records name a split (others are whole)."""
    fmt = fmt or detect_format(path)
    split = args.split if fmt in SPLIT_FORMATS else None
    return read_trees(path, fmt, tokens_path=tokens_path, split=split, tree_key=tree_key, report=report)


def _check_split(args: argparse.Namespace) -> None:
    """``--split`` must apply to at least one input, or it would be silently ignored."""
    if args.split is None:
        return
    paths = [(args.gold, args.gold_format), (args.pred, args.pred_format)]
    formats = [_fmt(f) or detect_format(p) for p, f in paths if p]
    if not any(f in SPLIT_FORMATS for f in formats):
        raise HiCLIPError(f"--split {args.split} applies to manifests, prediction JSONL and the VG-NSL .json; "
                          f"none of the inputs is one ({', '.join(formats)})")


class _SplitPolicy(SkipReport):
    """Applies --on-mismatch to 'leaves differ' problems and --on-error to everything else."""

    def __init__(self, on_error: str, on_mismatch: str) -> None:
        super().__init__("skip")
        self.on_error = on_error
        self.on_mismatch = on_mismatch

    def handle(self, error: HiCLIPError, reason: str) -> None:
        policy = self.on_mismatch if "differ" in reason or "mismatch" in reason else self.on_error
        if policy == "raise":
            raise error
        super().handle(error, reason)


def load_gold(args: argparse.Namespace, preds: list[TreeRecord] | None) -> tuple[list[TreeRecord], str]:
    """Read the reference trees (or make silver ones) and describe them in one line."""
    policy = _SplitPolicy(args.on_error, args.on_mismatch)
    if args.silver:
        from induction.silver import make_silver_parser, silver_records

        if args.gold:
            fmt = _fmt(args.gold_format) or detect_format(args.gold)
            if fmt == "plain":
                sentences = read_token_lines(args.gold)
            else:
                sentences = _read(args.gold, fmt, args, args.gold_tree_key, args.gold_tokens, policy)
            origin = args.gold
        elif preds is not None:
            sentences, origin = preds, args.pred
        else:
            raise HiCLIPError("--silver needs --gold (sentences to parse) or --pred")
        parser = make_silver_parser(args.silver, args.silver_model)
        golds = silver_records(parser, sentences)
        return golds, f"silver trees ({args.silver} parser) of the sentences of {origin}"
    if not args.gold:
        raise HiCLIPError("--gold is required (or use --silver to parse the predicted sentences)")
    fmt = _fmt(args.gold_format) or detect_format(args.gold)
    if fmt == "plain":
        raise HiCLIPError(f"{args.gold} holds plain sentences, not trees: add --silver to parse them")
    golds = _read(args.gold, fmt, args, args.gold_tree_key, args.gold_tokens, policy)
    if not golds:
        raise HiCLIPError(f"{args.gold}: no reference trees" + (f" in split {args.split!r}" if args.split else ""))
    return golds, f"{args.gold} ({fmt}, {len(golds)} trees)"


def run(args: argparse.Namespace) -> int:
    """Score and print; returns 0 (errors are raised as HiCLIPError)."""
    convention = get_convention(args.convention)
    if args.gold_tokens and args.silver:
        raise HiCLIPError("--gold-tokens checks gold trees; it cannot be combined with --silver")
    _check_split(args)
    preds = None
    if args.pred:
        preds = _read(args.pred, _fmt(args.pred_format), args, args.tree_key, None,
                      _SplitPolicy(args.on_error, args.on_mismatch))
        if not preds:
            raise HiCLIPError(f"{args.pred}: no predicted trees" + (f" in split {args.split!r}" if args.split else ""))
    golds, gold_text = load_gold(args, preds)
    mismatch = SkipReport(args.on_mismatch)
    corpus = pair_trees(preds, golds, convention, mismatch, args.max_length)
    if not corpus.golds:
        raise HiCLIPError(f"no sentence could be scored ({', '.join(f'{k}: {v}' for k, v in corpus.skipped.items())})")
    baselines: dict[str, ScoreReport] = {}
    if preds is not None:
        report = score_paired(corpus, args.empty_gold)
        if not args.no_baselines:
            for name in BASELINES:
                baselines[name] = score_baseline_paired(corpus, name, args.seeds, args.empty_gold, args.random_scheme)
    else:
        report = score_baseline_paired(corpus, args.baseline, args.seeds, args.empty_gold, args.random_scheme)
    if args.json:
        out = report.to_dict()
        out["gold"] = gold_text
        if baselines:
            out["baselines"] = {name: _summary(r) for name, r in baselines.items()}
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_report(report, gold_text))
        if baselines:
            print(f"baselines on the same {report.n_scored} sentences   sentence F1   corpus F1   P      R")
            for name, r in baselines.items():
                std = r.std or {}
                s_f1 = f"{r.sentence_f1:5.1f}" + (f" ± {std['sentence_f1']:.1f}" if std else "")
                c_f1 = f"{r.corpus_f1:5.1f}" + (f" ± {std['corpus_f1']:.1f}" if std else "")
                print(f"  {r.prediction:<42} {s_f1:<13} {c_f1:<11} {r.precision:5.1f}  {r.recall:5.1f}")
    return 0


def _summary(report: ScoreReport) -> dict:
    keys = ("prediction", "sentence_f1", "corpus_f1", "precision", "recall", "n_scored", "n_sentence_f1",
            "spans", "seeds", "std")
    full = report.to_dict()
    return {k: full[k] for k in keys if k in full}
