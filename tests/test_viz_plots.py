"""viz.plots: score curves, comparison bars and training curves from metrics.jsonl."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hiclip.errors import HiCLIPError  # noqa: E402
from viz import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_f1_by_layer_draws_models_and_baselines():
    fig = plots.f1_by_layer_figure({"HiCLIP": [10, 20, 30], "CLIP": [5, 6, 7]},
                                   baselines={"right-branching": 25.0})
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["HiCLIP"].get_ydata()) == [10, 20, 30]
    assert list(lines["CLIP"].get_xdata()) == [0, 1, 2]
    assert list(lines["right-branching"].get_ydata()) == [25.0, 25.0]
    with pytest.raises(ValueError, match="has 2 values"):
        plots.f1_by_layer_figure({"a": [1, 2, 3], "b": [1, 2]})


def test_f1_by_threshold_and_bars():
    fig = plots.f1_by_threshold_figure([0.5, 0.7, 0.9], {"HiCLIP": [1, 2, 3]}, xlabel="quantile")
    assert fig.axes[0].get_xlabel() == "quantile"
    fig = plots.scores_bar_figure({"HiCLIP": 40.0, "CLIP": 30.0, "right": 39.5}, highlight=["HiCLIP"])
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [40.0, 30.0, 39.5]
    assert [t.get_text() for t in ax.texts] == ["40.0", "30.0", "39.5"]


def test_read_metrics_and_series(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "loss": 3.0, "lr": 0.1, "time": 5.0},
            {"step": 2, "loss": 2.0, "lr": 0.2},
            {"step": 2, "split": "val", "loss": 2.5, "i2t_r1": 10.0}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    records = plots.read_metrics(tmp_path)          # a run folder works too
    series = plots.metric_series(records)
    assert set(series) == {"loss", "lr", "val/loss", "val/i2t_r1"}
    xs, ys = series["loss"]
    assert xs.tolist() == [1.0, 2.0] and ys.tolist() == [3.0, 2.0]
    fig = plots.training_curves_figure(records, keys=["loss", "val/i2t_r1"])
    assert [ax.get_title() for ax in fig.axes] == ["loss", "val/i2t_r1"]
    with pytest.raises(HiCLIPError, match="no nope"):
        plots.training_curves_figure(records, keys=["nope"])


def test_read_metrics_errors_name_the_line(tmp_path):
    with pytest.raises(HiCLIPError, match="no metrics.jsonl"):
        plots.read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    with pytest.raises(HiCLIPError, match=r"metrics.jsonl:2: not JSON"):
        plots.read_metrics(tmp_path / "metrics.jsonl")


def test_training_curves_need_numbers():
    with pytest.raises(HiCLIPError, match="no numeric metrics"):
        plots.training_curves_figure([{"step": 1, "note": "x"}])
    assert np.isfinite(plots.metric_series([{"loss": float("nan")}, {"loss": 1.0}])["loss"][1]).all()
