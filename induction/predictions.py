"""The prediction JSONL of ``hiclip induce``: typed records, one writer, one validating reader.

Every consumer of predictions (tree and group scoring, ``hiclip figures``, the demo report, the
notebook and the app) goes through :func:`read_predictions` and the records below, so a field is
parsed and checked in exactly one place. The file holds one JSON object per line, one line per
sample in dataset order (docs/DESIGN.md, "Prediction JSONL")::

    {"id": "shapes-000012", "split": "test",
     "text": [{"caption_index": 0, "tokens": ["a", "red", "square"],
               "links": [[0.41, 0.52], ...],                    # (L, n-1) word links
               "tree": "(S ...)", "algorithm": {"name": "tree_transformer", ...},
               "trees": {"tree_transformer": "(S ...)", "binary": "(S ...)"},
               "n_tokens": 5, "n_unknown": 0}],                 # optional
     "image": {"grid": [8, 8],
               "h_links": [...], "v_links": [...],             # (L, H, W-1), (L, H-1, W)
               "groups": [[...], ...],                          # (L, H*W) patch labels
               "group_params": {"tau": 0.5, "quantile": false},
               "segment_tree": {"nodes": [{"id", "parent", "layer", "patches"}]},
               "label_maps": {"0": "pred_labels/x_l0.png"},     # optional, relative to the file
               "label_map_params": {...}},
     "model": {"checkpoint": "...", "name": "hiclip-tiny", "hierarchy": true,
               "affinity_source": "prior", "grid": [8, 8]}}

``text`` is empty, or ``image`` null, when the data or the model has only one modality.

What the reader checks (each failure is one line ``error: FILE:LINE: ...``):

* every line is a JSON object with a non-empty string ``id``, unique in the file;
* captions: ``tokens`` a non-empty list of strings, ``caption_index`` a non-negative integer,
  ``links`` (when present) a finite (L, n-1) array in [0, 1], the same L for every caption of
  the file; ``tree``
  and ``trees`` strings; ``n_tokens`` / ``n_unknown`` non-negative integers when present, at most
  ``n_unknown`` <= the number of words;
* images: ``grid`` [H, W] of positive integers, the same for every record and equal to the
  model's grid when the record names it; links of shapes (L, H, W-1) and (L, H-1, W), finite and
  in [0, 1]; ``groups`` non-negative integer labels of shape (L, H*W) with the links' L; the
  same layers (of links, groups or label maps) in every record; a ``segment_tree`` that is a tree over the H*W patches
  (:func:`induction.image_groups.tree_from_json`); ``label_maps`` keyed by layer numbers (all
  layers or some), with paths inside the prediction file's folder.

A missing tree is not an error here: scoring counts it as a skip (``--on-error skip``) or stops.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hiclip.atomic import atomic_open
from hiclip.data.trees import jsonl_records
from hiclip.errors import HiCLIPError, located

LINK_DECIMALS = 5  # links saturate near 1, so absolute precision is what matters; keeps files small


def round_links(array: np.ndarray) -> np.ndarray:
    """Links as they are stored: float64 rounded to :data:`LINK_DECIMALS` decimals.

    ``hiclip induce`` rounds before it induces trees and groups, so what a file holds is exactly
    what its trees and groups were made from, and a record read back equals the one written.
    """
    return np.round(np.asarray(array, dtype=np.float64), LINK_DECIMALS)


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------
@dataclass
class CaptionPrediction:
    """One caption's words, per-layer word links and induced trees.

    Attributes
    ----------
    caption_index : int
        Index of the caption in its sample's ``captions``.
    tokens : list of str
        The n words the model read.
    links : ndarray of float64, shape (L, n-1), or None
        ``links[l, k]`` joins word k and k+1 at layer l (0 = first), in [0, 1]; None for trees
        that came without links (another system's output).
    tree : str or None
        The primary induced tree (PTB bracket string).
    algorithm : dict
        Name and parameters of the primary tree's algorithm.
    trees : dict of str to str
        Every induced tree by algorithm name (``tree_transformer``, ``binary``).
    n_tokens, n_unknown : int or None
        Tokenizer pieces of the caption and words outside the vocabulary, when recorded.
    """

    caption_index: int
    tokens: list[str]
    links: np.ndarray | None
    tree: str | None = None
    algorithm: dict[str, Any] = field(default_factory=dict)
    trees: dict[str, str] = field(default_factory=dict)
    n_tokens: int | None = None
    n_unknown: int | None = None

    @property
    def n_layers(self) -> int | None:
        return None if self.links is None else int(self.links.shape[0])

    def tree_for(self, key: str | None = None) -> str | None:
        """The primary ``tree`` (``key`` None) or ``trees[key]``; None when absent."""
        return self.tree if key is None else self.trees.get(key)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"caption_index": self.caption_index, "tokens": list(self.tokens)}
        if self.links is not None:
            out["links"] = np.asarray(self.links, dtype=np.float64).tolist()
        out.update(tree=self.tree, algorithm=self.algorithm, trees=dict(self.trees))
        if self.n_tokens is not None:
            out["n_tokens"] = int(self.n_tokens)
        if self.n_unknown is not None:
            out["n_unknown"] = int(self.n_unknown)
        return out


@dataclass
class ImagePrediction:
    """One image's patch links, per-layer groups and segment tree.

    Attributes
    ----------
    grid : (int, int)
        ``(H, W)`` patches; patches are flat row-major indices ``0 .. H*W-1``.
    h_links, v_links : ndarray of float64 or None
        Shapes (L, H, W-1) and (L, H-1, W), in [0, 1].
    groups : ndarray of int64 or None
        Shape (L, H, W): the patch groups of every layer (layer 0 lowest).
    group_params : dict or None
        How the groups were made (``tau``, ``quantile``).
    segment_tree : dict or None
        ``{"nodes": [...]}`` as :func:`induction.image_groups.tree_to_json` writes it.
    label_maps : dict of int to str, or None
        Layer -> label-map PNG at image resolution, relative to the prediction file's folder.
    label_map_params : dict or None
    """

    grid: tuple[int, int]
    h_links: np.ndarray | None = None
    v_links: np.ndarray | None = None
    groups: np.ndarray | None = None
    group_params: dict[str, Any] | None = None
    segment_tree: dict[str, Any] | None = None
    label_maps: dict[int, str] | None = None
    label_map_params: dict[str, Any] | None = None

    @property
    def layers(self) -> list[int]:
        """The predicted levels (model layers) of ``groups``, else of ``label_maps``; ``[]`` if neither."""
        if self.groups is not None:
            return list(range(int(self.groups.shape[0])))
        if self.label_maps:
            return sorted(self.label_maps)
        return []

    @property
    def n_layers(self) -> int | None:
        """Number of model layers (of the links, else of the predicted levels)."""
        if self.h_links is not None:
            return int(self.h_links.shape[0])
        return len(self.layers) or None

    @property
    def has_links(self) -> bool:
        return self.h_links is not None and self.v_links is not None

    def tree(self):
        """The segment tree as a ``networkx.DiGraph`` (parent -> child), or None."""
        from induction.image_groups import tree_from_json

        if self.segment_tree is None:
            return None
        return tree_from_json(self.segment_tree, self.grid[0] * self.grid[1])

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"grid": [int(self.grid[0]), int(self.grid[1])]}
        if self.h_links is not None and self.v_links is not None:
            out["h_links"] = np.asarray(self.h_links, dtype=np.float64).tolist()
            out["v_links"] = np.asarray(self.v_links, dtype=np.float64).tolist()
        if self.groups is not None:
            out["groups"] = np.asarray(self.groups).reshape(self.groups.shape[0], -1).tolist()
        if self.group_params is not None:
            out["group_params"] = self.group_params
        if self.segment_tree is not None:
            out["segment_tree"] = self.segment_tree
        if self.label_maps is not None:
            out["label_maps"] = {str(k): v for k, v in sorted(self.label_maps.items())}
        if self.label_map_params is not None:
            out["label_map_params"] = self.label_map_params
        return out


@dataclass
class ModelInfo:
    """Which model made the predictions (``model`` of a record)."""

    checkpoint: str | None = None
    name: str | None = None
    hierarchy: bool | None = None
    affinity_source: str | None = None
    grid: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"checkpoint": self.checkpoint, "name": self.name,
                               "hierarchy": self.hierarchy, "affinity_source": self.affinity_source}
        if self.grid is not None:
            out["grid"] = [int(self.grid[0]), int(self.grid[1])]
        out.update(self.extra)
        return out


@dataclass
class PredictionRecord:
    """One sample's predictions. ``line`` is the 1-based line it was read from (not written)."""

    id: str
    split: str | None
    text: list[CaptionPrediction] = field(default_factory=list)
    image: ImagePrediction | None = None
    model: ModelInfo | None = None
    line: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "split": self.split, "text": [c.to_json() for c in self.text],
                "image": None if self.image is None else self.image.to_json(),
                "model": None if self.model is None else self.model.to_json()}


@dataclass
class Predictions:
    """The records of one prediction file (or made in memory), in file order.

    ``source`` names the file in messages; ``folder`` is where relative label-map paths start.
    """

    records: list[PredictionRecord]
    source: str = "predictions"
    folder: Path | None = None
    split: str | None = None
    n_other_splits: int = 0

    def __iter__(self) -> Iterator[PredictionRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def where(self, record: PredictionRecord, item: str = "") -> str:
        """``file:line`` of a record (plus an item inside it) for messages."""
        place = f"{self.source}:{record.line}" if record.line is not None else f"{self.source} ({record.id})"
        return f"{place}: {item}" if item else place

    def captions(self) -> Iterator[tuple[PredictionRecord, CaptionPrediction]]:
        """Every caption prediction, flattened in file order (the order trees are scored in)."""
        for record in self.records:
            for caption in record.text:
                yield record, caption

    def images(self) -> Iterator[tuple[PredictionRecord, ImagePrediction]]:
        for record in self.records:
            if record.image is not None:
                yield record, record.image

    def label_map_path(self, relative: str) -> Path:
        return (self.folder or Path(".")) / relative


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------
def write_predictions(records: Iterable[PredictionRecord], path: str | Path) -> int:
    """Write records as JSONL, atomically (unique temporary, then one rename); returns the count.

    ``records`` may be a generator: records are written as they come, and the target appears only
    once the last one is written, so a failed run leaves any earlier file untouched.
    """
    count = 0
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record.to_json(), separators=(",", ":"), allow_nan=False) + "\n")
            count += 1
    return count


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------
class _Invalid(Exception):
    """A problem in one record; the reader adds file and line."""


def _int(value: Any, what: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _Invalid(f"{what} must be an integer >= {low}; got {value!r}")
    return value


def _str_or_none(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _Invalid(f"{what} must be a string; got {type(value).__name__}")
    return value


def _float_array(value: Any, what: str, ndim: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _Invalid(f"{what} is not a rectangular array of numbers") from None
    if array.ndim != ndim:
        raise _Invalid(f"{what} must have {ndim} dimensions; got shape {array.shape}")
    if array.size and not np.isfinite(array).all():
        raise _Invalid(f"{what} holds NaN or infinite values")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise _Invalid(f"{what} must lie in [0, 1]; found {array.min():.6g} .. {array.max():.6g}")
    return array


def _caption(entry: Any, k: int) -> CaptionPrediction:
    what = f"text {k}"
    if not isinstance(entry, dict):
        raise _Invalid(f"{what} must be an object")
    tokens = entry.get("tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise _Invalid(f"{what}: tokens must be a non-empty list of strings")
    index = _int(entry.get("caption_index", k), f"{what}: caption_index")
    raw = entry.get("links")
    links = None
    if raw is not None:
        if len(tokens) == 1 and raw == []:
            raw = [[]]
        links = _float_array(raw, f"{what}: links", 2)
        if links.shape[1] != len(tokens) - 1 or links.shape[0] < 1:
            raise _Invalid(f"{what}: links of shape {links.shape} do not fit {len(tokens)} tokens "
                           f"(expected (layers, {len(tokens) - 1}))")
    tree = _str_or_none(entry.get("tree"), f"{what}: tree")
    trees = entry.get("trees") or {}
    if not isinstance(trees, dict) or not all(isinstance(v, str) or v is None for v in trees.values()):
        raise _Invalid(f"{what}: trees must map algorithm names to bracket strings")
    algorithm = entry.get("algorithm") or {}
    if not isinstance(algorithm, dict):
        raise _Invalid(f"{what}: algorithm must be an object")
    n_tokens = entry.get("n_tokens")
    n_unknown = entry.get("n_unknown")
    if n_tokens is not None:
        _int(n_tokens, f"{what}: n_tokens")
    if n_unknown is not None:
        _int(n_unknown, f"{what}: n_unknown")
        if n_unknown > len(tokens):
            raise _Invalid(f"{what}: n_unknown {n_unknown} exceeds the {len(tokens)} words")
    return CaptionPrediction(index, [str(t) for t in tokens], links, tree, algorithm,
                             {str(k): v for k, v in trees.items() if v is not None}, n_tokens, n_unknown)


def _grid(value: Any, what: str) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in value)):
        raise _Invalid(f"{what} must be [H, W] with positive integers; got {value!r}")
    return int(value[0]), int(value[1])


def _label_map_paths(value: Any) -> dict[int, str]:
    if not isinstance(value, dict) or not value:
        raise _Invalid("image.label_maps must map layer numbers to PNG paths")
    out: dict[int, str] = {}
    for key, relative in value.items():
        try:
            layer = int(key)
        except (TypeError, ValueError):
            raise _Invalid(f"image.label_maps keys must be layer numbers; got {key!r}") from None
        if layer < 0 or not isinstance(relative, str) or not relative:
            raise _Invalid(f"image.label_maps[{key!r}] must be a path, for a layer >= 0")
        candidate = Path(relative)
        if candidate.is_absolute() or ".." in candidate.parts:
            raise _Invalid(f"image.label_maps[{key!r}] = {relative!r} leaves the prediction file's folder")
        out[layer] = relative
    return out


def _image(value: Any) -> ImagePrediction:
    if not isinstance(value, dict):
        raise _Invalid("image must be an object or null")
    grid_h, grid_w = _grid(value.get("grid"), "image.grid")
    image = ImagePrediction((grid_h, grid_w))
    has_h, has_v = value.get("h_links") is not None, value.get("v_links") is not None
    if has_h != has_v:
        raise _Invalid("image needs both h_links and v_links, or neither")
    if has_h:
        h = _float_array(value["h_links"], "image.h_links", 3)
        v = _float_array(value["v_links"], "image.v_links", 3)
        if (h.shape[1:] != (grid_h, grid_w - 1) or v.shape[1:] != (grid_h - 1, grid_w)
                or h.shape[0] != v.shape[0] or h.shape[0] < 1):
            raise _Invalid(f"h_links {h.shape} / v_links {v.shape} do not match image.grid "
                           f"[{grid_h}, {grid_w}] as (L, H, W-1) / (L, H-1, W)")
        image.h_links, image.v_links = h, v
    if value.get("groups") is not None:
        try:
            groups = np.asarray(value["groups"], dtype=np.float64)
        except (TypeError, ValueError):
            raise _Invalid("image.groups is not a rectangular array of numbers") from None
        if groups.ndim != 2 or groups.shape[1] != grid_h * grid_w or groups.shape[0] < 1:
            raise _Invalid(f"image.groups has shape {groups.shape}; expected (L, {grid_h * grid_w}) "
                           f"for grid [{grid_h}, {grid_w}]")
        if not np.isfinite(groups).all() or not np.all(groups == np.round(groups)) or groups.min() < 0:
            raise _Invalid("image.groups must hold non-negative integer labels")
        if image.h_links is not None and groups.shape[0] != image.h_links.shape[0]:
            raise _Invalid(f"image.groups has {groups.shape[0]} layers, the links {image.h_links.shape[0]}")
        image.groups = groups.astype(np.int64).reshape(-1, grid_h, grid_w)
    for key in ("group_params", "label_map_params"):
        if value.get(key) is not None and not isinstance(value[key], dict):
            raise _Invalid(f"image.{key} must be an object")
    image.group_params = value.get("group_params")
    image.label_map_params = value.get("label_map_params")
    if value.get("segment_tree") is not None:
        from induction.image_groups import tree_from_json

        try:
            tree_from_json(value["segment_tree"], grid_h * grid_w)
        except HiCLIPError as error:
            raise _Invalid(f"image.segment_tree: {error}") from None
        image.segment_tree = value["segment_tree"]
    if value.get("label_maps") is not None:
        image.label_maps = _label_map_paths(value["label_maps"])
    return image


def _model(value: Any) -> ModelInfo | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Invalid("model must be an object")
    known = ("checkpoint", "name", "hierarchy", "affinity_source", "grid")
    hierarchy = value.get("hierarchy")
    if hierarchy is not None and not isinstance(hierarchy, bool):
        raise _Invalid(f"model.hierarchy must be true or false; got {hierarchy!r}")
    grid = _grid(value["grid"], "model.grid") if value.get("grid") is not None else None
    return ModelInfo(_str_or_none(value.get("checkpoint"), "model.checkpoint"),
                     _str_or_none(value.get("name"), "model.name"), hierarchy,
                     _str_or_none(value.get("affinity_source"), "model.affinity_source"), grid,
                     {k: v for k, v in value.items() if k not in known})


def parse_record(value: Any, line: int | None = None) -> PredictionRecord:
    """One record from its JSON object (see the module docstring); raises ``HiCLIPError``
    without a location (the reader adds it)."""
    try:
        return _parse(value, line)
    except _Invalid as problem:
        raise HiCLIPError(str(problem)) from None


def _parse(value: Any, line: int | None) -> PredictionRecord:
    if not isinstance(value, dict):
        raise _Invalid("expected a JSON object")
    sample_id = value.get("id")
    if not isinstance(sample_id, str) or not sample_id:
        raise _Invalid("record needs a non-empty string 'id'")
    split = _str_or_none(value.get("split"), "split")
    text = value.get("text") or []
    if not isinstance(text, list):
        raise _Invalid("text must be a list of caption predictions")
    captions = [_caption(entry, k) for k, entry in enumerate(text)]
    image = None if value.get("image") is None else _image(value["image"])
    model = _model(value.get("model"))
    if image is not None and model is not None and model.grid is not None and model.grid != image.grid:
        raise _Invalid(f"image.grid {list(image.grid)} differs from the model's grid {list(model.grid)}")
    return PredictionRecord(sample_id, split, captions, image, model, line)


@dataclass
class _Consistency:
    """What every record of one file must share: text layers, image grid and layers."""

    text_layers: tuple[int, int] | None = None       # (layers, first line)
    grid: tuple[tuple[int, int], int] | None = None
    link_layers: tuple[int, int] | None = None
    levels: tuple[list[int], int] | None = None       # (predicted layers, first line)

    def check(self, record: PredictionRecord, line: int) -> None:
        for k, caption in enumerate(record.text):
            if caption.n_layers is None:
                continue
            if self.text_layers is None:
                self.text_layers = (caption.n_layers, line)
            elif caption.n_layers != self.text_layers[0]:
                raise _Invalid(f"text {k}: links have {caption.n_layers} layers; line "
                               f"{self.text_layers[1]} has {self.text_layers[0]} (predictions of two models?)")
        image = record.image
        if image is None:
            return
        if self.grid is None:
            self.grid = (image.grid, line)
        elif image.grid != self.grid[0]:
            raise _Invalid(f"image.grid {list(image.grid)}; line {self.grid[1]} has {list(self.grid[0])}")
        if image.h_links is not None:
            layers = int(image.h_links.shape[0])
            if self.link_layers is None:
                self.link_layers = (layers, line)
            elif layers != self.link_layers[0]:
                raise _Invalid(f"links have {layers} layers; line {self.link_layers[1]} has {self.link_layers[0]}")
        levels = image.layers
        if levels:
            if self.levels is None:
                self.levels = (levels, line)
            elif levels != self.levels[0]:
                raise _Invalid(f"predicted layers {levels}; line {self.levels[1]} has {self.levels[0]}")


def read_predictions(path: str | Path, split: str | None = None) -> Predictions:
    """Read and check a prediction JSONL (module docstring); records of other splits are left out.

    Raises
    ------
    HiCLIPError
        ``path:line: ...`` for the first problem: invalid JSON, a missing or repeated id, a
        malformed caption or image entry, grids or layer counts that differ between records, or
        links outside [0, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise HiCLIPError(f"{path}: prediction file not found")
    records: list[PredictionRecord] = []
    seen: dict[str, int] = {}
    consistency = _Consistency()
    other = 0
    for number, value in jsonl_records(path):
        try:
            record = _parse(value, number)
            if record.id in seen:
                raise _Invalid(f"id {record.id!r} repeats line {seen[record.id]}")
            seen[record.id] = number
            consistency.check(record, number)
        except _Invalid as problem:
            raise located(path, number, str(problem)) from None
        if split is not None and record.split != split:
            other += 1
            continue
        records.append(record)
    return Predictions(records, str(path), path.parent, split, other)
