"""``hiclip induce``: trees and segment hierarchies from a checkpoint, written as prediction JSONL."""
from __future__ import annotations

import argparse
import json
import time
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
                             "(skip decodes every image first, so undecodable ones are skipped too)")
    parser.add_argument("--image-root", default=None,
                        help="folder image paths are relative to and must stay in "
                             "(default: the dataset's folder)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-text", action="store_true", help="skip captions")
    parser.add_argument("--no-images", action="store_true", help="skip images")
    trees = parser.add_argument_group("trees (method.md 5)")
    trees.add_argument("--algorithm", choices=("tree_transformer", "binary"), default="tree_transformer",
                       help="primary tree written under 'tree' (all are written under 'trees')")
    trees.add_argument("--start-layer", type=int, default=None, help="0-based; default the top layer")
    trees.add_argument("--min-layer", type=int, default=2, help="0-based minimum layer (default 2)")
    trees.add_argument("--break-threshold", type=float, default=0.8)
    trees.add_argument("--descend-threshold", type=float, default=0.7)
    trees.add_argument("--quantiles", type=float, nargs=2, metavar=("BREAK_Q", "DESCEND_Q"), default=None,
                       help="per-layer quantile thresholds instead of absolute ones")
    trees.add_argument("--quantile-scope", choices=("corpus", "sentence"), default="corpus")
    groups = parser.add_argument_group("image groups (method.md 5)")
    groups.add_argument("--tau", type=float, default=0.5, help="link threshold joining neighbouring patches")
    groups.add_argument("--tau-quantile", action="store_true", help="--tau is a per-layer quantile")
    groups.add_argument("--label-maps", action="store_true",
                        help="also save each layer's groups at image resolution as PNG")
    groups.add_argument("--snap-superpixels", action="store_true",
                        help="snap label maps to SLIC superpixels (implies --label-maps)")
    groups.add_argument("--superpixels", type=int, default=100, help="SLIC n_segments")
    groups.add_argument("--compactness", type=float, default=10.0, help="SLIC compactness")


def options_from_args(args: argparse.Namespace):
    from induction.induce import GroupOptions, InduceOptions, TreeOptions

    if args.batch_size < 1:
        raise HiCLIPError(f"--batch-size must be >= 1, got {args.batch_size}")
    return InduceOptions(
        trees=TreeOptions(args.algorithm, args.start_layer, args.min_layer, args.break_threshold,
                          args.descend_threshold, tuple(args.quantiles) if args.quantiles else None,
                          args.quantile_scope),
        groups=GroupOptions(args.tau, args.tau_quantile, args.label_maps or args.snap_superpixels,
                            args.snap_superpixels, args.superpixels, args.compactness),
        batch_size=args.batch_size, text=not args.no_text, images=not args.no_images)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()  # the whole run: loading the model and data included
    import torch
    from tqdm import tqdm

    import hiclip
    from hiclip.atomic import check_writable
    from hiclip.data import open_dataset
    from hiclip.data.trees import read_token_lines
    from induction.induce import induce_samples, induce_sentences
    from induction.predictions import write_predictions

    options = options_from_args(args)
    check_writable(args.out)
    model, tokenizer = hiclip.load(args.checkpoint, map_location=args.device)
    model.eval()
    data = Path(str(args.data))
    checkpoint = str(args.checkpoint)
    if data.is_file() and data.suffix.lower() in TEXT_SUFFIXES:
        lines = read_token_lines(data)
        empty = [line.line for line in lines if not line.tokens]
        if empty:
            raise HiCLIPError(f"{data}:{empty[0]}: empty line ({len(empty)} empty lines in all)")
        sentences = [line.tokens for line in lines][: args.limit]
        with torch.inference_mode(), tqdm(total=len(sentences), desc="induce", unit="sent") as bar:
            count = write_predictions(induce_sentences(model, tokenizer, sentences, options, checkpoint,
                                                       bar.update), args.out)
        skipped = "skipped 0"
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
            count = write_predictions(induce_samples(model, tokenizer, samples, options, checkpoint, label_dir,
                                                     bar.update, text_bar.update), args.out)
        skipped = dataset.skips.summary()
    seconds = time.perf_counter() - started
    print(json.dumps({"out": str(args.out), "records": count, "seconds": round(seconds, 2),
                      "model": model.config.name, "hierarchy": bool(model.config.hierarchy),
                      "skips": skipped}))
    return 0
