"""A minimal labeled constituency tree for the caption grammar.

Nodes carry optional mask references so that, once the tree is linearised, every phrase knows
which image regions it describes. The output is a PTB bracket string whose preterminals are POS
tags, e.g. ``(NP (DT a) (JJ red) (NN square))``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Node:
    """A constituent (``children``) or a preterminal (``word`` set, ``label`` is the POS tag).

    ``refs`` lists ``(level, mask_ids)`` pairs: the image regions this phrase denotes.
    """

    label: str
    children: list["Node"] = field(default_factory=list)
    word: str | None = None
    refs: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)

    @property
    def is_leaf(self) -> bool:
        return self.word is not None


def word(tag: str, text: str) -> Node:
    """A preterminal ``(tag text)``."""
    return Node(tag, word=text)


def phrase(label: str, *children: Node, refs: list[tuple[str, tuple[int, ...]]] | None = None) -> Node:
    """A constituent ``(label child ...)``."""
    if not children:
        raise ValueError(f"empty constituent {label}")
    return Node(label, list(children), refs=list(refs or []))


def words(node: Node) -> list[str]:
    """The leaves of ``node`` from left to right."""
    if node.is_leaf:
        return [node.word]  # type: ignore[list-item]
    out: list[str] = []
    for child in node.children:
        out.extend(words(child))
    return out


def to_ptb(node: Node) -> str:
    """The PTB bracket string of ``node`` (no outer ROOT wrapper)."""
    if node.is_leaf:
        return f"({node.label} {node.word})"
    return f"({node.label} " + " ".join(to_ptb(c) for c in node.children) + ")"


def referring_spans(node: Node) -> list[dict]:
    """Word spans of the phrases that carry mask references, in pre-order.

    Returns
    -------
    list of dict
        ``{"span": [start, end], "level": str, "mask_ids": [int, ...]}``; ``end`` is exclusive.
    """
    found: list[dict] = []
    spans: dict[int, tuple[int, int]] = {}

    def measure(n: Node, start: int) -> int:
        if n.is_leaf:
            return start + 1
        end = start
        for child in n.children:
            end = measure(child, end)
        spans[id(n)] = (start, end)
        return end

    def emit(n: Node) -> None:
        if n.is_leaf:
            return
        start, end = spans[id(n)]
        for level, ids in n.refs:
            found.append({"span": [start, end], "level": level, "mask_ids": list(ids)})
        for child in n.children:
            emit(child)

    measure(node, 0)
    emit(node)
    return found
