"""``hiclip eval``: zero-shot classification and image<->text retrieval of a checkpoint.

    hiclip eval --checkpoint runs/shapes-hiclip/final --data /tmp/shapes --split test --out r.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hiclip.errors import HiCLIPError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model folder (hiclip.save format)")
    parser.add_argument("--data", required=True, help="dataset (folder with manifest.jsonl, ...)")
    parser.add_argument("--split", default="test", help="split to evaluate ('all' for every sample)")
    parser.add_argument("--task", default="all", choices=("zeroshot", "retrieval", "all"))
    parser.add_argument("--labels", default="shape,colour,count",
                        help="comma-separated label keys for zero-shot classification")
    parser.add_argument("--templates", help="JSON file: {label key or '*': [\"a {}\", ...]}")
    parser.add_argument("--max-samples", type=int, help="evaluate at most this many images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the results JSON here (also printed); checked for "
                        "writability before any work")
    parser.add_argument("--image-root", default=None,
                        help="folder image paths are relative to and must stay in "
                             "(default: the dataset's folder)")


def _templates(path: str | None) -> dict[str, list[str]] | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise HiCLIPError(f"templates file {file} not found")
    try:
        value = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise HiCLIPError(f"{file}:{error.lineno}: invalid JSON ({error.msg})") from None
    if not isinstance(value, dict) or not all(
            isinstance(v, list) and all(isinstance(t, str) and "{}" in t for t in v)
            for v in value.values()):
        raise HiCLIPError(f"{file}: expected {{label: [template with '{{}}', ...]}}")
    return value


def run(args: argparse.Namespace) -> int:
    from hiclip.atomic import check_writable
    from hiclip.evaluate import run_evaluation, write_results

    if not Path(args.checkpoint).exists():
        raise HiCLIPError(f"checkpoint {args.checkpoint} not found")
    if "://" not in args.data and not Path(args.data).exists():
        raise HiCLIPError(f"data {args.data} not found")
    if args.out:
        check_writable(args.out)
    keys = [k.strip() for k in args.labels.split(",") if k.strip()]
    results = run_evaluation(args.checkpoint, args.data, None if args.split == "all" else args.split,
                             args.task, args.device, args.max_samples, keys,
                             _templates(args.templates), args.image_root)
    if args.out:
        write_results(args.out, results)
    print(json.dumps(_summary(results), indent=2))
    return 0


def _summary(results: dict) -> dict:
    """The headline numbers (the full JSON goes to --out)."""
    out = {"checkpoint": results["checkpoint"], "split": results["split"],
           "hierarchy": results["model"]["hierarchy"], "n_images": results["n_images"]}
    if "retrieval" in results:
        r = results["retrieval"]
        out["retrieval"] = {k: round(v, 2) for k, v in r.items() if "R@" in k or k == "rsum"}
    if "zeroshot" in results:
        out["zeroshot"] = {k: (round(v["top1"], 2) if isinstance(v, dict) else round(v, 2))
                           for k, v in results["zeroshot"].items()}
    return out
