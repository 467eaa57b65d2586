"""Build models by name from ``hiclip/model_configs/<name>.json``."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from hiclip.config import HiCLIPConfig
from hiclip.errors import HiCLIPError
from hiclip.model import HiCLIP

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
_NESTED = ("text", "vision", "affinity")


def list_models() -> list[str]:
    """Names of the shipped model configurations (file names without ``.json``), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def _config_path(name: str) -> Path:
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise HiCLIPError(f"{path}: model config file not found")
        return path
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise HiCLIPError(f"unknown model {name!r}; available: {', '.join(list_models())} (or a path to a .json config)")
    return path


def get_model_config(name: str, hierarchy: bool = True, vocab_size: int | None = None,
                     **overrides: Any) -> HiCLIPConfig:
    """The configuration :func:`create_model` would build (see there for the arguments)."""
    path = _config_path(name)
    data = HiCLIPConfig.from_json(path).to_dict()
    allowed = {f.name for f in fields(HiCLIPConfig)} - {"hierarchy"}
    for key, value in overrides.items():
        if key not in allowed:
            raise HiCLIPError(f"create_model: unknown override {key!r}; allowed: {sorted(allowed)}")
        if key in _NESTED and isinstance(value, dict):
            base = data.get(key)
            if base is None:
                raise HiCLIPError(f"create_model: {path.name} has no {key!r} section to override")
            data[key] = {**base, **value}
        else:
            data[key] = value
    data["hierarchy"] = bool(hierarchy)
    if vocab_size is not None:
        data["text"] = {**data["text"], "vocab_size": int(vocab_size)}
    return HiCLIPConfig.from_dict(data, where=f"{path.name} (with overrides)")


def create_model(name: str, hierarchy: bool = True, vocab_size: int | None = None, **overrides: Any) -> HiCLIP:
    """Create a randomly initialised model.

    Parameters
    ----------
    name : str
        A name from :func:`list_models` (e.g. ``"hiclip-tiny"``) or a path to a config ``.json``.
    hierarchy : bool
        Hierarchy-aware attention on (HiCLIP) or off (the vanilla CLIP twin, same size).
    vocab_size : int, optional
        Vocabulary size, normally ``tokenizer.vocab_size``; default: the config's value.
    **overrides
        Top-level config fields (``embed_dim=...``); ``text``/``vision``/``affinity`` take a dict
        merged into that section (``text={"layers": 2}``); ``vision=None`` makes a text-only model.

    Returns
    -------
    HiCLIP
        ``model.config`` holds the resolved :class:`HiCLIPConfig`.
    """
    return HiCLIP(get_model_config(name, hierarchy, vocab_size, **overrides))


def transformers_clip_config(config: HiCLIPConfig) -> Any:
    """A ``transformers.CLIPConfig`` of the same size as ``config`` (for parity checks and benchmarks).

    The vanilla model (``hierarchy=False``) has the layout of ``transformers.CLIPModel`` parameter
    for parameter, except the text tower's MLM head; its text tower attends bidirectionally.
    """
    from transformers import CLIPConfig

    if config.vision is None:
        raise HiCLIPError("transformers_clip_config: a text-only model has no CLIP equivalent")
    text, vision = config.text, config.vision
    return CLIPConfig(
        text_config={
            "vocab_size": text.vocab_size, "hidden_size": text.width,
            "intermediate_size": int(round(text.width * text.mlp_ratio)), "num_hidden_layers": text.layers,
            "num_attention_heads": text.heads, "max_position_embeddings": text.context_length,
            "hidden_act": text.activation, "layer_norm_eps": text.ln_eps,
            "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "projection_dim": config.embed_dim,
        },
        vision_config={
            "hidden_size": vision.width, "intermediate_size": int(round(vision.width * vision.mlp_ratio)),
            "num_hidden_layers": vision.layers, "num_attention_heads": vision.heads,
            "image_size": vision.image_size, "patch_size": vision.patch_size, "hidden_act": vision.activation,
            "layer_norm_eps": vision.ln_eps, "projection_dim": config.embed_dim,
        },
        projection_dim=config.embed_dim,
        logit_scale_init_value=config.init_logit_scale,
    )
