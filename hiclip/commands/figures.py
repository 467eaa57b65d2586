"""``hiclip figures``: qualitative and quantitative figures from a checkpoint and a dataset.

Writes ``<out>/samples/<id>/*`` (trees and groups across layers for chosen or random samples),
``<out>/quantitative/*`` (F1 by layer and by threshold, models vs baselines, groups by layer),
``<out>/training_curves.*`` with ``--run``, and ``<out>/figures.json`` listing every file and
the numbers plotted. See ``viz.figures`` for the list of figures.
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
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder (hiclip.save)")
    parser.add_argument("--data", required=True, help="dataset (any format open_dataset reads)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--split", default=None, help="use one split of the dataset (default: all)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--samples", nargs="+", default=None, metavar="ID",
                       help="sample ids for the qualitative figures")
    which.add_argument("--random", type=int, default=4, metavar="N",
                       help="number of random samples for the qualitative figures (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample choice")
    parser.add_argument("--run", type=Path, default=None, help="training run folder (metrics.jsonl)")
    parser.add_argument("--pred", action="append", type=_named, default=[], metavar="[NAME=]PRED.jsonl",
                        help="prediction JSONL of another system to compare (repeatable)")
    parser.add_argument("--compare", action="append", type=_named, default=[], metavar="[NAME=]CKPT",
                        help="another checkpoint to compare, e.g. the vanilla CLIP twin (repeatable)")
    parser.add_argument("--format", choices=["png", "pdf", "svg"], default="png", help="figure format")
    parser.add_argument("--convention", choices=["vgnsl", "standard"], default="vgnsl",
                        help="bracket F1 convention (default %(default)s)")
    parser.add_argument("--text-tau", type=float, default=0.8, help="word link threshold for merged groups")
    parser.add_argument("--image-tau", type=float, default=0.6, help="patch link threshold for groups")
    parser.add_argument("--max-captions", type=int, default=500, help="captions scored per model")
    parser.add_argument("--max-images", type=int, default=200, help="images scored per model")
    parser.add_argument("--no-quantitative", action="store_true", help="only the per-sample figures")


def _model_name(model, folder: Path) -> str:
    kind = "HiCLIP" if model.config.hierarchy else "CLIP"
    return f"{kind} ({folder.name})"


def run(args: argparse.Namespace) -> int:
    import hiclip
    from hiclip.atomic import check_writable
    from hiclip.data import open_dataset
    from viz import figures

    if not args.checkpoint.is_dir():
        raise HiCLIPError(f"--checkpoint {args.checkpoint}: not a folder")
    if args.random is not None and args.random < 1:
        raise HiCLIPError(f"--random must be at least 1, got {args.random}")
    check_writable(args.out, folder=True)  # before any work
    dataset = open_dataset(args.data, split=args.split)
    if len(dataset) == 0:
        raise HiCLIPError(f"{args.data}: no samples")
    model, tokenizer = hiclip.load(args.checkpoint)
    model.eval()
    out = args.out
    index: dict = {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split,
                   "samples": {}}

    chosen = figures.choose_samples(dataset, args.samples, args.random, args.seed)
    for sample in chosen:
        index["samples"][sample.id] = figures.sample_figures(
            model, tokenizer, sample, out / "samples" / sample.id, args.format,
            text_tau=args.text_tau, image_tau=args.image_tau)
        print(f"{sample.id}: {len(index['samples'][sample.id])} figures")

    if not args.no_quantitative:
        models = [figures.model_links(model, tokenizer, dataset, _model_name(model, args.checkpoint),
                                      args.max_captions, args.max_images)]
        for name, path in args.compare:
            other, other_tok = hiclip.load(path)
            models.append(figures.model_links(other.eval(), other_tok, dataset, name,
                                              args.max_captions, args.max_images))
        for name, path in args.pred:
            models.append(figures.prediction_links(path, dataset, name))
        quantitative = figures.quantitative_figures(models, out / "quantitative", args.format,
                                                    args.convention, args.image_tau)
        index["quantitative"] = quantitative
        for reason in quantitative["numbers"]["skipped"]:
            print(f"skipped {reason}")
        print(f"quantitative: {len(quantitative['files'])} figures")
    if args.run is not None:
        index["training_curves"] = figures.training_figure(args.run, out, args.format)
        print(f"training curves: {index['training_curves']}")
    path = figures.write_index(index, out)
    print(f"wrote {path}")
    return 0
