"""A small generated caption set: coloured shapes on plain backgrounds, with exact captions.

Deterministic for a seed. Written as image files plus both a COCO captions JSON and a JSONL, so the
same data exercises two source formats. Used by the tests and the quickstart.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 30),
           "purple": (140, 50, 170), "orange": (245, 140, 20)}
BACKGROUNDS = {"white": (250, 250, 250), "black": (15, 15, 15), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle")


def draw_shape(shape: str, colour: str, background: str, size: int = 96, rng: random.Random | None = None):
    rng = rng or random.Random(0)
    image = Image.new("RGB", (size, size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    extent = rng.randint(size // 3, size // 2)
    left, top = rng.randint(4, size - extent - 4), rng.randint(4, size - extent - 4)
    box = (left, top, left + extent, top + extent)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(left + extent / 2, top), (left, top + extent), (left + extent, top + extent)], fill=fill)
    return image


def write_shapes_dataset(folder: str | Path, count: int = 8, seed: int = 0, size: int = 96) -> dict[str, Path]:
    """Write `count` images and their captions; returns paths of the COCO JSON, the JSONL and the image folder."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    combos = [(s, c, b) for s in SHAPES for c in COLOURS for b in BACKGROUNDS]
    rng.shuffle(combos)
    images, annotations, rows = [], [], []
    for index in range(count):
        shape, colour, background = combos[index % len(combos)]
        name = f"images/{index:04d}.png"
        draw_shape(shape, colour, background, size, rng).save(folder / name)
        caption = f"a {colour} {shape} on a {background} background"
        images.append({"id": index, "file_name": name, "width": size, "height": size})
        annotations.append({"id": index, "image_id": index, "caption": caption})
        rows.append({"image": name, "caption": caption})
    coco = folder / "captions.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations}))
    jsonl = folder / "captions.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"coco": coco, "jsonl": jsonl, "images": folder / "images"}


def write_shape_classes(folder: str | Path, per_class: int = 4, seed: int = 0, size: int = 96,
                        counts: dict[str, int] | None = None, label_by: str = "shape") -> Path:
    """An image-folder classification set (`folder/<class>/*.png`); the class is the shape (circle, square,
    triangle) or, with `label_by="colour"`, the shape's colour; the other attributes are random.

    `counts` gives per-class image counts (for imbalance tests); otherwise `per_class` each."""
    folder = Path(folder)
    rng = random.Random(seed)
    classes = SHAPES if label_by == "shape" else tuple(COLOURS)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range((counts or {}).get(name, per_class)):
            shape = name if label_by == "shape" else rng.choice(SHAPES)
            colour = name if label_by == "colour" else rng.choice(list(COLOURS))
            draw_shape(shape, colour, rng.choice(list(BACKGROUNDS)), size, rng).save(folder / name / f"{index:04d}.png")
    return folder


def _draw_at(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse((left, top, right - 1, bottom - 1), fill=fill)
    elif shape == "square":
        draw.rectangle((left, top, right - 1, bottom - 1), fill=fill)
    else:
        draw.polygon([((left + right) / 2, top), (left, bottom - 1), (right - 1, bottom - 1)], fill=fill)


def write_shape_detection(folder: str | Path, count: int = 8, seed: int = 0, size: int = 128, objects: tuple = (1, 5),
                          extent: tuple[float, float] = (0.12, 0.45), name: str = "instances.json",
                          colour_by_class: bool = False) -> Path:
    """A COCO instances set of canvases with `objects` (min, max) non-overlapping shapes each (circle, square,
    triangle; sides `extent` × size, so both small and large objects), random colours on a random background;
    a class is often absent from an image. `colour_by_class`: each shape always has its own colour (red
    circles, green squares, blue triangles), which a tiny random vision tower can tell apart.
    Returns the JSON's path (images under `folder/images`)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    categories = [{"id": index + 1, "name": shape} for index, shape in enumerate(SHAPES)]
    images, annotations = [], []
    for index in range(count):
        background = rng.choice(list(BACKGROUNDS))
        image = Image.new("RGB", (size, size), BACKGROUNDS[background])
        draw = ImageDraw.Draw(image)
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(rng.randint(*objects)):
            for _attempt in range(50):  # rejection-sample a spot that overlaps nothing already placed
                side = rng.randint(int(extent[0] * size), int(extent[1] * size))
                left, top = rng.randint(0, size - side), rng.randint(0, size - side)
                box = (left, top, left + side, top + side)
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
                    break
            else:
                continue
            placed.append(box)
            shape = rng.choice(SHAPES)
            colour = rng.choice(list(COLOURS))
            if colour_by_class:
                colour = ("red", "green", "blue")[SHAPES.index(shape)]
            _draw_at(draw, shape, box, COLOURS[colour])
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                "category_id": SHAPES.index(shape) + 1, "iscrowd": 0, "area": float(side * side),
                                "bbox": [float(box[0]), float(box[1]), float(side), float(side)]})
        file_name = f"images/{index:04d}.png"
        image.save(folder / file_name)
        images.append({"id": index + 1, "file_name": file_name, "width": size, "height": size})
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
