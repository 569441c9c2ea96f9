"""A run folder holds one run: training into a used one is refused before any model loads, unless --resume
(of the same run) or --overwrite."""

import pytest

from visiontune.api.train import train

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def caption_run(tiny_models, shapes, tmp_path_factory):
    output = tmp_path_factory.mktemp("used") / "run"
    settings = dict(model=str(tiny_models["smolvlm"]), data=str(shapes["jsonl"]), max_steps=1, batch_size=4,
                    num_workers=0, report_to="none", preflight=False, measure_mfu=False)
    train(output=str(output), **settings, **QUIET)
    return output, settings


def test_a_used_folder_is_refused_before_the_model_loads(caption_run):
    output, settings = caption_run
    with pytest.raises(ValueError, match=r"already holds a run \(caption run of .*--resume.*--overwrite"):
        train(output=str(output), **{**settings, "model": "no/such-model"}, **QUIET)  # never loaded
    (output / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="give one of them"):
        train(output=str(output), resume=True, overwrite=True, **settings, **QUIET)


def test_resume_of_another_run_says_what_differs(caption_run, shape_classes):
    output, settings = caption_run
    with pytest.raises(ValueError, match="--resume: .* holds another run .*task 'caption' -> 'classify'"):
        train(output=str(output), resume=True, **{**settings, "task": "classify", "data": str(shape_classes)}, **QUIET)
    with pytest.raises(ValueError, match="the training data differs"):
        train(output=str(output), resume=True, **{**settings, "max_samples": 4}, **QUIET)


def test_overwrite_replaces_the_run(caption_run, tmp_path):
    output, settings = caption_run
    (output / "eval").mkdir(exist_ok=True)
    (output / "eval" / "old.json").write_text("{}")
    train(output=str(output), overwrite=True, **settings, **QUIET)
    assert not (output / "eval").exists() and (output / "run.json").is_file()
    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "cat.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a visiontune run"):
        train(output=str(stranger), overwrite=True, **settings, **QUIET)
    assert (stranger / "cat.jpg").is_file()
