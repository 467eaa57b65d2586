"""Datasets: the synthetic shapes generator, readers for every format, image transforms.

``open_dataset(spec)`` reads a manifest folder/file, CSV/TSV, COCO root, WebDataset shards or an
image folder into ``Sample`` records; ``ImageTextDataset`` serves them to torch.
"""
from hiclip.data.masks import load_mask
from hiclip.data.open import CsvOptions, detect_format, open_dataset
from hiclip.data.records import ReadOptions
from hiclip.data.sample import Dataset, Phrase, Sample
from hiclip.data.text_checks import TextLimits

__all__ = [
    "CsvOptions",
    "Dataset",
    "ImageTextDataset",
    "Phrase",
    "ReadOptions",
    "Sample",
    "TextLimits",
    "caption_index",
    "collate_image_text",
    "detect_format",
    "load_mask",
    "open_dataset",
]


def __getattr__(name: str):
    # torch is imported only by code that asks for the torch dataset.
    if name in ("ImageTextDataset", "caption_index", "collate_image_text"):
        from hiclip.data import torch_dataset

        return getattr(torch_dataset, name)
    raise AttributeError(f"module 'hiclip.data' has no attribute {name!r}")
