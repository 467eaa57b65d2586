"""Training HiCLIP / HiDeCLIP (and the text-only Tree-Transformer MLM setting).

Modules: ``config`` (TrainConfig, JSON + ``--set`` overrides), ``losses`` (CLIP InfoNCE with
all-gather, SimSiam, MLM, nearest-neighbour queue), ``objectives`` (model + heads -> weighted
terms), ``distributed`` (torchrun / DDP helpers, differentiable all-gather), ``optim`` (AdamW
groups, warm-up + cosine), ``data_order`` (deterministic, resumable sharded batches),
``data`` (datasets, tokenizer, collation), ``validate`` (periodic held-out metrics),
``run_folder`` (params, logs, metrics, atomic checkpoints) and ``loop`` (:func:`train`).
"""
from hiclip.train.config import LossConfig, OptimConfig, TrainConfig, load_config

__all__ = ["LossConfig", "OptimConfig", "TrainConfig", "load_config"]
