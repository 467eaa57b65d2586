"""Bracket F1 of a whole corpus of predicted trees, with the baselines on the same sentences.

:func:`evaluate_trees` is what ``hiclip score trees``, ``hiclip demo``, ``hiclip figures``, the
notebook and the app report. It pairs predicted trees with reference trees in order
(``induction.tree_scoring.pair_trees``), scores them under a convention (method.md 6) and, with
predictions, scores the four trivial baselines on exactly the sentences that were scored. The
result, a :class:`TreeEvaluation`, prints as the text report and serialises as the ``--json``
output.

Trees come from any reference format ``hiclip.data.trees`` reads, or from prediction records
(:mod:`induction.predictions`): :func:`prediction_tree_records` turns each caption prediction into
a ``TreeRecord`` (the primary ``tree``, or ``trees[tree_key]``), and a caption without that tree,
a malformed tree or leaves that differ from the caption's tokens become counted placeholders
under a skip policy (so the pairing never shifts) or a ``file:line`` error.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hiclip.data.trees import (
    SPLIT_FORMATS,
    TreeRecord,
    detect_format,
    first_difference,
    parse_bracket_string,
    read_token_lines,
    read_trees,
    tokens_match,
)
from hiclip.errors import HiCLIPError, SkipReport
from induction.evalb import (
    EVALB,
    EVALB_BASELINES,
    EvalbParams,
    EvalbReport,
    check_evalb_baseline,
    pair_evalb,
    score_evalb_baseline,
    score_evalb_paired,
)
from induction.predictions import Predictions, read_predictions
from induction.spans import get_convention
from induction.tree_scoring import (
    BASELINES,
    EMPTY_GOLD_POLICIES,
    RANDOM_SCHEMES,
    ScoreReport,
    format_report,
    pair_trees,
    score_baseline_paired,
    score_paired,
)

HEADLINE = {"standard": "sentence_f1", "vgnsl": "corpus_f1", "evalb": "f1"}
SUMMARY_KEYS = ("prediction", "sentence_f1", "corpus_f1", "precision", "recall", "n_scored", "n_sentence_f1",
                "spans", "seeds", "std")


@dataclass
class TreeScoreOptions:
    """How trees are scored (the scoring options of ``hiclip score trees``).

    Attributes
    ----------
    convention : str
        ``standard`` (Kim et al. 2019: sentence F1 headline) or ``vgnsl`` (Shi et al. 2019:
        corpus F1 headline), see ``induction.spans``; or ``evalb`` (EVALB's counts with
        COLLINS.prm: bracket F1 headline), see ``induction.evalb``.
    labeled : bool
        Under ``evalb`` only: labeled bracketing (COLLINS.prm's ``LABELED 1``); default unlabeled.
    empty_gold : {"prpn", "skip"}
        Sentence F1 of a sentence without gold spans (``induction.tree_scoring``).
    seeds : int
        Seeds ``0 .. seeds-1`` the random baseline is averaged over.
    random_scheme : {"split", "shift_reduce"}
    max_length : int or None
        Only sentences of at most this many tokens (after the convention drops tokens).
    on_mismatch : {"raise", "skip"}
        A pair whose tokens differ: error, or skip and count.
    baselines : bool
        With predictions, also score the four baselines on the same sentences.
    """

    convention: str = "standard"
    empty_gold: str = "prpn"
    seeds: int = 5
    random_scheme: str = "split"
    max_length: int | None = None
    on_mismatch: str = "raise"
    baselines: bool = True
    labeled: bool = False

    def check(self) -> None:
        if self.convention == EVALB:
            if self.empty_gold != "prpn":
                raise HiCLIPError("--empty-gold is a sentence-F1 rule; EVALB has no sentence F1 "
                                  "(drop --empty-gold under --convention evalb)")
        else:
            get_convention(self.convention)
            if self.labeled:
                raise HiCLIPError(f"--labeled applies to --convention evalb only; {self.convention} "
                                  "is unlabeled by definition")
        if self.empty_gold not in EMPTY_GOLD_POLICIES:
            raise HiCLIPError(f"unknown empty-gold policy {self.empty_gold!r}: use {' or '.join(EMPTY_GOLD_POLICIES)}")
        if self.random_scheme not in RANDOM_SCHEMES:
            raise HiCLIPError(f"unknown random tree scheme {self.random_scheme!r}: use {' or '.join(RANDOM_SCHEMES)}")
        if self.on_mismatch not in ("raise", "skip"):
            raise HiCLIPError(f"on_mismatch must be 'raise' or 'skip'; got {self.on_mismatch!r}")

    @property
    def headline(self) -> str:
        """The convention's headline metric: ``sentence_f1`` (standard), ``corpus_f1`` (vgnsl) or
        ``f1`` (evalb)."""
        return HEADLINE[self.convention if self.convention == EVALB else get_convention(self.convention).name]

    @property
    def evalb_params(self) -> EvalbParams:
        """COLLINS.prm, labeled or not as ``labeled`` says."""
        return EvalbParams(labeled=self.labeled)


@dataclass
class TreeEvaluation:
    """Scores of one prediction (or one baseline) and of the baselines on the same sentences."""

    report: ScoreReport
    baselines: dict[str, ScoreReport] = field(default_factory=dict)
    gold: str = ""
    options: TreeScoreOptions = field(default_factory=TreeScoreOptions)
    tree_key: str | None = None

    @property
    def headline(self) -> float | None:
        """The convention's headline number of the prediction, in percent (``None``: undefined)."""
        value = getattr(self.report, self.options.headline)
        return None if value is None else float(value)

    def parameters(self) -> dict[str, Any]:
        """What decides the numbers, for reports and ``figures.json``."""
        return {"convention": self.report.convention.name, "headline": self.options.headline,
                "empty_gold": self.options.empty_gold, "tree_key": self.tree_key,
                "max_length": self.options.max_length, "seeds": self.options.seeds,
                "random_scheme": self.options.random_scheme}

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``hiclip score trees --json``."""
        out = self.report.to_dict()
        out["gold"] = self.gold
        out["parameters"] = self.parameters()
        if self.baselines:
            out["baselines"] = {name: baseline_summary(r) for name, r in self.baselines.items()}
        return out

    def format(self) -> str:
        """The text report of ``hiclip score trees``."""
        lines = [format_report(self.report, self.gold)]
        if self.baselines:
            lines.append(f"baselines on the same {self.report.n_scored} sentences   sentence F1   corpus F1   P      R")
            for r in self.baselines.values():
                std = r.std or {}
                s_f1 = _pct(r.sentence_f1) + (f" ± {std['sentence_f1']:.1f}" if "sentence_f1" in std else "")
                c_f1 = _pct(r.corpus_f1) + (f" ± {std['corpus_f1']:.1f}" if "corpus_f1" in std else "")
                lines.append(f"  {r.prediction:<42} {s_f1:<13} {c_f1:<11} {_pct(r.precision)}  {_pct(r.recall)}")
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "undefined" if value is None else f"{value:5.1f}"


def baseline_summary(report: ScoreReport) -> dict[str, Any]:
    """The headline fields of a baseline's report (as under ``baselines`` in the JSON)."""
    full = report.to_dict()
    return {k: full[k] for k in SUMMARY_KEYS if k in full}


@dataclass
class EvalbEvaluation:
    """EVALB's scores of one prediction (or one baseline) and of the baselines on the same sentences."""

    report: EvalbReport
    baselines: dict[str, EvalbReport] = field(default_factory=dict)
    gold: str = ""
    options: TreeScoreOptions = field(default_factory=lambda: TreeScoreOptions(convention=EVALB))
    tree_key: str | None = None

    @property
    def headline(self) -> float | None:
        """Bracketing F-measure over all valid sentences, in percent (``None``: undefined)."""
        return self.report.f1

    def parameters(self) -> dict[str, Any]:
        return {"convention": EVALB, "headline": "f1", "labeled": self.options.labeled,
                "prm": self.report.params.prm_name, "tree_key": self.tree_key,
                "max_length": self.options.max_length}

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``hiclip score trees --convention evalb --json``."""
        out = self.report.to_dict()
        out["gold"] = self.gold
        out["parameters"] = self.parameters()
        if self.baselines:
            out["baselines"] = {name: {k: r.to_dict()[k] for k in ("prediction", "brackets", "recall",
                                                                    "precision", "f1")}
                                for name, r in self.baselines.items()}
        return out

    def format(self) -> str:
        lines = [self.report.format(self.gold)]
        if self.baselines:
            lines.append(f"baselines on the same {self.report.all.n_valid} sentences   matched    gold    test"
                         "       R       P       F")
            for r in self.baselines.values():
                a = r.all
                lines.append(f"  {r.prediction:<40} {a.matched:8d} {a.gold:7d} {a.test:7d}  {_pct(a.recall):>6}"
                             f"  {_pct(a.precision):>6}  {_pct(a.f1):>6}")
        return "\n".join(lines)


def evaluate_evalb(preds: Sequence[TreeRecord] | None, golds: Sequence[TreeRecord], options: TreeScoreOptions,
                   baseline: str | None = None, gold: str = "", tree_key: str | None = None) -> EvalbEvaluation:
    """:func:`evaluate_trees` under ``--convention evalb`` (``induction.evalb``)."""
    params = options.evalb_params
    if preds is None:
        check_evalb_baseline(baseline or "")
    corpus = pair_evalb(preds, golds, params, SkipReport(options.on_mismatch), options.max_length)
    if not corpus.n_scored:
        raise HiCLIPError(f"no sentence could be scored ({', '.join(f'{k}: {v}' for k, v in corpus.skipped.items())})")
    if preds is None:
        return EvalbEvaluation(score_evalb_baseline(corpus, baseline), {}, gold, options, tree_key)
    report = score_evalb_paired(corpus)
    baselines = {name: score_evalb_baseline(corpus, name) for name in EVALB_BASELINES} if options.baselines else {}
    return EvalbEvaluation(report, baselines, gold, options, tree_key)


def evaluate_trees(preds: Sequence[TreeRecord] | None, golds: Sequence[TreeRecord], options: TreeScoreOptions,
                   baseline: str | None = None, gold: str = "", tree_key: str | None = None
                   ) -> TreeEvaluation | EvalbEvaluation:
    """Score predicted trees against reference trees, or a baseline when ``preds`` is None.

    Under ``options.convention == "evalb"`` the result is an :class:`EvalbEvaluation` (EVALB's
    bracket counts, :func:`evaluate_evalb`); otherwise a :class:`TreeEvaluation`.

    Parameters
    ----------
    preds : sequence of TreeRecord or None
        Paired with ``golds`` in order (same length).
    golds : sequence of TreeRecord
    options : TreeScoreOptions
    baseline : str, optional
        With ``preds`` None: which baseline to score (``left``, ``right``, ``balanced``, ``random``).
    gold : str
        One line describing the reference, for the report.
    tree_key : str, optional
        Which predicted tree was read, for the report.

    Raises
    ------
    HiCLIPError
        Different sentence counts, a token mismatch under the raise policy, or no sentence left.
    """
    options.check()
    if options.convention == EVALB:
        return evaluate_evalb(preds, golds, options, baseline, gold, tree_key)
    if preds is None and baseline not in BASELINES:
        raise HiCLIPError(f"unknown baseline {baseline!r}: use one of {', '.join(BASELINES)}")
    corpus = pair_trees(preds, golds, options.convention, SkipReport(options.on_mismatch), options.max_length)
    if not corpus.golds:
        raise HiCLIPError(f"no sentence could be scored ({', '.join(f'{k}: {v}' for k, v in corpus.skipped.items())})")
    if preds is None:
        report = score_baseline_paired(corpus, baseline, options.seeds, options.empty_gold, options.random_scheme)
        return TreeEvaluation(report, {}, gold, options, tree_key)
    report = score_paired(corpus, options.empty_gold)
    baselines = {}
    if options.baselines:
        baselines = {name: score_baseline_paired(corpus, name, options.seeds, options.empty_gold,
                                                 options.random_scheme) for name in BASELINES}
    return TreeEvaluation(report, baselines, gold, options, tree_key)


# ---------------------------------------------------------------------------------------------
# Reading trees
# ---------------------------------------------------------------------------------------------
class ErrorPolicy(SkipReport):
    """Applies ``on_mismatch`` to "leaves differ" problems and ``on_error`` to everything else."""

    def __init__(self, on_error: str = "raise", on_mismatch: str = "raise") -> None:
        super().__init__("skip")
        for name, value in (("on_error", on_error), ("on_mismatch", on_mismatch)):
            if value not in ("raise", "skip"):
                raise HiCLIPError(f"{name} must be 'raise' or 'skip'; got {value!r}")
        self.on_error = on_error
        self.on_mismatch = on_mismatch

    def handle(self, error: HiCLIPError, reason: str) -> None:
        policy = self.on_mismatch if "differ" in reason or "mismatch" in reason else self.on_error
        if policy == "raise":
            raise error
        super().handle(error, reason)


def _placeholder(report: SkipReport, message: str, reason: str, source: str, line: int | None,
                 tokens: list[str], item: str) -> TreeRecord:
    report.handle(HiCLIPError(message), reason)
    return TreeRecord(None, tokens, source, line, item=item, problem=message, reason=reason)


def prediction_tree_records(predictions: Predictions, tree_key: str | None = None,
                            report: SkipReport | None = None) -> list[TreeRecord]:
    """One ``TreeRecord`` per caption prediction, flattened in file order.

    Parameters
    ----------
    predictions : Predictions
    tree_key : str, optional
        Take each caption's tree from ``trees[tree_key]`` instead of ``tree``.
    report : SkipReport, optional
        Policy for a caption without that tree, a malformed tree, and leaves that differ from
        the caption's tokens (default: raise).

    Returns
    -------
    list of TreeRecord
        ``meta`` holds ``id``, ``caption_index`` and ``algorithm``.
    """
    report = report if report is not None else SkipReport("raise")
    out: list[TreeRecord] = []
    for record in predictions.records:
        for k, caption in enumerate(record.text):
            item = f"text {k}"
            where = predictions.where(record, item)
            text = caption.tree_for(tree_key)
            if not text:
                missing = (f"has no trees[{tree_key!r}] (available: {sorted(caption.trees)})" if tree_key
                           else "has no 'tree'")
                out.append(_placeholder(report, f"{where} {missing}", "no tree", predictions.source,
                                        record.line, caption.tokens, item))
                continue
            try:
                tree = parse_bracket_string(text, "auto")
            except HiCLIPError as error:
                out.append(_placeholder(report, f"{where}: {error}", "malformed tree", predictions.source,
                                        record.line, caption.tokens, item))
                continue
            tokens = list(tree.leaves())
            if not tokens_match(tokens, caption.tokens):
                out.append(_placeholder(
                    report, f"{where}: tree leaves differ from its tokens ({first_difference(tokens, caption.tokens)})",
                    "leaves differ from tokens", predictions.source, record.line, tokens, item))
                continue
            # predicted trees carry no POS tags, even if a node looks like one
            out.append(TreeRecord(tree, tokens, predictions.source, record.line, None, item,
                                  meta={"id": record.id, "caption_index": caption.caption_index,
                                        "algorithm": caption.algorithm}))
    return out


def read_tree_records(path: str, fmt: str | None = None, *, split: str | None = None,
                      tree_key: str | None = None, tokens_path: str | None = None,
                      report: SkipReport | None = None) -> list[TreeRecord]:
    """Trees of any format: prediction JSONL through :func:`prediction_tree_records`, the
    reference formats through ``hiclip.data.trees.read_trees``. ``split`` applies only to the
    formats whose records name one (manifest, predictions, VG-NSL .json)."""
    fmt = fmt or detect_format(path)
    split = split if fmt in SPLIT_FORMATS else None
    if fmt == "predictions":
        if tokens_path is not None:
            raise HiCLIPError("a token file can only be checked against one-tree-per-line formats, not 'predictions'")
        return prediction_tree_records(read_predictions(path, split), tree_key, report)
    return read_trees(path, fmt, tokens_path=tokens_path, split=split, tree_key=tree_key, report=report)


@dataclass
class TreeInputs:
    """Where the trees of ``hiclip score trees`` come from.

    ``gold`` (a reference in any format, or with ``silver`` the sentences to parse) and ``pred``
    (predicted trees in any format, e.g. a prediction JSONL; None scores a baseline). ``split``
    filters the formats whose records name one; ``on_error`` / ``on_mismatch`` are the policies
    for malformed input and differing leaves.
    """

    gold: str | None = None
    gold_format: str | None = None
    gold_tokens: str | None = None
    gold_tree_key: str | None = None
    pred: str | None = None
    pred_format: str | None = None
    tree_key: str | None = None
    split: str | None = None
    silver: str | None = None
    silver_model: str | None = None
    on_error: str = "raise"
    on_mismatch: str = "raise"

    def check_split(self) -> None:
        """``split`` must apply to at least one input, or it would be silently ignored."""
        if self.split is None:
            return
        paths = [(self.gold, self.gold_format), (self.pred, self.pred_format)]
        formats = [f or detect_format(p) for p, f in paths if p]
        if not any(f in SPLIT_FORMATS for f in formats):
            raise HiCLIPError(f"--split {self.split} applies to manifests, prediction JSONL and the VG-NSL .json; "
                              f"none of the inputs is one ({', '.join(formats)})")

    def read_preds(self) -> list[TreeRecord] | None:
        if not self.pred:
            return None
        preds = read_tree_records(self.pred, self.pred_format, split=self.split, tree_key=self.tree_key,
                                  report=ErrorPolicy(self.on_error, self.on_mismatch))
        if not preds:
            raise HiCLIPError(f"{self.pred}: no predicted trees" + (f" in split {self.split!r}" if self.split else ""))
        return preds

    def read_gold(self, preds: list[TreeRecord] | None) -> tuple[list[TreeRecord], str]:
        """The reference trees (or silver ones) and one line describing them."""
        policy = ErrorPolicy(self.on_error, self.on_mismatch)
        if self.silver:
            from induction.silver import make_silver_parser, silver_records

            if self.gold:
                fmt = self.gold_format or detect_format(self.gold)
                if fmt == "plain":
                    sentences: Any = read_token_lines(self.gold)
                else:
                    sentences = read_tree_records(self.gold, fmt, split=self.split, tree_key=self.gold_tree_key,
                                                  tokens_path=self.gold_tokens, report=policy)
                origin = self.gold
            elif preds is not None:
                sentences, origin = preds, self.pred
            else:
                raise HiCLIPError("--silver needs --gold (sentences to parse) or --pred")
            parser = make_silver_parser(self.silver, self.silver_model)
            return silver_records(parser, sentences), f"silver trees ({self.silver} parser) of the sentences of {origin}"
        if not self.gold:
            raise HiCLIPError("--gold is required (or use --silver to parse the predicted sentences)")
        fmt = self.gold_format or detect_format(self.gold)
        if fmt == "plain":
            raise HiCLIPError(f"{self.gold} holds plain sentences, not trees: add --silver to parse them")
        golds = read_tree_records(self.gold, fmt, split=self.split, tree_key=self.gold_tree_key,
                                  tokens_path=self.gold_tokens, report=policy)
        if not golds:
            raise HiCLIPError(f"{self.gold}: no reference trees" + (f" in split {self.split!r}" if self.split else ""))
        return golds, f"{self.gold} ({fmt}, {len(golds)} trees)"


def evaluate_tree_files(inputs: TreeInputs, options: TreeScoreOptions, baseline: str | None = None
                        ) -> TreeEvaluation | EvalbEvaluation:
    """``hiclip score trees``: read both sides as ``inputs`` says, then :func:`evaluate_trees`."""
    options.check()
    if inputs.gold_tokens and inputs.silver:
        raise HiCLIPError("--gold-tokens checks gold trees; it cannot be combined with --silver")
    inputs.check_split()
    preds = inputs.read_preds()
    golds, gold_text = inputs.read_gold(preds)
    return evaluate_trees(preds, golds, options, baseline, gold_text, inputs.tree_key)


def evaluate_prediction_trees(predictions: Predictions, golds: Sequence[TreeRecord], options: TreeScoreOptions,
                              tree_key: str | None = None, gold: str = "", on_error: str = "raise"
                              ) -> TreeEvaluation:
    """:func:`evaluate_trees` of prediction records (in memory or read) against ``golds``."""
    preds = prediction_tree_records(predictions, tree_key, ErrorPolicy(on_error, options.on_mismatch))
    return evaluate_trees(preds, golds, options, None, gold, tree_key)


def score_tree_pair(pred: Any, gold: Any, convention: str = "standard", empty_gold: str = "prpn"):
    """One sentence's scores (``induction.tree_scoring.SentenceScore``, percent; ``f1`` None when
    the sentence is too short to count) of a predicted tree against a gold tree, by the very path
    :func:`evaluate_trees` takes over a corpus. ``pred`` and ``gold`` are ``nltk.Tree`` or bracket
    strings over the same words (compared case-insensitively)."""
    from hiclip.data.trees import leaf_tags

    pred_tree = pred if not isinstance(pred, str) else parse_bracket_string(pred, "auto")
    gold_tree = gold if not isinstance(gold, str) else parse_bracket_string(gold, "auto")
    preds = [TreeRecord(pred_tree, list(pred_tree.leaves()), "prediction", None)]
    golds = [TreeRecord(gold_tree, list(gold_tree.leaves()), "gold", None, leaf_tags(gold_tree))]
    options = TreeScoreOptions(convention=convention, empty_gold=empty_gold, baselines=False)
    try:
        corpus = pair_trees(preds, golds, options.convention, SkipReport("raise"))
    except HiCLIPError:
        raise HiCLIPError(f"the gold tree's words ({' '.join(gold_tree.leaves())}) differ from the "
                          f"prediction's ({' '.join(pred_tree.leaves())})") from None
    return score_paired(corpus, options.empty_gold).sentences[0]
