"""The ``evalb`` convention: bracket counts exactly as the C EVALB counts them with COLLINS.prm.

EVALB (Sekine and Collins 1997; ``../shared/tools/evalb``) is the parsing community's scorer. Its
counting differs from the ``standard`` and ``vgnsl`` conventions of ``induction.spans``:

* Brackets are every non-terminal node, counted as a **multiset**: the whole-sentence bracket,
  single-word brackets (``(NP (PRP he))``) and every node of a unary chain (``(S (VP ...))`` over
  the same words) each count once. A node whose only child is a word is that word's pre-terminal
  (its POS tag), not a bracket.
* **Deletions** (COLLINS.prm, ``DELETE_LABEL``): a pre-terminal labeled ``TOP -NONE- , : `` '' .``
  is deleted with its word. Other punctuation tags (``-LRB- -RRB- $ #``) are words like any other.
  A non-terminal whose label is in the list (``TOP``) is deleted but its children stay. A bracket
  left without words is deleted too.
* Labels lose their function tags: everything from the first ``-`` or ``=`` (``NP-SBJ-1`` -> ``NP``).
  With ``labeled`` (COLLINS.prm's ``LABELED 1``) a test bracket matches a gold bracket of the
  same span and an equal label, ``ADVP`` and ``PRT`` counting as equal (``EQ_LABEL``). Unlabeled
  (``LABELED 0``) needs the same span only. Each gold bracket takes the first unmatched test
  bracket that fits, so duplicates match as a multiset.
* Length (for the ``len <= 40`` summary, ``CUTOFF_LEN``) counts the gold words whose tag is not
  ``-NONE-`` (``DELETE_LABEL_FOR_LENGTH``): punctuation counts.

How our trees meet EVALB's input:

* Outer wrappers labeled ``''``, ``ROOT`` or ``TOP`` are removed when trees are read
  (``hiclip.data.trees``). For ``TOP`` (how EVALB's gold files are written) that is exactly
  ``DELETE_LABEL TOP``. A ``ROOT`` wrapper, which EVALB would count as a bracket, is removed too.
* Predicted trees carry no POS tags: their words are aligned to the gold sentence as under the
  other conventions, and the gold's word deletions are applied to them. EVALB behaves the same
  way when the test file carries the gold tags, which is what a parser given gold tags writes.
  Given other tags, EVALB would instead report a length mismatch for that sentence. Bare words
  (predicted trees have no pre-terminals) are read as if each had one, and the root of an
  untagged tree is a bracket even over one word.
* Labels: our models' trees are unlabeled (``S`` root, ``X`` inside). Unlabeled scoring is
  therefore the default. ``labeled`` is meant for labeled predictions, such as parser or
  silver trees.
* Tagging accuracy is not computed. With the gold tags copied onto the prediction it would be
  100% by construction.
* Per sentence, EVALB prints precision 0 when a side has no bracket. Its summary F-measure is
  NaN when P + R = 0. Here P is ``None`` without test brackets and R is ``None`` without gold
  brackets. F1 is 0 when only one of them is undefined or both are 0, and ``None`` when neither
  side has a bracket.

EVALB's status per sentence: a pair whose words differ is an *error* sentence (here a token
mismatch: an error, or counted under ``--on-mismatch skip``; unreadable inputs skipped under
``--on-error skip`` count as errors too). A sentence left with no word after deletion is a
*skip* sentence. Neither enters the totals.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nltk
import numpy as np

from hiclip.data.trees import UNLABELED, TreeRecord, first_difference
from hiclip.errors import HiCLIPError, SkipReport, located
from induction.tree_scoring import GoldSentence, align_prediction, baseline_spans, f1_score

Bracket = tuple[int, int, str]

EVALB = "evalb"  # the convention's name, as --convention takes it

EVALB_BASELINES = ("left", "right", "balanced")


@dataclass(frozen=True)
class EvalbParams:
    """The settings of an EVALB parameter file (defaults: COLLINS.prm, unlabeled).

    Attributes
    ----------
    labeled : bool
        ``LABELED 1``: a match needs an equal label too.
    delete_labels : tuple of str
        ``DELETE_LABEL``: pre-terminals with these tags are deleted with their word; non-terminals
        with these labels lose their bracket only.
    delete_labels_for_length : tuple of str
        ``DELETE_LABEL_FOR_LENGTH``: tags not counted in a sentence's length.
    equivalent_labels : tuple of (str, str)
        ``EQ_LABEL`` pairs, compared both ways.
    cutoff_length : int
        ``CUTOFF_LEN``: the second summary covers sentences of at most this length.
    """

    labeled: bool = False
    delete_labels: tuple[str, ...] = ("TOP", "-NONE-", ",", ":", "``", "''", ".")
    delete_labels_for_length: tuple[str, ...] = ("-NONE-",)
    equivalent_labels: tuple[tuple[str, str], ...] = (("ADVP", "PRT"),)
    cutoff_length: int = 40

    @property
    def prm_name(self) -> str:
        """``COLLINS.prm with LABELED 0|1`` when every other setting is COLLINS.prm's."""
        collins = EvalbParams(labeled=self.labeled) == self
        return f"{'COLLINS.prm' if collins else 'a custom .prm'} with LABELED {int(self.labeled)}"

    def same_label(self, a: str, b: str) -> bool:
        """EVALB's ``label_comp``: equal strings, or an ``EQ_LABEL`` pair in either order."""
        return a == b or any((a, b) in ((x, y), (y, x)) for x, y in self.equivalent_labels)

    def deletes_bracket(self, label: str) -> bool:
        return any(self.same_label(label, d) for d in self.delete_labels)


COLLINS = EvalbParams()


def parse_prm(text: str, source: str = "parameter file") -> EvalbParams:
    """Read the keys of an EVALB ``.prm`` file that decide the bracket counts.

    ``DEBUG`` and ``MAX_ERROR`` (reporting only) are read but not kept. ``QUOTE_LABEL`` and
    ``EQ_WORD`` (not supported here) and unknown keys are errors naming the line.
    """
    labeled, cutoff = 1, 40
    delete: list[str] = []
    for_length: list[str] = []
    equivalent: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if line.startswith("#") or len(line) < 3:
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "LABELED":
            labeled = int(value)
        elif key == "CUTOFF_LEN":
            cutoff = int(value)
        elif key == "DELETE_LABEL":
            delete.append(value)
        elif key == "DELETE_LABEL_FOR_LENGTH":
            for_length.append(value)
        elif key == "EQ_LABEL":
            pair = value.split()
            if len(pair) != 2:
                raise located(source, number, "EQ_LABEL needs two labels")
            equivalent.append((pair[0], pair[1]))
        elif key in ("QUOTE_LABEL", "EQ_WORD"):
            raise located(source, number, f"{key} is not supported by the evalb convention")
        elif key not in ("DEBUG", "MAX_ERROR"):
            raise located(source, number, f"unknown EVALB parameter {key!r}")
    return EvalbParams(bool(labeled), tuple(delete), tuple(for_length), tuple(equivalent), cutoff)


def trim_label(label: str) -> str:
    """EVALB's ``modify_label``: cut the label at its first ``-`` or ``=`` (function tags)."""
    for i, c in enumerate(label):
        if c in "-=":
            return label[:i]
    return label


def _is_preterminal(node: nltk.Tree) -> bool:
    return len(node) == 1 and isinstance(node[0], str)


def evalb_keep(record: TreeRecord, params: EvalbParams) -> np.ndarray:
    """Which leaves EVALB keeps: those whose tag is not a ``DELETE_LABEL`` (all without tags)."""
    if record.tags is None:
        return np.ones(len(record.tokens), dtype=bool)
    return np.fromiter((t not in params.delete_labels for t in record.tags), dtype=bool,
                       count=len(record.tokens))


def evalb_length(record: TreeRecord, params: EvalbParams) -> int:
    """EVALB's sentence length: gold leaves whose tag is not in ``DELETE_LABEL_FOR_LENGTH``."""
    if record.tags is None:
        return len(record.tokens)
    return sum(1 for t in record.tags if t not in params.delete_labels_for_length)


def evalb_brackets(tree: nltk.Tree, keep: np.ndarray, params: EvalbParams, tagged: bool = True) -> list[Bracket]:
    """The brackets EVALB counts in ``tree``, in pre-order (EVALB's order).

    Parameters
    ----------
    tree : nltk.Tree
    keep : numpy.ndarray
        Shape (n_leaves,), bool: the leaves that survive deletion.
    params : EvalbParams
    tagged : bool
        Whether the tree's words sit under POS pre-terminals (a treebank tree). Without tags (a
        predicted tree) the root is a bracket even over a single word, ``(S word)``, as it is
        once pre-terminals are added for EVALB (``(S (NN word))``).

    Returns
    -------
    list of (start, end, label)
        Over kept-word indices, end exclusive, labels trimmed; brackets without kept words and
        deleted labels are left out. Duplicates (unary chains) stay.
    """
    prefix = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
    out: list[Bracket] = []

    def walk(node: nltk.Tree, leaf: int) -> int:
        if _is_preterminal(node) and (tagged or node is not tree):
            return leaf + 1
        index = len(out)
        out.append((0, 0, ""))
        pos = leaf
        for child in node:
            pos = pos + 1 if isinstance(child, str) else walk(child, pos)
        out[index] = (int(prefix[leaf]), int(prefix[pos]), trim_label(node.label()))
        return pos

    walk(tree, 0)
    return [b for b in out if b[0] < b[1] and not params.deletes_bracket(b[2])]


def match_brackets(gold: Sequence[Bracket], test: Sequence[Bracket], params: EvalbParams) -> int:
    """EVALB's matching: each gold bracket takes the first unmatched test bracket of the same
    span (and, labeled, an equal label)."""
    by_span: dict[tuple[int, int], list[str | None]] = {}
    for s, e, label in test:
        by_span.setdefault((s, e), []).append(label)
    matched = 0
    for s, e, label in gold:
        candidates = by_span.get((s, e))
        if not candidates:
            continue
        for k, other in enumerate(candidates):
            if other is not None and (not params.labeled or params.same_label(label, other)):
                candidates[k] = None
                matched += 1
                break
    return matched


def count_crossing(gold: Sequence[Bracket], test: Sequence[Bracket]) -> int:
    """Test brackets that cross at least one gold bracket (EVALB counts on the test side)."""
    if not gold or not test:
        return 0
    g = np.asarray([(s, e) for s, e, _ in gold])
    t = np.asarray([(s, e) for s, e, _ in test])
    gs, ge = g[:, :1], g[:, 1:]
    ts, te = t[:, 0][None, :], t[:, 1][None, :]
    cross = ((gs < ts) & (ge > ts) & (ge < te)) | ((gs > ts) & (gs < te) & (ge > te))
    return int(cross.any(axis=0).sum())


# --------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class EvalbSentence:
    """One sentence as EVALB prints it. ``status``: 0 valid, 1 error, 2 skip."""

    length: int
    status: int
    matched: int = 0
    gold: int = 0
    test: int = 0
    crossing: int = 0
    words: int = 0


def _ratio(a: int, b: int, scale: float = 100.0) -> float | None:
    return scale * a / b if b else None


@dataclass
class EvalbSummary:
    """EVALB's ``=== Summary ===`` block for a set of sentences (percent, crossing per sentence)."""

    n_sentences: int
    n_error: int
    n_skip: int
    matched: int
    gold: int
    test: int
    crossing: int
    words: int
    complete: int
    no_crossing: int
    two_or_less_crossing: int

    @property
    def n_valid(self) -> int:
        return self.n_sentences - self.n_error - self.n_skip

    @property
    def recall(self) -> float | None:
        return _ratio(self.matched, self.gold)

    @property
    def precision(self) -> float | None:
        return _ratio(self.matched, self.test)

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None and r is None:
            return None
        return f1_score(p or 0.0, r or 0.0)

    @property
    def complete_match(self) -> float | None:
        return _ratio(self.complete, self.n_valid)

    @property
    def average_crossing(self) -> float | None:
        return _ratio(self.crossing, self.n_valid, 1.0)

    @property
    def no_crossing_rate(self) -> float | None:
        return _ratio(self.no_crossing, self.n_valid)

    @property
    def two_or_less_crossing_rate(self) -> float | None:
        return _ratio(self.two_or_less_crossing, self.n_valid)

    def to_dict(self) -> dict[str, Any]:
        return {"n_sentences": self.n_sentences, "n_error": self.n_error, "n_skip": self.n_skip,
                "n_valid": self.n_valid, "matched": self.matched, "gold": self.gold, "test": self.test,
                "recall": self.recall, "precision": self.precision, "f1": self.f1,
                "complete_match": self.complete_match, "average_crossing": self.average_crossing,
                "no_crossing": self.no_crossing_rate, "two_or_less_crossing": self.two_or_less_crossing_rate,
                "crossing": self.crossing, "words": self.words, "tagging_accuracy": None}


def summarize_evalb(sentences: Iterable[EvalbSentence]) -> EvalbSummary:
    """Add up sentences as EVALB's ``individual_result`` does (error and skip ones only counted)."""
    rows = list(sentences)
    valid = [s for s in rows if s.status == 0]
    return EvalbSummary(
        n_sentences=len(rows), n_error=sum(s.status == 1 for s in rows), n_skip=sum(s.status == 2 for s in rows),
        matched=sum(s.matched for s in valid), gold=sum(s.gold for s in valid), test=sum(s.test for s in valid),
        crossing=sum(s.crossing for s in valid), words=sum(s.words for s in valid),
        complete=sum(s.gold == s.test == s.matched for s in valid),
        no_crossing=sum(s.crossing == 0 for s in valid), two_or_less_crossing=sum(s.crossing <= 2 for s in valid))


@dataclass
class EvalbReport:
    """EVALB's scores of one prediction (or baseline): all sentences and ``len <= cutoff``."""

    params: EvalbParams
    prediction: str
    sentences: list[EvalbSentence]
    all: EvalbSummary
    short: EvalbSummary
    skipped: dict[str, int] = field(default_factory=dict)
    skip_examples: list[str] = field(default_factory=list)
    n_filtered: int = 0

    @property
    def f1(self) -> float | None:
        return self.all.f1

    def to_dict(self, include_sentences: bool = False) -> dict[str, Any]:
        """A JSON-ready dict: bracket counts (``brackets``: matched, gold, test) and P/R/F over all
        sentences, and EVALB's two summaries (``all``, ``len<=N``)."""
        out: dict[str, Any] = {
            "convention": "evalb", "convention_description": describe(self.params),
            "labeled": self.params.labeled, "prediction": self.prediction, "units": "percent",
            "brackets": {"matched": self.all.matched, "gold": self.all.gold, "test": self.all.test},
            "recall": self.all.recall, "precision": self.all.precision, "f1": self.all.f1,
            "all": self.all.to_dict(), f"len<={self.params.cutoff_length}": self.short.to_dict(),
            "skipped": dict(self.skipped), "skip_examples": list(self.skip_examples),
            "n_filtered": self.n_filtered,
            "tagging_accuracy": "not computed: predicted trees carry no POS tags (the gold's are copied)",
        }
        if include_sentences:
            out["sentences"] = [vars(s) for s in self.sentences]
        return out

    def format(self, gold: str = "") -> str:
        """EVALB's summary blocks, plus the bracket counts, as text."""
        lines = [f"convention     evalb: {describe(self.params)}", f"prediction     {self.prediction}"]
        if gold:
            lines.append(f"gold           {gold}")
        if self.skipped:
            lines.append("skipped        " + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
                         + " (EVALB's error sentences)")
            lines += [f"  e.g. {e}" for e in self.skip_examples[:3]]
        if self.n_filtered:
            lines.append(f"left out       {self.n_filtered} sentences longer than --max-length")
        for title, summary in (("All", self.all), (f"len<={self.params.cutoff_length}", self.short)):
            lines += [f"-- {title} --", *_summary_lines(summary)]
        return "\n".join(lines)


def _summary_lines(s: EvalbSummary) -> list[str]:
    def num(value: float | None) -> str:
        return "undefined" if value is None else f"{value:6.2f}"

    return [
        f"Number of sentence        = {s.n_sentences:6d}",
        f"Number of Error sentence  = {s.n_error:6d}",
        f"Number of Skip  sentence  = {s.n_skip:6d}",
        f"Number of Valid sentence  = {s.n_valid:6d}",
        f"Bracketing Recall         = {num(s.recall)}",
        f"Bracketing Precision      = {num(s.precision)}",
        f"Bracketing FMeasure       = {num(s.f1)}",
        f"Complete match            = {num(s.complete_match)}",
        f"Average crossing          = {num(s.average_crossing)}",
        f"No crossing               = {num(s.no_crossing_rate)}",
        f"2 or less crossing        = {num(s.two_or_less_crossing_rate)}",
        "Tagging accuracy          = not computed (the gold tags are copied onto the prediction)",
        f"Brackets matched / gold / test = {s.matched} / {s.gold} / {s.test}",
    ]


def describe(params: EvalbParams) -> str:
    """One line naming what the evalb convention counts under ``params``."""
    kind = "labeled (EQ_LABEL " + ", ".join(f"{a}={b}" for a, b in params.equivalent_labels) + ")" \
        if params.labeled else "unlabeled"
    return (f"EVALB ({params.prm_name}): {kind} brackets as a multiset, whole-sentence, single-word and "
            f"unary brackets counted; words tagged {' '.join(params.delete_labels)} deleted; function "
            "tags trimmed")


# --------------------------------------------------------------------------- pairing


@dataclass
class EvalbGold:
    """A reference tree reduced the EVALB way: kept-word mask, brackets and EVALB's length."""

    record: TreeRecord
    keep: np.ndarray
    brackets: list[Bracket]
    length: int

    @property
    def words(self) -> int:
        return int(self.keep.sum())


def reduce_gold_evalb(record: TreeRecord, params: EvalbParams) -> EvalbGold:
    keep = evalb_keep(record, params)
    return EvalbGold(record, keep, evalb_brackets(record.tree, keep, params), evalb_length(record, params))


def _sentence(gold: EvalbGold, test: list[Bracket], params: EvalbParams) -> EvalbSentence:
    if gold.words == 0:
        return EvalbSentence(gold.length, 2)
    return EvalbSentence(gold.length, 0, match_brackets(gold.brackets, test, params), len(gold.brackets),
                         len(test), count_crossing(gold.brackets, test), gold.words)


def _report(rows: list[EvalbSentence], params: EvalbParams, prediction: str, skipped: dict[str, int],
            examples: list[str], n_filtered: int) -> EvalbReport:
    short = [s for s in rows if s.length <= params.cutoff_length]
    return EvalbReport(params, prediction, rows, summarize_evalb(rows), summarize_evalb(short),
                       dict(skipped), list(examples), n_filtered)


@dataclass
class EvalbCorpus:
    """Reduced references, the predicted brackets paired with them (``None`` when only
    references were read, for baselines) and the error sentences."""

    params: EvalbParams
    golds: list[EvalbGold | None] = field(default_factory=list)
    tests: list[list[Bracket] | None] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    skip_examples: list[str] = field(default_factory=list)
    n_filtered: int = 0
    prediction: str = ""

    def error(self, length: int, reason: str, message: str) -> None:
        self.golds.append(None)
        self.tests.append(None)
        self.errors.append(length)
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.skip_examples) < 5:
            self.skip_examples.append(message)

    @property
    def n_scored(self) -> int:
        return sum(g is not None for g in self.golds)


def pair_evalb(preds: Sequence[TreeRecord] | None, golds: Sequence[TreeRecord], params: EvalbParams,
               mismatch: SkipReport | None = None, max_length: int | None = None) -> EvalbCorpus:
    """Reduce references the EVALB way and pair predictions with them, in order.

    A placeholder (skipped input) or, under the ``skip`` mismatch policy, a pair whose words
    differ is an EVALB error sentence. ``max_length`` leaves out sentences whose EVALB length is
    greater. Raises ``HiCLIPError`` for different sentence counts or a mismatch under ``raise``.
    """
    mismatch = mismatch if mismatch is not None else SkipReport("raise")
    if preds is not None and len(preds) != len(golds):
        p_src = preds[0].source if preds else "predictions"
        g_src = golds[0].source if golds else "gold"
        raise HiCLIPError(f"{len(preds)} predicted sentences ({p_src}) but {len(golds)} gold sentences "
                          f"({g_src}): they are paired in order, so the counts must be equal")
    corpus = EvalbCorpus(params, prediction=preds[0].source if preds else "")
    for index, gold in enumerate(golds):
        pred = preds[index] if preds is not None else None
        if not gold.ok or (pred is not None and not pred.ok):
            bad = gold if not gold.ok else pred
            length = evalb_length(gold, params) if gold.ok else len(gold.tokens)
            corpus.error(length, bad.reason or "skipped input", bad.problem or bad.where)
            continue
        reduced = reduce_gold_evalb(gold, params)
        if max_length is not None and reduced.length > max_length:
            corpus.n_filtered += 1
            continue
        test = None
        if pred is not None:
            keep = align_prediction(pred.tokens, GoldSentence(gold, reduced.keep, frozenset()))
            if keep is None:
                message = (f"{pred.where}: sentence {index + 1} does not match gold {gold.where} "
                           f"({first_difference(pred.tokens, gold.surface_tokens())})")
                mismatch.handle(HiCLIPError(message), "token mismatch")
                corpus.error(reduced.length, "token mismatch", message)
                continue
            test = evalb_brackets(pred.tree, keep, params, tagged=pred.tags is not None)
        corpus.golds.append(reduced)
        corpus.tests.append(test)
    return corpus


def _rows(corpus: EvalbCorpus, make: Callable[[EvalbGold, list[Bracket] | None], list[Bracket]]
          ) -> list[EvalbSentence]:
    errors = iter(corpus.errors)
    return [EvalbSentence(next(errors), 1) if g is None else _sentence(g, make(g, t), corpus.params)
            for g, t in zip(corpus.golds, corpus.tests)]


def score_evalb_paired(corpus: EvalbCorpus) -> EvalbReport:
    """EVALB's scores of the predictions held by ``corpus``."""
    if any(t is None for g, t in zip(corpus.golds, corpus.tests) if g is not None):
        raise ValueError("this corpus holds no predictions (score a baseline instead)")
    rows = _rows(corpus, lambda g, t: t)
    return _report(rows, corpus.params, corpus.prediction, corpus.skipped, corpus.skip_examples, corpus.n_filtered)


def check_evalb_baseline(name: str) -> None:
    if name not in EVALB_BASELINES:
        raise HiCLIPError(f"the evalb convention scores the baselines {', '.join(EVALB_BASELINES)}, not {name!r} "
                          "(EVALB scores one test tree per sentence, so random trees have no single count)")


def baseline_brackets(name: str, n: int) -> list[Bracket]:
    """A baseline tree over n kept words as EVALB brackets: its binary spans plus the root, which
    a one-word tree has too; labels ``X`` (they never match under ``labeled``)."""
    check_evalb_baseline(name)
    spans = baseline_spans(name, n) | ({(0, n)} if n else set())
    return sorted(((s, e, UNLABELED) for s, e in spans), key=lambda b: (b[0], -b[1]))


def score_evalb_baseline(corpus: EvalbCorpus, name: str) -> EvalbReport:
    """EVALB's scores of a baseline tree over the kept words of each reference in ``corpus``."""
    check_evalb_baseline(name)
    label = f"{name}-branching" if name != "balanced" else name
    rows = _rows(corpus, lambda g, t: baseline_brackets(name, g.words))
    return _report(rows, corpus.params, label, corpus.skipped, corpus.skip_examples, corpus.n_filtered)
