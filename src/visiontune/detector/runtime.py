"""`OnnxDetector`: run an exported detector with onnxruntime alone (no torch, no transformers).

The ONNX file carries what it needs in its metadata (`visiontune` key: classes, input size, threshold):
one file to ship. Input (B, 3, H, W) float32 pixels in 0..1; outputs boxes (B, k, 4) normalised xyxy,
scores (B, k), labels (B, k), already the NMS-free top-k.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .image_io import predict_images

METADATA_KEY = "visiontune"


class OnnxDetector:
    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file; write one with `visiontune detector export`")
        self.session = ort.InferenceSession(str(self.path), options, providers=providers or ort.get_available_providers())
        metadata = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in metadata:
            raise ValueError(f"{path}: not a visiontune detector export (no '{METADATA_KEY}' metadata)")
        info = json.loads(metadata[METADATA_KEY])
        self.classes, self.image_size = info["classes"], tuple(info["image_size"])
        self.score_threshold, self.precision = info["score_threshold"], info.get("precision", "fp32")
        self.input_name = self.session.get_inputs()[0].name

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, 3, H, W) float32 in 0..1 -> (boxes, scores, labels)."""
        boxes, scores, labels = self.session.run(None, {self.input_name: pixels.astype(np.float32)})
        return boxes, scores, labels

    def predict(self, images: list, threshold: float | None = None, batch_size: int = 8) -> list[dict]:
        """Images (PIL images, paths or URLs) -> per image {"boxes": [{"label", "box" (pixels xyxy), "score"}]}."""
        threshold = self.score_threshold if threshold is None else threshold
        return predict_images(images, self.run, self.image_size, self.classes, threshold, batch_size)
