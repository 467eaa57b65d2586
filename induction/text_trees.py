"""Constituency trees from per-layer word link affinities (method.md section 5).

Input for one sentence of n words: ``links`` of shape (L, n - 1), float in (0, 1], where
``links[l, k]`` is the link between words k and k + 1 at layer l (0 = first layer), non-decreasing
over l. Layers are indexed from 0 throughout, as in the Tree-Transformer code's ``break_probs``
rows: its ``min_layer = 2`` is the third layer and its start layer 9 the top of its 10 layers.

Tree-Transformer top-down parser (``tree_transformer_parse``; yaushian/Tree-Transformer
``parse.py``), for a span of words with links ``b`` at the current layer:

1. a span of two words is a constituent of those two words;
2. otherwise find the weakest link (first minimum). If it is above the break threshold of the
   current layer: at the minimum layer the span is emitted flat (one n-ary constituent), else the
   same span is parsed again one layer lower (never below the minimum layer);
3. otherwise split at that link. Each side of two or more words is parsed one layer lower
   (not below the minimum layer) if all its links at the current layer exceed the descend
   threshold of the current layer, else at the same layer; a one-word side is a leaf.

Parsing starts at ``start_layer`` (default: the top layer, L - 1) on the whole sentence. The
minimum layer defaults to 2; when the model has fewer layers it is clamped to ``start_layer``
(the value actually used is recorded). Thresholds are absolute (default break 0.8, descend 0.7,
the same at every layer) or per-layer quantiles (``quantile_thresholds``): the threshold of
layer l is the q-quantile (numpy ``quantile``, linear interpolation) of layer l's links pooled
over the corpus (scope ``corpus``) or over the sentence being parsed (scope ``sentence``); this
gives a threshold that means the same at every layer despite the saturation of links with depth.

Parameter-free binary variant (``lowest_link_parse``): recursively split each span at the link
with the lowest affinity summed over layers (the link that merges last); ties go to the leftmost.

Every parser returns an ``InducedTree``: an unlabeled ``nltk.Tree`` (root ``S``, constituents
``X``, leaves the words), its span set (all constituents of two or more words, whole sentence
included, ``(start, end)`` end exclusive), a PTB bracket string, and an ``algorithm`` dict (name
and parameters) for the prediction JSONL.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import nltk
import numpy as np

from hiclip.data.trees import escape_leaf
from hiclip.errors import HiCLIPError
from induction.spans import Span
from induction.thresholds import layer_thresholds

ALGORITHMS = ("tree_transformer", "binary")
QUANTILE_SCOPES = ("corpus", "sentence")
DEFAULT_BREAK_THRESHOLD = 0.8
DEFAULT_DESCEND_THRESHOLD = 0.7
DEFAULT_MIN_LAYER = 2

Node = list  # nested lists of word indices: [0, [1, 2]] is (w0 (w1 w2))


@dataclass(frozen=True)
class LayerThresholds:
    """Break and descend thresholds for every layer.

    Attributes
    ----------
    split : numpy.ndarray
        Shape (L,), float: a span whose weakest link exceeds ``split[l]`` is not split at layer l.
    descend : numpy.ndarray
        Shape (L,), float: a side whose links all exceed ``descend[l]`` is parsed one layer lower.
    params : dict
        How they were made, for the ``algorithm`` record (JSON-ready).
    """

    split: np.ndarray
    descend: np.ndarray
    params: dict = field(default_factory=dict)


def absolute_thresholds(n_layers: int, break_threshold: float = DEFAULT_BREAK_THRESHOLD,
                        descend_threshold: float = DEFAULT_DESCEND_THRESHOLD) -> LayerThresholds:
    """The same break and descend thresholds at every one of ``n_layers`` layers."""
    return LayerThresholds(np.full(n_layers, float(break_threshold)), np.full(n_layers, float(descend_threshold)),
                           {"thresholds": "absolute", "break_threshold": float(break_threshold),
                            "descend_threshold": float(descend_threshold)})


def quantile_thresholds(links_list: Sequence[np.ndarray], break_quantile: float, descend_quantile: float,
                        scope: str = "corpus") -> LayerThresholds:
    """Per-layer thresholds at quantiles of each layer's link distribution.

    Parameters
    ----------
    links_list : sequence of numpy.ndarray
        The link arrays, each (L, n_i - 1), over which each layer's links are pooled (the corpus,
        or one sentence for scope ``sentence``).
    break_quantile, descend_quantile : float
        Quantiles in [0, 1].
    scope : {"corpus", "sentence"}
        Recorded in ``params`` only (the pooling is what ``links_list`` holds).

    Returns
    -------
    LayerThresholds
        ``split[l]`` / ``descend[l]`` = the quantiles of layer l's pooled links
        (``induction.thresholds.layer_thresholds``); with no links at all (only one-word
        sentences) every layer gets ``induction.thresholds.NO_LINKS``.
    """
    for name, q in (("break", break_quantile), ("descend", descend_quantile)):
        if not 0.0 <= q <= 1.0:
            raise HiCLIPError(f"{name} quantile must be in [0, 1], got {q}")
    if scope not in QUANTILE_SCOPES:
        raise HiCLIPError(f"unknown quantile scope {scope!r}: use {' or '.join(QUANTILE_SCOPES)}")
    arrays = [_as_links(x) for x in links_list]
    if not arrays:
        raise HiCLIPError("no link arrays to take quantiles of")
    n_layers = arrays[0].shape[0]
    if any(a.shape[0] != n_layers for a in arrays):
        raise HiCLIPError("link arrays have different numbers of layers")
    pooled = np.concatenate(arrays, axis=1)
    split = layer_thresholds(pooled, break_quantile, quantile=True)
    descend = layer_thresholds(pooled, descend_quantile, quantile=True)
    return LayerThresholds(split, descend, {
        "thresholds": "quantile", "scope": scope, "break_quantile": float(break_quantile),
        "descend_quantile": float(descend_quantile),
        "break_threshold_per_layer": [round(float(x), 6) for x in split],
        "descend_threshold_per_layer": [round(float(x), 6) for x in descend]})


@dataclass
class InducedTree:
    """A tree induced from links.

    Attributes
    ----------
    node : list or int
        The tree as nested lists of word indices (``[0, [1, 2]]`` is ``(w0 (w1 w2))``); an int
        for a one-word sentence.
    words : list of str
        The leaves.
    algorithm : dict
        ``{"name": ..., **params}``, JSON-ready.

    The ``tree`` (``nltk.Tree``: root ``S``, constituents ``X``), ``spans`` (all constituents of
    two or more words, whole sentence included, end exclusive) and ``bracket`` (one-line PTB
    string) views are built on first use, so inducing many trees stays cheap.
    """

    node: Node | int
    words: list[str]
    algorithm: dict

    @cached_property
    def spans(self) -> frozenset[Span]:
        out: set[Span] = set()

        def walk(item: Node) -> tuple[int, int]:
            first = item[0]
            last = item[-1]
            start = first if isinstance(first, int) else walk(first)[0]
            for child in item[1:-1]:
                if not isinstance(child, int):
                    walk(child)
            end = last + 1 if isinstance(last, int) else walk(last)[1]
            out.add((start, end))
            return start, end

        if not isinstance(self.node, int):
            walk(self.node)
        return frozenset(out)

    @cached_property
    def tree(self) -> nltk.Tree:
        words = self.words

        def build(item: Node, label: str) -> nltk.Tree:
            return nltk.Tree(label, [words[c] if isinstance(c, int) else build(c, "X") for c in item])

        return nltk.Tree("S", [words[self.node]]) if isinstance(self.node, int) else build(self.node, "S")

    @property
    def bracket(self) -> str:
        """One-line PTB bracket string, e.g. ``(S (X a man) (X riding (X a horse)))``."""
        words = [escape_leaf(w) for w in self.words]

        def fmt(item: Node, label: str) -> str:
            return f"({label} " + " ".join(words[c] if isinstance(c, int) else fmt(c, "X") for c in item) + ")"

        return f"(S {words[self.node]})" if isinstance(self.node, int) else fmt(self.node, "S")


def _as_links(links: np.ndarray | Sequence) -> np.ndarray:
    """Validate one sentence's links: 2-D (layers, n_words - 1), finite, within [0, 1]."""
    arr = np.asarray(links, dtype=np.float64)
    if arr.ndim != 2:
        raise HiCLIPError(f"links must have shape (layers, n_words - 1), got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise HiCLIPError("links have no layers")
    if arr.size and not (np.isfinite(arr).all() and 0.0 <= arr.min() and arr.max() <= 1.0 + 1e-6):
        raise HiCLIPError("links must be finite values in (0, 1]")
    return arr


def _words(links: np.ndarray, tokens: Sequence[str] | None) -> list[str]:
    n = links.shape[1] + 1
    if tokens is None:
        return [str(i) for i in range(n)]
    if len(tokens) != n:
        raise HiCLIPError(f"{len(tokens)} tokens but links for {n} words (shape {links.shape})")
    return [str(t) for t in tokens]


def _tree_transformer(rows: list[list[float]], split: list[float], descend: list[float], layer: int,
                      min_layer: int, s: int, e: int) -> Node:
    """Words s..e inclusive (e - s >= 1 links ``rows[l][s:e]``) -> nested node.

    Plain Python lists: for caption-length spans this is several times faster than numpy calls.
    """
    if e - s == 1:
        return [s, e]
    while True:
        probs = rows[layer][s:e]
        point = min(range(len(probs)), key=probs.__getitem__)  # first minimum, like np.argmin
        if probs[point] > split[layer]:
            if layer == min_layer:
                return list(range(s, e + 1))
            layer = max(layer - 1, min_layer)
            continue
        break
    children: Node = []
    for ws, we, side in ((s, s + point, probs[:point]), (s + point + 1, e, probs[point + 1:])):
        if we == ws:
            children.append(ws)
        else:
            next_layer = max(layer - 1, min_layer) if min(side) > descend[layer] else layer
            children.append(_tree_transformer(rows, split, descend, next_layer, min_layer, ws, we))
    return children


def tree_transformer_parse(links: np.ndarray | Sequence, tokens: Sequence[str] | None = None, *,
                           start_layer: int | None = None, min_layer: int = DEFAULT_MIN_LAYER,
                           break_threshold: float = DEFAULT_BREAK_THRESHOLD,
                           descend_threshold: float = DEFAULT_DESCEND_THRESHOLD,
                           thresholds: LayerThresholds | None = None) -> InducedTree:
    """Tree-Transformer's top-down parser (module docstring).

    Parameters
    ----------
    links : array-like
        Shape (L, n - 1), float in (0, 1], non-decreasing over layers.
    tokens : sequence of str, optional
        The n words (default: ``"0" .. "n-1"``).
    start_layer : int, optional
        0-based layer to start at (default L - 1, the top).
    min_layer : int
        0-based minimum layer (default 2, as in Tree-Transformer); clamped to ``start_layer``.
    break_threshold, descend_threshold : float
        Absolute thresholds (used when ``thresholds`` is None).
    thresholds : LayerThresholds, optional
        Per-layer thresholds (e.g. from ``quantile_thresholds``), shape (L,) each.

    Returns
    -------
    InducedTree

    Examples
    --------
    >>> links = [[0.3, 0.2, 0.3], [0.9, 0.5, 0.9], [0.95, 0.6, 0.95]]
    >>> tree_transformer_parse(links, ["a", "man", "a", "horse"], min_layer=0).bracket
    '(S (X a man) (X a horse))'
    """
    b = _as_links(links)
    words = _words(b, tokens)
    n_layers = b.shape[0]
    start = n_layers - 1 if start_layer is None else int(start_layer)
    if not 0 <= start < n_layers:
        raise HiCLIPError(f"start layer {start} outside 0..{n_layers - 1} (0-based)")
    if min_layer < 0:
        raise HiCLIPError(f"minimum layer must be >= 0, got {min_layer}")
    low = min(int(min_layer), start)
    if thresholds is None:
        thresholds = absolute_thresholds(n_layers, break_threshold, descend_threshold)
    if thresholds.split.shape != (n_layers,) or thresholds.descend.shape != (n_layers,):
        raise HiCLIPError(f"thresholds for {thresholds.split.shape[0]} layers, links have {n_layers}")
    algorithm = {"name": "tree_transformer", "start_layer": start, "min_layer": low, "layer_index": "0-based",
                 **thresholds.params}
    n = len(words)
    node: Node | int = 0 if n == 1 else _tree_transformer(
        b.tolist(), thresholds.split.tolist(), thresholds.descend.tolist(), start, low, 0, n - 1)
    return InducedTree(node, words, algorithm)


def _lowest_link(total: list[float], s: int, e: int) -> Node | int:
    """Words s..e inclusive -> binary node splitting at the smallest summed link (first minimum)."""
    if s == e:
        return s
    point = min(range(s, e), key=total.__getitem__)
    return [_lowest_link(total, s, point), _lowest_link(total, point + 1, e)]


def lowest_link_parse(links: np.ndarray | Sequence, tokens: Sequence[str] | None = None) -> InducedTree:
    """Parameter-free binary tree: split recursively at the link with the lowest summed affinity.

    Parameters
    ----------
    links : array-like
        Shape (L, n - 1), float in (0, 1].
    tokens : sequence of str, optional
        The n words.

    Examples
    --------
    >>> lowest_link_parse([[0.9, 0.1, 0.5]], ["a", "b", "c", "d"]).bracket
    '(S (X a b) (X c d))'
    """
    b = _as_links(links)
    words = _words(b, tokens)
    total = b.sum(axis=0).tolist()
    return InducedTree(_lowest_link(total, 0, len(words) - 1), words, {"name": "binary", "score": "sum over layers"})


def induce_trees(links_list: Sequence[np.ndarray | Sequence], tokens_list: Sequence[Sequence[str]] | None = None,
                 algorithm: str = "tree_transformer", *, start_layer: int | None = None,
                 min_layer: int = DEFAULT_MIN_LAYER, break_threshold: float = DEFAULT_BREAK_THRESHOLD,
                 descend_threshold: float = DEFAULT_DESCEND_THRESHOLD,
                 quantiles: tuple[float, float] | None = None, quantile_scope: str = "corpus") -> list[InducedTree]:
    """Induce one tree per sentence.

    Parameters
    ----------
    links_list : sequence of array-like
        One (L, n_i - 1) array per sentence.
    tokens_list : sequence of sequences of str, optional
        The words of each sentence.
    algorithm : {"tree_transformer", "binary"}
    start_layer, min_layer, break_threshold, descend_threshold
        Tree-Transformer parameters (``tree_transformer_parse``).
    quantiles : (float, float), optional
        ``(break_quantile, descend_quantile)``: per-layer quantile thresholds instead of the
        absolute ones, pooled over all sentences (``quantile_scope="corpus"``) or per sentence.

    Returns
    -------
    list of InducedTree
    """
    if algorithm not in ALGORITHMS:
        raise HiCLIPError(f"unknown tree algorithm {algorithm!r}: use {' or '.join(ALGORITHMS)}")
    if quantiles is not None and quantile_scope not in QUANTILE_SCOPES:
        raise HiCLIPError(f"unknown quantile scope {quantile_scope!r}: use {' or '.join(QUANTILE_SCOPES)}")
    if tokens_list is not None and len(tokens_list) != len(links_list):
        raise HiCLIPError(f"{len(tokens_list)} token lists for {len(links_list)} link arrays")
    arrays = [_as_links(x) for x in links_list]
    tokens_of = (lambda i: tokens_list[i]) if tokens_list is not None else (lambda i: None)
    if algorithm == "binary":
        return [lowest_link_parse(a, tokens_of(i)) for i, a in enumerate(arrays)]
    shared: dict[int, LayerThresholds] = {}  # absolute or corpus-quantile thresholds per layer count
    if quantiles is not None and quantile_scope == "corpus" and arrays:
        corpus = quantile_thresholds(arrays, *quantiles, scope="corpus")
        shared[corpus.split.shape[0]] = corpus
    out = []
    for i, a in enumerate(arrays):
        if quantiles is not None and quantile_scope == "sentence":
            thresholds = quantile_thresholds([a], *quantiles, scope="sentence")
        else:
            n_layers = a.shape[0]
            if n_layers not in shared:
                shared[n_layers] = absolute_thresholds(n_layers, break_threshold, descend_threshold)
            thresholds = shared[n_layers]
        out.append(tree_transformer_parse(a, tokens_of(i), start_layer=start_layer, min_layer=min_layer,
                                          thresholds=thresholds))
    return out
