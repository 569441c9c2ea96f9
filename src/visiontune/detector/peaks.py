"""Local-peak decoding: a detection must be the best score of its class in its window on its pyramid level
and, by default, at the same place on the adjacent levels.

The one-to-one head trains one position per object, but a neighbour sees nearly the same features (the finer
levels are upsampled ViT patches), so it often keeps a close second score for the same object. On the
canvas study 19 of 20 such duplicates were the adjacent position on the same level (BENCHMARKS.md;
rerun: `python benchmarks/detector_duplicates.py`); the rest sat on the next level. Keeping only positions whose class score is the maximum of its
k x k neighbourhood in that class's score map removes the first kind: CenterNet's peak extraction ("Objects
as Points"). Letting the window span the adjacent levels too (each brought to this level's grid: the finer
one by a max over the cells under ours, the coarser one by repeating its cell; then the k x k window)
removes the second: DeFCN's 3D max filtering ("End-to-End Object Detection with Fully Convolutional
Network"), used here as the decoding rule rather than as a learned gate. It compares the scores of
neighbouring positions of one class map and never boxes: no IoU, no sorting, no suppression loop; it
exports to ONNX as a few MaxPool/Resize ops. Exact ties all survive. On the GPU-trained canvas models it
took the duplicate rate at score 0.3 from 25-27 % to 0.1-0.3 % and AP from 0.74 to 0.76 (BENCHMARKS.md;
rerun: `python benchmarks/detector_peaks.py`); the price is recall on same-class objects closer than the window.

`peak_window` (DetectorConfig) sets k, 0 turns it off (the plain top-k of every position);
`peak_across_levels` spans the adjacent levels.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def local_peaks(logits: torch.Tensor, level_sizes: list[tuple[int, int]], window: int,
                strides: tuple[int, ...] | None = None) -> torch.Tensor:
    """logits (B, N, K), positions level by level in row-major order as the head lays them out -> bool (B, N, K):
    the position holds the maximum of its class in the window around it on its own level and, when the
    levels' strides are given, in the same window on the adjacent levels brought to this level's grid."""
    batch, _, classes = logits.shape
    maps, start = [], 0
    for height, width in level_sizes:
        maps.append(logits[:, start:start + height * width].transpose(1, 2).reshape(batch, classes, height, width))
        start += height * width
    if not torch.jit.is_tracing() and start != logits.shape[1]:  # (the ONNX export traces fixed sizes)
        raise ValueError(f"level sizes {level_sizes} hold {start} positions but the logits have {logits.shape[1]}")
    peaks = []
    for index, level in enumerate(maps):
        best = level
        if strides is not None and index > 0:  # the finer level on this grid: the max of the cells under ours
            ratio = strides[index] // strides[index - 1]
            best = torch.maximum(best, F.max_pool2d(maps[index - 1], ratio, stride=ratio, ceil_mode=True))
        if strides is not None and index + 1 < len(maps):  # the coarser level on this grid: its cell's score
            ratio = strides[index + 1] // strides[index]
            coarser = F.interpolate(maps[index + 1], scale_factor=ratio, mode="nearest")
            best = torch.maximum(best, coarser[..., :level.shape[-2], :level.shape[-1]])
        best = F.max_pool2d(best, window, stride=1, padding=window // 2)
        peaks.append((level >= best).flatten(2).transpose(1, 2))
    return torch.cat(peaks, 1)


def keep_local_peaks(outputs: dict, window: int, strides: tuple[int, ...] | None = None) -> torch.Tensor:
    """The logits of `Detector.forward`'s outputs with every non-peak set to the lowest float (score 0).
    strides: across levels too."""
    logits = outputs["logits"]
    if window == 0:
        return logits
    floor = torch.finfo(logits.dtype).min
    return logits.masked_fill(~local_peaks(logits, outputs["level_sizes"], window, strides), floor)
