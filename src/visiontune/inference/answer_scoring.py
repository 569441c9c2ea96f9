"""Score answers: the model's summed log-probability of each candidate answer after each prompt.

For a batch of images: each prompt (image included) runs once, left-padded, keeping the key/value cache;
then every node of the answers' token trie (`answer_trie.py`: shared prefixes once) runs in one pass over
that cache, each node seeing the prompt and its own ancestors only. An answer's log-likelihood is the sum
of log p(token) over its tokens (so "cat" and "cat food" are told apart when each ends with its end token).
"""

from __future__ import annotations

import torch

from .answer_trie import AnswerTrie


def cache_keyword(model) -> str:
    """The name under which the model (under LoRA, its base) takes a KV cache: `cache` from transformers 5.2x
    on, `past_key_values` before (passing the old name there only warns)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


POSITIONS_PER_PASS = 2048  # (image, trie node) logits rows per forward pass: ~400 MB of fp32 at a 49k vocabulary


def score_answers(model, encode, images: list, messages: list[list[dict]], answers: list[list[int]]) -> torch.Tensor:
    """(images, answers) summed answer log-probabilities; `encode(images, messages)` gives the left-padded
    prompt batch. Images run in passes small enough to bound the logits' memory."""
    trie = AnswerTrie(answers)
    per_pass = max(1, POSITIONS_PER_PASS // (len(trie.tokens) + 1))
    with torch.inference_mode():
        return torch.cat([score_prompt_batch(model, encode(images[start:start + per_pass],
                                                           messages[start:start + per_pass]), trie)
                          for start in range(0, len(images), per_pass)])


def score_prompt_batch(model, batch: dict, trie: AnswerTrie) -> torch.Tensor:
    """(rows, answers) for one encoded prompt batch: the prompts, then every trie node in one pass."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    prompt = model(**batch, use_cache=True, logits_to_keep=1)
    rows, context = batch["input_ids"].shape
    logits = [prompt.logits[:, -1:]]  # predicts every answer's first token
    if trie.tokens:
        nodes = len(trie.tokens)
        ids = torch.tensor(trie.tokens, device=device).expand(rows, nodes)
        depths = torch.tensor(trie.depths, device=device)
        positions = first_answer_position(model, batch["attention_mask"]) + depths[None, :]
        visible = torch.cat([batch["attention_mask"].bool()[:, None, :].expand(rows, nodes, context),
                             trie.ancestry(device)[None].expand(rows, nodes, nodes)], dim=2)
        mask = torch.zeros(visible.shape, dtype=model.get_input_embeddings().weight.dtype, device=device)
        mask = mask.masked_fill(~visible, torch.finfo(mask.dtype).min)[:, None]  # additive (rows, 1, q, kv)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                    **{cache_keyword(model): prompt.past_key_values})
        logits.append(out.logits)
    logits = torch.cat(logits, dim=1).float()  # (rows, 1 + nodes, vocab)
    where, tokens, valid = trie.paths(device)  # (answers, longest answer)
    picked = logits[:, where, tokens] - torch.logsumexp(logits, dim=-1)[:, where]
    return (picked * valid).sum(dim=-1).cpu()


def first_answer_position(model, attention_mask: torch.Tensor) -> torch.Tensor:
    """(rows, 1): the position of the token after each prompt. A plain forward numbers the left-padded prompt
    0..length-1, pads included; models with multimodal rotary positions (Qwen2-VL's M-RoPE) number the
    real tokens and keep how far their positions run ahead of that count (`rope_deltas`)."""
    deltas = next((m.rope_deltas for m in model.modules() if getattr(m, "rope_deltas", None) is not None), None)
    rows, length = attention_mask.shape
    if deltas is None:
        return torch.full((rows, 1), length, dtype=torch.long, device=attention_mask.device)
    return attention_mask.sum(dim=1, keepdim=True) + deltas.to(attention_mask.device).view(-1, 1)
