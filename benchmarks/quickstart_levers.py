"""The quickstart's accuracy levers, one at a time: its stage 2 (classify) from one finished quickstart's aligned
model with one setting changed, then its test pass. Every lever starts from the same aligned model, so the rows
differ only by the lever (and the CPU's run-to-run spread, about ±1.5 points on 1,000 test images).

    python -m visiontune quickstart --output runs/quickstart          # once: the aligned model
    python benchmarks/quickstart_levers.py --quickstart runs/quickstart
    python benchmarks/quickstart_levers.py --quickstart runs/quickstart --only default "projector at 1e-3"
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

# Each lever: (QuickstartSizes fields, TrainConfig fields) that differ from the quickstart's defaults.
LEVERS = {
    "default": ({}, {}),
    "projector at 1e-3 (the LoRA's rate)": ({}, {"connector_learning_rate": 1e-3}),
    "probe on the 1,600 fine-tuning images, 1 epoch": ({"train_images": 1600, "classify_epochs": 1.0}, {}),
    "no self-replay": ({}, {"keep_skills": False}),
    "half an epoch (1,600 of the 3,200 images)": ({"classify_epochs": 0.5}, {}),
    "probe on 6,400 images, 0.2 epoch": ({"train_images": 6400, "classify_epochs": 0.2}, {}),
}


def run_lever(name: str, quickstart_root: Path, output: Path) -> dict:
    from visiontune.api.evaluate import evaluate
    from visiontune.api.train import train
    from visiontune.quickstart import QuickstartSizes, classify_config, test_config

    size_fields, train_fields = LEVERS[name]
    sizes = replace(QuickstartSizes(), **size_fields)
    folder = output / name.split(" (")[0].replace(" ", "-").replace(",", "")
    started = time.perf_counter()
    trained = train(classify_config(sizes, quickstart_root, output=str(folder / "classify"), report_to="none",
                                    **train_fields), log=lambda *_: None)
    train_minutes = (time.perf_counter() - started) / 60
    test = evaluate(test_config(sizes, folder / "classify", folder / "eval"), log=lambda *_: None)
    return {"name": name, "accuracy": round(test["accuracy"], 4), "ece": round(test.get("ece", float("nan")), 4),
            "macro_f1": round(test["macro_f1"], 4), "validation_accuracy": trained.get("eval_accuracy"),
            "train_minutes": round(train_minutes, 1), "steps": trained.get("steps"),
            "phase_seconds": trained.get("phase_seconds")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quickstart", required=True, help="a finished quickstart run (its align/ is the start)")
    parser.add_argument("--output", default="runs/bench-quickstart-levers")
    parser.add_argument("--only", nargs="+", choices=list(LEVERS), default=list(LEVERS))
    args = parser.parse_args()
    root = Path(args.quickstart)
    if not (root / "align").is_dir():
        raise SystemExit(f"{root / 'align'} is missing: run `python -m visiontune quickstart --output {root}` first")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results_file = output / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for name in args.only:
        row = run_lever(name, root, output)
        results[name] = {**row, "hardware": f"{platform.processor() or platform.machine()}"}
        results_file.write_text(json.dumps(results, indent=2))
        print(json.dumps(row), flush=True)
    print(f"results: {results_file}")


if __name__ == "__main__":
    main()
