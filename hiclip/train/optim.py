"""AdamW with weight decay only where it belongs, and warm-up + cosine learning-rate schedule."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from hiclip.train.config import OptimConfig

NO_DECAY_WORDS = ("norm", "ln_", "bias", "logit_scale", "temperature")
EMBEDDING_WORDS = ("embed", "pos_emb", "positional", "cls_token", "class_embedding")


def is_decayed(name: str, param: nn.Parameter, decay_embeddings: bool = True) -> bool:
    """Weight decay applies to weight matrices/kernels, never to norms, biases, the temperature
    or other 1-D parameters; embeddings (token, position, class token) only if asked."""
    lowered = name.lower()
    if param.ndim < 2 or any(word in lowered for word in NO_DECAY_WORDS):
        return False
    if not decay_embeddings and any(word in lowered for word in EMBEDDING_WORDS):
        return False
    return True


#: The per-layer prior gates (``affinity.prior_gate``), which ``optim.prior_gate_lr_scale`` may single out.
PRIOR_GATE_SUFFIX = "prior_gate"


def parameter_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float,
                     decay_embeddings: bool = True, prior_gate_lr_scale: float = 1.0) -> list[dict]:
    """Two AdamW groups: decayed weights and the rest (names kept for inspection and tests).

    With ``prior_gate_lr_scale != 1`` the prior gates form a third group (no decay) whose
    learning rate is the schedule's times ``lr_scale``; otherwise they are in the second.
    """
    decay, no_decay, gates, decay_names, no_decay_names, gate_names = [], [], [], [], [], []
    seen: set[int] = set()
    for name, param in named:
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if prior_gate_lr_scale != 1.0 and name.endswith(PRIOR_GATE_SUFFIX):
            gates.append(param)
            gate_names.append(name)
        elif is_decayed(name, param, decay_embeddings):
            decay.append(param)
            decay_names.append(name)
        else:
            no_decay.append(param)
            no_decay_names.append(name)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]
    if gates:
        groups.append({"params": gates, "weight_decay": 0.0, "names": gate_names, "lr_scale": prior_gate_lr_scale})
    return groups


def build_optimizer(named: Iterable[tuple[str, nn.Parameter]], config: OptimConfig,
                    fused: bool = False) -> torch.optim.AdamW:
    groups = parameter_groups(named, config.weight_decay, config.decay_embeddings, config.prior_gate_lr_scale)
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                             fused=fused or None)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float,
                  min_lr: float = 0.0) -> float:
    """Learning rate at optimiser step ``step`` (0-based): linear from base_lr/warmup to base_lr
    over ``warmup_steps`` steps, then cosine to ``min_lr`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets each group's lr before every step; its state (the step counter) is saved for resume."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                 base_lr: float, min_lr: float = 0.0) -> None:
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
        self.base_lr = base_lr
        self.min_lr = min_lr
        self.step_count = 0
        self._apply()

    @property
    def lr(self) -> float:
        return warmup_cosine(self.step_count, self.total_steps, self.warmup_steps,
                             self.base_lr, self.min_lr)

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "base_lr": self.base_lr, "min_lr": self.min_lr}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
