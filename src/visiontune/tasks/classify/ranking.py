"""What every score-mode backend shares, torch-free: the classes' answer tokens, and from per-class
log-likelihoods the label, confidence, top-k and probability table (softmax over classes after dividing by
the run's fitted temperature). A backend (`scoring.ClassScorer` for PyTorch, the ONNX runtime's scorer)
implements `_score_batch(images, answers)` and `answer_text(messages, target)`."""

from __future__ import annotations

import math
import re

from .answer_parser import ANSWER_MARKER


def reasoning_of(text: str) -> str:
    """The rationale in a generated "Reasoning: … Answer: …" reply (everything before the last Answer:)."""
    markers = list(ANSWER_MARKER.finditer(text))
    body = text[: markers[-1].start()] if markers else text
    return re.sub(r"^\s*reasoning\s*[:：]\s*", "", body, flags=re.IGNORECASE).strip()


class AnswerRanking:
    def __init__(self, task, end_ids: set[int], length_normalise: bool = False):
        self.task, self.eos, self.length_normalise = task, end_ids, length_normalise
        self._plain_answers: list[list[int]] | None = None

    def answer_text(self, messages: list[dict], target: str) -> str:
        """The text the chat template puts after the generation prompt for this answer."""
        raise NotImplementedError

    def tokenize(self, text: str) -> list[int]:
        raise NotImplementedError

    def _score_batch(self, images: list, answers: list[list[int]]) -> list[list[float]]:
        """(images, classes) summed answer log-probabilities."""
        raise NotImplementedError

    def answer_tokens(self, reasoning: str | None = None) -> list[list[int]]:
        """Each class's answer token ids, up to and including the first end-of-turn token."""
        if reasoning is None and self._plain_answers is not None:
            return self._plain_answers
        messages = self.task.messages()
        rows = []
        for name in self.task.classes:
            ids = self.tokenize(self.answer_text(messages, self.task.target_text(name, reasoning)))
            end = next((i for i, t in enumerate(ids) if t in self.eos), len(ids) - 1)
            rows.append(ids[: end + 1])
        if len({tuple(r) for r in rows}) < len(rows):
            raise ValueError("two classes tokenize to the same answer; class names must differ as text")
        if reasoning is None:  # the same for every image: tokenize once
            self._plain_answers = rows
        return rows

    def scores(self, images: list, reasoning: str | None = None) -> list[list[float]]:
        """(images, classes) log-likelihoods (means per token with `length_normalise`)."""
        answers = self.answer_tokens(reasoning)
        rows = [[float(v) for v in row] for row in self._score_batch(images, answers)]
        if self.length_normalise:
            rows = [[v / len(a) for v, a in zip(row, answers)] for row in rows]
        return rows

    def result(self, scores: list[float], text: str | None = None, top_k: int = 5,
               reasoning: str | None = None) -> dict:
        """Label, confidence, top-k and the full probability table for one image's class scores."""
        scaled = [s / self.task.temperature for s in scores]
        peak = max(scaled)
        weights = [math.exp(s - peak) for s in scaled]
        total = sum(weights)
        probabilities = [w / total for w in weights]
        order = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])
        classes = self.task.classes
        label = classes[order[0]]
        return {"label": label, "confidence": probabilities[order[0]],
                "top_k": [{"label": classes[i], "probability": probabilities[i]} for i in order[:top_k]],
                "probabilities": dict(zip(classes, probabilities)),
                "log_likelihoods": dict(zip(classes, scores)),
                "text": text if text is not None else self.task.target_text(label, reasoning)}

    def results(self, images: list, texts: list[str | None], top_k: int = 5) -> list[dict]:
        """One batched pass for all images, unless each has its own generated reasoning."""
        if self.task.reasoning:
            rows = []
            for image, text in zip(images, texts):
                reasoning = reasoning_of(text) if text is not None else None
                rows.append(self.result(self.scores([image], reasoning)[0], text, top_k, reasoning))
            return rows
        return [self.result(row, text, top_k) for row, text in zip(self.scores(images), texts)]
