"""Paths that lead out of the dataset (issue 17.6): ``../`` components, absolute paths and
symlinks, for images and masks, in every reader where a path can point out; ``image_root``
names another folder on purpose."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hiclip.cli import main as cli
from hiclip.data import CsvOptions, open_dataset
from hiclip.errors import HiCLIPError


def _png(path: Path, size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path)
    return path


def _manifest(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture
def layout(tmp_path) -> dict[str, Path]:
    """``data/`` (the dataset, one good image) and ``store/`` (images kept elsewhere)."""
    data, store = tmp_path / "data", tmp_path / "store"
    _png(data / "images" / "good.png")
    _png(store / "far.png")
    return {"data": data, "store": store, "root": tmp_path}


def _good(**fields) -> dict:
    return {"id": "good", "image": "images/good.png", "captions": ["a grey square"], **fields}


@pytest.mark.parametrize("image, shown", [
    ("../../../../../../../../../../etc/passwd", "/etc/passwd"),
    ("{store}/far.png", "{store}/far.png"),
])
def test_manifest_image_outside_the_folder_is_refused(layout, image, shown):
    image = image.format(store=layout["store"])
    _manifest(layout["data"], [_good(), {"id": "bad", "image": image, "captions": ["a thing"]}])
    with pytest.raises(HiCLIPError) as caught:
        open_dataset(layout["data"])
    message = str(caught.value)
    assert message.startswith(f"{layout['data'] / 'manifest.jsonl'}:2: image {image} resolves to "
                              f"{shown.format(store=layout['store'].resolve())}, outside the dataset folder")
    assert "image_root=" in message and "\n" not in message
    dataset = open_dataset(layout["data"], on_error="skip")
    assert [s.id for s in dataset] == ["good"]
    assert dataset.skips.reasons == {"path outside the dataset": 1}


def test_symlink_out_of_the_folder_is_refused(layout):
    (layout["data"] / "images" / "link.png").symlink_to(layout["store"] / "far.png")
    _manifest(layout["data"], [_good(), {"id": "link", "image": "images/link.png", "captions": ["x"]}])
    with pytest.raises(HiCLIPError, match=r"manifest.jsonl:2: image images/link.png resolves to .*store/far.png"):
        open_dataset(layout["data"])
    inside = layout["data"] / "images" / "same.png"
    inside.symlink_to("good.png")  # a symlink that stays inside is fine
    _manifest(layout["data"], [_good(), {"id": "same", "image": "images/same.png", "captions": ["x"]}])
    assert len(open_dataset(layout["data"])) == 2


def test_mask_outside_the_folder_is_refused(layout):
    _png(layout["root"] / "secret.png")
    _manifest(layout["data"], [_good(masks={"object": "../secret.png"})])
    with pytest.raises(HiCLIPError, match=r"manifest.jsonl:1: object mask .*secret.png resolves to "
                                          r".*secret.png, outside the dataset folder"):
        open_dataset(layout["data"], check_images="none")


def test_image_root_names_another_folder(layout):
    store = layout["store"]
    _manifest(layout["data"], [{"id": "abs", "image": str(store / "far.png"), "captions": ["x"]},
                               {"id": "rel", "image": "far.png", "captions": ["y"]}])
    dataset = open_dataset(layout["data"], image_root=store)
    assert [Path(s.image).resolve() for s in dataset] == [(store / "far.png").resolve()] * 2
    # the image root confines too: the dataset's own images are outside this one
    _manifest(layout["data"], [{"id": "own", "image": str(layout["data"] / "images" / "good.png"),
                                "captions": ["x"]}])
    with pytest.raises(HiCLIPError, match="outside the image root"):
        open_dataset(layout["data"], image_root=store)
    with pytest.raises(HiCLIPError, match="image root .*missing: not a folder"):
        open_dataset(layout["data"], image_root=layout["root"] / "missing")


def test_the_image_root_can_come_from_the_environment(layout, monkeypatch):
    """For the commands and the app that take no --image-root (score groups, figures, app)."""
    _manifest(layout["data"], [{"id": "far", "image": "far.png", "captions": ["x"]}])
    with pytest.raises(HiCLIPError, match="missing image|file not found"):
        open_dataset(layout["data"])
    monkeypatch.setenv("HICLIP_IMAGE_ROOT", str(layout["store"]))
    assert len(open_dataset(layout["data"])) == 1


def test_csv_paths_are_confined_to_the_csv_folder_or_its_image_root(layout):
    csv = layout["data"] / "pairs.csv"
    csv.write_text("filepath,title\nimages/good.png,a grey square\n../store/far.png,a far square\n")
    with pytest.raises(HiCLIPError, match=r"pairs.csv:3: image ../store/far.png resolves to .*outside"):
        open_dataset(csv)
    assert len(open_dataset(csv, on_error="skip")) == 1
    assert len(open_dataset(csv, csv=CsvOptions(image_root=str(layout["root"] / "data")),
                            on_error="skip")) == 1
    csv.write_text("filepath,title\nstore/far.png,a far square\ndata/images/good.png,a grey one\n")
    assert len(open_dataset(csv, image_root=layout["root"])) == 2


def test_folder_reader_refuses_symlinks_out(layout):
    folder = layout["root"] / "folder"
    _png(folder / "own.png")
    (folder / "own.txt").write_text("a grey square\n")
    (folder / "out.png").symlink_to(layout["store"] / "far.png")
    (folder / "out.txt").write_text("a far square\n")
    with pytest.raises(HiCLIPError, match=r"image out.png resolves to .*store/far.png, outside"):
        open_dataset(folder)
    assert [s.id for s in open_dataset(folder, on_error="skip")] == ["own"]
    assert len(open_dataset(folder, image_root=layout["root"])) == 2


def test_coco_file_names_stay_in_the_coco_root(layout):
    root = layout["root"] / "coco"
    _png(root / "val2017" / "1.png")
    annotations = {
        "images": [{"id": 1, "file_name": "1.png", "height": 8, "width": 8},
                   {"id": 2, "file_name": "../../store/far.png", "height": 8, "width": 8}],
        "annotations": [{"id": 10, "image_id": 1, "caption": "a grey square"},
                        {"id": 11, "image_id": 2, "caption": "a far square"}]}
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(annotations))
    with pytest.raises(HiCLIPError, match=r"image id 2\): image val2017/../../store/far.png resolves to .*outside"):
        open_dataset(root)
    assert [s.id for s in open_dataset(root, on_error="skip")] == ["1"]


def test_webdataset_symlink_members_are_never_followed(layout):
    shard = layout["root"] / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        link = tarfile.TarInfo("k1.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        caption = b"a grey square\n"
        info = tarfile.TarInfo("k1.txt")
        info.size = len(caption)
        tar.addfile(info, io.BytesIO(caption))
    with pytest.raises(HiCLIPError, match=r"shard.tar::k1: sample 'k1' has no image member"):
        open_dataset(shard)


def test_commands_report_the_escape_in_one_line_and_take_image_root(layout, tmp_path, capsys):
    import hiclip

    _manifest(layout["data"], [{"id": "far", "image": "../store/far.png", "captions": ["a far square"]}])
    tokenizer = hiclip.HiCLIPTokenizer.train_word_level(["a far square"])
    model = hiclip.create_model("hiclip-tiny", vocab_size=tokenizer.vocab_size)
    checkpoint = hiclip.save(model, tokenizer, tmp_path / "ckpt")
    args = ["induce", "--checkpoint", str(checkpoint), "--data", str(layout["data"]),
            "--out", str(tmp_path / "pred.jsonl")]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.jsonl:1: image ../store/far.png resolves to" in err[0]
    assert cli(args + ["--image-root", str(layout["root"])]) == 2  # relative to the root now: root/../store
    capsys.readouterr()
    _manifest(layout["data"], [{"id": "far", "image": "store/far.png", "captions": ["a far square"]}])
    assert cli(args + ["--image-root", str(layout["root"])]) == 0
    assert cli(["eval", "--checkpoint", str(checkpoint), "--data", str(layout["data"]), "--split", "all",
                "--image-root", str(layout["root"]), "--task", "retrieval"]) == 0
