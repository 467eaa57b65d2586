"""The fused eager path (hiclip/fused_attention.py) against the reference (hiclip/attention.py).

Values and gradients: gradcheck in float64 on small shapes, the reference's own autograd as the
oracle in float64 and float32, and whole models (text with padded batches of different lengths,
vision, prior on and off per layer, every combine rule) in float32 and under CPU bf16 autocast.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hiclip
from hiclip import fused_attention as fa
from hiclip.attention import ChainAffinity, GridAffinity, image_prior, text_prior
from hiclip.config import COMBINE_RULES
from hiclip.errors import HiCLIPError

from model_sizes import TWO_LAYER  # tests/model_sizes.py

torch.set_num_threads(1)
F64 = torch.float64


def text_masks(batch: int, n: int) -> dict[str, torch.Tensor]:
    """A padded batch of different lengths, SOT/EOT, and a two-piece word in the first sentence."""
    lengths = torch.tensor([n, n - 3, max(n - 5, 3)][:batch])
    positions = torch.arange(n)
    valid = positions < lengths.view(-1, 1)
    special = valid & ((positions == 0) | (positions == lengths.view(-1, 1) - 1))
    words = valid & ~special
    both = words[:, :-1] & words[:, 1:]
    intra = torch.zeros_like(both)
    intra[0, 2] = True
    return {"valid": valid, "special": special, "boundary": both & ~intra, "intra_word": intra}


def weighted_grads(outputs: torch.Tensor | tuple[torch.Tensor, ...], inputs: list[torch.Tensor],
                   seed: int = 1) -> tuple[torch.Tensor, ...]:
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("layered", [False, True])
def test_chain_links_match_reference_and_gradcheck(layered: bool) -> None:
    torch.manual_seed(0)
    masks = text_masks(3, 9)
    affinity = ChainAffinity(8).to(F64)
    x = torch.randn(3, 9, 8, dtype=F64, requires_grad=True)
    previous = (torch.rand(3, 8, dtype=F64) * masks["boundary"]).requires_grad_() if layered else None
    graph = fa.chain_graph(masks["boundary"])
    ref = affinity(x, masks["boundary"], previous)
    fused = fa.neighbour_links(affinity, x, graph, previous)
    torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-14)
    inputs = [x, *affinity.parameters()] + ([previous] if layered else [])
    for a, b in zip(weighted_grads(fused, inputs), weighted_grads(ref, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, p: fa.neighbour_links(affinity, x, graph, p),
                                    (x, previous if layered else None))


def test_grid_links_match_reference_and_gradcheck() -> None:
    torch.manual_seed(0)
    H, W = 3, 4
    affinity = GridAffinity(6).to(F64)
    x = torch.randn(2, 1 + H * W, 6, dtype=F64, requires_grad=True)
    h0 = torch.rand(2, H, W - 1, dtype=F64, requires_grad=True)
    v0 = torch.rand(2, H - 1, W, dtype=F64, requires_grad=True)
    graph = fa.grid_graph(2, H, W, 1, x.device)
    ref = affinity(x, H, W, (h0, v0), start=1)
    flat = fa.neighbour_links(affinity, x, graph, torch.cat((h0.flatten(1), v0.flatten(1)), 1))
    fused = fa.split_grid_links(flat, H, W)
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    inputs = [x, h0, v0, *affinity.parameters()]
    for a, b in zip(weighted_grads(fused, inputs), weighted_grads(ref, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    first = fa.split_grid_links(fa.neighbour_links(affinity, x, graph), H, W)
    for a, b in zip(first, affinity(x, H, W, start=1)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(lambda x: fa.neighbour_links(affinity, x, graph), (x,))


@pytest.mark.parametrize("keep_reference_self", [False, True])
def test_text_prior_matches_reference_and_gradcheck(keep_reference_self: bool) -> None:
    masks = text_masks(3, 8)
    g = torch.Generator().manual_seed(0)
    links = (torch.rand(3, 7, generator=g, dtype=F64) * 0.95 + 0.05)
    links[1, 2] = 1e-9  # below eps: clamped, no gradient
    links.requires_grad_()
    args = masks["intra_word"], masks["special"], masks["valid"], 1e-6, keep_reference_self
    prior_masks = fa.text_prior_masks(*args, dtype=F64)
    ref = text_prior(links, *args)
    fused = fa.fused_text_prior(links, prior_masks)
    assert fused.dtype == F64
    torch.testing.assert_close(fused, ref, rtol=1e-10, atol=1e-14)
    for a, b in zip(weighted_grads(fused, [links]), weighted_grads(ref, [links])):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    smooth = links.detach().clamp_min(0.05).requires_grad_()  # finite differences must not cross eps
    assert torch.autograd.gradcheck(lambda a: fa.fused_text_prior(a, prior_masks), (smooth,))


@pytest.mark.parametrize("combine", COMBINE_RULES)
@pytest.mark.parametrize("grid", [(3, 3), (2, 4)])
def test_image_prior_matches_reference_and_gradcheck(combine: str, grid: tuple[int, int]) -> None:
    H, W = grid
    g = torch.Generator().manual_seed(1)
    h = torch.rand(2, H, W - 1, generator=g, dtype=F64) * 0.9 + 0.05
    v = torch.rand(2, H - 1, W, generator=g, dtype=F64) * 0.9 + 0.05
    h[0, 0, 0] = 1e-9
    flat = torch.cat((h.flatten(1), v.flatten(1)), 1).requires_grad_()
    for keep_reference_self in (False, True):
        ref = image_prior(*fa.split_grid_links(flat, H, W), combine, 1e-6, keep_reference_self)
        fused = fa.fused_image_prior(flat, H, W, combine, 1e-6, keep_reference_self)
        torch.testing.assert_close(fused, ref, rtol=1e-10, atol=1e-14)
        for a, b in zip(weighted_grads(fused, [flat]), weighted_grads(ref, [flat])):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    if combine in ("mean", "geometric"):  # max / min have kinks where the two paths tie
        smooth = flat.detach().clamp_min(0.05).requires_grad_()  # finite differences must not cross eps
        assert torch.autograd.gradcheck(lambda a: fa.fused_image_prior(a, H, W, combine), (smooth,))
    with pytest.raises(HiCLIPError, match="combine"):
        fa.fused_image_prior(flat, H, W, "median")


@pytest.mark.parametrize("mask", ["none", "keys", "causal"])
def test_prior_attention_matches_reference_and_gradcheck(mask: str) -> None:
    torch.manual_seed(0)
    B, H, N, dh = 2, 3, 6, 4
    q, k, v = (torch.randn(B, H, N, dh, dtype=F64, requires_grad=True) for _ in range(3))
    prior = torch.rand(B, N, N, dtype=F64, requires_grad=True)
    valid = torch.ones(B, N, dtype=torch.bool)
    valid[1, 4:] = False
    key_valid = {"none": None, "keys": valid,
                 "causal": valid.unsqueeze(1) & torch.ones(N, N, dtype=torch.bool).tril()}[mask]
    scores = q @ k.transpose(-1, -2) * dh**-0.5
    if key_valid is not None:
        allowed = key_valid[:, None, None, :] if key_valid.dim() == 2 else key_valid[:, None]
        scores = scores.masked_fill(~allowed, float("-inf"))
    ref = (scores.softmax(-1) * prior.unsqueeze(1)) @ v
    bias = fa.attention_bias(key_valid, H, torch.float64)
    fused = fa.prior_attention(q, k, v, bias, prior)
    torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-14)
    inputs = [q, k, v, prior]
    for a, b in zip(weighted_grads(fused, inputs), weighted_grads(ref, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: fa.prior_attention(*t[:3], bias, t[3]), tuple(inputs))


def test_implementation_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv("HICLIP_ATTENTION", raising=False)
    assert fa.fused_enabled(cuda) and not fa.fused_enabled(cpu)  # auto: where it is faster
    monkeypatch.setenv("HICLIP_ATTENTION", "fused")
    assert fa.fused_enabled(cpu) and fa.fused_enabled(cuda)
    monkeypatch.setenv("HICLIP_ATTENTION", "reference")
    assert not fa.fused_enabled(cpu) and not fa.fused_enabled(cuda)
    monkeypatch.setenv("HICLIP_ATTENTION", "fast")
    with pytest.raises(HiCLIPError, match="HICLIP_ATTENTION"):
        fa.fused_enabled(cpu)


def model_step(monkeypatch: pytest.MonkeyPatch, implementation: str, dtype: torch.dtype = torch.float32,
               bf16: bool = False, **overrides: object) -> list[torch.Tensor | None]:
    """Features, links and every parameter gradient of one CLIP + links loss step (padded text)."""
    monkeypatch.setenv("HICLIP_ATTENTION", implementation)
    torch.manual_seed(0)
    model = hiclip.create_model("hiclip-tiny", vocab_size=64, **overrides).to(dtype)
    g = torch.Generator().manual_seed(0)
    size = model.config.vision.image_size
    images = torch.randn(4, 3, size, size, generator=g).to(dtype)
    lengths = [12, 7, 5, 9]
    ids = torch.zeros(4, 12, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(5, 64, (n,), generator=g)
    mask = ids != 0
    word_ids = torch.where(mask, torch.arange(12) // 2, -1)  # two pieces per word: intra-word gaps
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        image = model.encode_image(images, normalize=True, return_affinities=True)
        text = model.encode_text(ids, mask, normalize=True, word_ids=word_ids, return_affinities=True)
        logits = model.logit_scale.exp() * image.features @ text.features.T
        labels = torch.arange(4)
        loss = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)
                + image.h_links.mean() + image.v_links.mean() + text.links.mean())
    loss.backward()
    return [image.features, text.features, image.h_links, image.v_links, text.links,
            *(p.grad for p in model.parameters())]


CASES = [
    {},
    {"affinity": {"combine": "max"}},
    {"affinity": {"combine": "geometric", "keep_reference_self": True}},
    {"affinity": {"combine": "min"}, "text": {"prior_layers": [0, 2]}, "vision": {"prior_layers": [1]}},
    {"text": {"prior_layers": []}, "vision": {"prior_layers": []}},
    {"text": {"causal": True}},  # an imported CLIP's text tower: (B, T, T) causal & padding mask
]


@pytest.mark.parametrize("overrides", CASES, ids=lambda c: str(c) or "defaults")
def test_models_match_reference_in_float32(monkeypatch: pytest.MonkeyPatch, overrides: dict) -> None:
    ref = model_step(monkeypatch, "reference", **overrides)
    fused = model_step(monkeypatch, "fused", **overrides)
    assert sum(t is not None for t in fused) > 20
    for a, b in zip(fused, ref):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()))


def test_models_match_reference_in_float64_and_two_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = model_step(monkeypatch, "reference", F64, **TWO_LAYER)
    fused = model_step(monkeypatch, "fused", F64, **TWO_LAYER)
    for a, b in zip(fused, ref):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_models_under_bf16_autocast_within_the_reference_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under bf16 the fused path is about as far from the fp32 result as the reference is (bf16 noise)."""
    exact = model_step(monkeypatch, "reference")
    ref = model_step(monkeypatch, "reference", bf16=True)
    fused = model_step(monkeypatch, "fused", bf16=True)
    for e, r, f in zip(exact, ref, fused):
        if e is None:
            continue
        scale = e.norm().item() + 1e-12
        ref_error = (r.float() - e).norm().item() / scale
        fused_error = (f.float() - e).norm().item() / scale
        assert torch.isfinite(f).all()
        # measured: at most 1.6x the reference's own bf16 error (the temperature's gradient)
        assert fused_error <= 2 * ref_error + 1e-2, (fused_error, ref_error)


def test_need_weights_and_grad_checkpointing_take_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HICLIP_ATTENTION", "fused")
    torch.manual_seed(0)
    model = hiclip.create_model("hiclip-tiny", vocab_size=64, **TWO_LAYER)
    images = torch.randn(2, 3, 16, 16)
    ids = torch.tensor([[1, 7, 8, 9, 2], [1, 7, 2, 0, 0]])
    mask = ids != 0
    plain = model.encode_image(images, return_affinities=True)
    maps = model.encode_image(images, return_affinities=True, return_attention=True)  # the reference path
    torch.testing.assert_close(plain.h_links, maps.h_links, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain.features, maps.features, rtol=1e-5, atol=1e-6)
    text = model.encode_text(ids, mask, return_affinities=True)
    model.set_grad_checkpointing(True)
    again = model.encode_text(ids, mask, return_affinities=True)
    torch.testing.assert_close(text.links, again.links)
    again.features.sum().backward()
    assert all(p.grad is not None for p in model.text.affinities.parameters())


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops += 1
        return func(*args, **(kwargs or {}))


def test_fused_path_dispatches_far_fewer_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the fused path is for (benchmarks/op_count.py measures the full sizes)."""
    counts = {}
    for implementation in ("reference", "fused"):
        monkeypatch.setenv("HICLIP_ATTENTION", implementation)
        torch.manual_seed(0)
        model = hiclip.create_model("hiclip-tiny", vocab_size=64, **TWO_LAYER)
        images = torch.randn(4, 3, 16, 16)
        ids = torch.tensor([[1, 7, 8, 9, 2], [1, 7, 2, 0, 0], [1, 9, 9, 2, 0], [1, 5, 6, 7, 2]])
        with _OpCounter() as counter:
            out = model(images, ids, ids != 0)
            (out["image_features"] @ out["text_features"].T).sum().backward()
        counts[implementation] = counter.ops
    assert counts["fused"] <= 0.75 * counts["reference"], counts  # measured 1,138 / 1,644 = 0.69
