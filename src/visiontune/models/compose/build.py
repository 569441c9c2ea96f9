"""`visiontune compose`: a new VLM from a pretrained vision encoder + a causal LM + a fresh projector."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...zoo.prepare import resolve_model_reference
from ..vision_encoders import load_image_processor, load_vision_encoder
from .configuration import ComposedVLMConfig
from .processing import IMAGE_TOKEN, ComposedVLMProcessor
from .registration import register_composed_vlm


def load_language_model(reference: str):
    """(causal LM, tokenizer) from a hub id, a folder, or a .gguf file."""
    if reference.endswith(".gguf"):
        from ...zoo.gguf_lm import load_gguf_causal_lm

        return load_gguf_causal_lm(Path(reference))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(reference, dtype=torch.float32), AutoTokenizer.from_pretrained(reference)


def grid_position_start(side: int, text_scale: torch.Tensor, strength: float = 0.5):
    """Row and column embeddings (side, width) to start from: sines and cosines of the row (in the even
    dimensions) and of the column (in the odd ones) at geometric frequencies, as DETR's 2D position encoding,
    at `strength` times the text embeddings' per-dimension scale. Neighbouring rows start alike, far ones apart."""
    width = text_scale.numel()
    index = torch.arange(side, dtype=torch.float32)[:, None]
    frequencies = torch.pow(side * 4.0, -torch.arange(width // 4, dtype=torch.float32) / max(width // 4, 1))
    waves = torch.cat([torch.sin(index * frequencies * torch.pi / 2), torch.cos(index * frequencies * torch.pi / 2)], 1)
    rows, columns = torch.zeros(side, width), torch.zeros(side, width)
    rows[:, 0::2][:, : waves.shape[1]] = waves
    columns[:, 1::2][:, : waves.shape[1]] = waves
    return rows * text_scale * strength, columns * text_scale * strength


def compose(vision: str, lm: str, output: str | Path, projector: str = "swiglu", pixel_shuffle: int = 2,
            image_size: int = 224, projector_hidden: int | None = None, summary_token: bool = True,
            output_norm: bool = True, grid_positions: bool = True, seed: int = 0, log=print) -> Path:
    """Write a composed VLM (model + processor) to `output`; the projector is freshly initialised."""
    register_composed_vlm()
    from .modeling import ComposedVLMForConditionalGeneration

    vision_path, lm_path = resolve_model_reference(vision, log), resolve_model_reference(lm, log)
    vision_model, vision_config = load_vision_encoder(vision_path)
    language_model, tokenizer = load_language_model(lm_path)
    if tokenizer.chat_template is None:
        raise ValueError(f"{lm}: the tokenizer has no chat template; compose needs an instruct/chat LM")
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked; any id works
    if len(tokenizer) > language_model.get_input_embeddings().num_embeddings:
        # The image token's embedding is never read (image features replace it), so its init does not matter.
        language_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    config = ComposedVLMConfig(vision_config=vision_config, text_config=language_model.config, projector=projector,
                               projector_hidden=projector_hidden, pixel_shuffle=pixel_shuffle, image_size=image_size,
                               image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                               summary_token=summary_token, output_norm=output_norm, grid_positions=grid_positions)
    config.check()
    torch.manual_seed(seed)
    model = ComposedVLMForConditionalGeneration(config)
    model.vision_model.load_state_dict(vision_model.state_dict())
    model.language_model.load_state_dict(language_model.state_dict())
    text_scale = language_model.get_input_embeddings().weight.detach().float().pow(2).mean(0).sqrt()
    if model.projector.output_norm is not None:
        # Start image tokens at the scale of the text embeddings, dimension by dimension.
        model.projector.output_norm.weight.data.copy_(text_scale)
    if model.projector.row_positions is not None:
        rows, columns = grid_position_start(config.token_grid_side, text_scale)
        model.projector.row_positions.data.copy_(rows)
        model.projector.column_positions.data.copy_(columns)
    model.generation_config = language_model.generation_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = ComposedVLMProcessor(load_image_processor(vision_path, image_size), tokenizer,
                                     image_seq_len=config.image_seq_len)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    sizes = {part: sum(p.numel() for p in getattr(model, part).parameters())
             for part in ("vision_model", "projector", "language_model")}
    (output / "compose.json").write_text(json.dumps({"vision": vision, "lm": lm, "projector": projector,
                                                     "pixel_shuffle": pixel_shuffle, "image_size": image_size,
                                                     "summary_token": summary_token, "output_norm": output_norm,
                                                     "grid_positions": grid_positions,
                                                     "image_seq_len": config.image_seq_len, "parameters": sizes,
                                                     "seed": seed}, indent=2))
    log(f"compose: {vision} + {lm} + {projector} projector -> {output} ({config.image_seq_len} image tokens per "
        f"image; parameters: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()) + ")")
    return output
