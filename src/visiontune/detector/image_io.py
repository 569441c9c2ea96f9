"""The detector's input and output conventions, shared by the torch model and the ONNX-only path (so the
two predict the same): an image is resized to the model's (height, width) with no letterbox and scaled to
0..1 (normalisation happens inside the model); boxes come back as 0..1 xyxy of that resized image and are
scaled to the original image's pixels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from ..data.images import load_image


def image_to_input(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """(3, height, width) float32 in 0..1 from an RGB PIL image."""
    height, width = size
    resized = image.convert("RGB").resize((width, height), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0


def to_pixel_boxes(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, width: int, height: int,
                   classes: list[str], threshold: float = 0.0) -> list[dict]:
    """One image's top-k outputs (normalised xyxy, scores, class indices) -> [{"label", "box", "score"}]
    in the original image's pixels, best first, scores >= threshold. A score of 0 is no detection: the model
    gives it to positions that are not local peaks (`models/detector/peaks.py`)."""
    rows = []
    for box, score, label in zip(boxes, scores, labels):
        if score < threshold or score <= 0:
            continue
        x1, y1, x2, y2 = (float(np.clip(v, 0.0, 1.0)) for v in box)
        rows.append({"label": classes[int(label)], "box": [x1 * width, y1 * height, x2 * width, y2 * height],
                     "score": float(score)})
    return rows


def predict_images(images: list, run: Callable[[np.ndarray], tuple], size: tuple[int, int], classes: list[str],
                   threshold: float, batch_size: int = 8) -> list[dict]:
    """Images (PIL images, paths or URLs) in batches through `run` ((B, 3, H, W) 0..1 pixels -> boxes, scores,
    labels as numpy) -> per image {"boxes": [{"label", "box" (pixels xyxy), "score"}]}."""
    results = []
    for start in range(0, len(images), batch_size):
        loaded = [image if hasattr(image, "convert") else load_image(image) for image in images[start:start + batch_size]]
        boxes, scores, labels = run(np.stack([image_to_input(image, size) for image in loaded]))
        for index, image in enumerate(loaded):
            results.append({"boxes": to_pixel_boxes(boxes[index], scores[index], labels[index], image.width,
                                                    image.height, classes, threshold)})
    return results
