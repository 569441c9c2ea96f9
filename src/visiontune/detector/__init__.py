"""The dedicated detector: frozen ViT backbone (+ optional LoRA) -> simple feature pyramid -> Mix-FFN neck ->
one-to-one head trained with Hungarian assignment; inference is the NMS-free top-k of the local score peaks.

    from visiontune.detector import Detector          # torch: create, from_pretrained, predict, save_pretrained
    from visiontune.detector import OnnxDetector      # an export, with numpy + Pillow + onnxruntime only

`train` (`train_one_epoch`, `evaluate`, `train_detector`), `evaluation` and `export` back the
`visiontune detector` commands (`cli`); `config` holds the model's config and every command's settings.
Importing this package imports no torch: `Detector` is loaded on first use.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "Detector":
        from .model import Detector

        return Detector
    if name == "OnnxDetector":
        from .runtime import OnnxDetector

        return OnnxDetector
    raise AttributeError(f"module 'visiontune.detector' has no attribute {name!r}")


__all__ = ["Detector", "OnnxDetector"]
