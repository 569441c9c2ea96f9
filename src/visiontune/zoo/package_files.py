"""Finding a file inside an installed package without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .registry import ZooModel


class ZooAssetMissing(RuntimeError):
    pass


def packaged_file(model: ZooModel) -> Path:
    spec = importlib.util.find_spec(model.module)  # locating does not run the package's __init__
    if spec is None or not spec.submodule_search_locations:
        raise ZooAssetMissing(f"zoo model {model.name}: package {model.package} is not installed; "
                              f"install it with: {model.install}")
    path = Path(next(iter(spec.submodule_search_locations))) / model.file
    if not path.is_file():
        raise ZooAssetMissing(f"zoo model {model.name}: {path} is missing from package {model.package}; "
                              f"reinstall it with: {model.install}")
    return path
