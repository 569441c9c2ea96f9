"""A task from outside the package: one module and one `register_task` call give it training, prediction,
evaluation, its own flags and YAML keys, with no other file touched."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from visiontune import tasks
from visiontune.cli import build_parser, main

TOY_TASK = '''
from dataclasses import dataclass, field
from pathlib import Path

from visiontune.data.records import Record
from visiontune.tasks.base import Task


@dataclass(kw_only=True)
class TrainOptions:
    shout: bool = field(default=False, metadata={"help": "answer in capitals"})


@dataclass(kw_only=True)
class InferenceOptions:
    shout: bool = field(default=False, metadata={"help": "answer in capitals"})


class ShapeNameTask(Task):
    name = "shape-name"
    default_prompt = "Which shape is this?"
    option_names = ("shout",)

    def __init__(self, prompt=None, system_prompt=None, shout=False):
        super().__init__(prompt, system_prompt)
        self.shout = bool(shout)

    @classmethod
    def load_records(cls, spec, known=None, log=print):
        files = sorted(Path(spec.path).rglob("*.png"))
        return [Record(image=str(f), image_id=f.stem, label=f.parent.name) for f in files], {}

    def answer(self, name):
        return name.upper() if self.shout else name

    def training_targets(self, record):
        return [self.answer(record.label)]

    def parse(self, text):
        return text.strip()

    def references(self, record):
        return self.answer(record.label)

    def prediction_of(self, row):
        return row["prediction"]

    def score(self, predictions, references):
        hits = [predictions[key] == value for key, value in references.items()]
        return {"exact_match": sum(hits) / len(hits)}

    def sample_lines(self, prediction, reference):
        return [f"pred: {prediction}", f"ref: {reference}"]

    def metadata(self):
        return {**super().metadata(), "shout": self.shout}
'''


@pytest.fixture
def toy_task(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy_shape_task.py").write_text(textwrap.dedent(TOY_TASK))
    monkeypatch.syspath_prepend(str(folder))
    tasks.register_task("shape-name", "toy_shape_task:ShapeNameTask", options="toy_shape_task")
    yield "shape-name"
    tasks.TASKS.pop("shape-name")
    sys.modules.pop("toy_shape_task", None)


def test_a_task_registered_from_outside_trains_predicts_and_evaluates(toy_task, tiny_models, shape_classes,
                                                                       tmp_path, capsys):
    assert "--shout" in _train_help()
    run = tmp_path / "run"
    assert main(["train", "--task", toy_task, "--shout", "--model", str(tiny_models["smolvlm"]),
                 "--data", str(shape_classes), "--output", str(run), "--epochs", "12", "--batch-size", "8",
                 "--learning-rate", "3e-3", "--lora-r", "32", "--lora-alpha", "64", "--warmup-ratio", "0",
                 "--no-keep-skills", "--no-preflight", "--no-measure-mfu", "--report-to", "none",
                 "--num-workers", "0"]) == 0
    assert json.loads((run / "visiontune.json").read_text())["shout"] is True
    image = str(min(shape_classes.rglob("*.png")))
    capsys.readouterr()
    assert main(["predict", "--model", str(run), "--images", image]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["prediction"] == row["prediction"].upper()  # the run's own option, restored from visiontune.json
    assert main(["eval", "--model", str(run), "--data", str(shape_classes), "--output", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == toy_task and metrics["exact_match"] >= 0.5


def _train_help() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    return sub.format_help()


def test_an_option_of_another_task_is_an_error_naming_its_task(toy_task, tiny_models):
    from visiontune.config import TrainConfig, build_config

    with pytest.raises(ValueError, match="--shout is an option of --task shape-name, not caption"):
        build_config(TrainConfig, {"task": "caption", "shout": True})
    with pytest.raises(ValueError, match="--queries is an option of --task detect, not classify"):
        build_config(TrainConfig, {"task": "classify", "queries": "all"})
    with pytest.raises(ValueError, match=r"lora_rank \(did you mean lora_r\?\)"):
        build_config(TrainConfig, {"task": "caption", "lora_rank": 8})
    assert build_config(TrainConfig, {"task": toy_task, "shout": True}).task_options == {"shout": True}
