"""`visiontune detector train|predict|eval|export`: the dedicated detector's command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PEAK_HELP = "override the model's peak window (0: the plain top-k of every position; PyTorch models)"


def add_detector_commands(commands, add_dataclass_options) -> None:
    from .config import DetectorTrainSettings

    detector = commands.add_parser("detector", help="a small dedicated detector: frozen ViT, simple pyramid, NMS-free")
    actions = detector.add_subparsers(dest="detector_command", required=True)
    train = actions.add_parser("train", help="train neck + head (+ LoRA) on a frozen pretrained ViT")
    add_dataclass_options(train, DetectorTrainSettings)

    predict = actions.add_parser("predict", help="detect objects in images, files, URLs or folders")
    predict.add_argument("--model", required=True, help="a trained detector folder, or an exported .onnx (torch-free)")
    predict.add_argument("--images", nargs="+", required=True, help="image files, folders or URLs")
    predict.add_argument("--output", help="write predictions here (JSON); default: print JSON lines")
    predict.add_argument("--draw", help="write each image with its boxes into this folder")
    predict.add_argument("--threshold", type=float, help="lowest score reported (default: the model's)")
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--device", default="auto", help="auto | cpu | cuda (PyTorch models)")
    predict.add_argument("--peak-window", type=int, help=PEAK_HELP)

    evaluate = actions.add_parser("eval", help="COCO mAP, duplicate rate and overlays on a labelled dataset")
    evaluate.add_argument("--model", required=True, help="a trained detector folder, or an exported .onnx")
    evaluate.add_argument("--data", required=True, help="COCO instances JSON, YOLO folder or HF dataset")
    evaluate.add_argument("--images-dir", help="where the COCO file's images are")
    evaluate.add_argument("--format", default="auto")
    evaluate.add_argument("--split")
    evaluate.add_argument("--max-samples", type=int)
    evaluate.add_argument("--output", help="folder for metrics.json, detections.json and overlays/")
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--peak-window", type=int, help=PEAK_HELP)

    export = actions.add_parser("export", help="ONNX (dynamic batch), checked against PyTorch; --fp16 or --int8")
    export.add_argument("--model", required=True, help="a trained detector folder")
    export.add_argument("--format", default="onnx", choices=["onnx"])
    export.add_argument("--output", required=True, help="the .onnx file to write")
    precision = export.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="float16 weights and compute")
    precision.add_argument("--int8", action="store_true", help="int8 quantization (dynamic, or static with "
                                                                "--calibration-data)")
    export.add_argument("--calibration-data", help="int8 static: labelled or unlabelled data whose images calibrate")
    export.add_argument("--calibration-images", type=int, default=64, help="how many calibration images")
    export.add_argument("--eval-data", help="report the mAP of PyTorch, fp32 ONNX and this export on this data")
    export.add_argument("--eval-images-dir")
    export.add_argument("--max-samples", type=int, help="evaluate on the first N images of --eval-data")
    export.add_argument("--peak-window", type=int, help="override the model's peak window in the exported graph")


def _load_model(reference: str, device: str, peak_window: int | None = None):
    """(predict function, classes, threshold) for a detector folder or an .onnx file."""
    if reference.endswith(".onnx"):
        if peak_window is not None:
            raise ValueError(f"--peak-window: {reference} has its decoding built into the graph; pass the trained "
                             "detector folder, or export it again with `detector export --peak-window`")
        from .deploy.onnx_detector import OnnxDetector

        model = OnnxDetector(reference)
        return model.predict, model.classes, model.score_threshold
    from .models.detector.model import Detector
    from .models.detector.train import resolve_device

    model = Detector.from_pretrained(reference, device=resolve_device(device), peak_window=peak_window)
    return model.predict, model.config.classes, model.config.score_threshold


def _eval_records(path: str, classes: list[str], images_dir=None, data_format="auto", split=None, max_samples=None):
    from .data.loading import DataSpec, load_box_records

    spec = DataSpec(path, format=data_format, split=split, images_dir=images_dir, max_samples=max_samples)
    return load_box_records(spec, classes, log=print)


def run_detector_command(args: argparse.Namespace, overrides) -> None:
    if args.detector_command == "train":
        from .config import DetectorTrainSettings
        from .models.detector.train import train_detector

        train_detector(DetectorTrainSettings(**overrides(args, DetectorTrainSettings)))
    elif args.detector_command == "predict":
        _predict(args)
    elif args.detector_command == "eval":
        _evaluate(args)
    elif args.detector_command == "export":
        _export(args)


def _predict(args) -> None:
    from .data.images import expand_image_inputs, load_image

    predict, classes, default_threshold = _load_model(args.model, args.device, args.peak_window)
    threshold = default_threshold if args.threshold is None else args.threshold
    files = expand_image_inputs(args.images)
    rows = []
    for start in range(0, len(files), args.batch_size):
        images = [load_image(item) for item in files[start:start + args.batch_size]]
        for item, image, result in zip(files[start:], images, predict(images, threshold=threshold)):
            rows.append({"image": str(item), "width": image.width, "height": image.height, **result})
            if args.draw:
                from .report.boxes import draw_boxes

                Path(args.draw).mkdir(parents=True, exist_ok=True)
                draw_boxes(image, result["boxes"], classes=classes, with_labels=True).save(
                    Path(args.draw) / f"{len(rows) - 1:05d}_{Path(str(item)).stem}.png")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(rows, indent=1))
        print(f"wrote {len(rows)} images' detections to {args.output}")
    else:
        for row in rows:
            print(json.dumps(row))


def _evaluate(args) -> dict:
    from .models.detector.evaluation import run_and_score, write_metrics, write_overlays

    predict, classes, threshold = _load_model(args.model, args.device, args.peak_window)
    records, classes, category_ids = _eval_records(args.data, classes, args.images_dir, args.format, args.split,
                                                   args.max_samples)
    metrics, predictions = run_and_score(lambda images: predict(images, threshold=0.0), records, classes,
                                         category_ids, threshold, args.batch_size)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("detections",)}, indent=1))
    if args.output:
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        write_metrics(output / "metrics.json", metrics)
        (output / "detections.json").write_text(json.dumps(metrics["detections"]))
        write_overlays(output / "overlays", records, predictions, classes, threshold)
        print(f"wrote {output / 'metrics.json'}, detections.json and overlays/")
    return metrics


def _export(args) -> dict:
    from .models.detector.export import export_detector

    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    calibration = None
    if args.calibration_data:
        if precision != "int8":
            raise ValueError("--calibration-data is for --int8 (static quantization)")
        from .models.detector.config import DetectorConfig

        records, _, _ = _eval_records(args.calibration_data, DetectorConfig.load(args.model).classes,
                                      max_samples=args.calibration_images)
        calibration = [record.load_image() for record in records]
    report = export_detector(args.model, args.output, precision, calibration, peak_window=args.peak_window)
    if args.eval_data:
        report["mAP"] = compare_exports_map(args.model, report, args.eval_data, args.eval_images_dir, args.max_samples,
                                            args.peak_window)
    Path(args.output).with_suffix(".report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


def compare_exports_map(model_dir: str, report: dict, data: str, images_dir=None, max_samples=None,
                        peak_window: int | None = None) -> dict:
    """AP / AP50 of the PyTorch model, the fp32 ONNX and the chosen export on the same images."""
    from .deploy.onnx_detector import OnnxDetector
    from .models.detector.evaluation import run_and_score
    from .models.detector.model import Detector

    torch_model = Detector.from_pretrained(model_dir, peak_window=peak_window)
    records, classes, category_ids = _eval_records(data, torch_model.config.classes, images_dir, max_samples=max_samples)
    runs = {"pytorch": torch_model.predict, "onnx_fp32": OnnxDetector(report["fp32"]).predict}
    if report["precision"] != "fp32":
        runs[f"onnx_{report['precision']}"] = OnnxDetector(report["output"]).predict
    table = {}
    for name, predict in runs.items():
        metrics, _ = run_and_score(lambda images, p=predict: p(images, threshold=0.0), records, classes, category_ids,
                                   torch_model.config.score_threshold)
        table[name] = {"AP": metrics["AP"], "AP50": metrics["AP50"], "images_per_second": metrics["images_per_second"]}
    last = list(table)[-1]
    table["AP_change_points"] = 100 * (table[last]["AP"] - table["onnx_fp32"]["AP"])
    print(f"mAP on {len(records)} images: " + ", ".join(f"{k} AP {v['AP']:.4f}" for k, v in table.items() if isinstance(v, dict))
          + f"; {last} vs fp32: {table['AP_change_points']:+.2f} points")
    return table
