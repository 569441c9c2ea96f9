"""transformers image processors built here (kept apart from `images.py`, which the torch-free runtime imports)."""

from __future__ import annotations

from .images import IMAGENET_MEAN, IMAGENET_STD


def imagenet_bit_processor(**kwargs):
    """A DINOv2-style image processor with ImageNet statistics that needs no torchvision."""
    try:  # transformers 5.x names the torchvision-free processor *Pil
        from transformers import BitImageProcessorPil as BitImageProcessor
    except ImportError:
        from transformers import BitImageProcessor
    return BitImageProcessor(image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), **kwargs)
