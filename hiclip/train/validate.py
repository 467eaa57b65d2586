"""Periodic validation during training: held-out retrieval (CLIP mode) or masked-token accuracy
(MLM mode), on at most ``val_max_samples`` held-out samples."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hiclip.evaluate import EvalSet, encode_images, evaluate_retrieval
from hiclip.train.config import TrainConfig
from hiclip.train.data_order import sample_seed
from hiclip.train.losses import mask_tokens


@torch.no_grad()
def validate(model: Any, data: Any, config: TrainConfig, device: torch.device) -> dict[str, float]:
    val = data.val
    if val is None:
        return {}
    if config.mode == "mlm":
        return mlm_accuracy(model, data.tokenizer, val.lines, config, device)
    features = encode_images(model, list(val.images), device)
    metrics = evaluate_retrieval(model, data.tokenizer,
                                 EvalSet(val.ids, val.captions, val.labels, features), device)
    keep = ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5", "rsum")
    return {k: metrics[k] for k in keep}


@torch.no_grad()
def mlm_accuracy(model: Any, tokenizer: Any, lines: list[str], config: TrainConfig,
                 device: torch.device, batch_size: int = 128) -> dict[str, float]:
    """Masked-token accuracy (%) and loss on held-out sentences, with fixed masks (seed -1)."""
    correct = total = 0
    loss_sum = 0.0
    context = model.config.text.max_tokens
    for start in range(0, len(lines), batch_size):
        chunk = lines[start:start + batch_size]
        text = tokenizer(chunk, context_length=context).to(device)
        seeds = torch.tensor([sample_seed(config.seed, -1, start + i) for i in range(len(chunk))])
        masked, labels = mask_tokens(text.input_ids, text.word_ids, seeds, tokenizer.mask_token_id,
                                     *tokenizer.regular_id_range, config.loss.mlm_probability)
        states = model.text.forward_tokens(masked, text.attention_mask, text.word_ids)
        chosen = labels != -100
        if not bool(chosen.any()):
            continue
        logits = model.text.mlm_logits(states[chosen]).float()
        loss_sum += float(F.cross_entropy(logits, labels[chosen], reduction="sum"))
        correct += int((logits.argmax(-1) == labels[chosen]).sum())
        total += int(chosen.sum())
    if total == 0:
        return {}
    return {"mlm_accuracy": 100.0 * correct / total, "mlm_loss": loss_sum / total}
