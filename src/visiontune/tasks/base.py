"""The `Task` interface: everything that differs between caption, classify, detect and chat lives behind it.

A task turns a record into training examples (chat messages + target text) and a model's replies back into
predictions; it loads its own records (and what the data says about itself: classes, category ids), scores
predictions, writes its report files, and owns its training hooks (probe start, in-training evaluation,
the post-training step) and prediction modes. `train`, `predict`, `evaluate` and `data/` call this interface
and never look at a task's name. A new task is one folder under `tasks/` plus a line in `tasks/__init__.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.records import Record


@dataclass
class Example:
    """One training conversation: the prompt messages and the answer to learn. `group` is what class
    balancing counts (classify: the label; detect: the class a positive query asks for); None = not balanced.
    `continuation`: later turns of a multi-turn conversation (user and assistant messages); every assistant
    turn is trained on, never a user turn."""

    messages: list[dict]
    target: str
    group: str | None = None
    continuation: list[dict] = field(default_factory=list)


def user_turn(text: str, images: int = 1) -> dict:
    return {"role": "user", "content": [{"type": "image"} for _ in range(images)] + [{"type": "text", "text": text}]}


def system_turn(text: str) -> dict:
    return {"role": "system", "content": [{"type": "text", "text": text}]}


class Task:
    name = "task"
    default_prompt = ""
    max_new_tokens = 64  # generation length when none is given
    option_names: tuple[str, ...] = ()  # options beyond prompt / system_prompt, stored in a run's visiontune.json
    prediction_modes: tuple[str, ...] = ("generate",)  # the first is the default
    default_balance = "none"  # what --balance auto means for this task
    best_metric = "eval_loss"  # what picks the best checkpoint when there is evaluation data
    headline_metrics: tuple[str, ...] = ()  # in-training evaluation metrics that summary.json reports
    report_only: tuple[str, ...] = ()  # what `score` returns for the report files only (not the returned metrics)
    keeps_skills_by_replay = False  # fine-tunes mix in the model's own general answers (tasks/self_replay.py)
    one_example_per_record = False  # True: a large set can be read lazily (training/examples.py)

    def __init__(self, prompt: str | None = None, system_prompt: str | None = None):
        self.prompt = prompt or self.default_prompt
        self.system_prompt = system_prompt

    # --- data ----------------------------------------------------------------------------------------------
    @classmethod
    def load_records(cls, spec, known: dict | None = None, log=print) -> tuple[list[Record], dict]:
        """The records of one data source, and the task options the data itself gives (classes, category
        ids). `known`: options a trained model already fixes (its classes), which the data must follow."""
        raise NotImplementedError

    def describe_training_data(self, dataset, records: list[Record]) -> list[str]:
        """Lines for the training log about what the examples are (class counts, query kinds)."""
        return []

    # --- prompts and answers -------------------------------------------------------------------------------
    def messages(self, record: Record | None = None) -> list[dict]:
        """The conversation up to (not including) the answer; one image, then the instruction."""
        messages = [system_turn(self.system_prompt)] if self.system_prompt else []
        return messages + [user_turn(self.prompt)]

    def training_targets(self, record: Record) -> list[str]:
        """Every target text to train on for this record (one example is made per target)."""
        raise NotImplementedError

    def training_examples(self, record: Record) -> list[Example]:
        """Every example this record yields; tasks whose prompt varies per example override this."""
        return [Example(self.messages(record), target, record.label) for target in self.training_targets(record)]

    def training_images(self, record: Record) -> list:
        """The images of one training example, in the order the prompt names them."""
        return [record.load_image()]

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    # --- training hooks ------------------------------------------------------------------------------------
    def probe_targets(self, records: list[Record]):
        """What a linear probe of the image features learns at a composed VLM's probe start: an array of class
        indices (one class per image) or a presence matrix (images x classes); None: no probe start."""
        return

    def region_request(self, records: list[Record]) -> dict | None:
        """What region slots should write after the image for this task, on families that have them:
        {"classes", "grid", "slots"}, fitted on `region_targets`. None: the task has no use for them."""
        return

    def region_targets(self, records: list[Record]) -> list[list[tuple[int, tuple]]] | None:
        """Per record, (class index, box as x1, y1, x2, y2 in 0..1) of each object the region slots learn from."""
        return

    def answers_from_slots(self, items: list, read_slots) -> dict | None:
        """Rewrite the training answers of `items` ((record, Example) pairs, in place) to what the fitted region
        slots show; `read_slots()` gives {record's image key: what its slots write (`slot_readings`)}, or None
        when they cannot be read, and is called only by a task that uses them (reading costs encoder passes).
        Returns counts for the log and the summary; None: the task's answers stay as they are."""
        return

    def in_training_eval(self, records: list[Record], processor, batch_size: int):
        """A function model -> {metric: value} run at each evaluation during training (None: the loss only)."""
        return

    def after_training(self, model, processor, records: list[Record], batch_size: int, log=print) -> dict | None:
        """A step after training on the evaluation records (e.g. calibration); what it did, for the summary. If
        it scored the records with the final weights, its "eval_metrics" ({name: value}) stand in for the
        in-training evaluation's task metrics in the final evaluation."""
        return None

    def training_record(self, dataset, config: dict) -> dict | None:
        """Extra facts about the run for `training_metadata.json` (None: no such file)."""
        return None

    # --- inference -----------------------------------------------------------------------------------------
    def inference_input(self, record: Record):
        """What `results` takes for a record of an evaluation set (an image; tasks whose prompt comes from the
        data return more)."""
        return record.load_image()

    def results(self, predictor, images: list) -> list[dict]:
        """One result row per image (see README "Prediction output"): the reply parsed."""
        return [{"prediction": self.parse(text), "text": text} for text in predictor.generate_texts(images)]

    def draw_predictions(self, results: list[dict], folder: str | Path) -> Path:
        """`predict --draw`: each image with its predictions drawn, into `folder`."""
        raise ValueError(f"--draw writes images with their boxes; it applies to --task detect, not {self.name}")

    # --- evaluation ----------------------------------------------------------------------------------------
    def references(self, record: Record) -> Any:
        """What a prediction for this record is scored against."""
        raise NotImplementedError

    def prediction_of(self, row: dict) -> Any:
        """The prediction in one result row (from `Predictor.results` or a predictions file), as `score` takes it."""
        raise NotImplementedError

    def read_predictions_file(self, path: Path) -> tuple[dict[str, dict], dict | None] | None:
        """A predictions file in a task-specific layout (e.g. COCO detection results) -> ({image: row}, the
        row of an image it does not mention); None when the file is not in that layout."""
        return None

    def score(self, predictions: dict[str, Any], references: dict[str, Any]) -> dict:
        raise NotImplementedError

    def write_report(self, output: Path, metrics: dict, header: dict, extras: dict) -> None:
        """Task-specific report files beside metrics.json (`extras`: what `score` set aside, e.g. detections)."""

    def sample_lines(self, prediction: Any, reference: Any) -> list[str]:
        """Text drawn above an image in the samples grid."""
        raise NotImplementedError

    def draw_sample(self, image, prediction: Any, reference: Any):
        """The image shown in the samples grid (detection draws its boxes on it)."""
        return image

    def metadata(self) -> dict:
        return {"task": self.name, "prompt": self.prompt, "system_prompt": self.system_prompt}
