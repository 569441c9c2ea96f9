"""Alignment data at LLaVA-CC3M-Pretrain-595K's scale: does a 595K-row `chat.json` with its images in a zip start
and train like a 1K-row one?

Data: `chat.json` in LLaVA's layout ({"id", "image": "GCC_train_000000000.jpg", "conversations": [human
"<image>" prompt, gpt caption]}) with ROWS rows, over a few hundred real JPEG photographs (crops of the two
photographs scikit-learn ships, 256-384 px) stored in `images.zip` under an `images/` folder; row i shows
image i mod the photo count. Model: a tiny composed VLM (the cost is the data path, not the model).

Each size runs `visiontune train --task chat --train projector` for a fixed number of steps with 2 DataLoader
workers in its own process, sampled every 0.1 s for the resident memory of the whole process tree (main
process and workers), with a cache folder of its own (the row index is built in the run, as on a first run).
Reported per size: wall time, start-up (wall time less the training phase: everything
before the first step), peak resident memory, and images/s over the steps; then the 595K run against the 1K
run.

    python benchmarks/data_scale.py                      # 1,000 and 595,375 rows, 20 steps
    python benchmarks/data_scale.py --rows 1000 100000 --steps 10
    python benchmarks/data_scale.py --model runs/quickstart/composed --batch-size 64 --steps 60   # a GPU: stage 1's rate
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import psutil

LLAVA_ROWS = 595_375
PROMPTS = ("Give a brief description of the image.\n<image>", "<image>\nDescribe the image concisely.",
           "Write a terse but informative summary of the picture.\n<image>")


def write_photos(archive: Path, count: int, seed: int = 0) -> list[str]:
    """`count` JPEG crops of scikit-learn's sample photographs in `archive` (under images/); their names."""
    from io import BytesIO

    from sklearn.datasets import load_sample_images

    from PIL import Image

    photos = [Image.fromarray(array) for array in load_sample_images().images]
    rng = random.Random(seed)
    names = []
    with zipfile.ZipFile(archive, "w") as output:
        for index in range(count):
            photo = rng.choice(photos)
            side = rng.randint(256, 384)
            left, top = rng.randint(0, photo.width - side), rng.randint(0, photo.height - side)
            buffer = BytesIO()
            photo.crop((left, top, left + side, top + side)).save(buffer, format="JPEG", quality=90)
            names.append(f"GCC_train_{index:09d}.jpg")
            output.writestr(f"images/{names[-1]}", buffer.getvalue())
    return names


def write_chat(path: Path, rows: int, names: list[str]) -> None:
    """LLaVA's chat.json layout, written row by row."""
    with path.open("w") as handle:
        handle.write("[")
        for index in range(rows):
            row = {"id": f"GCC_train_{index:09d}", "image": names[index % len(names)],
                   "conversations": [{"from": "human", "value": PROMPTS[index % len(PROMPTS)]},
                                     {"from": "gpt", "value": f"a photograph of a scene, number {index}"}]}
            handle.write(("," if index else "") + json.dumps(row))
        handle.write("]")


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_once(model: Path, data: Path, images: Path, output: Path, steps: int, workers: int, batch: int) -> dict:
    command = [sys.executable, "-m", "visiontune", "train", "--task", "chat", "--model", str(model), "--data",
               str(data), "--images-dir", str(images), "--train", "projector", "--max-steps", str(steps),
               "--batch-size", str(batch), "--num-workers", str(workers), "--output", str(output), "--overwrite",
               "--report-to", "none", "--no-preflight", "--no-measure-mfu", "--logging-steps", str(steps)]
    # A cache folder of its own: the row index is built in this run, as on a user's first run.
    env = {**os.environ, "VISIONTUNE_CACHE": str(output.parent / f"cache-{output.name}")}
    started = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss(process))
        time.sleep(0.1)
    wall = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(process.stderr.read()[-3000:])
    summary = json.loads((output / "summary.json").read_text())
    train_seconds = summary["phase_seconds"]["train"]
    return {"wall_seconds": round(wall, 1), "startup_seconds": round(wall - train_seconds, 1),
            "peak_rss_gib": round(peak / 2**30, 2), "images_per_second": summary["samples_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, LLAVA_ROWS])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default=None, help="a composed VLM to align (default: a tiny one); with a real "
                                                      "one on a GPU, the images/s give stage 1's time at 595K rows")
    parser.add_argument("--folder", default=None, help="where the data and runs go (default: a temporary folder)")
    args = parser.parse_args()
    from visiontune.models.tiny import build_tiny_composed

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.folder or scratch)
        root.mkdir(parents=True, exist_ok=True)
        model = Path(args.model) if args.model else build_tiny_composed(root / "model", image_size=224)
        names = write_photos(root / "images.zip", args.photos)
        results = {}
        for rows in args.rows:
            data = root / f"chat-{rows}.json"
            write_chat(data, rows, names)
            results[rows] = {"chat_json_mb": round(data.stat().st_size / 2**20, 1),
                             **run_once(model, data, root / "images.zip", root / f"run-{rows}", args.steps,
                                        args.workers, args.batch_size)}
            print(json.dumps({"rows": rows, **results[rows]}), flush=True)
        small, large = results[min(args.rows)], results[max(args.rows)]
        print(json.dumps({"wall_seconds_more": round(large["wall_seconds"] - small["wall_seconds"], 1),
                          "peak_rss_gib_more": round(large["peak_rss_gib"] - small["peak_rss_gib"], 2),
                          "images_per_second_ratio": round(large["images_per_second"] / small["images_per_second"], 3),
                          "hours_for_595k_rows_at_this_rate": round(LLAVA_ROWS / large["images_per_second"] / 3600, 2)}))


if __name__ == "__main__":
    main()
