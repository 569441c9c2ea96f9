"""The report's pictures: every plot writes a PNG that shows its content (not a blank canvas)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from visiontune.metrics.classification import expected_calibration_error
from visiontune.report.boxes import draw_boxes
from visiontune.report.classification import plot_confusion_matrix, plot_reliability
from visiontune.report.curves import plot_training_curves
from visiontune.report.grid import plot_sample_grid


def _busy(path) -> bool:
    """More than two distinct colours over a real share of the picture: something was drawn."""
    pixels = np.asarray(Image.open(path).convert("L"))
    return pixels.std() > 5 and len(np.unique(pixels)) > 2


def test_every_plot_writes_a_picture_of_its_content(tmp_path):
    confusion = {"labels": ["cat", "dog"], "matrix": [[5, 1], [2, 7]]}
    assert _busy(plot_confusion_matrix(confusion, tmp_path / "confusion.png"))
    rng = np.random.default_rng(0)
    confidences = rng.uniform(0.3, 1.0, 200)
    ece, bins = expected_calibration_error(confidences, rng.uniform(size=200) < confidences * 0.9)
    assert _busy(plot_reliability(bins, ece, tmp_path / "reliability.png"))
    history = [{"step": s, "loss": 2.0 / s} for s in range(1, 20)] + [{"step": 10, "eval_loss": 0.5}]
    assert _busy(plot_training_curves(history, tmp_path / "curves.png"))
    tile = Image.new("RGB", (32, 32), (200, 30, 30))
    assert _busy(plot_sample_grid([{"image": tile, "lines": ["pred: a red square"]}] * 3, tmp_path / "grid.png"))
    assert plot_sample_grid([], tmp_path / "empty.png") is None


def test_drawn_boxes_change_only_their_outline():
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    drawn = np.asarray(draw_boxes(image, [{"label": "cat", "box": [10, 10, 40, 40], "score": 0.9}]))
    assert drawn[25, 10].tolist() != [255, 255, 255]  # on the left edge
    assert drawn[25, 25].tolist() == [255, 255, 255] and drawn[55, 55].tolist() == [255, 255, 255]


def test_a_run_shorter_than_logging_steps_has_its_loss_and_both_curve_panels(tiny_models, shapes, tmp_path):
    """Every optimizer step's loss and learning rate are kept: a 3-step run logging every 10 steps, with no
    eval data, still reports its final loss and draws the loss and the learning-rate panels."""
    from visiontune.api.train import train

    output = tmp_path / "run"
    summary = train(task="caption", model=str(tiny_models["smolvlm"]), data=str(shapes["jsonl"]), output=str(output),
                    max_steps=3, logging_steps=10, warmup_ratio=0.5, num_workers=0, report_to="none",
                    log=lambda *_: None)
    assert summary["steps"] == 3 and summary["final_train_loss"] > 0
    assert {"data", "model", "preflight", "train"} <= set(summary["phase_seconds"]), summary["phase_seconds"]
    assert 0 < summary["phase_seconds"]["train"] <= summary["train_seconds"] * 1.5 + 1
    pixels = np.asarray(Image.open(output / "training_curves.png").convert("L"))
    left, right = pixels[:, : pixels.shape[1] // 2], pixels[:, pixels.shape[1] // 2:]
    # A panel with a curve holds more dark (drawn) pixels than its axes and labels alone.
    empty = np.asarray(Image.open(plot_training_curves([{"step": 1, "eval_loss": 1.0}], tmp_path / "e.png"))
                       .convert("L"))[:, pixels.shape[1] // 2:]
    assert (right < 128).sum() > (empty < 128).sum() + 50 and (left < 200).sum() > 0
