"""The one-to-one training loss: Hungarian assignment, then classification + L1 + GIoU.

Assignment: each object gets the one position of least cost (`matcher.matching_cost`: class + L1 + GIoU),
among positions whose centre lies inside the object's box (the spatial prior of DeFCN, "End-to-End Object
Detection with Fully Convolutional Network"; it keeps the assignment stable early on). Every other position
is background for every class, which is what teaches the head to leave no duplicates. Neighbouring
positions often predict nearly the same box; if the pick among them flipped from step to step, each would
learn a middling score (duplicates). A small cost for the distance from the object's centre, in units of
its size, would break such ties the same way every time; it did not pay on the canvases, so it is not used.

Classification: varifocal (VarifocalNet: the target is the IoU of the matched position's box with its
object, negatives weighted alpha * p^gamma). Box: L1 on normalised cxcywh + (1 - GIoU), over matched pairs.
All terms are divided by the number of objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .box_ops import cxcywh_to_xyxy, generalized_iou
from .matcher import MatchWeights, hungarian_match

OUTSIDE_BOX_COST = 1e4  # positions whose centre is outside the box are matched only if nothing else is left


@dataclass(frozen=True)
class LossWeights:
    classification: float = 1.0
    l1: float = 5.0
    giou: float = 2.0
    alpha: float = 0.75  # weight of the negatives
    gamma: float = 2.0


def assign(logits: torch.Tensor, boxes: torch.Tensor, centres: torch.Tensor, targets: list[dict],
           image_size: tuple[int, int], weights: MatchWeights = MatchWeights()) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image: (position indices, object indices), one position per object. centres: (N, 2) pixel centres
    of the positions."""
    height, width = image_size
    points = centres / centres.new_tensor([width, height])  # normalised x, y

    def spatial_prior(index: int) -> torch.Tensor:
        corners = cxcywh_to_xyxy(targets[index]["boxes"].float())
        inside = ((points[:, None] > corners[None, :, :2]) & (points[:, None] < corners[None, :, 2:])).all(-1)
        return OUTSIDE_BOX_COST * (~inside).float()

    return hungarian_match(logits, boxes, targets, weights, extra_cost=spatial_prior)


def detection_loss(logits: torch.Tensor, boxes: torch.Tensor, centres: torch.Tensor, targets: list[dict],
                   image_size: tuple[int, int], weights: LossWeights = LossWeights(),
                   match_weights: MatchWeights = MatchWeights(),
                   matches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                   num_objects: float | None = None) -> dict[str, torch.Tensor]:
    """logits (B, N, K), boxes (B, N, 4) normalised cxcywh; targets[i] = {"labels": (T,), "boxes": (T, 4)}.
    `matches` (per image: positions, objects) replaces the default assignment (`assign`)."""
    logits, boxes = logits.float(), boxes.float()
    if matches is None:
        matches = assign(logits, boxes, centres, targets, image_size, match_weights)
    batch_index = torch.cat([torch.full_like(rows, i) for i, (rows, _) in enumerate(matches)]).to(logits.device)
    position_index = torch.cat([rows for rows, _ in matches]).to(logits.device)
    matched_labels = torch.cat([t["labels"][cols] for t, (_, cols) in zip(targets, matches)]).to(logits.device)
    matched_targets = torch.cat([t["boxes"][cols] for t, (_, cols) in zip(targets, matches)]).to(logits.device).float()
    # Under DDP the count is the mean over processes of the global number, so that averaging the processes'
    # gradients gives the single-process loss (DETR's num_boxes).
    count = max(num_objects if num_objects is not None else len(position_index), 1)

    predicted = boxes[batch_index, position_index]
    giou, iou = generalized_iou(cxcywh_to_xyxy(predicted), cxcywh_to_xyxy(matched_targets))
    target_scores = torch.zeros_like(logits)
    target_scores[batch_index, position_index, matched_labels] = iou.detach().clamp(min=0.01).to(logits.dtype)
    probability = logits.sigmoid()
    weight = weights.alpha * probability.detach().pow(weights.gamma) * (target_scores == 0) + target_scores
    classification = (F.binary_cross_entropy_with_logits(logits, target_scores, reduction="none") * weight).sum()
    losses = {"classification": classification / count,
              "l1": F.l1_loss(predicted, matched_targets, reduction="sum") / count,
              "giou": (1 - giou).sum() / count}
    losses["total"] = (weights.classification * losses["classification"] + weights.l1 * losses["l1"]
                       + weights.giou * losses["giou"])
    return losses


def detector_loss(outputs: dict, targets: list[dict], image_size: tuple[int, int],
                  weights: LossWeights = LossWeights(), num_objects: float | None = None) -> dict[str, torch.Tensor]:
    """The loss of `Detector.forward`'s outputs; `num_objects`: what the terms are divided by (default: this
    batch's objects)."""
    return detection_loss(outputs["logits"], outputs["boxes"], outputs["centres"], targets, image_size, weights,
                          num_objects=num_objects)
