"""Readers for reference and predicted constituency trees, all returning ``TreeRecord`` objects.

Every reader returns the trees as ``nltk.Tree`` objects whose leaves (in order) are exactly the
record's ``tokens``, together with where each tree came from (file and 1-based line), so that a
scoring problem can always be reported as ``file:line``.

Formats (``--gold-format`` / ``fmt``):

``ptb``
    Labeled bracketed trees in any layout (several lines per tree, several trees per file), e.g.
    the Penn Treebank ``.mrg`` files, or a folder of them (read in sorted file-name order). The
    outer unlabeled wrapper ``( (S ...) )`` is removed. POS pre-terminals, ``-NONE-`` empty
    elements and function tags are kept, so that a scoring convention can drop punctuation and
    empty elements by tag.
``lines``
    One labeled tree per line, e.g. parser output such as ``dev_trees.txt`` (no ROOT wrapper
    needed). An optional token file (``tokens_path``, one tokenized sentence per line, e.g.
    ``dev_caps.txt``) is checked against the leaves line by line.
``unlabeled``
    One unlabeled tree per line in the VG-NSL style ``( ( a man ) ( riding ( a horse ) ) )``:
    every bracket is a constituent and every atom is a word.
``vgnsl-json``
    The project's join file ``joint_coco_vgnsl_overlap.json``: a list of images, each with
    ``vgnsl_parsed_captions`` entries holding ``caption_tokenized``, ``benepar_en2_tree`` (labeled)
    and, for the VG-NSL test split, ``vgnsl_gold_unlabeled_tree``. ``tree_key`` picks the tree
    (default ``vgnsl_gold_unlabeled_tree``) and ``split`` filters on ``vgnsl_split``.
``manifest``
    A hiclip dataset ``manifest.jsonl`` (docs/DESIGN.md): ``trees`` holds one bracket string per
    caption, ``tokens`` (optional) the caption's words; captions are flattened in order, records
    filtered on ``split``.
``predictions``
    The prediction JSONL written by ``hiclip induce``: detected here, but read by its own reader
    (``induction.predictions``; its trees by ``induction.tree_evaluation.read_tree_records``), since
    ``hiclip`` does not depend on ``induction``.
``plain``
    One tokenized sentence per line (no trees): read with ``read_token_lines``; used as a token
    check file or as the sentences to give a silver parser.

Inside a bracket string, a ``(`` followed by whitespace and then a word marks the unlabeled style;
anything else (``(S``, ``(NP``, ``( (S``) is read as labeled, where the first atom after ``(`` is
the node label and later atoms are words. Leaf words ``-LRB-``/``-RRB-`` (``-LCB-``/``-RCB-``) stand
for brackets, as in the PTB; ``tokens_match`` treats them as equal to ``(``/``)`` (``{``/``}``)
and compares case-insensitively, because the hiclip tokenizer lower-cases words.

Problems in the input (malformed brackets, a tree whose leaves differ from its token line, a
caption without a tree) raise ``HiCLIPError`` naming ``file:line`` under the default ``raise``
policy. With a ``SkipReport`` whose policy is ``skip``, line-based formats instead return a
placeholder record (``tree is None``, ``problem`` set) so that the order of records, and hence the
pairing of predictions with references, is never shifted; the skip is counted in the report.
A malformed multi-line ``ptb`` file cannot be resynchronised and always raises.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nltk

from hiclip.errors import HiCLIPError, SkipReport, located

FORMATS = ("ptb", "lines", "unlabeled", "vgnsl-json", "manifest", "predictions", "plain")
SPLIT_FORMATS = ("manifest", "predictions", "vgnsl-json")  # formats whose records name a split
EMPTY_ELEMENT_TAG = "-NONE-"
UNLABELED = "X"
VGNSL_DEFAULT_TREE_KEY = "vgnsl_gold_unlabeled_tree"

_WRAPPER_LABELS = ("", "ROOT", "TOP")
_BRACKET_WORDS = {"-LRB-": "(", "-RRB-": ")", "-LCB-": "{", "-RCB-": "}", "-LSB-": "[", "-RSB-": "]"}
_ESCAPES = {"(": "-LRB-", ")": "-RRB-"}
_TOKEN_RE = re.compile(r"\(|\)|[^\s()]+")
_UNLABELED_RE = re.compile(r"\(\s+[^\s()]")


@dataclass
class TreeRecord:
    """One tree (or one placeholder for a skipped input) with its tokens and its origin.

    Attributes
    ----------
    tree : nltk.Tree or None
        The tree; its ``leaves()`` equal ``tokens``. ``None`` for a placeholder of an input that
        was skipped under a ``skip`` policy (then ``problem`` says why).
    tokens : list of str
        The leaves in order, including any ``-NONE-`` empty elements of a treebank.
    source : str
        The file the tree came from.
    line : int or None
        1-based line where the tree starts (``None`` for JSON files without meaningful lines).
    tags : list of str or None
        The POS tag of every leaf when every leaf sits under its own pre-terminal (labeled
        treebank or parser trees), else ``None`` (unlabeled or predicted trees).
    item : str
        Extra location inside the line, e.g. ``"caption 2"`` or ``"image 58636 caption 0"``.
    problem : str or None
        For a placeholder, the one-line error message (with file:line).
    reason : str or None
        For a placeholder, the short reason it was counted under.
    """

    tree: nltk.Tree | None
    tokens: list[str]
    source: str
    line: int | None
    tags: list[str] | None = None
    item: str = ""
    problem: str | None = None
    reason: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether this record holds a usable tree (not a skipped placeholder)."""
        return self.tree is not None

    @property
    def where(self) -> str:
        """``file:line`` (plus the item inside the line, if any) for messages."""
        base = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{base} ({self.item})" if self.item else base

    def surface_indices(self) -> list[int]:
        """Indices of the tokens that are not ``-NONE-`` empty elements (all, without tags)."""
        if self.tags is None:
            return list(range(len(self.tokens)))
        return [i for i, t in enumerate(self.tags) if t != EMPTY_ELEMENT_TAG]

    def surface_tokens(self) -> list[str]:
        """The words a reader of the sentence sees: tokens without empty elements."""
        return [self.tokens[i] for i in self.surface_indices()]


@dataclass
class TokenLine:
    """One tokenized sentence of a plain text file (``tokens`` split on whitespace)."""

    tokens: list[str]
    source: str
    line: int


# --------------------------------------------------------------------------- bracket parsing


def normalize_token(token: str) -> str:
    """Canonical form used to compare tokens: bracket escapes undone, lower-cased."""
    return _BRACKET_WORDS.get(token, token).lower()


def tokens_match(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two token sequences are equal up to case and PTB bracket escapes."""
    return len(a) == len(b) and all(normalize_token(x) == normalize_token(y) for x, y in zip(a, b))


def first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    """A short description of where two token sequences first differ (for error messages)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if normalize_token(x) != normalize_token(y):
            return f"token {i + 1}: {x!r} vs {y!r}"
    return f"{len(a)} vs {len(b)} tokens"


def escape_leaf(word: str) -> str:
    """Make a word safe inside a bracket string (``(`` -> ``-LRB-``, ``)`` -> ``-RRB-``)."""
    if "(" not in word and ")" not in word:
        return word
    return "".join(_ESCAPES.get(c, c) for c in word)


def is_unlabeled_style(text: str) -> bool:
    """Whether a bracket string is VG-NSL style (``( a b )``): some ``(`` is followed by a word."""
    return _UNLABELED_RE.search(text) is not None


class _Located(Exception):
    """Internal: a parse error at a 1-based line, turned into a HiCLIPError by the caller."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _iter_trees(text: str, labeled: bool, first_line: int = 1) -> Iterator[tuple[nltk.Tree, int]]:
    """Yield ``(tree, line)`` for every top-level bracketed tree in ``text``.

    Raises ``_Located`` for unbalanced brackets, words outside brackets and empty brackets.
    """
    stack: list[tuple[str, list, int]] = []   # (label, children, line of the open bracket)
    expect_label = False
    findall = _TOKEN_RE.findall
    for number, line in enumerate(text.split("\n"), start=first_line):
        for tok in findall(line):
            if tok == "(":
                stack.append(("", [], number))
                expect_label = labeled  # "((" in labeled style: the outer node keeps an empty label
            elif tok == ")":
                if not stack:
                    raise _Located(number, "unmatched ')'")
                label, children, start = stack.pop()
                expect_label = False
                if not children:
                    what = f"constituent ({label}) has no words" if label else "empty brackets '()'"
                    raise _Located(start, what)
                node = nltk.Tree(label if (label or labeled) else UNLABELED, children)
                if stack:
                    stack[-1][1].append(node)
                else:
                    yield node, start
            elif not stack:
                raise _Located(number, f"word {tok!r} outside any brackets")
            elif expect_label:
                _, children, start = stack[-1]
                stack[-1] = (tok, children, start)
                expect_label = False
            else:
                stack[-1][1].append(tok)
    if stack:
        raise _Located(stack[0][2], "unbalanced brackets: '(' opened here is never closed")


def _strip_wrappers(tree: nltk.Tree) -> nltk.Tree:
    """Remove outer unary wrappers labeled '', ROOT or TOP (the PTB ``( (S ...) )``)."""
    while tree.label() in _WRAPPER_LABELS and len(tree) == 1 and isinstance(tree[0], nltk.Tree):
        tree = tree[0]
    return tree


def leaf_tags(tree: nltk.Tree) -> list[str] | None:
    """POS tags of the leaves if every leaf is the only child of a pre-terminal, else ``None``."""
    tags: list[str] = []

    def walk(node: nltk.Tree) -> bool:
        if len(node) == 1 and isinstance(node[0], str):
            tags.append(node.label())
            return True
        for child in node:
            if isinstance(child, str) or not walk(child):
                return False
        return True

    return tags if walk(tree) else None


def parse_bracket_string(text: str, style: str = "auto") -> nltk.Tree:
    """Parse one bracket string into an ``nltk.Tree``.

    Parameters
    ----------
    text : str
        One tree, labeled (``(S (NP (DT a) (NN dog)) (VP barks))``) or unlabeled
        (``( ( a dog ) barks )``).
    style : {"auto", "labeled", "unlabeled"}
        ``auto`` picks unlabeled when some ``(`` is followed by whitespace and a word.

    Returns
    -------
    nltk.Tree
        Unlabeled nodes get the label ``"X"``; outer ''/ROOT/TOP unary wrappers are removed.

    Raises
    ------
    HiCLIPError
        For malformed brackets or more than one tree in ``text``.
    """
    if style not in ("auto", "labeled", "unlabeled"):
        raise HiCLIPError(f"unknown bracket style {style!r}: use auto, labeled or unlabeled")
    labeled = not is_unlabeled_style(text) if style == "auto" else style == "labeled"
    try:
        found = list(_iter_trees(text, labeled))
    except _Located as error:
        raise HiCLIPError(error.message) from None
    if len(found) != 1:
        raise HiCLIPError(f"expected one tree, found {len(found)}")
    return _strip_wrappers(found[0][0])


def _record(tree: nltk.Tree, source: str, line: int | None, item: str = "") -> TreeRecord:
    return TreeRecord(tree=tree, tokens=list(tree.leaves()), source=source, line=line,
                      tags=leaf_tags(tree), item=item)


def _placeholder(message: str, reason: str, source: str, line: int | None, tokens: list[str],
                 item: str = "") -> TreeRecord:
    return TreeRecord(tree=None, tokens=tokens, source=source, line=line, item=item,
                      problem=message, reason=reason)


def _handle(report: SkipReport, error: HiCLIPError, reason: str, source: str, line: int | None,
            tokens: list[str], item: str = "") -> TreeRecord:
    """Raise ``error`` under the raise policy, else count it and return a placeholder."""
    report.handle(error, reason)
    return _placeholder(str(error), reason, source, line, tokens, item)


def _default_report(report: SkipReport | None) -> SkipReport:
    return report if report is not None else SkipReport("raise")


# --------------------------------------------------------------------------- readers


def read_ptb(path: str | Path) -> list[TreeRecord]:
    """Read labeled bracketed trees in any layout from a file or a folder of ``.mrg`` files.

    Parameters
    ----------
    path : str or Path
        A file, or a folder whose ``*.mrg`` files (searched recursively, sorted by path) are read.

    Returns
    -------
    list of TreeRecord
        One per tree, ``line`` = the line of the tree's opening bracket, tags kept.

    Raises
    ------
    HiCLIPError
        ``file:line: ...`` for malformed brackets, or if a folder holds no ``.mrg`` file.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.mrg") if p.is_file())
        if not files:
            raise located(path, None, "folder holds no .mrg files")
    else:
        files = [_existing(path)]
    records: list[TreeRecord] = []
    for file in files:
        text = _read_text(file)
        try:
            for tree, line in _iter_trees(text, labeled=True):
                records.append(_record(_strip_wrappers(tree), str(file), line))
        except _Located as error:
            raise located(file, error.line, error.message) from None
    return records


def read_tree_lines(path: str | Path, style: str = "auto", tokens_path: str | Path | None = None,
                    report: SkipReport | None = None) -> list[TreeRecord]:
    """Read one bracketed tree per line (labeled parser output or VG-NSL unlabeled trees).

    Parameters
    ----------
    path : str or Path
        The tree file; blank lines are errors (they would shift the pairing of lines).
    style : {"auto", "labeled", "unlabeled"}
        Bracket style; ``auto`` decides per line (see ``is_unlabeled_style``).
    tokens_path : str or Path, optional
        A file with one tokenized sentence per line to check the leaves against (same number of
        lines required; comparison up to case and bracket escapes, ignoring ``-NONE-`` leaves).
    report : SkipReport, optional
        Error policy for bad lines and leaf/token mismatches (default: raise).

    Returns
    -------
    list of TreeRecord
        One per line, in order; placeholders for lines skipped under the skip policy.
    """
    path = _existing(Path(path))
    report = _default_report(report)
    lines = _read_text(path).splitlines()
    token_lines = read_token_lines(tokens_path) if tokens_path is not None else None
    if token_lines is not None and len(token_lines) != len(lines):
        raise HiCLIPError(f"{path} has {len(lines)} lines but token file {tokens_path} has "
                          f"{len(token_lines)}; they must pair line by line")
    records: list[TreeRecord] = []
    for number, text in enumerate(lines, start=1):
        expected = token_lines[number - 1].tokens if token_lines is not None else []
        if not text.strip():
            records.append(_handle(report, located(path, number, "blank line where a tree was expected"),
                                   "blank tree line", str(path), number, expected))
            continue
        try:
            tree = parse_bracket_string(text, style)
        except HiCLIPError as error:
            records.append(_handle(report, located(path, number, str(error)), "malformed tree",
                                   str(path), number, expected))
            continue
        record = _record(tree, str(path), number)
        if token_lines is not None and not tokens_match(record.surface_tokens(), expected):
            message = (f"tree leaves differ from {tokens_path}:{number} "
                       f"({first_difference(record.surface_tokens(), expected)})")
            records.append(_handle(report, located(path, number, message), "leaves differ from tokens",
                                   str(path), number, record.tokens))
            continue
        records.append(record)
    return records


def read_token_lines(path: str | Path) -> list[TokenLine]:
    """Read a plain text file with one tokenized (whitespace-separated) sentence per line."""
    path = _existing(Path(path))
    return [TokenLine(tokens=line.split(), source=str(path), line=i)
            for i, line in enumerate(_read_text(path).splitlines(), start=1)]


def read_vgnsl_json(path: str | Path, tree_key: str | None = None, split: str | None = None,
                    report: SkipReport | None = None) -> list[TreeRecord]:
    """Read the captions of the VG-NSL join file (``joint_coco_vgnsl_overlap.json``).

    Parameters
    ----------
    path : str or Path
        A JSON list of images, each with ``vgnsl_parsed_captions``.
    tree_key : str, optional
        Which tree of each caption: ``vgnsl_gold_unlabeled_tree`` (default; present only for
        the VG-NSL test split) or ``benepar_en2_tree``.
    split : str, optional
        Keep only captions whose ``vgnsl_split`` equals this (e.g. ``test``).
    report : SkipReport, optional
        Error policy for captions without the tree or with leaves differing from the caption.
    """
    path = _existing(Path(path))
    report = _default_report(report)
    key = tree_key or VGNSL_DEFAULT_TREE_KEY
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise located(path, error.lineno, f"invalid JSON: {error.msg}") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise located(path, None, "expected a JSON list of image entries with 'vgnsl_parsed_captions'")
    records: list[TreeRecord] = []
    for image in data:
        for j, cap in enumerate(image.get("vgnsl_parsed_captions") or []):
            if split is not None and cap.get("vgnsl_split") != split:
                continue
            item = f"image {image.get('image_id')} caption {j}"
            tokens = str(cap.get("caption_tokenized", "")).split()
            text = cap.get(key)
            if not text:
                hint = " (only the VG-NSL test split has it: add --split test)" if key == VGNSL_DEFAULT_TREE_KEY else ""
                error = HiCLIPError(f"{path} ({item}): no {key!r}{hint}")
                records.append(_handle(report, error, f"no {key}", str(path), None, tokens, item))
                continue
            try:
                tree = parse_bracket_string(text, "auto")
            except HiCLIPError as error:
                records.append(_handle(report, HiCLIPError(f"{path} ({item}): {error}"), "malformed tree",
                                       str(path), None, tokens, item))
                continue
            record = _record(tree, str(path), None, item)
            record.meta = {"image_id": image.get("image_id"), "vgnsl_line": cap.get("line")}
            if tokens and not tokens_match(record.surface_tokens(), tokens):
                error = HiCLIPError(f"{path} ({item}): tree leaves differ from caption_tokenized "
                                    f"({first_difference(record.surface_tokens(), tokens)})")
                records.append(_handle(report, error, "leaves differ from tokens", str(path), None,
                                       record.tokens, item))
                continue
            records.append(record)
    return records


def jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, record)`` for the non-blank lines of a JSONL file (UTF-8; invalid
    JSON or a line that is not an object is an error naming ``path:line``)."""
    for number, text in enumerate(_read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise located(path, number, f"invalid JSON: {error.msg}") from None
        if not isinstance(value, dict):
            raise located(path, number, "expected a JSON object")
        yield number, value


def _entry_record(text, missing: str, report: SkipReport, path: Path, number: int, tokens: list[str],
                  item: str) -> TreeRecord:
    """The tree of one JSONL entry, or a counted placeholder when it is absent or malformed."""
    if not text:
        return _handle(report, located(path, number, missing), "no tree", str(path), number, tokens, item)
    try:
        tree = parse_bracket_string(str(text), "auto")
    except HiCLIPError as error:
        return _handle(report, located(path, number, f"{item}: {error}"), "malformed tree",
                       str(path), number, tokens, item)
    return _record(tree, str(path), number, item)


def read_manifest_trees(path: str | Path, split: str | None = None,
                        report: SkipReport | None = None) -> list[TreeRecord]:
    """Read the reference trees of a hiclip dataset manifest, captions flattened in order.

    Parameters
    ----------
    path : str or Path
        ``manifest.jsonl`` or the dataset folder holding it.
    split : str, optional
        Keep only records whose ``split`` equals this.
    report : SkipReport, optional
        Error policy for captions without a tree, malformed trees and leaves differing from the
        caption's ``tokens`` (or its whitespace-split caption).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.jsonl"
    path = _existing(path)
    report = _default_report(report)
    records: list[TreeRecord] = []
    for number, rec in jsonl_records(path):
        if split is not None and rec.get("split") != split:
            continue
        captions = rec.get("captions") or []
        trees = rec.get("trees")
        tokens_list = rec.get("tokens")
        if trees is None:
            # every caption of the record lacks its tree: a counted skip each under a skip policy
            message = f"record {rec.get('id')!r} has no 'trees' (no reference trees in this manifest?)"
            for i, caption in enumerate(captions):
                records.append(_handle(report, located(path, number, message), "no tree", str(path), number,
                                       str(caption).split(), f"caption {i}"))
            continue
        if len(trees) != len(captions):
            raise located(path, number, f"{len(trees)} trees for {len(captions)} captions")
        for i, (caption, text) in enumerate(zip(captions, trees)):
            item = f"caption {i}"
            if tokens_list is not None and i < len(tokens_list) and tokens_list[i] is not None:
                tokens = [str(t) for t in tokens_list[i]]
            else:
                tokens = str(caption).split()
            record = _entry_record(text, f"{item} has no tree", report, path, number, tokens, item)
            if not record.ok:
                records.append(record)
                continue
            if not tokens_match(record.surface_tokens(), tokens):
                message = f"{item}: tree leaves differ from its tokens ({first_difference(record.surface_tokens(), tokens)})"
                records.append(_handle(report, located(path, number, message), "leaves differ from tokens",
                                       str(path), number, record.tokens, item))
                continue
            records.append(record)
    return records


# --------------------------------------------------------------------------- format detection


def detect_format(path: str | Path) -> str:
    """Guess a tree file's format from its name and first lines (see the module docstring).

    Raises
    ------
    HiCLIPError
        If the path does not exist or the content fits no known format.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "manifest.jsonl").is_file():
            return "manifest"
        if any(path.rglob("*.mrg")):
            return "ptb"
        raise located(path, None, "folder holds neither manifest.jsonl nor .mrg files")
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix == ".mrg":
        return "ptb"
    if suffix == ".json":
        return "vgnsl-json"
    if suffix == ".jsonl":
        if path.name == "manifest.jsonl":
            return "manifest"
        for number, rec in jsonl_records(path):
            if "text" in rec:
                return "predictions"
            if "captions" in rec:
                return "manifest"
            raise located(path, number, "cannot tell a prediction JSONL ('text' entries) from a manifest "
                                        "('captions'): pass the format explicitly")
        empty = "the file is empty" if path.stat().st_size == 0 else "the file holds only blank lines"
        raise located(path, None, f"no predictions or manifest records ({empty})")
    first = next(((i, ln) for i, ln in enumerate(_read_text(path).splitlines(), 1) if ln.strip()), None)
    if first is None:
        raise located(path, None, "file is empty")
    number, line = first
    if not line.lstrip().startswith("("):
        return "plain"
    if line.count("(") != line.count(")"):
        return "ptb"  # a tree spread over several lines
    return "unlabeled" if is_unlabeled_style(line) else "lines"


def read_trees(path: str | Path, fmt: str | None = None, *, tokens_path: str | Path | None = None,
               split: str | None = None, tree_key: str | None = None,
               report: SkipReport | None = None) -> list[TreeRecord]:
    """Read trees in any supported format (auto-detected unless ``fmt`` is given).

    Parameters
    ----------
    path : str or Path
        File or folder.
    fmt : str, optional
        One of ``FORMATS`` except ``plain``; ``None`` detects it (``detect_format``).
    tokens_path : str or Path, optional
        Token file to check leaves against (``lines`` and ``unlabeled`` formats).
    split : str, optional
        Split filter (``manifest``, ``predictions``, ``vgnsl-json``).
    tree_key : str, optional
        Which tree to take (``predictions``: key of ``trees``; ``vgnsl-json``: caption field).
    report : SkipReport, optional
        Error policy (default: raise).

    Returns
    -------
    list of TreeRecord
    """
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise HiCLIPError(f"unknown tree format {fmt!r}: use one of {', '.join(FORMATS)}")
    if tokens_path is not None and fmt not in ("lines", "unlabeled"):
        raise HiCLIPError(f"a token file can only be checked against one-tree-per-line formats, not {fmt!r}")
    if split is not None and fmt not in SPLIT_FORMATS:
        raise HiCLIPError(f"--split applies to manifest, predictions and vgnsl-json files, not {fmt!r} ({path})")
    if fmt == "ptb":
        return read_ptb(path)
    if fmt in ("lines", "unlabeled"):
        style = "labeled" if fmt == "lines" else "unlabeled"
        return read_tree_lines(path, style=style, tokens_path=tokens_path, report=report)
    if fmt == "vgnsl-json":
        return read_vgnsl_json(path, tree_key=tree_key, split=split, report=report)
    if fmt == "manifest":
        return read_manifest_trees(path, split=split, report=report)
    if fmt == "predictions":
        raise HiCLIPError(f"{path} is a prediction JSONL: its trees are read by "
                          "induction.tree_evaluation.read_tree_records (the prediction format's reader)")
    raise HiCLIPError(f"{path} holds plain sentences, not trees (use it with --silver, or as a token file)")


def tree_to_string(tree: nltk.Tree) -> str:
    """One-line PTB bracket string of a tree, with ``(``/``)`` words escaped as ``-LRB-``/``-RRB-``."""

    def fmt(node: nltk.Tree | str) -> str:
        if isinstance(node, str):
            return escape_leaf(node)
        return "(" + " ".join([node.label() or UNLABELED] + [fmt(c) for c in node]) + ")"

    return fmt(tree)


def _existing(path: Path) -> Path:
    if not path.exists():
        raise located(path, None, "no such file or folder")
    return path


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise located(path, None, f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise located(path, None, f"cannot read: {error.strerror}") from None
