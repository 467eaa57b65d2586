"""Trees -> sets of unlabeled spans under the two scoring conventions of method.md section 6.

A span is ``(start, end)``: token indices, ``end`` exclusive, counted over the tokens the
convention keeps. Both conventions strip labels, and collapse unary chains (a chain of nodes over
the same tokens is one span, because spans are collected in a set).

``standard`` (Kim et al. 2019 compound-pcfg; also PRPN, ON-LSTM, Tree-Transformer)
    * Tokens dropped: ``-NONE-`` empty elements and punctuation. Where the gold tree has POS tags
      the decision is by tag: ``DROPPED_TAGS`` = ``-NONE-`` and ``. , : `` '' -LRB- -RRB- $ #``.
      compound-pcfg's ``process_ptb.py`` keeps only the 36 PRPN ``word_tags``, so on the Penn
      Treebank it drops exactly these tags, including the currency/number tags ``$`` and ``#``
      (``$ 100 million`` is scored as ``100 million``); we do the same. We also drop the
      OntoNotes-style punctuation tags ``HYPH`` and ``NFP`` that spaCy and newer parsers emit.
      Without tags (unlabeled or predicted trees) a word is punctuation when
      ``is_punctuation_word`` says so (only punctuation characters, or a PTB bracket/currency word).
    * Constituents left without tokens disappear; what remains is re-spanned over the kept
      tokens, so unary chains created by the removal collapse too.
    * Single-word spans and the whole-sentence span are discarded.
    * A predicted tree is reduced to the same kept-token sequence: its leaves are aligned to the
      gold sentence, the gold sentence's drop decisions are applied to them, and every predicted
      constituent becomes the span of the kept tokens it covers (see ``project_spans``).
``vgnsl`` (Shi et al. 2019)
    * Every token is kept (punctuation included; only ``-NONE-`` empty elements, which are not
      words, are dropped).
    * Every bracket of two or more tokens is a span, including the whole-caption span.
    * This reproduces the VG-NSL reference trees: on the 80 VG-NSL test captions in
      ``joint_coco_vgnsl_overlap.json`` the spans of ``benepar_en2_tree`` under this convention
      equal the spans of ``vgnsl_gold_unlabeled_tree`` (tested in ``tests/test_tree_scoring.py``).
"""
from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import nltk
import numpy as np

from hiclip.errors import HiCLIPError

Span = tuple[int, int]

EMPTY_ELEMENT_TAG = "-NONE-"
PUNCTUATION_TAGS = frozenset({".", ",", ":", "``", "''", "-LRB-", "-RRB-"})
CURRENCY_TAGS = frozenset({"$", "#"})
ONTONOTES_PUNCTUATION_TAGS = frozenset({"HYPH", "NFP"})
DROPPED_TAGS = frozenset({EMPTY_ELEMENT_TAG}) | PUNCTUATION_TAGS | CURRENCY_TAGS | ONTONOTES_PUNCTUATION_TAGS

# Words treated as punctuation without tags: compound-pcfg's punctuation_words, PTB bracket and
# currency words, plus any word made only of Unicode punctuation (except the characters below,
# which the PTB tags as words: "&" CC, "%" NN, ...).
PUNCTUATION_WORDS = frozenset({
    ".", ",", ":", ";", "?", "!", "-", "--", "...", "``", "''", "`", "'", '"',
    "-LRB-", "-RRB-", "-LCB-", "-RCB-", "-LSB-", "-RSB-", "(", ")", "[", "]", "{", "}",
    "$", "#", "C$", "A$", "US$", "HK$", "S$",
})
_WORD_CHARS_NOT_PUNCTUATION = frozenset("&%@*/\\_")


def is_punctuation_word(word: str) -> bool:
    """Whether a word (without a POS tag) counts as punctuation under the standard convention.

    True for the words in ``PUNCTUATION_WORDS`` and for words made only of Unicode punctuation
    characters (category P*) other than ``& % @ * / \\ _``. ``bat.`` or ``'s`` are words.
    """
    if word in PUNCTUATION_WORDS:
        return True
    return bool(word) and all(
        unicodedata.category(c).startswith("P") and c not in _WORD_CHARS_NOT_PUNCTUATION for c in word)


@dataclass(frozen=True)
class Convention:
    """A named span convention (see the module docstring).

    Attributes
    ----------
    name : str
        ``standard`` or ``vgnsl``; printed with every score.
    drop_punctuation : bool
        Whether punctuation tokens are removed before spans are taken.
    count_whole_span : bool
        Whether the span of the whole sentence is counted.
    min_length : int
        Sentences with fewer tokens (after dropping) are left out of the sentence-level average.
    description : str
        One line, printed with the scores.
    """

    name: str
    drop_punctuation: bool
    count_whole_span: bool
    min_length: int
    description: str


STANDARD = Convention(
    name="standard", drop_punctuation=True, count_whole_span=False, min_length=2,
    description=("Kim et al. 2019 (compound-pcfg) / PRPN / ON-LSTM / Tree-Transformer: punctuation, $ # "
                 "and -NONE- dropped, unary chains collapsed, single-word and whole-sentence spans "
                 "discarded; sentence F1 over sentences of length >= 2, corpus F1 micro-averaged"))
VGNSL = Convention(
    name="vgnsl", drop_punctuation=False, count_whole_span=True, min_length=2,
    description=("Shi et al. 2019 (VG-NSL): labels stripped, unary chains collapsed, every bracket of "
                 ">= 2 tokens counted including the whole caption, punctuation kept; corpus F1 is "
                 "the headline number"))
CONVENTIONS: dict[str, Convention] = {c.name: c for c in (STANDARD, VGNSL)}


def get_convention(name: str | Convention) -> Convention:
    """Look a convention up by name (``standard`` or ``vgnsl``)."""
    if isinstance(name, Convention):
        return name
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise HiCLIPError(f"unknown span convention {name!r}: use {' or '.join(CONVENTIONS)}") from None


def keep_mask(tokens: Sequence[str], tags: Sequence[str] | None, convention: Convention) -> np.ndarray:
    """Which tokens a convention keeps.

    Parameters
    ----------
    tokens : sequence of str
        The leaves of the tree, length n.
    tags : sequence of str or None
        Their POS tags (length n) when known; decisions are then made by tag.
    convention : Convention

    Returns
    -------
    numpy.ndarray
        Shape (n,), dtype bool.
    """
    if tags is not None and len(tags) != len(tokens):
        raise ValueError(f"{len(tags)} tags for {len(tokens)} tokens")
    if tags is not None:
        dropped = DROPPED_TAGS if convention.drop_punctuation else frozenset({EMPTY_ELEMENT_TAG})
        return np.fromiter((t not in dropped for t in tags), dtype=bool, count=len(tokens))
    if convention.drop_punctuation:
        return np.fromiter((not is_punctuation_word(w) for w in tokens), dtype=bool, count=len(tokens))
    return np.ones(len(tokens), dtype=bool)


def constituent_intervals(tree: nltk.Tree) -> list[Span]:
    """Leaf intervals ``(start, end)`` of every node of ``tree`` (root first, pre-order).

    Pre-terminals and single-word nodes are included (they are filtered later by width).
    """
    out: list[Span] = []

    def walk(node: nltk.Tree, start: int) -> int:
        index = len(out)
        out.append((start, start))
        pos = start
        for child in node:
            pos = pos + 1 if isinstance(child, str) else walk(child, pos)
        out[index] = (start, pos)
        return pos

    walk(tree, 0)
    return out


def project_spans(intervals: Iterable[Span], keep: np.ndarray) -> set[Span]:
    """Re-span constituents over the kept tokens and keep those of two or more kept tokens.

    Parameters
    ----------
    intervals : iterable of (int, int)
        Leaf intervals over all ``len(keep)`` leaves.
    keep : numpy.ndarray
        Shape (n,), bool: which leaves remain.

    Returns
    -------
    set of (int, int)
        Spans over kept-token indices, end exclusive, width >= 2. Constituents that lose all
        their tokens vanish; chains over the same kept tokens collapse into one span.
    """
    prefix = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
    spans: set[Span] = set()
    for a, b in intervals:
        s, e = int(prefix[a]), int(prefix[b])
        if e - s >= 2:
            spans.add((s, e))
    return spans


def convention_spans(intervals: Iterable[Span], keep: np.ndarray, convention: Convention) -> frozenset[Span]:
    """The spans a convention scores, given a tree's leaf intervals and the kept-token mask."""
    spans = project_spans(intervals, keep)
    if not convention.count_whole_span:
        spans.discard((0, int(keep.sum())))
    return frozenset(spans)


def tree_spans(tree: nltk.Tree, convention: Convention | str, tags: Sequence[str] | None = None,
               keep: np.ndarray | None = None) -> frozenset[Span]:
    """Spans of one tree under a convention.

    Parameters
    ----------
    tree : nltk.Tree
    convention : Convention or str
    tags : sequence of str, optional
        POS tags of the leaves (drop decisions by tag); ignored when ``keep`` is given.
    keep : numpy.ndarray, optional
        Shape (n_leaves,), bool: explicit kept-token mask (e.g. projected from the gold tree).

    Examples
    --------
    >>> t = nltk.Tree.fromstring("(S (NP (DT the) (NN dog)) (VP (VBZ barks)) (. .))")
    >>> sorted(tree_spans(t, "standard"))
    [(0, 2)]
    >>> sorted(tree_spans(t, "vgnsl"))
    [(0, 2), (0, 4)]
    """
    convention = get_convention(convention)
    if keep is None:
        keep = keep_mask(tree.leaves(), tags, convention)
    return convention_spans(constituent_intervals(tree), keep, convention)


def spans_to_tree(tokens: Sequence[str], spans: Iterable[Span], label: str = "X",
                  root_label: str = "S") -> nltk.Tree:
    """Build an unlabeled ``nltk.Tree`` from a nested (laminar) set of spans.

    Parameters
    ----------
    tokens : sequence of str
        The leaves, length n.
    spans : iterable of (int, int)
        Spans ``(start, end)`` with ``0 <= start < end <= n``; any two must nest or be disjoint.
        The whole span ``(0, n)`` is added if missing; single-word spans are ignored.

    Raises
    ------
    ValueError
        If two spans cross or a span is out of range.
    """
    n = len(tokens)
    chosen = {(a, b) for a, b in spans if b - a >= 2}
    for a, b in chosen:
        if not 0 <= a < b <= n:
            raise ValueError(f"span {(a, b)} outside 0..{n}")
    chosen.discard((0, n))
    ordered = sorted(chosen, key=lambda s: (s[0], -s[1]))

    def build(start: int, end: int, lab: str, items: list[Span]) -> nltk.Tree:
        children: list[nltk.Tree | str] = []
        pos = start
        i = 0
        while i < len(items):
            a, b = items[i]
            inner: list[Span] = []
            j = i + 1
            while j < len(items) and items[j][0] < b:
                if items[j][1] > b:
                    raise ValueError(f"spans {(a, b)} and {items[j]} cross")
                inner.append(items[j])
                j += 1
            children.extend(tokens[pos:a])
            children.append(build(a, b, label, inner))
            pos = b
            i = j
        children.extend(tokens[pos:end])
        return nltk.Tree(lab, children)

    return build(0, n, root_label, ordered)
