"""The small maps a composed VLM is built from: layer norm, then linear, MLP or SwiGLU."""

from __future__ import annotations

import torch
from torch import nn


class FeatureMap(nn.Module):
    """Layer norm, then linear | MLP (GELU) | SwiGLU from `width_in` to `width_out`."""

    def __init__(self, kind: str, width_in: int, width_out: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or width_in
        self.kind = kind
        self.norm = nn.LayerNorm(width_in)
        if kind == "linear":
            self.out = nn.Linear(width_in, width_out)
        elif kind == "mlp":
            self.up = nn.Linear(width_in, hidden)
            self.out = nn.Linear(hidden, width_out)
        else:
            self.gate = nn.Linear(width_in, hidden, bias=False)
            self.up = nn.Linear(width_in, hidden, bias=False)
            self.out = nn.Linear(hidden, width_out, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.norm(features)
        if self.kind == "linear":
            return self.out(x)
        if self.kind == "mlp":
            return self.out(nn.functional.gelu(self.up(x)))
        return self.out(nn.functional.silu(self.gate(x)) * self.up(x))
