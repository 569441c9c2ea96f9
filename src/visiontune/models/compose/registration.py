"""Make composed VLMs loadable through the transformers Auto classes (done when visiontune's model code loads)."""

from __future__ import annotations

_registered = False


def register_composed_vlm() -> None:
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from .configuration import ComposedVLMConfig
    from .modeling import ComposedVLMForConditionalGeneration
    from .processing import ComposedVLMProcessor

    AutoConfig.register(ComposedVLMConfig.model_type, ComposedVLMConfig, exist_ok=True)
    AutoModelForImageTextToText.register(ComposedVLMConfig, ComposedVLMForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(ComposedVLMConfig, ComposedVLMProcessor, exist_ok=True)
    _registered = True
