"""Training configuration: dataclasses, JSON files and ``--set key=value`` overrides.

A recipe is a JSON object whose keys mirror :class:`TrainConfig`; nested sections
(``optim``, ``loss``) are JSON objects, and on the command line they are addressed with dots:
``--set optim.lr=3e-4 --set loss.mlm_weight=0.5``. Values given with ``--set`` are parsed as
JSON when they parse (numbers, booleans, lists, ``null``) and taken as strings otherwise.
Unknown keys and ill-typed values are errors, raised before any work starts.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hiclip.errors import HiCLIPError

#: ``model`` value that takes the architecture of the ``init`` checkpoint (hiclip.train.init).
INIT_MODEL = "init"
#: torch.compile modes that ``compile_mode`` takes (with ``compile: true``).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay (method.md 4)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.1
    # Weight decay is never applied to norms, biases and the temperature; embeddings optionally.
    decay_embeddings: bool = True
    warmup_steps: int = 100
    min_lr: float = 0.0
    grad_clip: float = 1.0  # max global L2 norm; 0 disables clipping
    # Clip each tower's gradient (text tower; vision tower + SimSiam heads; the temperature) to
    # grad_clip on its own, so one tower's large gradient does not shrink the other's step.
    clip_per_tower: bool = False
    # Learning rate of the prior gates (affinity.prior_gate, imported CLIPs) relative to the rest.
    # Adam moves a gate by about lr per step at most, so at 1.0 a short fine-tune cannot open it far.
    prior_gate_lr_scale: float = 1.0


@dataclass
class LossConfig:
    """Which objectives run and their weights (HiDeCLIP = CLIP + DeCLIP terms, method.md 4)."""

    clip_weight: float = 1.0
    simsiam_weight: float = 0.0
    mlm_weight: float = 0.0
    nn_weight: float = 0.0
    # MLM masking: fraction of real word tokens selected; of those 80% [MASK], 10% random, 10% kept.
    mlm_probability: float = 0.15
    # MLM warm-up: the first this many optimiser steps train the MLM term alone (text tower only;
    # the images are not encoded), then every term runs.
    mlm_warmup_steps: int = 0
    # Multi-view supervision: CLIP loss averaged over (image view x text view) pairs.
    multiview: bool = False
    # Second text view for multi-view: "mask" (the MLM-masked caption) or "caption" (another
    # caption of the same image, when the sample has several).
    text_view: str = "mask"
    # Hard-negative captions from the dataset appended as extra image->text candidates.
    hard_negatives: bool = False
    negatives_per_sample: int = 1
    # Masked image modelling (SimMIM, method.md 4): a second vision forward on the image with
    # this fraction of patches replaced by a learned mask token; a linear head predicts the masked
    # patches' pixels (L1) from the patch states after block mim_layer (null: the last). The CLIP
    # terms keep seeing the unmasked image. mim_norm_pix: per-patch normalised targets (MAE).
    mim_weight: float = 0.0
    mim_mask_ratio: float = 0.6
    mim_layer: int | None = None
    mim_norm_pix: bool = False
    # Nearest-neighbour supervision: queue of past text features (global batch rows).
    queue_size: int = 1024
    # SimSiam heads on the image embedding.
    simsiam_hidden: int = 256
    simsiam_dim: int = 128
    simsiam_predictor_hidden: int = 64


@dataclass
class TrainConfig:
    """Everything one training run needs; ``params.json`` in the run folder is this, resolved."""

    # "clip": image-text training (CLIP / HiDeCLIP objectives). "mlm": text tower only, masked
    # language modelling on a text corpus (the original Tree-Transformer setting).
    mode: str = "clip"
    model: str = "hiclip-tiny"
    hierarchy: bool = True
    # Start from this checkpoint's weights (hiclip train --init; see hiclip/train/init.py for how
    # the recipe's model settings must agree with it). ``model: "init"`` takes its architecture.
    init: str | None = None
    # Extra keyword overrides forwarded to the model config (e.g. {"text": {"layers": 2}}).
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # Dataset spec (folder with manifest.jsonl, CSV, ...) for "clip" mode, or for "mlm" mode a
    # dataset whose captions form the corpus. ``text_corpus`` (one sentence per line) wins in mlm.
    data: str | None = None
    text_corpus: str | None = None
    train_split: str | None = "train"
    val_split: str | None = "val"
    # Bad data (hiclip.data.open_dataset): "raise" stops at the first problem with one line naming
    # the file and line; "skip" counts and logs it, and an image that fails to decode mid-run is
    # replaced by the next sample (hiclip/train/data.py). check_images: "none", "exists",
    # "header" (default) or "full" (decode every image before training). image_root: the folder
    # image paths are relative to and must stay inside (default: the manifest's folder).
    on_error: str = "raise"
    check_images: str = "header"
    image_root: str | None = None
    # Tokenizer: word-level vocabulary learnt from the training captions.
    tokenizer: str = "word"
    bpe_vocab_size: int = 2000
    out: str | None = None
    seed: int = 0
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimiser steps (overrides epochs)
    batch_size: int = 64  # global batch per optimiser step (all ranks, all micro-batches)
    accum_steps: int = 1  # micro-batches per optimiser step (see hiclip/train/loop.py)
    num_workers: int = 0
    image_views: int = 1  # augmented image views per sample (2 for SimSiam)
    # Training-view augmentation: "none" (the evaluation transform), "light" (random resized crop
    # of 70-100% area, mild brightness/contrast, blur: colours stay true to colour words) or
    # "full" (HiDeCLIP/SimSiam: also hue, saturation, greyscale).
    augment: str = "none"
    precision: str = "fp32"  # or "bf16" (autocast)
    grad_checkpointing: bool = False
    compile: bool = False  # torch.compile the towers (HiCLIP.compile_towers): slow start, faster steps
    # torch.compile mode with compile=true: "default", "reduce-overhead" (CUDA graphs, one per input
    # shape; steady shapes need full batches and text padded to one length) or "max-autotune"
    compile_mode: str = "default"
    device: str = "auto"  # "auto": cuda when available (and LOCAL_RANK's GPU under torchrun)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    log_every: int = 10
    val_every: int = 0  # steps between validation retrieval runs (0: only at each epoch end)
    val_max_samples: int = 512
    checkpoint_every: int = 0  # steps between checkpoints (0: only at epoch ends)
    keep_checkpoints: int = 2  # newest checkpoints kept (0 keeps all)
    max_nonfinite: int = 5  # consecutive non-finite losses tolerated (steps skipped) before stopping
    tensorboard: bool = False
    progress: bool = True

    def validate(self) -> None:
        """Raise :class:`HiCLIPError` for values that cannot work, before anything is built."""
        if self.mode not in ("clip", "mlm"):
            raise HiCLIPError(f"mode must be 'clip' or 'mlm', got {self.mode!r}")
        if self.model == INIT_MODEL and self.init is None:
            raise HiCLIPError(f"model {INIT_MODEL!r} takes the architecture of --init CKPT, but no init is given")
        if self.precision not in ("fp32", "bf16"):
            raise HiCLIPError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise HiCLIPError(f"compile_mode must be one of {list(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.augment not in ("none", "light", "full"):
            raise HiCLIPError(f"augment must be 'none', 'light' or 'full', got {self.augment!r}")
        if self.on_error not in ("raise", "skip"):
            raise HiCLIPError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.check_images not in ("none", "exists", "header", "full"):
            raise HiCLIPError(f"check_images must be 'none', 'exists', 'header' or 'full', "
                              f"got {self.check_images!r}")
        if self.tokenizer not in ("word", "bpe"):
            raise HiCLIPError(f"tokenizer must be 'word' or 'bpe', got {self.tokenizer!r}")
        if self.batch_size < 1:
            raise HiCLIPError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.accum_steps < 1:
            raise HiCLIPError(f"accum_steps must be >= 1, got {self.accum_steps}")
        if self.batch_size % self.accum_steps:
            raise HiCLIPError(
                f"batch_size {self.batch_size} is not divisible by accum_steps {self.accum_steps}")
        if self.epochs < 1 and not self.max_steps:
            raise HiCLIPError("epochs must be >= 1 (or set max_steps)")
        if self.max_steps is not None and self.max_steps < 1:
            raise HiCLIPError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.image_views < 1:
            raise HiCLIPError(f"image_views must be >= 1, got {self.image_views}")
        if self.max_nonfinite < 1:
            raise HiCLIPError(f"max_nonfinite must be >= 1, got {self.max_nonfinite}")
        loss = self.loss
        for name in ("clip_weight", "simsiam_weight", "mlm_weight", "nn_weight", "mim_weight"):
            if getattr(loss, name) < 0:
                raise HiCLIPError(f"loss.{name} must be >= 0, got {getattr(loss, name)}")
        if not 0.0 < loss.mlm_probability < 1.0:
            raise HiCLIPError(f"loss.mlm_probability must be in (0, 1), got {loss.mlm_probability}")
        if not 0.0 < loss.mim_mask_ratio < 1.0:
            raise HiCLIPError(f"loss.mim_mask_ratio must be in (0, 1), got {loss.mim_mask_ratio}")
        if loss.mim_weight > 0 and self.mode != "clip":
            raise HiCLIPError("loss.mim_weight > 0 needs mode 'clip' (images)")
        if loss.text_view not in ("mask", "caption"):
            raise HiCLIPError(f"loss.text_view must be 'mask' or 'caption', got {loss.text_view!r}")
        if loss.negatives_per_sample < 1:
            raise HiCLIPError("loss.negatives_per_sample must be >= 1")
        if loss.mlm_warmup_steps < 0:
            raise HiCLIPError(f"loss.mlm_warmup_steps must be >= 0, got {loss.mlm_warmup_steps}")
        if loss.mlm_warmup_steps > 0 and (self.mode != "clip" or loss.mlm_weight <= 0):
            raise HiCLIPError("loss.mlm_warmup_steps needs mode 'clip' and loss.mlm_weight > 0")
        if self.mode == "clip":
            if (self.loss.clip_weight + loss.simsiam_weight + loss.mlm_weight + loss.nn_weight
                    + loss.mim_weight) <= 0:
                raise HiCLIPError("all loss weights are 0: nothing to train")
            if loss.simsiam_weight > 0 and self.image_views < 2:
                raise HiCLIPError("loss.simsiam_weight > 0 needs image_views >= 2")
            if loss.nn_weight > 0 and loss.queue_size < 1:
                raise HiCLIPError("loss.nn_weight > 0 needs loss.queue_size >= 1")
            if self.data is None:
                raise HiCLIPError("no training data: give --data DIR (or 'data' in the config)")
        else:
            if self.data is None and self.text_corpus is None:
                raise HiCLIPError("mlm mode needs a corpus: set text_corpus (a text file) or data")
        opt = self.optim
        if opt.lr <= 0:
            raise HiCLIPError(f"optim.lr must be > 0, got {opt.lr}")
        if opt.warmup_steps < 0 or opt.weight_decay < 0 or opt.grad_clip < 0:
            raise HiCLIPError("optim.warmup_steps, weight_decay and grad_clip must be >= 0")
        if not opt.prior_gate_lr_scale > 0:
            raise HiCLIPError(f"optim.prior_gate_lr_scale must be > 0, got {opt.prior_gate_lr_scale}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (JSON types), converting where lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except HiCLIPError as error:
                errors.append(str(error))
        raise HiCLIPError(errors[0] if errors else f"bad value for {key!r}: {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise HiCLIPError(f"{key!r} must be an object, got {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise HiCLIPError(f"{key!r} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise HiCLIPError(f"{key!r} must be an object, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise HiCLIPError(f"{key!r} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise HiCLIPError(f"{key!r} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise HiCLIPError(f"{key!r} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise HiCLIPError(f"{key!r} must be a string, got {value!r}")
    raise HiCLIPError(f"{key!r}: unsupported type {_type_name(tp)}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise HiCLIPError(
            f"unknown config key {prefix + unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


# Keys older run folders store that no longer mean anything (a test-only sleep, now a TrainHooks hook).
RETIRED_KEYS = ("throttle_s",)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a JSON object; unknown keys are errors."""
    return _build(TrainConfig, values)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=3e-4"`` -> (["optim", "lr"], 0.0003); the value is JSON when it parses."""
    if "=" not in item:
        raise HiCLIPError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise HiCLIPError(f"--set expects key=value, got {item!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the JSON object ``values`` with ``key=value`` overrides applied."""
    result = json.loads(json.dumps(values))
    for item in overrides:
        path, value = parse_override(item)
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise HiCLIPError(f"--set {item}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return result


def load_config(path: str | Path | None, overrides: list[str] | None = None,
                **explicit: Any) -> TrainConfig:
    """Read a recipe (file path, or the name of a shipped recipe in ``hiclip/configs``), apply
    ``--set`` overrides, then the explicit keyword values that are not None; validate."""
    values: dict[str, Any] = {}
    if path is not None:
        file = resolve_recipe(path)
        try:
            values = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise HiCLIPError(f"{file}:{error.lineno}: invalid JSON: {error.msg}") from None
        if not isinstance(values, dict):
            raise HiCLIPError(f"{file}: a config must be a JSON object")
    values = apply_overrides(values, overrides or [])
    for key, value in explicit.items():
        if value is not None:
            values[key] = value
    config = config_from_dict(values)
    config.validate()
    return config


def shipped_recipes() -> list[str]:
    """Names of the recipes in ``hiclip/configs`` (file names without ``.json``)."""
    folder = Path(__file__).resolve().parent.parent / "configs"
    return sorted(p.stem for p in folder.glob("*.json"))


def resolve_recipe(path: str | Path) -> Path:
    """A config path, or a shipped recipe name such as ``shapes-tiny``."""
    file = Path(path)
    if file.is_file():
        return file
    shipped = Path(__file__).resolve().parent.parent / "configs" / f"{file.name.removesuffix('.json')}.json"
    if file.parent == Path(".") and shipped.is_file():
        return shipped
    raise HiCLIPError(
        f"config {str(path)!r} not found (shipped recipes: {', '.join(shipped_recipes()) or 'none'})")
