"""`visiontune.evaluate`: predict over a dataset (or read a predictions file) -> metrics -> report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..config import EvalConfig, build_config
from ..data.images import ImageLoadError
from ..data.loading import data_spec, resolve_split
from ..data.records import DataError
from ..data.sources.table import read_rows
from ..data.streams import read_whole
from ..data.validate import check_images
from ..models.run_base import read_run_metadata
from ..report.grid import plot_sample_grid
from ..runtime.exports import export_root
from ..tasks import task_class, task_from_metadata, task_options
from .predict import (answering_model, check_adapters_take_their_tasks, load_adapter_predictors, load_predictor,
                      named_adapters, write_jsonl)


def read_predictions(path: str | Path) -> dict[str, dict]:
    """A predictions file (`visiontune predict` JSONL, or rows with 'image' + 'caption'/'label'/'boxes')
    -> {image: row}."""
    predictions = {}
    for where, row in read_rows(Path(path)):
        if "image" not in row or not ({"prediction", "caption", "text", "label", "boxes"} & set(row)):
            raise DataError(f"{where}: needs 'image' and 'prediction' (or 'caption' / 'label' / 'boxes') fields")
        predictions[str(row["image"])] = row
    return predictions


def _match(records, predictions: dict[str, dict], source: str, fill_missing: dict | None = None) -> dict[str, dict]:
    """Match predictions to records by the image reference, its resolved path, its file name or its id.
    `fill_missing`: the row of an image the file does not mention (a COCO results file lists boxes only)."""
    by_name: dict[str, dict] = {}
    for key, row in predictions.items():
        by_name.setdefault(Path(key).name, row)
    matched, missing = {}, []
    for record in records:
        key = record.image_key()
        candidates = [key, str(Path(record.base_dir or "") / key), Path(key).name, record.image_id]
        found = next((predictions[c] for c in candidates if c in predictions), None)
        if found is None:
            found = by_name.get(Path(key).name)
        if found is None and fill_missing is not None:
            found = dict(fill_missing)
        if found is None:
            missing.append(key)
        else:
            matched[key] = found
    if missing:
        raise DataError(f"{source}: no prediction for {len(missing)} of {len(records)} images, e.g. {missing[:3]}; "
                        f"predict every image of the evaluation set")
    return matched


def _write_report(output: Path, config: EvalConfig, task, records, predictions, references, rows, metrics, log,
                  extras: dict):
    output.mkdir(parents=True, exist_ok=True)
    write_jsonl(rows, output / "predictions.jsonl")
    headline = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    (output / "metrics.json").write_text(json.dumps({"task": task.name, "data": config.data, "model": config.model,
                                                     "predictions": config.predictions, **headline}, indent=2))
    task.write_report(output, metrics, {"data": config.data, "model": config.model}, extras)
    try:
        grid = []
        for record in records[: config.grid_size]:
            key = record.image_key()
            image = task.draw_sample(record.load_image(), predictions[key], references[key])
            grid.append({"image": image, "lines": task.sample_lines(predictions[key], references[key])})
        plot_sample_grid(grid, output / "samples.png")
    except ImageLoadError as error:  # scoring a predictions file does not need the images at hand
        log(f"samples.png not drawn: {error}")
    log(f"wrote {output / 'metrics.json'}")


def evaluate(config: EvalConfig | None = None, log=print, **overrides) -> dict:
    """Metrics for a model on a dataset (generates / scores) or for an existing predictions file."""
    config = config or build_config(EvalConfig, overrides)
    if not config.data:
        raise ValueError("no evaluation data: pass --data PATH")
    if not config.model and not config.predictions:
        raise ValueError("pass --model (to generate, then score) or --predictions FILE (to score an existing file)")
    if config.adapter:
        return _evaluate_adapters(config, log)
    name, options, records = _task_records(config, log)
    if config.model:
        predictor = load_predictor(
            config.model, task=name, task_options=options, dtype=config.dtype, log=log, base_model=config.base_model,
            task_routing=config.task_routing, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
            mode=config.mode, num_beams=config.num_beams)
        records, _ = check_images(records, skip_bad=config.skip_bad_images, log=log)
        task = predictor.task
        predictions, rows = _predicted(predictor, records, task, log)
    else:
        task = task_from_metadata({}, name, **options)
        predictions, rows = _from_file(config.predictions, records, task)
    return _scored(config, task, records, predictions, rows, predictor.mode if config.model else None, log)


def _scored(config: EvalConfig, task, records, predictions: dict, rows: list[dict], mode: str | None, log) -> dict:
    """The task's metrics of `predictions` against the records' references, the report written when asked."""
    references = {r.image_key(): task.references(r) for r in records}
    for key, row in zip(predictions, rows):  # the same order: one row per prediction
        row["reference"] = references[key]
    metrics = task.score(predictions, references)
    if mode is not None and len(task.prediction_modes) > 1:
        metrics["mode"] = mode
    per_image = metrics.pop("per_image", {})
    extras = {key: metrics.pop(key, None) for key in task.report_only}
    for row in rows:
        if row["image"] in per_image:
            row["scores"] = per_image[row["image"]]
    if config.output:
        _write_report(Path(config.output), config, task, records, predictions, references, rows, metrics, log,
                      extras)
    headline = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    log("metrics: " + ", ".join(f"{k} {v}" for k, v in headline.items()))
    return metrics


def _evaluate_adapters(config: EvalConfig, log) -> dict:
    """{adapter: metrics}: each named adapter over one copy of --model, scored on --data with its run's task;
    each report in OUTPUT/NAME."""
    if config.predictions:
        raise ValueError("--adapter scores adapters, --predictions scores a file: give one of them")
    check_adapters_take_their_tasks(config)
    adapters = named_adapters(config.adapter)
    predictors = load_adapter_predictors(config.model, adapters, dtype=config.dtype, log=log,
                                         batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                                         mode=config.mode, num_beams=config.num_beams)
    results = {}
    for name, run in adapters.items():
        log(f"adapter {name}: {run}")
        one = dataclasses.replace(config, model=run, adapter=None,
                                  output=str(Path(config.output) / name) if config.output else None)
        _, _, records = _task_records(one, log)
        records, _ = check_images(records, skip_bad=config.skip_bad_images, log=log)
        predictor = predictors[name]
        predictions, rows = _predicted(predictor, records, predictor.task, log)
        results[name] = _scored(one, predictor.task, records, predictions, rows, predictor.mode, log)
    return results


def _task_records(config: EvalConfig, log) -> tuple[str, dict, list]:
    """The task's name, its options (the data's own included) and the evaluation records."""
    run = (export_root(config.model) or config.model) if config.model else None  # an export: its folder
    if run and config.task and config.task_routing:  # the model that answers: the run, or its base
        run, _ = answering_model(str(run), config.task, config.base_model)
    metadata = read_run_metadata(run) if run and Path(run).is_dir() else {}
    name = config.task or metadata.get("task", "caption")
    options = task_options(config)
    # The classes: --class-names, else the run's, else (a base model, or a predictions file) the data's own.
    known = options["classes"] or (metadata.get("classes") if metadata.get("task") == name else None)
    spec, read = resolve_split(data_spec(config.data, config), "eval")
    records, from_data = task_class(name).load_records(spec, known={"classes": known}, log=log)
    records = read_whole(records, spec.skip_bad_rows)
    log(f"data: {config.data}: {read}, {len(records)} records")
    return name, {**options, **from_data}, records


def _predicted(predictor, records, task, log) -> tuple[dict, list[dict]]:
    """({image: prediction}, result rows) from running the model over the records."""
    predictions, rows = {}, []
    for record, result in predictor.iter_results(records, task.inference_input, log=log):
        key = record.image_key()
        predictions[key] = task.prediction_of(result)
        rows.append({"image": key, **result})
    return predictions, rows


def _from_file(path: str, records, task) -> tuple[dict, list[dict]]:
    """({image: prediction}, result rows) from a predictions file, in the task's own layout (e.g. COCO
    detection results) or visiontune's JSONL."""
    own_layout = task.read_predictions_file(Path(path))
    if own_layout is not None:
        grouped, fill_missing = own_layout
        matched = _match(records, grouped, path, fill_missing=fill_missing)
    else:
        matched = _match(records, read_predictions(path), path)
    keys = [record.image_key() for record in records]
    return {key: task.prediction_of(matched[key]) for key in keys}, [{"image": key, **matched[key]} for key in keys]
