"""Make composed VLMs loadable through the transformers Auto classes (done when visiontune's model code loads).

The classes are also registered for their auto classes, so every `save_pretrained` copies their code files
(`configuration.py`, `modeling.py`, `processing.py`) into the folder and writes `auto_map`: a Python with
only transformers loads a saved composed VLM with `from_pretrained(folder, trust_remote_code=True)`."""

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
    ComposedVLMConfig.register_for_auto_class()
    ComposedVLMForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    ComposedVLMProcessor.register_for_auto_class()
    _registered = True
