"""Training examples: (record, prompt messages, target text), with images loaded lazily in the data loader.

A lazily read set (`data/lazy_records.py`: hundreds of thousands of rows) is never expanded: its task gives one
example per record, made when the item is read. Its bad rows and images are found then too: an error naming
the row, or with skipping on (--skip-bad-rows, --skip-bad-images) the next good row in its place, the skipped
ones reported with the batch (`skipped`) so the run can count them.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from ..data.images import ImageLoadError
from ..data.lazy_records import LazyRecords
from ..data.records import DataError, Record


class ExampleDataset(Dataset):
    """One item per task example; a record with several reference captions (or detection queries) yields several."""

    def __init__(self, records: list[Record], task, skip_bad_rows: bool = False, skip_bad_images: bool = False):
        """`task`: a `tasks.base.Task` (its examples and images)."""
        self.task, self.records = task, records
        self.lazy = isinstance(records, LazyRecords)
        if self.lazy and not task.one_example_per_record:
            raise ValueError(f"the {task.name} task makes several examples of a record; it cannot read a set lazily")
        self.items = None if self.lazy else [(record, example) for record in records
                                             for example in task.training_examples(record)]
        self.skipping = (DataError,) * skip_bad_rows + (ImageLoadError,) * skip_bad_images
        self.weights: list[float] | None = None  # per-item loss weights (--balance loss)

    def item(self, index: int):
        if self.items is not None:
            return self.items[index]
        record = self.records[index]
        return record, self.task.training_examples(record)[0]

    def groups(self) -> list:
        """What class balancing counts, per item (None: not balanced; a lazily read set is not)."""
        return [None] * len(self) if self.lazy else [example.group for _, example in self.items]

    def answer_lengths(self, tokenizer) -> list[int]:
        """Tokens in each item's answer: what varies between examples of a task (prompts and images mostly do
        not), for batching similar lengths together."""
        return [len(tokenizer(self.item(index)[1].target, add_special_tokens=False)["input_ids"])
                for index in range(len(self))]

    def __len__(self) -> int:
        return len(self.records) if self.lazy else len(self.items)

    def _example(self, index: int) -> dict:
        record, item = self.item(index)
        images = self.task.training_images(record)
        example = {"image": images[0] if len(images) == 1 else images, "messages": item.messages,
                   "target": item.target, "where": record.source_row}
        if item.continuation:
            example["continuation"] = item.continuation
        if self.weights is not None:
            example["weight"] = self.weights[index]
        return example

    def __getitem__(self, index: int) -> dict:
        if not self.lazy:
            return self._example(index)
        skipped = []
        for offset in range(len(self)):
            try:
                example = self._example((index + offset) % len(self))
            except self.skipping as error:
                skipped.append(str(error))
                continue
            return {**example, "skipped": skipped} if skipped else example
        raise DataError(f"{self.records.name}: every row failed to load; the first: {skipped[0]}")
