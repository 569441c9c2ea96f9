"""Typed run configurations. A YAML file (`--config run.yaml`) sets any field; CLI flags override it.

Field names are the YAML keys and, with '-' for '_', the CLI flags: `lora_r` <-> `--lora-r`.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data.options import DataOptions
from .option_types import convert, convert_fields

DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"


PROMPT_HELP = "instruction given with each image; classify fills {classes} and {descriptions}"
MODE_HELP = "the task's prediction mode; classify: score (probability of every class; default) or generate"
TASK_OPTIONS_HELP = "the task's own options ({name: value}); as flags and YAML keys they are given by name"


@dataclass
class TrainConfig(DataOptions):
    """`visiontune train`: the data options (`DataOptions`), model and optimisation; the task's own options
    (its folder's `TrainOptions`) in `task_options`."""

    task: str = field(default="caption", metadata={"help": "caption|classify|detect|chat"})
    task_options: dict = field(default_factory=dict, metadata={"cli": False, "help": TASK_OPTIONS_HELP})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "hub id or folder of an image-text-to-text model"})
    data: str = field(default="", metadata={"help": "training data: COCO JSON, JSONL/CSV, save_to_disk folder or hub id"})
    eval_data: str | None = field(default=None, metadata={"help": "evaluation data (same formats)"})
    output: str = field(default="runs/visiontune", metadata={"help": "run folder"})
    eval_split: str | None = field(default=None, metadata={"help": "split for --eval-data"})
    max_eval_samples: int | None = None
    # prompts and task options
    prompt: str | None = field(default=None, metadata={"help": PROMPT_HELP})
    prompt_template: str | None = field(default=None, metadata={"help": "same as --prompt"})
    system_prompt: str | None = field(default=None, metadata={"help": "system instruction; {classes}/{descriptions} filled"})
    balance: str = field(default="auto", metadata={"help": "class imbalance: none|sampler|loss; auto = sampler "
                                                          "for detect (positive queries), none otherwise"})
    feature_cache: bool = field(default=True, metadata={
        "help": "compute a frozen vision encoder's features once per image and reuse them (where exact: the "
                "family supports it, the encoder is frozen and has no dropout); --no-feature-cache to recompute"})
    probe_start: bool = field(default=True, metadata={
        "help": "classify and detect, composed VLMs: start the image summary token from linear probes of the "
                "training images (the class, or which classes are present; LP-FT); --no-probe-start to train "
                "from the model as it is"})
    keep_skills: bool = field(default=True, metadata={
        "help": "classify and detect: mix the model's own answers to general prompts (describe the image) on "
                "training images into training, so the fine-tune keeps what it could do; --no-keep-skills to "
                "train on the task alone"})
    replay_share: float | None = field(default=None, metadata={
        "help": "the share of training examples that replay the model's own answers (default 0.1)"})
    # model and method
    method: str = field(default="lora", metadata={"help": "lora|qlora|full"})
    train: str | None = field(default=None, metadata={"help": "'+'-joined parts to train: vision, connector, language, all"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input; > 0 copies every adapted "
                                                               "layer's input (~20%% slower steps)"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on CUDA, fp32 on CPU)|bf16|fp16|fp32"})
    image_size: int | None = field(default=None, metadata={"help": "longest image edge / pixel budget (family-specific)"})
    image_splitting: bool | None = field(default=None, metadata={"help": "SmolVLM/Idefics3 tiling on/off"})
    max_length: int | None = field(default=None, metadata={"help": "max tokens per example; never cuts image tokens"})
    # optimisation
    epochs: float | None = field(default=None, metadata={
        "help": "passes over the training data (default 3; 1 for detection with region slots, whose answers the "
                "LM learns to copy in one pass)"})
    max_steps: int = -1
    batch_size: int = 8
    grad_accum: int = 1
    group_by_length: bool = field(default=False, metadata={
        "help": "batch examples of similar answer length together (less padding when answers vary, e.g. "
                "detection box lists); the order stays random across groups"})
    learning_rate: float | None = field(default=None, metadata={
        "help": "default 2e-4 for LoRA (1e-3 with region slots), 2e-5 for full"})
    connector_learning_rate: float | None = field(default=None, metadata={
        "help": "learning rate of the connector (projector) when it trains (default: --learning-rate)"})
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    eval_steps: int | None = field(default=None, metadata={"help": "evaluate (and checkpoint) every N steps"})
    save_steps: int | None = field(default=None, metadata={"help": "checkpoint every N steps (default: each epoch)"})
    save_total_limit: int = 2
    logging_steps: int = 10
    early_stopping: int | None = field(default=None, metadata={"help": "stop after N evaluations without improvement"})
    resume: bool = field(default=False, metadata={
        "help": "resume from the last checkpoint in --output (the same task, base model and data)"})
    overwrite: bool = field(default=False, metadata={"help": "replace the run that --output holds"})
    num_workers: int = 2
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard|wandb|none"})
    preflight: bool = field(default=True, metadata={"help": "run the pre-flight check before step one"})
    measure_mfu: bool = field(default=True, metadata={
        "help": "count a batch's FLOPs after training and measure this device's matmul peak (~1 s) for "
                "summary.json's MFU"})

    def __post_init__(self):
        check_types(self, "train")


@dataclass
class InferenceTaskOptions:
    """Task options of `predict` and `eval` (the run's visiontune.json supplies what is not given)."""

    prompt: str | None = field(default=None, metadata={"help": PROMPT_HELP})
    prompt_template: str | None = field(default=None, metadata={"help": "same as --prompt"})
    system_prompt: str | None = None
    class_names: list[str] | None = field(default=None, metadata={"help": "the classes (default: the run's)"})
    classes: list[str] | None = field(default=None, metadata={"help": "same as --class-names; detect: the classes "
                                                                      "to look for"})
    mode: str | None = field(default=None, metadata={"help": MODE_HELP})
    task_options: dict = field(default_factory=dict, metadata={"cli": False, "help": TASK_OPTIONS_HELP})


BASE_MODEL_HELP = "a LoRA run's base model, instead of the one its visiontune.json records (a moved or renamed base)"
ADAPTER_HELP = ("NAME=RUN: a LoRA run over --model, by name (repeat for more); --model is loaded once with every "
                "adapter on it, and each adapter answers with its run's task")

TASK_ROUTING_HELP = ("a classify or detect LoRA run asked for another task (--task) answers with its base model, "
                     "as before the fine-tune (the LoRA holds its own task); --no-task-routing to ask the "
                     "fine-tuned weights")
INFERENCE_DTYPE_HELP = ("auto (bf16 on CUDA, fp32 on CPU)|bf16|fp16|fp32; for an ONNX export (--model DIR/onnx) "
                        "the variant: auto (fp32)|int8|q4|fp16; for a GGUF export (--model DIR) the file: auto "
                        "(f16)|q8_0|q4_k_m...")


@dataclass
class PredictConfig(InferenceTaskOptions):
    model: str = ""
    base_model: str | None = field(default=None, metadata={"help": BASE_MODEL_HELP})
    adapter: list[str] | None = field(default=None, metadata={"help": ADAPTER_HELP + "; each image gets a row per adapter"})
    images: list[str] = field(default_factory=list)
    output: str | None = None
    task: str | None = field(default=None, metadata={"help": "default: the run's task (its visiontune.json), else caption"})
    task_routing: bool = field(default=True, metadata={"help": TASK_ROUTING_HELP})
    batch_size: int = 8
    max_new_tokens: int | None = field(default=None, metadata={"help": "default 64; detect 512"})
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    dtype: str = field(default="auto", metadata={"help": INFERENCE_DTYPE_HELP})
    skip_bad_images: bool = False
    draw: str | None = field(default=None, metadata={"help": "detect: folder to write each image with its boxes drawn"})

    def __post_init__(self):
        check_types(self, "inference")


@dataclass
class EvalConfig(DataOptions, InferenceTaskOptions):
    data: str = ""
    task: str | None = field(default=None, metadata={"help": "default: the run's task (its visiontune.json), else caption"})
    task_routing: bool = field(default=True, metadata={"help": TASK_ROUTING_HELP})
    model: str | None = None
    base_model: str | None = field(default=None, metadata={"help": BASE_MODEL_HELP})
    adapter: list[str] | None = field(default=None, metadata={"help": ADAPTER_HELP + "; each is scored, its report "
                                                                      "in OUTPUT/NAME"})
    predictions: str | None = None
    output: str | None = None
    batch_size: int = 8
    max_new_tokens: int | None = field(default=None, metadata={"help": "default 64; detect 512"})
    num_beams: int = 1
    dtype: str = field(default="auto", metadata={"help": INFERENCE_DTYPE_HELP})
    grid_size: int = 12

    def __post_init__(self):
        check_types(self, "inference")


def check_types(config, kind: str) -> None:
    """Every option, the task's own included, converted to its declared type (or an error naming it)."""
    from .tasks import option_fields

    convert_fields(config)
    fields = option_fields(kind)
    config.task_options = {key: convert(key, value, fields[key][2]) if key in fields else value
                           for key, value in config.task_options.items()}


def load_yaml(path: str | Path) -> dict:
    try:
        payload = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{path}{where}: not valid YAML ({problem})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: a config file must be a mapping of option: value")  # noqa: TRY004 (bad file content)
    return {key.replace("-", "_"): value for key, value in payload.items()}


def option_kind(cls) -> str:
    """Which of a task's option sets a config class takes: "train" or "inference"."""
    return "train" if issubclass(cls, TrainConfig) else "inference"


def build_config(cls, overrides: dict[str, Any] | None = None, config_file: str | Path | None = None):
    """Defaults < YAML file < explicit overrides. A task's own options may be given by name, like any other;
    another task's option is an error naming its task; an unknown key is an error suggesting the nearest."""
    from .tasks import split_task_options

    values: dict[str, Any] = {}
    if config_file:
        values.update(load_yaml(config_file))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    default_task = next(f.default for f in dataclasses.fields(cls) if f.name == "task")
    values, own = split_task_options(values, option_kind(cls), values.get("task", default_task))
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        close = {key: difflib.get_close_matches(key, known, 1) for key in unknown}
        hints = [f"{key} (did you mean {close[key][0]}?)" if close[key] else key for key in unknown]
        listing = "" if all(close.values()) else f"; known: {', '.join(sorted(known))}"
        raise ValueError(f"unknown option(s) {', '.join(hints)} for {cls.__name__}{listing}")
    values["task_options"] = {**values.get("task_options", {}), **own}
    return cls(**values)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
