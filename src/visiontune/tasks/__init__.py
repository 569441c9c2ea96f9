"""The task registry: a task is one folder here (see `base.Task`) and one line in `TASKS`."""

from __future__ import annotations

import importlib

from .base import Example, Task

# name -> "module:class" (imported on first use, so `--task caption` never imports detection code)
TASKS = {"caption": "caption.task:CaptionTask", "classify": "classify.task:ClassifyTask",
         "detect": "detect.task:DetectTask", "chat": "chat.task:ChatTask"}

# Where a task option comes from in a Train/Predict/EvalConfig when its flag has another name.
CONFIG_NAMES = {"descriptions": "class_descriptions"}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def task_options(config) -> dict:
    """Every task option a Train/Predict/EvalConfig sets (None where it leaves the run's or the default)."""
    prompt_template = getattr(config, "prompt_template", None)
    if prompt_template and config.prompt and prompt_template != config.prompt:
        raise ValueError("--prompt and --prompt-template are the same option; give one of them")
    class_names, classes = getattr(config, "class_names", None), getattr(config, "classes", None)
    if class_names and classes and list(class_names) != list(classes):
        raise ValueError("--class-names and --classes are the same option; give one of them")
    options = {"prompt": prompt_template or config.prompt, "system_prompt": config.system_prompt,
               "classes": class_names or classes}
    for name in {option for path in TASKS for option in task_class(path).option_names} - set(options):
        value = getattr(config, CONFIG_NAMES.get(name, name), None)
        options[name] = None if value is False else value  # an unset switch leaves the run's value
    return options


def get_task(name: str, **options) -> Task:
    cls = task_class(name)
    known = ("prompt", "system_prompt", *cls.option_names)
    return cls(**{k: v for k, v in options.items() if k in known and v is not None})


def task_from_metadata(metadata: dict, task: str | None = None, **overrides) -> Task:
    """The task a run was trained for (its visiontune.json), with any explicitly given option winning.

    A different task than the run's starts from that task's defaults (the run's prompts don't carry over)."""
    name = task or metadata.get("task", "caption")
    stored = metadata if metadata.get("task", "caption") == name else {}
    options = {key: stored.get(key) for key in ("prompt", "system_prompt", *task_class(name).option_names)}
    options.update({key: value for key, value in overrides.items() if value not in (None, [], "")})
    return get_task(name, **options)


__all__ = ["TASKS", "Example", "Task", "get_task", "task_class", "task_from_metadata", "task_options"]
