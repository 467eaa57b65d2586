"""Checks on captions and their gold: empty, overlong or undecodable text, token/tree alignment.

Readers call these per caption; a failure is an ``InputProblem`` (reason + message) that the
reader turns into an error naming the file and line, or a counted skip.
"""
from __future__ import annotations

from dataclasses import dataclass

from functools import lru_cache


@lru_cache(maxsize=1)
def _nltk_tree():
    """``nltk.Tree``, imported on first use (it is slow to import); None without nltk."""
    try:
        from nltk import Tree
    except ImportError:  # pragma: no cover - exercised only without nltk
        return None
    return Tree


@dataclass(frozen=True)
class TextLimits:
    """Longest caption accepted, in whitespace-separated words and in characters."""

    max_words: int = 77
    max_chars: int = 1000


class InputProblem(Exception):
    """Bad input: ``reason`` is a short category for skip counts, ``message`` one line."""

    def __init__(self, reason: str, message: str, path: object | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.path = path  # the file at fault, when it is not the record's own origin
        self.line = line

    def located(self, origin: object) -> str:
        """``"<file>[:line]: <message>"`` with the problem's own file if it has one."""
        where = self.path if self.path is not None else origin
        return f"{where}:{self.line}: {self.message}" if self.line is not None else f"{where}: {self.message}"


def has_undecodable_bytes(text: str) -> bool:
    """True if ``text`` came from bytes that were not UTF-8 (decoded with ``surrogateescape``)."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def check_caption(text: object, index: int, limits: TextLimits) -> str:
    """Validate caption number ``index`` (0-based) and return it with outer whitespace stripped."""
    if not isinstance(text, str):
        raise InputProblem("malformed caption", f"caption {index + 1} is not a string ({type(text).__name__})")
    if has_undecodable_bytes(text):
        raise InputProblem("non-UTF-8 caption", f"caption {index + 1} is not valid UTF-8")
    stripped = text.strip()
    if not stripped:
        raise InputProblem("empty caption", f"caption {index + 1} is empty")
    if len(stripped) > limits.max_chars:
        raise InputProblem("overlong caption", f"caption {index + 1} has {len(stripped)} characters "
                                                 f"(limit {limits.max_chars})")
    n_words = len(stripped.split())
    if n_words > limits.max_words:
        raise InputProblem("overlong caption", f"caption {index + 1} has {n_words} words (limit {limits.max_words})")
    return stripped


def tree_leaves(tree: str) -> list[str]:
    """The leaves of a PTB bracket string (via ``nltk.Tree.fromstring``)."""
    tree_class = _nltk_tree()
    if tree_class is None:
        raise RuntimeError("nltk is not installed")
    return tree_class.fromstring(tree).leaves()


def check_alignment(caption: str, index: int, tokens: object | None, tree: object | None) -> tuple[list[str], str | None]:
    """Check that ``tokens == caption.split()`` and that the tree's leaves are those tokens.

    Returns
    -------
    (tokens, tree) : the validated tokens (``caption.split()`` when none were given) and tree.
    """
    words = caption.split()
    if tokens is not None:
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise InputProblem("malformed tokens", f"tokens of caption {index + 1} are not a list of strings")
        if tokens != words:
            raise InputProblem("token mismatch", f"tokens of caption {index + 1} differ from its words: "
                                                   f"{_first_difference(tokens, words)}")
    if tree is None:
        return words, None
    if not isinstance(tree, str):
        raise InputProblem("malformed tree", f"tree of caption {index + 1} is not a string")
    if _nltk_tree() is None:  # cannot check; keep the tree as given
        return words, tree
    try:
        leaves = tree_leaves(tree)
    except ValueError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unbalanced brackets"
        raise InputProblem("malformed tree", f"tree of caption {index + 1} does not parse ({first})") from None
    if leaves != words:
        raise InputProblem("tree mismatch", f"tree leaves of caption {index + 1} differ from its words: "
                                              f"{_first_difference(leaves, words)}")
    return words, tree


def _first_difference(got: list[str], want: list[str]) -> str:
    for k, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"word {k + 1} is {a!r}, caption has {b!r}"
    return f"{len(got)} words, caption has {len(want)}"
