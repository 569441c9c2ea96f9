"""A causal LM shipped as GGUF -> a plain transformers folder (fp32 safetensors + tokenizer).

transformers reads GGUF (with the `gguf` package) and dequantizes every tensor on load, which takes tens
of seconds; converting once into the cache makes every later load a normal `from_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

import torch


def load_gguf_causal_lm(gguf_path: Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) read straight from a .gguf file."""
    try:
        import gguf  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f"{gguf_path}: reading GGUF needs the gguf package: pip install gguf") from error
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    # The loaded model is flagged as GGUF-quantized and refuses save_pretrained; its tensors are already
    # dequantized, so move them into a plain model of the same config.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"{gguf_path}: GGUF tensors do not fill the model (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    model.generation_config = quantized.generation_config
    return model.eval(), tokenizer


def convert_gguf_causal_lm(gguf_path: Path, output: Path) -> Path:
    model, tokenizer = load_gguf_causal_lm(gguf_path)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output
