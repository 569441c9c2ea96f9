"""QLoRA against LoRA, the same run otherwise: peak memory, samples/s and the loss reached.

Model: the offline zoo's composed VLM (DINOv2-S + SmolLM2-135M-Instruct, 112 px; `--model` for another), LoRA
on its language model (QLoRA: the LM's linear layers in nf4 with double quantization). Data: Fashion-MNIST
classification from the zoo. Each method trains in its own process (the CPU's peak resident memory only
grows), for the same steps on the same examples; on a GPU the peak is torch's allocated memory.

    python benchmarks/qlora.py                         # 20 steps, batch 8
    python benchmarks/qlora.py --steps 60 --batch-size 32 --model HuggingFaceTB/SmolVLM-256M-Instruct
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def composed_model(folder: Path) -> Path:
    from visiontune.models.compose.build import compose

    return compose("dinov2-small", "smollm2-135m-instruct", folder / "composed", image_size=112, log=lambda *_: None)


def train_once(model: str, method: str, output: Path, steps: int, batch: int) -> dict:
    command = [sys.executable, "-m", "visiontune", "train", "--task", "classify", "--model", model,
               "--data", "zoo:fashion-mnist", "--split", "train[:55000]", "--shuffle", "--max-samples",
               str(steps * batch), "--method", method, "--max-steps", str(steps), "--batch-size", str(batch),
               "--no-probe-start", "--no-keep-skills", "--no-preflight", "--logging-steps", "5",
               "--num-workers", "0", "--report-to", "none", "--output", str(output), "--overwrite"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((output / "summary.json").read_text())
    losses = [e["loss"] for e in json.loads((output / f"checkpoint-{steps}" / "trainer_state.json").read_text())
              ["log_history"] if "loss" in e]
    return {"method": method, "samples_per_second": summary["samples_per_second"],
            "peak_GiB": round(summary["peak_bytes"] / 2**30, 3), "device": summary["device"],
            "first_loss": round(losses[0], 3), "last_loss": round(losses[-1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="default: the zoo's composed VLM, built here")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model = args.model or str(composed_model(folder))
        rows = [train_once(model, method, folder / method, args.steps, args.batch_size) for method in ("lora", "qlora")]
    for row in rows:
        print(json.dumps(row))
    lora, qlora = rows
    print(f"QLoRA / LoRA: peak memory {qlora['peak_GiB'] / lora['peak_GiB']:.2f}x, samples/s "
          f"{qlora['samples_per_second'] / lora['samples_per_second']:.2f}x ({lora['device']})")


if __name__ == "__main__":
    main()
