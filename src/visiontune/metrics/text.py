"""Answers as text against reference answers: exact match and token F1 (SQuAD's normalisation: lower case,
no punctuation, no articles, single spaces), each the mean over questions."""

from __future__ import annotations

import re
import string
from collections import Counter

ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_answer(text: str) -> str:
    text = "".join(ch for ch in str(text).lower() if ch not in set(string.punctuation))
    return " ".join(ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = normalise_answer(prediction).split(), normalise_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def answer_metrics(predictions: dict[str, str], references: dict[str, str]) -> dict:
    """exact_match and token_f1 over the references' keys, plus per_image scores."""
    per_image = {key: {"exact_match": float(normalise_answer(predictions.get(key) or "") == normalise_answer(answer)),
                       "token_f1": token_f1(predictions.get(key) or "", answer)}
                 for key, answer in references.items()}
    count = max(len(per_image), 1)
    return {"exact_match": sum(row["exact_match"] for row in per_image.values()) / count,
            "token_f1": sum(row["token_f1"] for row in per_image.values()) / count,
            "questions": len(per_image), "per_image": per_image}
