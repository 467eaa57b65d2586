"""Per-layer link affinities of a model, batched, as plain numpy arrays.

The model gives the same shapes with the hierarchy on (its affinity modules) or off (links read
from attention maps, method.md section 5), so everything downstream treats both alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from hiclip.errors import HiCLIPError
from hiclip.tokenizer import TextTooLong


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def image_tensor(image: Image.Image, image_size: int) -> torch.Tensor:
    """The evaluation transform (shorter side resized, centre crop, CLIP normalisation): (3, S, S)."""
    from hiclip.data import transforms

    return transforms.eval_transform(image_size)(image.convert("RGB"))


@dataclass
class SentenceLinks:
    """One sentence through the text tower.

    Attributes
    ----------
    words : list of str
        The words of the sentence as given (all of them: the model reads every word).
    links : ndarray of float64, shape (L, n_words - 1)
        Values in (0, 1], non-decreasing over layers.
    n_tokens : int
        Tokenizer pieces of the sentence, SOT and EOT included.
    n_unknown : int
        Words with a piece outside the vocabulary.
    """

    words: list[str]
    links: np.ndarray
    n_tokens: int
    n_unknown: int


def over_limit(model, tokenizer, sentences: Sequence[Sequence[str] | str]) -> list[tuple[int, int]]:
    """``(index, n_tokens)`` of the sentences longer than the model takes (its learned
    positions' context length, SOT and EOT included); empty for a model without a limit."""
    return tokenizer.over_limit([s.split() if isinstance(s, str) else list(s) for s in sentences],
                                model.config.text.max_tokens)


@torch.no_grad()
def sentence_links(model, tokenizer, sentences: Sequence[Sequence[str] | str], batch_size: int = 128,
                   progress=None) -> list[SentenceLinks]:
    """Word links of many sentences, each read whole.

    Parameters
    ----------
    model : HiCLIP
    tokenizer : HiCLIPTokenizer
    sentences : sequence of str or of token lists
        Whitespace-tokenised sentences (a str is split on whitespace).
    batch_size : int
    progress : callable, optional
        Called with the number of sentences done after each batch (e.g. ``tqdm.update``).

    Raises
    ------
    hiclip.tokenizer.TextTooLong
        For a sentence over the model's limit (``index`` is its position in ``sentences``);
        :func:`over_limit` finds them all beforehand.
    """
    device = model_device(model)
    limit = model.config.text.max_tokens
    words_list = [s.split() if isinstance(s, str) else list(s) for s in sentences]
    out: list[SentenceLinks] = []
    for start in range(0, len(words_list), batch_size):
        chunk = words_list[start:start + batch_size]
        for i, words in enumerate(chunk):
            if not words:
                raise HiCLIPError(f"sentence {start + i + 1} is empty")
        try:
            batch = tokenizer(chunk, context_length=limit).to(device)
        except TextTooLong as error:
            raise TextTooLong(start + error.index, error.n_tokens, error.limit) from None
        output = model.encode_text(batch.input_ids, batch.attention_mask, word_ids=batch.word_ids,
                                   return_affinities=True)
        links = output.links.float().cpu().numpy().astype(np.float64)
        for i in range(len(chunk)):
            n = int(batch.n_words[i])
            out.append(SentenceLinks(list(chunk[i][:n]), links[i, :, : max(n - 1, 0)], batch.n_tokens[i],
                                     batch.n_unknown[i]))
        if progress is not None:
            progress(len(chunk))
    return out


def text_links(model, tokenizer, sentences: Sequence[Sequence[str] | str], batch_size: int = 128,
               progress=None) -> list[tuple[list[str], np.ndarray]]:
    """``(words, links)`` of :func:`sentence_links`."""
    return [(s.words, s.links) for s in sentence_links(model, tokenizer, sentences, batch_size, progress)]


@torch.no_grad()
def image_links(model, images: Sequence[Image.Image], batch_size: int = 64,
                progress=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patch-grid links of many images.

    Returns
    -------
    list of (h, v)
        float64 arrays ``h`` (L, H, W-1) joining (r, c)-(r, c+1) and ``v`` (L, H-1, W) joining
        (r, c)-(r+1, c), values in (0, 1], non-decreasing over layers.
    """
    if model.config.vision is None:
        raise HiCLIPError(f"model {model.config.name!r} is text-only: it has no image links")
    device = model_device(model)
    size = model.config.vision.image_size
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        pixels = torch.stack([image_tensor(im, size) for im in chunk]).to(device)
        output = model.encode_image(pixels, return_affinities=True)
        h = output.h_links.float().cpu().numpy().astype(np.float64)
        v = output.v_links.float().cpu().numpy().astype(np.float64)
        out.extend((h[i], v[i]) for i in range(h.shape[0]))
        if progress is not None:
            progress(len(chunk))
    return out
