"""Hierarchy-aware attention: priors against brute force, affinities, and vanilla parity."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hiclip.attention import (
    REFERENCE_SELF_VALUE,
    ChainAffinity,
    GridAffinity,
    HierarchicalAttention,
    accumulate_links,
    attention_links_chain,
    attention_links_grid,
    group_prior,
    image_prior,
    neighbour_dots,
    text_prior,
    tree_prior,
)
from hiclip.config import COMBINE_RULES
from hiclip.errors import HiCLIPError

torch.set_num_threads(1)


def random_links(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=torch.float64) * 0.95 + 0.05


def brute_tree(links: torch.Tensor) -> torch.Tensor:
    n = links.shape[-1] + 1
    out = torch.ones(n, n, dtype=links.dtype)
    for i, j in itertools.product(range(n), range(n)):
        lo, hi = min(i, j), max(i, j)
        out[i, j] = torch.prod(links[lo:hi])
    return out


def brute_group(h: torch.Tensor, v: torch.Tensor, combine: str) -> torch.Tensor:
    H, W = h.shape[0], v.shape[-1]

    def row(r: int, a: int, b: int) -> torch.Tensor:
        a, b = min(a, b), max(a, b)
        return torch.prod(h[r, a:b])

    def col(c: int, a: int, b: int) -> torch.Tensor:
        a, b = min(a, b), max(a, b)
        return torch.prod(v[a:b, c])

    out = torch.empty(H * W, H * W, dtype=h.dtype)
    for (r1, c1), (r2, c2) in itertools.product(itertools.product(range(H), range(W)), repeat=2):
        hv = row(r1, c1, c2) * col(c2, r1, r2)
        vh = col(c1, r1, r2) * row(r2, c1, c2)
        value = {
            "mean": (hv + vh) / 2,
            "max": torch.maximum(hv, vh),
            "min": torch.minimum(hv, vh),
            "geometric": torch.sqrt(hv * vh),
        }[combine]
        out[r1 * W + c1, r2 * W + c2] = value
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 8, 17])
def test_tree_prior_equals_product_over_path(n: int) -> None:
    links = random_links(3, n - 1, seed=n)
    prior = tree_prior(links)
    assert prior.shape == (3, n, n) and prior.dtype == torch.float64
    for b in range(3):
        torch.testing.assert_close(prior[b], brute_tree(links[b]), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(prior, prior.transpose(-1, -2), rtol=0, atol=0)
    assert torch.all(prior.diagonal(dim1=-2, dim2=-1) == 1)


def test_tree_prior_float32_and_batch_dims() -> None:
    links = random_links(2, 3, 9, seed=1)
    prior = tree_prior(links.float())
    assert prior.dtype == torch.float32 and prior.shape == (2, 3, 10, 10)
    torch.testing.assert_close(prior.double(), tree_prior(links), rtol=1e-5, atol=1e-7)
    assert tree_prior(links.half()).dtype == torch.float32  # priors are never computed in half precision


@pytest.mark.parametrize("grid", [(1, 1), (1, 5), (5, 1), (2, 3), (3, 2), (4, 4), (3, 5)])
@pytest.mark.parametrize("combine", COMBINE_RULES)
def test_group_prior_equals_one_turn_paths(grid: tuple[int, int], combine: str) -> None:
    H, W = grid
    h = random_links(2, H, W - 1, seed=H * 10 + W)
    v = random_links(2, H - 1, W, seed=H * 10 + W + 1)
    prior = group_prior(h, v, combine)
    assert prior.shape == (2, H * W, H * W)
    for b in range(2):
        torch.testing.assert_close(prior[b], brute_group(h[b], v[b], combine), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(prior, prior.transpose(-1, -2), rtol=1e-12, atol=0)
    assert torch.allclose(prior.diagonal(dim1=-2, dim2=-1), torch.ones(2, H * W, dtype=prior.dtype))


def test_group_prior_single_row_is_tree_prior() -> None:
    h = random_links(4, 1, 6, seed=3)
    v = torch.empty(4, 0, 7, dtype=torch.float64)
    for combine in COMBINE_RULES:
        torch.testing.assert_close(group_prior(h, v, combine), tree_prior(h[:, 0]))


def test_group_prior_rejects_inconsistent_shapes() -> None:
    with pytest.raises(HiCLIPError, match="grid"):
        group_prior(torch.rand(2, 3, 4), torch.rand(2, 2, 4))
    with pytest.raises(HiCLIPError, match="combine"):
        group_prior(torch.rand(3, 4), torch.rand(2, 5), combine="sum")


def test_priors_pass_gradcheck() -> None:
    links = random_links(2, 5, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(tree_prior, (links,))
    h = random_links(1, 3, 2, seed=5).requires_grad_()
    v = random_links(1, 2, 3, seed=6).requires_grad_()
    for combine in ("mean", "geometric", "min"):
        assert torch.autograd.gradcheck(lambda a, b: group_prior(a, b, combine), (h, v))


def test_prior_gradients_finite_near_zero_and_one() -> None:
    extreme = torch.tensor([0.0, 1e-12, 1e-7, 0.5, 1 - 1e-7, 1.0, 1.0])
    links = extreme.clone().requires_grad_()
    tree_prior(links).sum().backward()
    assert torch.isfinite(links.grad).all()
    # a link of exactly 1 still gets the gradient of the products it takes part in
    assert links.grad[5] > 0
    h = extreme[:6].view(2, 3).clone().requires_grad_()
    v = extreme[1:5].view(1, 4).clone().requires_grad_()
    for combine in COMBINE_RULES:
        h.grad = v.grad = None
        group_prior(h, v, combine).sum().backward()
        assert torch.isfinite(h.grad).all() and torch.isfinite(v.grad).all()


def test_chain_affinity_masks_padding_and_single_neighbours() -> None:
    torch.manual_seed(0)
    module = ChainAffinity(16)
    x = torch.randn(2, 6, 16)
    gap_valid = torch.tensor([[False, True, True, True, False], [False, True, False, False, False]])
    with torch.no_grad():
        links = module(x, gap_valid)
    assert links.shape == (2, 5)
    assert torch.all(links[~gap_valid] == 0)
    assert torch.all((links[gap_valid] > 0) & (links[gap_valid] <= 1))
    # the second sentence has one gap: each of its two words has a single neighbour, p = 1 both ways
    assert links[1, 1] == pytest.approx(1.0)
    # middle word of the first sentence splits its probability between two neighbours
    assert links[0, 1] < 1 and links[0, 2] < 1


def test_chain_affinity_softmax_matches_definition() -> None:
    torch.manual_seed(1)
    module = ChainAffinity(8, scale=0.3, eps=1e-6)
    x = torch.randn(1, 5, 8)
    gap_valid = torch.ones(1, 4, dtype=torch.bool)
    links = module(x, gap_valid)
    h = module.norm(x)[0]
    q, k = h @ module.q.weight.T + module.q.bias, h @ module.k.weight.T
    scores = (q @ k.T) * 0.3
    expected = []
    for g in range(4):
        def p(u: int, target: int) -> torch.Tensor:
            nbrs = [w for w in (u - 1, u + 1) if 0 <= w < 5]
            return torch.softmax(scores[u, nbrs], 0)[nbrs.index(target)]
        expected.append(torch.sqrt(p(g, g + 1) * p(g + 1, g) + 1e-6).clamp(max=1))
    torch.testing.assert_close(links[0], torch.stack(expected))


def test_grid_affinity_matches_definition_and_accumulates() -> None:
    torch.manual_seed(2)
    H, W, d = 3, 4, 8
    module = GridAffinity(d, scale=0.5)
    x = torch.randn(2, H * W, d)
    h, v = module(x, H, W)
    assert h.shape == (2, H, W - 1) and v.shape == (2, H - 1, W)
    q, k = module.q(module.norm(x)), module.k(module.norm(x))

    def p(b: int, r: int, c: int, target: tuple[int, int]) -> torch.Tensor:
        nbrs = [(r + dr, c + dc) for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)) if 0 <= r + dr < H and 0 <= c + dc < W]
        scores = torch.stack([q[b, r * W + c] @ k[b, rr * W + cc] for rr, cc in nbrs]) * 0.5
        return torch.softmax(scores, 0)[nbrs.index(target)]

    for b, r, c in itertools.product(range(2), range(H), range(W - 1)):
        expected = torch.sqrt(p(b, r, c, (r, c + 1)) * p(b, r, c + 1, (r, c)) + 1e-6)
        torch.testing.assert_close(h[b, r, c], expected)
    for b, r, c in itertools.product(range(2), range(H - 1), range(W)):
        expected = torch.sqrt(p(b, r, c, (r + 1, c)) * p(b, r + 1, c, (r, c)) + 1e-6)
        torch.testing.assert_close(v[b, r, c], expected)
    h2, v2 = module(torch.randn(2, H * W, d), H, W, previous=(h, v))
    assert torch.all(h2 >= h) and torch.all(v2 >= v) and torch.all(h2 <= 1) and torch.all(v2 <= 1)


def test_grid_affinity_start_skips_leading_tokens() -> None:
    torch.manual_seed(3)
    H, W, d = 3, 4, 8
    module = GridAffinity(d)
    x = torch.randn(2, 1 + H * W, d, requires_grad=True)
    h, v = module(x, H, W, start=1)
    h_ref, v_ref = module(x[:, 1:], H, W)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(v, v_ref)
    (grad,) = torch.autograd.grad((h * h.detach()).sum() + v.sum(), x)
    (grad_ref,) = torch.autograd.grad((h_ref * h_ref.detach()).sum() + v_ref.sum(), x)
    torch.testing.assert_close(grad, grad_ref)
    assert torch.all(grad[:, 0] == 0)


@pytest.mark.parametrize("offsets,start", [((1,), 0), ((1,), 2), ((1, 4), 0), ((1, 4), 1), ((3, 1), 1)])
def test_neighbour_dots_values_and_gradients(offsets: tuple[int, ...], start: int) -> None:
    torch.manual_seed(4)
    r = torch.randn(2, start + 12, 5, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, start + 12, 5, dtype=torch.float64, requires_grad=True)
    dots = neighbour_dots(r, h, offsets, start)
    rs, hs = r[:, start:], h[:, start:]
    for i, o in enumerate(offsets):
        for p in range(12 - o):
            torch.testing.assert_close(dots[2 * i][:, p], (rs[:, p] * hs[:, p + o]).sum(-1))
            torch.testing.assert_close(dots[2 * i + 1][:, p], (rs[:, p + o] * hs[:, p]).sum(-1))
    assert torch.autograd.gradcheck(lambda a, b: neighbour_dots(a, b, offsets, start), (r, h))
    # one side without gradient
    (grad_h,) = torch.autograd.grad(sum(t.sum() for t in neighbour_dots(r.detach(), h, offsets, start)), h)
    assert torch.all(grad_h[:, :start] == 0)


def test_neighbour_dots_mixed_dtypes_promote() -> None:
    # Under CUDA autocast the queries come out of a linear layer in bf16, the keys out of a
    # LayerNorm in fp32; the dots are computed in fp32, as the plain product would be.
    r = torch.randn(2, 6, 4, dtype=torch.bfloat16, requires_grad=True)
    h = torch.randn(2, 6, 4, requires_grad=True)
    dots = neighbour_dots(r, h, (1,))
    assert all(t.dtype == torch.float32 for t in dots)
    torch.testing.assert_close(dots[0], (r[:, :-1].float() * h[:, 1:]).sum(-1))
    sum(t.sum() for t in dots).backward()
    assert r.grad.dtype == torch.bfloat16 and h.grad.dtype == torch.float32


def test_accumulate_links_is_the_hierarchical_constraint() -> None:
    a0 = torch.tensor([0.5, 0.0, 1.0])
    a1 = accumulate_links(None, a0)
    assert torch.equal(a1, a0)
    a2 = accumulate_links(a1, torch.tensor([0.5, 0.3, 0.2]))
    torch.testing.assert_close(a2, torch.tensor([0.75, 0.3, 1.0]))


def test_text_prior_special_rows_and_padding() -> None:
    # batch: SOT w0 w1 w1' w2 EOT PAD  (w1' continues word 1) and SOT w0 EOT PAD PAD PAD PAD
    valid = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    special = torch.tensor([[1, 0, 0, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    intra = torch.zeros(2, 6, dtype=torch.bool)
    intra[0, 2] = True
    links = torch.tensor([[0.0, 0.6, 0.0, 0.7, 0.0, 0.0], [0.0] * 6])
    prior = text_prior(links, intra, special, valid)
    assert prior.shape == (2, 7, 7)
    assert torch.all(prior[0, 6] == 0) and torch.all(prior[0, :, 6] == 0)  # padding links to nothing
    assert torch.all(prior[1, 3:] == 0) and torch.all(prior[1, :, 3:] == 0)
    assert torch.all(prior[0, [0, 5], :6] == 1) and torch.all(prior[0, :6, [0, 5]] == 1)  # SOT/EOT rows
    assert prior[0, 2, 3] == 1  # pieces of one word are never split
    torch.testing.assert_close(prior[0, 1, 4], torch.tensor(0.6 * 0.7))
    torch.testing.assert_close(prior[0, 1, 3], torch.tensor(0.6))
    ref = text_prior(links, intra, special, valid, keep_reference_self=True)
    assert ref[0, 2, 2] == pytest.approx(REFERENCE_SELF_VALUE) and ref[0, 0, 0] == 1 and ref[0, 6, 6] == 0


def test_image_prior_cls_row_and_column_are_one() -> None:
    h, v = random_links(2, 3, 2, seed=7).float(), random_links(2, 2, 3, seed=8).float()
    prior = image_prior(h, v)
    assert prior.shape == (2, 10, 10)
    assert torch.all(prior[:, 0] == 1) and torch.all(prior[:, :, 0] == 1)
    torch.testing.assert_close(prior[:, 1:, 1:], group_prior(h, v))
    ref = image_prior(h, v, keep_reference_self=True)
    assert torch.allclose(ref[:, 1:, 1:].diagonal(dim1=-2, dim2=-1), torch.tensor(REFERENCE_SELF_VALUE))


def _mha_copy(module: HierarchicalAttention, width: int, heads: int) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(width, heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(module.in_proj.weight)
        mha.in_proj_bias.copy_(module.in_proj.bias)
        mha.out_proj.weight.copy_(module.out_proj.weight)
        mha.out_proj.bias.copy_(module.out_proj.bias)
    return mha


def test_attention_without_prior_equals_multihead_attention_and_sdpa() -> None:
    torch.manual_seed(3)
    width, heads = 32, 4
    module = HierarchicalAttention(width, heads)
    mha = _mha_copy(module, width, heads)
    x = torch.randn(3, 9, width)
    key_valid = torch.ones(3, 9, dtype=torch.bool)
    key_valid[1, 6:] = False
    key_valid[2, 3:] = False
    out, _ = module(x, key_valid)
    expected, expected_weights = mha(x, x, x, key_padding_mask=~key_valid)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # the explicit path (taken when weights are requested) is the same computation
    explicit, weights = module(x, key_valid, need_weights=True)
    torch.testing.assert_close(explicit, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-5, atol=1e-6)
    # a prior of ones changes nothing
    ones, _ = module(x, key_valid, prior=torch.ones(3, 9, 9))
    torch.testing.assert_close(ones, expected, rtol=1e-5, atol=1e-6)


def test_attention_with_prior_multiplies_probabilities() -> None:
    torch.manual_seed(4)
    width, heads, n = 16, 2, 5
    module = HierarchicalAttention(width, heads)
    x = torch.randn(2, n, width)
    prior = tree_prior(torch.rand(2, n - 1))
    out, weights = module(x, prior=prior, need_weights=True)
    q, k, v = module.in_proj(x).view(2, n, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-1, -2) / (width // heads) ** 0.5, -1) * prior[:, None]
    expected = module.out_proj((attn @ v).transpose(1, 2).reshape(2, n, width))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, attn.mean(1))
    assert torch.all(weights.sum(-1) < 1 + 1e-6)
    module.renormalize = True
    _, renormalized = module(x, prior=prior, need_weights=True)
    torch.testing.assert_close(renormalized.sum(-1), torch.ones(2, n))


def test_attention_links_chain_from_attention_maps() -> None:
    torch.manual_seed(5)
    attn = torch.softmax(torch.randn(2, 3, 6, 6), -1)
    gap_valid = torch.tensor([[False, True, True, True, False], [False, True, False, False, False]])
    links = attention_links_chain(attn, gap_valid)
    assert links.shape == (2, 3, 5)
    assert torch.all(links[~gap_valid.unsqueeze(1).expand_as(links)] == 0)
    assert torch.all(links[:, 1:] >= links[:, :-1])  # non-decreasing over layers
    # layer 0, sentence 0, gap (2,3): token 2 has neighbours 1 and 3, token 3 has 2 and 4
    a = attn[0, 0]
    p23 = a[2, 3] / (a[2, 1] + a[2, 3])
    p32 = a[3, 2] / (a[3, 2] + a[3, 4])
    torch.testing.assert_close(links[0, 0, 2], torch.sqrt(p23 * p32 + 1e-6))
    # a lone gap: both words have a single neighbour
    assert links[1, 0, 1] == pytest.approx(1.0)


def test_attention_links_grid_from_attention_maps() -> None:
    torch.manual_seed(6)
    H, W, L = 3, 2, 2
    attn = torch.softmax(torch.randn(1, L, H * W, H * W), -1)
    h, v = attention_links_grid(attn, H, W)
    assert h.shape == (1, L, H, W - 1) and v.shape == (1, L, H - 1, W)
    a = attn[0, 0]

    def p(r: int, c: int, target: tuple[int, int]) -> torch.Tensor:
        nbrs = [(r + dr, c + dc) for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)) if 0 <= r + dr < H and 0 <= c + dc < W]
        values = torch.stack([a[r * W + c, rr * W + cc] for rr, cc in nbrs])
        return values[nbrs.index(target)] / values.sum()

    torch.testing.assert_close(h[0, 0, 1, 0], torch.sqrt(p(1, 0, (1, 1)) * p(1, 1, (1, 0)) + 1e-6))
    torch.testing.assert_close(v[0, 0, 0, 1], torch.sqrt(p(0, 1, (1, 1)) * p(1, 1, (0, 1)) + 1e-6))
    assert torch.all(h[:, 1] >= h[:, 0]) and torch.all(v[:, 1] >= v[:, 0])
    assert torch.all((h > 0) & (h <= 1)) and torch.all((v > 0) & (v <= 1))


def test_attention_rejects_bad_heads() -> None:
    with pytest.raises(HiCLIPError, match="divisible"):
        HierarchicalAttention(30, 4)


def test_sdpa_is_used_without_prior(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    module = HierarchicalAttention(16, 2)
    x = torch.randn(1, 4, 16)
    module(x)
    assert len(calls) == 1
    module(x, prior=torch.ones(1, 4, 4))
    assert len(calls) == 1


def test_cached_masks_made_in_inference_mode_work_with_autograd() -> None:
    # masks are cached per size; one first built under inference_mode must still be usable later
    with torch.inference_mode():
        tree_prior(torch.rand(2, 40))
        GridAffinity(8)(torch.randn(1, 5 * 7, 8), 5, 7)
    links = torch.rand(2, 40, requires_grad=True)
    tree_prior(links).sum().backward()
    assert links.grad is not None
    module = GridAffinity(8)
    h, v = module(torch.randn(1, 5 * 7, 8), 5, 7)
    (h.sum() + v.sum()).backward()
    assert module.q.weight.grad is not None
