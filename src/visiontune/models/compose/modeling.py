"""A composed VLM: vision encoder -> pixel shuffle -> projector -> image tokens inside a causal LM.

Image features replace the `<image>` placeholder tokens' embeddings (as LLaVA/Idefics3 do), so training,
generation, LoRA and merging all go through the LM's own forward. A plain `PreTrainedModel` with
`GenerationMixin`: `save_pretrained`, `from_pretrained` and `generate` work as for any transformers model.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel

from .configuration import ComposedVLMConfig


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


class ModalityProjector(nn.Module):
    """Layer norm, then linear | MLP (GELU) | SwiGLU to the LM's width."""

    def __init__(self, config: ComposedVLMConfig):
        super().__init__()
        width_in = config.vision_config.hidden_size * config.pixel_shuffle ** 2
        width_out = config.text_config.hidden_size
        hidden = config.projector_hidden or width_in
        self.kind = config.projector
        self.norm = nn.LayerNorm(width_in)
        if self.kind == "linear":
            self.out = nn.Linear(width_in, width_out)
        elif self.kind == "mlp":
            self.up = nn.Linear(width_in, hidden)
            self.out = nn.Linear(hidden, width_out)
        else:
            self.gate = nn.Linear(width_in, hidden, bias=False)
            self.up = nn.Linear(width_in, hidden, bias=False)
            self.out = nn.Linear(hidden, width_out, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.norm(features)
        if self.kind == "linear":
            return self.out(x)
        if self.kind == "mlp":
            return self.out(nn.functional.gelu(self.up(x)))
        return self.out(nn.functional.silu(self.gate(x)) * self.up(x))


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

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(images, image_seq_len, LM width): patch tokens only (CLS/register tokens are dropped)."""
        parameter = next(self.vision_model.parameters())
        hidden = self.vision_model(pixel_values=pixel_values.to(parameter.dtype)).last_hidden_state
        patch = self.config.patch_size
        patches = (pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch)
        return self.projector(pixel_shuffle(hidden[:, -patches:], self.config.pixel_shuffle))

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0, **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        # Decoding steps carry no image tokens: the vision encoder only runs on the prompt.
        if pixel_values is not None and input_ids is not None:
            placeholders = input_ids == self.config.image_token_id
            if placeholders.any():
                features = self.get_image_features(pixel_values).to(inputs_embeds.dtype)
                if placeholders.sum() != features.shape[0] * features.shape[1]:
                    raise ValueError(f"{int(placeholders.sum())} image tokens in the text but {features.shape[0]} "
                                     f"images x {features.shape[1]} tokens; build inputs with this model's processor")
                inputs_embeds = inputs_embeds.masked_scatter(placeholders.unsqueeze(-1), features.reshape(-1, features.shape[-1]))
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                                   past_key_values=past_key_values, labels=labels, use_cache=use_cache,
                                   logits_to_keep=logits_to_keep, **kwargs)
