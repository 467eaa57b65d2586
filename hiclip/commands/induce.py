"""``hiclip induce``: trees and segment hierarchies from a checkpoint, written as prediction JSONL."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from hiclip.errors import HiCLIPError

TEXT_SUFFIXES = (".txt", ".tok", ".caps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder (hiclip.save)")
    parser.add_argument("--data", required=True,
                        help="dataset (manifest folder, CSV, COCO root, shards, image folder) or a plain "
                             "text file with one tokenized sentence per line")
    parser.add_argument("--out", required=True, type=Path, help="prediction JSONL to write")
    parser.add_argument("--split", default=None, help="only this split (e.g. test)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                        help="bad samples: stop with an error (default) or skip and count them "
                             "(skip decodes every image first, so undecodable ones are skipped too; "
                             "a sentence over the model's length limit is skipped and counted)")
    parser.add_argument("--tokenize", choices=("whitespace", "treebank"), default="whitespace",
                        help="how a line or caption becomes words: split on whitespace (already "
                             "tokenised, the default) or lower-cased and split as the Penn Treebank "
                             "does (nltk's TreebankWordTokenizer: punctuation as separate words)")
    parser.add_argument("--image-root", default=None,
                        help="folder image paths are relative to and must stay in "
                             "(default: the dataset's folder)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-text", action="store_true", help="skip captions")
    parser.add_argument("--no-images", action="store_true", help="skip images")
    trees = parser.add_argument_group("trees (method.md 5)")
    trees.description = ("Defaults: the checkpoint's recommended parser and thresholds when its "
                         "config.json names them (extra.recommended_trees), else tree_transformer, "
                         "top layer, min layer 2, 0.8 / 0.7; a flag given here overrides either.")
    trees.add_argument("--algorithm", choices=("tree_transformer", "binary"), default=None,
                       help="primary tree written under 'tree' (all are written under 'trees')")
    trees.add_argument("--start-layer", type=int, default=None, help="0-based; default the top layer")
    trees.add_argument("--min-layer", type=int, default=None, help="0-based minimum layer (default 2)")
    trees.add_argument("--break-threshold", type=float, default=None, help="default 0.8")
    trees.add_argument("--descend-threshold", type=float, default=None, help="default 0.7")
    trees.add_argument("--quantiles", type=float, nargs=2, metavar=("BREAK_Q", "DESCEND_Q"), default=None,
                       help="per-layer quantile thresholds instead of absolute ones")
    trees.add_argument("--quantile-scope", choices=("corpus", "sentence"), default=None,
                       help="default corpus")
    groups = parser.add_argument_group("image groups (method.md 5)")
    groups.add_argument("--tau", type=float, default=0.5, help="link threshold joining neighbouring patches")
    groups.add_argument("--tau-quantile", action="store_true", help="--tau is a per-layer quantile")
    groups.add_argument("--label-maps", action="store_true",
                        help="also save each layer's groups at image resolution as PNG")
    groups.add_argument("--snap-superpixels", action="store_true",
                        help="snap label maps to SLIC superpixels (implies --label-maps)")
    groups.add_argument("--superpixels", type=int, default=100, help="SLIC n_segments")
    groups.add_argument("--compactness", type=float, default=10.0, help="SLIC compactness")


TREE_FLAGS = {"algorithm": "algorithm", "start_layer": "start_layer", "min_layer": "min_layer",
              "break_threshold": "break_threshold", "descend_threshold": "descend_threshold",
              "quantiles": "quantiles", "quantile_scope": "quantile_scope"}


def options_from_args(args: argparse.Namespace, recommended=None):
    """The run's options: tree flags given on the command line over ``recommended`` (a
    checkpoint's :class:`TreeOptions`, or None) over the built-in defaults."""
    from dataclasses import replace

    from induction.induce import GroupOptions, InduceOptions, TreeOptions

    if args.batch_size < 1:
        raise HiCLIPError(f"--batch-size must be >= 1, got {args.batch_size}")
    given = {field: getattr(args, flag) for field, flag in TREE_FLAGS.items() if getattr(args, flag, None) is not None}
    if "quantiles" in given:
        given["quantiles"] = tuple(given["quantiles"])
    trees = replace(recommended or TreeOptions(), **given)
    return InduceOptions(
        trees=trees,
        groups=GroupOptions(args.tau, args.tau_quantile, args.label_maps or args.snap_superpixels,
                            args.snap_superpixels, args.superpixels, args.compactness),
        batch_size=args.batch_size, text=not args.no_text, images=not args.no_images,
        words=args.tokenize)


def tree_source(args: argparse.Namespace, recommended) -> str:
    """Where the run's tree options came from, for the records' model info."""
    flags = [flag for flag in TREE_FLAGS.values() if getattr(args, flag, None) is not None]
    base = "checkpoint (extra.recommended_trees)" if recommended is not None else "built-in defaults"
    return base + (f", overridden by --{', --'.join(f.replace('_', '-') for f in flags)}" if flags else "")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()  # the whole run: loading the model and data included
    import torch
    from tqdm import tqdm

    import hiclip
    from hiclip.atomic import check_writable
    from hiclip.checkpoint import read_extra
    from hiclip.data import open_dataset
    from hiclip.data.trees import read_token_lines
    from hiclip.errors import SkipReport
    from hiclip.tokenizer import split_words
    from induction.induce import (WordCounts, drop_over_limit, induce_samples, induce_sentences,
                                  model_info, recommended_tree_options, tally)
    from induction.predictions import write_predictions

    recommended = recommended_tree_options(read_extra(args.checkpoint), str(args.checkpoint / "config.json"))
    options = options_from_args(args, recommended)
    check_writable(args.out)
    model, tokenizer = hiclip.load(args.checkpoint, map_location=args.device)
    model.eval()
    data = Path(str(args.data))
    checkpoint = str(args.checkpoint)
    info = model_info(model, checkpoint)
    info.extra["trees"] = {"options": asdict(options.trees), "source": tree_source(args, recommended),
                           "tokenize": options.words}
    report = SkipReport(args.on_error)
    words = WordCounts()
    if data.is_file() and data.suffix.lower() in TEXT_SUFFIXES:
        lines = read_token_lines(data)[: args.limit]
        empty = [line.line for line in lines if not line.tokens]
        if empty:
            raise HiCLIPError(f"{data}:{empty[0]}: empty line ({len(empty)} empty lines in all)")
        sentences = [line.tokens if options.words == "whitespace" else split_words(" ".join(line.tokens), options.words)
                     for line in lines]
        kept = drop_over_limit(model, tokenizer, sentences, [f"{data}:{line.line}" for line in lines], report)
        sentences, ids = [sentences[k] for k in kept], [str(lines[k].line) for k in kept]
        with torch.inference_mode(), tqdm(total=len(sentences), desc="induce", unit="sent") as bar:
            count = write_predictions(tally(induce_sentences(model, tokenizer, sentences, options, checkpoint,
                                                             bar.update, ids, info), words), args.out)
        skipped = report.summary()
    else:
        dataset = open_dataset(args.data, split=args.split, on_error=args.on_error,
                               check_images="full" if args.on_error == "skip" else "header",
                               image_root=args.image_root)
        samples = dataset.samples[: args.limit]
        if not samples:
            raise HiCLIPError(f"{args.data}: no samples" + (f" in split {args.split!r}" if args.split else ""))
        label_dir = args.out.parent / (args.out.stem + "_labels")
        n_captions = sum(len(s.captions) for s in samples) if options.text else 0
        with torch.inference_mode(), \
                tqdm(total=n_captions, desc="induce captions", unit="caption", disable=not n_captions) as text_bar, \
                tqdm(total=len(samples), desc="induce images", unit="sample") as bar:
            count = write_predictions(tally(induce_samples(model, tokenizer, samples, options, checkpoint,
                                                           label_dir, bar.update, text_bar.update, report, info),
                                            words), args.out)
        skipped = dataset.skips.summary()
        if report.total:
            skipped = f"{skipped}; captions {report.summary()}"
    seconds = time.perf_counter() - started
    print(json.dumps({"out": str(args.out), "records": count, "seconds": round(seconds, 2),
                      "model": model.config.name, "hierarchy": bool(model.config.hierarchy),
                      "tree": f"{options.trees.algorithm} ({tree_source(args, recommended)})",
                      "tokenize": options.words, **asdict(words), "skips": skipped}))
    return 0
