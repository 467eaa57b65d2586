"""Dataclass configurations of the HiCLIP towers and model, with a JSON round trip.

A model configuration is one JSON object::

    {"name": "hiclip-tiny", "embed_dim": 128, "hierarchy": true,
     "affinity": {"scale": null, "eps": 1e-06, "combine": "mean", ...},
     "text": {"vocab_size": 1000, "context_length": 32, "width": 128, ...},
     "vision": {"image_size": 64, "patch_size": 8, "width": 128, ...}}

``vision`` is ``null`` for a text-only model. ``hierarchy`` switches the hierarchy-aware
attention on in both towers; with it off the model is exactly a vanilla CLIP of the same size.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hiclip.errors import HiCLIPError

COMBINE_RULES = ("mean", "max", "min", "geometric")
#: Text position encodings: a learned table (a hard length limit), fixed sinusoids or none (any length).
POSITION_KINDS = ("learned", "sinusoidal", "none")
ACTIVATIONS = ("gelu", "quick_gelu")


def _check_keys(cls: type, data: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise HiCLIPError(f"{where}: unknown key(s) {unknown}; expected a subset of {sorted(known)}")


def _check_prior_layers(prior_layers: list[int] | None, layers: int, where: str) -> None:
    if prior_layers is None:
        return
    bad = [i for i in prior_layers if not isinstance(i, int) or not 0 <= i < layers]
    if bad:
        raise HiCLIPError(f"{where}.prior_layers: {bad} out of range for {layers} layers")


@dataclass
class AffinityConfig:
    """Options of the neighbour affinity and the constituent prior (method.md 1-3).

    Parameters
    ----------
    scale : float or None
        Scale ``s`` of the neighbour scores ``(q_u . k_v) * s``; ``None`` means ``1 / width``.
    eps : float
        Added inside the symmetric link ``sqrt(p_uv p_vu + eps)`` and used as the floor of the
        links before taking logs in the prior, so gradients stay finite.
    combine : str
        How the two one-turn paths of the image prior are combined:
        ``"mean"``, ``"max"``, ``"min"`` or ``"geometric"``.
    renormalize : bool
        Renormalise each attention row after multiplying by the prior (the reference code does not).
    keep_reference_self : bool
        Set ``C_ii`` of word tokens / patches to ``sqrt(1e-9) ~ 3.2e-5`` as the reference
        Tree-Transformer code does (nearly removing self-attention). Off by default (``C_ii = 1``).
    prior_gate : bool
        Not part of method.md: an extension for turning a pretrained CLIP into a HiCLIP. Each
        tower gets one learnable gate ``alpha`` in ``[0, 1]`` per layer, starting at 0, and a
        prior layer attends with ``(1 - alpha) P + alpha (P * C)`` instead of ``P * C``
        (:func:`hiclip.attention.gated_prior`): at ``alpha = 0`` the model is exactly the one
        without the prior, and fine-tuning opens the gate as far as the loss wants. The links
        (induction) are not gated. Off by default (method.md's attention); ``hiclip import-clip
        --hierarchy`` turns it on.
    """

    scale: float | None = None
    eps: float = 1e-6
    combine: str = "mean"
    renormalize: bool = False
    keep_reference_self: bool = False
    prior_gate: bool = False

    def __post_init__(self) -> None:
        if self.combine not in COMBINE_RULES:
            raise HiCLIPError(f"affinity.combine: {self.combine!r} is not one of {list(COMBINE_RULES)}")
        if not 0.0 < self.eps < 1.0:
            raise HiCLIPError(f"affinity.eps: {self.eps} must lie in (0, 1)")
        if self.scale is not None and not self.scale > 0:
            raise HiCLIPError(f"affinity.scale: {self.scale} must be positive (or null for 1/width)")


@dataclass
class TextConfig:
    """The text tower: a bidirectional (Tree-)Transformer pooled at the EOT token.

    ``vocab_size`` is normally set from the tokenizer by :func:`hiclip.create_model`.
    ``prior_layers`` lists the (0-based) layers whose attention is multiplied by the prior
    (``None``: all); every layer still carries an affinity module when the hierarchy is on.
    ``mlm_head`` adds the BERT-style masked-language-model transform used by ``mlm_logits``.
    ``causal`` adds CLIP's causal mask (token ``i`` attends to tokens ``<= i`` only); off, the
    tower is the bidirectional Tree-Transformer of method.md 3. Imported CLIPs set it (their
    weights were trained causal); with the hierarchy on, the prior multiplies the causally
    masked attention (``softmax(QK^T / sqrt(d) + causal mask) * C``, see ``hiclip.model``).
    ``positions`` is ``"learned"`` (a table of ``context_length`` rows: a hard limit on the
    tokens, SOT and EOT included), ``"sinusoidal"`` (the fixed encoding of Vaswani et al., as
    Tree-Transformer uses) or ``"none"``; the last two take any length, and ``context_length``
    is then only the tokenizer's padding length (see :attr:`max_tokens`).
    """

    vocab_size: int = 1000
    context_length: int = 32
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    activation: str = "gelu"
    ln_eps: float = 1e-5
    prior_layers: list[int] | None = None
    mlm_head: bool = True
    causal: bool = False
    positions: str = "learned"

    def __post_init__(self) -> None:
        _validate_tower(self, "text")
        if self.positions not in POSITION_KINDS:
            raise HiCLIPError(f"text.positions: {self.positions!r} is not one of {list(POSITION_KINDS)}")
        if self.vocab_size < 6:
            raise HiCLIPError(f"text.vocab_size: {self.vocab_size} is smaller than the 5 special tokens + 1")
        if self.context_length < 3:
            raise HiCLIPError(f"text.context_length: {self.context_length} leaves no room between SOT and EOT")

    @property
    def max_tokens(self) -> int | None:
        """The most tokens (SOT and EOT included) the tower takes: ``context_length`` with
        learned positions, ``None`` (no limit) otherwise."""
        return self.context_length if self.positions == "learned" else None


@dataclass
class VisionConfig:
    """The vision tower: a (Group-Transformer) ViT with a CLS token, pooled at CLS.

    Images are ``image_size x image_size``; the patch grid is ``grid x grid`` with
    ``grid = image_size // patch_size``.
    """

    image_size: int = 64
    patch_size: int = 8
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    activation: str = "gelu"
    ln_eps: float = 1e-5
    prior_layers: list[int] | None = None

    def __post_init__(self) -> None:
        _validate_tower(self, "vision")
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise HiCLIPError(
                f"vision: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )

    @property
    def grid(self) -> int:
        """Number of patches along each side."""
        return self.image_size // self.patch_size


def _validate_tower(cfg: TextConfig | VisionConfig, where: str) -> None:
    for name in ("width", "layers", "heads"):
        if getattr(cfg, name) < 1:
            raise HiCLIPError(f"{where}.{name}: must be >= 1, got {getattr(cfg, name)}")
    if cfg.width % cfg.heads:
        raise HiCLIPError(f"{where}: width {cfg.width} is not divisible by heads {cfg.heads}")
    if cfg.activation not in ACTIVATIONS:
        raise HiCLIPError(f"{where}.activation: {cfg.activation!r} is not one of {list(ACTIVATIONS)}")
    if cfg.mlp_ratio <= 0:
        raise HiCLIPError(f"{where}.mlp_ratio: must be positive")
    _check_prior_layers(cfg.prior_layers, cfg.layers, where)


@dataclass
class HiCLIPConfig:
    """The whole model: two towers, the shared embedding size and the hierarchy switch.

    ``init_logit_scale`` is ``log(1 / 0.07)``; the exponentiated scale is clamped at
    ``max_logit_scale``.
    """

    name: str = "custom"
    embed_dim: int = 128
    hierarchy: bool = True
    text: TextConfig = field(default_factory=TextConfig)
    vision: VisionConfig | None = field(default_factory=VisionConfig)
    affinity: AffinityConfig = field(default_factory=AffinityConfig)
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        if self.embed_dim < 1:
            raise HiCLIPError(f"embed_dim: must be >= 1, got {self.embed_dim}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (``vision`` is ``None`` for a text-only model)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "HiCLIPConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`HiCLIPError` naming ``where``."""
        if not isinstance(data, dict):
            raise HiCLIPError(f"{where}: expected a JSON object, got {type(data).__name__}")
        _check_keys(cls, data, where)
        data = dict(data)
        try:
            text = data.pop("text", None)
            if text is not None:
                _check_keys(TextConfig, text, f"{where}: text")
                data["text"] = TextConfig(**text)
            if "vision" in data and data["vision"] is not None:
                _check_keys(VisionConfig, data["vision"], f"{where}: vision")
                data["vision"] = VisionConfig(**data["vision"])
            if "affinity" in data:
                _check_keys(AffinityConfig, data["affinity"], f"{where}: affinity")
                data["affinity"] = AffinityConfig(**data["affinity"])
            return cls(**data)
        except HiCLIPError as error:
            if str(error).startswith(where):
                raise
            raise HiCLIPError(f"{where}: {error}") from None
        except TypeError as error:
            raise HiCLIPError(f"{where}: {error}") from None

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to a JSON string and, if ``path`` is given, write it there."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, path: str | Path) -> "HiCLIPConfig":
        """Read a configuration written by :meth:`to_json`."""
        path = Path(path)
        if not path.is_file():
            raise HiCLIPError(f"{path}: model config not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise HiCLIPError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
        return cls.from_dict(data, where=str(path))
