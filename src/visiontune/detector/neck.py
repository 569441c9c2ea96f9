"""The neck: SegFormer's Mix-FFN blocks on each pyramid level. A 3x3 depthwise conv inside the MLP gives
each position its neighbourhood, which is what the head needs instead of positional embeddings."""

from __future__ import annotations

import torch
from torch import nn

from .pyramid import ChannelLayerNorm


class MixFFN(nn.Module):
    """x + W2(GELU(DWConv3x3(W1(LN(x))))), all on (B, C, H, W) maps."""

    def __init__(self, channels: int, mlp_ratio: float = 2.0):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.norm = ChannelLayerNorm(channels)
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.mix = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.project = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.act(self.mix(self.expand(self.norm(x)))))


class MixFFNNeck(nn.Module):
    """`depth` Mix-FFN blocks per level, each level its own weights."""

    def __init__(self, channels: int, levels: int, depth: int = 1, mlp_ratio: float = 2.0):
        super().__init__()
        self.levels = nn.ModuleList(nn.Sequential(*(MixFFN(channels, mlp_ratio) for _ in range(depth)))
                                    for _ in range(levels))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [blocks(x) for blocks, x in zip(self.levels, features)]
