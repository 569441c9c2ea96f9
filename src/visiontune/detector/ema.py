"""Exponential moving average of the trained weights (the backbone is frozen, so only what trains is kept).
The decay ramps up from 0 (decay * (1 - exp(-updates / ramp))), so early weights do not linger, as in
ultralytics / RT-DETR."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn


class TrainedWeightsEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9995, ramp: float = 500.0):
        self.decay, self.ramp, self.updates = decay, ramp, 0
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        parameters = dict(model.named_parameters())
        self.shadow = {name: parameters[name].detach().clone().float() for name in self.names}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = self.decay * (1 - math.exp(-self.updates / self.ramp))
        parameters = dict(model.named_parameters())
        for name in self.names:
            self.shadow[name].lerp_(parameters[name].detach().float(), 1 - decay)

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """The model with the averaged weights inside the block, its own weights restored after."""
        parameters = dict(model.named_parameters())
        saved = {name: parameters[name].detach().clone() for name in self.names}
        with torch.no_grad():
            for name in self.names:
                parameters[name].copy_(self.shadow[name])
        try:
            yield model
        finally:
            with torch.no_grad():
                for name in self.names:
                    parameters[name].copy_(saved[name])

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.updates, self.shadow = state["updates"], {k: v.float() for k, v in state["shadow"].items()}
