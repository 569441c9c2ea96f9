"""The detect task's examples (queries, negatives, --max-objects), box scores and COCO metrics."""

import math
import random

import pytest

from visiontune.data.records import Box, Record
from visiontune.metrics.detection import STAT_NAMES, detection_metrics
from visiontune.tasks import get_task
from visiontune.tasks.detect.box_text import parse_boxes
from visiontune.tasks.detect.queries import box_scores
from visiontune.training.balancing import inverse_frequency_weights

CLASSES = ["person", "traffic light", "dog", "cat"]


def _record(boxes, key="a.png"):
    return Record(image=key, image_id="1", width=200, height=100, boxes=[Box(*b) for b in boxes])


def _prompt(example):
    return example.messages[-1]["content"][1]["text"]


def test_positive_and_negative_queries():
    record = _record([("dog", (0, 0, 100, 50)), ("person", (100, 50, 200, 100)), ("person", (20, 10, 40, 90)),
                      ("cat", (5, 5, 10, 10), True)])  # a crowd of cats: neither trained on nor asked as absent
    task = get_task("detect", classes=CLASSES, negatives=0.5, seed=3)
    examples = task.training_examples(record)
    positives = [e for e in examples if e.group]
    assert [(e.group, e.target) for e in positives] == [("person", "person: [10,10,20,90]; [50,50,100,100]"),
                                                        ("dog", "dog: [0,0,50,50]")]
    assert "Detect every person in the image" in _prompt(positives[0])
    negatives = [e for e in examples if not e.group]
    assert len(negatives) == 1 and negatives[0].target == "none" and "traffic light" in _prompt(negatives[0])
    assert task.training_examples(record) == examples  # the same draw every time for this image and seed
    assert [e.target for e in get_task("detect", classes=CLASSES, negatives=0).training_examples(record)] == \
        [e.target for e in positives]


def test_box_grid_writes_reads_and_maps_back_on_its_own_grid():
    record = _record([("dog", (0, 0, 100, 50)), ("dog", (120, 40, 200, 100))])
    task = get_task("detect", classes=CLASSES, negatives=0, box_grid=9)
    (example,) = task.training_examples(record)
    assert example.target == "dog: [0,0,4,4]; [5,4,9,9]"  # one digit a coordinate
    assert "0-9 grid" in _prompt(example)
    (_, grid_box), = task.parse("dog: [5,4,9,9]").boxes
    assert task.to_pixels(grid_box, 200, 100) == [111.11, 44.44, 200.0, 100.0]
    assert task.parse("dog: [5,4,12,9]").problems["clipped"] == 1  # off this grid, not the default one
    from visiontune.tasks import task_from_metadata
    assert task_from_metadata(task.metadata()).box_grid == 9  # predict/eval read a run on the grid it trained on
    with pytest.raises(ValueError, match="--box-grid"):
        get_task("detect", classes=CLASSES, box_grid=0)


def test_negative_share_over_many_images():
    rng = random.Random(0)
    records = [_record([(rng.choice(CLASSES[:2]), (10, 10, 50, 50))], key=f"{i}.png") for i in range(400)]
    task = get_task("detect", classes=CLASSES, negatives=0.25)
    examples = [e for r in records for e in task.training_examples(r)]
    share = sum(e.target == "none" for e in examples) / len(examples)
    assert 0.2 < share < 0.3
    empty = task.training_examples(_record([]))
    assert len(empty) in (0, 1) and all(e.target == "none" for e in empty)


def test_all_queries_and_max_objects():
    record = _record([("dog", (0, 0, 20, 20)), ("dog", (50, 0, 150, 100)), ("person", (0, 50, 10, 60))])
    task = get_task("detect", classes=CLASSES, queries="all", max_objects=2)
    (example,) = task.training_examples(record)
    assert example.group is None and "person, traffic light, dog, cat" in _prompt(example)
    assert example.target == "dog: [0,0,10,20]; [25,0,75,100]"  # the largest two kept; the person dropped
    assert task.dropped_by_max_objects(record) == 1
    both = get_task("detect", classes=CLASSES, queries="both", negatives=0)
    assert len(both.training_examples(record)) == 3 and both.inference_queries() == [[c] for c in CLASSES]


def test_balancing_weights_leave_unbalanced_items_alone():
    weights = inverse_frequency_weights(["dog", "dog", "dog", "cat", None, None])
    assert weights == [4 / 6, 4 / 6, 4 / 6, 2.0, 1.0, 1.0]


def test_box_scores_average_the_box_tokens():
    text = "dog: [1,2,3,4]; [5,6,7,8]"
    spans = parse_boxes(text, CLASSES).spans
    # One token per character; the first box's tokens have log-prob -1, the second's -3, the rest 0.
    ends = list(range(1, len(text) + 1))
    log_probs = [-1.0 if spans[0][0] <= i < spans[0][1] else -3.0 if spans[1][0] <= i < spans[1][1] else 0.0
                 for i in range(len(text))]
    assert box_scores(spans, ends, log_probs) == pytest.approx([math.exp(-1), math.exp(-3)])


def _fixture(seed=0):
    """References with crowd boxes and images without objects; detections jittered, missed, false and on crowds."""
    rng = random.Random(seed)
    references, predictions = {}, {}
    for index in range(12):
        boxes = []
        for _ in range(rng.randint(0, 4)):
            x, y, side = rng.uniform(0, 300), rng.uniform(0, 200), rng.choice([12, 40, 120])
            boxes.append({"label": rng.choice(CLASSES), "box": [x, y, x + side, y + side], "crowd": rng.random() < 0.15})
        references[f"{index}.png"] = {"image_id": str(index + 1), "width": 420, "height": 320, "boxes": boxes}
        found = []
        if index % 5 != 4:  # some images get no detections at all
            for box in boxes:
                if rng.random() < 0.8:
                    shift = rng.uniform(-4, 4)
                    found.append({"label": box["label"] if rng.random() < 0.9 else rng.choice(CLASSES),
                                  "box": [v + shift for v in box["box"]], "score": rng.random()})
            for _ in range(rng.randint(0, 2)):
                x, y = rng.uniform(0, 300), rng.uniform(0, 200)
                found.append({"label": rng.choice(CLASSES), "box": [x, y, x + 30, y + 30], "score": rng.random()})
        predictions[f"{index}.png"] = {"boxes": found, "queries": 4, "parse_failures": int(index == 3)}
    return references, predictions


def test_faster_coco_eval_equals_pycocotools():
    references, predictions = _fixture()
    ids = {name: [1, 3, 18, 90][i] for i, name in enumerate(CLASSES)}  # non-contiguous ids
    assert any(b["crowd"] for r in references.values() for b in r["boxes"])
    assert any(not r["boxes"] for r in references.values()) and any(not p["boxes"] for p in predictions.values())
    fast = detection_metrics(predictions, references, CLASSES, ids, backend="faster_coco_eval")
    reference = detection_metrics(predictions, references, CLASSES, ids, backend="pycocotools")
    assert 0.2 < fast["AP"] < 0.95  # a fixture where the numbers mean something
    for name in STAT_NAMES:
        assert fast[name] == pytest.approx(reference[name], abs=1e-12), name
    for name in CLASSES:
        assert fast["per_class_AP"][name] == pytest.approx(reference["per_class_AP"][name], abs=1e-12), name
    assert fast["parse_failure_rate"] == pytest.approx(1 / 48)


def test_hallucination_rate_counts_absent_classes_only():
    references = {"a": {"image_id": "1", "width": 100, "height": 100,
                        "boxes": [{"label": "dog", "box": [0, 0, 50, 50], "crowd": False}]},
                  "b": {"image_id": "2", "width": 100, "height": 100, "boxes": []}}
    predictions = {"a": {"boxes": [{"label": "dog", "box": [0, 0, 50, 50], "score": 0.9},
                                   {"label": "cat", "box": [60, 60, 90, 90], "score": 0.5}]},
                   "b": {"boxes": [{"label": "person", "box": [0, 0, 10, 10], "score": 0.2}]}}
    metrics = detection_metrics(predictions, references, CLASSES, {c: i + 1 for i, c in enumerate(CLASSES)})
    assert metrics["absent_class_queries"] == 7 and metrics["hallucination_rate"] == pytest.approx(2 / 7)
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["per_class_AP"]["person"] is None
    assert len(metrics["detections"]) == 3


def test_recall_by_objects_per_image_and_duplicates():
    """One image with 1 object (found), one with 3 (one found, and found twice), one with 4 (none found)."""
    def boxes(count):
        return [{"label": "dog", "box": [20 * i, 0, 20 * i + 10, 10], "crowd": False} for i in range(count)]

    references = {name: {"image_id": str(i + 1), "width": 100, "height": 100, "boxes": boxes(n)}
                  for i, (name, n) in enumerate((("one", 1), ("three", 3), ("four", 4)))}
    predictions = {"one": {"boxes": [{"label": "dog", "box": [0, 0, 10, 10], "score": 0.9}]},
                   "three": {"boxes": [{"label": "dog", "box": [0, 0, 10, 10], "score": 0.9},
                                       {"label": "dog", "box": [0, 0, 10, 11], "score": 0.8}]},
                   "four": {"boxes": [{"label": "dog", "box": [80, 80, 90, 90], "score": 0.7}]}}
    metrics = detection_metrics(predictions, references, CLASSES, {c: i + 1 for i, c in enumerate(CLASSES)})
    recall = metrics["AR100_by_objects"]
    assert recall["1"] == pytest.approx(1.0) and recall["2-3"] == pytest.approx(1 / 3) and recall["4+"] == 0.0
    assert metrics["duplicate_rate"] == pytest.approx(1 / 4)  # the second box on "three" repeats the first


def test_answers_from_slots_keep_the_true_boxes_a_slot_shows_with_their_class():
    """A training answer becomes what the slots show: a true box that a slot labelled with its class overlaps
    (IoU >= 0.5) is written as that slot's box; a true box that no slot shows, or that a slot shows with another
    class or `none`, is left out; negatives stay `none`. --no-slot-answers leaves every answer as it was, and
    does not read the slots."""
    record = _record([("dog", (0, 0, 100, 50)), ("dog", (120, 0, 180, 40)), ("person", (100, 50, 200, 100)),
                      ("cat", (10, 60, 50, 95))])
    reading = [(CLASSES.index("dog"), (0.1, 0.0, 0.5, 0.6), (10, 0, 50, 60)),  # dog 1 again, further off: not kept
               (CLASSES.index("dog"), (0.0, 0.0, 0.48, 0.5), (0, 0, 48, 50)),  # dog 1, the closest slot: kept
               (-1, (0.6, 0.0, 0.9, 0.4), (60, 0, 90, 40)),  # dog 2 labelled none: the LM cannot see it
               (CLASSES.index("cat"), (0.5, 0.5, 1.0, 1.0), (50, 50, 100, 100)),  # the person, labelled cat
               (CLASSES.index("dog"), (0.05, 0.6, 0.25, 0.95), (5, 60, 25, 95))]  # the cat, labelled dog
    task = get_task("detect", classes=CLASSES, negatives=0.5, seed=3)
    examples = task.training_examples(record)
    items = [(record, example) for example in examples]
    counts = task.answers_from_slots(items, lambda: {record.image_key(): reading})
    answers = {example.group: example.target for _, example in items}
    assert answers == {"dog": "dog: [0,0,48,50]", "person": "none", "cat": "none", None: "none"}
    assert counts == {"answers_changed": 3, "boxes_answered": 1, "boxes_true": 4}
    assert [e.messages for _, e in items] == [e.messages for e in examples]  # only the answers change
    untouched = [(record, example) for example in examples]

    def unread():
        raise AssertionError("the slots were read with --no-slot-answers: encoder passes for nothing")

    assert get_task("detect", classes=CLASSES, slot_answers=False).answers_from_slots(untouched, unread) is None
    assert task.answers_from_slots(untouched, lambda: None) is None  # a resumed run without its saved readings
    assert [e.target for _, e in untouched] == [e.target for e in examples]
