"""Memory per image is bounded by construction (issue 17.2).

A 200000 x 1 PNG is a few hundred bytes and passes every pixel-count limit, but resizing its
shorter side to the model's size while keeping the ratio asked for about 39 GB at 224 px. The
test runs the app's analysis, ``induce``, ``eval`` and training validation on such images in a
subprocess whose address space is capped (``RLIMIT_AS``) at 1 GiB above what it holds after its
imports. Times are printed, not asserted: ``benchmarks/image_memory.py`` measures them against the
unbounded resize (BENCHMARKS.md).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
import hiclip
from hiclip.data import open_dataset
from hiclip.data.transforms import eval_transform, train_transform
from hiclip.evaluate import load_eval_set
from hiclip.train.data import _validation_set
from induction.induce import InduceOptions, induce_samples
from viz.analysis import analyse_image
from viz.uploads import validate_image_bytes

folder, checkpoint, headroom = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
model, tokenizer = hiclip.load(checkpoint)
dataset = open_dataset(folder)
pngs = {s.id: Path(s.image).read_bytes() for s in dataset}

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

limit = vm_bytes() + headroom
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
times = {}

def timed(name, function):
    start = time.perf_counter()
    function()
    times[name] = time.perf_counter() - start

with torch.inference_mode():
    for sample in dataset:
        image = sample.open_image()
        for size in (64, 224):
            timed(f"{sample.id} eval_transform({size})", lambda: eval_transform(size)(image))
            timed(f"{sample.id} train_transform({size})", lambda: train_transform(size)(image))
        timed(f"{sample.id} app", lambda: analyse_image(model, validate_image_bytes(pngs[sample.id])))
    timed("induce", lambda: list(induce_samples(model, tokenizer, dataset.samples, InduceOptions(),
                                                label_dir=folder / "labels")))
    timed("eval", lambda: load_eval_set(str(folder), None, model.config.vision.image_size, model,
                                        torch.device("cpu")))
    timed("validation", lambda: _validation_set(dataset.samples, 224, "raise", []))
print(json.dumps({"limit_gib": limit / 2**30, "times": times}))
"""


@pytest.fixture(scope="module")
def strips(tmp_path_factory) -> Path:
    """A manifest of a 200000 x 1 and a 1 x 20000 PNG (a few hundred bytes each)."""
    folder = tmp_path_factory.mktemp("strips")
    records = []
    for name, size in (("wide", (200000, 1)), ("tall", (1, 20000))):
        pixels = np.zeros((size[1], size[0], 3), np.uint8)
        pixels[..., 0] = 200
        Image.fromarray(pixels).save(folder / f"{name}.png", optimize=True)
        records.append({"id": name, "image": f"{name}.png", "captions": ["a red line"]})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import hiclip

    tokenizer = hiclip.HiCLIPTokenizer.train_word_level(["a red line"])
    model = hiclip.create_model("hiclip-tiny", vocab_size=tokenizer.vocab_size)
    return hiclip.save(model, tokenizer, tmp_path_factory.mktemp("ckpt") / "tiny")


def test_strip_images_are_small_files(strips):
    assert (strips / "wide.png").stat().st_size < 2000
    assert Image.open(strips / "wide.png").size == (200000, 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to size the cap")
def test_strip_images_run_everywhere_under_a_memory_cap(strips, tiny_checkpoint):
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(strips), str(tiny_checkpoint),
                          str(2**30)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))
    assert {"induce", "eval", "validation", "wide app", "tall app"} <= set(result["times"])


def test_resize_bounds_the_longer_side_and_keeps_the_centre():
    from hiclip.data.transforms import CenterCrop, Resize

    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 255, (3, 5000, 3), dtype=np.uint8))
    resized = Resize(64)(wide)
    assert resized.size == (64 * 8, 64)
    # the centre crop matches resizing the whole strip (up to interpolation rounding)
    full = wide.resize((round(5000 * 64 / 3), 64), Image.BICUBIC)
    expected = np.asarray(CenterCrop(64)(full), dtype=int)
    got = np.asarray(CenterCrop(64)(resized), dtype=int)
    assert np.abs(expected - got).mean() < 1.0
    # images up to 8:1 are resized exactly as before
    photo = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(Resize(224)(photo)), np.asarray(photo.resize((299, 224), Image.BICUBIC)))


def test_a_decompression_bomb_is_refused_in_one_line(tmp_path, monkeypatch):
    """Kept from before: an image over PIL's pixel limit is refused from its header."""
    from hiclip.data import open_dataset
    from hiclip.errors import HiCLIPError

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # stands in for a 2 x 89-megapixel file
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "bomb.png")
    (tmp_path / "manifest.jsonl").write_text(json.dumps(
        {"id": "bomb", "image": "bomb.png", "captions": ["a black square"]}) + "\n")
    with pytest.raises(HiCLIPError, match=r"manifest.jsonl:1: image bomb.png: refused as a decompression bomb"):
        open_dataset(tmp_path)
