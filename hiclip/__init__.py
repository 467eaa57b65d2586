"""hiclip: an open, trainable HiCLIP (CLIP with hierarchy-aware attention).

The public names are imported lazily, so ``import hiclip`` (and ``hiclip --help``) does not pay
for importing torch until a model or tokenizer is used.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "hiclip.factory",
    "list_models": "hiclip.factory",
    "get_model_config": "hiclip.factory",
    "HiCLIP": "hiclip.model",
    "HiCLIPConfig": "hiclip.config",
    "TextConfig": "hiclip.config",
    "VisionConfig": "hiclip.config",
    "AffinityConfig": "hiclip.config",
    "HiCLIPTokenizer": "hiclip.tokenizer",
    "TextBatch": "hiclip.tokenizer",
    "load": "hiclip.checkpoint",
    "save": "hiclip.checkpoint",
    "HiCLIPError": "hiclip.errors",
    "import_clip": "hiclip.interop.hf_clip",
    "export_hf": "hiclip.interop.hf_clip",
    "load_clip_style": "hiclip.interop.clip_style",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from hiclip.checkpoint import load, save
    from hiclip.config import AffinityConfig, HiCLIPConfig, TextConfig, VisionConfig
    from hiclip.errors import HiCLIPError
    from hiclip.factory import create_model, get_model_config, list_models
    from hiclip.interop.clip_style import load_clip_style
    from hiclip.interop.hf_clip import export_hf, import_clip
    from hiclip.model import HiCLIP
    from hiclip.tokenizer import HiCLIPTokenizer, TextBatch


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hiclip' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
