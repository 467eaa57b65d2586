"""Every reader of hiclip.data on small fixtures made in tmp_path, and COCO on the real data."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hiclip.data import CsvOptions, Sample, detect_format, load_mask, open_dataset
from hiclip.data.shapes import ShapesConfig, generate_dataset
from hiclip.data.webdataset_reader import iter_webdataset
from hiclip.errors import HiCLIPError


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_image(path: Path, value: int = 100, size: tuple[int, int] = (16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def write_manifest(folder: Path, records: list[dict]) -> Path:
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ----- manifest ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes_reader")
    generate_dataset(out, ShapesConfig(n=30, seed=11))
    return out


def test_manifest_folder_and_file_give_the_same_samples(shapes):
    by_folder = open_dataset(shapes)
    by_file = open_dataset(shapes / "manifest.jsonl")
    assert by_folder.kind == by_file.kind == "manifest"
    assert [s.id for s in by_folder] == [s.id for s in by_file]
    assert len(by_folder) == 30 and by_folder.skips.total == 0


def test_manifest_sample_fields(shapes):
    sample = open_dataset(shapes)[0]
    assert isinstance(sample, Sample)
    assert sample.image == str(shapes / "images" / "000000.png")
    assert sample.tokens == [c.split() for c in sample.captions]
    assert all(t.startswith("(") for t in sample.trees)
    assert set(sample.masks) == {"part", "object", "group"}
    assert sample.width == sample.height == 64
    assert sample.labels["count"] >= 1 and len(sample.negatives) >= 1
    assert "regions" in sample.extra
    phrase = sample.phrases[0][0]
    assert phrase.level in sample.masks and phrase.span[0] < phrase.span[1]
    assert sample.open_image().size == (64, 64)
    group = sample.load_mask("group")
    assert group.dtype == np.int32 and group.shape == (64, 64)
    assert np.array_equal(sample.load_mask("scene"), (group > 0).astype(np.int32))
    with pytest.raises(HiCLIPError, match="no mask level 'crowd'"):
        sample.load_mask("crowd")


def test_manifest_split_filter_and_dataset_split(shapes):
    everything = open_dataset(shapes)
    test = open_dataset(shapes, split="test")
    assert [s.id for s in test] == [s.id for s in everything.split("test")]
    assert {s.split for s in test} == {"test"}
    assert set(everything.splits) == {"train", "val", "test"}
    assert everything.captions()[:2] == everything[0].captions
    with pytest.raises(HiCLIPError, match="no samples in split 'dev'"):
        everything.split("dev")


def test_minimal_manifest_record(tmp_path):
    write_image(tmp_path / "a.png")
    write_manifest(tmp_path, [{"id": "a", "image": "a.png", "captions": ["a grey square"]}])
    sample = open_dataset(tmp_path)[0]
    assert sample.tokens == [["a", "grey", "square"]] and sample.trees == [None]
    assert (sample.width, sample.height) == (16, 12)  # filled from the image header
    assert sample.split is None and sample.phrases == [[]]


# ----- CSV / TSV --------------------------------------------------------------------------------

def test_csv_open_clip_convention(tmp_path):
    write_image(tmp_path / "img" / "a.png")
    write_image(tmp_path / "img" / "b.png")
    (tmp_path / "pairs.csv").write_text('filepath,title\nimg/a.png,"a cat, sitting"\nimg/b.png,a dog\n')
    ds = open_dataset(tmp_path / "pairs.csv")
    assert ds.kind == "csv"
    assert [s.captions for s in ds] == [["a cat, sitting"], ["a dog"]]
    assert [s.id for s in ds] == ["pairs-1", "pairs-2"]
    assert ds[0].image == str(tmp_path / "img" / "a.png")


def test_tsv_with_custom_columns_split_and_tree(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    (tmp_path / "data.tsv").write_text(
        "path\ttext\tkey\tpart\ttree\n"
        "a.png\ta red box\tk1\ttrain\t(NP (DT a) (JJ red) (NN box))\n"
        "b.png\ttwo dogs\tk2\ttest\t\n")
    columns = CsvOptions(image_column="path", caption_column="text", id_column="key", split_column="part",
                         tree_column="tree")
    ds = open_dataset(tmp_path / "data.tsv", csv=columns)
    assert [s.id for s in ds] == ["k1", "k2"]
    assert ds[0].trees == ["(NP (DT a) (JJ red) (NN box))"] and ds[1].trees == [None]
    assert [s.id for s in open_dataset(tmp_path / "data.tsv", split="test", csv=columns)] == ["k2"]


def test_csv_other_separator_and_image_root(tmp_path):
    write_image(tmp_path / "pics" / "a.png")
    (tmp_path / "list.csv").write_text("filepath;title\na.png;a caption\n")
    ds = open_dataset(tmp_path / "list.csv", csv=CsvOptions(separator=";", image_root=str(tmp_path / "pics")))
    assert ds[0].captions == ["a caption"]


# ----- COCO -------------------------------------------------------------------------------------

def test_coco_tiny_real_data(shared_data):
    root = shared_data / "coco_tiny" / "tiny_coco"
    ds = open_dataset(root)
    assert ds.kind == "coco" and len(ds) == 100
    assert sum(len(s.captions) for s in ds) == 500
    assert set(ds.splits) == {"train", "val"}
    sample = next(s for s in ds if s.id == "391895")
    assert len(sample.captions) == 5 and sample.split == "train"
    assert (sample.width, sample.height) == sample.open_image().size
    objects = sample.load_mask("object")
    assert objects.shape == (sample.height, sample.width)
    assert objects.max() == len(sample.extra["instances"]) == sample.labels["count"]
    assert "person" in sample.labels["categories"]
    crowded = [s for s in ds if "crowd" in s.masks]
    assert crowded, "tiny_coco has iscrowd annotations"
    crowd = crowded[0].load_mask("crowd")
    assert crowd.shape == (crowded[0].height, crowded[0].width) and crowd.max() >= 1
    assert len(open_dataset(root, split="val")) == len(open_dataset(root, split="val2017")) == 50


def test_coco_captions_file_directly(shared_data):
    path = shared_data / "coco_tiny" / "tiny_coco" / "annotations" / "captions_train2017.json"
    ds = open_dataset(path)
    assert len(ds) == 50 and {s.split for s in ds} == {"train"}


def test_coco_small_fixture_with_polygon_and_crowd(tmp_path):
    write_image(tmp_path / "val2017" / "1.jpg", size=(20, 10))
    (tmp_path / "annotations").mkdir()
    images = [{"id": 1, "file_name": "1.jpg", "width": 20, "height": 10}]
    (tmp_path / "annotations" / "captions_val2017.json").write_text(json.dumps(
        {"images": images, "annotations": [{"id": 7, "image_id": 1, "caption": "a thing"},
                                           {"id": 8, "image_id": 1, "caption": "another thing"}]}))
    square = [[2, 2, 8, 2, 8, 8, 2, 8]]
    crowd = {"counts": [150, 10, 40], "size": [10, 20]}  # uncompressed RLE, column-major
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": images, "categories": [{"id": 1, "name": "box"}],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": square, "area": 36, "iscrowd": 0},
                         {"id": 2, "image_id": 1, "category_id": 1, "segmentation": crowd, "area": 10, "iscrowd": 1}]}))
    sample = open_dataset(tmp_path)[0]
    assert sample.captions == ["a thing", "another thing"]
    objects = sample.load_mask("object")
    assert objects[4, 4] == 1 and objects[0, 0] == 0 and objects.shape == (10, 20)
    assert sample.load_mask("crowd").sum() == 10


# ----- WebDataset -------------------------------------------------------------------------------

def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def shards(tmp_path) -> Path:
    for s in range(2):
        with tarfile.open(tmp_path / f"train-{s:03d}.tar", "w") as tar:
            for k in range(3):
                key = f"s{s}k{k}"
                _add(tar, f"{key}.jpg" if k else f"{key}.png", png_bytes(np.full((8, 8, 3), 40 * k, np.uint8)))
                _add(tar, f"{key}.txt", f"caption {s} {k}\n".encode())
                if k == 2:
                    _add(tar, f"{key}.json", json.dumps({"split": "val", "labels": {"n": k},
                                                         "trees": ["(NP (NN caption) (CD %d) (CD %d))" % (s, k)]}).encode())
                    _add(tar, f"{key}.object.png", png_bytes(np.eye(8, dtype=np.uint8)))
    return tmp_path


def test_webdataset_pattern_folder_and_single_shard(shards):
    ds = open_dataset(str(shards / "train-{000..001}.tar"))
    assert ds.kind == "webdataset" and len(ds) == 6
    assert [s.id for s in ds] == ["s0k0", "s0k1", "s0k2", "s1k0", "s1k1", "s1k2"]
    assert ds[1].open_image().size == (8, 8)
    assert ds[1].image.endswith("train-000.tar::s0k1.jpg")
    assert len(open_dataset(shards)) == 6 and len(open_dataset(shards / "train-001.tar")) == 3
    with_json = ds[2]
    assert with_json.split == "val" and with_json.labels == {"n": 2}
    assert with_json.trees == ["(NP (NN caption) (CD 0) (CD 2))"]
    assert np.array_equal(with_json.load_mask("object"), np.eye(8, dtype=np.int32))
    assert [s.id for s in open_dataset(str(shards / "train-*.tar"), split="val")] == ["s0k2", "s1k2"]


def test_webdataset_streaming_with_the_library(shards):
    streamed = list(iter_webdataset(str(shards / "train-{000..001}.tar")))
    assert [s.id for s in streamed] == ["s0k0", "s0k1", "s0k2", "s1k0", "s1k1", "s1k2"]
    assert streamed[0].captions == ["caption 0 0"]
    assert np.asarray(streamed[4].open_image())[0, 0, 0] == 40


# ----- image folder ------------------------------------------------------------------------------

def test_image_folder_with_masks_trees_and_splits(tmp_path):
    for split in ("train", "test"):
        folder = tmp_path / split
        write_image(folder / "cat.png", size=(8, 8))
        (folder / "cat.txt").write_text("a cat\n\na black cat\n")
        (folder / "cat.trees").write_text("(NP (DT a) (NN cat))\n(NP (DT a) (JJ black) (NN cat))\n")
        (folder / "masks").mkdir()
        Image.fromarray(np.eye(8, dtype=np.uint8) * 2).save(folder / "masks" / "cat.png")
        Image.fromarray(np.ones((8, 8), np.uint8)).save(folder / "masks" / "cat_group.png")
    ds = open_dataset(tmp_path)
    assert ds.kind == "folder" and [s.id for s in ds] == ["train/cat", "test/cat"]
    sample = ds[0]
    assert sample.captions == ["a cat", "a black cat"] and sample.split == "train"
    assert sample.trees[1] == "(NP (DT a) (JJ black) (NN cat))"
    assert set(sample.masks) == {"object", "group"}
    assert sample.load_mask("object").max() == 2
    assert [s.id for s in open_dataset(tmp_path, split="test")] == ["test/cat"]


def test_image_folder_with_images_and_captions_subfolders(tmp_path):
    write_image(tmp_path / "images" / "x.jpg")
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "x.txt").write_text("one caption")
    ds = open_dataset(tmp_path)
    assert ds[0].id == "x" and ds[0].captions == ["one caption"]


# ----- format detection and masks ----------------------------------------------------------------

def test_detect_format(tmp_path, shapes, shards):
    assert detect_format(shapes) == "manifest"
    assert detect_format(str(shards / "train-{000..001}.tar")) == "webdataset"
    (tmp_path / "x.csv").write_text("filepath,title\n")
    assert detect_format(tmp_path / "x.csv") == "csv"
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(HiCLIPError, match="cannot tell the dataset format"):
        detect_format(tmp_path / "x.txt")
    with pytest.raises(HiCLIPError, match="no such file or folder"):
        open_dataset(tmp_path / "missing")


def test_load_mask_modes_and_size_check(tmp_path):
    ids = np.array([[0, 1], [2, 300]], np.uint16)
    Image.fromarray(ids).save(tmp_path / "m16.png")
    assert load_mask(tmp_path / "m16.png", (2, 2)).tolist() == [[0, 1], [2, 300]]
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1] = (255, 0, 0)
    rgb[1, :] = (0, 0, 255)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert load_mask(tmp_path / "rgb.png").tolist() == [[0, 1], [2, 2]]
    with pytest.raises(HiCLIPError, match=r"m16.png: mask is 2x2 but the image is 3x2"):
        load_mask(tmp_path / "m16.png", (3, 2))
