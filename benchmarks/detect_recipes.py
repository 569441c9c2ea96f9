"""Detection recipes side by side: the known SmolVLM-on-COCO experiment's recipe vs visiontune's defaults.

Same data, same model, same step budget and learning rate; only the recipe differs:
- known:      per-class queries, the largest box of each class only (`--max-objects 1`), no negative
              queries, no class balancing;
- visiontune: per-class queries, every box, 25 % negative queries (answer `none`), class-balanced sampling.
Data: generated canvases (`write_shape_detection`) with 2-6 shapes each, small and large, so a class often
has several boxes in an image and is often absent; train and test drawn with different seeds. Reports COCO
AP (50:95), AP50, APs/APm/APl, AR100, negative-query hallucination and parse-failure rates on the test set.
    visiontune tiny-model --family smolvlm --output /tmp/bench-tiny
    python benchmarks/detect_recipes.py --model /tmp/bench-tiny
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RECIPES = {
    "known": dict(max_objects=1, negatives=0.0, balance="none"),
    "visiontune": dict(negatives=0.25, balance="sampler"),
}
REPORTED = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "hallucination_rate", "parse_failure_rate")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="base model (e.g. visiontune tiny-model --family smolvlm)")
    parser.add_argument("--train-images", type=int, default=96)
    parser.add_argument("--test-images", type=int, default=48)
    parser.add_argument("--steps", type=int, default=1200, help="optimizer steps, the same for both recipes")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--train", default=None, help="parts to train, e.g. all (the tiny model's vision is random)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--image-size", type=int, default=None, help="longest image edge the processor uses")
    parser.add_argument("--colour-by-class", action="store_true", help="each shape class has its own colour")
    parser.add_argument("--score-on", default="test", choices=("test", "train"),
                        help="train: what each recipe teaches (fit on the training images), not generalisation")
    parser.add_argument("--output", default=None, help="folder for the runs and a results.json (default: a temp dir)")
    args = parser.parse_args()
    from visiontune.api.evaluate import evaluate
    from visiontune.api.train import train
    from visiontune.data.builtin.shapes import write_shape_detection

    root = Path(args.output or tempfile.mkdtemp())
    shapes = dict(objects=(2, 6), colour_by_class=args.colour_by_class)
    train_data = write_shape_detection(root / "train", count=args.train_images, seed=11, **shapes)
    test_data = write_shape_detection(root / "test", count=args.test_images, seed=12, **shapes)
    quiet = {"log": lambda *_: None}
    results = {}
    for name in args.recipes:
        start = time.perf_counter()
        train(task="detect", model=args.model, data=str(train_data), output=str(root / name), overwrite=True, max_steps=args.steps,
              batch_size=args.batch, learning_rate=args.learning_rate, warmup_ratio=0.03, lora_r=32, lora_alpha=64,
              lora_dropout=0.0, num_workers=0, report_to="none", logging_steps=100, save_total_limit=1,
              train=args.train, image_size=args.image_size, **RECIPES[name], **quiet)
        trained = time.perf_counter() - start
        metrics = evaluate(model=str(root / name), data=str(test_data if args.score_on == "test" else train_data), output=str(root / name / "eval"),
                           batch_size=24, **quiet)
        results[name] = {key: round(metrics[key], 4) for key in REPORTED}
        results[name].update(train_seconds=round(trained, 1), predicted_boxes=metrics["predicted_boxes"],
                             true_boxes=metrics["true_boxes"])
        print(name, json.dumps(results[name]), flush=True)
    if {"known", "visiontune"} <= set(results) and results["known"]["AP"] > 0:
        print(f"AP ratio visiontune / known: {results['visiontune']['AP'] / results['known']['AP']:.2f}")
    (root / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"runs and results.json under {root}")


if __name__ == "__main__":
    main()
