"""Run a model on one image and caption and keep what the pictures need.

It turns a ``(model, tokenizer)`` pair from ``hiclip.load`` into plain arrays for the pictures
(batched link extraction itself is ``induction.affinities``, shared with ``hiclip induce``):

* :class:`TextAnalysis`: the words and their per-layer links ``(L, n-1)``, with the induced
  trees and the merged constituents at a layer (``viz.links``);
* :class:`ImageAnalysis`: the image as the model saw it and the grid links ``h (L, H, W-1)``,
  ``v (L, H-1, W)``, with the per-layer groups and segment tree.

Links are rounded as ``hiclip induce`` stores them, and trees and groups come from the same
functions (``induction.induce``), so a sample shown here is the record ``hiclip induce`` writes.
* :func:`rank_captions`: candidate captions ranked by the model's image-text similarity.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import nltk
import numpy as np
import torch
from PIL import Image

from hiclip.errors import HiCLIPError
from hiclip.tokenizer import TextTooLong, split_words
from induction import text_trees
from induction.affinities import image_links, image_tensor, model_device, text_links
from induction.induce import GroupOptions, TreeOptions, caption_predictions, image_prediction
from induction.predictions import CaptionPrediction, ImagePrediction, round_links
from viz.links import layer_thresholds, merge_tree

DISPLAY_SIZE = 256


@dataclass
class TextAnalysis:
    """One caption through the text tower.

    Attributes
    ----------
    caption : str
    words : list of str
        The words the model saw (whitespace tokens, truncated to the context length).
    links : ndarray of float64, shape (L, n-1)
        ``links[l, k]``: layer-``l`` link between word ``k`` and ``k+1``.
    """

    caption: str
    words: list[str]
    links: np.ndarray

    @property
    def n_layers(self) -> int:
        return int(self.links.shape[0])

    def parse(self, algorithm: str = "tree_transformer", start_layer: int | None = None,
              **params) -> text_trees.InducedTree:
        """The induced tree, as ``hiclip induce`` makes it (``induction.induce.TreeOptions``):
        Tree-Transformer's parser (from ``start_layer`` down; ``params`` as its other fields) or
        the ``"binary"`` lowest-link tree."""
        if algorithm not in text_trees.ALGORITHMS:
            raise HiCLIPError(f"unknown tree algorithm {algorithm!r}: use tree_transformer or binary")
        options = TreeOptions(algorithm=algorithm, start_layer=start_layer, **params)
        return options.induce([self.links], [self.words], algorithm)[0]

    def caption_prediction(self, options: TreeOptions | None = None) -> CaptionPrediction:
        """This caption as a prediction record entry (every algorithm's tree), as ``hiclip induce``
        writes it."""
        return caption_predictions([(self.words, self.links)], options or TreeOptions(), [0])[0]

    def group_counts(self, threshold: float | None = None, quantile: float | None = None) -> list[int]:
        """Word groups at each layer: runs of words linked at or above the layer's threshold
        (``viz.links.layer_thresholds``), a join kept at every deeper layer, as :meth:`merged_at` builds them."""
        if len(self.words) < 2:
            return [1] * self.n_layers
        thresholds = layer_thresholds(self.links, threshold, quantile)
        joined = np.logical_or.accumulate(self.links >= thresholds[:, None], axis=0)
        return [int((~row).sum()) + 1 for row in joined]

    def merged_at(self, layer: int, threshold: float | None = None,
                  quantile: float | None = None) -> nltk.Tree:
        """The constituents already merged at ``layer`` (see :func:`viz.links.merge_tree`)."""
        if len(self.words) < 2:
            return nltk.Tree("...", list(self.words))
        return merge_tree(self.words, self.links, layer, threshold, quantile)


@dataclass
class ImageAnalysis:
    """One image through the vision tower.

    Attributes
    ----------
    view : ndarray of float64, shape (S, S, 3) in [0, 1]
        The image as the model saw it (the evaluation transform's central square crop), at
        ``DISPLAY_SIZE`` pixels for drawing.
    h : ndarray of float64, shape (L, H, W-1)
    v : ndarray of float64, shape (L, H-1, W)
    """

    view: np.ndarray
    h: np.ndarray
    v: np.ndarray

    @property
    def n_layers(self) -> int:
        return int(self.h.shape[0])

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.h.shape[1]), int(self.h.shape[2]) + 1

    def prediction(self, tau: float = 0.5, quantile: bool = False) -> ImagePrediction:
        """Groups of every layer and the segment tree, as ``hiclip induce`` makes them
        (``induction.induce.image_prediction``)."""
        return image_prediction(self.h, self.v, GroupOptions(tau=tau, quantile=quantile))

    def groups(self, tau: float = 0.5, quantile: bool = False) -> np.ndarray:
        """Patch groups at every layer, int64 ``(L, H, W)``."""
        return self.prediction(tau, quantile).groups

    def segment_tree(self, tau: float = 0.5, quantile: bool = False) -> nx.DiGraph:
        """The segment tree of :meth:`groups` (parent -> child, node attrs ``layer``/``patches``)."""
        return self.prediction(tau, quantile).tree()


def informative_layer(counts: Sequence[int], n_units: int) -> int:
    """The layer whose number of groups is closest, on a log scale, to sqrt(``n_units``): halfway
    between every unit alone (the first layers) and one group (the top layers), where the
    hierarchy shows most. ``counts[l]`` is the number of groups at layer ``l``; ties go lower."""
    if not counts:
        return 0
    target = 0.5 * np.log(max(n_units, 1))
    distance = [abs(np.log(max(c, 1)) - target) for c in counts]
    return int(np.argmin(distance))


def display_view(image: Image.Image, size: int = DISPLAY_SIZE) -> np.ndarray:
    """What the model sees, at ``size`` pixels: the central square crop of the evaluation
    transform (shorter side resized, centre cropped), float64 ``(size, size, 3)`` in [0, 1]."""
    from hiclip.data import transforms

    view = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size)])(image.convert("RGB"))
    return np.asarray(view, dtype=np.float64) / 255.0


def analyse_text(model, tokenizer, caption: str, words: str = "whitespace") -> TextAnalysis:
    """Word links of one caption, read whole, its words split as ``words`` says
    (:func:`hiclip.tokenizer.split_words`; ``"treebank"`` for raw typed text). Raises
    ``HiCLIPError`` for an empty caption or one over a learned-position model's limit."""
    split = split_words(caption, words)
    if not split:
        raise HiCLIPError("the caption is empty")
    try:
        (words_read, links), = text_links(model, tokenizer, [split])
    except TextTooLong as error:
        raise HiCLIPError(f"the caption has {error.n_tokens} tokens with SOT and EOT, over this model's limit of "
                          f"{error.limit} (its learned positions' context length)") from None
    return TextAnalysis(caption, words_read, round_links(links))


def fitting_captions(model, tokenizer, captions: Sequence[str]) -> tuple[list[str], int]:
    """The captions a model can read whole, and how many were left out as over its limit."""
    over = {i for i, _ in tokenizer.over_limit(list(captions), model.config.text.max_tokens)}
    return [c for i, c in enumerate(captions) if i not in over], len(over)


def analyse_image(model, image: Image.Image) -> ImageAnalysis:
    """Grid links of one image; raises ``HiCLIPError`` for a text-only model."""
    (h, v), = image_links(model, [image])
    return ImageAnalysis(display_view(image), round_links(h), round_links(v))


@torch.no_grad()
def rank_captions(model, tokenizer, image: Image.Image, captions: Sequence[str],
                  batch_size: int = 64) -> list[tuple[str, float]]:
    """``(caption, cosine similarity)`` for every caption, best first (stable for ties)."""
    captions = [c for c in captions if c and c.strip()]
    if not captions:
        return []
    device = model_device(model)
    pixels = image_tensor(image, model.config.vision.image_size)[None].to(device)
    image_features = model.encode_image(pixels, normalize=True)[0]
    scores: list[float] = []
    for start in range(0, len(captions), batch_size):
        batch = tokenizer(list(captions[start:start + batch_size])).to(device)
        text_features = model.encode_text(batch.input_ids, batch.attention_mask, normalize=True,
                                          word_ids=batch.word_ids)
        scores.extend((text_features @ image_features).float().cpu().tolist())
    order = sorted(range(len(captions)), key=lambda i: -scores[i])
    return [(captions[i], float(scores[i])) for i in order]
