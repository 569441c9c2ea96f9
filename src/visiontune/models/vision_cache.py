"""What each VLM family's frozen vision part outputs per image, and how its model takes that output back in
place of pixels: the adapter the frozen-vision feature cache (`training/feature_cache.py`) runs on.

An adapter is exact only when nothing it replaces trains or varies: the vision encoder (and the connector,
when the cached output is taken after it) must be frozen and free of active dropout. `vision_adapter` says
why not when it is not, and training then runs uncached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .families import family_for

IMAGE_KEYS = "image_keys"  # the batch entry with one key per pixel unit (see `pixel_unit_keys`)


@dataclass(frozen=True)
class VisionAdapter:
    pixel_inputs: tuple[str, ...]  # the batch entries it replaces (their dim 0 is one unit: an image or a row)
    encode: Callable  # (base model, {pixel input: tensor}) -> one {name: tensor} per unit along dim 0
    to_kwargs: Callable  # (list of per-unit {name: tensor}) -> keyword arguments of the model's forward
    in_generation: bool = False  # generate() passes them through to the prompt's forward
    # What else the outputs depend on, as a string that changes with it (None: nothing): part of each entry's key.
    stamp: Callable | None = None


def pixel_unit_keys(pixel_values: torch.Tensor) -> list[str]:
    """One hash per unit along dim 0 of the pixels; all-zero padding tiles (Idefics3 rows) do not count."""
    keys = []
    for unit in pixel_values:
        if unit.dim() >= 4:  # (tiles, channels, height, width): drop padding tiles
            unit = unit[unit.flatten(1).ne(0).any(1)]
        keys.append(hashlib.blake2b(unit.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest())
    return keys


def _base(model):
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(model, "module", model)


def _submodule(model, path: str):
    for part in path.split("."):
        model = getattr(model, part, None)
        if model is None:
            return None
    return model


def _why_not_exact(modules: list[nn.Module], inference: bool) -> str | None:
    """Training: the part must be frozen and free of dropout. Inference: nothing trains, and dropout only
    matters in train mode."""
    for module in modules:
        if not inference and any(p.requires_grad for p in module.parameters()):
            return "it trains"
        if any(isinstance(m, nn.Dropout) and m.p > 0 and (m.training or not inference) for m in module.modules()):
            return "it has dropout"
    return None


def composed_outputs(base, pixel_values: torch.Tensor, looks: bool = True) -> dict[str, torch.Tensor]:
    """A composed VLM's vision outputs for a batch of images: `vision_patches`, `vision_summary`, and with
    `looks`, `vision_looks` when its region slots take second looks."""
    patches, summary = base.encode_images(pixel_values)
    outputs = {"vision_patches": patches, "vision_summary": summary}
    taken = base.slot_looks(pixel_values, patches) if looks else None
    if taken is not None:
        outputs["vision_looks"] = taken
    return outputs


def _composed_encode(base, pixels: dict) -> list[dict]:
    outputs = composed_outputs(base, pixels["pixel_values"])
    return [dict(zip(outputs, values)) for values in zip(*outputs.values())]


def _composed_kwargs(entries: list[dict]) -> dict:
    names = ["vision_patches", "vision_summary"] + (["vision_looks"] if "vision_looks" in entries[0] else [])
    return {name: torch.stack([e[name] for e in entries]) for name in names}


def _composed_stamp(base) -> str:
    """The region slots' second looks crop the boxes their box and refine heads choose: entries are keyed by
    those heads' weights, so looks taken before the heads were fitted (or loaded) are never reused."""
    regions = base.projector.regions
    if regions is None or not regions.looks:
        return ""
    digest = hashlib.blake2b(digest_size=8)
    for module in (regions.box_head, regions.refine_head):
        for tensor in module.state_dict().values():
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "-" + digest.hexdigest()


def _real_tiles(pixel_values: torch.Tensor) -> list[int]:
    """Tiles per row that are not all-zero padding (as Idefics3 itself tells them apart)."""
    return pixel_values.flatten(2).ne(0).any(-1).sum(1).tolist()


def _idefics3_encode(base, pixels: dict) -> list[dict]:
    """The connector's output per row, (tiles x tokens, LM width): what the model scatters into the text."""
    out = base.model.get_image_features(pixels["pixel_values"], pixels.get("pixel_attention_mask"))
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, (list, tuple)):  # transformers >= 5.20: one tensor per row already
        rows = [row.reshape(-1, row.shape[-1]) for row in pooled]
    else:  # earlier 5.x: (real tiles of the batch, tokens, width)
        tensor = out if torch.is_tensor(out) else out.last_hidden_state
        rows = [chunk.reshape(-1, chunk.shape[-1]) for chunk in tensor.split(_real_tiles(pixels["pixel_values"]))]
    return [{"image_features": row} for row in rows]


def _idefics3_kwargs_for(model) -> Callable:
    """transformers renamed the argument that takes them (image_hidden_states -> mm_encoder_outputs)."""
    import inspect

    names = inspect.signature(_base(model).forward).parameters

    def to_kwargs(entries: list[dict]) -> dict:
        features = torch.cat([e["image_features"] for e in entries])
        if "mm_encoder_outputs" in names:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=[features])}}
        return {"image_hidden_states": features}

    return to_kwargs


# The families' `feature_cache` hooks (models/families.py): (the parts that must be frozen, model -> adapter).
# Composed VLMs: the encoder's outputs, before the projector (which usually trains).
COMPOSED_CACHE = (("vision",), lambda model: VisionAdapter(("pixel_values",), _composed_encode, _composed_kwargs,
                                                           in_generation=True, stamp=_composed_stamp))
# SmolVLM / Idefics3: the model takes features after its connector, so both must be frozen.
IDEFICS3_CACHE = (("vision", "connector"), lambda model: VisionAdapter(
    ("pixel_values", "pixel_attention_mask"), _idefics3_encode, _idefics3_kwargs_for(model)))


def vision_adapter(model, inference: bool = False) -> tuple[VisionAdapter | None, str]:
    """(the model family's adapter, "") when caching is exact for this model as it is set up to train (or, with
    `inference`, to predict), else (None, why not)."""
    base = _base(model)
    family = family_for(getattr(base.config, "model_type", ""))
    cache = family.hook("feature_cache") if family is not None else None
    if cache is None:
        return None, f"the {family.name if family else 'unknown'} family cannot take precomputed vision features yet"
    parts, make_adapter = cache
    paths = [path for part in parts for path in getattr(family, part)]
    modules = [module for module in (_submodule(base, path) for path in paths) if module is not None]
    problem = _why_not_exact(modules, inference)
    if problem:
        return None, f"the {' and '.join(parts)} part {problem}, so its outputs change during training"
    return make_adapter(base), ""


def vision_fingerprint(model) -> str:
    """A hash of the frozen vision weights: features of another encoder (or other weights) never match."""
    base = _base(model)
    family = family_for(getattr(base.config, "model_type", ""))
    digest = hashlib.blake2b(digest_size=12)
    digest.update(str(getattr(base.config, "model_type", "")).encode())
    for path in family.vision if family else ():
        module = _submodule(base, path)
        for name, tensor in sorted((module.state_dict() if module is not None else {}).items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
