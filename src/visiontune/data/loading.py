"""From a data argument (path or Hub id) to a clean, shuffled list of records."""

from __future__ import annotations

import difflib
import json
import random
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path

from .boxes import clip_to_image, describe_cleanup
from .columns import CAPTION_COLUMN_NAMES, IMAGE_COLUMN_NAMES, normalise_captions, pick_column
from .labels import check_class_names, discover_classes, resolve_label, resolve_labels
from .options import SOURCE_FORMATS, DataOptions
from .records import Box, DataError, Record
from .sources.coco_captions import load_coco_captions
from .sources.coco_instances import load_coco_instances
from .sources.hf_datasets import is_save_to_disk_folder, load_box_dataset, load_caption_dataset, load_label_dataset
from .sources.idx import is_idx_folder, load_idx_folder
from .sources.image_folder import is_image_folder, load_image_folder
from .sources.pascal_voc import is_pascal_voc_folder, load_pascal_voc
from .sources.table import load_caption_table, load_label_table
from .sources.yolo import load_yolo, yolo_yaml
from .sources.zoo_datasets import ZOO_DATA_PREFIX, load_zoo_dataset  # --data zoo:fashion-mnist
from .streams import stream_files, stream_records
from .splits import available_splits, default_split, split_note


@dataclass
class DataSpec(DataOptions):
    """Where the data is (`path`) and how to read it (`DataOptions`)."""

    path: str


def data_spec(path: str, options, **changes) -> DataSpec:
    """The DataSpec of `path` read with the data options of any settings object (a TrainConfig, EvalConfig,
    detector settings: whatever shares `DataOptions`' fields), `changes` winning."""
    values = {f.name: getattr(options, f.name) for f in fields(DataOptions) if hasattr(options, f.name)}
    return DataSpec(path=path, **{**values, **changes})


def resolve_split(spec: DataSpec, purpose: str, flag: str = "--split") -> tuple[DataSpec, str]:
    """`spec` with its split chosen for `purpose` ("train" / "eval") when none was given (data/splits.py), and
    how to say what is read."""
    if spec.split is not None:
        return spec, split_note(spec.split, True, [], purpose, flag)
    kind = detect_format(spec.path) if spec.format == "auto" else spec.format
    available = available_splits(kind, spec.path)
    chosen = default_split(available, purpose)
    return replace(spec, split=chosen), split_note(chosen, False, available, purpose, flag)


def detect_format(path_text: str) -> str:
    if path_text.startswith(ZOO_DATA_PREFIX):
        return "zoo"
    path = Path(path_text)
    if path.is_dir():
        if is_save_to_disk_folder(path):
            return "hf"
        if yolo_yaml(path):
            return "yolo"
        if is_pascal_voc_folder(path):
            return "voc"
        if is_idx_folder(path):
            return "idx"
        if streamed := stream_files(path_text):
            return streamed[0]
        if is_image_folder(path):
            return "imagefolder"
        raise DataError(f"{path}: a folder, but neither a datasets.save_to_disk folder (dataset_info.json / "
                        f"dataset_dict.json) nor an image folder (root/<class>/<images>); give a COCO JSON, "
                        f"JSONL/CSV file, a saved dataset, a YOLO folder (data.yaml), a Pascal VOC folder (*.xml) or a "
                        f"class-per-folder tree")
    if streamed := stream_files(path_text):  # a .tar / .parquet file, or a glob of them
        return streamed[0]
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        if path.suffix.lower() == ".json":
            with path.open() as handle:
                head = handle.read(1)
            if head == "{":
                return "coco"
        return "table"
    if path.suffix or path_text.startswith((".", "/")):
        raise DataError(f"{path_text}: no such file or folder")
    return "hf"  # a Hub dataset id such as "nlphuji/flickr30k"


def read_source(spec: DataSpec, readers: dict, wrong_kind: str):
    """Run the reader for the source's format (`--format`, or detected): `readers` {format: spec -> records};
    "jsonl" and "table" are one format. A format with no reader is an error: `wrong_kind`, then what it got."""
    kind = detect_format(spec.path) if spec.format == "auto" else spec.format
    kind = "table" if kind == "jsonl" else kind
    if kind not in SOURCE_FORMATS:
        raise DataError(f"unknown data format {spec.format!r}; choose one of {', '.join(SOURCE_FORMATS)}")
    if kind not in readers:
        raise DataError(f"{spec.path}: {wrong_kind}; got a {kind} source")
    return readers[kind](spec)


def _images_dir(spec: DataSpec) -> Path | None:
    return Path(spec.images_dir) if spec.images_dir else None


def _load_caption_records(spec: DataSpec) -> list[Record]:
    def dataset(s: DataSpec):
        if s.streaming:
            return stream_records(s.path, s.split, partial(_caption_stream_reader, s), s.skip_bad_rows)
        return load_caption_dataset(s.path, s.split, s.image_column, s.caption_column)

    return read_source(spec, {
        "coco": lambda s: load_coco_captions(Path(s.path), _images_dir(s)),
        "table": lambda s: load_caption_table(Path(s.path), s.image_column, s.caption_column, _images_dir(s)),
        "hf": dataset, "parquet": dataset,
        "webdataset": lambda s: dataset(replace(s, streaming=True)),
    }, "captions come as a COCO captions JSON, a JSONL/CSV with image + caption, a dataset, parquet files or "
       "webdataset shards (a source with class labels is for --task classify; for captions from zoo images, write "
       "canvases: visiontune zoo canvases --help)")


def _caption_stream_reader(spec: DataSpec, first: dict, reference: str):
    """How rows of a streamed caption set are read: its image and caption columns, picked from the first row."""
    columns = list(first)
    typed = [name for name, value in first.items() if isinstance(value, dict) and {"bytes", "path"} & set(value)]
    image_key = pick_column(columns, IMAGE_COLUMN_NAMES, "image", "--image-column", spec.image_column, reference,
                            typed=typed)
    caption_key = pick_column(columns, CAPTION_COLUMN_NAMES, "caption", "--caption-column", spec.caption_column,
                              reference)
    return partial(_caption_row, image_key, caption_key, _images_dir(spec))


def _caption_row(image_key: str, caption_key: str, base_dir: Path | None, row: dict, where: str, number: int) -> Record:
    captions = [c.strip() for c in normalise_captions(row.get(caption_key), where) if isinstance(c, str) and c.strip()]
    if not captions:
        raise DataError(f"{where}: empty or missing caption; fix the row, or pass --skip-bad-rows to count and skip "
                        f"such rows")
    if row.get(image_key) in (None, ""):
        raise DataError(f"{where}: no image in column {image_key!r}; fix the row, or pass --skip-bad-rows")
    return Record(image=row[image_key], image_id=str(row.get("id", where)), captions=captions, base_dir=base_dir,
                  source_row=where)


def _whole_set(spec: DataSpec, task: str) -> None:
    if spec.streaming:
        raise DataError(f"{spec.path}: --streaming reads caption and chat sets; {task} reads the whole set (its "
                        f"classes, balancing): drop --streaming (parquet files and Hub datasets load without it)")


def _load_label_source(spec: DataSpec) -> tuple[list[Record], list[str] | None]:
    """Records with raw labels, plus the class list the source itself declares (folder names, ClassLabel)."""
    _whole_set(spec, "classification")
    return read_source(spec, {
        "imagefolder": lambda s: load_image_folder(Path(s.path), s.split),
        "idx": lambda s: load_idx_folder(Path(s.path), s.split),
        "zoo": lambda s: load_zoo_dataset(s.path, s.split, s.images_dir),
        "table": lambda s: (load_label_table(Path(s.path), s.image_column, s.label_column, s.rationale_column,
                                             _images_dir(s)), None),
        "hf": lambda s: load_label_dataset(s.path, s.split, s.image_column, s.label_column, s.rationale_column),
        "parquet": lambda s: load_label_dataset(s.path, s.split, s.image_column, s.label_column, s.rationale_column),
    }, "classification data is an image folder, a JSONL/CSV with image + label, a dataset or parquet files (a COCO file has "
       "captions or boxes, not one label per image)")


def load_labelled_records(spec: DataSpec, classes: list[str] | None = None, log=print) -> tuple[list[Record], list[str]]:
    """Classification records (label = class name) and the class list.

    `classes` is the list a trained model knows (evaluation); without it the list comes from
    --class-names, the source, or the data (see `data/labels.py`).
    """
    records, source_classes = _load_label_source(spec)
    # Integer labels index --class-names, else the source's own list, else the model's classes.
    names = check_class_names(spec.class_names or source_classes or classes or discover_classes(r.label for r in records), spec.path)
    indexed = bool(spec.class_names or source_classes or classes)
    records, skipped = resolve_labels(records, names, indexed, spec.skip_bad_rows, spec.path)
    if classes is not None:
        records, more = resolve_labels(records, list(classes), False, spec.skip_bad_rows, spec.path)
        skipped += more
        names = list(classes)
    for record in records:
        record.rationale = record.rationale.strip() if isinstance(record.rationale, str) else None
    if skipped:
        log(f"{spec.path}: skipped {skipped} rows whose label is missing or not a class (--skip-bad-rows)")
    return finish_records(records, spec), names


def _load_box_source(spec: DataSpec, log) -> tuple[list[Record], list[str] | None, dict[str, int]]:
    """Records whose boxes carry raw labels, the source's class list, and its category ids."""
    def yolo(s: DataSpec):
        records, classes = load_yolo(Path(s.path), s.split, s.skip_bad_rows, log)
        return records, classes, {name: index for index, name in enumerate(classes)}

    def dataset(s: DataSpec):
        return (*load_box_dataset(s.path, s.split, s.image_column, s.objects_column, s.bbox_format,
                                  s.bbox_normalised, s.skip_bad_rows, log), {})

    _whole_set(spec, "detection")

    return read_source(spec, {
        "coco": lambda s: load_coco_instances(Path(s.path), _images_dir(s), s.skip_bad_rows, log),
        "yolo": yolo,
        "voc": lambda s: (load_pascal_voc(Path(s.path), s.split, _images_dir(s), s.skip_bad_rows, log), None, {}),
        "hf": dataset, "parquet": dataset,
    }, "detection data is a COCO instances JSON, a YOLO folder (data.yaml), a Pascal VOC folder (*.xml), or a "
       "dataset or parquet files with an objects column")


def load_box_records(spec: DataSpec, classes: list[str] | None = None,
                     log=print) -> tuple[list[Record], list[str], dict[str, int]]:
    """Detection records (box labels = class names, boxes clipped to the image), the class list and the
    category id of each class (the source's ids, for COCO results files).

    The classes are `classes` (a trained model's), else --class-names, else the source's own list, else the
    distinct labels. Boxes of classes outside that list are dropped and counted: `--class-names person car`
    trains on two classes of a larger dataset."""
    records, source_classes, category_ids = _load_box_source(spec, log)
    names = source_classes or spec.class_names or discover_classes(b.label for r in records for b in r.boxes)
    skipped = 0
    for record in records:
        kept = []
        for box in record.boxes:
            name = resolve_label(box.label, names, indexed=True)
            if name is None and not spec.skip_bad_rows:
                raise DataError(f"{record.source_row}: box label {box.label!r} is not a known class ({', '.join(names[:12])}"
                                f"{'…' if len(names) > 12 else ''}); fix the row, name the classes with --class-names, "
                                f"or pass --skip-bad-rows to count and skip such boxes")
            if name is None:
                skipped += 1
            else:
                kept.append(Box(name, box.xyxy, box.crowd))
        record.boxes = kept
    message = describe_cleanup(clip_to_image(records), spec.path)
    if message:
        log(message)
    chosen = check_class_names(list(classes or spec.class_names or names), spec.path, minimum=1)
    if spec.class_names and not classes:
        _check_asked_classes(chosen, names, spec.path)
    outside = 0
    for record in records:
        outside += sum(box.label not in chosen for box in record.boxes)
        record.boxes = [box for box in record.boxes if box.label in chosen]
    if skipped:
        log(f"{spec.path}: skipped {skipped} boxes whose label is not a class (--skip-bad-rows)")
    if outside:
        log(f"{spec.path}: {outside} boxes of classes outside the {len(chosen)} used were left out")
    ids = {name: category_ids.get(name, index) for index, name in enumerate(chosen)}
    return finish_records(records, spec), chosen, ids


def _check_asked_classes(asked: list[str], known: list[str], where: str) -> None:
    """--class-names picks classes of the data: a name the data does not have would train on no boxes."""
    missing = [name for name in asked if name not in known]
    if missing:
        near = {name: difflib.get_close_matches(name, known, 1, cutoff=0.3) for name in missing}
        hints = ", ".join(f"{name!r}" + (f" (did you mean {near[name][0]!r}?)" if near[name] else "") for name in missing)
        raise DataError(f"{where}: --class-names {hints} not a class of the data; its classes: "
                        f"{', '.join(known[:30])}{'…' if len(known) > 30 else ''}")


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


def load_caption_records(spec: DataSpec, log=print) -> list[Record]:
    """Caption records (at least one non-empty caption each)."""
    records = _load_caption_records(spec)
    if hasattr(records, "rows_of_pass"):  # a stream: rows are cleaned as they are read
        return finish_records(records, spec)
    records, skipped = clean_caption_records(records, spec.skip_bad_rows)
    if skipped:
        log(f"{spec.path}: skipped {skipped} rows with no usable caption (--skip-bad-rows)")
    return finish_records(records, spec)


def finish_records(records: list[Record], spec: DataSpec) -> list[Record]:
    """What every loader does last: refuse an empty set, then --shuffle and --max-samples."""
    if not records:
        raise DataError(f"{spec.path}: no usable examples")
    if spec.shuffle and hasattr(records, "shuffled"):  # a lazy sequence (data/lazy_records.py)
        records = records.shuffled(spec.seed)
    elif spec.shuffle:
        random.Random(spec.seed).shuffle(records)
    if spec.max_samples:
        records = records.take(spec.max_samples) if hasattr(records, "take") else records[: spec.max_samples]
    return records


def fingerprint(records: list[Record]) -> str:
    """A short hash of what the data says (image references, captions, labels), to tell runs' data apart."""
    import hashlib

    digest = hashlib.sha256()
    if hasattr(records, "fingerprint_text"):  # a lazy sequence: named without reading every row
        digest.update(records.fingerprint_text().encode())
        return digest.hexdigest()[:16]
    for record in records:
        digest.update(json.dumps([record.image_key(), record.captions, record.label, record.rationale,
                                  [(box.label, box.xyxy, box.crowd) for box in record.boxes]], default=str).encode())
    return digest.hexdigest()[:16]
