"""Which split a command reads when `--split` is not given: training reads the training split, evaluation the
test split (else the validation split), never the training split while another one exists.

A source's splits are listed without reading its rows: split folders, a YOLO file's entries, VOC's ImageSets
lists, idx file pairs, a saved `DatasetDict`'s split names, the zoo's train/test. Sources without splits (COCO, JSONL, CSV) read whole.
"""

from __future__ import annotations

import json
from pathlib import Path

TRAIN_NAMES = ("train", "training")
EVAL_NAMES = ("test", "testing", "validation", "valid", "val", "eval")


def available_splits(kind: str, path_text: str) -> list[str]:
    """The split names a source of format `kind` offers ([] when it has none)."""
    path = Path(path_text)
    if kind == "zoo":
        return ["train", "test"]
    if kind == "idx":
        from .sources.idx import SPLIT_PREFIXES, _idx_file

        return [split for split, prefix in SPLIT_PREFIXES.items() if _idx_file(path, prefix, "images")]
    if kind == "imagefolder":
        from .sources.image_folder import SPLIT_NAMES

        folders = [p.name for p in path.iterdir() if p.is_dir()] if path.is_dir() else []
        return folders if folders and all(name.lower() in SPLIT_NAMES for name in folders) else []
    if kind == "yolo":
        from .sources.yolo import read_yolo_yaml, yolo_yaml

        config, _ = read_yolo_yaml(yolo_yaml(path) if path.is_dir() else path)
        return [name for name in ("train", "val", "test") if config.get(name)]
    if kind == "voc":
        from .sources.pascal_voc import voc_splits

        return voc_splits(path)
    if kind == "hf" and (path / "dataset_dict.json").is_file():
        return list(json.loads((path / "dataset_dict.json").read_text()).get("splits", []))
    return []


def default_split(available: list[str], purpose: str) -> str | None:
    """The split to read for `purpose` ("train" or "eval") among `available`; None when there are none."""
    if not available:
        return None
    by_name = {name.lower(): name for name in available}
    for name in EVAL_NAMES + TRAIN_NAMES if purpose == "eval" else TRAIN_NAMES:
        if name in by_name:
            return by_name[name]
    return available[0]


def split_note(split: str | None, given: bool, available: list[str], purpose: str, flag: str) -> str:
    """How a command names what it read: the split, and why that one when the user did not pick it."""
    if split is None:
        return "no splits"
    if given:
        return f"split {split}"
    return (f"split {split} (the default for {'evaluation' if purpose == 'eval' else 'training'} among "
            f"{', '.join(available)}; {flag} picks another)")
