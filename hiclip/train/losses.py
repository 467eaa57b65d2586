"""Training objectives (method.md 4): CLIP InfoNCE over the global batch, multi-view CLIP,
SimSiam, masked language modelling, masked image modelling (SimMIM) and nearest-neighbour
supervision from a feature queue.

Every contrastive term follows the same distributed rule: features are all-gathered with
gradient, each rank computes its *local* rows against the *global* batch, and the per-rank loss is
scaled so that DDP's gradient averaging reproduces the single-process loss on the global batch.
Shapes: B = local batch, G = global batch (world * B), E = embedding width, K = negatives/sample.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hiclip.train.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    all_reduce_sum,
    rank_offset,
    world_size,
)


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    negative_features: torch.Tensor | None = None,
    negative_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE, local rows against the global batch.

    image_features, text_features: (B, E), L2-normalised. logit_scale: scalar (already exp'd).
    negative_features: (B * K, E) hard-negative captions, appended (globally gathered) as extra
    candidates of the image->text direction only (NegCLIP style); negative_valid: (B * K,) bool,
    False for padding negatives of samples that have none. Returns the scalar loss.
    """
    local = image_features.shape[0]
    all_images = all_gather_with_grad(image_features)  # (G, E)
    all_texts = all_gather_with_grad(text_features)  # (G, E)
    labels = torch.arange(local, device=image_features.device) + rank_offset(local)
    logits_i2t = logit_scale * image_features @ all_texts.t()  # (B, G)
    if negative_features is not None:
        all_negatives = all_gather_with_grad(negative_features)  # (G * K, E)
        negative_logits = logit_scale * image_features @ all_negatives.t()  # (B, G * K)
        if negative_valid is not None:
            valid = all_gather_no_grad(negative_valid.to(torch.uint8)).bool()
            negative_logits = negative_logits.masked_fill(~valid[None, :], float("-inf"))
        logits_i2t = torch.cat([logits_i2t, negative_logits], dim=1)  # (B, G + G * K)
    logits_t2i = logit_scale * text_features @ all_images.t()  # (B, G)
    return 0.5 * (F.cross_entropy(logits_i2t.float(), labels)
                  + F.cross_entropy(logits_t2i.float(), labels))


def multiview_clip_loss(
    image_views: list[torch.Tensor],
    text_views: list[torch.Tensor],
    logit_scale: torch.Tensor,
    negative_features: torch.Tensor | None = None,
    negative_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLIP loss averaged over every (image view, text view) pair (DeCLIP multi-view supervision).
    Each view is (B, E), L2-normalised; hard negatives (if any) join every pair."""
    terms = [clip_loss(i, t, logit_scale, negative_features, negative_valid)
             for i in image_views for t in text_views]
    return torch.stack(terms).mean()


class GlobalBatchNorm1d(nn.Module):
    """BatchNorm over the *global* batch: statistics from all ranks, gathered with gradient.

    torch's SyncBatchNorm needs a GPU; this works with gloo on CPU too, and makes SimSiam under
    DDP identical to one process with the global batch. Input (B, C) -> (B, C).
    """

    def __init__(self, channels: int, affine: bool = True, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            full = all_gather_with_grad(x)
            mean = full.mean(dim=0)
            var = full.var(dim=0, unbiased=False)
            with torch.no_grad():
                n = full.shape[0]
                unbiased = var * n / max(n - 1, 1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight + self.bias
        return y


class SimSiamHead(nn.Module):
    """SimSiam projector (3 layers, BN) and predictor (2 layers, bottleneck) on image embeddings.

    Training-only: saved in the training state, not in the exported model.
    """

    def __init__(self, in_dim: int, hidden: int = 256, dim: int = 128,
                 predictor_hidden: int = 64) -> None:
        super().__init__()
        self.projector = nn.Sequential(
            nn.Linear(in_dim, hidden, bias=False), GlobalBatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden, bias=False), GlobalBatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, dim, bias=False), GlobalBatchNorm1d(dim, affine=False),
        )
        self.predictor = nn.Sequential(
            nn.Linear(dim, predictor_hidden, bias=False), GlobalBatchNorm1d(predictor_hidden),
            nn.ReLU(inplace=True), nn.Linear(predictor_hidden, dim),
        )

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """view1, view2: (B, E) image embeddings of two augmentations -> scalar SimSiam loss
        ``-(cos(p1, sg(z2)) + cos(p2, sg(z1))) / 2``, averaged over the global batch."""
        with torch.autocast(device_type=view1.device.type, enabled=False):  # BN stats in fp32
            z1, z2 = self.projector(view1.float()), self.projector(view2.float())
            p1, p2 = self.predictor(z1), self.predictor(z2)
            cos = (F.cosine_similarity(p1, z2.detach(), dim=-1)
                   + F.cosine_similarity(p2, z1.detach(), dim=-1))
            return -0.5 * cos.mean()


def mask_tokens(
    input_ids: torch.Tensor,
    word_ids: torch.Tensor,
    seeds: torch.Tensor,
    mask_token_id: int,
    first_regular_id: int,
    vocab_size: int,
    probability: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of real word tokens only (word_ids >= 0: never SOT/EOT/PAD).

    input_ids, word_ids: (B, T). seeds: (B,) int64, one per sample, so a sample is masked the same
    way whatever batch, rank or micro-batch it lands in. Of the selected tokens 80% become
    ``mask_token_id``, 10% a random regular token (ids in [first_regular_id, vocab_size)), 10% stay.
    Returns (masked_ids (B, T), labels (B, T): the original id where selected, -100 elsewhere).
    """
    batch, length = input_ids.shape
    draws = torch.empty(batch, 3, length)
    randoms = torch.empty(batch, length, dtype=torch.long)
    for row, seed in enumerate(seeds.tolist()):
        generator = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
        draws[row] = torch.rand(3, length, generator=generator)
        randoms[row] = torch.randint(first_regular_id, vocab_size, (length,), generator=generator)
    draws = draws.to(input_ids.device)
    randoms = randoms.to(input_ids.device)
    real = word_ids >= 0
    selected = (draws[:, 0] < probability) & real
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    to_mask = selected & (draws[:, 1] < 0.8)
    to_random = selected & ~to_mask & (draws[:, 2] < 0.5)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, randoms, masked)
    return masked, labels


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on masked positions only, normalised by the *global* number of masked tokens
    (times world size, so DDP's gradient mean gives the single-process loss).

    logits: (B, T, V); labels: (B, T) with -100 where not masked. Zero (with a graph) when no token
    is masked anywhere."""
    chosen = labels != -100
    count = all_reduce_sum(chosen.sum().to(torch.float32))
    if count.item() == 0:
        return logits.sum() * 0.0
    picked = logits[chosen].float()  # (M, V): only masked rows go through the softmax
    total = F.cross_entropy(picked, labels[chosen], reduction="sum")
    return total * world_size() / count


def mask_patches(seeds: torch.Tensor, n_patches: int, ratio: float,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, n_patches) bool: for each sample, ``round(ratio * n_patches)`` patches chosen uniformly
    (at least one, at most all but one), from that sample's seed alone, like :func:`mask_tokens`."""
    count = min(max(1, round(ratio * n_patches)), n_patches - 1)
    mask = torch.zeros(len(seeds), n_patches, dtype=torch.bool)
    for row, seed in enumerate(seeds.tolist()):
        # offset the seed so the patch draw is not the MLM draw of the same sample
        generator = torch.Generator().manual_seed((int(seed) + 0x5EED) & 0x7FFF_FFFF_FFFF_FFFF)
        mask[row, torch.randperm(n_patches, generator=generator)[:count]] = True
    return mask.to(device)


def patchify(images: torch.Tensor, patch: int, normalize: bool = False,
             eps: float = 1e-6) -> torch.Tensor:
    """(B, 3, S, S) -> (B, (S/patch)^2, patch*patch*3) in the ViT's row-major patch order.
    ``normalize``: each patch's pixels minus their mean over its own pixels, over their std (MAE's
    normalised-pixel target); otherwise the input pixels (already normalised by the transform, as
    SimMIM predicts them)."""
    b, c, size, _ = images.shape
    grid = size // patch
    x = images.reshape(b, c, grid, patch, grid, patch).permute(0, 2, 4, 3, 5, 1)
    x = x.reshape(b, grid * grid, patch * patch * c)
    if normalize:
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        x = (x - mean) / (var + eps).sqrt()
    return x


class MaskedImageHead(nn.Module):
    """SimMIM's parts outside the encoder: the learned mask token that replaces a masked patch's
    embedding, and a light decoder (LayerNorm + one linear map) from a patch state to its pixels.

    Training-only: saved in the training state, not in the exported model, so checkpoints and the
    HiCLIP/twin weight sharing are unchanged by the objective.
    """

    def __init__(self, width: int, patch: int) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(width))
        nn.init.normal_(self.mask_token, std=0.02)
        self.norm = nn.LayerNorm(width)
        self.decoder = nn.Linear(width, patch * patch * 3)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(..., width) patch states -> (..., patch*patch*3) predicted pixels."""
        return self.decoder(self.norm(states))


def mim_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 between predicted and target pixels of the masked patches only (SimMIM), averaged over
    the *global* number of masked pixel values (times world size, as :func:`mlm_loss`).

    predicted, target: (B, N, P); mask: (B, N) bool."""
    count = all_reduce_sum(mask.sum().to(torch.float32)) * predicted.shape[-1]
    if count.item() == 0:
        return predicted.sum() * 0.0
    error = (predicted[mask].float() - target[mask].float()).abs().sum()
    return error * world_size() / count


class FeatureQueue(nn.Module):
    """FIFO queue of past (global-batch) text features for nearest-neighbour supervision.

    Buffers: ``features`` (Q, E), ``pointer`` and ``filled`` (saved with the training state).
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.filled)

    @torch.no_grad()
    def nearest(self, query: torch.Tensor) -> torch.Tensor:
        """query (N, E), L2-normalised -> (N, E) the most cosine-similar queued feature of each."""
        bank = self.features[: int(self.filled)].to(query.dtype)
        best = (query @ bank.t()).argmax(dim=1)
        return bank[best]

    @torch.no_grad()
    def push(self, features: torch.Tensor) -> None:
        """Enqueue (N, E) detached features, overwriting the oldest."""
        features = features.detach().to(self.features.dtype)[-self.size:]
        n = features.shape[0]
        start = int(self.pointer)
        index = (torch.arange(n, device=self.features.device) + start) % self.size
        self.features[index] = features
        self.pointer.fill_((start + n) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + n))


def nearest_neighbour_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    queue: FeatureQueue,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """DeCLIP nearest-neighbour supervision: each image's positive is the queued text feature
    nearest to its own caption's feature; InfoNCE of local images against the global set of those
    neighbours. image_features, text_features: (B, E) normalised. Zero while the queue is empty.
    The queue is *not* updated here (push the gathered text features after the step)."""
    if len(queue) == 0:
        return image_features.sum() * 0.0
    neighbours = all_gather_no_grad(queue.nearest(text_features.detach()))  # (G, E)
    local = image_features.shape[0]
    labels = torch.arange(local, device=image_features.device) + rank_offset(local)
    logits = logit_scale * image_features @ neighbours.t()
    return F.cross_entropy(logits.float(), labels)


def clamp_logit_scale(log_scale: torch.nn.Parameter, maximum: float = 100.0) -> None:
    """Keep exp(log_scale) <= maximum (CLIP clamps the temperature after each step)."""
    with torch.no_grad():
        log_scale.clamp_(max=math.log(maximum))
