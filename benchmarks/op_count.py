"""Dispatched ops per train step, HiCLIP against its vanilla twin, and the eager CPU step-time ratio.

One train step = forward + CLIP loss + backward + AdamW step on a fixed random batch (as
``benchmarks/attention_overhead.py``). Ops are counted with a ``TorchDispatchMode``: every ATen op
that reaches the backends (after autograd and composite decomposition), views included, in the
forward, the backward and the optimiser; "compute ops" leaves out views (``detach``, ``view``,
``t``, ...), which launch no kernel on a GPU. Every model gets the same AdamW: ``--optimizer
fused`` (default; on CUDA that is what ``hiclip train`` uses), ``foreach`` or ``loop`` (the CPU
default, one set of ops per parameter, so HiCLIP's 5 extra parameters per layer cost ops there).

Models: HiCLIP on the fused eager path (``hiclip/fused_attention.py``), HiCLIP on the reference
path (``HICLIP_ATTENTION=reference``) and the twin (``hierarchy=False``), built from one seed.
Step times: medians (CPU time of the process by default, ``--clock wall``) of interleaved rounds (one step of each model per round), ratios
the median of per-round ratios, for the models in ``--time`` (default the first).

Usage::

    python benchmarks/op_count.py                       # hiclip-tiny b32 and ViT-B/32 shapes b4, 1 thread
    python benchmarks/op_count.py --optimizer loop --rounds 0
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hiclip  # noqa: E402
from attention_overhead import VOCAB, clip_loss, machine_line, random_batch  # noqa: E402
from hiclip.factory import get_model_config  # noqa: E402

VARIANTS = {"fused": (True, "fused"), "reference": (True, "reference"), "twin": (False, "fused")}


@dataclass
class OpCount:
    """Ops of one train step: all dispatched, and those that are not views."""

    total: int
    compute: int
    by_op: collections.Counter


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops[func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)] += 1
        self.views += int(func.is_view)
        return func(*args, **(kwargs or {}))

    def __enter__(self) -> "_Counter":
        self.views = 0
        return super().__enter__()


@contextmanager
def implementation(name: str):  # noqa: ANN201
    """``HICLIP_ATTENTION`` set to ``name`` for the duration."""
    old = os.environ.get("HICLIP_ATTENTION")
    os.environ["HICLIP_ATTENTION"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HICLIP_ATTENTION", None)
        else:
            os.environ["HICLIP_ATTENTION"] = old


def make_step(name: str, variant: str, batch: int, optimizer: str) -> Callable[[], None]:
    """A train step of ``variant`` of model ``name`` (HICLIP_ATTENTION set inside the step)."""
    hierarchy, impl = VARIANTS[variant]
    config = get_model_config(name, hierarchy=False, vocab_size=VOCAB)
    images, ids, mask = random_batch(config, batch, VOCAB, torch.device("cpu"))
    torch.manual_seed(0)
    model = hiclip.create_model(name, hierarchy=hierarchy, vocab_size=VOCAB).train()
    kind = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[optimizer]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **kind)

    def step() -> None:
        with implementation(impl):
            out = model(images, ids, mask)
            loss = clip_loss(out["logit_scale"] * out["image_features"] @ out["text_features"].T)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return step


def count(step: Callable[[], None]) -> OpCount:
    step()  # optimiser state made, caches filled: count a steady step
    with _Counter() as counter:
        step()
    total = sum(counter.ops.values())
    return OpCount(total, total - counter.views, counter.ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["hiclip-tiny", "hiclip-vit-b-32"])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 4], help="one per model")
    parser.add_argument("--optimizer", choices=["fused", "foreach", "loop"], default="fused")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (0: counts only)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--time", nargs="+", default=None, help="models to time (default: the first)")
    parser.add_argument("--top", type=int, default=0, help="also print the N ops HiCLIP adds most of")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu",
                        help="wall clock, or this process's CPU time (default: steadier on a shared machine)")
    args = parser.parse_args()
    if len(args.batch) != len(args.models):
        parser.error("--batch: one size per model")
    torch.set_num_threads(args.threads)
    print(machine_line(torch.device("cpu")))
    print(f"AdamW: {args.optimizer}, the same for every model; vocabulary {VOCAB}")
    timed = args.time if args.time is not None else args.models[:1]
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    rows = []
    for name, batch in zip(args.models, args.batch):
        steps = {v: make_step(name, v, batch, args.optimizer) for v in VARIANTS}
        counts = {v: count(s) for v, s in steps.items()}
        twin = counts["twin"]
        for v in ("fused", "reference"):
            c = counts[v]
            rows.append((f"{name} b{batch} ops per train step: HiCLIP ({v} path) / twin",
                         f"{c.total} / {twin.total}", f"{c.total / twin.total:.2f}x",
                         f"{c.compute} / {twin.compute}", f"{c.compute / twin.compute:.2f}x"))
        if args.top:
            extra = counts["fused"].by_op - twin.by_op
            print(f"{name}: ops the fused HiCLIP adds most of: {extra.most_common(args.top)}")
        if name in timed and args.rounds > 0:
            times: dict[str, list[float]] = {v: [] for v in steps}
            for r in range(args.warmup + args.rounds):
                for v, s in steps.items():
                    start = clock()
                    s()
                    if r >= args.warmup:
                        times[v].append(clock() - start)
            for v in ("fused", "reference"):
                ratio = statistics.median(a / b for a, b in zip(times[v], times["twin"]))
                rows.append((f"{name} b{batch} eager CPU step time: HiCLIP ({v} path) / twin",
                             f"{statistics.median(times[v]) * 1e3:.1f} ms / {statistics.median(times['twin']) * 1e3:.1f} ms",
                             f"{ratio:.2f}x", "", ""))
        del steps
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    header = ("measurement", "all ops", "ratio", "compute ops", "ratio")
    widths = [max(w, len(h)) for w, h in zip(widths, header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
    if args.rounds > 0:
        print(f"(times: {args.clock}-clock medians of {args.rounds} interleaved rounds after {args.warmup} warm-up, "
              f"{args.threads} thread(s); ratios: medians of per-round ratios)")


if __name__ == "__main__":
    main()
