"""Score mode for classification: the model's probability of each class name as its answer, torch-free.

A class's log-likelihood is the sum of log p(token) over its answer as the chat template renders it, up to
and including the end-of-turn token (so "cat" and "cat food" are told apart), from the predictor's
`score_answers` (PyTorch: every class answer in one pass over a token trie; ONNX: the prompt's cache
repeated). Softmax over classes gives the probabilities, divided first by the run's fitted temperature
(`calibration.py`); the task's `length_normalise` uses the mean per-token log-probability instead. A generated
reasoning differs per image, so those score one image at a time.
"""

from __future__ import annotations

import math
import re

from .answer_parser import ANSWER_MARKER


def reasoning_of(text: str) -> str:
    """The rationale in a generated "Reasoning: … Answer: …" reply (everything before the last Answer:)."""
    markers = list(ANSWER_MARKER.finditer(text))
    body = text[: markers[-1].start()] if markers else text
    return re.sub(r"^\s*reasoning\s*[:：]\s*", "", body, flags=re.IGNORECASE).strip()


class ClassScorer:
    def __init__(self, predictor, task):
        """`predictor`: anything that keeps the predictor contract (`inference/protocol.py`)."""
        self.predictor, self.task = predictor, task
        self.eos, self.length_normalise = predictor.end_ids, task.length_normalise
        self._plain_answers: list[list[int]] | None = None

    def answer_tokens(self, reasoning: str | None = None) -> list[list[int]]:
        """Each class's answer token ids, up to and including the first end-of-turn token."""
        if reasoning is None and self._plain_answers is not None:
            return self._plain_answers
        messages = self.task.messages()
        rows = []
        for name in self.task.classes:
            ids = self.predictor.answer_tokens(messages, self.task.target_text(name, reasoning))
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
        scored = self.predictor.score_answers(images, [self.task.messages() for _ in images], answers)
        rows = [[float(v) for v in row] for row in scored]
        if self.length_normalise:
            rows = [[v / len(a) for v, a in zip(row, answers)] for row in rows]
        return rows

    def result(self, scores: list[float], text: str | None = None, reasoning: str | None = None) -> dict:
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
                "top_k": [{"label": classes[i], "probability": probabilities[i]} for i in order[:self.task.top_k]],
                "probabilities": dict(zip(classes, probabilities)),
                "log_likelihoods": dict(zip(classes, scores)),
                "text": text if text is not None else self.task.target_text(label, reasoning)}

    def results(self, images: list, texts: list[str | None]) -> list[dict]:
        """One batched pass for all images, unless each has its own generated reasoning."""
        if self.task.reasoning:
            rows = []
            for image, text in zip(images, texts):
                reasoning = reasoning_of(text) if text is not None else None
                rows.append(self.result(self.scores([image], reasoning)[0], text, reasoning))
            return rows
        return [self.result(row, text) for row, text in zip(self.scores(images), texts)]
