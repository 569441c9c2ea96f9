"""Every GPU measurement side by side, in one command that fits in about 9 minutes on one H100/H200.

    PYTHONPATH=src python benchmarks/gpu_suite.py            # on the device machine, from the working tree
    PYTHONPATH=src python benchmarks/gpu_suite.py --smoke    # tiny sizes, any machine: does every section run?

Nothing is downloaded: the model is SmolVLM-256M's architecture built from config (random weights, a toy
tokenizer; same shapes and FLOPs), the images are generated, the detector's backbone is DINOv2-S's
architecture from config. Sections, each in its own processes with its own time limit:

- train:    `train_throughput.py`: the common recipe (batch 2, gradient checkpointing, full-sequence loss),
            TRL's SFTTrainer (if trl is installed; it travels as a wheel), visiontune with and without the
            feature cache; 10 tiles of 512 px per image, LoRA r=2; samples/s, peak memory, visiontune's MFU.
- generate: `caption_generation.py`: batch-4 default `generate` against visiontune's Predictor.
- detector: the dedicated detector's images/s at 640 px, bf16, batch 32, with the default (local-peak) decoding.

Writes runs/gpu-suite/results.json and prints the rows for BENCHMARKS.md. The TRL side needs trl and datasets
(with pyarrow) on the device: download their wheels here for Python 3.12 (`pip download trl datasets pyarrow
--no-deps --python-version 3.12 --only-binary :all: -d shared/wheels`) and install them there with `pip install
--no-deps shared/wheels/*.whl` before the run; without them that side reports the import error and the rest runs.
Checked end to end on a CPU with `--smoke` (trl 1.16 with transformers 5.24).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(command: list[str], limit: float) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent / "src"),
                                                                      os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, env=env, check=False)
    except subprocess.TimeoutExpired as expired:
        return 124, expired.stdout or "", f"timed out after {limit:.0f} s"
    return done.returncode, done.stdout, done.stderr


def json_lines(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        line = line.removeprefix("RESULT ").strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def build_inputs(root: Path, smoke: bool) -> dict:
    from visiontune.data.builtin.shapes import write_shapes_dataset
    from visiontune.models.tiny import build_tiny_model

    family = "smolvlm" if smoke else "smolvlm-256m-architecture"
    model = build_tiny_model(family, root / family)
    # 1536 px squares: 3 x 3 tiles of 512 px + the global one = 10 tiles per image
    data = write_shapes_dataset(root / "data", count=16 if smoke else 128, size=128 if smoke else 1536)["jsonl"]
    backbone = root / "dinov2-small-architecture"
    if not backbone.is_dir():
        from transformers import Dinov2Config, Dinov2Model

        size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if smoke else \
            dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)
        Dinov2Model(Dinov2Config(patch_size=14, image_size=518, **size)).save_pretrained(backbone)
    return {"model": str(model), "data": str(data), "backbone": str(backbone)}


def detector_throughput(backbone: str, size: int, batch: int) -> dict:
    """Images/s of detect() on random pixels, bf16 autocast on a GPU (a child process runs this)."""
    import torch

    sys.path.insert(0, str(HERE))
    from detector import model_throughput
    from visiontune.detector import Detector

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    detector = Detector.create([f"class{i}" for i in range(10)], backbone=backbone, log=lambda *_: None)
    bf16 = device.type == "cuda"
    seconds = 10.0 if device.type == "cuda" else 2.0
    return {"device": torch.cuda.get_device_name(0) if bf16 else "cpu", "input": size, "batch": batch,
            "precision": "bf16" if bf16 else "fp32",
            "images_per_second": round(model_throughput(detector, size, batch, device, bf16, seconds=seconds), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="runs/gpu-suite")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every section runs")
    parser.add_argument("--only", nargs="+", choices=("train", "generate", "detector"),
                        default=["train", "generate", "detector"])
    parser.add_argument("--detector-child", nargs=3, metavar=("BACKBONE", "SIZE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.detector_child:
        backbone, size, batch = args.detector_child
        print(json.dumps(detector_throughput(backbone, int(size), int(batch))))
        return
    root = Path(args.output)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    inputs = build_inputs(root, args.smoke)
    results: dict = {"smoke": args.smoke, "inputs": inputs}
    python = sys.executable
    if "train" in args.only:
        steps = "3" if args.smoke else "30"
        command = [python, str(HERE / "train_throughput.py"), "--model", inputs["model"], "--data", inputs["data"],
                   "--count", "16" if args.smoke else "128", "--steps", steps, "--batch", "4" if args.smoke else "16",
                   "--baseline-batch", "2", "--trl", "--trl-batch", "2" if args.smoke else "4",
                   "--json", str(root / "train.json")]
        if not args.smoke:
            command += ["--image-size", "1536"]
        code, out, err = run(command, 120 if args.smoke else 330)
        results["train"] = json.loads((root / "train.json").read_text()) if (root / "train.json").is_file() else \
            {"error": err.strip().splitlines()[-3:], "code": code, "partial": json_lines(out)}
    if "generate" in args.only:
        command = [python, str(HERE / "caption_generation.py"), "--model", inputs["model"],
                   "--images", "8" if args.smoke else "128", "--batch", "8" if args.smoke else "64",
                   "--max-new-tokens", "8" if args.smoke else "48"]
        code, out, err = run(command, 120 if args.smoke else 150)
        results["generate"] = {"code": code, "output": out.strip().splitlines()[-4:],
                               "error": err.strip().splitlines()[-3:] if code else None}
    if "detector" in args.only:
        size, batch = ("64", "2") if args.smoke else ("640", "32")
        code, out, err = run([python, __file__, "--detector-child", inputs["backbone"], size, batch],
                             120 if args.smoke else 90)
        rows = json_lines(out)
        results["detector"] = rows[-1] if rows else {"error": err.strip().splitlines()[-3:], "code": code}
    results["seconds"] = round(time.perf_counter() - started, 1)
    (root / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "inputs"}, indent=1))
    print(f"wrote {root / 'results.json'} in {results['seconds']} s")


if __name__ == "__main__":
    main()
