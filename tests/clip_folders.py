"""Tiny transformers CLIPModel folders built locally (no downloads), for the interop tests.

The tokenizer is a real ``transformers.CLIPTokenizer``: byte-level BPE over CLIP's 256-symbol
byte alphabet (every symbol also with the ``</w>`` word end, as in CLIP's vocabulary), merges that
spell out a few words whole (others fall apart into pieces), then ``<|startoftext|>`` and
``<|endoftext|>`` as the last two ids, as in CLIP.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WHOLE_WORDS = ("a", "red", "square", "the", "left", "of", "two", "blue", "circle", "above", "photo",
               "dog", "cat", "small", "green", "to")

TEXTS = [
    "a red square to the left of two blue circles",
    "A photo of a   DOG, isn't it?",
    "two small green triangles above the cat",
    "café au lait 123",
    "the",
]


def byte_alphabet() -> list[str]:
    """GPT-2 / CLIP's printable stand-ins for the 256 byte values, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    table = dict(zip(printable, codes))
    return [chr(table[b]) for b in range(256)]


def vocab_and_merges(words: tuple[str, ...] = WHOLE_WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    alphabet = byte_alphabet()
    vocab: dict[str, int] = {}
    for symbol in alphabet + [s + "</w>" for s in alphabet]:
        vocab[symbol] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        acc = pieces[0]
        for piece in pieces[1:]:
            pair = (acc, piece)
            acc += piece
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(acc, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def clip_tokenizer(pad_token: str = "<|endoftext|>") -> Any:
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=16)


def clip_config(vocab_size: int, image_size: int = 32, patch_size: int = 8, context: int = 16,
                text_layers: int = 2, vision_layers: int = 2, act: str = "quick_gelu", eos_token_id: int | None = None,
                bos_token_id: int | None = None, pad_token_id: int | None = None) -> Any:
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": text_layers, "num_attention_heads": 4,
                     "max_position_embeddings": context, "hidden_act": act,
                     "eos_token_id": eos_token_id, "bos_token_id": bos_token_id, "pad_token_id": pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": vision_layers,
                       "num_attention_heads": 4, "image_size": image_size, "patch_size": patch_size,
                       "hidden_act": act},
        projection_dim=24,
    )


def make_clip_folder(folder: Path, seed: int = 0, slow_tokenizer_files: bool = False, **config: Any) -> Path:
    """Save a random ``CLIPModel`` and its ``CLIPTokenizer`` to ``folder``.

    ``slow_tokenizer_files`` writes ``vocab.json`` + ``merges.txt`` instead of ``tokenizer.json``
    (the layout of older checkpoints).
    """
    import json

    from transformers import CLIPModel

    tokenizer = clip_tokenizer()
    ids = {"eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(seed)
    model = CLIPModel(clip_config(len(tokenizer), **{**ids, **config})).eval()
    with torch.no_grad():  # the biases of a fresh CLIPModel are zero; make them matter in the checks
        for name, param in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name or "layrnorm" in name:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(folder)
    if slow_tokenizer_files:
        vocab, merges = vocab_and_merges()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer",
                                                                   "model_max_length": 16}))
    else:
        tokenizer.save_pretrained(folder)
    return folder
