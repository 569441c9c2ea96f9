"""Classification on the evaluation set during and after training (classify).

During training: accuracy, macro F1 and ECE after each evaluation, so the best checkpoint is chosen on
accuracy. After training: the temperature that calibrates the class probabilities. Both run the same
score-mode prediction as `visiontune eval`, without a progress bar.
"""

from __future__ import annotations

import torch

from ..data.records import Record
from ..inference.calibration import fit_temperature
from ..metrics.classification import classification_metrics

REASONING_MAX_NEW_TOKENS = 256


def eval_log_likelihoods(model, processor, task, records: list[Record], batch_size: int = 8) -> torch.Tensor:
    """(records, classes) class log-likelihoods, in `task.classes` order."""
    from ..predict import Predictor

    predictor = Predictor(model, processor, task, batch_size=batch_size, mode="score",
                          max_new_tokens=REASONING_MAX_NEW_TOKENS)
    rows = [[result["log_likelihoods"][name] for name in task.classes]
            for _, result in predictor.iter_results(records, Record.load_image, progress=False)]
    return torch.tensor(rows)


def _metrics(scores: torch.Tensor, truth: list[str], task) -> dict:
    probabilities = torch.softmax(scores / task.temperature, dim=1)
    predicted = [task.classes[i] for i in probabilities.argmax(1).tolist()]
    return classification_metrics(truth, predicted, task.classes, probabilities.tolist())


def classification_eval(records: list[Record], task, processor, batch_size: int = 8):
    def run(model) -> dict:
        metrics = _metrics(eval_log_likelihoods(model, processor, task, records, batch_size),
                           [r.label for r in records], task)
        return {key: metrics[key] for key in ("accuracy", "macro_f1", "ece")}

    return run


def calibrate(model, processor, task, records: list[Record], batch_size: int = 8, log=print) -> dict:
    """Fit the task's temperature on `records`; returns ECE before and after."""
    scores = eval_log_likelihoods(model, processor, task, records, batch_size)
    truth = [r.label for r in records]
    before = _metrics(scores, truth, task)["ece"]
    targets = torch.tensor([task.classes.index(label) for label in truth])
    task.temperature = fit_temperature(scores, targets)
    after = _metrics(scores, truth, task)["ece"]
    log(f"calibration: temperature {task.temperature:.3f} fitted on {len(records)} evaluation images; "
        f"ECE {before:.4f} -> {after:.4f}")
    return {"temperature": task.temperature, "ece_before": before, "ece_after": after,
            "calibration_images": len(records)}
