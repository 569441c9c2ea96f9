"""MNIST-style idx files (`train-images-idx3-ubyte[.gz]` + `train-labels-idx1-ubyte[.gz]`, `t10k-…` for test).

The format is a big-endian header (magic, dimension sizes) followed by raw uint8 values; numpy reads it
directly, so the whole of Fashion-MNIST loads in well under a second and images stay in one array.
"""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np

from ..records import DataError, Record

SPLIT_PREFIXES = {"train": "train", "test": "t10k"}


class ArrayImage:
    """One greyscale image of a shared uint8 array, turned into a PIL RGB image only when needed."""

    def __init__(self, array: np.ndarray, index: int, name: str):
        self.array, self.index, self.name = array, index, name

    def load_image(self):
        from PIL import Image

        return Image.fromarray(self.array[self.index], mode="L").convert("RGB")

    def __repr__(self) -> str:
        return self.name


def _idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    dims = "idx3" if kind == "images" else "idx1"
    for name in (f"{prefix}-{kind}-{dims}-ubyte.gz", f"{prefix}-{kind}-{dims}-ubyte", f"{prefix}-{kind}.{dims}-ubyte"):
        if (folder / name).is_file():
            return folder / name
    return None


def is_idx_folder(folder: Path) -> bool:
    return folder.is_dir() and any(_idx_file(folder, p, "images") for p in SPLIT_PREFIXES.values())


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not a uint8 idx file (bad magic number); expected MNIST-style idx data")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = int(np.prod(shape))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != expected:
        raise DataError(f"{path}: header says {shape} ({expected} values) but the file holds {values.size}; "
                        f"the file is truncated or corrupt")
    return values.reshape(shape)


def split_slice(split: str) -> tuple[str, slice]:
    """'train[:55000]' -> ('train', slice(None, 55000)): the datasets library's slice notation."""
    match = re.fullmatch(r"(\w+)\[(-?\d*):(-?\d*)\]", split)
    if not match:
        return split, slice(None)
    start, stop = (int(v) if v else None for v in match.group(2, 3))
    return match.group(1), slice(start, stop)


def load_idx_folder(folder: Path, split: str | None, name: str | None = None) -> tuple[list[Record], None]:
    """Records with integer labels (class names come from --class-names or the zoo's table). `split` is
    train or test, optionally sliced: `train[:55000]`, `train[55000:]`."""
    split, rows = split_slice(split or "train")
    if split not in SPLIT_PREFIXES:
        raise DataError(f"{folder}: idx data has splits {', '.join(SPLIT_PREFIXES)}, not {split!r}; use --split")
    prefix = SPLIT_PREFIXES[split]
    images_path, labels_path = _idx_file(folder, prefix, "images"), _idx_file(folder, prefix, "labels")
    if images_path is None or labels_path is None:
        raise DataError(f"{folder}: no {prefix}-images-idx3-ubyte(.gz) / {prefix}-labels-idx1-ubyte(.gz) pair for "
                        f"split {split!r}")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{folder}: {images_path.name} holds {images.shape} but {labels_path.name} holds "
                        f"{labels.shape}; expected N images of HxW and N labels")
    tag = name or folder.name
    return [Record(image=ArrayImage(images, i, f"{tag}/{split}/{i}"), image_id=f"{split}/{i}", label=int(labels[i]),
                   source_row=f"{images_path.name} image {i}") for i in range(images.shape[0])[rows]], None
