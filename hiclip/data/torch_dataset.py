"""``ImageTextDataset``: samples as torch items, with reproducible caption choice and views.

The caption of item ``index`` in epoch ``epoch`` and the random augmentation of each view depend
only on ``(seed, epoch, index)``, never on the worker or on how many items came before, so a
resumed run sees exactly the same data. Captions stay strings; tokenise them in the collate.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset as TorchDataset

from hiclip.data.sample import Sample
from hiclip.data.transforms import eval_transform
from hiclip.errors import HiCLIPError

CAPTION_POLICIES = ("random", "first", "all")
_MASK64 = (1 << 64) - 1


def derive_seed(*values: int) -> int:
    """A 63-bit seed mixing ``values`` (splitmix64 steps), stable across runs and platforms."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
        x ^= x >> 31
    return x >> 1


def caption_index(seed: int, epoch: int, index: int, n_captions: int) -> int:
    """Which of ``n_captions`` captions item ``index`` uses in ``epoch`` (policy "random")."""
    return derive_seed(seed, epoch, index, 0xCA9) % n_captions


class ImageTextDataset(TorchDataset):
    """Torch view of ``hiclip.data`` samples.

    Parameters
    ----------
    dataset : sequence of Sample (e.g. ``open_dataset(...)`` or one of its splits)
    transform : PIL image -> tensor, called as ``transform(image, generator=g)``; default
        ``eval_transform(224)`` is rarely what you want, so pass one
    caption_policy : ``"random"`` (one caption per (epoch, index), reproducible), ``"first"``,
        or ``"all"`` (the list of captions)
    with_negatives : include the sample's hard negative captions
    n_views : number of augmented views; > 1 returns a list of tensors
    seed : base seed of caption choice and augmentation

    Items are dicts: ``image`` ((3, S, S) tensor, or a list of ``n_views`` of them), ``caption``
    (str, or list of str under "all"), ``caption_index`` (int, -1 under "all"), ``index``,
    ``id`` and, with ``with_negatives``, ``negatives`` (list of str).
    Call ``set_epoch(epoch)`` before each epoch (DataLoader workers are re-created per epoch
    unless ``persistent_workers`` is on, in which case pass the epoch through the sampler instead).
    """

    def __init__(self, dataset: Sequence[Sample], transform: Callable[..., torch.Tensor] | None = None,
                 caption_policy: str = "random", with_negatives: bool = False, n_views: int = 1,
                 seed: int = 0) -> None:
        if caption_policy not in CAPTION_POLICIES:
            raise HiCLIPError(f"caption_policy must be one of {', '.join(CAPTION_POLICIES)}, got {caption_policy!r}")
        if n_views < 1:
            raise HiCLIPError(f"n_views must be at least 1, got {n_views}")
        self.samples = dataset
        self.transform = transform or eval_transform(224)
        self.caption_policy = caption_policy
        self.with_negatives = with_negatives
        self.n_views = n_views
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def caption_index(self, index: int, epoch: int | None = None) -> int:
        sample = self.samples[index]
        if self.caption_policy == "first":
            return 0
        return caption_index(self.seed, self.epoch if epoch is None else epoch, index, len(sample.captions))

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = sample.open_image()
        views = []
        for view in range(self.n_views):
            generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, index, view))
            views.append(self.transform(image, generator=generator))
        item: dict[str, Any] = {"image": views[0] if self.n_views == 1 else views, "index": index, "id": sample.id}
        if self.caption_policy == "all":
            item["caption"], item["caption_index"] = list(sample.captions), -1
        else:
            k = self.caption_index(index)
            item["caption"], item["caption_index"] = sample.captions[k], k
        if self.with_negatives:
            item["negatives"] = list(sample.negatives)
        return item


def collate_image_text(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images ((B, 3, S, S), or a list of such per view) and keep strings as lists."""
    out: dict[str, Any] = {
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "id": [it["id"] for it in items],
        "caption": [it["caption"] for it in items],
        "caption_index": torch.tensor([it["caption_index"] for it in items], dtype=torch.long),
    }
    first = items[0]["image"]
    if isinstance(first, list):
        out["image"] = [torch.stack([it["image"][v] for it in items]) for v in range(len(first))]
    else:
        out["image"] = torch.stack([it["image"] for it in items])
    if "negatives" in items[0]:
        out["negatives"] = [it["negatives"] for it in items]
    return out
