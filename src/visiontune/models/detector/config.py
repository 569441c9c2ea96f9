"""What a dedicated detector is (`DetectorConfig`, saved as detector.json) and its named size presets.

A preset fixes the backbone and the widths of what is trained on top of it; `--backbone` and the other
flags override any of it. `b` on CLIP ViT-B/16 is the ~90M-parameter model the design asks for; `s` on
DINOv2 ViT-S/14 is the one that runs offline (the zoo ships its weights).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .peaks import check_peak_window

CONFIG_FILE, WEIGHTS_FILE = "detector.json", "model.safetensors"
RELATION_KINDS = ("attention", "pooling")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def check_relation_kind(kind: str) -> None:
    if kind not in RELATION_KINDS:
        raise ValueError(f"unknown relation kind {kind!r}; choose one of {', '.join(RELATION_KINDS)}")


@dataclass
class DetectorConfig:
    classes: list[str]
    backbone: str = "dinov2-small"  # hub id, folder or zoo name it was built from (for the record)
    backbone_config: dict = field(default_factory=dict)  # the vision config, so loading needs no download
    image_size: tuple[int, int] = (640, 640)  # (height, width) every image is resized to
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    strides: tuple[int, ...] = (8, 16, 32)
    neck_channels: int = 192
    neck_depth: int = 1  # Mix-FFN blocks per pyramid level
    mlp_ratio: float = 2.0
    head_convs: int = 2  # 3x3 conv layers in each of the class and box towers
    max_filter: bool = False  # DeFCN 3D max filtering gate on the class score (tried: no gain at 20-30 epochs)
    relation_layers: int = 0  # > 0: self-attention among the top candidates re-scores them (relation.py)
    relation_kind: str = "attention"  # how candidates see each other: "attention" or "pooling" (GossipNet's max)
    relation_candidates: int = 100  # how many dense positions become candidates (top_k is 100)
    lora_rank: int = 0  # > 0: LoRA on the backbone's attention during training (merged when saved)
    top_k: int = 100  # detections kept per image; no NMS anywhere
    peak_window: int = 3  # a detection must be its class's best score in this window on its level (peaks.py); 0: off
    peak_across_levels: bool = True  # ... and in the windows at the same place on the adjacent levels
    score_threshold: float = 0.3  # what `predict` reports (eval scores all top_k)

    def __post_init__(self):
        check_relation_kind(self.relation_kind)
        check_peak_window(self.peak_window, self.strides if self.peak_across_levels else None)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> DetectorConfig:
        path = Path(folder) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {CONFIG_FILE}; pass a folder written by `visiontune detector train`")
        values = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)}; was it written by a newer visiontune?")
        for name in ("image_size", "image_mean", "image_std", "strides"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


# name -> (backbone, overrides of DetectorConfig)
PRESETS: dict[str, tuple[str, dict]] = {
    "s": ("dinov2-small", {"neck_channels": 192, "neck_depth": 1, "head_convs": 2}),
    "b": ("openai/clip-vit-base-patch16", {"neck_channels": 256, "neck_depth": 2, "head_convs": 3}),
}
