"""`visiontune.train`: data -> examples -> collator -> model -> HF Trainer -> saved run folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..config import TrainConfig, build_config, to_dict
from ..data.loading import (
    TASKS_WITH_BOXES,
    TASKS_WITH_LABELS,
    DataSpec,
    fingerprint,
    load_box_records,
    load_labelled_records,
    load_records,
)
from ..data.validate import check_images
from ..models.vlm import RUN_METADATA_FILE, TrainableSetup, load_processor, prepare_for_training, resolve_dtype
from ..report.curves import plot_training_curves
from ..tasks import get_task
from ..tasks.base import task_options
from .balancing import BALANCE_MODES, class_counts, format_counts, inverse_frequency_weights
from .callbacks import ThroughputCallback
from .collator import VLMCollator
from .examples import ExampleDataset
from .preflight import run_preflight
from .run_record import write_run_record
from .vlm_trainer import VLMTrainer

MODEL_FILES = ("adapter_model.safetensors", "adapter_config.json", "model.safetensors", "config.json",
               "generation_config.json", "model.safetensors.index.json")


def _data_spec(config: TrainConfig, path: str, split: str | None, max_samples: int | None) -> DataSpec:
    return DataSpec(path=path, format=config.format, split=split, image_column=config.image_column,
                    caption_column=config.caption_column, label_column=config.label_column,
                    rationale_column=config.rationale_column, class_names=config.class_names,
                    objects_column=config.objects_column, bbox_format=config.bbox_format,
                    bbox_normalised=config.bbox_normalised, images_dir=config.images_dir, max_samples=max_samples, seed=config.seed, shuffle=config.shuffle,
                    skip_bad_rows=config.skip_bad_rows)


def _load_split(config: TrainConfig, path: str, split, max_samples, log, classes=None):
    records = load_records(_data_spec(config, path, split, max_samples), config.task, log=log, classes=classes)
    return check_images(records, skip_bad=config.skip_bad_images, log=log)


def _build_task(config: TrainConfig, log):
    """The task, and for classify / detect the training records (their labels give the classes)."""
    options = task_options(config)
    if config.task not in TASKS_WITH_LABELS + TASKS_WITH_BOXES:
        return get_task(config.task, **options), None
    if config.balance not in BALANCE_MODES:
        raise ValueError(f"unknown --balance {config.balance!r}; choose one of {', '.join(BALANCE_MODES)}")
    spec = _data_spec(config, config.data, config.split, config.max_samples)
    if config.task in TASKS_WITH_BOXES:
        records, options["classes"], options["category_ids"] = load_box_records(spec, log=log)
        return get_task(config.task, **options), records
    records, options["classes"] = load_labelled_records(spec, log=log)
    task = get_task(config.task, **options)
    if config.reasoning:
        with_rationale = sum(bool(r.rationale) for r in records)
        log(f"--reasoning: {with_rationale}/{len(records)} training rows have a rationale; the others' target is the "
            f"class name alone" if with_rationale else "--reasoning: the data has no rationale column "
            "(--rationale-column); targets are the class names alone")
    return task, records


def describe_queries(train_set: ExampleDataset, records, task) -> str:
    """What the detection examples are: queries by kind, boxes trained on, boxes left out by --max-objects."""
    groups = train_set.groups()
    positives = sum(group is not None for group in groups)
    all_class = len(records) if task.queries in ("all", "both") else 0  # one per image; the rest are negatives
    boxes = sum(not box.crowd for record in records for box in record.boxes)
    text = (f"detection queries: {positives} positive, {len(groups) - positives - all_class} negative (answer none), "
            f"{all_class} all-class; {boxes} boxes")
    dropped = sum(task.dropped_by_max_objects(record) for record in records)
    if dropped:
        text += f"; {dropped} boxes left out of answers by --max-objects {task.max_objects} (largest kept)"
    return text


def _training_arguments(config: TrainConfig, has_eval: bool, best_metric: str = "eval_loss") -> TrainingArguments:
    import os

    # TensorBoard event files go under <output>/logs (transformers 5 reads the folder from the environment).
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(Path(config.output) / "logs"))
    learning_rate = config.learning_rate or (2e-4 if config.method in ("lora", "qlora") else 2e-5)
    on_cuda = torch.cuda.is_available()
    dtype = resolve_dtype(config.dtype)
    eval_steps = config.eval_steps
    save_steps = config.save_steps or eval_steps
    step_strategy = "steps" if save_steps else "epoch"
    return TrainingArguments(
        output_dir=config.output,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the total steps
        lr_scheduler_type=config.lr_scheduler,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        # The model is loaded in `dtype` already; autocast only for fp16 weights' master copies is not used.
        bf16=on_cuda and dtype == torch.bfloat16,
        fp16=False,
        logging_steps=config.logging_steps,
        eval_strategy=(("steps" if eval_steps else "epoch") if has_eval else "no"),
        eval_steps=eval_steps if has_eval else None,
        save_strategy=step_strategy,
        save_steps=save_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=has_eval,
        metric_for_best_model=best_metric if has_eval else None,
        greater_is_better=(best_metric != "eval_loss") if has_eval else None,
        prediction_loss_only=True,
        remove_unused_columns=False,
        dataloader_num_workers=config.num_workers,
        dataloader_persistent_workers=config.num_workers > 0,
        report_to=[] if config.report_to in ("none", "", None) else [config.report_to],
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not on_cuda,
        disable_tqdm=False,
    )


def _copy_model_files(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, target / name)


def train(config: TrainConfig | None = None, log=print, **overrides) -> dict:
    """Fine-tune a VLM on a task. Returns the run summary (also written to `<output>/summary.json`)."""
    config = config or build_config(TrainConfig, overrides)
    if not config.data:
        raise ValueError("no training data: pass --data PATH (COCO JSON, JSONL/CSV, save_to_disk folder or hub id)")
    set_seed(config.seed)
    output = Path(config.output)
    task, labelled = _build_task(config, log)
    classes = getattr(task, "classes", None)

    if labelled is not None:
        train_records, train_skipped = check_images(labelled, skip_bad=config.skip_bad_images, log=log)
    else:
        train_records, train_skipped = _load_split(config, config.data, config.split, config.max_samples, log)
    eval_records, eval_skipped = ([], 0)
    if config.eval_data:
        eval_records, eval_skipped = _load_split(config, config.eval_data, config.eval_split,
                                                 config.max_eval_samples, log, classes=classes)
    train_set, eval_set = ExampleDataset(train_records, task), ExampleDataset(eval_records, task)
    is_classify = task.name == "classify"
    balance = config.balance if config.balance != "auto" else ("sampler" if task.name == "detect" else "none")
    sample_weights = None
    if classes:
        counts = class_counts(train_set.groups(), classes)
        what = "training examples" if is_classify else "positive queries"
        log(f"{what} per class ({len(classes)} classes):\n{format_counts(counts)}")
        missing = [name for name, count in counts.items() if count == 0]
        if missing:
            log(f"warning: no training examples for {', '.join(missing)}")
        if task.name == "detect":
            log(describe_queries(train_set, train_records, task))
        if balance == "sampler":
            sample_weights = inverse_frequency_weights(train_set.groups())
        elif balance == "loss":
            train_set.weights = inverse_frequency_weights(train_set.groups())
    log(f"data: {len(train_records)} training images -> {len(train_set)} examples"
        + (f"; {len(eval_records)} evaluation images -> {len(eval_set)} examples" if eval_records else ""))
    write_run_record(output, to_dict(config), {
        "train_fingerprint": fingerprint(train_records), "train_images": len(train_records),
        "train_examples": len(train_set), "train_skipped_images": train_skipped,
        "eval_fingerprint": fingerprint(eval_records) if eval_records else None,
        "eval_images": len(eval_records), "eval_skipped_images": eval_skipped})

    processor = load_processor(config.model, config.image_size, config.image_splitting, log=log)
    setup = TrainableSetup(method=config.method, train=config.train, lora_r=config.lora_r,
                           lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                           gradient_checkpointing=config.gradient_checkpointing)
    model = prepare_for_training(config.model, setup, resolve_dtype(config.dtype), log=log)
    if torch.cuda.is_available() and config.method != "qlora":
        model.to("cuda")
    probe_start = None
    if task.name in ("classify", "detect") and config.probe_start and not config.resume:  # resume loads its own
        from .probe_start import start_summary_from_probe

        probe_start = start_summary_from_probe(model, processor, classes, train_records, config.batch_size, log=log,
                                               task_name=task.name)
    collator = VLMCollator(processor, max_length=config.max_length)
    preflight = run_preflight(model, collator, train_set, config.batch_size, log=log) if config.preflight else None

    best_metric = "eval_accuracy" if is_classify and eval_records else "eval_loss"
    args = _training_arguments(config, has_eval=bool(eval_records), best_metric=best_metric)
    extra_eval = None
    if is_classify and eval_records:
        from .class_eval import classification_eval

        extra_eval = classification_eval(eval_records, task, processor, batch_size=config.batch_size)
    throughput = ThroughputCallback(output)
    callbacks = [throughput]
    if config.early_stopping:
        if not eval_records:
            raise ValueError("--early-stopping needs --eval-data to measure improvement")
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping))
    trainer = VLMTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set or None,
                         data_collator=collator, callbacks=callbacks, throughput=throughput,
                         sample_weights=sample_weights, extra_eval=extra_eval,
                         role_learning_rates={"connector": config.connector_learning_rate}
                         if config.connector_learning_rate else None)
    train_output = trainer.train(resume_from_checkpoint=True if config.resume else None)

    # The top-level folder holds the model to use: the best by eval loss when there is an eval set.
    if eval_records:
        last = get_last_checkpoint(output)  # by step number: checkpoint-10 comes after checkpoint-9
        if last:
            _copy_model_files(Path(last), output / "final")
            processor.save_pretrained(output / "final")
    trainer.save_model(str(output))
    processor.save_pretrained(output)
    calibration = None
    if is_classify and eval_records and config.calibrate:
        from .class_eval import calibrate

        trainer.model.eval()
        calibration = calibrate(trainer.model, processor, task, eval_records, config.batch_size, log=log)
    metadata = {**task.metadata(), "base_model": config.model, "method": config.method, "train": config.train,
                "image_size": config.image_size, "image_splitting": config.image_splitting,
                "max_length": config.max_length, "best_checkpoint": trainer.state.best_model_checkpoint}
    (output / RUN_METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    if is_classify:  # for people and tools reading the run: classes, prompts as rendered, counts and the config
        (output / "training_metadata.json").write_text(json.dumps({
            **metadata, "system_prompt_rendered": task.render(task.system_prompt),
            "prompt_rendered": task.render(task.prompt), "class_counts": class_counts(train_set.groups(), classes),
            "balance": balance, "best_metric": best_metric, "calibration": calibration,
            "config": to_dict(config)}, indent=2))
    summary = throughput.summary(trainer.state)
    summary.update(trainer_samples_per_second=train_output.metrics.get("train_samples_per_second"),
                   preflight=preflight, truncated_answers=collator.truncated_answers, calibration=calibration,
                   probe_start=probe_start)
    if eval_records:
        final_eval = trainer.evaluate()
        summary.update({k: v for k, v in final_eval.items() if k in ("eval_loss", "eval_accuracy", "eval_macro_f1",
                                                                     "eval_ece")})
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_training_curves(trainer.state.log_history, output / "training_curves.png")
    log(f"saved {output} — {summary['samples_per_second']} samples/s, {summary['tokens_per_second']} tokens/s, "
        f"peak memory {summary['peak_bytes'] / 2**30:.2f} GiB ({summary['device']})")
    return summary
