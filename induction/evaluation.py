"""Everything the tables report about one system's predictions on one dataset split.

``hiclip demo`` and ``hiclip figures`` (and the notebook) call :func:`evaluate_system` on a
system's prediction records: trees of every parser under every convention
(:mod:`induction.tree_evaluation`) and groups against the masks (:mod:`induction.group_evaluation`),
with the same options ``hiclip score trees`` / ``hiclip score groups`` use by default. The figures
plot these evaluations; what a figure shows beyond a table (F1 with the parser started at each
layer, or with quantile thresholds) is :func:`evaluate_tree_variants`: the same records re-parsed
from their stored links and scored by the same function on the same sentences.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hiclip.data.trees import TreeRecord, detect_format
from hiclip.errors import HiCLIPError
from induction.group_evaluation import GroupEvalOptions, GroupEvaluation, GroundTruth, Progress, evaluate_groups
from induction.predictions import Predictions
from induction.tree_evaluation import (
    TreeEvaluation,
    TreeScoreOptions,
    evaluate_prediction_trees,
    read_tree_records,
)

PARSERS = ("tree_transformer", "binary")
PARSER_NAMES = {"tree_transformer": "Tree-Transformer parser", "binary": "binary lowest-link"}
CONVENTIONS = ("standard", "vgnsl")


@dataclass
class EvaluationOptions:
    """What :func:`evaluate_system` scores.

    ``trees`` is the scoring template (its ``convention`` is replaced by each of
    ``conventions``); ``groups`` None leaves images out.
    """

    split: str | None = None
    parsers: tuple[str, ...] = PARSERS
    conventions: tuple[str, ...] = CONVENTIONS
    trees: TreeScoreOptions = field(default_factory=TreeScoreOptions)
    groups: GroupEvalOptions | None = field(default_factory=GroupEvalOptions)


@dataclass
class SystemEvaluation:
    """One system's evaluations, keyed as the tables are: ``trees[(parser, convention)]``."""

    name: str
    predictions: Predictions
    trees: dict[tuple[str, str], TreeEvaluation] = field(default_factory=dict)
    groups: GroupEvaluation | None = None
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """``{"trees": {"parser/convention": ...}, "groups": ...}`` (the JSON of ``hiclip score``)."""
        return {"trees": {f"{p}/{c}": e.to_dict() for (p, c), e in self.trees.items()},
                "groups": None if self.groups is None else self.groups.to_dict(),
                "skipped": list(self.skipped)}


def gold_trees(data: str, split: str | None) -> tuple[list[TreeRecord] | None, str]:
    """The reference trees of a dataset as ``hiclip score trees --gold DATA --split SPLIT`` reads
    them, with their one-line description; ``(None, reason)`` when the dataset has none."""
    try:
        fmt = detect_format(data)
    except HiCLIPError as error:
        return None, f"no gold trees ({error})"
    if fmt != "manifest":
        return None, f"no gold trees ({data} is not a manifest with trees)"
    try:
        golds = read_tree_records(str(data), fmt, split=split)
    except HiCLIPError as error:
        return None, f"no gold trees ({error})"
    if not golds:
        return None, "no gold trees" + (f" in split {split!r}" if split else "")
    return golds, f"{data} ({fmt}, {len(golds)} trees)"


def evaluate_system(name: str, predictions: Predictions, options: EvaluationOptions,
                    golds: Sequence[TreeRecord] | None = None, gold: str = "",
                    truth: Mapping[str, GroundTruth] | None = None, data: str = "",
                    progress: Progress | None = None) -> SystemEvaluation:
    """Score ``predictions`` against gold trees and masks (module docstring).

    ``golds`` (from :func:`gold_trees`) and ``truth`` (from
    :func:`induction.group_evaluation.open_ground_truth`) may be None: that part is skipped and
    the reason recorded in ``skipped``.
    """
    result = SystemEvaluation(name, predictions)
    has_text = any(True for _ in predictions.captions())
    if golds is not None and has_text:
        for parser in options.parsers:
            for convention in options.conventions:
                tree_options = replace(options.trees, convention=convention)
                result.trees[(parser, convention)] = evaluate_prediction_trees(
                    predictions, golds, tree_options, parser, gold)
    else:
        result.skipped.append("trees: " + ("no captions in the predictions" if not has_text else
                                           gold or "no gold trees"))
    has_images = any(True for _ in predictions.images())
    if options.groups is not None and truth is not None and has_images:
        group_options = replace(options.groups, split=options.split)
        result.groups = evaluate_groups(predictions, dict(truth), group_options, data, progress=progress)
    else:
        result.skipped.append("groups: " + ("no image predictions" if not has_images else "no masks"))
    return result


def evaluate_tree_variants(predictions: Predictions, golds: Sequence[TreeRecord], options: TreeScoreOptions,
                           variants: Mapping[Any, Any]) -> dict[Any, TreeEvaluation]:
    """F1 of the same captions re-parsed from their stored links under each of ``variants``
    (``{key: induction.induce.TreeOptions}``), scored by :func:`evaluate_prediction_trees` on the
    same gold sentences with ``options`` (baselines off)."""
    from induction.induce import reinduce_trees

    quiet = replace(options, baselines=False)
    return {key: evaluate_prediction_trees(reinduce_trees(predictions, tree_options), golds, quiet, None)
            for key, tree_options in variants.items()}
