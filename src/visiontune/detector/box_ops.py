"""Box conversions and (generalised) IoU, on tensors of boxes (..., 4)."""

from __future__ import annotations

import torch


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., N, M) IoU and union of xyxy boxes a (..., N, 4) and b (..., M, 4); leading dims are batch dims."""
    top_left = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    bottom_right = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    overlap = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - overlap
    return overlap / union.clamp(min=1e-9), union


def pairwise_generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., N, M) GIoU: IoU minus the share of the enclosing box that neither box covers (in [-1, 1])."""
    iou, union = pairwise_iou(a, b)
    enclosing = (torch.maximum(a[..., :, None, 2:], b[..., None, :, 2:])
                 - torch.minimum(a[..., :, None, :2], b[..., None, :, :2]))
    enclosing_area = enclosing.clamp(min=0).prod(-1)
    return iou - (enclosing_area - union) / enclosing_area.clamp(min=1e-9)


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(GIoU, IoU) of matching rows of xyxy boxes a (N, 4) and b (N, 4)."""
    top_left, bottom_right = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    overlap = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = box_area(a) + box_area(b) - overlap
    iou = overlap / union.clamp(min=1e-9)
    enclosing = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)
    return iou - (enclosing - union) / enclosing.clamp(min=1e-9), iou
