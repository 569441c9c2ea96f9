"""A task turns a record into chat messages + target text, and generated text back into a prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..data.records import Record


@dataclass
class Example:
    """One training conversation: the prompt messages and the answer to learn. `group` is what class
    balancing counts (classify: the label; detect: the class a positive query asks for); None = not balanced."""

    messages: list[dict]
    target: str
    group: str | None = None


class Task:
    name = "task"
    default_prompt = ""
    max_new_tokens = 64  # generation length when none is given

    def __init__(self, prompt: str | None = None, system_prompt: str | None = None):
        self.prompt = prompt or self.default_prompt
        self.system_prompt = system_prompt

    def messages(self, record: Record | None = None) -> list[dict]:
        """The conversation up to (not including) the answer; one image, then the instruction."""
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]})
        return messages

    def training_targets(self, record: Record) -> list[str]:
        """Every target text to train on for this record (one example is made per target)."""
        raise NotImplementedError

    def training_examples(self, record: Record) -> list[Example]:
        """Every example this record yields; tasks whose prompt varies per example override this."""
        return [Example(self.messages(record), target, record.label) for target in self.training_targets(record)]

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def references(self, record: Record) -> Any:
        """What a prediction for this record is scored against."""
        raise NotImplementedError

    def prediction_of(self, row: dict) -> Any:
        """The prediction in one result row (from `Predictor.results` or a predictions file), as `score` takes it."""
        raise NotImplementedError

    def score(self, predictions: dict[str, Any], references: dict[str, Any]) -> dict:
        raise NotImplementedError

    def sample_lines(self, prediction: Any, reference: Any) -> list[str]:
        """Text drawn above an image in the samples grid."""
        raise NotImplementedError

    def draw_sample(self, image, prediction: Any, reference: Any):
        """The image shown in the samples grid (detection draws its boxes on it)."""
        return image

    def metadata(self) -> dict:
        return {"task": self.name, "prompt": self.prompt, "system_prompt": self.system_prompt}


# Options each task takes beyond prompt / system_prompt; a run's visiontune.json stores them.
TASK_OPTIONS = {"caption": (), "classify": ("classes", "descriptions", "reasoning", "temperature"),
                "detect": ("classes", "queries", "negatives", "max_objects", "box_format", "score_threshold", "seed",
                           "category_ids")}


def task_options(config) -> dict:
    """Task options a Train/Predict/EvalConfig sets (None where it leaves the run's or the default)."""
    prompt_template = getattr(config, "prompt_template", None)
    if prompt_template and config.prompt and prompt_template != config.prompt:
        raise ValueError("--prompt and --prompt-template are the same option; give one of them")
    class_names, classes = getattr(config, "class_names", None), getattr(config, "classes", None)
    if class_names and classes and list(class_names) != list(classes):
        raise ValueError("--class-names and --classes are the same option; give one of them")
    return {"prompt": prompt_template or config.prompt, "system_prompt": config.system_prompt,
            "classes": class_names or classes, "descriptions": getattr(config, "class_descriptions", None),
            "reasoning": getattr(config, "reasoning", None) or None, "queries": getattr(config, "queries", None),
            "negatives": getattr(config, "negatives", None), "max_objects": getattr(config, "max_objects", None),
            "box_format": getattr(config, "box_format", None), "score_threshold": getattr(config, "score_threshold", None),
            "seed": getattr(config, "seed", None)}


def task_from_metadata(metadata: dict, task: str | None = None, **overrides) -> Task:
    """The task a run was trained for (its visiontune.json), with any explicitly given option winning.

    A different task than the run's starts from that task's defaults (the run's prompts don't carry over)."""
    name = task or metadata.get("task", "caption")
    stored = metadata if metadata.get("task", "caption") == name else {}
    options = {key: stored.get(key) for key in ("prompt", "system_prompt", *TASK_OPTIONS.get(name, ()))}
    options.update({key: value for key, value in overrides.items() if value not in (None, [], "")})
    return get_task(name, **options)


def get_task(name: str, **options) -> Task:
    from .caption import CaptionTask
    from .classify import ClassifyTask
    from .detect import DetectTask

    tasks = {"caption": CaptionTask, "classify": ClassifyTask, "detect": DetectTask}
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(tasks)}")
    known = ("prompt", "system_prompt", *TASK_OPTIONS[name])
    return tasks[name](**{k: v for k, v in options.items() if k in known and v is not None})
