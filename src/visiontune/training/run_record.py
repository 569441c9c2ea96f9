"""What every run writes next to its outputs: resolved config, package versions, data fingerprint."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = ("visiontune", "torch", "transformers", "peft", "accelerate", "datasets", "pillow", "pycocoevalcap",
            "bitsandbytes")


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def write_run_record(output_dir: str | Path, config: dict, data: dict) -> Path:
    import torch

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {"config": config, "versions": package_versions(), "data": data,
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"}
    path = output_dir / "run.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    return path
