"""The fused eager path of method.md 1-3: the numbers of :mod:`hiclip.attention`, in fewer, larger ops.

:mod:`hiclip.attention` is the readable reference (and the test oracle); this module computes the
same links, priors and attention with hand-written ``torch.autograd.Function`` s whose forward and
backward passes are each a handful of large operations, so that an eager train step dispatches
far fewer ops (on a GPU, each op is at least one kernel launch). The formulas are those of
method.md; what differs is only how they are laid out:

* :func:`neighbour_links` (method.md 1, steps 2-5): all neighbour scores of a layer come out of
  one ``(B, N, N)`` product ``r h^T`` (``N^2 d`` work, a small part of the attention's), read at
  the neighbour positions with one ``take``; the softmax runs over fixed neighbour slots with an
  additive bias for missing neighbours; the symmetric links and the hierarchical constraint are
  three element-wise ops. A :class:`NeighbourGraph` (built once per tower call) says where the
  neighbours are, for a chain (:func:`chain_graph`) and a patch grid (:func:`grid_graph`) alike.
* :func:`fused_text_prior` / :func:`fused_image_prior` (method.md 2): the log-product of the links
  between two positions is a sum of log-links over a stretch of the chain, so all of them are one
  matrix product of the log-links with a constant 0/1 matrix (:func:`_stretch_matrix`) instead of
  prefix sums, differences and masks; the grid's one-turn paths multiply row and column stretches.
* :func:`prior_attention` (method.md 3): ``(softmax(Q K^T / sqrt(d) + mask) * C) V``; it saves the
  softmax, not the product with ``C``, which the backward pass recomputes (one fewer
  ``(B, heads, N, N)`` tensor held per layer), and the projection's ``q``, ``k``, ``v`` views, not
  contiguous copies of them.

:func:`fused_enabled` decides which path the towers take: ``HICLIP_ATTENTION`` = ``fused``,
``reference`` or ``auto`` (default: fused on CUDA, where a step is launch-bound, reference on the
CPU, where the fused path measured no faster); under ``torch.compile`` always the reference, which
the compiler fuses itself.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from hiclip.attention import (
    REFERENCE_SELF_VALUE,
    _constant_mask,
    _grid_neighbour_mask,
    _key_bias,
    _NeighbourAffinity,
)
from hiclip.config import COMBINE_RULES
from hiclip.errors import HiCLIPError

#: ``HICLIP_ATTENTION`` values: the fused path, the reference of hiclip.attention, or ``auto`` (the
#: default: fused on CUDA, reference on the CPU; see :func:`fused_enabled`).
IMPLEMENTATIONS = ("auto", "fused", "reference")
# Added to the score of a missing neighbour: exp() of it is 0, and rows of missing neighbours only
# (no neighbour at all) stay finite; their probabilities feed no existing link.
_MISSING = -1e9


def fused_enabled(device: torch.device | None = None) -> bool:
    """Whether the towers take the fused path on ``device``: never under ``torch.compile``; else as
    ``HICLIP_ATTENTION`` says, and where it is unset (``auto``) on CUDA only.

    The fused path dispatches 40% fewer ops per train step (BENCHMARKS.md, "Ops per train step"),
    which is what a launch-bound GPU step pays for; on a CPU it does a little more arithmetic
    (the ``(B, N, N)`` score product, the one-matmul priors) and measured no faster there.
    """
    if torch.compiler.is_compiling():  # first: the compiler need not trace the environment
        return False
    choice = os.environ.get("HICLIP_ATTENTION", "auto")
    if choice not in IMPLEMENTATIONS:
        raise HiCLIPError(f"HICLIP_ATTENTION={choice!r}: expected one of {list(IMPLEMENTATIONS)}")
    if choice == "auto":
        return device is not None and device.type == "cuda"
    return choice == "fused"


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """Float32 (float64 stays float64): what the reference computes affinities and priors in."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


# --------------------------------------------------------------------------- neighbour links (method.md 1)


@dataclass(frozen=True)
class NeighbourGraph:
    """Where each token's neighbours are, and which gaps link, for :func:`neighbour_links`.

    Attributes
    ----------
    scores : Tensor, shape (B, nodes, slots), long
        Flat position in the ``(B, N, N)`` score matrix of each node's neighbour in each slot
        (the node itself where the neighbour is missing; its bias removes it).
    bias : Tensor, shape (B or 1, nodes, slots), float
        0 for existing neighbours, a large negative number for missing ones.
    pairs : Tensor, shape (B, 2, G), long
        Flat positions in the ``(B, nodes, slots)`` probabilities of ``p_{u->v}`` and ``p_{v->u}``
        for each gap ``(u, v)``.
    limit : Tensor, shape (B, G), float, or None
        1 on gaps that may link, 0 on the others (their link is 0); ``None``: every gap links.
    """

    scores: Tensor
    bias: Tensor
    pairs: Tensor
    limit: Tensor | None


@_constant_mask
def _chain_indices(batch: int, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Slots (left, right) of every position of a chain of ``n``, and the two slots of every gap."""
    u = torch.arange(n, device=device)
    left = torch.where(u > 0, u - 1, u)
    right = torch.where(u < n - 1, u + 1, u)
    per_item = torch.stack((u * n + left, u * n + right), -1)  # (n, 2) into the (n, n) scores
    offsets = torch.arange(batch, device=device).view(-1, 1, 1)
    scores = per_item + offsets * (n * n)
    k = torch.arange(n - 1, device=device)
    gap = torch.stack((k * 2 + 1, (k + 1) * 2), 0)  # p_{k->k+1} (right slot of k), p_{k+1->k} (left of k+1)
    return scores, gap + offsets * (n * 2)


def chain_graph(gap_valid: Tensor) -> NeighbourGraph:
    """The graph of a text batch: token ``k`` and ``k+1`` are neighbours where ``gap_valid`` (B, N-1)."""
    B, gaps = gap_valid.shape
    n = gaps + 1
    scores, pairs = _chain_indices(B, n, gap_valid.device)
    pad = gap_valid.new_zeros(B, 1)
    exists = torch.stack((torch.cat((pad, gap_valid), 1), torch.cat((gap_valid, pad), 1)), -1)
    bias = torch.zeros(exists.shape, dtype=torch.float32, device=gap_valid.device).masked_fill_(~exists, _MISSING)
    return NeighbourGraph(scores, bias, pairs, gap_valid.to(torch.float32))


@_constant_mask
def _grid_indices(batch: int, height: int, width: int, start: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    n = start + height * width
    p = torch.arange(height * width, device=device)
    exists = _grid_neighbour_mask(height, width, device).view(-1, 4)  # right, left, down, up
    neighbour = torch.stack((p + 1, p - 1, p + width, p - width), -1).where(exists, p.view(-1, 1))
    per_item = (start + p.view(-1, 1)) * n + start + neighbour
    offsets = torch.arange(batch, device=device).view(-1, 1, 1)
    rows = torch.arange(height, device=device).view(-1, 1)
    h_left = (rows * width + torch.arange(width - 1, device=device)).flatten()  # gap (r, c)-(r, c+1)
    v_top = torch.arange((height - 1) * width, device=device)  # gap (r, c)-(r+1, c)
    first = torch.cat((h_left * 4, v_top * 4 + 2))
    second = torch.cat(((h_left + 1) * 4 + 1, (v_top + width) * 4 + 3))
    pairs = torch.stack((first, second), 0) + offsets * (height * width * 4)
    bias = torch.zeros(1, height * width, 4, device=device).masked_fill_(~exists, _MISSING)
    return per_item + offsets * (n * n), bias, pairs


def grid_graph(batch: int, height: int, width: int, start: int, device: torch.device) -> NeighbourGraph:
    """The graph of an ``H x W`` patch grid after ``start`` leading tokens (a ViT's CLS).

    Gaps are ordered as the flat links of :func:`split_grid_links`: the ``h`` links row-major,
    then the ``v`` links row-major.
    """
    scores, bias, pairs = _grid_indices(batch, height, width, start, device)
    return NeighbourGraph(scores, bias, pairs, None)


def split_grid_links(links: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Flat grid links (B, H(W-1) + (H-1)W) -> ``h`` (B, H, W-1) and ``v`` (B, H-1, W) views."""
    split = height * (width - 1)
    return links[:, :split].view(-1, height, width - 1), links[:, split:].view(-1, height - 1, width)


@_constant_mask
def _scalar_one(dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.ones((), dtype=dtype, device=device)


@_constant_mask
def _scalar_zero(dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.zeros((), dtype=dtype, device=device)


class _NeighbourLinks(torch.autograd.Function):
    """LayerNorm, folded queries, scores -> neighbour softmax -> symmetric link -> hierarchical
    constraint, and the gradients of all of it."""

    @staticmethod
    def forward(ctx, x: Tensor, ln_weight: Tensor, ln_bias: Tensor, q_weight: Tensor, q_bias: Tensor,  # type: ignore[override]
                k_weight: Tensor, previous: Tensor | None, graph: NeighbourGraph, scale: float, eps: float,
                ln_eps: float) -> Tensor:
        dtype = _compute_dtype(x)
        B, N, d = x.shape
        device = x.device.type
        # As the reference under autocast: the projection in the autocast dtype, the rest in float32
        mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else dtype
        with torch.autocast(device, enabled=False):
            x32 = x.to(dtype)
            h, mean, rstd = torch.native_layer_norm(x32, (d,), ln_weight.to(dtype), ln_bias.to(dtype), ln_eps)
            # r = s (h W_q^T + b_q) W_k, so that r_u . h_v = s q_u . k_v (hiclip.attention._neighbour_queries)
            fold = torch.mm(q_weight.t().to(mm_dtype), k_weight.to(mm_dtype))
            r = torch.addmm(torch.mv(k_weight.t().to(mm_dtype), q_bias.to(mm_dtype)), h.to(mm_dtype).view(B * N, d),
                            fold, beta=scale, alpha=scale).view(B, N, d).to(dtype)
            scores = torch.bmm(r, h.transpose(1, 2))  # (B, N, N); only the neighbours are read
            probs = (scores.take(graph.scores) + graph.bias).softmax(-1)  # p_{u->v} per node and slot
            pair = probs.take(graph.pairs)  # (B, 2, G): p_{u->v}, p_{v->u}
            root = pair.prod(1).add_(eps).sqrt_()
            limit = graph.limit if graph.limit is not None else _scalar_one(dtype, x.device)
            current = torch.minimum(root, limit.to(dtype))  # capped at 1; 0 where the gap takes no part
            if previous is None:
                links = current
            else:  # a^l = a^{l-1} + (1 - a^{l-1}) a~^l
                links = torch.lerp(current, _scalar_one(dtype, x.device), previous.to(dtype))
        ctx.save_for_backward(x32, ln_weight, ln_bias, q_weight, q_bias, k_weight, mean, rstd, h, r, fold,
                              probs, pair, root, current, limit, previous)
        ctx.graph, ctx.scale, ctx.x_dtype = graph, scale, x.dtype
        return links

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (x, ln_weight, ln_bias, q_weight, q_bias, k_weight, mean, rstd, h, r, fold,
         probs, pair, root, current, limit, previous) = ctx.saved_tensors
        graph: NeighbourGraph = ctx.graph
        B, N, d = x.shape
        dtype = x.dtype
        grad = grad.to(dtype)
        grad_previous = None
        if previous is not None:  # d a^l = (1 - a~^l) d a^{l-1} + (1 - a^{l-1}) d a~^l; lerp(g, 0, w) = g (1 - w)
            zero = _scalar_zero(dtype, x.device)
            grad_previous = torch.lerp(grad, zero, current).to(previous.dtype) if ctx.needs_input_grad[6] else None
            grad = torch.lerp(grad, zero, previous.to(dtype))
        # d sqrt(p p' + eps) = (p' dp + p dp') / (2 sqrt(.)); nothing flows where the cap or the 0 is taken
        grad_root = (grad / (root * 2.0)).masked_fill_(root > limit, 0.0)
        grad_probs = torch.zeros_like(probs).put_(graph.pairs, grad_root.unsqueeze(1) * pair.flip(1))
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, dtype)
        grad_matrix = torch.zeros(B, N, N, dtype=dtype, device=x.device).put_(graph.scores, grad_scores,
                                                                              accumulate=True)
        scale, mm_dtype = ctx.scale, fold.dtype  # the projection's dtype (bf16 under autocast)
        grad_r = torch.bmm(grad_matrix, h).view(B * N, d)
        grad_keys = torch.bmm(grad_matrix.transpose(1, 2), r).view(B * N, d)  # h as the scores' keys
        if mm_dtype == dtype:
            grad_h = torch.addmm(grad_keys, grad_r, fold.t(), alpha=scale)  # and as the input of r
        else:
            grad_r = grad_r.to(mm_dtype)
            grad_h = torch.add(grad_keys, torch.mm(grad_r, fold.t()), alpha=scale)
        grad_fold = torch.mm(h.to(mm_dtype).view(B * N, d).t(), grad_r).mul_(scale)
        grad_bias = grad_r.sum(0).mul_(scale)  # of the folded bias b_q W_k
        grad_x, grad_ln_weight, grad_ln_bias = torch.ops.aten.native_layer_norm_backward(
            grad_h.view(B, N, d), x, (d,), mean, rstd, ln_weight.to(dtype), ln_bias.to(dtype), [True, True, True])
        grad_q_weight = torch.mm(k_weight.to(mm_dtype), grad_fold.t())
        grad_k_weight = torch.addr(torch.mm(q_weight.to(mm_dtype), grad_fold), q_bias.to(mm_dtype), grad_bias)
        grad_q_bias = torch.mv(k_weight.to(mm_dtype), grad_bias)
        return (grad_x.to(ctx.x_dtype), grad_ln_weight.to(ln_weight.dtype), grad_ln_bias.to(ln_bias.dtype),
                grad_q_weight.to(q_weight.dtype), grad_q_bias.to(q_bias.dtype), grad_k_weight.to(k_weight.dtype),
                grad_previous, None, None, None, None)


def neighbour_links(affinity: _NeighbourAffinity, x: Tensor, graph: NeighbourGraph,
                    previous: Tensor | None = None) -> Tensor:
    """One layer's accumulated links (method.md 1) of ``affinity`` (a :class:`ChainAffinity` or
    :class:`GridAffinity`, whose parameters and settings it uses) for the states ``x`` (B, N, d).

    Parameters
    ----------
    graph : NeighbourGraph
    previous : Tensor, shape (B, G), optional
        Links of the layer below.

    Returns
    -------
    links : Tensor, shape (B, G), float32 (float64 for float64 input)
        In ``(0, 1]`` on the gaps that link, 0 on the others; never smaller than ``previous``.
    """
    return _NeighbourLinks.apply(x, affinity.norm.weight, affinity.norm.bias, affinity.q.weight, affinity.q.bias,
                                 affinity.k.weight, previous, graph, affinity.scale, affinity.eps,
                                 affinity.norm.eps)


# --------------------------------------------------------------------------- priors (method.md 2)


@_constant_mask
def _stretch_matrix(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(n-1, n*n) 0/1: ``Z[k, i*n + j] = 1`` when gap ``k`` lies between positions ``i`` and ``j``.

    ``log_links @ Z`` is, for every pair ``(i, j)``, the log of the product of the links between
    them: ``log C_ij`` of method.md 2, all pairs in one product.
    """
    k = torch.arange(n - 1, device=device).view(-1, 1, 1)
    i = torch.arange(n, device=device).view(1, -1, 1)
    j = torch.arange(n, device=device).view(1, 1, -1)
    return ((torch.minimum(i, j) <= k) & (k < torch.maximum(i, j))).to(dtype).view(n - 1, n * n)


@dataclass(frozen=True)
class TextPriorMasks:
    """What :func:`fused_text_prior` needs of a text batch, built once per tower call by :func:`text_prior_masks`.

    Attributes
    ----------
    floor : Tensor, shape (B, T-1)
        Links are raised to it before the log: 1 on gaps inside a word (never split), ``eps`` elsewhere.
    fill : Tensor, shape (B, T, T)
        1 on the SOT/EOT rows and columns of real tokens (``REFERENCE_SELF_VALUE`` on word
        diagonals with ``keep_reference_self``), 0 elsewhere.
    keep : Tensor, shape (B, T, T)
        1 where ``C`` is the product of links (two real tokens, neither special), 0 elsewhere.
    """

    floor: Tensor
    fill: Tensor
    keep: Tensor


def text_prior_masks(intra_word: Tensor, special: Tensor, valid: Tensor, eps: float = 1e-6,
                     keep_reference_self: bool = False, dtype: torch.dtype = torch.float32) -> TextPriorMasks:
    """The masks of :func:`hiclip.attention.text_prior` as the terms of ``C = fill + keep * prod(links)``,
    in ``dtype`` (that of the prior: float32, or float64 for a float64 model)."""
    pair_valid = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    pair_special = special.unsqueeze(-1) | special.unsqueeze(-2)
    keep = pair_valid & ~pair_special
    fill = (pair_valid & pair_special).to(dtype)
    if keep_reference_self:
        words = torch.diag_embed(valid & ~special)
        keep = keep & ~words
        fill = fill.masked_fill(words, REFERENCE_SELF_VALUE)
    floor = torch.full(intra_word.shape, eps, dtype=dtype, device=intra_word.device).masked_fill_(intra_word, 1.0)
    return TextPriorMasks(floor, fill, keep.to(dtype))


class _TextPrior(torch.autograd.Function):
    @staticmethod
    def forward(ctx, links: Tensor, masks: TextPriorMasks) -> Tensor:  # type: ignore[override]
        dtype = _compute_dtype(links)
        B, gaps = links.shape
        stretch = _stretch_matrix(gaps + 1, dtype, links.device)
        raised = torch.maximum(links.to(dtype), masks.floor.to(dtype))
        products = torch.mm(raised.log(), stretch).exp_().view(B, gaps + 1, gaps + 1)
        ctx.save_for_backward(links, raised, products)
        ctx.masks = masks
        return torch.addcmul(masks.fill.to(dtype), products, masks.keep.to(dtype))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None]:  # type: ignore[override]
        links, raised, products = ctx.saved_tensors
        B, n = products.shape[:2]
        grad_logs = grad.to(products.dtype) * ctx.masks.keep.to(products.dtype) * products
        grad_links = torch.mm(grad_logs.view(B, n * n), _stretch_matrix(n, products.dtype, links.device).t())
        grad_links = grad_links.div_(raised).masked_fill_(raised != links, 0.0)  # the floor took over
        return grad_links.to(links.dtype), None


def fused_text_prior(links: Tensor, masks: TextPriorMasks) -> Tensor:
    """:func:`hiclip.attention.text_prior` of token links (B, T-1): ``C`` (B, T, T), float32."""
    return _TextPrior.apply(links, masks)


@_constant_mask
def _grid_paths(height: int, width: int, combine: str, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """(G, K (HW)^2) 0/1 matrix and (K (HW)^2,) offset: ``log_links @ matrix + offset`` are the logs of
    the one-turn path products of every pair of patches (method.md 2), all pairs in one product.

    ``G`` flat grid links (:func:`split_grid_links`). ``K = 2`` paths, HV then VH, for ``mean``
    (the 1/2 of the mean in the offset), ``max`` and ``min``; ``K = 1`` for ``geometric``, whose
    ``sqrt(HV VH)`` is one product: half of each path's log.
    """
    row = _stretch_matrix(width, dtype, device).view(width - 1, width, width)  # [k, c1, c2]
    col = _stretch_matrix(height, dtype, device).view(height - 1, height, height)  # [k, r1, r2]
    eye_h, eye_w = torch.eye(height, dtype=dtype, device=device), torch.eye(width, dtype=dtype, device=device)
    pairs = (height, width, height, width)  # [r1, c1, r2, c2]
    # h link (r, k) lies on HV where r1 == r and k is between c1 and c2; on VH where r2 == r
    hv_h = eye_h[:, None, :, None, None, None] * row[None, :, None, :, None, :]
    vh_h = eye_h[:, None, None, None, :, None] * row[None, :, None, :, None, :]
    # v link (k, c) lies on HV where c2 == c and k is between r1 and r2; on VH where c1 == c
    hv_v = eye_w[None, :, None, None, None, :] * col[:, None, :, None, :, None]
    vh_v = eye_w[None, :, None, :, None, None] * col[:, None, :, None, :, None]
    gh, gv = height * (width - 1), (height - 1) * width
    hv = torch.cat((hv_h.expand(height, width - 1, *pairs).reshape(gh, -1),
                    hv_v.expand(height - 1, width, *pairs).reshape(gv, -1)))
    vh = torch.cat((vh_h.expand(height, width - 1, *pairs).reshape(gh, -1),
                    vh_v.expand(height - 1, width, *pairs).reshape(gv, -1)))
    if combine == "geometric":
        return 0.5 * (hv + vh), torch.zeros(hv.shape[1], dtype=dtype, device=device)
    matrix = torch.cat((hv, vh), 1)
    offset = math.log(0.5) if combine == "mean" else 0.0
    return matrix, torch.full((matrix.shape[1],), offset, dtype=dtype, device=device)


class _ImagePrior(torch.autograd.Function):
    @staticmethod
    def forward(ctx, links: Tensor, height: int, width: int, combine: str, eps: float,  # type: ignore[override]
                keep_reference_self: bool) -> Tensor:
        dtype = _compute_dtype(links)
        n = height * width
        matrix, offset = _grid_paths(height, width, combine, dtype, links.device)
        raised = links.to(dtype).clamp_min(eps)
        paths = torch.addmm(offset, raised.log(), matrix).exp_().view(links.shape[0], -1, n, n)  # (B, K, n, n)
        if combine == "mean":
            prior = paths.sum(1)
        elif combine == "geometric":
            prior = paths[:, 0]
        else:
            prior = paths.amax(1) if combine == "max" else paths.amin(1)
        if keep_reference_self:
            prior = prior.clone() if combine == "geometric" else prior
            prior.diagonal(dim1=-2, dim2=-1).fill_(REFERENCE_SELF_VALUE)
        ctx.save_for_backward(links, raised, paths, prior if combine in ("max", "min") else None)
        ctx.shape = height, width, combine, keep_reference_self
        return torch.nn.functional.pad(prior, (1, 0, 1, 0), value=1.0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        links, raised, paths, prior = ctx.saved_tensors
        height, width, combine, keep_reference_self = ctx.shape
        grad = grad[:, 1:, 1:].to(paths.dtype)
        if keep_reference_self:
            grad = grad.clone()
            grad.diagonal(dim1=-2, dim2=-1).zero_()
        grad_paths = grad.unsqueeze(1) * paths  # d exp(s) = exp(s) ds
        if combine in ("max", "min"):  # the path taken gets the gradient; ties share it, as torch.maximum's
            taken = (paths == prior.unsqueeze(1)).to(paths.dtype)  # none on a keep_reference_self diagonal
            grad_paths.mul_(taken.div_(taken.sum(1, keepdim=True).clamp_min_(1.0)))
        matrix, _ = _grid_paths(height, width, combine, paths.dtype, links.device)
        grad_links = torch.mm(grad_paths.view(links.shape[0], -1), matrix.t())
        grad_links = grad_links.div_(raised).masked_fill_(raised != links, 0.0)
        return grad_links.to(links.dtype), None, None, None, None, None


def fused_image_prior(links: Tensor, height: int, width: int, combine: str = "mean", eps: float = 1e-6,
                      keep_reference_self: bool = False) -> Tensor:
    """:func:`hiclip.attention.image_prior` of flat grid links (B, H(W-1) + (H-1)W): (B, 1+HW, 1+HW)."""
    if combine not in COMBINE_RULES:
        raise HiCLIPError(f"combine: {combine!r} is not one of {list(COMBINE_RULES)}")
    return _ImagePrior.apply(links, height, width, combine, eps, keep_reference_self)


# --------------------------------------------------------------------------- attention (method.md 3)


def attention_bias(key_valid: Tensor | None, heads: int, dtype: torch.dtype) -> Tensor | None:
    """Additive mask of :func:`prior_attention`: (B*heads, 1 or N, N), 0 for allowed keys, ``-inf`` else.

    ``key_valid`` (B, N) (keys) or (B, N, N) (query-key pairs); built once per tower call.
    """
    if key_valid is None:
        return None
    mask = key_valid[:, None, None, :] if key_valid.dim() == 2 else key_valid[:, None]
    bias = _key_bias(mask, dtype)
    B = key_valid.shape[0]
    return bias.expand(B, heads, *bias.shape[2:]).reshape(B * heads, *bias.shape[2:])


class _PriorAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, prior: Tensor) -> Tensor:  # type: ignore[override]
        B, H, N, dh = q.shape
        scale = dh**-0.5
        with torch.autocast(q.device.type, enabled=False):
            q3, k3, v3 = torch.stack((q, k, v)).view(3, B * H, N, dh).unbind(0)
            base = _scalar_zero(q.dtype, q.device) if bias is None else bias.to(q.dtype)
            probs = torch.baddbmm(base, q3, k3.transpose(1, 2), beta=0.0 if bias is None else 1.0,
                                  alpha=scale).softmax(-1, dtype=prior.dtype)  # float32 under autocast too
            weighted = (probs.view(B, H, N, N) * prior.unsqueeze(1)).view(B * H, N, N)
            out = torch.bmm(weighted.to(v3.dtype), v3)
        ctx.save_for_backward(q, k, v, probs, prior)  # the inputs (views of the projection), not their copies
        return out.view(B, H, N, dh)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, probs, prior = ctx.saved_tensors
        B, H, N, dh = grad.shape
        q3, k3, v3 = torch.stack((q, k, v)).view(3, B * H, N, dh).unbind(0)
        scale = dh**-0.5
        grad = grad.to(q3.dtype).reshape(B * H, N, dh)
        c = prior.unsqueeze(1)
        weighted = (probs.view(B, H, N, N) * c).view(B * H, N, N)  # recomputed, not saved
        grad_v = torch.bmm(weighted.to(q3.dtype).transpose(1, 2), grad)
        grad_weighted = torch.bmm(grad, v3.transpose(1, 2)).view(B, H, N, N).to(probs.dtype)
        grad_prior = None
        if ctx.needs_input_grad[4]:
            grad_prior = (grad_weighted * probs.view(B, H, N, N)).sum(1)
        grad_scores = torch._softmax_backward_data((grad_weighted * c).view(B * H, N, N), probs, -1,
                                                   probs.dtype).to(q3.dtype)
        zero = _scalar_zero(q3.dtype, q3.device)
        grad_q = torch.baddbmm(zero, grad_scores, k3, beta=0.0, alpha=scale)
        grad_k = torch.baddbmm(zero, grad_scores.transpose(1, 2), q3, beta=0.0, alpha=scale)
        return grad_q.view(B, H, N, dh), grad_k.view(B, H, N, dh), grad_v.view(B, H, N, dh), None, grad_prior


def prior_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, prior: Tensor) -> Tensor:
    """``(softmax(q k^T / sqrt(d_h) + bias) * C) v``, method.md 3 without renormalisation.

    ``q``, ``k``, ``v`` (B, heads, N, d_h); ``bias`` from :func:`attention_bias` or None;
    ``prior`` ``C`` (B, N, N). Returns (B, heads, N, d_h).
    """
    return _PriorAttention.apply(q, k, v, bias, prior)
