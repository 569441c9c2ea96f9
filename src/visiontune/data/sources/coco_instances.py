"""COCO instances JSON: {"images", "annotations": [{image_id, category_id, bbox: [x,y,w,h], iscrowd}],
"categories": [{id, name}]}.

Category ids may be non-contiguous (COCO's own run 1..90 with gaps); the class list is the categories
sorted by id, and `category_ids` maps each name back to its id so results files use the source's ids.
Images without annotations are kept: they are the negatives. A category id or image id that is not
declared, or a box with a negative size, is an error naming the annotation, or a counted skip.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..boxes import check_size, to_xyxy
from ..images import image_size
from ..records import Box, DataError, Record

SKIP_ROWS_HINT = "fix the annotation, or pass --skip-bad-rows to count and skip such annotations"


def is_coco_instances(payload) -> bool:
    return isinstance(payload, dict) and "categories" in payload and "annotations" in payload


def read_categories(payload: dict, path: Path) -> tuple[list[str], dict[int, str]]:
    names_by_id: dict[int, str] = {}
    for index, category in enumerate(payload.get("categories") or []):
        if "id" not in category or not str(category.get("name", "")).strip():
            raise DataError(f"{path}: categories[{index}] needs an 'id' and a non-empty 'name'")
        names_by_id[int(category["id"])] = str(category["name"]).strip()
    names = [names_by_id[key] for key in sorted(names_by_id)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: category names must be distinct; repeated: {repeated}")
    if not names:
        raise DataError(f"{path}: no categories; a COCO instances file lists its classes in 'categories'")
    return names, names_by_id


def load_coco_instances(path: Path, images_dir: Path | None = None, skip_bad_rows: bool = False,
                        log=print) -> tuple[list[Record], list[str], dict[str, int]]:
    payload = json.loads(path.read_text())
    if not is_coco_instances(payload) or "images" not in payload:
        raise DataError(f"{path}: not a COCO instances file (needs 'images', 'annotations' and 'categories')")
    classes, names_by_id = read_categories(payload, path)
    base_dir = images_dir or path.parent
    records: dict[object, Record] = {}
    for index, image in enumerate(payload["images"]):
        if "id" not in image or ("file_name" not in image and "coco_url" not in image):
            raise DataError(f"{path}: images[{index}] needs an 'id' and a 'file_name' (or 'coco_url')")
        reference = image.get("file_name") or image["coco_url"]
        record = Record(image=reference, image_id=str(image["id"]), base_dir=base_dir,
                        width=image.get("width"), height=image.get("height"),
                        source_row=f"{path.name} images[{index}] (id {image['id']})")
        if record.width is None or record.height is None:  # read from the file header, not decoded
            record.width, record.height = image_size(reference, base_dir, record.source_row)
        records[image["id"]] = record
    skipped = 0
    for index, annotation in enumerate(payload["annotations"]):
        where = f"{path.name} annotations[{index}] (id {annotation.get('id')})"
        problem = None
        if "bbox" not in annotation or "image_id" not in annotation or "category_id" not in annotation:
            problem = "needs 'image_id', 'category_id' and 'bbox'"
        elif annotation["category_id"] not in names_by_id:
            problem = (f"category_id {annotation['category_id']} is not in 'categories' (ids: "
                       f"{', '.join(str(k) for k in sorted(names_by_id))})")
        elif annotation["image_id"] not in records:
            problem = f"image_id {annotation['image_id']} is not in 'images'"
        else:
            problem = check_size(annotation["bbox"], "xywh")
        if problem:
            if not skip_bad_rows:
                raise DataError(f"{where}: {problem}; {SKIP_ROWS_HINT}")
            skipped += 1
            continue
        record = records[annotation["image_id"]]
        xyxy = to_xyxy(annotation["bbox"], "xywh", False, record.width, record.height)
        record.boxes.append(Box(names_by_id[annotation["category_id"]], xyxy, bool(annotation.get("iscrowd", 0))))
    if skipped:
        log(f"{path}: skipped {skipped} bad annotations (--skip-bad-rows)")
    category_ids = {name: key for key, name in names_by_id.items()}
    return list(records.values()), classes, category_ids
