"""ImageFolder layout: `root/<class name>/*.jpg`, optionally split first: `root/<split>/<class name>/*.jpg`."""

from __future__ import annotations

from pathlib import Path

from ..images import IMAGE_SUFFIXES
from ..records import DataError, Record

SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "test", "testing", "eval")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_image_folder(path: Path) -> bool:
    """A folder whose subfolders (or whose split folders' subfolders) hold images."""
    if not path.is_dir():
        return False
    subfolders = _subfolders(path)
    if subfolders and all(p.name.lower() in SPLIT_NAMES for p in subfolders):
        subfolders = [q for p in subfolders for q in _subfolders(p)]
    return any(_images_in(p)[:1] for p in subfolders)


def load_image_folder(root: Path, split: str | None) -> tuple[list[Record], list[str]]:
    """Records labelled by their class folder, and the class names (sorted folder names, empty ones included)."""
    folders = _subfolders(root)
    splits = [p.name for p in folders if p.name.lower() in SPLIT_NAMES]
    if split:
        if not (root / split).is_dir():
            raise DataError(f"{root}: no split folder {split!r}; found: {', '.join(p.name for p in folders) or 'none'}")
        root = root / split
    elif splits and len(splits) == len(folders):
        chosen = next((s for s in ("train", "training") if s in splits), splits[0])
        root = root / chosen
    classes = [p.name for p in _subfolders(root)]
    if not classes:
        raise DataError(f"{root}: no class folders; an image folder dataset is root/<class name>/<images>")
    records = []
    for name in classes:
        for path in _images_in(root / name):
            relative = path.relative_to(root)
            records.append(Record(image=str(path), image_id=str(relative), label=name, source_row=str(path)))
    stray = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if stray:
        raise DataError(f"{root}: images directly in the root ({', '.join(stray[:3])}…) have no class; move them "
                        f"into a folder named after their class")
    if not records:
        raise DataError(f"{root}: the class folders hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return records, classes
