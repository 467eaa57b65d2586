"""The Streamlit app through ``streamlit.testing.v1.AppTest`` (in-process, no browser).

What AppTest covers here: the page script runs without exceptions for a dataset sample and for
uploads; the widgets (checkpoint/dataset/sample selectboxes, layer slider, input radio, file
uploader, caption box) drive it; the tree SVGs, overlay image, link/segment-tree figures,
metrics and retrieval tables are emitted; bad uploads render ``st.error`` and the page keeps
its widgets. What it does not cover: the browser rendering of those elements (that is
``tests/test_app_browser.py``).
"""
from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from viz import demo_assets

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 180


@pytest.fixture(scope="session")
def viz_assets(tmp_path_factory) -> dict[str, Path]:
    """A checkpoints folder with one tiny untrained checkpoint (plus a folder that is not a
    checkpoint) and a 16-sample synthetic dataset, shared by the app tests of this session."""
    root = tmp_path_factory.getbasetemp() / "viz-assets"
    checkpoints = root / "checkpoints"
    demo_assets.tiny_checkpoint(checkpoints / "tiny-a")
    (checkpoints / "not-a-checkpoint").mkdir(exist_ok=True)
    data = demo_assets.shapes_dataset(root / "shapes")
    return {"checkpoints": checkpoints, "data": data}


@pytest.fixture
def app_env(viz_assets, monkeypatch, tmp_path):
    """Environment of the app; Streamlit's caches are shared by the tests (same checkpoint path)."""
    monkeypatch.setenv("HICLIP_CHECKPOINTS", str(viz_assets["checkpoints"]))
    monkeypatch.setenv("HICLIP_APP_DATA", str(viz_assets["data"]))
    monkeypatch.setenv("HICLIP_DATA", str(tmp_path / "no-real-data"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # stand-ins go to tmp_path
    return viz_assets


def _svgs(at: AppTest) -> dict[str, str]:
    """The inline SVG blocks by their CSS class."""
    out = {}
    for md in at.markdown:
        match = re.match(r'<div class="([\w-]+)"[^>]*>(<svg.*</svg>)</div>$', md.value, re.S)
        if match:
            out[match.group(1)] = match.group(2)
    return out


def _png(size=(48, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _informative_layer(app_env) -> int:
    import hiclip
    from hiclip.data import open_dataset
    from viz import analysis

    model, _ = hiclip.load(app_env["checkpoints"] / "tiny-a")
    image = analysis.analyse_image(model.eval(), open_dataset(app_env["data"])[0].open_image())
    groups = image.groups(0.5)
    return analysis.informative_layer([len(set(g.ravel())) for g in groups], groups[0].size)


def test_app_opens_on_the_hiclip_checkpoint(tmp_path, viz_assets, monkeypatch):
    """Of a vanilla twin and a HiCLIP model, the app opens on HiCLIP even when the twin sorts first."""
    import json
    import shutil

    folder = tmp_path / "checkpoints"
    shutil.copytree(viz_assets["checkpoints"] / "tiny-a", folder / "b-hiclip")
    shutil.copytree(viz_assets["checkpoints"] / "tiny-a", folder / "a-clip")
    config = json.loads((folder / "a-clip" / "config.json").read_text())
    config["model"]["hierarchy"] = False
    (folder / "a-clip" / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HICLIP_CHECKPOINTS", str(folder))
    monkeypatch.setenv("HICLIP_APP_DATA", str(viz_assets["data"]))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="checkpoint").options == ["a-clip", "b-hiclip"]
    assert at.selectbox(key="checkpoint").value == "b-hiclip"


def test_sample_views(app_env):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="checkpoint").options == ["tiny-a"]
    assert at.selectbox(key="sample").value == "shapes-000000"
    layer = at.slider(key="layer")
    assert layer.max == 3                                # hiclip-tiny has 4 layers
    assert layer.value == _informative_layer(app_env)    # not the top layer, where all is one group
    at.slider(key="layer").set_value(3).run()
    svgs = _svgs(at)
    assert set(svgs) == {"hiclip-tree-layer", "hiclip-tree-full"}
    first_words = at.markdown[0].value.split(": ", 1)[1].split()[:2]
    for word in first_words:
        assert f">{word}<" in svgs["hiclip-tree-layer"]
    assert "gold  (green" in svgs["hiclip-tree-full"]    # gold exists: predicted vs gold pair
    assert re.search(r"tree_transformer: P [\d.]+  R [\d.]+  F1 [\d.]+ \(standard\)", svgs["hiclip-tree-full"])
    assert at.radio(key="view").options == ["Links", "Segment tree", "Metrics", "Retrieval"]
    # Links (default view): overlay + text link bars + image link heatmaps
    assert len(at.image) == 3

    at.radio(key="view").set_value("Segment tree").run()
    assert not at.exception
    captions = [c for image in at.image for c in image.captions]
    assert len(captions) == 3                            # overlay + segment tree + groups by layer
    assert re.match(r"layer 3 of 4: \d+ groups? on a 8x8 patch grid", captions[0])
    assert captions[1].startswith("segment tree") and captions[2] == "groups at every layer"

    at.radio(key="view").set_value("Metrics").run()
    assert not at.exception
    tree_table, group_table = (df.value for df in at.dataframe)
    assert list(tree_table["parser"]) == ["tree_transformer", "binary", "merged by layer 3"]
    assert tree_table["F1"].between(0, 100).all()
    assert (tree_table["F1"] == tree_table["F1"].round(1)).all()           # rounded for reading
    assert list(group_table["layer"]) == [0, 1, 2, 3]
    assert group_table["mIoU"].between(0, 1).all()
    assert (group_table["mIoU"] == group_table["mIoU"].round(3)).all()
    at.selectbox(key="mask_level").set_value("part").run()
    assert "part masks" in at.markdown[-1].value

    at.radio(key="view").set_value("Retrieval").run()
    assert not at.exception
    retrieval = at.dataframe[0].value
    assert len(retrieval) == 32 and retrieval["similarity"].is_monotonic_decreasing
    assert (retrieval["true"] == "yes").sum() == 2      # the sample's own two captions

    # layer 0: nothing merged across the whole sentence yet -> a different tree at the top
    at.slider(key="layer").set_value(0).run()
    assert not at.exception
    assert _svgs(at)["hiclip-tree-layer"] != svgs["hiclip-tree-layer"]
    assert any("layer 0 of 4" in c.value for c in at.caption)

    # another sample
    at.selectbox(key="sample").set_value("shapes-000003").run()
    assert not at.exception and not at.error
    assert at.markdown[0].value.startswith("**shapes-000003**")


def test_uploads_good_and_bad(app_env):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.radio(key="source").set_value("upload an image").run()
    assert not at.exception and not at.error
    assert any("Upload an image" in i.value for i in at.info)

    at.text_input(key="upload_caption").set_value("a red square")
    at.file_uploader(key="upload").upload("red.png", _png(), "image/png")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert set(_svgs(at)) == {"hiclip-tree-layer", "hiclip-tree-full"}
    assert len(at.image) >= 1
    at.radio(key="view").set_value("Retrieval").run()
    retrieval = at.dataframe[0].value
    assert retrieval["caption"].iloc[0] == "a red square" or "a red square" in set(retrieval["caption"])
    assert (retrieval["true"] == "yes").sum() == 1
    at.radio(key="view").set_value("Links").run()

    bad_cases = [
        ("not an image", ("fake.png", b"GIF89a? no, just text", "image/png"), "a red square",
         "fake.png: not a readable image"),
        ("empty caption", ("red.png", _png(), "image/png"), "   ", "the caption is empty"),
        ("too many pixels", ("huge.png", _png((5000, 4000)), "image/png"), "a red square",
         "5000x4000 pixels is too large"),
    ]
    for name, upload, caption, message in bad_cases:
        at.file_uploader(key="upload").clear()
        at.file_uploader(key="upload").upload(*upload)
        at.text_input(key="upload_caption").set_value(caption)
        at.run()
        assert not at.exception, (name, [e.value for e in at.exception])
        assert [e.value for e in at.error] == [message] or message in at.error[0].value, name
        assert not _svgs(at), name                          # nothing analysed
        assert at.radio(key="source").value == "upload an image"   # the page is still there

    # and it recovers with a good upload
    at.file_uploader(key="upload").clear()
    at.file_uploader(key="upload").upload("red.png", _png(), "image/png")
    at.text_input(key="upload_caption").set_value("a red square")
    at.run()
    assert not at.error and "hiclip-tree-full" in _svgs(at)


def test_stand_in_checkpoint_when_folder_is_empty(app_env, tmp_path, monkeypatch):
    st.cache_resource.clear()          # the stand-in's path is cached per process
    empty = tmp_path / "empty-checkpoints"
    empty.mkdir()
    monkeypatch.setenv("HICLIP_CHECKPOINTS", str(empty))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("untrained" in w.value for w in at.warning)
    assert at.selectbox(key="checkpoint").options == ["hiclip-tiny-untrained"]
    stand_in = tmp_path / f"hiclip-app-{__import__('os').getuid()}" / "checkpoints" / "hiclip-tiny-untrained"
    assert (stand_in / "model.safetensors").is_file()
    assert "hiclip-tree-layer" in _svgs(at)
    st.cache_resource.clear()


def test_hiclip_app_command_line(tmp_path, capsys):
    """``hiclip app``'s streamlit invocation and environment (serving itself is the browser test)."""
    import argparse

    from hiclip.cli import main
    from hiclip.commands import app as app_command

    parser = argparse.ArgumentParser()
    app_command.add_arguments(parser)
    args = parser.parse_args(["--checkpoints", str(tmp_path), "--data", "a", "--data", "b", "--port", "9999"])
    command = app_command.streamlit_command(args)
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4].endswith("app.py")
    options = dict(zip(command[5::2], command[6::2]))
    assert options["--server.headless"] == "true"
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "9999"
    env = app_command.app_environment(args)
    assert env["HICLIP_CHECKPOINTS"] == str(tmp_path.resolve())
    assert env["HICLIP_APP_DATA"].split(__import__("os").pathsep) == [
        str(Path("a").resolve()), str(Path("b").resolve())]
    assert main(["app", "--checkpoints", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["app", "--port", "0"]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err


def test_coco_tiny_from_the_real_data_root(shared_data, app_env, monkeypatch):
    coco = shared_data / "coco_tiny" / "tiny_coco"
    if not coco.is_dir():
        pytest.skip(f"coco_tiny not found under {shared_data}")
    monkeypatch.setenv("HICLIP_DATA", str(shared_data))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    label = next(o for o in at.selectbox(key="dataset").options if o.startswith("COCO tiny"))
    at.selectbox(key="dataset").set_value(label).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert set(_svgs(at)) == {"hiclip-tree-layer", "hiclip-tree-full"}
    assert "gold" not in _svgs(at)["hiclip-tree-full"]          # COCO captions carry no trees
    at.radio(key="view").set_value("Retrieval").run()
    retrieval = at.dataframe[0].value
    assert len(retrieval) == 200 and (retrieval["true"] == "yes").sum() >= 5
