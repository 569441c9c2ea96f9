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
               num_workers=0, logging_steps=10, report_to="none", preflight=True,
               keep_skills=False)  # a random tiny model's "general answers" are noise; tests/tasks/test_self_replay.py


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


@pytest.fixture(scope="session")
def zoo_classify_run(tmp_path_factory):
    """DINOv2-S + SmolLM2-135M from the zoo, composed at 112 px (no alignment stage), classify-trained on 240
    Fashion-MNIST images for 1 epoch (the summary token started from a probe). Real weights: slow tests only."""
    from visiontune.api.train import train
    from visiontune.data.sources.zoo_datasets import dataset_available
    from visiontune.models.compose.build import compose

    if not dataset_available("fashion-mnist"):
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    root = tmp_path_factory.mktemp("zoo-classify")
    model = compose("dinov2-small", "smollm2-135m-instruct", root / "composed", image_size=112, log=lambda *_: None)
    train(task="classify", model=str(model), data="zoo:fashion-mnist", split="train[:55000]", shuffle=True,
          max_samples=240, output=str(root / "run"), train="projector+language", prompt="What is this item?",
          system_prompt="Answer briefly.", learning_rate=1e-3, epochs=1, batch_size=8, warmup_ratio=0.05,
          num_workers=0, report_to="none", log=lambda *_: None)
    return root / "run"
