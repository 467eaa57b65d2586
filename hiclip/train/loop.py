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
    exercise the non-finite guard); ``on_step(step, record)`` sees each step's logged values.
    """

    transform_loss: Callable[[int, torch.Tensor], torch.Tensor] | None = None
    on_step: Callable[[int, dict[str, float]], None] | None = None


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


def _train(config: TrainConfig, out: Path, resume: str | None, argv: list[str], hooks: TrainHooks,
           env: DistEnv, start_time: float) -> TrainResult:
    checkpoint = resolve_resume(resume, out) if resume else None
    state = load_state(checkpoint) if checkpoint else None
    data: TrainingData = build_training_data(config, env, tokenizer_from=checkpoint)
    plan = BatchPlan(len(data.train), config.batch_size, config.seed, env.world_size, env.rank,
                     config.accum_steps)
    steps_per_epoch = plan.steps_per_epoch
    total_steps = config.max_steps or config.epochs * steps_per_epoch

    torch.manual_seed(config.seed)
    init_notes: list[str] = []
    if checkpoint is not None:
        from hiclip.checkpoint import load as load_checkpoint

        model, _ = load_checkpoint(checkpoint)
    elif config.init is not None:
        from hiclip.train.init import initial_model

        model, init_notes = initial_model(config, data.tokenizer)
    else:
        model = _build_model(config, data.tokenizer.vocab_size)
    if config.mode == "clip" and model.vision is None:
        raise HiCLIPError(f"model {config.model!r} is text-only; use mode 'mlm'")
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if config.compile:
        model.compile_towers()
    objective = Objective(model, config.loss, config.mode, data.tokenizer.mask_token_id,
                          data.tokenizer.regular_id_range)
    _freeze_unused(objective, config)
    objective.to(env.device).train()
    run = RunFolder(out, writer=env.is_main)
    for note in init_notes:
        run.log(note)
    module: nn.Module = objective
    if env.distributed:
        with warnings.catch_warnings():
            # Buffers (the NN queue, batch-norm statistics) are identical on every rank by
            # construction; torch's suggested replacement would still sync them at init.
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*broadcast_buffers")
            module = nn.parallel.DistributedDataParallel(
                objective, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                broadcast_buffers=False,
                # the MLM warm-up leaves the vision tower without gradients
                find_unused_parameters=config.loss.mlm_warmup_steps > 0)
    optimizer = build_optimizer(objective.named_parameters(), config.optim,
                                fused=env.device.type == "cuda")
    schedule = WarmupCosine(optimizer, total_steps, config.optim.warmup_steps, config.optim.lr,
                            config.optim.min_lr)
    step, epoch, position = 0, 0, 0
    consecutive_bad, skipped = 0, 0
    if state is not None:
        if state.get("version") != STATE_VERSION:
            raise HiCLIPError(f"{checkpoint}: training state version {state.get('version')} "
                              f"is not {STATE_VERSION}")
        objective.load_heads_state(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step, epoch, position = int(state["step"]), int(state["epoch"]), int(state["position"])
        skipped, consecutive_bad = int(state["skipped"]), int(state["consecutive_bad"])
        changed = _changed_keys(state["config"], config.to_dict())
        if changed:
            run.warn(f"resuming with a different config ({', '.join(changed)}): the run will "
                     "not match an uninterrupted one")
        set_rng_state(state["rng"][env.rank] if isinstance(state["rng"], list) else state["rng"])
        run.truncate_metrics(step)
        run.log(f"resumed from {checkpoint} at step {step} (epoch {epoch}, batch {position})")
    else:
        run.write_params(config.to_dict(), argv, {
            "world_size": env.world_size, "device": str(env.device),
            "n_train": len(data.train), "n_val": len(data.val) if data.val is not None else 0,
            "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
            "model_config": model.config.to_dict(),
            "n_parameters": sum(p.numel() for p in model.parameters())})
        run.log(f"training {config.model} (hierarchy {'on' if config.hierarchy else 'off'}, "
                f"mode {config.mode}) on {len(data.train)} samples, {total_steps} steps of "
                f"{config.batch_size}, world size {env.world_size}, device {env.device}")
    writer = None
    if config.tensorboard and env.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))

    autocast = (torch.autocast(env.device.type, dtype=torch.bfloat16)
                if config.precision == "bf16" else nullcontext())
    progress = None
    if config.progress and env.is_main:
        from tqdm import tqdm

        progress = tqdm(total=total_steps, initial=step, desc="train", unit="step",
                        dynamic_ncols=True, file=sys.stderr)

    def save(name: str) -> None:
        payload = {
            "version": STATE_VERSION, "step": step, "epoch": epoch, "position": position,
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "heads": objective.heads_state(), "rng": _gather_rng(env),
            "skipped": skipped, "consecutive_bad": consecutive_bad,
            "config": _json_safe(config.to_dict()),
        }
        run.save_checkpoint(name, model, data.tokenizer, payload, keep=config.keep_checkpoints)
        barrier()

    last_metrics: dict[str, float] = {}
    last_validation: dict[str, float] = {}
    window_start, window_samples = time.perf_counter(), 0
    sums: dict[str, float] = {}
    sum_count = 0
    while step < total_steps:
        sampler = PlanSampler(plan, epoch, position)
        loader = data.loader(sampler)
        micro_iter = iter(loader)
        while position < steps_per_epoch and step < total_steps:
            micro_batches = [next(micro_iter) for _ in range(config.accum_steps)]
            objective.mlm_only = step < config.loss.mlm_warmup_steps
            optimizer.zero_grad(set_to_none=True)
            term_sums: dict[str, torch.Tensor] = {}
            finite = True
            pushes: list[torch.Tensor] = []
            for m, raw in enumerate(micro_batches):
                batch = collate_to_batch(raw, data, env.device, config)
                for note in data.take_notes():
                    run.warn(note)
                sync = (m == config.accum_steps - 1 or not env.distributed)
                context = module.no_sync() if (env.distributed and not sync) else nullcontext()
                with context:
                    with autocast:
                        loss, terms, gathered = module(batch)
                    if hooks.transform_loss is not None:
                        loss = hooks.transform_loss(step, loss)
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
                optimizer.step()
                clamp_logit_scale(model.logit_scale, model.config.max_logit_scale)
                if objective.queue is not None:
                    for features in pushes:
                        objective.queue.push(features)
                consecutive_bad = 0
            else:
                optimizer.zero_grad(set_to_none=True)
                consecutive_bad += 1
                skipped += 1
                run.warn(f"step {step}: non-finite loss or gradient, step skipped "
                         f"({consecutive_bad} in a row)")
                if consecutive_bad >= config.max_nonfinite:
                    if progress is not None:
                        progress.close()
                    run.close()
                    raise HiCLIPError(
                        f"{consecutive_bad} consecutive non-finite losses at step {step}; stopping "
                        f"(lower optim.lr, check the data, or raise max_nonfinite)")
            lr = schedule.lr
            schedule.step()
            step += 1
            position += 1
            window_samples += config.batch_size
            if finite:
                reduced = _reduce_terms(term_sums, env)
                for name, value in reduced.items():
                    sums[name] = sums.get(name, 0.0) + value
                sum_count += 1
            if config.throttle_s > 0:
                time.sleep(config.throttle_s)
            if step % config.log_every == 0 or step == total_steps:
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                record: dict[str, Any] = {"step": step, "epoch": epoch + position / steps_per_epoch,
                                          "lr": lr, "samples_per_s": window_samples / elapsed,
                                          "logit_scale": float(model.logit_scale.detach().exp()),
                                          "grad_norm": grad_norm, "skipped": skipped,
                                          "skipped_images": data.take_skipped()}
                for name, total in sums.items():
                    record[f"loss_{name}"] = total / max(sum_count, 1)
                if sums:
                    record["loss"] = sum(_weight(config, n) * v / max(sum_count, 1)
                                         for n, v in sums.items())
                run.metrics(record)
                if writer is not None:
                    for key, value in record.items():
                        if key != "step" and isinstance(value, (int, float)):
                            writer.add_scalar(f"train/{key}", value, step)
                last_metrics = record
                if hooks.on_step is not None:
                    hooks.on_step(step, record)
                if progress is not None:
                    progress.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}",
                                         lr=f"{lr:.2e}", sps=f"{record['samples_per_s']:.0f}")
                sums, sum_count = {}, 0
                window_start, window_samples = time.perf_counter(), 0
            if progress is not None:
                progress.update(1)
            epoch_done = position >= steps_per_epoch
            do_val = data.val is not None and (
                (config.val_every and step % config.val_every == 0) or epoch_done
                or step == total_steps)
            if do_val:
                last_validation = _validate(objective, data, config, env, run, writer, step,
                                            epoch + position / steps_per_epoch)
                window_start = time.perf_counter()
            if epoch_done:
                epoch, position = epoch + 1, 0
                save(f"epoch_{epoch}")
                window_start = time.perf_counter()
                break
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save(f"step_{step}")
                window_start = time.perf_counter()
        del micro_iter, loader
    if progress is not None:
        progress.close()
    if position != 0:  # max_steps ended mid-epoch: leave a checkpoint of the end
        save(f"step_{step}")
    final = run.export_final(model, data.tokenizer)
    wall = time.perf_counter() - start_time
    run.log(f"done: {step} steps ({skipped} skipped) in {wall:.1f} s; final model in {final}")
    if writer is not None:
        writer.close()
    run.close()
    return TrainResult(out=out, final=final, steps=step, skipped_steps=skipped, wall_s=wall,
                       last_metrics=last_metrics, last_validation=last_validation)


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
    ``per_tower`` clips the text tower, the vision tower with the SimSiam heads, and the rest (the
    temperature) each on its own."""
    groups: dict[str, list[torch.Tensor]] = {}
    for name, p in objective.named_parameters():
        if p.grad is None:
            continue
        key = "all"
        if per_tower:
            key = ("text" if name.startswith("model.text.") else
                   "vision" if name.startswith(("model.vision.", "simsiam.")) else "other")
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


# Keys that only change how a run is observed, not what it computes.
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
