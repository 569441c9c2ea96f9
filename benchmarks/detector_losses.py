"""What leaves fewer duplicates without NMS: focal vs varifocal loss, with or without candidate relations.

CPU-sized study: the frozen backbone's features are computed once (no augmentation), then the pyramid + neck
+ head (+ relation layers) are trained on them for each variant from the same seed and batch order; COCO AP
and the duplicate rate at score >= 0.3 are printed every few epochs. A variant is a loss name, optionally
with "+relations" (`relation.py`, --relation-layers layers).

    python benchmarks/detector_losses.py --items .bench/fmnist --backbone .bench/dinov2-small --epochs 12
    python benchmarks/detector_losses.py --variants focal focal+relations --epochs 24
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from visiontune.data.loading import DataSpec, load_box_records
from visiontune.deploy.detector_io import to_pixel_boxes
from visiontune.models.detector.backbone import load_pretrained_vision_model
from visiontune.models.detector.config import DetectorConfig
from visiontune.models.detector.data import DetectionDataset
from visiontune.models.detector.evaluation import duplicate_rate, score_predictions
from visiontune.models.detector.loss import LossWeights, detector_loss
from visiontune.models.detector.model import Detector
from visiontune.zoo.canvases import write_canvases


def canvases(root: Path, name: str, count: int, seed: int, split: str, args) -> Path:
    if not (root / name / "instances.json").exists():
        write_canvases(root / name, count=count, seed=seed, size=args.size, objects=(1, 6),
                       scale=(args.size // 8, args.size * 3 // 8), classes_per_canvas=3, split=split,
                       source=args.items or "zoo:fashion-mnist")
    return root / name / "instances.json"


@torch.no_grad()
def backbone_features(model: Detector, dataset: DetectionDataset) -> torch.Tensor:
    batches = []
    for start in range(0, len(dataset), 16):
        pixels = torch.stack([dataset[i][0] for i in range(start, min(start + 16, len(dataset)))])
        batches.append(model.backbone((pixels - model.mean) / model.std))
    return torch.cat(batches)


def train_and_score(variant: str, args, vision, config, train_features, targets, val_features, val, ids,
                    on_batch=None, on_epoch=None) -> tuple[list[dict], Detector]:
    """Train one variant on the cached features, scoring every epochs // 4 epochs. Optional hooks for the
    diagnostics (`detector_duplicates.py`): on_batch(outputs, batch_indices) after each forward, on_epoch(epoch,
    model) after each epoch."""
    kind, _, extra = variant.partition("+")
    if extra not in ("", "relations"):
        raise ValueError(f"unknown variant {variant!r}: write a loss name, optionally followed by +relations")
    torch.manual_seed(args.seed)
    config = dataclasses.replace(config, relation_layers=args.relation_layers if extra else 0,
                                 relation_kind=args.relation_kind, max_filter=args.max_filter)
    model = Detector(config, vision).train()
    size = config.image_size
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=0.05)
    steps = args.epochs * (len(targets) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.learning_rate, total_steps=steps, pct_start=0.05)
    weights = LossWeights(kind=kind, rank=args.rank)

    def detect(features):  # Detector.detect from cached features
        return model.top_detections(model.forward_from_backbone(features, size))

    rows, started, order = [], time.perf_counter(), torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        permutation = torch.randperm(len(targets), generator=order)
        for start in range(0, len(targets) - args.batch_size + 1, args.batch_size):
            index = permutation[start:start + args.batch_size]
            outputs = model.forward_from_backbone(train_features[index], size)
            if on_batch is not None:
                on_batch(outputs, index.tolist())
            loss = detector_loss(outputs, [targets[i] for i in index], size, weights)["total"]
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
        if (epoch + 1) % max(1, args.epochs // 4) == 0:
            model.eval()
            with torch.no_grad():
                batches = [detect(val_features[start:start + 16]) for start in range(0, len(val), 16)]
            model.train()
            predictions = to_predictions(batches, [(r.width, r.height) for r in val], config.classes)
            rows.append({"epoch": epoch + 1, "seconds": round(time.perf_counter() - started),
                         **study_row(predictions, val, config.classes, ids)})
            print(variant, rows[-1], flush=True)
        if on_epoch is not None:
            on_epoch(epoch + 1, model)
    return rows, model


def cached_dense_head(args, study: dict, loss: str) -> Detector:
    """The dense detector (no relations) trained with `loss` by `train_and_score`, saved under --output the first
    time and loaded after, so the studies built on it (`detector_relation_stage.py`, `detector_peaks.py`) share it."""
    variant = ("_maxfilter" if args.max_filter else "") + (f"_head{args.head_convs}" if args.head_convs != 2 else "") \
        + (f"_neck{args.neck_depth}" if args.neck_depth != 1 else "")
    path = Path(args.output) / f"dense_{loss}{variant}_{args.epochs}e_s{args.seed}.pt"
    if path.exists():
        model = Detector(study["config"], study["vision"])
        model.load_state_dict(torch.load(path))
        return model
    _, model = train_and_score(loss, args, **study)  # no "+relations": the dense head alone
    torch.save(model.state_dict(), path)
    return model


def to_predictions(batches: list[tuple], sizes: list[tuple[int, int]], classes: list[str]) -> list[dict]:
    """Top-k batches (normalised xyxy boxes, scores, labels), images in order -> per image {"boxes": [...]} in
    the pixels of its (width, height)."""
    predictions = []
    for boxes, scores, labels in batches:
        for image_boxes, image_scores, image_labels in zip(boxes.numpy(), scores.numpy(), labels.numpy()):
            width, height = sizes[len(predictions)]
            predictions.append({"boxes": to_pixel_boxes(image_boxes, image_scores, image_labels, width, height, classes)})
    return predictions


def study_row(predictions: list[dict], records, classes: list[str], ids: dict) -> dict:
    """What every study prints: COCO AP, the duplicate rates at 0.3, 0.5 and the best-F1 threshold, and F1."""
    metrics = score_predictions(predictions, records, classes, ids, 0.3)
    return {**{k: round(metrics[k], 4) for k in ("AP", "AP50", "AR100", "duplicate_rate")},
            "detections@0.3": metrics["detections_above_threshold"],
            "duplicate_rate@0.5": round(duplicate_rate(predictions, 0.5)[0], 4),
            "f1_threshold": round(metrics["f1_threshold"] or 0, 3), "f1": round(metrics["f1"], 4),
            "duplicate_rate@f1": round(metrics.get("duplicate_rate_at_f1_threshold", 0), 4)}


def study_arguments(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--output", default="runs/bench_detector_losses")
    parser.add_argument("--items", default=None, help="folder of Fashion-MNIST idx files (default: the zoo's)")
    parser.add_argument("--backbone", default="dinov2-small")
    parser.add_argument("--size", type=int, default=224, help="canvas side = detector input side")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--val", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--relation-layers", type=int, default=2)
    parser.add_argument("--relation-kind", default="attention", choices=("attention", "pooling"))
    parser.add_argument("--max-filter", action="store_true", help="the head's 3D max-filtering gate (head.py)")
    parser.add_argument("--rank", type=float, default=0.0, help="weight of the near-duplicate ranking term")
    parser.add_argument("--peak-window", type=int, default=0,
                        help="local-peak decoding (peaks.py); 0, the default here: the one-to-one head's own top-k")
    parser.add_argument("--peak-across-levels", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--head-convs", type=int, default=2, help="3x3 convs in each head tower (detector default 2)")
    parser.add_argument("--neck-depth", type=int, default=1, help="Mix-FFN blocks per level (detector default 1)")
    parser.add_argument("--strides", type=int, nargs="+", default=None,
                        help="pyramid strides (default: the detector's, 8 16 32)")
    return parser


def prepare_study(args) -> dict:
    """Canvases (written once under --output), the frozen backbone's features of every canvas, the targets."""
    torch.manual_seed(args.seed)
    root = Path(args.output)
    quiet = {"log": lambda *_: None}
    train, classes, ids = load_box_records(DataSpec(str(canvases(root, "train", args.train, 0, "train", args))), **quiet)
    val, _, _ = load_box_records(DataSpec(str(canvases(root, "val", args.val, 1, "test", args))), classes, **quiet)
    vision, vision_config, mean, std = load_pretrained_vision_model(args.backbone, **quiet)
    config = DetectorConfig(classes=classes, backbone=args.backbone, backbone_config=vision_config,
                            image_size=(args.size, args.size), image_mean=mean, image_std=std,
                            peak_window=args.peak_window, peak_across_levels=args.peak_across_levels,
                            head_convs=args.head_convs, neck_depth=args.neck_depth,
                            **({"strides": tuple(args.strides)} if args.strides else {}))
    probe = Detector(config, vision).eval()
    train_set = DetectionDataset(train, classes, config.image_size)
    return {"vision": vision, "config": config, "train_features": backbone_features(probe, train_set),
            "targets": [train_set[i][1] for i in range(len(train_set))],
            "val_features": backbone_features(probe, DetectionDataset(val, classes, config.image_size)),
            "val": val, "ids": ids}


def main() -> None:
    parser = study_arguments()
    parser.add_argument("--variants", nargs="+", default=["varifocal", "focal"],
                        help="loss names, each optionally +relations (e.g. focal+relations)")
    args = parser.parse_args()
    study = prepare_study(args)
    results = {variant: train_and_score(variant, args, **study)[0] for variant in args.variants}
    (Path(args.output) / "results.json").write_text(json.dumps({"settings": vars(args), "results": results}, indent=1))
    print(f"wrote {Path(args.output) / 'results.json'}")


if __name__ == "__main__":
    main()
