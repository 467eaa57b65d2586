"""Induce and score 5,000 captions and 1,000 images with hiclip-tiny on this CPU, timing each stage.

Prints, measured in one run: the model's forward passes, tree building (both parsers), tree
scoring, patch grouping + segment trees, group scoring, and the ratio tree building / text forward
(target: captions end to end under 60 s, tree building a small fraction of the forward pass).

    python benchmarks/induction_speed.py [--checkpoint checkpoints/hiclip-tiny-shapes] [--threads 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import hiclip
from hiclip.cli import main as hiclip_main
from hiclip.data import open_dataset
from hiclip.data.trees import TreeRecord, parse_bracket_string
from induction import image_groups, text_trees
from induction.affinities import image_links, text_links
from induction.group_metrics import score_segmentation
from induction.image_groups import upsample_labels
from induction.tree_scoring import score_trees

REPO = Path(__file__).resolve().parent.parent


def timed(label: str, results: dict[str, float], fn):
    start = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - start
    print(f"{label:<40} {results[label]:8.2f} s", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "hiclip-tiny-shapes")
    parser.add_argument("--captions", type=int, default=5000)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = hiclip.load(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        n_samples = max(args.images, (args.captions + 1) // 2)
        hiclip_main(["data", "shapes", "--out", f"{tmp}/shapes", "--n", str(n_samples), "--seed", "11",
                     "--splits", "1,0,0"])
        samples = open_dataset(f"{tmp}/shapes").samples
        tokens = [t for s in samples for t in s.tokens][: args.captions]
        gold_strings = [g for s in samples for g in s.trees][: args.captions]
        results: dict[str, float] = {}
        print(f"{len(tokens)} captions, {args.images} images, {args.threads} threads, {args.checkpoint.name}")
        with torch.inference_mode():
            links = timed("text forward (links)", results, lambda: text_links(model, tokenizer, tokens, args.batch_size))
        arrays = [a for _, a in links]
        words = [w for w, _ in links]
        tt = timed("trees: Tree-Transformer parser", results, lambda: text_trees.induce_trees(arrays, words))
        timed("trees: binary lowest-link", results, lambda: text_trees.induce_trees(arrays, words, "binary"))
        golds = [TreeRecord(parse_bracket_string(g), list(t), "gold", i + 1) for i, (g, t) in
                 enumerate(zip(gold_strings, tokens))]
        preds = [TreeRecord(t.tree, list(w), "pred", i + 1) for i, (t, w) in enumerate(zip(tt, words))]
        report = timed("score trees (standard)", results, lambda: score_trees(preds, golds, "standard"))
        images = [s.open_image() for s in samples[: args.images]]
        with torch.inference_mode():
            grids = timed("image forward (links)", results, lambda: image_links(model, images, args.batch_size))

        def group_all():
            out = []
            for h, v in grids:
                layers = image_groups.layer_groups(h, v, 0.5)
                image_groups.segment_tree(layers)
                out.append(layers)
            return out

        layered = timed("groups + segment trees", results, group_all)

        def score_all():
            scores = []
            for sample, layers in zip(samples, layered):
                mask = sample.load_mask("object")
                pixels = upsample_labels(layers[1], mask.shape, centre_crop=True)
                scores.append(score_segmentation(pixels, mask).miou)
            return scores

        mious = timed("score groups (object masks, layer 1)", results, score_all)
    captions_total = sum(results[k] for k in ("text forward (links)", "trees: Tree-Transformer parser",
                                             "trees: binary lowest-link", "score trees (standard)"))
    trees = results["trees: Tree-Transformer parser"] + results["trees: binary lowest-link"]
    print(f"\ncaptions end to end: {captions_total:.1f} s (target < 60 s); "
          f"tree building / text forward = {trees / results['text forward (links)']:.2f}")
    images_total = sum(results[k] for k in ("image forward (links)", "groups + segment trees",
                                           "score groups (object masks, layer 1)"))
    print(f"images end to end: {images_total:.1f} s; grouping / image forward = "
          f"{results['groups + segment trees'] / results['image forward (links)']:.2f}")
    print(f"(sanity: sentence F1 {report.sentence_f1:.1f}, mean object mIoU {np.nanmean(mious):.3f})")


if __name__ == "__main__":
    main()
