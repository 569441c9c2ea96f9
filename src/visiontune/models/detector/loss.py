"""The one-to-one training loss: Hungarian assignment, then classification + L1 + GIoU.

Assignment: each object gets the one position of least cost (`matcher.matching_cost`: class + L1 + GIoU),
among positions whose centre lies inside the object's box (the spatial prior of DeFCN, "End-to-End Object
Detection with Fully Convolutional Network"; it keeps the assignment stable early on). Every other position
is background for every class, which is what teaches the head to leave no duplicates. Neighbouring
positions often predict nearly the same box; if the pick among them flipped from step to step, each would
learn a middling score (duplicates). A small cost for the distance from the object's centre, in units of
its size, breaks such ties the same way every time.

Classification: varifocal by default (VarifocalNet: the target is the IoU of the matched position's box with
its object, negatives weighted alpha * p^gamma), the loss of the GPU runs in BENCHMARKS.md. `focal` (target 1)
and `bce` (plain sigmoid cross-entropy) are the alternatives. On the plain top-k, varifocal left 2.3-3x more
duplicates than focal (its scores are capped at the IoU, so the matched position stands out less from its
neighbours); with the local-peak decoding (`peaks.py`) all three leave none and varifocal and focal reach the
same AP in the cached-feature study. Box: L1 on normalised cxcywh + (1 - GIoU), over matched pairs. All terms
are divided by the number of objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .box_ops import cxcywh_to_xyxy, generalized_iou, pairwise_iou
from .matcher import MatchWeights, hungarian_match, score_ordered_match
from .relation import gather_candidates

CENTRE_COST = 0.0  # off by default (no gain measured on the canvas benchmark); per unit of |offset from the box centre| / box size (L1 over x and y)
OUTSIDE_BOX_COST = 1e4  # positions whose centre is outside the box are matched only if nothing else is left
CLASSIFICATION_LOSSES = ("varifocal", "focal", "bce")
NEAR_DUPLICATE_IOU = 0.5  # an unmatched position whose box overlaps an object this much is one of its near duplicates
RANK_MARGIN = 2.0  # in logits: the matched position should score this much above its near duplicates


@dataclass(frozen=True)
class LossWeights:
    classification: float = 1.0
    l1: float = 5.0
    giou: float = 2.0
    kind: str = "varifocal"
    alpha: float = 0.75  # negative weight (varifocal); focal weighs positives by 1 - alpha = 0.25
    gamma: float = 2.0
    centre_cost: float = CENTRE_COST
    rank: float = 0.0  # > 0: weight of the margin ranking term against each object's near duplicates


def assign(logits: torch.Tensor, boxes: torch.Tensor, centres: torch.Tensor, targets: list[dict],
           image_size: tuple[int, int], weights: MatchWeights = MatchWeights(),
           centre_cost: float = CENTRE_COST) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image: (position indices, object indices), one position per object. centres: (N, 2) pixel centres
    shared by every image, or (B, N, 2) per image (the candidates of `relation.py`)."""
    height, width = image_size
    points_all = centres / centres.new_tensor([width, height])  # normalised x, y

    def spatial_prior(index: int) -> torch.Tensor:
        points = points_all[index] if points_all.dim() == 3 else points_all
        target_boxes = targets[index]["boxes"].float()
        corners = cxcywh_to_xyxy(target_boxes)
        inside = ((points[:, None] > corners[None, :, :2]) & (points[:, None] < corners[None, :, 2:])).all(-1)
        offsets = ((points[:, None] - target_boxes[None, :, :2]) / target_boxes[None, :, 2:].clamp(min=1e-6)).abs().sum(-1)
        return centre_cost * offsets + OUTSIDE_BOX_COST * (~inside).float()

    return hungarian_match(logits, boxes, targets, weights, extra_cost=spatial_prior)


def detection_loss(logits: torch.Tensor, boxes: torch.Tensor, centres: torch.Tensor, targets: list[dict],
                   image_size: tuple[int, int], weights: LossWeights = LossWeights(),
                   match_weights: MatchWeights = MatchWeights(),
                   matches: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
    """logits (B, N, K), boxes (B, N, 4) normalised cxcywh; targets[i] = {"labels": (T,), "boxes": (T, 4)}.
    `matches` (per image: positions, objects) replaces the default assignment (`assign`)."""
    if weights.kind not in CLASSIFICATION_LOSSES:
        raise ValueError(f"unknown classification loss {weights.kind!r}; choose one of {', '.join(CLASSIFICATION_LOSSES)}")
    logits, boxes = logits.float(), boxes.float()
    if matches is None:
        matches = assign(logits, boxes, centres, targets, image_size, match_weights, weights.centre_cost)
    batch_index = torch.cat([torch.full_like(rows, i) for i, (rows, _) in enumerate(matches)]).to(logits.device)
    position_index = torch.cat([rows for rows, _ in matches]).to(logits.device)
    matched_labels = torch.cat([t["labels"][cols] for t, (_, cols) in zip(targets, matches)]).to(logits.device)
    matched_targets = torch.cat([t["boxes"][cols] for t, (_, cols) in zip(targets, matches)]).to(logits.device).float()
    count = max(len(position_index), 1)

    predicted = boxes[batch_index, position_index]
    giou, iou = generalized_iou(cxcywh_to_xyxy(predicted), cxcywh_to_xyxy(matched_targets))
    target_scores = torch.zeros_like(logits)
    if weights.kind == "varifocal":
        target_scores[batch_index, position_index, matched_labels] = iou.detach().clamp(min=0.01).to(logits.dtype)
        probability = logits.sigmoid()
        weight = weights.alpha * probability.detach().pow(weights.gamma) * (target_scores == 0) + target_scores
        classification = (F.binary_cross_entropy_with_logits(logits, target_scores, reduction="none") * weight).sum()
    elif weights.kind == "bce":
        target_scores[batch_index, position_index, matched_labels] = 1.0
        classification = F.binary_cross_entropy_with_logits(logits, target_scores, reduction="sum")
    else:
        target_scores[batch_index, position_index, matched_labels] = 1.0
        classification = _sigmoid_focal(logits, target_scores, 1 - weights.alpha, weights.gamma)
    losses = {"classification": classification / count,
              "l1": F.l1_loss(predicted, matched_targets, reduction="sum") / count,
              "giou": (1 - giou).sum() / count}
    losses["total"] = (weights.classification * losses["classification"] + weights.l1 * losses["l1"]
                       + weights.giou * losses["giou"])
    if weights.rank > 0:
        losses["rank"] = near_duplicate_ranking(logits, boxes, targets, matches) / count
        losses["total"] = losses["total"] + weights.rank * losses["rank"]
    return losses


def near_duplicate_ranking(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict],
                           matches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Sum over objects of the mean logistic ranking loss softplus(l_n - l_m + RANK_MARGIN) between the matched
    position m and each near duplicate n (unmatched, its box IoU >= NEAR_DUPLICATE_IOU with the object), in
    the object's class. Classification alone spreads its push over every negative; this one puts it on the
    neighbours that would be duplicates, and only until the matched one is ahead by the margin (the ranking
    loss of PSS, "Object Detection Made Simpler by Eliminating Heuristic NMS")."""
    total = logits.new_zeros(())
    for image, (rows, columns) in enumerate(matches):
        if len(rows) == 0:
            continue
        rows, columns = rows.to(logits.device), columns.to(logits.device)
        labels = targets[image]["labels"].to(logits.device)[columns]
        target_boxes = targets[image]["boxes"].to(logits.device).float()[columns]
        with torch.no_grad():
            overlaps, _ = pairwise_iou(cxcywh_to_xyxy(boxes[image].detach()), cxcywh_to_xyxy(target_boxes))
            near = overlaps >= NEAR_DUPLICATE_IOU  # (N, T)
            near[rows] = False  # matched positions are no one's near duplicate
        image_logits = logits[image][:, labels]  # (N, T): every position's logit for each object's class
        matched = image_logits[rows, torch.arange(len(rows), device=logits.device)]
        pair_losses = F.softplus(image_logits - matched[None, :] + RANK_MARGIN) * near
        total = total + (pair_losses.sum(0) / near.sum(0).clamp(min=1)).sum()
    return total


def detector_loss(outputs: dict, targets: list[dict], image_size: tuple[int, int],
                  weights: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """The loss of `Detector.forward`'s outputs: the one-to-one loss of the detections, plus, with candidate
    relations, the same loss of the dense head (auxiliary, added with weight 1; its terms as dense_*).

    With relations, the refined candidates are matched by `score_ordered_match` on the dense scores and boxes
    they started from: the positive for an object is the best-scored candidate on it, which the stage can see.
    """
    if "dense" not in outputs:
        return detection_loss(outputs["logits"], outputs["boxes"], outputs["centres"], targets, image_size, weights)
    dense, index = outputs["dense"], outputs["candidates"]
    probabilities = gather_candidates(dense["logits"].detach().float(), index).sigmoid()
    matches = score_ordered_match(probabilities, gather_candidates(dense["boxes"].detach().float(), index), targets)
    losses = detection_loss(outputs["logits"], outputs["boxes"], outputs["centres"], targets, image_size, weights,
                            matches=matches)
    dense_losses = detection_loss(dense["logits"], dense["boxes"], dense["centres"], targets, image_size, weights)
    losses = {**losses, **{f"dense_{name}": value for name, value in dense_losses.items()}}
    losses["total"] = losses["total"] + dense_losses["total"]
    return losses


def _sigmoid_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    probability = logits.sigmoid()
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probability * targets + (1 - probability) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * (1 - p_t) ** gamma * cross_entropy).sum()
