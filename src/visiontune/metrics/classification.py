"""Classification metrics by scikit-learn, plus expected calibration error.

An unmapped answer (free text that names no class) is a wrong prediction: it counts against accuracy and
against its true class's recall, and its rate is reported as `unmapped_rate`.
"""

from __future__ import annotations

import numpy as np

UNMAPPED = "<unmapped>"
CALIBRATION_BINS = 15


def expected_calibration_error(confidences, correct, bins: int = CALIBRATION_BINS) -> tuple[float, list[dict]]:
    """Top-label ECE with equal-width confidence bins: sum over bins of (share of samples) * |accuracy - confidence|.

    Bins are (lo, hi], the first one also holding confidence 0. Returns the ECE and the per-bin table
    (drawn as the reliability diagram)."""
    confidences = np.asarray(confidences, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = index == b
        if not members.any():
            continue
        accuracy, confidence = correct[members].mean(), confidences[members].mean()
        ece += members.mean() * abs(accuracy - confidence)
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(members.sum()),
                      "accuracy": float(accuracy), "confidence": float(confidence)})
    return float(ece), table


def classification_metrics(y_true: list[str], y_pred: list[str | None], classes: list[str],
                           probabilities: list[list[float]] | None = None) -> dict:
    """Headline metrics (floats), plus `per_class`, `confusion_matrix` and (with probabilities) `calibration`."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    predicted = [label if label is not None else UNMAPPED for label in y_pred]
    metrics: dict = {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "macro_f1": float(f1_score(y_true, predicted, labels=classes, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, predicted, labels=classes, average="weighted", zero_division=0)),
        "unmapped_rate": float(np.mean([label is None for label in y_pred])) if y_pred else 0.0,
        "samples": len(y_true),
    }
    precision, recall, f1, support = precision_recall_fscore_support(y_true, predicted, labels=classes,
                                                                     zero_division=0)
    metrics["per_class"] = {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                            for name, p, r, f, s in zip(classes, precision, recall, f1, support)}
    metrics["confusion_matrix"] = {"labels": classes,
                                   "matrix": confusion_matrix(y_true, predicted, labels=classes).tolist()}
    if probabilities is not None:
        scores = np.asarray(probabilities, dtype=float)
        # sklearn wants sorted labels; class order is the model's (e.g. Fashion-MNIST's), so pass indices.
        position = {name: i for i, name in enumerate(classes)}
        true_index = [position[label] for label in y_true]
        for k in (2, 3, 5):
            if k < len(classes):
                metrics[f"top{k}_accuracy"] = float(top_k_accuracy_score(true_index, scores, k=k,
                                                                         labels=list(range(len(classes)))))
        confidence = scores.max(axis=1)
        chosen = [classes[i] for i in scores.argmax(axis=1)]
        ece, table = expected_calibration_error(confidence, [c == t for c, t in zip(chosen, y_true)])
        metrics["ece"] = ece
        metrics["mean_confidence"] = float(confidence.mean())
        metrics["calibration"] = table
    return metrics
