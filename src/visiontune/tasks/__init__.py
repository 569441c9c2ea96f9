"""The task registry: a task is one folder (see `base.Task`) and one `register_task` call.

A task's own options live in its folder as two dataclasses (`TrainOptions`, `InferenceOptions` in an options
module); the registry turns them into `train` / `predict` / `eval` flags, YAML keys and Python keywords, and
refuses an option of another task. A task from outside the package registers the same way:
`register_task("count", "my_package.count:CountTask", options="my_package.count_options")`.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass

from .base import Example, Task


@dataclass(frozen=True)
class TaskEntry:
    target: str  # "module:class"; a module starting with "." is inside this package
    options: str | None = None  # the module with TrainOptions / InferenceOptions

    def load(self) -> type[Task]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module, __name__), name)

    def options_class(self, kind: str):
        """Its TrainOptions (`kind` "train") or InferenceOptions ("inference") dataclass; None when it has none."""
        if self.options is None:
            return None
        attribute = {"train": "TrainOptions", "inference": "InferenceOptions"}[kind]
        return getattr(importlib.import_module(self.options, __name__), attribute, None)


# imported on first use, so `--task caption` never imports detection code
TASKS: dict[str, TaskEntry] = {
    "caption": TaskEntry(".caption.task:CaptionTask"),
    "classify": TaskEntry(".classify.task:ClassifyTask", ".classify.options"),
    "detect": TaskEntry(".detect.task:DetectTask", ".detect.options"),
    "chat": TaskEntry(".chat.task:ChatTask"),
}
OPTION_KINDS = ("train", "inference")


def register_task(name: str, target: str | type[Task], options: str | None = None) -> None:
    """Add (or replace) a task: `target` a Task subclass or "module:Class"; `options` the module holding its
    TrainOptions / InferenceOptions dataclasses (either may be absent)."""
    if isinstance(target, type):
        target = f"{target.__module__}:{target.__qualname__}"
    TASKS[name] = TaskEntry(target, options)


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    return TASKS[name].load()


def routes_other_tasks(name: str | None) -> bool:
    """Whether a LoRA run of this task leaves other tasks to its base (task routing): the narrow tasks, those
    whose fine-tunes keep general skills by replay (classify, detect); chat and caption runs answer everything."""
    return bool(name) and task_class(name).keeps_skills_by_replay


def option_fields(kind: str) -> dict[str, tuple[list[str], dataclasses.Field, typing.Any]]:
    """{option: (the tasks that take it, its field, its type)} over every registered task, for `kind`
    train|inference."""
    found: dict[str, tuple[list[str], dataclasses.Field, typing.Any]] = {}
    for name, entry in TASKS.items():
        options = entry.options_class(kind)
        if options is None:
            continue
        hints = typing.get_type_hints(options)
        for field in dataclasses.fields(options):
            found.setdefault(field.name, ([], field, hints[field.name]))[0].append(name)
    return found


def options_of_other_tasks(name: str, options: dict) -> dict[str, list[str]]:
    """{option: the tasks it belongs to} for the given options that some task takes but `name` does not."""
    accepted = set(task_class(name).option_names)
    owners: dict[str, list[str]] = {}
    for kind in OPTION_KINDS:
        for option, (tasks, _, _) in option_fields(kind).items():
            owners.setdefault(option, [])
            owners[option] += [task for task in tasks if task not in owners[option]]
    return {key: owners[key] for key, value in options.items()
            if value is not None and key in owners and key not in accepted}


def foreign_options_error(name: str, foreign: dict[str, list[str]]) -> ValueError:
    return ValueError("; ".join(f"--{key.replace('_', '-')} is an option of --task {' / '.join(tasks)}, not {name}"
                                for key, tasks in foreign.items()))


def split_task_options(values: dict, kind: str, task: str | None) -> tuple[dict, dict]:
    """(everything else, the task options among `values`). An option of another task is an error naming the
    task(s) it belongs to; with `task` None (the run decides) any task's options are kept."""
    fields = option_fields(kind)
    own = {key: value for key, value in values.items() if key in fields}
    if task is not None:
        foreign = {key: fields[key][0] for key in own if task not in fields[key][0]}
        if foreign:
            raise foreign_options_error(task, foreign)
    return {key: value for key, value in values.items() if key not in own}, own


def task_options(config) -> dict:
    """The task options a Train/Predict/EvalConfig sets (None where it leaves the run's or the default)."""
    prompt_template = getattr(config, "prompt_template", None)
    if prompt_template and config.prompt and prompt_template != config.prompt:
        raise ValueError("--prompt and --prompt-template are the same option; give one of them")
    class_names, classes = getattr(config, "class_names", None), getattr(config, "classes", None)
    if class_names and classes and list(class_names) != list(classes):
        raise ValueError("--class-names and --classes are the same option; give one of them")
    own = dict(config.task_options)
    return {"prompt": prompt_template or config.prompt, "system_prompt": config.system_prompt,
            "classes": class_names or classes, "seed": getattr(config, "seed", None), **own}


def get_task(name: str, **options) -> Task:
    """The task `name` with `options`; shared options it does not take are dropped, another task's are an error."""
    cls = task_class(name)
    foreign = options_of_other_tasks(name, options)
    if foreign:
        raise foreign_options_error(name, foreign)
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


__all__ = ["OPTION_KINDS", "TASKS", "Example", "Task", "get_task", "option_fields", "register_task",
           "routes_other_tasks", "split_task_options", "task_class", "task_from_metadata", "task_options"]
