"""The torch-free ONNX runtime (fp32, int8, q4) against PyTorch fp32: images/s, accuracy and file sizes, side by side.

Same images, same batch, model loading excluded, each side warmed up on two images first. Classification in
score mode (`--classify-model`, e.g. the quickstart's classify run, on Fashion-MNIST test images) and caption
generation (`--caption-model`, e.g. the quickstart's aligned model, greedy, `--new-tokens`). Each model is
exported once (`visiontune export --quantize int8 q4`) into a temporary folder unless `--keep` names one.
    python benchmarks/export_runtime.py --classify-model runs/quickstart/classify \
        --caption-model runs/quickstart/align --count 200
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

VARIANTS = ("fp32", "int8", "q4")


def _sides(model: str, export: Path) -> dict[str, tuple[str, str]]:
    return {"pytorch-fp32": (model, "fp32"), **{f"onnx-{v}": (str(export / "onnx"), v) for v in VARIANTS}}


def _timed(predictor, images: list) -> tuple[list[dict], float]:
    predictor.predict(images[:2], progress=False)  # warm-up: first-call allocations, thread pools
    start = time.perf_counter()
    rows = predictor.predict(images, progress=False)
    return rows, time.perf_counter() - start


def run(model: str, task: str, images: list, truth: list[str] | None, batch: int, new_tokens: int,
        folder: Path) -> dict:
    from visiontune.api.predict import load_predictor
    from visiontune.export.onnx_export import export_onnx

    report = export_onnx(model, str(folder), quantize=["int8", "q4"], log=lambda *_: None)
    results, reference = {}, None
    for side, (path, dtype) in _sides(model, folder).items():
        predictor = load_predictor(path, task=task, dtype=dtype, batch_size=batch, log=lambda *_: None,
                                   max_new_tokens=new_tokens, mode="score" if task == "classify" else None)
        rows, seconds = _timed(predictor, images)
        answers = [row["prediction"] if "prediction" in row else row["label"] for row in rows]
        reference = reference or answers
        variant = "fp32" if side.startswith("pytorch") else side.split("-")[1]
        result = {"images_per_second": round(len(images) / seconds, 2),
                  "same_answers_as_pytorch": round(sum(a == b for a, b in zip(answers, reference)) / len(images), 4)}
        if truth is not None:
            result["accuracy"] = round(sum(a == t for a, t in zip(answers, truth)) / len(images), 4)
        if side.startswith("onnx"):
            result["megabytes"] = report["variants"][variant]["megabytes"]
            result["max_abs_logit_difference"] = report["variants"][variant]["max_abs_logit_difference"]
        results[side] = result
        print(side, json.dumps(result), flush=True)
    base = results["pytorch-fp32"]["images_per_second"]
    for result in results.values():
        result["speed_vs_pytorch"] = round(result["images_per_second"] / base, 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classify-model", help="a classify run (score mode on --data)")
    parser.add_argument("--caption-model", help="a caption model or run (greedy captions of the same images)")
    parser.add_argument("--data", default="zoo:fashion-mnist")
    parser.add_argument("--split", default="test")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=16, help="caption generation: new tokens at most")
    parser.add_argument("--keep", help="write the exports here (default: a temporary folder)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    import torch

    from visiontune.data.loading import DataSpec, load_labelled_records

    records, _ = load_labelled_records(DataSpec(path=args.data, split=args.split if args.data.startswith("zoo:")
                                                else None, max_samples=args.count))
    images, truth = [r.load_image() for r in records], [r.label for r in records]
    root = Path(args.keep or tempfile.mkdtemp())
    out = {"images": len(images), "batch": args.batch, "threads": torch.get_num_threads()}
    if args.classify_model:
        out["classify"] = run(args.classify_model, "classify", images, truth, args.batch, args.new_tokens,
                              root / "classify")
    if args.caption_model:
        out["caption"] = run(args.caption_model, "caption", images, None, args.batch, args.new_tokens,
                             root / "caption")
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
