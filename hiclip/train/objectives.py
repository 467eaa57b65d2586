"""The HiDeCLIP objective as one module (so DDP can wrap it): the model, the training-only
SimSiam heads and the nearest-neighbour queue, and the forward pass that turns a batch into the
weighted loss terms of method.md 4.

Batch layout (B = local micro-batch): ``images`` a list of V views (B, 3, S, S); ``text`` the
tokenised captions; ``text2`` another caption of the same samples (multi-view ``caption`` mode);
``negatives`` (B * K) tokenised hard-negative captions with ``negative_valid`` (B * K,) bool;
``seeds`` (B,) per-sample seeds for MLM and MIM masking.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hiclip.errors import HiCLIPError
from hiclip.model import HiCLIP
from hiclip.tokenizer import SPECIAL_TOKENS, TextBatch
from hiclip.train.config import LossConfig
from hiclip.train.distributed import all_gather_no_grad
from hiclip.train.losses import (
    FeatureQueue,
    MaskedImageHead,
    SimSiamHead,
    clip_loss,
    mask_patches,
    mask_tokens,
    mim_loss,
    mlm_loss,
    multiview_clip_loss,
    nearest_neighbour_loss,
    patchify,
)

FIRST_REGULAR_ID = len(SPECIAL_TOKENS)


@dataclass
class TrainBatch:
    """One local micro-batch, already on the training device."""

    text: TextBatch
    seeds: torch.Tensor
    images: list[torch.Tensor] | None = None
    text2: TextBatch | None = None
    negatives: TextBatch | None = None
    negative_valid: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.seeds.shape[0])


class Objective(nn.Module):
    """Model + training-only heads. ``forward(batch)`` returns ``(total, terms, text_features)``:
    the weighted scalar loss, the unweighted terms (detached, for logging) and the gathered
    (G, E) text features to push into the NN queue once the step is known to be finite."""

    def __init__(self, model: HiCLIP, loss: LossConfig, mode: str = "clip", mask_token_id: int | None = None,
                 regular_ids: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model = model
        # MLM: the tokenizer's mask id and the id range random replacements come from
        # (default: hiclip's own vocabularies, [MASK] = 4 and ids from 5)
        self._mask_id = SPECIAL_TOKENS.index("[MASK]") if mask_token_id is None else mask_token_id
        self._regular_ids = regular_ids or (FIRST_REGULAR_ID, model.config.text.vocab_size)
        self.loss = loss
        self.mode = mode
        # Set by the training loop during loss.mlm_warmup_steps: only the MLM term runs.
        self.mlm_only = False
        embed = model.config.embed_dim
        self.simsiam = (SimSiamHead(embed, loss.simsiam_hidden, loss.simsiam_dim,
                                    loss.simsiam_predictor_hidden)
                        if mode == "clip" and loss.simsiam_weight > 0 else None)
        self.queue = (FeatureQueue(loss.queue_size, embed)
                      if mode == "clip" and loss.nn_weight > 0 else None)
        vision = model.config.vision
        self.mim = (MaskedImageHead(vision.width, vision.patch_size)
                    if mode == "clip" and loss.mim_weight > 0 and vision is not None else None)
        if self.mim is not None and loss.mim_layer is not None and not (
                -vision.layers <= loss.mim_layer < vision.layers):
            raise HiCLIPError(f"loss.mim_layer {loss.mim_layer} is outside the vision tower's "
                              f"{vision.layers} layers")

    def heads_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """State of the parts that are not exported with the model."""
        state: dict[str, dict[str, torch.Tensor]] = {}
        if self.simsiam is not None:
            state["simsiam"] = self.simsiam.state_dict()
        if self.queue is not None:
            state["queue"] = self.queue.state_dict()
        if self.mim is not None:
            state["mim"] = self.mim.state_dict()
        return state

    def load_heads_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        if self.simsiam is not None:
            self.simsiam.load_state_dict(state["simsiam"])
        if self.queue is not None:
            self.queue.load_state_dict(state["queue"])
        if self.mim is not None:
            self.mim.load_state_dict(state["mim"])

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp().clamp(max=self.model.config.max_logit_scale)

    def _masked(self, text: TextBatch, seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_tokens(text.input_ids, text.word_ids, seeds, self._mask_id, *self._regular_ids,
                           self.loss.mlm_probability)

    def _mlm(self, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        chosen = labels != -100
        logits = self.model.text.mlm_logits(states[chosen])  # (M, V): masked tokens only
        return mlm_loss(logits, labels[chosen])

    def _mim(self, images: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """SimMIM on one view: mask patches, encode, predict the masked patches' pixels."""
        assert self.mim is not None
        vision = self.model.vision
        assert vision is not None
        patch = vision.config.patch_size
        mask = mask_patches(seeds, vision.config.grid ** 2, self.loss.mim_mask_ratio, images.device)
        states = vision.forward_patches(images, mask, self.mim.mask_token, self.loss.mim_layer)
        target = patchify(images, patch, self.loss.mim_norm_pix)
        return mim_loss(self.mim(states), target, mask)

    def _encode_text(self, text: TextBatch) -> torch.Tensor:
        return self.model.encode_text(text.input_ids, text.attention_mask, normalize=True,
                                      word_ids=text.word_ids)

    def forward(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                  torch.Tensor | None]:
        if self.mode == "mlm" or self.mlm_only:
            masked, labels = self._masked(batch.text, batch.seeds)
            states = self.model.text.forward_tokens(masked, batch.text.attention_mask,
                                                    batch.text.word_ids)
            term = self._mlm(states, labels)
            total = term if self.mode == "mlm" else self.loss.mlm_weight * term  # warm-up: weighted
            return total, {"mlm": term.detach()}, None
        cfg = self.loss
        assert batch.images is not None
        raw_views = [self.model.encode_image(view) for view in batch.images]  # V x (B, E)
        image_views = [F.normalize(v, dim=-1) for v in raw_views]
        text_features = self._encode_text(batch.text)  # (B, E)
        scale = self.logit_scale()
        terms: dict[str, torch.Tensor] = {}
        text_views = [text_features]
        need_masked = cfg.mlm_weight > 0 or (cfg.multiview and cfg.text_view == "mask")
        if need_masked:
            masked, labels = self._masked(batch.text, batch.seeds)
            states = self.model.text.forward_tokens(masked, batch.text.attention_mask,
                                                    batch.text.word_ids)
            if cfg.mlm_weight > 0:
                terms["mlm"] = self._mlm(states, labels)
            if cfg.multiview and cfg.text_view == "mask":
                text_views.append(F.normalize(self.model.text.pool(states, batch.text.attention_mask),
                                              dim=-1))
        if cfg.multiview and cfg.text_view == "caption" and batch.text2 is not None:
            text_views.append(self._encode_text(batch.text2))
        negatives = valid = None
        if cfg.hard_negatives and batch.negatives is not None:
            negatives, valid = self._encode_text(batch.negatives), batch.negative_valid
        if cfg.clip_weight > 0:
            if cfg.multiview:
                terms["clip"] = multiview_clip_loss(image_views, text_views, scale, negatives, valid)
            else:
                terms["clip"] = clip_loss(image_views[0], text_features, scale, negatives, valid)
        if self.simsiam is not None:
            terms["simsiam"] = self.simsiam(raw_views[0], raw_views[1])
        if self.mim is not None:
            # a separate forward: CLIP keeps the unmasked image it is evaluated on
            terms["mim"] = self._mim(batch.images[0], batch.seeds)
        gathered = None
        if self.queue is not None:
            terms["nn"] = torch.stack([nearest_neighbour_loss(v, text_features, self.queue, scale)
                                       for v in image_views]).mean()
            gathered = all_gather_no_grad(text_features)
        weights = {"clip": cfg.clip_weight, "simsiam": cfg.simsiam_weight,
                   "mlm": cfg.mlm_weight, "nn": cfg.nn_weight, "mim": cfg.mim_weight}
        total = sum(weights[name] * value for name, value in terms.items())
        return total, {k: v.detach() for k, v in terms.items()}, gathered
