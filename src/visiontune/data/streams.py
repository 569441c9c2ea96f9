"""Streamed sources, read with `datasets` streaming: webdataset tar shards (always streamed), parquet files and
Hub datasets (with `--streaming`). Rows arrive as they are read: nothing is indexed, downloaded whole or held,
so a set larger than the disk trains; images stay undecoded until an example is made of them.

A webdataset sample (`key.jpg`, `key.json`, `key.txt`, `key.cls`) is read as one row in the layout of a table
row: the JSON's fields, the image as `image`, the text as `caption`, the class as `label`. So a shard of LLaVA
rows (`.json` holding `conversations`) and a shard of image-caption pairs (`.txt`) both read as they are.
"""

from __future__ import annotations

import glob
import random
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

from .records import DataError, Record

SHUFFLE_BUFFER = 1000  # rows a streamed set is shuffled within (per DataLoader worker)
CHECKED_ROWS = 16  # rows read when the stream is opened, so a wrong layout fails before step one
STREAM_SUFFIXES = {".tar": "webdataset", ".parquet": "parquet"}
SAMPLE_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "image")


def stream_files(path_text: str, split: str | None = None) -> tuple[str, list[str]] | None:
    """(builder, files) when `path_text` is a .tar / .parquet file, a glob of them, or a folder holding them (its
    `split` subfolder when there is one); None otherwise."""
    path = Path(path_text)
    if path.is_dir():
        if split and (path / split).is_dir():
            path = path / split
        for suffix, builder in STREAM_SUFFIXES.items():
            files = sorted(str(p) for p in path.glob(f"*{suffix}"))
            if files:
                return builder, files
        return None
    files = sorted(glob.glob(path_text)) if any(c in path_text for c in "*?[") else [path_text] if path.is_file() else []
    builders = {STREAM_SUFFIXES.get(Path(f).suffix.lower()) for f in files}
    if files and len(builders) == 1 and None not in builders:
        return builders.pop(), files
    return None


def open_stream(reference: str, split: str | None):
    """A `datasets.IterableDataset` of the source, image columns left undecoded."""
    import datasets

    local = stream_files(reference, split)
    if local is not None:
        builder, files = local
        stream = datasets.load_dataset(builder, data_files={"train": files}, split="train", streaming=True)
    else:
        try:
            stream = datasets.load_dataset(reference, split=split or "train", streaming=True)
        except Exception as error:  # the Hub's and the builders' errors differ; name the source either way
            raise DataError(f"{reference}: cannot stream it ({type(error).__name__}: {error}); give a Hub dataset "
                            f"id, parquet files or webdataset .tar shards") from error
    for column, feature in (stream.features or {}).items():
        if isinstance(feature, datasets.Image):
            stream = stream.cast_column(column, datasets.Image(decode=False))
    return stream


def known_rows(reference: str, split: str | None, stream) -> int | None:
    """How many rows the source holds, when it says so without being read: parquet footers, a Hub dataset's
    split info. None for tar shards."""
    local = stream_files(reference, split)
    if local is not None and local[0] == "parquet":
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in local[1])
    splits = getattr(stream.info, "splits", None) or {}
    info = splits.get(split or "train") if hasattr(splits, "get") else None
    return getattr(info, "num_examples", None) or None


def sample_row(sample: dict) -> dict:
    """A webdataset sample as a table row; any other row as it is."""
    if "__key__" not in sample:
        return sample
    row = dict(sample["json"]) if isinstance(sample.get("json"), dict) else {}
    image = next((sample[key] for key in SAMPLE_IMAGE_KEYS if sample.get(key) is not None), None)
    if image is not None:
        row["image"] = image
    if isinstance(sample.get("txt"), str) and "caption" not in row:
        row["caption"] = sample["txt"]
    if sample.get("cls") is not None and "label" not in row:
        row["label"] = sample["cls"]
    row.setdefault("id", sample["__key__"])
    return row


def _where(name: str, sample: dict, number: int) -> str:
    if "__key__" in sample:
        return f"{sample.get('__url__', name)} sample {sample['__key__']}"
    return f"{name} row {number} of this reader"


class StreamedRecords:
    """The records of a stream, made as rows arrive: `make(row, where, number) -> Record` (raising DataError for
    a bad row; picklable, for DataLoader workers). Each pass over the rows is shuffled within a buffer
    (`shuffled`) and cut at `max_samples` (`limit`); each DataLoader worker reads its own shards."""

    def __init__(self, stream, make: Callable[[dict, str, int], Record], name: str, rows: int | None,
                 seed: int | None = None, limit: int | None = None):
        self.stream, self.make, self.name, self.rows = stream, make, name, rows
        self.seed, self.limit = seed, limit

    def shuffled(self, seed: int) -> StreamedRecords:
        return StreamedRecords(self.stream, self.make, self.name, self.rows, seed, self.limit)

    def take(self, count: int) -> StreamedRecords:
        rows = count if self.rows is None else min(count, self.rows)
        return StreamedRecords(self.stream, self.make, self.name, rows, self.seed, count)

    def rows_of_pass(self, number: int) -> Iterator[tuple[dict, str, int]]:
        """(row, where, row number in this reader) of pass `number` over the stream."""
        stream = self.stream
        if self.seed is not None:
            stream = stream.shuffle(seed=random.Random(self.seed).getrandbits(32), buffer_size=SHUFFLE_BUFFER)
            stream.set_epoch(number)
        if self.limit is not None:
            stream = stream.take(self.limit)
        for index, sample in enumerate(stream):
            yield sample_row(sample), _where(self.name, sample, index), index

    def _records(self, skip_bad_rows: bool) -> Iterator[Record]:
        """The records of the first pass; a bad row raises, or is passed over when bad rows are skipped."""
        for row, where, index in self.rows_of_pass(0):
            try:
                yield self.make(row, where, index)
            except DataError:
                if not skip_bad_rows:
                    raise

    def check(self, skip_bad_rows: bool = False) -> StreamedRecords:
        """Read the first rows, so a set in the wrong layout fails before step one."""
        for _ in islice(self._records(skip_bad_rows), CHECKED_ROWS):
            pass
        return self

    def read_all(self, skip_bad_rows: bool = False) -> list[Record]:
        """Every record of one pass, in order (an evaluation set: scored whole; cut it with --max-samples)."""
        return list(self._records(skip_bad_rows))

    def describe(self) -> str:
        return f"{self.rows:,} rows, streamed" if self.rows else "streamed (length unknown)"

    def fingerprint_text(self) -> str:
        return f"{self.name}|stream|{self.seed}|{self.limit}"


def stream_records(reference: str, split: str | None, reader: Callable[[dict, str], Callable],
                   skip_bad_rows: bool = False) -> StreamedRecords:
    """`reference` streamed. `reader(first row, reference)` picks what it needs from the first row (columns)
    and returns the picklable `make(row, where, number) -> Record` that every row goes through."""
    stream = open_stream(reference, split)
    first = next(iter(stream.take(1)), None)
    if first is None:
        raise DataError(f"{reference}: the stream holds no rows")
    records = StreamedRecords(stream, reader(sample_row(first), reference), reference,
                              known_rows(reference, split, stream))
    return records.check(skip_bad_rows)


def read_whole(records, skip_bad_rows: bool = False) -> list:
    """`records` as a list: a stream read to its end (what evaluation scores), anything else as it is."""
    return records.read_all(skip_bad_rows) if isinstance(records, StreamedRecords) else records
