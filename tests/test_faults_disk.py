"""Full disks, read-only folders and damaged checkpoints (issue 17.3).

The disk faults are real where the test may mount file systems (root): a small ``tmpfs`` for a
full disk, a read-only bind mount for a read-only folder. Elsewhere the same ``OSError``
(``ENOSPC`` / ``EROFS``) is injected at the write call (``HICLIP_TEST_NO_MOUNT=1`` forces that);
each test records which in its ``user_properties`` ("fault").
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hiclip
from hiclip import atomic
from hiclip.cli import main as cli
from hiclip.errors import HiCLIPError
from hiclip.train.loop import TrainHooks, train
from hiclip.train.run_folder import RunFolder
from fault_helpers import shapes_60, tiny_recipe
from model_sizes import SHAPES_32

pytestmark = pytest.mark.usefixtures("one_thread")


def _mount(args: list[str]) -> bool:
    """Run ``mount``; False where it is not allowed (or ``HICLIP_TEST_NO_MOUNT`` forces the
    injected faults)."""
    if os.geteuid() != 0 or shutil.which("mount") is None or os.environ.get("HICLIP_TEST_NO_MOUNT"):
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path, request):
    """``make(size)`` -> a folder on a tmpfs of ``size`` bytes, or None when mounting is not
    allowed here (the test then injects ENOSPC)."""
    mounted: list[Path] = []

    def make(size: int) -> Path | None:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        if not _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]):
            request.node.user_properties.append(("fault", "injected ENOSPC"))
            return None
        request.node.user_properties.append(("fault", f"tmpfs of {size} bytes"))
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        _umount(folder)


@pytest.fixture
def read_only(tmp_path, request, monkeypatch):
    """A read-only folder: a read-only bind mount, or an injected EROFS at file creation."""
    source, folder = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    folder.mkdir()
    if _mount(["--bind", str(source), str(folder)]) and _mount(["-o", "remount,bind,ro", str(folder)]):
        request.node.user_properties.append(("fault", "read-only bind mount"))
        yield folder
        _umount(folder)
        return
    _umount(folder)
    request.node.user_properties.append(("fault", "injected EROFS"))
    real = atomic.tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    yield folder


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return shapes_60(tmp_path_factory.mktemp("shapes") / "data")


def _config(shapes: Path, *extra: str):
    return tiny_recipe(shapes, "checkpoint_every=2", "keep_checkpoints=0", *extra)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, shapes) -> Path:
    """A tiny trained checkpoint (``hiclip.save`` format, with its weights checksum)."""
    from hiclip.data import open_dataset

    dataset = open_dataset(shapes)
    tokenizer = hiclip.HiCLIPTokenizer.train_word_level([c for s in dataset for c in s.captions])
    model = hiclip.create_model("hiclip-tiny", vocab_size=tokenizer.vocab_size, **SHAPES_32)
    return hiclip.save(model, tokenizer, tmp_path_factory.mktemp("ckpt") / "model")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert not any("Traceback" in line for line in err), err
    return err[-1]


# -- full disk ------------------------------------------------------------------------------------


def test_checkpoint_on_a_full_disk_is_one_line_and_leaves_nothing(small_disk, checkpoint, monkeypatch):
    model, tokenizer = hiclip.load(checkpoint)
    disk = small_disk(64 * 1024)  # smaller than the weights
    target = (disk or checkpoint.parent) / "copy"
    if disk is None:
        def full(*args, **kwargs):
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        monkeypatch.setattr("hiclip.checkpoint.save_file", full)
    with pytest.raises(HiCLIPError) as caught:
        hiclip.save(model, tokenizer, target)
    assert str(caught.value) == f"{target / 'model.safetensors'}: cannot write (no space left on the device)"
    assert list(target.iterdir()) == []  # no temporary left behind to keep the disk full


def test_training_on_a_full_disk_stops_in_one_line_without_leftovers(small_disk, shapes, tmp_path,
                                                                     capsys, monkeypatch):
    disk = small_disk(96 * 1024)  # room for the log and params, not for a checkpoint
    out = (disk or tmp_path) / "run"
    if disk is None:
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr("hiclip.checkpoint.save_file", full)
    code = cli(["train", "--config", "shapes-tiny", "--data", str(shapes), "--out", str(out),
                "--no-progress", "--max-steps", "2", "--set", f"model_overrides={json.dumps(SHAPES_32)}",
                "--set", "batch_size=8", "--set", "image_views=1", "--set", "loss.simsiam_weight=0",
                "--set", "val_split=null", "--set", "checkpoint_every=2"])
    assert code == 2
    assert "no space left on the device" in _one_line_error(capsys)
    assert atomic.stale_temporaries(out / "checkpoints") == []
    assert not (out / "checkpoints" / "step_2").exists()


def test_predictions_and_results_on_a_full_disk(small_disk, checkpoint, shapes, tmp_path, capsys,
                                                monkeypatch):
    disk = small_disk(32 * 1024)  # passes the writability probe, too small for the predictions
    folder = disk or tmp_path
    if disk is None:  # the rename fails, as the last write of a full disk would
        def full(source, target):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(atomic.os, "replace", full)
    out = folder / "pred.jsonl"
    assert cli(["induce", "--checkpoint", str(checkpoint), "--data", str(shapes), "--out", str(out)]) == 2
    assert _one_line_error(capsys) == f"error: {out}: cannot write (no space left on the device)"
    assert not out.exists() and atomic.stale_temporaries(folder) == []
    results = folder / "results.json"
    from hiclip.evaluate import write_results

    with pytest.raises(HiCLIPError, match="results.json: cannot write .no space left on the device."):
        write_results(results, {"padding": "x" * 200_000})
    assert atomic.stale_temporaries(folder) == []


def test_stale_checkpoint_temporary_filling_the_disk_is_cleaned_on_resume(small_disk, shapes, tmp_path):
    disk = small_disk(4 * 1024 * 1024)
    if disk is None:
        pytest.skip("needs a real small file system to fill (mount not allowed here)")
    out = disk / "run"
    _interrupted_run(shapes, out)
    # a writer killed mid-checkpoint: its temporary fills the disk
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / "checkpoints" / f".step_4.tmp-{atomic._host()}_{dead.pid}-x1y2"
    stale.mkdir()
    with open(stale / "model.safetensors", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass
    assert shutil.disk_usage(disk).free < 64 * 1024
    result = train(_config(shapes), out, resume="latest")
    assert result.steps == 6 and not stale.exists()
    assert f"removed checkpoints/{stale.name}, left by an interrupted write" in (out / "out.log").read_text()


def test_only_abandoned_temporaries_are_removed(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = atomic._host()
    abandoned = folder / f".step_4.tmp-{host}_{dead.pid}-ab12"
    live = folder / f".step_6.tmp-{host}_{os.getpid()}-cd34"   # a writer that is running
    other_host = folder / f".step_8.tmp-elsewhere_{dead.pid}-ef56"  # pid means nothing here
    old_unowned = folder / ".step_2.tmp-gh78"                  # named before owners were recorded
    for path in (abandoned, live, other_host, old_unowned):
        path.mkdir()
    hours_ago = time.time() - 2 * 3600
    os.utime(old_unowned, (hours_ago, hours_ago))
    RunFolder(tmp_path / "run").close()
    assert not abandoned.exists() and not old_unowned.exists()
    assert live.exists() and other_host.exists()


# -- read-only folder -----------------------------------------------------------------------------


def test_read_only_outputs_fail_before_any_work(read_only, checkpoint, shapes, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the work started although the output cannot be written")

    monkeypatch.setattr("hiclip.evaluate.run_evaluation", no_work)
    monkeypatch.setattr("hiclip.load", no_work)
    assert cli(["eval", "--checkpoint", str(checkpoint), "--data", str(shapes),
                "--out", str(read_only / "results.json")]) == 2
    assert "read-only file system" in _one_line_error(capsys)
    assert cli(["induce", "--checkpoint", str(checkpoint), "--data", str(shapes),
                "--out", str(read_only / "pred.jsonl")]) == 2
    assert "read-only file system" in _one_line_error(capsys)
    monkeypatch.setattr("hiclip.train.loop.train", no_work)
    assert cli(["train", "--config", "shapes-tiny", "--data", str(shapes),
                "--out", str(read_only / "run")]) == 2
    assert "read-only file system" in _one_line_error(capsys)
    assert cli(["data", "shapes", "--out", str(read_only / "data"), "--n", "4"]) == 2
    assert "read-only file system" in _one_line_error(capsys)
    assert cli(["figures", "--checkpoint", str(checkpoint), "--data", str(shapes),
                "--out", str(read_only / "figures")]) == 2
    assert "read-only file system" in _one_line_error(capsys)


# -- damaged checkpoints --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_of_six(tmp_path_factory, shapes) -> Path:
    """An uninterrupted 6-step run (the reference for resumed ones), on one thread like the
    tests (module fixtures start before the function-scoped ``one_thread``)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(_config(shapes), out)
    finally:
        torch.set_num_threads(before)
    return out


class Interrupt(Exception):
    pass


def _interrupted_run(shapes: Path, out: Path) -> Path:
    """The same run stopped during step 5, after checkpoints step_2 and step_4."""
    def stop(step: int, record: dict) -> None:
        if step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(_config(shapes), out, hooks=TrainHooks(on_step=stop))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_2", "step_4"]
    return out


def _same_weights(a: Path, b: Path) -> None:
    expected, got = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    for name, value in expected.items():
        assert torch.equal(value, got[name]), name


def test_resume_skips_a_truncated_training_state(shapes, tmp_path, run_of_six):
    out = _interrupted_run(shapes, tmp_path / "run")
    state = out / "checkpoints" / "step_4" / "training_state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    result = train(_config(shapes), out, resume="latest")
    log = (out / "out.log").read_text()
    assert "resume: skipped checkpoint step_4: " in log
    assert "training_state.pt: damaged (truncated or corrupt" in log
    assert "resume: using step_2, the newest intact checkpoint" in log
    assert "resumed from" in log and "step_2 at step 2" in log
    assert result.steps == 6
    _same_weights(run_of_six / "final", result.final)


def test_flipped_weight_bytes_are_found_on_load_and_resume(shapes, tmp_path, capsys, run_of_six):
    out = _interrupted_run(shapes, tmp_path / "run")
    weights = out / "checkpoints" / "step_4" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    for offset in (len(data) // 2, len(data) // 2 + 977):  # two bytes inside the tensor data
        data[offset] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(HiCLIPError, match=r"model.safetensors: damaged: its SHA-256 is [0-9a-f]{16}\.\.\., "
                                          r"config.json records [0-9a-f]{16}\.\.\."):
        hiclip.load(out / "checkpoints" / "step_4")
    assert cli(["induce", "--checkpoint", str(out / "checkpoints" / "step_4"), "--data", str(shapes),
                "--out", str(tmp_path / "pred.jsonl")]) == 2
    assert "damaged: its SHA-256" in _one_line_error(capsys)
    # an explicit checkpoint is refused; latest falls back to the newest intact one
    with pytest.raises(HiCLIPError, match="cannot resume from .*step_4: .*damaged"):
        train(_config(shapes), out, resume=str(out / "checkpoints" / "step_4"))
    result = train(_config(shapes), out, resume="latest")
    assert "resume: skipped checkpoint step_4: " in (out / "out.log").read_text()
    _same_weights(run_of_six / "final", result.final)


def test_flipped_training_state_bytes_fall_back_to_an_intact_checkpoint(shapes, tmp_path, run_of_six):
    out = _interrupted_run(shapes, tmp_path / "run")
    state = out / "checkpoints" / "step_4" / "training_state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the optimiser's tensors: torch.load alone accepts it
    state.write_bytes(bytes(data))
    with pytest.raises(HiCLIPError, match=r"cannot resume from .*step_4: .*training_state.pt: damaged "
                                          r"\(its sha256 differs"):
        train(_config(shapes), out, resume=str(out / "checkpoints" / "step_4"))
    result = train(_config(shapes), out, resume="latest")
    log = (out / "out.log").read_text()
    assert "resume: skipped checkpoint step_4: " in log and "resume: using step_2" in log
    _same_weights(run_of_six / "final", result.final)


class Payload:
    """Not a tensor or plain value: weights-only loading refuses it."""


def test_a_refused_pickle_in_resume_is_one_line(shapes, tmp_path, capsys):
    out = _interrupted_run(shapes, tmp_path / "run")
    for name in ("step_2", "step_4"):
        state = out / "checkpoints" / name / "training_state.pt"
        torch.save({"version": 1, "payload": Payload()}, state)
    code = cli(["train", "--config", "shapes-tiny", "--out", str(out), "--resume",
                str(out / "checkpoints" / "step_4"), "--data", str(shapes), "--no-progress"])
    assert code == 2
    line = _one_line_error(capsys)
    assert "training_state.pt: refused: it holds pickled Python objects" in line
    assert "Payload" in line
    with pytest.raises(HiCLIPError, match="every checkpoint in .* is damaged .*step_4: .*refused"):
        train(_config(shapes), out, resume="latest")


def test_checkpoint_without_checksum_loads_with_one_note(checkpoint, tmp_path, caplog):
    old = tmp_path / "old"
    shutil.copytree(checkpoint, old)
    config = json.loads((old / "config.json").read_text())
    assert len(config.pop("weights_sha256")) == 64
    (old / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    with caplog.at_level("WARNING", logger="hiclip.checkpoint"):
        hiclip.load(old)
        hiclip.load(old)
    notes = [r.getMessage() for r in caplog.records if "no weights checksum" in r.getMessage()]
    assert len(notes) == 1 and str(old) in notes[0]
    (old / "model.safetensors").write_bytes((old / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(HiCLIPError, match="model.safetensors: unreadable safetensors file"):
        hiclip.load(old)  # truncation is still found without a checksum


def test_shipped_checkpoints_carry_a_matching_checksum() -> None:
    from hiclip.checkpoint import file_sha256
    from hiclip.paths import REPO_ROOT

    for folder in sorted((REPO_ROOT / "checkpoints").iterdir()):
        recorded = json.loads((folder / "config.json").read_text()).get("weights_sha256")
        assert recorded == file_sha256(folder / "model.safetensors"), folder


def test_concurrent_savers_of_one_folder_never_leave_a_mix(checkpoint, tmp_path):
    """Two processes re-saving the same checkpoint folder: it always loads, and its checksum
    (written last) always matches the weights beside it."""
    script = (
        "import sys, hiclip, torch\n"
        "model, tok = hiclip.load(sys.argv[1])\n"
        "with torch.no_grad():\n"
        "    for p in model.parameters(): p.fill_(float(sys.argv[3]))\n"
        "for _ in range(8): hiclip.save(model, tok, sys.argv[2])\n")
    target = tmp_path / f"shared-{uuid.uuid4().hex[:6]}"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(checkpoint), str(target), value])
             for value in ("0.25", "0.5")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    try:
        model, _ = hiclip.load(target)
    except HiCLIPError as error:  # the two writers interleaved their files: found, not loaded
        assert "damaged: its SHA-256" in str(error)
    else:
        values = {float(p.detach().flatten()[0]) for p in model.parameters()}
        assert values in ({0.25}, {0.5})
    assert atomic.stale_temporaries(target) == []


def test_a_log_or_metrics_write_on_a_full_disk_is_one_line(tmp_path):
    run = RunFolder(tmp_path / "run")

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    handler = next(h for h in run.logger.handlers if hasattr(h, "baseFilename"))
    handler.stream = Full()  # injected: the next line of out.log meets a full disk
    with pytest.raises(HiCLIPError, match=r"out.log: cannot write \(no space left on the device\)"):
        run.log("step 1")
    run.close()
    (tmp_path / "run" / "metrics.jsonl").mkdir()  # a metrics file that cannot be opened
    with pytest.raises(HiCLIPError, match=r"metrics.jsonl: cannot write"):
        RunFolder(tmp_path / "run").metrics({"step": 1})
