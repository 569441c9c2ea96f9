"""Candidate relations: the dense head's best N positions look at each other, then are re-scored and refined.

Why: in a dense one-to-one head each position decides alone, from features that its neighbours nearly
share (the finer pyramid levels are upsampled ViT patches), so two neighbours can both keep a high score
for one object (duplicates). Here the top-N candidates (by the dense score) become tokens - their neck
feature + an embedding of their class scores and box - and pass through a few self-attention layers. The
attention carries a per-head bias computed from each pair's geometry and agreement (IoU, offsets, size
ratios, class agreement, score difference and order), the ingredients of NMS, so a candidate can learn to stand down
when a stronger one covers the same object ("Relation Networks for Object Detection", Hu et al. 2018;
the candidate-selection + self-attention stage of two-stage DETRs; the geometric bias as in Relation-DETR).
It is trained with the one-to-one loss, but matched the way COCO counts a true positive
(`matcher.score_ordered_match`): an object's positive is the candidate with the best *dense* score among
those on it (IoU >= 0.5), a fact the stage sees in its inputs, so "stand down when a better-scored candidate
covers my object" is a rule it can learn exactly (GossipNet, "Learning non-maximum suppression"). Still
NMS-free: the detections are the top-k of its scores. Inputs from the dense head are detached: the dense
head is trained by its own (auxiliary) loss.

Two kinds of layer (`relation_kind`): "attention" (`RelationLayer`, above) or "pooling" (`PairPoolingLayer`,
GossipNet's max over pair messages). Trained jointly on the CPU study's 300 canvases neither has clearly
lowered the duplicate rate (pooling, at 900 steps: 0.056 vs 0.069 at 0.3, same AP). Trained on a frozen dense
head, the attention stage memorises 300 canvases, but with 2,000 distinct ones it cut the duplicates at the
best-F1 threshold from 0.042 to 0.009-0.027 (two seeds) and raised AP from 0.388 to 0.44-0.46; on 4,000 canvases
it ended at 0.018 (BENCHMARKS.md; rerun: `python benchmarks/detector_relation_stage.py`). So it is a stage for larger datasets; it stays off by default until a GPU-scale run confirms it.
The local-peak decoding (`peaks.py`, on by default) now removes the neighbour duplicates without training
(0.1-0.3 % at score 0.3); the stage is left for what a fixed window cannot judge, such as crowded objects of one class.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .box_ops import cxcywh_to_xyxy, pairwise_iou
from .config import check_relation_kind

GEOMETRY_FEATURES = 8
PAIR_CHANNELS = 32  # width of a pair's embedded geometry


def gather_candidates(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, n, D) rows of tensor (B, N, D) at the (B, n) candidate positions."""
    return tensor.gather(1, index.unsqueeze(-1).expand(-1, -1, tensor.shape[-1]))


def pair_geometry(boxes: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """(B, n, n, 8) features of candidate j seen from candidate i: IoU, signed log offsets of the centres in
    units of i's size, log size ratios, class agreement (cosine of the class scores), the difference of the
    best class scores as log-odds (/4, clipped), and whether j scores higher than i (0/1). Neighbours on one
    object often differ by a few hundredths in score; the log-odds and the 0/1 order make "who is ahead" a
    feature the network does not have to resolve from a tiny number."""
    corners = cxcywh_to_xyxy(boxes)
    iou, _ = pairwise_iou(corners, corners)
    centre, size = boxes[..., :2], boxes[..., 2:].clamp(min=1e-4)
    offset = (centre[:, None, :, :] - centre[:, :, None, :]) / size[:, :, None, :]
    offset = offset.sign() * torch.log1p(offset.abs())
    ratio = torch.log(size[:, None, :, :] / size[:, :, None, :])
    unit = F.normalize(probabilities, dim=-1)
    agreement = unit @ unit.transpose(1, 2)
    best = probabilities.amax(-1)
    log_odds = torch.log(best.clamp(1e-6, 1 - 1e-6)) - torch.log1p(-best.clamp(1e-6, 1 - 1e-6))
    difference = ((log_odds[:, None, :] - log_odds[:, :, None]) / 4).clamp(-4, 4)
    ahead = (best[:, None, :] > best[:, :, None]).to(boxes.dtype)
    return torch.cat([iou[..., None], offset, ratio, agreement[..., None], difference[..., None], ahead[..., None]], -1)


class RelationLayer(nn.Module):
    """Pre-norm self-attention with an additive per-head bias, then an MLP. Besides the usual values, each
    candidate receives the attention-weighted embeddings of its pairs' geometry: neighbours on one object
    have nearly the same features, so their values alone cannot tell "a better-scored candidate covers my
    box" from "I attended to myself"; the pair embedding carries exactly that (as GossipNet's pair features)."""

    def __init__(self, channels: int, heads: int, pair_channels: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.heads, self.scale = heads, (channels // heads) ** -0.5
        self.attention_norm, self.mlp_norm = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.projection = nn.Linear(channels, channels)
        self.pair_projection = nn.Linear(heads * pair_channels, channels)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """x (B, n, C), bias (B, heads, n, n), pairs (B, n, n, P): the embedded geometry of j seen from i."""
        batch, count, channels = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(batch, count, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        # written out (not scaled_dot_product_attention) so the ONNX export is plain MatMul/Softmax
        weights = ((q @ k.transpose(-1, -2)) * self.scale + bias).softmax(-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, count, channels)
        pair_message = (weights.transpose(1, 2) @ pairs).reshape(batch, count, -1)  # (B, n, heads * P)
        x = x + self.projection(attended) + self.pair_projection(pair_message)
        return x + self.mlp(self.mlp_norm(x))


class PairPoolingLayer(nn.Module):
    """GossipNet's block ("Learning non-maximum suppression", Hosang et al. 2017): every pair (i, j) makes a
    message from i's and j's features and their geometry, and i keeps the elementwise max over all j (itself
    included). "Is there a better-scored candidate of my class on my box?" is an *exists* question: a max
    answers it from the one pair that matters, with that pair's full gradient, where softmax attention over
    100 candidates starts nearly uniform and dilutes it a hundredfold."""

    def __init__(self, channels: int, pair_channels: int, hidden: int = 128, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm, self.mlp_norm = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.own, self.other, self.pair = (nn.Linear(channels, hidden), nn.Linear(channels, hidden),
                                           nn.Linear(pair_channels, hidden))
        self.message = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden))
        self.projection = nn.Linear(hidden, channels)
        widened = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, widened), nn.GELU(), nn.Linear(widened, channels))

    def forward(self, x: torch.Tensor, bias: None, pairs: torch.Tensor) -> torch.Tensor:
        """x (B, n, C), pairs (B, n, n, P): the embedded geometry of j seen from i (`bias` is the attention
        layer's; pooling has none)."""
        h = self.norm(x)
        messages = self.message(self.own(h)[:, :, None] + self.other(h)[:, None, :] + self.pair(pairs))
        x = x + self.projection(F.gelu(messages.amax(2)))
        return x + self.mlp(self.mlp_norm(x))


class CandidateRelations(nn.Module):
    def __init__(self, channels: int, num_classes: int, layers: int = 2, candidates: int = 100, heads: int = 8,
                 kind: str = "attention"):
        super().__init__()
        check_relation_kind(kind)
        self.candidates = candidates
        self.score_embedding = nn.Linear(num_classes, channels)
        self.box_embedding = nn.Sequential(nn.Linear(4, channels), nn.GELU(), nn.Linear(channels, channels))
        self.pair_embedding = nn.Sequential(nn.Linear(GEOMETRY_FEATURES, PAIR_CHANNELS), nn.GELU(),
                                            nn.Linear(PAIR_CHANNELS, PAIR_CHANNELS))
        self.pair_bias = nn.Linear(PAIR_CHANNELS, heads) if kind == "attention" else None
        self.layers = nn.ModuleList((RelationLayer(channels, heads, PAIR_CHANNELS) if kind == "attention"
                                     else PairPoolingLayer(channels, PAIR_CHANNELS)) for _ in range(layers))
        self.norm = nn.LayerNorm(channels)
        self.class_logits = nn.Linear(channels, num_classes)
        self.box_delta = nn.Linear(channels, 4)
        for layer in (self.class_logits, self.box_delta):  # starts as the dense head: zero corrections
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor, logits: torch.Tensor,
                boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features (B, N, C), dense logits (B, N, K) and boxes (B, N, 4, normalised cxcywh) -> refined logits
        (B, n, K), refined boxes (B, n, 4) and the (B, n) positions they came from, n = min(candidates, N).
        Both are corrections of the candidate's own logits and box, zero at the start, so the stage begins as
        the dense head and learns what to change, mostly which candidate should stand down."""
        logits, boxes = logits.detach().float(), boxes.detach().float()
        count = min(self.candidates, logits.shape[1])
        index = logits.amax(-1).topk(count, dim=1).indices
        candidate_logits, candidate_boxes = gather_candidates(logits, index), gather_candidates(boxes, index)
        probabilities = candidate_logits.sigmoid()
        x = gather_candidates(features, index) + self.score_embedding(probabilities) + self.box_embedding(candidate_boxes)
        pairs = self.pair_embedding(pair_geometry(candidate_boxes, probabilities))
        bias = self.pair_bias(pairs).permute(0, 3, 1, 2) if self.pair_bias is not None else None
        for layer in self.layers:
            x = layer(x, bias, pairs)
        x = self.norm(x)
        delta = self.box_delta(x).float()
        refined = torch.cat([candidate_boxes[..., :2] + delta[..., :2] * candidate_boxes[..., 2:],
                             candidate_boxes[..., 2:] * torch.exp(delta[..., 2:].clamp(-4, 4))], -1)
        return candidate_logits + self.class_logits(x).float(), refined, index
