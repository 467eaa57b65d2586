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
    "Phrase",
    "ReadOptions",
    "Sample",
    "TextLimits",
    "detect_format",
    "load_mask",
    "open_dataset",
]
