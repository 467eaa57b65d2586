"""Training data: samples from ``hiclip.data``, a keyed torch dataset with per-sample seeding,
the tokenizer, collation into :class:`~hiclip.train.objectives.TrainBatch`, and the validation set.

The torch dataset is indexed by ``(epoch, index)`` keys from :mod:`hiclip.train.data_order`;
each item is produced inside :func:`~hiclip.train.data_order.seeded_rng` with the sample's seed,
so caption choice, hard-negative choice and augmentations are the same in a resumed run, in any
DataLoader worker and on any rank.

Images that fail to decode while training (``config.on_error``): under ``"raise"`` the run stops
with one line naming the file and its manifest line. Under ``"skip"`` the sample is replaced by
the next sample of the dataset whose image decodes, drawn with the same seed; the batch keeps its
size, the replacement depends only on the data, so a resumed run still ends with the same
weights, and every skip is counted (``skipped_images`` in ``metrics.jsonl``) and logged.
Failures are carried to the main process as values, never as DataLoader worker tracebacks.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from hiclip.errors import HiCLIPError
from hiclip.tokenizer import HiCLIPTokenizer, over_model_limit
from hiclip.train.config import TrainConfig
from hiclip.train.data_order import PlanSampler, sample_seed, seeded_rng
from hiclip.train.distributed import DistEnv
from hiclip.train.objectives import TrainBatch

# ---------------------------------------------------------------------------------------------
# The few places that touch hiclip.data.


def check_data_spec(spec: str) -> None:
    """Fail early, with one line, when a dataset spec names nothing on disk."""
    path = Path(spec)
    if "://" not in spec and not path.exists() and not any(c in spec for c in "{*"):
        raise HiCLIPError(f"training data {spec} not found")


def open_splits(spec: str, splits: Sequence[str | None], config: TrainConfig | None = None,
                notes: list[str] | None = None) -> list[list[Any] | None]:
    """The samples of each split (all samples for None; None for a split the data lacks), read
    once with the config's ``on_error`` / ``check_images`` / ``image_root``. Gold trees are not
    checked here: training does not read them. Skips made while reading go to ``notes``."""
    from hiclip.data import open_dataset

    options: dict[str, Any] = {}
    if config is not None:
        options = {"on_error": config.on_error, "check_images": config.check_images,
                   "image_root": config.image_root}
    dataset = open_dataset(spec, check_trees=False, **options)
    if notes is not None and dataset.skips.total:
        notes.append(f"data {spec}: {dataset.skips.summary()}")
        notes.extend(f"  {example}" for example in dataset.skips.examples)
    out: list[list[Any] | None] = []
    for name in splits:
        if name is None:
            out.append(list(dataset))
        else:
            chosen = [s for s in dataset if s.split == name]
            out.append(chosen or None)
    return out


def image_transform(image_size: int, train: bool, augment: str) -> Callable[..., torch.Tensor]:
    """PIL image -> normalised (3, S, S) tensor. Training views: ``augment`` "light" (crop of
    70-100% area, mild brightness/contrast, blur; no hue, saturation or greyscale, so colour words
    stay true) or "full" (the HiDeCLIP / SimSiam augmentation); otherwise the evaluation transform."""
    from hiclip.data import transforms

    if train and augment == "light":
        return transforms.train_transform(image_size, transforms.AugmentConfig(
            scale=(0.7, 1.0), brightness=0.2, contrast=0.2, saturation=0.0, hue=0.0,
            grayscale_p=0.0, blur_sigma=(0.1, 1.0), blur_p=0.3))
    if train and augment == "full":
        return transforms.train_transform(image_size)
    return transforms.eval_transform(image_size)


def load_image(sample: Any) -> Any:
    """The sample's RGB PIL image."""
    return sample.open_image()


# ---------------------------------------------------------------------------------------------


def _captions(sample: Any) -> list[str]:
    return [c for c in sample.captions if c and c.strip()]


def _negatives(sample: Any) -> list[str]:
    return [n for n in (sample.negatives or []) if n and n.strip()]


def _labels(sample: Any) -> dict[str, Any]:
    return dict(sample.labels or {})


def _id(sample: Any) -> str:
    return str(sample.id)


class PairDataset(Dataset):
    """Image-text pairs keyed by ``(epoch, index)``.

    Item: ``images`` (V views, each (3, S, S)), ``caption`` (one caption, chosen per epoch),
    ``caption2`` (another caption of the same image when there is one), ``negatives`` (K hard
    negatives; drawn with replacement when fewer, placeholders when none), ``negative_valid`` (K,),
    ``seed``.
    """

    def __init__(self, samples: Sequence[Any], seed: int, views: int, transform: Callable,
                 negatives: int = 0, on_error: str = "raise") -> None:
        self.samples = samples
        self.seed = seed
        self.views = views
        self.transform = transform
        self.negatives = negatives
        self.on_error = on_error
        self._bad: dict[int, str] = {}  # undecodable images met by this process: index -> error

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        seed = sample_seed(self.seed, epoch, index)
        skipped: list[str] = []
        for offset in range(len(self.samples)):
            chosen = (index + offset) % len(self.samples)
            if chosen not in self._bad:
                try:
                    item = self._item(chosen, seed)
                except HiCLIPError as error:
                    self._bad[chosen] = str(error)
                else:
                    return {**item, "index": index, "skipped": skipped}
            if self.on_error != "skip":
                return {"error": self._bad[chosen]}
            skipped.append(self._bad[chosen])
        return {"error": f"no image of the {len(self.samples)} training samples decodes "
                         f"(first: {skipped[0] if skipped else '?'})"}

    def _item(self, index: int, seed: int) -> dict[str, Any]:
        sample = self.samples[index]
        with seeded_rng(seed):
            captions = _captions(sample)
            if not captions:
                raise HiCLIPError(f"sample {_id(sample)} has no caption")
            order = random.sample(range(len(captions)), len(captions))
            caption = captions[order[0]]
            caption2 = captions[order[1]] if len(order) > 1 else caption
            pool = _negatives(sample)
            if self.negatives and pool:
                chosen = (random.sample(pool, self.negatives) if len(pool) >= self.negatives
                          else [random.choice(pool) for _ in range(self.negatives)])
                valid = [True] * self.negatives
            else:
                chosen, valid = [caption] * self.negatives, [False] * self.negatives
            image = load_image(sample)
            views = [self.transform(image) for _ in range(self.views)]
        return {"images": views, "caption": caption, "caption2": caption2, "negatives": chosen,
                "negative_valid": valid, "seed": seed}


class TextDataset(Dataset):
    """Sentences keyed by ``(epoch, index)`` for text-only MLM."""

    def __init__(self, lines: Sequence[str], seed: int) -> None:
        self.lines = lines
        self.seed = seed

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        return {"caption": self.lines[index], "seed": sample_seed(self.seed, epoch, index),
                "index": index}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack views ((B, 3, S, S) each) and keep strings as lists (tokenised in the main process).
    Failed items make the batch ``{"errors": [...]}``; skipped images are listed in ``skipped``."""
    errors = [it["error"] for it in items if "error" in it]
    if errors:
        return {"errors": errors}
    out: dict[str, Any] = {
        "skipped": [message for it in items for message in it.get("skipped", ())],
        "caption": [it["caption"] for it in items],
        "seed": torch.tensor([it["seed"] for it in items], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }
    if "images" in items[0]:
        out["images"] = [torch.stack([it["images"][v] for it in items])
                         for v in range(len(items[0]["images"]))]
        out["caption2"] = [it["caption2"] for it in items]
        out["negatives"] = [n for it in items for n in it["negatives"]]
        out["negative_valid"] = torch.tensor([v for it in items for v in it["negative_valid"]],
                                             dtype=torch.bool)
    return out


@dataclass
class ValidationSet:
    """Held-out data for periodic validation: images are transformed once and kept."""

    ids: list[str]
    captions: list[list[str]]
    labels: list[dict[str, Any]]
    images: torch.Tensor | None = None  # (N, 3, S, S)
    lines: list[str] = field(default_factory=list)  # mlm mode

    def __len__(self) -> int:
        return len(self.lines) if self.images is None else len(self.ids)


@dataclass
class TrainingData:
    tokenizer: HiCLIPTokenizer
    train: Dataset
    val: ValidationSet | None
    context_length: int | None
    num_workers: int = 0
    # Data problems met so far, for the run's log, and images skipped since the last take.
    notes: list[str] = field(default_factory=list)
    skipped_images: int = 0
    _reported: set[str] = field(default_factory=set)

    def take_notes(self) -> list[str]:
        """Messages to log now (each undecodable image once), emptied."""
        notes, self.notes = self.notes, []
        return notes

    def take_skipped(self) -> int:
        """Images skipped since the last call (for ``skipped_images`` in ``metrics.jsonl``)."""
        count, self.skipped_images = self.skipped_images, 0
        return count

    def note_skips(self, messages: Sequence[str]) -> None:
        self.skipped_images += len(messages)
        for message in messages:
            if message not in self._reported:
                self._reported.add(message)
                self.notes.append(f"skipped an undecodable image, replaced by the next sample: {message}")

    def loader(self, sampler: PlanSampler) -> DataLoader:
        return DataLoader(self.train, batch_sampler=sampler, num_workers=self.num_workers,
                          collate_fn=collate, generator=torch.Generator().manual_seed(0),
                          persistent_workers=False)


def read_corpus_lines(path: str | Path) -> list[tuple[int, str]]:
    """``(line number, sentence)`` of a text file, one sentence per line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise HiCLIPError(f"text corpus {path} not found")
    lines = [(i, line.strip()) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)]
    lines = [(i, line) for i, line in lines if line]
    if not lines:
        raise HiCLIPError(f"{path}: the text corpus is empty")
    return lines


def read_corpus(path: str | Path) -> list[str]:
    """A text file, one sentence per line (blank lines skipped)."""
    return [line for _, line in read_corpus_lines(path)]


def _too_long(where: str, n_tokens: int, context: int) -> HiCLIPError:
    return over_model_limit(where, n_tokens, context, "set on_error=skip / --on-error skip to leave such "
                                                      "text out, counted")


def _check_corpus_lengths(tokenizer: HiCLIPTokenizer, lines: list[tuple[int, str]], context: int | None,
                          path: Path, on_error: str, notes: list[str]) -> list[tuple[int, str]]:
    over = dict(tokenizer.over_limit([line for _, line in lines], context))
    if not over:
        return lines
    if on_error != "skip":
        i, n = next(iter(over.items()))
        raise _too_long(f"{path}:{lines[i][0]}", n, context)
    notes.append(f"skipped {len(over)} sentence(s) over the model's limit of {context} tokens, e.g. "
                 f"{path}:{lines[next(iter(over))][0]}")
    return [line for i, line in enumerate(lines) if i not in over]


def _check_caption_lengths(tokenizer: HiCLIPTokenizer, samples: list[Any], context: int | None,
                           on_error: str, notes: list[str]) -> list[Any]:
    """Samples whose captions (and negatives) all fit the model; a caption over its limit is an
    error naming the sample's origin, or (skip) left out of its sample, counted in ``notes``."""
    owners = [(k, c) for k, s in enumerate(samples) for c in range(len(s.captions))]
    owners += [(k, -1 - j) for k, s in enumerate(samples) for j in range(len(s.negatives or []))]
    texts = [samples[k].captions[c] if c >= 0 else samples[k].negatives[-1 - c] for k, c in owners]
    over = tokenizer.over_limit(texts, context)
    if not over:
        return samples
    drop: dict[int, set[int]] = {}
    for i, n in over:
        k, c = owners[i]
        what = f"caption {c}" if c >= 0 else f"negative {-1 - c}"
        if on_error != "skip":
            raise _too_long(f"{samples[k].origin or samples[k].id}: {what}", n, context)
        drop.setdefault(k, set()).add(c)
    kept = []
    for k, sample in enumerate(samples):
        gone = drop.get(k, set())
        keep = [c for c in range(len(sample.captions)) if c not in gone]
        negatives = [x for j, x in enumerate(sample.negatives or []) if -1 - j not in gone]
        if keep:
            kept.append(replace(sample, captions=[sample.captions[c] for c in keep],
                                tokens=[sample.tokens[c] for c in keep] if sample.tokens else sample.tokens,
                                trees=[sample.trees[c] for c in keep] if sample.trees else sample.trees,
                                phrases=[sample.phrases[c] for c in keep] if sample.phrases else sample.phrases,
                                negatives=negatives))
    notes.append(f"skipped {len(over)} caption(s) over the model's limit of {context} tokens "
                 f"({len(samples) - len(kept)} sample(s) left without a caption dropped)")
    return kept


def _context_length(config: TrainConfig, checkpoint: Path | None = None) -> tuple[int | None, int | None]:
    from hiclip.factory import get_model_config

    if config.init is not None and checkpoint is not None:  # resuming a --init run: its own model
        from hiclip.checkpoint import read_config

        model = read_config(checkpoint)
    elif config.init is not None:
        from hiclip.train.init import init_target_config

        model = init_target_config(config)
    else:
        model = get_model_config(config.model, **dict(config.model_overrides))
    size = model.vision.image_size if model.vision is not None else None
    return model.text.max_tokens, size


def _tokenizer(config: TrainConfig, texts: list[str], context: int | None,
               checkpoint: Path | None) -> HiCLIPTokenizer:
    if checkpoint is not None:
        return HiCLIPTokenizer.from_file(checkpoint / "tokenizer.json", context_length=context)
    if config.init is not None:
        from hiclip.train.init import init_tokenizer

        return init_tokenizer(config)
    if config.tokenizer == "bpe":
        return HiCLIPTokenizer.train_bpe(texts, config.bpe_vocab_size, context_length=context)
    return HiCLIPTokenizer.train_word_level(texts, context_length=context)


def build_training_data(config: TrainConfig, env: DistEnv,
                        tokenizer_from: Path | None = None) -> TrainingData:
    """Open the data, learn (or reload) the tokenizer, and build train/validation sets."""
    context, image_size = _context_length(config, tokenizer_from)
    if config.mode == "mlm":
        return _mlm_data(config, context, tokenizer_from)
    check_data_spec(config.data)
    notes: list[str] = []
    samples, held = open_splits(config.data, [config.train_split, config.val_split], config, notes)
    if not samples:
        raise HiCLIPError(f"{config.data}: no samples in split {config.train_split!r}")
    if len(samples) < config.batch_size:
        raise HiCLIPError(f"batch_size {config.batch_size} is larger than the training set "
                          f"({len(samples)} samples in {config.data}, split {config.train_split!r})")
    texts = [c for s in samples for c in _captions(s)]
    if config.loss.hard_negatives:
        texts += [n for s in samples for n in _negatives(s)]
        if not any(_negatives(s) for s in samples):
            raise HiCLIPError(f"loss.hard_negatives is on but {config.data} has no 'negatives'")
    tokenizer = _tokenizer(config, texts, context, tokenizer_from)
    samples = _check_caption_lengths(tokenizer, samples, context, config.on_error, notes)
    held = _check_caption_lengths(tokenizer, list(held), context, config.on_error, notes) if held else held
    if len(samples) < config.batch_size:
        raise HiCLIPError(f"batch_size {config.batch_size} is larger than the training set left "
                          f"({len(samples)} samples after skipping over-long captions)")
    assert image_size is not None
    train = PairDataset(samples, config.seed, config.image_views,
                        image_transform(image_size, train=True, augment=config.augment),
                        config.loss.negatives_per_sample if config.loss.hard_negatives else 0,
                        on_error=config.on_error)
    val = None
    if config.val_split and held:
        val = _validation_set(held[: config.val_max_samples], image_size, config.on_error, notes)
    return TrainingData(tokenizer, train, val, context, config.num_workers, notes=notes)


def _validation_set(held: Sequence[Any], image_size: int, on_error: str,
                    notes: list[str]) -> ValidationSet | None:
    """The held-out samples with their images transformed once; undecodable ones are an error,
    or skipped (and noted) under ``on_error="skip"``."""
    transform = image_transform(image_size, train=False, augment="none")
    kept, images = [], []
    for sample in held:
        try:
            images.append(transform(load_image(sample)))
        except HiCLIPError as error:
            if on_error != "skip":
                raise
            notes.append(f"validation: skipped an undecodable image: {error}")
            continue
        kept.append(sample)
    if not kept:
        return None
    return ValidationSet(ids=[_id(s) for s in kept], captions=[_captions(s) for s in kept],
                         labels=[_labels(s) for s in kept], images=torch.stack(images))


def _mlm_data(config: TrainConfig, context: int | None, checkpoint: Path | None) -> TrainingData:
    val_lines: list[str] = []
    notes: list[str] = []
    # Lengths are checked with a tokenizer of all the text (a word-level one gives one token per
    # word whatever its vocabulary); the model's tokenizer is then learnt on the training lines.
    if config.text_corpus is not None:
        numbered = read_corpus_lines(config.text_corpus)
        probe = _tokenizer(config, [line for _, line in numbered], context, checkpoint)
        numbered = _check_corpus_lengths(probe, numbered, context, Path(config.text_corpus), config.on_error, notes)
        lines = [line for _, line in numbered]
        if len(lines) >= 50:  # hold out every 50th sentence
            val_lines = [l for i, l in enumerate(lines) if i % 50 == 49]
            lines = [l for i, l in enumerate(lines) if i % 50 != 49]
    else:
        check_data_spec(config.data)
        train_samples, held = open_splits(config.data, [config.train_split, config.val_split],
                                          config)
        if not train_samples:
            raise HiCLIPError(f"{config.data}: no samples in split {config.train_split!r}")
        probe = _tokenizer(config, [c for s in [*train_samples, *(held or [])] for c in _captions(s)],
                           context, checkpoint)
        train_samples = _check_caption_lengths(probe, train_samples, context, config.on_error, notes)
        held = _check_caption_lengths(probe, list(held or []), context, config.on_error, notes)
        lines = [c for s in train_samples for c in _captions(s)]
        val_lines = [c for s in held for c in _captions(s)]
    if len(lines) < config.batch_size:
        raise HiCLIPError(f"batch_size {config.batch_size} is larger than the corpus "
                          f"({len(lines)} sentences)")
    tokenizer = _tokenizer(config, lines, context, checkpoint)
    val = ValidationSet(ids=[], captions=[], labels=[], lines=val_lines[: config.val_max_samples]) \
        if val_lines else None
    return TrainingData(tokenizer, TextDataset(lines, config.seed), val, context, config.num_workers, notes=notes)


def collate_to_batch(raw: dict[str, Any], data: TrainingData, device: torch.device,
                     config: TrainConfig) -> TrainBatch:
    """Tokenise the strings of a collated micro-batch and move everything to ``device``.

    Raises
    ------
    HiCLIPError
        When an image of the micro-batch failed to decode (``on_error="raise"``), naming the
        file and its manifest line.
    """
    if "errors" in raw:
        raise HiCLIPError(f"{raw['errors'][0]} (set on_error=skip / --on-error skip to skip "
                          "undecodable images, or check_images=full to find them all before training)")
    data.note_skips(raw.get("skipped", ()))
    tok = data.tokenizer
    context = data.context_length
    text = tok(raw["caption"], context_length=context).to(device)
    batch = TrainBatch(text=text, seeds=raw["seed"])
    if "images" in raw:
        batch.images = [v.to(device, non_blocking=True) for v in raw["images"]]
        if config.loss.multiview and config.loss.text_view == "caption":
            batch.text2 = tok(raw["caption2"], context_length=context).to(device)
        if config.loss.hard_negatives and raw["negatives"]:
            batch.negatives = tok(raw["negatives"], context_length=context).to(device)
            batch.negative_valid = raw["negative_valid"].to(device)
    return batch
