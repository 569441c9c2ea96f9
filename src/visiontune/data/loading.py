"""From a data argument (path or Hub id) to a clean, shuffled list of records."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from .records import DataError, Record
from .sources.coco_captions import load_coco_captions
from .sources.hf_datasets import is_save_to_disk_folder, load_caption_dataset
from .sources.table import load_caption_table

SOURCE_FORMATS = ("auto", "coco", "jsonl", "table", "hf")


@dataclass
class DataSpec:
    """Where the data is and how to read it; every field has a CLI flag of the same name."""

    path: str
    format: str = "auto"
    split: str | None = None
    image_column: str | None = None
    caption_column: str | None = None
    images_dir: str | None = None
    max_samples: int | None = None
    seed: int = 0
    shuffle: bool = False
    skip_bad_rows: bool = False


def detect_format(path_text: str) -> str:
    path = Path(path_text)
    if path.is_dir():
        if is_save_to_disk_folder(path):
            return "hf"
        raise DataError(f"{path}: a folder, but not a datasets.save_to_disk folder (no dataset_info.json / "
                        f"dataset_dict.json); give a COCO JSON, JSONL/CSV file or a saved dataset")
    if path.is_file():
        if path.suffix.lower() == ".json":
            with path.open() as handle:
                head = handle.read(1)
            if head == "{":
                return "coco"
        return "table"
    if path.suffix or path_text.startswith((".", "/")):
        raise DataError(f"{path_text}: no such file or folder")
    return "hf"  # a Hub dataset id such as "nlphuji/flickr30k"


def _load_caption_records(spec: DataSpec) -> list[Record]:
    kind = detect_format(spec.path) if spec.format == "auto" else spec.format
    images_dir = Path(spec.images_dir) if spec.images_dir else None
    if kind == "coco":
        return load_coco_captions(Path(spec.path), images_dir)
    if kind in ("jsonl", "table"):
        return load_caption_table(Path(spec.path), spec.image_column, spec.caption_column, images_dir)
    if kind == "hf":
        return load_caption_dataset(spec.path, spec.split, spec.image_column, spec.caption_column)
    raise DataError(f"unknown data format {spec.format!r}; choose one of {', '.join(SOURCE_FORMATS)}")


def clean_caption_records(records: list[Record], skip_bad_rows: bool) -> tuple[list[Record], int]:
    """Strip captions, drop empty ones; an image left with no caption is an error or a counted skip."""
    kept, skipped = [], 0
    for record in records:
        record.captions = [c.strip() for c in record.captions if isinstance(c, str) and c.strip()]
        if record.captions:
            kept.append(record)
        elif skip_bad_rows:
            skipped += 1
        else:
            raise DataError(f"{record.source_row}: empty or missing caption; fix the row, or pass --skip-bad-rows "
                            f"to count and skip such rows")
    return kept, skipped


def load_records(spec: DataSpec, task: str = "caption", log=print) -> list[Record]:
    if task != "caption":
        raise DataError(f"task {task!r} has no data loader yet; available: caption")
    records = _load_caption_records(spec)
    records, skipped = clean_caption_records(records, spec.skip_bad_rows)
    if skipped:
        log(f"{spec.path}: skipped {skipped} rows with no usable caption (--skip-bad-rows)")
    if not records:
        raise DataError(f"{spec.path}: no usable examples")
    if spec.shuffle:
        random.Random(spec.seed).shuffle(records)
    if spec.max_samples:
        records = records[: spec.max_samples]
    return records


def fingerprint(records: list[Record]) -> str:
    """A short hash of what the data says (image references and captions), to tell runs' data apart."""
    import hashlib

    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps([record.image_key(), record.captions], default=str).encode())
    return digest.hexdigest()[:16]
