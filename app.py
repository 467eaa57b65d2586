"""HiCLIP hierarchies, layer by layer: a Streamlit app.

Start it with ``hiclip app`` (or ``streamlit run app.py``). Configuration by environment:

``HICLIP_CHECKPOINTS``  folder of checkpoints (subfolders with ``config.json``); default
                        ``checkpoints/``. When it holds none, an untrained ``hiclip-tiny``
                        stand-in is created in a temp folder (and the page says so).
``HICLIP_APP_DATA``     dataset specs to browse, separated by ``os.pathsep`` (any format
                        ``hiclip.data.open_dataset`` reads: manifest folder, COCO root, image
                        folder with captions, ...); default ``runs/demo/data``, or a 16-sample
                        synthetic set generated in a temp folder when that does not exist.
``HICLIP_DATA``         real data root; ``coco_tiny`` there is offered when present.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

from hiclip.errors import HiCLIPError  # noqa: E402
from hiclip.paths import REPO_ROOT, data_root  # noqa: E402
from induction.group_evaluation import evaluate_image  # noqa: E402
from induction.tree_evaluation import score_tree_pair  # noqa: E402
from viz import analysis, demo_assets, gold, images, links, trees  # noqa: E402
from viz.uploads import IMAGE_TYPES, MAX_UPLOAD_BYTES, validate_caption, validate_image_bytes  # noqa: E402

MAX_CANDIDATES = 200
DECIMALS = 3  # metrics tables: scores in [0, 1] to 3 decimals, percentages to 1
SAMPLE, UPLOAD = "dataset sample", "upload an image"
VIEWS = ["Links", "Segment tree", "Metrics", "Retrieval"]


# ----------------------------------------------------------------------------- resources


@st.cache_resource(show_spinner="loading the model ...")
def load_model(path: str):
    """``(model, tokenizer)`` from a checkpoint folder, in eval mode; loaded once per folder."""
    import hiclip

    model, tokenizer = hiclip.load(path)
    return model.eval(), tokenizer


@st.cache_resource(show_spinner=False)
def open_data(spec: str):
    """A dataset (``hiclip.data.open_dataset``), read once per spec; bad records are skipped."""
    from hiclip.data import open_dataset

    return open_dataset(spec, on_error="skip")


@st.cache_resource(show_spinner="creating an untrained stand-in checkpoint ...")
def stand_in_checkpoint() -> str:
    return str(demo_assets.tiny_checkpoint(demo_assets.scratch_dir() / "checkpoints" / "hiclip-tiny-untrained"))


@st.cache_resource(show_spinner="generating a small synthetic dataset ...")
def stand_in_dataset() -> str:
    return str(demo_assets.shapes_dataset(demo_assets.scratch_dir() / "shapes-16"))


def checkpoint_choices() -> tuple[dict[str, Path], bool]:
    """``({name: folder}, stand_in)``; the stand-in is used when the folder has no checkpoint."""
    found = demo_assets.checkpoint_folders(demo_assets.default_checkpoints_dir())
    if found:
        return found, False
    path = Path(stand_in_checkpoint())
    return {path.name: path}, True


def default_checkpoint(choices: dict[str, Path]) -> int:
    """Index of the checkpoint to open on: the first with the hierarchy on and both towers (the
    HiCLIP model, not its alphabetically earlier vanilla twin), else the first."""
    import json

    for index, folder in enumerate(choices.values()):
        try:
            config = json.loads((folder / "config.json").read_text())
            config = config.get("model", config)  # hiclip.save nests the model config
        except (OSError, ValueError, AttributeError):
            continue
        if config.get("hierarchy") and config.get("vision") is not None:
            return index
    return 0


def dataset_choices() -> dict[str, str]:
    """``{label: spec}`` of the datasets to browse."""
    specs = [s for s in os.environ.get("HICLIP_APP_DATA", "").split(os.pathsep) if s.strip()]
    if not specs:
        demo = REPO_ROOT / "runs" / "demo" / "data"
        specs = [str(demo) if (demo / "manifest.jsonl").is_file() else stand_in_dataset()]
    choices = {f"{Path(s).name} ({s})": s for s in specs}
    coco = data_root() / "coco_tiny" / "tiny_coco"
    if coco.is_dir():
        choices[f"COCO tiny ({coco})"] = str(coco)
    return choices


# ----------------------------------------------------------------------------- analyses


@st.cache_data(show_spinner=False, max_entries=64)
def text_analysis(checkpoint: str, caption: str, words: str = "whitespace") -> analysis.TextAnalysis:
    model, tokenizer = load_model(checkpoint)
    return analysis.analyse_text(model, tokenizer, caption, words)


@st.cache_data(show_spinner=False, max_entries=64)
def image_analysis(checkpoint: str, key: str, _image) -> analysis.ImageAnalysis:
    """Cached by ``(checkpoint, key)``; ``key`` names the image (sample id or upload hash)."""
    model, _ = load_model(checkpoint)
    return analysis.analyse_image(model, _image)


@st.cache_data(show_spinner=False, max_entries=16)
def ranking(checkpoint: str, key: str, _image, captions: tuple[str, ...]) -> list[tuple[str, float]]:
    model, tokenizer = load_model(checkpoint)
    return analysis.rank_captions(model, tokenizer, _image, captions)


# ----------------------------------------------------------------------------- inputs


def sidebar_settings() -> dict:
    """Thresholds and parser options (sidebar, below the input choice)."""
    st.sidebar.subheader("Reading the links")
    text_tau = st.sidebar.slider("text link threshold", 0.0, 1.0, 0.8, 0.01, key="text_tau",
                                 help="adjacent words linked at least this strongly are merged")
    image_tau = st.sidebar.slider("image link threshold", 0.0, 1.0, 0.5, 0.01, key="image_tau",
                                  help="4-connected patches linked at least this strongly are grouped "
                                       "(0.5: hiclip induce's default, the groups the tables score)")
    quantile = st.sidebar.checkbox("thresholds are per-layer quantiles", key="quantile",
                                   help="links saturate with depth; a quantile means the same at every layer")
    parser = st.sidebar.radio("full tree parser", ["tree_transformer", "binary"], key="parser",
                              help="Tree-Transformer's top-down parser, or the parameter-free lowest-link split")
    convention = st.sidebar.radio("F1 convention", ["standard", "vgnsl"], key="convention",
                                  help="standard (Kim et al. 2019, the report's headline) or vgnsl (Shi et al. 2019)")
    return {"text_tau": text_tau, "image_tau": image_tau, "quantile": quantile, "parser": parser,
            "convention": convention}


def choose_sample() -> dict | None:
    """The dataset sample to show: image, caption, gold, candidate captions; None if unavailable."""
    choices = dataset_choices()
    label = st.sidebar.selectbox("dataset", list(choices), key="dataset")
    try:
        data = open_data(choices[label])
    except HiCLIPError as error:
        st.error(f"cannot read the dataset: {error}")
        return None
    if len(data) == 0:
        st.error(f"the dataset {label} has no readable samples ({data.skips.summary()})")
        return None
    ids = [s.id for s in data]
    sample_id = st.sidebar.selectbox("sample", ids, key="sample")
    sample = data[ids.index(sample_id)]
    index = 0
    if len(sample.captions) > 1:
        index = st.sidebar.selectbox("caption", range(len(sample.captions)), key="caption_index",
                                     format_func=lambda i: sample.captions[i])
    try:
        image = sample.open_image()
    except HiCLIPError as error:
        st.error(f"cannot read the image of {sample.id}: {error}")
        return None
    masks = {}
    for level in gold.mask_levels(list(sample.masks)):
        try:
            masks[level] = sample.load_mask(level)
        except HiCLIPError as error:
            st.warning(f"mask {level} of {sample.id}: {error}")
    # the sample's own captions first, so they are among the candidates whatever the cap
    candidates = tuple(dict.fromkeys([*sample.captions, *data.captions()]))[:MAX_CANDIDATES]
    return {"key": f"{label}::{sample.id}", "title": sample.id, "image": image,
            "caption": sample.captions[index], "gold_tree": sample.trees[index] if sample.trees else None,
            "masks": masks, "true_captions": set(sample.captions), "candidates": candidates}


def read_upload(data: bytes | None, name: str, caption: str | None) -> dict:
    """Validate an uploaded image and typed caption; raises ``HiCLIPError`` with the reason."""
    image = validate_image_bytes(data, name, max_bytes=MAX_UPLOAD_BYTES)
    caption = validate_caption(caption)
    digest = hashlib.sha1(data).hexdigest()[:16]
    # typed text is raw: split as the treebanks are, punctuation as words of its own
    return {"key": f"upload::{digest}", "title": name, "image": image, "caption": caption, "words": "treebank",
            "gold_tree": None, "masks": {}, "true_captions": {caption}, "candidates": ()}


def choose_upload() -> dict | None:
    """The uploaded image and caption; shows ``st.error`` and returns None when they are bad."""
    upload = st.sidebar.file_uploader("image", type=list(IMAGE_TYPES), key="upload")
    caption = st.sidebar.text_input("caption", key="upload_caption",
                                    placeholder="a red square to the left of a blue circle")
    if upload is None:
        st.info("Upload an image and type a caption in the sidebar.")
        return None
    try:
        chosen = read_upload(upload.getvalue(), upload.name, caption)
    except HiCLIPError as error:
        st.error(str(error))
        return None
    # Retrieval candidates for an upload: the typed caption among a dataset's captions.
    try:
        spec = next(iter(dataset_choices().values()))
        others = tuple(dict.fromkeys(open_data(spec).captions()))[:MAX_CANDIDATES - 1]
    except HiCLIPError:
        others = ()
    chosen["candidates"] = (chosen["caption"], *[c for c in others if c != chosen["caption"]])
    return chosen


# ----------------------------------------------------------------------------- views


def show_svg(svg: str, css_class: str) -> None:
    """Inline SVG in the page, scaled down to the column width when wider."""
    st.markdown(f'<div class="{css_class}">{trees.responsive_svg(svg)}</div>',
                unsafe_allow_html=True)


def text_view(text: analysis.TextAnalysis, layer: int, settings: dict) -> None:
    st.subheader("Text: constituents merged by this layer")
    quantile = settings["text_tau"] if settings["quantile"] else None
    threshold = None if settings["quantile"] else settings["text_tau"]
    merged = text.merged_at(layer, threshold=threshold, quantile=quantile)
    show_svg(trees.tree_svg(merged), "hiclip-tree-layer")
    st.caption(f"layer {layer} of {text.n_layers}: nodes L<k> joined at layer k "
               f"({'quantile' if quantile is not None else 'threshold'} {settings['text_tau']:.2f}); "
               "'...' holds what is not merged yet")


def full_tree_view(text: analysis.TextAnalysis, settings: dict, gold_tree: str | None) -> None:
    """The induced tree of all layers, beside the gold tree when there is one (full width)."""
    st.subheader("Full induced tree" + (" against the gold tree" if gold_tree else ""))
    if len(text.words) < 2:
        st.info("a one-word caption has no constituents")
        return
    induced = text.parse(settings["parser"])
    if gold_tree:
        try:
            reference = gold.parse_gold(gold_tree)
            score = score_tree_pair(induced.tree, reference, settings["convention"])
            label = f"{settings['parser']}: {trees.score_label(score, settings['convention'])}"
            show_svg(trees.tree_pair_svg(induced.tree, reference, (label, "gold")), "hiclip-tree-full")
            st.caption(f"{settings['parser']} parser above the gold tree; green: constituents shared with "
                       "the other tree, red: not shared")
            return
        except (HiCLIPError, ValueError) as error:
            st.warning(f"gold tree not comparable: {error}")
    show_svg(trees.tree_svg(induced.tree), "hiclip-tree-full")
    st.caption(f"{settings['parser']} parser")


def image_view(image: analysis.ImageAnalysis, layer: int, settings: dict):
    """Overlay at ``layer``; returns the image prediction (groups of every layer) for the other views."""
    st.subheader("Image: groups at this layer")
    prediction = image.prediction(settings["image_tau"], settings["quantile"])
    groups = prediction.groups
    overlay = images.group_overlay(image.view, groups[layer])
    count = len(np.unique(groups[layer]))
    st.image(overlay, width="stretch",
             caption=f"layer {layer} of {image.n_layers}: {count} group{'s' if count != 1 else ''} "
                     f"on a {image.grid[0]}x{image.grid[1]} patch grid")
    return prediction


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


@st.cache_data(show_spinner=False, max_entries=64)
def figure_png(kind: str, checkpoint: str, key: str, params: tuple, _text, _image) -> bytes:
    """A rendered figure, cached by ``(kind, checkpoint, input key, params)``: none of these
    depends on the layer slider, so moving it redraws only the two top panels."""
    if kind == "text_links":
        threshold, quantile = params
        return _png(links.link_bars_figure(_text.words, _text.links, threshold=threshold, quantile=quantile,
                                           title="word links per layer (grey boxes: merged groups)"))
    if kind == "image_links":
        return _png(links.link_heatmaps_figure(_image.h, _image.v, image=_image.view,
                                               title="patch links per layer"))
    groups = _image.groups(*params)
    if kind == "segment_tree":
        from induction.image_groups import segment_tree

        return _png(images.segment_tree_figure(segment_tree(groups), image=_image.view, grid=_image.grid))
    if kind == "image_groups":
        return _png(images.groups_across_layers_figure(_image.view, groups))
    raise ValueError(f"unknown figure {kind!r}")


def links_view(text: analysis.TextAnalysis | None, image: analysis.ImageAnalysis | None,
               checkpoint: str, chosen: dict, settings: dict) -> None:
    if text is not None and len(text.words) > 1:
        params = (None, settings["text_tau"]) if settings["quantile"] else (settings["text_tau"], None)
        st.image(figure_png("text_links", checkpoint, f"{chosen.get('words', 'whitespace')}::{chosen['caption']}",
                            params, text, None))
    if image is not None:
        st.image(figure_png("image_links", checkpoint, chosen["key"], (), None, image))


def segment_tree_view(image: analysis.ImageAnalysis, checkpoint: str, chosen: dict,
                      settings: dict) -> None:
    params = (settings["image_tau"], settings["quantile"])
    st.image(figure_png("segment_tree", checkpoint, chosen["key"], params, None, image),
             caption="segment tree: each node a segment, drawn at the lowest layer where it exists")
    st.image(figure_png("image_groups", checkpoint, chosen["key"], params, None, image),
             caption="groups at every layer")


def _round(value: float | None, digits: int = DECIMALS) -> float | None:
    return None if value is None or value != value else round(float(value), digits)


def _tree_row(score) -> dict:
    """One sentence's scores (percent, 1 decimal) and span counts for the metrics table."""
    return {"precision": _round(score.precision, 1), "recall": _round(score.recall, 1), "F1": _round(score.f1, 1),
            "predicted spans": score.n_pred, "gold spans": score.n_gold, "matched": score.n_match}


def metrics_view(text: analysis.TextAnalysis | None, prediction, chosen: dict,
                 layer: int, settings: dict) -> None:
    shown = False
    if text is not None and chosen["gold_tree"] and len(text.words) > 1:
        rows = []
        for name in ("tree_transformer", "binary"):
            try:
                score = score_tree_pair(text.parse(name).tree, chosen["gold_tree"], settings["convention"])
            except HiCLIPError as error:
                st.warning(str(error))
                break
            rows.append({"parser": name, **_tree_row(score)})
        merged_tree = text.merged_at(layer, threshold=None if settings["quantile"] else settings["text_tau"],
                                     quantile=settings["text_tau"] if settings["quantile"] else None)
        try:
            score = score_tree_pair(merged_tree, chosen["gold_tree"], settings["convention"])
            rows.append({"parser": f"merged by layer {layer}", **_tree_row(score)})
        except HiCLIPError:
            pass
        if rows:
            st.markdown("**Tree F1 against the gold tree** (percent)")
            st.dataframe(rows, hide_index=True)
            shown = True
    if prediction is not None and chosen["masks"]:
        level = st.selectbox("mask level", list(chosen["masks"]), key="mask_level")
        evaluation = evaluate_image(prediction, {level: chosen["masks"][level]}, sample_id=chosen["title"])
        rows = [{"layer": r.layer, "mIoU": _round(r.miou), "ARI": _round(r.ari), "fg ARI": _round(r.fg_ari),
                 "boundary recall": _round(r.boundary_recall), "segments": int(r.n_segments),
                 "gold segments": int(r.n_gt_segments)}
                for r in evaluation.rows if r.level != "best"]
        best = evaluation.best_level[level]
        st.markdown(f"**Groups against the {level} masks** (fractions; best layer by mIoU: {best}; "
                    "foreground ARI alone rewards over-segmentation, read it with the segment count)")
        st.dataframe(rows, hide_index=True)
        shown = True
    if not shown:
        st.info("no gold tree or masks for this input")


def retrieval_view(chosen: dict, checkpoint: str) -> None:
    if not chosen["candidates"]:
        st.info("no candidate captions")
        return
    model, tokenizer = load_model(checkpoint)
    candidates, left_out = analysis.fitting_captions(model, tokenizer, chosen["candidates"])
    if left_out:
        st.caption(f"{left_out} candidate caption(s) over this model's limit of {model.config.text.max_tokens} "
                   "tokens left out (its learned positions' context length)")
    if not candidates:
        st.info("no candidate caption fits this model")
        return
    ranked = ranking(checkpoint, chosen["key"], chosen["image"], tuple(candidates))
    rows = [{"rank": i + 1, "similarity": round(score, 4), "caption": caption,
             "true": "yes" if caption in chosen["true_captions"] else ""}
            for i, (caption, score) in enumerate(ranked)]
    first_true = next((r["rank"] for r in rows if r["true"]), None)
    st.markdown(f"**{len(rows)} candidate captions ranked for this image**"
                + (f"; first true caption at rank {first_true}" if first_true else ""))
    st.dataframe(rows, hide_index=True)


# ----------------------------------------------------------------------------- page


def start_layer(text: analysis.TextAnalysis | None, image: analysis.ImageAnalysis | None, settings: dict) -> int:
    """The informative layer to open on (``viz.analysis.informative_layer``): of the image's groups
    when there is an image, else of the caption's merged word groups."""
    if image is not None:
        groups = image.prediction(settings["image_tau"], settings["quantile"]).groups
        return analysis.informative_layer([len(np.unique(g)) for g in groups], groups[0].size)
    if text is not None and len(text.words) > 1:
        quantile = settings["text_tau"] if settings["quantile"] else None
        threshold = None if settings["quantile"] else settings["text_tau"]
        return analysis.informative_layer(text.group_counts(threshold, quantile), len(text.words))
    return 0


def main() -> None:
    st.set_page_config(page_title="HiCLIP hierarchies", layout="wide")
    st.title("HiCLIP: hierarchies layer by layer")
    checkpoints, stand_in = checkpoint_choices()
    name = st.sidebar.selectbox("checkpoint", list(checkpoints), index=default_checkpoint(checkpoints),
                                key="checkpoint")
    checkpoint = str(checkpoints[name])
    if stand_in:
        st.warning(f"No checkpoint in {demo_assets.default_checkpoints_dir()}: showing an untrained "
                   "hiclip-tiny stand-in, so the hierarchies below are those of random weights.")
    source = st.sidebar.radio("input", [SAMPLE, UPLOAD], key="source")
    chosen = choose_sample() if source == SAMPLE else choose_upload()
    settings = sidebar_settings()
    if chosen is None:
        return
    try:
        model, _ = load_model(checkpoint)
    except HiCLIPError as error:
        st.error(f"cannot load {name}: {error}")
        return
    has_vision = model.config.vision is not None
    try:
        text = text_analysis(checkpoint, chosen["caption"], chosen.get("words", "whitespace"))
    except HiCLIPError as error:
        st.error(str(error))
        text = None
    image = image_analysis(checkpoint, chosen["key"], chosen["image"]) if has_vision else None
    n_layers = max(text.n_layers if text else 1, image.n_layers if image else 1)
    layer = st.slider("layer", 0, n_layers - 1, start_layer(text, image, settings), key="layer",
                      help="layer 0 is the first; links only strengthen with depth. It opens on the layer "
                           "halfway between single patches (words) and one group")
    st.markdown(f"**{chosen['title']}**: {chosen['caption']}")
    left, right = st.columns(2)
    prediction = None
    with left:
        if text is not None:
            text_view(text, min(layer, text.n_layers - 1), settings)
    with right:
        if image is not None:
            prediction = image_view(image, min(layer, image.n_layers - 1), settings)
        else:
            st.info("this checkpoint is text-only")
    if text is not None:
        full_tree_view(text, settings, chosen["gold_tree"])
    # One detail view at a time: only the chosen one is computed and drawn.
    view = st.radio("details", VIEWS, horizontal=True, key="view")
    if view == "Links":
        links_view(text, image, checkpoint, chosen, settings)
    elif view == "Segment tree":
        if image is not None:
            segment_tree_view(image, checkpoint, chosen, settings)
        else:
            st.info("this checkpoint is text-only")
    elif view == "Metrics":
        metrics_view(text, prediction, chosen, min(layer, (text.n_layers if text else 1) - 1), settings)
    elif has_vision:
        retrieval_view(chosen, checkpoint)
    else:
        st.info("this checkpoint is text-only: nothing to rank captions against")


main()
