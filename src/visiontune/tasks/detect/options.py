"""Detection's own options: `train` flags, `predict`/`eval` flags, YAML keys and Python keywords alike."""

from __future__ import annotations

from dataclasses import dataclass, field

QUERIES_HELP = "per-class (one prompt per class; default), all (one prompt per image), both"


@dataclass(kw_only=True)
class TrainOptions:
    queries: str | None = field(default=None, metadata={"help": QUERIES_HELP})
    negatives: float | None = field(default=None, metadata={
        "help": "share of queries about absent classes, answered none (default 0.25)"})
    max_objects: int | None = field(default=None, metadata={
        "help": "most boxes per answer; the largest are kept (default: all)"})
    box_grid: int | None = field(default=None, metadata={
        "help": "boxes are written as integers 0..N of the image's width and height (default 100: two digits a "
                "coordinate, 1 %% of the side; 1000 for finer boxes, 9 for one digit)"})
    region_slots: int | None = field(default=None, metadata={
        "help": "composed VLMs: what the image's regions hold written as text after the image, this many slots "
                "(default: the most objects of any training image, at most 16; 0: off)"})
    slot_answers: bool = field(default=True, metadata={
        "help": "with region slots, answer each training query with the boxes the slots show (a slot with the "
                "asked class on a true box, that slot's box); --no-slot-answers: every true box"})
    second_look: bool = field(default=True, metadata={
        "help": "with region slots, each slot's label reads its box again from the image cropped around it (one "
                "more encoder pass per slot); --no-second-look: from the whole image's patch features"})


@dataclass(kw_only=True)
class InferenceOptions:
    queries: str | None = field(default=None, metadata={"help": QUERIES_HELP + " (default: the run's)"})
    score_threshold: float | None = field(default=None, metadata={"help": "drop boxes scored below this"})
