"""Unlabeled bracket F1 of predicted trees against reference trees, and trivial baselines.

Metrics (all in percent, method.md section 6), for a convention from ``induction.spans``:

* per sentence: precision, recall and F1 of the predicted span set against the gold span set;
* ``sentence_f1``: the mean per-sentence F1 over sentences with at least ``convention.min_length``
  tokens (2); sentences whose gold span set is empty follow the ``empty_gold`` policy:

  ``"prpn"`` (default)
      recall := 1, and precision := 1 if the predicted set is empty too, so such a sentence
      scores F1 = 1 when the prediction is empty as well and 0 otherwise. This is the rule of
      PRPN's ``test_phrase_grammar.py``, used by ON-LSTM, Tree-Transformer, and by compound-pcfg's
      ``train.py`` validation, its ``eval.py`` since commit 038e19c, and its
      ``trivial_trees.py``/``compare_trees.py`` baseline scripts (the source of the published
      right-branching 39.5; ``trivial_trees.py`` survives only in the repository's history). A
      non-empty gold set with an empty prediction scores 0.
  ``"skip"``
      compound-pcfg's early ``eval.py`` (e.g. commit d999980): a sentence whose predicted *or*
      gold set is empty is left out of the sentence-level average (it still counts in the
      corpus-level numbers).

* ``corpus_f1``, ``precision``, ``recall``: micro-averaged over all spans of all scored sentences
  (precision is 0 when nothing is predicted but gold spans exist, recall 0 in the converse case).
  When neither side has a single span, all three are 0/0: undefined, ``None`` (``null`` in JSON,
  ``undefined`` in text), not 0. ``sentence_f1`` is ``None`` likewise when no sentence enters the
  average (e.g. ``skip`` and every span set empty);
* mean numbers of predicted and gold spans per sentence: a flat n-ary prediction has few spans and
  therefore a high precision; these two numbers make that visible;
* a breakdown by sentence length (tokens under the convention);
* ``n_scored`` pairs scored, ``n_skipped`` with reasons.

Baselines (built over the tokens the convention keeps, as in the literature where the baseline
sentences are already punctuation-free under the standard convention):
left-branching ``(((a b) c) d)``, right-branching ``(a (b (c d)))``, balanced (split a span of
n tokens after ``ceil(n / 2)`` tokens, recursively) and random binary trees. The random trees draw
a split point uniformly from the n - 1 gaps of each span, recursively (``scheme="split"``, the
uniform-split-point distribution); ``scheme="shift_reduce"`` instead draws compound-pcfg's
``get_random_tree`` (shift or reduce with probability 1/2 whenever both are legal). Random scores
are averaged over seeds ``0 .. seeds - 1`` (numpy ``default_rng(seed)``), with their standard
deviation reported.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from hiclip.data.trees import TreeRecord, first_difference, tokens_match
from hiclip.errors import HiCLIPError, SkipReport
from induction.spans import Convention, Span, constituent_intervals, convention_spans, get_convention, keep_mask

EMPTY_GOLD_POLICIES = ("prpn", "skip")
BASELINES = ("left", "right", "balanced", "random")
RANDOM_SCHEMES = ("split", "shift_reduce")
LENGTH_BUCKETS: tuple[tuple[int, int | None], ...] = (
    (1, 1), (2, 5), (6, 10), (11, 15), (16, 20), (21, 30), (31, 40), (41, None))


# --------------------------------------------------------------------------- per sentence


@dataclass(frozen=True)
class SentenceScore:
    """Counts and scores of one sentence (percent; ``f1 is None`` when out of the average)."""

    length: int
    n_pred: int
    n_gold: int
    n_match: int
    precision: float | None
    recall: float | None
    f1: float | None


def sentence_prf(n_pred: int, n_gold: int, n_match: int, empty_gold: str = "prpn"
                 ) -> tuple[float, float, float] | None:
    """Sentence precision, recall and F1 (fractions in [0, 1]) under an empty-gold policy.

    Returns ``None`` when the sentence is left out of the sentence-level average (policy
    ``skip`` and an empty predicted or gold set).
    """
    if empty_gold not in EMPTY_GOLD_POLICIES:
        raise HiCLIPError(f"unknown empty-gold policy {empty_gold!r}: use {' or '.join(EMPTY_GOLD_POLICIES)}")
    if empty_gold == "skip" and (n_pred == 0 or n_gold == 0):
        return None
    precision = n_match / n_pred if n_pred else 0.0
    recall = n_match / n_gold if n_gold else 0.0
    if n_gold == 0:
        recall = 1.0
        if n_pred == 0:
            precision = 1.0
    return precision, recall, f1_score(precision, recall)


def score_sentence(pred: frozenset[Span] | set[Span], gold: frozenset[Span] | set[Span], length: int,
                   convention: Convention, empty_gold: str = "prpn") -> SentenceScore:
    """Score one sentence's span sets (``length`` = tokens under the convention)."""
    n_match = len(pred & gold)
    prf = sentence_prf(len(pred), len(gold), n_match, empty_gold) if length >= convention.min_length else None
    if prf is None:
        return SentenceScore(length, len(pred), len(gold), n_match, None, None, None)
    p, r, f = prf
    return SentenceScore(length, len(pred), len(gold), n_match, 100 * p, 100 * r, 100 * f)


# --------------------------------------------------------------------------- corpus report


@dataclass
class BucketScore:
    """Scores of the sentences whose length falls in ``[low, high]`` (``high=None``: no bound)."""

    low: int
    high: int | None
    n: int
    n_sentence_f1: int
    sentence_f1: float | None
    corpus_f1: float | None
    pred_spans_per_sentence: float
    gold_spans_per_sentence: float

    @property
    def name(self) -> str:
        if self.high is None:
            return f"{self.low}+"
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass
class ScoreReport:
    """Bracket F1 of a set of sentence pairs (all scores in percent).

    A score is ``None`` where it is undefined (module docstring): corpus P/R/F1 when no sentence
    has a predicted or a gold span, sentence F1 when no sentence enters the average.
    ``seeds``/``std`` are filled for averaged random baselines: ``std`` maps a metric name to its
    standard deviation over seeds.
    """

    convention: Convention
    empty_gold: str
    sentence_f1: float | None
    corpus_f1: float | None
    precision: float | None
    recall: float | None
    n_scored: int
    n_sentence_f1: int
    n_short: int
    pred_spans_per_sentence: float
    gold_spans_per_sentence: float
    skipped: dict[str, int] = field(default_factory=dict)
    skip_examples: list[str] = field(default_factory=list)
    by_length: list[BucketScore] = field(default_factory=list)
    sentences: list[SentenceScore] = field(default_factory=list)
    prediction: str = ""
    seeds: list[int] | None = None
    std: dict[str, float] | None = None
    n_filtered: int = 0

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self, include_sentences: bool = False) -> dict:
        """A JSON-ready dict with at least ``sentence_f1``, ``corpus_f1``, ``n_scored``,
        ``n_skipped`` and ``convention``."""
        out = {
            "convention": self.convention.name,
            "convention_description": self.convention.description,
            "prediction": self.prediction,
            "units": "percent",
            "sentence_f1": self.sentence_f1,
            "corpus_f1": self.corpus_f1,
            "precision": self.precision,
            "recall": self.recall,
            "n_scored": self.n_scored,
            "n_sentence_f1": self.n_sentence_f1,
            "n_short": self.n_short,
            "n_skipped": self.n_skipped,
            "skipped": dict(self.skipped),
            "skip_examples": list(self.skip_examples),
            "n_filtered": self.n_filtered,
            "empty_gold": self.empty_gold,
            "spans": {"pred_per_sentence": self.pred_spans_per_sentence,
                      "gold_per_sentence": self.gold_spans_per_sentence},
            "by_length": [dict(bucket=b.name, **{k: v for k, v in asdict(b).items()}) for b in self.by_length],
        }
        if self.seeds is not None:
            out["seeds"] = list(self.seeds)
            out["std"] = dict(self.std or {})
        if include_sentences:
            out["sentences"] = [asdict(s) for s in self.sentences]
        return out


def f1_score(p: float, r: float) -> float:
    """The harmonic mean of precision and recall (fractions or percents alike); 0 when both are 0."""
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _micro(scores: Sequence[SentenceScore]) -> tuple[float | None, float | None, float | None]:
    """Corpus precision, recall, F1 in percent; all ``None`` (0/0) when there is no span at all."""
    tp = sum(s.n_match for s in scores)
    n_pred = sum(s.n_pred for s in scores)
    n_gold = sum(s.n_gold for s in scores)
    if n_pred == 0 and n_gold == 0:
        return None, None, None
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return 100 * p, 100 * r, 100 * f1_score(p, r)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarize(scores: Sequence[SentenceScore], convention: Convention, empty_gold: str,
              skipped: dict[str, int] | None = None, skip_examples: Sequence[str] = (),
              prediction: str = "", n_filtered: int = 0) -> ScoreReport:
    """Aggregate per-sentence scores into a ``ScoreReport`` (sentence-level and corpus-level F1)."""
    in_avg = [s.f1 for s in scores if s.f1 is not None]
    p, r, f = _micro(scores)
    buckets = []
    for low, high in LENGTH_BUCKETS:
        members = [s for s in scores if s.length >= low and (high is None or s.length <= high)]
        if not members:
            continue
        f1s = [s.f1 for s in members if s.f1 is not None]
        buckets.append(BucketScore(
            low=low, high=high, n=len(members), n_sentence_f1=len(f1s),
            sentence_f1=_mean(f1s) if f1s else None,
            corpus_f1=_micro(members)[2],
            pred_spans_per_sentence=_mean([s.n_pred for s in members]),
            gold_spans_per_sentence=_mean([s.n_gold for s in members])))
    return ScoreReport(
        convention=convention, empty_gold=empty_gold, sentence_f1=_mean_or_none(in_avg), corpus_f1=f,
        precision=p, recall=r, n_scored=len(scores), n_sentence_f1=len(in_avg),
        n_short=sum(1 for s in scores if s.length < convention.min_length),
        pred_spans_per_sentence=_mean([s.n_pred for s in scores]),
        gold_spans_per_sentence=_mean([s.n_gold for s in scores]),
        skipped=dict(skipped or {}), skip_examples=list(skip_examples), by_length=buckets,
        sentences=list(scores), prediction=prediction, n_filtered=n_filtered)


def score_span_sets(pairs: Iterable[tuple[Iterable[Span], Iterable[Span], int]],
                    convention: Convention | str, empty_gold: str = "prpn") -> ScoreReport:
    """Score ready-made span sets: ``pairs`` of ``(pred_spans, gold_spans, length)``."""
    convention = get_convention(convention)
    scores = [score_sentence(frozenset(p), frozenset(g), n, convention, empty_gold) for p, g, n in pairs]
    return summarize(scores, convention, empty_gold)


# --------------------------------------------------------------------------- trees against trees


@dataclass(frozen=True)
class GoldSentence:
    """A reference tree reduced under a convention.

    ``keep`` has shape (n_leaves,), bool; ``spans`` are over the kept tokens; ``kept`` are those
    tokens.
    """

    record: TreeRecord
    keep: np.ndarray
    spans: frozenset[Span]

    @property
    def length(self) -> int:
        return int(self.keep.sum())

    @property
    def kept(self) -> list[str]:
        return [w for w, k in zip(self.record.tokens, self.keep) if k]


def reduce_gold(record: TreeRecord, convention: Convention) -> GoldSentence:
    """Apply a convention to a reference tree (drop tokens by tag or word rule, take spans)."""
    keep = keep_mask(record.tokens, record.tags, convention)
    return GoldSentence(record, keep, convention_spans(constituent_intervals(record.tree), keep, convention))


def align_prediction(pred_tokens: Sequence[str], gold: GoldSentence) -> np.ndarray | None:
    """The kept-token mask for a predicted tree's leaves, or ``None`` if they do not align.

    The predicted leaves may be (up to case and PTB bracket escapes) the gold leaves, the gold
    words without ``-NONE-`` empty elements (what a model reads), or only the tokens the
    convention keeps. The gold sentence's drop decisions are carried over to the prediction.
    """
    record = gold.record
    if tokens_match(pred_tokens, record.tokens):
        return gold.keep
    surface = record.surface_indices()
    if len(surface) != len(record.tokens) and tokens_match(pred_tokens, [record.tokens[i] for i in surface]):
        return gold.keep[surface]
    if tokens_match(pred_tokens, gold.kept):
        return np.ones(len(pred_tokens), dtype=bool)
    return None


@dataclass
class PairedCorpus:
    """Prediction/reference pairs that survived alignment, ready to score.

    ``golds[i]`` is the reduced reference of pair i and ``preds[i]`` its predicted span set
    (``None`` when only references were read, e.g. for baselines).
    """

    convention: Convention
    golds: list[GoldSentence]
    preds: list[frozenset[Span] | None]
    skipped: dict[str, int] = field(default_factory=dict)
    skip_examples: list[str] = field(default_factory=list)
    n_filtered: int = 0
    prediction: str = ""

    def skip(self, reason: str, message: str) -> None:
        """Count one skipped pair under ``reason``, keeping a few example messages."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.skip_examples) < 5:
            self.skip_examples.append(message)


def pair_trees(preds: Sequence[TreeRecord] | None, golds: Sequence[TreeRecord], convention: Convention | str,
               mismatch: SkipReport | None = None, max_length: int | None = None) -> PairedCorpus:
    """Reduce references under a convention and align predictions to them, pair by pair in order.

    Parameters
    ----------
    preds : sequence of TreeRecord or None
        Predicted trees, same length as ``golds`` (``None``: references only, for baselines).
    golds : sequence of TreeRecord
        Reference trees. Placeholder records (skipped inputs) on either side are skipped and
        counted under their reason.
    convention : Convention or str
    mismatch : SkipReport, optional
        Policy for a pair whose tokens do not align: ``raise`` (default) raises ``HiCLIPError``
        naming both files and lines; ``skip`` counts it under ``token mismatch``.
    max_length : int, optional
        Leave out (and count in ``n_filtered``) sentences longer than this under the convention.

    Raises
    ------
    HiCLIPError
        Different numbers of sentences, or a token mismatch under the raise policy.
    """
    convention = get_convention(convention)
    mismatch = mismatch if mismatch is not None else SkipReport("raise")
    if preds is not None and len(preds) != len(golds):
        p_src = preds[0].source if preds else "predictions"
        g_src = golds[0].source if golds else "gold"
        raise HiCLIPError(f"{len(preds)} predicted sentences ({p_src}) but {len(golds)} gold sentences "
                          f"({g_src}): they are paired in order, so the counts must be equal "
                          "(same split? same --tree-key?)")
    corpus = PairedCorpus(convention, [], [], prediction=preds[0].source if preds else "")
    for index, gold in enumerate(golds):
        pred = preds[index] if preds is not None else None
        if not gold.ok or (pred is not None and not pred.ok):
            bad = gold if not gold.ok else pred
            corpus.skip(bad.reason or "skipped input", bad.problem or bad.where)
            continue
        reduced = reduce_gold(gold, convention)
        if max_length is not None and reduced.length > max_length:
            corpus.n_filtered += 1
            continue
        pred_spans = None
        if pred is not None:
            keep = align_prediction(pred.tokens, reduced)
            if keep is None:
                message = (f"{pred.where}: sentence {index + 1} does not match gold {gold.where} "
                           f"({first_difference(pred.tokens, gold.surface_tokens())})")
                mismatch.handle(HiCLIPError(message), "token mismatch")
                corpus.skip("token mismatch", message)
                continue
            pred_spans = convention_spans(constituent_intervals(pred.tree), keep, convention)
        corpus.golds.append(reduced)
        corpus.preds.append(pred_spans)
    return corpus


def score_paired(corpus: PairedCorpus, empty_gold: str = "prpn") -> ScoreReport:
    """Score the predictions of a ``PairedCorpus`` (it must hold predictions)."""
    if any(p is None for p in corpus.preds):
        raise ValueError("this corpus holds no predictions (score a baseline instead)")
    scores = [score_sentence(p, g.spans, g.length, corpus.convention, empty_gold)
              for p, g in zip(corpus.preds, corpus.golds)]
    return summarize(scores, corpus.convention, empty_gold, corpus.skipped, corpus.skip_examples,
                     prediction=corpus.prediction, n_filtered=corpus.n_filtered)


def score_trees(preds: Sequence[TreeRecord], golds: Sequence[TreeRecord], convention: Convention | str,
                empty_gold: str = "prpn", mismatch: SkipReport | None = None,
                max_length: int | None = None) -> ScoreReport:
    """Score predicted trees against reference trees, pair by pair in order.

    Parameters
    ----------
    preds, golds : sequence of TreeRecord
        Same length, paired by position (see ``pair_trees``).
    convention : Convention or str
    empty_gold : {"prpn", "skip"}
        Sentence-level F1 rule for empty span sets (module docstring).
    mismatch : SkipReport, optional
        Token-mismatch policy (default: raise ``HiCLIPError`` naming both files and lines).
    max_length : int, optional
        Leave out sentences longer than this under the convention.

    Raises
    ------
    HiCLIPError
        Different numbers of sentences, or a token mismatch under the raise policy.
    """
    return score_paired(pair_trees(preds, golds, convention, mismatch, max_length), empty_gold)


# --------------------------------------------------------------------------- baselines


def left_branching_spans(n: int) -> set[Span]:
    """Spans of the left-branching binary tree over n tokens: ``(0, k)`` for k = 2..n."""
    return {(0, k) for k in range(2, n + 1)}


def right_branching_spans(n: int) -> set[Span]:
    """Spans of the right-branching binary tree over n tokens: ``(k, n)`` for k = 0..n-2."""
    return {(k, n) for k in range(0, n - 1)}


def balanced_spans(n: int) -> set[Span]:
    """Spans of the balanced binary tree: a span of m tokens splits after ``ceil(m / 2)``."""
    spans: set[Span] = set()
    stack = [(0, n)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        spans.add((a, b))
        mid = a + (b - a + 1) // 2
        stack.extend(((a, mid), (mid, b)))
    return spans


def random_split_spans(n: int, rng: np.random.Generator) -> set[Span]:
    """A random binary tree: each span of m >= 2 tokens splits at a uniform gap 1..m-1."""
    spans: set[Span] = set()
    stack = [(0, n)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        spans.add((a, b))
        mid = a + int(rng.integers(1, b - a))
        stack.extend(((a, mid), (mid, b)))
    return spans


def random_shift_reduce_spans(n: int, rng: np.random.Generator) -> set[Span]:
    """A random binary tree as compound-pcfg's ``get_random_tree``: shift or reduce with p = 1/2
    whenever both are legal (reduce needs two items on the stack, shift a word left)."""
    spans: set[Span] = set()
    stack: list[Span] = []
    shifted = 0
    while shifted < n or len(stack) > 1:
        can_shift = shifted < n
        can_reduce = len(stack) >= 2
        if can_shift and (not can_reduce or rng.random() < 0.5):
            stack.append((shifted, shifted + 1))
            shifted += 1
        else:
            right = stack.pop()
            left = stack.pop()
            stack.append((left[0], right[1]))
            spans.add((left[0], right[1]))
    return spans


def baseline_spans(name: str, n: int, rng: np.random.Generator | None = None,
                   scheme: str = "split") -> set[Span]:
    """All spans (width >= 2, whole span included) of a baseline binary tree over n tokens."""
    if name == "left":
        return left_branching_spans(n)
    if name == "right":
        return right_branching_spans(n)
    if name == "balanced":
        return balanced_spans(n)
    if name == "random":
        if rng is None:
            raise ValueError("the random baseline needs a numpy Generator")
        if scheme == "split":
            return random_split_spans(n, rng)
        if scheme == "shift_reduce":
            return random_shift_reduce_spans(n, rng)
        raise HiCLIPError(f"unknown random tree scheme {scheme!r}: use {' or '.join(RANDOM_SCHEMES)}")
    raise HiCLIPError(f"unknown baseline {name!r}: use one of {', '.join(BASELINES)}")


def score_baseline_paired(corpus: PairedCorpus, name: str, seeds: int = 5, empty_gold: str = "prpn",
                          scheme: str = "split") -> ScoreReport:
    """Score a trivial baseline on the reference sentences of a ``PairedCorpus``.

    Parameters
    ----------
    corpus : PairedCorpus
        The sentences (e.g. exactly those a prediction was scored on).
    name : {"left", "right", "balanced", "random"}
    seeds : int
        Number of seeds (0 .. seeds-1) the random baseline is averaged over (ignored otherwise).
    empty_gold : {"prpn", "skip"}
    scheme : {"split", "shift_reduce"}
        Random binary tree distribution (module docstring).

    Returns
    -------
    ScoreReport
        For ``random``: the mean over seeds of every scalar metric (and of the per-bucket
        numbers), with ``seeds`` and ``std`` (standard deviation over seeds) filled in.
    """
    if name not in BASELINES:
        raise HiCLIPError(f"unknown baseline {name!r}: use one of {', '.join(BASELINES)}")
    if scheme not in RANDOM_SCHEMES:
        raise HiCLIPError(f"unknown random tree scheme {scheme!r}: use {' or '.join(RANDOM_SCHEMES)}")
    convention = corpus.convention

    def run(make: Callable[[int], set[Span]], label: str) -> ScoreReport:
        scores = []
        for g in corpus.golds:
            spans = make(g.length)
            if not convention.count_whole_span:
                spans.discard((0, g.length))
            scores.append(score_sentence(frozenset(spans), g.spans, g.length, convention, empty_gold))
        return summarize(scores, convention, empty_gold, corpus.skipped, corpus.skip_examples,
                         prediction=label, n_filtered=corpus.n_filtered)

    if name != "random":
        return run(lambda n: baseline_spans(name, n), f"{name}-branching" if name != "balanced" else name)
    if seeds < 1:
        raise HiCLIPError(f"--seeds must be at least 1, got {seeds}")
    label = f"random ({'uniform split points' if scheme == 'split' else 'shift-reduce coin flips'}, {seeds} seeds)"
    reports = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        reports.append(run(lambda n, rng=rng: baseline_spans("random", n, rng, scheme), label))
    return average_reports(reports, list(range(seeds)))


def score_baseline(golds: Sequence[TreeRecord], convention: Convention | str, name: str,
                   seeds: int = 5, empty_gold: str = "prpn", scheme: str = "split",
                   max_length: int | None = None) -> ScoreReport:
    """Score a trivial baseline on the sentences of ``golds`` (see ``score_baseline_paired``).

    Placeholder records are skipped and counted; ``max_length`` leaves out longer sentences.
    """
    return score_baseline_paired(pair_trees(None, golds, convention, max_length=max_length), name, seeds,
                                 empty_gold, scheme)


_AVERAGED = ("sentence_f1", "corpus_f1", "precision", "recall", "pred_spans_per_sentence",
             "gold_spans_per_sentence")


def average_reports(reports: Sequence[ScoreReport], seeds: list[int]) -> ScoreReport:
    """Mean (and std) over reports of the same sentences, e.g. random baselines with several seeds."""
    first = reports[0]

    def over_seeds(key: str, reduce: Callable[[list[float]], float]) -> float | None:
        values = [getattr(r, key) for r in reports]
        return None if any(v is None for v in values) else float(reduce(values))

    mean = {k: over_seeds(k, np.mean) for k in _AVERAGED}
    std = {k: v for k in _AVERAGED if (v := over_seeds(k, np.std)) is not None}
    buckets = []
    for i, b in enumerate(first.by_length):
        def avg(attr: str) -> float | None:
            vals = [getattr(r.by_length[i], attr) for r in reports]
            return None if any(v is None for v in vals) else float(np.mean(vals))
        buckets.append(BucketScore(b.low, b.high, b.n, b.n_sentence_f1, avg("sentence_f1"), avg("corpus_f1"),
                                   avg("pred_spans_per_sentence"), avg("gold_spans_per_sentence")))
    return ScoreReport(
        convention=first.convention, empty_gold=first.empty_gold, n_scored=first.n_scored,
        n_sentence_f1=int(round(np.mean([r.n_sentence_f1 for r in reports]))), n_short=first.n_short,
        skipped=dict(first.skipped), skip_examples=list(first.skip_examples), by_length=buckets,
        sentences=[], prediction=first.prediction, seeds=seeds, std=std, n_filtered=first.n_filtered,
        **mean)


def format_report(report: ScoreReport, gold: str = "") -> str:
    """Human-readable text of a report (convention named, counts, length breakdown)."""
    def pct(x: float | None) -> str:
        return "undefined" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:5.1f}"

    std = report.std or {}

    def with_std(key: str) -> str:
        value = pct(getattr(report, key))
        return f"{value} ± {std[key]:.1f}" if key in std else value

    def per_sentence(x: float) -> str:
        return "  n/a" if math.isnan(x) else f"{x:5.2f}"

    lines = [
        f"convention     {report.convention.name}: {report.convention.description}",
        f"prediction     {report.prediction}" + (f"   seeds {report.seeds[0]}..{report.seeds[-1]}" if report.seeds else ""),
    ]
    if gold:
        lines.append(f"gold           {gold}")
    lines += [
        f"sentence F1    {with_std('sentence_f1')}   (mean over {report.n_sentence_f1} sentences of length "
        f">= {report.convention.min_length}; empty gold span sets: {report.empty_gold} rule)",
        f"corpus F1      {with_std('corpus_f1')}   (micro-averaged over spans)",
        f"corpus P / R   {with_std('precision')} / {with_std('recall')}",
        f"spans/sentence pred {per_sentence(report.pred_spans_per_sentence)}   "
        f"gold {per_sentence(report.gold_spans_per_sentence)}",
        f"sentences      scored {report.n_scored} ({report.n_short} shorter than {report.convention.min_length}), "
        f"skipped {report.n_skipped}" + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(report.skipped.items()))})"
                                         if report.skipped else "")
        + (f", longer than --max-length {report.n_filtered}" if report.n_filtered else ""),
    ]
    for example in report.skip_examples[:3]:
        lines.append(f"  e.g. {example}")
    lines.append("by length      length      n   sent F1  corpus F1  pred/sent  gold/sent")
    for b in report.by_length:
        lines.append(f"               {b.name:>6} {b.n:6d}   {pct(b.sentence_f1)}    {pct(b.corpus_f1)}"
                     f"      {b.pred_spans_per_sentence:5.2f}      {b.gold_spans_per_sentence:5.2f}")
    return "\n".join(lines)

