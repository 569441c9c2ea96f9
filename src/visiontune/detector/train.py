"""`visiontune detector train`: a short plain-PyTorch loop (not HF Trainer: the model is not a
transformers model, the loss needs per-image Hungarian matching, and EMA + COCO-mAP model selection are
simpler to read here than as Trainer callbacks). Split the DETR way: `train_one_epoch` and `evaluate` do one
thing each; `train_detector` sets up, resumes, selects the best and saves.

Each epoch: augmented batches -> bf16 autocast on CUDA (fp32 on CPU) -> one-to-one loss -> AdamW step with
warmup + cosine decay -> EMA update. Every `eval_every` epochs the EMA weights are scored with COCO mAP on
--eval-data; the best is saved to --output (detector.json + model.safetensors), the training state to
--output/checkpoint.pt after every epoch (`--resume` continues from it). Without --eval-data the last
EMA weights are the model.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.loading import data_spec, load_box_records, resolve_split
from .augment import AugmentSettings
from .config import DetectorTrainSettings
from .data import DetectionDataset, collate
from .ema import TrainedWeightsEMA
from .evaluation import run_and_score, write_metrics, write_overlays
from .loss import LossWeights, detector_loss
from .model import Detector

CHECKPOINT_FILE = "checkpoint.pt"


def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, device): under torchrun / accelerate launch (WORLD_SIZE > 1) the process group is
    started here (NCCL on GPUs, gloo on CPUs) and each process takes its own GPU."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return torch.distributed.get_rank(), world, device


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _load(settings: DetectorTrainSettings, path: str, images_dir, split, classes=None, max_samples=None,
          purpose: str = "train", log=print):
    spec, read = resolve_split(data_spec(path, settings, images_dir=images_dir, split=split, max_samples=max_samples),
                               purpose, "--split" if purpose == "train" else "--eval-split")
    loaded = load_box_records(spec, classes, log=log)
    log(f"{'data' if purpose == 'train' else 'eval data'}: {path}: {read}, {len(loaded[0])} records")
    return loaded


def save_checkpoint(state: dict, path: Path) -> None:
    """Write to a temporary name, then rename: a run killed mid-write leaves the previous checkpoint whole."""
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    partial.replace(path)


def load_checkpoint(path: Path) -> dict:
    """The training state, unpickled with `weights_only=True` (tensors, numbers, strings and containers only:
    opening someone else's run folder cannot run code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one, and what to do
        raise ValueError(f"{path}: not a readable detector checkpoint ({type(error).__name__}: {error}); delete it "
                         f"and train without --resume, or resume from a complete run folder") from error


def _schedule(optimizer, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _objects_per_process(targets: list[dict], device: torch.device) -> float | None:
    """Under DDP: the batch's objects over all processes, divided by their number (None: one process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    count = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    torch.distributed.all_reduce(count)
    return float(count) / torch.distributed.get_world_size()


def train_one_epoch(detector: Detector, loader, optimizer, scheduler, ema: TrainedWeightsEMA | None,
                    device: torch.device, use_bf16: bool, max_grad_norm: float,
                    loss_weights: LossWeights = LossWeights(), forward=None) -> dict:
    """One pass over `loader`; returns the steps taken, images seen, seconds and the mean of each loss term.
    `forward`: the module to run (a DistributedDataParallel wrapper of `detector` under torchrun)."""
    forward = forward or detector
    trainable = [p for p in detector.parameters() if p.requires_grad]
    started, totals, seen, steps = time.perf_counter(), {}, 0, 0
    for pixels, targets in loader:
        pixels = pixels.to(device, non_blocking=True)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            outputs = forward(pixels)
        losses = detector_loss(outputs, targets, detector.config.image_size, loss_weights,
                               num_objects=_objects_per_process(targets, device))
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(detector)
        steps += 1
        seen += len(pixels)
        for name, value in losses.items():
            totals[name] = totals.get(name, 0.0) + float(value.detach()) * len(pixels)
    seconds = time.perf_counter() - started
    return {"steps": steps, "images": seen, "seconds": seconds,
            "losses": {name: value / max(seen, 1) for name, value in totals.items()}}


def evaluate(detector: Detector, records, classes: list[str], category_ids: dict[str, int], batch_size: int):
    """(COCO metrics, predictions) of the detector as it is (apply the EMA weights first to score those)."""
    return run_and_score(lambda images: detector.predict(images, threshold=0.0), records, classes, category_ids,
                         detector.config.score_threshold, batch_size)


def _optimizer(detector: Detector, settings: DetectorTrainSettings) -> torch.optim.Optimizer:
    trainable = [p for p in detector.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim > 1]
    no_decay = [p for p in trainable if p.ndim <= 1]  # norms, biases, level scales
    return torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=settings.learning_rate)


@dataclass
class Engine:
    """What the epochs run on: the model (and its DDP wrapper), the data, the optimiser, schedule and EMA."""

    detector: Detector
    forward: torch.nn.Module
    dataset: DetectionDataset
    loader: torch.utils.data.DataLoader
    sampler: torch.utils.data.DistributedSampler | None
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: TrainedWeightsEMA | None
    device: torch.device
    use_bf16: bool
    rank: int
    world: int


def train_detector(settings: DetectorTrainSettings, log=print) -> dict:
    """Set up, resume, train the epochs (selecting the best on --eval-data), save and score the best."""
    if not settings.data:
        raise ValueError("detector train needs --data (a COCO instances JSON, a YOLO folder or a dataset)")
    random.seed(settings.seed), np.random.seed(settings.seed), torch.manual_seed(settings.seed)
    output = Path(settings.output)
    output.mkdir(parents=True, exist_ok=True)
    records, classes, category_ids = _load(settings, settings.data, settings.images_dir, settings.split,
                                           max_samples=settings.max_samples, log=log)
    eval_records = None
    if settings.eval_data:
        eval_records, _, category_ids = _load(settings, settings.eval_data, settings.eval_images_dir,
                                              settings.eval_split, classes=classes, purpose="eval", log=log)
    detector = _create(settings, classes, len(records), log)
    engine = _engine(settings, detector, records, classes)
    if engine.rank:  # one process speaks and writes; the others train
        log = lambda *_: None
    progress = _resume(engine, output / CHECKPOINT_FILE, log) if settings.resume else \
        {"history": [], "best": None, "epoch": 0}
    best_scored = _train_epochs(settings, engine, progress, eval_records, classes, category_ids, output, log)
    summary = {"classes": classes, "parameters": detector.parameter_counts(), "best": progress["best"],
               "history": progress["history"], "settings": asdict(settings), "processes": engine.world}
    if engine.world > 1:  # every process leaves the group together: one exiting while gloo still runs aborts it
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if engine.rank:
        return summary
    (output / "train_summary.json").write_text(json.dumps(summary, indent=2))
    if eval_records:
        if best_scored is None:  # resumed, and the best model was saved by the earlier run: score it again
            final = Detector.from_pretrained(output, device=engine.device)
            best_scored = evaluate(final, eval_records, classes, category_ids, settings.batch_size)
        summary["eval"] = _write_best(best_scored, eval_records, classes, detector, progress["best"], output, log)
    return summary


def _create(settings: DetectorTrainSettings, classes: list[str], images: int, log) -> Detector:
    size = settings.image_size
    detector = Detector.create(classes, backbone=settings.backbone, preset=settings.preset, log=log,
                               image_size=(size, size) if size else None, neck_channels=settings.neck_channels,
                               lora_rank=settings.lora_rank, peak_window=settings.peak_window,
                               peak_across_levels=settings.peak_across_levels)
    counts = detector.parameter_counts()
    log(f"detector {settings.preset} on {detector.config.backbone}: {counts['total'] / 1e6:.2f}M parameters "
        f"(backbone {counts['backbone'] / 1e6:.2f}M frozen), {counts['trainable'] / 1e6:.2f}M trainable "
        f"(pyramid+neck+head{' + LoRA' if counts['lora'] else ''}); {len(classes)} classes, {images} images, "
        f"input {detector.config.image_size[1]}x{detector.config.image_size[0]}")
    return detector


def _engine(settings: DetectorTrainSettings, detector: Detector, records, classes: list[str]) -> Engine:
    rank, world, device = _distributed(resolve_device(settings.device))
    use_bf16 = settings.bf16 if settings.bf16 is not None else device.type == "cuda"
    detector.to(device).train()
    forward = detector
    if world > 1:  # --batch-size is per process; gradients are averaged, the loss normalised globally
        forward = torch.nn.parallel.DistributedDataParallel(detector, device_ids=[device] if device.type == "cuda" else None)
    dataset = DetectionDataset(records, classes, detector.config.image_size,
                               AugmentSettings() if settings.augment else None, seed=settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    sampler = torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=settings.seed) if world > 1 else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, shuffle=sampler is None,
                                         sampler=sampler, collate_fn=collate, num_workers=settings.workers,
                                         generator=generator, drop_last=len(dataset) > settings.batch_size,
                                         pin_memory=device.type == "cuda")
    optimizer = _optimizer(detector, settings)
    total_steps = settings.epochs * len(loader)
    scheduler = _schedule(optimizer, min(settings.warmup_steps, max(1, total_steps // 10)), total_steps)
    ema = TrainedWeightsEMA(detector, settings.ema_decay) if settings.ema_decay > 0 else None
    return Engine(detector, forward, dataset, loader, sampler, generator, optimizer, scheduler, ema, device,
                  use_bf16, rank, world)


def _resume(engine: Engine, path: Path, log) -> dict:
    """Load the training state saved after the last finished epoch; returns its history, best and epoch."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nothing to resume; train without --resume first")
    state = load_checkpoint(path)
    engine.detector.load_state_dict(state["trained"], strict=False)
    engine.optimizer.load_state_dict(state["optimizer"])
    engine.scheduler.load_state_dict(state["scheduler"])
    if engine.ema is not None and state.get("ema"):
        engine.ema.load_state_dict(state["ema"])
    engine.generator.set_state(state["loader_rng"])
    log(f"resumed from {path} after epoch {state['epoch']}")
    return {"history": state["history"], "best": state["best"], "epoch": state["epoch"]}


def _train_epochs(settings: DetectorTrainSettings, engine: Engine, progress: dict, eval_records, classes,
                  category_ids, output: Path, log):
    """The epochs from `progress["epoch"]` on, updating `progress`; returns the best model's (metrics,
    predictions) when it was scored in this run."""
    detector, ema, best_scored = engine.detector, engine.ema, None
    trained_names = {name for name, p in detector.named_parameters() if p.requires_grad}
    step = progress["epoch"] * len(engine.loader)
    for epoch in range(progress["epoch"], settings.epochs):
        engine.dataset.epoch = epoch
        if engine.sampler is not None:
            engine.sampler.set_epoch(epoch)
        done = train_one_epoch(detector, engine.loader, engine.optimizer, engine.scheduler, ema, engine.device,
                               engine.use_bf16, settings.max_grad_norm, forward=engine.forward)
        if engine.rank:
            continue
        step += done["steps"]
        row = {"epoch": epoch + 1, "step": step, "lr": engine.scheduler.get_last_lr()[0],
               "images_per_second": done["images"] / done["seconds"],
               **{f"loss_{k}": v for k, v in done["losses"].items()}}
        evaluate_now = eval_records and ((epoch + 1) % settings.eval_every == 0 or epoch + 1 == settings.epochs)
        with (ema.applied(detector) if ema is not None else contextlib.nullcontext()):
            if evaluate_now:
                metrics, predictions = evaluate(detector, eval_records, classes, category_ids, settings.batch_size)
                detector.train()
                row.update(eval_AP=metrics["AP"], eval_AP50=metrics["AP50"], eval_duplicate_rate=metrics["duplicate_rate"])
                if progress["best"] is None or metrics["AP"] > progress["best"]["AP"]:
                    progress["best"] = {"epoch": epoch + 1, "AP": metrics["AP"], "AP50": metrics["AP50"]}
                    best_scored = metrics, predictions  # the saved model's scores: no need to predict again
                    detector.save_pretrained(output)
            elif not eval_records:
                detector.save_pretrained(output)
        progress["history"].append(row)
        progress["epoch"] = epoch + 1
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        with open(output / "train_log.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        save_checkpoint({"trained": {k: v for k, v in detector.state_dict().items() if k in trained_names},
                         "optimizer": engine.optimizer.state_dict(), "scheduler": engine.scheduler.state_dict(),
                         "ema": ema.state_dict() if ema is not None else None, "history": progress["history"],
                         "best": progress["best"], "epoch": epoch + 1, "loader_rng": engine.generator.get_state()},
                        output / CHECKPOINT_FILE)
    return best_scored


def _write_best(scored, eval_records, classes, detector: Detector, best: dict, output: Path, log) -> dict:
    """metrics.json and overlays of the best model; its headline metrics for the summary."""
    metrics, predictions = scored
    write_metrics(output / "metrics.json", metrics)
    write_overlays(output / "overlays", eval_records, predictions, classes, detector.config.score_threshold)
    log(f"best epoch {best['epoch']}: AP {metrics['AP']:.3f} AP50 {metrics['AP50']:.3f} "
        f"duplicate rate {metrics['duplicate_rate']:.4f} at score {metrics['score_threshold']}"
        + (f", {metrics['duplicate_rate_at_f1_threshold']:.4f} at the best-F1 score {metrics['f1_threshold']:.3f}"
           if metrics.get("f1_threshold") is not None else "") + f"; model in {output}")
    return {k: v for k, v in metrics.items() if k not in ("detections", "per_class_AP")}
