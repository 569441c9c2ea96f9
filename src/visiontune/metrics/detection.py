"""Detection metrics: COCO box AP/AR by faster-coco-eval (pycocotools gives the same numbers; a test checks),
plus what text answers add: negative-query hallucination and parse failures.

- `AP` (AP at IoU .50:.95), `AP50`, `AP75`, `APs/m/l`, `AR1/10/100`, `ARs/m/l`: COCO's `stats`, on the
  0..1 scale; -1 where COCO has nothing to measure (e.g. no small objects). Crowd boxes are ground truth
  with `iscrowd`, so detections on them are neither right nor wrong.
- `per_class_AP`: AP50:95 per class from COCO's precision table (None for a class with no ground truth).
- `hallucination_rate`: over every (image, class) pair where the class is absent from the image (no box,
  crowd or not), the share where the model still drew a box of that class.
- `AR100_by_objects`: AR100 over the images with 1, 2-3 and 4+ objects (COCO's evaluation on each subset).
- `duplicate_rate`: the share of predicted boxes that overlap (IoU > 0.7) a higher-scored one of the same class
  in the same image (what NMS would remove).
- `parse_failure_rate`: the share of replies that were not `none` and yielded no usable box; `problems`
  sums what the parser fixed or dropped (see `tasks/detect/box_text.py`).
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("faster_coco_eval", "pycocotools")


def box_references(record) -> dict:
    """What COCO scoring needs of a record (`data.records.Record`): its id, size and boxes (crowd marked)."""
    return {"image_id": record.image_id, "width": record.width, "height": record.height,
            "boxes": [{"label": b.label, "box": list(b.xyxy), "crowd": b.crowd} for b in record.boxes]}


def coco_image_ids(references: dict[str, dict]) -> dict[str, int]:
    """Each image's COCO id: the source's own when every one is a distinct integer, else 1..N in order."""
    given = [str(reference.get("image_id", "")) for reference in references.values()]
    if all(value.isdigit() for value in given) and len(set(given)) == len(given):
        return {key: int(value) for key, value in zip(references, given)}
    return {key: index + 1 for index, key in enumerate(references)}


def coco_ground_truth(references: dict[str, dict], image_ids: dict[str, int], classes: list[str],
                      category_ids: dict[str, int]) -> dict:
    images, annotations = [], []
    for key, reference in references.items():
        images.append({"id": image_ids[key], "width": reference["width"], "height": reference["height"]})
        for box in reference["boxes"]:
            x1, y1, x2, y2 = box["box"]
            annotations.append({"id": len(annotations) + 1, "image_id": image_ids[key],
                                "category_id": category_ids[box["label"]], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": int(box.get("crowd", False))})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": category_ids[name], "name": name} for name in classes]}


def coco_detections(predictions: dict[str, dict], image_ids: dict[str, int], category_ids: dict[str, int]) -> list:
    """A COCO results list (what `detections.json` holds)."""
    return [{"image_id": image_ids[key], "category_id": category_ids[box["label"]],
             "bbox": [round(box["box"][0], 2), round(box["box"][1], 2), round(box["box"][2] - box["box"][0], 2),
                      round(box["box"][3] - box["box"][1], 2)], "score": round(float(box["score"]), 5)}
            for key, prediction in predictions.items() if key in image_ids for box in prediction["boxes"]]


def coco_box_metrics(ground_truth: dict, detections: list, classes: list[str], category_ids: dict[str, int],
                     backend: str = "faster_coco_eval") -> dict:
    """COCO bbox evaluation by the named library; `stats` by name and AP per class."""
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    elif backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        raise ValueError(f"unknown COCO backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    with contextlib.redirect_stdout(io.StringIO()):  # both libraries print their progress and tables
        truth = COCO()
        truth.dataset = ground_truth
        truth.createIndex()
        if not detections and backend == "pycocotools":
            raise ValueError("pycocotools cannot load an empty results list; use faster_coco_eval")
        evaluator = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats)}
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall points, classes, area ranges, max dets]
    category_order = list(evaluator.params.catIds)
    per_class = {}
    for name in classes:
        values = precision[:, :, category_order.index(category_ids[name]), 0, -1]
        values = values[values > -1]
        per_class[name] = float(values.mean()) if values.size else None
    metrics["per_class_AP"] = per_class
    return metrics


DUPLICATE_IOU = 0.7
MATCH_IOU = 0.5  # a box shows an object it overlaps this much (the AP50 criterion)
OBJECT_COUNT_GROUPS = (("1", 1, 1), ("2-3", 2, 3), ("4+", 4, None))  # AR100 by objects per image


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area = lambda boxes: (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def duplicate_rate(predictions: list[dict], threshold: float, iou: float = DUPLICATE_IOU) -> tuple[float, int, int]:
    """(rate, duplicates, detections) over detections scored >= threshold: the share that overlap (IoU > iou) a
    higher-scored detection of the same class in the same image, i.e. what NMS would have removed."""
    duplicates = kept_total = 0
    for prediction in predictions:
        kept = sorted((b for b in prediction["boxes"] if b["score"] >= threshold), key=lambda b: -b["score"])
        kept_total += len(kept)
        if len(kept) < 2:
            continue
        overlaps = pairwise_iou(*(np.array([b["box"] for b in kept], dtype=np.float64),) * 2)
        labels = np.array([b["label"] for b in kept], dtype=object)
        better = np.tril(np.ones((len(kept), len(kept)), dtype=bool), -1)  # [i, j]: j is scored above i
        duplicates += int(((overlaps > iou) & (labels[:, None] == labels[None, :]) & better).any(1).sum())
    return (duplicates / kept_total if kept_total else 0.0), duplicates, kept_total


def recall_by_object_count(ground_truth: dict, detections: list, classes: list[str], category_ids: dict[str, int],
                           backend: str = "faster_coco_eval") -> dict:
    """AR100 over the images holding 1, 2-3 and 4+ objects (COCO's own evaluation on each subset); None for an
    empty group. Answers "does it find every object when there are many?"."""
    counts = Counter(a["image_id"] for a in ground_truth["annotations"] if not a.get("iscrowd"))
    recalls = {}
    for name, low, high in OBJECT_COUNT_GROUPS:
        ids = {image["id"] for image in ground_truth["images"]
               if counts[image["id"]] >= low and (high is None or counts[image["id"]] <= high)}
        if not ids:
            recalls[name] = None
            continue
        subset = {**ground_truth, "images": [i for i in ground_truth["images"] if i["id"] in ids],
                  "annotations": [a for a in ground_truth["annotations"] if a["image_id"] in ids]}
        kept = [d for d in detections if d["image_id"] in ids]
        recalls[name] = coco_box_metrics(subset, kept, classes, category_ids, backend)["AR100"] if kept else 0.0
    return recalls


def detection_metrics(predictions: dict[str, dict], references: dict[str, dict], classes: list[str],
                      category_ids: dict[str, int], backend: str = "faster_coco_eval") -> dict:
    image_ids = coco_image_ids(references)
    ground_truth = coco_ground_truth(references, image_ids, classes, category_ids)
    detections = coco_detections(predictions, image_ids, category_ids)
    metrics = coco_box_metrics(ground_truth, detections, classes, category_ids, backend)
    metrics["AR100_by_objects"] = recall_by_object_count(ground_truth, detections, classes, category_ids, backend)
    metrics["duplicate_rate"] = duplicate_rate([predictions[key] for key in references], threshold=0.0)[0]
    absent_pairs = hallucinated = 0
    for key, reference in references.items():
        present = {box["label"] for box in reference["boxes"]}
        drawn = {box["label"] for box in predictions[key]["boxes"]}
        for name in classes:
            if name not in present:
                absent_pairs += 1
                hallucinated += name in drawn
    replies = sum(p.get("queries", 0) for p in predictions.values())
    failures = sum(p.get("parse_failures", 0) for p in predictions.values())
    problems: Counter = Counter()
    for prediction in predictions.values():
        problems.update(prediction.get("problems") or {})
    metrics.update(hallucination_rate=hallucinated / absent_pairs if absent_pairs else 0.0,
                   absent_class_queries=absent_pairs, parse_failure_rate=failures / replies if replies else 0.0,
                   replies=replies, problems=dict(problems), predicted_boxes=len(detections),
                   true_boxes=sum(len(r["boxes"]) for r in references.values()), images=len(references))
    metrics["detections"] = detections  # the COCO results list; `eval` writes it as detections.json
    return metrics
