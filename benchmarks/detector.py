"""The dedicated detector on zoo canvases (real Fashion-MNIST items, 1-6 per canvas): COCO mAP, duplicate
rate without NMS, parameters, images/s (PyTorch model-only at 640 px, bf16 on GPU / fp32 on CPU; end-to-end
predict), and ONNX fp32 vs int8 (mAP and CPU images/s). Optionally the VLM `detect` task on the same split.

    python benchmarks/detector.py                         # CPU-sized run (small split, few epochs)
    python benchmarks/detector.py --train 3000 --val 500 --epochs 24 --workers 12   # the GPU run
    python benchmarks/detector.py --throughput-only --model runs/bench_detector/model

`--items DIR` reads Fashion-MNIST idx files from DIR instead of the zoo's Debian package (for a machine that
has the files but not the package); `--backbone` takes a hub id, folder or zoo name.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def write_split(folder: Path, count: int, seed: int, split: str, args) -> Path:
    from visiontune.zoo.canvases import write_canvases

    if (folder / "instances.json").is_file():
        return folder / "instances.json"
    source = args.items or "zoo:fashion-mnist"
    paths = write_canvases(folder, count=count, seed=seed, size=args.canvas_size, objects=(1, args.max_objects),
                           scale=(args.canvas_size // 8, args.canvas_size * 3 // 8), classes_per_canvas=3,
                           split=split, source=source)
    return paths["instances"]


@torch.no_grad()
def model_throughput(detector, image_size: int, batch: int, device: torch.device, bf16: bool, seconds: float = 10.0,
                     compile_model: bool = False) -> float:
    """Images/s of detect() (backbone -> top-k) on random pixels; preprocessing excluded."""
    model = detector.to(device).eval()
    run = torch.compile(model.detect) if compile_model else model.detect
    pixels = torch.rand(batch, 3, image_size, image_size, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for _ in range(3):
            run(pixels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started, images = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            run(pixels)
            images += batch
        if device.type == "cuda":
            torch.cuda.synchronize()
    return images / (time.perf_counter() - started)


def plain_top_k_eval(model_dir: Path, val_json: Path) -> dict:
    """The saved model's scores without local-peak decoding (peak_window 0): the one-to-one head on its own."""
    from visiontune.data.loading import DataSpec, load_box_records
    from visiontune.detector.evaluation import run_and_score
    from visiontune.detector.model import Detector

    model = Detector.from_pretrained(model_dir, device="cuda" if torch.cuda.is_available() else "cpu", peak_window=0)
    records, classes, ids = load_box_records(DataSpec(str(val_json)), model.config.classes, log=lambda *_: None)
    metrics, _ = run_and_score(lambda images: model.predict(images, threshold=0.0), records, classes, ids,
                               model.config.score_threshold)
    keys = ("AP", "AP50", "AR100", "duplicate_rate", "f1", "f1_threshold", "duplicate_rate_at_f1_threshold")
    row = {k: metrics.get(k) for k in keys}
    print("without local-peak decoding:", json.dumps(row))
    return row


def onnx_comparison(model_dir: Path, val_json: Path, output: Path, max_samples: int) -> dict:
    from visiontune.detector.commands import compare_exports_map
    from visiontune.detector.export import export_detector

    report = export_detector(model_dir, output / "detector.int8.onnx", "int8")
    return {"int8_mode": report["int8_mode"], "fp32_mb": report["fp32_size_mb"], "int8_mb": report["size_mb"],
            "fp32_vs_torch": report["fp32_vs_torch"],
            **compare_exports_map(str(model_dir), report, str(val_json), max_samples=max_samples)}


def vlm_detect(args, train_json: Path, val_json: Path, output: Path) -> dict:
    """The VLM `detect` task (boxes as text) trained and scored on the same canvases."""
    from visiontune.api.evaluate import evaluate
    from visiontune.api.train import train

    quiet = {"log": lambda *_: None}
    started = time.perf_counter()
    train(task="detect", model=args.vlm, data=str(train_json), output=str(output / "vlm"), overwrite=True, epochs=args.vlm_epochs,
          batch_size=args.vlm_batch_size, learning_rate=args.vlm_learning_rate, num_workers=args.workers,
          report_to="none", save_total_limit=1, image_size=args.vlm_image_size, **quiet)
    trained = time.perf_counter() - started
    started = time.perf_counter()
    metrics = evaluate(model=str(output / "vlm"), data=str(val_json), output=str(output / "vlm" / "eval"),
                       batch_size=args.vlm_batch_size, **quiet)
    seconds = time.perf_counter() - started
    return {"model": args.vlm, "train_minutes": trained / 60, "images_per_second": metrics["images"] / seconds,
            **{k: metrics[k] for k in ("AP", "AP50", "AP75", "hallucination_rate", "parse_failure_rate")}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="runs/bench_detector")
    parser.add_argument("--train", type=int, default=400, help="training canvases")
    parser.add_argument("--val", type=int, default=100, help="validation canvases (items from the test split)")
    parser.add_argument("--canvas-size", type=int, default=320)
    parser.add_argument("--max-objects", type=int, default=6)
    parser.add_argument("--items", default=None, help="folder of Fashion-MNIST idx files (default: the zoo's)")
    parser.add_argument("--backbone", default="dinov2-small")
    parser.add_argument("--preset", default="s")
    parser.add_argument("--image-size", type=int, default=448, help="detector input side for training/eval")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lora-rank", type=int, default=0)
    parser.add_argument("--peak-window", type=int, default=None,
                        help="local-peak decoding window (default 3; 0: plain top-k); the eval without it is also reported")
    parser.add_argument("--peak-across-levels", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--throughput-size", type=int, default=640)
    parser.add_argument("--throughput-batch", type=int, default=32)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--model", default=None, help="a trained detector (skips training)")
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--onnx-samples", type=int, default=100, help="validation images for the ONNX mAP check")
    parser.add_argument("--vlm", default=None, help="also train + score the VLM detect task from this model")
    parser.add_argument("--vlm-epochs", type=int, default=3)
    parser.add_argument("--vlm-batch-size", type=int, default=8)
    parser.add_argument("--vlm-learning-rate", type=float, default=2e-4)
    parser.add_argument("--vlm-image-size", type=int, default=None)
    args = parser.parse_args()

    from visiontune.detector.config import DetectorTrainSettings
    from visiontune.detector.model import Detector
    from visiontune.detector.train import train_detector

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
                     "torch": torch.__version__, "settings": vars(args)}
    model_dir = Path(args.model) if args.model else output / "model"
    if not args.throughput_only and not args.model:
        train_json = write_split(output / "canvases_train", args.train, 0, "train", args)
        val_json = write_split(output / "canvases_val", args.val, 1, "test", args)
        started = time.perf_counter()
        summary = train_detector(DetectorTrainSettings(
            data=str(train_json), eval_data=str(val_json), output=str(model_dir), backbone=args.backbone,
            preset=args.preset, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.learning_rate, lora_rank=args.lora_rank, peak_window=args.peak_window,
            peak_across_levels=args.peak_across_levels, workers=args.workers,
            eval_every=max(1, args.epochs // 4)))
        results["train_minutes"] = (time.perf_counter() - started) / 60
        results["parameters"] = summary["parameters"]
        results["eval"] = summary["eval"]
        results["history"] = [{k: v for k, v in row.items() if k.startswith(("epoch", "eval", "loss_total", "images"))}
                              for row in summary["history"]]
        print(json.dumps(results["eval"], indent=1))
        results["eval_plain_top_k"] = plain_top_k_eval(model_dir, val_json)
    if args.vlm:
        results["vlm_detect"] = vlm_detect(args, output / "canvases_train" / "instances.json",
                                           output / "canvases_val" / "instances.json", output)
        print(json.dumps(results["vlm_detect"], indent=1))
    detector = Detector.from_pretrained(model_dir)
    results["parameters"] = detector.parameter_counts()
    bf16 = device.type == "cuda"
    batch = args.throughput_batch if device.type == "cuda" else 4
    key = f"model_{args.throughput_size}px_{'bf16' if bf16 else 'fp32'}_batch{batch}"
    results["throughput"] = {key: model_throughput(detector, args.throughput_size, batch, device, bf16)}
    plain = Detector.from_pretrained(model_dir, peak_window=0)  # the decoding's cost, side by side
    results["throughput"][f"{key}_no_peaks"] = model_throughput(plain, args.throughput_size, batch, device, bf16)
    if device.type == "cuda":
        results["throughput"][f"model_{args.throughput_size}px_bf16_batch1"] = model_throughput(
            detector, args.throughput_size, 1, device, bf16)
        if args.compile:
            results["throughput"][f"model_{args.throughput_size}px_bf16_batch{batch}_compiled"] = model_throughput(
                detector, args.throughput_size, batch, device, bf16, compile_model=True)
    print(json.dumps(results["throughput"], indent=1))
    if not args.skip_onnx and not args.throughput_only:
        results["onnx"] = onnx_comparison(model_dir, output / "canvases_val" / "instances.json", output, args.onnx_samples)
    (output / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {output / 'results.json'}")


if __name__ == "__main__":
    main()
