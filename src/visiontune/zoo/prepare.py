"""Preparing zoo models into the cache (once), and finding them afterwards."""

from __future__ import annotations

import json
import shutil
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from .package_files import ZooAssetMissing, packaged_file
from .registry import DATASETS, MODELS, model_folder

RECORD_FILE = "zoo.json"
DINOV2_TOLERANCE = 1e-4


def is_prepared(name: str) -> bool:
    return (model_folder(name) / RECORD_FILE).is_file()


def zoo_model_path(name: str, log=print) -> Path:
    """The prepared folder of zoo model `name`, preparing it first if needed."""
    if name not in MODELS:
        raise KeyError(f"unknown zoo model {name!r}; available: {', '.join(MODELS)}")
    if not is_prepared(name):
        prepare_model(name, log=log)
    return model_folder(name)


def prepare_model(name: str, force: bool = False, log=print) -> dict:
    """Convert the packaged file into a transformers folder, verify it, and record how."""
    model = MODELS[name]
    final = model_folder(name)
    if is_prepared(name) and not force:
        return json.loads((final / RECORD_FILE).read_text())
    source = packaged_file(model)
    staging = final.with_name(final.name + ".partial")  # a crash never leaves a folder that looks prepared
    shutil.rmtree(staging, ignore_errors=True)
    started = time.perf_counter()
    log(f"zoo: preparing {name} from {source} ({model.package} {metadata.version(model.package)})")
    if model.kind == "gguf-causal-lm":
        from .gguf_lm import convert_gguf_causal_lm

        convert_gguf_causal_lm(source, staging)
        check = {}
    elif model.kind == "onnx-dinov2":
        check = _prepare_dinov2(source, staging)
    else:
        raise ValueError(f"zoo model {name}: unknown kind {model.kind!r}")
    record = {"name": name, "kind": model.kind, "package": model.package,
              "package_version": metadata.version(model.package), "source_file": str(source),
              "hub_equivalent": model.hub_equivalent, "seconds": round(time.perf_counter() - started, 1), **check}
    (staging / RECORD_FILE).write_text(json.dumps(record, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    log(f"zoo: {name} ready in {final} ({record['seconds']} s)")
    return record



def resolve_model_reference(reference: str, log=print) -> str:
    """A zoo model's name -> its prepared folder (prepared now if needed); anything else is returned as it is."""
    if reference in MODELS:
        return str(zoo_model_path(reference, log=log))
    return reference


def _prepare_dinov2(source: Path, output: Path) -> dict:
    from ..data.image_processors import imagenet_bit_processor
    from .onnx_dinov2 import max_difference_from_onnx, recover_dinov2

    model = recover_dinov2(source)
    pixels = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    difference = max_difference_from_onnx(model, source, pixels)
    if difference > DINOV2_TOLERANCE:
        raise RuntimeError(f"{source}: recovered DINOv2 differs from onnxruntime by {difference:.2e} "
                           f"(> {DINOV2_TOLERANCE}); the export's layout is not what this converter expects")
    model.save_pretrained(output)
    # facebook/dinov2-small's preprocessing: shortest edge 256, centre crop 224, ImageNet mean/std.
    imagenet_bit_processor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                           do_convert_rgb=True).save_pretrained(output)
    return {"max_abs_difference_vs_onnxruntime": difference, "checked_input": "2x3x224x224 standard normal"}


def zoo_status() -> list[dict]:
    rows = []
    for model in MODELS.values():
        try:
            available, where = True, str(packaged_file(model))
        except ZooAssetMissing:
            available, where = False, f"missing: {model.install}"
        rows.append({"name": model.name, "type": "model", "description": model.description, "available": available,
                     "prepared": is_prepared(model.name), "source": where,
                     "path": str(model_folder(model.name)) if is_prepared(model.name) else None})
    from ..data.sources.zoo_datasets import dataset_available

    for dataset in DATASETS.values():
        available = dataset_available(dataset.name)
        rows.append({"name": dataset.name, "type": "dataset", "description": dataset.description,
                     "available": available, "prepared": available,
                     "source": (dataset.folder or "scikit-learn") if available else f"missing: {dataset.install}",
                     "path": f"zoo:{dataset.name}"})
    return rows
