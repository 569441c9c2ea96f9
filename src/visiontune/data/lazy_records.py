"""`LazyRecords`: a list-like sequence of `Record`s made from rows when they are read: a `RowIndex` of a JSON /
JSONL file, or a `datasets` dataset (Arrow, memory-mapped; its images left undecoded until loaded).

Shuffling and `--max-samples` reorder and cut an array of row numbers; nothing is parsed until a record is
read. The first rows are read (and so checked) when the set is opened, so a file in the wrong layout fails
before the first step; a bad row further on fails when it is read, naming its row, or is skipped and counted
where the caller skips (`--skip-bad-rows`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

from .records import Record

CHECKED_ROWS = 1000


class LazyRecords(Sequence):
    def __init__(self, rows: Sequence, make: Callable[[dict, str, int], Record], name: str, identity: str,
                 order: np.ndarray | None = None):
        """`rows[i]`: row i as a dict. `make(row, where, row number)`: a row as a Record (raising DataError for a
        bad row); picklable (a module-level function or a functools.partial of one) for DataLoader workers.
        `name` says where rows come from in messages; `identity` names the data for run fingerprints."""
        self.rows, self.make, self.name, self.identity = rows, make, name, identity
        self.order = np.arange(len(rows), dtype=np.int64) if order is None else order

    def check(self, rows: int = CHECKED_ROWS) -> LazyRecords:
        for position in range(min(rows, len(self))):
            self[position]
        return self

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position):
        if isinstance(position, slice):
            return LazyRecords(self.rows, self.make, self.name, self.identity, self.order[position])
        row = int(self.order[position])
        where = self.rows.where(row) if hasattr(self.rows, "where") else f"{self.name} row {row}"
        return self.make(self.rows[row], where, row)

    def shuffled(self, seed: int) -> LazyRecords:
        order = self.order.copy()
        np.random.default_rng(random.Random(seed).getrandbits(64)).shuffle(order)
        return LazyRecords(self.rows, self.make, self.name, self.identity, order)

    def fingerprint_text(self) -> str:
        """What names the data without reading it: the source's identity and the rows taken."""
        return f"{self.identity}|{self.order[:64].tolist()}|{len(self)}"
