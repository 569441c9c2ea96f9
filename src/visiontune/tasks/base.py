"""A task turns a record into chat messages + target text, and generated text back into a prediction."""

from __future__ import annotations

from typing import Any

from ..data.records import Record


class Task:
    name = "task"
    default_prompt = ""

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

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def metadata(self) -> dict:
        return {"task": self.name, "prompt": self.prompt, "system_prompt": self.system_prompt}


def task_from_metadata(metadata: dict, task: str | None = None, prompt: str | None = None,
                       system_prompt: str | None = None) -> Task:
    """The task a run was trained for (its visiontune.json), with any explicitly given option winning."""
    return get_task(task or metadata.get("task", "caption"), prompt=prompt or metadata.get("prompt"),
                    system_prompt=system_prompt or metadata.get("system_prompt"))


def get_task(name: str, **options) -> Task:
    from .caption import CaptionTask

    tasks = {"caption": CaptionTask}
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(tasks)}")
    return tasks[name](**options)
