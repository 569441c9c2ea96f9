"""`predict` and `eval` with several LoRA runs over one base (`--adapter NAME=RUN`): one copy of the base,
each adapter answering as its run does alone."""

import json

import pytest

from visiontune.api.evaluate import evaluate
from visiontune.api.predict import predict
from visiontune.api.train import train
from visiontune.cli import main

from conftest import OVERFIT

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def second_caption_run(tiny_models, shapes, tmp_path_factory):
    """Another caption LoRA over the same tiny base, trained less: its captions differ from `trained_run`'s."""
    output = tmp_path_factory.mktemp("adapters") / "caption-short"
    train(model=str(tiny_models["smolvlm"]), data=str(shapes["coco"]), output=str(output), method="lora",
          learning_rate=3e-3, **{**OVERFIT, "epochs": 4}, **QUIET)
    return output


def test_predict_gives_each_adapters_rows_as_its_run_alone(tiny_models, trained_run, second_caption_run, shapes,
                                                           tmp_path):
    images = [str(path) for path in sorted(shapes["images"].glob("*.png"))[:3]]
    runs = {"long": trained_run, "short": second_caption_run}
    assert main(["predict", "--model", str(tiny_models["smolvlm"]), "--adapter", f"long={trained_run}",
                 "--adapter", f"short={second_caption_run}", "--images", *images,
                 "--output", str(tmp_path / "rows.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [row["adapter"] for row in rows] == ["long"] * 3 + ["short"] * 3
    for name, run in runs.items():
        alone = [row["prediction"] for row in predict(model=str(run), images=images, **QUIET)]
        assert [row["prediction"] for row in rows if row["adapter"] == name] == alone, name
    assert rows[0]["prediction"] != rows[3]["prediction"]  # two adapters, two answers


def test_eval_scores_each_adapter_as_its_run_alone(tiny_models, trained_run, second_caption_run, shapes, tmp_path):
    runs = {"long": str(trained_run), "short": str(second_caption_run)}
    results = evaluate(model=str(tiny_models["smolvlm"]), adapter=[f"{name}={run}" for name, run in runs.items()],
                       data=str(shapes["coco"]), output=str(tmp_path / "eval"), **QUIET)
    for name, run in runs.items():
        alone = evaluate(model=run, data=str(shapes["coco"]), **QUIET)
        assert results[name]["CIDEr"] == pytest.approx(alone["CIDEr"], abs=1e-9), name
        assert json.loads((tmp_path / "eval" / name / "metrics.json").read_text())["model"] == run
    assert results["long"]["CIDEr"] > results["short"]["CIDEr"]


def test_adapters_refuse_a_task_override_and_a_predictions_file(tiny_models, trained_run, shapes, tmp_path):
    with pytest.raises(ValueError, match="its own run's task"):
        predict(model=str(tiny_models["smolvlm"]), adapter=[f"a={trained_run}"], task="classify",
                images=[str(shapes["coco"])], **QUIET)
    with pytest.raises(ValueError, match="--predictions"):
        evaluate(model=str(tiny_models["smolvlm"]), adapter=[f"a={trained_run}"], data=str(shapes["coco"]),
                 predictions=str(tmp_path / "p.jsonl"), **QUIET)
    with pytest.raises(ValueError, match="NAME=RUN"):
        predict(model=str(tiny_models["smolvlm"]), adapter=[str(trained_run)], images=[str(shapes["coco"])], **QUIET)
