"""The one-to-one head: at every position of every pyramid level, class logits and a box.

Shared over levels (as in FCOS): a class tower and a box tower of 3x3 convs. A position at pixel centre
(x, y) of a level with stride s predicts distances (left, top, right, bottom) = softplus(raw) * s * scale,
with one learned scale per level. Training assigns each object to exactly one position (see `loss.py`),
so at inference the top-k scores among the local peaks (`peaks.py`) are the detections: no NMS.

Neighbouring positions see nearly the same features (the finer levels are upsampled ViT patches), which is
where duplicates come from. DeFCN's 3D max filtering ("End-to-End Object Detection with Fully
Convolutional Network") lets each position see the strongest response in its 3x3 neighbourhood on its own
and the adjacent levels; a learned gate from that map multiplies the class probability, so the network
itself learns to keep one position per object. It is a layer trained end to end, not a post-process.
It is optional (`max_filter`): on the canvas benchmark it did not lower the duplicate rate within 20-30
epochs (BENCHMARKS.md), so it is off by default.
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


class MaxFiltering3D(nn.Module):
    """Each level's features + the max over a 3x3 window on that level and its neighbouring levels."""

    def __init__(self, channels: int, kernel: int = 3, scales: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = ChannelLayerNorm(channels)
        self.pool = nn.MaxPool3d((scales, kernel, kernel), stride=1, padding=(0, kernel // 2, kernel // 2))
        self.margin = scales // 2

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        projected = [self.conv(x) for x in features]
        outputs = []
        for level, x in enumerate(projected):
            # the level's neighbours resized to it; missing neighbours at the ends repeat the level itself
            stack = []
            for other in range(level - self.margin, level + self.margin + 1):
                source = projected[min(max(other, 0), len(projected) - 1)]
                stack.append(source if source is x else F.interpolate(source, size=x.shape[-2:], mode="bilinear",
                                                                      align_corners=False))
            pooled = self.pool(torch.stack(stack, dim=2))[:, :, 0]
            outputs.append(F.gelu(self.norm(pooled + features[level])))
        return outputs


def _logit_of_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """logit(sigmoid(a) * sigmoid(b)), computed in log space so it stays finite."""
    log_p = (F.logsigmoid(a.float()) + F.logsigmoid(b.float())).clamp(max=-1e-6)
    return log_p - torch.log((1 - torch.exp(log_p)).clamp(min=1e-12))  # (no expm1: ONNX opset 17 lacks it)


class OneToOneHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, levels: int, depth: int = 2, max_filter: bool = False):
        super().__init__()
        self.class_tower, self.box_tower = _tower(channels, depth), _tower(channels, depth)
        self.class_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.box_distances = nn.Conv2d(channels, 4, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(levels))
        self.max_filter = MaxFiltering3D(channels) if max_filter else None
        if max_filter:
            self.gate = nn.Conv2d(channels, 1, 3, padding=1)
            nn.init.normal_(self.gate.weight, std=0.01)
            nn.init.constant_(self.gate.bias, 2.0)  # starts open (sigmoid ~0.88)
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
        gates = [self.gate(x) for x in self.max_filter(box_features)] if self.max_filter is not None else None
        for level, x in enumerate(features):
            class_logits = self.class_logits(self.class_tower(x))
            if gates is not None:
                class_logits = _logit_of_product(class_logits, gates[level])
            logits.append(class_logits.flatten(2).transpose(1, 2))
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
