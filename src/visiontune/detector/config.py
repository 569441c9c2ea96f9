"""What a dedicated detector is (`DetectorConfig`, saved as detector.json) and its named size presets.

A preset fixes the backbone and the widths of what is trained on top of it; `--backbone` and the other
flags override any of it. `b` on CLIP ViT-B/16 is the ~90M-parameter model the design asks for; `s` on
DINOv2 ViT-S/14 is the one that runs offline (the zoo ships its weights).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..data.images import IMAGENET_MEAN, IMAGENET_STD
from ..data.options import DataOptions

CONFIG_FILE, WEIGHTS_FILE = "detector.json", "model.safetensors"


def check_peak_window(window: int, strides: tuple[int, ...] | None = None) -> None:
    """A window of 0 (off) or an odd size; across levels, each stride a whole multiple of the one before."""
    if window != 0 and (window < 3 or window % 2 == 0):
        raise ValueError(f"peak_window must be 0 (off) or an odd number >= 3, not {window}")
    if window and strides is not None and any(coarse % fine for fine, coarse in itertools.pairwise(strides)):
        raise ValueError(f"peaks across levels need each stride to be a multiple of the one before, not {strides}; "
                         "set peak_across_levels to false")


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
    lora_rank: int = 0  # > 0: LoRA on the backbone's attention during training (merged when saved)
    top_k: int = 100  # detections kept per image; no NMS anywhere
    peak_window: int = 3  # a detection must be its class's best score in this window on its level (peaks.py); 0: off
    peak_across_levels: bool = True  # ... and in the windows at the same place on the adjacent levels
    score_threshold: float = 0.3  # what `predict` reports (eval scores all top_k)

    def __post_init__(self):
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


@dataclass
class DetectorTrainSettings(DataOptions):
    """What `visiontune detector train` takes (the CLI flags are these fields; the data options are shared)."""

    data: str = field(default="", metadata={"help": "training data: COCO instances JSON, YOLO folder or HF dataset"})
    output: str = field(default="runs/detector", metadata={"help": "run folder"})
    eval_data: str | None = field(default=None, metadata={"help": "validation data; the best COCO AP is kept"})
    eval_images_dir: str | None = field(default=None, metadata={"help": "where --eval-data's images are"})
    eval_split: str | None = field(default=None, metadata={"help": "split of --eval-data"})
    preset: str = field(default="s", metadata={"help": "model size: s (DINOv2 ViT-S/14, 26M) or b (CLIP ViT-B/16, ~90M)"})
    backbone: str | None = field(default=None, metadata={"help": "hub id, folder or zoo name (default: the preset's)"})
    image_size: int | None = field(default=None, metadata={"help": "square input side in pixels (default 640)"})
    neck_channels: int | None = field(default=None, metadata={"help": "pyramid/neck width (default: the preset's)"})
    lora_rank: int = field(default=0, metadata={"help": "LoRA rank on the backbone's attention; 0 = neck + head only"})
    epochs: int = field(default=36, metadata={"help": "passes over the training data"})
    batch_size: int = field(default=16, metadata={"help": "images per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warmup steps"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    ema_decay: float = field(default=0.9995, metadata={"help": "EMA decay (0 = no EMA)"})
    peak_window: int | None = field(default=None, metadata={
        "help": "a detection must be its class's best score in this window of positions on its level "
                "(CenterNet's peak extraction, a max-pool; default 3; 0 = the plain top-k of every position)"})
    peak_across_levels: bool | None = field(default=None, metadata={
        "help": "the peak window also spans the same place on the adjacent pyramid levels (DeFCN's 3D max "
                "filter; default on)"})
    augment: bool = field(default=True, metadata={"help": "zoom out, crop and flip training images"})
    eval_every: int = field(default=1, metadata={"help": "epochs between evaluations"})
    workers: int = field(default=2, metadata={"help": "data loader worker processes"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast (default: on for CUDA)"})
    resume: bool = field(default=False, metadata={"help": "continue from --output/checkpoint.pt"})


PEAK_HELP = "override the model's peak window (0: the plain top-k of every position; PyTorch models)"


@dataclass
class DetectorPredictSettings:
    """What `visiontune detector predict` takes."""

    model: str = field(default="", metadata={"help": "a trained detector folder, or an exported .onnx (torch-free)",
                                             "required": True})
    images: list[str] = field(default_factory=list, metadata={"help": "image files, folders or URLs", "required": True})
    output: str | None = field(default=None, metadata={"help": "write predictions here (JSON); default: print JSON lines"})
    draw: str | None = field(default=None, metadata={"help": "write each image with its boxes into this folder"})
    threshold: float | None = field(default=None, metadata={"help": "lowest score reported (default: the model's)"})
    batch_size: int = 8
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda (PyTorch models)"})
    peak_window: int | None = field(default=None, metadata={"help": PEAK_HELP})


@dataclass
class DetectorEvalSettings(DataOptions):
    """What `visiontune detector eval` takes."""

    model: str = field(default="", metadata={"help": "a trained detector folder, or an exported .onnx",
                                             "required": True})
    data: str = field(default="", metadata={"help": "COCO instances JSON, YOLO folder or HF dataset", "required": True})
    output: str | None = field(default=None, metadata={"help": "folder for metrics.json, detections.json and overlays/"})
    batch_size: int = 16
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda (PyTorch models)"})
    peak_window: int | None = field(default=None, metadata={"help": PEAK_HELP})


PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class DetectorExportSettings:
    """What `visiontune detector export` takes."""

    model: str = field(default="", metadata={"help": "a trained detector folder", "required": True})
    output: str = field(default="", metadata={"help": "the .onnx file to write", "required": True})
    format: str = field(default="onnx", metadata={"help": "onnx"})
    fp16: bool = field(default=False, metadata={"help": "float16 weights and compute"})
    int8: bool = field(default=False, metadata={"help": "int8 quantization (dynamic, or static with --calibration-data)"})
    calibration_data: str | None = field(default=None, metadata={
        "help": "int8 static: labelled or unlabelled data whose images calibrate"})
    calibration_images: int = field(default=64, metadata={"help": "how many calibration images"})
    eval_data: str | None = field(default=None, metadata={
        "help": "report the mAP of PyTorch, fp32 ONNX and this export on this data"})
    images_dir: str | None = field(default=None, metadata={
        "help": "folder that relative image paths of --eval-data and --calibration-data are under"})
    max_samples: int | None = field(default=None, metadata={"help": "evaluate on the first N images of --eval-data"})
    peak_window: int | None = field(default=None, metadata={"help": "override the model's peak window in the graph"})

    @property
    def precision(self) -> str:
        if self.fp16 and self.int8:
            raise ValueError("choose one of --fp16 and --int8")
        if self.format != "onnx":
            raise ValueError(f"--format {self.format!r}: the detector exports to onnx")
        if self.calibration_data and not self.int8:
            raise ValueError("--calibration-data is for --int8 (static quantization)")
        return "fp16" if self.fp16 else "int8" if self.int8 else "fp32"
