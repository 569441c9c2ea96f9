"""Zoo datasets as data sources: `--data zoo:fashion-mnist`, `--data zoo:digits`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.records import DataError, Record
from ..data.sources.idx import ArrayImage, is_idx_folder, load_idx_folder
from .registry import DATASETS, ZOO_DATA_PREFIX

DIGITS_TEST_EVERY = 5  # scikit-learn digits has no split; every 5th image is the test split


def dataset_available(name: str) -> bool:
    dataset = DATASETS[name]
    if dataset.kind == "idx":
        return is_idx_folder(Path(dataset.folder))
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def is_zoo_reference(path: str) -> bool:
    return str(path).startswith(ZOO_DATA_PREFIX)


def load_zoo_dataset(reference: str, split: str | None, folder: str | None = None) -> tuple[list[Record], list[str]]:
    """Records with integer labels and the dataset's class names. `folder` overrides where idx files are."""
    name = reference[len(ZOO_DATA_PREFIX):] if is_zoo_reference(reference) else reference
    if name not in DATASETS:
        raise DataError(f"{reference}: unknown zoo dataset; available: "
                        f"{', '.join(ZOO_DATA_PREFIX + n for n in DATASETS)}")
    dataset = DATASETS[name]
    if dataset.kind == "idx":
        where = Path(folder or dataset.folder)
        if not is_idx_folder(where):
            raise DataError(f"{reference}: no idx files in {where}; install them with: {dataset.install} "
                            f"(or pass --images-dir with a folder holding the idx files)")
        records, _ = load_idx_folder(where, split, name)
        return records, list(dataset.classes)
    return _load_digits(split), list(dataset.classes)


def _load_digits(split: str | None) -> list[Record]:
    from sklearn.datasets import load_digits

    split = split or "train"
    if split not in ("train", "test"):
        raise DataError(f"zoo:digits has splits train and test, not {split!r}")
    digits = load_digits()
    # 0-16 intensities -> 0-255 so the images look like any other greyscale picture.
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    keep = [i for i in range(len(images)) if (i % DIGITS_TEST_EVERY == 0) == (split == "test")]
    return [Record(image=ArrayImage(images, i, f"digits/{i}"), image_id=f"digits/{i}", label=int(digits.target[i]),
                   source_row=f"digits image {i}") for i in keep]
