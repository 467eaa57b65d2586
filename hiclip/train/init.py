"""Starting a run from a checkpoint's weights: ``hiclip train --init CKPT`` (config key ``init``).

The model trained is the architecture that the checkpoint's ``config.json`` describes, whatever
it is (an imported CLIP at 224 px, a hiclip model of any size). The recipe's model settings must
agree with it, or be overridden explicitly; otherwise the run stops, before any work, with one
line naming the settings that disagree:

* ``model``: a shipped model name (or config file) is compared field by field with the
  checkpoint (sizes, activation, causal mask, ...). ``--model init`` (``"model": "init"``) takes
  the checkpoint's architecture as it is.
* ``hierarchy`` must equal the checkpoint's. Fresh affinity modules are added by
  ``hiclip import-clip --hierarchy`` (:func:`hiclip.interop.hf_clip.add_fresh_hierarchy`).
* ``affinity.prior_gate`` (the per-layer prior gates that ``hiclip import-clip --hierarchy``
  adds) is the checkpoint's, whatever the recipe says: the gates are weights. Overriding it
  explicitly is an error.
* ``model_overrides`` may change, explicitly, what does not change the weights' shapes:
  ``text.causal``, ``{text,vision}.prior_layers``, ``{text,vision}.activation``, ``ln_eps``,
  ``max_logit_scale`` and the ``affinity`` options. Shapes (widths, depths, heads, context
  length, image and patch size, embedding size) cannot change.

Not compared: ``name``, ``text.vocab_size`` (the checkpoint's tokenizer is used, whatever the
recipe's ``tokenizer`` says), ``init_logit_scale`` (the weights carry the temperature) and
``text.mlm_head``. When an objective needs masked language modelling (``loss.mlm_weight > 0``,
multi-view with ``text_view: "mask"``, or ``mode: "mlm"``) and the checkpoint has no MLM head, a
fresh one is added (initialised as hiclip's own); when its vocabulary has no mask token (an
imported CLIP's has none), ``<|mask|>`` is appended to it with the next id and an embedding row
equal to the mean of the existing rows. In ``mode: "mlm"`` the vision tower is dropped, as in a
text-only run from scratch.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hiclip.config import HiCLIPConfig
from hiclip.errors import HiCLIPError
from hiclip.tokenizer import HiCLIPTokenizer
from hiclip.train.config import INIT_MODEL, TrainConfig

_NOT_COMPARED = frozenset({"name", "text.vocab_size", "init_logit_scale", "text.mlm_head"})
_ADJUSTABLE = frozenset({"text.causal", "text.prior_layers", "vision.prior_layers", "text.activation",
                         "vision.activation", "text.ln_eps", "vision.ln_eps", "max_logit_scale"})
#: Always the checkpoint's (the prior gates are weights); an explicit override that differs is an error.
_FROM_CHECKPOINT = frozenset({"affinity.prior_gate"})
_MAX_LISTED = 4


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def uses_mlm(config: TrainConfig) -> bool:
    """Whether the run computes MLM logits (and so needs a head and a mask token)."""
    loss = config.loss
    return config.mode == "mlm" or loss.mlm_weight > 0 or (loss.multiview and loss.text_view == "mask")


def _checkpoint_config(config: TrainConfig) -> HiCLIPConfig:
    from hiclip.checkpoint import read_config

    assert config.init is not None
    return read_config(config.init)


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def init_target_config(config: TrainConfig) -> HiCLIPConfig:
    """The configuration of the model a ``--init`` run trains (module docstring), without the
    final vocabulary size; raises :class:`HiCLIPError` when the recipe disagrees with it."""
    from hiclip.factory import get_model_config

    source = _checkpoint_config(config)
    where = f"--init {config.init}"
    if config.mode == "clip" and source.vision is None:
        raise HiCLIPError(f"{where}: a text-only checkpoint; image-text training needs both towers (or mode 'mlm')")
    overrides = dict(config.model_overrides)
    text_only = config.mode == "mlm"
    if config.model == INIT_MODEL:
        recipe = _merged(source.to_dict(), overrides)
        recipe["hierarchy"] = config.hierarchy
        recipe = HiCLIPConfig.from_dict(recipe, where=f"{where} with model_overrides").to_dict()
    else:
        recipe = get_model_config(config.model, hierarchy=config.hierarchy, **overrides).to_dict()
    ours, theirs = _flat(recipe), _flat(source.to_dict())
    explicit = set(_flat(overrides))
    if text_only:
        ours = {k: v for k, v in ours.items() if not k.startswith("vision")}
        theirs = {k: v for k, v in theirs.items() if not k.startswith("vision")}
    differ = [k for k in sorted(set(ours) | set(theirs)) if k not in _NOT_COMPARED and ours.get(k) != theirs.get(k)]
    for key in _FROM_CHECKPOINT.intersection(differ):
        if key in explicit:
            raise HiCLIPError(f"{where}: {key} is {theirs.get(key)!r} in the checkpoint and cannot change "
                              "(the gates are weights); choose it at import (hiclip import-clip --no-prior-gate)")
        differ.remove(key)
    if "hierarchy" in differ:
        if theirs["hierarchy"]:
            hint = "pass --hierarchy (or set hierarchy true)"
        else:
            hint = ("import it with 'hiclip import-clip --hierarchy' for fresh affinity modules, or pass "
                    "--no-hierarchy to fine-tune it as it is")
        raise HiCLIPError(f"{where}: the recipe trains with the hierarchy {'on' if ours['hierarchy'] else 'off'} "
                          f"but the checkpoint has it {'on' if theirs['hierarchy'] else 'off'}; {hint}")
    adjustable = [k for k in differ if k in explicit and (k in _ADJUSTABLE or k.startswith("affinity."))]
    fixed = [k for k in differ if k not in adjustable]
    if fixed:
        listed = ", ".join(f"{k} (recipe {ours.get(k)!r}, checkpoint {theirs.get(k)!r})" for k in fixed[:_MAX_LISTED])
        more = f" and {len(fixed) - _MAX_LISTED} more" if len(fixed) > _MAX_LISTED else ""
        shapes = [k for k in fixed if k.split(".")[-1] not in {"causal", "prior_layers", "activation", "ln_eps"}
                  and not k.startswith("affinity.") and k != "max_logit_scale"]
        hint = ("--model init takes the checkpoint's architecture; "
                if config.model != INIT_MODEL else "") + (
            "sizes cannot change" if shapes else
            "to change these, set them with --set model_overrides.KEY=VALUE")
        raise HiCLIPError(f"{where}: the recipe's model ({config.model}) differs from the checkpoint in "
                          f"{listed}{more}; {hint}")
    target = _merged(source.to_dict(), {k: v for k, v in _unflat({k: ours[k] for k in adjustable}).items()})
    if text_only:
        target["vision"] = None
    if uses_mlm(config) and not target["text"]["mlm_head"]:
        target["text"]["mlm_head"] = True
    return HiCLIPConfig.from_dict(target, where=where)


def _unflat(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def init_tokenizer(config: TrainConfig) -> HiCLIPTokenizer:
    """The ``--init`` checkpoint's tokenizer, with a mask token added when MLM needs one."""
    from hiclip.checkpoint import TOKENIZER_FILE

    assert config.init is not None
    source = _checkpoint_config(config)
    tokenizer = HiCLIPTokenizer.from_file(Path(config.init) / TOKENIZER_FILE, context_length=source.text.max_tokens)
    return tokenizer.with_mask_token() if uses_mlm(config) else tokenizer


def initial_model(config: TrainConfig, tokenizer: HiCLIPTokenizer) -> tuple[Any, list[str]]:
    """The model of a ``--init`` run, with the checkpoint's weights, and lines for the run log
    saying what was loaded and what is fresh. Call under the run's seed (fresh parts use it)."""
    from hiclip.checkpoint import load
    from hiclip.model import HiCLIP

    target = init_target_config(config)
    source_model, source_tokenizer = load(config.init)
    if tokenizer.vocab_size < source_tokenizer.vocab_size:
        raise HiCLIPError(f"--init {config.init}: the tokenizer has fewer ids than the checkpoint's")
    target = replace(target, text=replace(target.text, vocab_size=tokenizer.vocab_size))
    model = HiCLIP(target)
    state = source_model.state_dict()
    if target.vision is None:
        state = {k: v for k, v in state.items() if not k.startswith("vision.")}
    notes = []
    added = tokenizer.vocab_size - source_tokenizer.vocab_size
    if added:
        embedding = state["text.token_embedding.weight"]
        state["text.token_embedding.weight"] = torch.cat([embedding, embedding.mean(0, keepdim=True).expand(added, -1)])
        if "text.mlm_bias" in state:
            state["text.mlm_bias"] = torch.cat([state["text.mlm_bias"], state["text.mlm_bias"].new_zeros(added)])
        notes.append(f"added the mask token {tokenizer.id_to_token(tokenizer.mask_token_id)!r} "
                     f"(id {tokenizer.mask_token_id}) to the vocabulary, its embedding the mean of the others")
    result = model.load_state_dict(state, strict=False)
    fresh = sorted({k.split(".")[1] for k in result.missing_keys})
    if result.unexpected_keys or any(not k.startswith("text.mlm_") for k in result.missing_keys):
        raise HiCLIPError(f"--init {config.init}: its weights do not fit the model "
                          f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    loaded = len(state)
    gates = ", prior gates" if target.hierarchy and target.affinity.prior_gate else ""
    notes.insert(0, f"initialised from {config.init}: {loaded} tensors "
                    f"({target.name}, hierarchy {'on' if target.hierarchy else 'off'}{gates}, text tower "
                    f"{'causal' if target.text.causal else 'bidirectional'})"
                    + (f"; fresh: {', '.join(fresh)} (the MLM head)" if fresh else ""))
    if config.tokenizer != "word" or config.bpe_vocab_size != TrainConfig.bpe_vocab_size:
        notes.append("the recipe's tokenizer settings are unused: the checkpoint's tokenizer is kept")
    return model, notes
