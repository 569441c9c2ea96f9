"""Rows of a large JSON array or JSONL file read one at a time: a byte-offset index, not a Python object per row.

A training set of hundreds of thousands of rows (LLaVA-CC3M-Pretrain-595K's `chat.json`) held as Python
objects costs gigabytes, in the main process and again in every DataLoader worker (reference counting touches
every object, so fork's copy-on-write copies them all). Here a file's rows are (start, end) byte offsets in
one numpy array, and a row is parsed when it is read, from a memory map of the file that every process shares
through the page cache.

The offsets are found once (JSONL: the newlines; a JSON array: the C JSON decoder walks the file chunk by
chunk) and kept in a cache folder under the file's path, size and modification time, so a second run starts
at once.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import mmap
import os
from pathlib import Path

import numpy as np

from .records import DataError

CHUNK_BYTES = 16 * 2**20
INDEX_VERSION = 1  # part of the cache key: a change of the index's layout builds new ones
LOGGED_ROWS = 10_000  # an index of fewer rows is built without a word
_SEPARATORS = " \t\r\n,"


def cache_folder() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "visiontune"
    return Path(os.environ.get("VISIONTUNE_CACHE", base)) / "row-index"


def file_identity(path: Path) -> str:
    status = path.stat()
    return f"{path.resolve()}|{status.st_size}|{status.st_mtime_ns}"


def _cache_path(path: Path) -> Path:
    key = f"{INDEX_VERSION}|{file_identity(path)}"
    return cache_folder() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"


def _jsonl_offsets(view) -> np.ndarray:
    """(rows, 3) byte offsets and line numbers of the non-blank lines."""
    data = np.frombuffer(view, dtype=np.uint8)
    newlines = np.flatnonzero(data == ord("\n"))
    starts, ends = np.concatenate([[0], newlines + 1]), np.concatenate([newlines, [len(data)]])
    offsets = np.stack([starts, ends, np.arange(1, len(starts) + 1)], 1)
    # Only short lines can be blank in practice (a trailing newline, an empty line, a stray "\r").
    short = np.flatnonzero(ends - starts <= 64)
    blank = [i for i in short if not bytes(view[starts[i]:ends[i]]).strip()]
    return np.delete(offsets, blank, axis=0)


def _array_offsets(path: Path, view) -> np.ndarray:
    """(rows, 2) byte offsets of the top-level items of a JSON array, decoded chunk by chunk."""
    decoder, utf8 = json.JSONDecoder(), codecs.getincrementaldecoder("utf-8")()
    head = bytes(view[:4096])
    lead = len(head) - len(head.lstrip())
    if head[lead:lead + 1] != b"[":
        raise DataError(f"{path}: not a JSON array or JSON Lines file")
    read_to = byte_position = lead + 1  # next byte to read; the file offset of text[position]
    text, position, is_ascii, offsets = "", 0, True, []
    while True:
        while position < len(text) and text[position] in _SEPARATORS:
            position, byte_position = position + 1, byte_position + 1
        if position < len(text) and text[position] == "]":
            return np.array(offsets, dtype=np.int64).reshape(-1, 2)
        try:
            _, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:  # an item running past the text read so far, or bad JSON
            if read_to >= len(view):
                raise DataError(f"{path}: not a valid JSON array: {error.msg} in the item starting at byte "
                                f"{byte_position}") from None
            chunk = bytes(view[read_to:read_to + CHUNK_BYTES])
            read_to += len(chunk)
            text, position = text[position:] + utf8.decode(chunk, final=read_to >= len(view)), 0
            is_ascii = text.isascii()
            continue
        length = end - position if is_ascii else len(text[position:end].encode("utf-8"))
        offsets.append((byte_position, byte_position + length))
        position, byte_position = end, byte_position + length


class RowIndex:
    """`len(index)` rows; `index[i]` parses row i (a dict). Picklable: a worker reopens the memory map.
    `offsets`: (rows, 2) start and end bytes, and for JSONL a third column, the line number."""

    def __init__(self, path: str | Path, offsets: np.ndarray):
        self.path, self.offsets = Path(path), offsets
        self._map = None

    @classmethod
    def of(cls, path: str | Path, log=print) -> RowIndex:
        path = Path(path)
        cached = _cache_path(path)
        if cached.is_file():
            return cls(path, np.load(cached, mmap_mode="r"))
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            array = view[:4096].lstrip().startswith(b"[")
            offsets = _array_offsets(path, view) if array else _jsonl_offsets(view)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(partial, offsets)
        partial.replace(cached)
        if len(offsets) >= LOGGED_ROWS:
            log(f"{path}: indexed {len(offsets):,} rows (kept in {cached.parent})")
        return cls(path, np.load(cached, mmap_mode="r"))

    def __len__(self) -> int:
        return len(self.offsets)

    def where(self, index: int) -> str:
        """Row `index` as messages name it: a JSONL file's line, a JSON array's item (from 0)."""
        if self.offsets.shape[1] == 3:
            return f"{self.path.name} line {int(self.offsets[index, 2])}"
        return f"{self.path.name} item {index}"

    def raw(self, index: int) -> bytes:
        if self._map is None:
            with self.path.open("rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        start, end = self.offsets[index, :2]
        return self._map[int(start):int(end)]

    def __getitem__(self, index: int) -> dict:
        raw = self.raw(index)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise DataError(f"{self.where(index)}: not valid JSON ({error.msg}); fix or remove it") from None

    def __getstate__(self) -> dict:
        return {"path": self.path, "offsets": self.offsets, "_map": None}
