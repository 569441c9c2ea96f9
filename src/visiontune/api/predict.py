"""`visiontune predict`: images (files, URLs, folders, PIL) -> the task's predictions (+ JSONL, + drawings)."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import PredictConfig, build_config
from ..inference.base_predictor import BasePredictor
from ..models.run_base import is_adapter_folder, read_run_metadata, resolve_base
from ..runtime.exports import export_root, load_export_runtime
from ..tasks import routes_other_tasks, task_from_metadata, task_options


def load_predictor(path: str, task: str | None = None, dtype: str = "auto", log=print,
                   task_options: dict | None = None, base_model: str | None = None, task_routing: bool = True,
                   **kwargs) -> BasePredictor:
    """A model or run folder with its task; `task_options` (prompt, system_prompt, classes…) override what the
    run folder's visiontune.json says; `base_model` replaces a LoRA run's recorded base. An ONNX export (its
    folder or `onnx/` inside it) and a GGUF export (its folder or a .gguf file in it) run torch-free (onnxruntime,
    llama.cpp); `dtype` then picks the variant (ONNX: auto = fp32, int8, q4, fp16; GGUF: auto = f16, q8_0...).
    With `task_routing`, a LoRA run of a narrow task (classify, detect) asked for another task answers with its
    base model: the LoRA holds what the run learnt for its own task, the base what the model could do before."""
    from ..model_references import check_model_reference

    path = check_model_reference(str(path))
    base_model = check_model_reference(base_model, "--base-model") if base_model else None
    runtime = load_export_runtime(path, dtype)
    if runtime is not None:
        from ..runtime.predictor import ExportPredictor

        root = export_root(path)
        metadata = json.loads((root / "visiontune.json").read_text()) if (root / "visiontune.json").is_file() else {}
        return ExportPredictor(runtime, task_from_metadata(metadata, task, **(task_options or {})), **kwargs)
    answering, base_model = answering_model(path, task, base_model) if task_routing else (path, base_model)
    if answering != path:
        log(f"{path} is a LoRA run trained for {read_run_metadata(path)['task']}: {answering} answers {task}, "
            f"as before the fine-tune (--no-task-routing to ask the fine-tuned weights)")
        path = answering
    from ..inference.predictor import Predictor
    from ..models.vlm import load_for_inference

    model, processor, metadata = load_for_inference(path, dtype=dtype, log=log, base_model=base_model)
    return Predictor(model, processor, task_from_metadata(metadata, task, **(task_options or {})), **kwargs)


def routed_base(path: str, task: str | None, base_model: str | None = None) -> str | None:
    """The base of a LoRA run of a narrow task (classify, detect: the tasks that keep general skills by replay)
    when it is asked for another task; None when the run answers itself (chat and caption runs always do)."""
    metadata = read_run_metadata(path) if Path(path).is_dir() and is_adapter_folder(path) else {}
    trained = metadata.get("task")
    if task is None or trained == task or not routes_other_tasks(trained):
        return None
    return resolve_base(path, base_model)


def answering_model(path: str, task: str | None, base_model: str | None = None) -> tuple[str, str | None]:
    """(the model that answers `task` for `path`, its --base-model): the run itself, or the base it routes to,
    routed again for a LoRA run trained over another one."""
    while (routed := routed_base(path, task, base_model)) is not None:
        path, base_model = routed, None
    return path, base_model


BASE_NAME = "base"  # what the base model's own answers are called beside its adapters


def named_adapters(given: list[str] | None) -> dict[str, str]:
    """`--adapter NAME=RUN`, repeated, as {name: run}."""
    adapters = {}
    for item in given or []:
        name, _, run = item.partition("=")
        if not name or not run:
            raise ValueError(f"--adapter {item!r}: give NAME=RUN (e.g. --adapter caption=runs/caption)")
        if name in adapters:
            raise ValueError(f"--adapter: the name {name!r} is given twice")
        adapters[name] = run
    return adapters


def load_adapter_predictors(base: str, adapters: dict[str, str], dtype: str = "auto", log=print,
                            **kwargs) -> dict[str, BasePredictor]:
    """One predictor per named LoRA run over `base`, loaded once with every run's adapter on it by name (peft),
    each with its run's task, and `base` for the base model's own answers (a caption predictor). A run that
    gave its base region slots is the only adapter: the base is loaded with them, and `base` answers with the
    slots hidden, as the base alone does."""
    import torch
    from peft import PeftModel

    from ..inference.predictor import AdapterPredictor
    from ..models.vlm import load_base_model, load_processor, resolve_dtype

    slotted_run, overrides = _checked_adapter_runs(base, adapters)
    model = load_base_model(base, resolve_dtype(dtype), config_overrides=overrides)
    (first, first_run), *rest = adapters.items()
    model = PeftModel.from_pretrained(model, first_run, adapter_name=first)
    for name, run in rest:
        model.load_adapter(run, adapter_name=name)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    predictors = {name: AdapterPredictor(model, load_processor(run, log=log), task_from_metadata(read_run_metadata(run)),
                                         name, **kwargs) for name, run in adapters.items()}
    # With region slots the processor counts their tokens; the base predictor hides them while it answers.
    predictors[BASE_NAME] = AdapterPredictor(model, load_processor(slotted_run or base, log=log),
                                             task_from_metadata({}), None, **kwargs)
    log(f"{base}: adapters {', '.join(adapters)} loaded over one copy of the base (and {BASE_NAME!r}: the base alone)")
    return predictors


def _checked_adapter_runs(base: str, adapters: dict[str, str]) -> tuple[str | None, dict | None]:
    """Every run is a LoRA run over `base` under a name of its own; (the run that gave the base region slots,
    their config overrides), or (None, None)."""
    from ..models.vlm import MODEL_CONFIG_KEY, base_model_of

    slotted = None
    for name, run in adapters.items():
        if name == BASE_NAME:
            raise ValueError(f"--adapter {name}={run}: {BASE_NAME!r} names the base model itself; choose another name")
        if not is_adapter_folder(run):
            raise ValueError(f"--adapter {name}={run}: not a LoRA run (no adapter_config.json); serve it alone")
        recorded = base_model_of(run)
        if recorded != base and Path(recorded).resolve() != Path(base).resolve():
            raise ValueError(f"--adapter {name}={run}: trained over {recorded}, not {base}")
        if read_run_metadata(run).get(MODEL_CONFIG_KEY):
            slotted = run
    if slotted is not None and len(adapters) > 1:
        raise ValueError(f"--adapter: {slotted} gave its base region slots, which the other adapters were not "
                         f"trained with; serve it as the only adapter (--adapter NAME={slotted})")
    return slotted, read_run_metadata(slotted)[MODEL_CONFIG_KEY] if slotted else None


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def predict(config: PredictConfig | None = None, log=print, **overrides) -> list[dict]:
    """Run a model or run folder on images/URLs/folders; one result row per image; JSONL when `output` is set."""
    config = config or build_config(PredictConfig, overrides)
    if not config.images:
        raise ValueError("no images: pass --images FILE|URL|FOLDER [...]")
    images = [config.images] if isinstance(config.images, (str, Path)) else config.images  # predict(images="x.jpg")
    if config.adapter:
        return _predict_with_adapters(config, images, log)
    predictor = load_predictor(
        config.model, task=config.task, task_options=task_options(config), dtype=config.dtype, log=log,
        base_model=config.base_model, task_routing=config.task_routing,
        batch_size=config.batch_size, max_new_tokens=config.max_new_tokens, mode=config.mode,
        num_beams=config.num_beams, do_sample=config.do_sample,
        temperature=config.temperature, top_p=config.top_p)
    results = predictor.predict(images, skip_bad_images=config.skip_bad_images, log=log)
    if config.output:
        log(f"wrote {len(results)} predictions to {write_jsonl(results, config.output)}")
    if config.draw:
        log(f"drew {len(results)} images under {predictor.task.draw_predictions(results, config.draw)}")
    return results


def check_adapters_take_their_tasks(config) -> None:
    """With --adapter, each adapter answers with its run's task and options: none may be given."""
    if config.task or any(value is not None for key, value in task_options(config).items() if key != "seed"):
        raise ValueError("--adapter: each adapter answers with its own run's task and options; drop --task and the "
                         "task options, or use one run at a time (--model RUN)")


def _predict_with_adapters(config: PredictConfig, images: list, log) -> list[dict]:
    """Every named adapter over one copy of the base, each with its run's task: a row per image and adapter
    (its name under `adapter`), in the order the adapters were given."""
    check_adapters_take_their_tasks(config)
    adapters = named_adapters(config.adapter)
    predictors = load_adapter_predictors(config.model, adapters, dtype=config.dtype, log=log,
                                         batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                                         mode=config.mode, num_beams=config.num_beams)
    results = []
    for name in adapters:
        predictor = predictors[name]
        rows = [{"adapter": name, **row}
                for row in predictor.predict(images, skip_bad_images=config.skip_bad_images, log=log)]
        if config.draw:
            log(f"drew {len(rows)} images under {predictor.task.draw_predictions(rows, Path(config.draw) / name)}")
        results += rows
    if config.output:
        log(f"wrote {len(results)} predictions to {write_jsonl(results, config.output)}")
    return results
