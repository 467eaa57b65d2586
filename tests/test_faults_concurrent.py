"""Two runs writing the same output at once (issue 17.4): each writes a temporary of its own and
renames it, so the output ends as one complete, consistent file, and what each run reports is
what it wrote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hiclip
from hiclip.atomic import stale_temporaries
from hiclip.data import open_dataset

REPO = Path(__file__).resolve().parent.parent


def _hiclip(*args: str) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "hiclip.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> dict[str, Path]:
    from hiclip.data.shapes import ShapesConfig, generate_dataset

    root = tmp_path_factory.mktemp("concurrent")
    generate_dataset(root / "data", ShapesConfig(n=48, seed=2))
    dataset = open_dataset(root / "data")
    tokenizer = hiclip.HiCLIPTokenizer.train_word_level([c for s in dataset for c in s.captions])
    paths = {"data": root / "data"}
    for name, hierarchy in (("hiclip", True), ("clip", False)):
        model = hiclip.create_model("hiclip-tiny", hierarchy=hierarchy, vocab_size=tokenizer.vocab_size)
        paths[name] = hiclip.save(model, tokenizer, root / name)
    return paths


@pytest.mark.slow
def test_two_induce_runs_on_one_output_leave_one_whole_file(two_models, tmp_path):
    out = tmp_path / "same.jsonl"
    runs = {name: _hiclip("induce", "--checkpoint", str(two_models[name]), "--data",
                          str(two_models["data"]), "--out", str(out), "--batch-size", "8")
            for name in ("hiclip", "clip")}
    reports = {}
    for name, process in runs.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]
        reports[name] = json.loads(stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    sources = {r["model"]["checkpoint"] for r in records}
    assert len(sources) == 1  # one run's file, never a mix
    winner = next(name for name in runs if str(two_models[name]) in sources)
    assert len(records) == reports[winner]["records"] == 48
    assert {r["model"]["hierarchy"] for r in records} == {reports[winner]["hierarchy"]}
    for name, report in reports.items():  # each reports its own model and what it wrote
        assert report["hierarchy"] == (name == "hiclip") and report["records"] == 48
    assert stale_temporaries(tmp_path) == []


def test_two_data_runs_on_one_folder_never_mix(tmp_path):
    from hiclip.data.shapes import ShapesConfig, generate_dataset

    out = tmp_path / "shapes"
    runs = [_hiclip("data", "shapes", "--out", str(out), "--n", "24", "--seed", str(seed))
            for seed in (5, 6)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes in ([0, 0], [0, 2])
    for code, err in results:
        if code == 2:  # the later one finds the folder taken and says so in one line
            assert err.strip().startswith("error: ") and "already holds a dataset" in err
    seed = json.loads((out / "dataset.json").read_text())["config"]["seed"]
    reference = tmp_path / "reference"
    generate_dataset(reference, ShapesConfig(n=24, seed=seed))
    assert (out / "manifest.jsonl").read_bytes() == (reference / "manifest.jsonl").read_bytes()
    for image in (reference / "images").iterdir():
        assert (out / "images" / image.name).read_bytes() == image.read_bytes()
    assert stale_temporaries(tmp_path) == []
