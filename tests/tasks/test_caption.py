"""A tiny model trained on 8 captioned images memorises them; predict reproduces the captions."""

import json

import pytest

from visiontune.api.predict import predict
from visiontune.api.train import train

from conftest import OVERFIT


@pytest.mark.parametrize("family,method,lr", [("smolvlm", "lora", 3e-3), ("smolvlm", "full", 1e-3),
                                              ("llava", "lora", 3e-3), ("llava", "full", 1e-3)])
def test_overfit_and_reproduce(tiny_models, shapes, tmp_path, family, method, lr):
    output = tmp_path / "run"
    summary = train(model=str(tiny_models[family]), data=str(shapes["coco"]), output=str(output), method=method,
                    learning_rate=lr, log=lambda *_: None, **OVERFIT)
    assert summary["final_train_loss"] < 0.15, summary
    assert (output / "summary.json").exists() and (output / "run.json").exists()
    assert (output / "training_curves.png").exists() and (output / "visiontune.json").exists()
    rows = predict(model=str(output), images=[str(shapes["images"])], log=lambda *_: None)
    references = {json.loads(l)["image"].split("/")[-1]: json.loads(l)["caption"]
                  for l in shapes["jsonl"].read_text().splitlines()}
    exact = sum(row["prediction"] == references[row["image"].split("/")[-1]] for row in rows)
    assert exact == len(references), rows


def test_untrained_model_does_not_reproduce(tiny_models, shapes):
    rows = predict(model=str(tiny_models["smolvlm"]), images=[str(shapes["images"])], max_new_tokens=12,
                   log=lambda *_: None)
    references = {json.loads(l)["caption"] for l in shapes["jsonl"].read_text().splitlines()}
    assert not any(row["prediction"] in references for row in rows)
