"""Images read straight from a zip archive (`--images-dir images.zip`), without unpacking it.

Each process opens the archive once (a DataLoader worker, forked, opens its own: a shared file position would
mix the workers' reads). A name is looked up as given, then under the archive's single top folder when every
member sits in one (`images.zip` holding `images/a.jpg` serves `a.jpg`).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

_OPEN: dict[tuple[int, str], ZipImages] = {}


def is_zip(path: str | Path | None) -> bool:
    return path is not None and str(path).lower().endswith(".zip") and Path(path).is_file()


class ZipImages:
    def __init__(self, path: Path):
        self.path = path
        self.archive = zipfile.ZipFile(path)
        sample = self.archive.namelist()[:1000]
        tops = {name.split("/", 1)[0] for name in sample}
        self.prefix = f"{tops.pop()}/" if len(tops) == 1 and all("/" in name for name in sample) else ""

    def member(self, name: str) -> str | None:
        name = name.replace("\\", "/").lstrip("./")
        for candidate in (name, self.prefix + name):
            try:
                self.archive.getinfo(candidate)
                return candidate
            except KeyError:
                continue
        return None

    def read(self, name: str) -> bytes:
        member = self.member(name)
        if member is None:
            raise KeyError(name)
        return self.archive.read(member)


def zip_images(path: str | Path) -> ZipImages:
    """This process's open archive at `path`."""
    key = (os.getpid(), str(Path(path).resolve()))
    if key not in _OPEN:
        _OPEN[key] = ZipImages(Path(path))
    return _OPEN[key]
