"""How steady single train steps are on this machine, unpinned and pinned to one core.

Times consecutive train steps of HiCLIP and its vanilla twin (the step of
``attention_overhead.py``: forward, CLIP loss, backward, AdamW) in CPU time, first with the
process free to move between cores, then pinned to one (``os.sched_setaffinity``), and prints per
setting and model the median, the coefficient of variation (CV) and the minor page faults per
step. It says how far a single step can be trusted on this machine (hence the interleaved rounds
and paired ratios of ``attention_overhead.py``) and whether the allocator hands memory back
between steps (page faults). Linux only (``sched_setaffinity``, ``getrusage``).

Usage::

    python benchmarks/step_variability.py                     # hiclip-tiny, HiCLIP and vanilla
    python benchmarks/step_variability.py --steps 50 --core 1
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import hiclip  # noqa: E402
from attention_overhead import VOCAB, ours_step, random_batch  # noqa: E402


def measure(step, steps: int) -> tuple[float, float, float]:
    """Median step (ms), CV and median minor page faults per step over ``steps`` calls."""
    times, faults = [], []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.process_time()
        step()
        times.append((time.process_time() - start) * 1e3)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(times), statistics.stdev(times) / statistics.mean(times), statistics.median(faults)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="hiclip-tiny")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per setting and model")
    parser.add_argument("--core", type=int, default=None, help="core to pin to (default: the last one allowed)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    allowed = sorted(os.sched_getaffinity(0))
    core = allowed[-1] if args.core is None else args.core
    steps = {}
    for hierarchy in (True, False):
        torch.manual_seed(0)
        model = hiclip.create_model(args.model, hierarchy=hierarchy)
        images, ids, mask = random_batch(model.config, args.batch, VOCAB, torch.device("cpu"))
        steps["HiCLIP" if hierarchy else "vanilla"] = ours_step(model, images, ids, mask)
    print(f"{args.model}, batch {args.batch}, 1 thread, {args.steps} steps each, CPU time; cores allowed {allowed}")
    print(f"{'setting':<22} | {'model':<7} | {'median':>9} | {'CV':>5} | page faults/step")
    for setting, cores in ((f"unpinned {allowed}", set(allowed)), (f"pinned to core {core}", {core})):
        os.sched_setaffinity(0, cores)
        for name, step in steps.items():
            for _ in range(3):
                step()
            median, cv, faults = measure(step, args.steps)
            print(f"{setting:<22} | {name:<7} | {median:6.1f} ms | {cv:5.1%} | {faults:.0f}", flush=True)
    os.sched_setaffinity(0, set(allowed))


if __name__ == "__main__":
    main()
