"""Captioning: describe the image; one training example per reference caption; COCO caption metrics."""

from __future__ import annotations

from ...data.loading import load_caption_records
from ...data.records import Record
from ..base import Task


class CaptionTask(Task):
    name = "caption"
    default_prompt = "Describe this image in one sentence."

    @classmethod
    def load_records(cls, spec, known: dict | None = None, log=print) -> tuple[list[Record], dict]:
        return load_caption_records(spec, log=log), {}

    def training_targets(self, record: Record) -> list[str]:
        return list(record.captions)

    def parse(self, text: str) -> str:
        return " ".join(text.strip().split())

    def references(self, record: Record) -> list[str]:
        return list(record.captions)

    def score(self, predictions: dict[str, str], references: dict[str, list[str]]) -> dict:
        from ...metrics.caption import caption_metrics

        return caption_metrics(predictions, references)

    def prediction_of(self, row: dict) -> str:
        """The caption in a predictions-file row (`visiontune predict` output or {"image", "caption"})."""
        return row.get("prediction", row.get("caption", row.get("text")))

    def sample_lines(self, prediction: str, reference: list[str]) -> list[str]:
        return ["pred: " + prediction] + ["ref: " + r for r in reference[:2]]
