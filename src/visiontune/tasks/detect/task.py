"""Detection with a VLM: ask for classes, answer every box of them as text (see `box_text.py`), or `none`.

Queries (`queries`):
- `per-class` (default): one prompt per class, "Detect every <class> …"; at inference every image is asked
  about every class, so a class that is absent must be answered `none`;
- `all`: one prompt per image listing every class, answered with all boxes (one generation per image,
  cheaper with many classes);
- `both`: trains on both; inference uses per-class queries.

Training examples of one image: a positive query for each class present; `negatives` is the share of
queries that ask for a class absent from the image (target `none`): an image with P present classes gets
P * negatives / (1 - negatives) of them on average (at least one query for an image with no objects),
drawn at random among the absent classes with a per-image seed. Crowd regions are neither trained on nor
asked about as negatives. `max_objects` caps the boxes of one answer: the largest (by area) are kept, the
others dropped and counted (`dropped_by_max_objects`); the known recipe "largest box per class" is `max_objects=1`.
Class balancing counts the positive queries' classes (negatives and all-queries keep weight 1).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from pathlib import Path

from ...data.labels import check_class_names
from ...data.loading import load_box_records
from ...data.records import DataError, Record
from ...metrics.detection import MATCH_IOU, box_references, pairwise_iou
from ..base import Example, Task, system_turn, user_turn
from .box_text import GRID, NONE_ANSWER, ParsedBoxes, format_boxes, from_grid, parse_boxes, repeats_a_box, to_grid

QUERY_MODES = ("per-class", "all", "both")
MAX_AUTO_REGION_SLOTS = 16
DEFAULT_PROMPT = ("Detect every {query} in the image. Answer 'class: [x1,y1,x2,y2]' per class, "
                  "corners on a 0-{grid} grid, or none.")


class DetectTask(Task):
    name = "detect"
    default_prompt = DEFAULT_PROMPT
    max_new_tokens = 512  # ~18 tokens a box
    option_names = ("classes", "queries", "negatives", "max_objects", "box_grid", "region_slots", "slot_answers",
                    "second_look", "score_threshold", "seed", "category_ids")
    default_balance = "sampler"  # balance the positive queries' classes
    report_only = ("detections",)  # what `score` returns for the report files, not for the headline
    keeps_skills_by_replay = True

    def __init__(self, classes: list[str] | None = None, prompt: str | None = None, system_prompt: str | None = None,
                 queries: str = "per-class", negatives: float = 0.25, max_objects: int | None = None,
                 box_grid: int = GRID, region_slots: int | None = None, slot_answers: bool = True,
                 second_look: bool = True, score_threshold: float = 0.0, seed: int = 0,
                 category_ids: dict[str, int] | None = None):
        """`category_ids`: each class's id in COCO files written and read (default 1..K in class order).
        `slot_answers`: with region slots, train on the boxes the slots show (`answers_from_slots`).
        `second_look`: region slots read each chosen box from its own crop of the image (models/compose/regions.py)."""
        if not classes:
            raise ValueError("the detect task needs its class names: from the training data, --class-names, or a "
                             "visiontune run folder's visiontune.json")
        if queries not in QUERY_MODES:
            raise ValueError(f"unknown --queries {queries!r}; choose one of {', '.join(QUERY_MODES)}")
        if not 0.0 <= float(negatives) < 1.0:
            raise ValueError(f"--negatives is the share of queries about absent classes, in [0, 1); got {negatives}")
        if max_objects is not None and int(max_objects) < 1:
            raise ValueError(f"--max-objects must be at least 1, got {max_objects}")
        if int(box_grid) < 1:
            raise ValueError(f"--box-grid is the largest coordinate boxes are written with, at least 1; got {box_grid}")
        if region_slots is not None and int(region_slots) < 0:
            raise ValueError(f"--region-slots is how many region slots follow the image (0: none); got {region_slots}")
        super().__init__(prompt=prompt, system_prompt=system_prompt)
        self.classes = check_class_names(list(classes), "--class-names", minimum=1)
        self.queries, self.negatives = queries, float(negatives)
        self.max_objects = int(max_objects) if max_objects else None
        self.box_grid = int(box_grid)
        self.region_slots = None if region_slots is None else int(region_slots)
        self.slot_answers = bool(slot_answers)
        self.second_look = bool(second_look)
        self.score_threshold, self.seed = float(score_threshold), int(seed)
        self.category_ids = {name: int((category_ids or {}).get(name, index + 1)) for index, name in enumerate(self.classes)}

    # --- data ----------------------------------------------------------------------------------------------
    @classmethod
    def load_records(cls, spec, known: dict | None = None, log=print) -> tuple[list[Record], dict]:
        """The run's classes (or --class-names), and the data's category ids, so COCO files written and read
        match the data's own."""
        records, classes, category_ids = load_box_records(spec, classes=(known or {}).get("classes"), log=log)
        return records, {"classes": classes, "category_ids": category_ids}

    def describe_training_data(self, dataset, records: list[Record]) -> list[str]:
        """Positive queries per class, then what the queries are: by kind, boxes trained on, boxes left out."""
        from ...training.balancing import class_count_lines

        lines = class_count_lines(dataset.groups(), self.classes, "positive queries")
        groups = dataset.groups()
        positives = sum(group is not None for group in groups)
        all_class = len(records) if self.queries in ("all", "both") else 0  # one per image; the rest are negatives
        boxes = sum(not box.crowd for record in records for box in record.boxes)
        text = (f"detection queries: {positives} positive, {len(groups) - positives - all_class} negative (answer "
                f"none), {all_class} all-class; {boxes} boxes")
        dropped = sum(self.dropped_by_max_objects(record) for record in records)
        if dropped:
            text += f"; {dropped} boxes left out of answers by --max-objects {self.max_objects} (largest kept)"
        return lines + [text]

    # --- prompts and answers -------------------------------------------------------------------------------
    def query_messages(self, asked: list[str]) -> list[dict]:
        prompt = self.prompt.replace("{query}", ", ".join(asked)).replace("{classes}", ", ".join(self.classes))
        prompt = prompt.replace("{grid}", str(self.box_grid))
        return ([system_turn(self.system_prompt)] if self.system_prompt else []) + [user_turn(prompt)]

    def messages(self, record: Record | None = None) -> list[dict]:
        return self.query_messages(self.classes)

    def inference_queries(self) -> list[list[str]]:
        return [list(self.classes)] if self.queries == "all" else [[name] for name in self.classes]

    def _answer_boxes(self, record: Record, asked: list[str]) -> list:
        return [box for box in record.boxes if box.label in asked and not box.crowd]

    def dropped_by_max_objects(self, record: Record) -> int:
        """Boxes of this record that `max_objects` leaves out of its training answers."""
        if not self.max_objects:
            return 0
        asked = ([[name] for name in self.classes] if self.queries in ("per-class", "both") else []) + \
            ([self.classes] if self.queries in ("all", "both") else [])
        return sum(max(0, len(self._answer_boxes(record, names)) - self.max_objects) for names in asked)

    def target_text(self, record: Record, asked: list[str]) -> str:
        boxes = self._answer_boxes(record, asked)
        if self.max_objects and len(boxes) > self.max_objects:
            boxes = sorted(boxes, key=lambda box: -box.area)[: self.max_objects]
        return format_boxes([(box.label, to_grid(box.xyxy, record.width, record.height, self.box_grid))
                             for box in boxes],
                            self.classes)

    def training_examples(self, record: Record) -> list[Example]:
        rng = random.Random(f"{self.seed}:{record.image_key()}")
        present = [name for name in self.classes if any(b.label == name and not b.crowd for b in record.boxes)]
        crowded = {box.label for box in record.boxes if box.crowd}
        examples = []
        if self.queries in ("per-class", "both"):
            examples += [Example(self.query_messages([name]), self.target_text(record, [name]), name) for name in present]
            absent = [name for name in self.classes if name not in present and name not in crowded]
            expected = max(len(present), 1) * self.negatives / (1.0 - self.negatives)
            count = min(int(expected) + (rng.random() < expected - int(expected)), len(absent))
            examples += [Example(self.query_messages([name]), "none") for name in rng.sample(absent, count)]
        if self.queries in ("all", "both"):
            examples.append(Example(self.query_messages(self.classes), self.target_text(record, self.classes)))
        return examples

    def parse(self, text: str) -> ParsedBoxes:
        return parse_boxes(text, self.classes, self.box_grid)

    def reply_is_over(self, text: str) -> bool:
        """A reply that has repeated a box is over (`box_text.py`): generation stops there."""
        return repeats_a_box(text, self.classes, self.box_grid)

    def to_pixels(self, grid_box, width: int, height: int) -> list[float]:
        return [round(v, 2) for v in from_grid(grid_box, width, height, self.box_grid)]

    # --- training hooks ------------------------------------------------------------------------------------
    def probe_targets(self, records: list[Record]):
        """Which classes each image holds (images x classes, 0/1): what a per-class query must decide first."""
        import numpy as np

        present = np.array([[any(box.label == name and not box.crowd for box in record.boxes) for name in self.classes]
                            for record in records], dtype=int)
        return present if (present.min(0) != present.max(0)).any() else None

    def region_request(self, records: list[Record]) -> dict | None:
        """Slots labelled with the classes, on the answers' grid; as many as the most objects of any training
        image (at most MAX_AUTO_REGION_SLOTS) unless --region-slots says (0: none)."""
        if self.region_slots == 0:
            return None
        most = max((len(self._answer_boxes(record, self.classes)) for record in records), default=0)
        slots = self.region_slots or min(max(most, 1), MAX_AUTO_REGION_SLOTS)
        return {"classes": self.classes, "grid": self.box_grid, "slots": slots, "looks": self.second_look}

    def region_targets(self, records: list[Record]) -> list[list[tuple[int, tuple]]]:
        return [[(self.classes.index(box.label), tuple(v / size for v, size in zip(box.xyxy, (record.width,
                                                                                        record.height) * 2)))
                 for box in self._answer_boxes(record, self.classes)] for record in records]

    def answers_from_slots(self, items: list, read_slots) -> dict | None:
        """Answers the LM can read off the slots (`slot_answers`): each true box of an asked class that a slot
        labelled with that class boxes (IoU >= 0.5, one slot per object, the best first) is answered with that
        slot's own box; true boxes no such slot shows are left out (the LM cannot see them: trained to write
        them anyway it learns to write boxes for classes no slot names, on absent classes too). Negative
        queries stay `none`."""
        readings = read_slots() if self.slot_answers else None
        if readings is None:
            return None
        kept = total = changed = 0
        for index, (record, example) in enumerate(items):
            if example.target == NONE_ANSWER or record.image_key() not in readings:
                continue
            asked = [example.group] if example.group else list(self.classes)
            boxes = [box for name in asked for box in self._slot_boxes(record, name, readings[record.image_key()])]
            if self.max_objects and len(boxes) > self.max_objects:
                boxes = sorted(boxes, key=lambda box: -(box[1][2] - box[1][0]) * (box[1][3] - box[1][1]))
                boxes = boxes[: self.max_objects]
            kept += len(boxes)
            total += len(self._answer_boxes(record, asked))
            target = format_boxes(boxes, self.classes)
            if target != example.target:
                items[index] = (record, dataclasses.replace(example, target=target))
                changed += 1
        return {"answers_changed": changed, "boxes_answered": kept, "boxes_true": total}

    def _slot_boxes(self, record: Record, name: str, reading: list[tuple]) -> list[tuple[str, tuple]]:
        """(name, grid box) of each slot labelled `name` matched one-to-one to a true `name` box."""
        import numpy as np

        kind = self.classes.index(name)
        truth = np.array([box for label, box in self.region_targets([record])[0] if label == kind],
                         dtype=np.float32).reshape(-1, 4)
        slots = [(box, grid) for label, box, grid in reading if label == kind]
        if not len(truth) or not slots:
            return []
        overlaps = pairwise_iou(np.array([box for box, _ in slots], dtype=np.float32), truth)
        matched, used_slots, used_truth = [], set(), set()
        for flat in np.argsort(-overlaps, axis=None):
            slot, true = np.unravel_index(flat, overlaps.shape)
            if overlaps[slot, true] < MATCH_IOU:
                break
            if slot not in used_slots and true not in used_truth:
                used_slots.add(slot)
                used_truth.add(true)
                matched.append((name, tuple(int(v) for v in slots[slot][1])))
        return matched

    # --- inference -----------------------------------------------------------------------------------------
    def results(self, predictor, images: list) -> list[dict]:
        from .queries import detect_boxes

        return detect_boxes(predictor, images)

    def draw_predictions(self, results: list[dict], folder: str | Path) -> Path:
        """Each predicted image with its boxes (one colour per class, label and score) as `<folder>/<name>.png`."""
        from ...data.images import load_image
        from ...report.boxes import draw_boxes

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for index, row in enumerate(results):
            stem = Path(str(row["image"])).stem if isinstance(row["image"], str) else f"image_{index:05d}"
            name = stem if stem not in used else f"{stem}_{index}"
            used.add(name)
            if isinstance(row["image"], str) and not row["image"].startswith("<"):
                draw_boxes(load_image(row["image"]), row["boxes"], classes=self.classes,
                           with_labels=True).save(folder / f"{name}.png")
        return folder

    # --- evaluation ----------------------------------------------------------------------------------------
    def references(self, record: Record) -> dict:
        return box_references(record)

    def prediction_of(self, row: dict) -> dict:
        """A result row (`visiontune predict` / eval) or a COCO results row group, as `score` takes it."""
        boxes = [{"label": b["label"], "box": [float(v) for v in b["box"]], "score": float(b.get("score", 1.0))}
                 for b in row.get("boxes") or [] if b.get("label") in self.classes]
        return {"boxes": boxes, "queries": row.get("queries", 0), "parse_failures": row.get("parse_failures", 0),
                "problems": row.get("problems", {})}

    def score(self, predictions: dict[str, dict], references: dict[str, dict]) -> dict:
        from ...metrics.detection import detection_metrics

        return detection_metrics(predictions, references, self.classes, self.category_ids)

    def sample_lines(self, prediction: dict, reference: dict) -> list[str]:
        def summary(boxes):
            counts = Counter(box["label"] for box in boxes)
            return ", ".join(f"{name} {counts[name]}" for name in self.classes if counts[name]) or "none"

        return [f"pred (red): {summary(prediction['boxes'])}", f"true (green): {summary(reference['boxes'])}"]

    def draw_sample(self, image, prediction: dict, reference: dict):
        from ...report.boxes import draw_boxes

        image = draw_boxes(image, reference["boxes"], colour=(40, 200, 60))
        return draw_boxes(image, prediction["boxes"], colour=(230, 40, 40), with_labels=True)

    def read_predictions_file(self, path: Path):
        """A COCO results file ([{image_id, category_id, bbox: [x,y,w,h], score}]) -> ({image_id: {"boxes"}},
        the row of an image it lists no box for); None when the file is not one."""
        if path.suffix.lower() != ".json":
            return None
        payload = json.loads(path.read_text())
        if not isinstance(payload, list) or not all(isinstance(r, dict) and {"image_id", "category_id", "bbox"} <= set(r)
                                                    for r in payload):
            return None
        classes_by_id = {ident: name for name, ident in self.category_ids.items()}
        grouped: dict[str, dict] = {}
        for index, row in enumerate(payload):
            if row["category_id"] not in classes_by_id:
                raise DataError(f"{path} [{index}]: category_id {row['category_id']} is not a class of the data "
                                f"(ids: {', '.join(str(k) for k in sorted(classes_by_id))})")
            x, y, w, h = (float(v) for v in row["bbox"])
            grouped.setdefault(str(row["image_id"]), {"image": str(row["image_id"]), "boxes": []})["boxes"].append(
                {"label": classes_by_id[row["category_id"]], "box": [x, y, x + w, y + h],
                 "score": row.get("score", 1.0)})
        return grouped, {"boxes": []}

    def write_report(self, output: Path, metrics: dict, header: dict, extras: dict) -> None:
        (output / "detections.json").write_text(json.dumps(extras.get("detections")))
        (output / "results.json").write_text(json.dumps({"task": self.metadata(), **header, **metrics}, indent=2))

    def metadata(self) -> dict:
        return {**super().metadata(), "classes": self.classes, "queries": self.queries, "negatives": self.negatives,
                "max_objects": self.max_objects, "box_grid": self.box_grid, "region_slots": self.region_slots,
                "slot_answers": self.slot_answers, "second_look": self.second_look,
                "score_threshold": self.score_threshold,
                "category_ids": self.category_ids}
