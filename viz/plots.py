"""Quantitative plots: scores by layer and threshold, model comparisons, training curves.

All functions take plain numbers (mappings name -> values) so that they work the same on the
JSON written by ``hiclip score ...`` and on scores computed in a notebook.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from hiclip.errors import HiCLIPError, located

BASELINE_COLOURS = ("#7f7f7f", "#bcbd22", "#8c564b", "#e377c2", "#17becf")
BASELINE_DASHES = (":", "--", "-.", (0, (1, 3)), (0, (5, 2, 1, 2)))


def _curves_figure(x: Sequence[float], curves: Mapping[str, Sequence[float]],
                   baselines: Mapping[str, float] | None, xlabel: str, ylabel: str,
                   title: str | None, marks: Mapping[str, float | None] | None = None) -> Figure:
    if not curves:
        raise ValueError("no curves to plot")
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for name, values in curves.items():
        values = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        if values.shape != (len(x),):
            raise ValueError(f"curve {name!r} has {values.size} values for {len(x)} x positions")
        line, = ax.plot(x, values, marker="o", markersize=4, label=name)
        mark = (marks or {}).get(name)
        if mark is not None and mark in list(x):
            at = list(x).index(mark)
            ax.plot([x[at]], [values[at]], marker="o", markersize=11, markerfacecolor="none",
                    markeredgecolor=line.get_color(), markeredgewidth=1.5, linestyle="none")
            ax.annotate(f"{values[at]:.3g}", (x[at], values[at]), textcoords="offset points",
                        xytext=(6, 6), fontsize=8, color=line.get_color())
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, color=BASELINE_COLOURS[i % len(BASELINE_COLOURS)], label=name,
                   linestyle=BASELINE_DASHES[i % len(BASELINE_DASHES)], linewidth=1.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def f1_by_layer_figure(curves: Mapping[str, Sequence[float]],
                       baselines: Mapping[str, float] | None = None,
                       layers: Sequence[int] | None = None, ylabel: str = "F1",
                       title: str | None = None, xlabel: str = "layer",
                       marks: Mapping[str, int | None] | None = None) -> Figure:
    """One line per model (e.g. HiCLIP, vanilla CLIP) of a score per layer; baselines dotted.

    ``curves[name]`` has one value per layer (``layers``, default ``0 .. L-1``; None for a
    missing value). ``marks[name]`` rings and labels one layer of that curve (e.g. its best).
    """
    n = len(next(iter(curves.values()))) if curves else 0
    layers = list(range(n)) if layers is None else list(layers)
    fig = _curves_figure(layers, curves, baselines, xlabel, ylabel, title, marks)
    fig.axes[0].set_xticks(layers)
    return fig


def f1_by_threshold_figure(thresholds: Sequence[float], curves: Mapping[str, Sequence[float]],
                           baselines: Mapping[str, float] | None = None, ylabel: str = "F1",
                           xlabel: str = "threshold", title: str | None = None) -> Figure:
    """One line per model of a score against the threshold (absolute or quantile)."""
    return _curves_figure(list(thresholds), curves, baselines, xlabel, ylabel, title)


def scores_bar_figure(scores: Mapping[str, float], ylabel: str = "F1",
                      highlight: Sequence[str] = (), title: str | None = None) -> Figure:
    """A bar per system (models and baselines), value printed on top; ``highlight`` bars dark."""
    if not scores:
        raise ValueError("no scores to plot")
    names = list(scores)
    values = [float(scores[n]) for n in names]
    colours = ["#2c7bb6" if n in highlight else "#abd9e9" for n in names]
    fig, ax = plt.subplots(figsize=(max(3.5, 0.8 * len(names) + 1.2), 3.4))
    bars = ax.bar(range(len(names)), values, color=colours, edgecolor="black", linewidth=0.5)
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{value:.1f}",
                ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=9)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max(values + [1e-9]) * 1.15)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` (one JSON object per line; blank lines skipped)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise HiCLIPError(f"{path}: no metrics.jsonl (is this a run folder?)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise located(path, number, f"not JSON: {error.msg}") from None
        if not isinstance(record, dict):
            raise located(path, number, "expected a JSON object")
        records.append(record)
    return records


_NOT_CURVES = {"step", "epoch", "time", "timestamp", "samples", "wall", "elapsed"}


def metric_series(records: Sequence[Mapping], x_key: str = "step"
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Numeric series ``{name: (x, y)}`` from metric records.

    Each numeric field other than the x key and clock fields becomes a series; records that
    name a ``split``/``kind``/``phase`` (e.g. validation) prefix their fields with it
    (``"val/loss"``). Records without ``x_key`` use their position.
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    for index, record in enumerate(records):
        x = record.get(x_key, index)
        if not isinstance(x, (int, float)):
            continue
        prefix = next((str(record[k]) for k in ("split", "kind", "phase") if k in record), "")
        for key, value in record.items():
            if key in _NOT_CURVES or key == x_key or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                name = f"{prefix}/{key}" if prefix and not key.startswith(prefix) else key
                xs, ys = series.setdefault(name, ([], []))
                xs.append(float(x))
                ys.append(float(value))
    return {k: (np.asarray(xs), np.asarray(ys)) for k, (xs, ys) in series.items()}


def training_curves_figure(records: Sequence[Mapping], keys: Sequence[str] | None = None,
                           x_key: str = "step", ncols: int = 3,
                           title: str | None = None) -> Figure:
    """One panel per metric (loss, logit scale, learning rate, validation scores, ...).

    ``keys`` chooses series by name (see :func:`metric_series`); default: all of them.
    """
    series = metric_series(records, x_key)
    if keys is not None:
        missing = [k for k in keys if k not in series]
        if missing:
            raise HiCLIPError(f"metrics have no {', '.join(missing)}; available: {', '.join(series)}")
        series = {k: series[k] for k in keys}
    if not series:
        raise HiCLIPError("no numeric metrics to plot")
    ncols = max(1, min(ncols, len(series)))
    nrows = (len(series) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(3.3 * ncols, 2.5 * nrows))
    for ax, (name, (xs, ys)) in zip(axes.flat, series.items()):
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, linewidth=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(x_key, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
