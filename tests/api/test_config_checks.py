"""Options are typed and checked when the config is built, the same for YAML files, CLI flags and Python
keywords: a bad value or a broken file is one line naming it, before any model loads."""

import pytest

from visiontune.cli import main
from visiontune.config import PredictConfig, TrainConfig, build_config


def test_yaml_numbers_and_strings_become_their_declared_types(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("task: detect\nlearning_rate: 1e-4\nmax_steps: '20'\nresume: 'no'\nbox_grid: '9'\n"
                           "class_names: cat, dog\n")  # PyYAML reads 1e-4 as a string
    config = build_config(TrainConfig, config_file=config_file)
    assert config.learning_rate == 1e-4 and isinstance(config.learning_rate, float)
    assert config.max_steps == 20 and config.resume is False
    assert config.task_options["box_grid"] == 9  # a task's own option is typed too
    assert config.class_names == ["cat", "dog"]


@pytest.mark.parametrize(("values", "message"), [
    ({"max_steps": "two"}, "option max_steps: 'two' is not an integer"),
    ({"max_steps": 2.5}, "option max_steps: 2.5 is not an integer"),
    ({"learning_rate": "fast"}, "option learning_rate: 'fast' is not a number"),
    ({"resume": "maybe"}, "option resume: 'maybe' is not true or false"),
    ({"task": "detect", "negatives": [0.1]}, "option negatives: [0.1] is not a number"),
])
def test_a_bad_value_names_the_option_and_the_expected_type(values, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_config(TrainConfig, values)


def test_python_api_and_dataclasses_are_checked_alike():
    from visiontune.api.train import train

    with pytest.raises(ValueError, match="max_steps: 'x' is not an integer"):
        train(max_steps="x", data="unused", log=lambda *_: None)
    assert TrainConfig(max_steps="3").max_steps == 3
    with pytest.raises(ValueError, match="batch_size"):
        PredictConfig(batch_size="eight")


def test_broken_yaml_is_one_line_with_its_place(tmp_path, capsys):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("model: x\nclass_names: [a, b\n")
    assert main(["train", "--config", str(config_file)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and str(config_file) in error and "line 3" in error and "not valid YAML" in error


def test_unknown_key_suggests_the_near_one(tmp_path, capsys):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("lora_rank: 4\n")
    assert main(["train", "--config", str(config_file)]) == 2
    assert "unknown option(s) lora_rank (did you mean lora_r?)" in capsys.readouterr().err
