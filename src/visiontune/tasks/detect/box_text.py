"""Boxes as plain text, and back (the detect task's target format).

Format, one line per class that has boxes, classes in the order given, boxes top-to-bottom then
left-to-right; coordinates are integers on a 0..GRID grid of the original image (x1, y1, x2, y2):

    person: [1,4,18,61]; [40,4,52,59]
    traffic light: [70,2,72,8]

An empty answer is the word `none`. `parse_boxes` inverts `format_boxes` exactly on its own output and
tolerates what models write instead: any spacing, () or [] brackets, `,` or `;` between boxes, class
names in any case, unknown class names (dropped, counted), swapped corners (fixed, counted), values
off the grid (clipped, counted), zero-area boxes and a cut-off last box (dropped, counted).

A reply ends at the first box that repeats an earlier box of its class (IoU > REPEAT_IOU, counted as
`repeated`): a greedy decoder that writes a box twice is in a loop and writes it until its token limit, each
copy a false positive. `repeats_a_box` tells the decoder to stop there. For the same reason an answer never
writes such a box (`format_boxes` leaves it out): two annotations of one object, or objects that overlap this
much, are written once.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

GRID = 100  # two digits a coordinate (one token each for SmolLM2-like tokenizers), 1 % of the side
NONE_ANSWER = "none"
REPEAT_IOU = 0.7  # what the duplicate rate counts as the same box (metrics/detection.py)

_LINE = re.compile(r"^\s*([^:\[\]()]+?)\s*:\s*(.*)$")
_BOX = re.compile(r"[\[(]\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*"
                  r"(-?\d+(?:\.\d+)?)\s*[\])]")
_OPEN_BOX = re.compile(r"[\[(][^\])]*$")


@dataclass
class ParsedBoxes:
    boxes: list[tuple[str, tuple[int, int, int, int]]]
    problems: Counter = field(default_factory=Counter)  # unknown_class, swapped, clipped, empty, truncated,
    # junk_line, repeated
    spans: list[tuple[int, int]] = field(default_factory=list)  # where each kept box is written in the text

    @property
    def failed(self) -> bool:
        """Nothing usable came out of a reply that was not `none`."""
        return not self.boxes and sum(self.problems.values()) > 0


def to_grid(box: tuple[float, float, float, float], width: float, height: float, grid: int = GRID):
    """Pixel xyxy -> integer grid xyxy (rounded, clipped)."""
    x1, y1, x2, y2 = box
    scale = (grid / width, grid / height, grid / width, grid / height)
    return tuple(int(min(max(round(v * s), 0), grid)) for v, s in zip((x1, y1, x2, y2), scale))


def from_grid(box: tuple[int, int, int, int], width: float, height: float, grid: int = GRID):
    x1, y1, x2, y2 = box
    return (x1 * width / grid, y1 * height / grid, x2 * width / grid, y2 * height / grid)


def format_boxes(boxes: list[tuple[str, tuple[int, int, int, int]]], classes: list[str]) -> str:
    """Grid boxes -> the answer text, in the deterministic order (class order, then y1, x1, y2, x2); a box that
    repeats an earlier one of its class is left out."""
    if not boxes:
        return NONE_ANSWER
    order = {name: index for index, name in enumerate(classes)}
    unknown = sorted({name for name, _ in boxes if name not in order})
    if unknown:
        raise ValueError(f"boxes of classes not in the class list: {unknown}")
    lines = []
    for name in sorted({name for name, _ in boxes}, key=order.__getitem__):
        coordinates = sorted((box for n, box in boxes if n == name), key=lambda b: (b[1], b[0], b[3], b[2]))
        coordinates = unrepeated(coordinates)
        lines.append(f"{name}: " + "; ".join("[" + ",".join(str(v) for v in box) + "]" for box in coordinates))
    return "\n".join(lines)


def box_iou(a: tuple, b: tuple) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0) * max(height, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def unrepeated(boxes: list[tuple]) -> list[tuple]:
    """The boxes (of one class), less each that repeats an earlier one (IoU > REPEAT_IOU)."""
    kept = []
    for box in boxes:
        if all(box_iou(box, other) <= REPEAT_IOU for other in kept):
            kept.append(box)
    return kept


def repeats_an_earlier_box(parsed: ParsedBoxes, name: str, box: tuple) -> bool:
    return any(earlier == name and box_iou(box, other) > REPEAT_IOU for earlier, other in parsed.boxes)


def repeats_a_box(text: str, classes: list[str], grid: int = GRID) -> bool:
    """Whether a reply (so far) has written a box of a class twice: the point where its answer is over."""
    return parse_boxes(text, classes, grid).problems["repeated"] > 0


def parse_boxes(text: str, classes: list[str], grid: int = GRID) -> ParsedBoxes:
    by_name = {" ".join(name.lower().split()): name for name in classes}
    parsed = ParsedBoxes([])
    if " ".join(text.lower().split()).strip(" .") in ("", NONE_ANSWER):
        return parsed
    offset = 0
    for raw_line in text.splitlines(keepends=True):
        line, start, offset = raw_line.rstrip("\r\n"), offset, offset + len(raw_line)
        if not line.strip():
            continue
        match = _LINE.match(line)
        if not match:
            parsed.problems["junk_line"] += 1
            continue
        name = by_name.get(" ".join(match.group(1).lower().strip(" *-").split()))
        boxes = list(_BOX.finditer(match.group(2)))
        if _OPEN_BOX.search(match.group(2)):
            parsed.problems["truncated"] += 1
        if name is None:
            parsed.problems["unknown_class"] += len(boxes) or 1
            continue
        for found in boxes:
            x1, y1, x2, y2 = (round(float(v)) for v in found.groups())
            if x1 > x2 or y1 > y2:
                parsed.problems["swapped"] += 1
                x1, x2 = sorted((x1, x2))
                y1, y2 = sorted((y1, y2))
            clipped = tuple(min(max(v, 0), grid) for v in (x1, y1, x2, y2))
            if clipped != (x1, y1, x2, y2):
                parsed.problems["clipped"] += 1
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                parsed.problems["empty"] += 1
                continue
            if repeats_an_earlier_box(parsed, name, clipped):
                parsed.problems["repeated"] += 1
                return parsed
            parsed.boxes.append((name, clipped))
            base = start + match.start(2)
            parsed.spans.append((base + found.start(), base + found.end()))
    return parsed
