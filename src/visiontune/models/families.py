"""Everything that differs between VLM families lives here, one entry per family.

A family entry says where the vision encoder, the connector and the language model sit (module paths
relative to the `...ForConditionalGeneration` model), how `--image-size` / `--no-image-splitting` map onto
that family's processor, and which optional hooks it has: the feature cache's adapter, the ONNX vision graph,
the torch-free runtime's image preparation, the tiny builder, region slots for detection. Hooks are
"module:attribute" names imported on use, so this table stays free of torch and of the layers above it, and
each hook lives with the code it serves. Code elsewhere asks this table; it never tests model or family names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    vision: tuple[str, ...]
    connector: tuple[str, ...]
    language: tuple[str, ...]
    configure_processor: Callable[..., list[str]] = field(default=lambda processor, image_size, splitting: [])
    # Parts trained by LoRA / QLoRA when --train is not given (None: the language model alone).
    lora_default_train: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()  # other names users give it (`tiny-model --family smolvlm`)
    feature_cache: str | None = None  # (frozen parts, model -> VisionAdapter), models/vision_cache.py
    onnx_vision: str | None = None  # an OnnxVision (graph, sample inputs, axes, export info), export/onnx_graphs.py
    runtime_images: str = "fixed"  # the torch-free runtime's image preparation (runtime/images.py): fixed | tiles
    flatten_image_parts: bool = False  # its chat template takes "<image>\n" + text, not structured content parts
    tiny: str | None = None  # seed -> (model, processor) or a folder writer, models/tiny.py
    # (model path, processor, classes, grid, slots) -> config overrides that write what the image's regions
    # hold as text after the image (models/compose/regions.py); the processor is set to match
    region_slots: str | None = None
    # llama.cpp's name for the language model's architecture (its converter picks the text converter by it;
    # export/gguf_export.py); None: no GGUF export, for the reason in `no_gguf_reason` when there is one
    gguf_text_architecture: str | None = None
    no_gguf_reason: str = ""

    def hook(self, name: str):
        """The object a hook names (None when the family has no such hook)."""
        reference = getattr(self, name)
        if reference is None:
            return None
        module, _, attribute = reference.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _idefics3_processor(processor, image_size: int | None, splitting: bool | None) -> list[str]:
    """SmolVLM/Idefics3: the image is resized to longest edge `image_size`, then cut into tiles of the
    vision encoder's size plus one global tile. Tokens per image = tiles x image_seq_len."""
    image_processor, notes = processor.image_processor, []
    tile = image_processor.max_image_size["longest_edge"]
    if image_size is not None:
        # Round up to whole tiles: the splitter works in tile units.
        rounded = max(tile, -(-image_size // tile) * tile)
        image_processor.size = {"longest_edge": rounded}
        notes.append(f"longest edge {rounded} px (tiles of {tile} px)")
    if splitting is not None:
        image_processor.do_image_splitting = splitting
        notes.append("image splitting " + ("on" if splitting else "off"))
    return notes


def _qwen2_vl_processor(processor, image_size: int | None, splitting: bool | None) -> list[str]:
    """Qwen2-VL: native resolution between min_pixels and max_pixels; `image_size` caps the area."""
    if image_size is None:
        return []
    image_processor = processor.image_processor
    max_pixels = image_size * image_size
    image_processor.max_pixels = max_pixels
    image_processor.min_pixels = min(getattr(image_processor, "min_pixels", 3136) or 3136, max_pixels)
    if isinstance(getattr(image_processor, "size", None), dict):
        image_processor.size = {"shortest_edge": image_processor.min_pixels, "longest_edge": max_pixels}
    return [f"at most {max_pixels} pixels per image"]


def _fixed_size_processor(processor, image_size: int | None, splitting: bool | None) -> list[str]:
    if image_size is not None:
        return ["--image-size ignored: this family's vision tower has a fixed input size"]
    return []


FAMILIES = (
    Family("idefics3", ("idefics3", "smolvlm"), vision=("model.vision_model",), connector=("model.connector",),
           language=("model.text_model", "lm_head"), configure_processor=_idefics3_processor, aliases=("smolvlm",),
           feature_cache="visiontune.models.vision_cache:IDEFICS3_CACHE",
           onnx_vision="visiontune.export.onnx_graphs:IDEFICS3_VISION", runtime_images="tiles",
           tiny="visiontune.models.tiny:build_smolvlm", gguf_text_architecture="VLlama3ForCausalLM"),
    Family("llava", ("llava",), vision=("model.vision_tower",), connector=("model.multi_modal_projector",),
           language=("model.language_model", "lm_head"), configure_processor=_fixed_size_processor,
           onnx_vision="visiontune.export.onnx_graphs:LLAVA_VISION", tiny="visiontune.models.tiny:build_llava"),
    # Composed VLMs (models/compose): the image size is fixed when composing (it sets the image-token count).
    # Their projector has seen little data (one alignment stage), so it trains beside LoRA by default.
    Family("composed", ("visiontune_vlm",), vision=("vision_model",), connector=("projector",),
           language=("language_model",), configure_processor=_fixed_size_processor,
           lora_default_train=("connector", "language"),
           feature_cache="visiontune.models.vision_cache:COMPOSED_CACHE",
           onnx_vision="visiontune.export.onnx_graphs:COMPOSED_VISION", flatten_image_parts=True,
           tiny="visiontune.models.tiny:build_tiny_composed",
           region_slots="visiontune.models.compose.regions:slot_overrides",
           no_gguf_reason="a composed VLM (DINOv2-style encoder, SwiGLU projector, summary token, grid positions) "
                          "has no GGUF layout: llama.cpp's vision runtime runs SigLIP/CLIP-style encoders with pixel "
                          "shuffle and a linear or MLP projector (SmolVLM's and nanoVLM's layouts)"),
    Family("qwen2-vl", ("qwen2_vl", "qwen2_5_vl"), vision=("model.visual",), connector=("model.visual.merger",),
           language=("model.language_model", "lm_head"), configure_processor=_qwen2_vl_processor,
           tiny="visiontune.models.tiny:build_qwen2_vl"),
)


def family_for(model_type: str) -> Family | None:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    return None


def family_named(name: str) -> Family | None:
    """The family a user names (its name or an alias)."""
    return next((family for family in FAMILIES if name == family.name or name in family.aliases), None)
