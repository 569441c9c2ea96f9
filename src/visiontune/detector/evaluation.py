"""Scoring a dedicated detector: COCO box metrics by the same code as `detect` (faster-coco-eval), the
duplicate rate that tells whether NMS-free inference works, and PNG overlays.

`duplicate_rate`: among detections scored >= threshold, the share that overlap (IoU > 0.7) a higher-scored
detection of the same class in the same image, i.e. what NMS would have removed. A one-to-one head should
keep it near 0.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.records import Record
from ..metrics.detection import (
    box_references,
    coco_box_metrics,
    coco_detections,
    coco_ground_truth,
    coco_image_ids,
    duplicate_rate,
    pairwise_iou,
)


def f1_operating_point(predictions: list[dict], references: list[dict], iou: float = 0.5) -> dict:
    """The score threshold at which the detections have their best F1 (a detection is a true positive when
    it is the best-scored one of its class on an object, IoU >= iou, as COCO counts at AP50; crowd objects
    are left out). A threshold fixed in advance says little about a model whose scores run low or high, so
    the duplicate rate is also reported at this threshold, the one a user would deploy with."""
    scores, hits, objects = [], [], 0
    for prediction, reference in zip(predictions, references):
        truths = [b for b in reference["boxes"] if not b.get("crowd")]
        objects += len(truths)
        detections = sorted(prediction["boxes"], key=lambda b: -b["score"])
        if not detections:
            continue
        overlaps = np.zeros((len(detections), len(truths)))
        if truths:
            overlaps = pairwise_iou(np.array([b["box"] for b in detections], dtype=np.float64),
                                    np.array([t["box"] for t in truths], dtype=np.float64))
            same_class = np.array([[b["label"] == t["label"] for t in truths] for b in detections])
            overlaps = np.where(same_class, overlaps, 0.0)
        for row, box in enumerate(detections):  # in score order, each to its best free object
            best = int(overlaps[row].argmax()) if truths else 0
            hit = bool(truths) and overlaps[row, best] >= iou
            if hit:
                overlaps[:, best] = 0.0  # taken
            scores.append(box["score"]), hits.append(hit)
    if not scores or not objects:
        return {"f1_threshold": None, "f1": 0.0, "f1_precision": 0.0, "f1_recall": 0.0}
    order = np.argsort(-np.asarray(scores), kind="stable")
    true_positives = np.cumsum(np.asarray(hits)[order])
    precision = true_positives / np.arange(1, len(order) + 1)
    recall = true_positives / objects
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(f1.argmax())
    return {"f1_threshold": float(np.asarray(scores)[order][best]), "f1": float(f1[best]),
            "f1_precision": float(precision[best]), "f1_recall": float(recall[best])}


def score_predictions(predictions: list[dict], records: list[Record], classes: list[str], category_ids: dict[str, int],
                      threshold: float) -> dict:
    """COCO metrics (all top-k detections scored) + the duplicate rate at `threshold`."""
    references = {record.image_key(): box_references(record) for record in records}
    keyed = {record.image_key(): prediction for record, prediction in zip(records, predictions)}
    image_ids = coco_image_ids(references)
    ground_truth = coco_ground_truth(references, image_ids, classes, category_ids)
    detections = coco_detections(keyed, image_ids, category_ids)
    metrics = coco_box_metrics(ground_truth, detections, classes, category_ids)
    rate, duplicates, kept = duplicate_rate(predictions, threshold)
    metrics.update(duplicate_rate=rate, duplicates=duplicates, detections_above_threshold=kept,
                   score_threshold=threshold, images=len(records),
                   true_boxes=sum(len(r["boxes"]) for r in references.values()))
    operating = f1_operating_point(predictions, [references[record.image_key()] for record in records])
    if operating["f1_threshold"] is not None:
        operating["duplicate_rate_at_f1_threshold"] = duplicate_rate(predictions, operating["f1_threshold"])[0]
    metrics.update(operating)
    metrics["detections"] = detections
    return metrics


def run_and_score(predict: Callable[[list], list[dict]], records: list[Record], classes: list[str],
                  category_ids: dict[str, int], threshold: float, batch_size: int = 16) -> tuple[dict, list[dict]]:
    """Predict every record's image (all top-k, no threshold) and score; also returns the predictions."""
    predictions, started = [], time.perf_counter()
    for start in range(0, len(records), batch_size):
        predictions += predict([r.load_image() for r in records[start:start + batch_size]])
    seconds = time.perf_counter() - started
    metrics = score_predictions(predictions, records, classes, category_ids, threshold)
    metrics["images_per_second"] = len(records) / seconds if seconds else None
    return metrics, predictions


def write_overlays(folder: str | Path, records: list[Record], predictions: list[dict], classes: list[str],
                   threshold: float, limit: int = 16) -> list[Path]:
    """PNG per image: ground truth in green, detections >= threshold in red with class and score."""
    from ..report.boxes import draw_boxes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (record, prediction) in enumerate(zip(records[:limit], predictions[:limit])):
        image = draw_boxes(record.load_image(), [{"label": b.label, "box": list(b.xyxy)} for b in record.boxes],
                           colour=(40, 200, 80))
        image = draw_boxes(image, [b for b in prediction["boxes"] if b["score"] >= threshold], colour=(230, 40, 40),
                           classes=classes, with_labels=True)
        path = folder / f"{index:03d}_{Path(str(record.image_key())).stem}.png"
        image.save(path)
        written.append(path)
    return written


def write_metrics(path: str | Path, metrics: dict) -> None:
    Path(path).write_text(json.dumps({k: v for k, v in metrics.items() if k != "detections"}, indent=2))
