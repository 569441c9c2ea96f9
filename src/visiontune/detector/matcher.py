"""One-to-one assignment of predictions to ground-truth boxes (DETR's Hungarian matcher).

Cost of giving prediction q to object t = class cost (focal-style, as the loss) + L1 between normalised
cxcywh boxes + negative GIoU, each weighted. `scipy.optimize.linear_sum_assignment` finds the assignment of
least total cost; every object gets exactly one prediction, the rest are background. This one-to-one
training target is what lets inference skip NMS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from .box_ops import cxcywh_to_xyxy, pairwise_generalized_iou


@dataclass(frozen=True)
class MatchWeights:
    classification: float = 2.0
    l1: float = 5.0
    giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


def matching_cost(logits: torch.Tensor, boxes: torch.Tensor, target_labels: torch.Tensor, target_boxes: torch.Tensor,
                  weights: MatchWeights = MatchWeights()) -> torch.Tensor:
    """(Q, T) cost for one image: logits (Q, K), boxes (Q, 4) and target boxes (T, 4) in normalised cxcywh."""
    probability = logits.sigmoid()[:, target_labels]
    alpha, gamma = weights.focal_alpha, weights.focal_gamma
    negative = (1 - alpha) * probability ** gamma * -(1 - probability + 1e-8).log()
    positive = alpha * (1 - probability) ** gamma * -(probability + 1e-8).log()
    class_cost = positive - negative
    l1_cost = torch.cdist(boxes, target_boxes, p=1)
    giou_cost = -pairwise_generalized_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(target_boxes))
    return weights.classification * class_cost + weights.l1 * l1_cost + weights.giou * giou_cost


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict],
                    weights: MatchWeights = MatchWeights(),
                    extra_cost: Callable[[int], torch.Tensor] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image: (prediction indices, target indices) of the least-cost one-to-one assignment.

    logits (B, Q, K), boxes (B, Q, 4); targets[i] = {"labels": (T,), "boxes": (T, 4)}. `extra_cost(i)`, if
    given, is a (Q, T) cost added for image i (e.g. a spatial prior)."""
    matches = []
    for index, target in enumerate(targets):
        if len(target["labels"]) == 0:
            empty = torch.zeros(0, dtype=torch.long)
            matches.append((empty, empty))
            continue
        if len(target["labels"]) > logits.shape[1]:
            raise ValueError(f"image {index} has {len(target['labels'])} objects but the head makes only "
                             f"{logits.shape[1]} predictions; use more queries")
        cost = matching_cost(logits[index].float(), boxes[index].float(), target["labels"], target["boxes"].float(),
                             weights)
        if extra_cost is not None:
            cost = cost + extra_cost(index)
        rows, columns = linear_sum_assignment(cost.cpu().numpy())
        matches.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(columns, dtype=torch.long)))
    return matches
