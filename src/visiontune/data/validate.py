"""Image checks before training: missing local files fail fast; with skipping, every image is decoded
once and the bad ones are counted and dropped. A lazily read or streamed set is checked as it is read instead."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from .images import SKIP_HINT, ImageLoadError, is_url
from .lazy_records import LazyRecords
from .records import DataError, Record
from .streams import StreamedRecords


def check_images(records: list[Record], skip_bad: bool, log=print) -> tuple[list[Record], int]:
    if isinstance(records, (LazyRecords, StreamedRecords)):  # checked as they are read (training/examples.py)
        return records, 0
    if not skip_bad:
        for record in records:
            if isinstance(record.image, (str, Path)) and not is_url(str(record.image)):
                path = Path(record.image)
                path = path if path.is_absolute() or record.base_dir is None else Path(record.base_dir) / path
                if not path.is_file():
                    raise DataError(f"{record.source_row}: image {path} does not exist; fix the path "
                                    f"(--images-dir sets the folder), or {SKIP_HINT}")
        return records, 0
    kept, skipped = [], 0
    for record in tqdm(records, desc="checking images", disable=len(records) < 200):
        try:
            record.load_image()
            kept.append(record)
        except ImageLoadError as error:
            skipped += 1
            if skipped <= 5:
                log(f"skipping {record.source_row}: {error.without_skip_hint()}")
    if not kept:
        raise DataError("every image failed to load; check the paths and --images-dir")
    if skipped:
        log(f"skipped {skipped} missing or unreadable images (--skip-bad-images)")
    return kept, skipped
