"""Evaluation as in the paper: zero-shot classification with prompt ensembles, and image<->text
retrieval with several captions per image (the MSCOCO protocol), R@1/5/10 and Rsum.

Retrieval protocol. Similarities S (N_images, N_captions); ``caption_image[j]`` is the image of
caption j. An image query is correct at K if *any* of its captions is among its K most similar
captions; a caption query is correct at K if its image is among its K most similar images. Ties
are broken pessimistically (a wrong item with the same score as the right one ranks ahead of it),
so a constant similarity scores 0 rather than a lucky 100. Recalls are percentages; Rsum is the sum
of the six recalls (max 600).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hiclip.errors import HiCLIPError
from hiclip.tokenizer import over_model_limit

RECALL_KS = (1, 5, 10)


def best_positive_rank(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """0-based rank of the best positive of each row.

    scores: (Q, C) similarities; positive: (Q, C) bool, at least one True per row. The rank is the
    number of negatives scoring >= the best positive (pessimistic ties). Returns (Q,) long.
    """
    if scores.shape != positive.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positive {tuple(positive.shape)} differ")
    if not bool(positive.any(dim=1).all()):
        raise ValueError("every query needs at least one positive")
    best = scores.masked_fill(~positive, float("-inf")).max(dim=1).values  # (Q,)
    beats = (scores >= best[:, None]) & ~positive
    return beats.sum(dim=1)


def retrieval_metrics(similarity: torch.Tensor, caption_image: Sequence[int] | torch.Tensor,
                      ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """similarity: (N_images, N_captions); caption_image: (N_captions,) image index of each caption.

    Returns {"i2t_R@K", "t2i_R@K" for K in ks, "rsum", "n_images", "n_captions"}; recalls in %.
    """
    similarity = similarity.float()
    owners = torch.as_tensor(caption_image, dtype=torch.long)
    n_images, n_captions = similarity.shape
    if owners.shape != (n_captions,):
        raise ValueError(f"caption_image has shape {tuple(owners.shape)}, expected ({n_captions},)")
    if n_captions and (owners.min() < 0 or owners.max() >= n_images):
        raise ValueError("caption_image holds an index outside the images")
    positive = owners[None, :] == torch.arange(n_images)[:, None]  # (N_images, N_captions)
    has_caption = positive.any(dim=1)
    i2t_rank = best_positive_rank(similarity[has_caption], positive[has_caption])
    t2i_rank = best_positive_rank(similarity.t(), positive.t())
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"i2t_R@{k}"] = 100.0 * (i2t_rank < k).float().mean().item()
    for k in ks:
        metrics[f"t2i_R@{k}"] = 100.0 * (t2i_rank < k).float().mean().item()
    metrics["rsum"] = sum(metrics[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks)
    metrics["n_images"] = int(has_caption.sum())
    metrics["n_captions"] = n_captions
    return metrics


def retrieval_chance(n_images: int, captions_per_image: float, k: int) -> dict[str, float]:
    """Expected R@K (%) of a random ranking with N images and c captions each:
    t2i = K / N; i2t = 1 - C(N c - c, K) / C(N c, K) (the K drawn captions miss all c positives)."""
    c = max(1, int(round(captions_per_image)))
    n_captions = n_images * c
    t2i = 100.0 * min(1.0, k / n_images)
    miss = math.comb(n_captions - c, k) / math.comb(n_captions, k) if k <= n_captions else 0.0
    return {"i2t": 100.0 * (1.0 - miss), "t2i": t2i}


def zero_shot_accuracy(image_features: torch.Tensor, class_features: torch.Tensor,
                       targets: torch.Tensor, ks: Sequence[int] = (1,)) -> dict[str, float]:
    """image_features: (N, E) and class_features: (C, E), both normalised; targets: (N,) class
    index. Returns top-K accuracies in % (K clipped to C) and the mean per-class top-1 recall."""
    logits = image_features.float() @ class_features.float().t()  # (N, C)
    result: dict[str, float] = {}
    # Stable, so tied classes (e.g. names made only of unknown words) rank by class index on every
    # run; an unstable sort breaks ties differently with the thread count.
    order = torch.sort(logits, dim=1, descending=True, stable=True).indices
    for k in ks:
        kk = min(k, logits.shape[1])
        hit = (order[:, :kk] == targets[:, None]).any(dim=1).float()
        result[f"top{k}"] = 100.0 * hit.mean().item()
    top1 = order[:, 0] == targets
    per_class = [top1[targets == c].float().mean().item()
                 for c in range(class_features.shape[0]) if bool((targets == c).any())]
    result["mean_per_class"] = 100.0 * sum(per_class) / max(1, len(per_class))
    return result


# --------------------------------------------------------------------------------------------
# Model side: encoding, prompt ensembles, and the two tasks over a list of samples.

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve")
DEFAULT_TEMPLATES: tuple[str, ...] = ("{}", "a {}", "the {}", "an image of a {}", "a picture of the {}")
DEFAULT_LABEL_KEYS = ("shape", "colour", "count")


def class_name(value: Any) -> str:
    """Label value -> the words of its class name (small integers become number words)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and 0 <= value < len(NUMBER_WORDS):
        return NUMBER_WORDS[value]
    return str(value).replace("_", " ")


@torch.no_grad()
def encode_texts(model: Any, tokenizer: Any, texts: Sequence[str], device: torch.device,
                 batch_size: int = 256) -> torch.Tensor:
    """(N,) texts -> (N, E) L2-normalised features (float32, on CPU)."""
    context = model.config.text.max_tokens
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start:start + batch_size]), context_length=context).to(device)
        out.append(model.encode_text(batch.input_ids, batch.attention_mask, normalize=True,
                                     word_ids=batch.word_ids).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.config.embed_dim)


@torch.no_grad()
def encode_images(model: Any, images: Sequence[torch.Tensor] | Any, device: torch.device,
                  batch_size: int = 128) -> torch.Tensor:
    """Iterable of (3, S, S) image tensors -> (N, E) L2-normalised features (float32, CPU)."""
    out, pending = [], []
    for image in images:
        pending.append(image)
        if len(pending) == batch_size:
            out.append(model.encode_image(torch.stack(pending).to(device), normalize=True).float().cpu())
            pending = []
    if pending:
        out.append(model.encode_image(torch.stack(pending).to(device), normalize=True).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.config.embed_dim)


@torch.no_grad()
def class_embeddings(model: Any, tokenizer: Any, names: Sequence[str], templates: Sequence[str],
                     device: torch.device) -> torch.Tensor:
    """CLIP prompt ensemble: for each class, the mean of its normalised template features,
    renormalised. Returns (C, E)."""
    if not templates:
        raise HiCLIPError("zero-shot needs at least one prompt template")
    prompts = [t.format(name) for name in names for t in templates]
    over = tokenizer.over_limit(prompts, model.config.text.max_tokens)
    if over:
        i, n = over[0]
        raise over_model_limit(f"zero-shot prompt {prompts[i]!r} (template {templates[i % len(templates)]!r})",
                               n, model.config.text.max_tokens)
    features = encode_texts(model, tokenizer, prompts, device).view(len(names), len(templates), -1)
    return torch.nn.functional.normalize(features.mean(dim=1), dim=-1)


def tied_classes(class_features: torch.Tensor, names: Sequence[str]) -> list[list[str]]:
    """Groups of classes whose prompt embeddings are identical (their names tokenise alike, e.g.
    all unknown words): no image can tell them apart, and the first of each group takes the ties."""
    groups: dict[bytes, list[str]] = {}
    for name, row in zip(names, class_features.float().cpu()):
        groups.setdefault(row.numpy().tobytes(), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


@dataclass
class EvalSet:
    """What the tasks need from a dataset split: one entry per image."""

    ids: list[str]
    captions: list[list[str]]
    labels: list[dict[str, Any]]
    image_features: torch.Tensor  # (N, E), normalised
    name: str = ""
    templates: dict[str, list[str]] = field(default_factory=dict)
    origins: list[str] = field(default_factory=list)  # where each image's record came from (file:line)


def evaluate_retrieval(model: Any, tokenizer: Any, data: EvalSet,
                       device: torch.device) -> dict[str, float]:
    """Image->text and text->image retrieval with every caption of every image (COCO protocol)."""
    texts, owners = [], []
    for i, caps in enumerate(data.captions):
        for caption in caps:
            texts.append(caption)
            owners.append(i)
    if not texts:
        raise HiCLIPError(f"{data.name}: no captions to retrieve")
    limit = model.config.text.max_tokens
    over = tokenizer.over_limit(texts, limit)
    if over:  # refused whole: a caption cut would change the retrieval protocol
        i, n = over[0]
        owner = owners[i]
        where = data.origins[owner] if data.origins else f"{data.name}: image {data.ids[owner]}"
        caption = data.captions[owner].index(texts[i])
        raise over_model_limit(f"{where}: caption {caption}", n, limit,
                               f"{len(over)} caption(s) of {data.name} are over it")
    text_features = encode_texts(model, tokenizer, texts, device)
    metrics = retrieval_metrics(data.image_features @ text_features.t(), owners)
    per_image = len(texts) / max(1, len(data.captions))
    chance = retrieval_chance(len(data.captions), per_image, 1)
    metrics["chance_i2t_R@1"], metrics["chance_t2i_R@1"] = chance["i2t"], chance["t2i"]
    return metrics


def evaluate_zero_shot(model: Any, tokenizer: Any, data: EvalSet, device: torch.device,
                       label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
                       templates: dict[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Zero-shot classification of each label in ``label_keys`` (classes: the label values found
    in the split, sorted), with a prompt ensemble per label. Returns per label: top-1, top-3
    (when more than 3 classes), mean per-class recall, the number of classes and chance (100/C)."""
    templates = templates or {}
    results: dict[str, Any] = {}
    for key in label_keys:
        values = [labels.get(key) for labels in data.labels]
        present = [i for i, v in enumerate(values) if v is not None]
        if not present:
            continue
        classes = sorted({values[i] for i in present}, key=lambda v: (str(type(v)), v))
        if len(classes) < 2:
            continue
        names = [class_name(v) for v in classes]
        index = {v: c for c, v in enumerate(classes)}
        prompts = list(templates.get(key) or templates.get("*") or DEFAULT_TEMPLATES)
        weights = class_embeddings(model, tokenizer, names, prompts, device)
        targets = torch.tensor([index[values[i]] for i in present])
        scores = zero_shot_accuracy(data.image_features[present], weights, targets,
                                    ks=(1, 3) if len(classes) > 3 else (1,))
        results[key] = {**scores, "n_classes": len(classes), "classes": names,
                        "chance_top1": 100.0 / len(classes), "n_images": len(present),
                        "templates": prompts, "tied_classes": tied_classes(weights, names)}
    if results:
        results["mean_top1"] = sum(r["top1"] for r in results.values()) / len(results)
    return results


def write_results(path: str | Path, results: dict[str, Any]) -> None:
    from hiclip.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(results, indent=2) + "\n")


def load_eval_set(spec: str, split: str | None, image_size: int, model: Any, device: torch.device,
                  max_samples: int | None = None, image_root: str | None = None) -> EvalSet:
    """Read a dataset split, encode its images with the evaluation transform."""
    from hiclip.data import open_dataset
    from hiclip.data.transforms import eval_transform

    samples = list(open_dataset(spec, split=split, image_root=image_root))
    if max_samples:
        samples = samples[:max_samples]
    if not samples:
        raise HiCLIPError(f"{spec}: no samples in split {split!r}")
    transform = eval_transform(image_size)
    images = (transform(s.open_image()) for s in samples)
    features = encode_images(model, images, device)
    return EvalSet(ids=[s.id for s in samples], captions=[list(s.captions) for s in samples],
                   labels=[dict(s.labels or {}) for s in samples], image_features=features,
                   name=f"{spec}:{split}", origins=[s.origin or s.id for s in samples])


def run_evaluation(checkpoint: str | Path, data: str, split: str | None = "test",
                   task: str = "all", device: str = "cpu", max_samples: int | None = None,
                   label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
                   templates: dict[str, Sequence[str]] | None = None,
                   image_root: str | None = None) -> dict[str, Any]:
    """``hiclip eval``: load a checkpoint, run the tasks on ``data``/``split``, return the JSON."""
    from hiclip.checkpoint import load

    if task not in ("zeroshot", "retrieval", "all"):
        raise HiCLIPError(f"unknown task {task!r}: use zeroshot, retrieval or all")
    model, tokenizer = load(checkpoint, map_location=device)
    if model.vision is None:
        raise HiCLIPError(f"{checkpoint}: a text-only model cannot be evaluated on images")
    torch_device = torch.device(device)
    data_set = load_eval_set(data, split, model.config.vision.image_size, model, torch_device,
                             max_samples, image_root)
    results: dict[str, Any] = {
        "checkpoint": str(checkpoint), "data": str(data), "split": split,
        "model": {"name": model.config.name, "hierarchy": model.config.hierarchy},
        "n_images": len(data_set.ids),
    }
    if task in ("retrieval", "all"):
        results["retrieval"] = evaluate_retrieval(model, tokenizer, data_set, torch_device)
    if task in ("zeroshot", "all"):
        results["zeroshot"] = evaluate_zero_shot(model, tokenizer, data_set, torch_device,
                                                 label_keys, templates)
    return results
