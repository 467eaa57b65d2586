"""HiCLIP towers and model (method.md 1-4).

* :class:`TextTower`: token + positional embedding, pre-LN blocks with bidirectional attention and
  a padding mask (or CLIP's causal mask with ``text.causal``), final LN, pooled at EOT, projected;
  a Tree-Transformer when the hierarchy is on.
* :class:`VisionTower`: a ViT (patch conv, CLS, positional embedding, LN, pre-LN blocks, CLS
  pooling, LN, projection); a Group Transformer when the hierarchy is on.
* :class:`HiCLIP`: both towers and the learnable temperature.

The layout follows CLIP (and ``transformers.CLIPModel``) parameter for parameter, so a model with
``hierarchy=False`` is a vanilla CLIP of the same size, plus the small BERT-style MLM head of the
text tower (``text.mlm_head``). The affinity modules exist only when the hierarchy is on; they are
created under a forked RNG, so a HiCLIP and its vanilla twin built from the same seed share every
vanilla weight.

Text sequences are ``SOT w_1 ... w_n EOT PAD ...``: SOT is position 0 and EOT the last valid
position (``attention_mask.sum(1) - 1``), so no special ids are needed here. Word tokens are the
positions in between (or, when ``word_ids`` are given, the positions with ``word_ids >= 0``).
Subwords (method.md 3): a link exists only between the last piece of a word and the first piece
of the next; gaps inside a word take no part in the affinity softmax and their link is 1 in the
prior, so a word is never split.

A causal text tower (``text.causal``, imported CLIPs) masks the attention before the softmax,
``softmax(QK^T / sqrt(d) + causal & padding mask)``; with the hierarchy on the prior then
multiplies those probabilities as in method.md 3, so the mask keeps what the pretrained weights
expect and the prior only shapes the visible (lower-triangle) part. The affinity modules still
score both neighbours of a word: they are not attention and are not masked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hiclip.attention import (
    ChainAffinity,
    GridAffinity,
    HierarchicalAttention,
    accumulate_links,
    attention_links_causal_chain,
    attention_links_chain,
    attention_links_grid,
    image_prior,
    prior_gate_value,
    text_prior,
)
from hiclip.config import AffinityConfig, HiCLIPConfig, TextConfig, VisionConfig
from hiclip.errors import HiCLIPError
from hiclip.fused_attention import (
    NeighbourGraph,
    TextPriorMasks,
    attention_bias,
    chain_graph,
    fused_enabled,
    fused_image_prior,
    fused_text_prior,
    grid_graph,
    neighbour_links,
    prior_attention,
    split_grid_links,
    text_prior_masks,
)


@dataclass
class TextOutput:
    """What the text tower returns (as ``transformers``' ``CLIPTextModelOutput``).

    Attributes
    ----------
    features : Tensor, shape (B, embed_dim)
        Pooled at EOT and projected (L2-normalised when asked for).
    links : Tensor, shape (B, L, max_words - 1), or None
        Word-level links in (0, 1], non-decreasing over layers, 0 past each sentence's
        ``n_words - 1`` (with ``return_affinities``; read from attention maps when the hierarchy
        is off, method.md 5).
    n_words : Tensor, shape (B,), long, or None
        Words per sentence (with ``return_affinities``).
    attention : Tensor, shape (B, L, T, T), or None
        Head-averaged attention maps (with ``return_attention``).
    """

    features: Tensor
    links: Tensor | None = None
    n_words: Tensor | None = None
    attention: Tensor | None = None


@dataclass
class VisionOutput:
    """What the vision tower returns (as ``transformers``' ``CLIPVisionModelOutput``).

    Attributes
    ----------
    features : Tensor, shape (B, embed_dim)
        The CLS token after the final LayerNorm, projected (L2-normalised when asked for).
    h_links : Tensor, shape (B, L, H, W-1), or None
        Horizontal patch links ``(r, c)-(r, c+1)`` in (0, 1], non-decreasing over layers (with
        ``return_affinities``; from attention maps when the hierarchy is off).
    v_links : Tensor, shape (B, L, H-1, W), or None
        Vertical patch links ``(r, c)-(r+1, c)``.
    attention : Tensor, shape (B, L, 1+H*W, 1+H*W), or None
        Head-averaged attention maps, CLS first (with ``return_attention``).
    """

    features: Tensor
    h_links: Tensor | None = None
    v_links: Tensor | None = None
    attention: Tensor | None = None


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the activation of the original CLIP."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def _activation(name: str) -> nn.Module:
    return QuickGELU() if name == "quick_gelu" else nn.GELU()


class MLP(nn.Module):
    """Two-layer feed-forward network ``fc2(act(fc1(x)))``."""

    def __init__(self, width: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = _activation(activation)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ResidualBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, activation: str, ln_eps: float,
                 affinity: AffinityConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=ln_eps)
        self.attn = HierarchicalAttention(width, heads, renormalize=affinity.renormalize, eps=affinity.eps)
        self.ln_2 = nn.LayerNorm(width, eps=ln_eps)
        self.mlp = MLP(width, int(round(width * mlp_ratio)), activation)

    def forward(self, x: Tensor, key_valid: Tensor | None = None, prior: Tensor | None = None,
                need_weights: bool = False, bias: Tensor | None = None,
                fused: bool = False, gate: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``fused``: the attention with a prior takes :func:`prior_attention` (``bias`` its mask),
        unless a ``gate`` is given (the gated mix has its own explicit path)."""
        out, weights = self.attn(self.ln_1(x), key_valid, prior, need_weights, bias,
                                 prior_attention if fused else None, gate)
        x = x + out
        x = x + self.mlp(self.ln_2(x))
        return x, weights


def _init_blocks(blocks: nn.ModuleList, width: int) -> None:
    """CLIP's initialisation of the transformer blocks (biases zero)."""
    attn_std = width**-0.5
    proj_std = width**-0.5 * (2 * len(blocks)) ** -0.5
    fc_std = (2 * width) ** -0.5
    for block in blocks:
        nn.init.normal_(block.attn.in_proj.weight, std=attn_std)
        nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.fc1.weight, std=fc_std)
        nn.init.normal_(block.mlp.fc2.weight, std=proj_std)
        for bias in (block.attn.in_proj.bias, block.attn.out_proj.bias, block.mlp.fc1.bias, block.mlp.fc2.bias):
            nn.init.zeros_(bias)


def _prior_layer_set(prior_layers: list[int] | None, layers: int) -> frozenset[int]:
    return frozenset(range(layers)) if prior_layers is None else frozenset(prior_layers)


class _Tower(nn.Module):
    """What both towers share: their settings, the block stack and the per-layer affinities.

    A tower registers ``blocks = self._build_blocks()`` among its own modules, where CLIP has
    them (the parameter order follows CLIP), and sets ``affinities = self._build_affinities(...)``
    last, after its CLIP initialisation: their initial values come from the RNG state left there.
    Then ``_build_prior_gate()`` registers the prior gates (``affinity.prior_gate``; zeros, no RNG).

    Parameters
    ----------
    config : TextConfig or VisionConfig
    hierarchy : bool
    affinity : AffinityConfig
    """

    affinities: nn.ModuleList | None
    prior_gate: nn.Parameter | None

    def __init__(self, config: TextConfig | VisionConfig, hierarchy: bool,
                 affinity: AffinityConfig) -> None:
        super().__init__()
        self.config = config
        self.hierarchy = hierarchy
        self.affinity_config = affinity
        self.grad_checkpointing = False
        self._prior_layers = _prior_layer_set(config.prior_layers, config.layers)

    def _build_blocks(self) -> nn.ModuleList:
        """``config.layers`` pre-LN blocks, default-initialised (CLIP's init is :func:`_init_blocks`)."""
        config = self.config
        return nn.ModuleList(
            ResidualBlock(config.width, config.heads, config.mlp_ratio, config.activation, config.ln_eps,
                          self.affinity_config)
            for _ in range(config.layers)
        )

    def _build_affinities(self, kind: type[ChainAffinity] | type[GridAffinity]) -> nn.ModuleList | None:
        """One ``kind`` affinity module per layer when the hierarchy is on, else ``None``.

        They are created under a forked RNG, so the RNG state after the tower, and with it every
        later weight, is the same as in the vanilla twin (module docstring).
        """
        if not self.hierarchy:
            return None
        config, affinity = self.config, self.affinity_config
        with torch.random.fork_rng(devices=[]):
            return nn.ModuleList(
                kind(config.width, affinity.scale, affinity.eps, config.ln_eps) for _ in range(config.layers)
            )

    def _build_prior_gate(self) -> None:
        """Register ``prior_gate``: the raw gates (one per layer, zeros) with ``affinity.prior_gate``
        and the hierarchy on, else ``None``. Zeros draw nothing from the RNG."""
        gated = self.hierarchy and self.affinity_config.prior_gate
        self.register_parameter("prior_gate", nn.Parameter(torch.zeros(self.config.layers)) if gated else None)

    def _gate(self, i: int) -> Tensor | None:
        """The gate ``alpha`` of layer ``i``'s prior, or ``None`` without gates."""
        return None if self.prior_gate is None else prior_gate_value(self.prior_gate[i])

    def prior_gates(self) -> list[float] | None:
        """The gate values ``alpha`` of every layer (``None`` without gates), for reports."""
        return None if self.prior_gate is None else prior_gate_value(self.prior_gate.detach()).tolist()


def sinusoidal_positions(T: int, width: int, device: torch.device | None = None,
                         dtype: torch.dtype = torch.float32) -> Tensor:
    """The fixed encoding of Vaswani et al. (2017), ``(T, width)``: ``sin(p / 10000^(2i/d))`` in
    the even and ``cos`` in the odd columns, divided by ``sqrt(width)``.

    The division puts the encoding at the scale of the token embeddings (initialised with std
    0.02), the ratio the Tree-Transformer reference gets by multiplying its embeddings by
    ``sqrt(d)`` instead; the towers here keep CLIP's unscaled token embeddings.
    """
    position = torch.arange(T, device=device, dtype=torch.float32).unsqueeze(1)
    rate = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(T, width, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : width // 2]
    return (table / math.sqrt(width)).to(dtype)


class TextTower(_Tower):
    """Text encoder: a bidirectional (or, with ``config.causal``, causal) Transformer, a
    Tree-Transformer when ``hierarchy`` is on.

    Parameters
    ----------
    config : TextConfig
    embed_dim : int
        Size of the joint embedding space.
    hierarchy : bool
        Create per-layer :class:`ChainAffinity` modules and multiply attention by the tree prior.
    affinity : AffinityConfig
    """

    config: TextConfig

    def __init__(self, config: TextConfig, embed_dim: int, hierarchy: bool, affinity: AffinityConfig) -> None:
        super().__init__(config, hierarchy, affinity)
        width = config.width
        self.token_embedding = nn.Embedding(config.vocab_size, width)
        if config.positions == "learned":
            self.positional_embedding = nn.Parameter(torch.empty(config.context_length, width))
        self.blocks = self._build_blocks()
        self.ln_final = nn.LayerNorm(width, eps=config.ln_eps)
        self.text_projection = nn.Linear(width, embed_dim, bias=False)
        if config.mlm_head:
            self.mlm_transform = nn.Sequential(
                nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width, eps=config.ln_eps)
            )
            self.mlm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self._init_weights()
        self.affinities = self._build_affinities(ChainAffinity)
        self._build_prior_gate()

    def _init_weights(self) -> None:
        width = self.config.width
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        if self.config.positions == "learned":
            nn.init.normal_(self.positional_embedding, std=0.01)
        _init_blocks(self.blocks, width)
        nn.init.normal_(self.text_projection.weight, std=width**-0.5)
        if self.config.mlm_head:
            nn.init.normal_(self.mlm_transform[0].weight, std=0.02)
            nn.init.zeros_(self.mlm_transform[0].bias)

    def token_masks(self, input_ids: Tensor, attention_mask: Tensor, word_ids: Tensor | None = None) -> dict[str, Tensor]:
        """Masks of a padded batch ``SOT w... EOT PAD...``.

        Returns
        -------
        dict of Tensor
            ``valid`` (B, T) non-padding; ``special`` (B, T) SOT/EOT; ``word_ids`` (B, T), -1
            outside words; ``eot`` (B,) EOT position; ``boundary`` (B, T-1) gaps between two
            different words (the only gaps that link); ``intra_word`` (B, T-1) gaps inside a word;
            ``attend``: the keys each query may attend to, ``valid`` (B, T) or, for a causal
            tower, (B, T, T) ``valid`` keys at or before the query.
        """
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise HiCLIPError(
                f"text: input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
                "must both be (batch, tokens)"
            )
        T = input_ids.shape[1]
        limit = self.config.max_tokens
        if limit is not None and T > limit:
            raise HiCLIPError(
                f"text: {T} tokens exceed the model's context length {limit} (learned positions); "
                "tokenize with context_length=model.config.text.max_tokens"
            )
        if word_ids is not None and word_ids.shape != input_ids.shape:
            raise HiCLIPError(f"text: word_ids {tuple(word_ids.shape)} does not match input_ids {tuple(input_ids.shape)}")
        valid = attention_mask.bool()
        positions = torch.arange(T, device=input_ids.device)
        eot = valid.sum(1, keepdim=True) - 1
        special = valid & ((positions == 0) | (positions == eot))
        if word_ids is None:
            words = valid & ~special
            word_ids = torch.where(words, positions - 1, -1)
        else:
            word_ids = word_ids.masked_fill(~valid | special, -1)
            words = word_ids >= 0
        both = words[:, :-1] & words[:, 1:]
        same_word = word_ids[:, :-1] == word_ids[:, 1:]
        attend = valid
        if self.config.causal:
            attend = valid.unsqueeze(1) & torch.ones(T, T, dtype=torch.bool, device=valid.device).tril()
        return {
            "attend": attend,
            "valid": valid,
            "special": special,
            "word_ids": word_ids,
            "eot": eot.squeeze(1).clamp_min(0),
            "boundary": both & ~same_word,
            "intra_word": both & same_word,
        }

    def _layer(self, i: int, x: Tensor, links: Tensor | None, masks: dict[str, Tensor],
               need_weights: bool, fused: _FusedText | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        prior = gate = None
        if fused is not None:  # hiclip/fused_attention.py: the same links and prior in fewer ops
            affinity = self.affinities[i]
            links = neighbour_links(affinity, x, fused.graph, links)
            if i in self._prior_layers:
                prior = fused_text_prior(links, fused.prior)
                gate = self._gate(i)
            x, weights = self.blocks[i](x, masks["attend"], prior, need_weights, fused.bias, fused=True, gate=gate)
            return x, links, weights
        if self.affinities is not None:
            links = self.affinities[i](x, masks["boundary"], links)
            if i in self._prior_layers:
                aff = self.affinity_config
                prior = text_prior(links, masks["intra_word"], masks["special"], masks["valid"], aff.eps,
                                   aff.keep_reference_self)
                gate = self._gate(i)
        x, weights = self.blocks[i](x, masks["attend"], prior, need_weights, gate=gate)
        return x, links, weights

    def _run(self, input_ids: Tensor, attention_mask: Tensor, word_ids: Tensor | None,
             need_weights: bool) -> tuple[Tensor, list[Tensor], list[Tensor], dict[str, Tensor]]:
        masks = self.token_masks(input_ids, attention_mask, word_ids)
        if not input_ids.is_cuda and input_ids.numel() and not torch.compiler.is_compiling():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.config.vocab_size:
                raise HiCLIPError(f"text: token id {high if high >= 0 else low} outside the vocabulary "
                                  f"of {self.config.vocab_size}; was the model built for this tokenizer?")
        T = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.position_encoding(T)
        fused = None
        if self.affinities is not None and not need_weights and fused_enabled(input_ids.device):
            fused = self._fused_context(masks)
        links: Tensor | None = None
        all_links: list[Tensor] = []
        all_weights: list[Tensor] = []
        for i in range(len(self.blocks)):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x, links, weights = checkpoint(self._layer, i, x, links, masks, need_weights, fused,
                                               use_reentrant=False)
            else:
                x, links, weights = self._layer(i, x, links, masks, need_weights, fused)
            if links is not None:
                all_links.append(links)
            if weights is not None:
                all_weights.append(weights)
        return self.ln_final(x), all_links, all_weights, masks

    def _fused_context(self, masks: dict[str, Tensor]) -> _FusedText:
        """What every layer of the fused path shares, built once per call."""
        aff = self.affinity_config
        dtype = torch.float64 if self.token_embedding.weight.dtype == torch.float64 else torch.float32
        prior = text_prior_masks(masks["intra_word"], masks["special"], masks["valid"], aff.eps,
                                 aff.keep_reference_self, dtype)
        return _FusedText(chain_graph(masks["boundary"]), prior,
                          attention_bias(masks["attend"], self.config.heads, torch.float32))

    def position_encoding(self, T: int) -> Tensor | float:
        """What is added to the token embeddings of ``T`` positions: the learned table's first
        ``T`` rows, :func:`sinusoidal_positions`, or 0 (``positions="none"``)."""
        kind = self.config.positions
        if kind == "learned":
            return self.positional_embedding[:T]
        if kind == "none":
            return 0.0
        weight = self.token_embedding.weight
        return sinusoidal_positions(T, self.config.width, weight.device, weight.dtype)

    def forward_tokens(self, input_ids: Tensor, attention_mask: Tensor, word_ids: Tensor | None = None) -> Tensor:
        """Final token states.

        Parameters
        ----------
        input_ids : Tensor, shape (B, T), long
        attention_mask : Tensor, shape (B, T), bool
        word_ids : Tensor, shape (B, T), long, optional
            Word index of each token (-1 for SOT/EOT/PAD); needed only for subword tokenizers.

        Returns
        -------
        states : Tensor, shape (B, T, width)
            After the final LayerNorm.
        """
        return self._run(input_ids, attention_mask, word_ids, need_weights=False)[0]

    def mlm_logits(self, states: Tensor) -> Tensor:
        """Masked-language-model logits (B, T, vocab), decoder tied to the token embedding."""
        if not self.config.mlm_head:
            raise HiCLIPError("text: this model was built with mlm_head=false; no MLM logits")
        return F.linear(self.mlm_transform(states), self.token_embedding.weight, self.mlm_bias)

    def pool(self, states: Tensor, attention_mask: Tensor) -> Tensor:
        """Projected features (B, embed_dim) taken at each sequence's EOT token."""
        eot = (attention_mask.bool().sum(1) - 1).clamp_min(0)
        return self.text_projection(states[torch.arange(states.shape[0], device=states.device), eot])

    def forward(self, input_ids: Tensor, attention_mask: Tensor, word_ids: Tensor | None = None,
                return_affinities: bool = False, return_attention: bool = False) -> TextOutput:
        """Features (B, embed_dim), with word-level links and/or attention maps when asked for
        (:class:`TextOutput`; fields not asked for are None)."""
        need_weights = return_attention or (return_affinities and self.affinities is None)
        states, links, weights, masks = self._run(input_ids, attention_mask, word_ids, need_weights)
        output = TextOutput(self.pool(states, attention_mask))
        if return_affinities:
            if self.affinities is not None:
                token_links = torch.stack(links, 1)
            else:
                read_links = attention_links_causal_chain if self.config.causal else attention_links_chain
                token_links = read_links(torch.stack(weights, 1), masks["boundary"], self.affinity_config.eps)
            words = word_level_links(token_links, masks["word_ids"])
            output.links, output.n_words = words["links"], words["n_words"]
        if return_attention:
            output.attention = torch.stack(weights, 1)
        return output


@dataclass(frozen=True)
class _FusedText:
    """The text tower's fused-path context: neighbour graph, prior masks, attention bias."""

    graph: NeighbourGraph
    prior: TextPriorMasks
    bias: Tensor | None


def word_level_links(token_links: Tensor, word_ids: Tensor) -> dict[str, Tensor]:
    """Word-level links from token links: the link between word ``k`` and ``k+1`` is the token
    link between the last piece of ``k`` and the first piece of ``k+1`` (method.md 3).

    Parameters
    ----------
    token_links : Tensor, shape (B, L, T-1)
    word_ids : Tensor, shape (B, T), long
        -1 for tokens outside words.

    Returns
    -------
    dict
        ``links`` (B, L, max_words-1), 0 past each sentence's ``n_words - 1``;
        ``n_words`` (B,) long.
    """
    B, L, gaps = token_links.shape
    T = gaps + 1
    n_words = (word_ids.max(1).values + 1).clamp_min(0)
    max_words = int(n_words.max()) if B else 0
    if max_words < 2:
        return {"links": token_links.new_zeros(B, L, max(max_words - 1, 0)), "n_words": n_words}
    positions = torch.arange(T, device=word_ids.device).expand(B, T)
    bucket = torch.where(word_ids >= 0, word_ids, max_words)
    first = torch.full((B, max_words + 1), T, dtype=torch.long, device=word_ids.device)
    first = first.scatter_reduce(1, bucket, positions, reduce="amin")
    gap = (first[:, 1:max_words] - 1).clamp(0, T - 2)  # gap before the first piece of word k+1
    exists = torch.arange(max_words - 1, device=word_ids.device) < (n_words.unsqueeze(1) - 1)
    links = token_links.gather(2, gap.unsqueeze(1).expand(B, L, max_words - 1)) * exists.unsqueeze(1)
    return {"links": links, "n_words": n_words}


class VisionTower(_Tower):
    """Image encoder: a ViT, a Group Transformer when ``hierarchy`` is on.

    Parameters
    ----------
    config : VisionConfig
    embed_dim : int
    hierarchy : bool
        Create per-layer :class:`GridAffinity` modules and multiply attention by the group prior.
    affinity : AffinityConfig
    """

    config: VisionConfig

    def __init__(self, config: VisionConfig, embed_dim: int, hierarchy: bool, affinity: AffinityConfig) -> None:
        super().__init__(config, hierarchy, affinity)
        width, grid = config.width, config.grid
        self.conv1 = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=config.ln_eps)
        self.blocks = self._build_blocks()
        self.ln_post = nn.LayerNorm(width, eps=config.ln_eps)
        self.proj = nn.Linear(width, embed_dim, bias=False)
        self._init_weights()
        self.affinities = self._build_affinities(GridAffinity)
        self._build_prior_gate()

    def _init_weights(self) -> None:
        width = self.config.width
        nn.init.normal_(self.class_embedding, std=width**-0.5)
        nn.init.normal_(self.positional_embedding, std=width**-0.5)
        _init_blocks(self.blocks, width)
        nn.init.normal_(self.proj.weight, std=width**-0.5)

    def _layer(self, i: int, x: Tensor, links: tuple[Tensor, Tensor] | Tensor | None, need_weights: bool,
               graph: NeighbourGraph | None = None) -> tuple[Tensor, tuple[Tensor, Tensor] | Tensor | None, Tensor | None]:
        prior = gate = None
        if graph is not None:  # hiclip/fused_attention.py: flat links (B, H(W-1) + (H-1)W)
            affinity, grid, aff = self.affinities[i], self.config.grid, self.affinity_config
            links = neighbour_links(affinity, x, graph, links)
            if i in self._prior_layers:
                prior = fused_image_prior(links, grid, grid, aff.combine, aff.eps, aff.keep_reference_self)
                gate = self._gate(i)
            x, weights = self.blocks[i](x, None, prior, need_weights, fused=True, gate=gate)
            return x, links, weights
        if self.affinities is not None:
            grid = self.config.grid
            links = self.affinities[i](x, grid, grid, links, start=1)
            if i in self._prior_layers:
                aff = self.affinity_config
                prior = image_prior(links[0], links[1], aff.combine, aff.eps, aff.keep_reference_self)
                gate = self._gate(i)
        x, weights = self.blocks[i](x, None, prior, need_weights, gate=gate)
        return x, links, weights

    def _run(self, images: Tensor, need_weights: bool, patch_mask: Tensor | None = None,
             mask_token: Tensor | None = None,
             keep_layer: int | None = None) -> tuple[Tensor, list[tuple[Tensor, Tensor]], list[Tensor]]:
        size = self.config.image_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != size or images.shape[3] != size:
            raise HiCLIPError(f"vision: images must be (batch, 3, {size}, {size}), got {tuple(images.shape)}")
        x = self.conv1(images).flatten(2).transpose(1, 2)
        if patch_mask is not None and mask_token is not None:
            # SimMIM: a masked patch's embedding is replaced by the mask token before the positions
            x = torch.where(patch_mask.unsqueeze(-1), mask_token.to(x.dtype), x)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat((cls, x), 1) + self.positional_embedding.to(x.dtype))
        grid = self.config.grid
        graph = None
        if self.affinities is not None and not need_weights and fused_enabled(x.device):
            graph = grid_graph(x.shape[0], grid, grid, 1, x.device)
        links: tuple[Tensor, Tensor] | Tensor | None = None
        all_links: list = []
        all_weights: list[Tensor] = []
        for i in range(len(self.blocks)):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x, links, weights = checkpoint(self._layer, i, x, links, need_weights, graph, use_reentrant=False)
            else:
                x, links, weights = self._layer(i, x, links, need_weights, graph)
            if links is not None:
                all_links.append(links)
            if weights is not None:
                all_weights.append(weights)
            if keep_layer == i:
                break
        return x, all_links, all_weights

    def forward_patches(self, images: Tensor, patch_mask: Tensor | None = None,
                        mask_token: Tensor | None = None, layer: int | None = None) -> Tensor:
        """Patch states (B, H*W, width) after block ``layer`` (default: the last), with the
        patches where ``patch_mask`` (B, H*W) bool is true replaced by ``mask_token`` (width,)
        at the input (masked image modelling, method.md 4)."""
        stop = None if layer is None else layer % len(self.blocks)
        x = self._run(images, False, patch_mask, mask_token, stop)[0]
        return x[:, 1:]

    def forward(self, images: Tensor, return_affinities: bool = False,
                return_attention: bool = False) -> VisionOutput:
        """Features (B, embed_dim), with patch links and/or attention maps when asked for
        (:class:`VisionOutput`; fields not asked for are None)."""
        need_weights = return_attention or (return_affinities and self.affinities is None)
        x, links, weights = self._run(images, need_weights)
        output = VisionOutput(self.proj(self.ln_post(x[:, 0])))
        if return_affinities:
            grid = self.config.grid
            if self.affinities is not None:
                if isinstance(links[0], Tensor):  # flat links of the fused path
                    links = [split_grid_links(flat, grid, grid) for flat in links]
                output.h_links = torch.stack([pair[0] for pair in links], 1)
                output.v_links = torch.stack([pair[1] for pair in links], 1)
            else:
                patches = torch.stack(weights, 1)[..., 1:, 1:]
                output.h_links, output.v_links = attention_links_grid(patches, grid, grid, self.affinity_config.eps)
        if return_attention:
            output.attention = torch.stack(weights, 1)
        return output


class HiCLIP(nn.Module):
    """CLIP with hierarchy-aware attention in both towers (or a vanilla CLIP with ``hierarchy=False``).

    Parameters
    ----------
    config : HiCLIPConfig
        ``config.vision`` may be ``None`` for a text-only model.
    """

    def __init__(self, config: HiCLIPConfig) -> None:
        super().__init__()
        self.config = config
        self.text = TextTower(config.text, config.embed_dim, config.hierarchy, config.affinity)
        self.vision = (
            VisionTower(config.vision, config.embed_dim, config.hierarchy, config.affinity)
            if config.vision is not None
            else None
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))

    @property
    def hierarchy(self) -> bool:
        """Whether the hierarchy-aware attention is on."""
        return self.config.hierarchy

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each layer in the backward pass instead of storing its activations."""
        self.text.grad_checkpointing = enable
        if self.vision is not None:
            self.vision.grad_checkpointing = enable

    def compile_towers(self, **options: Any) -> None:
        """Compile each tower's layer stack with :func:`torch.compile`, in place.

        Weights, ``state_dict`` keys and outputs are unchanged (up to float rounding). The first
        call for each input shape pays the compilation (minutes on a small CPU, and a C++
        compiler is needed there); later calls run fused kernels, which removes most of the
        cost of the hierarchy's many small element-wise operations (BENCHMARKS.md).
        ``options`` go to :func:`torch.compile` (e.g. ``dynamic=True``, ``mode="max-autotune"``;
        ``mode="reduce-overhead"`` replays CUDA graphs, one per input shape: pad text batches to a
        fixed length, e.g. the context length, so that shapes stay static). Compiled towers take the
        reference path of :mod:`hiclip.attention`, which the compiler fuses itself.
        """
        for tower in (self.text, self.vision):
            if tower is not None:
                tower._run = torch.compile(tower._run, **options)  # type: ignore[method-assign]

    def _require_vision(self) -> VisionTower:
        if self.vision is None:
            raise HiCLIPError(f"model {self.config.name!r} is text-only (config.vision is null); it cannot encode images")
        return self.vision

    def encode_image(self, images: Tensor, normalize: bool = False, return_affinities: bool = False,
                     return_attention: bool = False) -> Tensor | VisionOutput:
        """Image features (B, embed_dim); a :class:`VisionOutput` when links or attention are asked for.

        Parameters
        ----------
        images : Tensor, shape (B, 3, S, S), float
            Normalised by ``hiclip.data.transforms``.
        normalize : bool
            L2-normalise the features.
        return_affinities : bool
            Also give ``h_links`` (B, L, H, W-1) and ``v_links`` (B, L, H-1, W) in ``(0, 1]``,
            non-decreasing over layers (from attention maps when the hierarchy is off).
        return_attention : bool
            Also give head-averaged attention maps (B, L, 1+H*W, 1+H*W).

        Returns
        -------
        Tensor (B, embed_dim) without either flag, else :class:`VisionOutput`.
        """
        output = self._require_vision()(images, return_affinities, return_attention)
        return _finish(output, normalize, return_affinities or return_attention)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor, normalize: bool = False,
                    word_ids: Tensor | None = None, return_affinities: bool = False,
                    return_attention: bool = False) -> Tensor | TextOutput:
        """Text features (B, embed_dim), pooled at EOT; a :class:`TextOutput` when links or
        attention are asked for.

        With ``return_affinities`` the output also holds ``links`` (B, L, max_words-1) word-level
        (0 past each sentence's ``n_words - 1``) and ``n_words`` (B,). ``word_ids`` (B, T) are
        needed for subword tokenizers; without them every token between SOT and EOT is one word.
        """
        output = self.text(input_ids, attention_mask, word_ids, return_affinities, return_attention)
        return _finish(output, normalize, return_affinities or return_attention)

    def forward(self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor,
                word_ids: Tensor | None = None) -> dict[str, Tensor]:
        """CLIP forward pass.

        Returns
        -------
        dict
            ``image_features`` (B, E) and ``text_features`` (B, E), L2-normalised, and
            ``logit_scale`` (scalar, exponentiated, clamped at ``max_logit_scale``).
            ``image_features`` is absent when ``images`` is None (text-only use).
        """
        out = {
            "text_features": self.encode_text(input_ids, attention_mask, normalize=True, word_ids=word_ids),
            "logit_scale": self.logit_scale.exp().clamp(max=self.config.max_logit_scale),
        }
        if images is not None:
            out["image_features"] = self.encode_image(images, normalize=True)
        return out


def _finish(output: TextOutput | VisionOutput, normalize: bool, full: bool) -> Tensor | TextOutput | VisionOutput:
    """Normalise the features if asked; the whole output when more than features was asked for."""
    if normalize:
        output.features = F.normalize(output.features, dim=-1)
    return output if full else output.features
