"""Row files: JSONL, a JSON list of objects, or CSV; one image per row, columns auto-detected."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..columns import (
    CAPTION_COLUMN_NAMES,
    IMAGE_COLUMN_NAMES,
    LABEL_COLUMN_NAMES,
    RATIONALE_COLUMN_NAMES,
    normalise_captions,
    optional_column,
    pick_column,
)
from ..records import DataError, Record


def read_rows(path: Path) -> list[tuple[str, dict]]:
    """Return (where, row) pairs; `where` names the line for error messages."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path.name} line {number}: not valid JSON ({error.msg}); fix or remove the line")
            if not isinstance(row, dict):
                raise DataError(f"{path.name} line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append((f"{path.name} line {number}", row))
        return rows
    if suffix == ".json":
        payload = json.loads(path.read_text())
        if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
            raise DataError(f"{path}: expected a list of objects (or a COCO file with 'images' + 'annotations')")
        return [(f"{path.name} item {i}", row) for i, row in enumerate(payload)]
    if suffix in (".csv", ".tsv"):
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle, delimiter=_delimiter(handle.readline(), suffix))
            handle.seek(0)
            return [(f"{path.name} row {i}", dict(row)) for i, row in enumerate(reader, start=2)]
    raise DataError(f"{path}: unknown row-file type {suffix!r}; use .jsonl, .json, .csv or .tsv")


def _delimiter(header: str, suffix: str) -> str:
    """The suffix's delimiter, unless the header has none of it and another one (`;` as spreadsheets in many
    locales write CSV, tab, |)."""
    default = "\t" if suffix == ".tsv" else ","
    if default in header:
        return default
    return max((";", "\t", ",", "|"), key=header.count) if any(d in header for d in ";\t,|") else default


def _image_rows(path: Path, image_column: str | None) -> tuple[list[tuple[str, dict]], list[str], str]:
    """The rows, their columns and the image column; every row must have an image."""
    rows = read_rows(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    columns = list(rows[0][1])
    image_key = pick_column(columns, IMAGE_COLUMN_NAMES, "image", "--image-column", image_column, str(path))
    for where, row in rows:
        if image_key not in row:
            raise DataError(f"{where}: no {image_key!r} field; every row needs one")
    return rows, columns, image_key


CONVERSATION_COLUMN = "conversations"  # the LLaVA pretrain layout (LLaVA-CC3M-Pretrain-595K chat.json)
ANSWER_ROLES = ("gpt", "assistant")


def caption_from_conversation(turns, where: str) -> list[str]:
    """The first answer turn of a LLaVA-style conversation: [{"from": "human", ...}, {"from": "gpt", "value": c}]."""
    if not isinstance(turns, list):
        raise DataError(f"{where}: '{CONVERSATION_COLUMN}' should be a list of turns, got {type(turns).__name__}")
    for turn in turns:
        if isinstance(turn, dict) and (turn.get("from") or turn.get("role")) in ANSWER_ROLES:
            value = turn.get("value", turn.get("content"))
            return [value] if isinstance(value, str) else []
    return []


def load_caption_table(path: Path, image_column: str | None, caption_column: str | None,
                       images_dir: Path | None = None) -> list[Record]:
    rows, columns, image_key = _image_rows(path, image_column)
    if caption_column is None and CONVERSATION_COLUMN in columns and not any(c.lower() in CAPTION_COLUMN_NAMES
                                                                            for c in columns):
        def captions(row, where):
            return caption_from_conversation(row.get(CONVERSATION_COLUMN), where)
    else:
        caption_key = pick_column(columns, CAPTION_COLUMN_NAMES, "caption", "--caption-column", caption_column,
                                  str(path))

        def captions(row, where):
            return normalise_captions(row.get(caption_key), where)
    return [Record(image=row[image_key], image_id=str(row.get("id", index)), captions=captions(row, where),
                   base_dir=images_dir or path.parent, source_row=where)
            for index, (where, row) in enumerate(rows)]


def load_label_table(path: Path, image_column: str | None, label_column: str | None, rationale_column: str | None,
                     images_dir: Path | None = None) -> list[Record]:
    """Rows with an image and a label (class name or index); labels are resolved against the classes later."""
    rows, columns, image_key = _image_rows(path, image_column)
    label_key = pick_column([c for c in columns if c != image_key], LABEL_COLUMN_NAMES, "label", "--label-column",
                            label_column, str(path))
    rationale_key = optional_column(columns, RATIONALE_COLUMN_NAMES, "--rationale-column", rationale_column,
                                    str(path))
    return [Record(image=row[image_key], image_id=str(row.get("id", index)), label=row.get(label_key),
                   rationale=row.get(rationale_key) if rationale_key else None, base_dir=images_dir or path.parent,
                   source_row=where)
            for index, (where, row) in enumerate(rows)]
