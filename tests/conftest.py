"""Shared fixtures: tiny models of real families and a generated caption set, built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from visiontune.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_model(family, root / family) for family in ("smolvlm", "llava")}


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    from visiontune.data.builtin.shapes import write_shapes_dataset

    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), count=8, seed=0)


# Settings under which a tiny model memorises 8 captions in seconds on a CPU.
OVERFIT = dict(epochs=40, batch_size=8, warmup_ratio=0.0, lora_r=32, lora_alpha=64, lora_dropout=0.0,
               num_workers=0, logging_steps=10, report_to="none", preflight=True)


@pytest.fixture(scope="session")
def shape_classes(tmp_path_factory):
    """An image folder with three classes (circle, square, triangle), four images each."""
    from visiontune.data.builtin.shapes import write_shape_classes

    return write_shape_classes(tmp_path_factory.mktemp("shape_classes") / "data", per_class=4, seed=0)


@pytest.fixture(scope="session")
def trained_run(tiny_models, shapes, tmp_path_factory):
    """A tiny SmolVLM LoRA run that has memorised the 8 shape captions."""
    from visiontune.api.train import train

    output = tmp_path_factory.mktemp("run") / "smolvlm-lora"
    train(model=str(tiny_models["smolvlm"]), data=str(shapes["coco"]), output=str(output), method="lora",
          learning_rate=3e-3, **OVERFIT, log=lambda *_: None)
    return output
