"""What `visiontune detector predict|eval|export` do, callable from Python with the same settings."""

from __future__ import annotations

import json
from pathlib import Path

from .config import DetectorEvalSettings, DetectorExportSettings, DetectorPredictSettings


def load_detector(reference: str, device: str, peak_window: int | None = None):
    """(predict function, classes, threshold) for a detector folder or an .onnx file."""
    if reference.endswith(".onnx"):
        if peak_window is not None:
            raise ValueError(f"--peak-window: {reference} has its decoding built into the graph; pass the trained "
                             "detector folder, or export it again with `detector export --peak-window`")
        from .runtime import OnnxDetector

        model = OnnxDetector(reference)
        return model.predict, model.classes, model.score_threshold
    from .model import Detector
    from .train import resolve_device

    model = Detector.from_pretrained(reference, device=resolve_device(device), peak_window=peak_window)
    return model.predict, model.config.classes, model.config.score_threshold


def _eval_records(path: str, classes: list[str], settings=None, **changes):
    """Labelled records of `path` for the detector's classes, read with the settings' data options."""
    from ..data.loading import DataSpec, data_spec, load_box_records, resolve_split

    spec, read = resolve_split(data_spec(path, settings, **changes) if settings is not None
                               else DataSpec(path, **changes), "eval")
    loaded = load_box_records(spec, classes, log=print)
    print(f"data: {path}: {read}, {len(loaded[0])} records")
    return loaded


def predict(settings: DetectorPredictSettings) -> None:
    from ..data.images import expand_image_inputs, load_image

    predict, classes, default_threshold = load_detector(settings.model, settings.device, settings.peak_window)
    threshold = default_threshold if settings.threshold is None else settings.threshold
    files = expand_image_inputs(settings.images)
    rows = []
    for start in range(0, len(files), settings.batch_size):
        images = [load_image(item) for item in files[start:start + settings.batch_size]]
        for item, image, result in zip(files[start:], images, predict(images, threshold=threshold)):
            rows.append({"image": str(item), "width": image.width, "height": image.height, **result})
            if settings.draw:
                from ..report.boxes import draw_boxes

                Path(settings.draw).mkdir(parents=True, exist_ok=True)
                draw_boxes(image, result["boxes"], classes=classes, with_labels=True).save(
                    Path(settings.draw) / f"{len(rows) - 1:05d}_{Path(str(item)).stem}.png")
    if settings.output:
        Path(settings.output).parent.mkdir(parents=True, exist_ok=True)
        Path(settings.output).write_text(json.dumps(rows, indent=1))
        print(f"wrote {len(rows)} images' detections to {settings.output}")
    else:
        for row in rows:
            print(json.dumps(row))


def evaluate(settings: DetectorEvalSettings) -> dict:
    from .evaluation import run_and_score, write_metrics, write_overlays

    predict, classes, threshold = load_detector(settings.model, settings.device, settings.peak_window)
    records, classes, category_ids = _eval_records(settings.data, classes, settings)
    metrics, predictions = run_and_score(lambda images: predict(images, threshold=0.0), records, classes,
                                         category_ids, threshold, settings.batch_size)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("detections",)}, indent=1))
    if settings.output:
        output = Path(settings.output)
        output.mkdir(parents=True, exist_ok=True)
        write_metrics(output / "metrics.json", metrics)
        (output / "detections.json").write_text(json.dumps(metrics["detections"]))
        write_overlays(output / "overlays", records, predictions, classes, threshold)
        print(f"wrote {output / 'metrics.json'}, detections.json and overlays/")
    return metrics


def export(settings: DetectorExportSettings) -> dict:
    from .export import export_detector

    precision = settings.precision
    calibration = None
    if settings.calibration_data:
        from .config import DetectorConfig

        records, _, _ = _eval_records(settings.calibration_data, DetectorConfig.load(settings.model).classes,
                                      max_samples=settings.calibration_images, images_dir=settings.images_dir)
        calibration = [record.load_image() for record in records]
    report = export_detector(settings.model, settings.output, precision, calibration, peak_window=settings.peak_window)
    if settings.eval_data:
        report["mAP"] = compare_exports_map(settings.model, report, settings.eval_data, settings.images_dir, settings.max_samples,
                                            settings.peak_window)
    Path(settings.output).with_suffix(".report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


def compare_exports_map(model_dir: str, report: dict, data: str, images_dir=None, max_samples=None,
                        peak_window: int | None = None) -> dict:
    """AP / AP50 of the PyTorch model, the fp32 ONNX and the chosen export on the same images."""
    from .evaluation import run_and_score
    from .model import Detector
    from .runtime import OnnxDetector

    torch_model = Detector.from_pretrained(model_dir, peak_window=peak_window)
    records, classes, category_ids = _eval_records(data, torch_model.config.classes, images_dir=images_dir,
                                                   max_samples=max_samples)
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
