"""training_curves.png from the Trainer's log history."""

from __future__ import annotations

from pathlib import Path


def plot_training_curves(log_history: list[dict], path: str | Path, steps: list[dict] | None = None) -> Path | None:
    """Train loss and learning rate (from `steps`, one {step, loss, learning_rate} per optimizer step, else the
    logged entries), eval loss and accuracy from the log; None when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = steps if steps else log_history
    train = [(e["step"], e["loss"]) for e in entries if e.get("loss") is not None and "step" in e]
    rates = [(e["step"], e["learning_rate"]) for e in entries if e.get("learning_rate") is not None and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    accuracy = [(e["step"], e["eval_accuracy"]) for e in log_history if "eval_accuracy" in e]
    if not train and not evals:
        return None
    figure, (loss_axis, lr_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
    if train:
        loss_axis.plot(*zip(*train), label="train loss")
    if evals:
        loss_axis.plot(*zip(*evals), marker="o", label="eval loss")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    if accuracy:  # classification: eval accuracy on a second axis
        accuracy_axis = loss_axis.twinx()
        accuracy_axis.plot(*zip(*accuracy), marker="s", color="tab:green", label="eval accuracy")
        accuracy_axis.set_ylabel("accuracy")
        accuracy_axis.set_ylim(0, 1.02)
        accuracy_axis.legend(loc="upper center")
    loss_axis.legend()
    if rates:
        lr_axis.plot(*zip(*rates))
    lr_axis.set_xlabel("step")
    lr_axis.set_ylabel("learning rate")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
