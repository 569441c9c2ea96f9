"""Class imbalance: per-example weights of inverse class frequency, used by a weighted sampler
(`--balance sampler`: every class is drawn equally often, with replacement) or in the loss
(`--balance loss`: each example's answer tokens weigh N / (K * count of its class), mean weight 1)."""

from __future__ import annotations

from collections import Counter

BALANCE_MODES = ("none", "sampler", "loss")


def class_counts(labels: list[str], classes: list[str]) -> dict[str, int]:
    counts = Counter(labels)
    return {name: counts.get(name, 0) for name in classes}


def inverse_frequency_weights(labels: list[str]) -> list[float]:
    counts = Counter(labels)
    total, present = len(labels), len(counts)
    return [total / (present * counts[label]) for label in labels]


def format_counts(counts: dict[str, int]) -> str:
    width = max(len(name) for name in counts)
    return "\n".join(f"  {name:<{width}}  {count}" for name, count in counts.items())
