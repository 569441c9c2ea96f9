"""Class lists and label resolution for classification data.

Where the class names come from, first that applies: `--class-names`; the source's own list (a
`ClassLabel` feature, ImageFolder folder names); else the distinct labels of the data, sorted (numbers
numerically). An integer label (or a string of digits that is not itself a class name) is an index into
that list. A label that maps to no class is an error naming the row, or a counted skip (`--skip-bad-rows`).
"""

from __future__ import annotations

from pathlib import Path

from .records import DataError, Record


def _is_index(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.isdigit())


def discover_classes(values) -> list[str]:
    """The distinct labels among `values`, sorted (numbers numerically)."""
    labels = {value for value in values if value is not None and str(value).strip() != ""}
    if labels and all(_is_index(label) for label in labels):
        return [str(v) for v in sorted({int(label) for label in labels})]
    return sorted(str(label).strip() for label in labels)


def check_class_names(classes: list[str], where: str, minimum: int = 2) -> list[str]:
    """Stripped names; distinct, non-empty and at least `minimum` of them (classification needs two)."""
    cleaned = [str(name).strip() for name in classes]
    if len(cleaned) < minimum:
        raise DataError(f"{where}: needs at least {minimum} classes, got {cleaned}")
    duplicates = sorted({name for name in cleaned if cleaned.count(name) > 1})
    if duplicates or any(not name for name in cleaned):
        raise DataError(f"{where}: class names must be distinct and non-empty; repeated or empty: {duplicates or ['']}")
    return cleaned


def resolve_label(value, classes: list[str], indexed: bool) -> str | None:
    """The class name a raw label means, or None when it means none of them."""
    if isinstance(value, str) and value.strip() in classes:
        return value.strip()
    if indexed and _is_index(value) and 0 <= int(value) < len(classes):
        return classes[int(value)]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in classes:
        return str(value)
    return None


def resolve_labels(records: list[Record], classes: list[str], indexed: bool, skip_bad_rows: bool,
                   source: str) -> tuple[list[Record], int]:
    """Set each record's label to a class name. `indexed`: integer labels are positions in `classes`."""
    kept, skipped = [], 0
    shown = ", ".join(classes[:12]) + (f", … ({len(classes)} in all)" if len(classes) > 12 else "")
    for record in records:
        name = resolve_label(record.label, classes, indexed)
        if name is not None:
            record.label = name
            kept.append(record)
        elif skip_bad_rows:
            skipped += 1
        else:
            problem = "has no label" if record.label in (None, "") else f"label {record.label!r} is not a known class"
            raise DataError(f"{record.source_row or source}: {problem}; classes: {shown}. Fix the row, list the "
                            f"class with --class-names, or pass --skip-bad-rows to count and skip such rows")
    return kept, skipped


def read_class_descriptions(path: str | Path, classes: list[str]) -> dict[str, str]:
    """A `class: description` per line (blank lines and # comments ignored); every name must be a class."""
    descriptions: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, text = line.partition(":")
        if not colon or not text.strip():
            raise DataError(f"{Path(path).name} line {number}: expected 'class name: description', got {line!r}")
        if name.strip() not in classes:
            raise DataError(f"{Path(path).name} line {number}: {name.strip()!r} is not one of the classes "
                            f"({', '.join(classes)})")
        descriptions[name.strip()] = text.strip()
    return descriptions
