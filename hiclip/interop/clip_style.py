"""The open_clip-style ``(model, transform, tokenizer)`` triple, for tools written against open_clip.

    model, transform, tokenizer = hiclip.load_clip_style("checkpoints/clip-b32")   # or a CLIPModel folder
    images = torch.stack([transform(image) for image in pil_images])               # (B, 3, S, S)
    image_features = model.encode_image(images)                                    # (B, E), not normalised
    text_features = model.encode_text(tokenizer(["a photo of a dog"]))            # (B, E)

This is the triple CLIP_benchmark's model loaders return (``clip_benchmark.models.TYPE2FUNC``;
its metrics call ``tokenizer(texts).to(device)``, ``model.encode_image(images)`` and
``model.encode_text(tokens)``). :func:`load_clip_benchmark` has the loaders' signature, so
registering it makes every CLIP_benchmark task run on a hiclip checkpoint (README, "Using other
CLIPs").

The tokenizer returns a :class:`~hiclip.tokenizer.TextBatch` padded to the context length (it
has ``.to(device)``), so the model also gets the attention mask and the word ids a HiCLIP
needs; ``model.encode_text`` accepts a plain ``(B, T)`` id tensor too (the mask then ends at
each row's first end token, which is where the tokenizer put it).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hiclip.model import HiCLIP
from hiclip.tokenizer import HiCLIPTokenizer, TextBatch


class ClipStyleTokenizer:
    """``tokenizer(texts)`` -> :class:`~hiclip.tokenizer.TextBatch` padded to the context length."""

    def __init__(self, tokenizer: HiCLIPTokenizer, context_length: int) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> TextBatch:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.tokenizer(texts, context_length=context_length or self.context_length, pad_to_context=True)


class ClipStyleModel(nn.Module):
    """A :class:`~hiclip.model.HiCLIP` with open_clip's calling convention."""

    def __init__(self, model: HiCLIP, eot_token_id: int) -> None:
        super().__init__()
        self.model = model
        self.eot_token_id = eot_token_id
        self.logit_scale = model.logit_scale

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        """(B, 3, S, S) normalised pixels -> (B, E) features."""
        return self.model.encode_image(images, normalize=normalize)

    def encode_text(self, text: TextBatch | Tensor, normalize: bool = False) -> Tensor:
        """A :class:`~hiclip.tokenizer.TextBatch` (or (B, T) ids) -> (B, E) features."""
        if isinstance(text, TextBatch):
            return self.model.encode_text(text.input_ids, text.attention_mask, normalize=normalize,
                                          word_ids=text.word_ids)
        ids = text.long()
        positions = torch.arange(ids.shape[1], device=ids.device)
        is_end = ids == self.eot_token_id
        end = torch.where(is_end.any(1), is_end.int().argmax(1), ids.shape[1] - 1)
        return self.model.encode_text(ids, positions <= end.unsqueeze(1), normalize=normalize)

    def forward(self, images: Tensor | None, text: TextBatch | Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        """open_clip's ``(image_features, text_features, logit_scale)``, features normalised."""
        image = self.encode_image(images, normalize=True) if images is not None else None
        scale = self.model.logit_scale.exp().clamp(max=self.model.config.max_logit_scale)
        return image, self.encode_text(text, normalize=True), scale


def _is_hf_folder(path: Path) -> bool:
    import json

    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type", "").startswith("clip")
    except (ValueError, AttributeError):
        return False


def load_clip_style(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[ClipStyleModel, Callable[..., Tensor], ClipStyleTokenizer]:
    """``(model, transform, tokenizer)`` of a hiclip checkpoint or a transformers CLIPModel folder
    (imported in memory, :func:`hiclip.interop.hf_clip.import_clip`), in eval mode on ``device``.

    ``transform`` is hiclip's evaluation transform at the model's image size (PIL image ->
    (3, S, S) tensor: shorter side resized, centre crop, CLIP normalisation).
    """
    from hiclip.checkpoint import load
    from hiclip.data.transforms import eval_transform
    from hiclip.errors import HiCLIPError

    folder = Path(path)
    if _is_hf_folder(folder):
        from hiclip.interop.hf_clip import import_clip

        imported = import_clip(folder)
        model, tokenizer = imported.model, imported.tokenizer
    else:
        model, tokenizer = load(folder)
    if model.config.vision is None:
        raise HiCLIPError(f"{folder}: a text-only model has no image transform")
    wrapped = ClipStyleModel(model, tokenizer.eot_token_id).to(device).eval()
    return (wrapped, eval_transform(model.config.vision.image_size),
            ClipStyleTokenizer(tokenizer, model.config.text.context_length))


def load_clip_benchmark(model_name: str = "", pretrained: str = "", cache_dir: str | None = None,
                        device: Any = "cpu") -> tuple[ClipStyleModel, Callable[..., Tensor], ClipStyleTokenizer]:
    """A CLIP_benchmark model loader (``clip_benchmark.models.TYPE2FUNC``): ``pretrained`` (or,
    when it is empty, ``model_name``) is the checkpoint or CLIPModel folder; ``cache_dir`` is unused."""
    return load_clip_style(pretrained or model_name, device)
