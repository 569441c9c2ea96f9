"""Detection end to end: a tiny model learns every box of 8 canvases (mAP50 from ~0 to >= 0.9), answers
`none` for absent classes, and its outputs (detections.json, drawn boxes, predictions) round-trip."""

import json

import pytest

from visiontune.api.evaluate import evaluate
from visiontune.api.predict import predict
from visiontune.api.train import train
from visiontune.cli import main
from visiontune.data.builtin.shapes import write_shape_detection

from conftest import OVERFIT

QUIET = {"log": lambda *_: None}
DETECT_OVERFIT = {**OVERFIT, "epochs": 90, "learning_rate": 3e-3, "preflight": False}


@pytest.fixture(scope="module")
def boxes_data(tmp_path_factory):
    return write_shape_detection(tmp_path_factory.mktemp("detect"), count=8, seed=0, objects=(1, 5))


@pytest.fixture(scope="module")
def detect_run(tiny_models, boxes_data, tmp_path_factory):
    output = tmp_path_factory.mktemp("detect_run") / "run"
    logged = []
    train(task="detect", model=str(tiny_models["smolvlm"]), data=str(boxes_data), output=str(output),
          negatives=0.4, **DETECT_OVERFIT, log=logged.append)
    return output, logged


def test_untrained_model_finds_nothing(tiny_models, boxes_data):
    metrics = evaluate(model=str(tiny_models["smolvlm"]), task="detect", data=str(boxes_data), max_new_tokens=40,
                       batch_size=24, **QUIET)
    assert metrics["AP50"] <= 0.05 and metrics["true_boxes"] >= 16


def test_overfit_boxes_and_negatives(detect_run, boxes_data, tmp_path):
    output, logged = detect_run
    assert any("positive queries per class" in line for line in logged)
    negative_line = next(line for line in logged if line.startswith("detection queries"))
    assert " 0 negative" not in negative_line
    metadata = json.loads((output / "visiontune.json").read_text())
    assert metadata["task"] == "detect" and metadata["classes"] == ["circle", "square", "triangle"]
    metrics = evaluate(model=str(output), data=str(boxes_data), output=str(tmp_path / "eval"), batch_size=24, **QUIET)
    assert metrics["AP50"] >= 0.9 and metrics["AP"] >= 0.6
    assert metrics["parse_failure_rate"] == 0.0
    assert metrics["absent_class_queries"] >= 2 and metrics["hallucination_rate"] == 0.0
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    absent = [(row, name) for row in rows for name in ("circle", "square", "triangle")
              if name not in {box["label"] for box in row["reference"]["boxes"]}]
    assert absent and all(row["replies"][name] == "none" for row, name in absent)
    assert all(0.0 < box["score"] <= 1.0 for row in rows for box in row["boxes"])
    for name in ("metrics.json", "results.json", "detections.json", "samples.png", "predictions.jsonl"):
        assert (tmp_path / "eval" / name).exists(), name
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results["per_class_AP"]) == {"circle", "square", "triangle"}
    # The COCO results file written by eval scores the same when read back (image and category ids kept).
    again = evaluate(predictions=str(tmp_path / "eval" / "detections.json"), task="detect", data=str(boxes_data),
                     **QUIET)
    assert again["AP"] == pytest.approx(metrics["AP"], abs=1e-9) and again["AP50"] == pytest.approx(metrics["AP50"])


def test_predict_with_classes_and_draw(detect_run, boxes_data, tmp_path):
    output, _ = detect_run
    images = sorted((boxes_data.parent / "images").glob("*.png"))[:3]
    code = main(["predict", "--model", str(output), "--images", *map(str, images), "--classes", "circle",
                 "--output", str(tmp_path / "preds.jsonl"), "--draw", str(tmp_path / "drawn")])
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(set(row["replies"]) == {"circle"} for row in rows)
    assert all(box["label"] == "circle" for row in rows for box in row["boxes"])
    assert sorted(p.name for p in (tmp_path / "drawn").glob("*.png")) == [p.name for p in images]
    # A predictions JSONL from `predict` is scored the same way as eval's own run.
    full = predict(model=str(output), images=[str(boxes_data.parent / "images")], **QUIET)
    (tmp_path / "all.jsonl").write_text("".join(json.dumps(row) + "\n" for row in full))
    scored = evaluate(predictions=str(tmp_path / "all.jsonl"), task="detect", data=str(boxes_data), **QUIET)
    generated = evaluate(model=str(output), data=str(boxes_data), **QUIET)
    assert scored["AP"] == pytest.approx(generated["AP"], abs=1e-9)
