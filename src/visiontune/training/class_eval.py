"""Accuracy on the evaluation set during training (classify), so the best checkpoint is chosen on it.

Runs the same score-mode prediction as `visiontune eval` (the class probabilities from the model's
log-likelihoods), without a progress bar, and reports accuracy, macro F1 and ECE.
"""

from __future__ import annotations

from ..data.records import Record
from ..metrics.classification import classification_metrics

REASONING_MAX_NEW_TOKENS = 256


def classification_eval(records: list[Record], task, processor, batch_size: int = 8):
    def run(model) -> dict:
        from ..predict import Predictor

        predictor = Predictor(model, processor, task, batch_size=batch_size, mode="score",
                              max_new_tokens=REASONING_MAX_NEW_TOKENS)
        truth, predicted, probabilities = [], [], []
        for record, result in predictor.iter_results(records, Record.load_image, progress=False):
            truth.append(record.label)
            predicted.append(result["label"])
            probabilities.append([result["probabilities"][name] for name in task.classes])
        metrics = classification_metrics(truth, predicted, task.classes, probabilities)
        return {key: metrics[key] for key in ("accuracy", "macro_f1", "ece")}

    return run
