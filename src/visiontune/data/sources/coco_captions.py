"""COCO captions JSON: {"images": [{id, file_name}], "annotations": [{image_id, caption}]}."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..records import DataError, Record


def is_coco_captions(payload) -> bool:
    return isinstance(payload, dict) and "images" in payload and "annotations" in payload


def load_coco_captions(path: Path, images_dir: Path | None = None) -> list[Record]:
    payload = json.loads(path.read_text())
    if not is_coco_captions(payload):
        raise DataError(f"{path}: not a COCO captions file (needs top-level 'images' and 'annotations')")
    base_dir = images_dir or path.parent
    captions: dict[object, list[str]] = defaultdict(list)
    for index, annotation in enumerate(payload["annotations"]):
        if "image_id" not in annotation or "caption" not in annotation:
            raise DataError(f"{path}: annotations[{index}] lacks 'image_id' or 'caption' "
                            f"(has {', '.join(annotation)}); is this an instances file? use --task detect for those")
        captions[annotation["image_id"]].append(annotation["caption"])
    records = []
    for index, image in enumerate(payload["images"]):
        if "file_name" not in image and "coco_url" not in image:
            raise DataError(f"{path}: images[{index}] has neither 'file_name' nor 'coco_url'")
        reference = image.get("file_name") or image["coco_url"]
        records.append(Record(image=reference, image_id=str(image.get("id", index)),
                              captions=list(captions.get(image.get("id"), [])), base_dir=base_dir,
                              source_row=f"{path.name} images[{index}] (id {image.get('id')})"))
    return records
