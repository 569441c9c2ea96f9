"""Training examples: (record, prompt messages, target text), with images loaded lazily in the data loader.

A lazily read set (`data/lazy_records.py`: hundreds of thousands of rows) is never expanded: its task gives one
example per record, made when the item is read. Its bad rows and images are found then too: an error naming
the row, or with skipping on (--skip-bad-rows, --skip-bad-images) the next good row in its place, the skipped
ones reported with the batch (`skipped`) so the run can count them.

A streamed set (`data/streams.py`) is a `StreamExamples`: an endless iterable, pass after pass over the stream
(each reshuffled), which the trainer stops at --max-steps. A resumed run skips the rows its trained batches
came from without decoding their images.
"""

from __future__ import annotations

import math
from itertools import islice

from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..data.images import ImageLoadError
from ..data.lazy_records import LazyRecords
from ..data.records import DataError, Record
from ..data.streams import StreamedRecords


def example_dict(task, record: Record, item, weight: float | None = None) -> dict:
    """What the collator takes for one example: its image(s) loaded, prompt, target, where it came from."""
    images = task.training_images(record)
    example = {"image": images[0] if len(images) == 1 else images, "messages": item.messages,
               "target": item.target, "where": record.source_row}
    if item.continuation:
        example["continuation"] = item.continuation
    if weight is not None:
        example["weight"] = weight
    return example


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
        return example_dict(self.task, record, item, None if self.weights is None else self.weights[index])

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


class StreamExamples(IterableDataset):
    """The examples of a streamed set, endlessly: pass after pass (each reshuffled), cut by the trainer at
    --max-steps. Bad rows / images are skipped and reported as in `ExampleDataset` when skipping is on."""

    lazy = True

    def __init__(self, records: StreamedRecords, task, skip_bad_rows: bool = False, skip_bad_images: bool = False):
        self.task, self.records = task, records
        self.skipping = (DataError,) * skip_bad_rows + (ImageLoadError,) * skip_bad_images
        self.skip_batches, self.batch_size = 0, 1

    def skip(self, batches: int, batch_size: int) -> None:
        """Resume after `batches` batches of `batch_size` were trained on: their rows are read again but their
        images are not decoded. Each worker skips the batches it made, so each goes on with its next one; the
        DataLoader asks worker 0 first again, so the order is the uninterrupted run's only when `batches` is a
        multiple of the workers. A skipped row with a bad image counts as an example here."""
        self.skip_batches, self.batch_size = batches, batch_size

    def _skipped_examples(self) -> int:
        # DataLoader workers hand out whole batches in turn: worker w of n made batches w, w + n, ...
        worker = get_worker_info()
        index, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        return math.ceil(max(0, self.skip_batches - index) / workers) * self.batch_size

    def _passes(self):
        """(record or the error making it, row's place) of every row, pass after pass; ends if a pass is empty."""
        number = 0
        while True:
            empty = True
            for row, where, index in self.records.rows_of_pass(number):
                empty = False
                try:
                    yield self.records.make(row, where, index), where
                except DataError as error:
                    yield error, where
            if empty:
                return
            number += 1

    def __iter__(self):
        to_skip, skipped, made = self._skipped_examples(), [], 0
        for record, where in self._passes():
            try:
                if isinstance(record, Exception):
                    raise record
                for item in self.task.training_examples(record):
                    if to_skip:
                        to_skip -= 1
                        continue
                    example = example_dict(self.task, record, item)
                    made += 1
                    yield {**example, "skipped": skipped} if skipped else example
                    skipped = []
            except self.skipping as error:
                skipped.append(str(error))
                if len(skipped) > 1000 and not made:
                    raise DataError(f"{self.records.name}: the first 1000 rows all failed to load; the first: "
                                    f"{skipped[0]}") from error

    def head(self, count: int) -> list[dict]:
        """The first `count` examples of the first pass (pre-flight, FLOPs per token)."""
        saved, self.skip_batches = self.skip_batches, 0
        try:
            return list(islice(iter(self), count))
        finally:
            self.skip_batches = saved
