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

import re

import torch

from ...models.prompt_encoding import VLMCollator, answer_suffix
from ...models.vlm import end_token_ids
from .answer_parser import ANSWER_MARKER
from .answer_trie import AnswerTrie

POSITIONS_PER_PASS = 2048  # (image, trie node) logits rows per forward pass: ~400 MB of fp32 at a 49k vocabulary


def reasoning_of(text: str) -> str:
    """The rationale in a generated "Reasoning: … Answer: …" reply (everything before the last Answer:)."""
    markers = list(ANSWER_MARKER.finditer(text))
    body = text[: markers[-1].start()] if markers else text
    return re.sub(r"^\s*reasoning\s*[:：]\s*", "", body, flags=re.IGNORECASE).strip()


class ClassScorer:
    def __init__(self, model, processor, task, length_normalise: bool = False):
        self.model, self.processor, self.task = model, processor, task
        self.tokenizer = processor.tokenizer
        self.collator = VLMCollator(processor, with_labels=False)
        self.length_normalise = length_normalise
        self.eos = end_token_ids(model, self.tokenizer)
        self._plain_answers: list[list[int]] | None = None

    def answer_tokens(self, reasoning: str | None = None) -> list[list[int]]:
        """Each class's answer token ids, up to and including the first end-of-turn token."""
        if reasoning is None and self._plain_answers is not None:
            return self._plain_answers
        messages = self.task.messages()
        rows = []
        for name in self.task.classes:
            text = answer_suffix(self.processor, messages, self.task.target_text(name, reasoning))
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            end = next((i for i, t in enumerate(ids) if t in self.eos), len(ids) - 1)
            rows.append(ids[: end + 1])
        if len({tuple(r) for r in rows}) < len(rows):
            raise ValueError("two classes tokenize to the same answer; class names must differ as text")
        if reasoning is None:  # the same for every image: tokenize once
            self._plain_answers = rows
        return rows

    @torch.inference_mode()
    def log_likelihoods(self, image, reasoning: str | None = None) -> torch.Tensor:
        """Per-class summed log-probability of the answer tokens given the image and prompt; shape (classes,)."""
        return self._score_batch([image], self.answer_tokens(reasoning))[0]

    @torch.inference_mode()
    def batch_log_likelihoods(self, images: list) -> torch.Tensor:
        """`log_likelihoods` for several images at once (no reasoning); shape (images, classes)."""
        return self._score_batch(images, self.answer_tokens(None))

    def _score_batch(self, images: list, answers: list[list[int]]) -> torch.Tensor:
        trie = AnswerTrie(answers)
        per_pass = max(1, POSITIONS_PER_PASS // (len(trie.tokens) + 1))  # bounds the logits' memory
        scores = torch.cat([self._score_images(images[start:start + per_pass], trie)
                            for start in range(0, len(images), per_pass)])
        if self.length_normalise:
            scores = scores / torch.tensor([len(a) for a in answers], dtype=scores.dtype)
        return scores

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

    def result(self, image, text: str | None = None, top_k: int = 5, scores: torch.Tensor | None = None) -> dict:
        """Label, confidence, top-k and the full probability table for one image (`scores`: precomputed)."""
        reasoning = reasoning_of(text) if self.task.reasoning and text is not None else None
        if scores is None:
            scores = self.log_likelihoods(image, reasoning)
        probabilities = torch.softmax(scores / self.task.temperature, dim=0).tolist()
        order = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])
        classes = self.task.classes
        label = classes[order[0]]
        return {"label": label, "confidence": probabilities[order[0]],
                "top_k": [{"label": classes[i], "probability": probabilities[i]} for i in order[:top_k]],
                "probabilities": dict(zip(classes, probabilities)),
                "log_likelihoods": dict(zip(classes, scores.tolist())),
                "text": text if text is not None else self.task.target_text(label, reasoning)}

    def results(self, images: list, texts: list[str | None], top_k: int = 5) -> list[dict]:
        """`result` for a batch: one batched pass for all images unless each has its own generated reasoning."""
        if self.task.reasoning:
            return [self.result(image, text, top_k) for image, text in zip(images, texts)]
        scores = self.batch_log_likelihoods(images)
        return [self.result(image, text, top_k, row) for image, text, row in zip(images, texts, scores)]
