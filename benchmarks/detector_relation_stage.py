"""Can the candidate-relation stage learn to stand duplicates down when the dense head under it holds still?

Cached-feature study (`detector_losses.py`): phase 1 trains the dense one-to-one detector (no relations) and
keeps it; phase 2 freezes it, caches its outputs on every canvas, and trains only the relation stage
(`relation.CandidateRelations`) on them, matched by `score_ordered_match` as in `detector_loss`. Trained
jointly, the stage chases a dense head whose scores (and so which candidate is "ahead") move every step;
here its inputs are fixed, so what it cannot learn here it cannot learn at all.

--score-noise adds Gaussian noise (in logits) to the dense scores the stage sees during training, and the
positives are matched on the noisy scores: every near-tie between neighbours becomes a fresh example of
"the better-scored one stays, the other stands down", which the few duplicates of the training canvases alone
do not give.

--stage-train N trains the stage on N fresh canvases instead (the dense head's outputs on images it never saw,
as on a user's new images, and more distinct scenes); --stage-views N on N augmented views of the dense
head's own training canvases (what a user has). The stage's seed is --seed unless --stage-seed is given.

Printed: the dense head's AP and duplicate rates, the same after a class-wise greedy NMS at IoU 0.7 (for
reference only: what suppression could reach; the detector itself never runs NMS), and the stage's rows.

    python benchmarks/detector_relation_stage.py --items .bench/fmnist --backbone .bench/dinov2-small \
        --val 240 --epochs 12 --stage-epochs 24 --relation-kind attention [--stage-train 2000 | --stage-views 7]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from detector_losses import (
    backbone_features,
    cached_dense_head,
    canvases,
    prepare_study,
    study_arguments,
    study_row,
    to_predictions,
)
from visiontune.data.loading import DataSpec, load_box_records
from visiontune.models.detector.augment import AugmentSettings
from visiontune.models.detector.box_ops import pairwise_iou
from visiontune.models.detector.data import DetectionDataset
from visiontune.models.detector.evaluation import DUPLICATE_IOU, duplicate_rate
from visiontune.models.detector.loss import LossWeights, detection_loss
from visiontune.models.detector.matcher import score_ordered_match
from visiontune.models.detector.model import Detector
from visiontune.models.detector.relation import CandidateRelations, gather_candidates


@torch.no_grad()
def dense_outputs(model: Detector, features: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The frozen detector's per-position features (B, N, C), logits, boxes, and the shared centres."""
    model.eval()
    parts = {"features": [], "logits": [], "boxes": []}
    for start in range(0, len(features), 16):
        levels = model.neck(model.pyramid(features[start:start + 16], size))
        logits, boxes, centres = model.head(levels, model.config.strides, size)
        parts["features"].append(torch.cat([x.flatten(2).transpose(1, 2) for x in levels], 1))
        parts["logits"].append(logits), parts["boxes"].append(boxes)
    return {**{name: torch.cat(values) for name, values in parts.items()}, "centres": centres,
            "level_sizes": [tuple(x.shape[-2:]) for x in levels]}


def class_nms(predictions: list[dict], iou: float) -> list[dict]:
    """Greedy class-wise NMS over each image's best-first detections (reference number only; torchvision, which
    has one, does not import beside this project's torch build)."""
    kept_predictions = []
    for prediction in predictions:
        boxes = prediction["boxes"]
        keep = torch.ones(len(boxes), dtype=torch.bool)
        if boxes:
            corners = torch.tensor([b["box"] for b in boxes], dtype=torch.float64)
            overlaps, _ = pairwise_iou(corners, corners)
            for i in range(len(boxes)):
                if keep[i]:
                    same_class = torch.tensor([b["label"] == boxes[i]["label"] for b in boxes])
                    keep &= ~((torch.arange(len(boxes)) > i) & same_class & (overlaps[i] > iou))
        kept_predictions.append({"boxes": [b for b, k in zip(boxes, keep.tolist()) if k]})
    return kept_predictions


def stage_data(model: Detector, records, classes: list[str], views: int, augmentation: AugmentSettings | None,
               seed: int) -> tuple[torch.Tensor, list[dict]]:
    """Backbone features and targets of `views` passes over the records (each pass its own augmentations)."""
    dataset = DetectionDataset(records, classes, model.config.image_size, augmentation=augmentation, seed=seed)
    features, targets = [], []
    for view in range(views):
        dataset.epoch = view
        features.append(backbone_features(model.eval(), dataset))
        targets += [dataset[i][1] for i in range(len(dataset))]
    return torch.cat(features), targets


def main() -> None:
    parser = study_arguments(__doc__)
    parser.add_argument("--stage-epochs", type=int, default=60)
    parser.add_argument("--stage-learning-rate", type=float, default=1e-3)
    parser.add_argument("--score-noise", type=float, default=0.0, help="std of the logit noise in stage training")
    parser.add_argument("--dense-loss", default="bce")
    parser.add_argument("--stage-seed", type=int, default=None, help="seed of the stage's init and batch order (--seed)")
    parser.add_argument("--stage-train", type=int, default=0,
                        help="train the stage on this many fresh canvases (not the dense head's) instead")
    parser.add_argument("--stage-views", type=int, default=0,
                        help="train the stage on this many augmented views of the dense head's own training canvases")
    args = parser.parse_args()
    study = prepare_study(args)
    config, val, ids, size = study["config"], study["val"], study["ids"], study["config"].image_size
    classes = config.classes

    model = cached_dense_head(args, study, args.dense_loss)
    quiet = {"log": lambda *_: None}
    if args.stage_train:  # fresh canvases: the dense head's outputs there look like its outputs on new images
        records, _, _ = load_box_records(DataSpec(str(canvases(Path(args.output), f"stage{args.stage_train}",
                                                               args.stage_train, 2, "train", args))), classes, **quiet)
        study["train_features"], study["targets"] = stage_data(model, records, classes, 1, None, args.seed)
    elif args.stage_views:  # what a user has: their training images, seen through the training augmentations
        records, _, _ = load_box_records(DataSpec(str(canvases(Path(args.output), "train", args.train, 0, "train", args))),
                                         classes, **quiet)
        study["train_features"], study["targets"] = stage_data(model, records, classes, args.stage_views,
                                                               AugmentSettings(), args.seed)
    train_dense = dense_outputs(model, study["train_features"], size)
    val_dense = dense_outputs(model, study["val_features"], size)
    val_sizes = [(record.width, record.height) for record in val]

    def detections(outputs: dict, stage: CandidateRelations | None, count: int, sizes) -> list[dict]:
        """The NMS-free top-k of the dense head (or of the stage on top of it) on the first `count` images."""
        batches = []
        with torch.no_grad():
            for s in range(0, count, 16):
                batch = {"logits": outputs["logits"][s:s + 16], "boxes": outputs["boxes"][s:s + 16],
                         "level_sizes": outputs["level_sizes"]}
                if stage is not None:  # laid out as Detector.forward's outputs with relations
                    logits, boxes, index = stage(outputs["features"][s:s + 16], batch["logits"], batch["boxes"])
                    batch = {"logits": logits, "boxes": boxes, "candidates": index, "dense": batch,
                             "level_sizes": outputs["level_sizes"]}
                batches.append(model.top_detections(batch))
        return to_predictions(batches, sizes, classes)

    dense_predictions = detections(val_dense, None, len(val), val_sizes)
    rows = {"dense": study_row(dense_predictions, val, classes, ids),
            "dense+nms0.7 (reference)": study_row(class_nms(dense_predictions, DUPLICATE_IOU), val, classes, ids)}
    for name, row in rows.items():
        print(name, row, flush=True)

    stage_seed = args.seed if args.stage_seed is None else args.stage_seed
    torch.manual_seed(stage_seed)
    stage = CandidateRelations(config.neck_channels, config.num_classes, args.relation_layers,
                               config.relation_candidates, kind=args.relation_kind)
    optimizer = torch.optim.AdamW(stage.parameters(), lr=args.stage_learning_rate, weight_decay=0.05)
    batches_per_epoch = len(study["targets"]) // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.stage_learning_rate,
                                                   total_steps=args.stage_epochs * batches_per_epoch, pct_start=0.05)
    weights, order, started = LossWeights(kind=args.dense_loss), torch.Generator().manual_seed(stage_seed), time.perf_counter()
    stage_rows = []
    for epoch in range(args.stage_epochs):
        stage.train()
        permutation = torch.randperm(len(study["targets"]), generator=order)
        for start in range(0, batches_per_epoch * args.batch_size, args.batch_size):
            index = permutation[start:start + args.batch_size]
            logits = train_dense["logits"][index]
            if args.score_noise > 0:
                logits = logits + args.score_noise * torch.randn_like(logits)
            refined, boxes, candidates = stage(train_dense["features"][index], logits, train_dense["boxes"][index])
            targets = [study["targets"][i] for i in index]
            matches = score_ordered_match(gather_candidates(logits, candidates).sigmoid(),
                                          gather_candidates(train_dense["boxes"][index], candidates), targets)
            loss = detection_loss(refined, boxes, train_dense["centres"][candidates], targets, size, weights,
                                  matches=matches)["total"]
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(stage.parameters(), 1.0)
            optimizer.step()
            schedule.step()
        if (epoch + 1) % max(1, args.stage_epochs // 6) == 0:
            stage.eval()
            stage_rows.append({"epoch": epoch + 1, "seconds": round(time.perf_counter() - started),
                               "loss": round(loss.item(), 4),
                               **study_row(detections(val_dense, stage, len(val), val_sizes), val, classes, ids)})
            print("stage", stage_rows[-1], flush=True)
    rows["stage"] = stage_rows
    data = f"_fresh{args.stage_train}" if args.stage_train else f"_views{args.stage_views}" if args.stage_views else ""
    out = Path(args.output) / f"relation_stage_{args.relation_kind}_noise{args.score_noise}{data}_s{stage_seed}.json"
    # the same rates on training canvases (clean inputs): can the stage stand duplicates down where it learned?
    stage.eval()
    count = min(240, len(study["targets"]))
    for name, on_top in (("dense", None), ("stage", stage)):
        predictions = detections(train_dense, on_top, count, [(1, 1)] * count)  # IoUs need no pixel sizes
        rows[f"train {name}"] = {f"duplicate_rate@{t}": round(duplicate_rate(predictions, t)[0], 4) for t in (0.3, 0.5)}
        print(f"train canvases, {name}", rows[f"train {name}"], flush=True)
    torch.save(stage.state_dict(), out.with_suffix(".pt"))
    out.write_text(json.dumps({"settings": vars(args), "results": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
