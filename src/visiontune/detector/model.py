"""`Detector`: frozen ViT -> simple feature pyramid -> Mix-FFN neck -> one-to-one head; NMS-free top-k of the
local score peaks (`peaks.py`).

A saved detector is a folder: detector.json (DetectorConfig, including the backbone's config so nothing
is downloaded to load it) and model.safetensors (every weight, LoRA merged into the backbone).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backbone import ViTBackbone, add_lora, freeze, load_pretrained_vision_model, merge_lora, vision_model_from_config
from .box_ops import cxcywh_to_xyxy
from .config import CONFIG_FILE, PRESETS, WEIGHTS_FILE, DetectorConfig
from .head import OneToOneHead
from .image_io import predict_images
from .neck import MixFFNNeck
from .peaks import keep_local_peaks
from .pyramid import SimpleFeaturePyramid


class Detector(nn.Module):
    def __init__(self, config: DetectorConfig, vision_model: nn.Module):
        super().__init__()
        self.config = config
        self.backbone = ViTBackbone(vision_model)
        freeze(self.backbone)
        if config.lora_rank > 0:
            add_lora(self.backbone, config.lora_rank)
        self.pyramid = SimpleFeaturePyramid(self.backbone.hidden_size, config.neck_channels, self.backbone.patch_size,
                                            config.strides)
        self.neck = MixFFNNeck(config.neck_channels, len(config.strides), config.neck_depth, config.mlp_ratio)
        self.head = OneToOneHead(config.neck_channels, config.num_classes, len(config.strides), config.head_convs)
        self.register_buffer("mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)

    # --- building and saving -------------------------------------------------------------------------
    @classmethod
    def create(cls, classes: list[str], backbone: str | None = None, preset: str = "s", log=print,
               **overrides) -> Detector:
        """A new detector on a pretrained backbone (hub id, folder or zoo name); the rest is fresh."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        default_backbone, preset_values = PRESETS[preset]
        reference = backbone or default_backbone
        vision_model, vision_config, mean, std = load_pretrained_vision_model(reference, log=log)
        values = {**preset_values, **{k: v for k, v in overrides.items() if v is not None}}
        config = DetectorConfig(classes=list(classes), backbone=reference, backbone_config=vision_config,
                                image_mean=mean, image_std=std, **values)
        return cls(config, vision_model)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        peak_window: int | None = None) -> Detector:
        """A saved detector; peak_window overrides its decoding (`peaks.py`; 0: plain top-k)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = DetectorConfig.load(folder)
        config.lora_rank = 0  # saved weights have LoRA merged in
        if peak_window is not None:
            config = dataclasses.replace(config, peak_window=peak_window)  # checked like a saved value
        model = cls(config, vision_model_from_config(config.backbone_config))
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{folder}: {CONFIG_FILE} is there but {WEIGHTS_FILE} is not")
        model.load_state_dict(load_file(str(weights)), strict=True)
        return model.to(device).eval()

    def save_pretrained(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        model = self
        if self.config.lora_rank > 0:  # merge into a copy: training goes on with the adapter
            model = copy.deepcopy(self)
            merge_lora(model.backbone)
        self.config.save(folder)
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        return folder

    # --- parameters ----------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        lora = sum(p.numel() for n, p in self.backbone.named_parameters() if "lora_" in n)
        return {"backbone": sum(p.numel() for p in self.backbone.parameters()) - lora, "lora": lora,
                "pyramid": sum(p.numel() for p in self.pyramid.parameters()),
                "neck": sum(p.numel() for p in self.neck.parameters()),
                "head": sum(p.numel() for p in self.head.parameters()),
                "total": sum(p.numel() for p in self.parameters()) - lora,
                "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad)}

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout, and its weights stay as they were
        return self

    # --- running -------------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor) -> dict:
        """pixel_values: (B, 3, H, W) in 0..1. Raw outputs for the loss: logits, boxes (normalised cxcywh), the
        pixel centres of the positions they came from and the (height, width) of each level."""
        image_size = tuple(pixel_values.shape[-2:])
        backbone_trains = self.config.lora_rank > 0 and self.training
        with torch.set_grad_enabled(torch.is_grad_enabled() and backbone_trains):
            features = self.backbone((pixel_values - self.mean) / self.std)
        levels = self.neck(self.pyramid(features, image_size))
        logits, boxes, centres = self.head(levels, self.config.strides, image_size)
        return {"logits": logits, "boxes": boxes, "centres": centres,
                "level_sizes": [tuple(x.shape[-2:]) for x in levels]}

    def detect(self, pixel_values: torch.Tensor, top_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """NMS-free detections: the top-k (position, class) scores among the local peaks (`peaks.py`). Returns
        boxes (B, k, 4) as normalised xyxy, scores (B, k) and class indices (B, k)."""
        return self.top_detections(self.forward(pixel_values), top_k)

    def top_detections(self, outputs: dict, top_k: int | None = None, peak_window: int | None = None):
        """`detect` from `forward`'s outputs (logits, boxes, level sizes); peak_window overrides the config's
        (0: the plain top-k of every position). Non-peaks score 0."""
        window = self.config.peak_window if peak_window is None else peak_window
        strides = self.config.strides if self.config.peak_across_levels else None
        scores = keep_local_peaks(outputs, window, strides).sigmoid().flatten(1)  # (B, N * K)
        k = min(top_k or self.config.top_k, scores.shape[1])
        top_scores, index = scores.topk(k, dim=1)
        num_classes = outputs["logits"].shape[-1]
        positions, labels = index // num_classes, index % num_classes
        boxes = cxcywh_to_xyxy(outputs["boxes"]).gather(1, positions[..., None].expand(-1, -1, 4))
        return boxes, top_scores, labels

    @torch.no_grad()
    def predict(self, images: list, threshold: float | None = None, batch_size: int = 8) -> list[dict]:
        """Images (PIL images, paths or URLs) -> per image {"boxes": [{"label", "box" (pixels xyxy), "score"}]}."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device

        def run(pixels: np.ndarray):
            return tuple(t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy()
                         for t in self.detect(torch.from_numpy(pixels).to(device)))

        threshold = self.config.score_threshold if threshold is None else threshold
        results = predict_images(images, run, self.config.image_size, self.config.classes, threshold, batch_size)
        self.train(was_training)
        return results
