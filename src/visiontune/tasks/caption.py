"""Captioning: describe the image; one training example per reference caption; COCO caption metrics."""

from __future__ import annotations

from ..data.records import Record
from .base import Task


class CaptionTask(Task):
    name = "caption"
    default_prompt = "Describe this image in one sentence."

    def training_targets(self, record: Record) -> list[str]:
        return list(record.captions)

    def parse(self, text: str) -> str:
        return " ".join(text.strip().split())

    def references(self, record: Record) -> list[str]:
        return list(record.captions)

    def score(self, predictions: dict[str, str], references: dict[str, list[str]]) -> dict:
        from ..metrics.caption import caption_metrics

        return caption_metrics(predictions, references)
