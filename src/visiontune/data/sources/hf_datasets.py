"""Hugging Face datasets: a `save_to_disk` folder or a Hub dataset id (with --split)."""

from __future__ import annotations

from pathlib import Path

from ..columns import (CAPTION_COLUMN_NAMES, IMAGE_COLUMN_NAMES, LABEL_COLUMN_NAMES, RATIONALE_COLUMN_NAMES,
                       normalise_captions, optional_column, pick_column)
from ..images import load_image
from ..records import DataError, Record


class DatasetRowImage:
    """A lazy reference to the image in one row; decoding waits until the image is needed."""

    def __init__(self, dataset, index: int, column: str):
        self.dataset, self.index, self.column = dataset, index, column

    def load_image(self):
        return load_image(self.dataset[self.index][self.column])

    def __repr__(self) -> str:
        return f"row {self.index} column {self.column!r}"


def is_save_to_disk_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
                              or (path / "state.json").exists())


def open_hf_dataset(reference: str, split: str | None):
    import datasets

    path = Path(reference)
    if path.exists():
        loaded = datasets.load_from_disk(str(path))
    else:
        loaded = datasets.load_dataset(reference, split=split)
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        chosen = split or ("train" if "train" in splits else splits[0])
        if chosen not in loaded:
            raise DataError(f"{reference}: no split {chosen!r}; splits found: {', '.join(splits)} (use --split)")
        loaded = loaded[chosen]
    return loaded


def image_typed_columns(dataset) -> list[str]:
    import datasets

    return [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]


def load_caption_dataset(reference: str, split: str | None, image_column: str | None,
                         caption_column: str | None) -> list[Record]:
    dataset = open_hf_dataset(reference, split)
    columns = list(dataset.column_names)
    image_key = pick_column(columns, IMAGE_COLUMN_NAMES, "image", "--image-column", image_column, reference,
                            typed=image_typed_columns(dataset))
    caption_key = pick_column(columns, CAPTION_COLUMN_NAMES, "caption", "--caption-column", caption_column, reference)
    captions = dataset.select_columns([caption_key])[caption_key]  # text only: images stay on disk until needed
    return [Record(image=DatasetRowImage(dataset, index, image_key), image_id=str(index),
                   captions=normalise_captions(value, f"{reference} row {index}"),
                   source_row=f"{reference} row {index}")
            for index, value in enumerate(captions)]


def load_label_dataset(reference: str, split: str | None, image_column: str | None, label_column: str | None,
                       rationale_column: str | None) -> tuple[list[Record], list[str] | None]:
    """Records with raw labels, and the class names of a `ClassLabel` label column (None for plain values)."""
    import datasets

    dataset = open_hf_dataset(reference, split)
    columns = list(dataset.column_names)
    image_key = pick_column(columns, IMAGE_COLUMN_NAMES, "image", "--image-column", image_column, reference,
                            typed=image_typed_columns(dataset))
    class_label_columns = [n for n, f in dataset.features.items() if isinstance(f, datasets.ClassLabel)]
    label_key = pick_column([c for c in columns if c != image_key], LABEL_COLUMN_NAMES, "label", "--label-column",
                            label_column, reference, typed=class_label_columns)
    rationale_key = optional_column(columns, RATIONALE_COLUMN_NAMES, "--rationale-column", rationale_column,
                                    reference)
    feature = dataset.features[label_key]
    class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    text_columns = [label_key] + ([rationale_key] if rationale_key else [])
    table = dataset.select_columns(text_columns).to_dict()  # no image decoding here
    rationales = table.get(rationale_key) if rationale_key else None
    records = [Record(image=DatasetRowImage(dataset, index, image_key), image_id=str(index), label=label,
                      rationale=rationales[index] if rationales else None, source_row=f"{reference} row {index}")
               for index, label in enumerate(table[label_key])]
    return records, class_names
