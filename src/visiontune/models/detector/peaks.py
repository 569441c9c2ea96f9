"""Local-peak decoding: a detection must be the best score of its class in its window on its pyramid level.

The one-to-one head trains one position per object, but a neighbour sees nearly the same features (the finer
levels are upsampled ViT patches), so it often keeps a close second score for the same object. On the
canvas study 19 of 20 such duplicates were the adjacent position on the same level (BENCHMARKS.md,
session 7). Keeping only positions whose class score is the maximum of its k x k neighbourhood in that
class's score map removes exactly those: CenterNet's peak extraction ("Objects as Points"), a max-pool in the
graph. It compares the scores of neighbouring positions of one class map and never boxes: no IoU, no
sorting, no suppression loop, so it exports to ONNX as one MaxPool per level. Exact ties both survive.

`peak_window` (DetectorConfig) sets k; 0 turns it off (the plain top-k of every position).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def check_peak_window(window: int) -> None:
    if window != 0 and (window < 3 or window % 2 == 0):
        raise ValueError(f"peak_window must be 0 (off) or an odd number >= 3, not {window}")


def local_peaks(logits: torch.Tensor, level_sizes: list[tuple[int, int]], window: int) -> torch.Tensor:
    """logits (B, N, K), positions level by level in row-major order as the head lays them out -> bool (B, N, K):
    the position holds the maximum of its class in the window around it on its own level."""
    batch, _, classes = logits.shape
    peaks, start = [], 0
    for height, width in level_sizes:
        level = logits[:, start:start + height * width].transpose(1, 2).reshape(batch, classes, height, width)
        best = F.max_pool2d(level, window, stride=1, padding=window // 2)
        peaks.append((level >= best).flatten(2).transpose(1, 2))
        start += height * width
    if start != logits.shape[1]:
        raise ValueError(f"level sizes {level_sizes} hold {start} positions but the logits have {logits.shape[1]}")
    return torch.cat(peaks, 1)


def keep_local_peaks(outputs: dict, window: int) -> torch.Tensor:
    """The logits of `Detector.forward`'s outputs with every non-peak set to -inf. With candidate relations
    the refined logits are put back on the dense grid (positions that are not candidates stay -inf, so they
    suppress nothing) and the peaks are taken there."""
    logits = outputs["logits"]
    if window == 0:
        return logits
    floor = torch.finfo(logits.dtype).min
    if "candidates" not in outputs:
        return logits.masked_fill(~local_peaks(logits, outputs["level_sizes"], window), floor)
    index = outputs["candidates"].unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    grid = torch.full_like(outputs["dense"]["logits"], floor, dtype=logits.dtype).scatter(1, index, logits)
    peaks = local_peaks(grid, outputs["level_sizes"], window).gather(1, index)
    return logits.masked_fill(~peaks, floor)
