"""Fashion-MNIST test accuracy of the composed VLM (DINOv2-S + SmolLM2-135M, both from the offline zoo), next
to logistic regression on frozen DINOv2-S features and the published baselines shipped with the dataset.

The VLM runs the quickstart's two stages (align the projector on captioned canvases, then classify with LoRA)
at the sizes given, then is scored on the test images in score mode and in generate mode. The linear probe
sees the same training images at the same input size: [CLS, mean patch] features of the frozen encoder,
scikit-learn LogisticRegression. Published numbers are read from the Debian package's README table.

    python benchmarks/fashion_mnist.py                                   # CPU-sized subset
    python benchmarks/fashion_mnist.py --train-images 55000 --test-images 10000 --image-size 224 \
        --align-epochs 2 --classify-epochs 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import time
from pathlib import Path

import torch

from linear_probe import linear_probe

PUBLISHED_README = Path("/usr/share/doc/dataset-fashion-mnist/README.md.gz")
PUBLISHED_ROWS = ("2 Conv+pooling |", "3 Conv+pooling+2 FC+dropout", "ResNet18", "WRN40-4")


def published_baselines() -> dict[str, float]:
    if not PUBLISHED_README.is_file():
        return {}
    found = {}
    with gzip.open(PUBLISHED_README, "rt", encoding="utf-8") as lines:
        for line in lines:
            for name in PUBLISHED_ROWS:
                if line.startswith("|" + name):
                    cells = [c.strip() for c in line.strip().strip("|").split("|")]
                    found[cells[0]] = float(cells[2])
    return found


def main() -> None:
    from visiontune.quickstart import TRAIN_SLICE, QuickstartSizes, quickstart

    default = QuickstartSizes()
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="runs/bench-fashion-mnist")
    parser.add_argument("--train-images", type=int, default=default.train_images)
    parser.add_argument("--test-images", type=int, default=default.test_images)
    parser.add_argument("--align-canvases", type=int, default=default.align_canvases)
    parser.add_argument("--image-size", type=int, default=default.image_size)
    parser.add_argument("--align-epochs", type=float, default=default.align_epochs)
    parser.add_argument("--classify-epochs", type=float, default=default.classify_epochs)
    parser.add_argument("--batch-size", type=int, default=default.batch_size)
    parser.add_argument("--skip-vlm", action="store_true", help="only the linear probe and the published table")
    args = parser.parse_args()

    from visiontune.api.evaluate import evaluate
    from visiontune.config import EvalConfig
    from visiontune.data.loading import DataSpec, load_labelled_records

    output = Path(args.output)
    train, classes = load_labelled_records(DataSpec("zoo:fashion-mnist", split=TRAIN_SLICE, shuffle=True, seed=0,
                                                    max_samples=args.train_images))
    test, _ = load_labelled_records(DataSpec("zoo:fashion-mnist", split="test", max_samples=args.test_images))
    results = {"hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
                           + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
               "settings": vars(args), "published": published_baselines(),
               "dinov2_linear_probe": linear_probe(train, test, classes, args.image_size)}
    print(json.dumps(results["dinov2_linear_probe"]))
    if not args.skip_vlm:
        sizes = QuickstartSizes(image_size=args.image_size, align_canvases=args.align_canvases,
                                train_images=args.train_images, test_images=args.test_images,
                                align_epochs=args.align_epochs, classify_epochs=args.classify_epochs,
                                batch_size=args.batch_size)
        started = time.perf_counter()
        run = quickstart(str(output), sizes=sizes)
        results["vlm_seconds"] = round(time.perf_counter() - started, 1)
        results["vlm_score_mode"] = run["test"]
        generate = evaluate(EvalConfig(task="classify", model=str(output / "classify"), data="zoo:fashion-mnist",
                                       split="test", max_samples=args.test_images, mode="generate",
                                       output=str(output / "eval-generate")))
        results["vlm_generate_mode"] = {k: v for k, v in generate.items() if isinstance(v, (int, float))}
    output.mkdir(parents=True, exist_ok=True)
    (output / "benchmark.json").write_text(json.dumps(results, indent=2))
    print(f"\nFashion-MNIST test accuracy ({args.test_images} test images, {args.train_images} training images, "
          f"{args.image_size} px) on {results['hardware']}")
    if not args.skip_vlm:
        print(f"  composed VLM, score mode     {results['vlm_score_mode']['accuracy']:.4f}")
        print(f"  composed VLM, generate mode  {results['vlm_generate_mode']['accuracy']:.4f}")
    print(f"  DINOv2-S linear probe        {results['dinov2_linear_probe']['accuracy']:.4f}")
    for name, value in results["published"].items():
        print(f"  published: {name:24} {value:.3f}  (full training set)")


if __name__ == "__main__":
    main()
