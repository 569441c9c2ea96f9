"""Box conventions of detection sources, and the clean-up every source's boxes go through.

Sources write boxes in one of three layouts (`xyxy` corners, `xywh` COCO-style top-left + size,
`cxcywh` YOLO-style centre + size), in pixels or normalised to 0..1. Everything after the source
holds pixel `xyxy` of the original image. Clean-up rule: a box reaching outside the image is clipped
to it (counted); a box with no area left (zero width or height, or wholly outside) is dropped (counted).
A negative width/height is bad input, not a degenerate box: the source reports it (see `check_size`).
"""

from __future__ import annotations

import math
from collections import Counter

from .records import Box, DataError, Record

BBOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def to_xyxy(values, layout: str, normalised: bool, width: float, height: float) -> tuple[float, float, float, float]:
    a, b, c, d = (float(v) for v in values)
    if layout == "xywh":
        c, d = a + c, b + d
    elif layout == "cxcywh":
        a, b, c, d = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    elif layout != "xyxy":
        raise ValueError(f"unknown box layout {layout!r}; choose one of {', '.join(BBOX_FORMATS)}")
    if normalised:
        a, b, c, d = a * width, b * height, c * width, d * height
    return a, b, c, d


def check_size(values, layout: str) -> str | None:
    """What is wrong with a box's numbers before conversion, or None: four finite numbers, no negative size."""
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        return f"a box needs 4 numbers, got {values!r}"
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return f"box {values!r} has a value that is not a number"
    if not all(math.isfinite(n) for n in numbers):
        return f"box {values!r} has a NaN or infinite value"
    if layout in ("xywh", "cxcywh") and (numbers[2] < 0 or numbers[3] < 0):
        return f"box {values!r} has a negative width or height"
    if layout == "xyxy" and (numbers[2] < numbers[0] or numbers[3] < numbers[1]):
        return f"box {values!r} has x2 < x1 or y2 < y1"
    return None


def clip_to_image(records: list[Record]) -> Counter:
    """Clip every box to its image, drop boxes left with no area; returns the counts of both."""
    counts: Counter = Counter()
    for record in records:
        if record.width is None or record.height is None:
            raise DataError(f"{record.source_row}: the image size is unknown, so boxes cannot be checked")
        kept = []
        for box in record.boxes:
            x1, y1, x2, y2 = box.xyxy
            clipped = (min(max(x1, 0.0), record.width), min(max(y1, 0.0), record.height),
                       min(max(x2, 0.0), record.width), min(max(y2, 0.0), record.height))
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                counts["degenerate"] += 1
                continue
            if clipped != (x1, y1, x2, y2):
                counts["clipped"] += 1
            kept.append(Box(box.label, clipped, box.crowd))
        record.boxes = kept
    return counts


def describe_cleanup(counts: Counter, source: str) -> str | None:
    if not counts:
        return None
    parts = [f"{counts['clipped']} boxes clipped to the image"] if counts["clipped"] else []
    if counts["degenerate"]:
        parts.append(f"{counts['degenerate']} zero-area boxes dropped")
    return f"{source}: " + ", ".join(parts)
