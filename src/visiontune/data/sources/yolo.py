"""YOLO (Ultralytics) detection folders: `data.yaml` + `images/…` + `labels/…/*.txt`.

`data.yaml` names the classes (`names`: a list, or {index: name}) and each split's images (`train`,
`val`, `test`: a folder, a .txt list of image paths, or a list of those), relative to `path` or to the
yaml's folder. A yaml with no split entries (`nc` and `names` only, as `supervision`'s `as_yolo` writes it)
is one unsplit set: the `images/` folder beside it. An image's label file is its path with the last `/images/` replaced by `/labels/` and
the suffix by `.txt`; a missing or empty label file means an image without objects. Each line is
`class cx cy w h`, normalised to 0..1; a segmentation polygon line (`class x1 y1 x2 y2 …`) becomes the
box around its points. A line with another count of numbers, or a class index outside `names`, is an
error naming the file and line, or a counted skip (--skip-bad-rows).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from ..boxes import check_size, to_xyxy
from ..images import IMAGE_SUFFIXES, image_size
from ..records import Box, DataError, Record

YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml")


def yolo_yaml(root: Path) -> Path | None:
    return next((root / name for name in YAML_NAMES if (root / name).is_file()), None)


def read_yolo_yaml(path: Path) -> tuple[dict, list[str]]:
    config = yaml.safe_load(path.read_text()) or {}
    names = config.get("names")
    if isinstance(names, dict):
        names = [names[key] for key in sorted(names, key=int)]
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: needs 'names', the class names (a list, or a mapping index: name)")
    return config, [str(name).strip() for name in names]


def _split_images(config: dict, yaml_path: Path, split: str | None) -> list[Path]:
    present = [key for key in ("train", "val", "test") if config.get(key)]
    root = Path(config.get("path") or ".")
    root = root if root.is_absolute() else yaml_path.parent / root
    if split is None and not present:
        if not (root / "images").is_dir():
            raise DataError(f"{yaml_path}: no split entries (train / val / test) and no images/ folder beside it")
        return sorted(p for p in (root / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    split = split or "train"
    if split not in config:
        raise DataError(f"{yaml_path}: no {split!r} entry; splits: {', '.join(present) or 'none'}"
                        + (" (use --split)" if present else " (leave --split out to read images/ whole)"))
    entries = config[split] if isinstance(config[split], list) else [config[split]]
    images: list[Path] = []
    for entry in entries:
        location = root / str(entry)
        if location.is_dir():
            images.extend(sorted(p for p in location.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif location.suffix == ".txt" and location.is_file():
            for line in location.read_text().splitlines():
                if line.strip():
                    listed = Path(line.strip())
                    images.append(listed if listed.is_absolute() else (location.parent / listed))
        else:
            raise DataError(f"{yaml_path}: {split}: {location} is neither a folder of images nor a .txt list")
    return images


def label_path(image: Path) -> Path:
    parts = list(image.parts)
    if "images" in parts:
        index = len(parts) - 1 - parts[::-1].index("images")
        parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def _line_box(numbers: list[float]) -> list[float] | str:
    """(cx, cy, w, h) of a label line's numbers after the class, or what is wrong with them."""
    if len(numbers) == 4:
        return numbers
    if len(numbers) >= 6 and len(numbers) % 2 == 0:  # a polygon: x1 y1 x2 y2 …
        xs, ys = numbers[0::2], numbers[1::2]
        return [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
    return f"expected 'class cx cy w h' (5 numbers) or a polygon, got {len(numbers) + 1} numbers"


def load_yolo(root: Path, split: str | None, skip_bad_rows: bool = False, log=print) -> tuple[list[Record], list[str]]:
    yaml_path = yolo_yaml(root) if root.is_dir() else root
    if yaml_path is None:
        raise DataError(f"{root}: no {' / '.join(YAML_NAMES)} found; a YOLO dataset needs one naming its classes")
    config, classes = read_yolo_yaml(yaml_path)
    records, skipped = [], Counter()
    for image_path in _split_images(config, yaml_path, split):
        where = str(image_path)
        width, height = image_size(image_path, where=where)
        record = Record(image=str(image_path), image_id=image_path.stem, width=width, height=height,
                        source_row=where)
        labels = label_path(image_path)
        lines = labels.read_text().splitlines() if labels.is_file() else []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            problem, values = None, line.split()
            try:
                numbers = [float(v) for v in values]
            except ValueError:
                numbers, problem = [], f"a value is not a number: {line.strip()!r}"
            if not problem:
                box = _line_box(numbers[1:])
                if isinstance(box, str):
                    problem = box
                elif not numbers[0].is_integer() or not 0 <= numbers[0] < len(classes):
                    problem = f"class {values[0]} is not an index into names (0..{len(classes) - 1})"
                else:
                    problem = check_size(box, "cxcywh")
            if problem:
                if not skip_bad_rows:
                    raise DataError(f"{labels} line {number}: {problem}; fix the line, or pass --skip-bad-rows to "
                                    f"count and skip such lines")
                skipped["line"] += 1
                continue
            record.boxes.append(Box(classes[int(numbers[0])], to_xyxy(box, "cxcywh", True, width, height)))
        records.append(record)
    if not records:
        raise DataError(f"{yaml_path}: {f'the {split} split' if split else 'images/'} has no images")
    if skipped:
        log(f"{yaml_path}: skipped {skipped['line']} bad label lines (--skip-bad-rows)")
    return records, classes
