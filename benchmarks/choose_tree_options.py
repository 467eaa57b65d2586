"""Choose a checkpoint's parser and thresholds on a validation split, and optionally record them.

Re-parses one prediction JSONL (``hiclip induce`` on the validation sentences) from its stored
links under a grid of tree options, scores every variant with the scorer ``hiclip score trees``
uses (``induction.evaluation.evaluate_tree_variants``, same gold sentences, same convention),
prints the table best first, and with ``--write CHECKPOINT`` stores the best as the checkpoint's
``extra.recommended_trees``, which ``hiclip induce`` then uses by default.

    hiclip induce --checkpoint CK --data runs/caps_val.txt --out runs/val_pred.jsonl
    python benchmarks/choose_tree_options.py --pred runs/val_pred.jsonl --gold runs/trees_val.txt \
        --convention vgnsl --chosen-on "COCO dev captions 3,501-4,000" [--write CK]

The grid: the parameter-free binary parser; the Tree-Transformer parser at minimum layers 0-2
with absolute (break, descend) thresholds and with per-layer corpus quantiles.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from itertools import product

from hiclip.checkpoint import update_extra
from induction.evaluation import evaluate_tree_variants
from induction.induce import RECOMMENDED_TREES_KEY, TreeOptions
from induction.predictions import read_predictions
from induction.tree_evaluation import TreeScoreOptions, read_tree_records

ABSOLUTE = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
QUANTILES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MIN_LAYERS = (0, 1, 2)


@dataclass
class Variant:
    options: TreeOptions
    corpus_f1: float
    sentence_f1: float
    precision: float
    recall: float
    n_scored: int


def grid() -> dict[str, TreeOptions]:
    variants = {"binary": TreeOptions(algorithm="binary")}
    for m, b, d in product(MIN_LAYERS, ABSOLUTE, ABSOLUTE):
        if d <= b:
            variants[f"tt min{m} abs {b}/{d}"] = TreeOptions(min_layer=m, break_threshold=b, descend_threshold=d)
    for m, b, d in product(MIN_LAYERS, QUANTILES, QUANTILES):
        if d <= b:
            variants[f"tt min{m} q {b}/{d}"] = TreeOptions(min_layer=m, quantiles=(b, d))
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", required=True, help="prediction JSONL of the validation sentences")
    parser.add_argument("--gold", required=True, help="their reference trees")
    parser.add_argument("--convention", default="vgnsl")
    parser.add_argument("--metric", choices=("corpus_f1", "sentence_f1"), default="corpus_f1")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--chosen-on", default="", help="what the validation split is, stored with the choice")
    parser.add_argument("--write", help="checkpoint folder to store the best options in")
    args = parser.parse_args()

    predictions = read_predictions(args.pred)
    golds = read_tree_records(args.gold)
    options = grid()
    evaluations = evaluate_tree_variants(predictions, golds, TreeScoreOptions(convention=args.convention), options)
    rows = [Variant(options[key], e.report.corpus_f1, e.report.sentence_f1, e.report.precision, e.report.recall,
                    e.report.n_scored) for key, e in evaluations.items()]
    keys = list(evaluations)
    order = sorted(range(len(rows)), key=lambda i: -getattr(rows[i], args.metric))
    print(f"{len(rows)} variants, {rows[0].n_scored} sentences, convention {args.convention}, best by {args.metric}")
    print("| variant | corpus F1 | sentence F1 | P / R |\n|---|---|---|---|")
    for i in order[: args.top]:
        r = rows[i]
        print(f"| {keys[i]} | {r.corpus_f1:.1f} | {r.sentence_f1:.1f} | {r.precision:.1f} / {r.recall:.1f} |")
    binary = rows[keys.index("binary")]
    print(f"| binary (for reference) | {binary.corpus_f1:.1f} | {binary.sentence_f1:.1f} | "
          f"{binary.precision:.1f} / {binary.recall:.1f} |")
    best = rows[order[0]]
    chosen = {**asdict(best.options), "chosen_on": f"{args.chosen_on}: {args.convention} {args.metric} "
                                                    f"{getattr(best, args.metric):.1f} over {len(rows)} variants"}
    print(json.dumps({"best": keys[order[0]], RECOMMENDED_TREES_KEY: chosen}))
    if args.write:
        update_extra(args.write, {RECOMMENDED_TREES_KEY: chosen})
        print(f"wrote extra.{RECOMMENDED_TREES_KEY} to {args.write}/config.json")


if __name__ == "__main__":
    main()
