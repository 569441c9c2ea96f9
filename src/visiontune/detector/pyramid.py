"""ViTDet's simple feature pyramid: multi-scale maps from a plain ViT's last feature map alone.

The ViT's map has stride = patch size (14 or 16). Each level rescales it to its stride: transposed convs
(x2 each) going finer, max-pooling going coarser, identity at the patch stride; then the map is resized to
exactly ceil(H / stride) x ceil(W / stride) (needed for patch 14 and odd image sizes), and projected by a
1x1 and a 3x3 conv, each followed by channel LayerNorm (as in "Exploring Plain Vision Transformer Backbones
for Object Detection").
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ChannelLayerNorm(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _rescaler(channels: int, patch: int, stride: int) -> nn.Module:
    steps = round(math.log2(patch / stride))  # > 0: finer (upsample), < 0: coarser (pool)
    layers: list[nn.Module] = []
    for step in range(max(steps, 0)):
        layers.append(nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2))
        if step < steps - 1:
            layers += [ChannelLayerNorm(channels), nn.GELU()]
    for _ in range(max(-steps, 0)):
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
    return nn.Sequential(*layers)


class SimpleFeaturePyramid(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, patch_size: int, strides: tuple[int, ...] = (8, 16, 32)):
        super().__init__()
        self.patch_size, self.strides = patch_size, tuple(strides)
        self.rescalers = nn.ModuleList(_rescaler(in_channels, patch_size, s) for s in self.strides)
        self.projections = nn.ModuleList(nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), ChannelLayerNorm(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), ChannelLayerNorm(out_channels))
            for _ in self.strides)

    def level_sizes(self, image_height: int, image_width: int) -> list[tuple[int, int]]:
        return [(math.ceil(image_height / s), math.ceil(image_width / s)) for s in self.strides]

    def forward(self, features: torch.Tensor, image_size: tuple[int, int]) -> list[torch.Tensor]:
        """features: (B, C, H / patch, W / patch), the ViT's patch tokens as a map; one map per stride."""
        levels = []
        for rescale, project, size in zip(self.rescalers, self.projections, self.level_sizes(*image_size)):
            x = rescale(features)
            if tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            levels.append(project(x))
        return levels
