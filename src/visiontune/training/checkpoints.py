"""Which checkpoint a run resumes from, so that a run killed at any moment (SIGKILL, power loss) resumes right.

HF Trainer writes a checkpoint's files one after another and `trainer_state.json` last; a folder whose
`trainer_state.json` is missing or does not parse was cut off while being written and is never picked. The
chosen one's weight and state files are opened before training starts, so a corrupt file is an error that
names it instead of a failure deep inside Trainer.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_complete(folder: Path) -> bool:
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def check_readable(folder: Path) -> None:
    """Open every weight / state file of a checkpoint; a truncated or corrupt one is a ValueError naming it."""
    from safetensors import safe_open

    for path in sorted(folder.iterdir()):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt"):
                    pass
            elif path.suffix in (".pt", ".pth", ".bin"):
                with zipfile.ZipFile(path) as archive:  # torch.save's format; a cut-off file has no directory
                    bad = archive.testzip()
                    if bad is not None:
                        raise ValueError(f"damaged member {bad}")
        except Exception as error:
            raise ValueError(f"{path}: a corrupt checkpoint file ({type(error).__name__}: {error}); delete "
                             f"{folder} to resume from the one before, or train without --resume") from error


def last_complete_checkpoint(output: str | Path, log=print) -> Path:
    """The newest checkpoint written in full; incomplete ones are skipped and said so."""
    folders = sorted((p for p in Path(output).glob("checkpoint-*") if CHECKPOINT.match(p.name) and p.is_dir()),
                     key=lambda p: int(CHECKPOINT.match(p.name).group(1)), reverse=True)
    for folder in folders:
        if is_complete(folder):
            check_readable(folder)
            return folder
        log(f"resume: skipping {folder.name}, cut off while it was being written")
    raise FileNotFoundError(f"{output}: no complete checkpoint to resume from; train without --resume")
