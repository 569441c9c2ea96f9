"""Detection and caption data from real items (Fashion-MNIST by default): 1-N items pasted onto a larger canvas.

Deterministic for a seed. Items are scaled, never overlap (so each box is exactly its item's visible
pixels), and each canvas draws its items from a few classes only, so most classes are absent from any
one canvas ("not present" answers). `background="textured"`: each canvas is a random grey texture (smooth
noise, stripes, a checkerboard, a gradient or blobs, plus pixel noise) and each item a flat grey shape, light
or dark, over it: a harder set, where the background is not empty and an item's intensity says nothing.
Writes PNG images, a COCO instances JSON (detect) and a COCO captions JSON with template captions such as
"two sneakers and a bag" (caption).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np

from ..data.loading import DataSpec, load_labelled_records

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Caption nouns for the Fashion-MNIST classes (the dataset's class names are labels, not nouns).
CAPTION_NOUNS = {"T-shirt/top": ("T-shirt", "T-shirts"), "Trouser": ("pair of trousers", "pairs of trousers"),
                 "Pullover": ("pullover", "pullovers"), "Dress": ("dress", "dresses"), "Coat": ("coat", "coats"),
                 "Sandal": ("sandal", "sandals"), "Shirt": ("shirt", "shirts"), "Sneaker": ("sneaker", "sneakers"),
                 "Bag": ("bag", "bags"), "Ankle boot": ("ankle boot", "ankle boots")}


def caption_for(labels: list[str]) -> str:
    """'two sneakers and a bag': classes in order of first appearance, counted."""
    counts = Counter(labels)
    parts = []
    for label, count in counts.items():
        singular, plural = CAPTION_NOUNS.get(label, (label, label + "s"))
        if count == 1:
            parts.append(("an " if singular[0].lower() in "aeiou" else "a ") + singular)
        else:
            parts.append(f"{NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else count} {plural}")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _scaled(item: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))


def _place(rng: random.Random, size: int, side: int, taken: list[tuple[int, int, int, int]]):
    for _ in range(100):
        x, y = rng.randint(0, size - side), rng.randint(0, size - side)
        box = (x, y, x + side, y + side)
        if all(box[2] <= t[0] or box[0] >= t[2] or box[3] <= t[1] or box[1] >= t[3] for t in taken):
            return box
    return None


BACKGROUNDS = ("black", "textured")
TEXTURES = ("noise", "stripes", "checker", "gradient", "blobs")


def _texture(rng: random.Random, size: int) -> np.ndarray:
    """A grey (size, size) float texture in 0..255: one of TEXTURES at a random brightness and contrast."""
    from PIL import Image, ImageFilter

    noise = np.random.default_rng(rng.randint(0, 2 ** 31))
    kind = rng.choice(TEXTURES)
    y, x = np.mgrid[0:size, 0:size]
    if kind in ("noise", "blobs"):
        field = noise.normal(0, 1, (size // 4, size // 4) if kind == "noise" else (size, size))
        image = Image.fromarray(((field - field.min()) / (np.ptp(field) + 1e-6) * 255).astype(np.uint8))
        image = (image.resize((size, size), Image.BICUBIC) if kind == "noise"
                 else image.filter(ImageFilter.GaussianBlur(3)))
        pattern = np.asarray(image, dtype=np.float32) / 255 - 0.5
        pattern = pattern / (np.abs(pattern).max() + 1e-6) * 0.5
    elif kind == "stripes":
        angle, frequency = rng.uniform(0, np.pi), rng.uniform(0.1, 0.5)
        pattern = 0.5 * np.sin((x * np.cos(angle) + y * np.sin(angle)) * frequency)
    elif kind == "checker":
        cell = rng.randint(4, 16)
        pattern = ((x // cell + y // cell) % 2) - 0.5
    else:
        pattern = (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1)) / size
        pattern = pattern - pattern.mean()
    brightness, contrast = rng.uniform(40, 140), rng.uniform(30, 90)
    return np.clip(brightness + contrast * pattern + noise.normal(0, 6, (size, size)), 0, 255)


def _paste(rng: random.Random, canvas: np.ndarray, scaled: np.ndarray, x0: int, y0: int, textured: bool) -> np.ndarray:
    """Paste an item; returns the mask of its visible pixels (what its box bounds)."""
    side = scaled.shape[0]
    region = canvas[y0:y0 + side, x0:x0 + side]
    if not textured:
        region[:] = np.maximum(region, scaled)
        return scaled > 0
    alpha = scaled.astype(np.float32) / 255
    mask = alpha > 0.15
    grey = rng.uniform(150, 230) if rng.random() < 0.7 else rng.uniform(0, 40)  # mostly light, sometimes dark
    region[:] = np.where(mask, grey * alpha + region * (1 - alpha) * 0.3, region)
    return mask


def write_canvases(folder: str | Path, count: int = 64, seed: int = 0, size: int = 112, objects: tuple[int, int] = (1, 4),
                   scale: tuple[int, int] = (28, 56), classes_per_canvas: int = 2, split: str = "train",
                   source: str = "zoo:fashion-mnist", classes: list[str] | None = None,
                   class_weights: dict[str, float] | None = None, background: str = "black") -> dict[str, Path]:
    """Write `count` canvases; returns paths of the images folder, instances.json and captions.json.
    `classes`: draw items of these classes only (all of the source's by default). `class_weights` (a long-tailed
    set): each object's class is drawn from all the classes with these weights (missing ones weigh 1), instead
    of from `classes_per_canvas` classes chosen per canvas."""
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; choose one of {', '.join(BACKGROUNDS)}")
    records, all_classes = load_labelled_records(DataSpec(source, split=split), log=lambda *_: None)
    unknown = sorted((set(classes or []) | set(class_weights or {})) - set(all_classes))
    if unknown:
        raise ValueError(f"{source} has no class {', '.join(unknown)}; its classes: {', '.join(all_classes)}")
    classes = list(classes or all_classes)
    by_class: dict[str, list] = {name: [] for name in classes}
    for record in records:
        if record.label in by_class:
            by_class[record.label].append(record.image)
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    images, instances, captions = [], [], []
    for index in range(count):
        chosen = rng.sample(classes, min(classes_per_canvas, len(classes)))
        textured = background == "textured"
        canvas = _texture(rng, size) if textured else np.zeros((size, size), dtype=np.uint8)
        taken, labels = [], []
        for _ in range(rng.randint(*objects)):
            label = rng.choice(chosen) if class_weights is None else \
                rng.choices(classes, [class_weights.get(name, 1.0) for name in classes])[0]
            item = np.asarray(rng.choice(by_class[label]).load_image().convert("L"))
            side = rng.randint(*scale)
            place = _place(rng, size, side, taken)
            if place is None:  # the canvas is full
                break
            scaled = _scaled(item, side)
            if not scaled.any():
                continue
            x0, y0 = place[0], place[1]
            ys, xs = np.nonzero(_paste(rng, canvas, scaled, x0, y0, textured))
            if len(xs) == 0:
                continue
            taken.append(place)
            labels.append(label)
            # The box is the item's visible pixels, not its square: xyxy with exclusive right/bottom edges.
            box = [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1]
            instances.append({"id": len(instances) + 1, "image_id": index + 1, "category_id": classes.index(label) + 1,
                              "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                              "area": (box[2] - box[0]) * (box[3] - box[1]), "iscrowd": 0})
        file_name = f"images/{index:05d}.png"
        from PIL import Image

        Image.fromarray(canvas.astype(np.uint8), mode="L").convert("RGB").save(folder / file_name)
        images.append({"id": index + 1, "file_name": file_name, "width": size, "height": size})
        captions.append({"id": index + 1, "image_id": index + 1, "caption": caption_for(labels) if labels else "nothing"})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    instances_path, captions_path = folder / "instances.json", folder / "captions.json"
    instances_path.write_text(json.dumps({"images": images, "annotations": instances, "categories": categories}))
    captions_path.write_text(json.dumps({"images": images, "annotations": captions}))
    return {"images": folder / "images", "instances": instances_path, "captions": captions_path}
