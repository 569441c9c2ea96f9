"""`visiontune detector export`: ONNX with a dynamic batch axis, checked against PyTorch in onnxruntime.

The graph holds the whole path from 0..1 pixels to the NMS-free top-k (normalisation, backbone, pyramid,
neck, head, top-k), so a deployment needs onnxruntime and nothing else (`deploy/onnx_detector.py`).
Precisions: fp32; fp16 (onnxruntime's float16 converter, inputs/outputs kept float32); int8 (onnxruntime
dynamic quantization of MatMul/Gemm weights, or static with calibration images). The legacy TorchScript
exporter is used (`dynamo=False`): it needs no onnxscript and handles the transformers ViTs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .model import Detector
from .runtime import METADATA_KEY, OnnxDetector

PRECISIONS = ("fp32", "fp16", "int8")
OPSET = 17


class _DetectGraph(nn.Module):
    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def forward(self, pixels: torch.Tensor):
        boxes, scores, labels = self.detector.detect(pixels)
        return boxes, scores, labels


def _add_metadata(path: Path, detector: Detector, precision: str) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps({"classes": detector.config.classes, "image_size": list(detector.config.image_size),
                              "score_threshold": detector.config.score_threshold, "precision": precision,
                              "peak_window": detector.config.peak_window,
                              "peak_across_levels": detector.config.peak_across_levels,
                              "backbone": detector.config.backbone})
    onnx.save(model, str(path))


def _export_fp32(detector: Detector, path: Path) -> None:
    height, width = detector.config.image_size
    dummy = torch.rand(1, 3, height, width)
    batch = {0: "batch"}
    torch.onnx.export(_DetectGraph(detector), (dummy,), str(path), input_names=["pixels"],
                      output_names=["boxes", "scores", "labels"], opset_version=OPSET, dynamo=False,
                      dynamic_axes={"pixels": batch, "boxes": batch, "scores": batch, "labels": batch})


def _calibration_reader(images: list, size: tuple[int, int]):
    from onnxruntime.quantization import CalibrationDataReader

    from .image_io import image_to_input

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter({"pixels": image_to_input(image, size)[None]} for image in images)

        def get_next(self):
            return next(self.items, None)

    return Reader()


def compare_with_torch(detector: Detector, onnx_path: Path, batch: int = 2, seed: int = 0) -> dict:
    """Max |difference| of scores and of boxes between PyTorch and onnxruntime on random pixels (batch 2,
    to exercise the dynamic axis). Detections are compared by rank; labels must agree where scores do."""
    height, width = detector.config.image_size
    pixels = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        boxes, scores, labels = (t.numpy() for t in detector.eval().detect(pixels))
    onnx_boxes, onnx_scores, onnx_labels = OnnxDetector(onnx_path, providers=["CPUExecutionProvider"]).run(pixels.numpy())
    found = scores > 0  # the rest are non-peaks (score 0), whose order among themselves is arbitrary
    return {"score_max_abs_diff": float(np.abs(scores - onnx_scores).max()),
            "box_max_abs_diff": float(np.abs(boxes - onnx_boxes)[found].max(initial=0.0)),
            "label_agreement": float((labels == onnx_labels)[found].mean()) if found.any() else 1.0}


def export_detector(model_dir: str | Path, output: str | Path, precision: str = "fp32",
                    calibration_images: list | None = None, log=print, peak_window: int | None = None) -> dict:
    """Write the ONNX file; returns a report (sizes, PyTorch-vs-ONNX differences). peak_window overrides the
    model's decoding (`peaks.py`), and is then saved in the graph's metadata."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    detector = Detector.from_pretrained(model_dir, peak_window=peak_window).float().eval()
    fp32_path = output if precision == "fp32" else output.with_name(output.stem + ".fp32.onnx")
    _export_fp32(detector, fp32_path)
    _add_metadata(fp32_path, detector, "fp32")
    report = {"fp32": str(fp32_path), "fp32_vs_torch": compare_with_torch(detector, fp32_path)}
    if precision == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True), str(output))
    elif precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = output.with_name(output.stem + ".prepared.onnx")
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if calibration_images:
            quantize_static(str(prepared), str(output), _calibration_reader(calibration_images, detector.config.image_size),
                            op_types_to_quantize=["MatMul", "Gemm", "Conv"], weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8, per_channel=True)
            report["int8_mode"] = f"static, {len(calibration_images)} calibration images"
        else:
            quantize_dynamic(str(prepared), str(output), op_types_to_quantize=["MatMul", "Gemm"],
                             weight_type=QuantType.QInt8, per_channel=True)
            report["int8_mode"] = "dynamic (weights int8, activations quantized at run time)"
        prepared.unlink(missing_ok=True)
    if precision != "fp32":
        _add_metadata(output, detector, precision)
        report[f"{precision}_vs_torch"] = compare_with_torch(detector, output)
    report.update(output=str(output), precision=precision, size_mb=output.stat().st_size / 2 ** 20,
                  fp32_size_mb=fp32_path.stat().st_size / 2 ** 20)
    log(f"wrote {output} ({precision}, {report['size_mb']:.1f} MB); vs PyTorch: {report[f'{precision}_vs_torch']}")
    return report
