"""``hiclip train``: train HiCLIP or its vanilla twin (``--no-hierarchy``) from a recipe.

    hiclip train --config shapes-tiny --data /tmp/shapes --out runs/shapes-hiclip
    hiclip train --config shapes-tiny --data /tmp/shapes --out runs/shapes-clip --no-hierarchy
    hiclip train --config shapes-tiny --out runs/shapes-hiclip --resume latest
    hiclip train --config shapes-demo --init runs/imported-clip --model init --data /tmp/shapes
    torchrun --nproc-per-node 2 -m hiclip.cli train --config shapes-tiny --data /tmp/shapes ...

``--config`` takes a JSON file or a shipped recipe name (``hiclip/configs``). ``--set key=value``
overrides any key (dots for sections: ``--set optim.lr=3e-4``). On resume the config stored in
the run folder is used unless a new one is given.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hiclip.errors import HiCLIPError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="recipe: a JSON file or a shipped name (e.g. shapes-tiny, "
                        "captions-mlm); default: the run folder's params.json when resuming")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set optim.lr=3e-4")
    parser.add_argument("--model", help="model name (hiclip-tiny, hiclip-small, ...) or config path; "
                        "with --init, 'init' takes the checkpoint's architecture")
    parser.add_argument("--init", metavar="CKPT",
                        help="start from this checkpoint's weights (its architecture; the recipe's model "
                             "settings must agree with it or be overridden explicitly)")
    hierarchy = parser.add_mutually_exclusive_group()
    hierarchy.add_argument("--hierarchy", dest="hierarchy", action="store_true", default=None,
                           help="hierarchy-aware attention on (HiCLIP; the recipes' default)")
    hierarchy.add_argument("--no-hierarchy", dest="hierarchy", action="store_false",
                           help="hierarchy off: the vanilla CLIP twin of the same size")
    parser.add_argument("--data", help="training dataset (folder with manifest.jsonl, ...)")
    parser.add_argument("--text-corpus", help="mlm mode: a text file, one sentence per line")
    parser.add_argument("--on-error", choices=("raise", "skip"),
                        help="bad data, images that fail to decode mid-run included: stop with "
                             "one line (raise, the default) or skip, count and log (config on_error)")
    parser.add_argument("--check-images", choices=("none", "exists", "header", "full"),
                        help="how far images are checked before training (config check_images; "
                             "default header; full decodes every image)")
    parser.add_argument("--image-root",
                        help="folder image paths are relative to and must stay in (config "
                             "image_root; default the manifest's folder)")
    parser.add_argument("--out", help="run folder (default runs/<config>-<hiclip|clip>)")
    parser.add_argument("--resume", metavar="latest|PATH",
                        help="continue from the run folder's latest checkpoint or a given one")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads per process (0: torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _stored_config(out: Path) -> dict:
    params = out / "params.json"
    if not params.is_file():
        raise HiCLIPError(f"{params} not found: give --config to resume this run")
    from hiclip.train.config import RETIRED_KEYS

    stored = json.loads(params.read_text())["config"]
    return {k: v for k, v in stored.items() if k not in RETIRED_KEYS}  # older runs keep retired keys


def run(args: argparse.Namespace) -> int:
    from hiclip.train.config import apply_overrides, config_from_dict, load_config

    explicit = {"model": args.model, "hierarchy": args.hierarchy, "data": args.data, "init": args.init,
                "text_corpus": args.text_corpus, "max_steps": args.max_steps, "seed": args.seed,
                "device": args.device, "on_error": args.on_error,
                "check_images": args.check_images, "image_root": args.image_root}
    if args.no_progress:
        explicit["progress"] = False
    if args.config is None and args.resume is None:
        raise HiCLIPError("give --config (a recipe file or name), or --resume with --out")
    out = args.out
    if args.config is not None:
        config = load_config(args.config, args.overrides, **explicit)
    else:
        if out is None:
            raise HiCLIPError("--resume without --config needs --out (the run folder)")
        values = apply_overrides(_stored_config(Path(out)), args.overrides)
        values.update({k: v for k, v in explicit.items() if v is not None})
        config = config_from_dict(values)
        config.validate()
    if out is None:
        out = config.out or f"runs/{Path(args.config).stem}-{'hiclip' if config.hierarchy else 'clip'}"
    config.out = str(out)
    _check_paths(config)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from hiclip.train.loop import train

    result = train(config, out, resume=args.resume, argv=["hiclip", *sys.argv[1:]])
    if os.environ.get("RANK", "0") != "0":
        return 0
    summary = {"out": str(result.out), "final": str(result.final), "steps": result.steps,
               "skipped_steps": result.skipped_steps, "wall_s": round(result.wall_s, 1)}
    if result.last_validation:
        summary["validation"] = {k: round(v, 2) for k, v in result.last_validation.items()}
    print(json.dumps(summary))
    return 0


def _check_paths(config) -> None:
    """Missing inputs and an unwritable run folder are reported before anything is built."""
    from hiclip.atomic import check_writable
    from hiclip.train.data import check_data_spec

    if os.environ.get("RANK", "0") == "0" and config.out:
        check_writable(config.out, folder=True)

    if config.mode == "mlm" and config.text_corpus is not None:
        if not Path(config.text_corpus).is_file():
            raise HiCLIPError(f"text corpus {config.text_corpus} not found")
    elif config.data is not None:
        check_data_spec(config.data)
