"""Bad input: each problem is one HiCLIPError naming file and line, or a counted skip."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hiclip.data import CsvOptions, TextLimits, open_dataset
from hiclip.data.images import load_image
from hiclip.errors import HiCLIPError


def write_image(path: Path, size: tuple[int, int] = (16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def manifest(folder: Path, lines: list[str | bytes | dict]) -> Path:
    """Write manifest lines (dicts are JSON-encoded, bytes written raw)."""
    path = folder / "manifest.jsonl"
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            f.write(line if isinstance(line, bytes) else line.encode("utf-8"))
            f.write(b"\n")
    return path


def good(i: int, **fields) -> dict:
    return {"id": f"s{i}", "image": f"img{i}.png", "captions": [f"caption number {i}"], **fields}


@pytest.fixture
def folder(tmp_path) -> Path:
    for i in range(4):
        write_image(tmp_path / f"img{i}.png")
    return tmp_path


def expect_error(spec, pattern: str, **kwargs) -> str:
    with pytest.raises(HiCLIPError, match=pattern) as info:
        open_dataset(spec, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_malformed_json_line_names_the_line_and_is_skippable(folder):
    path = manifest(folder, [good(0), '{"id": "s1", "image": ', good(2)])
    expect_error(folder, rf"{path}:2: malformed JSON")
    ds = open_dataset(folder, on_error="skip")
    assert [s.id for s in ds] == ["s0", "s2"]
    assert ds.skips.summary() == "skipped 1 (malformed JSON: 1)"


def test_record_missing_required_field_or_wrong_type(folder):
    path = manifest(folder, [good(0), {"id": "s1", "captions": ["x"]}])
    expect_error(folder, rf"{path}:2: missing required field 'image'")
    manifest(folder, [{"id": "s0", "image": "img0.png", "captions": "not a list"}])
    expect_error(folder, r":1: 'captions' must be a list")
    manifest(folder, [good(0, width=-3)])
    expect_error(folder, r":1: 'width' must be a positive integer")


def test_duplicate_ids(folder):
    path = manifest(folder, [good(0), good(1), {**good(2), "id": "s0"}])
    expect_error(folder, rf"{path}:3: duplicate id 's0' \(first on line 1\)")


def test_non_utf8_manifest_line(folder):
    path = manifest(folder, [good(0), b'{"id": "s1", "image": "img1.png", "captions": ["caf\xe9"]}'])
    expect_error(folder, rf"{path}:2: not valid UTF-8")
    assert open_dataset(folder, on_error="skip").skips.reasons == {"non-UTF-8 line": 1}


def test_empty_caption_is_dropped_with_its_tree_under_skip(folder):
    path = manifest(folder, [good(0, captions=["a red box", "   ", "two dogs"],
                                  trees=["(NP (DT a) (JJ red) (NN box))", None, "(NP (CD two) (NNS dogs))"])])
    expect_error(folder, rf"{path}:1: caption 2 is empty")
    sample = open_dataset(folder, on_error="skip")[0]
    assert sample.captions == ["a red box", "two dogs"]
    assert sample.trees == ["(NP (DT a) (JJ red) (NN box))", "(NP (CD two) (NNS dogs))"]


def test_record_without_any_valid_caption_is_skipped(folder):
    manifest(folder, [good(0, captions=[""]), good(1), good(2, captions=[])])
    ds = open_dataset(folder, on_error="skip")
    assert [s.id for s in ds] == ["s1"]
    assert ds.skips.reasons == {"empty caption": 1, "sample without valid captions": 1, "no captions": 1}


def test_overlong_caption_limit_is_configurable(folder):
    long = " ".join(["word"] * 30)
    path = manifest(folder, [good(0, captions=[long])])
    expect_error(folder, rf"{path}:1: caption 1 has 30 words \(limit 20\)", limits=TextLimits(max_words=20))
    assert len(open_dataset(folder, limits=TextLimits(max_words=30))) == 1
    expect_error(folder, r"caption 1 has 149 characters \(limit 100\)", limits=TextLimits(max_chars=100))


def test_tokens_must_equal_caption_words(folder):
    path = manifest(folder, [good(0, captions=["a red box"], tokens=[["a", "red", "fox"]])])
    expect_error(folder, rf"{path}:1: tokens of caption 1 differ from its words: word 3 is 'fox', caption has 'box'")


def test_tree_leaves_must_equal_caption_words(folder):
    path = manifest(folder, [good(0, captions=["a red box"], trees=["(NP (DT a) (NN box))"])])
    expect_error(folder, rf"{path}:1: tree leaves of caption 1 differ from its words: word 2 is 'box', caption has 'red'")
    manifest(folder, [good(0, captions=["a red box"], trees=["(NP (DT a) (JJ red))"])])
    expect_error(folder, r":1: tree leaves of caption 1 differ from its words: 2 words, caption has 3")
    manifest(folder, [good(0, captions=["a red box"], trees=["(NP (DT a) (JJ red) (NN box)"])])
    expect_error(folder, r":1: tree of caption 1 does not parse")
    manifest(folder, [good(0, captions=["a b"], trees=["(X a b)", "(X a b)"])])
    expect_error(folder, r":1: 'trees' must be a list with one entry per caption \(1\), got 2")


def test_tree_check_can_be_turned_off(folder):
    manifest(folder, [good(0, captions=["a red box"], trees=["(NP (DT a) (NN box))"])])
    assert open_dataset(folder, check_trees=False)[0].trees == ["(NP (DT a) (NN box))"]


def test_phrase_spans_are_checked(folder):
    path = manifest(folder, [good(0, captions=["a red box"], phrases=[[{"span": [0, 5], "level": "object",
                                                                         "mask_ids": [1]}]])])
    expect_error(folder, rf"{path}:1: phrase span \[0, 5\] of caption 1 is outside its 3 words")


def test_missing_image(folder):
    path = manifest(folder, [good(0), good(9)])
    expect_error(folder, rf"{path}:2: image img9.png: file not found")
    ds = open_dataset(folder, on_error="skip")
    assert len(ds) == 1 and ds.skips.reasons == {"missing image": 1}


def test_zero_byte_image(folder):
    (folder / "img1.png").write_bytes(b"")
    path = manifest(folder, [good(0), good(1)])
    expect_error(folder, rf"{path}:2: image img1.png: empty file \(0 bytes\)")


def test_corrupt_image(folder):
    (folder / "img1.png").write_bytes(b"this is not a png at all" * 10)
    path = manifest(folder, [good(0), good(1)])
    expect_error(folder, rf"{path}:2: image .*img1.png: not a readable image")
    assert open_dataset(folder, on_error="skip").skips.reasons == {"corrupt image": 1}


def test_truncated_image_is_caught_by_full_check_or_on_load(folder):
    data = (folder / "img1.png").read_bytes()
    (folder / "img1.png").write_bytes(data[: len(data) // 2])
    path = manifest(folder, [good(0), good(1)])
    expect_error(folder, rf"{path}:2: image .*img1.png: truncated or corrupt", check_images="full")
    ds = open_dataset(folder)  # the header is intact, so the default check passes ...
    with pytest.raises(HiCLIPError, match=rf"{path}:2: image .*img1.png: truncated or corrupt"):
        ds[1].open_image()  # ... and decoding names the manifest line


def test_image_size_must_match_the_record(folder):
    path = manifest(folder, [good(0, width=20, height=16)])
    expect_error(folder, rf"{path}:1: image img0.png is 16x16 but the record says 20x16")


def test_mask_size_mismatch(folder):
    Image.fromarray(np.ones((8, 8), np.uint8)).save(folder / "m0.png")
    path = manifest(folder, [good(0, masks={"object": "m0.png"})])
    expect_error(folder, rf"{path}:1: object mask .*m0.png is 8x8 but the image is 16x16", check_images="full")
    sample = open_dataset(folder)[0]
    with pytest.raises(HiCLIPError, match=rf"{path}:1: mask .*m0.png: mask is 8x8 but the image is 16x16"):
        sample.load_mask("object")


def test_missing_mask_file(folder):
    path = manifest(folder, [good(0, masks={"object": "nope.png"})])
    expect_error(folder, rf"{path}:1: object mask .*nope.png: file not found")


def test_skip_summary_counts_every_reason(folder):
    (folder / "img3.png").write_bytes(b"")
    manifest(folder, [good(0), "not json", good(1, captions=[""]), good(3), good(7)])
    ds = open_dataset(folder, on_error="skip")
    assert [s.id for s in ds] == ["s0"]
    assert ds.skips.summary() == ("skipped 5 (empty caption: 1, empty image: 1, malformed JSON: 1, "
                                  "missing image: 1, sample without valid captions: 1)")


def test_nothing_usable_is_an_error(folder):
    manifest(folder, [good(9)])
    expect_error(folder, r"no usable samples \(skipped 1 \(missing image: 1\)\)", on_error="skip")


def test_unknown_error_policy(folder):
    manifest(folder, [good(0)])
    expect_error(folder, "unknown error policy", on_error="ignore")


# ----- CSV ---------------------------------------------------------------------------------------

def test_csv_missing_column_lists_the_columns(folder):
    (folder / "x.csv").write_text("image,caption\nimg0.png,hello\n")
    expect_error(folder / "x.csv", r"x.csv:1: missing column 'filepath' \(columns: 'image', 'caption'")
    ds = open_dataset(folder / "x.csv", csv=CsvOptions(image_column="image", caption_column="caption"))
    assert ds[0].captions == ["hello"]


def test_csv_bad_rows_name_their_line(folder):
    (folder / "x.csv").write_bytes(b"filepath,title\nimg0.png,fine\nimg1.png,caf\xe9 au lait\n"
                                   b"img2.png\nimg3.png,\nimg9.png,missing image\n")
    path = folder / "x.csv"
    expect_error(path, rf"{path}:3: caption 1 is not valid UTF-8")
    ds = open_dataset(path, on_error="skip")
    assert [s.captions for s in ds] == [["fine"]]
    assert ds.skips.reasons == {"non-UTF-8 caption": 1, "sample without valid captions": 2,
                                "malformed row": 1, "empty caption": 1, "missing image": 1}


def test_csv_empty_file(folder):
    (folder / "x.csv").write_text("")
    expect_error(folder / "x.csv", "empty CSV file")


# ----- folders, COCO, WebDataset ---------------------------------------------------------------

def test_folder_image_without_caption_and_bad_caption_file(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    write_image(tmp_path / "c.png")
    (tmp_path / "a.txt").write_text("fine caption")
    (tmp_path / "c.txt").write_bytes(b"ok line\n\xff\xfe bad line\n")
    expect_error(tmp_path, r"b.txt: image b.png has no caption file b.txt")
    ds = open_dataset(tmp_path, on_error="skip")
    assert [s.id for s in ds] == ["a"]
    assert ds.skips.reasons == {"missing caption": 1, "non-UTF-8 caption": 1}
    assert any("c.txt:2: not valid UTF-8" in e for e in ds.skips.examples)


def test_coco_malformed_json(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_val2017.json").write_text('{"images": [\n  {"id": 1,,}]}')
    expect_error(tmp_path, r"captions_val2017.json:2: malformed JSON")


def test_coco_caption_for_unknown_image(tmp_path):
    write_image(tmp_path / "val2017" / "1.jpg")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_val2017.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "1.jpg", "width": 16, "height": 16}],
         "annotations": [{"id": 5, "image_id": 1, "caption": "ok"}, {"id": 6, "image_id": 2, "caption": "x"}]}))
    expect_error(tmp_path, r"caption annotation 6 refers to unknown image id 2")
    assert len(open_dataset(tmp_path, on_error="skip")) == 1


def test_corrupt_and_incomplete_webdataset_shards(tmp_path):
    (tmp_path / "bad.tar").write_bytes(b"\x00garbage" * 100)
    expect_error(tmp_path / "bad.tar", r"bad.tar: not a readable tar file")
    with tarfile.open(tmp_path / "good.tar", "w") as tar:
        for name, data in [("a.png", b"not an image"), ("a.txt", b"caption"), ("b.txt", b"no image")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    expect_error(tmp_path / "good.tar", r"good.tar::a: image .*a.png: not a readable image")
    message = expect_error(tmp_path / "good.tar", r"no usable samples", on_error="skip")
    assert "corrupt image: 1" in message and "missing image: 1" in message


# ----- image modes -------------------------------------------------------------------------------

def _encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_every_image_mode_becomes_rgb(tmp_path):
    grey = Image.fromarray(np.array([[0, 128], [200, 255]], np.uint8), "L")
    assert np.asarray(load_image(_encode(grey)))[1, 0].tolist() == [200, 200, 200]

    la = Image.fromarray(np.array([[[100, 0], [100, 255]]], np.uint8), "LA")
    rgb = np.asarray(load_image(_encode(la), background=(10, 20, 30)))
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[0, 1].tolist() == [100, 100, 100]

    rgba = Image.fromarray(np.array([[[255, 0, 0, 0], [0, 255, 0, 255]]], np.uint8), "RGBA")
    rgb = np.asarray(load_image(_encode(rgba)))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[0, 1].tolist() == [0, 255, 0]

    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    assert np.asarray(load_image(_encode(palette)))[0].tolist() == [[255, 0, 0], [0, 0, 255]]
    palette.info["transparency"] = 0
    keyed = np.asarray(load_image(_encode(palette), background=(1, 2, 3)))
    assert keyed[0].tolist() == [[1, 2, 3], [0, 0, 255]]

    deep = Image.fromarray(np.array([[0, 32768, 65535]], np.uint16))
    assert deep.mode.startswith("I;16")
    path = tmp_path / "deep.png"
    deep.save(path)
    decoded = Image.open(path)
    assert decoded.mode in ("I;16", "I")  # Pillow opens 16-bit PNGs as one of these
    assert np.asarray(load_image(path))[0, :, 0].tolist() == [0, 128, 255]

    cmyk = Image.new("CMYK", (2, 1), (0, 255, 255, 0))  # pure red in CMYK
    assert np.asarray(load_image(_encode(cmyk, "JPEG")))[0, 0].tolist()[0] > 200
    assert np.asarray(load_image(_encode(cmyk, "TIFF")))[0, 0].tolist() == [255, 0, 0]

    binary = Image.fromarray(np.array([[True, False]]))
    assert np.asarray(load_image(_encode(binary)))[0].tolist() == [[255, 255, 255], [0, 0, 0]]

    floats = Image.fromarray(np.array([[-5.0, 99.6, 400.0]], np.float32), "F")
    assert np.asarray(load_image(_encode(floats, "TIFF")))[0, :, 0].tolist() == [0, 100, 255]


def test_load_image_errors_are_one_line(tmp_path):
    with pytest.raises(HiCLIPError, match="empty image data"):
        load_image(b"")
    with pytest.raises(HiCLIPError, match="x.png: file not found"):
        load_image(tmp_path / "x.png")
    with pytest.raises(HiCLIPError, match=r"^rec:3: image pic: not a readable image"):
        load_image(b"garbage", name="pic", where="rec:3")
