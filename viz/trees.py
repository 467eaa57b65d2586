"""Drawings of constituency trees: SVG through svgling, PNG/PDF through matplotlib.

Trees are ``nltk.Tree`` objects whose leaves are the words (strings). A gold tree may carry
part-of-speech pre-terminals (``(DT a)``); an induced tree is usually unlabelled. Spans are
``(start, end)`` leaf-index pairs, end exclusive. The drawings mark the constituents that a
predicted tree shares with a gold tree: spans of two or more words present in both trees
("matched"), the others ("unmatched") in a second colour.

The span matching here is only what the drawing needs (which nodes to colour); scoring lives in
``induction.spans`` / ``induction.tree_scoring``, whose conventions (punctuation, whole-sentence
span) are deliberately not re-implemented here.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import nltk
import svgling
import svgling.figure
from matplotlib.axes import Axes
from matplotlib.figure import Figure

Span = tuple[int, int]
Path = tuple[int, ...]

MATCHED = "#1a9850"     # green: constituent also in the other tree
UNMATCHED = "#d73027"   # red: constituent only in this tree
NEUTRAL = "#222222"


def as_tree(tree: nltk.Tree | str) -> nltk.Tree:
    """Accept an ``nltk.Tree`` or a PTB bracket string such as ``"(S (NP a dog) (VP runs))"``."""
    if isinstance(tree, nltk.Tree):
        return tree
    if isinstance(tree, str):
        return nltk.Tree.fromstring(tree)
    raise TypeError(f"expected nltk.Tree or bracket string, got {type(tree).__name__}")


def node_spans(tree: nltk.Tree) -> Iterator[tuple[Path, Span]]:
    """Yield ``(path, (start, end))`` for every internal node, in pre-order.

    ``path`` is the node's child-index path from the root (the svgling/nltk convention),
    ``(start, end)`` the leaf indices it covers (end exclusive).
    """

    def walk(node: nltk.Tree, path: Path, start: int) -> Iterator[tuple[Path, Span]]:
        width = len(node.leaves())
        yield path, (start, start + width)
        offset = start
        for i, child in enumerate(node):
            if isinstance(child, nltk.Tree):
                yield from walk(child, path + (i,), offset)
                offset += len(child.leaves())
            else:
                offset += 1

    yield from walk(tree, (), 0)


def constituent_spans(tree: nltk.Tree, min_width: int = 2) -> set[Span]:
    """The set of spans of internal nodes covering at least ``min_width`` words."""
    return {span for _, span in node_spans(tree) if span[1] - span[0] >= min_width}


@dataclass(frozen=True)
class SpanMatch:
    """Which constituents (width >= 2) two trees share: what the colours show. Scores are the
    scoring library's (``induction.tree_evaluation.score_tree_pair``), under a named convention."""

    matched: frozenset[Span]
    only_pred: frozenset[Span]
    only_gold: frozenset[Span]


def match_spans(pred: nltk.Tree | str, gold: nltk.Tree | str) -> SpanMatch:
    """Compare the constituents of width >= 2 of two trees over the same words.

    Raises ``ValueError`` when the trees do not have the same number of leaves.
    """
    pred, gold = as_tree(pred), as_tree(gold)
    if len(pred.leaves()) != len(gold.leaves()):
        raise ValueError(
            f"trees cover different numbers of words: {len(pred.leaves())} vs {len(gold.leaves())}"
        )
    p, g = constituent_spans(pred), constituent_spans(gold)
    return SpanMatch(frozenset(p & g), frozenset(p - g), frozenset(g - p))


def _span_colours(tree: nltk.Tree, reference: set[Span] | None) -> dict[Path, str]:
    """Colour for each internal node (width >= 2) when compared with ``reference`` spans."""
    if reference is None:
        return {}
    colours = {}
    for path, (a, b) in node_spans(tree):
        if b - a >= 2:
            colours[path] = MATCHED if (a, b) in reference else UNMATCHED
    return colours


def _display_tree(tree: nltk.Tree) -> nltk.Tree:
    """Copy of ``tree`` with empty node labels shown as a small dot (svgling draws '' as nothing)."""

    def copy(node):
        if not isinstance(node, nltk.Tree):
            return node
        label = node.label() if str(node.label()).strip() else "\u2022"
        return nltk.Tree(label, [copy(c) for c in node])

    return copy(tree)


def tree_layout(tree: nltk.Tree | str, reference: set[Span] | None = None,
                font_size: int = 14) -> svgling.core.TreeLayout:
    """An svgling layout of ``tree``; with ``reference`` spans, nodes are coloured and boxed.

    Matched constituents get a bold green label, unmatched ones a bold red label.
    """
    tree = _display_tree(as_tree(tree))
    layout = svgling.draw_tree(tree, font_size=font_size, leaf_nodes_align=True,
                               font_style=svgling.core.SANS)
    for path, colour in _span_colours(tree, reference).items():
        layout.set_node_style(path, text_color=colour,
                              font_style=svgling.core.cssfont("sans-serif", weight="bold"))
    return layout


def tree_svg(tree: nltk.Tree | str, reference: set[Span] | None = None,
             font_size: int = 14) -> str:
    """One tree as a standalone SVG document (a string starting with ``<svg``)."""
    return tree_layout(tree, reference, font_size).get_svg().tostring()


LEGEND = "green: a constituent the other tree has too; red: one it lacks"


def score_label(score, convention: str) -> str:
    """``"P 60.0  R 55.0  F1 57.4 (standard)"`` for one sentence's score (percent), as scored by
    ``induction.tree_evaluation.score_tree_pair``; a sentence too short to count says so."""
    if score.f1 is None:
        return f"too short to score ({convention})"
    return f"P {score.precision:.1f}  R {score.recall:.1f}  F1 {score.f1:.1f} ({convention})"


def tree_pair_svg(pred: nltk.Tree | str, gold: nltk.Tree | str,
                  labels: tuple[str, str] = ("predicted", "gold"), font_size: int = 14) -> str:
    """Predicted tree above the gold tree as one SVG; shared constituents green, the others red.

    ``labels`` caption the two trees (give the scored numbers there: colours are only which
    constituents of two or more words the trees share, not a scoring convention); a legend line
    closes the picture. Stacked rows keep a long sentence as wide as one tree.
    """
    pred, gold = as_tree(pred), as_tree(gold)
    match_spans(pred, gold)  # same number of words, or ValueError
    top = tree_layout(pred, constituent_spans(gold), font_size)
    bottom = tree_layout(gold, constituent_spans(pred), font_size)
    figure = svgling.figure.RowByRow(
        svgling.figure.Caption(top, labels[0]),
        svgling.figure.Caption(bottom, f"{labels[1]}  ({LEGEND})"),
    )
    return figure.get_svg().tostring()


def responsive_svg(svg: str) -> str:
    """The same SVG scaled down to fit its container (``max-width: 100%``, aspect kept through
    the ``viewBox``), for embedding in HTML pages."""
    end = svg.index(">")
    head, rest = svg[:end], svg[end:]
    rule = "max-width: 100%; height: auto; "
    if ' style="' in head:
        head = head.replace(' style="', f' style="{rule}', 1)
    else:
        head = head + f' style="{rule.strip()}"'
    return head + rest


# --------------------------------------------------------------------------- matplotlib


def _positions(tree: nltk.Tree) -> tuple[dict[Path, tuple[float, float]], list[float]]:
    """x/y of every internal node (leaves at y=0, a node one above its highest child) and leaf x."""
    leaf_x: list[float] = []
    pos: dict[Path, tuple[float, float]] = {}

    def place(node, path: Path) -> tuple[float, float]:
        xs, heights = [], []
        for i, child in enumerate(node):
            if isinstance(child, nltk.Tree):
                x, h = place(child, path + (i,))
            else:
                x, h = float(len(leaf_x)), 0.0
                leaf_x.append(x)
            xs.append(x)
            heights.append(h)
        xy = (sum(xs) / len(xs), max(heights) + 1.0) if xs else (float(len(leaf_x)), 1.0)
        pos[path] = xy
        return xy

    place(tree, ())
    return pos, leaf_x


def draw_tree_on(ax: Axes, tree: nltk.Tree | str, reference: set[Span] | None = None,
                 title: str | None = None, font_size: float = 10) -> None:
    """Draw ``tree`` on a matplotlib axes: words along the bottom, each node above its children.

    Node height is one more than its highest child, so low constituents sit near the words,
    the way the merges of a Tree-Transformer happen. With ``reference`` spans, node labels are
    green (shared) or red (not shared).
    """
    tree = _display_tree(as_tree(tree))
    pos, leaf_x = _positions(tree)
    colours = _span_colours(tree, reference)

    def edges(node, path: Path, leaf_start: int) -> int:
        x0, y0 = pos[path]
        offset = leaf_start
        for i, child in enumerate(node):
            if isinstance(child, nltk.Tree):
                x1, y1 = pos[path + (i,)]
                offset = edges(child, path + (i,), offset)
            else:
                x1, y1 = leaf_x[offset], 0.0
                offset += 1
            ax.plot([x0, x1], [y0, y1], color="#888888", linewidth=1.0, zorder=1)
        return offset

    edges(tree, (), 0)
    for path, (x, y) in pos.items():
        node = tree[path] if path else tree
        colour = colours.get(path, NEUTRAL)
        ax.text(x, y, str(node.label()), ha="center", va="center", fontsize=font_size,
                color=colour, zorder=3,
                bbox=dict(boxstyle="round,pad=0.25", facecolor="white",
                          edgecolor=colour if path in colours else "#bbbbbb"))
    for x, word in zip(leaf_x, tree.leaves()):
        ax.text(x, 0.0, str(word), ha="center", va="top", fontsize=font_size, zorder=3)
    top = max(y for _, y in pos.values())
    ax.set_xlim(-0.7, max(len(leaf_x) - 0.3, 0.7))
    ax.set_ylim(-0.8, top + 0.6)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=font_size + 1)


def tree_figure(tree: nltk.Tree | str, reference: set[Span] | None = None,
                title: str | None = None) -> Figure:
    """A matplotlib figure of one tree (for PNG/PDF; :func:`tree_svg` for SVG)."""
    tree = as_tree(tree)
    width, font = _fit(len(tree.leaves()), 0.8)
    fig, ax = plt.subplots(figsize=(width, 0.45 * tree.height() + 1.2))
    draw_tree_on(ax, tree, reference, title, font_size=font)
    fig.tight_layout()
    return fig


MAX_FIGURE_WIDTH = 11.0  # inches: at the 150 dpi of save_figure, a page-width 1,650 px


def _fit(n_words: int, per_word: float = 0.75) -> tuple[float, float]:
    """Figure width (inches, at most :data:`MAX_FIGURE_WIDTH`) and font size for ``n_words``
    leaves: long sentences shrink the font instead of widening the figure."""
    natural = max(3.0, per_word * n_words + 1)
    width = min(MAX_FIGURE_WIDTH, natural)
    return width, max(6.0, 10.0 * width / natural)


def tree_pair_figure(pred: nltk.Tree | str, gold: nltk.Tree | str,
                     labels: tuple[str, str] = ("predicted", "gold")) -> Figure:
    """Predicted tree (top) and gold tree (bottom); shared constituents green, others red, with
    a legend. At most :data:`MAX_FIGURE_WIDTH` inches wide: long sentences get a smaller font."""
    from matplotlib.lines import Line2D

    pred, gold = as_tree(pred), as_tree(gold)
    match_spans(pred, gold)  # same number of words, or ValueError
    width, font = _fit(len(pred.leaves()))
    heights = [0.45 * pred.height() + 1.0, 0.45 * gold.height() + 1.0]
    fig, axes = plt.subplots(2, 1, figsize=(width, sum(heights) + 0.6),
                             gridspec_kw={"height_ratios": heights})
    draw_tree_on(axes[0], pred, constituent_spans(gold), labels[0], font_size=font)
    draw_tree_on(axes[1], gold, constituent_spans(pred), labels[1], font_size=font)
    handles = [Line2D([], [], marker="s", linestyle="none", markerfacecolor="white", markeredgecolor=colour,
                      markersize=9, label=text)
               for colour, text in ((MATCHED, "constituent the other tree has too"),
                                    (UNMATCHED, "constituent the other tree lacks"))]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def trees_grid_figure(trees: Sequence[nltk.Tree | str], titles: Sequence[str] | None = None,
                      reference: set[Span] | None = None, ncols: int = 2) -> Figure:
    """Several trees (e.g. one per layer, or one per parser) in a grid of axes."""
    trees = [as_tree(t) for t in trees]
    if not trees:
        raise ValueError("no trees to draw")
    ncols = max(1, min(ncols, len(trees)))
    nrows = (len(trees) + ncols - 1) // ncols
    n = max(len(t.leaves()) for t in trees)
    height = max(t.height() for t in trees)
    width, font = _fit(n)
    if ncols * width > MAX_FIGURE_WIDTH and ncols > 1:  # long sentences: one tree per row
        ncols, nrows = 1, len(trees)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(ncols * width, nrows * (0.45 * height + 1.3)))
    for i, ax in enumerate(axes.flat):
        if i < len(trees):
            draw_tree_on(ax, trees[i], reference, titles[i] if titles else None, font_size=font)
        else:
            ax.axis("off")
    fig.tight_layout()
    return fig
