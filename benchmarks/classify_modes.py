"""Classification: `generate` (free text, then parsed) vs `score` (probability of every class), side by side.

A fixed set: six colour classes (or three shape classes), generated shape images (train and test drawn with different seeds). A tiny
SmolVLM-family model is LoRA-trained for --epochs, then both modes run on the same held-out images with the
same loaded model. A separate evaluation split picks the best checkpoint and fits the softmax temperature.
Reports accuracy, unmapped rate, ECE (score mode) and images/s (model loading excluded).
    python benchmarks/classify_modes.py --model /tmp/bench-tiny
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="base model (e.g. visiontune tiny-model --family smolvlm)")
    parser.add_argument("--epochs", type=float, default=40)
    parser.add_argument("--train-per-class", type=int, default=16)
    parser.add_argument("--val-per-class", type=int, default=32, help="evaluation set (best model, temperature)")
    parser.add_argument("--test-per-class", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--label-by", default="colour", help="colour (6 classes) or shape (3 classes)")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--no-calibrate", action="store_true", help="skip the temperature fit (to compare)")
    parser.add_argument("--train", default=None, help="parts to train, e.g. all (the tiny model's vision is random)")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    args = parser.parse_args()
    from visiontune.api.train import train
    from visiontune.data.builtin.shapes import write_shape_classes
    from visiontune.data.loading import DataSpec, load_labelled_records
    from visiontune.inference.predictor import Predictor
    from visiontune.metrics.classification import classification_metrics
    from visiontune.models.vlm import load_for_inference
    from visiontune.tasks import task_from_metadata

    root = Path(tempfile.mkdtemp())
    train_dir = write_shape_classes(root / "train", per_class=args.train_per_class, seed=1,
                                    label_by=args.label_by)
    val_dir = write_shape_classes(root / "val", per_class=args.val_per_class, seed=3, label_by=args.label_by)
    test_dir = write_shape_classes(root / "test", per_class=args.test_per_class, seed=2, label_by=args.label_by)
    run = root / "run"
    if args.epochs > 0:
        train(task="classify", model=args.model, data=str(train_dir), eval_data=str(val_dir), output=str(run), overwrite=True,
              epochs=args.epochs, calibrate=not args.no_calibrate,
              batch_size=16, learning_rate=args.learning_rate, method=args.method, train=args.train,
              warmup_ratio=0.0, lora_r=32, lora_alpha=64, lora_dropout=0.0, num_workers=0, report_to="none", log=lambda *_: None)
        model_path = run
    else:
        model_path = args.model
    records, classes = load_labelled_records(DataSpec(path=str(test_dir)))
    images = [r.load_image() for r in records]
    truth = [r.label for r in records]
    model, processor, metadata = load_for_inference(str(model_path), log=lambda *_: None)
    task = task_from_metadata(metadata, "classify", classes=classes)
    rows = {}
    for mode in ("generate", "score"):
        predictor = Predictor(model, processor, task, batch_size=args.batch, max_new_tokens=16, mode=mode)
        predictor.results(images[: args.batch])  # warm-up
        start = time.perf_counter()
        results = [r for i in range(0, len(images), args.batch) for r in predictor.results(images[i:i + args.batch])]
        seconds = time.perf_counter() - start
        probabilities = ([[r["probabilities"][c] for c in classes] for r in results] if mode == "score" else None)
        metrics = classification_metrics(truth, [r["label"] for r in results], classes, probabilities)
        rows[mode] = {"accuracy": round(metrics["accuracy"], 4), "unmapped_rate": round(metrics["unmapped_rate"], 4),
                      "ece": round(metrics["ece"], 4) if "ece" in metrics else None,
                      "images_per_second": round(len(images) / seconds, 2)}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(json.dumps({"device": device, "epochs": args.epochs, "calibrated": not args.no_calibrate,
                      "label_by": args.label_by, "method": args.method, "train": args.train,
                      "test_images": len(images), **rows}, indent=2))


if __name__ == "__main__":
    main()
