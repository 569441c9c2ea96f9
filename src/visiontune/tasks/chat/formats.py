"""Conversations with images, in the layouts people already have, as `Record`s with a `conversation`:

- LLaVA: `{"image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\\nWhat is it?"},
  {"from": "gpt", "value": "A cat."}, ...]}` (`image` may be a list);
- ShareGPT (LLaMA-Factory's layout): `{"conversations" or "messages": [{"from"/"role": ..., "value"/"content":
  ...}], "images": [...], "system": "..."}`;
- Hugging Face messages: `{"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text",
  "text": "..."}]}, {"role": "assistant", "content": [{"type": "text", "text": "..."}]}], "images": [...]}`.

from JSON / JSONL files (read lazily: `data/lazy_records.py`), a `datasets` dataset (save_to_disk folder,
parquet files or hub id), or a stream (`data/streams.py`: webdataset shards, or --streaming). `<image>` markers in text
(or `{"type": "image"}` parts) say where each image goes; a row whose text names no image gets its single
image at the start of the first user turn. Images belong to the first user turn (that is where the
processor encodes them); several are fine where the model family takes several.
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import partial
from itertools import pairwise
from pathlib import Path

from ...data.lazy_records import LazyRecords
from ...data.loading import DataSpec, finish_records, read_source
from ...data.records import DataError, Record
from ...data.row_index import RowIndex, file_identity
from ...data.streams import stream_records

IMAGE_MARKER = re.compile(r"<image>")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
         "model": "assistant", "system": "system"}
TURN_COLUMNS = ("conversations", "messages")
IMAGE_COLUMNS = ("images", "image")


def _parts(content, where: str) -> list[dict]:
    """A turn's content as chat-template parts: text split at <image> markers, or a list of typed parts."""
    if isinstance(content, str):
        parts = []
        for index, piece in enumerate(IMAGE_MARKER.split(content)):
            if index:
                parts.append({"type": "image"})
            if piece.strip():
                parts.append({"type": "text", "text": piece.strip()})
        return parts
    if isinstance(content, list):
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                parts.append({"type": "image"})
            elif kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif isinstance(part, dict) and kind in (None, "text") and part.get("text") is None:
                raise DataError(f"{where}: a content part without text: {part!r}")
            else:
                raise DataError(f"{where}: unknown content part type {kind!r}; use 'image' or 'text'")
        return parts
    raise DataError(f"{where}: a turn's content should be text or a list of parts, got {type(content).__name__}")


def _text(parts: list[dict]) -> str:
    return " ".join(part["text"] for part in parts if part["type"] == "text")


def conversation_record(row: dict, where: str, base_dir: Path | None, index: int) -> Record:
    """One row in any of the three layouts -> a Record (first image in `image`, the rest in `more_images`)."""
    turns_key = next((key for key in TURN_COLUMNS if key in row), None)
    if turns_key is None or not isinstance(row[turns_key], list):
        raise DataError(f"{where}: no conversation; give 'conversations' (LLaVA / ShareGPT) or 'messages' (a list "
                        f"of turns with from/value or role/content)")
    images_key = next((key for key in IMAGE_COLUMNS if row.get(key) not in (None, [], "")), None)
    images = [] if images_key is None else row[images_key] if isinstance(row[images_key], list) else [row[images_key]]
    if not images:
        raise DataError(f"{where}: no image; give 'image' (a path, or a list) or 'images'")
    messages = [{"role": "system", "content": [{"type": "text", "text": row["system"]}]}] \
        if isinstance(row.get("system"), str) and row["system"].strip() else []
    for number, turn in enumerate(row[turns_key], start=1):
        if not isinstance(turn, dict):
            raise DataError(f"{where}: turn {number} should be an object with from/value or role/content")
        role = ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
        if role is None:
            raise DataError(f"{where}: turn {number} has role {turn.get('from', turn.get('role'))!r}; use one of "
                            f"{', '.join(sorted(ROLES))}")
        messages.append({"role": role, "content": _parts(turn.get("value", turn.get("content")), f"{where} turn {number}")})
    dialogue = [m for m in messages if m["role"] != "system"]
    if not dialogue or dialogue[0]["role"] != "user" or dialogue[-1]["role"] != "assistant" or \
            any(a["role"] == b["role"] for a, b in pairwise(dialogue)):
        raise DataError(f"{where}: turns must alternate user / assistant, starting with the user and ending with an "
                        f"answer (got {' '.join(m['role'] for m in dialogue)})")
    named = [sum(part["type"] == "image" for part in m["content"]) for m in dialogue]
    if sum(named) == 0 and len(images) == 1:  # a row that names no image: it goes first in the first question
        dialogue[0]["content"].insert(0, {"type": "image"})
        named[0] = 1
    if sum(named) != len(images):
        raise DataError(f"{where}: the text names {sum(named)} image(s) (<image> markers or image parts) but the row "
                        f"has {len(images)}; give one marker per image")
    if sum(named[1:]):
        raise DataError(f"{where}: an image in a later turn; put every image in the first user turn")
    if any(not _text(m["content"]) for m in dialogue if m["role"] == "assistant"):
        raise DataError(f"{where}: an empty answer turn; every assistant turn needs text")
    return Record(image=images[0], image_id=str(row.get("id", index)), more_images=list(images[1:]),
                  conversation=messages, base_dir=base_dir, source_row=where)


def load_conversation_records(spec: DataSpec, log=print):
    """The conversations of a JSON/JSONL file (a lazy sequence) or a dataset, with --shuffle / --max-samples
    applied."""
    def dataset(s: DataSpec):
        if s.streaming:
            base_dir = Path(s.images_dir) if s.images_dir else None
            return stream_records(s.path, s.split, lambda first, name: partial(_row_record, base_dir),
                                  s.skip_bad_rows)
        return load_conversation_dataset(s.path, s.split)

    records = read_source(spec, {
        "table": lambda s: load_conversation_table(Path(s.path), Path(s.images_dir) if s.images_dir else None, log),
        "hf": dataset, "parquet": dataset,
        "webdataset": lambda s: dataset(replace(s, streaming=True)),
    }, "conversations come as a JSON/JSONL file, a dataset, parquet files or webdataset shards, with a "
       "'conversations' or 'messages' column")
    return finish_records(records, spec)


def _row_record(base_dir: Path, row: dict, where: str, number: int) -> Record:
    if not isinstance(row, dict):
        raise DataError(f"{where}: a row should be an object, got {type(row).__name__}")
    return conversation_record(row, where, base_dir, number)


def load_conversation_table(path: Path, images_dir: Path | None = None, log=print):
    """JSON / JSONL rows, parsed as they are read (the first ones now); a CSV table, all at once."""
    base_dir = images_dir or path.parent
    if path.suffix.lower() in (".json", ".jsonl"):
        rows = RowIndex.of(path, log=log)
        return LazyRecords(rows, partial(_row_record, base_dir), str(path), file_identity(path)).check()
    from ...data.sources.table import read_rows

    return [conversation_record(row, where, base_dir, index) for index, (where, row) in enumerate(read_rows(path))]


def load_conversation_dataset(reference: str, split: str | None) -> LazyRecords:
    """Rows of a `datasets` dataset, read when needed; image columns stay undecoded until an image is loaded."""
    import datasets

    from ...data.sources.hf_datasets import open_hf_dataset

    dataset = open_hf_dataset(reference, split)
    for column, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
        elif isinstance(feature, (datasets.Sequence, datasets.List)) and isinstance(feature.feature, datasets.Image):
            dataset = dataset.cast_column(column, datasets.List(datasets.Image(decode=False)))
    return LazyRecords(dataset, partial(_row_record, None), reference, f"{reference}|{dataset._fingerprint}").check()
