"""`visiontune train`: data -> task examples -> collator -> model -> HF Trainer -> saved run folder.

Everything task-specific (its records, classes, balance default, probe start, in-training metric, the step
after training) comes from the task (`tasks/base.py`); this file never looks at a task's name.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, TrainingArguments, set_seed
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from ..config import TrainConfig, build_config, to_dict
from ..data.loading import data_spec, fingerprint, resolve_split
from ..data.streams import StreamedRecords, read_whole
from ..data.validate import check_images
from ..model_references import check_model_reference
from ..models.feature_cache import FeatureCache
from ..models.prompt_encoding import VLMCollator
from ..models.run_base import RUN_METADATA_FILE, recorded_base
from ..models.families import family_for
from ..models.vlm import (MODEL_CONFIG_KEY, TrainableSetup, load_processor, model_type_of,
                          prepare_for_training, resolve_dtype)
from ..report.curves import plot_training_curves
from ..tasks import Task, get_task, task_class, task_options
from ..training.balancing import BALANCE_MODES, inverse_frequency_weights
from ..training.callbacks import ImagesProgressCallback, ThroughputCallback
from ..training.checkpoints import last_complete_checkpoint
from ..training.examples import ExampleDataset, StreamExamples
from ..training.mfu import flops_per_token, matmul_peak, mfu_summary
from ..training.preflight import run_preflight
from ..training.run_folder import check_same_run, prepare_run_folder
from ..training.run_record import write_run_record
from ..training.vlm_trainer import VLMTrainer, weights_fingerprint

DEFAULT_EPOCHS, REGION_SLOT_EPOCHS, REGION_SLOT_LORA_RATE = 3.0, 1.0, 1e-3
SLOT_READINGS_FILE = "slot-readings.json"  # what the fitted region slots write on each training image
MODEL_FILES = ("adapter_model.safetensors", "adapter_config.json", "model.safetensors", "config.json",
               "generation_config.json", "model.safetensors.index.json")


def _build_task(config: TrainConfig, log):
    """The task and its training records: the data gives what the task needs of it (classes, category ids)."""
    cls = task_class(config.task)
    spec, read = resolve_split(data_spec(config.data, config, split=config.split, max_samples=config.max_samples),
                               "train")
    records, from_data = cls.load_records(spec, log=log)
    count = records.describe() if isinstance(records, StreamedRecords) else f"{len(records)} records"
    log(f"data: {config.data}: {read}, {count}")
    return get_task(config.task, **{**task_options(config), **from_data}), records


def _load_eval_records(config: TrainConfig, task, log) -> tuple[list, int]:
    if not config.eval_data:
        return [], 0
    spec, read = resolve_split(data_spec(config.eval_data, config, split=config.eval_split,
                                         max_samples=config.max_eval_samples), "eval", "--eval-split")
    records, _ = type(task).load_records(spec, known={"classes": getattr(task, "classes", None)}, log=log)
    records = read_whole(records, spec.skip_bad_rows)
    log(f"eval data: {config.eval_data}: {read}, {len(records)} records")
    return check_images(records, skip_bad=config.skip_bad_images, log=log)


def _training_arguments(config: TrainConfig, schedule: tuple[float, float], has_eval: bool,
                        best_metric: str = "eval_loss", max_steps: int | None = None) -> TrainingArguments:
    """`max_steps`: the run's length where the data has none of its own (a stream); else --max-steps."""
    # TensorBoard event files go under <output>/logs (transformers 5 reads the folder from the environment).
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(Path(config.output) / "logs"))
    epochs, learning_rate = schedule
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
        num_train_epochs=epochs,
        max_steps=max_steps or config.max_steps,
        ignore_data_skip=bool(max_steps),  # a stream skips its trained rows itself (`StreamExamples.skip`)
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


def _flops_per_token(trainer, collator, dataset, config: TrainConfig) -> float:
    """One training batch's forward + backward FLOPs per token, counted after training (`training/mfu.py`)."""
    from ..models.vision_cache import IMAGE_KEYS
    from ..training.vlm_trainer import answer_token_loss

    model = trainer.model
    device = next(model.parameters()).device
    examples = dataset.head(config.batch_size) if isinstance(dataset, StreamExamples) else \
        [dataset[index] for index in range(min(config.batch_size, len(dataset)))]
    batch = collator(examples)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    if trainer.feature_cache is not None and IMAGE_KEYS in batch:
        batch = trainer.feature_cache.apply(model, batch)
    was_training = model.training
    model.train()
    try:
        return flops_per_token(model, batch, answer_token_loss)
    finally:
        model.train(was_training)


@dataclass
class Run:
    """A training run as it is built: the data side (`_build_data`), then the model side (`_build_model`)."""

    config: TrainConfig
    task: Task
    train_records: list
    eval_records: list
    train_set: ExampleDataset | StreamExamples
    eval_set: ExampleDataset
    balance: str
    sample_weights: list[float] | None
    processor: object = None
    model: object = None
    collator: VLMCollator | None = None
    cache: FeatureCache | None = None
    model_config: dict | None = None  # config attributes this run sets on its base (region slots)
    stream_steps: int | None = None  # a streamed set: the steps that make --epochs passes (or --max-steps)
    hooks: dict = field(default_factory=dict)  # what the model-side steps report: preflight, probe start, replay
    seconds: dict = field(default_factory=dict)  # wall time of each phase, for the summary

    @contextmanager
    def phase(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 1)

    @property
    def output(self) -> Path:
        return Path(self.config.output)


def _silent(*_) -> None:
    return


def train(config: TrainConfig | None = None, log=print, **overrides) -> dict:
    """Fine-tune a VLM on a task. Returns the run summary (also written to `<output>/summary.json`)."""
    config = config or build_config(TrainConfig, overrides)
    if int(os.environ.get("RANK", "0")):  # under torchrun the first process speaks for the run
        log = _silent
    run, trainer, throughput, best_metric = build_trainer(config, log)
    with run.phase("mfu"):
        peak = matmul_peak(next(run.model.parameters()).device) if config.measure_mfu else None
    resume_from = str(last_complete_checkpoint(run.output, log=log)) if config.resume else None
    if resume_from and isinstance(run.train_set, StreamExamples):
        _skip_trained_rows(run, trainer, Path(resume_from), log)
    with run.phase("train"):
        train_output = trainer.train(resume_from_checkpoint=resume_from)
    return _finalize(run, trainer, throughput, best_metric, train_output, peak, log)


def build_trainer(config: TrainConfig, log=print) -> tuple[Run, VLMTrainer, ThroughputCallback, str]:
    """Everything `train` runs before step one: the run (data, model, collator), the trainer set up on it, its
    throughput callback and the metric that picks the best checkpoint."""
    if not config.data:
        raise ValueError("no training data: pass --data PATH (COCO JSON, JSONL/CSV, save_to_disk folder or hub id)")
    if config.balance not in BALANCE_MODES:
        raise ValueError(f"unknown --balance {config.balance!r}; choose one of {', '.join(BALANCE_MODES)}")
    from accelerate import PartialState

    # Under torchrun the first process checks (or clears) the folder before any process writes to it.
    with PartialState().main_process_first():
        earlier = prepare_run_folder(config.output, config.resume, config.overwrite)
    config.model = check_model_reference(config.model)
    set_seed(config.seed)
    started = time.perf_counter()
    run = _build_data(config, log, earlier)
    run.seconds["data"] = round(time.perf_counter() - started, 1)
    _build_model(run, log)
    return run, *_build_trainer(run, log)


def _build_data(config: TrainConfig, log, earlier: dict) -> Run:
    """The task, its records and examples, class balancing, and the run record (config, data fingerprints);
    `earlier`: the run record of the run a --resume continues."""
    task, records = _build_task(config, log)
    if isinstance(records, StreamedRecords):
        return _build_stream_data(config, task, records, log, earlier)
    train_records, train_skipped = check_images(records, skip_bad=config.skip_bad_images, log=log)
    eval_records, eval_skipped = _load_eval_records(config, task, log)
    train_set = ExampleDataset(train_records, task, config.skip_bad_rows, config.skip_bad_images)
    eval_set = ExampleDataset(eval_records, task, config.skip_bad_rows, config.skip_bad_images)
    balance = config.balance if config.balance != "auto" else task.default_balance
    sample_weights = None
    if balance == "sampler":
        sample_weights = inverse_frequency_weights(train_set.groups())
    elif balance == "loss":
        train_set.weights = inverse_frequency_weights(train_set.groups())
    for line in task.describe_training_data(train_set, train_records):
        log(line)
    log(f"data: {len(train_records)} training images -> {len(train_set)} examples"
        + (f"; {len(eval_records)} evaluation images -> {len(eval_set)} examples" if eval_records else ""))
    check_same_run(earlier, to_dict(config), fingerprint(train_records))
    write_run_record(Path(config.output), to_dict(config), {
        "train_fingerprint": fingerprint(train_records), "train_images": len(train_records),
        "train_examples": len(train_set), "train_skipped_images": train_skipped,
        "eval_fingerprint": fingerprint(eval_records) if eval_records else None,
        "eval_images": len(eval_records), "eval_skipped_images": eval_skipped})
    return Run(config, task, train_records, eval_records, train_set, eval_set, balance, sample_weights)


def _build_stream_data(config: TrainConfig, task: Task, records: StreamedRecords, log, earlier: dict) -> Run:
    """`_build_data` for a streamed set: examples made as rows arrive, a run length in steps, no balancing."""
    if config.balance not in ("auto", "none"):
        raise ValueError(f"--balance {config.balance} counts the whole set; a streamed set is read as it comes "
                         f"(drop --balance, or drop --streaming)")
    eval_records, eval_skipped = _load_eval_records(config, task, log)
    train_set = StreamExamples(records, task, config.skip_bad_rows, config.skip_bad_images)
    eval_set = ExampleDataset(eval_records, task, config.skip_bad_rows, config.skip_bad_images)
    steps = _stream_steps(config, records)
    log(f"data: {records.describe()}, read as training reaches them; {steps:,} steps"
        + (f"; {len(eval_records)} evaluation images" if eval_records else ""))
    check_same_run(earlier, to_dict(config), fingerprint(records))
    write_run_record(Path(config.output), to_dict(config), {
        "train_fingerprint": fingerprint(records), "train_images": records.rows, "streamed": True,
        "eval_fingerprint": fingerprint(eval_records) if eval_records else None,
        "eval_images": len(eval_records), "eval_skipped_images": eval_skipped})
    return Run(config, task, records, eval_records, train_set, eval_set, "none", None, stream_steps=steps)


def _stream_steps(config: TrainConfig, records: StreamedRecords) -> int:
    """--max-steps, else --epochs passes over the rows the stream says it holds (one example per row)."""
    if config.max_steps and config.max_steps > 0:
        return config.max_steps
    if not records.rows:
        raise ValueError(f"{records.name}: a stream of unknown length (tar shards say nothing of their size); "
                         f"give --max-steps")
    epochs = config.epochs if config.epochs is not None else DEFAULT_EPOCHS
    batch = config.batch_size * config.grad_accum * max(1, int(os.environ.get("WORLD_SIZE", "1")))
    return max(1, round(records.rows * epochs / batch))


def _skip_trained_rows(run: Run, trainer: VLMTrainer, checkpoint: Path, log) -> None:
    """A resumed streamed run goes on from the next unseen row: the rows of the batches trained so far are
    skipped (read, not decoded). The trainer's own data skip is off for streams."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    batches = state["global_step"] * run.config.grad_accum * trainer.args.world_size
    run.train_set.skip(batches, run.config.batch_size)
    log(f"resume: the stream's first {batches * run.config.batch_size:,} examples are skipped (rows read, images "
        f"not decoded)")


def _build_model(run: Run, log) -> None:
    """Processor and model set up to train (with the task's region slots where the family has them), then what
    runs before step one: the feature cache, the fitted starts and self-replay, the collator, the pre-flight."""
    config = run.config
    with run.phase("model"):
        run.processor = load_processor(config.model, config.image_size, config.image_splitting, log=log)
        run.model_config = _region_slots(config.model, run.task, run.train_records, run.processor, log)
        setup = TrainableSetup(method=config.method, train=config.train, lora_r=config.lora_r,
                               lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                               gradient_checkpointing=config.gradient_checkpointing)
        run.model = prepare_for_training(config.model, setup, resolve_dtype(config.dtype), log=log,
                                         config_overrides=run.model_config)
        if torch.cuda.is_available() and config.method != "qlora":
            run.model.to("cuda")
    if config.feature_cache:
        run.cache = FeatureCache.for_model(run.model, folder=run.output / "feature-cache", log=log)
    _fit_starts(run, log)
    run.collator = VLMCollator(run.processor, max_length=config.max_length, image_keys=run.cache is not None)
    with run.phase("preflight"):
        sample = run.train_set.head(16) if isinstance(run.train_set, StreamExamples) and config.preflight else \
            run.train_set
        run.hooks["preflight"] = (run_preflight(run.model, run.collator, sample, config.batch_size, log=log)
                                  if config.preflight else None)


def _fit_starts(run: Run, log) -> None:
    """What runs before step one on the model: the region slots' fit (whenever the run has them: unfitted slots
    would write noise) and the training answers set to what the fitted slots show, self-replay (the model's own
    answers as it gave them before it had slots: trained on them with the slots in place, it answers general
    prompts as before, whatever the slots say), then the summary token's probe start (--probe-start). A resumed
    run loads its fitted parts from the checkpoint (and its slots' readings from the run folder). The fits'
    encoder passes fill the feature cache that training then reads."""
    from ..models.compose.regions import slots_hidden
    from ..training.probe_start import start_summary_from_probe
    from ..training.region_start import start_regions_from_probe

    config, classes = run.config, getattr(run.task, "classes", None)
    run.hooks["probe_start"] = run.hooks["region_start"] = None
    if run.model_config and not config.resume:
        with run.phase("region_start"):
            run.hooks["region_start"] = start_regions_from_probe(
                run.model, run.processor, classes, run.train_records, run.task.region_targets, config.batch_size,
                log=log, cache=run.cache)
    run.hooks["slot_answers"] = None
    if run.model_config and getattr(run.train_set, "items", None) is not None:
        with run.phase("slot_answers"):
            run.hooks["slot_answers"] = _answers_from_slots(run, log)
    with run.phase("self_replay"), slots_hidden(run.model, run.processor):
        run.hooks["replay_examples"] = _add_self_replay(config, run.task, run.model, run.processor,
                                                        run.train_records, run.train_set, run.sample_weights, log)
    if config.probe_start and not config.resume:
        with run.phase("probe_start"):
            run.hooks["probe_start"] = start_summary_from_probe(
                run.model, run.processor, classes, run.train_records, run.task.probe_targets(run.train_records),
                config.batch_size, log=log, cache=run.cache)


def _answers_from_slots(run: Run, log) -> dict | None:
    """The training answers rewritten to what the fitted slots show on each training image (the task decides;
    `DetectTask.answers_from_slots`)."""
    from ..training.region_start import slot_readings

    saved = run.output / SLOT_READINGS_FILE  # a resumed run's heads come from its checkpoint later: read them back

    def read_slots() -> dict | None:
        if run.config.resume:
            if not saved.is_file():
                log(f"slot answers: {saved} is missing, so the resumed run trains on every true box")
                return None
            return {key: [(label, tuple(box), tuple(grid)) for label, box, grid in reading]
                    for key, reading in json.loads(saved.read_text()).items()}
        found = slot_readings(run.model, run.processor, run.train_records, run.config.batch_size, cache=run.cache)
        readings = {record.image_key(): reading for record, reading in zip(run.train_records, found)}
        saved.write_text(json.dumps(readings))
        return readings

    counts = run.task.answers_from_slots(run.train_set.items, read_slots)
    if counts:
        log(f"slot answers: {counts['boxes_answered']} of {counts['boxes_true']} true boxes answered with the box of "
            f"a slot that shows them with their class ({counts['answers_changed']} answers changed); the others are "
            f"left out: the LM learns to copy what the slots show (--no-slot-answers: every true box)")
    return counts


def _schedule(run: Run, log) -> tuple[float, float]:
    """(epochs, learning rate): --epochs and --learning-rate, or their defaults: 3 epochs at 2e-4 for LoRA and
    2e-5 for full fine-tuning; with region slots, 1 epoch at 1e-3 (LoRA): the LM only learns to copy the slot
    lines of the asked class, which one pass teaches at the higher rate."""
    config = run.config
    lora = config.method in ("lora", "qlora")
    slots = bool((run.model_config or {}).get("region_slots"))
    epochs = config.epochs if config.epochs is not None else REGION_SLOT_EPOCHS if slots else DEFAULT_EPOCHS
    learning_rate = config.learning_rate or ((REGION_SLOT_LORA_RATE if slots else 2e-4) if lora else 2e-5)
    if slots and (config.epochs is None or not config.learning_rate):
        log(f"schedule: {epochs:g} epoch{'' if epochs == 1 else 's'} at learning rate {learning_rate:g} (the "
            f"defaults with region slots; --epochs, --learning-rate to change)")
    return epochs, learning_rate


def _build_trainer(run: Run, log) -> tuple[VLMTrainer, ThroughputCallback, str]:
    """The trainer, its throughput callback, and the metric that picks the best checkpoint."""
    config = run.config
    extra_eval = (run.task.in_training_eval(run.eval_records, run.processor, config.batch_size)
                  if run.eval_records else None)
    best_metric = run.task.best_metric if extra_eval is not None else "eval_loss"
    args = _training_arguments(config, _schedule(run, log), has_eval=bool(run.eval_records), best_metric=best_metric,
                               max_steps=run.stream_steps)
    throughput = ThroughputCallback(run.output)
    callbacks = [throughput]
    if config.early_stopping:
        if not run.eval_records:
            raise ValueError("--early-stopping needs --eval-data to measure improvement")
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping))
    trainer = VLMTrainer(model=run.model, args=args, train_dataset=run.train_set, eval_dataset=run.eval_set or None,
                         data_collator=run.collator, callbacks=callbacks, throughput=throughput,
                         sample_weights=run.sample_weights, extra_eval=extra_eval, feature_cache=run.cache,
                         lengths=_grouping_lengths(config, run.train_set, run.processor, run.sample_weights, log),
                         role_learning_rates={"connector": config.connector_learning_rate}
                         if config.connector_learning_rate else None)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(ImagesProgressCallback(throughput))
    return trainer, throughput, best_metric


def _finalize(run: Run, trainer: VLMTrainer, throughput: ThroughputCallback, best_metric: str, train_output,
              peak, log) -> dict:
    """Save the model (the best by the eval metric at the top, the last in `final/`), the task's after-training
    step (calibration), the run's metadata, and the summary with throughput, MFU and the final evaluation."""
    config, output, task = run.config, run.output, run.task
    if run.eval_records:
        last = get_last_checkpoint(output)  # by step number: checkpoint-10 comes after checkpoint-9
        if last:
            _copy_model_files(Path(last), output / "final")
            run.processor.save_pretrained(output / "final")
    trainer.save_model(str(output))
    run.processor.save_pretrained(output)
    with run.phase("after_training"):
        calibration = (task.after_training(trainer.model, run.processor, run.eval_records, config.batch_size, log=log)
                       if run.eval_records else None)
    metadata = {**task.metadata(), **recorded_base(config.model, output), MODEL_CONFIG_KEY: run.model_config or None,
                "method": config.method, "train": config.train, "image_size": config.image_size, "image_splitting": config.image_splitting,
                "max_length": config.max_length, "best_checkpoint": trainer.state.best_model_checkpoint}
    (output / RUN_METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    record = task.training_record(run.train_set, {"balance": run.balance, "best_metric": best_metric,
                                                  "calibration": calibration, "config": to_dict(config)})
    if record is not None:  # for people and tools reading the run
        (output / "training_metadata.json").write_text(json.dumps({**metadata, **record}, indent=2))
    summary = throughput.summary(trainer.state)
    summary.update(trainer_samples_per_second=train_output.metrics.get("train_samples_per_second"),
                   truncated_answers=run.collator.truncated_answers, calibration=calibration, **run.hooks,
                   skipped_when_read={"count": trainer.skipped_count, "first": trainer.skipped_when_read},
                   feature_cache=run.cache.summary() if run.cache is not None else None)  # before the MFU batch
    with run.phase("mfu"):
        flops = _flops_per_token(trainer, run.collator, run.train_set, config) if peak else None
    summary.update(mfu_summary(flops, summary["tokens_per_second"], peak))
    if run.cache is not None:
        log(run.cache.describe())
    if run.eval_records:
        with run.phase("final_eval"):
            summary.update(_final_evaluation(trainer, task, calibration))
    summary["phase_seconds"] = run.seconds
    if trainer.is_world_process_zero():
        (output / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_training_curves(trainer.state.log_history, output / "training_curves.png", throughput.steps)
    log(f"saved {output} — {summary['samples_per_second']} samples/s, {summary['tokens_per_second']} tokens/s, "
        f"peak memory {summary['peak_bytes'] / 2**30:.2f} GiB ({summary['device']})"
        + (f", MFU {summary['mfu']:.1%} of a measured {summary['matmul_peak_dtype']} matmul peak" if "mfu" in summary else ""))
    return summary


def _final_evaluation(trainer: VLMTrainer, task: Task, calibration: dict | None) -> dict:
    """The final weights' eval loss and the task's headline metrics. The last in-training evaluation is reused
    when it saw these very weights (it ran at the last step); a post-training step that scored the evaluation
    set with them hands its metrics over, so that the evaluation computes only the loss."""
    scored = (calibration or {}).get("eval_metrics")
    last = trainer.last_evaluation
    if last is not None and last[0] == weights_fingerprint(trainer.model):
        final_eval = {**last[1], **{f"eval_{k}": v for k, v in (scored or {}).items()}}
    else:
        extra_eval, trainer.extra_eval = trainer.extra_eval, (None if scored else trainer.extra_eval)
        final_eval = {**trainer.evaluate(), **{f"eval_{k}": v for k, v in (scored or {}).items()}}
        trainer.extra_eval = extra_eval
    return {k: v for k, v in final_eval.items() if k == "eval_loss" or k.removeprefix("eval_") in task.headline_metrics}


def _region_slots(model: str, task: Task, records: list, processor, log) -> dict | None:
    """Config overrides giving the model region slots (what the image's regions hold, written as text after
    the image) when the task asks for them and the family has them; the processor is set to match."""
    request = task.region_request(records)
    family = family_for(model_type_of(model))
    hook = family.hook("region_slots") if family is not None and request else None
    if hook is None:
        return None
    overrides = hook(model, processor, request["classes"], request["grid"], request["slots"], request["looks"])
    log(f"region slots: {overrides['region_slots']} after each image, each a region token and a line "
        f"'<class or none>: [x1,y1,x2,y2]' the LM can answer from ({processor.image_seq_len} image tokens; "
        f"{'labels read from a second look at each box; ' if overrides['region_looks'] else ''}--region-slots 0 "
        f"turns them off)")
    return overrides


def _add_self_replay(config: TrainConfig, task, model, processor, records, train_set, sample_weights, log) -> int:
    """Kept skills: the model's own answers to general prompts, added to the training set (weight 1 under
    either balance mode, so they keep their share). Returns how many examples were added."""
    if not (config.keep_skills and task.keeps_skills_by_replay):
        return 0
    from ..tasks.self_replay import DEFAULT_SHARE, replay_count, self_replay_examples

    share = DEFAULT_SHARE if config.replay_share is None else config.replay_share
    added = self_replay_examples(model, processor, records, replay_count(len(train_set), share),
                                 system_prompt=config.system_prompt, batch_size=config.batch_size, seed=config.seed,
                                 log=log)
    train_set.items += added
    if sample_weights is not None:
        sample_weights += [1.0] * len(added)
    if train_set.weights is not None:
        train_set.weights += [1.0] * len(added)
    return len(added)


def _grouping_lengths(config: TrainConfig, train_set, processor, sample_weights, log) -> list[int] | None:
    """Answer lengths for --group-by-length, or None (off, or a weighted sampler / several processes draw)."""
    if not config.group_by_length:
        return None
    if isinstance(train_set, StreamExamples):
        log("--group-by-length is off: a streamed set is read in the order it comes")
        return None
    if sample_weights is not None:
        log("--group-by-length is off: --balance sampler draws the examples")
        return None
    return train_set.answer_lengths(processor.tokenizer)
