"""``hiclip import-clip``: a local transformers CLIPModel folder as a hiclip checkpoint.

    hiclip import-clip --from models/clip-vit-base-patch32 --out checkpoints/clip-b32
    hiclip import-clip --from models/clip-vit-base-patch32 --out runs/b32-hiclip --hierarchy
    hiclip import-clip --from DIR --out CKPT --hierarchy --prior-layers 8 9 10 11

Without ``--hierarchy`` the checkpoint is the CLIP itself (same features, links read from its
attention maps); with it, fresh affinity modules are added to every layer, ready for
``hiclip train --init CKPT``, behind closed per-layer prior gates (``--no-prior-gate``: none).
See ``hiclip.interop.hf_clip``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, type=Path,
                        help="transformers CLIPModel folder (config.json, weights, tokenizer files)")
    parser.add_argument("--out", required=True, type=Path, help="hiclip checkpoint folder to write")
    parser.add_argument("--hierarchy", action="store_true",
                        help="add fresh affinity modules (a HiCLIP to fine-tune with hiclip train --init)")
    parser.add_argument("--prior-layers", type=int, nargs="+", metavar="L", default=None,
                        help="with --hierarchy: 0-based layers (both towers) whose attention the prior "
                             "multiplies (default all)")
    parser.add_argument("--no-prior-gate", dest="prior_gate", action="store_const", const=False, default=None,
                        help="with --hierarchy: no prior gates, the prior acts in full from step 0 "
                             "(method.md's attention; the features change). Default: per-layer gates, "
                             "closed at the start, so the features are the CLIP's until fine-tuning")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh affinity modules")


def run(args: argparse.Namespace) -> int:
    from hiclip.interop.hf_clip import import_clip_checkpoint

    out, imported = import_clip_checkpoint(args.source, args.out, args.hierarchy, args.prior_layers, args.seed,
                                           args.prior_gate)
    for note in imported.warnings:
        print(f"warning: {note}", file=sys.stderr)
    config = imported.model.config
    print(json.dumps({
        "out": str(out), "source": str(args.source), "hierarchy": config.hierarchy,
        "prior_gate": config.hierarchy and config.affinity.prior_gate,
        "text_causal": config.text.causal, "tokenizer": imported.tokenizer.kind,
        "vocab_size": imported.tokenizer.vocab_size, "context_length": config.text.context_length,
        "image_size": config.vision.image_size if config.vision else None,
        "n_parameters": sum(p.numel() for p in imported.model.parameters())}))
    return 0
