"""Classification on the evaluation set during and after training.

During training: accuracy, macro F1 and ECE after each evaluation, so the best checkpoint is chosen on
accuracy. After training: the temperature that calibrates the class probabilities. Both run the same
score-mode prediction as `visiontune eval`, without a progress bar.
"""

from __future__ import annotations

import torch

from ...data.records import Record
from ...inference.predictor import Predictor
from ...metrics.classification import classification_metrics
from ...training.vlm_trainer import weights_fingerprint

REASONING_MAX_NEW_TOKENS = 256
MIN_T, MAX_T = 0.05, 100.0  # the temperature's range


def fit_temperature(log_likelihoods: torch.Tensor, targets: torch.Tensor, steps: int = 200) -> float:
    """Temperature scaling (Guo et al., 2017): one scalar T minimising the negative log-likelihood of
    softmax(log-likelihoods / T) on held-out data. It changes confidences, never the ranking.
    log_likelihoods: (samples, classes) per-class answer log-likelihoods; targets: (samples,) class indices."""
    scores = log_likelihoods.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(scores / log_t.exp(), targets)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.detach().exp().clamp(MIN_T, MAX_T))


def eval_log_likelihoods(model, processor, task, records: list[Record], batch_size: int = 8) -> torch.Tensor:
    """(records, classes) class log-likelihoods, in `task.classes` order."""
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
    """model -> headline metrics on `records`; the scores are kept on the task with the weights' fingerprint,
    so calibrating the same weights afterwards does not score the records again."""
    def run(model) -> dict:
        scores = eval_log_likelihoods(model, processor, task, records, batch_size)
        task.scored_evaluation = (weights_fingerprint(model), records, scores)
        metrics = _metrics(scores, [r.label for r in records], task)
        return {key: metrics[key] for key in task.headline_metrics}

    return run


def _scores_of(model, processor, task, records: list[Record], batch_size: int) -> torch.Tensor:
    """The class log-likelihoods of `records`: those of the last in-training evaluation when it scored these
    records with these very weights, else scored now."""
    kept = getattr(task, "scored_evaluation", None)
    if kept is not None and kept[1] is records and kept[0] == weights_fingerprint(model):
        return kept[2]
    return eval_log_likelihoods(model, processor, task, records, batch_size)


def calibrate(model, processor, task, records: list[Record], batch_size: int = 8, log=print) -> dict:
    """Fit the task's temperature on `records`; returns ECE before and after."""
    scores = _scores_of(model, processor, task, records, batch_size)
    truth = [r.label for r in records]
    before = _metrics(scores, truth, task)["ece"]
    targets = torch.tensor([task.classes.index(label) for label in truth])
    task.temperature = fit_temperature(scores, targets)
    final = _metrics(scores, truth, task)
    after = final["ece"]
    log(f"calibration: temperature {task.temperature:.3f} fitted on {len(records)} evaluation images; "
        f"ECE {before:.4f} -> {after:.4f}")
    # the final evaluation's task metrics: these weights already scored these records, no second pass needed
    return {"temperature": task.temperature, "ece_before": before, "ece_after": after,
            "calibration_images": len(records),
            "eval_metrics": {key: final[key] for key in task.headline_metrics}}
