"""Score mode for classification: the model's probability of each class name as its answer.

For a batch of images: each prompt (image included) runs once, left-padded, together with the answer
tokens every class shares (e.g. a reasoning the model generated, or a common first sub-word), keeping the
key/value cache. The cache is then repeated for a chunk of classes and every (image, class) pair's
remaining answer tokens run in one batch. A generated reasoning differs per image, so those score one
image at a time.
A class's log-likelihood is the sum of log p(token) over its answer as the chat template renders it, up to
and including the end-of-turn token (so "cat" and "cat food" are told apart). Softmax over classes gives
the probabilities (divided first by the run's fitted temperature, see `calibration.py`);
`length_normalise` uses the mean per-token log-probability instead of the sum.
"""

from __future__ import annotations

import copy
import re

import torch

from ...models.prompt_encoding import VLMCollator, answer_suffix
from ...models.vlm import end_token_ids
from .answer_parser import ANSWER_MARKER

ROWS_PER_PASS = 64  # (image, class) rows per forward pass; bounds the repeated cache's and logits' memory


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
        shared = 0  # tokens all answers start with; each class keeps at least one token of its own
        while all(len(a) > shared + 1 for a in answers) and len({a[shared] for a in answers}) == 1:
            shared += 1
        device = next(self.model.parameters()).device
        batch = self.collator.encode_prompts(images, [self.task.messages() for _ in images])  # left-padded
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        prefix = torch.tensor([answers[0][:shared]] * len(images), dtype=batch["input_ids"].dtype, device=device)
        batch["input_ids"] = torch.cat([batch["input_ids"], prefix], dim=1)
        batch["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(prefix)], dim=1)
        first = self.model(**batch, use_cache=True, logits_to_keep=shared + 1)
        first_logp = torch.log_softmax(first.logits.float(), dim=-1)  # (images, shared + 1, vocab)
        shared_logp = first_logp.new_zeros(len(images))
        for i in range(shared):
            shared_logp = shared_logp + first_logp[:, i, answers[0][i]]
        per_pass = max(1, ROWS_PER_PASS // len(images))  # classes per forward pass; bounds cache and logits memory
        totals = [self._tails_logp(first.past_key_values, first_logp[:, shared], batch["attention_mask"],
                                   [a[shared:] for a in answers[start:start + per_pass]])
                  for start in range(0, len(answers), per_pass)]
        scores = shared_logp[:, None] + torch.cat(totals, dim=1)
        if self.length_normalise:
            scores = scores / torch.tensor([len(a) for a in answers], dtype=scores.dtype, device=scores.device)
        return scores.cpu()

    def _tails_logp(self, cache, next_logp, context_mask, tails: list[list[int]]) -> torch.Tensor:
        """Summed log-probs of each tail after each image's context: (images, len(tails))."""
        images, classes, width = next_logp.shape[0], len(tails), max(len(t) for t in tails)
        device = next_logp.device
        ids = torch.full((classes, width), self.collator.pad_id, dtype=torch.long, device=device)
        tail_mask = torch.zeros((classes, width), dtype=torch.long, device=device)
        for row, tail in enumerate(tails):
            ids[row, : len(tail)] = torch.tensor(tail, device=device)
            tail_mask[row, : len(tail)] = 1
        totals = next_logp[:, ids[:, 0]]  # (images, classes)
        if width > 1:
            # rows ordered image-major: (image 0, class 0), (image 0, class 1), …
            repeated = copy.deepcopy(cache)
            repeated.batch_repeat_interleave(classes)
            mask = torch.cat([context_mask.repeat_interleave(classes, dim=0), tail_mask.repeat(images, 1)], dim=1)
            out = self.model(input_ids=ids.repeat(images, 1), attention_mask=mask, past_key_values=repeated,
                             use_cache=True)
            logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
            token_logp = logp.gather(-1, ids.repeat(images, 1)[:, 1:, None])[..., 0]
            valid = tail_mask.repeat(images, 1)[:, 1:].bool()
            totals = totals + (token_logp * valid).sum(dim=1).view(images, classes)
        return totals

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
