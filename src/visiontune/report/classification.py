"""confusion_matrix.png (scikit-learn's display) and reliability.png (accuracy against confidence per bin)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(confusion: dict, path: str | Path) -> Path:
    """confusion: {"labels": [...], "matrix": rows = true class, columns = predicted class}."""
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    labels = confusion["labels"]
    size = min(4 + 0.45 * len(labels), 24)
    figure, axis = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.asarray(confusion["matrix"]), display_labels=labels).plot(
        ax=axis, xticks_rotation="vertical", colorbar=False, include_values=len(labels) <= 30)
    axis.set_title("confusion matrix (rows: true class)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def plot_reliability(bins: list[dict], ece: float, path: str | Path) -> Path:
    """bins: expected_calibration_error's table. Bars at accuracy; the diagonal is perfect calibration."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    for entry in bins:
        width = entry["high"] - entry["low"]
        axis.bar(entry["low"], entry["accuracy"], width=width, align="edge", edgecolor="black", color="tab:blue")
        axis.plot([entry["low"] + width / 2], [entry["confidence"]], "r.")
    axis.plot([0, 1], [0, 1], "k--", linewidth=1)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(f"reliability (ECE {ece:.3f}; red: mean confidence)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
