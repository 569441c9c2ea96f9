"""Which base model a LoRA run folder applies to, so that a run loads from any working folder.

A local base is recorded as an absolute path and as a path relative to the run folder (a project moved as
a whole still loads); a hub id is recorded as given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RUN_METADATA_FILE = "visiontune.json"
MODEL_CONFIG_KEY = "model_config"  # config attributes the run set on its base (region slots), set again on loading


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def run_metadata_file(path: str | Path) -> Path | None:
    """A run folder's visiontune.json; for an adapter in a `final/` or checkpoint folder, its run's."""
    folders = (Path(path), Path(path).parent) if is_adapter_folder(path) else (Path(path),)
    return next((folder / RUN_METADATA_FILE for folder in folders if (folder / RUN_METADATA_FILE).is_file()), None)


def read_run_metadata(path: str | Path) -> dict:
    """A run folder's visiontune.json, or its run's (`run_metadata_file`); {} where there is none."""
    file = run_metadata_file(path)
    return json.loads(file.read_text()) if file else {}


def recorded_base(model: str, run_folder: str | Path) -> dict:
    """What a run's visiontune.json says about its base: `base_model`, and `base_model_relative` when local."""
    if not Path(model).is_dir():
        return {"base_model": model}
    absolute = Path(model).resolve()
    return {"base_model": str(absolute), "base_model_relative": os.path.relpath(absolute, Path(run_folder).resolve())}


def resolve_base(run_folder: str | Path, override: str | None = None) -> str:
    """The base model of an adapter run folder: `override` (`--base-model`) when given, else the recorded one,
    found as recorded, relative to the run folder (or the run above a `final/` or checkpoint folder), or
    relative to the working folder; a local base found nowhere is an error naming it."""
    if override:
        return override
    run = Path(run_folder)
    metadata_file = run_metadata_file(run)
    metadata = json.loads(metadata_file.read_text()) if metadata_file else {}
    recorded = metadata.get("base_model") or json.loads((run / "adapter_config.json").read_text()).get(
        "base_model_name_or_path", "")
    anchors = [metadata_file.parent] if metadata_file else [run]
    candidates = [Path(recorded)] + [anchor / recorded for anchor in anchors]
    if metadata.get("base_model_relative"):
        candidates += [anchor / metadata["base_model_relative"] for anchor in anchors]
    found = next((c for c in candidates if c.is_dir()), None)
    if found is not None:
        return str(found)
    if metadata.get("base_model_relative") or recorded.startswith((".", "/", "~")) or recorded.count("/") > 1:
        raise FileNotFoundError(
            f"{run}: this run was trained over the local model {recorded!r}, which is not there (looked as "
            f"recorded, relative to the run folder and to the working folder); pass --base-model FOLDER")
    return recorded  # a hub id
