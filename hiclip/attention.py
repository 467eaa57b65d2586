"""Hierarchy-aware attention: neighbour affinities, constituent priors, and the attention itself.

Implements method.md sections 1-3 (and the attention-map affinities of section 5):

* :func:`tree_prior` / :func:`group_prior` turn links between neighbours into the constituent
  prior ``C`` of a chain (Tree-Transformer) or an ``H x W`` patch grid (Group Transformer),
  with prefix sums of log-links: O(N^2), no loop over pairs, no O(N^3) matmul.
* :class:`ChainAffinity` / :class:`GridAffinity` compute the per-layer links from token states.
* :class:`HierarchicalAttention` is multi-head attention whose probabilities are multiplied by
  ``C``; without a prior it *is* ``scaled_dot_product_attention``. An optional per-layer gate
  (:func:`prior_gate_value`, :func:`gated_prior`; an extension for converting pretrained models,
  not method.md) mixes ``P`` and ``P * C``.
* :func:`attention_links_chain` / :func:`attention_links_grid` read links out of the attention
  maps of any (vanilla) transformer, so CLIP and HiCLIP can be compared on equal terms;
  :func:`attention_links_causal_chain` does it for a causal text tower (an imported CLIP).

Conventions: links are in ``(0, 1]``; a link of ``0`` marks a gap that does not exist (padding,
special tokens). Priors are computed in float32 (float64 stays float64) whatever the input dtype.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache, wraps

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hiclip.config import COMBINE_RULES
from hiclip.errors import HiCLIPError

#: ``C_ii`` left by the reference Tree-Transformer code: ``sqrt(1e-9)`` (option ``keep_reference_self``).
REFERENCE_SELF_VALUE = math.sqrt(1e-9)


def _prior_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _segment_logs(prefix: Tensor) -> Tensor:
    """Log-products of links between every pair of positions on a line.

    ``prefix`` (..., n) holds ``P_j = sum_{k<j} log a_k``; returns ``S`` (..., n, n) with
    ``S_ij = P_j - P_i`` for ``j >= i`` and ``P_i - P_j`` otherwise, i.e. the (non-positive)
    log-product of the links between ``i`` and ``j``. ``torch.where`` (rather than ``-|.|``)
    keeps the gradient right when links are exactly 1.
    """
    diff = prefix.unsqueeze(-2) - prefix.unsqueeze(-1)
    return torch.where(_upper_triangle(prefix.shape[-1], prefix.device), diff, -diff)


def _constant_mask(build: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Cache a mask builder's result per argument tuple (the masks are read-only).

    Cached masks are built outside inference mode, so one first made under
    ``torch.inference_mode()`` can still be saved for backward later. Under ``torch.compile`` the
    builder runs directly: it folds into a constant, where the cache would break the graph.
    """
    @lru_cache(maxsize=64)
    def cached(*args: object) -> Tensor:
        with torch.inference_mode(False):
            return build(*args)

    @wraps(build)
    def mask(*args: object) -> Tensor:
        return build(*args) if torch.compiler.is_compiling() else cached(*args)

    return mask


@_constant_mask
def _upper_triangle(n: int, device: torch.device) -> Tensor:
    """(n, n) bool, True on and above the diagonal."""
    return torch.ones(n, n, dtype=torch.bool, device=device).triu()


def tree_prior(links: Tensor, eps: float = 1e-6) -> Tensor:
    """Constituent prior of a chain (Tree-Transformer).

    Parameters
    ----------
    links : Tensor, shape (..., n-1)
        Link ``a_{k,k+1}`` between positions ``k`` and ``k+1``, in ``(0, 1]``.
    eps : float
        Links are clamped at ``eps`` before the log, so the prior and its gradients stay finite.

    Returns
    -------
    C : Tensor, shape (..., n, n), float32 (float64 for float64 input)
        ``C_ii = 1``; ``C_ij = C_ji = prod_{k=i}^{j-1} a_{k,k+1}`` for ``i < j``.
    """
    dtype = _prior_dtype(links)
    logs = links.to(dtype).clamp_min(eps).log()
    prefix = F.pad(logs.cumsum(-1), (1, 0))
    return _segment_logs(prefix).exp()


def group_prior(h_links: Tensor, v_links: Tensor, combine: str = "mean", eps: float = 1e-6) -> Tensor:
    """Constituent prior of an ``H x W`` patch grid from the two one-turn paths (Group Transformer).

    Parameters
    ----------
    h_links : Tensor, shape (..., H, W-1)
        ``h[r, c]`` links patch ``(r, c)`` to ``(r, c+1)``, in ``(0, 1]``.
    v_links : Tensor, shape (..., H-1, W)
        ``v[r, c]`` links patch ``(r, c)`` to ``(r+1, c)``, in ``(0, 1]``.
    combine : {"mean", "max", "min", "geometric"}
        How the horizontal-then-vertical (HV) and vertical-then-horizontal (VH) path products
        are combined.
    eps : float
        Links are clamped at ``eps`` before the log.

    Returns
    -------
    C : Tensor, shape (..., H*W, H*W), float32 (float64 for float64 input)
        Patches in row-major order; symmetric with unit diagonal.
    """
    if combine not in COMBINE_RULES:
        raise HiCLIPError(f"combine: {combine!r} is not one of {list(COMBINE_RULES)}")
    H, W = h_links.shape[-2], v_links.shape[-1]
    if h_links.shape[-1] != W - 1 or v_links.shape[-2] != H - 1 or h_links.shape[:-2] != v_links.shape[:-2]:
        raise HiCLIPError(
            f"group_prior: h_links {tuple(h_links.shape)} and v_links {tuple(v_links.shape)} "
            "do not describe one (..., H, W-1) / (..., H-1, W) grid"
        )
    dtype = _prior_dtype(h_links)
    row_prefix = F.pad(h_links.to(dtype).clamp_min(eps).log().cumsum(-1), (1, 0))  # (..., H, W)
    col_prefix = F.pad(v_links.to(dtype).clamp_min(eps).log().cumsum(-2), (0, 0, 1, 0))  # (..., H, W)
    row = _segment_logs(row_prefix)  # [r, c1, c2]: log-product along row r between columns c1 and c2
    col = _segment_logs(col_prefix.transpose(-1, -2))  # [c, r1, r2]: along column c between rows
    if combine == "mean":
        row, col = row.exp(), (col - math.log(2.0)).exp()  # the 1/2 of the mean folded into one factor
    elif combine == "geometric":
        row, col = (0.5 * row).exp(), (0.5 * col).exp()
    else:
        row, col = row.exp(), col.exp()
    # Exponentiate the small (N^1.5) segment tensors, then combine them by broadcasting into the
    # (r1, c1, r2, c2) result: fewer passes over the (N x N) prior than exponentiating log-sums.
    nb = row.dim() - 3
    batch = list(range(nb))
    row_r1_c1_c2 = row.unsqueeze(-2)  # [r1, c1, ., c2]
    col_r1_r2_c2 = col.permute(*batch, nb + 1, nb + 2, nb).unsqueeze(-3)  # [r1, ., r2, c2]
    col_r1_c1_r2 = col.permute(*batch, nb + 1, nb, nb + 2).unsqueeze(-1)  # [r1, c1, r2, .]
    row_c1_r2_c2 = row.permute(*batch, nb + 1, nb, nb + 2).unsqueeze(-4)  # [., c1, r2, c2]
    hv = row_r1_c1_c2 * col_r1_r2_c2  # row r1 from c1 to c2, then column c2 from r1 to r2
    if combine == "mean":
        prior = torch.addcmul(hv, col_r1_c1_r2, row_c1_r2_c2)  # (hv + vh) / 2: col is already halved
    elif combine == "geometric":
        prior = hv * col_r1_c1_r2 * row_c1_r2_c2
    else:
        vh = col_r1_c1_r2 * row_c1_r2_c2  # column c1 from r1 to r2, then row r2 from c1 to c2
        prior = torch.maximum(hv, vh) if combine == "max" else torch.minimum(hv, vh)
    return prior.reshape(*prior.shape[:nb], H * W, H * W)


def text_prior(
    links: Tensor,
    intra_word: Tensor,
    special: Tensor,
    valid: Tensor,
    eps: float = 1e-6,
    keep_reference_self: bool = False,
) -> Tensor:
    """The full ``(T, T)`` prior of a padded text batch.

    Parameters
    ----------
    links : Tensor, shape (B, T-1)
        Token links; only gaps between the last piece of one word and the first piece of the
        next matter (others are overwritten or masked).
    intra_word : Tensor, shape (B, T-1), bool
        Gaps inside a word. Their link is set to 1: a word is never split (method.md 3).
    special : Tensor, shape (B, T), bool
        SOT/EOT positions; their rows and columns of ``C`` are 1.
    valid : Tensor, shape (B, T), bool
        Non-padding positions; padding rows and columns of ``C`` are 0.

    Returns
    -------
    C : Tensor, shape (B, T, T), float32
    """
    prior = tree_prior(links.masked_fill(intra_word, 1.0), eps)
    prior = prior.masked_fill(special.unsqueeze(-1) | special.unsqueeze(-2), 1.0)
    if keep_reference_self:
        words = valid & ~special
        eye = torch.eye(prior.shape[-1], dtype=torch.bool, device=prior.device)
        prior = prior.masked_fill(eye & words.unsqueeze(-1), REFERENCE_SELF_VALUE)
    return prior.masked_fill(~(valid.unsqueeze(-1) & valid.unsqueeze(-2)), 0.0)


def image_prior(
    h_links: Tensor,
    v_links: Tensor,
    combine: str = "mean",
    eps: float = 1e-6,
    keep_reference_self: bool = False,
) -> Tensor:
    """The ``(1 + H*W)^2`` prior of a ViT sequence: CLS first (row and column of ones), then patches.

    ``h_links`` (B, H, W-1) and ``v_links`` (B, H-1, W) as in :func:`group_prior`.
    """
    prior = group_prior(h_links, v_links, combine, eps)
    if keep_reference_self:
        prior = prior.diagonal_scatter(
            torch.full(prior.shape[:-1], REFERENCE_SELF_VALUE, dtype=prior.dtype, device=prior.device),
            dim1=-2,
            dim2=-1,
        )
    return F.pad(prior, (1, 0, 1, 0), value=1.0)


def _masked_softmax(scores: Tensor, valid: Tensor) -> Tensor:
    """Softmax over the last dim restricted to ``valid`` entries; all-invalid rows give zeros."""
    scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
    return scores.softmax(-1) * valid


def symmetric_link(p_forward: Tensor, p_backward: Tensor, eps: float) -> Tensor:
    """``sqrt(p_uv * p_vu + eps)``, capped at 1 so links stay in ``(0, 1]``."""
    return (p_forward * p_backward + eps).sqrt().clamp(max=1.0)


def accumulate_links(previous: Tensor | None, current: Tensor) -> Tensor:
    """Hierarchical constraint ``a^l = a^{l-1} + (1 - a^{l-1}) a~^l`` with ``a^{-1} = 0``."""
    if previous is None:
        return current
    return previous + (1.0 - previous) * current


class _NeighbourAffinity(nn.Module):
    """The part :class:`ChainAffinity` and :class:`GridAffinity` share.

    The LayerNorm, the ``q`` and ``k`` projections, the score scale and ``eps``, and the folded
    queries. Parameters as documented on :class:`ChainAffinity`.
    """

    def __init__(self, width: int, scale: float | None = None, eps: float = 1e-6, ln_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=ln_eps)
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width, bias=False)  # a key bias cancels in the neighbour softmax
        self.scale = 1.0 / width if scale is None else float(scale)
        self.eps = eps

    def queries_and_keys(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(r, h)`` with ``r_u . h_v = q_u . k_v`` (see :func:`_neighbour_queries`)."""
        return _neighbour_queries(self.norm(x), self.q, self.k, self.scale)


class ChainAffinity(_NeighbourAffinity):
    """Neighbour affinity over a chain of tokens (Tree-Transformer "group attention").

    Own LayerNorm, single-head full-width ``q`` (with bias) and ``k`` (a key bias would cancel in
    the neighbour softmax, so ``k`` has none), scores only between adjacent tokens whose gap is
    valid, softmax over each token's valid neighbours (a token with one valid neighbour puts
    ``p = 1`` on it), symmetric link, hierarchical constraint.

    Parameters
    ----------
    width : int
        Token state width ``d``.
    scale : float or None
        Score scale ``s``; ``None`` means ``1 / d``.
    eps : float
        Added inside the square root of the symmetric link.
    ln_eps : float
        Epsilon of the LayerNorm.
    """

    def forward(self, x: Tensor, gap_valid: Tensor, previous: Tensor | None = None) -> Tensor:
        """Links of this layer.

        Parameters
        ----------
        x : Tensor, shape (B, N, d)
            Layer input states.
        gap_valid : Tensor, shape (B, N-1), bool
            Gaps ``(k, k+1)`` that may link (both tokens real words, different words).
        previous : Tensor, shape (B, N-1), optional
            Links of the layer below.

        Returns
        -------
        links : Tensor, shape (B, N-1)
            In ``(0, 1]`` on valid gaps, 0 elsewhere; never smaller than ``previous``.
        """
        forward_scores, backward_scores = neighbour_dots(*self.queries_and_keys(x), (1,))  # k -> k+1, k+1 -> k
        p_forward, p_backward = _chain_probabilities(forward_scores, backward_scores, gap_valid)
        current = symmetric_link(p_forward, p_backward, self.eps) * gap_valid
        return accumulate_links(previous, current)


def _neighbour_queries(h: Tensor, q: nn.Linear, k: nn.Linear, scale: float) -> tuple[Tensor, Tensor]:
    """Scores ``e_uv = s (W_q h_u + b_q) . (W_k h_v)`` as ``r_u . h_v`` with one width x width matmul.

    ``r = s (h W_q^T + b_q) W_k = h (s W_q^T W_k) + s b_q W_k``: folding ``W_k`` into the queries
    halves the affinity's matmul cost (the small ``W_k^T W_q`` product is paid once per call).
    A key bias would add ``q_u . b_k``, constant over the neighbours ``v`` of ``u``, so it cancels
    in the softmax; that is why ``k`` has none.
    """
    weight = (k.weight.t() @ q.weight) * scale
    bias = (q.bias @ k.weight) * scale
    return F.linear(h, weight, bias), h


def _shifted_dots(r: Tensor, h: Tensor, offsets: tuple[int, ...]) -> tuple[Tensor, ...]:
    scores: list[Tensor] = []
    for o in offsets:
        scores.append(torch.linalg.vecdot(r[:, :-o], h[:, o:]))
        scores.append(torch.linalg.vecdot(r[:, o:], h[:, :-o]))
    return tuple(scores)


def _shifted_dots_grad(other: Tensor, grads: tuple[Tensor, ...], offsets: tuple[int, ...], start: int,
                       leading: bool) -> Tensor:
    """Gradient of the dots w.r.t. one side, written into one fresh buffer (no full zero-fill).

    ``leading``: the side whose position comes first in ``x_p . y_{p+o}`` for the first score of
    each offset (``r`` is, ``h`` is not).
    """
    B, N, d = other.shape
    grad = torch.empty(B, N + start, d, dtype=other.dtype, device=other.device)
    grad[:, :start].zero_()
    body = grad[:, start:]
    for i, o in enumerate(offsets):
        ahead, behind = grads[2 * i].unsqueeze(-1), grads[2 * i + 1].unsqueeze(-1)
        if not leading:
            ahead, behind = behind, ahead
        if i == 0:  # the first offset writes its span and zeroes the last o rows the span misses
            torch.mul(ahead, other[:, o:], out=body[:, :-o])
            body[:, -o:].zero_()
        else:
            body[:, :-o].addcmul_(ahead, other[:, o:])
        body[:, o:].addcmul_(behind, other[:, :-o])
    return grad


class _NeighbourDots(torch.autograd.Function):
    """Forward and gradient of :func:`neighbour_dots` (see there).

    Autograd through the sliced products would, in the backward pass, zero-fill and accumulate a
    full ``(B, N, d)`` gradient per slice (four slices per offset, plus one for ``start``): on a
    CPU that costs more than the rest of the affinity together. Here each input's gradient is
    one buffer that the products are written and added into in place.
    """

    @staticmethod
    def forward(r: Tensor, h: Tensor, offsets: tuple[int, ...], start: int) -> tuple[Tensor, ...]:
        return _shifted_dots(r[:, start:], h[:, start:], offsets)

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: tuple) -> None:
        r, h, offsets, start = inputs
        ctx.save_for_backward(r, h)
        ctx.offsets, ctx.start = offsets, start

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, *grads: Tensor) -> tuple[Tensor | None, ...]:
        r, h = ctx.saved_tensors
        s = ctx.start
        # d(r_p . h_{p+o}) / d r_p = h_{p+o}, so r's gradient reads h shifted, and h's reads r.
        grad_r = _shifted_dots_grad(h[:, s:], grads, ctx.offsets, s, True) if ctx.needs_input_grad[0] else None
        grad_h = _shifted_dots_grad(r[:, s:], grads, ctx.offsets, s, False) if ctx.needs_input_grad[1] else None
        return grad_r, grad_h, None, None


def neighbour_dots(r: Tensor, h: Tensor, offsets: tuple[int, ...], start: int = 0) -> tuple[Tensor, ...]:
    """Dot products between positions ``o`` apart on a sequence, both ways, for each offset ``o``.

    Parameters
    ----------
    r, h : Tensor, shape (B, N, d)
        Queries and keys; computed in the wider of their dtypes.
    offsets : tuple of int
        Each in ``[1, N - start)``.
    start : int
        Leading positions (a CLS token) left out: the sequence is ``r[:, start:]``, ``h[:, start:]``.

    Returns
    -------
    tuple of Tensor
        For each ``o``, in order: ``r_p . h_{p+o}`` and ``r_{p+o} . h_p`` over the positions
        ``p`` of the sequence, each (B, N - start - o).
    """
    dtype = torch.promote_types(r.dtype, h.dtype)  # under autocast: bf16 queries, fp32 LayerNorm output
    r, h = r.to(dtype), h.to(dtype)
    if torch.compiler.is_compiling():  # the compiler fuses the plain slices better than a custom backward
        return _shifted_dots(r[:, start:], h[:, start:], tuple(offsets))
    return _NeighbourDots.apply(r, h, tuple(offsets), start)


def _chain_probabilities(forward: Tensor, backward: Tensor, gap_valid: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token softmax over (left, right) neighbours; returns ``p_{k->k+1}``, ``p_{k+1->k}`` per gap."""
    pad = (1, 0), (0, 1)
    left = F.pad(backward, pad[0])  # token u -> u-1 is the backward score of gap u-1
    right = F.pad(forward, pad[1])  # token u -> u+1
    valid_left = F.pad(gap_valid, pad[0])
    valid_right = F.pad(gap_valid, pad[1])
    probs = _masked_softmax(torch.stack((left, right), -1), torch.stack((valid_left, valid_right), -1))
    return probs[:, :-1, 1], probs[:, 1:, 0]


class GridAffinity(_NeighbourAffinity):
    """Neighbour affinity over a 4-connected ``H x W`` patch grid (Group Transformer).

    Same as :class:`ChainAffinity` with ``nbr(u)`` = up, down, left, right patches.
    """

    def forward(
        self,
        x: Tensor,
        height: int,
        width: int,
        previous: tuple[Tensor, Tensor] | None = None,
        start: int = 0,
    ) -> tuple[Tensor, Tensor]:
        """Links of this layer.

        Parameters
        ----------
        x : Tensor, shape (B, start + H*W, d)
            Patch states in row-major order, after ``start`` leading tokens that take no part.
        height, width : int
            Grid size ``H``, ``W``.
        previous : (Tensor, Tensor), optional
            ``(h, v)`` links of the layer below.
        start : int
            Leading tokens (a ViT's CLS) to leave out. Passing the whole sequence rather than
            ``x[:, 1:]`` spares a copy of the states and a zero-filled gradient per layer; the
            CLS row's LayerNorm and projection are wasted work, ``1 / (1 + H*W)`` of the affinity.

        Returns
        -------
        h : Tensor, shape (B, H, W-1)
        v : Tensor, shape (B, H-1, W)
            Links in ``(0, 1]``, never smaller than ``previous``.
        """
        B, W = x.shape[0], width
        # Scores on the flat row-major sequence: patch p and p+1 are horizontal neighbours unless
        # p ends a row (masked below), p and p+W vertical ones.
        right, left, down, up = neighbour_dots(*self.queries_and_keys(x), (1, W), start)
        right, left = F.pad(right, (0, 1)), F.pad(left, (1, 0))  # p -> p+1, p -> p-1
        down, up = F.pad(down, (0, W)), F.pad(up, (W, 0))  # p -> p+W, p -> p-W
        scores = torch.stack((right, left, down, up), -1).view(B, height, width, 4)
        probs = _masked_softmax(scores, _grid_neighbour_mask(height, width, x.device))
        h = symmetric_link(probs[:, :, :-1, 0], probs[:, :, 1:, 1], self.eps)
        v = symmetric_link(probs[:, :-1, :, 2], probs[:, 1:, :, 3], self.eps)
        if previous is None:
            return h, v
        return accumulate_links(previous[0], h), accumulate_links(previous[1], v)


@_constant_mask
def _grid_neighbour_mask(height: int, width: int, device: torch.device) -> Tensor:
    """(H, W, 4) bool: which of (right, left, down, up) exists for each patch."""
    rows = torch.arange(height, device=device).view(-1, 1).expand(height, width)
    cols = torch.arange(width, device=device).view(1, -1).expand(height, width)
    return torch.stack((cols < width - 1, cols > 0, rows < height - 1, rows > 0), -1)


class HierarchicalAttention(nn.Module):
    """Multi-head self-attention ``out = (softmax(Q K^T / sqrt(d_h) + mask) * C) V``.

    Without a prior (and without ``need_weights``) it calls
    :func:`torch.nn.functional.scaled_dot_product_attention`, so a vanilla model is as fast as
    PyTorch's fused attention; with a prior it takes an explicit path. Parameters are laid out
    as in :class:`torch.nn.MultiheadAttention` (``in_proj`` = stacked q, k, v; ``out_proj``).

    Parameters
    ----------
    width : int
        Model width.
    heads : int
        Number of heads (``width % heads == 0``).
    renormalize : bool
        Renormalise rows after multiplying by ``C`` (off in the reference code).
    eps : float
        Floor of the row sums when renormalising.
    """

    def __init__(self, width: int, heads: int, renormalize: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        if width % heads:
            raise HiCLIPError(f"attention: width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = width // heads
        self.renormalize = renormalize
        self.eps = eps
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(
        self,
        x: Tensor,
        key_valid: Tensor | None = None,
        prior: Tensor | None = None,
        need_weights: bool = False,
        bias: Tensor | None = None,
        prior_core: Callable[[Tensor, Tensor, Tensor, Tensor | None, Tensor], Tensor] | None = None,
        gate: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend.

        Parameters
        ----------
        x : Tensor, shape (B, N, width)
        key_valid : Tensor, shape (B, N) or (B, N, N), bool, optional
            False for padding keys (masked out of the softmax); a (B, N, N) mask gives, per
            query row, the keys it may attend to (a causal text tower).
        prior : Tensor, shape (B, N, N), optional
            Constituent prior ``C`` (broadcast over heads).
        need_weights : bool
            Also return the head-averaged attention probabilities (after the prior).
        bias : Tensor, optional
            ``key_valid`` as :func:`hiclip.fused_attention.attention_bias` gives it (built once
            per tower call), for ``prior_core``.
        prior_core : callable, optional
            ``prior_core(q, k, v, bias, prior)`` -> (B, heads, N, d_head) computes the attention
            with a prior instead of the explicit path below (the fused path's
            :func:`hiclip.fused_attention.prior_attention`); not with ``need_weights``,
            ``renormalize`` or a ``gate``.
        gate : Tensor, scalar, optional
            The prior gate ``alpha`` of this layer (:func:`prior_gate_value`; option
            ``affinity.prior_gate``, not part of method.md): the probabilities become
            ``(1 - alpha) P + alpha (P * C) = P * (1 + alpha (C - 1))`` (renormalised if asked).
            The output is computed as ``SDPA(q, k, v) + (P' - P) V``, so at ``alpha = 0`` it is
            bit for bit the attention without a prior (without ``renormalize``), and the
            gradient with respect to ``alpha``, ``(P * (C - 1)) V``, is not zero.

        Returns
        -------
        out : Tensor, shape (B, N, width)
        weights : Tensor, shape (B, N, N), or None
        """
        B, N, width = x.shape
        q, k, v = self.in_proj(x).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None
        if key_valid is not None:  # (B, N): keys; (B, N, N): query-key pairs (causal & padding)
            mask = key_valid[:, None, None, :] if key_valid.dim() == 2 else key_valid[:, None]
        weights = None
        if prior is None and not need_weights:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif prior_core is not None and gate is None and not need_weights and not self.renormalize:
            out = prior_core(q, k, v, bias, prior)
        else:
            scale = self.head_dim**-0.5
            if mask is None:
                scores = torch.matmul(q * scale, k.transpose(-1, -2))
            else:  # bias + scale * q k^T in one op whose backward is one multiplication
                scores = torch.add(_key_bias(mask, q.dtype), torch.matmul(q, k.transpose(-1, -2)), alpha=scale)
            attn = scores.softmax(-1)
            if prior is None:
                out = torch.matmul(attn, v)
            elif gate is None:
                attn = self._renormalized(attn * prior.unsqueeze(1).to(attn.dtype))
                out = torch.matmul(attn, v)
            else:
                gated = self._renormalized(attn * gated_prior(prior, gate).unsqueeze(1).to(attn.dtype))
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask) + torch.matmul(gated - attn, v)
                attn = gated
            if need_weights:
                weights = attn.mean(1)
        out = out.transpose(1, 2).reshape(B, N, width)
        return self.out_proj(out), weights

    def _renormalized(self, attn: Tensor) -> Tensor:
        return attn / attn.sum(-1, keepdim=True).clamp_min(self.eps) if self.renormalize else attn


def prior_gate_value(raw: Tensor) -> Tensor:
    """The gate ``alpha = clamp(raw, 0, 1)`` of a layer's prior, with a straight-through gradient.

    The forward value is the clamp; the gradient passes as if there were none, so a gate that
    the first steps push below 0 (prior off) still sees whether opening it would help and can
    reopen (a plain clamp would leave it stuck with zero gradient). ``raw`` starts at 0.
    """
    return raw + (raw.clamp(0.0, 1.0) - raw).detach()


def gated_prior(prior: Tensor, gate: Tensor) -> Tensor:
    """The prior seen through its gate: ``1 + alpha (C - 1)`` (``1`` at ``alpha = 0``, ``C`` at 1)."""
    return torch.lerp(torch.ones_like(prior), prior, gate.to(prior.dtype))


def _key_bias(key_valid: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive attention bias: 0 for valid keys, ``-inf`` for masked ones (same shape as the mask)."""
    return torch.zeros(key_valid.shape, dtype=dtype, device=key_valid.device).masked_fill_(~key_valid, float("-inf"))


def _cumulative_links(per_layer: Tensor, layer_dim: int) -> Tensor:
    """Closed form of the hierarchical constraint: ``a^l = 1 - prod_{m<=l} (1 - a~^m)``."""
    return 1.0 - (1.0 - per_layer).cumprod(layer_dim)


def attention_links_chain(attention: Tensor, gap_valid: Tensor, eps: float = 1e-6) -> Tensor:
    """Links of a chain read from attention maps (method.md 5, last paragraph).

    Per layer: the head-averaged attention between neighbours, renormalised over each token's
    valid neighbourhood, made symmetric as ``sqrt(p_uv p_vu + eps)``; then accumulated over
    layers with the hierarchical constraint.

    Parameters
    ----------
    attention : Tensor, shape (B, L, N, N)
        Head-averaged attention probabilities of each layer (rows = queries).
    gap_valid : Tensor, shape (B, N-1), bool
        Gaps that may link.

    Returns
    -------
    links : Tensor, shape (B, L, N-1)
        Non-decreasing over layers, in ``(0, 1]`` on valid gaps, 0 elsewhere.
    """
    valid = gap_valid.unsqueeze(1)
    forward = attention.diagonal(offset=1, dim1=-2, dim2=-1) * valid  # A[k, k+1]
    backward = attention.diagonal(offset=-1, dim1=-2, dim2=-1) * valid  # A[k+1, k]
    total = F.pad(forward, (0, 1)) + F.pad(backward, (1, 0))  # per token, over its neighbours
    tiny = torch.finfo(total.dtype).tiny
    p_forward = forward / total[..., :-1].clamp_min(tiny)
    p_backward = backward / total[..., 1:].clamp_min(tiny)
    current = symmetric_link(p_forward, p_backward, eps) * valid
    return _cumulative_links(current, -2)


def attention_links_causal_chain(attention: Tensor, gap_valid: Tensor, eps: float = 1e-6) -> Tensor:
    """Links of a chain read from *causal* attention maps (a CLIP text tower).

    Under a causal mask token ``k`` cannot attend to ``k+1``, so the link between ``k`` and
    ``k+1`` has only one direction to come from: token ``k+1`` attending to token ``k``. Its only
    visible neighbour is ``k``, so renormalising over the neighbourhood (as
    :func:`attention_links_chain` does) would always give 1. Instead the attention of ``k+1`` to
    its left neighbour is compared with its attention to itself, the other position next to the
    gap that it sees::

        p_k = A[k+1, k] / (A[k+1, k] + A[k+1, k+1])          # head-averaged attention A
        a~_k = sqrt(p_k * p_k + eps)                         # the symmetric link with both directions p_k

    then accumulated over layers with the hierarchical constraint. A token that looks back at its
    left neighbour more than at itself links to it (``p_k > 0.5``); one that keeps to itself
    marks a break. ``p_k`` does not depend on how much attention goes to distant tokens (CLIP
    text heads put much of it on SOT), nor on the position in the sentence.

    Shapes and ranges as :func:`attention_links_chain`: ``attention`` (B, L, N, N) causal,
    ``gap_valid`` (B, N-1) bool; returns links (B, L, N-1).
    """
    valid = gap_valid.unsqueeze(1)
    left = attention.diagonal(offset=-1, dim1=-2, dim2=-1)  # A[k+1, k]
    own = attention.diagonal(dim1=-2, dim2=-1)[..., 1:]  # A[k+1, k+1]
    share = left / (left + own).clamp_min(torch.finfo(attention.dtype).tiny)
    current = symmetric_link(share, share, eps) * valid
    return _cumulative_links(current, -2)


def attention_links_grid(attention: Tensor, height: int, width: int, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Links of a patch grid read from attention maps (as :func:`attention_links_chain`).

    Parameters
    ----------
    attention : Tensor, shape (B, L, H*W, H*W)
        Head-averaged attention among patches (CLS row/column removed), row-major patches.

    Returns
    -------
    h : Tensor, shape (B, L, H, W-1)
    v : Tensor, shape (B, L, H-1, W)
    """
    lead = attention.shape[:-2]

    def horizontal(offset: int) -> Tensor:
        diag = attention.diagonal(offset=offset, dim1=-2, dim2=-1)  # (..., HW-1)
        return F.pad(diag, (0, 1)).view(*lead, height, width)[..., :, : width - 1]

    right = horizontal(1)  # A[(r,c), (r,c+1)]
    left = horizontal(-1)  # A[(r,c+1), (r,c)]
    down = attention.diagonal(offset=width, dim1=-2, dim2=-1).reshape(*lead, height - 1, width)
    up = attention.diagonal(offset=-width, dim1=-2, dim2=-1).reshape(*lead, height - 1, width)
    total = (
        F.pad(right, (0, 1)) + F.pad(left, (1, 0)) + F.pad(down, (0, 0, 0, 1)) + F.pad(up, (0, 0, 1, 0))
    )
    total = total.clamp_min(torch.finfo(total.dtype).tiny)
    h = symmetric_link(right / total[..., :, :-1], left / total[..., :, 1:], eps)
    v = symmetric_link(down / total[..., :-1, :], up / total[..., 1:, :], eps)
    return _cumulative_links(h, -3), _cumulative_links(v, -3)
