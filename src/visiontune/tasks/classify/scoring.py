"""Score mode for classification: the model's probability of each class name as its answer.

For a batch of images: each prompt (image included) runs once, left-padded, keeping the key/value cache;
then every node of the classes' answer-token trie (`answer_trie.py`: shared prefixes once) runs in one
pass over that cache, each node seeing the prompt and its own ancestors only. A generated reasoning
differs per image, so those score one image at a time.
A class's log-likelihood is the sum of log p(token) over its answer as the chat template renders it, up to
and including the end-of-turn token (so "cat" and "cat food" are told apart). Softmax over classes gives
the probabilities (divided first by the run's fitted temperature, see `calibration.py`);
`length_normalise` uses the mean per-token log-probability instead of the sum.
"""

from __future__ import annotations

import torch

from ...models.prompt_encoding import VLMCollator, answer_suffix
from ...models.vlm import end_token_ids
from .answer_trie import AnswerTrie
from .ranking import AnswerRanking

POSITIONS_PER_PASS = 2048  # (image, trie node) logits rows per forward pass: ~400 MB of fp32 at a 49k vocabulary


class ClassScorer(AnswerRanking):
    def __init__(self, model, processor, task, length_normalise: bool = False):
        super().__init__(task, end_token_ids(model, processor.tokenizer), length_normalise)
        self.model, self.processor = model, processor
        self.collator = VLMCollator(processor, with_labels=False)

    def answer_text(self, messages: list[dict], target: str) -> str:
        return answer_suffix(self.processor, messages, target)

    def tokenize(self, text: str) -> list[int]:
        return self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]

    def log_likelihoods(self, image, reasoning: str | None = None) -> torch.Tensor:
        """Per-class summed log-probability of the answer tokens given the image and prompt; shape (classes,)."""
        return torch.tensor(self.scores([image], reasoning)[0])

    def batch_log_likelihoods(self, images: list) -> torch.Tensor:
        """`log_likelihoods` for several images at once (no reasoning); shape (images, classes)."""
        return torch.tensor(self.scores(images))

    def _score_batch(self, images: list, answers: list[list[int]]) -> list[list[float]]:
        trie = AnswerTrie(answers)
        per_pass = max(1, POSITIONS_PER_PASS // (len(trie.tokens) + 1))  # bounds the logits' memory
        with torch.inference_mode():
            return torch.cat([self._score_images(images[start:start + per_pass], trie)
                              for start in range(0, len(images), per_pass)]).tolist()

    def _score_images(self, images: list, trie: AnswerTrie) -> torch.Tensor:
        """(images, classes) summed answer log-probabilities: the prompts, then every trie node in one pass."""
        device = next(self.model.parameters()).device
        batch = self.collator.encode_prompts(images, [self.task.messages() for _ in images])  # left-padded
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        prompt = self.model(**batch, use_cache=True, logits_to_keep=1)
        rows, context = batch["input_ids"].shape
        logits = [prompt.logits[:, -1:]]  # predicts every answer's first token
        if trie.tokens:
            nodes = len(trie.tokens)
            ids = torch.tensor(trie.tokens, device=device).expand(rows, nodes)
            depths = torch.tensor(trie.depths, device=device)
            positions = self._first_answer_position(batch["attention_mask"]) + depths[None, :]
            visible = torch.cat([batch["attention_mask"].bool()[:, None, :].expand(rows, nodes, context),
                                 trie.ancestry(device)[None].expand(rows, nodes, nodes)], dim=2)
            mask = torch.zeros(visible.shape, dtype=self.model.get_input_embeddings().weight.dtype, device=device)
            mask = mask.masked_fill(~visible, torch.finfo(mask.dtype).min)[:, None]  # additive (rows, 1, q, kv)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                             past_key_values=prompt.past_key_values, use_cache=False)
            logits.append(out.logits)
        logits = torch.cat(logits, dim=1).float()  # (rows, 1 + nodes, vocab)
        where, tokens, valid = trie.paths(device)  # (classes, longest answer)
        picked = logits[:, where, tokens] - torch.logsumexp(logits, dim=-1)[:, where]
        return (picked * valid).sum(dim=-1).cpu()

    def _first_answer_position(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(rows, 1): the position of the token after each prompt. A plain forward numbers the left-padded prompt
        0..length-1, pads included; models with multimodal rotary positions (Qwen2-VL's M-RoPE) number the
        real tokens and keep how far their positions run ahead of that count (`rope_deltas`)."""
        deltas = next((m.rope_deltas for m in self.model.modules()
                       if getattr(m, "rope_deltas", None) is not None), None)
        rows, length = attention_mask.shape
        if deltas is None:
            return torch.full((rows, 1), length, dtype=torch.long, device=attention_mask.device)
        return attention_mask.sum(dim=1, keepdim=True) + deltas.to(attention_mask.device).view(-1, 1)
