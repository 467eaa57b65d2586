"""Training throughput (samples/s) of HiCLIP against its vanilla twin, on synthetic tensors.

One training step = forward of both towers, CLIP InfoNCE, backward, gradient clipping and an
AdamW step, exactly as ``hiclip train`` does it (hiclip.train.objectives.Objective, CLIP term
only). Images are random (B, 3, S, S) tensors; captions are random word ids of a fixed length.

    python benchmarks/train_throughput.py                       # tiny + small, CPU
    python benchmarks/train_throughput.py --models hiclip-tiny --batch 64 --steps 5 --device cuda
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from hiclip import create_model
from hiclip.tokenizer import SPECIAL_TOKENS, TextBatch
from hiclip.train.config import LossConfig, OptimConfig
from hiclip.train.objectives import Objective, TrainBatch
from hiclip.train.optim import build_optimizer


def synthetic_batch(batch: int, image_size: int, words: int, vocab: int,
                    device: torch.device) -> TrainBatch:
    """Random images (B, 3, S, S) and captions ``SOT w_1..w_words EOT`` (B, words + 2)."""
    first = len(SPECIAL_TOKENS)
    ids = torch.randint(first, vocab, (batch, words + 2))
    ids[:, 0], ids[:, -1] = 1, 2  # [SOT], [EOT]
    word_ids = torch.arange(-1, words + 1).repeat(batch, 1)
    word_ids[:, -1] = -1
    text = TextBatch(ids, torch.ones_like(ids, dtype=torch.bool), word_ids,
                     torch.full((batch,), words), [[] for _ in range(batch)]).to(device)
    images = torch.randn(batch, 3, image_size, image_size, device=device)
    return TrainBatch(text=text, seeds=torch.arange(batch), images=[images])


def measure(name: str, hierarchy: bool, batch: int, steps: int, warmup: int, words: int,
            device: torch.device, bf16: bool) -> float:
    """Samples per second of full training steps (after ``warmup`` untimed steps)."""
    torch.manual_seed(0)
    model = create_model(name, hierarchy=hierarchy)
    objective = Objective(model, LossConfig()).to(device).train()
    optimizer = build_optimizer(objective.named_parameters(), OptimConfig())
    data = synthetic_batch(batch, model.config.vision.image_size,
                           min(words, model.config.text.context_length - 2),
                           model.config.text.vocab_size, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss, _, _ = objective(data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["hiclip-tiny", "hiclip-small"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--words", type=int, default=12, help="caption length in words")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"device: {device} ({where}); torch {torch.__version__}; batch {args.batch}, "
          f"{args.steps} timed steps, captions of {args.words} words"
          + (", bf16" if args.bf16 else ""))
    print(f"{'model':<14} {'vanilla (s/s)':>14} {'hierarchy (s/s)':>16} {'ratio':>7}")
    results = []
    for name in args.models:
        rates = {h: measure(name, h, args.batch, args.steps, args.warmup, args.words, device, args.bf16)
                 for h in (False, True)}
        ratio = rates[True] / rates[False]
        print(f"{name:<14} {rates[False]:>14.1f} {rates[True]:>16.1f} {ratio:>7.2f}")
        sys.stdout.flush()
        results.append({"model": name, "vanilla_samples_per_s": rates[False],
                        "hierarchy_samples_per_s": rates[True], "ratio": ratio})
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": str(device), "where": where, "batch": args.batch,
                       "steps": args.steps, "bf16": args.bf16, "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
