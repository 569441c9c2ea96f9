"""Hugging Face datasets: a `save_to_disk` folder or a Hub dataset id (with --split)."""

from __future__ import annotations

from pathlib import Path

from ..columns import (
    CAPTION_COLUMN_NAMES,
    IMAGE_COLUMN_NAMES,
    LABEL_COLUMN_NAMES,
    RATIONALE_COLUMN_NAMES,
    normalise_captions,
    optional_column,
    pick_column,
)
from ..images import load_image
from ..records import Box, DataError, Record


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

    from ..streams import stream_files

    path, files = Path(reference), stream_files(reference, split)
    if files is not None and files[0] == "parquet":
        loaded = datasets.load_dataset("parquet", data_files={"train": files[1]}, split="train")
    elif path.exists():
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


OBJECTS_COLUMN_NAMES = ("objects", "annotations", "annotation", "boxes", "detections")
OBJECT_CATEGORY_FIELDS = ("category", "categories", "label", "labels", "class", "category_id", "class_id")


def _object_fields(feature) -> dict:
    """The per-object features of an objects column: {field: feature} (dict-of-lists or list-of-dicts)."""
    inner = getattr(feature, "feature", feature)
    if isinstance(inner, dict):
        return {key: getattr(value, "feature", value) for key, value in inner.items()}
    return {}


def _objects_as_lists(value, where: str) -> dict[str, list]:
    if isinstance(value, dict):
        return value
    if isinstance(value, list):  # list of per-object dicts
        return {key: [item.get(key) for item in value] for key in (value[0] if value else {})}
    raise DataError(f"{where}: the objects cell should be a dict of lists or a list of dicts, got {type(value).__name__}")


def guess_bbox_convention(boxes: list[tuple[list[float], int, int]]) -> tuple[str, bool, str]:
    """(layout, normalised, how it was decided) for boxes given as (values, image width, image height).

    Normalised when every value is within 0..1. Layout: `xyxy` or `xywh`, whichever keeps every box inside
    its image (with 1% slack); when both do, `xywh` (COCO's and most Hub detection sets' convention)."""
    values = [v for box, _, _ in boxes for v in box]
    normalised = bool(values) and max(values) <= 1.0 + 1e-6 and min(values) >= -1e-6
    fits = {"xyxy": True, "xywh": True}
    for (a, b, c, d), width, height in boxes:
        width, height = (1.0, 1.0) if normalised else (width * 1.01, height * 1.01)
        if c < a or d < b or c > width or d > height:
            fits["xyxy"] = False
        if a + c > width or b + d > height:
            fits["xywh"] = False
    if fits["xyxy"] and not fits["xywh"]:
        return "xyxy", normalised, "only xyxy keeps every box inside its image"
    if fits["xywh"] and not fits["xyxy"]:
        return "xywh", normalised, "only xywh keeps every box inside its image"
    if fits["xywh"]:
        return "xywh", normalised, "both xyxy and xywh fit; assumed xywh (the COCO convention)"
    raise DataError("the boxes fit neither xyxy nor xywh inside their images; pass --bbox-format "
                    "xyxy|xywh|cxcywh and --bbox-normalised / --no-bbox-normalised")


def load_box_dataset(reference: str, split: str | None, image_column: str | None, objects_column: str | None,
                     bbox_format: str = "auto", bbox_normalised: bool | None = None, skip_bad_rows: bool = False,
                     log=print) -> tuple[list[Record], list[str] | None]:
    """Detection records from a dataset with an objects column (bbox + category per object), and the class
    names of a `ClassLabel` category (None for plain values). Layout and scale of the boxes are guessed
    (`guess_bbox_convention`, logged) unless given."""
    import datasets

    from ..boxes import check_size, to_xyxy

    dataset = open_hf_dataset(reference, split)
    columns = list(dataset.column_names)
    image_key = pick_column(columns, IMAGE_COLUMN_NAMES, "image", "--image-column", image_column, reference,
                            typed=image_typed_columns(dataset))
    objects_key = pick_column(columns, OBJECTS_COLUMN_NAMES, "objects (bbox + category)", "--objects-column",
                              objects_column, reference)
    fields = _object_fields(dataset.features[objects_key])
    category_key = next((name for name in OBJECT_CATEGORY_FIELDS if name in fields), None)
    if "bbox" not in fields or category_key is None:
        raise DataError(f"{reference}: column {objects_key!r} needs 'bbox' and a category field "
                        f"({', '.join(OBJECT_CATEGORY_FIELDS)}); it has {', '.join(fields) or 'no fields'}")
    feature = fields[category_key]
    class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    text_columns = [objects_key] + [c for c in ("width", "height") if c in columns]
    table = dataset.select_columns(text_columns).to_dict()  # no image decoding here
    rows = []
    for index, cell in enumerate(table[objects_key]):
        where = f"{reference} row {index}"
        objects = _objects_as_lists(cell, where)
        image = DatasetRowImage(dataset, index, image_key)
        if "width" in table and "height" in table:
            size = (int(table["width"][index]), int(table["height"][index]))
        else:
            size = image.load_image().size
        rows.append((where, image, size, list(objects.get("bbox") or []), list(objects.get(category_key) or [])))
    if bbox_format == "auto" or bbox_normalised is None:
        guessed = guess_bbox_convention([(box, w, h) for _, _, (w, h), boxes, _ in rows for box in boxes
                                         if check_size(box, "xywh") is None])
        layout = guessed[0] if bbox_format == "auto" else bbox_format
        normalised = guessed[1] if bbox_normalised is None else bbox_normalised
        log(f"{reference}: boxes read as {layout}, {'normalised' if normalised else 'pixels'} ({guessed[2]}; "
            f"--bbox-format / --bbox-normalised override)")
    else:
        layout, normalised = bbox_format, bbox_normalised
    records, skipped = [], 0
    for where, image, (width, height), boxes, categories in rows:
        record = Record(image=image, image_id=where.rsplit(" ", 1)[-1], width=width, height=height, source_row=where)
        for box, category in zip(boxes, categories):
            problem = check_size(box, layout)
            if problem:
                if not skip_bad_rows:
                    raise DataError(f"{where}: {problem}; fix the row, or pass --skip-bad-rows to count and skip "
                                    f"such boxes")
                skipped += 1
                continue
            record.boxes.append(Box(category, to_xyxy(box, layout, normalised, width, height)))
        records.append(record)
    if skipped:
        log(f"{reference}: skipped {skipped} bad boxes (--skip-bad-rows)")
    return records, class_names
