"""Two gloo processes on CPU, launched by torchrun, give the same loss and gradients as one
process on the global batch.

The objective is the full HiDeCLIP one on a small real model: CLIP InfoNCE with hard negatives
(all-gathered with gradient), MLM (global token count), SimSiam (global batch norm) and the
nearest-neighbour queue.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hiclip.train.config import LossConfig


pytestmark = pytest.mark.usefixtures("one_thread")

GLOBAL_BATCH = 8
WORDS = "a red blue green square circle big small left of right above two three the and".split()


def _tiny_model():
    from hiclip import create_model

    torch.manual_seed(0)
    return create_model("hiclip-tiny", hierarchy=True, vocab_size=len(WORDS) + 5, embed_dim=32,
                        text={"width": 32, "layers": 2, "heads": 2, "context_length": 12},
                        vision={"width": 32, "layers": 2, "heads": 2, "image_size": 16,
                                "patch_size": 4})


def _loss_config() -> LossConfig:
    return LossConfig(clip_weight=1.0, simsiam_weight=0.3, mlm_weight=0.5, nn_weight=0.2,
                      mlm_probability=0.3, hard_negatives=True, multiview=True, text_view="mask",
                      queue_size=16, simsiam_hidden=16, simsiam_dim=8, simsiam_predictor_hidden=4)


def _global_inputs():
    """Deterministic global batch: 2 image views, captions, one negative per sample, seeds."""
    from hiclip import HiCLIPTokenizer

    g = torch.Generator().manual_seed(1)
    tokenizer = HiCLIPTokenizer.train_word_level([" ".join(WORDS)], context_length=12)
    captions, negatives = [], []
    for i in range(GLOBAL_BATCH):
        n = 3 + i % 5
        captions.append(" ".join(WORDS[int(j)] for j in torch.randint(0, len(WORDS), (n,), generator=g)))
        negatives.append(" ".join(WORDS[int(j)] for j in torch.randint(0, len(WORDS), (n,), generator=g)))
    views = [torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=g) for _ in range(2)]
    queue_init = torch.nn.functional.normalize(torch.randn(10, 32, generator=g), dim=-1)
    seeds = torch.arange(GLOBAL_BATCH) * 7919 + 13
    valid = torch.tensor([i != 3 for i in range(GLOBAL_BATCH)])  # sample 3 has no negative
    return tokenizer, captions, negatives, views, queue_init, seeds, valid


def _batch(rows: slice):
    from hiclip.train.objectives import TrainBatch

    tokenizer, captions, negatives, views, _, seeds, valid = _global_inputs()
    # Pad every slice to the global context so token shapes agree across ranks.
    text = tokenizer(captions[rows], context_length=12, pad_to_context=True)
    neg = tokenizer(negatives[rows], context_length=12, pad_to_context=True)
    return TrainBatch(text=text, seeds=seeds[rows], images=[v[rows] for v in views],
                      negatives=neg, negative_valid=valid[rows])


def _objective():
    from hiclip.train.objectives import Objective

    objective = Objective(_tiny_model(), _loss_config())
    torch.manual_seed(5)
    for p in objective.simsiam.parameters():  # same head init everywhere
        torch.nn.init.normal_(p, std=0.2) if p.dim() > 1 else None
    objective.queue.push(_global_inputs()[4])
    return objective


def _single_process() -> tuple[float, dict[str, torch.Tensor]]:
    objective = _objective()
    loss, _, _ = objective(_batch(slice(0, GLOBAL_BATCH)))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}


def _worker(out: str) -> None:
    """One rank, started by torchrun (RANK, WORLD_SIZE, MASTER_ADDR/PORT come from it)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    from hiclip.train.distributed import all_reduce_mean, init_distributed, shutdown_distributed

    init_distributed("cpu")
    objective = _objective()
    ddp = torch.nn.parallel.DistributedDataParallel(objective, broadcast_buffers=False)
    local = GLOBAL_BATCH // world
    loss, _, _ = ddp(_batch(slice(rank * local, (rank + 1) * local)))
    loss.backward()
    mean_loss = all_reduce_mean(loss.detach())
    if rank == 0:
        grads = {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}
        torch.save({"loss": mean_loss.item(), "grads": grads}, out)
    shutdown_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_two_process_loss_and_gradients_equal_single_process(tmp_path) -> None:
    out = str(tmp_path / "ddp.pt")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
               "127.0.0.1", "--master-port", str(_free_port()), __file__, out]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=280,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)
    loss, grads = _single_process()
    assert ddp["loss"] == pytest.approx(loss, abs=1e-5)
    assert set(ddp["grads"]) == set(grads)
    assert len(grads) > 20
    for name, grad in grads.items():
        torch.testing.assert_close(ddp["grads"][name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # The check is not vacuous: heads, both towers and the temperature all received gradient.
    for part in ("simsiam.projector", "model.vision.", "model.text.", "model.logit_scale"):
        assert any(n.startswith(part) and grads[n].abs().sum() > 0 for n in grads), part


if __name__ == "__main__":
    _worker(sys.argv[1])
