"""`visiontune.evaluate`: predict over a dataset (or read a predictions file) -> parse -> metrics -> report."""

from __future__ import annotations

import json
from pathlib import Path

from .config import EvalConfig, build_config
from .data.loading import DataSpec, load_records
from .data.images import ImageLoadError
from .data.records import DataError, Record
from .data.validate import check_images
from .predict import Predictor, write_jsonl
from .report.grid import plot_caption_grid
from .tasks import get_task


def read_predictions(path: str | Path) -> dict[str, str]:
    """A predictions JSONL (`visiontune predict` output: {"image", "prediction"}) -> {image name: text}."""
    predictions = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        text = row.get("prediction", row.get("caption", row.get("text")))
        if "image" not in row or text is None:
            raise DataError(f"{Path(path).name} line {number}: needs 'image' and 'prediction' (or 'caption') fields")
        predictions[str(row["image"])] = text
    return predictions


def _match(records, predictions: dict[str, str], source: str) -> dict[str, str]:
    """Match predictions to records by the image reference, its resolved path, or its file name."""
    by_name: dict[str, str] = {}
    for key, text in predictions.items():
        by_name.setdefault(Path(key).name, text)
    matched, missing = {}, []
    for record in records:
        key = record.image_key()
        candidates = [key, str(Path(record.base_dir or "") / key), Path(key).name, record.image_id]
        found = next((predictions[c] for c in candidates if c in predictions), None)
        if found is None:
            found = by_name.get(Path(key).name)
        if found is None:
            missing.append(key)
        else:
            matched[key] = found
    if missing:
        raise DataError(f"{source}: no prediction for {len(missing)} of {len(records)} images, e.g. {missing[:3]}; "
                        f"predict every image of the evaluation set")
    return matched


def evaluate(config: EvalConfig | None = None, log=print, **overrides) -> dict:
    config = config or build_config(EvalConfig, overrides)
    if not config.data:
        raise ValueError("no evaluation data: pass --data PATH")
    if not config.model and not config.predictions:
        raise ValueError("pass --model (to generate, then score) or --predictions FILE (to score an existing file)")
    spec = DataSpec(path=config.data, format=config.format, split=config.split, image_column=config.image_column,
                    caption_column=config.caption_column, images_dir=config.images_dir,
                    max_samples=config.max_samples, skip_bad_rows=config.skip_bad_rows)
    records = load_records(spec, config.task, log=log)
    task = get_task(config.task, prompt=config.prompt, system_prompt=config.system_prompt)
    rows: list[dict] = []
    if config.predictions:
        predictions = _match(records, read_predictions(config.predictions), config.predictions)
    else:
        records, _ = check_images(records, skip_bad=config.skip_bad_images, log=log)
        predictor = Predictor.from_pretrained(config.model, task=config.task, prompt=config.prompt,
                                              system_prompt=config.system_prompt, dtype=config.dtype, log=log,
                                              batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                                              num_beams=config.num_beams)
        task = predictor.task
        predictions = {}
        for record, text in predictor.iter_texts(records, Record.load_image, log=log):
            predictions[record.image_key()] = task.parse(text)
            rows.append({"image": record.image_key(), "prediction": predictions[record.image_key()], "text": text,
                         "references": task.references(record)})
    references = {r.image_key(): task.references(r) for r in records}
    metrics = task.score(predictions, references)
    per_image = metrics.pop("per_image", {})
    if config.output:
        output = Path(config.output)
        output.mkdir(parents=True, exist_ok=True)
        if not rows:
            rows = [{"image": key, "prediction": predictions[key], "references": references[key]} for key in references]
        for row in rows:
            row["scores"] = per_image.get(row["image"], {})
        write_jsonl(rows, output / "predictions.jsonl")
        (output / "metrics.json").write_text(json.dumps({"task": task.name, "data": config.data,
                                                         "model": config.model, "predictions": config.predictions,
                                                         **metrics}, indent=2))
        sample = records[: config.grid_size]
        try:
            grid = [{"image": r.load_image(), "prediction": predictions[r.image_key()],
                     "references": references[r.image_key()]} for r in sample]
            plot_caption_grid(grid, output / "samples.png")
        except ImageLoadError as error:  # scoring a predictions file does not need the images at hand
            log(f"samples.png not drawn: {error}")
        log(f"wrote {output / 'metrics.json'}")
    headline = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    log("metrics: " + ", ".join(f"{k} {v}" for k, v in headline.items()))
    return metrics
