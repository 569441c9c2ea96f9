"""Where the one-to-one head's duplicates come from, on the cached-feature study of `detector_losses.py`.

For one variant trained on the study's canvases it prints:
- per epoch, how many objects had their matched position (the one-to-one pick of the dense head) change
  since the previous epoch;
- with +relations, per epoch, on 64 training canvases: the mean dense and refined scores of the positives
  and of the near-duplicate negatives (same class, IoU > 0.7 with a positive, dense score > 0.2), i.e.
  whether the relation stage learns to stand them down;
- at the end, every duplicate on the validation canvases at score >= 0.3 (a detection overlapping a
  better one of its class by IoU > 0.7, what NMS would remove): the pyramid levels of the two positions and
  how many cells apart they are when on one level.

    python benchmarks/detector_duplicates.py --items .bench/fmnist --backbone .bench/dinov2-small --epochs 6
    python benchmarks/detector_duplicates.py ... --epochs 6 --variant focal+relations
"""

from __future__ import annotations

from collections import Counter

import torch

from detector_losses import prepare_study, study_arguments, train_and_score
from visiontune.models.detector.box_ops import cxcywh_to_xyxy, pairwise_iou
from visiontune.models.detector.evaluation import DUPLICATE_IOU
from visiontune.models.detector.loss import assign
from visiontune.models.detector.matcher import score_ordered_match
from visiontune.models.detector.relation import gather_candidates

THRESHOLD = 0.3


def level_and_cell(position: int, sizes: list[tuple[int, int]]) -> tuple[int, int, int]:
    for level, (height, width) in enumerate(sizes):
        if position < height * width:
            return level, position // width, position % width
        position -= height * width
    raise ValueError("position beyond the last level")


def duplicate_anatomy(outputs: dict, sizes: list[tuple[int, int]]) -> tuple[Counter, int, list[tuple[float, float]]]:
    """Kinds of duplicate pairs at THRESHOLD over a batch of outputs, the detections above it, and each pair's
    (better score, duplicate score)."""
    kinds, detections, pair_scores = Counter(), 0, []
    positions_of = outputs.get("candidates")
    for image in range(len(outputs["logits"])):
        probabilities = outputs["logits"][image].sigmoid()
        rows, labels = (probabilities >= THRESHOLD).nonzero(as_tuple=True)
        order = probabilities[rows, labels].argsort(descending=True)
        rows, labels = rows[order], labels[order]
        scores = probabilities[rows, labels]
        corners = cxcywh_to_xyxy(outputs["boxes"][image][rows])
        overlaps, _ = pairwise_iou(corners, corners)
        detections += len(rows)
        for i in range(len(rows)):
            better = [j for j in range(i) if labels[j] == labels[i] and overlaps[i, j] > DUPLICATE_IOU]
            if not better:
                continue
            j = max(better, key=lambda j: float(overlaps[i, j]))
            pair_scores.append((float(scores[j]), float(scores[i])))
            at = [int(rows[k]) if positions_of is None else int(positions_of[image, rows[k]]) for k in (i, j)]
            (level_i, y_i, x_i), (level_j, y_j, x_j) = (level_and_cell(p, sizes) for p in at)
            kinds[f"level {level_i}, {max(abs(y_i - y_j), abs(x_i - x_j))} cell(s) apart" if level_i == level_j
                  else f"levels {level_j} and {level_i}"] += 1
    return kinds, detections, pair_scores


def main() -> None:
    parser = study_arguments(__doc__)
    parser.add_argument("--variant", default="focal", help="a loss name, optionally +relations")
    args = parser.parse_args()
    study = prepare_study(args)
    config, features, targets = study["config"], study["train_features"], study["targets"]
    size = config.image_size
    picks: dict[tuple[int, int], int] = {}
    changed = Counter()

    def record_picks(outputs: dict, batch: list[int]) -> None:
        dense = outputs.get("dense", outputs)
        matches = assign(dense["logits"].detach().float(), dense["boxes"].detach().float(), dense["centres"],
                         [targets[i] for i in batch], size)
        for image, (rows, columns) in zip(batch, matches):
            for row, column in zip(rows.tolist(), columns.tolist()):
                changed["seen"] += 1
                changed["changed"] += picks.get((image, column), row) != row
                picks[(image, column)] = row

    def report(epoch: int, model) -> None:
        if epoch > 1:
            print(f"epoch {epoch}: matched position changed for {changed['changed']} of {changed['seen']} objects "
                  f"since the previous epoch", flush=True)
        changed.clear()
        if model.relations is not None:
            suppression(model)

    def suppression(model) -> None:
        probe = list(range(64))
        model.eval()
        with torch.no_grad():
            outputs = model.forward_from_backbone(features[probe], size)
        model.train()
        index = outputs["candidates"]
        dense = gather_candidates(outputs["dense"]["logits"].float(), index).sigmoid()
        dense_boxes = gather_candidates(outputs["dense"]["boxes"].float(), index)
        refined = outputs["logits"].float().sigmoid()
        scores = {"positive": ([], []), "near-duplicate negative": ([], [])}
        for image, (rows, columns) in enumerate(score_ordered_match(dense, dense_boxes, [targets[i] for i in probe])):
            corners = cxcywh_to_xyxy(dense_boxes[image])
            overlaps, _ = pairwise_iou(corners, corners)
            for row, column in zip(rows.tolist(), columns.tolist()):
                label = int(targets[image]["labels"][column])
                near = ((overlaps[row] > DUPLICATE_IOU) & (dense[image, :, label] > 0.2)).nonzero().flatten().tolist()
                for kind, members in (("positive", [row]), ("near-duplicate negative", set(near) - set(rows.tolist()))):
                    for member in members:
                        scores[kind][0].append(float(dense[image, member, label]))
                        scores[kind][1].append(float(refined[image, member, label]))
        print("  " + "; ".join(f"{kind}s {len(d)}: dense {sum(d) / max(len(d), 1):.3f} -> refined "
                               f"{sum(r) / max(len(r), 1):.3f}" for kind, (d, r) in scores.items()), flush=True)

    _, model = train_and_score(args.variant, args, **study, on_batch=record_picks, on_epoch=report)
    model.eval()
    with torch.no_grad():
        outputs = model.forward_from_backbone(study["val_features"], size)
    kinds, detections, pair_scores = duplicate_anatomy(outputs, model.pyramid.level_sizes(*size))
    print(f"validation duplicates at score >= {THRESHOLD}: {sum(kinds.values())} of {detections} detections; "
          + ", ".join(f"{kind}: {count}" for kind, count in kinds.most_common()))
    if pair_scores:
        gaps = sorted(better - duplicate for better, duplicate in pair_scores)
        print(f"pair scores: better {sum(b for b, _ in pair_scores) / len(pair_scores):.3f}, duplicate "
              f"{sum(d for _, d in pair_scores) / len(pair_scores):.3f} on average; median gap {gaps[len(gaps) // 2]:.3f}")


if __name__ == "__main__":
    main()
