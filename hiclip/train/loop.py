"""The training loop: one function, :func:`train`, used by ``hiclip train`` and the tests.

Per optimiser step: the global batch (``batch_size``) is split into ``accum_steps`` micro-batches
and, under DDP, each micro-batch into ``world_size`` rank slices (:mod:`hiclip.train.data_order`).

Gradient accumulation: each micro-batch's contrastive loss is computed *within that micro-batch*
(its negatives are the other samples of the same micro-batch, gathered over ranks), and the
gradients of the ``accum_steps`` micro-batch losses are averaged. That equals one big batch for
the per-sample terms (MLM, SimSiam apart from its batch norm) but *not* for InfoNCE, whose
softmax runs over fewer candidates: accumulation saves memory at the price of fewer negatives.
With ``accum_steps = 1`` and any world size, the loss and gradients equal a single process on the
global batch (tested in tests/test_ddp.py).

Non-finite losses or gradients skip the step (no update, a warning) and stop the run with an
error after ``max_nonfinite`` in a row. Checkpoints hold everything needed to resume exactly:
a run killed at any moment and resumed ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import math
import random
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hiclip.errors import HiCLIPError
from hiclip.train.config import TrainConfig
from hiclip.train.data import TrainingData, build_training_data, collate_to_batch
from hiclip.train.data_order import BatchPlan, PlanSampler
from hiclip.train.distributed import (
    DistEnv,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    env_world_size,
    init_distributed,
    shutdown_distributed,
)
from hiclip.train.losses import clamp_logit_scale
from hiclip.train.objectives import Objective
from hiclip.train.optim import WarmupCosine, build_optimizer
from hiclip.train.run_folder import RunFolder, load_state, resolve_resume
from hiclip.train.validate import validate

STATE_VERSION = 1


@dataclass
class TrainHooks:
    """Injection points for tests and tools (not configuration).

    ``transform_loss(step, loss) -> loss`` may replace the loss of a micro-batch (e.g. by NaN to
    exercise the non-finite guard); ``on_step(step, record)`` sees each step's logged values;
    ``after_step(step)`` runs after every optimiser step (e.g. a sleep, so a test can kill a run
    mid-epoch on a fast machine).
    """

    transform_loss: Callable[[int, torch.Tensor], torch.Tensor] | None = None
    on_step: Callable[[int, dict[str, float]], None] | None = None
    after_step: Callable[[int], None] | None = None


@dataclass
class TrainResult:
    out: Path
    final: Path
    steps: int
    skipped_steps: int
    wall_s: float
    last_metrics: dict[str, float] = field(default_factory=dict)
    last_validation: dict[str, float] = field(default_factory=dict)


def rng_state() -> dict[str, Any]:
    """Generator states as tensors and plain values (readable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.random.get_rng_state(),
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _unwrap(module: nn.Module) -> Objective:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module  # type: ignore[return-value]


def _freeze_unused(objective: Objective, config: TrainConfig) -> None:
    """Parameters no loss term reaches get ``requires_grad=False`` (DDP needs every trainable
    parameter to receive a gradient; the optimiser leaves frozen ones untouched)."""
    model = objective.model
    uses_mlm = config.mode == "mlm" or config.loss.mlm_weight > 0
    if not uses_mlm and model.config.text.mlm_head:
        for p in model.text.mlm_transform.parameters():
            p.requires_grad_(False)
        model.text.mlm_bias.requires_grad_(False)
    if config.mode == "mlm":
        model.logit_scale.requires_grad_(False)
        model.text.text_projection.weight.requires_grad_(False)
    elif config.loss.clip_weight == 0 and config.loss.nn_weight == 0:
        model.logit_scale.requires_grad_(False)


def _build_model(config: TrainConfig, vocab_size: int) -> Any:
    from hiclip.factory import create_model

    overrides = dict(config.model_overrides)
    if config.mode == "mlm":
        overrides["vision"] = None
    return create_model(config.model, hierarchy=config.hierarchy, vocab_size=vocab_size, **overrides)


def _check_model_name(config: TrainConfig, resume: str | None = None) -> None:
    from hiclip.factory import get_model_config

    if config.init is not None:
        if resume is not None:
            return  # the run's own checkpoint holds the model
        from hiclip.train.init import init_target_config

        init_target_config(config)  # raises for a recipe that disagrees with the checkpoint
        return
    get_model_config(config.model, hierarchy=config.hierarchy)  # raises for an unknown model


def train(config: TrainConfig, out: str | Path, resume: str | None = None,
          argv: list[str] | None = None, hooks: TrainHooks | None = None) -> TrainResult:
    """Train according to ``config``, writing the run folder ``out``; see the module docstring.

    ``resume``: ``"latest"`` (this run folder's newest checkpoint) or a checkpoint/run path.
    Raises :class:`HiCLIPError` for bad configuration before any training work.
    """
    hooks = hooks or TrainHooks()
    start_time = time.perf_counter()
    config.validate()
    _check_model_name(config, resume)
    world = env_world_size()
    if config.batch_size % (world * config.accum_steps):
        raise HiCLIPError(f"batch_size {config.batch_size} is not divisible by world size {world} "
                          f"x accum_steps {config.accum_steps}")
    env = init_distributed(config.device)
    try:
        return _train(config, Path(out), resume, argv or sys.argv, hooks, env, start_time)
    finally:
        shutdown_distributed()


@dataclass
class TrainState:
    """Where a run is: what a checkpoint records besides the weights and optimiser state."""

    step: int = 0
    epoch: int = 0
    position: int = 0          # optimiser steps done in the current epoch
    skipped: int = 0           # steps skipped for non-finite losses or gradients, in all
    consecutive_bad: int = 0   # ... in a row, up to now


@dataclass
class _LogWindow:
    """Loss terms and throughput accumulated between two log records."""

    start: float = field(default_factory=time.perf_counter)
    samples: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, reduced: dict[str, float]) -> None:
        for name, value in reduced.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1

    def restart(self) -> None:
        """A new window after a record (or after time spent validating or checkpointing)."""
        self.start = time.perf_counter()
        self.samples = 0

    def clear(self) -> None:
        self.sums, self.count = {}, 0
        self.restart()


class _Training:
    """One training run: set-up (resume, DDP, optimiser, run folder), then step / log / validate /
    save pieces that :meth:`run` calls in order."""

    def __init__(self, config: TrainConfig, out: Path, resume: str | None, argv: list[str], hooks: TrainHooks,
                 env: DistEnv, start_time: float) -> None:
        self.config, self.out, self.argv, self.hooks, self.env = config, out, argv, hooks, env
        self.start_time = start_time
        self.checkpoint = resolve_resume(resume, out) if resume else None
        stored = load_state(self.checkpoint) if self.checkpoint else None
        self.data: TrainingData = build_training_data(config, env, tokenizer_from=self.checkpoint)
        self.plan = BatchPlan(len(self.data.train), config.batch_size, config.seed, env.world_size, env.rank,
                              config.accum_steps)
        self.steps_per_epoch = self.plan.steps_per_epoch
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.init_notes: list[str] = []
        self.model = self._build_model()
        self.objective = Objective(self.model, config.loss, config.mode, self.data.tokenizer.mask_token_id,
                                   self.data.tokenizer.regular_id_range)
        _freeze_unused(self.objective, config)
        self.objective.to(env.device).train()
        self.run_folder = RunFolder(out, writer=env.is_main)
        for note in self.init_notes:
            self.run_folder.log(note)
        self.module = self._wrap(self.objective)
        self.optimizer = build_optimizer(self.objective.named_parameters(), config.optim,
                                         fused=env.device.type == "cuda")
        self.schedule = WarmupCosine(self.optimizer, self.total_steps, config.optim.warmup_steps, config.optim.lr,
                                     config.optim.min_lr)
        self.state = TrainState()
        if stored is not None:
            self._restore(stored)
        else:
            self._start()
        self.writer = None
        if config.tensorboard and env.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
        self.autocast = (torch.autocast(env.device.type, dtype=torch.bfloat16)
                         if config.precision == "bf16" else nullcontext())
        self.progress = None
        if config.progress and env.is_main:
            from tqdm import tqdm

            self.progress = tqdm(total=self.total_steps, initial=self.state.step, desc="train", unit="step",
                                 dynamic_ncols=True, file=sys.stderr)
        self.last_metrics: dict[str, float] = {}
        self.last_validation: dict[str, float] = {}

    # ------------------------------------------------------------------ set-up

    def _build_model(self) -> Any:
        config = self.config
        torch.manual_seed(config.seed)
        if self.checkpoint is not None:
            from hiclip.checkpoint import load as load_checkpoint

            model, _ = load_checkpoint(self.checkpoint)
        elif config.init is not None:
            from hiclip.train.init import initial_model

            model, self.init_notes = initial_model(config, self.data.tokenizer)
        else:
            model = _build_model(config, self.data.tokenizer.vocab_size)
        if config.mode == "clip" and model.vision is None:
            raise HiCLIPError(f"model {config.model!r} is text-only; use mode 'mlm'")
        if config.grad_checkpointing:
            model.set_grad_checkpointing(True)
        if config.compile:
            model.compile_towers(mode=config.compile_mode)
        return model

    def _wrap(self, objective: Objective) -> nn.Module:
        env = self.env
        if not env.distributed:
            return objective
        with warnings.catch_warnings():
            # Buffers (the NN queue, batch-norm statistics) are identical on every rank by
            # construction; torch's suggested replacement would still sync them at init.
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*broadcast_buffers")
            return nn.parallel.DistributedDataParallel(
                objective, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                broadcast_buffers=False,
                # the MLM warm-up leaves the vision tower without gradients
                find_unused_parameters=self.config.loss.mlm_warmup_steps > 0)

    def _restore(self, stored: dict[str, Any]) -> None:
        """Continue from a checkpoint's training state (optimiser, schedule, RNG, position)."""
        if stored.get("version") != STATE_VERSION:
            raise HiCLIPError(f"{self.checkpoint}: training state version {stored.get('version')} "
                              f"is not {STATE_VERSION}")
        self.objective.load_heads_state(stored["heads"])
        self.optimizer.load_state_dict(stored["optimizer"])
        self.schedule.load_state_dict(stored["schedule"])
        self.state = TrainState(int(stored["step"]), int(stored["epoch"]), int(stored["position"]),
                                int(stored["skipped"]), int(stored["consecutive_bad"]))
        changed = _changed_keys(stored["config"], self.config.to_dict())
        if changed:
            self.run_folder.warn(f"resuming with a different config ({', '.join(changed)}): the run will "
                                 "not match an uninterrupted one")
        rng = stored["rng"]
        set_rng_state(rng[self.env.rank] if isinstance(rng, list) else rng)
        state = self.state
        self.run_folder.truncate_metrics(state.step)
        self.run_folder.log(f"resumed from {self.checkpoint} at step {state.step} (epoch {state.epoch}, "
                            f"batch {state.position})")

    def _start(self) -> None:
        config, env, data, model = self.config, self.env, self.data, self.model
        self.run_folder.write_params(config.to_dict(), self.argv, {
            "world_size": env.world_size, "device": str(env.device),
            "n_train": len(data.train), "n_val": len(data.val) if data.val is not None else 0,
            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "model_config": model.config.to_dict(),
            "n_parameters": sum(p.numel() for p in model.parameters())})
        self.run_folder.log(f"training {config.model} (hierarchy {'on' if config.hierarchy else 'off'}, "
                            f"mode {config.mode}) on {len(data.train)} samples, {self.total_steps} steps of "
                            f"{config.batch_size}, world size {env.world_size}, device {env.device}")

    # ------------------------------------------------------------------ pieces

    def save(self, name: str) -> None:
        """A checkpoint of the weights and everything :meth:`_restore` needs."""
        state = self.state
        payload = {
            "version": STATE_VERSION, "step": state.step, "epoch": state.epoch, "position": state.position,
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "heads": self.objective.heads_state(), "rng": _gather_rng(self.env),
            "skipped": state.skipped, "consecutive_bad": state.consecutive_bad,
            "config": _json_safe(self.config.to_dict()),
        }
        self.run_folder.save_checkpoint(name, self.model, self.data.tokenizer, payload,
                                        keep=self.config.keep_checkpoints)
        barrier()

    def optimizer_step(self, micro_batches: list[Any]) -> tuple[bool, float, dict[str, torch.Tensor]]:
        """Forward and backward over the micro-batches, then clip and step, or skip the step when a
        loss or gradient is not finite. Returns ``(finite, grad_norm, loss terms)``."""
        config, env, objective, state = self.config, self.env, self.objective, self.state
        objective.mlm_only = state.step < config.loss.mlm_warmup_steps
        self.optimizer.zero_grad(set_to_none=True)
        if config.compile and config.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be reused
        term_sums: dict[str, torch.Tensor] = {}
        finite = True
        pushes: list[torch.Tensor] = []
        for m, raw in enumerate(micro_batches):
            batch = collate_to_batch(raw, self.data, env.device, config)
            for note in self.data.take_notes():
                self.run_folder.warn(note)
            sync = (m == config.accum_steps - 1 or not env.distributed)
            context = self.module.no_sync() if (env.distributed and not sync) else nullcontext()
            with context:
                with self.autocast:
                    loss, terms, gathered = self.module(batch)
                if self.hooks.transform_loss is not None:
                    loss = self.hooks.transform_loss(state.step, loss)
                ok = _all_finite(loss, env)
                if not ok:
                    finite = False
                    break
                (loss / config.accum_steps).backward()
            for name, value in terms.items():
                term_sums[name] = term_sums.get(name, 0.0) + value.float() / config.accum_steps
            if gathered is not None:
                pushes.append(gathered)
        grad_norm = float("nan")
        if finite:
            grad_norm = _clip(objective, config.optim.grad_clip, config.optim.clip_per_tower)
            finite = math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
            clamp_logit_scale(self.model.logit_scale, self.model.config.max_logit_scale)
            if objective.queue is not None:
                for features in pushes:
                    objective.queue.push(features)
            state.consecutive_bad = 0
        else:
            self._non_finite()
        return finite, grad_norm, term_sums

    def _non_finite(self) -> None:
        """Skip this step; stop the run after ``max_nonfinite`` in a row."""
        state = self.state
        self.optimizer.zero_grad(set_to_none=True)
        state.consecutive_bad += 1
        state.skipped += 1
        self.run_folder.warn(f"step {state.step}: non-finite loss or gradient, step skipped "
                             f"({state.consecutive_bad} in a row)")
        if state.consecutive_bad >= self.config.max_nonfinite:
            if self.progress is not None:
                self.progress.close()
            self.run_folder.close()
            raise HiCLIPError(
                f"{state.consecutive_bad} consecutive non-finite losses at step {state.step}; stopping "
                f"(lower optim.lr, check the data, or raise max_nonfinite)")

    def _skipped_images(self) -> int:
        """Images skipped on every rank since the last log (log runs on all ranks at the same steps)."""
        count = torch.tensor(self.data.take_skipped(), dtype=torch.int64, device=self.env.device)
        return int(all_reduce_sum(count))

    def log(self, window: _LogWindow, lr: float, grad_norm: float) -> None:
        """One ``metrics.jsonl`` record of the window (TensorBoard, hooks and the bar see it too)."""
        config, state = self.config, self.state
        elapsed = max(time.perf_counter() - window.start, 1e-9)
        record: dict[str, Any] = {"step": state.step, "epoch": state.epoch + state.position / self.steps_per_epoch,
                                  "lr": lr, "samples_per_s": window.samples / elapsed,
                                  "logit_scale": float(self.model.logit_scale.detach().exp()),
                                  "grad_norm": grad_norm, "skipped": state.skipped,
                                  "skipped_images": self._skipped_images()}
        for name, total in window.sums.items():
            record[f"loss_{name}"] = total / max(window.count, 1)
        if window.sums:
            record["loss"] = sum(_weight(config, n) * v / max(window.count, 1) for n, v in window.sums.items())
        self.run_folder.metrics(record)
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, state.step)
        self.last_metrics = record
        if self.hooks.on_step is not None:
            self.hooks.on_step(state.step, record)
        if self.progress is not None:
            self.progress.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}",
                                      lr=f"{lr:.2e}", sps=f"{record['samples_per_s']:.0f}")
        window.clear()

    def validate(self) -> None:
        state = self.state
        self.last_validation = _validate(self.objective, self.data, self.config, self.env, self.run_folder,
                                         self.writer, state.step, state.epoch + state.position / self.steps_per_epoch)

    # ------------------------------------------------------------------ the loop

    def run(self) -> TrainResult:
        config, state, data = self.config, self.state, self.data
        window = _LogWindow()
        while state.step < self.total_steps:
            sampler = PlanSampler(self.plan, state.epoch, state.position)
            loader = data.loader(sampler)
            micro_iter = iter(loader)
            while state.position < self.steps_per_epoch and state.step < self.total_steps:
                micro_batches = [next(micro_iter) for _ in range(config.accum_steps)]
                finite, grad_norm, term_sums = self.optimizer_step(micro_batches)
                lr = self.schedule.lr
                self.schedule.step()
                state.step += 1
                state.position += 1
                window.samples += config.batch_size
                if finite:
                    window.add(_reduce_terms(term_sums, self.env))
                if self.hooks.after_step is not None:
                    self.hooks.after_step(state.step)
                if state.step % config.log_every == 0 or state.step == self.total_steps:
                    self.log(window, lr, grad_norm)
                if self.progress is not None:
                    self.progress.update(1)
                epoch_done = state.position >= self.steps_per_epoch
                if data.val is not None and ((config.val_every and state.step % config.val_every == 0)
                                             or epoch_done or state.step == self.total_steps):
                    self.validate()
                    window.start = time.perf_counter()
                if epoch_done:
                    state.epoch, state.position = state.epoch + 1, 0
                    self.save(f"epoch_{state.epoch}")
                    window.start = time.perf_counter()
                    break
                if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                    self.save(f"step_{state.step}")
                    window.start = time.perf_counter()
            del micro_iter, loader
        return self.finish()

    def finish(self) -> TrainResult:
        state = self.state
        if self.progress is not None:
            self.progress.close()
        if state.position != 0:  # max_steps ended mid-epoch: leave a checkpoint of the end
            self.save(f"step_{state.step}")
        final = self.run_folder.export_final(self.model, self.data.tokenizer)
        wall = time.perf_counter() - self.start_time
        self.run_folder.log(f"done: {state.step} steps ({state.skipped} skipped) in {wall:.1f} s; "
                            f"final model in {final}")
        if self.writer is not None:
            self.writer.close()
        self.run_folder.close()
        return TrainResult(out=self.out, final=final, steps=state.step, skipped_steps=state.skipped, wall_s=wall,
                           last_metrics=self.last_metrics, last_validation=self.last_validation)


def _train(config: TrainConfig, out: Path, resume: str | None, argv: list[str], hooks: TrainHooks,
           env: DistEnv, start_time: float) -> TrainResult:
    return _Training(config, out, resume, argv, hooks, env, start_time).run()



def _weight(config: TrainConfig, name: str) -> float:
    if config.mode == "mlm":
        return 1.0
    return float(getattr(config.loss, f"{name}_weight"))


def _all_finite(loss: torch.Tensor, env: DistEnv) -> bool:
    flag = torch.tensor(1.0 if bool(torch.isfinite(loss.detach()).all()) else 0.0, device=loss.device)
    if env.distributed:
        import torch.distributed as dist

        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


def _clip(objective: Objective, max_norm: float, per_tower: bool = False) -> float:
    """Clip gradients to ``max_norm`` (0: no clipping); return the global norm before clipping.
    ``per_tower`` clips the text tower, the vision tower with the SimSiam and MIM heads, and the rest (the
    temperature) each on its own."""
    groups: dict[str, list[torch.Tensor]] = {}
    for name, p in objective.named_parameters():
        if p.grad is None:
            continue
        key = "all"
        if per_tower:
            key = ("text" if name.startswith("model.text.") else
                   "vision" if name.startswith(("model.vision.", "simsiam.", "mim.")) else "other")
        groups.setdefault(key, []).append(p)
    if not groups:
        return 0.0
    norms = []
    for params in groups.values():
        if max_norm > 0:
            norms.append(torch.nn.utils.clip_grad_norm_(params, max_norm))
        else:
            norms.append(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def _reduce_terms(terms: dict[str, torch.Tensor | float], env: DistEnv) -> dict[str, float]:
    if not terms:
        return {}
    names = sorted(terms)
    stacked = torch.stack([torch.as_tensor(terms[n], dtype=torch.float32, device=env.device)
                           for n in names])
    stacked = all_reduce_mean(stacked)
    return {n: float(v) for n, v in zip(names, stacked.tolist())}


def _gather_rng(env: DistEnv) -> Any:
    """RNG states of every rank (a list when distributed), gathered to rank 0 for the checkpoint."""
    state = rng_state()
    if not env.distributed:
        return state
    import torch.distributed as dist

    states: list[Any] = [None] * env.world_size
    dist.all_gather_object(states, state)
    return states


# Keys that only change how a run is observed, not what it computes (throttle_s: a retired key that
# older checkpoints still store).
RUNTIME_KEYS = ("out", "progress", "throttle_s", "device", "tensorboard", "num_workers", "log_every",
                "val_every", "val_max_samples", "checkpoint_every", "keep_checkpoints",
                "max_nonfinite", "on_error", "check_images", "image_root")


def _changed_keys(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs, runtime-only keys excluded."""
    changed = []
    for key in sorted(set(stored) | set(current)):
        if not prefix and key in RUNTIME_KEYS:
            continue
        a, b = stored.get(key), _json_safe(current.get(key))
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(prefix + key)
    return changed


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _validate(objective: Objective, data: TrainingData, config: TrainConfig, env: DistEnv,
              run: RunFolder, writer: Any, step: int, epoch: float) -> dict[str, float]:
    """Validation on rank 0 (others wait); metrics go to metrics.jsonl with a ``val_`` prefix."""
    result: dict[str, float] = {}
    if env.is_main:
        objective.eval()
        with torch.no_grad():
            result = validate(objective.model, data, config, env.device)
        objective.train()
        record = {"step": step, "epoch": epoch, **{f"val_{k}": v for k, v in result.items()}}
        run.metrics(record)
        run.log("val step %d: %s" % (step, ", ".join(f"{k} {v:.2f}" for k, v in result.items())))
        if writer is not None:
            for key, value in result.items():
                writer.add_scalar(f"val/{key}", value, step)
    barrier()
    return result
