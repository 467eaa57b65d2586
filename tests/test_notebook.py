"""notebooks/figures.ipynb runs top to bottom (nbclient) on a tiny untrained checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from viz import demo_assets

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "figures.ipynb"

pytestmark = pytest.mark.slow


def test_notebook_executes_and_writes_the_figures(tmp_path_factory, tmp_path, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "viz-assets"
    checkpoint = demo_assets.tiny_checkpoint(root / "checkpoints" / "tiny-a")
    data = demo_assets.shapes_dataset(root / "shapes")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 5.0 - s}) + "\n" for s in range(1, 4)))
    out = tmp_path / "out"
    # the kernel inherits this process's environment
    monkeypatch.setenv("HICLIP_FIG_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("HICLIP_FIG_DATA", str(data))
    monkeypatch.setenv("HICLIP_FIG_SAMPLE", "shapes-000001")
    monkeypatch.setenv("HICLIP_FIG_RUN", str(run))
    monkeypatch.setenv("HICLIP_FIG_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "commit the notebook without outputs"
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if o.output_type == "display_data"
                and ("image/png" in o.data or "image/svg+xml" in o.data)]
    assert len(pictures) >= 9          # links, layers, pair SVG, groups, heatmaps, tree, 3 plots, curves
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"text_links.png", "text_layers.png", "tree_vs_gold.svg", "image_groups.png",
            "image_links.png", "segment_tree.png", "training_curves.png",
            "quantitative/text_f1_by_layer.png", "quantitative/image_miou_by_layer.png"} <= written
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "shapes-000001" in text and "baselines:" in text
