"""A composed VLM: vision encoder -> pixel shuffle -> projector -> image tokens inside a causal LM.

Image features replace the `<image>` placeholder tokens' embeddings (as LLaVA/Idefics3 do), so training,
generation, LoRA and merging all go through the LM's own forward. A plain `PreTrainedModel` with
`GenerationMixin`: `save_pretrained`, `from_pretrained` and `generate` work as for any transformers model.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel

from .configuration import ComposedVLMConfig
from .feature_map import FeatureMap
from .regions import RegionSlots, crop_windows, look_grid_boxes, look_windows, pool_boxes


def _cache_keyword(module: nn.Module) -> str:
    """The name under which `module.forward` takes its KV cache in this transformers version."""
    return "cache" if "cache" in inspect.signature(type(module).forward).parameters else "past_key_values"


def pixel_shuffle(features: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, h*w, C) patch features -> (B, h*w/f^2, C*f^2): each token holds an f x f block of patches."""
    if factor == 1:
        return features
    batch, tokens, channels = features.shape
    side = int(tokens ** 0.5)
    if side * side != tokens or side % factor:
        raise ValueError(f"pixel shuffle {factor} needs a square patch grid divisible by it; got {tokens} patches")
    x = features.reshape(batch, side // factor, factor, side // factor, factor, channels)
    x = x.permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, (side // factor) ** 2, factor * factor * channels)


class ModalityProjector(FeatureMap):
    """Pixel-shuffled patch features -> LM-width image tokens; optionally a summary token from [CLS, mean patch]
    first, and an RMS norm at the text-embedding scale on every image token (see ComposedVLMConfig).

    The summary map is linear, like a linear probe on the same features: classification training can start
    it from one (training/probe_start.py)."""

    def __init__(self, config: ComposedVLMConfig):
        vision_width, width_out = config.vision_config.hidden_size, config.text_config.hidden_size
        super().__init__(config.projector, vision_width * config.pixel_shuffle ** 2, width_out, config.projector_hidden)
        self.summary = FeatureMap("linear", 2 * vision_width, width_out) if config.summary_token else None
        self.output_norm = nn.RMSNorm(width_out, eps=1e-6) if config.output_norm else None
        self.regions = (RegionSlots(config, vision_width, width_out)
                        if config.region_slots else None)
        side = config.token_grid_side
        self.row_positions = nn.Parameter(torch.zeros(side, width_out)) if config.grid_positions else None
        self.column_positions = nn.Parameter(torch.zeros(side, width_out)) if config.grid_positions else None

    def grid_position_embeddings(self) -> torch.Tensor:
        """(side * side, width): row r's embedding + column c's, in the patch tokens' row-major order."""
        side = self.row_positions.shape[0]
        return (self.row_positions[:, None, :] + self.column_positions[None, :, :]).reshape(side * side, -1)

    def forward(self, patches: torch.Tensor, summary: torch.Tensor | None = None) -> torch.Tensor:
        tokens = super().forward(patches)
        if self.output_norm is not None:
            tokens = self.output_norm(tokens)
        if self.row_positions is not None:
            tokens = tokens + self.grid_position_embeddings().to(tokens.dtype)
        if self.summary is not None:
            summary_token = self.summary(summary).unsqueeze(1)
            if self.output_norm is not None:
                summary_token = self.output_norm(summary_token)
            tokens = torch.cat([summary_token, tokens], dim=1)
        return tokens


class ComposedVLMPreTrainedModel(PreTrainedModel):
    config_class = ComposedVLMConfig
    config: ComposedVLMConfig
    base_model_prefix = ""
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _skip_keys_device_placement = ["past_key_values"]  # noqa: RUF012 (transformers reads it as is)

    def _init_weights(self, module):
        # Only the projector is ours; the vision encoder and LM initialise (or load) themselves.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RMSNorm):  # compose() sets it to the text-embedding scale after loading the LM
            nn.init.ones_(module.weight)


class ComposedVLMForConditionalGeneration(ComposedVLMPreTrainedModel, GenerationMixin):
    def __init__(self, config: ComposedVLMConfig):
        super().__init__(config)
        self.vision_model = AutoModel.from_config(config.vision_config)
        self.projector = ModalityProjector(config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.language_model.set_output_embeddings(value)

    def encode_images(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(patch features (images, patches, width), summary features (images, 2 x width) = [CLS, mean patch])."""
        parameter = next(self.vision_model.parameters())
        hidden = self.vision_model(pixel_values=pixel_values.to(parameter.dtype)).last_hidden_state
        patch = self.config.patch_size
        patches = hidden[:, -(pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch):]
        # DINOv2 / CLIP put a CLS token first; encoders without one (SigLIP) use the mean patch twice.
        mean = patches.mean(1)
        first = hidden[:, 0] if hidden.shape[1] > patches.shape[1] else mean
        return patches, torch.cat([first, mean], dim=-1)

    def look_features(self, pixel_values: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(images, K, (2 + LOOK_GRID^2) x width) each box's second look (the image cropped to a square around the
        box, at the encoder's input size; regions.py): the encoder's [CLS, mean patch] features, then its patches
        pooled over a LOOK_GRID x LOOK_GRID grid of the crop."""
        crops = crop_windows(pixel_values, look_windows(boxes), pixel_values.shape[-1])
        return self.crop_features(crops.flatten(0, 1)).reshape(boxes.shape[0], boxes.shape[1], -1)

    def crop_features(self, crops: torch.Tensor) -> torch.Tensor:
        """(crops, (2 + LOOK_GRID^2) x width): what a second look reads of each crop (`look_features`)."""
        patches, summary = self.encode_images(crops)
        cells = look_grid_boxes(patches.device).to(patches.dtype).expand(patches.shape[0], -1, -1)
        return torch.cat([summary, pool_boxes(patches, cells).flatten(1)], -1)

    def slot_looks(self, pixel_values: torch.Tensor, vision_patches: torch.Tensor) -> torch.Tensor | None:
        """The second looks of the boxes the region slots choose, or None when the slots take none."""
        regions = self.projector.regions
        if regions is None or not regions.looks:
            return None
        with torch.no_grad():
            boxes, _ = regions.chosen(vision_patches)
        return self.look_features(pixel_values, boxes)

    def get_image_features(self, pixel_values: torch.Tensor | None = None, vision_patches: torch.Tensor | None = None,
                           vision_summary: torch.Tensor | None = None, vision_looks: torch.Tensor | None = None
                           ) -> torch.Tensor:
        """(images, image_seq_len, LM width): the summary token (if configured), the patch tokens, then the region
        slots (if configured). From pixels, or from the encoder's outputs computed before (`encode_images` and
        `slot_looks`; the frozen-vision cache)."""
        if vision_patches is None:
            vision_patches, vision_summary = self.encode_images(pixel_values)
        cells = pixel_shuffle(vision_patches, self.config.pixel_shuffle)
        tokens = self.projector(cells, vision_summary if self.config.summary_token else None)
        if self.projector.regions is None or self.projector.regions.hidden:
            return tokens
        if vision_looks is None and pixel_values is not None:
            vision_looks = self.slot_looks(pixel_values, vision_patches)
        slots = self.projector.regions(vision_patches, self.get_input_embeddings(), vision_looks)
        return torch.cat([tokens, slots.to(tokens.dtype)], dim=1)

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        """Precomputed vision features, like pixels, belong to the prompt's forward only."""
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            inputs.pop("vision_patches", None)
            inputs.pop("vision_summary", None)
            inputs.pop("vision_looks", None)
        return inputs

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0, vision_patches=None,
                vision_summary=None, vision_looks=None, **kwargs):
        """`vision_patches` / `vision_summary` / `vision_looks`: `encode_images`' and `slot_looks`' outputs, in
        place of `pixel_values`."""
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        # Decoding steps carry no image tokens: the vision encoder only runs on the prompt.
        if (pixel_values is not None or vision_patches is not None) and input_ids is not None:
            placeholders = input_ids == self.config.image_token_id
            if placeholders.any():
                features = self.get_image_features(pixel_values, vision_patches, vision_summary,
                                                   vision_looks).to(inputs_embeds.dtype)
                if placeholders.sum() != features.shape[0] * features.shape[1]:
                    raise ValueError(f"{int(placeholders.sum())} image tokens in the text but {features.shape[0]} "
                                     f"images x {features.shape[1]} tokens; build inputs with this model's processor")
                inputs_embeds = inputs_embeds.masked_scatter(placeholders.unsqueeze(-1), features.reshape(-1, features.shape[-1]))
        # transformers renamed the cache argument `past_key_values` -> `cache` (5.2x); take either, pass the LM's own.
        past = past_key_values if past_key_values is not None else kwargs.pop("cache", None)
        kwargs.pop("cache", None)
        if past is not None:
            kwargs[_cache_keyword(self.language_model)] = past
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                                   labels=labels, use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)
