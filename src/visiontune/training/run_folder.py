"""A run folder holds one run: a used one is refused unless the run is resumed (and is the same run) or replaced.

Checked before any model loads. `--resume` continues the folder's run only when the task, the base model and
the training data are the ones its run.json records; `--overwrite` clears a folder that holds a visiontune run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

RUN_MARKERS = ("run.json", "visiontune.json", "summary.json")


def _holds_a_run(folder: Path) -> bool:
    return any((folder / name).is_file() for name in RUN_MARKERS) or any(folder.glob("checkpoint-*"))


def _recorded(folder: Path) -> dict:
    path = folder / "run.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def prepare_run_folder(output: str | Path, resume: bool, overwrite: bool) -> dict:
    """The folder's earlier run record ({} when there is none); raises when training there would mix runs."""
    folder = Path(output)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --output and --overwrite replaces it: give one of them")
    if int(os.environ.get("RANK", "0")):
        return {}  # under torchrun the first process checks, before the others start (api/train.py)
    if not folder.exists() or not any(folder.iterdir()):
        if resume:
            raise FileNotFoundError(f"{folder}: no run to resume; train without --resume")
        return {}
    if not folder.is_dir():
        raise ValueError(f"--output {folder} is a file; give a folder for the run")
    if resume:
        return _recorded(folder)
    if not _holds_a_run(folder):
        raise ValueError(f"--output {folder} holds files that are not a visiontune run; choose an empty or new folder")
    if overwrite:
        shutil.rmtree(folder)
        return {}
    config = _recorded(folder).get("config", {})
    what = f" ({config.get('task', '?')} run of {config.get('model', '?')})" if config else ""
    raise ValueError(f"--output {folder} already holds a run{what}; pass --resume to continue it, --overwrite to "
                     f"replace it, or choose another --output")


def check_same_run(earlier: dict, config: dict, train_fingerprint: str) -> None:
    """A resumed run must be the folder's run: the same task, base model and training data."""
    if not earlier:
        return
    before = earlier.get("config", {})
    differences = [f"{key} {before.get(key)!r} -> {config.get(key)!r}" for key in ("task", "model")
                   if key in before and before.get(key) != config.get(key)]
    recorded = earlier.get("data", {}).get("train_fingerprint")
    if recorded and recorded != train_fingerprint:
        differences.append("the training data differs from the run's (fingerprint)")
    if differences:
        raise ValueError(f"--resume: {config.get('output')} holds another run ({'; '.join(differences)}); resume "
                         f"with the run's own settings, --overwrite to replace it, or choose another --output")
