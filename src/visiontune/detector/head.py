"""The one-to-one head: at every position of every pyramid level, class logits and a box.

Shared over levels (as in FCOS): a class tower and a box tower of 3x3 convs. A position at pixel centre
(x, y) of a level with stride s predicts distances (left, top, right, bottom) = softplus(raw) * s * scale,
with one learned scale per level. Training assigns each object to exactly one position (see `loss.py`),
so at inference the top-k scores among the local peaks (`peaks.py`) are the detections: no NMS.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .pyramid import ChannelLayerNorm

PRIOR_PROBABILITY = 0.01  # initial foreground probability, so the focal loss starts calm


def _tower(channels: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), ChannelLayerNorm(channels), nn.GELU()]
    return nn.Sequential(*layers)


def position_centres(sizes: list[tuple[int, int]], strides: tuple[int, ...], device=None) -> torch.Tensor:
    """(N, 2) pixel centres (x, y) of every position, levels in order, row-major."""
    centres = []
    for (height, width), stride in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
        centres.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).float().add(0.5).mul(stride))
    return torch.cat(centres)


class OneToOneHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, levels: int, depth: int = 2):
        super().__init__()
        self.class_tower, self.box_tower = _tower(channels, depth), _tower(channels, depth)
        self.class_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.box_distances = nn.Conv2d(channels, 4, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(levels))
        nn.init.normal_(self.class_logits.weight, std=0.01)
        nn.init.constant_(self.class_logits.bias, -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))
        nn.init.normal_(self.box_distances.weight, std=0.01)
        nn.init.zeros_(self.box_distances.bias)

    def forward(self, features: list[torch.Tensor], strides: tuple[int, ...],
                image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """logits (B, N, K), boxes (B, N, 4) as cxcywh normalised to the image, and the (N, 2) pixel centres of
        the positions."""
        logits, distances = [], []
        box_features = [self.box_tower(x) for x in features]
        for level, x in enumerate(features):
            logits.append(self.class_logits(self.class_tower(x)).flatten(2).transpose(1, 2))
            raw = self.box_distances(box_features[level]).flatten(2).transpose(1, 2)
            distances.append(F.softplus(raw) * self.scales[level] * strides[level])
        sizes = [tuple(x.shape[-2:]) for x in features]
        centres = position_centres(sizes, strides, device=features[0].device)
        distances_all = torch.cat(distances, 1)
        height, width = image_size
        x1 = centres[:, 0] - distances_all[..., 0]
        y1 = centres[:, 1] - distances_all[..., 1]
        x2 = centres[:, 0] + distances_all[..., 2]
        y2 = centres[:, 1] + distances_all[..., 3]
        boxes = torch.stack([(x1 + x2) / (2 * width), (y1 + y2) / (2 * height), (x2 - x1) / width, (y2 - y1) / height], -1)
        return torch.cat(logits, 1), boxes, centres
