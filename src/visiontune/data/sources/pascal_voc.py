"""Pascal VOC detection folders: one XML file per image (`<annotation>` with `<filename>`, `<size>` and an
`<object>` per box: `<name>`, `<bndbox>` xmin/ymin/xmax/ymax, optional `<difficult>`).

Layouts read: the VOC devkit's (`Annotations/*.xml`, `JPEGImages/`, splits listed in `ImageSets/Main/<split>.txt`),
and a folder of XML files with the images beside it, in a sibling `images/` or `JPEGImages/` folder, or in
--images-dir (what `supervision`'s `as_pascal_voc` writes). Corners follow the devkit's 1-based inclusive
pixels: (xmin - 1, ymin - 1, xmax, ymax) in the 0-based, far-edge corners every other source gives. A
`difficult` object is a crowd box: neither trained on nor counted for or against a detection, as VOC's own
evaluation ignores it. Unreadable XML, a missing image or a box with its corners swapped is an error naming the
file, or a counted skip (--skip-bad-rows).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

from ..boxes import check_size
from ..images import image_size
from ..records import Box, DataError, Record

ANNOTATION_FOLDERS = ("Annotations", "annotations")
IMAGE_FOLDERS = ("JPEGImages", "images", "Images")
SPLIT_FOLDER = Path("ImageSets") / "Main"


def _annotation_folder(path: Path) -> Path | None:
    """The folder of a layout's XML files: `path` itself, or its Annotations/ subfolder."""
    for folder in [path / name for name in ANNOTATION_FOLDERS] + [path]:
        first = next(folder.glob("*.xml"), None) if folder.is_dir() else None
        if first is not None and _is_annotation(first):
            return folder
    return None


def _is_annotation(path: Path) -> bool:
    try:
        return ElementTree.parse(path).getroot().tag == "annotation"
    except (ElementTree.ParseError, OSError):
        return False


def is_pascal_voc_folder(path: Path) -> bool:
    return path.is_dir() and _annotation_folder(path) is not None


def voc_splits(path: Path) -> list[str]:
    """The devkit's split lists (ImageSets/Main/<split>.txt, not the per-class ones)."""
    folder = path / SPLIT_FOLDER
    names = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
    return [name for name in names if "_" not in name]


def _image_path(annotation: Path, filename: str, root: Path, images_dir: Path | None) -> Path:
    folders = [images_dir] if images_dir else []
    folders += [base / name for base in (root, annotation.parent.parent) for name in IMAGE_FOLDERS]
    folders += [annotation.parent]
    for folder in folders:
        if (folder / filename).is_file():
            return folder / filename
    tried = ", ".join(dict.fromkeys(str(folder) for folder in folders))
    raise DataError(f"{annotation}: image {filename!r} not found in {tried}; give its folder with --images-dir")


def _number(element, tag: str, where: str) -> float:
    text = element.findtext(tag)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: <{tag}> is {text!r}, not a number") from None


def _read_annotation(path: Path, root: Path, images_dir: Path | None) -> Record:
    try:
        annotation = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise DataError(f"{path}: not readable XML ({error})") from None
    filename = (annotation.findtext("filename") or "").strip()
    if not filename:
        raise DataError(f"{path}: no <filename>; a VOC annotation names its image")
    image = _image_path(path, filename, root, images_dir)
    size = annotation.find("size")
    width, height = (int(_number(size, "width", str(path))), int(_number(size, "height", str(path)))) \
        if size is not None else (0, 0)
    if width <= 0 or height <= 0:  # some writers leave the size out or 0: the image's header has it
        width, height = image_size(image, where=str(path))
    record = Record(image=str(image), image_id=image.stem, width=width, height=height, source_row=str(path))
    for index, item in enumerate(annotation.findall("object"), start=1):
        where = f"{path} object {index}"
        name, bndbox = (item.findtext("name") or "").strip(), item.find("bndbox")
        if not name or bndbox is None:
            raise DataError(f"{where}: needs <name> and <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bndbox, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        box = (xmin - 1, ymin - 1, xmax, ymax)
        problem = check_size(box, "xyxy")
        if problem:
            raise DataError(f"{where}: {problem}")
        record.boxes.append(Box(name, box, crowd=(item.findtext("difficult") or "0").strip() == "1"))
    return record


def load_pascal_voc(path: Path, split: str | None, images_dir: Path | None = None, skip_bad_rows: bool = False,
                    log=print) -> list[Record]:
    folder = _annotation_folder(path)
    if folder is None:
        raise DataError(f"{path}: no Pascal VOC annotations (*.xml with an <annotation> root) in it or in "
                        f"{' / '.join(ANNOTATION_FOLDERS)}/")
    files = sorted(folder.glob("*.xml"))
    if split is not None:
        listed = path / SPLIT_FOLDER / f"{split}.txt"
        if not listed.is_file():
            raise DataError(f"{path}: no split {split!r} ({listed} is missing); splits: "
                            f"{', '.join(voc_splits(path)) or 'none'}")
        files = [folder / f"{line.split()[0]}.xml" for line in listed.read_text().splitlines() if line.strip()]
    records, skipped = [], Counter()
    for file in files:
        try:
            if not file.is_file():
                raise DataError(f"{file}: listed in split {split!r} but missing")
            records.append(_read_annotation(file, path, images_dir))
        except DataError as error:
            if not skip_bad_rows:
                raise DataError(f"{error}; fix it, or pass --skip-bad-rows to count and skip such files") from None
            skipped["file"] += 1
    if skipped:
        log(f"{path}: skipped {skipped['file']} bad annotation files (--skip-bad-rows)")
    if not records:
        raise DataError(f"{path}: no annotated images")
    return records
