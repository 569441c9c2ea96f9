"""`visiontune quickstart`: the offline main job on real pretrained weights, start to finish.

1. Prepare the offline zoo (SmolLM2-135M-Instruct from its GGUF, DINOv2 ViT-S/14 recovered from an ONNX).
2. Compose a new VLM: DINOv2-S -> pixel shuffle 2 -> SwiGLU projector (+ a summary token from [CLS, mean
   patch]) -> SmolLM2-135M.
3. Stage 1, align: train the projector alone to caption canvases of real Fashion-MNIST items (3 epochs).
4. Stage 2, classify: the summary token started from a linear probe of the training images (LP-FT), then LoRA
   on the LM + the projector (at a tenth of the LoRA's learning rate) on Fashion-MNIST training images, a
   temperature fitted on a held-out slice of the training split.
5. Evaluate on the Fashion-MNIST test set (score mode) and print the accuracy and where the report is.

The default sizes fit 8-16 minutes on a 2-core CPU (subsets); `--full` trains on all 55000 training images
and tests on all 10000 at 224 px (meant for a GPU, which is used whenever there is one).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .config import EvalConfig, TrainConfig

SYSTEM_PROMPT = "Answer briefly."
CLASSIFY_PROMPT = "What is this item?"
VALIDATION_SLICE = "train[55000:]"  # Fashion-MNIST has no validation split: keep the last 5000 training images out
TRAIN_SLICE = "train[:55000]"
# Stage 2's projector, whose summary token starts from the linear probe, learns 10x slower than the LoRA on the
# LM, so fine-tuning keeps what the probe knows (BENCHMARKS.md, "Real weights": 0.805 vs 0.789 at 1e-3; 0.813
# with the probe on 3,200 images and half an epoch, 0.818 with 0.4 epoch in 20 % fewer steps).
CLASSIFY_LEARNING_RATE, CLASSIFY_CONNECTOR_LEARNING_RATE = 1e-3, 1e-4


@dataclass
class QuickstartSizes:
    image_size: int = 112
    align_canvases: int = 320
    train_images: int = 3200  # the probe start fits on all of them; 0.4 epoch of fine-tuning sees 1,280
    validation_images: int = 160
    test_images: int = 1000
    align_epochs: float = 3.0  # fewer leave a captioner whose skill a later fine-tune erases (BENCHMARKS.md)
    classify_epochs: float = 0.4
    batch_size: int = 8


FULL = QuickstartSizes(image_size=224, align_canvases=20000, train_images=55000, validation_images=1000,
                       test_images=10000, align_epochs=2.0, classify_epochs=2.0, batch_size=32)


def align_config(sizes: QuickstartSizes, root: Path, model: Path, captions: Path) -> TrainConfig:
    """Stage 1: the projector alone learns to caption canvases."""
    return TrainConfig(task="caption", model=str(model), data=str(captions), output=str(root / "align"),
                       overwrite=True, train="projector", system_prompt=SYSTEM_PROMPT, learning_rate=1e-3,
                       epochs=sizes.align_epochs, batch_size=sizes.batch_size, warmup_ratio=0.05, logging_steps=10,
                       num_workers=0, report_to="tensorboard")


def classify_config(sizes: QuickstartSizes, root: Path, **overrides) -> TrainConfig:
    """Stage 2 from `root / "align"`: LoRA on the LM + the probe-started projector on Fashion-MNIST;
    `overrides` replace fields (benchmarks/quickstart_levers.py measures them one at a time)."""
    settings = dict(task="classify", model=str(root / "align"), data="zoo:fashion-mnist", split=TRAIN_SLICE,
                    shuffle=True, seed=0, max_samples=sizes.train_images, eval_data="zoo:fashion-mnist",
                    eval_split=VALIDATION_SLICE, max_eval_samples=sizes.validation_images,
                    output=str(root / "classify"), overwrite=True, train="projector+language",
                    prompt=CLASSIFY_PROMPT, system_prompt=SYSTEM_PROMPT, lora_r=16, lora_alpha=32,
                    learning_rate=CLASSIFY_LEARNING_RATE, connector_learning_rate=CLASSIFY_CONNECTOR_LEARNING_RATE,
                    epochs=sizes.classify_epochs, batch_size=sizes.batch_size, warmup_ratio=0.05, logging_steps=10,
                    num_workers=0, report_to="tensorboard")
    return TrainConfig(**{**settings, **overrides})


def test_config(sizes: QuickstartSizes, model: Path, output: Path) -> EvalConfig:
    """The Fashion-MNIST test images, score mode, in batches of 32 (~10 % faster than 8 on a CPU; the prompts
    have one length, so the scores are the same)."""
    return EvalConfig(task="classify", model=str(model), data="zoo:fashion-mnist", split="test",
                      max_samples=sizes.test_images, mode="score", batch_size=32, output=str(output))


def quickstart(output: str = "runs/quickstart", full: bool = False, sizes: QuickstartSizes | None = None,
               log=print) -> dict:
    from .api.evaluate import evaluate
    from .api.train import train
    from .models.compose.build import compose
    from .zoo.canvases import write_canvases
    from .zoo.prepare import zoo_model_path

    sizes = sizes or (FULL if full else QuickstartSizes())
    root = Path(output)
    started = time.perf_counter()
    timings = {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)

    for name in ("dinov2-small", "smollm2-135m-instruct"):
        zoo_model_path(name, log=log)
    lap("zoo")
    model = compose("dinov2-small", "smollm2-135m-instruct", root / "composed", projector="swiglu", pixel_shuffle=2,
                    image_size=sizes.image_size, log=log)
    lap("compose")
    align_data = write_canvases(root / "data" / "align", count=sizes.align_canvases, seed=0, size=sizes.image_size,
                                objects=(1, 2), scale=(sizes.image_size * 3 // 7, sizes.image_size))
    log(f"quickstart: stage 1 — align the projector on {sizes.align_canvases} captioned canvases")
    align = train(align_config(sizes, root, model, align_data["captions"]), log=log)
    lap("align")
    log(f"quickstart: stage 2 — classify Fashion-MNIST ({sizes.train_images} training images)")
    classify = train(classify_config(sizes, root), log=log)
    lap("classify")
    test = evaluate(test_config(sizes, root / "classify", root / "eval"), log=log)
    lap("evaluate")
    result = {"sizes": sizes.__dict__, "seconds": timings,
              "align": {k: align.get(k) for k in ("final_train_loss", "samples_per_second")},
              "classify": {k: classify.get(k) for k in ("eval_accuracy", "calibration", "samples_per_second")},
              "test": {k: v for k, v in test.items() if isinstance(v, (int, float))}}
    (root / "quickstart.json").write_text(json.dumps(result, indent=2))
    log(f"quickstart: Fashion-MNIST test accuracy {test['accuracy']:.3f} on {test['samples']} images (chance 0.100; "
        f"macro F1 {test['macro_f1']:.3f}, ECE {test.get('ece', float('nan')):.3f}) in "
        f"{sum(timings.values()) / 60:.1f} min; report in {root / 'eval'}, summary in {root / 'quickstart.json'}")
    return result
