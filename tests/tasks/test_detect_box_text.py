"""Boxes as text: format and parse are exact inverses; messy replies are fixed or dropped and counted."""

from hypothesis import given, settings
from hypothesis import strategies as st

from visiontune.tasks.detect.box_text import (GRID, box_iou, format_boxes, from_grid, parse_boxes, repeats_a_box,
                                              to_grid)

CLASSES = ["person", "traffic light", "car", "fire hydrant", "dog"]


@st.composite
def box_sets(draw):
    boxes = []
    for _ in range(draw(st.integers(0, 12))):
        x1, x2 = sorted(draw(st.lists(st.integers(0, GRID), min_size=2, max_size=2, unique=True)))
        y1, y2 = sorted(draw(st.lists(st.integers(0, GRID), min_size=2, max_size=2, unique=True)))
        boxes.append((draw(st.sampled_from(CLASSES)), (x1, y1, x2, y2)))
    return boxes


@settings(max_examples=300, deadline=None)
@given(box_sets())
def test_round_trip(boxes):
    text = format_boxes(boxes, CLASSES)
    parsed = parse_boxes(text, CLASSES)
    assert set(parsed.boxes) <= set(boxes)
    for name, box in set(boxes) - set(parsed.boxes):  # written once: another box of its class overlaps it
        assert any(n == name and box_iou(box, other) > 0.7 for n, other in parsed.boxes)
    assert not parsed.problems
    assert format_boxes(parsed.boxes, CLASSES) == text  # the order is deterministic


def test_order_and_none():
    boxes = [("car", (5, 50, 9, 60)), ("person", (300, 10, 400, 20)), ("person", (100, 10, 200, 20)),
             ("person", (0, 5, 10, 90))]
    assert format_boxes(boxes, CLASSES) == ("person: [0,5,10,90]; [100,10,200,20]; [300,10,400,20]\n"
                                            "car: [5,50,9,60]")
    assert format_boxes([], CLASSES) == "none"
    assert parse_boxes("None.", CLASSES).boxes == [] and not parse_boxes("none", CLASSES).failed


def test_messy_replies_are_fixed_or_counted():
    parsed = parse_boxes("  Traffic  Light :( 10 , 20,30 ,40 ),[50,60,70,80]\n"
                         "unicorn: [1,2,3,4]\n"
                         "car: [300,400,100,200]; [-5,10,1200,50]; [7,7,7,9]\n"
                         "dog: [1,2,3,4]; [5,6,", CLASSES, grid=1000)
    assert parsed.boxes == [("traffic light", (10, 20, 30, 40)), ("traffic light", (50, 60, 70, 80)),
                            ("car", (100, 200, 300, 400)), ("car", (0, 10, 1000, 50)), ("dog", (1, 2, 3, 4))]
    assert parsed.problems == {"unknown_class": 1, "swapped": 1, "clipped": 1, "empty": 1, "truncated": 1}
    nonsense = parse_boxes("I see a nice picture", CLASSES)
    assert nonsense.failed and nonsense.problems["junk_line"] == 1


def test_grid_conversion():
    assert to_grid((0, 0, 640, 480), 640, 480) == (0, 0, GRID, GRID)
    assert to_grid((64, 48, 700, 240), 640, 480, grid=1000) == (100, 100, 1000, 500)
    assert from_grid((100, 100, 1000, 500), 640, 480, grid=1000) == (64.0, 48.0, 640.0, 240.0)


def test_a_reply_ends_at_its_first_repeated_box():
    looping = "cat: [10,10,40,40]; [50,50,90,90]; [50,51,90,90]; [50,50,90,90]\ndog: [1,1,5,5]"
    parsed = parse_boxes(looping, ["cat", "dog"])
    assert parsed.boxes == [("cat", (10, 10, 40, 40)), ("cat", (50, 50, 90, 90))]
    assert parsed.problems["repeated"] == 1
    third_box_ends = looping.index("[50,51,90,90]") + len("[50,51,90,90]")
    assert repeats_a_box(looping[:third_box_ends], ["cat", "dog"])
    assert not repeats_a_box(looping[:third_box_ends - 1], ["cat", "dog"])
    # overlapping boxes of different classes, or of one class below the IoU, are separate objects
    apart = parse_boxes("cat: [0,0,10,10]; [0,0,10,20]\ndog: [0,0,10,10]", ["cat", "dog"])
    assert len(apart.boxes) == 3 and not apart.problems["repeated"]
