"""Training augmentations for boxes: zoom out, random crop (together: scale jitter), horizontal flip.

Hand-written on PIL + numpy (about 60 lines) because the libraries that fit do not fit here: torchvision's
v2 transforms do not import beside the torch build this project targets, and albumentations pulls OpenCV
and has moved its development to an AGPL successor. Rules: a box cut by a crop keeps its visible part if at
least `min_visibility` of its area is still in the image, else it is dropped; zoom out pads with the image
mean colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class AugmentSettings:
    flip: float = 0.5  # probability of a horizontal flip
    crop: float = 0.5  # probability of a random crop
    crop_scale: tuple[float, float] = (0.4, 1.0)  # share of the image's area a crop keeps
    crop_aspect: tuple[float, float] = (0.5, 2.0)
    zoom_out: float = 0.3  # probability of placing the image on a larger canvas
    zoom_out_max: float = 2.0  # largest canvas side / image side
    min_visibility: float = 0.5


def zoom_out(image: Image.Image, boxes: np.ndarray, ratio: float, rng: np.random.Generator):
    width, height = image.size
    new_width, new_height = int(width * ratio), int(height * ratio)
    left, top = int(rng.integers(0, new_width - width + 1)), int(rng.integers(0, new_height - height + 1))
    fill = tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(0))
    canvas = Image.new("RGB", (new_width, new_height), fill)
    canvas.paste(image, (left, top))
    return canvas, boxes + np.array([left, top, left, top], dtype=boxes.dtype)


def random_crop(image: Image.Image, boxes: np.ndarray, labels: np.ndarray, settings: AugmentSettings,
                rng: np.random.Generator):
    width, height = image.size
    for _ in range(10):
        area = width * height * rng.uniform(*settings.crop_scale)
        aspect = np.exp(rng.uniform(*np.log(settings.crop_aspect)))
        crop_width, crop_height = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            break
    else:
        return image, boxes, labels
    left, top = int(rng.integers(0, width - crop_width + 1)), int(rng.integers(0, height - crop_height + 1))
    shifted = boxes - np.array([left, top, left, top], dtype=boxes.dtype)
    clipped = np.stack([shifted[:, 0].clip(0, crop_width), shifted[:, 1].clip(0, crop_height),
                        shifted[:, 2].clip(0, crop_width), shifted[:, 3].clip(0, crop_height)], 1) if len(boxes) else shifted
    area_before = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_after = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1]).clip(0)
    keep = area_after >= settings.min_visibility * np.maximum(area_before, 1e-9)
    return image.crop((left, top, left + crop_width, top + crop_height)), clipped[keep], labels[keep]


def augment(image: Image.Image, boxes: np.ndarray, labels: np.ndarray, settings: AugmentSettings,
            rng: np.random.Generator):
    """image + (n, 4) pixel xyxy boxes + (n,) labels -> the same, augmented."""
    if rng.random() < settings.zoom_out:
        image, boxes = zoom_out(image, boxes, rng.uniform(1.0, settings.zoom_out_max), rng)
    if rng.random() < settings.crop:
        image, boxes, labels = random_crop(image, boxes, labels, settings, rng)
    if rng.random() < settings.flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
        boxes = np.stack([image.width - boxes[:, 2], boxes[:, 1], image.width - boxes[:, 0], boxes[:, 3]], 1) \
            if len(boxes) else boxes
    return image, boxes, labels
