"""Task routing: a LoRA run asked for a task other than its own answers with its base model, exactly as the base
answers alone; `--no-task-routing` asks the fine-tuned weights."""

import json

import pytest
import torch

from visiontune.api.evaluate import evaluate
from visiontune.api.predict import load_predictor, routed_base
from visiontune.api.train import train
from visiontune.cli import main
from visiontune.tasks.base import user_turn

QUIET = {"log": lambda *_: None}
PROMPT = [user_turn("Describe this image.")]


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory):
    """A tiny composed VLM and a detection LoRA run over it with region slots (its base changed: the slots)."""
    from visiontune.data.builtin.shapes import write_shape_detection
    from visiontune.models.tiny import build_tiny_composed

    root = tmp_path_factory.mktemp("routing")
    model = build_tiny_composed(root / "model", image_size=64)
    data = write_shape_detection(root / "canvases", count=8, seed=1, size=64, objects=(1, 2), extent=(0.25, 0.45))
    train(task="detect", model=str(model), data=str(data), output=str(root / "run"), max_steps=2, batch_size=4,
          learning_rate=1e-2, keep_skills=False, num_workers=0, report_to="none", **QUIET)
    assert json.loads((root / "run" / "visiontune.json").read_text())["model_config"]["region_slots"] > 0
    return model, root / "run", data


def _replies(predictor, data) -> dict:
    """Greedy replies to a caption prompt about two canvases, with each token's log-probability."""
    from PIL import Image

    images = [Image.open(path).convert("RGB") for path in sorted(data.parent.glob("**/*.png"))[:2]]
    return predictor.generate(images, [PROMPT] * len(images), with_scores=True, max_new_tokens=6)


def test_a_detect_run_asked_for_captions_answers_exactly_as_its_base(detect_run):
    model, run, data = detect_run
    base = _replies(load_predictor(str(model), task="caption", **QUIET), data)
    routed = _replies(load_predictor(str(run), task="caption", **QUIET), data)
    fine_tuned = _replies(load_predictor(str(run), task="caption", task_routing=False, **QUIET), data)
    assert routed["tokens"] == base["tokens"]
    assert torch.allclose(torch.tensor(sum(routed["log_probs"], [])), torch.tensor(sum(base["log_probs"], [])))
    first = lambda replies: [probs[0] for probs in replies["log_probs"]]
    assert not torch.allclose(torch.tensor(first(fine_tuned)), torch.tensor(first(base)), atol=1e-4)


def test_a_run_answers_its_own_task_itself(detect_run, trained_run):
    model, run, _ = detect_run
    assert routed_base(str(run), "detect") is None and routed_base(str(run), None) is None
    assert routed_base(str(run), "caption") == str(model.resolve())
    assert routed_base(str(model), "caption") is None  # a plain model has nothing to route
    # chat and caption runs answer every task themselves: their fine-tune is general
    assert routed_base(str(trained_run), "caption") is None and routed_base(str(trained_run), "classify") is None


def test_predict_routes_from_the_command_line_and_says_so(detect_run, tmp_path, capsys):
    model, run, data = detect_run
    images = [str(path) for path in sorted(data.parent.glob("**/*.png"))[:2]]
    for name, given in (("routed", [str(run)]), ("base", [str(model)])):
        assert main(["predict", "--model", *given, "--task", "caption", "--max-new-tokens", "6",
                     "--images", *images, "--output", str(tmp_path / f"{name}.jsonl")]) == 0
    assert "answers caption, as before the fine-tune" in capsys.readouterr().out
    rows = {name: [json.loads(line)["prediction"] for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
            for name in ("routed", "base")}
    assert rows["routed"] == rows["base"]
    assert main(["predict", "--model", str(run), "--task", "caption", "--no-task-routing", "--max-new-tokens", "6",
                 "--images", *images]) == 0
    assert "before the fine-tune" not in capsys.readouterr().out


def test_one_copy_serves_a_detect_run_and_its_base_by_name(detect_run):
    """`--adapter detect=RUN` over the run's base (serve, predict, eval): `detect` answers as the run alone does,
    `base` as the base alone does, its region slots hidden."""
    from visiontune.api.predict import load_adapter_predictors
    from visiontune.inference.predictor import Predictor
    from visiontune.models.vlm import load_for_inference
    from visiontune.tasks import task_from_metadata

    model, run, data = detect_run
    predictors = load_adapter_predictors(str(model), {"detect": str(run)}, **QUIET)
    base, served_base = (_replies(p, data) for p in (load_predictor(str(model), task="caption", **QUIET),
                                                      predictors["base"]))
    assert served_base["tokens"] == base["tokens"]
    assert torch.allclose(torch.tensor(sum(served_base["log_probs"], [])), torch.tensor(sum(base["log_probs"], [])),
                          atol=1e-5)
    images = [str(path) for path in sorted(data.parent.glob("**/*.png"))[:2]]
    boxes = lambda rows: [[(box["label"], box["box"]) for box in row["boxes"]] for row in rows]
    model_alone, processor, metadata = load_for_inference(str(run), merge_adapter=False, **QUIET)  # the same math
    alone = Predictor(model_alone, processor, task_from_metadata(metadata)).predict(images, log=QUIET["log"])
    assert boxes(predictors["detect"].predict(images, log=QUIET["log"])) == boxes(alone)
    with pytest.raises(ValueError, match="the only adapter"):
        load_adapter_predictors(str(model), {"a": str(run), "b": str(run)}, **QUIET)


def test_eval_routes_and_no_task_routing_asks_the_fine_tuned_weights(detect_run, shapes):
    model, run, _ = detect_run
    said = {True: [], False: []}
    scores = {routing: evaluate(model=str(run), task="caption", data=str(shapes["coco"]), max_new_tokens=6,
                                task_routing=routing, log=said[routing].append) for routing in (True, False)}
    base = evaluate(model=str(model), task="caption", data=str(shapes["coco"]), max_new_tokens=6, **QUIET)
    assert any("answers caption" in line for line in said[True])
    assert not any("answers caption" in line for line in said[False])
    assert scores[True]["CIDEr"] == base["CIDEr"]


def test_merging_a_detect_run_says_that_other_tasks_lose_its_base(detect_run, tmp_path):
    from visiontune.export.merge import merge

    _, run, _ = detect_run
    said = []
    merge(str(run), str(tmp_path / "merged"), verify_reload=False, log=said.append)
    assert any("answers other tasks with its base" in line for line in said)
    assert routed_base(str(tmp_path / "merged"), "caption") is None  # merged: no adapter left to route around
