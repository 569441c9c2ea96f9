"""Image preprocessing in numpy + Pillow, read from a saved image processor's settings.

Covers the fixed-size processors of the exported families (composed VLMs: BiT-style resize to one size;
LLaVA: CLIP-style shortest-edge resize + centre crop): resize with the processor's resampling filter,
rescale, normalise, channels first. Tests check it against the transformers processor.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


class ImagePreprocessor:
    def __init__(self, settings: dict):
        self.settings = settings
        self.resample = Image.Resampling(settings.get("resample", Image.Resampling.BICUBIC))
        self.mean = np.asarray(settings.get("image_mean", [0.0, 0.0, 0.0]), dtype=np.float32)[:, None, None]
        self.std = np.asarray(settings.get("image_std", [1.0, 1.0, 1.0]), dtype=np.float32)[:, None, None]

    def _resized(self, image: Image.Image) -> Image.Image:
        size = self.settings.get("size") or {}
        if not self.settings.get("do_resize", True):
            return image
        if "height" in size and "width" in size:
            return image.resize((size["width"], size["height"]), self.resample)
        if "shortest_edge" in size:
            edge = size["shortest_edge"]
            scale = edge / min(image.size)
            width, height = image.size
            # transformers rounds the other edge down (get_resize_output_image_size)
            target = (edge, int(height * scale)) if width <= height else (int(width * scale), edge)
            return image.resize(target, self.resample)
        raise ValueError(f"unsupported image processor size {size}; export a fixed-size family")

    def _cropped(self, image: Image.Image) -> Image.Image:
        crop = self.settings.get("crop_size") or {}
        if not self.settings.get("do_center_crop") or not crop:
            return image
        width, height = image.size
        left, top = (width - crop["width"]) // 2, (height - crop["height"]) // 2
        return image.crop((left, top, left + crop["width"], top + crop["height"]))

    def __call__(self, images: list) -> np.ndarray:
        """(images, 3, height, width) float32."""
        rows = []
        for image in images:
            image = self._cropped(self._resized(image.convert("RGB")))
            pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
            if self.settings.get("do_rescale", True):
                pixels = pixels * np.float32(self.settings.get("rescale_factor", 1 / 255))
            if self.settings.get("do_normalize", True):
                pixels = (pixels - self.mean) / self.std
            rows.append(pixels.astype(np.float32))
        return np.stack(rows)
