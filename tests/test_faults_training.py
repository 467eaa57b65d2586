"""Faults in training data: an image that fails to decode in the middle of a run (issue 17.1).

The header check of ``open_dataset`` passes a truncated JPEG, so the fault only shows when a batch
draws it. Without skipping, the run stops with one line naming the file and its manifest line
(also through DataLoader workers); under ``on_error=skip`` the image is replaced, counted in
``metrics.jsonl``, logged in ``out.log``, and a run interrupted and resumed ends with exactly
the weights of an uninterrupted one. ``hiclip induce --on-error skip`` skips it too.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hiclip.cli import main as cli
from hiclip.errors import HiCLIPError
from hiclip.train.loop import TrainHooks, train
from fault_helpers import shapes_60, tiny_recipe
from model_sizes import SHAPES_32

pytestmark = pytest.mark.usefixtures("one_thread")


def truncate_as_jpeg(folder: Path, line: int) -> Path:
    """Replace the image of manifest line ``line`` (1-based) by a JPEG cut in half; the header
    (and so width and height) stays readable. Returns the JPEG's path."""
    manifest = folder / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    record = json.loads(lines[line - 1])
    buffer = io.BytesIO()
    Image.open(folder / record["image"]).convert("RGB").save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    jpeg = folder / record["image"].replace(".png", ".jpg")
    jpeg.write_bytes(data[: len(data) // 2])
    record["image"] = str(jpeg.relative_to(folder))
    lines[line - 1] = json.dumps(record)
    manifest.write_text("\n".join(lines) + "\n")
    return jpeg


def _lines_of_split(folder: Path, split: str) -> list[int]:
    lines = (folder / "manifest.jsonl").read_text().splitlines()
    return [i + 1 for i, text in enumerate(lines) if json.loads(text)["split"] == split]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict:
    """60 shapes samples at 32 px; two training images truncated."""
    folder = shapes_60(tmp_path_factory.mktemp("faults") / "data")
    train_lines = _lines_of_split(folder, "train")
    bad = [train_lines[3], train_lines[20]]
    jpegs = [truncate_as_jpeg(folder, line) for line in bad]
    return {"data": folder, "lines": bad, "jpegs": jpegs}


def _config(data: Path, *extra: str):
    return tiny_recipe(data, *extra)


def test_undecodable_image_stops_the_run_naming_file_and_manifest_line(damaged, tmp_path, capsys):
    with pytest.raises(HiCLIPError) as caught:
        train(_config(damaged["data"]), tmp_path / "run")
    message = str(caught.value)
    lines = {f"manifest.jsonl:{n}" for n in damaged["lines"]}
    assert any(where in message for where in lines), message
    assert any(j.name in message for j in damaged["jpegs"]) and "truncated or corrupt" in message
    assert "on_error=skip" in message
    # the same through the command line and a DataLoader worker: one line, exit status 2
    code = cli(["train", "--config", "shapes-tiny", "--data", str(damaged["data"]),
                "--out", str(tmp_path / "cli"), "--no-progress",
                "--set", f"model_overrides={json.dumps(SHAPES_32)}", "--set", "batch_size=8",
                "--set", "image_views=1", "--set", "loss.simsiam_weight=0",
                "--set", "val_split=null", "--set", "num_workers=1", "--max-steps", "6"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and "manifest.jsonl:" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_skip_counts_logs_and_resumes_to_the_same_weights(damaged, tmp_path):
    reference = train(_config(damaged["data"], "on_error=skip", "checkpoint_every=2"),
                      tmp_path / "ref")
    assert reference.steps == 6  # 48 training samples in batches of 8: the batch keeps its size
    records = [json.loads(l) for l in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("skipped_images", 0) for r in records) == 2
    log = (tmp_path / "ref" / "out.log").read_text()
    for jpeg in damaged["jpegs"]:
        assert f"skipped an undecodable image, replaced by the next sample" in log
        assert jpeg.name in log

    class Interrupt(Exception):
        pass

    def stop_at_3(step: int, record: dict) -> None:
        if step == 3:
            raise Interrupt

    cut = tmp_path / "cut"
    with pytest.raises(Interrupt):
        train(_config(damaged["data"], "on_error=skip", "checkpoint_every=2"), cut,
              hooks=TrainHooks(on_step=stop_at_3))
    resumed = train(_config(damaged["data"], "on_error=skip", "checkpoint_every=2"), cut,
                    resume="latest")
    assert resumed.steps == 6
    expected = load_file(str(reference.final / "model.safetensors"))
    got = load_file(str(resumed.final / "model.safetensors"))
    for name, value in expected.items():
        assert torch.equal(value, got[name]), name


@pytest.mark.timeout(300)
def test_skips_on_every_rank_are_counted_under_ddp(damaged, tmp_path):
    """Two gloo ranks each draw their own share of the batches: ``skipped_images`` is their sum."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "hiclip.cli",
               "train", "--config", "shapes-tiny", "--data", str(damaged["data"]), "--out", str(out),
               "--no-progress", "--device", "cpu",
               "--set", f"model_overrides={json.dumps(SHAPES_32)}", "--set", "batch_size=8",
               "--set", "epochs=1", "--set", "log_every=1", "--set", "image_views=1",
               "--set", "loss.simsiam_weight=0", "--set", "val_split=null", "--set", "on_error=skip"]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("skipped_images", 0) for r in records) == 2


def test_full_check_skips_undecodable_images_before_training(damaged, tmp_path):
    result = train(_config(damaged["data"], "on_error=skip", "check_images=full", "max_steps=2",
                           "val_split=val"), tmp_path / "run")
    log = (tmp_path / "run" / "out.log").read_text()
    assert "skipped 2 (corrupt image: 2)" in log and "manifest.jsonl:" in log
    params = json.loads((tmp_path / "run" / "params.json").read_text())
    assert params["n_train"] == 46 and result.steps == 2
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("skipped_images", 0) for r in records) == 0  # nothing left to meet mid-run


def test_undecodable_validation_image(damaged, tmp_path):
    folder = shapes_60(tmp_path / "data")
    line = _lines_of_split(folder, "val")[0]
    jpeg = truncate_as_jpeg(folder, line)
    with pytest.raises(HiCLIPError, match=f"manifest.jsonl:{line}: image .*{jpeg.name}"):
        train(_config(folder, "val_split=val", "max_steps=1"), tmp_path / "raise")
    result = train(_config(folder, "val_split=val", "max_steps=1", "on_error=skip"),
                   tmp_path / "skip")
    assert result.steps == 1 and result.last_validation
    assert "validation: skipped an undecodable image" in (tmp_path / "skip" / "out.log").read_text()


def test_bad_option_values_fail_at_start(damaged, tmp_path):
    with pytest.raises(HiCLIPError, match="on_error must be 'raise' or 'skip'"):
        _config(damaged["data"], "on_error=ignore")
    with pytest.raises(HiCLIPError, match="check_images must be"):
        _config(damaged["data"], "check_images=all")


def test_induce_skips_the_undecodable_image_and_leaves_no_temporary(damaged, tmp_path, capsys):
    import hiclip
    from hiclip.data import open_dataset

    dataset = open_dataset(damaged["data"])
    tokenizer = hiclip.HiCLIPTokenizer.train_word_level([c for s in dataset for c in s.captions])
    model = hiclip.create_model("hiclip-tiny", vocab_size=tokenizer.vocab_size, **SHAPES_32)
    checkpoint = hiclip.save(model, tokenizer, tmp_path / "ckpt")
    out = tmp_path / "pred.jsonl"
    out.write_text("previous\n")
    args = ["induce", "--checkpoint", str(checkpoint), "--data", str(damaged["data"]),
            "--out", str(out), "--split", "train"]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "manifest.jsonl:" in err[-1]
    assert out.read_text() == "previous\n"  # the old output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "pred.jsonl"]
    assert cli(args + ["--on-error", "skip"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    n_train = len(_lines_of_split(damaged["data"], "train"))
    assert report["records"] == n_train - 2 == len(out.read_text().splitlines())
    assert report["skips"] == "skipped 2 (corrupt image: 2)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "pred.jsonl"]
