"""``hiclip export-hf``: a vanilla hiclip checkpoint as a transformers CLIPModel folder.

    hiclip export-hf checkpoints/clip-b32 --out exported/clip-b32
    hiclip export-hf checkpoints/clip-tiny-shapes --out exported/clip-tiny --allow-bidirectional

The folder loads with ``CLIPModel.from_pretrained`` and ``AutoTokenizer.from_pretrained``. A model
with the hierarchy on cannot be expressed and is refused. See ``hiclip.interop.hf_clip``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="hiclip checkpoint folder (hierarchy off)")
    parser.add_argument("--out", required=True, type=Path, help="CLIPModel folder to write")
    parser.add_argument("--allow-bidirectional", action="store_true",
                        help="export a bidirectional text tower although transformers runs it causally "
                             "(its text features then differ from hiclip's; the image tower stays exact)")


def run(args: argparse.Namespace) -> int:
    from hiclip.interop.hf_clip import export_hf

    report = export_hf(args.checkpoint, args.out, args.allow_bidirectional)
    for note in report.warnings:
        print(f"warning: {note}", file=sys.stderr)
    print(json.dumps({"out": str(report.out), "files": report.files,
                      "swapped_ids": list(report.swapped_ids) if report.swapped_ids else None}))
    return 0
