"""Tiny, randomly initialised models of real VLM families, saved like a Hub checkpoint.

`build_tiny_model("smolvlm", out)` writes a folder that loads through exactly the same
`AutoProcessor` / `AutoModelForImageTextToText.from_pretrained` path as a hub id, so every code path
(processing, training, generation, merging) can be exercised offline in seconds. The configurations
keep each family's real structure (SigLIP-style encoder + pixel-shuffle connector + Llama for
SmolVLM/Idefics3, the Qwen2-VL vision transformer with patch merger and M-RoPE, CLIP + projector +
Llama for LLaVA) at toy sizes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GenerationConfig, PreTrainedTokenizerFast

from .families import FAMILIES, family_named
from .tiny_tokenizer import build_tiny_tokenizer

FULL_SIZE = "smolvlm-256m-architecture"  # SmolVLM-256M's shapes with random weights, for speed benchmarks

SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% else %}{{ message['role'].upper() + ': ' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% else %}{{ ' ' }}{% endif %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# A wider init than the usual 0.02 lets a frozen random output head give confident logits, so LoRA on
# a tiny model can overfit a handful of examples (real checkpoints have trained heads).
_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             initializer_range=0.2)


def _fast_tokenizer(special_tokens: list[str], **roles: str) -> PreTrainedTokenizerFast:
    backend = build_tiny_tokenizer(special_tokens)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **roles)


# SmolVLM-256M-Instruct's architecture (SigLIP-B/16 at 512 px, pixel shuffle 4, SmolLM2-135M), for speed and
# memory benchmarks on machines without the Hub: same shapes and FLOPs, random weights, a toy tokenizer.
SMOLVLM_256M = dict(
    tile=512, scale_factor=4, image_seq_len=64, longest_edge=1536,
    vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16),
    text=dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
              num_key_value_heads=3, vocab_size=49280, max_position_embeddings=8192, initializer_range=0.02,
              rope_parameters={"rope_type": "default", "rope_theta": 100000.0}),
)


def _smolvlm(seed: int, sizes: dict | None = None, tokenizer_folder: str | Path | None = None):
    """`tokenizer_folder`: a real tokenizer (SmolLM2's, which SmolVLM's extends) with SmolVLM's image tokens
    added, instead of the toy one; tools that check the tokenizer (llama.cpp's converter) then take it."""
    from transformers import (AutoTokenizer, Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor,
                              Idefics3Processor)

    row_col = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    image_tokens = ["<end_of_utterance>", "<image>", "<fake_token_around_image>", "<global-img>"]
    if tokenizer_folder is None:
        tokenizer = _fast_tokenizer(["<|endoftext|>", "<|im_start|>"] + image_tokens + row_col,
                                    bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|endoftext|>")
    else:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
        tokenizer.add_special_tokens({"additional_special_tokens": image_tokens + row_col})
        tokenizer.eos_token = "<end_of_utterance>"
    # tiny: one tile of 64 px, 16 px patches, pixel shuffle 2 -> 4 image tokens per tile
    sizes = sizes or dict(tile=64, scale_factor=2, image_seq_len=4, longest_edge=128,
                          vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                      patch_size=16),
                          text=dict(vocab_size=len(tokenizer), max_position_embeddings=2048, **_TEXT))
    tile = sizes["tile"]
    config = Idefics3Config(
        vision_config=dict(image_size=tile, **sizes["vision"]),
        text_config=dict(model_type="llama", pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **sizes["text"]),
        scale_factor=sizes["scale_factor"],
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    image_processor = Idefics3ImageProcessor(size={"longest_edge": sizes["longest_edge"]},
                                             max_image_size={"longest_edge": tile}, do_image_splitting=True)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=sizes["image_seq_len"],
                                  chat_template=SMOLVLM_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    return Idefics3ForConditionalGeneration(config), processor


def _qwen2_vl(seed: int):
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        # transformers 5.x constructs Qwen2VLProcessor only with its video processor, which needs torchvision.
        raise RuntimeError("a Qwen2-VL processor needs torchvision in transformers 5.x; install a torchvision that "
                           "matches your torch (pip install torchvision==<matching version>) and retry")
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>"]
    tokenizer = _fast_tokenizer(specials, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        vision_config=dict(depth=2, embed_dim=32, num_heads=2, mlp_ratio=2, hidden_size=_TEXT["hidden_size"],
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None, **_TEXT),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    # 28 px per merged token; up to 4x4 merged tokens per image keeps sequences short.
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 chat_template=QWEN2_VL_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    return Qwen2VLForConditionalGeneration(config), processor


def _llava(seed: int):
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    tokenizer = _fast_tokenizer(specials, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    size = 32
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=size, patch_size=8, projection_dim=32),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), max_position_embeddings=2048,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **_TEXT),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config), processor


CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_composed(output_dir: str | Path, seed: int = 0, projector: str = "swiglu", image_size: int = 32) -> Path:
    """A tiny DINOv2 + tiny Llama chat LM written as two folders, then composed exactly as real ones are."""
    from transformers import Dinov2Config, Dinov2Model, LlamaConfig, LlamaForCausalLM

    from .compose.build import compose

    output_dir = Path(output_dir)
    torch.manual_seed(seed)
    vision = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                      patch_size=8, image_size=image_size))
    vision.save_pretrained(output_dir / "parts" / "vision")
    tokenizer = _fast_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos_token="<|im_end|>",
                                pad_token="<|endoftext|>", bos_token="<|im_start|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048,
                                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True, **_TEXT))
    lm.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                            do_sample=False)
    lm.save_pretrained(output_dir / "parts" / "lm")
    tokenizer.save_pretrained(output_dir / "parts" / "lm")
    return compose(str(output_dir / "parts" / "vision"), str(output_dir / "parts" / "lm"), output_dir,
                   projector=projector, pixel_shuffle=2, image_size=image_size, seed=seed, log=lambda *_: None)


def tiny_names() -> list[str]:
    """What `tiny-model --family` takes: each family with a tiny builder (its name and aliases), and FULL_SIZE."""
    return [name for family in FAMILIES if family.tiny for name in (family.name, *family.aliases)] + [FULL_SIZE]


def build_tiny_model(family: str, output_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random model + processor of `family` (a family's name or alias, models/families.py; its
    `tiny` hook) to `output_dir`; return the folder."""
    if family == FULL_SIZE:
        return _save(*_smolvlm(seed, SMOLVLM_256M), output_dir)
    entry = family_named(family)
    if entry is None or entry.tiny is None:
        raise ValueError(f"unknown tiny-model family {family!r}; choose one of {', '.join(tiny_names())}")
    return entry.hook("tiny")(output_dir, seed)


def build_smolvlm(output_dir: str | Path, seed: int = 0, tokenizer_folder: str | Path | None = None) -> Path:
    return _save(*_smolvlm(seed, tokenizer_folder=tokenizer_folder), output_dir)


def build_qwen2_vl(output_dir: str | Path, seed: int = 0) -> Path:
    return _save(*_qwen2_vl(seed), output_dir)


def build_llava(output_dir: str | Path, seed: int = 0) -> Path:
    return _save(*_llava(seed), output_dir)


def _save(model, processor, output_dir: str | Path) -> Path:
    tokenizer = processor.tokenizer
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, do_sample=False,
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
