"""The frozen ViT backbone: any transformers ViT-family vision model (CLIP vision, SigLIP, DINOv2), its
patch tokens returned as a feature map. Its weights never train; LoRA (peft) on its attention is the only
way it adapts, and the adapter is merged back when the detector is saved.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

# Attention projections across families: CLIP/SigLIP/DINOv2 in transformers 5 (q/k/v_proj), older ViTs.
LORA_TARGETS = r".*\.(q_proj|k_proj|v_proj|query|key|value)$"


def vision_model_from_config(config_dict: dict) -> nn.Module:
    """A randomly initialised vision model of this config (weights are loaded after)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    values = dict(config_dict)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    return MODEL_MAPPING[type(config)]._from_config(config, dtype=torch.float32)


def load_pretrained_vision_model(reference: str, log=print) -> tuple[nn.Module, dict, tuple, tuple]:
    """(vision model, its config as a dict, image mean, image std) from a hub id, a folder or a zoo name."""
    from ..models.vision_encoders import image_statistics, load_vision_encoder
    from ..zoo.prepare import resolve_model_reference

    path = resolve_model_reference(reference, log)
    model, vision_config = load_vision_encoder(path)
    mean, std = image_statistics(path, log)
    return model, vision_config.to_dict(), mean, std


class ViTBackbone(nn.Module):
    """(B, 3, H, W) normalised pixels -> (B, C, H // patch, W // patch) patch features."""

    def __init__(self, vision_model: nn.Module):
        super().__init__()
        self.model = vision_model
        config = vision_model.config
        self.patch_size, self.hidden_size = int(config.patch_size), int(config.hidden_size)
        # CLIP and SigLIP keep their pretraining position grid unless asked to interpolate it.
        self._interpolate = "interpolate_pos_encoding" in inspect.signature(vision_model.forward).parameters

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        height, width = pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size
        extra = {"interpolate_pos_encoding": True} if self._interpolate else {}
        tokens = self.model(pixel_values=pixel_values, **extra).last_hidden_state
        tokens = tokens[:, tokens.shape[1] - height * width:]  # drop CLS / register tokens
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.hidden_size, height, width)


def freeze(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def add_lora(backbone: ViTBackbone, rank: int, alpha: float | None = None, dropout: float = 0.0) -> None:
    """LoRA adapters on the backbone's attention projections (only they train)."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=dropout, target_modules=LORA_TARGETS)
    inject_adapter_in_model(config, backbone.model)
    if not any("lora_" in name for name, _ in backbone.model.named_parameters()):
        raise ValueError(f"{type(backbone.model).__name__}: no attention projection matched {LORA_TARGETS}; "
                         f"LoRA cannot be added to this backbone")


def merge_lora(backbone: ViTBackbone) -> None:
    """Fold LoRA into the base weights and remove the adapter layers (for saving and export)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(backbone.model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = backbone.model.get_submodule(parent_name) if parent_name else backbone.model
            setattr(parent, child, module.get_base_layer())
