"""The three ONNX graphs of an image-text-to-text model, in the layout transformers.js and the torch-free runtime
read: `vision_encoder` (pixels -> `image_features`, the rows that replace the image tokens' embeddings),
`embed_tokens` (`input_ids` -> `inputs_embeds`) and `decoder_model_merged` (`inputs_embeds`, `attention_mask`,
`position_ids`, `past_key_values.{i}.key/value` -> `logits`, `present.{i}.key/value`; an empty past on the
first step).

The decoder builds its own additive causal mask from the 2-D attention mask (past + new tokens), so the
exported graph holds no shape-specialised mask code, and runs the model's own forward with `inputs_embeds`.
"""

from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..models.families import FAMILIES, Family, family_for
from ..runtime.vlm import GRAPHS

OPSET = 17


class EmbedTokensGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.embed = model.get_input_embeddings()

    def forward(self, input_ids):
        return self.embed(input_ids)


class ComposedVisionGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.get_image_features(pixel_values)


class LlavaVisionGraph(nn.Module):
    """The vision tower's selected hidden layer(s) through the projector, written out: transformers' own
    `get_image_features` iterates over the images, which a trace would fix to the sample's image count."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        config, inner = self.model.config, self.model.model
        hidden = inner.vision_tower(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
        layers = config.vision_feature_layer
        selected = [hidden[i] for i in (layers if isinstance(layers, (list, tuple)) else [layers])]
        if config.vision_feature_select_strategy == "default":  # drop the CLS token
            selected = [h[:, 1:] for h in selected]
        return inner.multi_modal_projector(torch.cat(selected, dim=-1))


class Idefics3VisionGraph(nn.Module):
    """SmolVLM / Idefics3: (rows, tiles, 3, H, W) pixels + (rows, tiles, H, W) pixel mask -> the connector's
    output for every real tile (all-zero padding tiles dropped, as the model does), (tiles, tokens, width)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, pixel_attention_mask):
        inner = self.model.model
        channels, height, width = pixel_values.shape[2:]
        pixels = pixel_values.reshape(-1, channels, height, width)
        masks = pixel_attention_mask.reshape(-1, height, width).long()  # a bool input, as transformers.js feeds it
        real = (pixels != 0).flatten(1).any(1)
        pixels, masks = pixels[real], masks[real]
        patch = self.model.config.vision_config.patch_size
        patch_mask = masks.reshape(-1, height // patch, patch, width // patch, patch).sum(dim=(2, 4)) > 0
        hidden = inner.vision_model(pixel_values=pixels, patch_attention_mask=patch_mask).last_hidden_state
        return inner.connector(hidden)


def _idefics3_embeddings(module, pixel_values, patch_attention_mask):
    """Idefics3VisionEmbeddings.forward with `bucketize` (no ONNX operator) as a count of the boundaries at or
    below each coordinate, which is what `bucketize(right=True)` returns."""
    batch = pixel_values.shape[0]
    embeddings = module.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
    side = module.num_patches_per_side
    boundaries = torch.arange(1 / side, 1.0, 1 / side, device=pixel_values.device)
    rows_h = patch_attention_mask[:, :, 0].sum(dim=1)
    rows_w = patch_attention_mask[:, 0, :].sum(dim=1)
    h_indices = torch.cumsum(torch.ones_like(patch_attention_mask[0, :, 0], dtype=torch.float32), 0) - 1
    w_indices = torch.cumsum(torch.ones_like(patch_attention_mask[0, 0, :], dtype=torch.float32), 0) - 1
    fractional_h = torch.clamp(h_indices[None, :] * (1.0 / rows_h)[:, None], max=1.0 - 1e-6)
    fractional_w = torch.clamp(w_indices[None, :] * (1.0 / rows_w)[:, None], max=1.0 - 1e-6)
    bucket_h = (fractional_h[..., None] >= boundaries).sum(-1)
    bucket_w = (fractional_w[..., None] >= boundaries).sum(-1)
    positions = (bucket_h[:, :, None] * side + bucket_w[:, None, :]).reshape(batch, -1)
    positions = torch.where(patch_attention_mask.reshape(batch, -1), positions, torch.zeros_like(positions))
    return embeddings + module.position_embedding(positions)


def exportable_idefics3_embeddings(model):
    return _forward_replaced(model, lambda m: type(m).__name__ == "Idefics3VisionEmbeddings", _idefics3_embeddings)




class DecoderGraph(nn.Module):
    def __init__(self, model, layers: int):
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        new = inputs_embeds.shape[1]
        total = attention_mask.shape[1]
        # positions of the new tokens and of every key, counted from existing tensors (traced as dynamic shapes)
        key_positions = torch.cumsum(torch.ones_like(attention_mask[0]), 0) - 1
        query_positions = key_positions[total - new:]
        allowed = (key_positions[None, :] <= query_positions[:, None])[None] & attention_mask[:, None, :].bool()
        minimum = torch.finfo(inputs_embeds.dtype).min
        mask = torch.where(allowed, torch.zeros((), dtype=inputs_embeds.dtype),
                           torch.full((), minimum, dtype=inputs_embeds.dtype))[:, None]
        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.layers)],
                             config=self.model.config.get_text_config())
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def _rms_norm(module, x):  # the graphs are exported in fp32, so no casts
    out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + (module.eps or torch.finfo(x.dtype).eps))
    return out * module.weight if module.weight is not None else out


@contextlib.contextmanager
def _forward_replaced(model, chosen, forward):
    """Within the block, the modules `chosen(module)` picks run `forward(module, ...)` instead of their own."""
    modules = [m for m in model.modules() if chosen(m)]
    for module in modules:
        module.forward = types.MethodType(forward, module)
    try:
        yield
    finally:
        for module in modules:
            del module.forward


def decomposed_rms_norms(model):
    """`nn.RMSNorm` as plain arithmetic while exporting: opset 17 has no RMS-norm operator."""
    return _forward_replaced(model, lambda m: isinstance(m, nn.RMSNorm), _rms_norm)


def _idefics3_sample(pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of tiles from the sample: one with an all-zero padding tile and one with a partly padded tile,
    so the trace keeps the code that drops padding tiles and masks padded patches."""
    tiles = pixel_values.reshape(-1, *pixel_values.shape[-3:])[:2].clone()
    if tiles.shape[0] < 2:
        tiles = torch.cat([tiles, tiles])
    pixels = torch.zeros(2, 2, *tiles.shape[1:])
    pixels[0, 0], pixels[1, 0], pixels[1, 1] = tiles[0], tiles[1], tiles[0]
    mask = torch.ones(2, 2, *tiles.shape[-2:], dtype=torch.bool)
    mask[0, 1] = False
    height = tiles.shape[-2]
    mask[1, 1, height // 2:] = False  # the lower half of this tile is padding
    pixels[1, 1, :, height // 2:] = 0
    return pixels, mask


def text_shape(model) -> tuple[int, int, int]:
    """(layers, key/value heads, head size) of the language model."""
    config = model.config.get_text_config()
    heads = config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers, heads, head_dim


def export_graphs(model, family: Family, sample_pixels: torch.Tensor, folder: Path) -> dict[str, Path]:
    """Write the three graphs under `folder` (fp32); returns their paths by name."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.onnx" for name in GRAPHS}
    model = model.float().eval()
    with torch.no_grad(), decomposed_rms_norms(model), warnings.catch_warnings():
        # the tracer warns about every Python-level branch in transformers' code; the checks after export
        # (logits against PyTorch, generation in the tests) are what say the graphs are right
        warnings.simplefilter("ignore")
        vision = family.hook("onnx_vision")
        inputs, names, axes = vision.sample(sample_pixels)
        with exportable_idefics3_embeddings(model):
            torch.onnx.export(vision.graph(model), inputs, str(paths["vision_encoder"]), input_names=names,
                              output_names=["image_features"], opset_version=OPSET, dynamo=False, dynamic_axes=axes)
        ids = torch.tensor([[1, 2, 3]])
        torch.onnx.export(EmbedTokensGraph(model), (ids,), str(paths["embed_tokens"]), input_names=["input_ids"],
                          output_names=["inputs_embeds"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "inputs_embeds": {0: "batch", 1: "sequence"}})
        layers, heads, head_dim = text_shape(model)
        width = model.config.get_text_config().hidden_size
        batch, new, past_length = 2, 3, 4
        past = [torch.randn(batch, heads, past_length, head_dim) for _ in range(2 * layers)]
        inputs = (torch.randn(batch, new, width), torch.ones(batch, past_length + new, dtype=torch.long),
                  torch.arange(past_length, past_length + new)[None].repeat(batch, 1), *past)
        past_names = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
        present_names = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
        axes = {"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
                "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"},
                **{name: {0: "batch", 2: "past"} for name in past_names},
                **{name: {0: "batch", 2: "total"} for name in present_names}}
        torch.onnx.export(DecoderGraph(model, layers), inputs, str(paths["decoder_model_merged"]),
                          input_names=["inputs_embeds", "attention_mask", "position_ids", *past_names],
                          output_names=["logits", *present_names], opset_version=OPSET, dynamo=False,
                          dynamic_axes=axes)
    return paths


def exportable_family(model_type: str, model: str = "this model") -> Family:
    """The family (models/families.py) of a config's model_type, when it has an ONNX vision graph."""
    family = family_for(model_type)
    if family is None or family.onnx_vision is None:
        supported = ", ".join(sorted(f.name for f in FAMILIES if f.onnx_vision is not None))
        raise ValueError(f"{model}: ONNX export supports the {supported} families; this model is "
                         f"{family.name if family else (model_type or 'unknown')!r}")
    return family


def _pixels_sample(pixel_values: torch.Tensor) -> tuple:
    return (pixel_values,), ["pixel_values"], {"pixel_values": {0: "images"}, "image_features": {0: "images"}}


def _tiles_sample(pixel_values: torch.Tensor) -> tuple:
    return (_idefics3_sample(pixel_values), ["pixel_values", "pixel_attention_mask"],
            {"pixel_values": {0: "batch", 1: "tiles", 3: "height", 4: "width"},
             "pixel_attention_mask": {0: "batch", 1: "tiles", 2: "height", 3: "width"},
             "image_features": {0: "images"}})


def _tile_tokens(processor, image_token: str) -> dict:
    """What the runtime needs to write SmolVLM's tile markers around the image tokens."""
    return {"tile_tokens": {"image_token": image_token, "image_seq_len": processor.image_seq_len,
                            "fake_image_token": processor.fake_image_token,
                            "global_image_tag": processor.global_image_tag}}


@dataclass(frozen=True)
class OnnxVision:
    """A family's `onnx_vision` hook: its vision graph, the sample inputs (names, dynamic axes) it is traced with,
    and what else the runtime needs in export.json."""

    graph: type[nn.Module]
    sample: Callable  # sample pixels -> (inputs, input names, dynamic axes)
    export_info: Callable = field(default=lambda processor, image_token: {})


COMPOSED_VISION = OnnxVision(ComposedVisionGraph, _pixels_sample)
LLAVA_VISION = OnnxVision(LlavaVisionGraph, _pixels_sample)
IDEFICS3_VISION = OnnxVision(Idefics3VisionGraph, _tiles_sample, _tile_tokens)
