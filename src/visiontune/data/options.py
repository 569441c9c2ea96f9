"""How a data source is read: the options every command that reads data shares (train, eval, the detector).

Each is a CLI flag of the same name (`image_column` <-> `--image-column`) and a YAML key; commands inherit
this dataclass, so an option and its default are defined once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCE_FORMATS = ("auto", "coco", "jsonl", "table", "hf", "imagefolder", "yolo", "voc", "idx", "zoo", "parquet",
                  "webdataset")
BBOX_FORMAT_HELP = "detect: box layout of a dataset's objects: auto|xyxy|xywh|cxcywh"


@dataclass(kw_only=True)
class DataOptions:
    format: str = field(default="auto", metadata={"help": "|".join(SOURCE_FORMATS)})
    split: str | None = field(default=None, metadata={"help": "split of a hub / saved dataset, YOLO or VOC folder, zoo set"})
    image_column: str | None = field(default=None, metadata={"help": "dataset/table column with the image"})
    caption_column: str | None = field(default=None, metadata={"help": "caption: column with the caption(s)"})
    label_column: str | None = field(default=None, metadata={"help": "classify: column with the class (name or index)"})
    rationale_column: str | None = field(default=None, metadata={"help": "classify: column with a rationale (--reasoning)"})
    objects_column: str | None = field(default=None, metadata={"help": "detect: dataset column of objects (bbox + category)"})
    bbox_format: str = field(default="auto", metadata={"help": BBOX_FORMAT_HELP})
    bbox_normalised: bool | None = field(default=None, metadata={"help": "detect: dataset boxes are 0..1 (default: guessed)"})
    class_names: list[str] | None = field(default=None, metadata={
        "help": "the classes, in index order (classify: integer labels index them; detect: train on these only)"})
    streaming: bool = field(default=False, metadata={
        "help": "caption/chat: read a Hub dataset or parquet files as a stream (webdataset .tar shards always are)"})
    images_dir: str | None = field(default=None, metadata={"help": "folder that relative image paths are under"})
    max_samples: int | None = field(default=None, metadata={"help": "use the first N examples"})
    shuffle: bool = field(default=False, metadata={"help": "shuffle before --max-samples (deterministic with --seed)"})
    seed: int = field(default=0, metadata={"help": "random seed (shuffling, initialisation, sampling)"})
    skip_bad_rows: bool = field(default=False, metadata={"help": "count and skip rows with no usable target"})
    skip_bad_images: bool = field(default=False, metadata={"help": "count and skip missing/corrupt images"})
