"""Training examples: (record, prompt messages, target text), with images loaded lazily in the data loader."""

from __future__ import annotations

from torch.utils.data import Dataset

from ..data.records import Record


class ExampleDataset(Dataset):
    """One item per task example; a record with several reference captions (or detection queries) yields several."""

    def __init__(self, records: list[Record], task):
        """`task`: a `tasks.base.Task` (its examples and images)."""
        self.task = task
        self.items = [(record, example) for record in records for example in task.training_examples(record)]
        self.weights: list[float] | None = None  # per-item loss weights (--balance loss)

    def groups(self) -> list:
        """What class balancing counts, per item (None: not balanced)."""
        return [example.group for _, example in self.items]

    def answer_lengths(self, tokenizer) -> list[int]:
        """Tokens in each item's answer: what varies between examples of a task (prompts and images mostly do
        not), for batching similar lengths together."""
        return [len(tokenizer(example.target, add_special_tokens=False)["input_ids"]) for _, example in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        record, item = self.items[index]
        images = self.task.training_images(record)
        example = {"image": images[0] if len(images) == 1 else images, "messages": item.messages,
                   "target": item.target, "where": record.source_row}
        if item.continuation:
            example["continuation"] = item.continuation
        if self.weights is not None:
            example["weight"] = self.weights[index]
        return example
