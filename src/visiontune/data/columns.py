"""Auto-detection of which column holds the image and which the caption/label."""

from __future__ import annotations

from collections.abc import Sequence

from .records import DataError

IMAGE_COLUMN_NAMES = ("image", "img", "picture", "photo", "pixel_values", "image_path", "image_file", "file_name",
                      "filename", "file", "path", "image_url", "url", "jpg", "png")
CAPTION_COLUMN_NAMES = ("caption", "captions", "text", "sentences", "sentence", "description", "descriptions",
                        "raw", "alt_text", "answer", "target")
LABEL_COLUMN_NAMES = ("label", "labels", "class", "class_name", "classname", "category", "category_name", "target",
                      "fine_label", "answer", "y")
RATIONALE_COLUMN_NAMES = ("reasoning", "rationale", "explanation", "reason", "thoughts")


def pick_column(columns: Sequence[str], candidates: Sequence[str], role: str, flag: str, given: str | None,
                where: str, typed: Sequence[str] = ()) -> str:
    """Return the column to use for `role`: the one named by the user, else the first known name present."""
    if given:
        if given not in columns:
            raise DataError(f"{where}: no column {given!r} (from {flag}); columns found: {', '.join(columns)}")
        return given
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    if typed:  # columns whose dataset feature type says what they hold
        return typed[0]
    raise DataError(f"{where}: cannot tell which column holds the {role}; columns found: {', '.join(columns)}. "
                    f"Name it with {flag} COLUMN")


def normalise_captions(value, where: str) -> list[str]:
    """Caption cell -> list of caption strings. Accepts str, list[str], list[{"raw": str}] (Flickr/COCO-Karpathy)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        for key in ("raw", "caption", "text", "sentence"):
            if isinstance(value.get(key), str):
                return [value[key]]
        raise DataError(f"{where}: caption entry {value!r} has no raw/caption/text field")
    if isinstance(value, (list, tuple)):
        captions: list[str] = []
        for item in value:
            captions.extend(normalise_captions(item, where))
        return captions
    raise DataError(f"{where}: caption must be text or a list of texts, got {type(value).__name__}")


def optional_column(columns: Sequence[str], candidates: Sequence[str], flag: str, given: str | None,
                    where: str) -> str | None:
    """Like `pick_column` for a column the data may lack (e.g. rationales): None when absent and not named."""
    if given:
        return pick_column(columns, candidates, "", flag, given, where)
    lowered = {c.lower(): c for c in columns}
    return next((lowered[name] for name in candidates if name in lowered), None)
