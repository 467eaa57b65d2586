"""Deterministic, resumable, sharded batch order.

Each epoch draws one permutation of the dataset from ``(seed, epoch)``, cut into global batches
of ``global_batch`` samples (the incomplete tail is dropped). A global batch is split into
``accum_steps`` consecutive micro-batches and each micro-batch into ``world_size`` consecutive
rank slices, so the union over ranks of micro-batch m is the same set of samples whatever the
world size. Resuming at (epoch, step) needs nothing but those two numbers.

Every sample also gets a seed, :func:`sample_seed` ``(seed, epoch, index)``, that drives its
augmentations and MLM masking: a sample is processed identically in a resumed run, in any
DataLoader worker and on any rank.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from hiclip.errors import HiCLIPError

_MASK63 = (1 << 63) - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample in one epoch (splitmix64 of the three numbers)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & ((1 << 64) - 1)
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & ((1 << 64) - 1)
    x ^= x >> 31
    return x & _MASK63


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run a block with torch (CPU), ``random`` and numpy seeded from ``seed``, restoring the
    caller's generator states afterwards."""
    torch_state = torch.random.get_rng_state()
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed & 0xFFFF_FFFF)
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        random.setstate(py_state)
        np.random.set_state(np_state)


@dataclass(frozen=True)
class BatchPlan:
    """The order of samples: ``n_samples`` cut into global batches for ``world_size`` ranks."""

    n_samples: int
    global_batch: int
    seed: int = 0
    world_size: int = 1
    rank: int = 0
    accum_steps: int = 1

    def __post_init__(self) -> None:
        if self.global_batch > self.n_samples:
            raise HiCLIPError(f"batch_size {self.global_batch} is larger than the training set "
                              f"({self.n_samples} samples)")
        parts = self.world_size * self.accum_steps
        if self.global_batch % parts:
            raise HiCLIPError(
                f"batch_size {self.global_batch} is not divisible by world size {self.world_size} "
                f"x accum_steps {self.accum_steps}")

    @property
    def steps_per_epoch(self) -> int:
        return self.n_samples // self.global_batch

    @property
    def micro_batch(self) -> int:
        """Samples per rank per micro-batch."""
        return self.global_batch // (self.world_size * self.accum_steps)

    def permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1))
        return torch.randperm(self.n_samples, generator=generator).tolist()

    def global_batch_indices(self, epoch: int, step: int, order: list[int] | None = None) -> list[int]:
        """Sample indices of global batch ``step`` (0-based within the epoch)."""
        order = self.permutation(epoch) if order is None else order
        return order[step * self.global_batch:(step + 1) * self.global_batch]

    def local_micro_batches(self, epoch: int, step: int,
                            order: list[int] | None = None) -> list[list[int]]:
        """This rank's ``accum_steps`` micro-batches of global batch ``step``."""
        batch = self.global_batch_indices(epoch, step, order)
        size = self.global_batch // self.accum_steps
        b = self.micro_batch
        return [batch[m * size + self.rank * b: m * size + (self.rank + 1) * b]
                for m in range(self.accum_steps)]

    def keys(self, epoch: int, start_step: int = 0) -> Iterator[list[tuple[int, int]]]:
        """(epoch, index) keys of this rank's micro-batches from ``start_step`` to the epoch end,
        in order (``accum_steps`` lists per step): the batch sampler of the DataLoader."""
        order = self.permutation(epoch)
        for step in range(start_step, self.steps_per_epoch):
            for micro in self.local_micro_batches(epoch, step, order):
                yield [(epoch, i) for i in micro]


class PlanSampler:
    """A DataLoader ``batch_sampler`` over :meth:`BatchPlan.keys` for one (partial) epoch."""

    def __init__(self, plan: BatchPlan, epoch: int, start_step: int = 0) -> None:
        self.plan, self.epoch, self.start_step = plan, epoch, start_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return self.plan.keys(self.epoch, self.start_step)

    def __len__(self) -> int:
        return (self.plan.steps_per_epoch - self.start_step) * self.plan.accum_steps
