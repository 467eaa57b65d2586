"""transformers ``CLIPModel`` folders <-> hiclip checkpoints (``hiclip import-clip`` / ``export-hf``).

A CLIPModel folder holds ``config.json`` (``model_type: "clip"`` with ``text_config`` and
``vision_config``), weights (``model.safetensors``, ``pytorch_model.bin``, or their sharded
``*.index.json`` forms; ``.bin`` files are read with ``torch.load(weights_only=True)``), the
tokenizer files (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``, with
``tokenizer_config.json``) and optionally ``preprocessor_config.json``.

hiclip's vanilla model has CLIP's layout parameter for parameter, so the weights map one to one:

==========================================================  ==========================================
transformers ``CLIPModel``                                   hiclip ``HiCLIP``
==========================================================  ==========================================
``text_model.embeddings.token_embedding.weight``             ``text.token_embedding.weight``
``text_model.embeddings.position_embedding.weight``          ``text.positional_embedding``
``{text,vision}_model.encoder.layers.i.self_attn.{q,k,v}_proj``  ``{text,vision}.blocks.i.attn.in_proj`` (stacked q, k, v)
``....self_attn.out_proj`` / ``layer_norm1`` / ``layer_norm2`` ``....attn.out_proj`` / ``ln_1`` / ``ln_2``
``....mlp.fc1`` / ``mlp.fc2``                                 ``....mlp.fc1`` / ``mlp.fc2``
``text_model.final_layer_norm``                              ``text.ln_final``
``text_projection.weight``                                   ``text.text_projection.weight`` (no bias)
``vision_model.embeddings.class_embedding``                  ``vision.class_embedding``
``vision_model.embeddings.patch_embedding.weight``           ``vision.conv1.weight`` (no bias)
``vision_model.embeddings.position_embedding.weight``        ``vision.positional_embedding``
``vision_model.pre_layrnorm`` / ``post_layernorm``            ``vision.ln_pre`` / ``ln_post``
``visual_projection.weight``                                 ``vision.proj.weight`` (no bias)
``logit_scale``                                              ``logit_scale``
==========================================================  ==========================================

Configuration: ``hidden_size`` -> ``width``, ``num_hidden_layers`` -> ``layers``,
``num_attention_heads`` -> ``heads``, ``intermediate_size / hidden_size`` -> ``mlp_ratio``,
``max_position_embeddings`` -> ``text.context_length``, ``hidden_act`` (``quick_gelu`` or ``gelu``)
-> ``activation``, ``layer_norm_eps`` -> ``ln_eps``, ``projection_dim`` -> ``embed_dim``,
``logit_scale_init_value`` -> ``init_logit_scale``. An imported text tower is causal
(``text.causal``) and has no MLM head. Its tokenizer becomes a ``"clip"`` kind
:class:`~hiclip.tokenizer.HiCLIPTokenizer` that reproduces ``transformers.CLIPTokenizer``.

What a CLIPModel cannot express is refused by :func:`export_hf`: the hierarchy (affinity modules
and the prior), a text-only model. A bidirectional text tower (hiclip's default) is exported
only when asked (``allow_bidirectional``): transformers then runs it with its causal mask, so its
text features differ from hiclip's; ``config.json`` records ``"hiclip": {"text_causal": false}``
and :func:`import_clip` restores the bidirectional tower from it.

Round trips: ``import_clip`` then ``export_hf`` gives back the same state dict (tensor for
tensor, in the source's dtype), the same ``config.json`` fields and tokenizer files that give
the same ids. The other way, a word-level hiclip vocabulary whose EOT id is 2 has ids 2 and
``vocab_size - 1`` swapped on export, because transformers' CLIP treats ``eos_token_id == 2`` as
its legacy marker and then pools at the largest id (``argmax(input_ids)``); the embedding rows
are swapped with them, so the model computes the same features.
"""
from __future__ import annotations

import json
import math
import pickle
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hiclip.config import ACTIVATIONS, HiCLIPConfig, TextConfig, VisionConfig
from hiclip.errors import HiCLIPError
from hiclip.model import HiCLIP
from hiclip.tokenizer import HiCLIPTokenizer

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
BIN_FILE = "pytorch_model.bin"
PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt")
TOKENIZER_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
#: Key of ``config.json`` holding what CLIPModel cannot express (read back by :func:`import_clip`).
MARKER = "hiclip"
#: How fresh affinity modules are initialised (:func:`add_fresh_hierarchy`).
FRESH_HIERARCHY_INIT = "zero key projection (every neighbour score 0: uniform neighbour softmax)"
_MAX_LISTED = 5


# --------------------------------------------------------------------------------------------
# reading a CLIPModel folder


def read_hf_config(folder: str | Path) -> dict[str, Any]:
    """``config.json`` of a CLIPModel folder, as written; one-line errors for anything else.

    Raises
    ------
    HiCLIPError
        Not a folder, no ``config.json``, invalid JSON, not ``model_type: "clip"`` (a text-only
        ``clip_text_model`` or vision-only ``clip_vision_model`` config is named as such), or a
        ``clip`` config without both tower sections.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HiCLIPError(f"{folder}: not a folder (expected a transformers CLIPModel folder)")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise HiCLIPError(f"{folder}: not a CLIP model folder (no {CONFIG_FILE})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise HiCLIPError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
    except UnicodeDecodeError:
        raise HiCLIPError(f"{path}: not UTF-8 text") from None
    if not isinstance(raw, dict):
        raise HiCLIPError(f"{path}: expected a JSON object")
    model_type = raw.get("model_type")
    if model_type in ("clip_text_model", "clip_vision_model"):
        tower = "text" if model_type == "clip_text_model" else "vision"
        raise HiCLIPError(f"{path}: a {tower}-only CLIP config (model_type {model_type!r}); "
                          "import-clip needs a CLIPModel with both towers (model_type 'clip')")
    if model_type != "clip":
        raise HiCLIPError(f"{path}: model_type {model_type!r} is not a CLIP model (expected 'clip')")
    for section in ("text_config", "vision_config"):
        if not isinstance(raw.get(section), dict):
            raise HiCLIPError(f"{path}: no {section} section: a CLIPModel config has both towers")
    return raw


def _resolved(raw: dict[str, Any], where: Path) -> dict[str, Any]:
    """Every field of the config with transformers' defaults filled in (files omit defaults)."""
    from transformers import CLIPConfig

    clean = {k: v for k, v in raw.items() if k != MARKER}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return CLIPConfig.from_dict(clean).to_dict()
    except Exception as error:  # transformers and huggingface_hub raise their own validation errors
        raise HiCLIPError(f"{where}: not a valid CLIPConfig ({str(error).splitlines()[0]})") from None


def _ratio(section: dict[str, Any], name: str, where: str) -> float:
    width, hidden = int(section["hidden_size"]), int(section["intermediate_size"])
    ratio = hidden / width
    if int(round(width * ratio)) != hidden:
        raise HiCLIPError(f"{where}: {name}.intermediate_size {hidden} is not expressible for width {width}")
    return ratio


def _activation(section: dict[str, Any], name: str, where: str) -> str:
    act = section.get("hidden_act")
    if act not in ACTIVATIONS:
        raise HiCLIPError(f"{where}: {name}.hidden_act {act!r} is not supported (hiclip has {list(ACTIVATIONS)})")
    return act


def config_from_hf(raw: dict[str, Any], name: str, where: Path, hierarchy: bool = False,
                   prior_layers: list[int] | None = None) -> HiCLIPConfig:
    """The :class:`~hiclip.config.HiCLIPConfig` of a CLIPModel ``config.json`` (module docstring).

    ``prior_layers`` applies to both towers (every layer still gets an affinity module).
    """
    full = _resolved(raw, where)
    text, vision = full["text_config"], full["vision_config"]
    if int(vision.get("num_channels", 3)) != 3:
        raise HiCLIPError(f"{where}: vision_config.num_channels {vision.get('num_channels')} is not 3 (RGB)")
    marker = raw.get(MARKER) if isinstance(raw.get(MARKER), dict) else {}
    try:
        return HiCLIPConfig(
            name=name,
            embed_dim=int(full["projection_dim"]),
            hierarchy=hierarchy,
            text=TextConfig(
                vocab_size=int(text["vocab_size"]), context_length=int(text["max_position_embeddings"]),
                width=int(text["hidden_size"]), layers=int(text["num_hidden_layers"]),
                heads=int(text["num_attention_heads"]), mlp_ratio=_ratio(text, "text_config", str(where)),
                activation=_activation(text, "text_config", str(where)), ln_eps=float(text["layer_norm_eps"]),
                prior_layers=prior_layers, mlm_head=False, causal=bool(marker.get("text_causal", True))),
            vision=VisionConfig(
                image_size=int(vision["image_size"]), patch_size=int(vision["patch_size"]),
                width=int(vision["hidden_size"]), layers=int(vision["num_hidden_layers"]),
                heads=int(vision["num_attention_heads"]), mlp_ratio=_ratio(vision, "vision_config", str(where)),
                activation=_activation(vision, "vision_config", str(where)),
                ln_eps=float(vision["layer_norm_eps"]), prior_layers=prior_layers),
            init_logit_scale=float(full["logit_scale_init_value"]),
        )
    except HiCLIPError as error:
        raise HiCLIPError(f"{where}: {error}") from None


def _key_table(config: HiCLIPConfig) -> Iterator[tuple[str, tuple[str, ...]]]:
    """``(hiclip key, transformers keys)`` for every weight of the vanilla model but the MLM head;
    three transformers keys are the q, k, v parts of one stacked ``in_proj``."""
    yield "logit_scale", ("logit_scale",)
    t, v = "text_model.", "vision_model."
    yield "text.token_embedding.weight", (t + "embeddings.token_embedding.weight",)
    yield "text.positional_embedding", (t + "embeddings.position_embedding.weight",)
    yield from _block_keys("text.blocks", t + "encoder.layers", config.text.layers)
    for p in ("weight", "bias"):
        yield f"text.ln_final.{p}", (f"{t}final_layer_norm.{p}",)
    yield "text.text_projection.weight", ("text_projection.weight",)
    assert config.vision is not None
    yield "vision.class_embedding", (v + "embeddings.class_embedding",)
    yield "vision.conv1.weight", (v + "embeddings.patch_embedding.weight",)
    yield "vision.positional_embedding", (v + "embeddings.position_embedding.weight",)
    for p in ("weight", "bias"):
        yield f"vision.ln_pre.{p}", (f"{v}pre_layrnorm.{p}",)
    yield from _block_keys("vision.blocks", v + "encoder.layers", config.vision.layers)
    for p in ("weight", "bias"):
        yield f"vision.ln_post.{p}", (f"{v}post_layernorm.{p}",)
    yield "vision.proj.weight", ("visual_projection.weight",)


def _block_keys(ours: str, theirs: str, layers: int) -> Iterator[tuple[str, tuple[str, ...]]]:
    for i in range(layers):
        a, b = f"{ours}.{i}.", f"{theirs}.{i}."
        for p in ("weight", "bias"):
            yield f"{a}attn.in_proj.{p}", tuple(f"{b}self_attn.{x}_proj.{p}" for x in "qkv")
            yield f"{a}attn.out_proj.{p}", (f"{b}self_attn.out_proj.{p}",)
            yield f"{a}ln_1.{p}", (f"{b}layer_norm1.{p}",)
            yield f"{a}ln_2.{p}", (f"{b}layer_norm2.{p}",)
            yield f"{a}mlp.fc1.{p}", (f"{b}mlp.fc1.{p}",)
            yield f"{a}mlp.fc2.{p}", (f"{b}mlp.fc2.{p}",)


def _listed(items: list[str]) -> str:
    return ", ".join(items[:_MAX_LISTED]) + (" ..." if len(items) > _MAX_LISTED else "")


def state_from_hf(hf_state: dict[str, torch.Tensor], config: HiCLIPConfig, where: Path) -> dict[str, torch.Tensor]:
    """The vanilla hiclip state dict (without MLM head) from CLIPModel weights, checked against
    ``config``: missing or unexpected keys and shapes that differ from the config are errors."""
    with torch.device("meta"):
        expected = HiCLIP(replace(config, hierarchy=False)).state_dict()
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    shapes: list[str] = []
    for ours, theirs in _key_table(config):
        shape = tuple(expected[ours].shape)
        part = (shape[0] // 3, *shape[1:]) if len(theirs) == 3 else shape
        if any(k not in hf_state for k in theirs):
            missing += [k for k in theirs if k not in hf_state]
            continue
        used.update(theirs)
        bad = [f"{k} {tuple(hf_state[k].shape)} vs {part}" for k in theirs if tuple(hf_state[k].shape) != part]
        if bad:
            shapes += bad
            continue
        tensors = [hf_state[k] for k in theirs]
        state[ours] = torch.cat(tensors) if len(tensors) == 3 else tensors[0]
    unexpected = sorted(k for k in hf_state if k not in used and not k.endswith("position_ids"))
    problems = []
    if shapes:
        problems.append(f"shapes differ from {CONFIG_FILE} (file vs config): {_listed(shapes)}")
    if missing:
        problems.append(f"missing {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listed(unexpected)}")
    if problems:
        raise HiCLIPError(f"{where}: weights do not match a CLIPModel of this config: " + "; ".join(problems))
    return state


def state_to_hf(state: dict[str, torch.Tensor], config: HiCLIPConfig) -> dict[str, torch.Tensor]:
    """CLIPModel weights from a vanilla hiclip state dict (the inverse of :func:`state_from_hf`;
    the MLM head, if any, is left out)."""
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in _key_table(config):
        tensor = state[ours].detach().cpu()
        parts = tensor.chunk(3) if len(theirs) == 3 else (tensor,)
        for key, part in zip(theirs, parts):
            out[key] = part.clone().contiguous()
    return out


def _weight_files(folder: Path) -> tuple[list[Path], str]:
    for single, kind in ((SAFETENSORS_FILE, "safetensors"), (BIN_FILE, "bin")):
        index = folder / f"{single}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise HiCLIPError(f"{index}: not a weights index (expected a 'weight_map')") from None
            files = [folder / name for name in shards]
            absent = [str(p) for p in files if not p.is_file()]
            if absent:
                raise HiCLIPError(f"{index}: shard(s) missing: {_listed(absent)}")
            return files, kind
        if (folder / single).is_file():
            return [folder / single], kind
    raise HiCLIPError(f"{folder}: no weights ({SAFETENSORS_FILE} or {BIN_FILE}, or their .index.json)")


def read_hf_weights(folder: str | Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    """The state dict of a CLIPModel folder (safetensors preferred; ``.bin`` through
    ``torch.load(weights_only=True)``) and the files it came from."""
    from safetensors import safe_open

    files, kind = _weight_files(Path(folder))
    state: dict[str, torch.Tensor] = {}
    for path in files:
        if kind == "safetensors":
            try:
                with safe_open(str(path), framework="pt", device="cpu") as handle:
                    part = {key: handle.get_tensor(key) for key in handle.keys()}
            except Exception as error:  # safetensors raises its own error types on corrupt files
                raise HiCLIPError(f"{path}: unreadable safetensors file ({str(error).splitlines()[0]})") from None
        else:
            try:
                part = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as error:
                reason = str(error).strip().splitlines()[-1][:160] if str(error).strip() else "unsafe pickle"
                raise HiCLIPError(f"{path}: refused by torch.load(weights_only=True): the pickle holds more "
                                  f"than tensors ({reason}); convert it to safetensors if you trust it") from None
            except Exception as error:  # torch raises RuntimeError (zip), EOFError... on corrupt files
                raise HiCLIPError(f"{path}: unreadable weights file ({str(error).splitlines()[0]})") from None
            if isinstance(part, dict) and isinstance(part.get("state_dict"), dict):
                part = part["state_dict"]
            if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
                raise HiCLIPError(f"{path}: not a state dict (a mapping of names to tensors)")
        state.update(part)
    return state, files


def read_hf_tokenizer(folder: str | Path, context_length: int) -> tuple[HiCLIPTokenizer, dict[str, Any]]:
    """The folder's tokenizer as a ``"clip"`` :class:`~hiclip.tokenizer.HiCLIPTokenizer`, and the
    tokenizer configuration files as read (kept for the export)."""
    folder = Path(folder)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise HiCLIPError(f"{folder}: no tokenizer (expected tokenizer.json, or vocab.json and merges.txt)")
    if not (folder / "tokenizer.json").is_file() and not all((folder / n).is_file() for n in ("vocab.json", "merges.txt")):
        raise HiCLIPError(f"{folder}: incomplete tokenizer: vocab.json and merges.txt are both needed "
                          "when there is no tokenizer.json")
    from transformers import AutoTokenizer

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # transformers raises many types (OSError, ValueError, json errors...)
        raise HiCLIPError(f"{folder}: the tokenizer could not be loaded ({str(error).strip().splitlines()[0][:200]})") from None
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise HiCLIPError(f"{folder}: the tokenizer is not a 'tokenizers' (fast) tokenizer")
    if not hf.bos_token or not hf.eos_token:
        raise HiCLIPError(f"{folder}: the tokenizer has no start (bos_token) or end (eos_token) token")
    tokenizer = HiCLIPTokenizer.from_pretrained_parts(backend, str(hf.bos_token), str(hf.eos_token),
                                                      str(hf.pad_token) if hf.pad_token else None,
                                                      context_length, where=str(folder))
    files = {}
    for name in TOKENIZER_CONFIG_FILES:
        path = folder / name
        if path.is_file():
            try:
                files[name] = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass  # transformers read it above; an unreadable copy is simply not kept
    return tokenizer, files


# --------------------------------------------------------------------------------------------
# the hierarchy


def add_fresh_hierarchy(model: HiCLIP, prior_layers: list[int] | None = None, seed: int = 0,
                        prior_gate: bool = True) -> HiCLIP:
    """A HiCLIP with ``model``'s weights and fresh affinity modules in every layer of both towers.

    ``prior_layers`` (both towers; default all) are the layers whose attention the prior multiplies.
    ``prior_gate`` (default) adds the per-layer prior gates of ``affinity.prior_gate``, closed
    (``alpha = 0``): the features are then exactly ``model``'s until fine-tuning opens them.
    Without the gates the prior acts in full from the first step, and even at the start
    described next it changes the features (measured in RESULTS.md, "Imported CLIPs").
    The fresh modules start with a zero key projection: every neighbour score is 0, so each
    token (patch) splits its affinity evenly between its neighbours. That is the start whose
    prior is largest over whole sentences (the product of a token's two probabilities,
    ``p_left * p_right``, is largest when both are 1/2), so the imported features change least;
    the links are then 1/2 between interior words at the first layer (``sqrt(1/4 + eps)``), and
    grow with depth by the hierarchical constraint (0.75, 0.875, ...). The query projection keeps
    its random initialisation (seeded by ``seed``), so the key projection receives gradients
    from the first step (with both zero, neither would).
    """
    config = model.config
    text = replace(config.text, prior_layers=prior_layers)
    vision = replace(config.vision, prior_layers=prior_layers) if config.vision is not None else None
    affinity = replace(config.affinity, prior_gate=prior_gate)
    target = replace(config, hierarchy=True, text=text, vision=vision, affinity=affinity)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = HiCLIP(target)
    result = fresh.load_state_dict(model.state_dict(), strict=False)
    if result.unexpected_keys or any(".affinities." not in k and not k.endswith(".prior_gate")
                                     for k in result.missing_keys):
        raise HiCLIPError(f"add_fresh_hierarchy: the weights of {config.name!r} do not fit its hierarchy twin")
    with torch.no_grad():
        for tower in (fresh.text, fresh.vision):
            if tower is not None and tower.affinities is not None:
                for module in tower.affinities:
                    nn.init.zeros_(module.k.weight)
    return fresh.train(model.training)


# --------------------------------------------------------------------------------------------
# import


@dataclass
class ImportedCLIP:
    """What :func:`import_clip` read: the model, its tokenizer, the record kept in the
    checkpoint's ``extra`` (for the export and for the user), and warnings for the user."""

    model: HiCLIP
    tokenizer: HiCLIPTokenizer
    extra: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _dtype_name(state: dict[str, torch.Tensor]) -> str:
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    return str(dtypes.pop()).removeprefix("torch.") if len(dtypes) == 1 else "float32"


def _image_warnings(processor: dict[str, Any] | None, image_size: int, where: Path) -> list[str]:
    from hiclip.data.transforms import CLIP_MEAN, CLIP_STD

    if not processor:
        return []
    found = []
    for key, ours in (("image_mean", CLIP_MEAN), ("image_std", CLIP_STD)):
        theirs = processor.get(key)
        if isinstance(theirs, list) and len(theirs) == 3 and any(abs(a - b) > 1e-6 for a, b in zip(theirs, ours)):
            found.append(f"{where}: {key} {theirs} differs from hiclip's {list(ours)}: hiclip's transforms "
                         "(eval, induce, app) normalise with CLIP's, so inputs will differ from the processor's")
    crop = processor.get("crop_size")
    size = crop.get("height") if isinstance(crop, dict) else crop
    if isinstance(size, int) and size != image_size:
        found.append(f"{where}: crop_size {size} differs from vision_config.image_size {image_size}")
    return found


def _gated(hierarchy: bool, prior_layers: list[int] | None, prior_gate: bool | None) -> bool:
    """Check the hierarchy options of an import; return whether the prior is gated."""
    if prior_layers is not None and not hierarchy:
        raise HiCLIPError("import-clip: prior_layers needs the hierarchy (--hierarchy)")
    if prior_gate is not None and not hierarchy:
        raise HiCLIPError("import-clip: the prior gate setting needs the hierarchy (--hierarchy)")
    return hierarchy if prior_gate is None else prior_gate


def import_clip(folder: str | Path, hierarchy: bool = False, prior_layers: list[int] | None = None,
                seed: int = 0, prior_gate: bool | None = None) -> ImportedCLIP:
    """Read a local transformers CLIPModel folder into a hiclip model and tokenizer.

    Parameters
    ----------
    folder : str or Path
        ``config.json``, weights and tokenizer files (module docstring).
    hierarchy : bool
        Add fresh affinity modules (:func:`add_fresh_hierarchy`): a HiCLIP to fine-tune.
        Without it the model is the CLIP itself: ``encode_image(pixels)`` and ``encode_text`` on
        the tokenizer's output equal ``get_image_features`` / ``get_text_features``.
    prior_layers : list of int, optional
        Layers (both towers) whose attention the prior multiplies; default all.
    seed : int
        Seeds the fresh affinity modules' query projections.
    prior_gate : bool, optional
        With the hierarchy: gate the prior, closed at the start (``affinity.prior_gate``), so the
        imported features are unchanged until fine-tuning. ``None`` means yes with the hierarchy.

    Raises
    ------
    HiCLIPError
        One line for a folder that is not a CLIP model, a text- or vision-only config, a missing
        tokenizer, weights whose keys or shapes differ from the config, a pickle that
        ``weights_only`` loading refuses, or settings hiclip cannot express.
    """
    folder = Path(folder)
    raw = read_hf_config(folder)
    where = folder / CONFIG_FILE
    gated = _gated(hierarchy, prior_layers, prior_gate)
    config = config_from_hf(raw, folder.resolve().name, where)
    hf_state, files = read_hf_weights(folder)
    state = state_from_hf(hf_state, config, files[0] if len(files) == 1 else folder)
    tokenizer, tokenizer_files = read_hf_tokenizer(folder, config.text.context_length)
    if tokenizer.vocab_size != config.text.vocab_size:
        raise HiCLIPError(f"{folder}: the tokenizer has {tokenizer.vocab_size} ids but {CONFIG_FILE} says "
                          f"text_config.vocab_size = {config.text.vocab_size}")
    eos = _resolved(raw, where)["text_config"].get("eos_token_id")
    if eos not in (2, None, tokenizer.eot_token_id):
        raise HiCLIPError(f"{where}: text_config.eos_token_id {eos} is not the tokenizer's end token "
                          f"{tokenizer.id_to_token(tokenizer.eot_token_id)!r} (id {tokenizer.eot_token_id})")
    scale = math.exp(float(state["logit_scale"]))
    if scale > config.max_logit_scale * (1 + 1e-4):  # hiclip clamps at 100, as CLIP's training did
        config = replace(config, max_logit_scale=scale)
    model = HiCLIP(config)
    model.load_state_dict(state, strict=True)
    if hierarchy:
        model = add_fresh_hierarchy(model, prior_layers, seed, gated)
    processor = None
    if (folder / PREPROCESSOR_FILE).is_file():
        try:
            processor = json.loads((folder / PREPROCESSOR_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HiCLIPError(f"{folder / PREPROCESSOR_FILE}: invalid JSON") from None
    assert config.vision is not None
    notes = _image_warnings(processor, config.vision.image_size, folder / PREPROCESSOR_FILE)
    if not config.text.causal:
        notes.append(f"{where}: the text tower was exported from a bidirectional hiclip model "
                     f"({MARKER}.text_causal false); it is imported bidirectional")
    extra = {"imported": {
        "source": str(folder.resolve()), "format": "transformers CLIPModel",
        "hf_config": raw, "dtype": _dtype_name(hf_state), "tokenizer_files": tokenizer_files,
        "image_processor": processor,
        "hierarchy": {"added": bool(hierarchy), "prior_layers": prior_layers, "seed": seed,
                      "init": FRESH_HIERARCHY_INIT, "prior_gate": gated} if hierarchy else None,
    }}
    return ImportedCLIP(model.eval(), tokenizer, extra, notes)


def import_clip_checkpoint(folder: str | Path, out: str | Path, hierarchy: bool = False,
                           prior_layers: list[int] | None = None, seed: int = 0,
                           prior_gate: bool | None = None) -> tuple[Path, ImportedCLIP]:
    """:func:`import_clip`, then :func:`hiclip.checkpoint.save` to ``out``."""
    from hiclip.atomic import check_writable
    from hiclip.checkpoint import save

    _gated(hierarchy, prior_layers, prior_gate)  # before anything is written
    check_writable(out, folder=True)
    imported = import_clip(folder, hierarchy, prior_layers, seed, prior_gate)
    return save(imported.model, imported.tokenizer, out, extra=imported.extra), imported


# --------------------------------------------------------------------------------------------
# export


def _hf_config(config: HiCLIPConfig, tokenizer: HiCLIPTokenizer, stored: dict[str, Any] | None,
               eot_id: int) -> dict[str, Any]:
    """``config.json`` for ``config``: the imported file where it still describes the model,
    with every field hiclip determines set from ``config``."""
    assert config.vision is not None
    text, vision = config.text, config.vision
    derived = {
        "projection_dim": config.embed_dim, "logit_scale_init_value": config.init_logit_scale,
        "text_config": {
            "vocab_size": text.vocab_size, "hidden_size": text.width,
            "intermediate_size": int(round(text.width * text.mlp_ratio)), "num_hidden_layers": text.layers,
            "num_attention_heads": text.heads, "max_position_embeddings": text.context_length,
            "hidden_act": text.activation, "layer_norm_eps": text.ln_eps,
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.sot_token_id, "eos_token_id": eot_id},
        "vision_config": {
            "hidden_size": vision.width, "intermediate_size": int(round(vision.width * vision.mlp_ratio)),
            "num_hidden_layers": vision.layers, "num_attention_heads": vision.heads,
            "image_size": vision.image_size, "patch_size": vision.patch_size, "hidden_act": vision.activation,
            "layer_norm_eps": vision.ln_eps, "num_channels": 3},
    }
    if stored is None:
        from hiclip.factory import transformers_clip_config

        base = transformers_clip_config(config).to_diff_dict()
        base["architectures"] = ["CLIPModel"]
    else:
        base = json.loads(json.dumps(stored))
    resolved = _resolved(base, Path(CONFIG_FILE))
    for key, value in derived.items():
        if isinstance(value, dict):
            section = base.setdefault(key, {})
            for name, item in value.items():
                if resolved[key].get(name) != item or (stored is None and name not in section):
                    section[name] = item
        elif resolved.get(key) != value:
            base[key] = value
    base.pop(MARKER, None)
    if not text.causal:
        base[MARKER] = {"text_causal": False}
    return base


def _swap_ids(tokenizer_json: dict[str, Any], a: int, b: int) -> None:
    """Swap the ids ``a`` and ``b`` everywhere in a ``tokenizers`` JSON (vocabulary, added tokens,
    post-processor, padding)."""
    def swap(value: int) -> int:
        return b if value == a else a if value == b else value

    vocab = (tokenizer_json.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        for token, token_id in list(vocab.items()):
            vocab[token] = swap(token_id)
    for added in tokenizer_json.get("added_tokens") or []:
        added["id"] = swap(added["id"])
    post = tokenizer_json.get("post_processor") or {}
    for entry in (post.get("special_tokens") or {}).values():
        entry["ids"] = [swap(i) for i in entry["ids"]]
    for key in ("cls", "sep"):
        if key in post:
            post[key][1] = swap(post[key][1])


def _legacy_tokenizer_json(tokenizer: HiCLIPTokenizer) -> dict[str, Any]:
    """A word-level / BPE hiclip tokenizer as a self-contained transformers tokenizer: the same
    vocabulary with a post-processor ``[SOT] $A [EOT]``."""
    data = json.loads(tokenizer.to_json())
    sot, eot = (tokenizer.id_to_token(i) for i in (tokenizer.sot_token_id, tokenizer.eot_token_id))
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": sot, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": eot, "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": sot, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": eot, "type_id": 0}}],
        "special_tokens": {name: {"id": name, "ids": [i], "tokens": [name]}
                           for name, i in ((sot, tokenizer.sot_token_id), (eot, tokenizer.eot_token_id))},
    }
    return data


def _tokenizer_files(tokenizer: HiCLIPTokenizer, stored: dict[str, Any] | None,
                     swap: tuple[int, int] | None) -> dict[str, str]:
    """File name -> text of the exported tokenizer."""
    data = json.loads(tokenizer.to_json()) if tokenizer.kind == "clip" else _legacy_tokenizer_json(tokenizer)
    data["truncation"] = None
    data["padding"] = None
    if swap is not None:
        _swap_ids(data, *swap)
    files = {"tokenizer.json": json.dumps(data, indent=2, ensure_ascii=False) + "\n"}
    roles = {"bos_token": tokenizer.sot_token_id, "eos_token": tokenizer.eot_token_id,
             "pad_token": tokenizer.pad_token_id, "unk_token": tokenizer.unk_token_id,
             "mask_token": tokenizer.mask_token_id}
    names = {role: tokenizer.id_to_token(i) for role, i in roles.items() if i is not None}
    stored = stored or {}
    model = data.get("model") or {}
    clip_bpe = tokenizer.kind == "clip" and model.get("type") == "BPE" and model.get("end_of_word_suffix") == "</w>"
    config = stored.get("tokenizer_config.json")
    if config is None:
        config = {"tokenizer_class": "CLIPTokenizer" if clip_bpe else "PreTrainedTokenizerFast",
                  "model_max_length": tokenizer.context_length, **names}
    else:
        config = {**config, **{role: name for role, name in names.items() if role not in config}}
    files["tokenizer_config.json"] = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    specials = stored.get("special_tokens_map.json")
    if specials is not None:
        files["special_tokens_map.json"] = json.dumps(specials, indent=2, ensure_ascii=False) + "\n"
    if clip_bpe:  # the slow-tokenizer files, for transformers versions that read them
        vocab = sorted(model["vocab"].items(), key=lambda item: item[1])
        files["vocab.json"] = json.dumps(dict(vocab), ensure_ascii=False) + "\n"
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
        files["merges.txt"] = "#version: 0.2\n" + "".join(m + "\n" for m in merges)
    return files


def _preprocessor(image_size: int, stored: dict[str, Any] | None) -> dict[str, Any]:
    """``preprocessor_config.json``: the imported one, else the processor of hiclip's eval transform
    (shorter side to ``image_size``, bicubic, centre crop, CLIP's mean and std)."""
    from hiclip.data.transforms import CLIP_MEAN, CLIP_STD

    if stored is not None:
        return stored
    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": image_size},
            "resample": 3, "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "do_convert_rgb": True}


@dataclass
class ExportReport:
    """What :func:`export_hf` wrote, and what the user must know about it."""

    out: Path
    files: list[str]
    swapped_ids: tuple[int, int] | None
    warnings: list[str] = field(default_factory=list)


def export_hf(checkpoint: str | Path, out: str | Path, allow_bidirectional: bool = False) -> ExportReport:
    """Write a vanilla hiclip checkpoint as a transformers CLIPModel folder (module docstring).

    Raises
    ------
    HiCLIPError
        For a model with the hierarchy on, a text-only model, or (without ``allow_bidirectional``)
        a bidirectional text tower, which CLIPModel would run with a causal mask.
    """
    from safetensors.torch import save_file

    from hiclip.atomic import atomic_path, atomic_write_text, check_writable
    from hiclip.checkpoint import load, read_config, read_extra

    config = read_config(checkpoint)
    name = Path(checkpoint)
    if config.hierarchy:
        raise HiCLIPError(f"{name}: the model has hierarchy-aware attention (affinity modules and the prior), "
                          "which a CLIPModel cannot express; export a vanilla model (hierarchy off)")
    if config.vision is None:
        raise HiCLIPError(f"{name}: a text-only model; a CLIPModel has both towers")
    if config.text.positions != "learned":
        raise HiCLIPError(f"{name}: the text tower has {config.text.positions} positions; a CLIPModel has a "
                          "learned position table only")
    notes = []
    if not config.text.causal:
        if not allow_bidirectional:
            raise HiCLIPError(f"{name}: the text tower is bidirectional (text.causal false) but CLIPModel's is "
                              "causal, so transformers would compute different text features; pass "
                              "--allow-bidirectional to export anyway (the image tower stays exact)")
        notes.append(f"{name}: the text tower is bidirectional: transformers runs it causally, so its text "
                     f"features differ from hiclip's (image features are exact); {CONFIG_FILE} records "
                     f"{MARKER}.text_causal false and hiclip import-clip restores it")
    model, tokenizer = load(checkpoint)
    imported = read_extra(checkpoint).get("imported") or {}
    state = {k: v for k, v in model.state_dict().items()}
    swap = None
    if tokenizer.eot_token_id == 2 and tokenizer.kind != "clip":
        swap = (2, tokenizer.vocab_size - 1)
        weight = state["text.token_embedding.weight"].clone()
        weight[[swap[0], swap[1]]] = weight[[swap[1], swap[0]]]
        state["text.token_embedding.weight"] = weight
        notes.append(f"{name}: token ids {swap[0]} (EOT) and {swap[1]} are swapped in the export (transformers' "
                     "CLIP treats eos_token_id 2 as a legacy marker); embedding rows swapped with them")
    eot = swap[1] if swap else tokenizer.eot_token_id
    hf_state = state_to_hf(state, config)
    dtype = getattr(torch, imported.get("dtype") or "float32", torch.float32)
    hf_state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in hf_state.items()}
    hf_config = _hf_config(config, tokenizer, imported.get("hf_config"), eot)
    files = _tokenizer_files(tokenizer, imported.get("tokenizer_files"), swap)
    files[PREPROCESSOR_FILE] = json.dumps(_preprocessor(config.vision.image_size, imported.get("image_processor")),
                                          indent=2) + "\n"
    folder = Path(out)
    check_writable(folder, folder=True)
    with atomic_path(folder / SAFETENSORS_FILE) as tmp:
        save_file(hf_state, str(tmp), metadata={"format": "pt"})
    for file_name, text in files.items():
        atomic_write_text(folder / file_name, text)
    atomic_write_text(folder / CONFIG_FILE, json.dumps(hf_config, indent=2) + "\n")  # last: the folder is complete
    return ExportReport(folder, [SAFETENSORS_FILE, *files, CONFIG_FILE], swap, notes)

