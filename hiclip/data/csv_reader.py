"""CSV/TSV image-caption files (open_clip convention: ``filepath`` and ``title`` columns).

One row is one image-caption pair. Image paths are relative to the image root
(``ReadOptions.image_root``, else ``CsvOptions.image_root``, else the CSV file's folder) and
must stay inside it. Errors name ``file:line``, the line on which the row ends.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from hiclip.data.records import DataRoot, RawRecord, ReadOptions, build_sample
from hiclip.data.sample import Sample
from hiclip.errors import HiCLIPError, SkipReport


@dataclass
class CsvOptions:
    """Column names and separator of a CSV/TSV caption file (open_clip's defaults).

    ``separator`` None means tab for ``.tsv`` files and comma otherwise. ``image_root`` is the
    folder relative image paths start from (default: the CSV file's folder).
    """

    image_column: str = "filepath"
    caption_column: str = "title"
    separator: str | None = None
    id_column: str | None = None
    split_column: str | None = None
    tree_column: str | None = None
    image_root: str | None = None


def read_csv(path: str | Path, columns: CsvOptions, split: str | None = None,
             options: ReadOptions | None = None, report: SkipReport | None = None) -> list[Sample]:
    """Read a CSV/TSV caption file into samples (see the module docstring)."""
    path = Path(path)
    options = options or ReadOptions()
    report = report if report is not None else SkipReport()
    if not path.is_file():
        raise HiCLIPError(f"{path}: CSV file not found")
    separator = columns.separator or ("\t" if path.suffix.lower() == ".tsv" else ",")
    # surrogateescape keeps undecodable bytes visible to the caption check instead of failing the file.
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    try:
        header = next(reader)
    except StopIteration:
        raise HiCLIPError(f"{path}: empty CSV file (no header row)") from None
    index = {name.strip(): k for k, name in enumerate(header)}
    wanted = [c for c in (columns.image_column, columns.caption_column, columns.id_column,
                          columns.split_column, columns.tree_column) if c]
    missing = [c for c in wanted if c not in index]
    if missing:
        have = ", ".join(repr(h) for h in index) or "none"
        raise HiCLIPError(f"{path}:1: missing column {missing[0]!r} (columns: {have}; separator {separator!r}; "
                          "choose columns with the CSV options)")
    data_root = DataRoot.of(path.parent, options.image_root or columns.image_root)
    root = Path(options.image_root or columns.image_root or path.parent)
    samples: list[Sample] = []
    seen: set[str] = set()
    for row_number, row in enumerate(reader, start=1):
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        origin = f"{path}:{line}"
        if len(row) != len(header):
            report.handle(HiCLIPError(f"{origin}: row has {len(row)} fields, the header has {len(header)}"),
                          "malformed row")
            continue
        value = {name: row[k] for name, k in index.items()}
        row_split = value[columns.split_column].strip() if columns.split_column else None
        if split is not None and row_split != split:
            continue
        sid = value[columns.id_column].strip() if columns.id_column else f"{path.stem}-{row_number}"
        if sid in seen:
            report.handle(HiCLIPError(f"{origin}: duplicate id {sid!r}"), "duplicate id")
            continue
        seen.add(sid)
        image = value[columns.image_column].strip()
        if not image:
            report.handle(HiCLIPError(f"{origin}: empty image path"), "missing image")
            continue
        tree = value[columns.tree_column].strip() or None if columns.tree_column else None
        rec = RawRecord(
            id=sid, image=str(root / image), image_display=image, captions=[value[columns.caption_column]],
            origin=origin, trees=[tree] if columns.tree_column else None, split=row_split,
            root=data_root,
        )
        sample = build_sample(rec, options, report)
        if sample is not None:
            samples.append(sample)
    return samples
