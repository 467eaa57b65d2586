"""``hiclip data shapes``: generate the synthetic shapes dataset (images, masks, captions, trees)."""
from __future__ import annotations

import argparse

from hiclip.data.shapes import ShapesConfig, generate_dataset
from hiclip.errors import HiCLIPError


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated fractions, got {text!r}")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated fractions, got {text!r}")
    return parts  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ShapesConfig()
    parser.add_argument("--out", required=True, help="output folder (manifest.jsonl, images/, masks/)")
    parser.add_argument("--n", type=int, default=defaults.n, help="number of samples (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    parser.add_argument("--image-size", type=int, default=defaults.image_size,
                        help="image side in pixels, a multiple of 8, e.g. 64, 96, 128 (default %(default)s)")
    parser.add_argument("--splits", type=_fractions, default=defaults.splits,
                        help="train,val,test fractions (default 0.8,0.1,0.1)")
    parser.add_argument("--negatives", type=int, default=defaults.negatives,
                        help="hard negative captions per image (default %(default)s)")
    parser.add_argument("--captions", type=int, default=defaults.captions_per_image,
                        help="captions per image (default %(default)s)")
    parser.add_argument("--max-words", type=int, default=defaults.max_words,
                        help="longest caption in words (default %(default)s)")
    parser.add_argument("--max-groups", type=int, default=defaults.max_groups,
                        help="most object groups per scene, 1-3 (default %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="processes (output is identical for any number)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise HiCLIPError(f"--workers must be at least 1, got {args.workers}")
    config = ShapesConfig(
        n=args.n, seed=args.seed, image_size=args.image_size, splits=tuple(args.splits),
        negatives=args.negatives, captions_per_image=args.captions, max_words=args.max_words,
        max_groups=args.max_groups,
    )
    report = generate_dataset(args.out, config, workers=args.workers, overwrite=args.overwrite)
    counts = ", ".join(f"{k} {v}" for k, v in report.split_counts.items())
    print(f"wrote {report.n} samples to {report.out} ({counts}) in {report.seconds:.1f} s "
          f"({report.samples_per_second:.0f} samples/s)")
    return 0
