"""Classification end to end: a tiny model learns three shape classes; both prediction modes score 1.0."""

import filecmp
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers.trainer_utils import get_last_checkpoint

from visiontune.api.evaluate import evaluate
from visiontune.api.predict import predict
from visiontune.api.train import MODEL_FILES, train
from visiontune.cli import main
from visiontune.training.balancing import inverse_frequency_weights

from conftest import OVERFIT

QUIET = {"log": lambda *_: None}
CLASSIFY_OVERFIT = {**OVERFIT, "epochs": 30, "batch_size": 12, "learning_rate": 3e-3}


@pytest.fixture(scope="module")
def classify_run(tiny_models, shape_classes, tmp_path_factory):
    output = tmp_path_factory.mktemp("classify") / "run"
    summary = train(task="classify", model=str(tiny_models["smolvlm"]), data=str(shape_classes),
                    eval_data=str(shape_classes), eval_steps=10, output=str(output), **CLASSIFY_OVERFIT, **QUIET)
    return output, summary


def test_final_is_its_runs_classifier_and_other_tasks_go_to_the_base(classify_run, shape_classes, tiny_models):
    """`final/` (the last step's adapter) reads its run's visiontune.json: a classifier of the run's classes;
    asked for captions, the run and its `final/` route to their base (task routing)."""
    from visiontune.api.predict import routed_base

    output, _ = classify_run
    metrics = evaluate(model=str(output / "final"), data=str(shape_classes), **QUIET)
    assert metrics["accuracy"] >= 0.9
    for run in (output, output / "final"):
        assert routed_base(str(run), "caption") == str(tiny_models["smolvlm"].resolve())
        assert routed_base(str(run), "classify") is None


def test_overfit_then_both_modes_score_one(classify_run, shape_classes, tmp_path):
    output, summary = classify_run
    assert summary["eval_accuracy"] == 1.0
    metadata = json.loads((output / "training_metadata.json").read_text())
    assert metadata["classes"] == ["circle", "square", "triangle"] and metadata["best_metric"] == "eval_accuracy"
    assert metadata["class_counts"] == {"circle": 4, "square": 4, "triangle": 4}
    last = Path(get_last_checkpoint(output))
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["best_metric"] == 1.0  # chosen on accuracy, not loss
    copied = [name for name in MODEL_FILES if (last / name).is_file()]  # `final`: the last step's weights
    assert copied and all(filecmp.cmp(last / name, output / "final" / name, shallow=False) for name in copied)
    for mode in ("score", "generate"):
        metrics = evaluate(model=str(output), data=str(shape_classes), output=str(tmp_path / mode), mode=mode, **QUIET)
        assert metrics["accuracy"] == 1.0 and metrics["unmapped_rate"] == 0.0, mode
    assert metrics["mode"] == "generate"
    for name in ("metrics.json", "results.json", "confusion_matrix.png", "reliability.png", "samples.png",
                 "predictions.jsonl"):
        assert (tmp_path / "score" / name).exists(), name
    results = json.loads((tmp_path / "score" / "results.json").read_text())
    assert results["confusion_matrix"]["matrix"] == [[4, 0, 0], [0, 4, 0], [0, 0, 4]]
    assert 0.0 <= results["ece"] <= 1.0 and results["calibration"]


def test_untrained_model_does_not_score_one(tiny_models, shape_classes):
    for mode in ("score", "generate"):
        metrics = evaluate(model=str(tiny_models["smolvlm"]), task="classify", data=str(shape_classes), mode=mode,
                           max_new_tokens=8, **QUIET)
        assert metrics["accuracy"] < 1.0, mode
    assert metrics["unmapped_rate"] > 0.5  # free text from a random model names no class


def test_predict_returns_label_confidence_topk_and_text(classify_run, shape_classes):
    output, _ = classify_run
    image = min((shape_classes / "triangle").glob("*.png"))
    (row,) = predict(model=str(output), images=[str(image)], top_k=2, **QUIET)
    assert row["label"] == "triangle" and row["text"] == "triangle"
    assert row["top_k"][0]["label"] == "triangle" and len(row["top_k"]) == 2
    assert row["confidence"] == pytest.approx(max(row["probabilities"].values()))
    rows = predict(model=str(output), images=[str(shape_classes)], mode="generate", **QUIET)
    assert len(rows) == 12 and all(r["label"] == r["image"].split("/")[-2] for r in rows)
    assert all(0.0 < r["confidence"] <= 1.0 for r in rows)


def test_predict_uses_the_runs_fitted_temperature_as_eval_and_the_cli_do(classify_run, shape_classes, tmp_path,
                                                                         capsys):
    """`predict`'s sampling temperature is not the classify calibration's: both read the run's fitted value."""
    import shutil

    output, _ = classify_run
    run = tmp_path / "run"
    shutil.copytree(output, run)
    metadata = json.loads((run / "visiontune.json").read_text())
    (run / "visiontune.json").write_text(json.dumps({**metadata, "temperature": 25.0}))
    image = str(min((shape_classes / "triangle").glob("*.png")))
    (row,) = predict(model=str(run), images=[image], **QUIET)
    evaluate(model=str(run), data=str(shape_classes), output=str(tmp_path / "eval"), **QUIET)
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert row["confidence"] == pytest.approx(next(r for r in rows if r["image"] == image)["confidence"], abs=1e-6)
    (plain,) = predict(model=str(output), images=[image], **QUIET)
    assert row["confidence"] < plain["confidence"]  # a temperature of 25 flattens the distribution
    capsys.readouterr()
    assert main(["predict", "--model", str(run), "--images", image, "--temperature", "1.0"]) == 0
    cli_row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cli_row["confidence"] == pytest.approx(row["confidence"], abs=1e-6)


def test_eval_scores_a_predictions_file(classify_run, shape_classes, tmp_path):
    output, _ = classify_run
    rows = predict(model=str(output), images=[str(shape_classes)], output=str(tmp_path / "p.jsonl"), **QUIET)
    rows[0]["label"] = None
    rows[0]["prediction"] = "it is **a square**, clearly"  # free text is parsed; the first image is a circle
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = evaluate(task="classify", predictions=str(tmp_path / "p.jsonl"), data=str(shape_classes), **QUIET)
    assert metrics["accuracy"] == pytest.approx(11 / 12)


def test_cli_with_prompts_class_names_and_a_base_model(tiny_models, shape_classes, tmp_path, capsys):
    """Zero-shot on a base model: the classes come from --class-names; the prompts from the flags."""
    code = main(["predict", "--task", "classify", "--model", str(tiny_models["smolvlm"]), "--images",
                 str(min((shape_classes / "circle").glob("*.png"))), "--class-names", "circle", "square",
                 "--system-prompt", "You sort shapes: {classes}.", "--prompt-template", "Which one? {classes}"])
    assert code == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(row["probabilities"]) == {"circle", "square"}
    code = main(["predict", "--task", "classify", "--model", str(tiny_models["smolvlm"]), "--images",
                 str(shape_classes)])
    assert code == 2 and "class names" in capsys.readouterr().err


def test_balancing(tiny_models, tmp_path):
    from visiontune.data.builtin.shapes import write_shape_classes
    from visiontune.training.vlm_trainer import answer_token_loss

    labels = ["circle"] * 6 + ["square"] * 2 + ["triangle"]
    weights = inverse_frequency_weights(labels)
    per_class = Counter()
    for label, weight in zip(labels, weights):
        per_class[label] += weight
    assert sum(weights) / len(weights) == pytest.approx(1.0)
    assert len({round(v, 9) for v in per_class.values()}) == 1  # every class weighs the same in total
    # the weighted sampler draws classes about equally often
    drawn = Counter(labels[i] for i in torch.multinomial(torch.tensor(weights), 9000, replacement=True,
                                                         generator=torch.Generator().manual_seed(0)).tolist())
    assert max(drawn.values()) / min(drawn.values()) < 1.15

    data = write_shape_classes(tmp_path / "imbalanced", counts={"circle": 6, "square": 2, "triangle": 1})
    messages = []
    for mode in ("sampler", "loss"):
        summary = train(task="classify", model=str(tiny_models["smolvlm"]), data=str(data), balance=mode,
                        output=str(tmp_path / mode), max_steps=2, batch_size=4, num_workers=0, report_to="none",
                        log=messages.append)
        assert summary["steps"] == 2
    assert any("circle    6" in m and "triangle  1" in m for m in messages)

    # loss weighting: each example's tokens scale by its weight
    class Echo(torch.nn.Module):
        def forward(self, input_ids, logits_to_keep, **_):
            return type("Out", (), {"logits": torch.nn.functional.one_hot(input_ids, 5).float()[:, -logits_to_keep:]})

    batch = {"input_ids": torch.tensor([[1, 2, 3], [1, 4, 2]]), "labels": torch.tensor([[-100, 2, 3], [-100, 4, 4]])}
    plain, _ = answer_token_loss(Echo(), dict(batch))
    weighted, _ = answer_token_loss(Echo(), {**batch, "example_weight": torch.tensor([2.0, 0.0])})
    row_losses = torch.nn.functional.cross_entropy(torch.nn.functional.one_hot(batch["input_ids"][:, :-1], 5).float()
                                                   .reshape(-1, 5), batch["labels"][:, 1:].reshape(-1),
                                                   reduction="none").view(2, 2).sum(1)
    assert plain == pytest.approx(float(row_losses.sum() / 4))
    assert weighted == pytest.approx(float(2 * row_losses[0] / 4))


def test_the_evaluation_at_the_last_step_is_reused_by_calibration_and_the_final_metrics(tiny_models, shape_classes,
                                                                                          tmp_path, monkeypatch):
    """One epoch, evaluated at its end: calibration and the summary's final metrics take that evaluation's
    scores (the weights are the same), so the evaluation set is scored once, not three times."""
    from visiontune.tasks.classify import calibration
    from visiontune.training.vlm_trainer import VLMTrainer, weights_fingerprint

    calls = Counter()

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(calibration, "eval_log_likelihoods",
                        counted("scored", calibration.eval_log_likelihoods))
    monkeypatch.setattr(VLMTrainer, "evaluate", counted("evaluate", VLMTrainer.evaluate))
    summary = train(task="classify", model=str(tiny_models["smolvlm"]), data=str(shape_classes),
                    eval_data=str(shape_classes), output=str(tmp_path / "run"), **{**CLASSIFY_OVERFIT, "epochs": 1},
                    **QUIET)
    assert calls == {"scored": 1, "evaluate": 1}
    assert summary["calibration"]["eval_metrics"]["accuracy"] == summary["eval_accuracy"]
    assert "eval_loss" in summary

    model = torch.nn.Linear(3, 2)
    before = weights_fingerprint(model)
    assert weights_fingerprint(model) == before
    with torch.no_grad():
        model.weight[0, 0] += 1e-3
    assert weights_fingerprint(model) != before
