"""The canonical example: one image and what is known about it. Nothing after this knows file formats."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .images import load_image


@dataclass(frozen=True)
class Box:
    """One object: its class name and corners in pixels of the original image. Crowd regions (COCO
    `iscrowd`) are not trained on; COCO evaluation ignores detections that fall on them."""

    label: str
    xyxy: tuple[float, float, float, float]
    crowd: bool = False

    @property
    def area(self) -> float:
        return (self.xyxy[2] - self.xyxy[0]) * (self.xyxy[3] - self.xyxy[1])


@dataclass
class Record:
    """One image plus its annotations. `image` is a path, URL, PIL image, datasets image dict or lazy row."""

    image: Any
    image_id: str
    captions: list[str] = field(default_factory=list)
    label: Any = None  # classification: the class name (raw value until labels are resolved)
    rationale: str | None = None  # classification with --reasoning: why the label is right
    boxes: list[Box] = field(default_factory=list)  # detection: every object (an empty list is a valid image)
    width: int | None = None  # detection: original image size, which box coordinates refer to
    height: int | None = None
    base_dir: Path | None = None
    source_row: str = ""  # where it came from, for messages: "train.jsonl line 12"
    conversation: list[dict] | None = None  # chat: the turns ({"role", "content": [parts]}), images as parts
    more_images: list = field(default_factory=list)  # chat: the images after the first, in the order named

    def load_images(self) -> list:
        """Every image of the record, `image` first."""
        return [self.load_image()] + [load_image(image, self.base_dir) for image in self.more_images]

    def load_image(self):
        if hasattr(self.image, "load_image"):
            return self.image.load_image()
        return load_image(self.image, self.base_dir)

    def image_key(self) -> str:
        """A stable string naming the image, used to match predictions with references."""
        if isinstance(self.image, (str, Path)):
            return str(self.image)
        return self.image_id


class DataError(ValueError):
    """Bad input data; the message names the file/row, the problem and the fix."""
