"""Pretrained ViT-style vision encoders as the composed VLM and the dedicated detector both load them: the
model (a vision-only checkpoint or the vision half of CLIP/SigLIP-style ones) and its image statistics."""

from __future__ import annotations

from ..data.image_processors import imagenet_bit_processor
from ..data.images import IMAGENET_MEAN, IMAGENET_STD


def load_vision_encoder(reference: str):
    """(vision model, its config): a vision-only checkpoint, or the vision half of CLIP/SigLIP-style ones."""
    import torch
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = AutoConfig.from_pretrained(reference)
    vision_config = getattr(config, "vision_config", None) or config
    if not hasattr(vision_config, "patch_size"):
        raise ValueError(f"{reference}: {type(vision_config).__name__} has no patch_size; a ViT-style vision "
                         f"encoder with patch features is needed (SigLIP, CLIP vision, DINOv2)")
    model_class = MODEL_MAPPING[type(vision_config)]  # e.g. CLIPVisionModel for a CLIP checkpoint's vision half
    return model_class.from_pretrained(reference, dtype=torch.float32), vision_config


def load_image_processor(reference: str, image_size: int):
    """The encoder's own normalisation, resizing straight to image_size x image_size (no crop)."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(reference)
    except (OSError, ValueError):
        processor = imagenet_bit_processor()
    processor.size = {"height": image_size, "width": image_size}
    if hasattr(processor, "do_center_crop"):
        processor.do_center_crop = False
    if hasattr(processor, "crop_size"):
        processor.crop_size = {"height": image_size, "width": image_size}
    return processor


def image_statistics(reference: str, log=print) -> tuple[tuple, tuple]:
    """(mean, std) of the encoder's own image processor; ImageNet's when it has none."""
    try:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(reference)
        return tuple(processor.image_mean), tuple(processor.image_std)
    except (OSError, ValueError, AttributeError, TypeError):
        log(f"{reference}: no image processor found; using ImageNet mean/std")
        return IMAGENET_MEAN, IMAGENET_STD
