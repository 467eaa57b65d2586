"""How much the hierarchy-aware attention costs, measured on this machine's CPU.

Prints one table:

* train-step time (forward + backward + AdamW step, fixed random batch, CLIP loss) of HiCLIP
  against the same model with ``hierarchy=False``, for ``hiclip-tiny`` and ``hiclip-small``;
* our vanilla model against a randomly initialised ``transformers.CLIPModel`` of the same size
  (built from our config, no download);
* ``tree_prior`` (prefix sums, O(n^2)) against the reference Tree-Transformer construction with
  two O(n^3) matmuls, at n = 77, and ``group_prior`` at 7x7 and 14x14 grids.

Models are timed in interleaved rounds (one step of each per round) so that load from other
processes on a shared machine hits all of them alike; times are wall-clock medians over rounds
after warm-up (``--clock cpu`` times this process's CPU instead), ratios the median of the
per-round ratios. A row also times HiCLIP with ``prior_layers=[]``: the affinity modules run
forward but the attention stays vanilla, so nothing flows back through them; the rest of the
overhead is the priors, the explicit attention and the backward pass through links. Usage::

    python benchmarks/attention_overhead.py --threads 2
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import hiclip  # noqa: E402
from hiclip.attention import group_prior, tree_prior  # noqa: E402
from hiclip.factory import get_model_config, transformers_clip_config  # noqa: E402

VOCAB = 2048


def random_batch(config: hiclip.HiCLIPConfig, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Images (B, 3, S, S) and ``SOT w... EOT PAD`` token ids with random lengths (EOT id 2)."""
    g = torch.Generator().manual_seed(seed)
    size = config.vision.image_size
    images = torch.randn(batch, 3, size, size, generator=g)
    context = config.text.context_length
    ids = torch.zeros(batch, context, dtype=torch.long)
    lengths = torch.randint(4, context - 1, (batch,), generator=g)
    for b, n in enumerate(lengths.tolist()):
        ids[b, 0] = 1
        ids[b, 1 : n + 1] = torch.randint(5, VOCAB, (n,), generator=g)
        ids[b, n + 1] = 2
    mask = ids != 0
    width = int(mask.sum(1).max())
    return images, ids[:, :width], mask[:, :width]


def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    labels = torch.arange(logits.shape[0])
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def ours_step(model: hiclip.HiCLIP, images, ids, mask) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        out = model(images, ids, mask)
        loss = clip_loss(out["logit_scale"] * out["image_features"] @ out["text_features"].T)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def hf_step(model, images, ids, mask) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        out = model(input_ids=ids, pixel_values=images, attention_mask=mask.long())
        loss = clip_loss(out.logits_per_image)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def interleaved_times(steps: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each call (on ``clock``), one call of each function per round (warm-up dropped)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(warmup + rounds):
        for name, fn in steps.items():
            start = clock()
            fn()
            elapsed = clock() - start
            if r >= warmup:
                times[name].append(elapsed)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of ``a / b`` within the same round (robust to load that drifts)."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def matmul_tree_prior(links: torch.Tensor) -> torch.Tensor:
    """The reference Tree-Transformer construction: two (n x n) @ (n x n) matmuls per sequence."""
    n = links.shape[-1] + 1
    neighbour = torch.diag_embed(links, offset=1)
    neighbour = neighbour + neighbour.transpose(-1, -2)
    upper = torch.diag(torch.ones(n - 1), 1).bool()
    tri = torch.ones(n, n).triu()
    eye = torch.eye(n, dtype=torch.bool)
    t = torch.log(neighbour + 1e-9).masked_fill(~upper, 0).matmul(tri)
    g = tri.matmul(t).exp().masked_fill((tri.int() - eye.int()) == 0, 0)
    return g + g.transpose(-1, -2) + eye


def time_fn(fn: Callable[[], object], rounds: int, warmup: int) -> float:
    return median(interleaved_times({"f": fn}, rounds, warmup)["f"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (median taken)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["hiclip-tiny", "hiclip-small"])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 16], help="batch per model")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall-clock time, or this process's CPU time (steadier on a loaded machine "
                             "with --threads 1, where it equals the work done)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every model's towers (HiCLIP.compile_towers) before timing; "
                             "compilation time is printed, not counted in the steps")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores visible, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}; {args.clock}-clock medians of {args.rounds} "
          f"interleaved rounds after {args.warmup} warm-up; ratios are medians of per-round ratios")

    from transformers import CLIPModel

    rows: list[tuple[str, str, str]] = []
    for name, batch in zip(args.models, args.batch):
        config = get_model_config(name, hierarchy=False, vocab_size=VOCAB)
        images, ids, mask = random_batch(config, batch)
        models = {}
        variants = [("hiclip", True, None), ("affinity_only", True, []), ("vanilla", False, None)]
        if args.compile:  # the ablation would cost another compilation
            variants.pop(1)
        for key, hierarchy, prior_layers in variants:
            torch.manual_seed(0)
            models[key] = hiclip.create_model(
                name, hierarchy=hierarchy, vocab_size=VOCAB,
                text={**asdict(config.text), "prior_layers": prior_layers},
                vision={**asdict(config.vision), "prior_layers": prior_layers},
            ).train()
        clip = CLIPModel(transformers_clip_config(config)).train()
        if args.compile:
            for key, model in models.items():
                start = time.perf_counter()
                model.compile_towers()
                ours_step(model, images, ids, mask)()  # compiles forward and backward
                print(f"{name} {key}: compiled in {time.perf_counter() - start:.0f} s wall", flush=True)
        steps = {key: ours_step(model, images, ids, mask) for key, model in models.items()}
        steps["clip"] = hf_step(clip, images, ids, mask)
        t = interleaved_times(steps, args.rounds, args.warmup)
        ms = {key: median(values) * 1e3 for key, values in t.items()}
        grid = config.vision.grid
        shape = f"batch {batch}, {grid}x{grid} patches, {ids.shape[1]} tokens{', compiled' if args.compile else ''}"
        rows.append((f"{name} train step ({shape}): HiCLIP / hierarchy off",
                     f"{ms['hiclip']:.0f} ms / {ms['vanilla']:.0f} ms", f"{paired_ratio(t, 'hiclip', 'vanilla'):.2f}x"))
        if "affinity_only" in ms:
            rows.append((f"{name}   affinity forward only (prior_layers=[]: links unused, no backward)",
                         f"{ms['affinity_only']:.0f} ms / {ms['vanilla']:.0f} ms", f"{paired_ratio(t, 'affinity_only', 'vanilla'):.2f}x"))
        ours = "ours compiled (hierarchy off) / transformers.CLIPModel eager" if args.compile else "ours (hierarchy off) / transformers.CLIPModel"
        rows.append((f"{name} train step: {ours}",
                     f"{ms['vanilla']:.0f} ms / {ms['clip']:.0f} ms", f"{paired_ratio(t, 'vanilla', 'clip'):.2f}x"))
        del models, clip, steps

    links = torch.rand(64, 76) * 0.9 + 0.1
    torch.testing.assert_close(matmul_tree_prior(links), tree_prior(links), rtol=1e-4, atol=1e-6)
    fast = time_fn(lambda: tree_prior(links), args.rounds * 5, args.warmup)
    slow = time_fn(lambda: matmul_tree_prior(links), args.rounds * 5, args.warmup)
    rows.append(("tree_prior, 64 sequences x n=77 (forward)", f"prefix sums {fast * 1e3:.2f} ms / O(n^3) matmul {slow * 1e3:.2f} ms",
                 f"{fast / slow:.2f}x"))
    for grid in (7, 14):
        h = (torch.rand(64, grid, grid - 1) * 0.9 + 0.1).requires_grad_()
        v = (torch.rand(64, grid - 1, grid) * 0.9 + 0.1).requires_grad_()
        forward = time_fn(lambda: group_prior(h, v), args.rounds * 5, args.warmup)
        both = time_fn(lambda: group_prior(h, v).sum().backward(), args.rounds * 5, args.warmup)
        rows.append((f"group_prior, 64 images x {grid}x{grid} grid", f"forward {forward * 1e3:.2f} ms, forward+backward {both * 1e3:.2f} ms", ""))

    width = max(len(r[0]) for r in rows)
    middle = max(len(r[1]) for r in rows)
    print(f"{'measurement':<{width}} | {'time':<{middle}} | ratio")
    print(f"{'-' * width}-|-{'-' * middle}-|------")
    for a, b, c in rows:
        print(f"{a:<{width}} | {b:<{middle}} | {c}")


if __name__ == "__main__":
    main()
