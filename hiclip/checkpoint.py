"""Save and load a model with its tokenizer as a folder (no pickle).

A checkpoint folder holds::

    config.json         {"format": "hiclip", "format_version": 1, "model": <HiCLIPConfig>, "extra": {...},
                         "weights_sha256": <hex digest of model.safetensors>}
    model.safetensors   the state dict (tensors sharing storage are stored once, see metadata "aliases")
    tokenizer.json      the ``tokenizers`` file of :class:`HiCLIPTokenizer`

Each file is written to a unique temporary and renamed (``hiclip.atomic``), ``config.json`` last:
it records the SHA-256 of the weights file, which :func:`load` checks, so a damaged or mixed-up
weights file is an error instead of a silently different model. Checkpoints saved before the
checksum existed load with a one-time note.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hiclip.atomic import as_os_error, atomic_path, atomic_write_text, os_error
from hiclip.config import HiCLIPConfig
from hiclip.errors import HiCLIPError
from hiclip.model import HiCLIP
from hiclip.tokenizer import HiCLIPTokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "hiclip"
FORMAT_VERSION = 1
_MAX_LISTED = 5
CHECKSUM_KEY = "weights_sha256"
_log = logging.getLogger(__name__)
_noted_unverified: set[str] = set()


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_failure(path: Path, error: BaseException) -> HiCLIPError:
    """A library's write error (safetensors, tokenizers) as one line naming ``path``."""
    cause = as_os_error(error)
    if cause is not None:
        return os_error(path, cause)
    return HiCLIPError(f"{path}: cannot write ({str(error).splitlines()[0] if str(error) else type(error).__name__})")


def save(model: HiCLIP, tokenizer: HiCLIPTokenizer, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` and ``tokenizer`` to the folder ``path`` (created if needed).

    Parameters
    ----------
    model : HiCLIP
    tokenizer : HiCLIPTokenizer
        Must have ``vocab_size == model.config.text.vocab_size``.
    path : str or Path
        Folder; existing checkpoint files in it are replaced (each file atomically).
    extra : dict, optional
        JSON-serialisable information stored under ``"extra"`` in ``config.json``
        (e.g. training step, data); read it back with :func:`read_extra`.

    Returns
    -------
    Path
        The folder.
    """
    config = model.config
    if tokenizer.vocab_size != config.text.vocab_size:
        raise HiCLIPError(
            f"save: tokenizer has {tokenizer.vocab_size} ids but the model's text.vocab_size is "
            f"{config.text.vocab_size}; build the model with vocab_size=tokenizer.vocab_size"
        )
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": config.to_dict(), "extra": extra or {}}
    try:
        json.dumps(header)
    except TypeError as error:
        raise HiCLIPError(f"save: extra is not JSON-serialisable ({error})") from None
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise os_error(folder, error) from None

    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], torch.dtype], str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]  # tied weight: store once
            continue
        seen[key] = name
        tensors[name] = tensor.detach().to("cpu").contiguous()

    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={"format": "pt", "aliases": json.dumps(aliases)})
        except Exception as error:  # safetensors raises its own error type, errno in the text
            raise _write_failure(folder / WEIGHTS_FILE, error) from None
        header[CHECKSUM_KEY] = file_sha256(tmp)
    with atomic_path(folder / TOKENIZER_FILE) as tmp:
        try:
            tokenizer.save(tmp)
        except OSError:
            raise
        except Exception as error:  # tokenizers (Rust) reports I/O errors as plain Exceptions
            raise _write_failure(folder / TOKENIZER_FILE, error) from None
    atomic_write_text(folder / CONFIG_FILE, json.dumps(header, indent=2) + "\n")
    return folder


def _folder(path: str | Path) -> Path:
    folder = Path(path)
    if folder.is_file() and folder.name == CONFIG_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise HiCLIPError(f"{folder}: checkpoint folder not found")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE) if not (folder / name).is_file()]
    if missing:
        raise HiCLIPError(f"{folder}: not a hiclip checkpoint, missing {', '.join(missing)}")
    return folder


def _read_config_json(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise HiCLIPError(f"{path}: not valid UTF-8 (byte {error.start}): damaged?") from None
    except json.JSONDecodeError as error:
        raise HiCLIPError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "model" not in data:
        raise HiCLIPError(f"{path}: not a hiclip checkpoint config (expected \"format\": \"{FORMAT}\" and \"model\")")
    if data.get("format_version") != FORMAT_VERSION:
        raise HiCLIPError(f"{path}: format_version {data.get('format_version')!r} is not supported "
                          f"(this hiclip reads {FORMAT_VERSION})")
    return data


def read_config(path: str | Path) -> HiCLIPConfig:
    """The model configuration of a checkpoint folder, without loading weights."""
    folder = _folder(path)
    return HiCLIPConfig.from_dict(_read_config_json(folder)["model"], where=f"{folder / CONFIG_FILE}: model")


def read_extra(path: str | Path) -> dict[str, Any]:
    """The ``extra`` dict stored by :func:`save`."""
    return _read_config_json(_folder(path)).get("extra") or {}


def update_extra(path: str | Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into a checkpoint's ``extra`` (``config.json`` rewritten atomically; the
    weights and their checksum are untouched); returns the new ``extra``."""
    folder = _folder(path)
    data = _read_config_json(folder)
    extra = {**(data.get("extra") or {}), **updates}
    try:
        text = json.dumps({**data, "extra": extra}, indent=2) + "\n"
    except TypeError as error:
        raise HiCLIPError(f"update_extra: not JSON-serialisable ({error})") from None
    atomic_write_text(folder / CONFIG_FILE, text)
    return extra


def verify_weights(folder: str | Path) -> None:
    """Check ``model.safetensors`` against the SHA-256 that ``config.json`` records.

    Raises
    ------
    HiCLIPError
        When the digests differ (the file was damaged or replaced after saving). A checkpoint
        saved before checksums were recorded passes, with a one-time note.
    """
    folder = _folder(folder)
    expected = _read_config_json(folder).get(CHECKSUM_KEY)
    weights = folder / WEIGHTS_FILE
    try:  # a header that does not describe the whole file (truncation) fails here
        with safe_open(str(weights), framework="pt", device="cpu") as handle:
            handle.keys()
    except Exception as error:  # safetensors raises its own error types on corrupt files
        raise HiCLIPError(f"{weights}: unreadable safetensors file ({str(error).splitlines()[0]})") from None
    if expected is None:
        key = str(folder.resolve())
        if key not in _noted_unverified:
            _noted_unverified.add(key)
            _log.warning("note: %s records no weights checksum (saved by an older hiclip); loading it "
                         "unverified", folder)
        return
    try:
        actual = file_sha256(weights)
    except OSError as error:
        raise os_error(weights, error, "cannot read") from None
    if actual != expected:
        raise HiCLIPError(f"{weights}: damaged: its SHA-256 is {actual[:16]}..., {CONFIG_FILE} records "
                          f"{str(expected)[:16]}... (copy or export the checkpoint again)")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types on corrupt files
        raise HiCLIPError(f"{path}: unreadable safetensors file ({str(error).splitlines()[0]})") from None
    try:
        aliases = json.loads(metadata.get("aliases", "{}"))
    except json.JSONDecodeError:
        raise HiCLIPError(f"{path}: corrupt 'aliases' metadata") from None
    for alias, source in aliases.items():
        if source not in tensors:
            raise HiCLIPError(f"{path}: tied weight {alias!r} refers to missing tensor {source!r}")
        tensors[alias] = tensors[source]
    return tensors


def _check_state(model: HiCLIP, tensors: dict[str, torch.Tensor], weights: Path, config: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    shapes = [
        f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:_MAX_LISTED]}" + (" ..." if len(missing) > _MAX_LISTED else ""))
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:_MAX_LISTED]}"
                        + (" ..." if len(unexpected) > _MAX_LISTED else ""))
    if shapes:
        problems.append(f"shape mismatch (file vs config) {shapes[:_MAX_LISTED]}"
                        + (" ..." if len(shapes) > _MAX_LISTED else ""))
    if problems:
        raise HiCLIPError(f"{weights}: does not match {config.name}: " + "; ".join(problems))


def load(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[HiCLIP, HiCLIPTokenizer]:
    """Load a checkpoint folder written by :func:`save`.

    Parameters
    ----------
    path : str or Path
        The folder (or its ``config.json``).
    map_location : str or torch.device
        Device for the model.

    Returns
    -------
    model : HiCLIP
        In eval mode, on ``map_location``.
    tokenizer : HiCLIPTokenizer
        Its default context length is the model's.
    """
    folder = _folder(path)
    config = read_config(folder)
    verify_weights(folder)
    model = HiCLIP(config)
    tensors = _read_weights(folder / WEIGHTS_FILE)
    _check_state(model, tensors, folder / WEIGHTS_FILE, folder / CONFIG_FILE)
    model.load_state_dict(tensors, strict=True)
    tokenizer = HiCLIPTokenizer.from_file(folder / TOKENIZER_FILE, context_length=config.text.max_tokens)
    if tokenizer.vocab_size != config.text.vocab_size:
        raise HiCLIPError(f"{folder / TOKENIZER_FILE}: {tokenizer.vocab_size} ids, but {CONFIG_FILE} says "
                          f"text.vocab_size = {config.text.vocab_size}")
    return model.to(map_location).eval(), tokenizer
