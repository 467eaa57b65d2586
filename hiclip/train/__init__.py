"""Training HiCLIP / HiDeCLIP (and the text-only Tree-Transformer MLM setting).

Modules: ``config`` (TrainConfig, JSON + ``--set`` overrides), ``losses`` (CLIP InfoNCE with
all-gather, SimSiam, MLM, nearest-neighbour queue), ``distributed`` (torchrun / DDP helpers),
``optim`` (AdamW groups, warm-up + cosine), ``run_folder`` (params, logs, metrics, atomic
checkpoints), ``data_order`` (deterministic, resumable sharded batches), ``loop`` (the trainer).
"""
from hiclip.train.config import LossConfig, OptimConfig, TrainConfig, load_config

__all__ = ["LossConfig", "OptimConfig", "TrainConfig", "load_config"]
