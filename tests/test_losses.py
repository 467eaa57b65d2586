"""Objectives of hiclip.train.losses against hand-written references (single process)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hiclip.train.losses import (
    FeatureQueue,
    GlobalBatchNorm1d,
    SimSiamHead,
    clamp_logit_scale,
    clip_loss,
    mask_tokens,
    mlm_loss,
    multiview_clip_loss,
    nearest_neighbour_loss,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _normed(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def _reference_clip(img: torch.Tensor, txt: torch.Tensor, scale: float) -> float:
    """Explicit per-row log-softmax loops."""
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        row = [scale * float(img[i] @ txt[j]) for j in range(n)]
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        col = [scale * float(txt[i] @ img[j]) for j in range(n)]
        total += -(col[i] - math.log(sum(math.exp(v) for v in col)))
    return total / (2 * n)


def test_clip_loss_matches_reference() -> None:
    img, txt = _normed(6, 8, seed=1), _normed(6, 8, seed=2)
    loss = clip_loss(img, txt, torch.tensor(10.0))
    assert loss.item() == pytest.approx(_reference_clip(img, txt, 10.0), rel=1e-5)


def test_clip_loss_is_low_for_matched_pairs() -> None:
    img = _normed(8, 16, seed=3)
    matched = clip_loss(img, img, torch.tensor(50.0)).item()
    shuffled = clip_loss(img, img.roll(1, dims=0), torch.tensor(50.0)).item()
    assert matched < 0.05 < shuffled


def test_hard_negatives_add_image_to_text_candidates() -> None:
    img, txt, neg = _normed(4, 8, seed=4), _normed(4, 8, seed=5), _normed(4, 8, seed=6)
    scale = torch.tensor(5.0)
    plain = clip_loss(img, txt, scale)
    with_neg = clip_loss(img, txt, scale, neg, torch.ones(4, dtype=torch.bool))
    # Reference: image->text softmax over [batch texts, all negatives]; text->image unchanged.
    i2t = F.cross_entropy(scale * img @ torch.cat([txt, neg]).t(), torch.arange(4))
    t2i = F.cross_entropy(scale * txt @ img.t(), torch.arange(4))
    assert with_neg.item() == pytest.approx(0.5 * (i2t + t2i).item(), rel=1e-6)
    assert with_neg.item() > plain.item()
    masked = clip_loss(img, txt, scale, neg, torch.zeros(4, dtype=torch.bool))
    assert masked.item() == pytest.approx(plain.item(), rel=1e-6)


def test_multiview_averages_pairs() -> None:
    i1, i2, t1, t2 = (_normed(5, 8, seed=s) for s in range(10, 14))
    scale = torch.tensor(7.0)
    expected = sum(clip_loss(i, t, scale) for i in (i1, i2) for t in (t1, t2)) / 4
    assert multiview_clip_loss([i1, i2], [t1, t2], scale).item() == pytest.approx(expected.item())
    single = multiview_clip_loss([i1], [t1], scale).item()
    assert single == pytest.approx(clip_loss(i1, t1, scale).item())


def test_global_batchnorm_matches_torch_batchnorm_single_process() -> None:
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(0)) * 3 + 1
    ours, ref = GlobalBatchNorm1d(6), torch.nn.BatchNorm1d(6)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_simsiam_loss_range_and_stop_gradient() -> None:
    torch.manual_seed(0)
    head = SimSiamHead(16, hidden=32, dim=8, predictor_hidden=4)
    v1 = torch.randn(12, 16, requires_grad=True)
    v2 = torch.randn(12, 16, requires_grad=True)
    loss = head(v1, v2)
    assert -1.0 <= loss.item() <= 1.0
    loss.backward()
    assert v1.grad is not None and v1.grad.abs().sum() > 0
    # The predictor sees a gradient; the target branch is detached: with identical views the
    # gradient flows only through p = predictor(projector(view)).
    assert head.predictor[0].weight.grad.abs().sum() > 0
    # Training the heads on two noisy views of the same inputs makes them agree.
    base = torch.randn(64, 16)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    first = None
    for step in range(60):
        a = base + 0.1 * torch.randn_like(base)
        b = base + 0.1 * torch.randn_like(base)
        value = head(a, b)
        first = value.item() if first is None else first
        opt.zero_grad()
        value.backward()
        opt.step()
    assert value.item() < first - 0.1


def _toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two sentences, SOT=1 ... EOT=2, PAD=0; regular ids from 5."""
    ids = torch.tensor([[1, 7, 8, 9, 10, 11, 2, 0], [1, 12, 13, 2, 0, 0, 0, 0]])
    words = torch.tensor([[-1, 0, 1, 2, 3, 4, -1, -1], [-1, 0, 1, -1, -1, -1, -1, -1]])
    return ids, words


def test_mask_tokens_touches_only_real_words_and_is_per_sample_deterministic() -> None:
    ids, words = _toy_batch()
    seeds = torch.tensor([11, 22])
    masked, labels = mask_tokens(ids, words, seeds, mask_token_id=4, first_regular_id=5,
                                 vocab_size=40, probability=0.9)
    special = words < 0
    assert torch.equal(masked[special], ids[special])
    assert (labels[special] == -100).all()
    selected = labels != -100
    assert torch.equal(labels[selected], ids[selected])
    # Same seed -> same masking of that sample, whatever else is in the batch.
    alone, alone_labels = mask_tokens(ids[1:], words[1:], seeds[1:], 4, 5, 40, 0.9)
    assert torch.equal(alone, masked[1:]) and torch.equal(alone_labels, labels[1:])


def test_mask_tokens_rates_80_10_10() -> None:
    n, t = 400, 40
    ids = torch.randint(5, 1000, (n, t))
    words = torch.arange(t).repeat(n, 1)
    masked, labels = mask_tokens(ids, words, torch.arange(n), 4, 5, 1000, 0.15)
    selected = labels != -100
    rate = selected.float().mean().item()
    assert 0.14 < rate < 0.16
    as_mask = (masked == 4) & selected
    unchanged = (masked == ids) & selected
    randomised = selected & ~as_mask & ~unchanged
    total = selected.sum().item()
    assert 0.77 < as_mask.sum().item() / total < 0.83
    assert 0.08 < unchanged.sum().item() / total < 0.12
    assert 0.08 < randomised.sum().item() / total < 0.12
    assert ((masked[randomised] >= 5) & (masked[randomised] < 1000)).all()


def test_mlm_loss_counts_masked_positions_only() -> None:
    logits = torch.randn(2, 5, 9, generator=torch.Generator().manual_seed(0))
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 3] = 4, 7
    expected = (F.cross_entropy(logits[0, 1][None], torch.tensor([4]))
                + F.cross_entropy(logits[1, 3][None], torch.tensor([7]))) / 2
    assert mlm_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    empty = mlm_loss(logits.requires_grad_(), torch.full((2, 5), -100))
    assert empty.item() == 0.0 and empty.requires_grad


def test_feature_queue_fifo_and_nearest() -> None:
    queue = FeatureQueue(size=4, dim=3)
    assert len(queue) == 0
    eye = torch.eye(3)
    queue.push(eye)
    assert len(queue) == 3
    queue.push(-eye[:2])  # wraps: slots 3, 0
    assert len(queue) == 4 and int(queue.pointer) == 1
    torch.testing.assert_close(queue.features[0], -eye[1])
    torch.testing.assert_close(queue.features[3], -eye[0])
    query = F.normalize(torch.tensor([[0.1, 0.9, 0.0], [-1.0, 0.0, 0.1]]), dim=-1)
    torch.testing.assert_close(queue.nearest(query), torch.stack([eye[1], -eye[0]]))
    restored = FeatureQueue(size=4, dim=3)
    restored.load_state_dict(queue.state_dict())
    assert len(restored) == 4 and int(restored.pointer) == 1


def test_nearest_neighbour_loss() -> None:
    img, txt = _normed(4, 6, seed=20), _normed(4, 6, seed=21)
    queue = FeatureQueue(size=8, dim=6)
    assert nearest_neighbour_loss(img, txt, queue, torch.tensor(10.0)).item() == 0.0
    bank = _normed(8, 6, seed=22)
    queue.push(bank)
    nn = bank[(txt @ bank.t()).argmax(dim=1)]
    expected = F.cross_entropy(10.0 * img @ nn.t(), torch.arange(4))
    got = nearest_neighbour_loss(img, txt, queue, torch.tensor(10.0))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_clamp_logit_scale() -> None:
    log_scale = torch.nn.Parameter(torch.tensor(math.log(500.0)))
    clamp_logit_scale(log_scale, 100.0)
    assert log_scale.exp().item() == pytest.approx(100.0, rel=1e-5)
