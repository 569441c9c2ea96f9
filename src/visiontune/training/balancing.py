"""Class imbalance: per-example weights of inverse class (or queried-class) frequency, used by a weighted sampler
(`--balance sampler`: every class is drawn equally often, with replacement) or in the loss
(`--balance loss`: each example's answer tokens weigh N / (K * count of its class), mean weight 1)."""

from __future__ import annotations

from collections import Counter

BALANCE_MODES = ("auto", "none", "sampler", "loss")  # auto: the task's default (sampler for detect)


def class_counts(labels: list[str | None], classes: list[str]) -> dict[str, int]:
    counts = Counter(labels)
    return {name: counts.get(name, 0) for name in classes}


def inverse_frequency_weights(groups: list[str | None]) -> list[float]:
    """N / (K * count of the item's group) over the grouped items (K groups, N grouped items); items with no
    group (detection's negative queries) keep weight 1, so balancing leaves their share unchanged."""
    counts = Counter(group for group in groups if group is not None)
    total, present = sum(counts.values()), len(counts)
    return [1.0 if group is None else total / (present * counts[group]) for group in groups]


def format_counts(counts: dict[str, int]) -> str:
    width = max(len(name) for name in counts)
    return "\n".join(f"  {name:<{width}}  {count}" for name, count in counts.items())


def class_count_lines(groups: list[str | None], classes: list[str], what: str) -> list[str]:
    """Log lines: how many `what` (training examples, positive queries) each class has, and which have none."""
    counts = class_counts(groups, classes)
    lines = [f"{what} per class ({len(classes)} classes):\n{format_counts(counts)}"]
    missing = [name for name, count in counts.items() if count == 0]
    if missing:
        lines.append(f"warning: no training examples for {', '.join(missing)}")
    return lines
