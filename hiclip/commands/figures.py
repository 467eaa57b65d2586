"""``hiclip figures``: qualitative and quantitative figures of one or more systems on a dataset.

Systems are checkpoints (``--checkpoint``, ``--compare NAME=CKPT``: induced in memory exactly as
``hiclip induce`` would) or prediction files (``--pred NAME=PRED.jsonl``). Every number drawn is
the one ``hiclip score trees`` / ``hiclip score groups`` report for the same predictions, data and
convention (``viz.figures``, ``induction.evaluation``). Writes ``<out>/samples/<id>/*``,
``<out>/quantitative/*``, ``<out>/training_curves.*`` with ``--run``, and ``<out>/figures.json``
(every file, caption and number, with each number's metric, convention, parameters and n).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hiclip.errors import HiCLIPError


def _named(text: str) -> tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` (name: the file or folder name)."""
    if "=" in text:
        name, path = text.split("=", 1)
        if not name or not path:
            raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
        return name, path
    return Path(text).stem or text, text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint folder (hiclip.save) of the main system (its samples are drawn)")
    parser.add_argument("--data", required=True, help="dataset (any format open_dataset reads)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--split", default=None, help="use one split of the dataset (default: all)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--samples", nargs="+", default=None, metavar="ID",
                       help="sample ids for the qualitative figures")
    which.add_argument("--random", type=int, default=None, metavar="N",
                       help="N random samples for the qualitative figures")
    which.add_argument("--informative", type=int, default=None, metavar="N",
                       help="N samples drawn among those showing the most (several groups and objects, "
                            "long captions); the default, with N = 3")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample choice")
    parser.add_argument("--run", type=Path, default=None, help="training run folder (metrics.jsonl)")
    parser.add_argument("--pred", action="append", type=_named, default=[], metavar="[NAME=]PRED.jsonl",
                        help="prediction JSONL of a system to draw (repeatable)")
    parser.add_argument("--compare", action="append", type=_named, default=[], metavar="[NAME=]CKPT",
                        help="another checkpoint to compare, e.g. the vanilla CLIP twin (repeatable)")
    parser.add_argument("--format", choices=["png", "pdf", "svg"], default="png", help="figure format")
    parser.add_argument("--convention", choices=["standard", "vgnsl"], default="standard",
                        help="bracket F1 convention of the tree plots (default %(default)s, the tables' headline)")
    parser.add_argument("--text-tau", type=float, default=0.8,
                        help="word link threshold the link bars and per-layer trees shade (drawing only)")
    parser.add_argument("--image-tau", type=float, default=0.5,
                        help="patch link threshold of the groups induced from a checkpoint "
                             "(hiclip induce's --tau; prediction files keep their own)")
    parser.add_argument("--no-quantitative", action="store_true", help="only the per-sample figures")
    parser.add_argument("--no-samples", action="store_true", help="only the quantitative figures")


def system_name(model, folder: Path) -> str:
    kind = "HiCLIP" if model.config.hierarchy else "CLIP"
    return f"{kind} ({folder.name})"


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    import hiclip
    from hiclip.atomic import check_writable
    from hiclip.data import open_dataset
    from induction.evaluation import EvaluationOptions, evaluate_system, gold_trees
    from induction.group_evaluation import GroupEvalOptions, ground_truth
    from induction.induce import GroupOptions, InduceOptions, induce_predictions
    from induction.predictions import read_predictions
    from viz import figures

    if args.checkpoint is None and not args.compare and not args.pred:
        raise HiCLIPError("give --checkpoint, --compare or --pred: at least one system to draw")
    for path in [args.checkpoint] + [Path(p) for _, p in args.compare]:
        if path is not None and not path.is_dir():
            raise HiCLIPError(f"--checkpoint {path}: not a folder")
    for n in (args.random, args.informative):
        if n is not None and n < 1:
            raise HiCLIPError(f"--random / --informative must be at least 1, got {n}")
    check_writable(args.out, folder=True)
    dataset = open_dataset(args.data, split=args.split)
    if len(dataset) == 0:
        raise HiCLIPError(f"{args.data}: no samples")
    samples = list(dataset)
    if args.samples:
        figures.choose_samples(samples, args.samples)  # unknown ids fail before any work
    golds, gold_text = gold_trees(args.data, args.split)
    truth = ground_truth(samples) if any(s.masks for s in samples) else None
    # the figures draw the per-layer scores; the gt-granularity section is the report's and score groups'
    options = EvaluationOptions(split=args.split, groups=GroupEvalOptions(level="all", baseline_level="best",
                                                                          baselines=(), granularity=False))
    induce_options = InduceOptions(groups=GroupOptions(tau=args.image_tau))

    systems = []
    checkpoints = ([(None, args.checkpoint)] if args.checkpoint is not None else []) + \
        [(name, Path(path)) for name, path in args.compare]
    for name, folder in checkpoints:
        model, tokenizer = hiclip.load(folder)
        model.eval()
        name = name or system_name(model, folder)
        with torch.inference_mode(), tqdm(total=len(samples), desc=f"induce {name}", unit="sample") as bar:
            predictions = induce_predictions(model, tokenizer, samples, induce_options, str(folder),
                                             progress=bar.update)
        systems.append(evaluate_system(name, predictions, options, golds, gold_text, truth, str(args.data)))
    for name, path in args.pred:
        systems.append(evaluate_system(name, read_predictions(path, args.split), options, golds, gold_text,
                                       truth, str(args.data)))
    with tqdm(desc="figures", unit="figure") as bar:
        def step(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update(1)

        index = figures.draw_figures(
            systems, samples, args.out, golds=golds, sample_ids=args.samples,
            n_samples=0 if args.no_samples else args.random or args.informative or 3, seed=args.seed, informative=args.random is None,
            run=args.run, fmt=args.format, convention=args.convention, text_tau=args.text_tau,
            quantitative=not args.no_quantitative, progress=step)
    for reason in index.get("quantitative", {}).get("skipped", []):
        print(f"skipped {reason}")
    print(f"{len(index['samples'])} samples, {len(index.get('quantitative', {}).get('files', {}))} "
          f"quantitative figures; wrote {index['index']}")
    return 0
