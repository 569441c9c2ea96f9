"""A PNG grid of sample images, each with a few lines of text (prediction, reference) above it."""

from __future__ import annotations

import textwrap
from pathlib import Path


def plot_sample_grid(items: list[dict], path: str | Path, columns: int = 4) -> Path | None:
    """items: {"image": PIL image, "lines": [str]} (the task writes the lines: see Task.sample_lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not items:
        return None
    rows = -(-len(items) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4.6 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, item in zip(axes.flat, items):
        axis.imshow(item["image"])
        lines = [textwrap.shorten(line, 90) for line in item["lines"]]
        axis.set_title("\n".join(textwrap.fill(line, 42) for line in lines), fontsize=8, loc="left")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return Path(path)
