"""Training examples: (record, target text) pairs, with images loaded lazily in the data loader."""

from __future__ import annotations

from torch.utils.data import Dataset

from ..data.records import Record
from ..tasks.base import Task


class ExampleDataset(Dataset):
    """One item per (record, target); a record with several reference captions yields several items."""

    def __init__(self, records: list[Record], task: Task):
        self.task = task
        self.items = [(record, target) for record in records for target in task.training_targets(record)]
        self.weights: list[float] | None = None  # per-item loss weights (--balance loss)

    def labels(self) -> list:
        return [record.label for record, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        record, target = self.items[index]
        example = {"image": record.load_image(), "messages": self.task.messages(record), "target": target,
                   "where": record.source_row}
        if self.weights is not None:
            example["weight"] = self.weights[index]
        return example
