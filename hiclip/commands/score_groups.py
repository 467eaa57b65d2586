"""``hiclip score groups``: predicted image groups against segmentation masks (method.md 6).

For every prediction record (``image.groups`` with ``image.grid``, or ``image.label_maps``
PNGs, or, with ``--tau``, groups recomputed from ``image.h_links``/``image.v_links``), each
predicted level (layer 0 = lowest) is upsampled to the mask size and scored against every
ground-truth level the dataset has (synthetic shapes: part, object, group; COCO: object)
with best-match mIoU, ARI, foreground ARI, boundary recall at 2 px, under-segmentation error,
achievable segmentation accuracy and the number of segments (``induction.group_metrics``).
Ground truth is read with ``hiclip.data.open_dataset``; samples without masks are counted and
left out.

The *best level* is, per ground-truth level, the predicted level with the highest mean
best-match mIoU over images (ties: the lower level); the snapped variant
(``--snap-superpixels``) picks its own, baselines follow the model's. Baselines
(``--baselines``) run per image at the number of segments the model predicted for that image
at that level (at the best level with ``--level best``; at every level with ``--level all``).
Every sample with masks must have a prediction (``--allow-missing`` scores a part and prints the
coverage). Then, unless ``--no-granularity``, every method is scored at each gt level's own
granularity (``induction.granularity``: cut at the gt segments + 1, ARI averaged over
``--k-range``, the patch-grid ceiling, the edge AUC probe). The work is
``induction.group_evaluation``; this module only parses arguments.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from induction.segment_baselines import BASELINES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, help="prediction JSONL (hiclip induce)")
    parser.add_argument("--data", required=True,
                        help="dataset: a folder with manifest.jsonl, or any spec hiclip.data reads")
    parser.add_argument("--split", default=None, help="score only this split (default: all)")
    parser.add_argument("--level", choices=("best", "all"), default="best",
                        help="report the best predicted level only, or every level plus the best")
    parser.add_argument("--gt-level", nargs="+", default=None, metavar="LEVEL",
                        help="ground-truth mask levels to score against (default: all present "
                             "except COCO's 'crowd' regions, which are not a segmentation level)")
    parser.add_argument("--baselines", default="grid,slic,felzenszwalb,rag",
                        help=f"comma-separated from {','.join(BASELINES)}; '' or 'none' for none")
    parser.add_argument("--baseline-size", type=int, default=256, metavar="PX",
                        help="run baselines on a copy with the longer side at most PX, labels "
                             "upsampled back (default 256; 0 = full size)")
    parser.add_argument("--snap-superpixels", action="store_true",
                        help="also score the groups snapped to SLIC superpixels")
    parser.add_argument("--superpixels", type=int, default=100,
                        help="SLIC n_segments for --snap-superpixels (default 100)")
    parser.add_argument("--compactness", type=float, default=10.0,
                        help="SLIC compactness for --snap-superpixels (default 10)")
    parser.add_argument("--tau", type=float, default=None,
                        help="recompute groups from the records' h_links/v_links at this threshold")
    parser.add_argument("--quantile", action="store_true",
                        help="with --tau: a per-layer quantile of the links, not an absolute value")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score a prediction file that covers only part of the samples with masks "
                             "(the coverage is printed); by default that is an error")
    parser.add_argument("--no-granularity", action="store_true",
                        help="leave out the scores at the gt granularity (every method cut at each "
                             "gt level's segments + 1; ARI over a k range; grid ceiling; edge AUC)")
    parser.add_argument("--k-range", nargs=2, type=int, default=(2, 16), metavar=("KMIN", "KMAX"),
                        help="ks of the k-free hierarchy score, ARI averaged over them (default 2 16)")
    parser.add_argument("--k-range-baselines", default=None,
                        help="comma-separated baselines also run over the whole k range (default: "
                             "all of --baselines; each k is one more segmentation per image); "
                             "'none' for none: the others are scored at the gt ks only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def options_from_args(args: argparse.Namespace):
    from induction.group_evaluation import GroupEvalOptions, parse_baselines

    return GroupEvalOptions(split=args.split, level=args.level, gt_levels=args.gt_level,
                            baselines=parse_baselines(args.baselines), baseline_size=args.baseline_size,
                            snap_superpixels=args.snap_superpixels, superpixels=args.superpixels,
                            compactness=args.compactness, tau=args.tau, quantile=args.quantile,
                            allow_missing=args.allow_missing, granularity=not args.no_granularity,
                            k_range=tuple(args.k_range),
                            k_range_baselines=(None if args.k_range_baselines is None
                                               else parse_baselines(args.k_range_baselines)))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from induction.group_evaluation import evaluate_group_file

    def progress(desc: str, total: int):
        # disable=None: a bar on a terminal only, so a redirected stderr holds just the error line
        return tqdm(total=total, desc=desc, unit="image", file=sys.stderr, leave=False, disable=None)

    evaluation = evaluate_group_file(args.pred, args.data, options_from_args(args), progress)
    if args.json:
        print(json.dumps(evaluation.to_dict()))
    else:
        print(evaluation.format())
    return 0
