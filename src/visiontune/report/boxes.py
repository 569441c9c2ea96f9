"""Boxes drawn on an image: ground truth and predictions in the samples grid, and `predict --draw`."""

from __future__ import annotations

from PIL import Image, ImageDraw

PALETTE = [(230, 40, 40), (40, 120, 230), (250, 170, 20), (150, 60, 200), (20, 180, 170), (230, 90, 170),
           (120, 160, 30), (110, 80, 40)]


def draw_boxes(image: Image.Image, boxes: list[dict], colour: tuple[int, int, int] | None = None,
               classes: list[str] | None = None, with_labels: bool = False) -> Image.Image:
    """A copy of `image` with each {"label", "box": [x1,y1,x2,y2] pixels, "score"?} outlined; one colour, or
    (`colour=None`) one per class of `classes`. Labels (and scores) are written above the boxes."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 200))
    for box in boxes:
        shade = colour or PALETTE[(classes or []).index(box["label"]) % len(PALETTE)
                                  if classes and box["label"] in classes else 0]
        x1, y1, x2, y2 = box["box"]
        draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=shade, width=width)
        if with_labels:
            text = box["label"] + (f" {box['score']:.2f}" if box.get("score") is not None else "")
            left, top, right, bottom = draw.textbbox((x1, y1), text)
            lift = bottom - top + 2
            top = y1 - lift if y1 - lift >= 0 else y1  # inside the box when there is no room above it
            draw.rectangle((x1, top, x1 + right - left + 2, top + lift), fill=shade)
            draw.text((x1 + 1, top), text, fill=(255, 255, 255))
    return image
