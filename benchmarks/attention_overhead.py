"""How much the hierarchy-aware attention costs, measured on this machine's CPU or on a GPU.

Prints one table:

* train-step time (forward + backward + AdamW step, fixed random batch, CLIP loss) of HiCLIP
  against the same model with ``hierarchy=False``, for ``hiclip-tiny`` and ``hiclip-small`` by
  default (any of ``hiclip/model_configs``, e.g. the paper's ``hiclip-vit-b-32``);
* our vanilla model against a randomly initialised ``transformers.CLIPModel`` of the same size
  (built from our config, no download);
* one layer of each tower of the first model, forward + backward: the affinity module, and its
  LayerNorm + projection alone, against a vanilla block;
* ``tree_prior`` (prefix sums, O(n^2)) against the reference Tree-Transformer construction with
  two O(n^3) matmuls, at n = 77, and ``group_prior`` at 7x7 and 14x14 grids (``--skip-micro``
  leaves out these and the layer rows).

Models are timed in interleaved rounds (one step of each per round) so that load from other
processes on a shared machine hits all of them alike; times are wall-clock medians over rounds
after warm-up (``--clock cpu`` times this process's CPU instead; CPU device only), ratios the
median of the per-round ratios. On CUDA every timed call is bracketed by
``torch.cuda.synchronize``, so a step's time covers its kernels, not just their launch; the
optimiser is then the fused AdamW (as in ``hiclip train``), for every model alike. ``--bf16``
runs forward + loss of every model under ``torch.autocast(device, bfloat16)`` (weights and
optimiser stay fp32, as in ``hiclip train`` with ``precision=bf16``); the prior micro-benchmarks
stay fp32, as the priors are never computed in half precision.

One more eager row times HiCLIP with the prior gates of imported CLIPs (``affinity.prior_gate``)
against HiCLIP without them. Two ablation rows (eager only) split the overhead, both HiCLIP with ``prior_layers=[]`` (the
attention stays vanilla): "affinity forward only" (links unused, so nothing flows back through
the affinity modules) and "affinity forward + backward" (``0 x`` the links added to the loss, so
the backward pass runs through them). What the second leaves is the priors, the explicit
attention and the gradient of ``C``. Token ids are drawn from a
vocabulary of 2048 for every model (``--vocab 0``: each config's own, 49408 for ViT-B/32).
Usage::

    python benchmarks/attention_overhead.py --threads 2
    python benchmarks/attention_overhead.py --threads 1 --clock cpu --compile --models hiclip-tiny --batch 32
    # one GPU, the paper's model size among them:
    python benchmarks/attention_overhead.py --device cuda --bf16 \\
        --models hiclip-tiny hiclip-small hiclip-vit-b-32 --batch 256 256 128 --skip-micro
    # issue 19 (benchmarks/gpu_check.sh CHECK=attention): each eager path, then compiled with CUDA graphs
    python benchmarks/attention_overhead.py --device cuda --bf16 --skip-micro --no-ablations --attention fused \\
        --models hiclip-vit-b-32 hiclip-vit-b-32 --batch 128 256
    python benchmarks/attention_overhead.py --device cuda --bf16 --skip-micro --compile --compile-mode reduce-overhead \\
        --models hiclip-vit-b-32 --batch 128

``--attention`` sets ``HICLIP_ATTENTION`` (fused / reference path of eager HiCLIP, see
hiclip/fused_attention.py; ``auto``: fused on CUDA, reference on the CPU).
"""
from __future__ import annotations

import argparse
import contextlib
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
from hiclip.factory import get_model_config, list_models, transformers_clip_config  # noqa: E402
from hiclip.fused_attention import fused_enabled  # noqa: E402

VOCAB = 2048
# Batch per model when --batch is not given (the CPU sizes of BENCHMARKS.md; ViT-B/32: the paper's 128).
DEFAULT_BATCH = {"hiclip-tiny": 32, "hiclip-small": 16, "hiclip-vit-b-32": 128}

Step = Callable[[], None]


def random_batch(config: hiclip.HiCLIPConfig, batch: int, vocab: int, device: torch.device,
                 seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Images (B, 3, S, S) and ``SOT w... EOT PAD`` token ids with random lengths (EOT id 2), on ``device``.

    Drawn on the CPU from a seeded generator, so every device gets the same batch.
    """
    g = torch.Generator().manual_seed(seed)
    size = config.vision.image_size
    images = torch.randn(batch, 3, size, size, generator=g)
    context = config.text.context_length
    ids = torch.zeros(batch, context, dtype=torch.long)
    lengths = torch.randint(4, context - 1, (batch,), generator=g)
    for b, n in enumerate(lengths.tolist()):
        ids[b, 0] = 1
        ids[b, 1 : n + 1] = torch.randint(5, vocab, (n,), generator=g)
        ids[b, n + 1] = 2
    mask = ids != 0
    width = int(mask.sum(1).max())
    return images.to(device), ids[:, :width].to(device), mask[:, :width].to(device)


def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def precision_context(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` (forward and loss), or nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def make_optimizer(model: torch.nn.Module, device: torch.device) -> torch.optim.AdamW:
    # Fused on CUDA, as hiclip train builds it; the CPU numbers of BENCHMARKS.md used the default.
    return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True if device.type == "cuda" else None)


def train_step(model: torch.nn.Module, logits_of: Callable[[], torch.Tensor], device: torch.device,
               bf16: bool = False, graphs: bool = False) -> Step:
    """One train step: ``logits_of()`` (image x text logits) and the CLIP loss under ``bf16``
    autocast, backward, AdamW. ``graphs``: towers compiled with CUDA graphs, so each step opens a
    new graph-tree step (the previous step's outputs are no longer needed)."""
    opt = make_optimizer(model, device)

    def step() -> None:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with precision_context(device, bf16):
            loss = clip_loss(logits_of())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def ours_step(model: hiclip.HiCLIP, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
              bf16: bool = False, graphs: bool = False) -> Step:
    """A train step of our model."""
    def logits() -> torch.Tensor:
        out = model(images, ids, mask)
        return out["logit_scale"] * out["image_features"] @ out["text_features"].T

    return train_step(model, logits, images.device, bf16, graphs)


def affinity_step(model: hiclip.HiCLIP, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                  bf16: bool = False) -> Step:
    """A train step of a HiCLIP built with ``prior_layers=[]`` whose loss also takes ``0 x`` the
    links, so the backward pass runs through the affinity modules but no prior exists."""
    def logits() -> torch.Tensor:
        image = model.encode_image(images, normalize=True, return_affinities=True)
        text = model.encode_text(ids, mask, normalize=True, return_affinities=True)
        links = image.h_links.sum() + image.v_links.sum() + text.links.sum()
        return model.logit_scale.exp() * image.features @ text.features.T + 0.0 * links

    return train_step(model, logits, images.device, bf16)


def hf_step(model: torch.nn.Module, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
            bf16: bool = False) -> Step:
    """The same step for a ``transformers.CLIPModel``."""
    attention_mask = mask.long()
    return train_step(model, lambda: model(input_ids=ids, pixel_values=images,
                                            attention_mask=attention_mask).logits_per_image,
                      images.device, bf16)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class Timer:
    """Times calls on ``clock``; on CUDA synchronises before starting and before stopping the clock."""

    def __init__(self, clock: str, device: torch.device) -> None:
        self.clock = CLOCKS[clock]
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], object]) -> float:
        self.sync()
        start = self.clock()
        fn()
        self.sync()
        return self.clock() - start

    def interleaved(self, steps: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, list[float]]:
        """Seconds of each call, one call of each function per round (warm-up dropped)."""
        times: dict[str, list[float]] = {name: [] for name in steps}
        for r in range(warmup + rounds):
            for name, fn in steps.items():
                elapsed = self(fn)
                if r >= warmup:
                    times[name].append(elapsed)
        return times

    def median(self, fn: Callable[[], object], rounds: int, warmup: int) -> float:
        return statistics.median(self.interleaved({"f": fn}, rounds, warmup)["f"])


def peak_step_memory(fn: Step, device: torch.device) -> float:
    """MiB a CUDA step allocates at its peak above what was allocated before it (activations, grads)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of ``a / b`` within the same round (robust to load that drifts)."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def matmul_tree_prior(links: torch.Tensor) -> torch.Tensor:
    """The reference Tree-Transformer construction: two (n x n) @ (n x n) matmuls per sequence."""
    n = links.shape[-1] + 1
    device = links.device
    neighbour = torch.diag_embed(links, offset=1)
    neighbour = neighbour + neighbour.transpose(-1, -2)
    upper = torch.diag(torch.ones(n - 1, device=device), 1).bool()
    tri = torch.ones(n, n, device=device).triu()
    eye = torch.eye(n, dtype=torch.bool, device=device)
    t = torch.log(neighbour + 1e-9).masked_fill(~upper, 0).matmul(tri)
    g = tri.matmul(t).exp().masked_fill((tri.int() - eye.int()) == 0, 0)
    return g + g.transpose(-1, -2) + eye


def parse_args() -> tuple[argparse.Namespace, torch.device, list[int]]:
    """Arguments, the resolved device (``cuda`` -> ``cuda:<current>``) and one batch size per model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--bf16", action="store_true",
                        help="forward + loss of every model under torch.autocast(device, bfloat16)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (median taken)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["hiclip-tiny", "hiclip-small"],
                        help=f"model configs: {', '.join(list_models())} or a .json path")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help=f"batch per model, or one for all (default {DEFAULT_BATCH})")
    parser.add_argument("--vocab", type=int, default=VOCAB,
                        help=f"text vocabulary of every model (default {VOCAB}); 0: each model config's own")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall-clock time, or this process's CPU time (steadier on a loaded machine "
                             "with --threads 1, where it equals the work done; CPU device only)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every model's towers (HiCLIP.compile_towers) before timing; "
                             "compilation time is printed, not counted in the steps")
    parser.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"],
                        help="torch.compile mode with --compile (reduce-overhead: CUDA graphs)")
    parser.add_argument("--attention", choices=["auto", "fused", "reference"], default=None,
                        help="HICLIP_ATTENTION for every model (default: as the environment says, else auto)")
    parser.add_argument("--no-ablations", action="store_true",
                        help="leave out the two affinity ablation rows (fewer models to build and time)")
    parser.add_argument("--skip-micro", action="store_true",
                        help="leave out the tree_prior / group_prior micro-benchmarks")
    args = parser.parse_args()
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device {args.device!r} is not a device (cpu, cuda, cuda:N)")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {args.device!r}: only cpu and cuda are supported")
    if device.type == "cuda":
        if args.clock == "cpu":
            parser.error("--clock cpu measures this process's CPU time, not the GPU's work; use the wall clock on CUDA")
        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: CUDA is not available (torch {torch.__version__})")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            parser.error(f"--device {args.device}: only {torch.cuda.device_count()} CUDA device(s)")
    if args.batch is None:
        batches = [DEFAULT_BATCH.get(name, 16) for name in args.models]
    elif len(args.batch) == 1:
        batches = args.batch * len(args.models)
    elif len(args.batch) == len(args.models):
        batches = args.batch
    else:
        parser.error(f"--batch: give one size, or one per model ({len(args.models)}), not {len(args.batch)}")
    if min(batches) < 2:
        parser.error("--batch: the CLIP loss needs at least 2 pairs per batch")
    if args.vocab < 0 or 0 < args.vocab <= 5:
        parser.error("--vocab: 0 (the config's own) or more than 5 (ids 0-4 are special)")
    return args, device, batches


def machine_line(device: torch.device) -> str:
    """Torch version, device name, thread count (and CUDA / TF32 settings on a GPU)."""
    cpu = f"{platform.machine()} {platform.processor() or ''}".strip()
    line = (f"machine: torch {torch.__version__}, {cpu}, {os.cpu_count()} cores visible, "
            f"threads {torch.get_num_threads()}; device {device}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        line += (f" ({torch.cuda.get_device_name(device)}, {props.total_memory / 2**30:.0f} GiB, "
                 f"CUDA {torch.version.cuda}, TF32 matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}, "
                 f"cuDNN TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'})")
    return line


def model_rows(name: str, batch: int, args: argparse.Namespace, device: torch.device,
               timer: Timer) -> list[tuple[str, str, str]]:
    """Train-step rows of one model size: HiCLIP, the affinity-only ablation, vanilla, CLIPModel.

    Without ``transformers`` installed the CLIPModel row is left out (and said so), not the run.
    """
    try:
        from transformers import CLIPModel
    except ImportError:
        CLIPModel = None

    vocab = args.vocab or None
    graphs = args.compile and args.compile_mode == "reduce-overhead"
    config = get_model_config(name, hierarchy=False, vocab_size=vocab)
    images, ids, mask = random_batch(config, batch, config.text.vocab_size, device)
    models: dict[str, torch.nn.Module] = {}
    variants = [("hiclip", True, None, False), ("affinity_only", True, [], False), ("affinity_backward", True, [], False),
                ("gated", True, None, True), ("vanilla", False, None, False)]
    if args.compile or args.no_ablations:  # the ablations would cost more compilations
        variants = [variants[0], variants[-1]]
    for key, hierarchy, prior_layers, gated in variants:
        torch.manual_seed(0)
        models[key] = hiclip.create_model(
            name, hierarchy=hierarchy, vocab_size=vocab,
            text={**asdict(config.text), "prior_layers": prior_layers},
            vision={**asdict(config.vision), "prior_layers": prior_layers},
            affinity={**asdict(config.affinity), "prior_gate": gated},
        ).to(device).train()
    clip = CLIPModel(transformers_clip_config(config)).to(device).train() if CLIPModel is not None else None
    if args.compile:
        for key, model in models.items():
            start = time.perf_counter()
            model.compile_towers(dynamic=False, mode=args.compile_mode)  # static kernels, as one training run has
            timer(ours_step(model, images, ids, mask, args.bf16, graphs))  # compiles forward and backward
            print(f"{name} {key}: compiled in {time.perf_counter() - start:.0f} s wall", flush=True)
    steps = {key: (affinity_step(model, images, ids, mask, args.bf16) if key == "affinity_backward"
                   else ours_step(model, images, ids, mask, args.bf16, graphs))
             for key, model in models.items()}
    if clip is not None:
        steps["clip"] = hf_step(clip, images, ids, mask, args.bf16)
    t = timer.interleaved(steps, args.rounds, args.warmup)
    ms = {key: median(values) * 1e3 for key, values in t.items()}
    grid = config.vision.grid
    precision = "bf16 autocast" if args.bf16 else "fp32"
    shape = (f"batch {batch}, {grid}x{grid} patches, {ids.shape[1]} tokens, vocab {config.text.vocab_size}, "
             f"{precision}, {device}{', compiled' if args.compile else ''}")
    rows = [(f"{name} train step ({shape}): HiCLIP / hierarchy off",
             f"{ms['hiclip']:.1f} ms / {ms['vanilla']:.1f} ms", f"{paired_ratio(t, 'hiclip', 'vanilla'):.2f}x")]
    if "affinity_only" in ms:
        rows.append((f"{name}   affinity forward only (prior_layers=[]: links unused, no backward)",
                     f"{ms['affinity_only']:.1f} ms / {ms['vanilla']:.1f} ms",
                     f"{paired_ratio(t, 'affinity_only', 'vanilla'):.2f}x"))
        rows.append((f"{name}   affinity forward + backward (prior_layers=[], 0 x links in the loss)",
                     f"{ms['affinity_backward']:.1f} ms / {ms['vanilla']:.1f} ms",
                     f"{paired_ratio(t, 'affinity_backward', 'vanilla'):.2f}x"))
    if "gated" in ms:  # the gate's cost does not depend on its value: SDPA + (P' - P) V
        rows.append((f"{name}   with prior gates (affinity.prior_gate, imported CLIPs) / HiCLIP without",
                     f"{ms['gated']:.1f} ms / {ms['hiclip']:.1f} ms", f"{paired_ratio(t, 'gated', 'hiclip'):.2f}x"))
    if clip is not None:
        attn = getattr(clip.config, "_attn_implementation", None)
        theirs = f"transformers.CLIPModel{f' ({attn} attention)' if attn else ''}"
        ours = (f"ours compiled (hierarchy off) / {theirs} eager" if args.compile
                else f"ours (hierarchy off) / {theirs}")
        rows.append((f"{name} train step: {ours}",
                     f"{ms['vanilla']:.1f} ms / {ms['clip']:.1f} ms", f"{paired_ratio(t, 'vanilla', 'clip'):.2f}x"))
    else:
        rows.append((f"{name} train step: transformers.CLIPModel", "transformers not installed: skipped", ""))
    if device.type == "cuda":
        peaks = {key: peak_step_memory(fn, device) for key, fn in steps.items()}
        clip_peak = f" / {peaks['clip']:.0f}" if "clip" in peaks else ""
        rows.append((f"{name}   peak step memory above resident weights (HiCLIP / hierarchy off"
                     f"{' / CLIPModel' if clip_peak else ''})",
                     f"{peaks['hiclip']:.0f} / {peaks['vanilla']:.0f}{clip_peak} MiB",
                     f"{peaks['hiclip'] / peaks['vanilla']:.2f}x"))
    return rows


def micro_rows(args: argparse.Namespace, device: torch.device, timer: Timer) -> list[tuple[str, str, str]]:
    """``tree_prior`` against the O(n^3) construction, and ``group_prior``, fp32 on ``device``."""
    rows = []
    g = torch.Generator().manual_seed(0)
    links = (torch.rand(64, 76, generator=g) * 0.9 + 0.1).to(device)
    torch.testing.assert_close(matmul_tree_prior(links), tree_prior(links), rtol=1e-4, atol=1e-6)
    fast = timer.median(lambda: tree_prior(links), args.rounds * 5, args.warmup)
    slow = timer.median(lambda: matmul_tree_prior(links), args.rounds * 5, args.warmup)
    rows.append((f"tree_prior, 64 sequences x n=77 (forward, fp32, {device})",
                 f"prefix sums {fast * 1e3:.2f} ms / O(n^3) matmul {slow * 1e3:.2f} ms", f"{fast / slow:.2f}x"))
    for grid in (7, 14):
        h = (torch.rand(64, grid, grid - 1, generator=g) * 0.9 + 0.1).to(device).requires_grad_()
        v = (torch.rand(64, grid - 1, grid, generator=g) * 0.9 + 0.1).to(device).requires_grad_()
        forward = timer.median(lambda: group_prior(h, v), args.rounds * 5, args.warmup)
        both = timer.median(lambda: group_prior(h, v).sum().backward(), args.rounds * 5, args.warmup)
        rows.append((f"group_prior, 64 images x {grid}x{grid} grid (fp32, {device})",
                     f"forward {forward * 1e3:.2f} ms, forward+backward {both * 1e3:.2f} ms", ""))
    return rows


def layer_rows(name: str, batch: int, args: argparse.Namespace, device: torch.device,
               timer: Timer) -> list[tuple[str, str, str]]:
    """One layer of each tower, forward + backward: the affinity module against a vanilla block.

    Puts the affinity's floor in numbers: its own LayerNorm and full-width projection (method.md
    1) are fixed work, like one more of the block's width x width matmuls.
    """
    model = hiclip.create_model(name).to(device).train()
    config = model.config
    rows = []
    g = torch.Generator().manual_seed(0)
    towers = [("vision", model.vision, 1 + config.vision.grid ** 2), ("text", model.text, config.text.context_length)]
    for tower_name, tower, n in towers:
        x = torch.randn(batch, n, tower.config.width, generator=g).to(device).requires_grad_()
        grad = torch.randn(batch, n, tower.config.width, generator=g).to(device)
        block, affinity = tower.blocks[0], tower.affinities[0]
        if tower_name == "vision":
            grid = config.vision.grid
            block_step = lambda: block(x)[0].backward(grad)  # noqa: E731
            links = lambda: sum(t.sum() for t in affinity(x, grid, grid, start=1))  # noqa: E731
        else:
            valid = torch.ones(batch, n, dtype=torch.bool, device=device)
            gaps = valid[:, 1:].clone()
            gaps[:, 0] = gaps[:, -1] = False  # SOT and EOT take no part
            block_step = lambda: block(x, valid)[0].backward(grad)  # noqa: E731
            links = lambda: affinity(x, gaps).sum()  # noqa: E731
        steps = {
            "block": block_step,
            "affinity": lambda: links().backward(),
            "projection": lambda: sum(t.sum() for t in affinity.queries_and_keys(x)).backward(),
        }
        t = timer.interleaved(steps, args.rounds * 3, args.warmup)
        ms = {key: median(values) * 1e3 for key, values in t.items()}
        rows.append((f"{name} {tower_name} layer forward+backward (batch {batch}, {n} tokens): affinity module / vanilla block",
                     f"{ms['affinity']:.2f} ms / {ms['block']:.2f} ms", f"{paired_ratio(t, 'affinity', 'block'):.2f}x"))
        rows.append((f"{name}   its LayerNorm + projection alone / vanilla block",
                     f"{ms['projection']:.2f} ms / {ms['block']:.2f} ms", f"{paired_ratio(t, 'projection', 'block'):.2f}x"))
    return rows


def main() -> None:
    args, device, batches = parse_args()
    if args.attention is not None:
        os.environ["HICLIP_ATTENTION"] = args.attention
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timer = Timer(args.clock, device)
    print(machine_line(device))
    print(f"precision: {'bf16 autocast (forward + loss; fp32 weights and AdamW)' if args.bf16 else 'fp32'}; "
          f"{args.clock}-clock medians of {args.rounds} interleaved rounds after {args.warmup} warm-up"
          f"{' (CUDA-synchronised)' if device.type == 'cuda' else ''}; ratios are medians of per-round ratios",
          flush=True)
    print(f"attention path: HICLIP_ATTENTION={os.environ.get('HICLIP_ATTENTION', 'auto')} (eager HiCLIP: "
          f"{'fused' if fused_enabled(device) else 'reference'}; compiled towers take the reference)"
          + (f"; compile mode {args.compile_mode}" if args.compile else ""), flush=True)

    rows: list[tuple[str, str, str]] = []
    for name, batch in zip(args.models, batches):
        rows += model_rows(name, batch, args, device, timer)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not args.skip_micro:
        rows += layer_rows(args.models[0], batches[0], args, device, timer)
        rows += micro_rows(args, device, timer)

    width = max(len(r[0]) for r in rows)
    middle = max(len(r[1]) for r in rows)
    print(f"{'measurement':<{width}} | {'time':<{middle}} | ratio")
    print(f"{'-' * width}-|-{'-' * middle}-|------")
    for a, b, c in rows:
        print(f"{a:<{width}} | {b:<{middle}} | {c}")


if __name__ == "__main__":
    main()
